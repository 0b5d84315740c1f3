//! `zerobias predict`: the top-k classes of each input image, or the top-k accuracy on a
//! labelled folder.

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};

use super::args::{
    check_file_arg, check_file_out, load_inputs, named_inputs, positive_batch, Preprocessing,
};
use zerobias::models::{self, Classifier};

#[derive(clap::Args)]
pub struct Args {
    /// Local .safetensors file, zerobias checkpoint, or Hub id (timm/resnet50.tv_in1k).
    #[arg(long)]
    model: String,
    /// Image file, directory of images, or .safetensors with tensor `input` [N,3,H,W].
    #[arg(long, conflicts_with = "data")]
    input: Option<PathBuf>,
    /// Folder of images; with one subfolder per class (ImageFolder, classes in sorted
    /// order) the top-k accuracy against its labels is printed instead of a table per image.
    #[arg(long)]
    data: Option<PathBuf>,
    /// `--data`: at most this many images, drawn at random across the folder (0 = all).
    #[arg(long, default_value_t = 0)]
    limit: usize,
    /// `--data`: seed of that draw.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Images per forward pass.
    #[arg(long, default_value_t = 64, value_parser = positive_batch)]
    batch: usize,
    #[command(flatten)]
    preprocessing: Preprocessing,
    #[arg(long, default_value_t = 5)]
    topk: usize,
    /// Write `logits` f32 [N,C] (and, for a labelled `--data` folder, `labels` i64 [N]) to
    /// this safetensors file.
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long)]
    revision: Option<String>,
}

pub fn run(args: Args, dev: &Device) -> Result<()> {
    let Args {
        model,
        input,
        data,
        limit,
        seed,
        batch,
        preprocessing,
        topk,
        out,
        revision,
    } = args;
    if let Some(out) = &out {
        check_file_arg("--out", out)?;
        let m = [PathBuf::from(&model)];
        let ins = named_inputs(&m, input.as_deref(), data.as_deref());
        check_file_out("--out", out, &ins)?;
    }
    let (flag, source) = match (input.as_deref(), data.as_deref()) {
        (Some(i), _) => ("--input", i.display().to_string()),
        (None, Some(d)) => ("--data", d.display().to_string()),
        (None, None) => anyhow::bail!("give exactly one of --input X or --data DIR"),
    };
    let model = models::open(&model, revision.as_deref(), dev)?;
    let (inputs, labels) = load_inputs(
        input.as_deref(),
        data.as_deref(),
        limit,
        seed,
        &preprocessing,
        dev,
    )?;
    if let Some(&l) = labels.as_deref().and_then(|l| l.iter().max()) {
        let classes = model.num_classes();
        if l as usize >= classes {
            anyhow::bail!(
                "--data {source}: has at least {} class folders, the model has {classes} classes",
                l + 1
            );
        }
    }
    let (n, _, h, w) = inputs.tensor.dims4()?;
    models::check_input_size(model.as_ref(), h, w).with_context(|| format!("{flag} {source}"))?;
    let mut chunks = Vec::with_capacity(n.div_ceil(batch));
    for start in (0..n).step_by(batch) {
        let len = batch.min(n - start);
        let logits = model.forward(&inputs.tensor.narrow(0, start, len)?)?;
        // Checked per pass so that the image named is the right one.
        zerobias::finite::check_result(&logits, "logits", |i| inputs.names[start + i].clone())?;
        chunks.push(logits);
    }
    let logits = Tensor::cat(&chunks, 0)?;
    let mut tensors = vec![("logits".to_string(), logits.clone())];
    match &labels {
        Some(labels) => {
            print_accuracy(model.as_ref(), &logits, labels, topk, &source)?;
            let l: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
            tensors.push(("labels".into(), Tensor::new(l, dev)?));
        }
        None => print_topk(model.as_ref(), &logits, &inputs.names, topk)?,
    }
    if let Some(out) = out {
        zerobias::checkpoint::save(&out, &tensors, Default::default())?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}

/// Top-1 and top-k accuracy of `logits` against `labels` (class indices of the folder).
fn print_accuracy(
    model: &dyn Classifier,
    logits: &Tensor,
    labels: &[u32],
    k: usize,
    source: &str,
) -> Result<()> {
    let classes = model.num_classes();
    let rows: Vec<Vec<f32>> = logits.to_vec2()?;
    let k = k.clamp(1, classes);
    let (mut top1, mut topk) = (0usize, 0usize);
    for (row, &label) in rows.iter().zip(labels) {
        let rank = ranking(row);
        top1 += usize::from(rank[0] == label as usize);
        topk += usize::from(rank[..k].contains(&(label as usize)));
    }
    let pct = |c: usize| 100.0 * c as f64 / labels.len() as f64;
    println!("{} labelled images of {source}", labels.len());
    println!("  top-1  {:6.2}%", pct(top1));
    if k > 1 {
        println!("  top-{k}  {:6.2}%", pct(topk));
    }
    Ok(())
}

/// Class indices by decreasing logit; ties by the lower index, as torch.topk on CPU.
fn ranking(row: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    order
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
        let order = ranking(row);
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
