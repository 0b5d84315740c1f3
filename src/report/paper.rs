//! `zerobias report`: the paper's comparison of two models in one run. Attribution panels
//! and saliency maps of a few images, the flip evaluation with the noise baseline, the bias
//! survey of each model and the Wilcoxon tests, drawn as the paper's figures and written to
//! `index.html` with the headline comparisons the tests support.

use std::path::{Path, PathBuf};

use candle_core::Tensor;

use super::page::{self, Figure, LayerFamily, Page, Section, Table, TestRow};
use super::{eval_plots, figures, survey_plots};
use crate::attribution::{all_methods, attribute};
use crate::error::{write_atomic, Error, Result};
use crate::eval::rows::{NoiseUnit, METRICS};
use crate::eval::run::{run_with, EvalConfig, EvalOptions, EvaluateJob};
use crate::models::Classifier;
use crate::taps::Target;

/// Family-wise significance level of the headline comparisons (Bonferroni-corrected over
/// the tests they draw on).
pub const ALPHA: f64 = 0.05;

/// The metrics the headlines are stated for: the paper's main metric and its companion.
const HEADLINE_METRICS: [&str; 2] = ["delta_e_minus", "e_minus"];

pub struct ReportJob<'a> {
    /// (label, model): the vanilla model, then the zero-bias one.
    pub models: Vec<(String, &'a dyn Classifier)>,
    /// Normalised inputs [N, 3, H, W].
    pub inputs: Tensor,
    /// Labels of a labelled folder (the survey's accuracies use them).
    pub labels: Option<Vec<u32>>,
    pub config: EvalConfig,
    pub options: EvalOptions,
    /// Images drawn as attribution panels and saliency maps (Figs 2/4, 7).
    pub examples: usize,
    /// Shown first on the page: models, data, options, version, date.
    pub settings: Vec<(String, String)>,
    pub out: PathBuf,
}

/// Run everything and write `out/index.html`; returns its path.
pub fn run(job: &ReportJob) -> Result<PathBuf> {
    if job.models.len() != 2 {
        return Err(Error::input(format!(
            "a report compares two models (vanilla, then zero-bias), got {}",
            job.models.len()
        )));
    }
    std::fs::create_dir_all(&job.out).map_err(|e| Error::io(&job.out, e))?;
    let mut sections = Vec::new();

    eprintln!("report: attribution figures");
    let (panels, overlays) = example_figures(job)?;
    sections.push(panels);

    eprintln!("report: flip evaluation");
    let eval_dir = job.out.join("eval");
    let ejob = EvaluateJob {
        models: job.models.clone(),
        inputs: job.inputs.clone(),
        external_maps: None,
        config: job.config.clone(),
        out: eval_dir.clone(),
    };
    let report = run_with(&ejob, &job.options)?;
    let drawn = eval_plots::figures(&job.models, &report.rows, job.options.noise_unit, &eval_dir)?;
    let fig8 = drawn
        .iter()
        .find(|p| p.file_name().is_some_and(|f| f == "fig8-correlations.png"));
    sections.extend(eval_sections(job, &drawn, fig8.map(|p| p.as_path())));
    sections.push(overlays);

    eprintln!("report: bias survey");
    sections.extend(survey_sections(job)?);

    let tests_path = eval_dir.join("tests.csv");
    let csv = std::fs::read_to_string(&tests_path).map_err(|e| Error::io(&tests_path, e))?;
    let tests = page::parse_tests(&csv)?;
    let families = families(job, &tests);
    // Tests that could not be run (no non-zero difference) are not counted.
    let count = families
        .iter()
        .flat_map(|f| f.layers.iter().flat_map(|(_, t)| t))
        .filter(|t| t.p_value.is_some())
        .count();
    let references = reference_tests(job, &tests);
    let count = count + references.len();
    let count = count.max(1);
    let alpha = ALPHA / count as f64;
    let mut headlines: Vec<String> = families
        .iter()
        .flat_map(|f| page::family_sentences(f, alpha))
        .collect();
    headlines.extend(
        references
            .iter()
            .map(|(context, t)| page::pair_sentence(context, t, alpha)),
    );
    if headlines.is_empty() {
        headlines.push("No comparison could be tested (too few images or methods).".into());
    }
    let significance = format!(
        "Two-sided Wilcoxon signed-rank tests ({} unit for the δ metrics; median differences \
         give the direction; e+ and δe+ are better when smaller). A comparison is claimed \
         only at p < {ALPHA}/{count} = {alpha:.2e} (Bonferroni over the {count} tests these \
         sentences draw on); a side beats the other at a layer only when it wins every test \
         there (ResNet layers with several bias modules have several).",
        job.options.noise_unit.label()
    );
    let mut tables = tables(&families);
    tables.push(Table {
        title: "agg.1 (all layers but the input) against the reference methods".into(),
        rows: references.into_iter().map(|(_, t)| t).collect(),
    });
    let mut files: Vec<String> = report
        .files
        .iter()
        .filter_map(|f| relative(&job.out, f))
        .collect();
    for (label, _) in &job.models {
        for t in [
            "accuracy.csv",
            "regression.csv",
            "robustness.csv",
            "input_scaling.csv",
        ] {
            files.push(format!("survey-{label}/{t}"));
        }
    }
    let p = Page {
        title: format!(
            "zerobias report: {} vs {}",
            job.models[0].0, job.models[1].0
        ),
        settings: job.settings.clone(),
        significance,
        headlines,
        sections,
        tables,
        files,
    };
    let index = job.out.join("index.html");
    write_atomic(&index, page::render(&p).as_bytes())?;
    Ok(index)
}

