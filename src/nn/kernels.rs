//! The CPU kernels the layers call: the one place their paths are named.

pub(crate) use zerobias_kernels::affine::{
    channel_affine, channel_affine_add_relu, channel_affine_relu,
};
pub(crate) use zerobias_kernels::conv::conv2d;
pub(crate) use zerobias_kernels::pool::max_pool2d as max_pool;
pub(crate) use zerobias_kernels::relu::{add_relu, relu};
