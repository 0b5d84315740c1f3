//! Figures of an evaluation: per-layer act vs bias with input attributions and the gradient
//! baseline (paper Fig. 5), single layers against top-down aggregates with the reference
//! methods (Fig. 6), the models' aggregates side by side (Supp. Fig. 10) and the per-layer
//! difference between two models (Fig. 9), for every metric of summary.csv. Box plots use
//! the statistical unit of the tests (one value per image × noise map under `pair`).

use std::path::{Path, PathBuf};

use super::plot::{
    box_plot, box_plot_with_refs, line_plot_bands, save_png, Band, BoxSeries, ChartOptions,
    LineSeries, RefLine,
};
use crate::error::{Error, Result};
use crate::eval::rows::{is_delta, NoiseUnit, Row, METRICS};
use crate::models::Classifier;

const ACT: [u8; 3] = [214, 96, 77];
const BIAS: [u8; 3] = [67, 147, 195];
const GREY: [u8; 3] = [128, 128, 128];
const SINGLE: [u8; 3] = [33, 102, 172];
const AGGREGATE: [u8; 3] = [0, 170, 190];
const PALETTE: [[u8; 3]; 6] = [
    [214, 96, 77],
    [67, 147, 195],
    [90, 174, 97],
    [153, 112, 171],
    [230, 171, 2],
    [102, 102, 102],
];

/// The reference methods of Fig. 6, in the order drawn (those evaluated).
pub const REFERENCES: [&str; 5] = ["agg.0", "fullgrad.layers", "fullgrad", "gradcam", "grad"];

/// Legend name and colour of each reference line of Fig. 6: agg.0 (input and all layers;
/// the paper's cyan line, green here as the aggregate boxes are cyan), the paper's purple
/// "FullGrad" (per layer, `fullgrad.layers`), then the
/// official FullGrad, Grad-CAM and the input-gradient baseline.
const REFERENCE_STYLE: [(&str, [u8; 3]); 5] = [
    ("agg.0 (input + all layers)", [27, 158, 119]),
    ("fullgrad.layers (paper's FullGrad)", [118, 42, 131]),
    ("fullgrad (official)", [231, 41, 138]),
    ("gradcam", [230, 171, 2]),
    ("grad (input gradient)", [90, 90, 90]),
];

/// Every figure of an evaluation of `models` (label, model) into `out`, for every metric:
/// Fig. 5 and Fig. 6 per model, the aggregates of all models, and Fig. 9 for two models.
/// Returns the files written; a figure without data is left out.
pub fn figures(
    models: &[(String, &dyn Classifier)],
    rows: &[Row],
    unit: NoiseUnit,
    out: &Path,
) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let labels: Vec<String> = models.iter().map(|(l, _)| l.clone()).collect();
    for (label, model) in models {
        let modules = model.bias_modules();
        let module_layer = |m: &str| modules.iter().find(|(name, _)| name == m).map(|(_, l)| *l);
        for metric in METRICS {
            let p = out.join(format!("fig5-{label}-{metric}.png"));
            let data = Selection {
                rows,
                model: label,
                unit,
                metric,
            };
            if act_vs_bias(&data, model.num_layers(), &module_layer, &p)? {
                files.push(p);
            }
            let p = out.join(format!("fig6-{label}-{metric}.png"));
            if single_vs_aggregate(&data, model.num_layers(), &p)? {
                files.push(p);
            }
        }
    }
    let layers = models
        .iter()
        .map(|(_, m)| m.num_layers())
        .max()
        .unwrap_or(0);
    for metric in METRICS {
        let p = out.join(format!("fig6-aggregates-{metric}.png"));
        if aggregates(rows, &labels, layers, metric, unit, &p)? {
            files.push(p);
        }
    }
    if labels.len() == 2 {
        for metric in METRICS {
            let p = out.join(format!("fig9-difference-{metric}.png"));
            if model_difference(rows, &labels[0], &labels[1], layers, metric, unit, &p)? {
                files.push(p);
            }
        }
    }
    let csv = out.join("correlations.csv");
    let p = out.join("fig8-correlations.png");
    if let Some(first) = labels.first() {
        if csv.exists() && correlations(&csv, first, &p)? {
            files.push(p);
        }
    }
    Ok(files)
}

