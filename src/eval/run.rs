//! An evaluation: flip metrics for every model × image × method, with the noise baseline,
//! and its tables (summaries, paired Wilcoxon tests, correlations). The figures are
//! `report::eval_plots`; `zerobias evaluate` (the binary's `commands::evaluate`) draws them.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;

use super::flip::{FlipEvaluator, Order};
pub use super::rows::{NoiseUnit, Row, METRICS};
pub use super::tables::{
    correlations_csv, noise_csv, per_image_csv, summary_csv, tests_csv, write_tables,
};
use crate::attribution::{all_methods, attribute, upsample, LayerBias, Maps, Method};
use crate::data::Rng;
use crate::error::{Error, Result};
use crate::models::Classifier;
use crate::taps::Target;

#[derive(Clone, Debug)]
pub struct EvalConfig {
    /// Method names or patterns: `act.3`, `act.*`, `bias.*`, `agg.*`, `grad`, `all`.
    pub methods: Vec<String>,
    pub steps: usize,
    pub noise_samples: usize,
    pub seed: u64,
    pub batch: usize,
    /// Rank by the signed map instead of its absolute value.
    pub signed: bool,
}

/// Options of an evaluation beyond [`EvalConfig`] (kept apart so that code building an
/// `EvalConfig` literally keeps compiling); the defaults are the paper's.
#[derive(Clone, Copy, Debug, Default)]
pub struct EvalOptions {
    /// Statistical unit of the δ metrics in summary.csv and tests.csv.
    pub noise_unit: NoiseUnit,
    /// How Ψ brings a map to the input size.
    pub upsample: Upsample,
}

/// The resampling of Ψ (Supplementary Fig. 12 compares linear with bilinear).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Upsample {
    /// Bilinear with align_corners = False (PyTorch's default; the paper's main figures).
    #[default]
    Bilinear,
    /// Nearest neighbour (each map cell becomes a block).
    Nearest,
    /// Bilinear with align_corners = True: linear between the corner-aligned cell centres,
    /// as the official FullGrad code upsamples.
    Linear,
}

impl Upsample {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "bilinear" => Ok(Upsample::Bilinear),
            "nearest" => Ok(Upsample::Nearest),
            "linear" => Ok(Upsample::Linear),
            _ => Err(Error::input(format!(
                "unknown upsampling '{s}': expected 'bilinear', 'nearest' or 'linear'"
            ))),
        }
    }
}

/// Expand method patterns against the names a model produces. Maps that are not spatial
/// (linear-layer bias attributions, one value per image) cannot rank pixels.
pub fn select_methods(patterns: &[String], available: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for p in patterns {
        let p = p.trim();
        let matched: Vec<String> = if p == "all" {
            available.to_vec()
        } else if let Some(prefix) = p.strip_suffix('*') {
            available
                .iter()
                .filter(|n| n.starts_with(prefix))
                .cloned()
                .collect()
        } else if available.iter().any(|n| n == p) {
            vec![p.to_string()]
        } else {
            return Err(Error::input(format!("unknown method '{p}': valid names are {} (and the shorthands act.*, bias.*, agg.*, all)", available.join(", "))));
        };
        if matched.is_empty() {
            return Err(Error::input(format!(
                "method pattern '{p}' matches nothing; valid names are {}",
                available.join(", ")
            )));
        }
        for m in matched {
            if !out.contains(&m) {
                out.push(m);
            }
        }
    }
    Ok(out)
}

/// Names of the spatial maps `attribute` produces for a model.
pub fn spatial_methods(model: &dyn Classifier) -> Vec<String> {
    let head = model.num_layers() + 1;
    let linear: Vec<String> = model
        .bias_modules()
        .into_iter()
        .filter(|(_, l)| *l == head)
        .map(|(m, _)| format!("bias.{m}"))
        .collect();
    all_methods(model)
        .iter()
        .flat_map(|m| m.outputs(model))
        .filter(|n| !linear.contains(n))
        .collect()
}

