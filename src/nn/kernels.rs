//! The CPU kernels the layers call: the one place their paths are named.

pub(crate) use crate::models::affine::{
    channel_affine, channel_affine_add_relu, channel_affine_relu,
};
pub(crate) use crate::models::conv::conv2d;
pub(crate) use crate::models::pool::max_pool2d as max_pool;
pub(crate) use crate::models::relu::{add_relu, relu};
