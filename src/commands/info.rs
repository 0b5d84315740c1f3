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
    let paper = (model.arch() == models::Arch::ResNet).then(|| paper_resnet_sides(&shapes));
    match &paper {
        None => println!("  {:>3}  {:<16}  shape", "l", "module"),
        Some(_) => println!(
            "  {:>3}  {:<16}  {:<18}  paper's ResNet-50",
            "l", "module", "shape"
        ),
    }
    println!("  {:>3}  {:<16}  {:?}", 0, "input", [3, size, size]);
    for (k, (info, shape)) in model.layers().iter().zip(&shapes).enumerate() {
        match &paper {
            None => println!("  {:>3}  {:<16}  {:?}", info.index, info.name, shape),
            Some(p) => println!(
                "  {:>3}  {:<16}  {:<18}  {}x{}{}",
                info.index,
                info.name,
                format!("{shape:?}"),
                p[k],
                p[k],
                match (
                    downsamples(&shapes, k),
                    k + 1 < shapes.len() && downsamples(&shapes, k + 1)
                ) {
                    (true, _) => "  <- ours down-samples here",
                    (_, true) => "  <- the paper's down-samples here",
                    _ => "",
                }
            ),
        }
    }
    if paper.is_some() {
        for line in resnet_note(&shapes) {
            println!("{line}");
        }
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

/// Whether layer k (0-based, layer l = k + 1) of a ResNet halves the resolution inside a
/// bottleneck (the stem's max-pool between l = 1 and l = 2 does not count).
fn downsamples(shapes: &[Vec<usize>], k: usize) -> bool {
    k >= 2 && shapes[k].get(1) < shapes[k - 1].get(1)
}

/// Output side of each layer in the paper's ResNet-50, which down-samples in the last
/// block of a stage: a block just before one of our down-sampling blocks already has the
/// smaller output.
fn paper_resnet_sides(shapes: &[Vec<usize>]) -> Vec<usize> {
    (0..shapes.len())
        .map(|k| {
            let next = k + 1 < shapes.len() && downsamples(shapes, k + 1);
            let k = if next { k + 1 } else { k };
            shapes[k].get(1).copied().unwrap_or(0)
        })
        .collect()
}

/// How to read the paper's ResNet-50 layer indices on this network.
fn resnet_note(shapes: &[Vec<usize>]) -> Vec<String> {
    let ours: Vec<usize> = (0..shapes.len())
        .filter(|&k| downsamples(shapes, k))
        .map(|k| k + 1)
        .collect();
    if ours.is_empty() {
        return Vec::new();
    }
    let list = |v: &[usize]| {
        v.iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let paper: Vec<usize> = ours.iter().map(|l| l - 1).collect();
    let before_ours = paper.clone();
    let before_paper: Vec<usize> = ours.iter().map(|l| l - 2).collect();
    vec![
        String::new(),
        "Layer indices and the paper's ResNet-50: l names the same block in both (same stage,"
            .into(),
        "same position). torchvision's v1.5, loaded here, down-samples in the first block of a"
            .into(),
        format!(
            "stage (l = {}); the paper's network in the last block of the stage before (l = {}).",
            list(&ours),
            list(&paper)
        ),
        format!(
            "The last layer before down-sampling (the paper's \"minima just before down-sampling\",\nits l = {}) is l = {} here.",
            list(&before_paper),
            list(&before_ours)
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ResNet-50 v1.5 output sides at 224: stem 112, stages of 3, 4, 6, 3 blocks.
    fn v15() -> Vec<Vec<usize>> {
        let mut s = vec![vec![64, 112, 112]];
        for (blocks, side) in [(3, 56), (4, 28), (6, 14), (3, 7)] {
            for _ in 0..blocks {
                s.push(vec![256, side, side]);
            }
        }
        s
    }

    #[test]
    fn paper_sides_follow_the_supplement() {
        // Supplementary F.2: 112 for layer 1; 56 for 2–3; 28 for 4–7; 14 for 8–13; 7 above.
        let sides = paper_resnet_sides(&v15());
        let want: Vec<usize> = (1..=17)
            .map(|l| match l {
                1 => 112,
                2..=3 => 56,
                4..=7 => 28,
                8..=13 => 14,
                _ => 7,
            })
            .collect();
        assert_eq!(sides, want);
        let note = resnet_note(&v15()).join("\n");
        assert!(
            note.contains("(l = 5, 9, 15)") && note.contains("(l = 4, 8, 14)"),
            "{note}"
        );
        assert!(
            note.contains("its l = 3, 7, 13) is l = 4, 8, 14 here"),
            "{note}"
        );
    }
}
