//! What the layers share: one `forward` per layer (candle-nn's `Module`, with the pass's
//! [`Ctx`]), and the ReLU a layer applies to its own output.

use candle_core::Tensor;

use super::kernels;
use crate::error::Result;
use crate::taps::{Ctx, TapPoint};

/// A layer run on one tensor. Each layer has this one `forward` and chooses inside it
/// whether its post-op ([`Post`]) runs fused into its own kernel.
pub trait Module {
    fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor>;
}

/// A post-ReLU activation recorded as layer `layer` of the paper's numbering, under `name`
/// (torchvision's module name: `features.1`, `relu`, `layer1.0`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Act {
    pub layer: usize,
    pub name: String,
}

impl Act {
    pub fn new(layer: usize, name: impl Into<String>) -> Self {
        Act {
            layer,
            name: name.into(),
        }
    }
}

/// What a layer applies to its own output. A layer fuses the ReLU into its bias add or
/// BatchNorm where nothing records (values and gradients are those of the separate ops).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Post {
    /// The layer's output as is.
    #[default]
    Identity,
    /// ReLU of the output.
    Relu,
    /// ReLU of the output, recorded as an activation.
    TappedRelu(Act),
}

impl Post {
    pub(crate) fn is_relu(&self) -> bool {
        !matches!(self, Post::Identity)
    }

    /// The output `h` of a layer whose ReLU ran fused into its own kernel: a tapped ReLU's
    /// activation still goes to the pass's feature list (nothing records on this path).
    pub(crate) fn fused_output(&self, h: Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        match self {
            Post::TappedRelu(act) => ctx.tap_act(act.layer, &act.name, h, TapPoint::default()),
            _ => Ok(h),
        }
    }

    /// The post-op as a separate op on the layer's output `h`.
    pub(crate) fn apply(&self, h: Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        match self {
            Post::Identity => Ok(h),
            Post::Relu => relu(&h, ctx),
            Post::TappedRelu(act) => {
                let point = ctx.tap_point();
                let h = kernels::relu(&h, ctx.needs_graph(), &point)?;
                ctx.tap_act(act.layer, &act.name, h, point)
            }
        }
    }
}

/// ReLU whose derivative at exactly 0 is 0, as in PyTorch (candle's `relu` uses 1 there,
/// which matters once biases decay and many pre-activations sit at exactly 0).
pub fn relu(x: &Tensor, ctx: &Ctx) -> Result<Tensor> {
    Ok(kernels::relu(x, ctx.needs_graph(), &TapPoint::default())?)
}

/// relu(a + b), recorded as `act` (ResNet's block output).
pub(crate) fn add_relu_tapped(a: &Tensor, b: &Tensor, ctx: &mut Ctx, act: &Act) -> Result<Tensor> {
    let point = ctx.tap_point();
    let h = kernels::add_relu(a, b, ctx.needs_graph(), &point)?;
    ctx.tap_act(act.layer, &act.name, h, point)
}
