//! Figures of an evaluation: per-layer act vs bias (paper Fig. 5), top-down aggregates
//! (Fig. 6) and the per-layer difference between two models (Fig. 9).

use std::path::{Path, PathBuf};

use super::plot::{box_plot, save_png, BoxSeries};
use crate::error::Result;
use crate::eval::rows::Row;
use crate::models::Classifier;

const ACT: [u8; 3] = [214, 96, 77];
const BIAS: [u8; 3] = [67, 147, 195];
const PALETTE: [[u8; 3]; 6] = [
    [214, 96, 77],
    [67, 147, 195],
    [90, 174, 97],
    [153, 112, 171],
    [230, 171, 2],
    [102, 102, 102],
];

/// Every figure of an evaluation of `models` (label, model) into `out`: Fig. 5 per model,
/// Fig. 6, and Fig. 9 for two models. Returns the files written; a figure without data is
/// left out.
pub fn figures(
    models: &[(String, &dyn Classifier)],
    rows: &[Row],
    out: &Path,
) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let labels: Vec<String> = models.iter().map(|(l, _)| l.clone()).collect();
    for (label, model) in models {
        let modules = model.bias_modules();
        let module_layer = |m: &str| modules.iter().find(|(name, _)| name == m).map(|(_, l)| *l);
        for metric in ["delta_e_minus", "e_minus"] {
            let p = out.join(format!("fig5-{label}-{metric}.png"));
            if act_vs_bias(rows, label, model.num_layers(), &module_layer, metric, &p)? {
                files.push(p);
            }
        }
    }
    let layers = models
        .iter()
        .map(|(_, m)| m.num_layers())
        .max()
        .unwrap_or(0);
    for metric in ["delta_e_minus", "e_minus"] {
        let p = out.join(format!("fig6-aggregates-{metric}.png"));
        if aggregates(rows, &labels, layers, metric, &p)? {
            files.push(p);
        }
    }
    if labels.len() == 2 {
        let p = out.join("fig9-difference-delta_e_minus.png");
        if model_difference(rows, &labels[0], &labels[1], layers, "delta_e_minus", &p)? {
            files.push(p);
        }
    }
    Ok(files)
}

fn values<'a>(
    rows: &'a [Row],
    model: &'a str,
    pred: impl Fn(&str) -> bool + 'a,
    metric: &'a str,
) -> Vec<f64> {
    rows.iter()
        .filter(|r| r.model == model && pred(&r.method))
        .map(|r| r.metric(metric))
        .filter(|v| v.is_finite())
        .collect()
}

/// Fig. 5: for each layer, the metric of act.l beside the bias maps of that layer's modules.
pub fn act_vs_bias(
    rows: &[Row],
    model: &str,
    layers: usize,
    module_layer: &dyn Fn(&str) -> Option<usize>,
    metric: &str,
    path: &Path,
) -> Result<bool> {
    let cats: Vec<String> = (1..=layers).map(|l| l.to_string()).collect();
    let act: Vec<Vec<f64>> = (1..=layers)
        .map(|l| values(rows, model, move |m| m == format!("act.{l}"), metric))
        .collect();
    let bias: Vec<Vec<f64>> = (1..=layers)
        .map(|l| {
            values(
                rows,
                model,
                move |m| m.strip_prefix("bias.").and_then(module_layer) == Some(l),
                metric,
            )
        })
        .collect();
    if act.iter().chain(&bias).all(|v| v.is_empty()) {
        return Ok(false);
    }
    let series = [
        BoxSeries {
            name: "act".into(),
            color: ACT,
            groups: act,
        },
        BoxSeries {
            name: "bias".into(),
            color: BIAS,
            groups: bias,
        },
    ];
    let img = box_plot(
        &cats,
        &series,
        &format!("{model}: {metric} per layer"),
        "layer l",
        metric,
    )?;
    save_png(&img, path)?;
    Ok(true)
}

/// Fig. 6: the metric of agg.{l0} for each start layer l0, one series per model.
pub fn aggregates(
    rows: &[Row],
    models: &[String],
    layers: usize,
    metric: &str,
    path: &Path,
) -> Result<bool> {
    let cats: Vec<String> = (1..=layers).map(|l| l.to_string()).collect();
    let series: Vec<BoxSeries> = models
        .iter()
        .enumerate()
        .map(|(i, m)| BoxSeries {
            name: m.clone(),
            color: PALETTE[i % PALETTE.len()],
            groups: (1..=layers)
                .map(|l| values(rows, m, move |x| x == format!("agg.{l}"), metric))
                .collect(),
        })
        .collect();
    if series.iter().all(|s| s.groups.iter().all(|g| g.is_empty())) {
        return Ok(false);
    }
    let img = box_plot(
        &cats,
        &series,
        &format!("top-down aggregates agg.l0: {metric}"),
        "first layer l0",
        metric,
    )?;
    save_png(&img, path)?;
    Ok(true)
}

/// Fig. 9: per layer, the paired difference (b − a) of the metric of act.l between models.
pub fn model_difference(
    rows: &[Row],
    a: &str,
    b: &str,
    layers: usize,
    metric: &str,
    path: &Path,
) -> Result<bool> {
    let cats: Vec<String> = (0..=layers).map(|l| l.to_string()).collect();
    let groups: Vec<Vec<f64>> = (0..=layers)
        .map(|l| {
            let name = format!("act.{l}");
            rows.iter()
                .filter(|r| r.model == a && r.method == name)
                .filter_map(|ra| {
                    let rb = rows
                        .iter()
                        .find(|r| r.model == b && r.method == name && r.image == ra.image)?;
                    let d = rb.metric(metric) - ra.metric(metric);
                    d.is_finite().then_some(d)
                })
                .collect()
        })
        .collect();
    if groups.iter().all(|g| g.is_empty()) {
        return Ok(false);
    }
    let series = [BoxSeries {
        name: format!("{b} - {a}"),
        color: PALETTE[2],
        groups,
    }];
    let img = box_plot(
        &cats,
        &series,
        &format!("{metric}: {b} minus {a}, per layer"),
        "layer l",
        &format!("difference in {metric}"),
    )?;
    save_png(&img, path)?;
    Ok(true)
}
