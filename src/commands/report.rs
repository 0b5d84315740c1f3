//! `zerobias report`: the paper's comparison of a vanilla and a zero-bias model in one page
//! (`report::paper` runs the stages and writes `index.html`).

use std::path::PathBuf;

use anyhow::{bail, Result};
use candle_core::Device;

use super::args::{
    check_dir_arg, check_dir_out, load_inputs, model_labels, named_inputs, open_models,
    positive_batch, FlipScan, Preprocessing,
};
use zerobias::eval::run::EvalConfig;
use zerobias::report::paper::{self, ReportJob};

#[derive(clap::Args)]
pub struct Args {
    /// The vanilla model, then the zero-bias model (exactly two --model).
    #[arg(long = "model", required = true)]
    models: Vec<String>,
    /// Images: a .safetensors batch, an image file or a folder of images.
    #[arg(long, conflicts_with = "data")]
    input: Option<PathBuf>,
    /// Image folder (ImageNet layout or flat).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Images used, from --data or --input (0 = all).
    #[arg(long, default_value_t = 0)]
    limit: usize,
    /// Methods evaluated: names or shorthands (act.*, bias.*, agg.*, all), comma-separated.
    #[arg(long, default_value = "all", value_delimiter = ',')]
    methods: Vec<String>,
    #[command(flatten)]
    flip: FlipScan,
    /// Images drawn as attribution panels and saliency maps (Figs 2/4 and 7).
    #[arg(long, default_value_t = 2)]
    examples: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16, value_parser = positive_batch)]
    batch: usize,
    #[command(flatten)]
    preprocessing: Preprocessing,
    /// Folder of the report: index.html, its figures and the tables.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args, dev: &Device) -> Result<()> {
    let Args {
        models: specs,
        input,
        data,
        limit,
        methods,
        flip,
        examples,
        seed,
        batch,
        preprocessing,
        out,
    } = args;
    if specs.len() != 2 {
        bail!(
            "--model: expected exactly two models (the vanilla one, then the zero-bias one), got {}",
            specs.len()
        );
    }
    let options = flip.options()?;
    let model_paths: Vec<PathBuf> = specs.iter().map(PathBuf::from).collect();
    let ins = named_inputs(&model_paths, input.as_deref(), data.as_deref());
    check_dir_out("--out", &out, &["csv", "png", "html"], &ins)?;
    check_dir_arg("--out", &out)?;
    if let Some(d) = &data {
        check_dir_arg("--data", d)?;
    }
    let (mut batch_in, labels) = load_inputs(
        input.as_deref(),
        data.as_deref(),
        limit,
        seed,
        &preprocessing,
        dev,
    )?;
    let loaded = open_models(&specs, dev)?;
    let model_names = model_labels(&specs);
    // --data takes --limit while listing; an --input batch is cut here.
    if limit > 0 && input.is_some() && batch_in.tensor.dim(0)? > limit {
        batch_in.tensor = batch_in.tensor.narrow(0, 0, limit)?;
    }
    let n = batch_in.tensor.dim(0)?;
    let source = match (&input, &data) {
        (Some(i), _) => format!("--input {} ({n} images, --limit {limit})", i.display()),
        (_, Some(d)) => format!("--data {} ({} images, --limit {limit})", d.display(), n),
        _ => String::new(),
    };
    let (_, _, h, w) = batch_in.tensor.dims4()?;
    let mut settings = vec![
        (
            "zerobias".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        ("date (UTC)".into(), zerobias::report::page::utc_now()),
    ];
    for ((label, spec), m) in model_names.iter().zip(&specs).zip(&loaded) {
        settings.push((format!("model {label}"), format!("{spec} ({})", m.name())));
    }
    settings.extend([
        ("data".to_string(), source),
        ("images".into(), format!("{n} of {h}×{w} pixels")),
        (
            "labels".into(),
            if labels.is_some() {
                "from the folder".into()
            } else {
                "none (survey accuracy = agreement with the model's own predictions)".into()
            },
        ),
        ("methods".into(), methods.join(",")),
        ("--steps".into(), flip.steps.to_string()),
        ("--noise-samples".into(), flip.noise_samples.to_string()),
        ("--noise-unit".into(), flip.noise_unit.clone()),
        ("--upsample".into(), flip.upsample.clone()),
        (
            "--size / --resize".into(),
            format!(
                "{} / {}",
                preprocessing
                    .size
                    .map_or("default (224)".into(), |s| s.to_string()),
                preprocessing
                    .resize
                    .map_or("default (size·256/224)".into(), |s| s.to_string())
            ),
        ),
        ("--seed".into(), seed.to_string()),
    ]);
    let job = ReportJob {
        models: model_names
            .into_iter()
            .zip(loaded.iter().map(|m| m.as_ref()))
            .collect(),
        inputs: batch_in.tensor,
        labels,
        config: EvalConfig {
            methods,
            steps: flip.steps,
            noise_samples: flip.noise_samples,
            seed,
            batch,
            signed: false,
        },
        options,
        examples,
        settings,
        out,
    };
    let index = paper::run(&job)?;
    println!("wrote {}", index.display());
    Ok(())
}
