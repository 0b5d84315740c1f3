//! Bad input gives a one-line error naming the thing, a non-zero exit code, and no panic.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_zerobias"))
}

/// Run and return (exit code, stderr); asserts no panic.
fn run(args: &[&str]) -> (i32, String) {
    let out = bin()
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "panic for {args:?}: {err}");
    (out.status.code().unwrap_or(-1), err)
}

fn tiny_model(dir: &Path) -> PathBuf {
    let t = zerobias::models::init::vgg16(2, 8, 3, 1, &Device::Cpu).unwrap();
    let mut named: Vec<(String, Tensor)> = t.into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let p = dir.join("tiny.safetensors");
    zerobias::checkpoint::save(&p, &named, Default::default()).unwrap();
    p
}

fn tiny_input(dir: &Path) -> PathBuf {
    let p = dir.join("x.safetensors");
    let x = Tensor::zeros((1, 3, 32, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
    zerobias::checkpoint::save(&p, &[("input".into(), x)], Default::default()).unwrap();
    p
}

fn expect_error(args: &[&str], needles: &[&str]) {
    let (code, err) = run(args);
    assert_ne!(code, 0, "{args:?} succeeded");
    let line = err.trim();
    assert!(line.starts_with("error:"), "{args:?}: {err}");
    for n in needles {
        assert!(line.contains(n), "{args:?}: '{n}' not in: {err}");
    }
}

#[test]
fn predict_and_info_work_on_a_tiny_model() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let input = tiny_input(dir.path());
    let out = dir.path().join("logits.safetensors");
    let (code, err) = run(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--topk",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let (t, _) = zerobias::checkpoint::read_tensors(&out, &Device::Cpu).unwrap();
    assert_eq!(t["logits"].dims(), &[1, 3]);
    let o = bin()
        .args(["info", "--model", model.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    assert!(
        text.contains("vgg16") && text.contains("features.29") && text.contains("conv bias"),
        "{text}"
    );
}

#[test]
fn missing_model_file() {
    expect_error(
        &["info", "--model", "/nonexistent/model.safetensors"],
        &["/nonexistent/model.safetensors"],
    );
}

#[test]
fn truncated_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let bytes = std::fs::read(&model).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    expect_error(
        &["info", "--model", cut.to_str().unwrap()],
        &["cut.safetensors", "safetensors"],
    );
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"not a safetensors file at all").unwrap();
    expect_error(
        &["info", "--model", junk.to_str().unwrap()],
        &["junk.safetensors"],
    );
}

fn variant(dir: &Path, name: &str, f: impl Fn(&mut Vec<(String, Tensor)>)) -> PathBuf {
    let t = zerobias::models::init::vgg16(2, 8, 3, 1, &Device::Cpu).unwrap();
    let mut named: Vec<(String, Tensor)> = t.into_iter().collect();
    f(&mut named);
    let p = dir.join(name);
    zerobias::checkpoint::save(&p, &named, Default::default()).unwrap();
    p
}

#[test]
fn missing_unexpected_and_misshapen_keys() {
    let dir = tempfile::tempdir().unwrap();
    let missing = variant(dir.path(), "missing.safetensors", |v| {
        v.retain(|(k, _)| k != "features.5.weight")
    });
    expect_error(
        &["info", "--model", missing.to_str().unwrap()],
        &["features"],
    );
    let extra = variant(dir.path(), "extra.safetensors", |v| {
        v.push((
            "head.extra.weight".into(),
            Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap(),
        ))
    });
    expect_error(
        &["info", "--model", extra.to_str().unwrap()],
        &["unexpected", "head.extra.weight"],
    );
    let shape = variant(dir.path(), "shape.safetensors", |v| {
        for (k, t) in v.iter_mut() {
            if k == "classifier.3.weight" {
                *t = Tensor::zeros((8, 5), candle_core::DType::F32, &Device::Cpu).unwrap();
            }
        }
    });
    expect_error(
        &["info", "--model", shape.to_str().unwrap()],
        &["classifier.3.weight", "expected"],
    );
}

#[test]
fn unknown_architecture() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bert.safetensors");
    let t = Tensor::zeros((4, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
    zerobias::checkpoint::save(
        &p,
        &[("encoder.layer.0.weight".into(), t)],
        Default::default(),
    )
    .unwrap();
    expect_error(
        &["info", "--model", p.to_str().unwrap()],
        &["unknown architecture", "encoder.layer.0.weight"],
    );
}

#[test]
fn non_image_input() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let txt = dir.path().join("notes.jpg");
    std::fs::write(&txt, b"hello, I am not a JPEG").unwrap();
    expect_error(
        &[
            "predict",
            "--model",
            model.to_str().unwrap(),
            "--input",
            txt.to_str().unwrap(),
        ],
        &["notes.jpg"],
    );
}

#[test]
fn hub_id_not_in_cache_offline() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["info", "--model", "nobody/does-not-exist"])
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", dir.path())
        .env_remove("HF_HUB_CACHE")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("nobody/does-not-exist") && err.contains("offline"),
        "{err}"
    );
}

