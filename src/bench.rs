//! Throughput benchmark of the three workloads that dominate run time: plain inference,
//! attribution (one recorded forward + backward, every method) and a training step
//! (forward + backward over all parameters). Models are full-size VGG-16 / ResNet-50 with
//! random weights, so no download is needed and the cost equals that of real weights.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{Device, Tensor};

use crate::attribution::{all_methods, attribute};
use crate::error::{Error, Result};
use crate::models::{Classifier, Ctx};
use crate::nn::cross_entropy;
use crate::taps::Target;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Inference without a graph.
    Forward,
    /// `attribute` with every method and the predicted class.
    Attribution,
    /// Flip-metric forwards: one image perturbed at `batch` grid steps, no graph.
    Evaluation,
    /// Forward + backward of the target logits to the input only (frozen weights, no
    /// taps): the floor that attribution's overhead is measured against.
    ForwardBackward,
    /// Forward with tracked parameters + backward of the cross-entropy.
    TrainStep,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Forward,
        Phase::ForwardBackward,
        Phase::Attribution,
        Phase::Evaluation,
        Phase::TrainStep,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Phase::Forward => "forward",
            Phase::Attribution => "attribution",
            Phase::Evaluation => "evaluation",
            Phase::ForwardBackward => "forward_backward",
            Phase::TrainStep => "train_step",
        }
    }

    pub fn parse(s: &str) -> Result<Phase> {
        Phase::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                Error::input(format!(
                    "unknown phase '{s}': expected forward, forward_backward, attribution, evaluation or train_step"
                ))
            })
    }
}

/// Timings of one (arch, size, batch, phase) over `repeats` runs.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Measurement {
    pub arch: String,
    /// "cpu", "cuda:N" or "metal:N".
    pub device: String,
    pub size: usize,
    pub batch: usize,
    pub phase: Phase,
    /// Convolution kernel in use: "zerobias" (im2col + gemm custom op) or "candle".
    pub conv: &'static str,
    /// Matrix kernel of the zerobias convolutions: "avx512" (ours) or "gemm-crate".
    pub gemm: &'static str,
    /// rayon threads (convolutions, matmuls).
    pub threads: usize,
    /// Threads candle uses for element-wise ops (`CANDLE_NUM_THREADS`, else `threads`);
    /// see [`crate::init_cpu_runtime`].
    pub elementwise_threads: usize,
    pub repeats: usize,
    /// Seconds per run (one batch).
    pub min_s: f64,
    pub median_s: f64,
    pub max_s: f64,
    /// Images per second at the median run time.
    pub images_per_second: f64,
    /// ... at the fastest and slowest run.
    pub images_per_second_max: f64,
    pub images_per_second_min: f64,
}

impl Measurement {
    /// Images per second at the median run time.
    pub fn images_per_s(&self) -> f64 {
        self.batch as f64 / self.median_s
    }
    /// Milliseconds per image at the median run time.
    pub fn ms_per_image(&self) -> f64 {
        1e3 * self.median_s / self.batch as f64
    }
}

/// Every phase for `arch` ("vgg16" or "resnet50") at `size`×`size`, for each batch size.
pub fn run(
    arch: &str,
    size: usize,
    batches: &[usize],
    repeats: usize,
    json: bool,
) -> Result<Vec<Measurement>> {
    run_phases(
        arch,
        size,
        batches,
        &Phase::ALL,
        repeats,
        json,
        &Device::Cpu,
    )
}

/// As [`run`], for the given phases only, on `device`. Prints one line per measurement as
/// it completes (JSON objects when `json`, else a readable row).
pub fn run_phases(
    arch: &str,
    size: usize,
    batches: &[usize],
    phases: &[Phase],
    repeats: usize,
    json: bool,
    device: &Device,
) -> Result<Vec<Measurement>> {
    if repeats == 0 || batches.contains(&0) || size == 0 {
        return Err(Error::input(
            "repeats, batch sizes and the image size must be positive",
        ));
    }
    let tensors = random_weights(arch, device)?;
    let model = crate::models::build(&tensors, "bench")?;
    let mut out = Vec::new();
    for &batch in batches {
        let x = Tensor::randn(0f32, 1f32, (batch, 3, size, size), device)?;
        for &phase in phases {
            // One untimed run first: the first touches fresh memory and fills caches.
            run_once(model.as_ref(), &x, phase)?;
            device.synchronize()?;
            let mut times = Vec::with_capacity(repeats);
            for _ in 0..repeats {
                let t0 = Instant::now();
                run_once(model.as_ref(), &x, phase)?;
                // GPU kernels run asynchronously: time them to completion.
                device.synchronize()?;
                times.push(t0.elapsed().as_secs_f64());
            }
            times.sort_by(f64::total_cmp);
            let m = Measurement {
                arch: arch.to_string(),
                device: crate::device::name(device),
                size,
                batch,
                phase,
                conv: zerobias_kernels::conv::backend(),
                gemm: zerobias_kernels::sgemm::backend(),
                threads: rayon::current_num_threads(),
                elementwise_threads: std::env::var("CANDLE_NUM_THREADS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .filter(|&n| n > 0)
                    .unwrap_or_else(rayon::current_num_threads),
                repeats,
                min_s: times[0],
                median_s: median(&times),
                max_s: times[times.len() - 1],
                images_per_second: batch as f64 / median(&times),
                images_per_second_max: batch as f64 / times[0],
                images_per_second_min: batch as f64 / times[times.len() - 1],
            };
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&m).map_err(|e| Error::input(e.to_string()))?
                );
            } else {
                eprintln!(
                    "{:<9} {:<6} {:>4} b={:<3} {:<12} conv={:<8} gemm={} ew={} {:>9.1} ms/img {:>8.2} img/s  (min {:.3}s med {:.3}s max {:.3}s)",
                    m.arch,
                    m.device,
                    m.size,
                    m.batch,
                    m.phase.name(),
                    m.conv,
                    m.gemm,
                    m.elementwise_threads,
                    m.ms_per_image(),
                    m.images_per_s(),
                    m.min_s,
                    m.median_s,
                    m.max_s
                );
            }
            out.push(m);
        }
    }
    Ok(out)
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        0.5 * (sorted[n / 2 - 1] + sorted[n / 2])
    }
}