/// Fig. 8 from correlations.csv: per layer, the median (line) over a shaded band from the
/// 10th to the 90th percentile over images of Pearson ρ between a^{h,l}
/// and a^{b,l} within model `first` (blue) and between the two models' a^{h,l} (orange).
/// False when the table has no such rows.
pub fn correlations(csv: &Path, first: &str, path: &Path) -> Result<bool> {
    let text = std::fs::read_to_string(csv).map_err(|e| Error::io(csv, e))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (Some(cl), Some(cm), Some(c10), Some(c90)) = (
        col("layer"),
        col("median_rho"),
        col("p10_rho"),
        col("p90_rho"),
    ) else {
        return Err(Error::file(
            csv,
            "header lacks layer, median_rho, p10_rho or p90_rho",
        ));
    };
    let (ck, ca) = (col("kind"), col("a"));
    // (layer, median, p10, p90) per kind; a table without `kind` holds between-model rows.
    let mut within: Vec<[f64; 4]> = Vec::new();
    let mut between: Vec<[f64; 4]> = Vec::new();
    for (k, line) in lines.enumerate() {
        let f: Vec<&str> = line.split(',').collect();
        // No image had a ρ at this layer (constant maps): nothing to draw.
        if f.get(cm).is_some_and(|v| v.is_empty()) {
            continue;
        }
        let get = |i: usize| -> Result<f64> {
            f.get(i).and_then(|v| v.parse::<f64>().ok()).ok_or_else(|| {
                Error::file(
                    csv,
                    format!("line {}: column {} is not a number", k + 2, header[i]),
                )
            })
        };
        let row = [get(cl)?, get(cm)?, get(c10)?, get(c90)?];
        // The plot functions refuse non-finite values; such a row has nothing to draw.
        if row.iter().any(|v| !v.is_finite()) {
            continue;
        }
        match ck
            .and_then(|i| f.get(i).copied())
            .unwrap_or("between_models")
        {
            "between_models" => between.push(row),
            "act_vs_bias" if ca.and_then(|i| f.get(i).copied()) == Some(first) => within.push(row),
            _ => {}
        }
    }
    let mut series = Vec::new();
    let mut bands = Vec::new();
    for (rows, name, color) in [
        (&within, format!("a^h vs a^b in {first}"), [31, 119, 180]),
        (&between, "a^h between models".to_string(), [255, 127, 14]),
    ] {
        if rows.is_empty() {
            continue;
        }
        let x: Vec<f64> = rows.iter().map(|r| r[0]).collect();
        let col = |i: usize| rows.iter().map(|r| r[i]).collect::<Vec<f64>>();
        series.push(LineSeries {
            name: format!("{name}, median"),
            color,
            x: x.clone(),
            y: col(1),
        });
        bands.push(Band {
            name: format!("{name}, 10th-90th pct"),
            color,
            x,
            lo: col(2),
            hi: col(3),
        });
    }
    if series.is_empty() {
        return Ok(false);
    }
    let img = line_plot_bands(
        &series,
        &bands,
        &ChartOptions::default(),
        "Fig. 8: Pearson rho per image",
        "layer l",
        "rho",
    )?;
    save_png(&img, path)?;
    Ok(true)
}

/// The rows of one model and one metric, in a statistical unit.
pub struct Selection<'a> {
    pub rows: &'a [Row],
    pub model: &'a str,
    pub unit: NoiseUnit,
    pub metric: &'a str,
}

impl Selection<'_> {
    /// The finite values of the methods `pred` accepts (per pair or per image).
    fn values(&self, pred: impl Fn(&str) -> bool) -> Vec<f64> {
        self.rows
            .iter()
            .filter(|r| r.model == self.model && pred(&r.method))
            .flat_map(|r| r.samples(self.metric, self.unit))
            .filter(|v| v.is_finite())
            .collect()
    }
    fn method(&self, name: &str) -> Vec<f64> {
        self.values(|m| m == name)
    }
}

/// Fig. 5: for each layer l = 0..L, the metric of act.l beside the bias maps of that
/// layer's modules, with the gradient baseline in its own slot.
pub fn act_vs_bias(
    data: &Selection,
    layers: usize,
    module_layer: &dyn Fn(&str) -> Option<usize>,
    path: &Path,
) -> Result<bool> {
    let mut cats = vec!["grad".to_string()];
    cats.extend((0..=layers).map(|l| l.to_string()));
    let mut act = vec![Vec::new()];
    act.extend((0..=layers).map(|l| data.method(&format!("act.{l}"))));
    let mut bias = vec![Vec::new()];
    bias.extend(
        (0..=layers).map(|l| {
            data.values(move |m| m.strip_prefix("bias.").and_then(module_layer) == Some(l))
        }),
    );
    let mut grad = vec![data.method("grad")];
    grad.extend((0..=layers).map(|_| Vec::new()));
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
        BoxSeries {
            name: "gradient".into(),
            color: GREY,
            groups: grad,
        },
    ];
    let img = box_plot(
        &cats,
        &series,
        &format!(
            "{}: {} per layer{}",
            data.model,
            data.metric,
            unit_note(data)
        ),
        "layer l (0 = input attributions)",
        data.metric,
    )?;
    save_png(&img, path)?;
    Ok(true)
}

