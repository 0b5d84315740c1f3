//! The bias survey: what happens when all biases are set to zero (paper Fig. 3,
//! Supp. Figs 1–2 and 4–5), and what a zero-bias network cannot see (part (d): the input's
//! norm). Its tables are written here; its figures are `report::survey_plots`.

use std::path::{Path, PathBuf};

use candle_core::Tensor;

use crate::error::{write_atomic, Error, Result};
use crate::models::Classifier;
use crate::stats;

/// Part (c), as the paper's Supplementary Figs 1–2: factors multiplying the raw pixel
/// values (0.001× to 1000×), and shifts added to them as fractions of the full value range
/// (±1 on [0, 1] pixels = ±255 in 8-bit terms), both before normalisation.
pub const SCALES: [f64; 7] = [0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0];
pub const SHIFTS: [f64; 9] = [-1.0, -0.5, -0.25, -0.1, 0.0, 0.1, 0.25, 0.5, 1.0];

/// Part (d), beyond the paper: factors multiplying the network's own (normalised) input.
/// A ReLU network without biases is positively homogeneous, f(a·x) = a·f(x) for a > 0, so
/// its predicted class cannot change under them: what the vanilla model does with them is
/// what a zero-bias version of it cannot see (the input's norm). 0.5 and 2 scale floats
/// exactly, so there the zero-bias class is the same bit for bit.
pub const INPUT_SCALES: [f64; 4] = [0.5, 0.75, 1.5, 2.0];

/// A change of the raw pixel values p ∈ [0, 1] before normalisation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RawTransform {
    /// p ↦ s · p
    Scale(f64),
    /// p ↦ p + f (f = 1 is a full value range, +255 in 8-bit terms)
    Shift(f64),
}

/// Apply `t` to the raw pixels of normalised inputs x = (p − mean)/std (ImageNet mean and
/// std, as every input of zerobias): x' = (t(x·std + mean) − mean)/std.
pub fn raw_transform(x: &Tensor, t: RawTransform) -> Result<Tensor> {
    use crate::data::normalise::{IMAGENET_MEAN, IMAGENET_STD};
    let dev = x.device();
    let mean = Tensor::new(&IMAGENET_MEAN, dev)?.reshape((1, 3, 1, 1))?;
    let std = Tensor::new(&IMAGENET_STD, dev)?.reshape((1, 3, 1, 1))?;
    let raw = x.broadcast_mul(&std)?.broadcast_add(&mean)?;
    let changed = match t {
        RawTransform::Scale(s) => (raw * s)?,
        RawTransform::Shift(f) => (raw + f)?,
    };
    Ok(changed.broadcast_sub(&mean)?.broadcast_div(&std)?)
}

pub struct SurveyReport {
    pub top1_vanilla: f64,
    pub top5_vanilla: f64,
    pub top1_zero: f64,
    pub top5_zero: f64,
    pub bias_parameters: usize,
    /// The tables written: accuracy.csv, regression.csv, robustness.csv.
    pub files: Vec<PathBuf>,
    /// Every logit of the vanilla model and of the zero-bias model (images × classes, in
    /// the same order), and the least-squares fit zero = a · vanilla + b over all of them.
    pub vanilla_logits: Vec<f64>,
    pub zero_logits: Vec<f64>,
    pub fit: (f64, f64),
    /// Top-1 per variant (vanilla, then zero-bias) under each of [`SCALES`] and [`SHIFTS`].
    pub curves: Vec<(String, Vec<f64>, Vec<f64>)>,
    /// Per variant (vanilla, then zero-bias), under each of [`INPUT_SCALES`]: (top-1, share
    /// of images whose predicted class is the one of the unscaled input).
    pub input_scaling: Vec<(String, Vec<(f64, f64)>)>,
}

