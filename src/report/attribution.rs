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
    /// How image i is named in messages: its file name, or `input[i]`.
    fn name(&self, i: usize) -> String {
        match self {
            Source::Files(f) => f[i].display().to_string(),
            Source::Tensor(_) => format!("input[{i}]"),
        }
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
    // Figures go to a staging folder beside --png and move in once every batch has passed
    // the finiteness check, so that a failing run writes no figure.
    let staging = png.map(staging_dir);
    let mut parts: Vec<Attribution> = Vec::new();
    let mut run_batches = || -> Result<()> {
        let mut start = 0;
        while start < n {
            let len = batch.min(n - start);
            let x = source.batch(start, len, device)?;
            let att = attribute(model, &x, target, &methods)?;
            check_finite(&att, |i| source.name(start + i))?;
            print_completeness(&att, start)?;
            if let Some(dir) = &staging {
                crate::report::figures::attribution_figures(model, &x, &att, start, dir)?;
            }
            if out.is_some() {
                parts.push(att);
            }
            start += len;
            bar.inc(len as u64);
        }
        Ok(())
    };
    let result = run_batches();
    bar.finish_and_clear();
    let result = result.and_then(|()| match (png, &staging) {
        (Some(dir), Some(stage)) => move_figures(stage, dir),
        _ => Ok(()),
    });
    if let Some(stage) = &staging {
        // Best effort: the folder is ours and empty after a successful move.
        let _ = std::fs::remove_dir_all(stage);
    }
    result?;
    if let Some(out) = out {
        save(model, &parts, out)?;
        eprintln!("wrote {}", out.display());
    }
    if let Some(dir) = png {
        eprintln!("wrote figures to {}", dir.display());
    }
    Ok(())
}

/// Refuse an attribution with a non-finite logit, map or sum, naming the image and the map.
fn check_finite(att: &Attribution, name: impl Fn(usize) -> String) -> Result<()> {
    use crate::finite::check_result;
    check_result(&att.logits, "logits", &name)?;
    check_result(&att.completeness_residual, "completeness_residual", &name)?;
    check_result(&att.gross_act, "gross.act", &name)?;
    check_result(&att.gross_bias, "gross.bias", &name)?;
    for (map, t) in att.maps.iter() {
        check_result(t, &format!("attribution map '{map}'"), &name)?;
    }
    Ok(())
}

/// `.{name}.partial-{pid}` beside `dir`.
fn staging_dir(dir: &Path) -> PathBuf {
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "png".into());
    parent.join(format!(".{name}.partial-{}", std::process::id()))
}

/// Move every file of `stage` into `dir` (created if needed).
fn move_figures(stage: &Path, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let entries = match std::fs::read_dir(stage) {
        Ok(e) => e,
        // No figure was written (no images): nothing to move.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(stage, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(stage, e))?;
        let to = dir.join(entry.file_name());
        std::fs::rename(entry.path(), &to).map_err(|e| Error::io(&to, e))?;
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
