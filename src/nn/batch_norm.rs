//! BatchNorm with β and the running mean as explicit, scalable handles (candle-nn's
//! detaches them in eval mode), and the BatchNorm that closes a residual block.

use candle_core::{Tensor, Var};

use super::kernels::{channel_affine, channel_affine_add_relu, channel_affine_relu};
use super::module::{add_relu_tapped, Act, Module, Post};
use crate::error::Result;
use crate::taps::{Ctx, TapPoint};

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

    /// With `ctx.bn_recalibration = Some(w)`: running variance ← (1 − w)·running variance +
    /// w·E[(x − μ)²] over the batch and positions, μ the running mean. Not a gradient path.
    fn recalibrate(&self, x: &Tensor, ctx: &Ctx) -> Result<()> {
        let Some(weight) = ctx.bn_recalibration else {
            return Ok(());
        };
        let c = self.gamma.dims()[0];
        let mean = self
            .running_mean
            .as_tensor()
            .detach()
            .reshape((1, c, 1, 1))?;
        let moment = x.detach().broadcast_sub(&mean)?.sqr()?.mean((0, 2, 3))?;
        let old = self.running_var.as_tensor().detach();
        self.running_var
            .set(&((old * (1.0 - weight))? + (moment * weight)?)?)?;
        Ok(())
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
        self.recalibrate(x, ctx)?;
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
        self.recalibrate(x, ctx)?;
        let (scale, bias) = self.eval_affine(ctx)?;
        if ctx.recorder.is_none() {
            if let Some(h) = channel_affine_relu(x, Some(&scale), &bias, ctx.needs_graph())? {
                return self.post.fused_output(h, ctx);
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
            self.bn.recalibrate(input.main, ctx)?;
            let (scale, bias) = self.bn.eval_affine(ctx)?;
            let r = shortcut(ctx)?;
            let graph = ctx.needs_graph();
            if let Some(h) = channel_affine_add_relu(input.main, &scale, &bias, &r, graph)? {
                // Nothing records on this path; the activation still goes to the features.
                return ctx.tap_act(self.act.layer, &self.act.name, h, TapPoint::default());
            }
            let h = self.bn.eval_forward(input.main, &scale, &bias, ctx)?;
            return add_relu_tapped(&h, &r, ctx, &self.act);
        }
        let h = self.bn.forward_plain(input.main, ctx)?;
        let r = shortcut(ctx)?;
        add_relu_tapped(&h, &r, ctx, &self.act)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    use super::{BatchNorm, BnAddRelu, Residual};
    use crate::error::Result;
    use crate::nn::conv::Conv2d;
    use crate::nn::module::{Act, Module, Post};
    use crate::taps::{record, Ctx, Recordable, Target};

    /// Deterministic values spread over both signs, some exactly 0 after the ReLU.
    fn values(shape: &[usize], seed: usize) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|i| (((i * 37 + seed * 11) % 101) as f32 - 50.0) * 0.02)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn var(shape: &[usize], seed: usize) -> Var {
        Var::from_tensor(&values(shape, seed)).unwrap()
    }

    fn conv(name: &str, cin: usize, cout: usize, k: usize, bias: bool, seed: usize) -> Conv2d {
        Conv2d {
            name: name.into(),
            weight: var(&[cout, cin, k, k], seed),
            bias: bias.then(|| var(&[cout], seed + 1)),
            stride: 1,
            padding: k / 2,
            post: Post::Identity,
        }
    }

    fn bn(name: &str, c: usize, seed: usize) -> BatchNorm {
        let positive = |s| Var::from_tensor(&(values(&[c], s).abs().unwrap() + 0.5).unwrap());
        BatchNorm {
            name: name.into(),
            gamma: positive(seed).unwrap(),
            beta: var(&[c], seed + 1),
            running_mean: var(&[c], seed + 2),
            running_var: positive(seed + 3).unwrap(),
            eps: 1e-5,
            momentum: 0.1,
            post: Post::Identity,
        }
    }

    /// A VGG-like layer and a residual block with a projection shortcut, then the mean over
    /// H and W as the logits.
    struct Net {
        conv: Conv2d,
        main: Conv2d,
        bn3: BnAddRelu,
        downsample: (Conv2d, BatchNorm),
    }

    struct Downsample<'a>(&'a (Conv2d, BatchNorm));

    impl Module for Downsample<'_> {
        fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
            let h = self.0 .0.forward(x, ctx)?;
            self.0 .1.forward(&h, ctx)
        }
    }

    impl Recordable for Net {
        fn forward_recording(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
            let x = self.conv.forward(x, ctx)?;
            let h = self.main.forward(&x, ctx)?;
            let downsample = Downsample(&self.downsample);
            let residual = Residual {
                main: &h,
                shortcut: &x,
                downsample: Some(&downsample),
            };
            Ok(self.bn3.forward(residual, ctx)?.mean((2, 3))?)
        }
    }

    fn net() -> Net {
        Net {
            conv: conv("features.0", 3, 4, 3, true, 1)
                .then(Post::TappedRelu(Act::new(1, "features.1"))),
            main: conv("layer1.0.conv3", 4, 5, 1, false, 5),
            bn3: BnAddRelu::new(bn("layer1.0.bn3", 5, 7), Act::new(2, "layer1.0")),
            downsample: (
                conv("layer1.0.downsample.0", 4, 5, 1, false, 11),
                bn("layer1.0.downsample.1", 5, 13),
            ),
        }
    }

    /// Value and input gradient of the target logits summed, through the fused ops (nothing
    /// records).
    fn fused(net: &Net, x: &Tensor, target: &[usize]) -> (Tensor, Tensor) {
        let x = Var::from_tensor(x).unwrap();
        let logits = net
            .forward_recording(x.as_tensor(), &mut Ctx::input_gradient())
            .unwrap();
        let idx = Tensor::from_vec(
            target.iter().map(|&c| c as u32).collect::<Vec<_>>(),
            (target.len(), 1),
            &Device::Cpu,
        )
        .unwrap();
        let picked = logits.gather(&idx, 1).unwrap().sum_all().unwrap();
        let grad = picked
            .backward()
            .unwrap()
            .get(x.as_tensor())
            .unwrap()
            .clone();
        (logits, grad)
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    }

    #[test]
    fn fused_and_recorded_passes_agree_bit_for_bit() {
        let net = net();
        let x = values(&[2, 3, 6, 5], 3);
        let target = vec![1, 4];
        let rec = record(&net, &x, &Target::PerImage(target.clone())).unwrap();
        let (logits, grad) = fused(&net, &x, &target);
        assert_eq!(bits(&logits), bits(&rec.logits));
        assert_eq!(bits(&grad), bits(&rec.input_grad));
        let inference = net.forward_recording(&x, &mut Ctx::inference()).unwrap();
        assert_eq!(bits(&inference), bits(&rec.logits));
    }

    /// Per channel, the mean over batch and positions of (x − μ)².
    fn second_moment(x: &Tensor, mean: &Tensor) -> Vec<f32> {
        let c = mean.dims()[0];
        x.broadcast_sub(&mean.reshape((1, c, 1, 1)).unwrap())
            .unwrap()
            .sqr()
            .unwrap()
            .mean((0, 2, 3))
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn recalibration_averages_second_moments_about_the_running_mean() {
        let norm = bn("layer1.0.bn1", 3, 4);
        let mean = norm.running_mean.as_tensor().clone();
        let var = |n: &BatchNorm| n.running_var.as_tensor().to_vec1::<f32>().unwrap();
        let (x1, x2) = (values(&[2, 3, 4, 5], 1), values(&[3, 3, 2, 2], 9));
        let (m1, m2) = (second_moment(&x1, &mean), second_moment(&x2, &mean));
        let out = norm.forward(&x1, &mut Ctx::recalibrating_bn(1.0)).unwrap();
        for (got, want) in var(&norm).iter().zip(&m1) {
            assert!(
                (got - want).abs() <= 1e-6 * want.abs().max(1.0),
                "{got} vs {want}"
            );
        }
        // The pass normalised with the variance it stored.
        let again = norm.forward(&x1, &mut Ctx::inference()).unwrap();
        assert_eq!(bits(&out), bits(&again));
        norm.forward(&x2, &mut Ctx::recalibrating_bn(0.5)).unwrap();
        for ((got, a), b) in var(&norm).iter().zip(&m1).zip(&m2) {
            let want = 0.5 * a + 0.5 * b;
            assert!(
                (got - want).abs() <= 1e-6 * want.abs().max(1.0),
                "{got} vs {want}"
            );
        }
        // The running mean stays where it was.
        assert_eq!(bits(norm.running_mean.as_tensor()), bits(&mean));
    }

    #[test]
    fn a_residual_block_recalibrates_both_of_its_batch_norms() {
        let net = net();
        let x = values(&[2, 3, 4, 4], 6);
        let before = |b: &BatchNorm| bits(b.running_var.as_tensor());
        let (main, short) = (before(net.bn3.bn()), before(&net.downsample.1));
        let out = net
            .forward_recording(&x, &mut Ctx::recalibrating_bn(1.0))
            .unwrap();
        assert_ne!(before(net.bn3.bn()), main);
        assert_ne!(before(&net.downsample.1), short);
        let again = net.forward_recording(&x, &mut Ctx::inference()).unwrap();
        assert_eq!(bits(&out), bits(&again));
    }

    #[test]
    fn taps_come_in_the_order_of_the_separate_ops() {
        let rec = record(&net(), &values(&[1, 3, 4, 4], 2), &Target::Class(0)).unwrap();
        let acts: Vec<_> = rec
            .acts
            .iter()
            .map(|a| (a.layer, a.name.as_str()))
            .collect();
        assert_eq!(acts, [(1, "features.1"), (2, "layer1.0")]);
        // The block's BN output is recorded before its shortcut runs.
        let modules: Vec<_> = rec.modules.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            modules,
            ["features.0", "layer1.0.bn3", "layer1.0.downsample.1"]
        );
    }
}