fn unit_note(data: &Selection) -> &'static str {
    if is_delta(data.metric) && data.unit == NoiseUnit::Pair {
        " (image x noise pairs)"
    } else {
        ""
    }
}

/// Fig. 6 for one model: single layers act.l and top-down aggregates agg.l as boxes per
/// layer, and the reference methods that were evaluated (agg.0, fullgrad.layers, fullgrad,
/// gradcam, grad) as horizontal lines at their medians over a band of their quartiles, as
/// the paper draws its "FullGrad", gradient and agg.0 lines.
pub fn single_vs_aggregate(data: &Selection, layers: usize, path: &Path) -> Result<bool> {
    let refs: Vec<RefLine> = REFERENCES
        .iter()
        .zip(REFERENCE_STYLE)
        .map(|(m, (name, color))| RefLine {
            name: name.to_string(),
            color,
            samples: data.method(m),
        })
        .filter(|r| !r.samples.is_empty())
        .collect();
    let cats: Vec<String> = (1..=layers).map(|l| l.to_string()).collect();
    let single: Vec<Vec<f64>> = (1..=layers)
        .map(|l| data.method(&format!("act.{l}")))
        .collect();
    let aggregate: Vec<Vec<f64>> = (1..=layers)
        .map(|l| data.method(&format!("agg.{l}")))
        .collect();
    if single.iter().chain(&aggregate).all(|v| v.is_empty()) {
        return Ok(false);
    }
    let series = [
        BoxSeries {
            name: "single layer act.l".into(),
            color: SINGLE,
            groups: single,
        },
        BoxSeries {
            name: "top-down agg.l".into(),
            color: AGGREGATE,
            groups: aggregate,
        },
    ];
    let img = box_plot_with_refs(
        &cats,
        &series,
        &refs,
        &format!(
            "{}: single layers, aggregates and references, {}{}",
            data.model,
            data.metric,
            unit_note(data)
        ),
        "layer l (act.l) / first layer l0 (agg.l0); lines: references (median, quartile band)",
        data.metric,
    )?;
    save_png(&img, path)?;
    Ok(true)
}

