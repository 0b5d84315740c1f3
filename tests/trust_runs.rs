//! Trust in runs and outputs: divergence stops a run with an honest summary, damaged
//! checkpoints are found, a user's files are never overwritten, and `--resume` keeps to
//! the run's recipe. Every fault asserts the exit status, the message and that the
//! user's files are byte for byte unchanged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};
mod common;

use common::{weights, TINY};
use zerobias::train::{run, RunOptions};

/// Runs the CLI; returns (exit code, stderr) and asserts that it did not panic.
fn cli(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_zerobias"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "panic for {args:?}: {err}");
    (out.status.code().unwrap_or(-1), err)
}

/// Fails unless the command exits non-zero with an `error:` line holding every needle.
fn expect_error(args: &[&str], needles: &[&str]) -> String {
    let (code, err) = cli(args);
    assert_ne!(code, 0, "{args:?} succeeded: {err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("{args:?}: no error line in {err}"));
    for n in needles {
        assert!(line.contains(n), "{args:?}: '{n}' not in: {line}");
    }
    err
}

/// Every file under `dir` (recursively) with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn opts(dir: &Path, stop_after: Option<usize>) -> RunOptions {
    RunOptions {
        run_dir: Some(dir.to_path_buf()),
        resume: false,
        overrides: Vec::new(),
        quiet: true,
        stop_after,
        force: false,
    }
}

/// Every value of every tensor of every checkpoint in a run directory is finite.
fn assert_checkpoints_finite(run_dir: &Path) {
    for e in std::fs::read_dir(run_dir).unwrap().flatten() {
        let p = e.path();
        if p.extension().and_then(|e| e.to_str()) != Some("safetensors") {
            continue;
        }
        let (t, _) = zerobias::checkpoint::read_tensors(&p, &Device::Cpu).unwrap();
        for (k, v) in t {
            let v: Vec<f32> = v.flatten_all().unwrap().to_vec1().unwrap();
            assert!(
                v.iter().all(|x| x.is_finite()),
                "{}: {k} is not finite",
                p.display()
            );
        }
    }
}

/// Flips one bit in the tensor data of a safetensors file (same size).
fn flip_a_data_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let at = 8 + header + (bytes.len() - 8 - header) / 2;
    bytes[at] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

fn summary(run_dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap()).unwrap()
}

fn recipe_in(dir: &Path) -> PathBuf {
    let p = dir.join("tiny.toml");
    std::fs::write(&p, TINY).unwrap();
    p
}

#[test]
fn a_diverging_run_stops_with_an_incomplete_summary_and_finite_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let user = tmp.path().join("user");
    std::fs::create_dir(&user).unwrap();
    let recipe = recipe_in(&user);
    let before = snapshot(&user);

    // lr 1e30: the weights become huge, the next loss is not finite.
    let r = tmp.path().join("r");
    let err = expect_error(
        &[
            "decay",
            s(&recipe),
            "--run-dir",
            s(&r),
            "--set",
            "stage.0.lr=1e30",
        ],
        &[
            "non-finite loss",
            "stage 0",
            "incomplete",
            "--resume --force",
        ],
    );
    assert!(err.contains("last good checkpoint"), "{err}");
    let sm = summary(&r);
    assert_eq!(sm["completed"], false, "{sm}");
    assert!(
        sm["reason"].as_str().unwrap().contains("non-finite loss"),
        "{sm}"
    );
    assert!(sm.get("student_top1").is_none() && sm.get("retention").is_none());
    assert!(!r.join("final.safetensors").exists());
    assert_checkpoints_finite(&r);

    // lr 1e39: the very first update overflows a weight although the gradient is finite.
    let r2 = tmp.path().join("r2");
    expect_error(
        &[
            "decay",
            s(&recipe),
            "--run-dir",
            s(&r2),
            "--set",
            "stage.0.lr=1e39",
        ],
        &["non-finite", "weight", "stage 0"],
    );
    let sm = summary(&r2);
    assert_eq!(sm["completed"], false);
    assert!(sm["reason"].as_str().unwrap().contains("weight"), "{sm}");
    assert!(sm["last_good_checkpoint"].is_null(), "{sm}");
    assert!(!r2.join("final.safetensors").exists());
    assert_checkpoints_finite(&r2);
    assert_eq!(snapshot(&user), before, "the user's files changed");
}

#[test]
fn skip_non_finite_skips_at_most_n_batches_and_records_them() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = recipe_in(tmp.path());
    let r = tmp.path().join("r");
    let err = expect_error(
        &[
            "decay",
            s(&recipe),
            "--run-dir",
            s(&r),
            "--set",
            "stage.0.lr=1e30",
            "--set",
            "stage.0.skip_non_finite=2",
        ],
        &["non-finite loss"],
    );
    assert_eq!(err.matches("batch skipped").count(), 2, "{err}");
    let sm = summary(&r);
    assert_eq!(sm["completed"], false);
    assert_eq!(sm["skipped_non_finite"], 2, "{sm}");
    assert_checkpoints_finite(&r);

    // A run without trouble records none.
    let ok = run(&recipe, &opts(&tmp.path().join("ok"), None)).unwrap();
    assert_eq!(ok.skipped_non_finite, 0);
    assert_eq!(summary(&tmp.path().join("ok"))["skipped_non_finite"], 0);
}

