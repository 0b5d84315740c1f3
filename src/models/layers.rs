//! Building blocks with explicit parameters and attribution taps.
//!
//! Every parameter is a `Var` shared with the model's [`ParamStore`], so rescaling a bias
//! acts on the live model. Layers call back into [`Ctx`] at each tap point.

use candle_core::{DType, Tensor, Var, D};

use super::affine::{channel_affine, channel_affine_add_relu, channel_affine_relu};
use super::{Ctx, ParamKind, ParamStore};
use crate::error::{Error, Result};
use crate::taps::TapPoint;

/// ReLU whose derivative at exactly 0 is 0, as in PyTorch (candle's `relu` uses 1 there,
/// which matters once biases decay and many pre-activations sit at exactly 0).
pub fn relu(x: &Tensor, ctx: &Ctx) -> Result<Tensor> {
    Ok(super::relu::relu(
        x,
        ctx.needs_graph(),
        &TapPoint::default(),
    )?)
}

/// [`relu`] whose output is recorded as the activation of layer `l`.
pub fn relu_tapped(x: &Tensor, ctx: &mut Ctx, l: usize, name: &str) -> Result<Tensor> {
    let point = ctx.tap_point();
    let h = super::relu::relu(x, ctx.needs_graph(), &point)?;
    ctx.tap_act(l, name, h, point)
}

/// relu(a + b), recorded as the activation of layer `l` (ResNet's block output).
pub fn add_relu_tapped(
    a: &Tensor,
    b: &Tensor,
    ctx: &mut Ctx,
    l: usize,
    name: &str,
) -> Result<Tensor> {
    let point = ctx.tap_point();
    let h = super::relu::add_relu(a, b, ctx.needs_graph(), &point)?;
    ctx.tap_act(l, name, h, point)
}

pub struct Conv2d {
    pub name: String,
    pub weight: Var,
    pub bias: Option<Var>,
    pub stride: usize,
    pub padding: usize,
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
    pub fn out_channels(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Output length along `axis` (0 = height, 1 = width) for an input of length `len`,
    /// from the kernel shape alone.
    pub fn out_len(&self, len: usize, axis: usize) -> Option<usize> {
        let kernel = self.weight.dims()[2 + axis];
        window_out_len(len, kernel, self.stride, self.padding)
    }

    /// relu(self.forward(x)), recorded as the activation of layer `l`; the bias add and
    /// the ReLU are one fused op when nothing records (the values and gradients are the same).
    pub fn forward_relu_tapped(
        &self,
        x: &Tensor,
        ctx: &mut Ctx,
        l: usize,
        name: &str,
    ) -> Result<Tensor> {
        let y = self.conv(x, ctx)?;
        if let (None, Some(b)) = (&ctx.recorder, &self.bias) {
            if let Some(h) = channel_affine_relu(&y, None, &ctx.param(b), ctx.needs_graph())? {
                return Ok(h);
            }
        }
        relu_tapped(&self.add_bias(y, ctx)?, ctx, l, name)
    }

    pub fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let y = self.conv(x, ctx)?;
        self.add_bias(y, ctx)
    }

