//! `--input`: an image file, a directory of images, or a safetensors batch.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// A batch of already-normalised images with where each came from.
pub struct InputBatch {
    pub tensor: Tensor,
    /// One label per image (file name, or `input[i]`).
    pub names: Vec<String>,
}

/// Size images are preprocessed to (torchvision: resize 256, centre crop 224).
pub const RESIZE: u32 = 256;
pub const CROP: u32 = 224;

/// Eval preprocessing of image files: torchvision's `Resize(resize)` (shorter side) then
/// `CenterCrop(crop)`. The default is ImageNet's 256 / 224.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Preprocess {
    pub resize: u32,
    pub crop: u32,
}

impl Default for Preprocess {
    fn default() -> Self {
        Preprocess {
            resize: RESIZE,
            crop: CROP,
        }
    }
}

impl Preprocess {
    /// `--size` (crop) and `--resize` (shorter side, default round(crop·256/224)).
    pub fn new(crop: Option<u32>, resize: Option<u32>) -> Result<Self> {
        let crop = crop.unwrap_or(CROP);
        if crop == 0 {
            return Err(Error::input("--size 0: expected the crop side in pixels"));
        }
        let resize = resize.unwrap_or_else(|| crate::data::default_resize(crop));
        if resize == 0 {
            return Err(Error::input(
                "--resize 0: expected the shorter side in pixels before the centre crop",
            ));
        }
        Ok(Preprocess { resize, crop })
    }
}

/// The list of sources behind an `--input` argument (one entry per image file, or the
/// safetensors file).
pub fn load(path: &Path, device: &Device) -> Result<InputBatch> {
    load_with(path, Preprocess::default(), device)
}

/// [`load`] with the preprocessing of image files given (a `.safetensors` batch is used as
/// it is).
pub fn load_with(path: &Path, pre: Preprocess, device: &Device) -> Result<InputBatch> {
    if !path.exists() {
        return Err(Error::file(path, "input not found (expected an image file, a directory of images, or a .safetensors file with tensor 'input')"));
    }
    if path.is_dir() {
        let files = crate::data::list_images(path)?;
        if files.is_empty() {
            return Err(Error::file(
                path,
                "directory contains no .png/.jpg/.jpeg images",
            ));
        }
        return load_images_with(&files, pre, device);
    }
    if path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.eq_ignore_ascii_case("safetensors"))
        == Some(true)
    {
        return load_safetensors(path, device);
    }
    load_images_with(&[path.to_path_buf()], pre, device).map_err(|e| pickle_or(path, e))
}

pub fn load_images(files: &[PathBuf], device: &Device) -> Result<InputBatch> {
    load_images_with(files, Preprocess::default(), device)
}

/// [`load_images`] with the preprocessing given.
pub fn load_images_with(files: &[PathBuf], pre: Preprocess, device: &Device) -> Result<InputBatch> {
    let crop = pre.crop as usize;
    let mut data = Vec::with_capacity(files.len() * 3 * crop * crop);
    for f in files {
        data.extend(crate::data::load_image_file(f, pre.resize, pre.crop)?);
    }
    let n = files.len();
    let tensor = Tensor::from_vec(data, (n, 3, crop, crop), device)?;
    // Decoded pixels are finite; checked all the same, as every input tensor is.
    if let Some((i, c)) = crate::finite::per_item(&tensor)?.first() {
        return Err(Error::file(
            &files[*i],
            format!("image contains {c} after preprocessing; inputs must be finite"),
        ));
    }
    Ok(InputBatch {
        tensor,
        names: files
            .iter()
            .map(|f| {
                f.file_name()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect(),
    })
}

/// An image that failed to decode but is a `torch.save` file gets the conversion hint.
fn pickle_or(path: &Path, err: Error) -> Error {
    let mut head = [0u8; 4];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .unwrap_or(0);
    if crate::checkpoint::is_pytorch_pickle(path, &head[..n]) {
        Error::file(path, "is a PyTorch pickle, not an image or safetensors; save the batch [N, 3, H, W] as safetensors (e.g. `safetensors.torch.save_file({'input': x}, 'input.safetensors')`)")
    } else {
        err
    }
}

fn load_safetensors(path: &Path, device: &Device) -> Result<InputBatch> {
    let (tensors, _) = crate::checkpoint::read_tensors(path, device)?;
    let t = tensors.get("input").ok_or_else(|| {
        let mut keys: Vec<_> = tensors.keys().cloned().collect();
        keys.sort();
        Error::file(
            path,
            format!("no tensor 'input' (found: {})", keys.join(", ")),
        )
    })?;
    match t.dims() {
        [_, 3, h, w] if *h > 0 && *w > 0 => {}
        d => {
            return Err(Error::file(
                path,
                format!("tensor 'input' has shape {d:?}, expected [N, 3, H, W]"),
            ))
        }
    }
    let tensor = t.to_dtype(DType::F32)?;
    let n = tensor.dim(0)?;
    if n == 0 {
        return Err(Error::file(
            path,
            format!(
                "tensor 'input' holds no images (shape {:?}); expected at least one",
                t.dims()
            ),
        ));
    }
    let bad = crate::finite::per_item(&tensor)?;
    if let Some((i, c)) = bad.first() {
        let more = match bad.len() - 1 {
            0 => String::new(),
            k => format!(" (and {k} more of the {n} images)"),
        };
        return Err(Error::file(
            path,
            format!("tensor 'input': image input[{i}] contains {c}{more}; inputs must be finite"),
        ));
    }
    Ok(InputBatch {
        tensor,
        names: (0..n).map(|i| format!("input[{i}]")).collect(),
    })
}

/// `--data DIR`: an ImageNet-layout folder (class sub-folders, labels known) or a flat
/// folder of images; `limit` images (0 = all) drawn with `seed`, in a stable order.
pub fn load_data_dir(
    dir: &Path,
    limit: usize,
    seed: u64,
    device: &Device,
) -> Result<(InputBatch, Option<Vec<u32>>)> {
    load_data_dir_with(dir, limit, seed, Preprocess::default(), device)
}

/// [`load_data_dir`] with the preprocessing given.
pub fn load_data_dir_with(
    dir: &Path,
    limit: usize,
    seed: u64,
    pre: Preprocess,
    device: &Device,
) -> Result<(InputBatch, Option<Vec<u32>>)> {
    if !dir.is_dir() {
        return Err(Error::file(
            dir,
            "--data expects a directory (ImageNet layout or a flat folder of images)",
        ));
    }
    let has_classes = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
        .any(|e| e.path().is_dir());
    let (files, labels): (Vec<PathBuf>, Option<Vec<u32>>) = if has_classes {
        let folder = crate::data::ImageFolder::open(dir, pre.crop)?;
        let mut samples = folder.samples().to_vec();
        pick(&mut samples, limit, seed);
        let labels = samples.iter().map(|(_, l)| *l).collect();
        (samples.into_iter().map(|(p, _)| p).collect(), Some(labels))
    } else {
        let mut files = crate::data::list_images(dir)?;
        pick(&mut files, limit, seed);
        (files, None)
    };
    if files.is_empty() {
        return Err(Error::file(dir, "no .png/.jpg/.jpeg images found"));
    }
    Ok((load_images_with(&files, pre, device)?, labels))
}

fn pick<T>(items: &mut Vec<T>, limit: usize, seed: u64) {
    if limit > 0 && limit < items.len() {
        let keep = crate::data::Rng::new(seed).sorted_sample(items.len(), limit);
        let mut i = 0;
        items.retain(|_| {
            let k = keep.binary_search(&i).is_ok();
            i += 1;
            k
        });
    }
}
