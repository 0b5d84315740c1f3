//! zerobias: bias parameters in image classifiers and the quality of visual explanations.
//!
//! Data flow: weights ([`hub`], [`checkpoint`]) → [`models`] → forward with [`taps`] → one
//! backward → [`attribution`] methods → maps → [`eval`] (flip metric) → [`stats`] →
//! [`report`]. The [`train`] module decays the [`bias`] handles to zero by distillation.

pub mod attribution;
pub mod bench;
pub mod bias;
pub mod checkpoint;
pub mod error;
pub mod hub;
pub mod labels;
// pub mod inputs;
pub mod models;
pub mod report;
pub mod stats;
pub mod taps;

pub use error::{Error, Result};
