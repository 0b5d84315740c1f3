//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// `../shared/fixtures` next to the repository, when present.
pub fn fixtures() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures");
    if dir.join("inputs.safetensors").exists() {
        Some(dir)
    } else {
        eprintln!("SKIPPED: PyTorch parity fixtures not found at {} (they are not part of the repository)", dir.display());
        None
    }
}

/// max |a-b| / max |b|, the relative error used by the parity checks.
pub fn rel_max(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// ‖a−b‖₂ / ‖b‖₂.
pub fn rel_l2(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num.sqrt() / den.sqrt().max(1e-30)) as f32
}

/// A two-stage recipe (train, then decay) on a width-2 VGG-16 that runs in about a second.
pub const TINY: &str = r#"
name = "tiny"
seed = 3
[model]
source = "new"
arch = "vgg16"
width = 2
hidden = 8
[data]
kind = "synthetic"
size = 32
classes = 3
train_len = 48
val_len = 16
prefetch = 2
[[stage]]
kind = "train"
steps = 6
lr = 1e-3
batch_size = 8
eval_every = 3
checkpoint_every = 2
[[stage]]
kind = "decay"
schedule = "linear"
rescales = 2
rescale_every = 2
zero_steps = 3
temperature = 100.0
lr = 1e-4
batch_size = 8
eval_every = 3
checkpoint_every = 2
"#;

/// Model weights of a checkpoint (Adam's moments left out), sorted by name.
pub fn weights(path: &Path) -> Vec<(String, Vec<f32>)> {
    let (t, _) = zerobias::checkpoint::read_tensors(path, &candle_core::Device::Cpu).unwrap();
    let mut v: Vec<(String, Vec<f32>)> = t
        .into_iter()
        .filter(|(k, _)| !k.starts_with("optim."))
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1().unwrap()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// The device the parity tests run on: `ZEROBIAS_TEST_DEVICE` (cpu, cuda, cuda:N, metal),
/// cpu when unset. scripts/gpu-check.sh sets it to cuda on a GPU build.
pub fn device() -> candle_core::Device {
    let spec = std::env::var("ZEROBIAS_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
    zerobias::device::parse_device(&spec)
        .unwrap_or_else(|e| panic!("ZEROBIAS_TEST_DEVICE={spec}: {e}"))
}

/// A width-2 VGG-16 with 3 classes, saved as `dir/name`; its biases drawn with `bias_scale`
/// (0 = a zero-bias net).
pub fn save_tiny_vgg(dir: &Path, name: &str, bias_scale: f32) -> PathBuf {
    use candle_core::{Device, Tensor};
    let mut t = zerobias::models::init::vgg16(2, 8, 3, 1, &Device::Cpu).unwrap();
    let mut rng = zerobias::data::Rng::new(2);
    for (k, v) in t.iter_mut() {
        if k.ends_with(".bias") {
            let n = v.elem_count();
            let vals: Vec<f32> = (0..n).map(|_| rng.normal() * bias_scale).collect();
            *v = Tensor::from_vec(vals, n, &Device::Cpu).unwrap();
        }
    }
    let mut named: Vec<(String, Tensor)> = t.into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let p = dir.join(name);
    zerobias::checkpoint::save(&p, &named, Default::default()).unwrap();
    p
}

/// Run options for a test run in `dir`: quiet, `--set` overrides, optional stop.
pub fn run_opts(
    dir: &Path,
    resume: bool,
    stop_after: Option<usize>,
    overrides: &[&str],
) -> zerobias::train::RunOptions {
    zerobias::train::RunOptions {
        run_dir: Some(dir.to_path_buf()),
        resume,
        overrides: overrides.iter().map(|s| s.to_string()).collect(),
        quiet: true,
        stop_after,
        force: false,
    }
}

/// How many events of TensorBoard tag `tag` the event files in `run_dir/tb` hold (the tag
/// name appears once per scalar event).
pub fn tensorboard_events(run_dir: &Path, tag: &str) -> usize {
    std::fs::read_dir(run_dir.join("tb"))
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .map(|bytes| {
            bytes
                .windows(tag.len())
                .filter(|w| *w == tag.as_bytes())
                .count()
        })
        .sum()
}