/// `path` relative to `base`, with forward slashes, for a link on the page.
fn relative(base: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(base).ok()?;
    Some(
        rel.components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/"),
    )
}

/// Figs 2/4 (per-layer panels from l = 0) and Fig. 7 (saliency maps) for the first
/// `examples` images of each model.
fn example_figures(job: &ReportJob) -> Result<(Section, Section)> {
    let n = job.inputs.dim(0)?.min(job.examples);
    let mut panels = Section {
        title: "Figs 2 and 4: per-layer attributions".into(),
        caption: "Signed activity attributions a^{h,l} (top) and bias attributions a^{b,l} \
                  (bottom) per layer, from l = 0 (input attributions, no bias), red positive, \
                  blue negative, for the predicted class."
            .into(),
        figures: Vec::new(),
        missing: Vec::new(),
    };
    let mut overlays = Section {
        title: "Fig. 7: saliency maps".into(),
        caption: "Input attributions (act.0), gradients, FullGrad, Grad-CAM and top-down \
                  aggregates over the image."
            .into(),
        figures: Vec::new(),
        missing: Vec::new(),
    };
    if n == 0 {
        let why = "Not drawn: --examples 0.".to_string();
        panels.missing.push(why.clone());
        overlays.missing.push(why);
        return Ok((panels, overlays));
    }
    let bar = crate::progress::bar((n * job.models.len()) as u64, "attribute");
    for (label, model) in &job.models {
        let x = job.inputs.narrow(0, 0, n)?;
        let att = attribute(*model, &x, &Target::Predicted, &all_methods(*model))?;
        let name = |i: usize| format!("image {i}");
        crate::finite::check_result(&att.logits, &format!("logits of model {label}"), name)?;
        for (map, t) in att.maps.iter() {
            let what = format!("attribution map '{map}' of model {label}");
            crate::finite::check_result(t, &what, name)?;
        }
        let dir = job.out.join(format!("attr-{label}"));
        figures::attribution_figures(*model, label, &x, &att, 0, &dir)?;
        for i in 0..n {
            panels.figures.push(Figure {
                src: format!("attr-{label}/image-{i:04}-layers.png"),
                caption: format!("{label}, image {i}"),
            });
            overlays.figures.push(Figure {
                src: format!("attr-{label}/image-{i:04}-saliency.png"),
                caption: format!("{label}, image {i}"),
            });
        }
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    Ok((panels, overlays))
}

fn eval_sections(job: &ReportJob, drawn: &[PathBuf], fig8: Option<&Path>) -> Vec<Section> {
    let base = &job.out;
    let pair = job.options.noise_unit == NoiseUnit::Pair;
    let unit = if pair {
        "Boxes hold one value per image × noise map for the δ metrics (--noise-unit pair), \
         one per image otherwise; boxes span the 25th to 75th percentiles."
    } else {
        "Boxes hold one value per image (--noise-unit image); boxes span the 25th to 75th \
         percentiles."
    };
    let has = |name: &str| {
        drawn
            .iter()
            .any(|p| p.file_name().is_some_and(|f| f == name))
    };
    let section = |title: &str, caption: &str, names: Vec<(String, String)>, why: &str| {
        let mut s = Section {
            title: title.into(),
            caption: format!("{caption} {unit}"),
            figures: Vec::new(),
            missing: Vec::new(),
        };
        for (name, cap) in names {
            if has(&name) {
                let p = base.join("eval").join(&name);
                s.figures.push(Figure {
                    src: relative(base, &p).unwrap_or(name),
                    caption: cap,
                });
            } else {
                s.missing.push(format!("{cap}: not drawn ({why})."));
            }
        }
        s
    };
    let per_model = |prefix: &str| -> Vec<(String, String)> {
        job.models
            .iter()
            .flat_map(|(l, _)| {
                METRICS
                    .iter()
                    .map(move |m| (format!("{prefix}-{l}-{m}.png"), format!("{l}, {m}")))
            })
            .collect()
    };
    let mut out = vec![
        section(
            "Fig. 5: activity against bias attributions per layer",
            "The flip metric of abs(a^{h,l}) (act) and abs(a^{b,l}) (bias) per layer, \
             l = 0 being input attributions, with the gradient baseline (grey) in its own slot.",
            per_model("fig5"),
            "no act.l or bias maps among --methods",
        ),
        section(
            "Fig. 6: single layers, top-down aggregates and references",
            "Boxes: single layers act.l (blue) and top-down aggregates agg.l from first \
             layer l (cyan). Horizontal lines: the references that were evaluated, at their \
             median over a light band from the first to the third quartile, as the paper \
             draws its FullGrad and gradient lines: agg.0 (input and all layers; the paper's \
             cyan line), fullgrad.layers (the paper's FullGrad, purple), the official \
             FullGrad, Grad-CAM and the input gradient.",
            per_model("fig6"),
            "no act.l or agg.l maps among --methods",
        ),
        section(
            "Supp. Fig. 10: the aggregates of both models",
            "agg.l0 for each first layer l0, one series per model.",
            METRICS
                .iter()
                .map(|m| (format!("fig6-aggregates-{m}.png"), m.to_string()))
                .collect(),
            "no agg.l maps among --methods",
        ),
        section(
            "Fig. 9: zero-bias minus vanilla",
            "Per layer, the paired difference of the metric of act.l (and of the gradient), \
             second model minus first.",
            METRICS
                .iter()
                .map(|m| (format!("fig9-difference-{m}.png"), m.to_string()))
                .collect(),
            "no act.l or grad maps among --methods",
        ),
    ];
    let mut s8 = Section {
        title: "Fig. 8: spatial correlations between attributions".into(),
        caption: "Pearson ρ per image over the pixels of each layer's activation map: between \
                  a^{h,l} and a^{b,l} (the layer's bias maps at that resolution) within the \
                  first model (blue), and between the two models' a^{h,l} (orange); median \
                  (line) over a shaded band from the 10th to the 90th percentile per layer. \
                  Images where a map is \
                  constant have no ρ (counted in correlations.csv, column skipped)."
            .into(),
        figures: Vec::new(),
        missing: Vec::new(),
    };
    match fig8 {
        Some(p) => s8.figures.push(Figure {
            src: relative(base, p).unwrap_or_default(),
            caption: "ρ(a^{h,l}, a^{b,l}) in the first model; ρ(a^{h,l} of the first model, \
                      a^{h,l} of the second)"
                .into(),
        }),
        None => s8.missing.push(
            "Not drawn: no correlation was defined (constant maps, or maps supplied with \
             --maps)."
                .into(),
        ),
    }
    out.push(s8);
    out
}

/// Supp. Figs 1–2 (scaling, shifts) and 4–5 (output correlation, α/β) per model, and the
/// survey's logit regression.
fn survey_sections(job: &ReportJob) -> Result<Vec<Section>> {
    let mut robust = Section {
        title: "Supp. Figs 1–2: robustness to input scaling and shifts".into(),
        caption: "Top-1 of each model and of the same model with all biases zeroed, when raw \
                  pixel values are multiplied by 0.001 to 1000 or shifted by up to a full \
                  value range, before normalisation. Without labels, top-1 is agreement with \
                  the model's own predictions on the untouched images."
            .into(),
        figures: Vec::new(),
        missing: Vec::new(),
    };
    let mut outputs = Section {
        title: "Supp. Figs 4–5: outputs with biases removed".into(),
        caption: "Per image, Pearson ρ between the logits of the model and of the model with \
                  biases zeroed (Supp. Fig. 4), and the fit f0 = α f + β over the classes \
                  (Supp. Fig. 5), with the regression over all logits."
            .into(),
        figures: Vec::new(),
        missing: Vec::new(),
    };
    let bar = crate::progress::bar(job.models.len() as u64, "survey");
    for (label, model) in &job.models {
        let dir = job.out.join(format!("survey-{label}"));
        let r = crate::eval::survey::run(
            *model,
            label,
            &job.inputs,
            job.labels.as_deref(),
            job.config.batch,
            &dir,
        )?;
        let (scaling, shift) = (dir.join("scaling.png"), dir.join("shift.png"));
        survey_plots::robustness(&r, label, &scaling, &shift)?;
        let norm = dir.join("input_scaling.png");
        survey_plots::input_norm(&r, label, &norm)?;
        for (p, what) in [
            (scaling, "scaling"),
            (shift, "shifts"),
            (norm, "class kept under scaling of the normalised input"),
        ] {
            robust.figures.push(Figure {
                src: relative(&job.out, &p).unwrap_or_default(),
                caption: format!("{label}: {what}"),
            });
        }
        let regression = dir.join("regression.png");
        survey_plots::regression(&r, label, &regression)?;
        let (corr, ab) = (
            dir.join("supp4-correlation.png"),
            dir.join("supp5-alpha-beta.png"),
        );
        if survey_plots::output_fits(&r, model.num_classes(), label, &corr, &ab)? {
            for (p, what) in [(corr, "ρ per image"), (ab, "α and β per image")] {
                outputs.figures.push(Figure {
                    src: relative(&job.out, &p).unwrap_or_default(),
                    caption: format!("{label}: {what}"),
                });
            }
        } else {
            outputs.missing.push(format!(
                "{label}: per-image fits not drawn (every image's logits are constant)."
            ));
        }
        outputs.figures.push(Figure {
            src: relative(&job.out, &regression).unwrap_or_default(),
            caption: format!("{label}: logits with biases set to 0 against as loaded"),
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(vec![robust, outputs])
}

/// The test of `a` against `b` on `metric`, oriented so that side a is `a` (tests.csv
/// states each pair once, in either order).
fn oriented(tests: &[TestRow], metric: &str, a: &str, b: &str) -> Option<TestRow> {
    let find = |x: &str, y: &str| {
        tests
            .iter()
            .find(|t| t.metric == metric && t.a == x && t.b == y)
    };
    find(a, b)
        .cloned()
        .or_else(|| find(b, a).map(TestRow::flipped))
}

/// The families of the headlines: act against bias per layer within each model, and the
/// second model against the first per layer for act.l, for each headline metric.
fn families(job: &ReportJob, tests: &[TestRow]) -> Vec<LayerFamily> {
    let mut out = Vec::new();
    for metric in HEADLINE_METRICS {
        for (label, model) in &job.models {
            let modules = model.bias_modules();
            let layers = (1..=model.num_layers())
                .map(|l| {
                    let a = format!("{label}:act.{l}");
                    let ts: Vec<TestRow> = modules
                        .iter()
                        .filter(|(_, ml)| *ml == l)
                        .filter_map(|(m, _)| {
                            oriented(tests, metric, &a, &format!("{label}:bias.{m}"))
                        })
                        .collect();
                    (l, ts)
                })
                .collect();
            out.push(LayerFamily {
                context: format!("{label}, {metric}:"),
                a_name: "act".into(),
                b_name: "bias".into(),
                layers,
            });
        }
        let (a, b) = (&job.models[0], &job.models[1]);
        let layers = (0..=a.1.num_layers().min(b.1.num_layers()))
            .map(|l| {
                let (x, y) = (format!("{}:act.{l}", b.0), format!("{}:act.{l}", a.0));
                (l, oriented(tests, metric, &x, &y).into_iter().collect())
            })
            .collect();
        out.push(LayerFamily {
            context: format!("act.l, {metric}:"),
            a_name: b.0.clone(),
            b_name: a.0.clone(),
            layers,
        });
    }
    out
}

/// Per model and headline metric, agg.1 (the paper's "all layers") against each reference
/// method that was evaluated: agg.0 (with input attributions), fullgrad.layers, FullGrad,
/// Grad-CAM and gradients. Tests that could not be run are left out.
fn reference_tests(job: &ReportJob, tests: &[TestRow]) -> Vec<(String, TestRow)> {
    let mut out = Vec::new();
    for metric in HEADLINE_METRICS {
        for (label, _) in &job.models {
            for r in eval_plots::REFERENCES {
                let (a, b) = (format!("{label}:agg.1"), format!("{label}:{r}"));
                if let Some(t) = oriented(tests, metric, &a, &b).filter(|t| t.p_value.is_some()) {
                    out.push((format!("{label}, {metric}:"), t));
                }
            }
        }
    }
    out
}

/// The page's tables: the tests behind the headlines, family by family.
fn tables(families: &[LayerFamily]) -> Vec<Table> {
    families
        .iter()
        .map(|f| Table {
            title: format!(
                "{} {} against {}",
                f.context.trim_end_matches(':'),
                f.a_name,
                f.b_name
            ),
            rows: f
                .layers
                .iter()
                .flat_map(|(_, ts)| ts.iter().cloned())
                .collect(),
        })
        .collect()
}
