//! 2-D convolution with an optional bias and a fused ReLU.

use candle_core::{Tensor, Var};

use super::kernels::{channel_affine, channel_affine_relu, conv2d};
use super::module::{Module, Post};
use crate::error::Result;
use crate::taps::{ConvInput, Ctx};

/// A convolution (PyTorch's `Conv2d`, square stride and padding) followed by its [`Post`].
pub struct Conv2d {
    pub name: String,
    pub weight: Var,
    pub bias: Option<Var>,
    pub stride: usize,
    pub padding: usize,
    pub post: Post,
}

/// Output length of a convolution or pooling window along one axis (PyTorch's floor
/// formula); `None` when the padded input is shorter than the window.
pub fn window_out_len(len: usize, kernel: usize, stride: usize, padding: usize) -> Option<usize> {
    let padded = len.checked_add(2 * padding)?;
    if len == 0 || padded < kernel || stride == 0 {
        return None;
    }
    Some((padded - kernel) / stride + 1)
}

impl Conv2d {
    /// This convolution with `post` applied to its output.
    pub fn then(self, post: Post) -> Self {
        Conv2d { post, ..self }
    }

    pub fn out_channels(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Output length along `axis` (0 = height, 1 = width) for an input of length `len`,
    /// from the kernel shape alone.
    pub fn out_len(&self, len: usize, axis: usize) -> Option<usize> {
        let kernel = self.weight.dims()[2 + axis];
        window_out_len(len, kernel, self.stride, self.padding)
    }

    /// The convolution without its bias.
    fn conv(&self, x: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        let w = ctx.param(&self.weight);
        Ok(conv2d(x, &w, self.padding, self.stride)?)
    }

    /// y plus the bias, if any, the sum tapped as this module's output.
    fn add_bias(&self, y: Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        match &self.bias {
            None => Ok(y),
            Some(b) => {
                let point = ctx.tap_point();
                let y = channel_affine(&y, None, &ctx.param(b), &point)?;
                ctx.tap_module(&self.name, y, b.as_tensor(), point)
            }
        }
    }
}

impl Module for Conv2d {
    /// The bias add and a ReLU post-op are one fused op when nothing records the bias
    /// module's output (the values and gradients are the same).
    fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        if let Some(inputs) = ctx.conv_inputs.as_mut() {
            inputs.push(ConvInput {
                name: self.name.clone(),
                input: x.detach(),
                stride: self.stride,
                padding: self.padding,
            });
        }
        let y = self.conv(x, ctx)?;
        if self.post.is_relu() {
            if let (None, Some(b)) = (&ctx.recorder, &self.bias) {
                if let Some(h) = channel_affine_relu(&y, None, &ctx.param(b), ctx.needs_graph())? {
                    return self.post.fused_output(h, ctx);
                }
            }
        }
        let y = self.add_bias(y, ctx)?;
        self.post.apply(y, ctx)
    }
}