    /// The convolution without its bias.
    fn conv(&self, x: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        let w = ctx.param(&self.weight);
        Ok(crate::models::conv::conv2d(
            x,
            &w,
            self.padding,
            self.stride,
        )?)
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

pub struct Linear {
    pub name: String,
    pub weight: Var,
    pub bias: Option<Var>,
}

impl Linear {
    pub fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let w = ctx.param(&self.weight);
        // (W · xᵀ)ᵀ rather than x · Wᵀ: the backward pass then yields the weight gradient
        // in W's own [out, in] layout. With x · Wᵀ it arrives transposed and is copied with
        // a strided read of the whole weight-sized gradient (VGG's first classifier layer
        // has 103M weights).
        let y = w.matmul(&x.t()?)?.t()?.contiguous()?;
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

/// BatchNorm with β and the running mean as explicit, scalable handles.
pub struct BatchNorm {
    pub name: String,
    pub gamma: Var,
    pub beta: Var,
    pub running_mean: Var,
    pub running_var: Var,
    pub eps: f64,
    pub momentum: f64,
}

impl BatchNorm {
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

    /// relu_op(self.forward(x)); eval-mode BN and the ReLU are one fused op when nothing
    /// records (the values and gradients are those of the two ops).
    fn forward_then_relu(
        &self,
        x: &Tensor,
        ctx: &mut Ctx,
        relu_op: impl FnOnce(&Tensor, &mut Ctx) -> Result<Tensor>,
    ) -> Result<Tensor> {
        if ctx.train_bn {
            let h = self.forward(x, ctx)?;
            return relu_op(&h, ctx);
        }
        let (scale, bias) = self.eval_affine(ctx)?;
        if ctx.recorder.is_none() {
            if let Some(h) = channel_affine_relu(x, Some(&scale), &bias, ctx.needs_graph())? {
                return Ok(h);
            }
        }
        let h = self.eval_forward(x, &scale, &bias, ctx)?;
        relu_op(&h, ctx)
    }

    /// relu(self.forward(x)), fused where nothing records.
    pub fn forward_relu(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        self.forward_then_relu(x, ctx, |h, ctx| relu(h, ctx))
    }

    /// [`Self::forward_relu`] whose output is recorded as the activation of layer `l`.
    pub fn forward_relu_tapped(
        &self,
        x: &Tensor,
        ctx: &mut Ctx,
        l: usize,
        name: &str,
    ) -> Result<Tensor> {
        self.forward_then_relu(x, ctx, |h, ctx| relu_tapped(h, ctx, l, name))
    }

    /// relu(self.forward(x) + residual(ctx)), recorded as the activation of layer `l`: the
    /// end of a residual block. Eval-mode BN, the addition and the ReLU are one fused op when
    /// nothing records (the values and gradients are those of the separate ops). The
    /// residual is computed after this BN's output is recorded, in the separate ops' order.
    pub fn forward_add_relu_tapped(
        &self,
        x: &Tensor,
        residual: impl FnOnce(&mut Ctx) -> Result<Tensor>,
        ctx: &mut Ctx,
        l: usize,
        name: &str,
    ) -> Result<Tensor> {
        if !ctx.train_bn && ctx.recorder.is_none() {
            let (scale, bias) = self.eval_affine(ctx)?;
            let r = residual(ctx)?;
            let graph = ctx.needs_graph();
            if let Some(h) = channel_affine_add_relu(x, &scale, &bias, &r, graph)? {
                return Ok(h);
            }
            let h = self.eval_forward(x, &scale, &bias, ctx)?;
            return add_relu_tapped(&h, &r, ctx, l, name);
        }
        let h = self.forward(x, ctx)?;
        let r = residual(ctx)?;
        add_relu_tapped(&h, &r, ctx, l, name)
    }

    pub fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let c = self.gamma.dims()[0];
        if ctx.train_bn {
            let gamma = ctx.param(&self.gamma);
            let beta = ctx.param(&self.beta);
            // Batch statistics; the running statistics follow PyTorch's update rule.
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
            let new_mean = ((self.running_mean.as_tensor() * (1.0 - m))?
                + (mean.detach().flatten_all()? * m)?)?;
            let new_var = ((self.running_var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?;
            self.running_mean.set(&new_mean)?;
            self.running_var.set(&new_var)?;
            return Ok(y);
        }
        let (scale, bias) = self.eval_affine(ctx)?;
        self.eval_forward(x, &scale, &bias, ctx)
    }
}

/// Max pooling with PyTorch's gradient: one winner per window (the first maximum in
/// raster order), for any kernel, stride and padding (see [`super::pool::max_pool2d`]).
pub fn max_pool2d(
    x: &Tensor,
    kernel: usize,
    stride: usize,
    padding: usize,
    ctx: &Ctx,
) -> Result<Tensor> {
    Ok(super::pool::max_pool2d(
        x,
        kernel,
        stride,
        padding,
        ctx.needs_graph(),
    )?)
}

/// PyTorch's AdaptiveAvgPool2d: bin i covers [floor(i·H/O), ceil((i+1)·H/O)), bins overlap
/// when H is not a multiple of O and repeat when H < O. Done as two small matmuls.
pub fn adaptive_avg_pool2d(x: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if h == out_h && w == out_w {
        return Ok(x.clone());
    }
    let ph = pool_matrix(h, out_h, x.device())?; // [out_h, h]
    let pw = pool_matrix(w, out_w, x.device())?; // [out_w, w]
    let y = x.reshape((n * c * h, w))?.matmul(&pw.t()?)?; // [n*c*h, out_w]
    let y = y.reshape((n * c, h, out_w))?;
    let y = ph
        .unsqueeze(0)?
        .broadcast_as((n * c, out_h, h))?
        .contiguous()?
        .matmul(&y)?;
    Ok(y.reshape((n, c, out_h, out_w))?)
}

fn pool_matrix(size: usize, out: usize, device: &candle_core::Device) -> Result<Tensor> {
    let mut m = vec![0f32; out * size];
    for i in 0..out {
        let start = (i * size) / out;
        let end = ((i + 1) * size).div_ceil(out);
        let len = (end - start) as f32;
        for j in start..end {
            m[i * size + j] = 1.0 / len;
        }
    }
    Ok(Tensor::from_vec(m, (out, size), device)?)
}

/// Mean over H and W, as ResNet's global pool.
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    Ok(x.mean((2, 3))?)
}

/// Reads parameters out of a weight map, remembering which keys were used so that
/// leftovers can be reported as unexpected.
pub struct WeightReader<'a> {
    pub tensors: &'a std::collections::HashMap<String, Tensor>,
    pub used: std::collections::HashSet<String>,
    pub store: ParamStore,
    pub source: String,
}

impl<'a> WeightReader<'a> {
    pub fn new(tensors: &'a std::collections::HashMap<String, Tensor>, source: &str) -> Self {
        Self {
            tensors,
            used: Default::default(),
            store: ParamStore::default(),
            source: source.to_string(),
        }
    }

    pub fn has(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    fn take(&mut self, key: &str, kind: ParamKind, dims: Option<&[usize]>) -> Result<Var> {
        let t = self.tensors.get(key).ok_or_else(|| Error::Checkpoint {
            path: self.source.clone().into(),
            message: format!("missing key '{key}'"),
        })?;
        if let Some(d) = dims {
            if t.dims() != d {
                return Err(Error::Checkpoint {
                    path: self.source.clone().into(),
                    message: format!("key '{key}' has shape {:?}, expected {:?}", t.dims(), d),
                });
            }
        }
        self.used.insert(key.to_string());
        let var = Var::from_tensor(&t.to_dtype(DType::F32)?)?;
        self.store.push(key, kind, var.clone());
        Ok(var)
    }

    pub fn conv(
        &mut self,
        name: &str,
        in_c: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Conv2d> {
        let key = format!("{name}.weight");
        let dims = self
            .tensors
            .get(&key)
            .map(|t| t.dims().to_vec())
            .unwrap_or_default();
        if dims.len() != 4 || dims[1] != in_c {
            if dims.is_empty() {
                self.take(&key, ParamKind::Weight, None)?;
            }
            return Err(Error::Checkpoint {
                path: self.source.clone().into(),
                message: format!(
                    "key '{key}' has shape {dims:?}, expected a conv weight [out, {in_c}, kh, kw]"
                ),
            });
        }
        let weight = self.take(&key, ParamKind::Weight, None)?;
        let bias_key = format!("{name}.bias");
        let bias = if self.has(&bias_key) {
            Some(self.take(&bias_key, ParamKind::Bias, Some(&[dims[0]]))?)
        } else {
            None
        };
        Ok(Conv2d {
            name: name.to_string(),
            weight,
            bias,
            stride,
            padding,
        })
    }

    pub fn linear(&mut self, name: &str, in_f: usize) -> Result<Linear> {
        let key = format!("{name}.weight");
        let dims = self
            .tensors
            .get(&key)
            .map(|t| t.dims().to_vec())
            .unwrap_or_default();
        if dims.is_empty() {
            self.take(&key, ParamKind::Weight, None)?;
        }
        if dims.len() != 2 || dims[1] != in_f {
            return Err(Error::Checkpoint {
                path: self.source.clone().into(),
                message: format!(
                    "key '{key}' has shape {dims:?}, expected a linear weight [out, {in_f}]"
                ),
            });
        }
        let weight = self.take(&key, ParamKind::Weight, None)?;
        let bias_key = format!("{name}.bias");
        let bias = if self.has(&bias_key) {
            Some(self.take(&bias_key, ParamKind::Bias, Some(&[dims[0]]))?)
        } else {
            None
        };
        Ok(Linear {
            name: name.to_string(),
            weight,
            bias,
        })
    }

    pub fn batch_norm(&mut self, name: &str, c: usize) -> Result<BatchNorm> {
        let shape = [c];
        Ok(BatchNorm {
            name: name.to_string(),
            gamma: self.take(&format!("{name}.weight"), ParamKind::BnGamma, Some(&shape))?,
            beta: self.take(&format!("{name}.bias"), ParamKind::BnBeta, Some(&shape))?,
            running_mean: self.take(
                &format!("{name}.running_mean"),
                ParamKind::BnMean,
                Some(&shape),
            )?,
            running_var: self.take(
                &format!("{name}.running_var"),
                ParamKind::BnVar,
                Some(&shape),
            )?,
            eps: 1e-5,
            momentum: 0.1,
        })
    }

    /// Errors on keys nobody asked for (ignoring BN's num_batches_tracked counters).
    pub fn finish(self) -> Result<ParamStore> {
        let mut extra: Vec<&String> = self
            .tensors
            .keys()
            .filter(|k| !self.used.contains(*k) && !k.ends_with("num_batches_tracked"))
            .collect();
        extra.sort();
        if !extra.is_empty() {
            let shown: Vec<_> = extra.iter().take(5).map(|s| s.as_str()).collect();
            return Err(Error::Checkpoint {
                path: self.source.into(),
                message: format!(
                    "unexpected key{} {}{} (not part of the detected architecture)",
                    if extra.len() > 1 { "s" } else { "" },
                    shown.join(", "),
                    if extra.len() > 5 {
                        format!(" and {} more", extra.len() - 5)
                    } else {
                        String::new()
                    }
                ),
            });
        }
        Ok(self.store)
    }
}

/// Softmax cross-entropy averaged over the batch.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = logp.gather(&labels.unsqueeze(1)?, 1)?;
    Ok(picked.mean_all()?.neg()?)
}
