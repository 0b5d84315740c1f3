//! `zerobias evaluate`: flip metrics of attribution maps for one or more models, then the
//! tables (`eval`) and the figures (`report::eval_plots`).

use std::path::PathBuf;

use anyhow::Result;
use candle_core::Device;

use super::args::{
    check_results_out, load_inputs, model_labels, named_inputs, open_models, positive_batch,
    FlipScan, Preprocessing,
};
use zerobias::eval::run::{read_maps, EvalConfig, EvaluateJob};
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
    #[command(flatten)]
    flip: FlipScan,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16, value_parser = positive_batch)]
    batch: usize,
    /// Rank pixels by the signed map (the attribution-map variant) instead of |map|.
    #[arg(long)]
    signed: bool,
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
        flip,
        seed,
        batch,
        signed,
        preprocessing,
        out,
    } = args;
    let options = flip.options()?;
    let model_paths: Vec<PathBuf> = specs.iter().map(PathBuf::from).collect();
    let mut ins = named_inputs(&model_paths, input.as_deref(), data.as_deref());
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
    let loaded = open_models(&specs, dev)?;
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
            steps: flip.steps,
            noise_samples: flip.noise_samples,
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