/// Saliency maps [N, H, W] (Ψ: bilinear upsampling of |map|, or of the map with `signed`).
pub fn psi(map: &Tensor, h: usize, w: usize, signed: bool) -> Result<Tensor> {
    psi_with(map, h, w, signed, Upsample::Bilinear)
}

/// [`psi`] with the resampling chosen.
pub fn psi_with(map: &Tensor, h: usize, w: usize, signed: bool, how: Upsample) -> Result<Tensor> {
    let m = if signed { map.clone() } else { map.abs()? };
    match how {
        Upsample::Bilinear => upsample(&m, h, w, false),
        Upsample::Linear => upsample(&m, h, w, true),
        Upsample::Nearest => {
            let (_, mh, mw) = m.dims3()?;
            if (mh, mw) == (h, w) {
                return Ok(m);
            }
            Ok(m.unsqueeze(1)?.interpolate2d(h, w)?.squeeze(1)?)
        }
    }
}

/// Attribution maps for all images (kept at their native resolution), in batches.
pub fn compute_maps(
    model: &dyn Classifier,
    x: &Tensor,
    methods: &[String],
    batch: usize,
) -> Result<(Maps, Vec<u32>)> {
    let n = x.dim(0)?;
    let mut all = all_methods(model);
    all.push(Box::new(LayerBias));
    let needed: Vec<Box<dyn crate::attribution::Method>> = all
        .into_iter()
        .filter(|m| m.outputs(model).iter().any(|o| methods.contains(o)))
        .collect();
    let mut parts: HashMap<String, Vec<Tensor>> = HashMap::new();
    let mut preds = Vec::with_capacity(n);
    let mut start = 0;
    while start < n {
        let len = batch.max(1).min(n - start);
        let xb = x.narrow(0, start, len)?;
        let att = attribute(model, &xb, &Target::Predicted, &needed)?;
        preds.extend(att.target.iter().copied());
        for name in methods {
            if let Some(t) = att.maps.get(name) {
                parts.entry(name.clone()).or_default().push(t.clone());
            }
        }
        start += len;
    }
    let mut maps = Maps::default();
    for name in methods {
        let ts = parts
            .remove(name)
            .ok_or_else(|| Error::input(format!("method '{name}' produced no map")))?;
        maps.insert(name.clone(), Tensor::cat(&ts, 0)?);
    }
    Ok((maps, preds))
}