#[test]
fn attribute_bad_target_and_mixed_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let input = tiny_input(dir.path());
    expect_error(
        &[
            "attribute",
            "--model",
            model.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--target",
            "7",
        ],
        &["target class 7", "3 classes"],
    );
    expect_error(
        &[
            "attribute",
            "--model",
            model.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--target",
            "cat",
        ],
        &["--target cat"],
    );
}

#[test]
fn attribute_writes_the_contract_and_figures() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let input = tiny_input(dir.path());
    let out = dir.path().join("a.safetensors");
    let png = dir.path().join("png");
    let (code, err) = run(&[
        "attribute",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--png",
        png.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let (t, meta) = zerobias::checkpoint::read_tensors(&out, &Device::Cpu).unwrap();
    for k in [
        "logits",
        "target",
        "completeness_residual",
        "act.0",
        "act.13",
        "bias.features.0",
        "bias.classifier.6",
        "grad",
        "gradcam",
        "fullgrad",
        "agg.1",
        "agg.12",
        "agg.13",
    ] {
        assert!(t.contains_key(k), "{k} missing");
    }
    assert_eq!(t["target"].dtype(), candle_core::DType::I64);
    assert!(meta["layers"].contains("features.1"));
    assert!(
        png.join("image-0000-layers.png").exists() && png.join("image-0000-saliency.png").exists()
    );
}

#[test]
fn evaluate_rejects_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let input = tiny_input(dir.path());
    let out = dir.path().join("ev");
    let m = model.to_str().unwrap();
    let i = input.to_str().unwrap();
    let o = out.to_str().unwrap();
    expect_error(
        &[
            "evaluate",
            "--model",
            m,
            "--input",
            i,
            "--methods",
            "act.99",
            "--out",
            o,
        ],
        &["unknown method 'act.99'", "act.0"],
    );
    expect_error(
        &[
            "evaluate",
            "--model",
            m,
            "--input",
            i,
            "--methods",
            "grad",
            "--steps",
            "0",
            "--out",
            o,
        ],
        &["--steps 0"],
    );
    expect_error(
        &[
            "evaluate",
            "--model",
            m,
            "--input",
            i,
            "--methods",
            "grad",
            "--out",
            o,
        ],
        &["at least 2 images"],
    );
    let maps = dir.path().join("maps.safetensors");
    let bad = Tensor::zeros((1, 16, 16), candle_core::DType::F32, &Device::Cpu).unwrap();
    zerobias::checkpoint::save(&maps, &[("maps.mine".into(), bad)], Default::default()).unwrap();
    expect_error(
        &[
            "evaluate",
            "--model",
            m,
            "--input",
            i,
            "--maps",
            maps.to_str().unwrap(),
            "--noise-samples",
            "0",
            "--out",
            o,
        ],
        &["maps.mine", "[1, 32, 32]"],
    );
}

#[test]
fn device_and_precision_flags_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let m = model.to_str().unwrap();
    expect_error(
        &["--device", "gpu", "info", "--model", m],
        &[
            "device \"gpu\"",
            "expected cpu, cuda, cuda:N, metal or metal:N",
        ],
    );
    expect_error(
        &["--device", "cuda:x", "info", "--model", m],
        &["device \"cuda:x\"", "expected cuda:N with a device index"],
    );
    expect_error(
        &["--precision", "fp16", "info", "--model", m],
        &["precision \"fp16\"", "expected \"f32\" or \"tf32\""],
    );
    // TF32 on the CPU runs, with a warning that it does nothing there.
    let (code, err) = run(&["--precision", "tf32", "info", "--model", m]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning: precision = \"tf32\" has no effect on cpu"),
        "{err}"
    );
    // The decay takes --device as an override of the recipe's device.
    expect_error(
        &[
            "--device",
            "tpu",
            "decay",
            "recipes/quickstart.toml",
            "--run-dir",
            dir.path().join("run").to_str().unwrap(),
        ],
        &["device", "(from --set device=tpu)"],
    );
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_the_feature_says_how_to_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let rebuild = "rebuild with `cargo build --release --features cuda`";
    expect_error(
        &[
            "--device",
            "cuda:0",
            "info",
            "--model",
            model.to_str().unwrap(),
        ],
        &[
            "device \"cuda:0\"",
            "built without the `cuda` feature",
            rebuild,
        ],
    );
    let run_dir = dir.path().join("run");
    expect_error(
        &[
            "decay",
            "recipes/quickstart.toml",
            "--set",
            "device=cuda",
            "--run-dir",
            run_dir.to_str().unwrap(),
        ],
        &[
            "recipe device:",
            "built without the `cuda` feature",
            rebuild,
        ],
    );
    // Refused before anything is written.
    assert!(!run_dir.exists());
}
