//! Fused per-module reductions of attribution; they live with the other kernels.

pub use zerobias_kernels::reduce::{channel_dot, channel_stats, ChannelStats};