/// Flip metrics of one model over all images and methods.
pub fn evaluate_model(
    model: &dyn Classifier,
    label: &str,
    x: &Tensor,
    maps: &Maps,
    cfg: &EvalConfig,
    upsampling: Upsample,
    progress: &indicatif::ProgressBar,
) -> Result<Vec<Row>> {
    let (n, c, h, w) = x.dims4()?;
    if c != 3 {
        return Err(Error::input(format!(
            "inputs have {c} channels, expected 3"
        )));
    }
    if cfg.noise_samples > 0 && n < 2 {
        return Err(Error::input(format!("the noise baseline needs at least 2 images (maps of other images), got {n}; pass --noise-samples 0 to skip it")));
    }
    let evaluator = FlipEvaluator::new(model, cfg.steps, cfg.batch)?;
    let clean: Vec<u32> = {
        let mut v = Vec::with_capacity(n);
        let mut s = 0;
        while s < n {
            let len = cfg.batch.max(1).min(n - s);
            let logits = model.forward(&x.narrow(0, s, len)?)?;
            let what = format!("logits of model {label}");
            crate::finite::check_result(&logits, &what, |i| format!("image {}", s + i))?;
            v.extend(logits.argmax(1)?.to_vec1::<u32>()?);
            s += len;
        }
        v
    };
    let images: Vec<Vec<f32>> = (0..n)
        .map(|i| x.get(i)?.flatten_all()?.to_vec1::<f32>())
        .collect::<candle_core::Result<_>>()?;
    let mut rows = Vec::new();
    for (name, map) in maps.iter() {
        let (mn, mh, mw) = map.dims3().map_err(|_| {
            Error::input(format!(
                "map '{name}' has shape {:?}, expected [N, H, W]",
                map.dims()
            ))
        })?;
        if mn != n {
            return Err(Error::input(format!(
                "map '{name}' has {mn} images, the inputs have {n}"
            )));
        }
        let _ = (mh, mw);
        let what = format!("saliency map '{name}' (model {label})");
        crate::finite::check_result(map, &what, |i| format!("image {i}"))?;
        let sal = psi_with(map, h, w, cfg.signed, upsampling)?;
        let sal: Vec<Vec<f32>> = (0..n)
            .map(|i| sal.get(i)?.flatten_all()?.to_vec1::<f32>())
            .collect::<candle_core::Result<_>>()?;
        for i in 0..n {
            let minus = evaluator.scan(&images[i], h, w, clean[i], &sal[i], Order::Minus)?;
            let plus = evaluator.scan(&images[i], h, w, clean[i], &sal[i], Order::Plus)?;
            let mut forwards = minus.forwards + plus.forwards;
            let others = noise_indices(i, n, cfg.noise_samples, cfg.seed);
            let (mut noise_minus, mut noise_plus) = (Vec::new(), Vec::new());
            for &j in &others {
                let a = evaluator.scan(&images[i], h, w, clean[i], &sal[j], Order::Minus)?;
                let b = evaluator.scan(&images[i], h, w, clean[i], &sal[j], Order::Plus)?;
                noise_minus.push(a.e);
                noise_plus.push(b.e);
                forwards += a.forwards + b.forwards;
            }
            let (nm, np) = if others.is_empty() {
                (f64::NAN, f64::NAN)
            } else {
                let s = others.len() as f64;
                (
                    noise_minus.iter().sum::<f64>() / s,
                    noise_plus.iter().sum::<f64>() / s,
                )
            };
            rows.push(Row {
                model: label.to_string(),
                image: i,
                method: name.clone(),
                e_minus: minus.e,
                e_plus: plus.e,
                flip_step_minus: minus.step,
                flip_step_plus: plus.step,
                flipped_minus: minus.flipped,
                flipped_plus: plus.flipped,
                e_minus_noise: nm,
                e_plus_noise: np,
                forwards,
                noise_images: others,
                noise_minus,
                noise_plus,
            });
            progress.inc(1);
        }
    }
    Ok(rows)
}

/// Stream identifier of the noise draws (ASCII "noise").
const NOISE_STREAM: u64 = 0x6e6f697365;

/// `samples` other images for image i, without replacement while possible. The draw
/// depends on the run seed, the image index and N only: every method and model of a run
/// perturbs image i with maps of the same images (common random numbers), so comparisons
/// between methods are paired on the noise maps too.
pub fn noise_indices(i: usize, n: usize, samples: usize, seed: u64) -> Vec<usize> {
    if samples == 0 || n < 2 {
        return Vec::new();
    }
    let mut rng = Rng::derive(seed, &[NOISE_STREAM, i as u64]);
    let mut pool: Vec<usize> = (0..n).filter(|&j| j != i).collect();
    rng.shuffle(&mut pool);
    (0..samples).map(|k| pool[k % pool.len()]).collect()
}

/// Everything `zerobias evaluate` needs.
pub struct EvaluateJob<'a> {
    /// (label, model) pairs.
    pub models: Vec<(String, &'a dyn Classifier)>,
    /// Normalised inputs [N, 3, H, W].
    pub inputs: Tensor,
    /// Saliency maps made elsewhere (`maps.{name}` [N, H, W]), used exactly as given.
    pub external_maps: Option<Maps>,
    pub config: EvalConfig,
    pub out: std::path::PathBuf,
}

pub struct EvaluateReport {
    pub rows: Vec<Row>,
    pub forwards: usize,
    pub files: Vec<std::path::PathBuf>,
}

