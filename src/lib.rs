//! zerobias: bias parameters in image classifiers and the quality of visual explanations.
//!
//! Data flow: weights ([`hub`], [`checkpoint`]) → [`models`] → forward with [`taps`] → one
//! backward → [`attribution`] methods → maps → [`eval`] (flip metric) → [`stats`] →
//! [`report`]. The [`train`] module decays the [`bias`] handles to zero by distillation.

pub mod attribution;
pub mod bench;
pub mod bias;
pub mod checkpoint;
pub mod data;
pub mod error;
pub mod eval;
pub mod hub;
pub mod inputs;
pub mod labels;
pub mod models;
pub mod report;
pub mod stats;
pub mod taps;
pub mod train;

pub use error::{Error, Result};

/// Call first thing in `main`, before any tensor op or thread exists. Unless the user set
/// `CANDLE_NUM_THREADS`, it makes candle run element-wise ops on the calling thread: its
/// extra pool for them busy-waits, which on few cores steals the CPU from the convolution
/// and matmul threads (rayon, unaffected) and made attribution ~2.3× slower on 2 cores.
/// Results are unchanged (element-wise ops are computed per element either way).
pub fn init_cpu_runtime() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}