/// Logits of every image of `x` (`what` names the variant in the error a non-finite logit
/// gives: accuracies from NaN logits would be reported as numbers).
fn logits_batched(
    model: &dyn Classifier,
    x: &Tensor,
    batch: usize,
    what: &str,
) -> Result<Vec<Vec<f32>>> {
    let n = x.dim(0)?;
    let mut out = Vec::with_capacity(n);
    let mut s = 0;
    while s < n {
        let len = batch.max(1).min(n - s);
        let logits = model.forward(&x.narrow(0, s, len)?)?;
        crate::finite::check_result(&logits, &format!("logits ({what})"), |i| {
            format!("image {}", s + i)
        })?;
        out.extend(logits.to_vec2::<f32>()?);
        s += len;
    }
    Ok(out)
}

fn topk_accuracy(logits: &[Vec<f32>], labels: &[u32], k: usize) -> f64 {
    let hits = logits
        .iter()
        .zip(labels)
        .filter(|(row, &y)| {
            let target = row[y as usize];
            let better = row
                .iter()
                .enumerate()
                .filter(|(c, v)| **v > target || (**v == target && *c < y as usize))
                .count();
            better < k
        })
        .count();
    hits as f64 / labels.len().max(1) as f64
}

fn argmax(row: &[f32]) -> u32 {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv {
                (i, v)
            } else {
                (bi, bv)
            }
        })
        .0 as u32
}