fn run_once(model: &dyn Classifier, x: &Tensor, phase: Phase) -> Result<()> {
    match phase {
        Phase::Forward => {
            model.forward(x)?;
        }
        Phase::Attribution => {
            let methods = all_methods(model);
            attribute(model, x, &Target::Predicted, &methods)?;
        }
        Phase::Evaluation => {
            // The flip scan of one image with as many grid steps as the batch holds.
            let n = x.dim(0)?;
            let (_, _, h, w) = x.dims4()?;
            let image: Vec<f32> = x.get(0)?.flatten_all()?.to_vec1()?;
            let saliency: Vec<f32> = (0..h * w).map(|i| ((i * 7919) % 1009) as f32).collect();
            let eval = crate::eval::FlipEvaluator::new(model, n, n)?;
            eval.predictions(&image, h, w, &saliency, crate::eval::Order::Plus)?;
        }
        Phase::ForwardBackward => {
            let input = candle_core::Var::from_tensor(x)?;
            let logits = model.forward_ctx(input.as_tensor(), &mut Ctx::input_gradient())?;
            let target = logits.detach().argmax_keepdim(1)?;
            let grads = logits.gather(&target, 1)?.sum_all()?.backward()?;
            if grads.get(input.as_tensor()).is_none() {
                return Err(Error::Training("the input received no gradient".into()));
            }
        }
        Phase::TrainStep => {
            let logits = model.forward_ctx(x, &mut Ctx::training(false))?;
            let n = logits.dim(0)?;
            let classes = logits.dim(1)? as u32;
            let labels: Vec<u32> = (0..n as u32).map(|i| i % classes).collect();
            let labels = Tensor::from_vec(labels, n, x.device())?;
            let grads = cross_entropy(&logits, &labels)?.backward()?;
            // The optimizer update is cheap next to the backward; only check it has input.
            if model
                .params()
                .iter()
                .all(|p| grads.get(p.var.as_tensor()).is_none())
            {
                return Err(Error::Training("no parameter received a gradient".into()));
            }
        }
    }
    Ok(())
}

/// Random full-size weights in torchvision naming: "vgg16" or "resnet50", 1000 classes.
pub fn random_weights(arch: &str, device: &Device) -> Result<HashMap<String, Tensor>> {
    match arch {
        "vgg16" => crate::models::init::vgg16(64, 4096, 1000, 0, device),
        "resnet50" => crate::models::init::resnet50(64, 1000, 0, device),
        other => Err(Error::input(format!(
            "unknown architecture '{other}': expected vgg16 or resnet50"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_weights_build_both_models() {
        for (arch, name) in [("vgg16", "vgg16"), ("resnet50", "resnet50")] {
            let t = random_weights(arch, &Device::Cpu).unwrap();
            let m = crate::models::build(&t, "bench").unwrap();
            assert_eq!(m.name(), name);
            assert_eq!(m.num_classes(), 1000);
        }
        assert!(random_weights("alexnet", &Device::Cpu).is_err());
    }

    #[test]
    fn runs_every_phase_on_a_small_input() {
        let m = run("resnet50", 32, &[1, 2], 1, true).unwrap();
        assert_eq!(m.len(), 2 * Phase::ALL.len());
        assert!(m.iter().all(|m| m.median_s > 0.0 && m.images_per_s() > 0.0));
        assert!(m.iter().all(|m| m.device == "cpu"));
        assert!(run("resnet50", 32, &[0], 1, false).is_err());
    }
}
