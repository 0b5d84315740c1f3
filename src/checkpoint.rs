//! Safetensors checkpoints: reading torchvision / timm / zerobias files, the timm →
//! torchvision key mapping, metadata, and atomic writes.

use std::collections::HashMap;
use std::path::Path;

use candle_core::safetensors::Load;
use candle_core::{DType, Device, Tensor};

use crate::error::{write_atomic, Error, Result};

/// Metadata key that marks our own checkpoints.
pub const FORMAT_KEY: &str = "zerobias.format";
/// Prefix of non-model tensors (optimiser state) in training checkpoints.
pub const OPTIM_PREFIX: &str = "optim.";

pub struct Checkpoint {
    /// Model tensors under torchvision names.
    pub model: HashMap<String, Tensor>,
    /// Everything else stored beside the model (optimiser moments).
    pub extra: HashMap<String, Tensor>,
    pub metadata: HashMap<String, String>,
}

/// Read a safetensors file; timm VGG names are mapped to torchvision's.
pub fn load(path: &Path, device: &Device) -> Result<Checkpoint> {
    let tensors = read_tensors(path, device)?;
    let (mut all, metadata) = tensors;
    let mut extra = HashMap::new();
    all.retain(|k, v| {
        if k.starts_with(OPTIM_PREFIX) {
            extra.insert(k.clone(), v.clone());
            false
        } else {
            true
        }
    });
    let model = timm_to_torchvision(all, path)?;
    Ok(Checkpoint {
        model,
        extra,
        metadata,
    })
}

/// All tensors of a safetensors file (as stored, f32 for floating types) and its metadata.
pub fn read_tensors(
    path: &Path,
    device: &Device,
) -> Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Error::file(path, "file not found (expected a .safetensors file)")
        }
        _ => Error::io(path, e),
    })?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| {
        if is_pytorch_pickle(path, &bytes) {
            return Error::file(path, PICKLE_HINT);
        }
        Error::file(
            path,
            format!("not a valid safetensors file ({e}); the file may be truncated or corrupt"),
        )
    })?;
    let metadata = safetensors::SafeTensors::read_metadata(&bytes)
        .ok()
        .and_then(|(_, m)| m.metadata().clone())
        .unwrap_or_default();
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let t = view
            .load(device)
            .map_err(|e| Error::file(path, format!("tensor '{name}': {e}")))?;
        let t = match t.dtype() {
            DType::F16 | DType::BF16 | DType::F64 => t.to_dtype(DType::F32)?,
            _ => t,
        };
        out.insert(name, t);
    }
    Ok((out, metadata))
}

/// What to do with a file [`is_pytorch_pickle`] recognises.
pub const PICKLE_HINT: &str = "is a PyTorch pickle, not safetensors; convert it to safetensors (e.g. `safetensors.torch.save_file(torch.load(p), 'model.safetensors')`)";

/// Whether a file that is not valid safetensors is what `torch.save` writes: a zip archive
/// (PyTorch ≥ 1.6), a raw pickle (protocol 2+ starts with 0x80 and the protocol number), or
/// a file named .pth / .pt / .bin. Only asked after safetensors parsing failed, since a
/// safetensors header length can start with the same bytes.
pub fn is_pytorch_pickle(path: &Path, head: &[u8]) -> bool {
    let by_name = path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        ["pth", "pt", "bin"]
            .iter()
            .any(|x| e.eq_ignore_ascii_case(x))
    });
    let zip = head.starts_with(b"PK\x03\x04");
    let pickle = head.len() >= 2 && head[0] == 0x80 && (2..=5).contains(&head[1]);
    by_name || zip || pickle
}

/// timm's VGG puts the classifier in `pre_logits.fc1` (a 7×7 conv), `pre_logits.fc2` (a
/// 1×1 conv) and `head.fc`; torchvision uses linear layers `classifier.{0,3,6}`. The flatten
/// order (C, H, W) is the same, so a reshape is exact.
fn timm_to_torchvision(
    mut t: HashMap<String, Tensor>,
    path: &Path,
) -> Result<HashMap<String, Tensor>> {
    let moves = [
        ("pre_logits.fc1", "classifier.0"),
        ("pre_logits.fc2", "classifier.3"),
        ("head.fc", "classifier.6"),
    ];
    if !t.contains_key("pre_logits.fc1.weight") && !t.contains_key("head.fc.weight") {
        return Ok(t);
    }
    for (from, to) in moves {
        for suffix in ["weight", "bias"] {
            if let Some(v) = t.remove(&format!("{from}.{suffix}")) {
                let v = if suffix == "weight" && v.rank() == 4 {
                    let out = v.dim(0)?;
                    v.reshape((out, v.elem_count() / out))
                        .map_err(|e| Error::file(path, format!("{from}.weight: {e}")))?
                } else {
                    v
                };
                t.insert(format!("{to}.{suffix}"), v);
            }
        }
    }
    Ok(t)
}

/// Write tensors + metadata atomically (temp file + rename).
pub fn save(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: HashMap<String, String>,
) -> Result<()> {
    let cpu: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(cpu.iter().map(|(k, v)| (k.as_str(), v)), Some(metadata))
        .map_err(|e| Error::file(path, format!("cannot serialise checkpoint: {e}")))?;
    write_atomic(path, &bytes)
}
