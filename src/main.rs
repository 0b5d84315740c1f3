//! The `zerobias` command line: parse the arguments and hand each subcommand to its driver
//! in [`commands`].

mod commands;

use anyhow::Result;
use candle_core::Device;
use clap::{Parser, Subcommand};

use zerobias::device::{self, Precision};
use zerobias::models;

/// Large tensors on transparent huge pages (see `zerobias::HugePageAlloc`).
#[global_allocator]
static ALLOCATOR: zerobias::HugePageAlloc = zerobias::HugePageAlloc;

#[derive(Parser)]
#[command(
    name = "zerobias",
    version,
    about = "Bias parameters and the quality of visual explanations (VGG-16, ResNet-50 on Candle)"
)]
struct Cli {
    /// Compute device: cpu, cuda[:N] (build with --features cuda) or metal[:N] [default: cpu;
    /// for decay, the recipe's device].
    #[arg(long, global = true)]
    device: Option<String>,
    /// f32 matrix products on CUDA: f32 or tf32 (faster, ~1e-3 relative error) [default: f32;
    /// for decay, the recipe's precision].
    #[arg(long, global = true)]
    precision: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Download a model's model.safetensors from the Hugging Face Hub into the HF cache.
    Fetch(commands::fetch::Args),
    /// Print the top-k classes for each input image.
    Predict(commands::predict::Args),
    /// Architecture, layers, bias handles and parameter counts of a model.
    Info(commands::info::Args),
    /// Attribution maps (act.l, bias.module, grad, gradcam, fullgrad, agg.l0) for each image.
    Attribute(commands::attribute::Args),
    /// Flip metrics (e-, e+, noise baseline) of attribution maps, statistics and plots.
    Evaluate(commands::evaluate::Args),
    /// Accuracy with all biases zeroed, logit regression, robustness to input scaling/shifts.
    Survey(commands::survey::Args),
    /// The paper's figures, Wilcoxon tables and headlines for a vanilla and a zero-bias model, as index.html.
    Report(commands::report::Args),
    /// Images/second of forward, forward+backward, attribution, evaluation and a training step.
    Bench(commands::bench::Args),
    /// Run a bias-decay recipe (TOML): train a teacher and/or distil it into a zero-bias network.
    Decay(commands::decay::Args),
}

fn device(spec: Option<&str>, precision: Option<&str>) -> Result<Device> {
    let spec = spec.unwrap_or("cpu");
    // Both messages name the flag's value and what was expected.
    let dev = models::parse_device(spec)?;
    let precision = Precision::parse(precision.unwrap_or("f32"))?;
    device::set_precision(precision, &dev);
    Ok(dev)
}

fn main() {
    zerobias::init_cpu_runtime();
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let dev = || device(cli.device.as_deref(), cli.precision.as_deref());
    match cli.command {
        Command::Fetch(args) => commands::fetch::run(args),
        Command::Predict(args) => commands::predict::run(args, &dev()?),
        Command::Info(args) => commands::info::run(args, &dev()?),
        Command::Attribute(args) => commands::attribute::run(args, &dev()?),
        Command::Evaluate(args) => commands::evaluate::run(args, &dev()?),
        Command::Survey(args) => commands::survey::run(args, &dev()?),
        Command::Report(args) => commands::report::run(args, &dev()?),
        Command::Bench(args) => commands::bench::run(args, &dev()?),
        Command::Decay(mut args) => {
            // The recipe names its device; the global flags override it as --set would.
            for (key, value) in [("device", &cli.device), ("precision", &cli.precision)] {
                if let Some(v) = value {
                    args.overrides.insert(0, format!("{key}={v}"));
                }
            }
            commands::decay::run(args)
        }
    }
}
