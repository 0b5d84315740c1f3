//! Taps: the gradient at hidden tensors, so that one backward pass yields the gradient at
//! every layer (candle drops gradients of non-`Var` nodes). On CPU our ReLU and affine ops
//! store the gradient at their output; elsewhere a zero `Var` is added to the tensor.
//!
//! This module sits below the layers and models: [`Ctx`] is what every layer's `forward`
//! takes, and [`record`] runs any [`Recordable`] model (every `Classifier` is one), so
//! nothing here names the models.

use candle_core::{DType, Shape, Tensor, Var};

use crate::error::{Error, Result};

pub struct ActTap {
    pub layer: usize,
    pub name: String,
    pub value: Tensor,
    probe: Probe,
}

/// Where a tap's gradient ends up: a zero `Var` added to the tensor (any device), or a slot
/// that the op producing the tensor fills during backward (CPU).
enum Probe {
    Var(Var),
    Slot(GradSlot),
}

/// A tap prepared before the op whose output it taps. Our CPU ops (ReLU, per-channel affine)
/// can store their output gradient themselves: they attach the hook's slot and the tap then
/// costs nothing. Otherwise the recorder adds a zero `Var` after the op.
pub use zerobias_kernels::GradHook as TapPoint;
pub use zerobias_kernels::GradSlot;

/// The probe for `h`: the slot an op attached, or a zero `Var` added to `h`.
fn probe(point: TapPoint, h: &Tensor) -> Result<(Tensor, Probe)> {
    match point.attached() {
        Some(slot) => Ok((h.clone(), Probe::Slot(slot))),
        None => {
            let var = Var::zeros(h.shape(), h.dtype(), h.device())?;
            let out = (h + var.as_tensor())?;
            Ok((out, Probe::Var(var)))
        }
    }
}

/// Per-forward settings: whether BN uses batch statistics (supervised training from
/// scratch), whether parameters are tracked for gradients, and where taps go.
pub struct Ctx<'a> {
    pub train_bn: bool,
    pub track_params: bool,
    pub recorder: Option<&'a mut Recorder>,
    /// A backward pass to the input follows (frozen parameters, no taps).
    pub input_grad: bool,
    /// Layer index l that the modules now running belong to (for grouping bias maps).
    pub layer: usize,
    /// Every layer activation of the pass, in order, graph attached (feature distillation).
    pub features: Option<Vec<Tensor>>,
    /// The input of every convolution of the pass (bias compensation during decay).
    pub conv_inputs: Option<Vec<ConvInput>>,
    /// Eval-mode BN first folds its input's second moment about the running mean into the
    /// running variance with this weight, then normalises with the result, so that later
    /// layers see the recalibrated scales in the same pass (`bn_variance = "recalibrate"`).
    pub bn_recalibration: Option<f64>,
}

/// A convolution's input and geometry, as one pass saw it.
pub struct ConvInput {
    /// The convolution's torchvision name (e.g. `layer1.0.conv2`).
    pub name: String,
    pub input: Tensor,
    pub stride: usize,
    pub padding: usize,
}

impl<'a> Ctx<'a> {
    /// Plain inference: no graph, no taps.
    pub fn inference() -> Self {
        Ctx {
            train_bn: false,
            track_params: false,
            recorder: None,
            input_grad: false,
            layer: 0,
            features: None,
            conv_inputs: None,
            bn_recalibration: None,
        }
    }
    /// Gradient to the input only: frozen parameters, no taps, PyTorch's gradients.
    pub fn input_gradient() -> Self {
        Ctx {
            input_grad: true,
            ..Ctx::inference()
        }
    }
    /// Training: parameters tracked; BN in eval mode unless `train_bn`.
    pub fn training(train_bn: bool) -> Self {
        Ctx {
            train_bn,
            track_params: true,
            recorder: None,
            input_grad: false,
            layer: 0,
            features: None,
            conv_inputs: None,
            bn_recalibration: None,
        }
    }
    /// Attribution: frozen parameters, taps recorded.
    pub fn recording(recorder: &'a mut Recorder) -> Self {
        Ctx {
            train_bn: false,
            track_params: false,
            recorder: Some(recorder),
            input_grad: false,
            layer: 0,
            features: None,
            conv_inputs: None,
            bn_recalibration: None,
        }
    }

