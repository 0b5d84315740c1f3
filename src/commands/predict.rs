//! `zerobias predict`: the top-k classes of each input image.

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};

use super::args::{check_file_arg, check_file_out};
use zerobias::models::{self, Classifier};

#[derive(clap::Args)]
pub struct Args {
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
}

pub fn run(args: Args, dev: &Device) -> Result<()> {
    let Args {
        model,
        input,
        topk,
        out,
        revision,
    } = args;
    if let Some(out) = &out {
        check_file_arg("--out", out)?;
        let m = PathBuf::from(&model);
        check_file_out("--out", out, &[("--model", &m), ("--input", &input)])?;
    }
    let model = models::open(&model, revision.as_deref(), dev)?;
    let batch = zerobias::inputs::load(&input, dev)?;
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
    Ok(())
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
