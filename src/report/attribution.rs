//! `zerobias attribute`: batches of images → all maps → safetensors and PNG figures.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::attribution::{all_methods, attribute, Attribution};
use crate::error::{Error, Result};
use crate::models::Classifier;
use crate::taps::Target;

/// Where the images of an `--input` come from, loaded lazily batch by batch.
enum Source {
    Files(Vec<PathBuf>),
    Tensor(Tensor),
}

impl Source {
    fn open(path: &Path, device: &Device) -> Result<Self> {
        if path.is_dir() {
            let files = crate::data::list_images(path)?;
            if files.is_empty() {
                return Err(Error::file(
                    path,
                    "directory contains no .png/.jpg/.jpeg images",
                ));
            }
            return Ok(Source::Files(files));
        }
        let batch = crate::inputs::load(path, device)?;
        Ok(Source::Tensor(batch.tensor))
    }
    fn len(&self) -> Result<usize> {
        Ok(match self {
            Source::Files(f) => f.len(),
            Source::Tensor(t) => t.dim(0)?,
        })
    }
    fn batch(&self, start: usize, len: usize, device: &Device) -> Result<Tensor> {
        match self {
            Source::Files(f) => {
                Ok(crate::inputs::load_images(&f[start..start + len], device)?.tensor)
            }
            Source::Tensor(t) => Ok(t.narrow(0, start, len)?),
        }
    }
}

/// Run the attribution over every image of `input` in batches of `batch`.
pub fn run(
    model: &dyn Classifier,
    input: &Path,
    target: &Target,
    out: Option<&Path>,
    png: Option<&Path>,
    batch: usize,
    device: &Device,
) -> Result<()> {
    if batch == 0 {
        return Err(Error::input(
            "--batch 0: expected at least 1 image per pass",
        ));
    }
    let source = Source::open(input, device)?;
    let n = source.len()?;
    let methods = all_methods(model);
    let bar = crate::report::progress::bar(n as u64, "attribute");
    let mut parts: Vec<Attribution> = Vec::new();
    let mut start = 0;
    while start < n {
        let len = batch.min(n - start);
        let x = source.batch(start, len, device)?;
        let att = attribute(model, &x, target, &methods)?;
        print_completeness(&att, start)?;
        if let Some(dir) = png {
            crate::report::figures::attribution_figures(model, &x, &att, start, dir)?;
        }
        if out.is_some() {
            parts.push(att);
        }
        start += len;
        bar.inc(len as u64);
    }
    bar.finish_and_clear();
    if let Some(out) = out {
        save(model, &parts, out)?;
        eprintln!("wrote {}", out.display());
    }
    if let Some(dir) = png {
        eprintln!("wrote figures to {}", dir.display());
    }
    Ok(())
}

fn print_completeness(att: &Attribution, offset: usize) -> Result<()> {
    let logit: Vec<f32> = att.target_logit.to_vec1()?;
    let residual: Vec<f32> = att.completeness_residual.to_vec1()?;
    for (i, (l, r)) in logit.iter().zip(&residual).enumerate() {
        println!(
            "image {:>4}  target {:>4}  logit {:>10.5}  completeness residual {:>+.3e} ({:.1e} of |logit|)",
            offset + i,
            att.target[i],
            l,
            r,
            r.abs() / l.abs().max(f32::MIN_POSITIVE)
        );
    }
    Ok(())
}

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
