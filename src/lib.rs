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

/// Call first thing in `main`, before any tensor op or thread exists.
///
/// - Unless the user set `CANDLE_NUM_THREADS`, candle runs element-wise ops on the calling
///   thread: its extra pool for them busy-waits, which on few cores steals the CPU from the
///   convolution and matmul threads (rayon, unaffected) and made attribution ~2.3× slower on
///   2 cores. Results are unchanged (element-wise ops are computed per element either way).
/// - With glibc, freed tensor buffers stay in the heap for reuse (`mallopt`). By default
///   glibc gives every block over 128 KiB back to the kernel and the next tensor faults in
///   fresh zeroed pages: a quarter of ResNet-50 attribution time at batch 8 went to page
///   faults. Keeping them makes attribution ~25% and VGG-16 forward+backward ~18% faster;
///   the cost is that the process keeps its peak memory until it exits.
pub fn init_cpu_runtime() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    keep_freed_memory();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // No block is mapped on its own (M_MMAP_MAX = 0, so the mmap threshold no longer
    // matters; VGG-16 activations at batch 8 are 100 MB), and the heap is never trimmed.
    // SAFETY: mallopt only sets allocator parameters; it is called before other threads run.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}
