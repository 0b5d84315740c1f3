//! Image data for training and evaluation, without tensors: every function here yields plain
//! `Vec<f32>` in CHW (one sample) or NCHW (a [`Batch`]) layout, normalised with the ImageNet
//! mean/std; the caller turns them into tensors.
//!
//! * [`preprocess_eval`] / [`augment_train`] (`transforms`): torchvision's eval (Resize +
//!   CenterCrop) and train (RandomResizedCrop + RandomHorizontalFlip) pipelines. Resampling
//!   (`resample`) reproduces PIL's antialiased bilinear filter (fixed point, Pillow 13's pass
//!   order), which is what torchvision runs on PIL images, so eval inputs match the PyTorch
//!   reference bit for bit (JPEGs included, see below); `normalise` holds the mean/std.
//! * [`ImageFolder`] (ImageNet layout, with decoding and listing in `image_folder`) and
//!   [`Synthetic`] (shapes/textures with object masks, generated from `(seed, index)`)
//!   implement [`Dataset`] (`dataset`). JPEGs decode with libjpeg-turbo's code (`jpeg`), as
//!   PIL does, so decoded pixels equal torchvision's too.
//! * [`Loader`] (`loader`) batches a dataset with parallel decoding and a prefetch thread; its
//!   order and augmentation depend only on `(seed, epoch, index)`, so training can resume
//!   mid-epoch.
//! * [`Rng`] (`rng`): a small xoshiro256** generator whose whole state is a `pub [u64; 4]`, so
//!   checkpoints can store and restore it exactly; initialisation and evaluation use it too.
//! * [`DataError`] (`error`): every failure names its file or directory.
//!
//! Submodules import each other directly, never through this file (which only re-exports),
//! so the imports between them form no circle.

pub mod dataset;
pub mod error;
pub mod image_folder;
mod jpeg;
pub mod loader;
pub mod normalise;
pub mod resample;
pub mod rng;
pub mod synthetic;
pub mod transforms;

pub use dataset::{Dataset, Sample, Subset};
pub use error::DataError;
pub use image_folder::{
    check_splits, decode_image_file, default_resize, list_images, load_image_file, ImageFolder,
};
pub use loader::{Batch, EpochIter, Loader, MAX_SKIP_MESSAGES};
pub use normalise::{denormalise_chw, normalise_hwc, IMAGENET_MEAN, IMAGENET_STD};
pub use resample::{resize_rgb8, resized_dims};
pub use rng::{mix_seed, Rng};
pub use synthetic::{Synthetic, SYNTHETIC_CLASSES};
pub use transforms::{
    augment_train, augment_with, preprocess_eval, random_resized_crop_params, Augment,
};
