//! BatchNorm with β and the running mean as explicit, scalable handles (candle-nn's
//! detaches them in eval mode), and the BatchNorm that closes a residual block.

use candle_core::{Tensor, Var};

use super::module::{add_relu_tapped, Act, Module, Post};
use crate::error::Result;
use crate::models::affine::{channel_affine, channel_affine_add_relu, channel_affine_relu};
use crate::taps::Ctx;

/// BatchNorm over the channels of [N, C, H, W] followed by its [`Post`]: batch statistics
/// when the pass trains BN (`ctx.train_bn`), else the running ones.
pub struct BatchNorm {
    pub name: String,
    pub gamma: Var,
    pub beta: Var,
    pub running_mean: Var,
    pub running_var: Var,
    pub eps: f64,
    pub momentum: f64,
    pub post: Post,
}

impl BatchNorm {
    /// This BatchNorm with `post` applied to its output.
    pub fn then(self, post: Post) -> Self {
        BatchNorm { post, ..self }
    }

    /// β − γ·μ/√(σ²+ε): the bias of the affine map BN computes in eval mode.
    pub fn effective_bias(&self) -> Result<Tensor> {
        let scale = self.scale(
            &self.gamma.as_tensor().detach(),
            &self.running_var.as_tensor().detach(),
        )?;
        Ok((self.beta.as_tensor().detach() - (self.running_mean.as_tensor().detach() * scale)?)?)
    }

    fn scale(&self, gamma: &Tensor, var: &Tensor) -> Result<Tensor> {
        Ok((gamma / (var + self.eps)?.sqrt()?)?)
    }

    /// (scale, bias) of the affine map eval-mode BN computes, from the parameters as `ctx`
    /// tracks them.
    fn eval_affine(&self, ctx: &Ctx) -> Result<(Tensor, Tensor)> {
        let (gamma, beta) = (ctx.param(&self.gamma), ctx.param(&self.beta));
        let mean = ctx.param(&self.running_mean);
        let scale = self.scale(&gamma, &ctx.param(&self.running_var))?;
        let bias = (beta - (mean * &scale)?)?;
        Ok((scale, bias))
    }

    /// Eval-mode BN as the affine map (scale, bias), its output tapped.
    fn eval_forward(
        &self,
        x: &Tensor,
        scale: &Tensor,
        bias: &Tensor,
        ctx: &mut Ctx,
    ) -> Result<Tensor> {
        let point = ctx.tap_point();
        let y = channel_affine(x, Some(scale), bias, &point)?;
        let eff = self.effective_bias()?;
        ctx.tap_module(&self.name, y, &eff, point)
    }

    /// Training-mode BN: batch statistics; the running statistics follow PyTorch's update
    /// rule.
    fn train_forward(&self, x: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        let c = self.gamma.dims()[0];
        let gamma = ctx.param(&self.gamma);
        let beta = ctx.param(&self.beta);
        let mean = x.mean_keepdim((0, 2, 3))?;
        let centered = x.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim((0, 2, 3))?;
        let xhat = centered.broadcast_div(&(var.clone() + self.eps)?.sqrt()?)?;
        let y = xhat
            .broadcast_mul(&gamma.reshape((1, c, 1, 1))?)?
            .broadcast_add(&beta.reshape((1, c, 1, 1))?)?;
        let count = (x.elem_count() / c) as f64;
        let unbiased = (var.detach().flatten_all()? * (count / (count - 1.0).max(1.0)))?;
        let m = self.momentum;
        let new_mean =
            ((self.running_mean.as_tensor() * (1.0 - m))? + (mean.detach().flatten_all()? * m)?)?;
        let new_var = ((self.running_var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?;
        self.running_mean.set(&new_mean)?;
        self.running_var.set(&new_var)?;
        Ok(y)
    }

    /// Without the post-op: the BN output, tapped as this module's output.
    fn forward_plain(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        if ctx.train_bn {
            return self.train_forward(x, ctx);
        }
        let (scale, bias) = self.eval_affine(ctx)?;
        self.eval_forward(x, &scale, &bias, ctx)
    }
}

impl Module for BatchNorm {
    /// Eval-mode BN and a ReLU post-op are one fused op when nothing records (the values
    /// and gradients are those of the two ops).
    fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        if ctx.train_bn || !self.post.is_relu() {
            let h = self.forward_plain(x, ctx)?;
            return self.post.apply(h, ctx);
        }
        let (scale, bias) = self.eval_affine(ctx)?;
        if ctx.recorder.is_none() {
            if let Some(h) = channel_affine_relu(x, Some(&scale), &bias, ctx.needs_graph())? {
                return Ok(h);
            }
        }
        let h = self.eval_forward(x, &scale, &bias, ctx)?;
        self.post.apply(h, ctx)
    }
}

/// The input of a residual block's closing BatchNorm ([`BnAddRelu`]).
pub struct Residual<'a> {
    /// The main branch, before its last BatchNorm.
    pub main: &'a Tensor,
    /// The block's input.
    pub shortcut: &'a Tensor,
    /// Applied to `shortcut` when the block changes shape (torchvision's `downsample`).
    pub downsample: Option<&'a dyn Module>,
}

/// relu(bn(main) + downsample(shortcut)), recorded as an activation: the end of a residual
/// block.
pub struct BnAddRelu {
    bn: BatchNorm,
    act: Act,
}

impl BnAddRelu {
    pub fn new(bn: BatchNorm, act: Act) -> Self {
        BnAddRelu {
            bn: bn.then(Post::Identity),
            act,
        }
    }

    pub fn bn(&self) -> &BatchNorm {
        &self.bn
    }

    /// Eval-mode BN, the addition and the ReLU are one fused op when nothing records (the
    /// values and gradients are those of the separate ops). The shortcut runs after this
    /// BN's output is recorded, in the separate ops' order.
    pub fn forward(&self, input: Residual<'_>, ctx: &mut Ctx) -> Result<Tensor> {
        let shortcut = |ctx: &mut Ctx| match input.downsample {
            Some(downsample) => downsample.forward(input.shortcut, ctx),
            None => Ok(input.shortcut.clone()),
        };
        if !ctx.train_bn && ctx.recorder.is_none() {
            let (scale, bias) = self.bn.eval_affine(ctx)?;
            let r = shortcut(ctx)?;
            let graph = ctx.needs_graph();
            if let Some(h) = channel_affine_add_relu(input.main, &scale, &bias, &r, graph)? {
                return Ok(h);
            }
            let h = self.bn.eval_forward(input.main, &scale, &bias, ctx)?;
            return add_relu_tapped(&h, &r, ctx, &self.act);
        }
        let h = self.bn.forward_plain(input.main, ctx)?;
        let r = shortcut(ctx)?;
        add_relu_tapped(&h, &r, ctx, &self.act)
    }
}
