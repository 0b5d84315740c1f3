//! Throughput benchmark of the three workloads that dominate run time: plain inference,
//! attribution (one recorded forward + backward, every method) and a training step
//! (forward + backward over all parameters). Models are full-size VGG-16 / ResNet-50 with
//! random weights, so no download is needed and the cost equals that of real weights.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use crate::attribution::{all_methods, attribute};
use crate::error::{Error, Result};
use crate::models::{layers::cross_entropy, Classifier, Ctx};
use crate::taps::Target;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Inference without a graph.
    Forward,
    /// `attribute` with every method and the predicted class.
    Attribution,
    /// Forward with tracked parameters + backward of the cross-entropy.
    TrainStep,
}

impl Phase {
    pub const ALL: [Phase; 3] = [Phase::Forward, Phase::Attribution, Phase::TrainStep];

    pub fn name(&self) -> &'static str {
        match self {
            Phase::Forward => "forward",
            Phase::Attribution => "attribution",
            Phase::TrainStep => "train_step",
        }
    }

    pub fn parse(s: &str) -> Result<Phase> {
        Phase::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                Error::input(format!(
                    "unknown phase '{s}': expected forward, attribution or train_step"
                ))
            })
    }
}

/// Timings of one (arch, size, batch, phase) over `repeats` runs.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Measurement {
    pub arch: String,
    pub size: usize,
    pub batch: usize,
    pub phase: Phase,
    /// Convolution kernel in use: "zerobias" (im2col + gemm custom op) or "candle".
    pub conv: &'static str,
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
    run_phases(arch, size, batches, &Phase::ALL, repeats, json)
}

/// As [`run`], for the given phases only. Prints one line per measurement as it completes
/// (JSON objects when `json`, else a readable row).
pub fn run_phases(
    arch: &str,
    size: usize,
    batches: &[usize],
    phases: &[Phase],
    repeats: usize,
    json: bool,
) -> Result<Vec<Measurement>> {
    if repeats == 0 || batches.contains(&0) || size == 0 {
        return Err(Error::input(
            "repeats, batch sizes and the image size must be positive",
        ));
    }
    let device = Device::Cpu;
    let tensors = random_weights(arch, &device)?;
    let model = crate::models::build(&tensors, "bench")?;
    let mut out = Vec::new();
    for &batch in batches {
        let x = Tensor::randn(0f32, 1f32, (batch, 3, size, size), &device)?;
        for &phase in phases {
            let mut times = Vec::with_capacity(repeats);
            for _ in 0..repeats {
                let t0 = Instant::now();
                run_once(model.as_ref(), &x, phase)?;
                times.push(t0.elapsed().as_secs_f64());
            }
            times.sort_by(f64::total_cmp);
            let m = Measurement {
                arch: arch.to_string(),
                size,
                batch,
                phase,
                conv: crate::models::conv::backend(),
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
            };
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&m).map_err(|e| Error::input(e.to_string()))?
                );
            } else {
                println!(
                    "{:<9} {:>4} b={:<3} {:<12} conv={:<8} ew={} {:>9.1} ms/img {:>8.2} img/s  (min {:.3}s med {:.3}s max {:.3}s)",
                    m.arch,
                    m.size,
                    m.batch,
                    m.phase.name(),
                    m.conv,
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
    let mut w = Weights {
        map: HashMap::new(),
        device: device.clone(),
    };
    match arch {
        "vgg16" => {
            let cfg = [
                64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0,
            ];
            let (mut i, mut in_c) = (0, 3);
            for c in cfg {
                if c == 0 {
                    // max-pool: one index in torchvision's `features`.
                    i += 1;
                    continue;
                }
                w.conv(&format!("features.{i}"), c, in_c, 3, true)?;
                in_c = c;
                i += 2; // conv + ReLU
            }
            w.linear("classifier.0", 4096, 512 * 7 * 7)?;
            w.linear("classifier.3", 4096, 4096)?;
            w.linear("classifier.6", 1000, 4096)?;
        }
        "resnet50" => {
            w.conv("conv1", 64, 3, 7, false)?;
            w.bn("bn1", 64)?;
            let mut in_c = 64;
            for (stage, (depth, width)) in [(3, 64), (4, 128), (6, 256), (3, 512)]
                .into_iter()
                .enumerate()
            {
                let out_c = width * 4;
                for i in 0..depth {
                    let p = format!("layer{}.{i}", stage + 1);
                    w.conv(&format!("{p}.conv1"), width, in_c, 1, false)?;
                    w.bn(&format!("{p}.bn1"), width)?;
                    w.conv(&format!("{p}.conv2"), width, width, 3, false)?;
                    w.bn(&format!("{p}.bn2"), width)?;
                    w.conv(&format!("{p}.conv3"), out_c, width, 1, false)?;
                    w.bn(&format!("{p}.bn3"), out_c)?;
                    if i == 0 {
                        w.conv(&format!("{p}.downsample.0"), out_c, in_c, 1, false)?;
                        w.bn(&format!("{p}.downsample.1"), out_c)?;
                    }
                    in_c = out_c;
                }
            }
            w.linear("fc", 1000, 2048)?;
        }
        other => return Err(Error::UnknownArch(other.to_string())),
    }
    Ok(w.map)
}

struct Weights {
    map: HashMap<String, Tensor>,
    device: Device,
}

impl Weights {
    fn randn(&mut self, key: String, shape: &[usize], std: f64) -> Result<()> {
        let t = Tensor::randn(0f32, std as f32, shape, &self.device)?;
        self.map.insert(key, t);
        Ok(())
    }
    fn fill(&mut self, key: String, n: usize, v: f64) -> Result<()> {
        let t = (Tensor::ones(n, DType::F32, &self.device)? * v)?;
        self.map.insert(key, t);
        Ok(())
    }
    /// He-scaled weights keep activations in range through 16-50 random layers.
    fn conv(&mut self, name: &str, out: usize, inp: usize, k: usize, bias: bool) -> Result<()> {
        let std = (2.0 / (inp * k * k) as f64).sqrt();
        self.randn(format!("{name}.weight"), &[out, inp, k, k], std)?;
        if bias {
            self.randn(format!("{name}.bias"), &[out], 0.01)?;
        }
        Ok(())
    }
    fn linear(&mut self, name: &str, out: usize, inp: usize) -> Result<()> {
        self.randn(
            format!("{name}.weight"),
            &[out, inp],
            (2.0 / inp as f64).sqrt(),
        )?;
        self.randn(format!("{name}.bias"), &[out], 0.01)
    }
    fn bn(&mut self, name: &str, c: usize) -> Result<()> {
        self.fill(format!("{name}.weight"), c, 1.0)?;
        self.randn(format!("{name}.bias"), &[c], 0.01)?;
        self.randn(format!("{name}.running_mean"), &[c], 0.01)?;
        self.fill(format!("{name}.running_var"), c, 1.0)
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
        assert_eq!(m.len(), 6);
        assert!(m.iter().all(|m| m.median_s > 0.0 && m.images_per_s() > 0.0));
        assert!(run("resnet50", 32, &[0], 1, false).is_err());
    }
}
