//! Layers between the kernels and the models: Conv2d, Linear, BatchNorm, pooling and the
//! weight reader. Every parameter is a `Var` shared with the model's [`ParamStore`], so
//! rescaling a bias acts on the live model.
//!
//! Each layer has one `forward` ([`Module`]); a layer built with a ReLU post-op
//! ([`Post`], e.g. `conv.then(Post::TappedRelu(Act::new(1, "features.1")))`) chooses inside
//! it whether the ReLU runs fused into its own kernel, and records its taps through the
//! pass's [`Ctx`](crate::taps::Ctx). A residual block's last BatchNorm, whose fused op needs
//! the shortcut, is a [`BnAddRelu`] taking a [`Residual`].
//!
//! The CPU kernels are called from here only, their paths named once in `kernels.rs`.

pub mod batch_norm;
pub mod conv;
mod kernels;
pub mod linear;
pub mod loss;
pub mod module;
pub mod params;
pub mod pool;
pub mod weights;

pub use batch_norm::{BatchNorm, BnAddRelu, Residual};
pub use conv::{window_out_len, Conv2d};
pub use linear::Linear;
pub use loss::cross_entropy;
pub use module::{relu, Act, Module, Post};
pub use params::{Param, ParamKind, ParamStore};
pub use pool::{adaptive_avg_pool2d, global_avg_pool, max_pool2d};
pub use weights::WeightReader;
