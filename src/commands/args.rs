//! Checks and helpers shared by several commands' arguments.

use std::path::Path;

use anyhow::{bail, Result};
use candle_core::Device;

/// `--batch`: images per pass, at least one.
pub fn positive_batch(s: &str) -> std::result::Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("expected at least 1 image per pass, got 0".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!(
            "expected a positive number of images per pass, got '{s}'"
        )),
    }
}

/// An argument naming a directory (read, or created if missing): it must not be a file,
/// nor lie below one. Checked before any work starts.
pub fn check_dir_arg(flag: &str, path: &Path) -> Result<()> {
    if path.exists() && !path.is_dir() {
        bail!("{flag} {}: is a file, expected a directory", path.display());
    }
    check_parents(flag, path)
}

/// An argument naming an output file: it must not be a directory, nor lie below a file.
pub fn check_file_arg(flag: &str, path: &Path) -> Result<()> {
    if path.is_dir() {
        bail!(
            "{flag} {}: is a directory, expected a file path",
            path.display()
        );
    }
    check_parents(flag, path)
}

/// The nearest existing ancestor of `path` must be a directory, or nothing can be created.
fn check_parents(flag: &str, path: &Path) -> Result<()> {
    if let Some(parent) = path.ancestors().skip(1).find(|p| p.exists()) {
        if !parent.is_dir() {
            bail!(
                "{flag} {}: {} is a file, expected a directory",
                path.display(),
                parent.display()
            );
        }
    }
    Ok(())
}

/// An output file must not be one of the inputs (checked before any work).
pub fn check_file_out(flag: &str, out: &Path, ins: &[(&str, &Path)]) -> Result<()> {
    let ins: Vec<_> = ins
        .iter()
        .map(|(f, p)| zerobias::paths::Input::new(f, p))
        .collect();
    Ok(zerobias::paths::check_output_file(flag, out, &ins)?)
}

/// An output folder must not be, or overwrite, one of the inputs.
pub fn check_dir_out(flag: &str, out: &Path, writes: &[&str], ins: &[(&str, &Path)]) -> Result<()> {
    let ins: Vec<_> = ins
        .iter()
        .map(|(f, p)| zerobias::paths::Input::new(f, p))
        .collect();
    Ok(zerobias::paths::check_output_dir(flag, out, writes, &ins)?)
}

/// The results directory of `evaluate` and `survey`: an output that is one of the inputs is
/// named as such first (before "not a directory"), then `--out` and `--data` must be
/// directories.
pub fn check_results_out(out: &Path, data: Option<&Path>, ins: &[(&str, &Path)]) -> Result<()> {
    check_dir_out("--out", out, &["csv", "png"], ins)?;
    check_dir_arg("--out", out)?;
    if let Some(data) = data {
        check_dir_arg("--data", data)?;
    }
    Ok(())
}

/// Eval preprocessing of image files (`--input` images, `--data`): as `data.size` and
/// `data.resize` of a recipe.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct Preprocessing {
    /// Centre crop side in pixels [default: 224].
    #[arg(long)]
    pub size: Option<u32>,
    /// Shorter side in pixels before the centre crop [default: round(size·256/224)].
    #[arg(long)]
    pub resize: Option<u32>,
}

/// The images of `--input X` or `--data DIR` (exactly one of them), with the labels of a
/// labelled folder.
pub fn load_inputs(
    input: Option<&Path>,
    data: Option<&Path>,
    limit: usize,
    seed: u64,
    pre: &Preprocessing,
    dev: &Device,
) -> Result<(zerobias::inputs::InputBatch, Option<Vec<u32>>)> {
    let p = zerobias::inputs::Preprocess::new(pre.size, pre.resize)?;
    if let Some(i) = input {
        let batch = i
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.eq_ignore_ascii_case("safetensors"))
            == Some(true);
        if batch && (pre.size.is_some() || pre.resize.is_some()) {
            eprintln!("warning: --size/--resize apply to image files; {} is an already-preprocessed batch, used as it is", i.display());
        }
    }
    match (input, data) {
        (Some(i), None) => Ok((zerobias::inputs::load_with(i, p, dev)?, None)),
        (None, Some(d)) => Ok(zerobias::inputs::load_data_dir_with(
            d, limit, seed, p, dev,
        )?),
        _ => bail!("give exactly one of --input X or --data DIR"),
    }
}

/// Short, unique labels for models in tables (file stem or repo name).
pub fn model_labels(specs: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in specs {
        let base = Path::new(s.trim_end_matches(".safetensors"))
            .file_name()
            .map(|n| n.to_string_lossy().replace(',', "_"))
            .unwrap_or_else(|| "model".into());
        let mut label = base.clone();
        let mut k = 2;
        while out.contains(&label) {
            label = format!("{base}-{k}");
            k += 1;
        }
        out.push(label);
    }
    out
}

/// The flip scan's settings, shared by `evaluate` and `report`.
#[derive(clap::Args)]
pub struct FlipScan {
    /// Grid steps K of the flip scan.
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Maps of other images per image for the noise baseline (0 = none).
    #[arg(long, default_value_t = 4)]
    pub noise_samples: usize,
    /// Statistical unit of the δ metrics: `pair` (one value per image × noise map, the
    /// paper's) or `image` (noise maps averaged per image).
    #[arg(long, default_value = "pair", value_parser = ["pair", "image"])]
    pub noise_unit: String,
    /// How Ψ brings maps to the input size: `bilinear` (align_corners = False), `nearest`,
    /// or `linear` (align_corners = True; Supplementary Fig. 12).
    #[arg(long, default_value = "bilinear", value_parser = ["bilinear", "nearest", "linear"])]
    pub upsample: String,
}

impl FlipScan {
    pub fn options(&self) -> Result<zerobias::eval::run::EvalOptions> {
        use zerobias::eval::run::{EvalOptions, NoiseUnit, Upsample};
        Ok(EvalOptions {
            noise_unit: NoiseUnit::parse(&self.noise_unit)?,
            upsample: Upsample::parse(&self.upsample)?,
        })
    }
}

/// The files a command reads, named by their flags, for the checks that an output never
/// overwrites an input.
pub fn named_inputs<'a>(
    models: &'a [std::path::PathBuf],
    input: Option<&'a Path>,
    data: Option<&'a Path>,
) -> Vec<(&'static str, &'a Path)> {
    let mut ins: Vec<(&str, &Path)> = models.iter().map(|m| ("--model", m.as_path())).collect();
    ins.extend(input.map(|p| ("--input", p)));
    ins.extend(data.map(|p| ("--data", p)));
    ins
}

/// Every `--model`, opened on `dev`.
pub fn open_models(
    specs: &[String],
    dev: &Device,
) -> Result<Vec<Box<dyn zerobias::models::Classifier>>> {
    Ok(specs
        .iter()
        .map(|s| zerobias::models::open(s, None, dev))
        .collect::<zerobias::Result<_>>()?)
}
