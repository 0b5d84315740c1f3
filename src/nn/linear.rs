//! Fully connected layer.

use candle_core::{Tensor, Var};

use super::kernels::channel_affine;
use super::module::{Module, Post};
use crate::error::Result;
use crate::taps::Ctx;

/// y = x·Wᵀ + b (PyTorch's `Linear`) followed by its [`Post`], applied as a separate op.
pub struct Linear {
    pub name: String,
    pub weight: Var,
    pub bias: Option<Var>,
    pub post: Post,
}

impl Linear {
    /// This layer with `post` applied to its output.
    pub fn then(self, post: Post) -> Self {
        Linear { post, ..self }
    }

    pub fn out_features(&self) -> usize {
        self.weight.dims()[0]
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let w = ctx.param(&self.weight);
        // (W · xᵀ)ᵀ rather than x · Wᵀ: the backward pass then yields the weight gradient
        // in W's own [out, in] layout. With x · Wᵀ it arrives transposed and is copied with
        // a strided read of the whole weight-sized gradient (VGG's first classifier layer
        // has 103M weights).
        let y = w.matmul(&x.t()?)?.t()?.contiguous()?;
        let y = match &self.bias {
            None => y,
            Some(b) => {
                let point = ctx.tap_point();
                let y = channel_affine(&y, None, &ctx.param(b), &point)?;
                ctx.tap_module(&self.name, y, b.as_tensor(), point)?
            }
        };
        self.post.apply(y, ctx)
    }
}
