//! The attribution contract of `zerobias attribute --out`: every map, logits, target and
//! the completeness residual of a run's batches in one safetensors file.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::attribution::Attribution;
use crate::error::{Error, Result};
use crate::models::Classifier;

/// Concatenate the batches and write the attribution contract.
pub fn save(model: &dyn Classifier, parts: &[Attribution], out: &Path) -> Result<()> {
    let Some(first) = parts.first() else {
        return Err(Error::input("no images to write"));
    };
    let cat = |f: &dyn Fn(&Attribution) -> Tensor| -> Result<Tensor> {
        let ts: Vec<Tensor> = parts.iter().map(f).collect();
        Ok(Tensor::cat(&ts, 0)?)
    };
    let mut tensors: Vec<(String, Tensor)> = vec![
        ("logits".into(), cat(&|a| a.logits.clone())?),
        (
            "completeness_residual".into(),
            cat(&|a| a.completeness_residual.clone())?,
        ),
        ("gross.act".into(), cat(&|a| a.gross_act.clone())?),
        ("gross.bias".into(), cat(&|a| a.gross_bias.clone())?),
    ];
    let target: Vec<i64> = parts
        .iter()
        .flat_map(|a| a.target.iter().map(|&t| t as i64))
        .collect();
    let n = target.len();
    tensors.push(("target".into(), Tensor::from_vec(target, n, &Device::Cpu)?));
    for name in first.maps.names() {
        let t = cat(&|a| {
            a.maps
                .get(&name)
                .cloned()
                .unwrap_or_else(|| a.logits.clone())
        })?;
        tensors.push((name, t.to_dtype(DType::F32)?));
    }
    let layers: HashMap<String, String> = model
        .layers()
        .iter()
        .map(|l| (l.index.to_string(), l.name.clone()))
        .collect();
    let mut meta = HashMap::new();
    meta.insert("arch".into(), model.name());
    meta.insert(
        "layers".into(),
        serde_json::to_string(&layers).unwrap_or_default(),
    );
    meta.insert(
        "gross".into(),
        "gross.act[:, l] = A^{h,l} for l = 0..L; gross.bias[:, l-1] = A^{b,l} for l = 1..L+1 (L+1 = classifier head)".into(),
    );
    crate::checkpoint::save(out, &tensors, meta)
}