    /// Whether a backward pass will follow (so ops must have PyTorch's gradients).
    pub fn needs_graph(&self) -> bool {
        self.track_params || self.recorder.is_some() || self.input_grad
    }

    /// The tensor of a parameter as this pass should see it: tracked for training,
    /// detached (no weight gradients computed) otherwise.
    pub fn param(&self, v: &Var) -> Tensor {
        if self.track_params {
            v.as_tensor().clone()
        } else {
            v.as_tensor().detach()
        }
    }

    /// A tap point for the output of the op about to be built (see [`TapPoint`]).
    pub fn tap_point(&self) -> TapPoint {
        TapPoint::new(self.recorder.is_some())
    }

    /// Plain inference that recalibrates every BN's running variance on the way (see
    /// `bn_recalibration`): the batch's weight `weight` in the running average.
    pub fn recalibrating_bn(weight: f64) -> Self {
        Ctx {
            bn_recalibration: Some(weight),
            ..Ctx::inference()
        }
    }

    /// The same settings, also collecting every layer activation (see `features`).
    pub fn collecting_features(self) -> Self {
        Ctx {
            features: Some(Vec::new()),
            ..self
        }
    }

    /// Post-ReLU output of layer `l`, produced by the op `point` was offered to.
    pub fn tap_act(&mut self, l: usize, name: &str, h: Tensor, point: TapPoint) -> Result<Tensor> {
        if let Some(f) = self.features.as_mut() {
            f.push(h.clone());
        }
        match self.recorder.as_deref_mut() {
            Some(r) => r.act(l, name, h, point),
            None => Ok(h),
        }
    }

    /// Output of a bias-carrying module, with its (effective) bias vector.
    pub fn tap_module(
        &mut self,
        name: &str,
        out: Tensor,
        bias: &Tensor,
        point: TapPoint,
    ) -> Result<Tensor> {
        let layer = self.layer;
        match self.recorder.as_deref_mut() {
            Some(r) => r.module(layer, name, out, bias, point),
            None => Ok(out),
        }
    }
}

pub struct ModuleTap {
    pub name: String,
    pub layer: usize,
    /// Effective bias per output channel / feature.
    pub bias: Tensor,
    shape: Shape,
    probe: Probe,
}

/// Collects taps during a forward pass.
#[derive(Default)]
pub struct Recorder {
    acts: Vec<ActTap>,
    modules: Vec<ModuleTap>,
}

impl Recorder {
    /// [C, H, W] of each recorded layer activation.
    pub fn act_shapes(&self) -> Vec<Vec<usize>> {
        self.acts
            .iter()
            .map(|a| a.value.dims()[1..].to_vec())
            .collect()
    }

    pub fn act(&mut self, layer: usize, name: &str, h: Tensor, point: TapPoint) -> Result<Tensor> {
        let (out, probe) = probe(point, &h)?;
        self.acts.push(ActTap {
            layer,
            name: name.to_string(),
            value: h.detach(),
            probe,
        });
        Ok(out)
    }

    pub fn module(
        &mut self,
        layer: usize,
        name: &str,
        out: Tensor,
        bias: &Tensor,
        point: TapPoint,
    ) -> Result<Tensor> {
        let shape = out.shape().clone();
        let (tapped, probe) = probe(point, &out)?;
        self.modules.push(ModuleTap {
            name: name.to_string(),
            layer,
            bias: bias.detach(),
            shape,
            probe,
        });
        Ok(tapped)
    }
}

/// A layer's activation and the gradient of the target logit with respect to it.
pub struct ActRecord {
    pub layer: usize,
    pub name: String,
    pub value: Tensor,
    pub grad: Tensor,
    /// a^{h,l}, computed once and shared by the methods and the gross sums.
    pub(crate) map: std::sync::OnceLock<Tensor>,
}

