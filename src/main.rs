//! The `zerobias` command line: one subcommand per capability of the library.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use clap::{Parser, Subcommand};

use zerobias::models::{self, Classifier};
use zerobias::taps::Target;

#[derive(Parser)]
#[command(
    name = "zerobias",
    version,
    about = "Bias parameters and the quality of visual explanations (VGG-16, ResNet-50 on Candle)"
)]
struct Cli {
    /// Compute device: cpu, cuda[:N] (build with --features cuda) or metal.
    #[arg(long, global = true, default_value = "cpu")]
    device: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Download a model's model.safetensors from the Hugging Face Hub into the HF cache.
    Fetch {
        /// Hub repo id, e.g. timm/vgg16.tv_in1k
        repo: String,
        #[arg(long)]
        revision: Option<String>,
    },
    /// Print the top-k classes for each input image.
    Predict {
        /// Local .safetensors file, zerobias checkpoint, or Hub id (timm/resnet50.tv_in1k).
        #[arg(long)]
        model: String,
        /// Image file, directory of images, or .safetensors with tensor `input` [N,3,H,W].
        #[arg(long)]
        input: PathBuf,
        #[arg(long, default_value_t = 5)]
        topk: usize,
        /// Write `logits` f32 [N,C] to this safetensors file.
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        revision: Option<String>,
    },
    /// Architecture, layers, bias handles and parameter counts of a model.
    Info {
        #[arg(long)]
        model: String,
        #[arg(long)]
        revision: Option<String>,
        /// Input size used for the layer output shapes.
        #[arg(long, default_value_t = 224)]
        size: usize,
    },
    /// Attribution maps (act.l, bias.module, grad, gradcam, fullgrad, agg.l0) for each image.
    Attribute {
        #[arg(long)]
        model: String,
        #[arg(long)]
        input: PathBuf,
        /// `pred` (the predicted class) or a class index.
        #[arg(long, default_value = "pred")]
        target: String,
        /// Write every map, logits, target and the completeness residual here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Write per-image panels and saliency overlays (PNG) into this directory.
        #[arg(long)]
        png: Option<PathBuf>,
        /// Images per forward/backward pass.
        #[arg(long, default_value_t = 8)]
        batch: usize,
        #[arg(long)]
        revision: Option<String>,
    },
    /// Run a bias-decay recipe (TOML): train a teacher and/or distil it into a zero-bias network.
    Decay {
        /// Recipe file, e.g. recipes/quickstart.toml
        recipe: PathBuf,
        /// Run directory (default: checkpoints/{name}-{timestamp}).
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// Continue from the latest checkpoint of the run directory (default: the latest run of this recipe).
        #[arg(long)]
        resume: bool,
        /// Override a recipe field, e.g. --set stage.1.lr=1e-4 --set data.train=/data/imagenet/train
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
}

fn device(spec: &str) -> Result<Device> {
    match spec {
        "cpu" => Ok(Device::Cpu),
        s if s.starts_with("cuda") => {
            let ordinal = s
                .strip_prefix("cuda:")
                .map(|n| n.parse::<usize>())
                .transpose()
                .context("--device cuda:N expects a GPU index")?
                .unwrap_or(0);
            Device::new_cuda(ordinal).with_context(|| format!("--device {s}: CUDA is unavailable (build with --features cuda on a machine with a GPU)"))
        }
        "metal" => Device::new_metal(0)
            .context("--device metal: Metal is unavailable (build with --features metal on macOS)"),
        other => bail!("--device {other}: expected cpu, cuda, cuda:N or metal"),
    }
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let dev = device(&cli.device)?;
    match cli.command {
        Command::Fetch { repo, revision } => {
            let cfg = zerobias::hub::HubConfig::from_env();
            let path = zerobias::hub::fetch_file(
                &cfg,
                &repo,
                revision.as_deref().unwrap_or("main"),
                "model.safetensors",
            )?;
            println!("{}", path.display());
        }
        Command::Predict {
            model,
            input,
            topk,
            out,
            revision,
        } => {
            let model = models::open(&model, revision.as_deref(), &dev)?;
            let batch = zerobias::inputs::load(&input, &dev)?;
            let logits = model.forward(&batch.tensor)?;
            print_topk(model.as_ref(), &logits, &batch.names, topk)?;
            if let Some(out) = out {
                zerobias::checkpoint::save(&out, &[("logits".into(), logits)], Default::default())?;
                eprintln!("wrote {}", out.display());
            }
        }
        Command::Info {
            model,
            revision,
            size,
        } => {
            let model = models::open(&model, revision.as_deref(), &dev)?;
            print_info(model.as_ref(), size)?;
        }
        Command::Attribute {
            model,
            input,
            target,
            out,
            png,
            batch,
            revision,
        } => {
            let model = models::open(&model, revision.as_deref(), &dev)?;
            let target = parse_target(&target)?;
            zerobias::report::attribution::run(
                model.as_ref(),
                &input,
                &target,
                out.as_deref(),
                png.as_deref(),
                batch,
                &dev,
            )?;
        }
        Command::Decay { recipe, run_dir, resume, overrides } => {
            let opts = zerobias::train::RunOptions { run_dir, resume, overrides, quiet: false, stop_after: None };
            let summary = zerobias::train::run(&recipe, &opts)?;
            println!("{}", summary.table());
        }
    }
    Ok(())
}

fn parse_target(s: &str) -> Result<Target> {
    if s == "pred" {
        return Ok(Target::Predicted);
    }
    s.parse::<usize>()
        .map(Target::Class)
        .map_err(|_| anyhow::anyhow!("--target {s}: expected 'pred' or a class index"))
}

fn print_topk(model: &dyn Classifier, logits: &Tensor, names: &[String], k: usize) -> Result<()> {
    let probs = candle_nn::ops::softmax(logits, 1)?;
    let logits: Vec<Vec<f32>> = logits.to_vec2()?;
    let probs: Vec<Vec<f32>> = probs.to_vec2()?;
    let labels = zerobias::labels::for_classes(model.num_classes());
    for (i, (row, p)) in logits.iter().zip(&probs).enumerate() {
        println!(
            "{}",
            names
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("input[{i}]"))
        );
        let mut order: Vec<usize> = (0..row.len()).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        println!(
            "  {:>4}  {:>6}  {:>9}  {:>7}  label",
            "rank", "class", "logit", "prob"
        );
        for (r, &c) in order.iter().take(k).enumerate() {
            let label = labels.as_ref().map(|l| l[c]).unwrap_or("");
            println!(
                "  {:>4}  {:>6}  {:>9.4}  {:>6.2}%  {}",
                r + 1,
                c,
                row[c],
                100.0 * p[c],
                label
            );
        }
    }
    Ok(())
}

fn print_info(model: &dyn Classifier, size: usize) -> Result<()> {
    println!(
        "architecture: {} ({} classes)",
        model.name(),
        model.num_classes()
    );
    println!(
        "parameters:   {} in {} tensors",
        model.params().numel(),
        model.params().len()
    );
    let shapes = models::layer_shapes(model, size)?;
    println!("\nlayers (output shape for a {size}x{size} input):");
    println!("  {:>3}  {:<16}  shape", "l", "module");
    println!("  {:>3}  {:<16}  {:?}", 0, "input", [3, size, size]);
    for (info, shape) in model.layers().iter().zip(&shapes) {
        println!("  {:>3}  {:<16}  {:?}", info.index, info.name, shape);
    }
    let biases = model.bias_set();
    println!(
        "\nbias handles: {} tensors, {} values",
        biases.len(),
        biases.numel()
    );
    for (kind, tensors, values) in biases.count_by_kind() {
        println!(
            "  {:<24} {:>4} tensors {:>10} values",
            kind.label(),
            tensors,
            values
        );
    }
    println!("  max |bias|: {:.6e}", biases.max_abs()?);
    Ok(())
}