#[test]
fn a_damaged_checkpoint_is_found_on_resume_and_the_previous_one_taken() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = recipe_in(tmp.path());
    let whole = run(&recipe, &opts(&tmp.path().join("a"), None)).unwrap();

    let b = tmp.path().join("b");
    run(&recipe, &opts(&b, Some(9))).unwrap_err();
    let newest = b.join("step-000008.safetensors");
    let size = std::fs::metadata(&newest).unwrap().len();
    flip_a_data_byte(&newest);
    assert_eq!(std::fs::metadata(&newest).unwrap().len(), size);
    // An orphaned temporary file of a killed write goes away on resume.
    let orphan = b.join(".step-000010.safetensors.tmp-12345");
    std::fs::write(&orphan, b"half a checkpoint").unwrap();

    let (code, err) = cli(&["decay", s(&recipe), "--run-dir", s(&b), "--resume"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("step-000008.safetensors") && err.contains("damaged"),
        "{err}"
    );
    assert!(
        err.contains("falling back") && err.contains("step-000006.safetensors"),
        "{err}"
    );
    assert!(!orphan.exists(), "orphaned temporary file left: {err}");
    // Resumed from step 6, the run ends where the uninterrupted one did.
    assert_eq!(
        weights(&whole.final_checkpoint),
        weights(&b.join("final.safetensors"))
    );

    // With every checkpoint damaged there is nothing to resume from: stop, name them.
    let c = tmp.path().join("c");
    run(&recipe, &opts(&c, Some(3))).unwrap_err();
    flip_a_data_byte(&c.join("step-000002.safetensors"));
    let before = snapshot(&c);
    expect_error(
        &["decay", s(&recipe), "--run-dir", s(&c), "--resume"],
        &["no usable checkpoint", "step-000002.safetensors", "damaged"],
    );
    assert_eq!(snapshot(&c), before);
}

#[test]
fn a_damaged_checkpoint_given_as_model_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = recipe_in(tmp.path());
    let r = tmp.path().join("r");
    run(&recipe, &opts(&r, Some(2))).unwrap_err();
    let ck = r.join("step-000002.safetensors");
    // Intact, it loads.
    let (code, err) = cli(&["info", "--model", s(&ck)]);
    assert_eq!(code, 0, "{err}");
    flip_a_data_byte(&ck);
    let x = tmp.path().join("x.safetensors");
    let input = Tensor::zeros((1, 3, 32, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
    zerobias::checkpoint::save(&x, &[("input".into(), input)], Default::default()).unwrap();
    let before = snapshot(tmp.path());
    expect_error(
        &["info", "--model", s(&ck)],
        &["step-000002.safetensors", "damaged", "checksum"],
    );
    let out = tmp.path().join("logits.safetensors");
    expect_error(
        &[
            "predict",
            "--model",
            s(&ck),
            "--input",
            s(&x),
            "--out",
            s(&out),
        ],
        &["step-000002.safetensors", "damaged"],
    );
    assert_eq!(snapshot(tmp.path()), before);
}

#[test]
fn a_run_dir_holding_other_files_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = recipe_in(tmp.path());
    let dir = tmp.path().join("mine");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("summary.json"), b"my own notes").unwrap();
    std::fs::write(dir.join("final.safetensors"), b"my own weights").unwrap();
    let before = snapshot(tmp.path());
    for resume in [false, true] {
        let mut args = vec!["decay", s(&recipe), "--run-dir", s(&dir)];
        if resume {
            args.push("--resume");
        }
        expect_error(&args, &["mine", "not empty", "no zerobias run"]);
        assert_eq!(snapshot(tmp.path()), before, "resume = {resume}");
    }
    // A file is not a run directory.
    let file = tmp.path().join("tiny.toml");
    expect_error(
        &["decay", s(&recipe), "--run-dir", s(&file)],
        &["tiny.toml", "expected a run directory"],
    );
    // A model source where the run writes its checkpoints.
    let run_dir = tmp.path().join("fresh");
    run(&recipe, &opts(&run_dir, Some(2))).unwrap_err();
    let inside = run_dir.join("step-000002.safetensors");
    let set = format!("model.source=\"{}\"", s(&inside));
    let before = snapshot(tmp.path());
    expect_error(
        &[
            "decay",
            s(&recipe),
            "--run-dir",
            s(&run_dir),
            "--resume",
            "--force",
            "--set",
            &set,
        ],
        &["model.source", "step-000002.safetensors", "could overwrite"],
    );
    assert_eq!(snapshot(tmp.path()), before);
    // An empty directory is fine.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let s1 = run(&recipe, &opts(&empty, None)).unwrap();
    assert!(s1.completed);
}

