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
/// Metadata key of the content checksum written by [`save`]: CRC32C (hex) of every
/// tensor's name, dtype, shape and bytes and of the other metadata, so that flipped bytes
/// are found on load. Files without it (older checkpoints, torchvision weights) load as
/// before.
pub const CHECKSUM_KEY: &str = "zerobias.crc32c";

/// CRC32C over tensors in name order and the metadata (except the checksum) in key order;
/// independent of the file layout, so writer and reader compute it from their own views.
fn content_crc<'a>(
    tensors: impl Iterator<Item = (String, String, Vec<usize>, std::borrow::Cow<'a, [u8]>)>,
    metadata: &HashMap<String, String>,
) -> u32 {
    let mut tensors: Vec<_> = tensors.collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let mut crc = 0u32;
    for (name, dtype, shape, data) in &tensors {
        crc = crc32c::crc32c_append(crc, name.as_bytes());
        crc = crc32c::crc32c_append(crc, &[0]);
        crc = crc32c::crc32c_append(crc, dtype.as_bytes());
        for d in shape {
            crc = crc32c::crc32c_append(crc, &(*d as u64).to_le_bytes());
        }
        crc = crc32c::crc32c_append(crc, &(data.len() as u64).to_le_bytes());
        crc = crc32c::crc32c_append(crc, data);
    }
    let mut keys: Vec<&String> = metadata.keys().filter(|k| *k != CHECKSUM_KEY).collect();
    keys.sort();
    for k in keys {
        crc = crc32c::crc32c_append(crc, k.as_bytes());
        crc = crc32c::crc32c_append(crc, &[0]);
        crc = crc32c::crc32c_append(crc, metadata[k].as_bytes());
        crc = crc32c::crc32c_append(crc, &[0]);
    }
    crc
}

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
    refuse_non_finite(&all, path)?;
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

/// Weights (and optimiser state) with NaN or ±inf would give NaN logits or be silently
/// trained on: refuse the file, naming each such tensor (under the file's own names).
fn refuse_non_finite(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    let mut bad = Vec::new();
    for (name, t) in tensors {
        let c = crate::finite::count(t)?;
        if !c.is_empty() {
            bad.push((name.as_str(), c));
        }
    }
    if bad.is_empty() {
        return Ok(());
    }
    bad.sort_by_key(|(name, _)| *name);
    let listed: Vec<String> = bad
        .iter()
        .take(5)
        .map(|(name, c)| format!("{name} contains {c}"))
        .collect();
    let more = match bad.len().saturating_sub(5) {
        0 => String::new(),
        k => format!(" and {k} more tensors"),
    };
    Err(Error::Checkpoint {
        path: path.into(),
        message: format!(
            "{}{more}; weights must be finite (the file may be from a diverged run)",
            listed.join(", ")
        ),
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
    if let Some(stored) = metadata.get(CHECKSUM_KEY) {
        let computed = content_crc(
            st.tensors().into_iter().map(|(name, v)| {
                let (dtype, shape) = (format!("{:?}", v.dtype()), v.shape().to_vec());
                (name, dtype, shape, std::borrow::Cow::Borrowed(v.data()))
            }),
            &metadata,
        );
        if u32::from_str_radix(stored, 16).ok() != Some(computed) {
            return Err(Error::Checkpoint {
                path: path.to_path_buf(),
                message: format!(
                    "damaged: its content checksum does not match (stored {stored}, computed {computed:08x}); the file changed after zerobias wrote it"
                ),
            });
        }
    }
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
    let mut metadata = metadata;
    let crc = content_crc(
        cpu.iter().map(|(k, v)| {
            use safetensors::View as V;
            (
                k.clone(),
                format!("{:?}", V::dtype(v)),
                V::shape(v).to_vec(),
                V::data(v),
            )
        }),
        &metadata,
    );
    metadata.insert(CHECKSUM_KEY.to_string(), format!("{crc:08x}"));
    let bytes = safetensors::serialize(cpu.iter().map(|(k, v)| (k.as_str(), v)), Some(metadata))
        .map_err(|e| Error::file(path, format!("cannot serialise checkpoint: {e}")))?;
    write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensors() -> Vec<(String, Tensor)> {
        let a = Tensor::new(&[1f32, 2.0, 3.0], &Device::Cpu).unwrap();
        let b = Tensor::new(&[[4f32], [5.0]], &Device::Cpu).unwrap();
        vec![("a".into(), a), ("b".into(), b)]
    }

    #[test]
    fn the_checksum_finds_flipped_bytes_and_files_without_one_still_load() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("c.safetensors");
        let meta = HashMap::from([("k".to_string(), "v".to_string())]);
        save(&p, &tensors(), meta.clone()).unwrap();
        let (t, m) = read_tensors(&p, &Device::Cpu).unwrap();
        assert_eq!(t["a"].to_vec1::<f32>().unwrap(), [1.0, 2.0, 3.0]);
        assert!(m.contains_key(CHECKSUM_KEY));

        let good = std::fs::read(&p).unwrap();
        let mut bad = good.clone();
        let last = bad.len() - 2;
        bad[last] ^= 0x01;
        std::fs::write(&p, &bad).unwrap();
        let e = read_tensors(&p, &Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("c.safetensors") && e.contains("damaged"), "{e}");

        // Metadata is covered too.
        let text = String::from_utf8_lossy(&good).replace("\"k\":\"v\"", "\"k\":\"w\"");
        std::fs::write(&p, text.as_bytes()).unwrap();
        assert!(read_tensors(&p, &Device::Cpu).is_err());

        // A file written without a checksum (torchvision weights, older checkpoints).
        let cpu = tensors();
        let plain =
            safetensors::serialize(cpu.iter().map(|(k, v)| (k.as_str(), v)), Some(meta)).unwrap();
        std::fs::write(&p, plain).unwrap();
        let (t, _) = read_tensors(&p, &Device::Cpu).unwrap();
        assert_eq!(t["b"].dims(), &[2, 1]);
    }
}
