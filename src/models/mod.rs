//! VGG and ResNet classifiers with explicit parameters, taps and bias handles.

pub mod affine;
pub mod conv;
pub mod init;
pub mod layers;
pub mod pool;
pub mod relu;
pub mod resnet;
pub mod sgemm;
pub mod vgg;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor, Var};

use crate::bias::{BiasHandle, BiasSet};
use crate::error::{Error, Result};
use crate::taps::{Recorder, TapPoint};

/// Whether the environment variable `var` is `value`, read once into `cell`: the switches
/// that send the CPU kernels down another path, so that benchmarks compare both in one
/// binary.
pub(crate) fn env_switch(cell: &'static std::sync::OnceLock<bool>, var: &str, value: &str) -> bool {
    *cell.get_or_init(|| std::env::var(var).is_ok_and(|v| v == value))
}

/// What a parameter is, so that the trainer and the bias handles can select them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    Weight,
    Bias,
    BnGamma,
    BnBeta,
    BnMean,
    BnVar,
}

#[derive(Clone)]
pub struct Param {
    pub name: String,
    pub kind: ParamKind,
    pub var: Var,
}

/// Every tensor of a model, in load order, under its torchvision name.
#[derive(Default, Clone)]
pub struct ParamStore {
    params: Vec<Param>,
}

