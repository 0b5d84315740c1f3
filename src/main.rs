//! The `zerobias` command line: one subcommand per capability of the library.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use clap::{Parser, Subcommand};

use zerobias::models::{self, Classifier};
use zerobias::taps::Target;

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
        #[arg(long, default_value_t = 8, value_parser = positive_batch)]
        batch: usize,
        #[arg(long)]
        revision: Option<String>,
    },
    /// Flip metrics (e-, e+, noise baseline) of attribution maps, statistics and plots.
    Evaluate {
        /// One or more models (repeat --model); two models also give correlations and Fig. 9.
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
        #[arg(long)]
        out: PathBuf,
    },
    /// Accuracy with all biases zeroed, logit regression, robustness to input scaling/shifts.
    Survey {
        #[arg(long)]
        model: String,
        #[arg(long, conflicts_with = "data")]
        input: Option<PathBuf>,
        #[arg(long)]
        data: Option<PathBuf>,
        #[arg(long, default_value_t = 0)]
        limit: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value_t = 16, value_parser = positive_batch)]
        batch: usize,
        #[arg(long)]
        out: PathBuf,
    },
    /// Images/second of forward, forward+backward, attribution, evaluation and a training step.
    Bench {
        #[arg(long, default_value = "resnet50")]
        arch: String,
        #[arg(long, default_value_t = 224)]
        size: usize,
        #[arg(long, default_value = "1,8", value_delimiter = ',', value_parser = positive_batch)]
        batch: Vec<usize>,
        /// Phases to run (default: all).
        #[arg(long, value_delimiter = ',')]
        phases: Vec<String>,
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Print a JSON array of measurements.
        #[arg(long)]
        json: bool,
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
        /// With --resume: continue even though the recipe differs from the run's recipe.toml.
        #[arg(long, requires = "resume")]
        force: bool,
    },
}

/// `--batch`: images per pass, at least one.
fn positive_batch(s: &str) -> std::result::Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("expected at least 1 image per pass, got 0".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!(
            "expected a positive number of images per pass, got '{s}'"
        )),
    }
}

/// An argument naming a directory (read, or created if missing): it must not be a file,
/// nor lie below one. Checked before any work starts.
fn check_dir_arg(flag: &str, path: &std::path::Path) -> Result<()> {
    if path.exists() && !path.is_dir() {
        bail!("{flag} {}: is a file, expected a directory", path.display());
    }
    check_parents(flag, path)
}

/// An argument naming an output file: it must not be a directory, nor lie below a file.
fn check_file_arg(flag: &str, path: &std::path::Path) -> Result<()> {
    if path.is_dir() {
        bail!(
            "{flag} {}: is a directory, expected a file path",
            path.display()
        );
    }
    check_parents(flag, path)
}

/// The nearest existing ancestor of `path` must be a directory, or nothing can be created.
fn check_parents(flag: &str, path: &std::path::Path) -> Result<()> {
    if let Some(parent) = path.ancestors().skip(1).find(|p| p.exists()) {
        if !parent.is_dir() {
            bail!(
                "{flag} {}: {} is a file, expected a directory",
                path.display(),
                parent.display()
            );
        }
    }
    Ok(())
}

