//! The tables of an evaluation: per-image rows, summaries (median and quartiles), paired
//! Wilcoxon tests and per-layer correlations between two models, as CSV.

use std::path::Path;

use super::rows::{is_delta, NoiseUnit, Row, METRICS};
use candle_core::Tensor;

use crate::attribution::Maps;
use crate::error::{write_atomic, Error, Result};
use crate::stats;

fn fmt(v: f64) -> String {
    if v.is_nan() {
        String::new()
    } else {
        format!("{v:.6}")
    }
}

pub fn per_image_csv(rows: &[Row]) -> String {
    let mut s = String::from("model,image,method,e_minus,e_plus,e_delta,flip_step_minus,flip_step_plus,flipped_minus,flipped_plus,e_minus_noise,e_plus_noise,delta_e_minus,delta_e_plus,delta_e_delta,forwards\n");
    for r in rows {
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            r.model,
            r.image,
            r.method,
            fmt(r.e_minus),
            fmt(r.e_plus),
            fmt(r.e_delta()),
            r.flip_step_minus,
            r.flip_step_plus,
            r.flipped_minus,
            r.flipped_plus,
            fmt(r.e_minus_noise),
            fmt(r.e_plus_noise),
            fmt(r.metric("delta_e_minus")),
            fmt(r.metric("delta_e_plus")),
            fmt(r.metric("delta_e_delta")),
            r.forwards
        ));
    }
    s
}

/// (model, method) → rows in image order.
fn grouped(rows: &[Row]) -> Vec<((String, String), Vec<&Row>)> {
    let mut out: Vec<((String, String), Vec<&Row>)> = Vec::new();
    for r in rows {
        let key = (r.model.clone(), r.method.clone());
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(r),
            None => out.push((key, vec![r])),
        }
    }
    out
}

/// Full precision (shortest round-trip form), so that a reader recomputes the exact
/// differences the tests ranked.
fn exact(v: f64) -> String {
    if v.is_nan() {
        String::new()
    } else {
        format!("{v}")
    }
}

/// Medians and quartiles per model × method × metric; δ metrics in the unit `unit`.
pub fn summary_csv(rows: &[Row], unit: NoiseUnit) -> Result<String> {
    let mut s = String::from("model,method,metric,n,median,q25,q75\n");
    for ((model, method), rs) in grouped(rows) {
        for metric in METRICS {
            let v: Vec<f64> = rs
                .iter()
                .flat_map(|r| r.samples(metric, unit))
                .filter(|v| v.is_finite())
                .collect();
            if v.is_empty() {
                continue;
            }
            s.push_str(&format!(
                "{model},{method},{metric},{},{},{},{}\n",
                v.len(),
                fmt(stats::median(&v)?),
                fmt(stats::quantile(&v, 0.25)?),
                fmt(stats::quantile(&v, 0.75)?)
            ));
        }
    }
    Ok(s)
}

/// The per-pair values behind the δ statistics: one line per model × method × image ×
/// noise map, at full precision.
pub fn noise_csv(rows: &[Row]) -> String {
    let mut s = String::from("model,method,image,noise,noise_image,e_minus_noise,e_plus_noise,delta_e_minus,delta_e_plus,delta_e_delta\n");
    for r in rows {
        for (k, j) in r.noise_images.iter().enumerate() {
            s.push_str(&format!(
                "{},{},{},{k},{j},{},{},{},{},{}\n",
                r.model,
                r.method,
                r.image,
                exact(r.noise_minus[k]),
                exact(r.noise_plus[k]),
                exact(r.pair_metric("delta_e_minus", k)),
                exact(r.pair_metric("delta_e_plus", k)),
                exact(r.pair_metric("delta_e_delta", k)),
            ));
        }
    }
    s
}

