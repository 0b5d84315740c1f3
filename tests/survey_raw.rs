//! `survey` part (c) on raw pixels: scaling 0.001×–1000× and shifts up to a full value range
//! (±1 on [0, 1] pixels), before normalisation, with the relative change per model; and part
//! (d), the normalised input scaled, to which a zero-bias network is blind.

use std::path::Path;
use std::process::Command;

use candle_core::{Device, Tensor};

#[test]
fn robustness_table_spans_the_papers_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.safetensors");
    save(
        &model,
        &zerobias::models::init::vgg16(2, 8, 3, 1, &Device::Cpu).unwrap(),
    );
    // Real-looking inputs: random bytes normalised as every input is.
    let mut rng = zerobias::data::Rng::new(3);
    let mut x = Vec::new();
    for _ in 0..4 {
        let rgb: Vec<u8> = (0..32 * 32 * 3).map(|_| rng.below(256) as u8).collect();
        x.extend(zerobias::data::normalise::normalise_hwc(&rgb, 32, 32));
    }
    let xp = dir.path().join("x.safetensors");
    let xt = Tensor::from_vec(x, (4, 3, 32, 32), &Device::Cpu).unwrap();
    zerobias::checkpoint::save(&xp, &[("input".into(), xt)], Default::default()).unwrap();
    let out = dir.path().join("survey");
    survey(&model, &xp, &out);
    let rob = std::fs::read_to_string(out.join("robustness.csv")).unwrap();
    let mut lines = rob.lines();
    assert_eq!(lines.next(), Some("variant,transform,value,top1,relative"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let values = |variant: &str, kind: &str| -> Vec<f64> {
        rows.iter()
            .filter(|r| r[0] == variant && r[1] == kind)
            .map(|r| r[2].parse().unwrap())
            .collect()
    };
    for v in ["vanilla", "zero-bias"] {
        assert_eq!(
            values(v, "scale"),
            [0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0]
        );
        assert_eq!(
            values(v, "shift"),
            [-1.0, -0.5, -0.25, -0.1, 0.0, 0.1, 0.25, 0.5, 1.0]
        );
    }
    // Without labels the vanilla model agrees with itself on the untouched pixels.
    for r in &rows {
        if r[0] == "vanilla"
            && ((r[1] == "scale" && r[2] == "1") || (r[1] == "shift" && r[2] == "0"))
        {
            assert_eq!((r[3], r[4]), ("1.000000", "0.000000"), "{r:?}");
        }
    }
}

/// `zerobias survey --model M --input X --out DIR`, which must succeed; its stdout.
fn survey(model: &Path, input: &Path, out: &Path) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_zerobias"))
        .args(["survey", "--model"])
        .arg(model)
        .arg("--input")
        .arg(input)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn save(path: &Path, tensors: &std::collections::HashMap<String, Tensor>) {
    let mut named: Vec<(String, Tensor)> = tensors.clone().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    zerobias::checkpoint::save(path, &named, Default::default()).unwrap();
}

#[test]
fn a_zero_bias_network_keeps_its_class_when_its_input_is_scaled() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Device::Cpu;
    // One random image u, normalised as every input is.
    let mut rng = zerobias::data::Rng::new(5);
    let rgb: Vec<u8> = (0..32 * 32 * 3).map(|_| rng.below(256) as u8).collect();
    let u = zerobias::data::normalise::normalise_hwc(&rgb, 32, 32);
    // A VGG-16 without biases has logits z0 = f(u) on it, and f(s·u) = s·z0. With the last
    // layer's bias set to −z0 the logits at s·u are (s − 1)·z0: below s = 1 the class is
    // z0's smallest, above it z0's largest; every other bias stays zero.
    let mut t = zerobias::models::init::vgg16(2, 8, 3, 1, &dev).unwrap();
    for (k, v) in t.iter_mut() {
        if k.ends_with(".bias") {
            *v = v.zeros_like().unwrap();
        }
    }
    let model = dir.path().join("m.safetensors");
    save(&model, &t);
    let x1 = Tensor::from_vec(u.clone(), (1, 3, 32, 32), &dev).unwrap();
    let open = || zerobias::models::open(model.to_str().unwrap(), None, &dev).unwrap();
    let z0 = open().forward(&x1).unwrap().flatten_all().unwrap();
    let spread: Vec<f32> = z0.to_vec1().unwrap();
    let (lo, hi) = spread
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    assert!(hi - lo > 1e-3, "degenerate zero-bias logits {spread:?}");
    t.insert("classifier.6.bias".into(), z0.neg().unwrap());
    save(&model, &t);
    // Norms s = 0.6, 0.8, 1.25, 1.6: ×0.5 moves 1.25 and 1.6 below 1, ×0.75 moves 1.25,
    // ×1.5 moves 0.8 above 1, ×2 moves 0.6 and 0.8.
    let norms = [0.6f32, 0.8, 1.25, 1.6];
    let x: Vec<f32> = norms
        .iter()
        .flat_map(|s| u.iter().map(move |v| v * s))
        .collect();
    let xp = dir.path().join("x.safetensors");
    let xt = Tensor::from_vec(x, (4, 3, 32, 32), &dev).unwrap();
    zerobias::checkpoint::save(&xp, &[("input".into(), xt)], Default::default()).unwrap();
    let out = dir.path().join("survey");
    let text = survey(&model, &xp, &out);
    let table = std::fs::read_to_string(out.join("input_scaling.csv")).unwrap();
    let mut lines = table.lines();
    assert_eq!(lines.next(), Some("variant,factor,top1,same_class"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let column = |variant: &str, c: usize| -> Vec<f64> {
        rows.iter()
            .filter(|r| r[0] == variant)
            .map(|r| r[c].parse().unwrap())
            .collect()
    };
    assert_eq!(column("vanilla", 1), [0.5, 0.75, 1.5, 2.0]);
    assert_eq!(column("vanilla", 3), [0.5, 0.75, 0.75, 0.5], "{table}");
    // Without biases the class never changes (at 0.5 and 2 the logits scale exactly).
    assert_eq!(column("zero-bias", 1), [0.5, 0.75, 1.5, 2.0]);
    assert_eq!(column("zero-bias", 3), [1.0; 4], "{table}");
    assert!(
        text.contains("vanilla      same class with the normalised input × 0.5/0.75/1.5/2: 50.0% / 75.0% / 75.0% / 50.0%"),
        "{text}"
    );
}