/// Run the survey on inputs `x`. Without labels, accuracy is measured against the vanilla
/// model's own predictions on the clean inputs (so vanilla top-1 is 1 by definition).
pub fn run(
    model: &dyn Classifier,
    label: &str,
    x: &Tensor,
    labels: Option<&[u32]>,
    batch: usize,
    out: &Path,
) -> Result<SurveyReport> {
    let (n, _, h, w) = x.dims4()?;
    if n == 0 {
        return Err(Error::input("survey needs at least one image"));
    }
    crate::models::check_input_size(model, h, w)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let biases = model.bias_set();
    let vanilla = logits_batched(model, x, batch, "vanilla model")?;
    let reference: Vec<u32> = match labels {
        Some(l) => {
            if l.len() != n {
                return Err(Error::input(format!("{} labels for {n} images", l.len())));
            }
            if let Some(bad) = l.iter().find(|&&y| y as usize >= model.num_classes()) {
                return Err(Error::input(format!(
                    "label {bad} is out of range for a {}-class model",
                    model.num_classes()
                )));
            }
            l.to_vec()
        }
        None => vanilla.iter().map(|r| argmax(r)).collect(),
    };
    let saved = biases.snapshot();
    biases.zero()?;
    let zero = logits_batched(model, x, batch, "all biases zero");
    // Part (c) runs both variants; restore the biases whatever happens.
    let result = (|| -> Result<_> {
        let zero = zero?;
        let mut curves: Vec<(String, Vec<f64>, Vec<f64>)> = Vec::new();
        let (zero_scale, zero_shift) = robustness(model, x, &reference, batch, "all biases zero")?;
        curves.push(("zero-bias".into(), zero_scale, zero_shift));
        let scaled = input_scaling(model, x, &reference, &zero, batch, "all biases zero")?;
        Ok((zero, curves, scaled))
    })();
    biases.restore(&saved)?;
    let (zero, mut curves, zero_scaled) = result?;
    let (van_scale, van_shift) = robustness(model, x, &reference, batch, "vanilla model")?;
    curves.insert(0, ("vanilla".into(), van_scale, van_shift));
    let van_scaled = input_scaling(model, x, &reference, &vanilla, batch, "vanilla model")?;
    let input_scaling = vec![
        ("vanilla".to_string(), van_scaled),
        ("zero-bias".to_string(), zero_scaled),
    ];

    let k5 = 5.min(model.num_classes());
    let report_top = (
        topk_accuracy(&vanilla, &reference, 1),
        topk_accuracy(&vanilla, &reference, k5),
        topk_accuracy(&zero, &reference, 1),
        topk_accuracy(&zero, &reference, k5),
    );
    let mut files = Vec::new();
    let acc = format!(
        "model,variant,top1,top5,bias_parameters,reference\n{label},vanilla,{:.6},{:.6},{},{}\n{label},zero_bias,{:.6},{:.6},{},{}\n",
        report_top.0,
        report_top.1,
        biases.numel(),
        if labels.is_some() { "labels" } else { "vanilla_predictions" },
        report_top.2,
        report_top.3,
        biases.numel(),
        if labels.is_some() { "labels" } else { "vanilla_predictions" }
    );
    write_atomic(&out.join("accuracy.csv"), acc.as_bytes())?;
    files.push(out.join("accuracy.csv"));

    // (b) per image: f0 = alpha * f + beta over classes.
    let mut reg = String::from("image,alpha,beta,pearson\n");
    for (i, (v, z)) in vanilla.iter().zip(&zero).enumerate() {
        let f: Vec<f64> = v.iter().map(|&a| a as f64).collect();
        let g: Vec<f64> = z.iter().map(|&a| a as f64).collect();
        let (alpha, beta) = linear_fit(&f, &g);
        let rho = stats::pearson(&f, &g).unwrap_or(f64::NAN);
        reg.push_str(&format!("{i},{alpha:.6},{beta:.6},{rho:.6}\n"));
    }
    write_atomic(&out.join("regression.csv"), reg.as_bytes())?;
    files.push(out.join("regression.csv"));
    let f: Vec<f64> = vanilla.iter().flatten().map(|&a| a as f64).collect();
    let g: Vec<f64> = zero.iter().flatten().map(|&a| a as f64).collect();
    let fit = linear_fit(&f, &g);

    // (c) robustness to scaling and shifting the raw pixels; `relative` is the change of
    // top-1 against the untransformed inputs (the paper's colour scale).
    let mut rob = String::from("variant,transform,value,top1,relative\n");
    for (name, sc, sh) in &curves {
        let clean = sc[SCALES.iter().position(|&s| s == 1.0).expect("1 in SCALES")];
        let rel = |a: f64| {
            if clean > 0.0 {
                format!("{:.6}", a / clean - 1.0)
            } else {
                String::new()
            }
        };
        for (s, a) in SCALES.iter().zip(sc) {
            rob.push_str(&format!("{name},scale,{s},{a:.6},{}\n", rel(*a)));
        }
        for (s, a) in SHIFTS.iter().zip(sh) {
            rob.push_str(&format!("{name},shift,{s},{a:.6},{}\n", rel(*a)));
        }
    }
    write_atomic(&out.join("robustness.csv"), rob.as_bytes())?;
    files.push(out.join("robustness.csv"));

    // (d) the normalised input scaled: what a zero-bias network cannot see.
    let mut table = String::from("variant,factor,top1,same_class\n");
    for (name, rows) in &input_scaling {
        for (a, (top1, same)) in INPUT_SCALES.iter().zip(rows) {
            table.push_str(&format!("{name},{a},{top1:.6},{same:.6}\n"));
        }
    }
    write_atomic(&out.join("input_scaling.csv"), table.as_bytes())?;
    files.push(out.join("input_scaling.csv"));

    Ok(SurveyReport {
        top1_vanilla: report_top.0,
        top5_vanilla: report_top.1,
        top1_zero: report_top.2,
        top5_zero: report_top.3,
        bias_parameters: biases.numel(),
        files,
        vanilla_logits: f,
        zero_logits: g,
        fit,
        curves,
        input_scaling,
    })
}

/// Per factor of [`INPUT_SCALES`]: top-1 against `reference` of the normalised input times
/// the factor, and the share of images whose class is the one `base` (the unscaled logits)
/// predicts.
fn input_scaling(
    model: &dyn Classifier,
    x: &Tensor,
    reference: &[u32],
    base: &[Vec<f32>],
    batch: usize,
    variant: &str,
) -> Result<Vec<(f64, f64)>> {
    let base: Vec<u32> = base.iter().map(|r| argmax(r)).collect();
    INPUT_SCALES
        .iter()
        .map(|&a| {
            let what = format!("{variant}, normalised input × {a}");
            let logits = logits_batched(model, &(x * a)?, batch, &what)?;
            let same = logits
                .iter()
                .zip(&base)
                .filter(|(row, &c)| argmax(row) == c)
                .count();
            Ok((
                topk_accuracy(&logits, reference, 1),
                same as f64 / base.len().max(1) as f64,
            ))
        })
        .collect()
}

