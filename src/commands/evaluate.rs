//! `zerobias evaluate`: flip metrics of attribution maps for one or more models, then the
//! tables (`eval`) and the figures (`report::eval_plots`).

use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::Device;

use super::args::{check_results_out, load_inputs, model_labels, positive_batch, Preprocessing};
use zerobias::eval::run::{read_maps, EvalConfig, EvalOptions, EvaluateJob, NoiseUnit, Upsample};
use zerobias::models::{self, Classifier};
use zerobias::report::eval_plots;

#[derive(clap::Args)]
pub struct Args {
    /// One or more models (repeat --model); each gives the act-vs-bias correlations (Fig. 8),
    /// two models also the between-model ones and Fig. 9.
    #[arg(long = "model", required = true)]
    models: Vec<String>,
    #[arg(long, conflicts_with = "data")]
    input: Option<PathBuf>,
    /// Image folder (ImageNet layout or flat).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Images taken from --data (0 = all).
    #[arg(long, default_value_t = 0)]
    limit: usize,
    /// Methods: names or shorthands (act.*, bias.*, agg.*, all), comma-separated.
    #[arg(long, default_value = "all", value_delimiter = ',')]
    methods: Vec<String>,
    /// Saliency maps made elsewhere: tensors maps.{name} [N,H,W] at input resolution.
    #[arg(long)]
    maps: Option<PathBuf>,
    /// Grid steps K of the flip scan.
    #[arg(long, default_value_t = 100)]
    steps: usize,
    /// Maps of other images per image for the noise baseline (0 = none).
    #[arg(long, default_value_t = 4)]
    noise_samples: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16, value_parser = positive_batch)]
    batch: usize,
    /// Rank pixels by the signed map (the attribution-map variant) instead of |map|.
    #[arg(long)]
    signed: bool,
    /// Statistical unit of the δ metrics: `pair` (one value per image × noise map, the
    /// paper's) or `image` (noise maps averaged per image).
    #[arg(long, default_value = "pair", value_parser = ["pair", "image"])]
    noise_unit: String,
    /// How Ψ brings maps to the input size: `bilinear` (align_corners = False), `nearest`,
    /// or `linear` (align_corners = True; Supplementary Fig. 12).
    #[arg(long, default_value = "bilinear", value_parser = ["bilinear", "nearest", "linear"])]
    upsample: String,
    #[command(flatten)]
    preprocessing: Preprocessing,
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
        maps,
        steps,
        noise_samples,
        seed,
        batch,
        signed,
        noise_unit,
        upsample,
        preprocessing,
        out,
    } = args;
    let options = EvalOptions {
        noise_unit: NoiseUnit::parse(&noise_unit)?,
        upsample: Upsample::parse(&upsample)?,
    };
    let model_paths: Vec<PathBuf> = specs.iter().map(PathBuf::from).collect();
    let mut ins: Vec<(&str, &Path)> = model_paths
        .iter()
        .map(|m| ("--model", m.as_path()))
        .collect();
    ins.extend(input.as_deref().map(|p| ("--input", p)));
    ins.extend(data.as_deref().map(|p| ("--data", p)));
    ins.extend(maps.as_deref().map(|p| ("--maps", p)));
    check_results_out(&out, data.as_deref(), &ins)?;
    let (batch_in, _) = load_inputs(
        input.as_deref(),
        data.as_deref(),
        limit,
        seed,
        &preprocessing,
        dev,
    )?;
    let loaded: Vec<Box<dyn Classifier>> = specs
        .iter()
        .map(|s| models::open(s, None, dev))
        .collect::<zerobias::Result<_>>()?;
    let labels = model_labels(&specs);
    let external = maps
        .as_deref()
        .map(|p| read_maps(p, &batch_in.tensor))
        .transpose()?;
    let job = EvaluateJob {
        models: labels
            .into_iter()
            .zip(loaded.iter().map(|m| m.as_ref()))
            .collect(),
        inputs: batch_in.tensor,
        external_maps: external,
        config: EvalConfig {
            methods,
            steps,
            noise_samples,
            seed,
            batch,
            signed,
        },
        out: out.clone(),
    };
    let report = zerobias::eval::run::run_with(&job, &options)?;
    let mut files = report.files;
    files.extend(eval_plots::figures(
        &job.models,
        &report.rows,
        options.noise_unit,
        &job.out,
    )?);
    println!(
        "{} rows, {} forward passes",
        report.rows.len(),
        report.forwards
    );
    for f in files {
        println!("wrote {}", f.display());
    }
    Ok(())
}
