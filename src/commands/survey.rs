//! `zerobias survey`: accuracy with all biases zeroed, logit regression and robustness to
//! input scaling and shifts; tables from `eval::survey`, figures from `report::survey_plots`.

use std::path::PathBuf;

use anyhow::Result;
use candle_core::Device;

use super::args::{check_results_out, load_inputs, model_labels, positive_batch, Preprocessing};
use zerobias::models;
use zerobias::report::survey_plots;

#[derive(clap::Args)]
pub struct Args {
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
    #[command(flatten)]
    preprocessing: Preprocessing,
    #[arg(long)]
    out: PathBuf,
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
        out,
    } = args;
    let m = PathBuf::from(&model);
    let mut ins = vec![("--model", m.as_path())];
    ins.extend(input.as_deref().map(|p| ("--input", p)));
    ins.extend(data.as_deref().map(|p| ("--data", p)));
    check_results_out(&out, data.as_deref(), &ins)?;
    let (batch_in, labels) = load_inputs(
        input.as_deref(),
        data.as_deref(),
        limit,
        seed,
        &preprocessing,
        dev,
    )?;
    let m = models::open(&model, None, dev)?;
    let label = model_labels(std::slice::from_ref(&model)).remove(0);
    let r = zerobias::eval::survey::run(
        m.as_ref(),
        &label,
        &batch_in.tensor,
        labels.as_deref(),
        batch,
        &out,
    )?;
    let (regression, scaling, shift) = (
        out.join("regression.png"),
        out.join("scaling.png"),
        out.join("shift.png"),
    );
    survey_plots::regression(&r, &label, &regression)?;
    survey_plots::robustness(&r, &label, &scaling, &shift)?;
    let norm = out.join("input_scaling.png");
    survey_plots::input_norm(&r, &label, &norm)?;
    // Listed as always: each table followed by its figures (accuracy.csv, regression.csv,
    // regression.png, robustness.csv, scaling.png, shift.png, input_scaling.csv,
    // input_scaling.png).
    let mut files = Vec::new();
    for table in &r.files {
        files.push(table.clone());
        if table.ends_with("regression.csv") {
            files.push(regression.clone());
        } else if table.ends_with("robustness.csv") {
            files.extend([scaling.clone(), shift.clone()]);
        } else if table.ends_with("input_scaling.csv") {
            files.push(norm.clone());
        }
    }
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
    // What a zero-bias version cannot see: how often the class changes with the input's norm.
    for (variant, rows) in &r.input_scaling {
        let shares: Vec<String> = rows
            .iter()
            .map(|(_, same)| format!("{:.1}%", 100.0 * same))
            .collect();
        println!(
            "{variant:<12} same class with the normalised input × {}: {}",
            zerobias::eval::survey::INPUT_SCALES
                .map(|a| a.to_string())
                .join("/"),
            shares.join(" / ")
        );
    }
    for f in files {
        println!("wrote {}", f.display());
    }
    Ok(())
}
