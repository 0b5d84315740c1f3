//! `zerobias info`: architecture, layer table, bias handles and parameter count of a model.

use anyhow::{Context, Result};
use candle_core::Device;

use zerobias::models::{self, Classifier};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    model: String,
    #[arg(long)]
    revision: Option<String>,
    /// Input size used for the layer output shapes.
    #[arg(long, default_value_t = 224)]
    size: usize,
}

pub fn run(args: Args, dev: &Device) -> Result<()> {
    let Args {
        model,
        revision,
        size,
    } = args;
    let model = models::open(&model, revision.as_deref(), dev)?;
    print_info(model.as_ref(), size)
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
    // Exactly `kernels: portable` on the device-generic path (scripts look for it).
    println!("kernels: {}", models::kernels_in_use(&model.device()));
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