/// Read `maps.{name}` tensors from a safetensors file, checking them against the inputs.
pub fn read_maps(path: &Path, inputs: &Tensor) -> Result<Maps> {
    let (n, _, h, w) = inputs.dims4()?;
    let (tensors, _) = crate::checkpoint::read_tensors(path, inputs.device())?;
    let mut names: Vec<&String> = tensors.keys().filter(|k| k.starts_with("maps.")).collect();
    names.sort();
    if names.is_empty() {
        return Err(Error::file(
            path,
            "no tensors named maps.{name} (expected [N, H, W] saliency maps)",
        ));
    }
    let mut maps = Maps::default();
    for k in names {
        let t = &tensors[k];
        if t.dims() != [n, h, w] {
            return Err(Error::file(
                path,
                format!(
                    "{k} has shape {:?}, expected [{n}, {h}, {w}] to match the inputs",
                    t.dims()
                ),
            ));
        }
        if let Some((i, c)) = crate::finite::per_item(t)?.first() {
            return Err(Error::file(
                path,
                format!("{k} contains {c} at image {i}; saliency maps must be finite"),
            ));
        }
        maps.insert(
            k.trim_start_matches("maps.").to_string(),
            t.to_dtype(candle_core::DType::F32)?,
        );
    }
    Ok(maps)
}

/// `cfg` with `steps` at most the pixel count (more steps remove no further pixel) and
/// `noise_samples` at most N − 1 (the other images), plus a warning for each clamp.
pub fn clamp_config(cfg: &EvalConfig, n: usize, h: usize, w: usize) -> (EvalConfig, Vec<String>) {
    let mut out = cfg.clone();
    let mut warnings = Vec::new();
    let pixels = h * w;
    if cfg.steps > pixels {
        out.steps = pixels;
        warnings.push(format!(
            "--steps {} is more than the {pixels} pixels of a {h}×{w} input; using {pixels} steps",
            cfg.steps
        ));
    }
    if n >= 2 && cfg.noise_samples > n - 1 {
        out.noise_samples = n - 1;
        warnings.push(format!(
            "--noise-samples {} is more than the {} other images (N = {n}); using {}",
            cfg.noise_samples,
            n - 1,
            n - 1
        ));
    }
    (out, warnings)
}

/// Evaluate every model of `job` with the default options (the paper's).
pub fn run(job: &EvaluateJob) -> Result<EvaluateReport> {
    run_with(job, &EvalOptions::default())
}

