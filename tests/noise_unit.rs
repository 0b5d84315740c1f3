//! `evaluate --noise-unit pair|image`: noise.csv, the unit of n in tests.csv and
//! summary.csv, common noise maps across methods and models, and tests.csv against
//! scipy's Wilcoxon on the written values (skipped with a message when python3 cannot
//! import scipy; CI installs it; `ZEROBIAS_PYTHON` picks another interpreter).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};

const IMAGES: usize = 9;
const NOISE: usize = 6;
const METHODS: &str = "act.1,act.13,grad,agg.1";

fn save_inputs(dir: &Path) -> PathBuf {
    let mut rng = zerobias::data::Rng::new(11);
    let x: Vec<f32> = (0..IMAGES * 3 * 32 * 32).map(|_| rng.normal()).collect();
    let p = dir.join("x.safetensors");
    let t = Tensor::from_vec(x, (IMAGES, 3, 32, 32), &Device::Cpu).unwrap();
    zerobias::checkpoint::save(&p, &[("input".into(), t)], Default::default()).unwrap();
    p
}

fn evaluate(models: &[&Path], x: &Path, out: &Path, unit: Option<&str>) {
    let mut args: Vec<String> = vec!["evaluate".into()];
    for m in models {
        args.extend(["--model".into(), m.display().to_string()]);
    }
    args.extend(
        [
            "--input",
            x.to_str().unwrap(),
            "--methods",
            METHODS,
            "--steps",
            "8",
            "--noise-samples",
            &NOISE.to_string(),
            "--out",
            out.to_str().unwrap(),
        ]
        .map(String::from),
    );
    if let Some(u) = unit {
        args.extend(["--noise-unit".into(), u.into()]);
    }
    let o = Command::new(env!("CARGO_BIN_EXE_zerobias"))
        .args(&args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// CSV as header → column maps, one per line.
fn read_csv(path: &Path) -> Vec<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    lines
        .map(|l| {
            header
                .iter()
                .cloned()
                .zip(l.split(',').map(String::from))
                .collect()
        })
        .collect()
}

fn python() -> String {
    std::env::var("ZEROBIAS_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// Runs scripts/check_wilcoxon.py on `out`; None when scipy is not importable.
fn scipy_check(out: &Path, unit: &str) -> Option<serde_json::Value> {
    let probe = Command::new(python())
        .args(["-c", "import scipy, numpy"])
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        _ => {
            eprintln!("skipping the scipy comparison: `{} -c \"import scipy\"` failed (pip install scipy)", python());
            return None;
        }
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check_wilcoxon.py");
    let o = Command::new(python())
        .arg(&script)
        .arg(out)
        .arg(unit)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "tests.csv differs from scipy: {stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    Some(serde_json::from_str(&stdout).unwrap())
}

#[test]
fn pair_unit_counts_pairs_shares_noise_maps_and_matches_scipy() {
    let dir = tempfile::tempdir().unwrap();
    let a = common::save_tiny_vgg(dir.path(), "vanilla.safetensors", 0.2);
    let b = common::save_tiny_vgg(dir.path(), "other.safetensors", 0.05);
    let x = save_inputs(dir.path());
    let pair = dir.path().join("pair");
    let image = dir.path().join("image");
    evaluate(&[&a, &b], &x, &pair, None);
    evaluate(&[&a, &b], &x, &image, Some("image"));

    // noise.csv: one line per model × method × image × noise map.
    let noise = read_csv(&pair.join("noise.csv"));
    assert_eq!(noise.len(), 2 * 4 * IMAGES * NOISE);
    // Common random numbers: the noise image of (image, k) is the same for every method
    // and model, never the image itself, and distinct within an image while possible.
    let mut xi: HashMap<(String, String), String> = HashMap::new();
    for r in &noise {
        let key = (r["image"].clone(), r["noise"].clone());
        let j = r["noise_image"].clone();
        assert_ne!(j, r["image"], "an image is its own noise map: {r:?}");
        let first = xi.entry(key.clone()).or_insert_with(|| j.clone());
        assert_eq!(
            *first, j,
            "noise map of {key:?} differs for {}:{}",
            r["model"], r["method"]
        );
    }
    for i in 0..IMAGES {
        let mut js: Vec<&String> = (0..NOISE)
            .map(|k| &xi[&(i.to_string(), k.to_string())])
            .collect();
        js.sort();
        js.dedup();
        assert_eq!(js.len(), NOISE, "image {i}: noise maps repeat");
    }

    // The per-image noise columns are the means of the per-pair values.
    let per_image = read_csv(&pair.join("per_image.csv"));
    for r in &per_image {
        let vals: Vec<f64> = noise
            .iter()
            .filter(|n| {
                n["model"] == r["model"] && n["method"] == r["method"] && n["image"] == r["image"]
            })
            .map(|n| n["e_minus_noise"].parse().unwrap())
            .collect();
        assert_eq!(vals.len(), NOISE);
        let mean = vals.iter().sum::<f64>() / NOISE as f64;
        let want: f64 = r["e_minus_noise"].parse().unwrap();
        assert!((mean - want).abs() < 1e-6, "{r:?}: mean {mean}");
    }
    // The unit changes the statistics, never the flips.
    assert_eq!(
        std::fs::read_to_string(pair.join("per_image.csv")).unwrap(),
        std::fs::read_to_string(image.join("per_image.csv")).unwrap()
    );

    // n counts pairs for δ metrics under `pair`, images otherwise.
    for (out, delta_n) in [(&pair, IMAGES * NOISE), (&image, IMAGES)] {
        for t in read_csv(&out.join("tests.csv")) {
            let want = if t["metric"].starts_with("delta_") {
                delta_n
            } else {
                IMAGES
            };
            assert_eq!(t["n"], want.to_string(), "{}: {t:?}", out.display());
        }
        for s in read_csv(&out.join("summary.csv")) {
            let want = if s["metric"].starts_with("delta_") {
                delta_n
            } else {
                IMAGES
            };
            assert_eq!(s["n"], want.to_string(), "{}: {s:?}", out.display());
        }
    }

    for (out, unit) in [(&pair, "pair"), (&image, "image")] {
        if let Some(v) = scipy_check(out, unit) {
            eprintln!("scipy check ({unit}): {v}");
            // 4 methods × 2 models: 6 + 6 within-model pairs and 4 across, × 6 metrics.
            assert_eq!(v["checked"], 6 * 16, "{v}");
            assert_eq!(v["mismatch_count"], 0, "{v}");
            if unit == "pair" {
                assert_eq!(v["max_n"], IMAGES * NOISE, "{v}");
            }
        }
    }
}

#[test]
fn noise_unit_rejects_unknown_values() {
    let o = Command::new(env!("CARGO_BIN_EXE_zerobias"))
        .args([
            "evaluate",
            "--model",
            "m",
            "--input",
            "x",
            "--out",
            "o",
            "--noise-unit",
            "pixel",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("pixel") && err.contains("pair") && err.contains("image"),
        "{err}"
    );
}
