//! The tables of an evaluation: per-image rows, summaries (median and quartiles), paired
//! Wilcoxon tests and per-layer correlations between two models, as CSV.

use std::path::Path;

use super::rows::{Row, METRICS};
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

pub fn summary_csv(rows: &[Row]) -> Result<String> {
    let mut s = String::from("model,method,metric,n,median,q25,q75\n");
    for ((model, method), rs) in grouped(rows) {
        for metric in METRICS {
            let v: Vec<f64> = rs
                .iter()
                .map(|r| r.metric(metric))
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

/// Paired Wilcoxon tests: each method against every other within a model, and each method
/// across models, for every metric.
pub fn tests_csv(rows: &[Row]) -> String {
    let groups = grouped(rows);
    let mut s = String::from("metric,a,b,n,statistic,p_value,log10_p,median_diff\n");
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
    for metric in METRICS {
        for &(i, j) in &pairs {
            let (ka, ra) = &groups[i];
            let (kb, rb) = &groups[j];
            // Pair by image index.
            let mut a = Vec::new();
            let mut b = Vec::new();
            for r in ra {
                if let Some(o) = rb.iter().find(|o| o.image == r.image) {
                    let (x, y) = (r.metric(metric), o.metric(metric));
                    if x.is_finite() && y.is_finite() {
                        a.push(x);
                        b.push(y);
                    }
                }
            }
            let name = |k: &(String, String)| format!("{}:{}", k.0, k.1);
            match stats::wilcoxon_signed_rank(&a, &b) {
                Ok(t) => s.push_str(&format!(
                    "{metric},{},{},{},{},{:e},{},{}\n",
                    name(ka),
                    name(kb),
                    t.n,
                    t.statistic,
                    t.p_value,
                    fmt(t.log10_p),
                    fmt(t.median_diff)
                )),
                Err(_) => {
                    let md = if a.is_empty() {
                        f64::NAN
                    } else {
                        stats::median(&a.iter().zip(&b).map(|(x, y)| x - y).collect::<Vec<_>>())
                            .unwrap_or(f64::NAN)
                    };
                    s.push_str(&format!(
                        "{metric},{},{},{},,,,{}\n",
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

/// Per layer: Pearson ρ between two models' a^{h,l} per image; median and 10th/90th
/// percentiles over images (the paper's Fig. 8).
pub fn correlations_csv(a: &Maps, b: &Maps, layers: usize) -> Result<String> {
    let mut s = String::from("layer,n,median_rho,p10_rho,p90_rho\n");
    for l in 0..=layers {
        let name = format!("act.{l}");
        let (Some(ta), Some(tb)) = (a.get(&name), b.get(&name)) else {
            continue;
        };
        if ta.dims() != tb.dims() {
            continue;
        }
        let n = ta.dim(0)?;
        let mut rhos = Vec::new();
        for i in 0..n {
            let x: Vec<f64> = ta
                .get(i)?
                .flatten_all()?
                .to_vec1::<f32>()?
                .into_iter()
                .map(|v| v as f64)
                .collect();
            let y: Vec<f64> = tb
                .get(i)?
                .flatten_all()?
                .to_vec1::<f32>()?
                .into_iter()
                .map(|v| v as f64)
                .collect();
            if let Ok(r) = stats::pearson(&x, &y) {
                rhos.push(r);
            }
        }
        if rhos.is_empty() {
            continue;
        }
        s.push_str(&format!(
            "{l},{},{},{},{}\n",
            rhos.len(),
            fmt(stats::median(&rhos)?),
            fmt(stats::quantile(&rhos, 0.1)?),
            fmt(stats::quantile(&rhos, 0.9)?)
        ));
    }
    Ok(s)
}

/// Write the tables of an evaluation into `dir`, each file atomically.
pub fn write_tables(dir: &Path, rows: &[Row], correlations: Option<String>) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    write_atomic(&dir.join("per_image.csv"), per_image_csv(rows).as_bytes())?;
    write_atomic(&dir.join("summary.csv"), summary_csv(rows)?.as_bytes())?;
    write_atomic(&dir.join("tests.csv"), tests_csv(rows).as_bytes())?;
    if let Some(c) = correlations {
        write_atomic(&dir.join("correlations.csv"), c.as_bytes())?;
    }
    Ok(())
}