/// The aggregates agg.{l0} of every model, l0 = 0..L, one series per model.
pub fn aggregates(
    rows: &[Row],
    models: &[String],
    layers: usize,
    metric: &str,
    unit: NoiseUnit,
    path: &Path,
) -> Result<bool> {
    let cats: Vec<String> = (0..=layers).map(|l| l.to_string()).collect();
    let series: Vec<BoxSeries> = models
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let data = Selection {
                rows,
                model: m,
                unit,
                metric,
            };
            BoxSeries {
                name: m.clone(),
                color: PALETTE[i % PALETTE.len()],
                groups: (0..=layers)
                    .map(|l| data.method(&format!("agg.{l}")))
                    .collect(),
            }
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

/// Fig. 9: per layer (and for the gradient), the paired difference (b − a) of the metric
/// of act.l between models; under the pair unit, paired on the noise map too.
pub fn model_difference(
    rows: &[Row],
    a: &str,
    b: &str,
    layers: usize,
    metric: &str,
    unit: NoiseUnit,
    path: &Path,
) -> Result<bool> {
    let mut methods = vec!["grad".to_string()];
    methods.extend((0..=layers).map(|l| format!("act.{l}")));
    let cats: Vec<String> = methods
        .iter()
        .map(|m| m.trim_start_matches("act.").to_string())
        .collect();
    let groups: Vec<Vec<f64>> = methods
        .iter()
        .map(|name| {
            let others: std::collections::HashMap<usize, &Row> = rows
                .iter()
                .filter(|r| r.model == b && &r.method == name)
                .map(|r| (r.image, r))
                .collect();
            rows.iter()
                .filter(|r| r.model == a && &r.method == name)
                .filter_map(|ra| Some((ra, *others.get(&ra.image)?)))
                .filter(|(ra, rb)| {
                    !(unit == NoiseUnit::Pair && is_delta(metric))
                        || ra.noise_images == rb.noise_images
                })
                .flat_map(|(ra, rb)| {
                    ra.samples(metric, unit)
                        .into_iter()
                        .zip(rb.samples(metric, unit))
                        .map(|(x, y)| y - x)
                        .collect::<Vec<_>>()
                })
                .filter(|d| d.is_finite())
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
        "layer l (grad = gradient)",
        &format!("difference in {metric}"),
    )?;
    save_png(&img, path)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(method: &str, image: usize) -> Row {
        Row {
            model: "m".into(),
            image,
            method: method.into(),
            e_minus: 0.5,
            e_plus: 0.25,
            flip_step_minus: 0,
            flip_step_plus: 0,
            flipped_minus: true,
            flipped_plus: true,
            e_minus_noise: 0.3,
            e_plus_noise: 0.2,
            forwards: 0,
            noise_images: vec![1, 2],
            noise_minus: vec![0.2, 0.4],
            noise_plus: vec![0.1, 0.3],
        }
    }

    #[test]
    fn boxes_hold_the_values_of_the_tests_unit() {
        let rows = [row("act.1", 0), row("act.1", 1), row("act.2", 0)];
        let sel = |unit, metric| Selection {
            rows: &rows,
            model: "m",
            unit,
            metric,
        };
        // Pair unit: one δ value per (image, noise map).
        let mut v = sel(NoiseUnit::Pair, "delta_e_minus").method("act.1");
        v.sort_by(f64::total_cmp);
        assert_eq!(v.len(), 4);
        assert!(
            (v[0] - 0.1).abs() < 1e-12 && (v[3] - 0.3).abs() < 1e-12,
            "{v:?}"
        );
        // Image unit, or a metric without noise: one value per image.
        assert_eq!(
            sel(NoiseUnit::Image, "delta_e_minus").method("act.1").len(),
            2
        );
        assert_eq!(sel(NoiseUnit::Pair, "e_minus").method("act.1"), [0.5, 0.5]);
        assert!(sel(NoiseUnit::Pair, "e_minus").method("act.3").is_empty());
    }

    #[test]
    fn fig8_from_correlations_csv() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("correlations.csv");
        let png = dir.path().join("fig8.png");
        // Within "v" (drawn), within "z" (another model: not drawn), between the models, and
        // a layer without any ρ (empty statistics).
        std::fs::write(
            &csv,
            "layer,n,median_rho,p10_rho,p90_rho,kind,a,b,skipped\n\
             0,4,0.9,0.8,0.95,between_models,v,z,0\n\
             1,4,0.97,0.9,0.99,between_models,v,z,0\n\
             1,4,0.4,0.1,0.6,act_vs_bias,v,v,0\n\
             2,3,0.5,0.2,0.7,act_vs_bias,v,v,1\n\
             3,0,,,,act_vs_bias,v,v,4\n\
             1,0,,,,act_vs_bias,z,z,4\n",
        )
        .unwrap();
        assert!(correlations(&csv, "v", &png).unwrap());
        let img = image::open(&png).unwrap();
        assert!(img.width() > 200 && img.height() > 150);
        // The original table (no kind column) still draws, as between-model rows.
        std::fs::write(
            &csv,
            "layer,n,median_rho,p10_rho,p90_rho\n1,2,0.5,0.4,0.6\n",
        )
        .unwrap();
        std::fs::remove_file(&png).unwrap();
        assert!(correlations(&csv, "v", &png).unwrap());
        assert!(png.exists());
        // Nothing to draw: no figure, no error.
        std::fs::write(
            &csv,
            "layer,n,median_rho,p10_rho,p90_rho,kind,a,b,skipped\n1,0,,,,act_vs_bias,v,v,3\n",
        )
        .unwrap();
        std::fs::remove_file(&png).unwrap();
        assert!(!correlations(&csv, "v", &png).unwrap());
        assert!(!png.exists());
        // A malformed value is an error naming the file, not a silent gap.
        std::fs::write(
            &csv,
            "layer,n,median_rho,p10_rho,p90_rho\n1,2,abc,0.4,0.6\n",
        )
        .unwrap();
        let e = correlations(&csv, "v", &png).unwrap_err().to_string();
        assert!(
            e.contains("median_rho") && e.contains("correlations.csv"),
            "{e}"
        );
    }
}