/// Paired Wilcoxon tests: each method against every other within a model, and each method
/// across models, for every metric. Pairs are matched by image, and for δ metrics under
/// [`NoiseUnit::Pair`] also by noise map (the same ξ source image on both sides).
pub fn tests_csv(rows: &[Row], unit: NoiseUnit) -> String {
    let groups = grouped(rows);
    // n: the pairs compared; n_nonzero: those with a non-zero difference (the ones
    // ranked: scipy's zero_method='wilcox'); p_method: exact or normal approximation.
    let mut s =
        String::from("metric,a,b,n,statistic,p_value,log10_p,median_diff,n_nonzero,p_method\n");
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    for i in 0..groups.len() {
        for j in i + 1..groups.len() {
            let ((ma, xa), _) = &groups[i];
            let ((mb, xb), _) = &groups[j];
            if ma == mb || xa == xb {
                pairs.push((i, j));
            }
        }
    }
    // Image index → row, per group, so pairing is a lookup.
    let by_image: Vec<std::collections::HashMap<usize, &Row>> = groups
        .iter()
        .map(|(_, rs)| rs.iter().rev().map(|r| (r.image, *r)).collect())
        .collect();
    for metric in METRICS {
        for &(i, j) in &pairs {
            let (ka, ra) = &groups[i];
            let (kb, _) = &groups[j];
            let mut a = Vec::new();
            let mut b = Vec::new();
            for r in ra {
                let Some(&o) = by_image[j].get(&r.image) else {
                    continue;
                };
                // Common random numbers make the noise maps of both sides come from the
                // same images; anything else is not a paired comparison.
                if unit == NoiseUnit::Pair && is_delta(metric) && r.noise_images != o.noise_images {
                    continue;
                }
                for (x, y) in r
                    .samples(metric, unit)
                    .into_iter()
                    .zip(o.samples(metric, unit))
                {
                    if x.is_finite() && y.is_finite() {
                        a.push(x);
                        b.push(y);
                    }
                }
            }
            let name = |k: &(String, String)| format!("{}:{}", k.0, k.1);
            match stats::wilcoxon_signed_rank(&a, &b) {
                Ok(t) => s.push_str(&format!(
                    "{metric},{},{},{},{},{:e},{},{},{},{}\n",
                    name(ka),
                    name(kb),
                    a.len(),
                    t.statistic,
                    t.p_value,
                    fmt(t.log10_p),
                    fmt(t.median_diff),
                    t.n,
                    match t.method {
                        stats::WilcoxonMethod::Exact => "exact",
                        stats::WilcoxonMethod::Normal => "normal",
                    }
                )),
                Err(_) => {
                    let md = if a.is_empty() {
                        f64::NAN
                    } else {
                        stats::median(&a.iter().zip(&b).map(|(x, y)| x - y).collect::<Vec<_>>())
                            .unwrap_or(f64::NAN)
                    };
                    s.push_str(&format!(
                        "{metric},{},{},{},,,,{},0,\n",
                        name(ka),
                        name(kb),
                        a.len(),
                        fmt(md)
                    ));
                }
            }
        }
    }
    s
}

/// Header of correlations.csv. The first five columns are the original table's, so readers
/// by position keep working; `kind` says what was correlated: `between_models` (a^{h,l} of
/// model `a` against a^{h,l} of model `b`) or `act_vs_bias` (a^{h,l} against a^{b,l} within
/// model `a` = `b`). `skipped` counts images where either map is constant (ρ undefined).
pub const CORRELATIONS_HEADER: &str = "layer,n,median_rho,p10_rho,p90_rho,kind,a,b,skipped\n";

/// Pearson ρ per image between two [N, H, W] maps of equal shape, over the H×W pixels.
/// Images where either map is constant (or a single pixel) have no ρ: they are left out
/// and counted.
pub fn rho_per_image(ta: &Tensor, tb: &Tensor, what: &str) -> Result<(Vec<f64>, usize)> {
    let to_f64 = |t: &Tensor| -> Result<Vec<f64>> {
        Ok(t.flatten_all()?
            .to_vec1::<f32>()?
            .into_iter()
            .map(|v| v as f64)
            .collect())
    };
    let n = ta.dim(0)?;
    let (mut rhos, mut skipped) = (Vec::with_capacity(n), 0);
    for i in 0..n {
        let (x, y) = (to_f64(&ta.get(i)?)?, to_f64(&tb.get(i)?)?);
        match stats::pearson(&x, &y) {
            Ok(r) => rhos.push(r),
            // A single-pixel map (1×1 layers of small inputs) is constant too.
            Err(
                stats::StatsError::ZeroVariance { .. } | stats::StatsError::TooFewSamples { .. },
            ) => skipped += 1,
            Err(e) => return Err(Error::input(format!("{what}, image {i}: {e}"))),
        }
    }
    Ok((rhos, skipped))
}

