//! VGG and ResNet classifiers built from the [`nn`](crate::nn) layers, with explicit
//! parameters, taps and bias handles; [`build`] detects the architecture from the weights.

pub mod classifier;
pub mod init;
pub mod resnet;
pub mod vgg;

// The kernels' former home, kept so that `models::conv::…` paths still resolve; the layers
// name `zerobias_kernels` directly.
pub use zerobias_kernels::{affine, conv, pool, relu, sgemm};

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
/// The layers' former home, kept so that `models::layers::…` paths still resolve.
pub use crate::nn as layers;
pub use crate::nn::{Param, ParamKind, ParamStore};
pub use crate::taps::Ctx;
pub use classifier::{
    check_input_size, check_same_classes, display_name, layer_shapes, min_input_len, Arch,
    Classifier, LayerInfo, MAX_INPUT_SIDE,
};

/// Detect the architecture from the key names and build the model.
pub fn build(tensors: &HashMap<String, Tensor>, source: &str) -> Result<Box<dyn Classifier>> {
    // A kernel switch with a value it does not take must stop the run, not pick a path.
    zerobias_kernels::check_env()?;
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

/// The kernels that run on `device`: `portable` (the device-generic code, always so off
/// the CPU) or the CPU kernel set, e.g. `cpu (conv direct+winograd+im2col, gemm avx512)`.
pub fn kernels_in_use(device: &Device) -> String {
    if device.is_cpu() {
        zerobias_kernels::config().describe()
    } else {
        "portable".into()
    }
}

/// Kept here for existing callers; the parsing lives in [`crate::device`].
pub use crate::device::parse_device;
