//! `zerobias attribute`: batches of images → all maps → safetensors and PNG figures.

use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::{Device, Tensor};

use super::args::{check_dir_arg, check_dir_out, check_file_arg, check_file_out, positive_batch};
use zerobias::attribution::{all_methods, attribute, Attribution};
use zerobias::models::{self, Classifier};
use zerobias::taps::Target;
use zerobias::Error;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    model: String,
    #[arg(long)]
    input: PathBuf,
    /// `pred` (the predicted class) or a class index.
    #[arg(long, default_value = "pred")]
    target: String,
    /// Write every map, logits, target and the completeness residual here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write per-image panels and saliency overlays (PNG) into this directory.
    #[arg(long)]
    png: Option<PathBuf>,
    /// Images per forward/backward pass.
    #[arg(long, default_value_t = 8, value_parser = positive_batch)]
    batch: usize,
    #[arg(long)]
    revision: Option<String>,
}

pub fn run(args: Args, dev: &Device) -> Result<()> {
    let Args {
        model,
        input,
        target,
        out,
        png,
        batch,
        revision,
    } = args;
    let m = PathBuf::from(&model);
    let ins = [("--model", m.as_path()), ("--input", input.as_path())];
    if let Some(out) = &out {
        check_file_arg("--out", out)?;
        check_file_out("--out", out, &ins)?;
    }
    if let Some(png) = &png {
        check_dir_arg("--png", png)?;
        check_dir_out("--png", png, &["png"], &ins)?;
    }
    let model = models::open(&model, revision.as_deref(), dev)?;
    let target = parse_target(&target)?;
    attribute_input(
        model.as_ref(),
        &input,
        &target,
        out.as_deref(),
        png.as_deref(),
        batch,
        dev,
    )?;
    Ok(())
}

fn parse_target(s: &str) -> Result<Target> {
    if s == "pred" {
        return Ok(Target::Predicted);
    }
    s.parse::<usize>()
        .map(Target::Class)
        .map_err(|_| anyhow::anyhow!("--target {s}: expected 'pred' or a class index"))
}

/// Where the images of an `--input` come from, loaded lazily batch by batch.
enum Source {
    Files(Vec<PathBuf>),
    Tensor(Tensor),
}

impl Source {
    fn open(path: &Path, device: &Device) -> zerobias::Result<Self> {
        if path.is_dir() {
            let files = zerobias::data::list_images(path)?;
            if files.is_empty() {
                return Err(Error::file(
                    path,
                    "directory contains no .png/.jpg/.jpeg images",
                ));
            }
            return Ok(Source::Files(files));
        }
        let batch = zerobias::inputs::load(path, device)?;
        Ok(Source::Tensor(batch.tensor))
    }
    fn len(&self) -> zerobias::Result<usize> {
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
    fn batch(&self, start: usize, len: usize, device: &Device) -> zerobias::Result<Tensor> {
        match self {
            Source::Files(f) => {
                Ok(zerobias::inputs::load_images(&f[start..start + len], device)?.tensor)
            }
            Source::Tensor(t) => Ok(t.narrow(0, start, len)?),
        }
    }
}

/// Run the attribution over every image of `input` in batches of `batch`.
fn attribute_input(
    model: &dyn Classifier,
    input: &Path,
    target: &Target,
    out: Option<&Path>,
    png: Option<&Path>,
    batch: usize,
    device: &Device,
) -> zerobias::Result<()> {
    if batch == 0 {
        return Err(Error::input(
            "--batch 0: expected at least 1 image per pass",
        ));
    }
    let source = Source::open(input, device)?;
    let n = source.len()?;
    let methods = all_methods(model);
    let bar = zerobias::progress::bar(n as u64, "attribute");
    // Figures go to a staging folder beside --png and move in once every batch has passed
    // the finiteness check, so that a failing run writes no figure.
    let staging = png.map(staging_dir);
    let mut parts: Vec<Attribution> = Vec::new();
    let mut run_batches = || -> zerobias::Result<()> {
        let mut start = 0;
        while start < n {
            let len = batch.min(n - start);
            let x = source.batch(start, len, device)?;
            let att = attribute(model, &x, target, &methods)?;
            check_finite(&att, |i| source.name(start + i))?;
            print_completeness(&att, start)?;
            if let Some(dir) = &staging {
                zerobias::report::figures::attribution_figures(
                    model,
                    &model.name(),
                    &x,
                    &att,
                    start,
                    dir,
                )?;
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
        zerobias::report::attribution::save(model, &parts, out)?;
        eprintln!("wrote {}", out.display());
    }
    if let Some(dir) = png {
        eprintln!("wrote figures to {}", dir.display());
    }
    Ok(())
}

/// Refuse an attribution with a non-finite logit, map or sum, naming the image and the map.
fn check_finite(att: &Attribution, name: impl Fn(usize) -> String) -> zerobias::Result<()> {
    use zerobias::finite::check_result;
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
fn move_figures(stage: &Path, dir: &Path) -> zerobias::Result<()> {
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

fn print_completeness(att: &Attribution, offset: usize) -> zerobias::Result<()> {
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