/// One row of correlations.csv. When no image has a ρ the statistics are empty (never NaN)
/// and `skipped` still says why.
fn correlation_row(
    l: usize,
    rhos: &[f64],
    skipped: usize,
    kind: &str,
    a: &str,
    b: &str,
) -> Result<String> {
    let stats = if rhos.is_empty() {
        ",,".to_string()
    } else {
        format!(
            "{},{},{}",
            fmt(stats::median(rhos)?),
            fmt(stats::quantile(rhos, 0.1)?),
            fmt(stats::quantile(rhos, 0.9)?)
        )
    };
    Ok(format!(
        "{l},{},{stats},{kind},{a},{b},{skipped}\n",
        rhos.len()
    ))
}

/// Per layer: Pearson ρ between two models' a^{h,l} per image; median and 10th/90th
/// percentiles over images (the paper's Fig. 8, orange/green). Rows only, no header.
pub fn between_models_rows(a: (&str, &Maps), b: (&str, &Maps), layers: usize) -> Result<String> {
    let mut s = String::new();
    for l in 0..=layers {
        let name = format!("act.{l}");
        let (Some(ta), Some(tb)) = (a.1.get(&name), b.1.get(&name)) else {
            continue;
        };
        if ta.dims() != tb.dims() {
            continue;
        }
        let what = format!("{name} of models {} and {}", a.0, b.0);
        let (rhos, skipped) = rho_per_image(ta, tb, &what)?;
        s.push_str(&correlation_row(
            l,
            &rhos,
            skipped,
            "between_models",
            a.0,
            b.0,
        )?);
    }
    Ok(s)
}

/// Per layer: Pearson ρ between a^{h,l} (`act.{l}`) and a^{b,l} (`layerbias.{l}`, the
/// layer's bias maps at the activation's resolution) within one model, per image, over the
/// pixels of that resolution (the paper's Fig. 8, blue). Rows only, no header.
pub fn act_vs_bias_rows(label: &str, maps: &Maps, layers: usize) -> Result<String> {
    let mut s = String::new();
    for l in 1..=layers {
        let (Some(act), Some(bias)) = (
            maps.get(&format!("act.{l}")),
            maps.get(&format!("layerbias.{l}")),
        ) else {
            continue;
        };
        if act.dims() != bias.dims() {
            return Err(Error::input(format!(
                "model {label}, layer {l}: a^h has shape {:?} but a^b {:?}",
                act.dims(),
                bias.dims()
            )));
        }
        let what = format!("act.{l} and the bias maps of layer {l} of model {label}");
        let (rhos, skipped) = rho_per_image(act, bias, &what)?;
        s.push_str(&correlation_row(
            l,
            &rhos,
            skipped,
            "act_vs_bias",
            label,
            label,
        )?);
    }
    Ok(s)
}

/// correlations.csv of an evaluation: (label, maps, number of layers L) per model; the
/// `between_models` rows of the first two models (when there are two), then the
/// `act_vs_bias` rows of each model.
pub fn correlations_csv(models: &[(&str, &Maps, usize)]) -> Result<String> {
    let mut s = String::from(CORRELATIONS_HEADER);
    if let [a, b] = models {
        s.push_str(&between_models_rows((a.0, a.1), (b.0, b.1), a.2.min(b.2))?);
    }
    for (label, maps, layers) in models {
        s.push_str(&act_vs_bias_rows(label, maps, *layers)?);
    }
    Ok(s)
}

