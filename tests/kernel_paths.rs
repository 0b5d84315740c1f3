//! The kernel path is chosen by `ZEROBIAS_KERNELS` (read once per process, so each case
//! runs the binary): `info` names it, the portable path gives the CPU kernels' logits, and
//! a value the switch does not take stops the program with a message naming it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{Device, Tensor};

/// Runs the binary with `ZEROBIAS_KERNELS` set to `kernels` (removed for `None`) and the
/// other kernel switches at their defaults.
fn run(kernels: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_zerobias"));
    cmd.args(args).env("HF_HUB_OFFLINE", "1");
    for var in [
        "ZEROBIAS_CONV",
        "ZEROBIAS_DIRECT_CONV",
        "ZEROBIAS_WINOGRAD",
        "ZEROBIAS_GEMM",
    ] {
        cmd.env_remove(var);
    }
    match kernels {
        Some(v) => cmd.env("ZEROBIAS_KERNELS", v),
        None => cmd.env_remove("ZEROBIAS_KERNELS"),
    };
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    out
}

fn tiny_model(dir: &Path) -> PathBuf {
    let t = zerobias::models::init::vgg16(2, 8, 3, 1, &Device::Cpu).unwrap();
    let named: Vec<(String, Tensor)> = t.into_iter().collect();
    let p = dir.join("tiny.safetensors");
    zerobias::checkpoint::save(&p, &named, Default::default()).unwrap();
    p
}

fn info(kernels: Option<&str>, model: &Path) -> String {
    let out = run(kernels, &["info", "--model", model.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn info_names_the_kernels_that_run() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let portable = info(Some("portable"), &model);
    assert!(
        portable.lines().any(|l| l == "kernels: portable"),
        "{portable}"
    );
    for kernels in [None, Some("cpu")] {
        let cpu = info(kernels, &model);
        assert!(
            cpu.lines().any(|l| l.starts_with("kernels: cpu (conv ")),
            "{kernels:?}: {cpu}"
        );
    }
}

#[test]
fn an_unknown_kernel_path_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let out = run(Some("gpu"), &["info", "--model", model.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.trim().starts_with("error:") && err.contains("ZEROBIAS_KERNELS=gpu"),
        "{err}"
    );
}

#[test]
fn portable_logits_match_the_cpu_kernels() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let x = dir.path().join("x.safetensors");
    let input = Tensor::randn(0f32, 1f32, (2, 3, 32, 32), &Device::Cpu).unwrap();
    zerobias::checkpoint::save(&x, &[("input".into(), input)], Default::default()).unwrap();
    let logits = |kernels: Option<&str>, name: &str| -> Vec<f32> {
        let out = dir.path().join(name);
        let args = [
            "predict",
            "--model",
            model.to_str().unwrap(),
            "--input",
            x.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        let o = run(kernels, &args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let (t, _) = zerobias::checkpoint::read_tensors(&out, &Device::Cpu).unwrap();
        t["logits"].flatten_all().unwrap().to_vec1().unwrap()
    };
    let cpu = logits(None, "cpu.safetensors");
    let portable = logits(Some("portable"), "portable.safetensors");
    assert_eq!(cpu.len(), portable.len());
    let scale = cpu.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    for (a, b) in cpu.iter().zip(&portable) {
        assert!((a - b).abs() <= 1e-4 * scale, "{cpu:?} vs {portable:?}");
    }
}
