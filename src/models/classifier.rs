//! The `Classifier` trait every model implements, its layer table (the paper's layer
//! numbering) and the input-size checks derived from it.

use candle_core::{Device, Tensor};

use crate::bias::{BiasHandle, BiasKind, BiasSet};
use crate::error::{Error, Result};
use crate::nn::{ParamKind, ParamStore};
use crate::taps::{Ctx, Recordable};

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
                            BiasKind::LinearBias
                        } else {
                            BiasKind::ConvBias
                        }
                    }
                    ParamKind::BnBeta => BiasKind::BnBeta,
                    ParamKind::BnMean => BiasKind::BnRunningMean,
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

impl<T: Classifier + ?Sized> Recordable for T {
    fn forward_recording(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        self.forward_ctx(x, ctx)
    }
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

/// The model input must be [N, 3, H, W] and large enough for every layer.
pub(crate) fn check_input(x: &Tensor, model: &dyn Classifier) -> Result<()> {
    match x.dims() {
        [_, 3, h, w] => check_input_size(model, *h, *w),
        d => Err(Error::Shape {
            what: "model input".into(),
            expected: "[N, 3, H, W]".into(),
            got: format!("{d:?}"),
        }),
    }
}
