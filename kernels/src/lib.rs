//! The numerical kernels of zerobias: convolution (im2col, direct, Winograd), the matrix
//! product under it, per-channel affine maps, ReLU, max pooling and the fused reductions of
//! attribution, each with the device-generic code it replaces beside it. Which code runs is
//! decided in one place, [`config`]; see the crate's README for what runs where.
//!
//! The crate knows nothing of models or attribution: an op that can store the gradient at
//! its output for a caller takes a [`GradHook`].

pub mod affine;
pub mod config;
pub mod conv;
mod cpu;
pub mod error;
pub mod hook;
pub mod pool;
pub mod reduce;
pub mod relu;
pub mod sgemm;
mod storage;

pub use config::{check_env, config, KernelConfig, KernelPath};
pub use error::{KernelError, Result};
pub use hook::{GradHook, GradSlot};
pub use storage::cpu_f32;