/// Evaluate every model of `job` and write the tables into `job.out`; the report lists them.
pub fn run_with(job: &EvaluateJob, options: &EvalOptions) -> Result<EvaluateReport> {
    let (n, _, h, w) = job.inputs.dims4()?;
    if job.config.steps == 0 {
        return Err(Error::input(
            "--steps 0: the flip metric needs at least 1 step",
        ));
    }
    if n == 0 {
        return Err(Error::input("no input images to evaluate"));
    }
    crate::models::check_same_classes(&job.models)?;
    for (label, model) in &job.models {
        crate::models::check_input_size(*model, h, w).map_err(|e| match e {
            Error::Input(m) => Error::input(format!("model {label}: {m}")),
            other => other,
        })?;
    }
    let (config, warnings) = clamp_config(&job.config, n, h, w);
    for warning in warnings {
        eprintln!("warning: {warning}");
    }

    let mut rows = Vec::new();
    let mut act_maps: Vec<Maps> = Vec::new();
    let mut files = Vec::new();
    for (label, model) in &job.models {
        let (maps, signed) = match &job.external_maps {
            Some(m) => {
                let names = m.names();
                let chosen = select_methods(&config.methods, &names)?;
                let mut sel = Maps::default();
                for c in chosen {
                    if let Some(t) = m.get(&c) {
                        sel.insert(c, t.clone());
                    }
                }
                (sel, true)
            }
            None => {
                let available = spatial_methods(*model);
                let chosen = select_methods(&config.methods, &available)?;
                // Every act.{l} and layerbias.{l} for the correlations (Fig. 8).
                let mut with_acts = chosen.clone();
                let extra = (0..=model.num_layers())
                    .map(|l| format!("act.{l}"))
                    .chain(LayerBias.outputs(*model));
                for a in extra {
                    if !with_acts.contains(&a) {
                        with_acts.push(a);
                    }
                }
                let (all, _) = compute_maps(*model, &job.inputs, &with_acts, config.batch)?;
                let mut acts = Maps::default();
                let mut sel = Maps::default();
                for (k, v) in all.iter() {
                    if k.starts_with("act.") || k.starts_with("layerbias.") {
                        acts.insert(k.clone(), v.clone());
                    }
                    if chosen.contains(k) {
                        sel.insert(k.clone(), v.clone());
                    }
                }
                act_maps.push(acts);
                (sel, config.signed)
            }
        };
        let bar = crate::progress::bar((maps.len() * n) as u64, label);
        let cfg = EvalConfig {
            signed,
            ..config.clone()
        };
        rows.extend(evaluate_model(
            *model,
            label,
            &job.inputs,
            &maps,
            &cfg,
            options.upsample,
            &bar,
        )?);
        bar.finish_and_clear();
    }
    let correlations = if act_maps.len() == job.models.len() {
        let models: Vec<(&str, &Maps, usize)> = job
            .models
            .iter()
            .zip(&act_maps)
            .map(|((label, model), maps)| (label.as_str(), maps, model.num_layers()))
            .collect();
        Some(correlations_csv(&models)?)
    } else {
        None
    };
    for f in write_tables(&job.out, &rows, correlations, options.noise_unit)? {
        files.push(job.out.join(f));
    }
    let forwards = rows.iter().map(|r| r.forwards).sum();
    Ok(EvaluateReport {
        rows,
        forwards,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsampling_modes() {
        let m = Tensor::new(&[[[1f32, 2.0], [3.0, -4.0]]], &candle_core::Device::Cpu).unwrap();
        let get = |how| -> Vec<Vec<f32>> {
            psi_with(&m, 4, 4, false, how)
                .unwrap()
                .squeeze(0)
                .unwrap()
                .to_vec2()
                .unwrap()
        };
        // Nearest: each cell a 2×2 block of |m|.
        let n = get(Upsample::Nearest);
        assert_eq!(n[0], [1.0, 1.0, 2.0, 2.0]);
        assert_eq!(n[3], [3.0, 3.0, 4.0, 4.0]);
        // Linear (align_corners = True): the corners are the cells, the middle interpolates.
        let l = get(Upsample::Linear);
        assert_eq!((l[0][0], l[0][3], l[3][0], l[3][3]), (1.0, 2.0, 3.0, 4.0));
        assert!((l[0][1] - (1.0 + 1.0 / 3.0)).abs() < 1e-6, "{l:?}");
        // Bilinear (align_corners = False): the default, what `psi` does.
        let b = get(Upsample::Bilinear);
        let want: Vec<Vec<f32>> = psi(&m, 4, 4, false)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2()
            .unwrap();
        assert_eq!(b, want);
        assert!((b[0][1] - 1.25).abs() < 1e-6, "{b:?}");
        // At the input size every mode is |m| itself.
        for how in [Upsample::Bilinear, Upsample::Nearest, Upsample::Linear] {
            let same: Vec<Vec<f32>> = psi_with(&m, 2, 2, true, how)
                .unwrap()
                .squeeze(0)
                .unwrap()
                .to_vec2()
                .unwrap();
            assert_eq!(same, [[1.0, 2.0], [3.0, -4.0]]);
        }
        assert!(Upsample::parse("cubic").is_err());
    }

    #[test]
    fn noise_draws_depend_on_seed_and_image_only() {
        for i in 0..6 {
            let a = noise_indices(i, 6, 5, 7);
            // Same draw whatever was drawn before (another method or model first).
            let _ = noise_indices(3, 6, 5, 7);
            assert_eq!(a, noise_indices(i, 6, 5, 7));
            assert!(!a.contains(&i), "image {i} drew itself: {a:?}");
            let mut s = a.clone();
            s.sort();
            s.dedup();
            assert_eq!(s.len(), 5, "without replacement while possible: {a:?}");
        }
        assert_ne!(noise_indices(0, 50, 5, 7), noise_indices(0, 50, 5, 8));
        assert_eq!(noise_indices(0, 3, 4, 1).len(), 4);
        assert!(noise_indices(0, 1, 4, 1).is_empty());
    }
}