fn device(spec: &str) -> Result<Device> {
    models::parse_device(spec).with_context(|| format!("--device {spec}"))
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
            if let Some(out) = &out {
                check_file_arg("--out", out)?;
                let m = PathBuf::from(&model);
                check_file_out("--out", out, &[("--model", &m), ("--input", &input)])?;
            }
            let model = models::open(&model, revision.as_deref(), &dev)?;
            let batch = zerobias::inputs::load(&input, &dev)?;
            let (_, _, h, w) = batch.tensor.dims4()?;
            models::check_input_size(model.as_ref(), h, w)
                .with_context(|| format!("--input {}", input.display()))?;
            let logits = model.forward(&batch.tensor)?;
            zerobias::finite::check_result(&logits, "logits", |i| batch.names[i].clone())?;
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
            let m = PathBuf::from(&model);
            let ins = [("--model", m.as_path()), ("--input", input.as_path())];
            if let Some(out) = &out {
                check_file_arg("--out", out)?;
                check_file_out("--out", out, &ins)?;
            }
            if let Some(png) = &png {
                check_dir_arg("--png", png)?;
                check_dir_out("--png", png, &["png"], &ins)?;
            }
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
        Command::Evaluate {
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
            out,
        } => {
            check_dir_arg("--out", &out)?;
            if let Some(data) = &data {
                check_dir_arg("--data", data)?;
            }
            let model_paths: Vec<PathBuf> = specs.iter().map(PathBuf::from).collect();
            let mut ins: Vec<(&str, &std::path::Path)> = model_paths
                .iter()
                .map(|m| ("--model", m.as_path()))
                .collect();
            ins.extend(input.as_deref().map(|p| ("--input", p)));
            ins.extend(data.as_deref().map(|p| ("--data", p)));
            ins.extend(maps.as_deref().map(|p| ("--maps", p)));
            check_dir_out("--out", &out, &["csv", "png"], &ins)?;
            let (batch_in, _) = load_inputs(input.as_deref(), data.as_deref(), limit, seed, &dev)?;
            let loaded: Vec<Box<dyn Classifier>> = specs
                .iter()
                .map(|s| models::open(s, None, &dev))
                .collect::<zerobias::Result<_>>()?;
            let labels = model_labels(&specs);
            let external = maps
                .as_deref()
                .map(|p| zerobias::eval::run::read_maps(p, &batch_in.tensor))
                .transpose()?;
            let job = zerobias::eval::run::EvaluateJob {
                models: labels
                    .into_iter()
                    .zip(loaded.iter().map(|m| m.as_ref()))
                    .collect(),
                inputs: batch_in.tensor,
                external_maps: external,
                config: zerobias::eval::run::EvalConfig {
                    methods,
                    steps,
                    noise_samples,
                    seed,
                    batch,
                    signed,
                },
                out: out.clone(),
            };
            let report = zerobias::eval::run::run(&job)?;
            println!(
                "{} rows, {} forward passes",
                report.rows.len(),
                report.forwards
            );
            for f in report.files {
                println!("wrote {}", f.display());
            }
        }
        Command::Survey {
            model,
            input,
            data,
            limit,
            seed,
            batch,
            out,
        } => {
            check_dir_arg("--out", &out)?;
            if let Some(data) = &data {
                check_dir_arg("--data", data)?;
            }
            let m = PathBuf::from(&model);
            let mut ins = vec![("--model", m.as_path())];
            ins.extend(input.as_deref().map(|p| ("--input", p)));
            ins.extend(data.as_deref().map(|p| ("--data", p)));
            check_dir_out("--out", &out, &["csv", "png"], &ins)?;
            let (batch_in, labels) =
                load_inputs(input.as_deref(), data.as_deref(), limit, seed, &dev)?;
            let m = models::open(&model, None, &dev)?;
            let label = model_labels(std::slice::from_ref(&model)).remove(0);
            let r = zerobias::eval::survey::run(
                m.as_ref(),
                &label,
                &batch_in.tensor,
                labels.as_deref(),
                batch,
                &out,
            )?;
            println!("bias parameters: {}", r.bias_parameters);
            println!("{:<12} {:>8} {:>8}", "variant", "top-1", "top-5");
            println!(
                "{:<12} {:>7.2}% {:>7.2}%",
                "vanilla",
                100.0 * r.top1_vanilla,
                100.0 * r.top5_vanilla
            );
            println!(
                "{:<12} {:>7.2}% {:>7.2}%",
                "zero-bias",
                100.0 * r.top1_zero,
                100.0 * r.top5_zero
            );
            if labels.is_none() {
                println!("(no labels: accuracy is agreement with the vanilla model's predictions)");
            }
            for f in r.files {
                println!("wrote {}", f.display());
            }
        }
        Command::Bench {
            arch,
            size,
            batch,
            phases,
            repeats,
            json,
        } => {
            let phases: Vec<zerobias::bench::Phase> = if phases.is_empty() {
                zerobias::bench::Phase::ALL.to_vec()
            } else {
                phases
                    .iter()
                    .map(|p| zerobias::bench::Phase::parse(p))
                    .collect::<zerobias::Result<_>>()?
            };
            let m = zerobias::bench::run_phases(&arch, size, &batch, &phases, repeats, false)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&m)?);
            }
        }
        Command::Decay {
            recipe,
            run_dir,
            resume,
            overrides,
            force,
        } => {
            let opts = zerobias::train::RunOptions {
                run_dir,
                resume,
                overrides,
                quiet: false,
                stop_after: None,
            };
            let summary = zerobias::train::run_with_force(&recipe, &opts, force)?;
            println!("{}", summary.table());
        }
    }
    Ok(())
}

/// An output file must not be one of the inputs (checked before any work).
fn check_file_out(
    flag: &str,
    out: &std::path::Path,
    ins: &[(&str, &std::path::Path)],
) -> Result<()> {
    let ins: Vec<_> = ins
        .iter()
        .map(|(f, p)| zerobias::paths::Input::new(f, p))
        .collect();
    Ok(zerobias::paths::check_output_file(flag, out, &ins)?)
}

/// An output folder must not be, or overwrite, one of the inputs.
fn check_dir_out(
    flag: &str,
    out: &std::path::Path,
    writes: &[&str],
    ins: &[(&str, &std::path::Path)],
) -> Result<()> {
    let ins: Vec<_> = ins
        .iter()
        .map(|(f, p)| zerobias::paths::Input::new(f, p))
        .collect();
    Ok(zerobias::paths::check_output_dir(flag, out, writes, &ins)?)
}

fn load_inputs(
    input: Option<&std::path::Path>,
    data: Option<&std::path::Path>,
    limit: usize,
    seed: u64,
    dev: &Device,
) -> Result<(zerobias::inputs::InputBatch, Option<Vec<u32>>)> {
    match (input, data) {
        (Some(i), None) => Ok((zerobias::inputs::load(i, dev)?, None)),
        (None, Some(d)) => Ok(zerobias::inputs::load_data_dir(d, limit, seed, dev)?),
        _ => bail!("give exactly one of --input X or --data DIR"),
    }
}

/// Short, unique labels for models in tables (file stem or repo name).
fn model_labels(specs: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in specs {
        let base = std::path::Path::new(s.trim_end_matches(".safetensors"))
            .file_name()
            .map(|n| n.to_string_lossy().replace(',', "_"))
            .unwrap_or_else(|| "model".into());
        let mut label = base.clone();
        let mut k = 2;
        while out.contains(&label) {
            label = format!("{base}-{k}");
            k += 1;
        }
        out.push(label);
    }
    out
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
    // Before printing anything: a size the network cannot take is the whole answer.
    let shapes = models::layer_shapes(model, size).with_context(|| format!("--size {size}"))?;
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