/// Write the tables of an evaluation into `dir`, each file atomically; noise.csv only when
/// there is a noise baseline. Returns the names written.
pub fn write_tables(
    dir: &Path,
    rows: &[Row],
    correlations: Option<String>,
    unit: NoiseUnit,
) -> Result<Vec<&'static str>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut names = vec!["per_image.csv", "summary.csv", "tests.csv"];
    write_atomic(&dir.join("per_image.csv"), per_image_csv(rows).as_bytes())?;
    write_atomic(
        &dir.join("summary.csv"),
        summary_csv(rows, unit)?.as_bytes(),
    )?;
    write_atomic(&dir.join("tests.csv"), tests_csv(rows, unit).as_bytes())?;
    if rows.iter().any(|r| !r.noise_images.is_empty()) {
        write_atomic(&dir.join("noise.csv"), noise_csv(rows).as_bytes())?;
        names.push("noise.csv");
    } else {
        // A noise.csv of an earlier run in the same folder would not describe this one.
        match std::fs::remove_file(dir.join("noise.csv")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(dir.join("noise.csv"), e))
            }
            _ => {}
        }
    }
    if let Some(c) = correlations {
        write_atomic(&dir.join("correlations.csv"), c.as_bytes())?;
        names.push("correlations.csv");
    } else {
        // Nor would an earlier correlations.csv (Fig. 8 is drawn from it).
        match std::fs::remove_file(dir.join("correlations.csv")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(dir.join("correlations.csv"), e))
            }
            _ => {}
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// (name, values, [N, H, W]) of one map.
    type Entry<'a> = (&'a str, Vec<f32>, (usize, usize, usize));

    fn maps(entries: &[Entry]) -> Maps {
        let mut m = Maps::default();
        for (name, v, shape) in entries {
            m.insert(
                name.to_string(),
                Tensor::from_vec(v.clone(), *shape, &Device::Cpu).unwrap(),
            );
        }
        m
    }

    #[test]
    fn act_vs_bias_skips_and_counts_constant_maps() {
        // Image 0: a^b = 2·a^h + 1 (ρ = 1); image 1: a^b constant (no ρ); image 2: a^b = −a^h.
        let act = vec![1.0, 2.0, 3.0, 5.0, 1.0, 4.0, 2.0, 8.0, 0.0, 1.0, 0.0, 3.0];
        let bias = vec![
            3.0, 5.0, 7.0, 11.0, 0.5, 0.5, 0.5, 0.5, 0.0, -1.0, 0.0, -3.0,
        ];
        let m = maps(&[
            ("act.1", act, (3, 2, 2)),
            ("layerbias.1", bias, (3, 2, 2)),
            // Single-pixel maps: constant, no ρ for any image.
            ("act.2", vec![1.0, 2.0, 3.0], (3, 1, 1)),
            ("layerbias.2", vec![4.0, 5.0, 6.0], (3, 1, 1)),
        ]);
        let rows = act_vs_bias_rows("m", &m, 2).unwrap();
        let lines: Vec<&str> = rows.lines().collect();
        assert_eq!(lines.len(), 2, "{rows}");
        // numpy: median([-1, 1]) = 0, quantile 0.1 = -0.8, 0.9 = 0.8.
        assert_eq!(
            lines[0],
            "1,2,0.000000,-0.800000,0.800000,act_vs_bias,m,m,1"
        );
        assert_eq!(lines[1], "2,0,,,,act_vs_bias,m,m,3");
        // Shapes that disagree are a fault, not a skipped image.
        let bad = maps(&[
            ("act.1", vec![0.0; 4], (1, 2, 2)),
            ("layerbias.1", vec![0.0; 1], (1, 1, 1)),
        ]);
        assert!(act_vs_bias_rows("m", &bad, 1).is_err());
        // A NaN is an error too, never a number or a skip.
        let nan = maps(&[
            ("act.1", vec![0.0, 1.0, f32::NAN, 2.0], (1, 2, 2)),
            ("layerbias.1", vec![0.0, 1.0, 2.0, 3.0], (1, 2, 2)),
        ]);
        assert!(act_vs_bias_rows("m", &nan, 1).is_err());
    }

    #[test]
    fn correlations_table_kinds() {
        let a = maps(&[
            ("act.0", vec![1.0, 2.0, 3.0, 4.0], (1, 2, 2)),
            ("act.1", vec![1.0, 2.0, 3.0, 4.0], (1, 2, 2)),
            ("layerbias.1", vec![4.0, 3.0, 2.0, 1.0], (1, 2, 2)),
        ]);
        let b = maps(&[
            ("act.0", vec![2.0, 4.0, 6.0, 8.0], (1, 2, 2)),
            ("act.1", vec![1.0, 1.0, 1.0, 1.0], (1, 2, 2)),
        ]);
        let two = correlations_csv(&[("a", &a, 1), ("b", &b, 1)]).unwrap();
        assert_eq!(
            two,
            format!(
                "{CORRELATIONS_HEADER}0,1,1.000000,1.000000,1.000000,between_models,a,b,0\n\
                 1,0,,,,between_models,a,b,1\n\
                 1,1,-1.000000,-1.000000,-1.000000,act_vs_bias,a,a,0\n"
            )
        );
        let one = correlations_csv(&[("a", &a, 1)]).unwrap();
        assert_eq!(
            one,
            format!("{CORRELATIONS_HEADER}1,1,-1.000000,-1.000000,-1.000000,act_vs_bias,a,a,0\n")
        );
    }
}
