//! zerobias: bias parameters in image classifiers and the quality of visual explanations.
//!
//! Data flow: weights ([`hub`], [`checkpoint`]) → [`models`] (built from [`nn`] layers) →
//! forward with [`taps`] → one backward → [`attribution`] methods → maps → [`eval`] (flip metric) → [`stats`] →
//! [`report`]. The [`train`] module decays the [`bias`] handles to zero by distillation.

pub mod attribution;
pub mod bench;
pub mod bias;
pub mod checkpoint;
pub mod data;
pub mod device;
pub mod error;
pub mod eval;
pub mod finite;
pub mod hub;
pub mod inputs;
pub mod labels;
pub mod models;
pub mod nn;
pub mod paths;
pub mod progress;
pub mod report;
pub mod runtime;
pub mod stats;
pub mod taps;
pub mod train;

pub use error::{Error, Result};
pub use runtime::{init_cpu_runtime, HugePageAlloc};