#[test]
fn a_refused_recipe_leaves_no_run_dir_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = recipe_in(tmp.path());
    let r = tmp.path().join("r");
    for set in [
        "stage.0.lr=-1",
        "data.kind=\"imagefolder\"",
        "model.source=\"/nonexistent/teacher.safetensors\"",
    ] {
        let mut args = vec!["decay", s(&recipe), "--run-dir", s(&r), "--set", set];
        if set.starts_with("data") {
            args.extend([
                "--set",
                "data.train=/nonexistent/t",
                "--set",
                "data.val=/nonexistent/v",
            ]);
        }
        expect_error(&args, &[]);
        assert!(!r.exists(), "{set}: an empty run directory was left behind");
    }
}

#[test]
fn resume_with_a_changed_recipe_is_refused_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = recipe_in(tmp.path());
    let r = tmp.path().join("r");
    run(&recipe, &opts(&r, Some(4))).unwrap_err();
    let before = snapshot(tmp.path());
    expect_error(
        &[
            "decay",
            s(&recipe),
            "--run-dir",
            s(&r),
            "--resume",
            "--set",
            "stage.1.lr=0.01",
        ],
        &["recipe differs", "stage.1.lr", "0.0001", "0.01", "--force"],
    );
    // A changed file, not only --set.
    let changed = tmp.path().join("changed.toml");
    std::fs::write(&changed, TINY.replace("zero_steps = 3", "zero_steps = 5")).unwrap();
    let before_changed = std::fs::read(&changed).unwrap();
    expect_error(
        &["decay", s(&changed), "--run-dir", s(&r), "--resume"],
        &["stage.1.zero_steps", "3 (run)", "5 (now)"],
    );
    assert_eq!(std::fs::read(&changed).unwrap(), before_changed);
    assert_eq!(snapshot(tmp.path()).len(), before.len() + 1);
    for (p, b) in &before {
        assert_eq!(&std::fs::read(p).unwrap(), b, "{} changed", p.display());
    }
    // The same recipe resumes; --force continues with the new one and says so.
    let (code, err) = cli(&[
        "decay",
        s(&changed),
        "--run-dir",
        s(&r),
        "--resume",
        "--force",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("stage.1.zero_steps"), "{err}");
    assert_eq!(summary(&r)["steps"], 6 + 2 * 2 + 5);
}

#[test]
fn outputs_equal_to_inputs_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let t = zerobias::models::init::vgg16(2, 8, 3, 1, &Device::Cpu).unwrap();
    let mut named: Vec<(String, Tensor)> = t.into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let model = tmp.path().join("m.safetensors");
    zerobias::checkpoint::save(&model, &named, Default::default()).unwrap();
    let x = tmp.path().join("x.safetensors");
    let input = Tensor::zeros((2, 3, 32, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
    zerobias::checkpoint::save(&x, &[("input".into(), input)], Default::default()).unwrap();
    let imgs = tmp.path().join("imgs");
    std::fs::create_dir(&imgs).unwrap();
    for i in 0..2u8 {
        image::RgbImage::from_pixel(40, 40, image::Rgb([i * 90, 20, 200]))
            .save(imgs.join(format!("{i}.png")))
            .unwrap();
    }
    let before = snapshot(tmp.path());
    let (m, xi) = (s(&model), s(&x));
    // The same file under another spelling counts too.
    let m_again = format!("{}/imgs/../m.safetensors", s(tmp.path()));
    let img0 = imgs.join("0.png");
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["predict", "--model", m, "--input", xi, "--out", m],
            vec!["--out", "--model", "overwritten"],
        ),
        (
            vec!["predict", "--model", m, "--input", xi, "--out", &m_again],
            vec!["--model", "overwritten"],
        ),
        (
            vec!["predict", "--model", m, "--input", xi, "--out", xi],
            vec!["--input", "overwritten"],
        ),
        (
            vec!["attribute", "--model", m, "--input", xi, "--out", xi],
            vec!["--input", "overwritten"],
        ),
        (
            vec![
                "attribute",
                "--model",
                m,
                "--input",
                s(&imgs),
                "--png",
                s(&imgs),
            ],
            vec!["--png", "input folder"],
        ),
        (
            vec![
                "evaluate",
                "--model",
                m,
                "--data",
                s(&imgs),
                "--out",
                s(&imgs),
            ],
            vec!["--out", "input folder"],
        ),
        (
            vec!["evaluate", "--model", m, "--input", xi, "--out", m],
            vec!["--out", "input file"],
        ),
        (
            vec![
                "survey",
                "--model",
                m,
                "--input",
                s(&img0),
                "--out",
                s(&imgs),
            ],
            vec!["--out", "0.png"],
        ),
    ];
    for (args, needles) in &cases {
        expect_error(args, needles);
        assert_eq!(snapshot(tmp.path()), before, "{args:?} changed a file");
    }
    // A distinct output is fine.
    let out = tmp.path().join("logits.safetensors");
    let (code, err) = cli(&["predict", "--model", m, "--input", xi, "--out", s(&out)]);
    assert_eq!(code, 0, "{err}");
}