impl ParamStore {
    pub fn push(&mut self, name: &str, kind: ParamKind, var: Var) {
        self.params.push(Param {
            name: name.to_string(),
            kind,
            var,
        });
    }
    pub fn iter(&self) -> impl Iterator<Item = &Param> {
        self.params.iter()
    }
    pub fn get(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name == name)
    }
    pub fn len(&self) -> usize {
        self.params.len()
    }
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }
    /// Number of scalars.
    pub fn numel(&self) -> usize {
        self.params.iter().map(|p| p.var.elem_count()).sum()
    }
    /// Named tensors (detached copies of the current values) for saving.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .map(|p| (p.name.clone(), p.var.as_tensor().detach()))
            .collect()
    }
    /// Overwrite the live values from a map (e.g. a checkpoint being resumed).
    pub fn assign(&self, tensors: &HashMap<String, Tensor>, source: &str) -> Result<()> {
        for p in &self.params {
            let t = tensors.get(&p.name).ok_or_else(|| Error::Checkpoint {
                path: source.into(),
                message: format!("missing key '{}'", p.name),
            })?;
            if t.dims() != p.var.dims() {
                return Err(Error::Checkpoint {
                    path: source.into(),
                    message: format!(
                        "key '{}' has shape {:?}, expected {:?}",
                        p.name,
                        t.dims(),
                        p.var.dims()
                    ),
                });
            }
            p.var.set(&t.to_device(p.var.device())?)?;
        }
        Ok(())
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

    /// Post-ReLU output of layer `l`, produced by the op `point` was offered to.
    pub fn tap_act(&mut self, l: usize, name: &str, h: Tensor, point: TapPoint) -> Result<Tensor> {
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Vgg,
    ResNet,
}

/// A layer l as the paper numbers them.
#[derive(Clone, Debug)]
pub struct LayerInfo {
    pub index: usize,
    pub name: String,
    pub channels: usize,
}

pub trait Classifier: Send + Sync {
    /// e.g. "vgg16", "resnet50".
    fn name(&self) -> String;
    fn arch(&self) -> Arch;
    fn num_classes(&self) -> usize;
    /// Layers l = 1..=L in order.
    fn layers(&self) -> &[LayerInfo];
    fn params(&self) -> &ParamStore;
    fn forward_ctx(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor>;
    /// Every bias-carrying module's name, in forward order, with its layer index
    /// (L+1 for the classifier head).
    fn bias_modules(&self) -> Vec<(String, usize)>;

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_ctx(x, &mut Ctx::inference())
    }
    fn num_layers(&self) -> usize {
        self.layers().len()
    }
    fn device(&self) -> Device {
        self.params()
            .iter()
            .next()
            .map(|p| p.var.device().clone())
            .unwrap_or(Device::Cpu)
    }
    /// Every bias-like parameter: conv/linear biases, BN β and running mean.
    fn bias_set(&self) -> BiasSet {
        let handles = self
            .params()
            .iter()
            .filter_map(|p| {
                let kind = match p.kind {
                    ParamKind::Bias => {
                        if p.var.rank() == 1 && self.is_linear(&p.name) {
                            crate::bias::BiasKind::LinearBias
                        } else {
                            crate::bias::BiasKind::ConvBias
                        }
                    }
                    ParamKind::BnBeta => crate::bias::BiasKind::BnBeta,
                    ParamKind::BnMean => crate::bias::BiasKind::BnRunningMean,
                    _ => return None,
                };
                let module = p.name.rsplit_once('.').map(|(m, _)| m).unwrap_or(&p.name);
                Some(BiasHandle {
                    module: module.to_string(),
                    param: p.name.clone(),
                    kind,
                    var: p.var.clone(),
                })
            })
            .collect();
        BiasSet::new(handles)
    }
    /// Whether the module owning parameter `name` is a linear layer.
    fn is_linear(&self, name: &str) -> bool;
    /// Output length of every layer l = 1..=L along one spatial axis (0 = height,
    /// 1 = width) for an input of length `len`, from the layer table alone (no tensors);
    /// `None` when some layer would have no pixels left.
    fn layer_lens(&self, len: usize, axis: usize) -> Option<Vec<usize>>;
}

/// Models compared with each other (`evaluate --model A --model B`) must score the same
/// classes; `models` are (label, model) pairs.
pub fn check_same_classes(models: &[(String, &dyn Classifier)]) -> Result<()> {
    let Some((_, first)) = models.first() else {
        return Ok(());
    };
    if models
        .iter()
        .all(|(_, m)| m.num_classes() == first.num_classes())
    {
        return Ok(());
    }
    let counts: Vec<String> = models
        .iter()
        .map(|(label, m)| format!("{label} has {} classes", m.num_classes()))
        .collect();
    Err(Error::input(format!(
        "models with different class counts cannot be compared: {}",
        counts.join(", ")
    )))
}

/// Largest input side `info` reports shapes for: one 16384×16384 image is already 3 GiB
/// as f32, and VGG-16's first activation of it 64 GiB.
pub const MAX_INPUT_SIDE: usize = 16384;

/// The architecture as papers write it: "VGG-16", "ResNet-50".
pub fn display_name(model: &dyn Classifier) -> String {
    let name = model.name();
    let split = name
        .find(|c: char| c.is_ascii_digit())
        .unwrap_or(name.len());
    let (family, depth) = name.split_at(split);
    let family = match family {
        "vgg" => "VGG",
        "resnet" => "ResNet",
        other => other,
    };
    if depth.is_empty() {
        family.to_string()
    } else {
        format!("{family}-{depth}")
    }
}

/// Smallest input length along `axis` that leaves every layer at least one pixel.
pub fn min_input_len(model: &dyn Classifier, axis: usize) -> Option<usize> {
    // Output lengths grow with the input, so the first length that fits is the minimum.
    (1..=MAX_INPUT_SIDE).find(|&len| model.layer_lens(len, axis).is_some())
}

/// An input of `h`×`w` pixels must leave every layer of the network at least one pixel.
pub fn check_input_size(model: &dyn Classifier, h: usize, w: usize) -> Result<()> {
    if model.layer_lens(h, 0).is_some() && model.layer_lens(w, 1).is_some() {
        Ok(())
    } else {
        Err(too_small(model, h, w))
    }
}

fn too_small(model: &dyn Classifier, h: usize, w: usize) -> Error {
    let need = |axis| {
        min_input_len(model, axis)
            .map(|n| n.to_string())
            .unwrap_or_else(|| format!("more than {MAX_INPUT_SIDE}"))
    };
    Error::input(format!(
        "{} needs at least {}×{} input, got {h}×{w}",
        display_name(model),
        need(0),
        need(1)
    ))
}

/// Detect the architecture from the key names and build the model.
pub fn build(tensors: &HashMap<String, Tensor>, source: &str) -> Result<Box<dyn Classifier>> {
    if tensors.contains_key("features.0.weight") {
        return Ok(Box::new(vgg::Vgg::from_tensors(tensors, source)?));
    }
    if tensors.contains_key("conv1.weight") && tensors.keys().any(|k| k.starts_with("layer1.")) {
        return Ok(Box::new(resnet::ResNet::from_tensors(tensors, source)?));
    }
    let mut sample: Vec<_> = tensors.keys().take(4).cloned().collect();
    sample.sort();
    Err(Error::Checkpoint {
        path: source.into(),
        message: format!(
            "unknown architecture: expected VGG keys (features.0.weight, ...) or ResNet keys (conv1.weight, layer1.0.conv1.weight, ...), found {}",
            if sample.is_empty() { "no tensors".to_string() } else { sample.join(", ") }
        ),
    })
}

/// Load a model from a local safetensors file (torchvision, timm or zerobias naming).
pub fn load(path: &Path, device: &Device) -> Result<Box<dyn Classifier>> {
    let ckpt = crate::checkpoint::load(path, device)?;
    build(&ckpt.model, &path.display().to_string())
}

/// Load a model from a `--model` argument: a local safetensors file (torchvision, timm or
/// a zerobias checkpoint) or a Hub id such as `timm/vgg16.tv_in1k`.
pub fn open(spec: &str, revision: Option<&str>, device: &Device) -> Result<Box<dyn Classifier>> {
    let cfg = crate::hub::HubConfig::from_env();
    let path = crate::hub::resolve_model(&cfg, spec, revision)?;
    load(&path, device)
}

/// Output shape [C, H, W] of every layer for an input of `size`×`size`, computed from the
/// layer table without allocating any tensor; sizes above [`MAX_INPUT_SIDE`] or too small
/// for the network are refused.
pub fn layer_shapes(model: &dyn Classifier, size: usize) -> Result<Vec<Vec<usize>>> {
    if size > MAX_INPUT_SIDE {
        let gib = 3.0 * 4.0 * (size as f64).powi(2) / f64::from(1u32 << 30);
        return Err(Error::input(format!(
            "input size {size} is above the limit of {MAX_INPUT_SIDE} pixels per side (one {size}×{size} image alone would take {gib:.0} GiB as f32)"
        )));
    }
    let (Some(hs), Some(ws)) = (model.layer_lens(size, 0), model.layer_lens(size, 1)) else {
        return Err(too_small(model, size, size));
    };
    Ok(model
        .layers()
        .iter()
        .zip(hs.iter().zip(&ws))
        .map(|(l, (&h, &w))| vec![l.channels, h, w])
        .collect())
}

/// Kept here for existing callers; the parsing lives in [`crate::device`].
pub use crate::device::parse_device;