/// A bias-carrying module's effective bias and the gradient at its output.
pub struct ModuleRecord {
    pub name: String,
    pub layer: usize,
    pub bias: Tensor,
    pub grad: Tensor,
    /// One fused pass over the gradient, shared by bias maps, FullGrad and gross sums.
    pub(crate) stats: std::sync::OnceLock<zerobias_kernels::reduce::ChannelStats>,
}

/// Everything one forward + one backward pass records.
pub struct Recorded {
    pub input: Tensor,
    pub input_grad: Tensor,
    pub logits: Tensor,
    /// Target class per image (u32).
    pub target: Vec<u32>,
    /// Target logit per image.
    pub target_logit: Tensor,
    /// Layers 1..=L in order.
    pub acts: Vec<ActRecord>,
    pub modules: Vec<ModuleRecord>,
}

/// How to choose the class whose logit is explained.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    Predicted,
    Class(usize),
    PerImage(Vec<usize>),
}

/// A model whose forward pass can be recorded: every `Classifier` (the models implement
/// this for them), so that recording does not depend on the models.
pub trait Recordable {
    fn forward_recording(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor>;
}

/// One forward with taps, then one backward of the sum of the target logits (images are
/// independent in eval mode, so each image's gradients are its own).
pub fn record<M: Recordable + ?Sized>(model: &M, x: &Tensor, target: &Target) -> Result<Recorded> {
    let x = x.to_dtype(DType::F32)?;
    let input = Var::from_tensor(&x)?;
    let mut rec = Recorder::default();
    let logits = {
        let mut ctx = Ctx::recording(&mut rec);
        model.forward_recording(input.as_tensor(), &mut ctx)?
    };
    let (n, classes) = logits.dims2()?;
    let target: Vec<u32> = match target {
        Target::Predicted => logits.detach().argmax(1)?.to_vec1::<u32>()?,
        Target::Class(c) => {
            check_class(*c, classes)?;
            vec![*c as u32; n]
        }
        Target::PerImage(v) => {
            if v.len() != n {
                return Err(Error::input(format!(
                    "{} targets given for a batch of {n} images",
                    v.len()
                )));
            }
            for &c in v {
                check_class(c, classes)?;
            }
            v.iter().map(|&c| c as u32).collect()
        }
    };
    let idx = Tensor::from_vec(target.clone(), (n, 1), logits.device())?;
    let picked = logits.gather(&idx, 1)?.squeeze(1)?;
    let grads = picked.sum_all()?.backward()?;
    let grad_of_var = |v: &Var| -> Result<Tensor> {
        Ok(match grads.get(v.as_tensor()) {
            Some(g) => g.clone(),
            // Not reached by the target (e.g. a layer after which nothing depends on it).
            None => v.as_tensor().zeros_like()?,
        })
    };
    let device = x.device().clone();
    let grad_of = |p: &Probe, shape: &Shape| -> Result<Tensor> {
        match p {
            Probe::Var(v) => grad_of_var(v),
            Probe::Slot(s) => match s.get() {
                Some(g) => Ok(g),
                None => Ok(Tensor::zeros(shape, DType::F32, &device)?),
            },
        }
    };
    let input_grad = grad_of_var(&input)?;
    let acts = rec
        .acts
        .iter()
        .map(|t| {
            Ok(ActRecord {
                layer: t.layer,
                name: t.name.clone(),
                value: t.value.clone(),
                grad: grad_of(&t.probe, t.value.shape())?,
                map: Default::default(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let modules = rec
        .modules
        .iter()
        .map(|t| {
            Ok(ModuleRecord {
                name: t.name.clone(),
                layer: t.layer,
                bias: t.bias.clone(),
                grad: grad_of(&t.probe, &t.shape)?,
                stats: Default::default(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Recorded {
        input: x,
        input_grad,
        logits: logits.detach(),
        target,
        target_logit: picked.detach(),
        acts,
        modules,
    })
}

fn check_class(c: usize, classes: usize) -> Result<()> {
    if c >= classes {
        return Err(Error::input(format!(
            "target class {c} is out of range: the model has {classes} classes (0..={})",
            classes - 1
        )));
    }
    Ok(())
}