/// Top-1 against `reference` under each of [`SCALES`] and [`SHIFTS`] of the raw pixels.
fn robustness(
    model: &dyn Classifier,
    x: &Tensor,
    reference: &[u32],
    batch: usize,
    variant: &str,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let top1 = |t: RawTransform, what: String| -> Result<f64> {
        let xt = raw_transform(x, t)?;
        Ok(topk_accuracy(
            &logits_batched(model, &xt, batch, &what)?,
            reference,
            1,
        ))
    };
    let scale = SCALES
        .iter()
        .map(|&s| {
            top1(
                RawTransform::Scale(s),
                format!("{variant}, raw pixels × {s}"),
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let shift = SHIFTS
        .iter()
        .map(|&f| {
            top1(
                RawTransform::Shift(f),
                format!("{variant}, raw pixels + {f} × range"),
            )
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((scale, shift))
}

/// Least squares y = a x + b.
fn linear_fit(x: &[f64], y: &[f64]) -> (f64, f64) {
    let n = x.len().min(y.len()) as f64;
    if n < 2.0 {
        return (f64::NAN, f64::NAN);
    }
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let sxx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    if sxx == 0.0 {
        return (f64::NAN, my);
    }
    let a = sxy / sxx;
    (a, my - a * mx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transforms_act_on_raw_pixels() {
        use crate::data::normalise::normalise_hwc;
        // A 2×2 image of raw bytes, normalised as every input is.
        let rgb: Vec<u8> = (0..12).map(|i| (i * 21) as u8).collect();
        let x = Tensor::from_vec(
            normalise_hwc(&rgb, 2, 2),
            (1, 3, 2, 2),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let raw = |c: usize, i: usize| rgb[i * 3 + c] as f64 / 255.0;
        for t in [
            RawTransform::Scale(0.001),
            RawTransform::Scale(1000.0),
            RawTransform::Shift(-1.0),
            RawTransform::Shift(0.25),
        ] {
            let y: Vec<f32> = raw_transform(&x, t)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            for c in 0..3 {
                let (m, s) = (
                    crate::data::normalise::IMAGENET_MEAN[c] as f64,
                    crate::data::normalise::IMAGENET_STD[c] as f64,
                );
                for i in 0..4 {
                    let p = match t {
                        RawTransform::Scale(k) => k * raw(c, i),
                        RawTransform::Shift(f) => raw(c, i) + f,
                    };
                    let want = (p - m) / s;
                    let got = y[c * 4 + i] as f64;
                    assert!(
                        (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                        "{t:?} c{c} i{i}: {got} vs {want}"
                    );
                }
            }
        }
        // The identity transforms change nothing (up to rounding).
        for t in [RawTransform::Scale(1.0), RawTransform::Shift(0.0)] {
            let d = (raw_transform(&x, t).unwrap() - &x)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap();
            assert!(d.to_scalar::<f32>().unwrap() < 1e-5);
        }
        assert_eq!((SHIFTS[0], SHIFTS[SHIFTS.len() - 1]), (-1.0, 1.0));
        assert_eq!((SCALES[0], SCALES[SCALES.len() - 1]), (0.001, 1000.0));
    }

    #[test]
    fn fit_and_topk() {
        let (a, b) = linear_fit(&[0.0, 1.0, 2.0], &[1.0, 3.0, 5.0]);
        assert!((a - 2.0).abs() < 1e-12 && (b - 1.0).abs() < 1e-12);
        let logits = vec![vec![0.1f32, 0.9, 0.0], vec![0.5, 0.2, 0.3]];
        assert_eq!(topk_accuracy(&logits, &[1, 2], 1), 0.5);
        assert_eq!(topk_accuracy(&logits, &[1, 2], 2), 1.0);
    }
}
