//! `evaluate` and `survey` end to end on tiny models (no fixtures needed).

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};

fn save_model(dir: &Path, name: &str, zero_bias: bool) -> PathBuf {
    let mut t = zerobias::models::init::vgg16(2, 8, 3, 1, &Device::Cpu).unwrap();
    let mut rng = zerobias::data::Rng::new(2);
    for (k, v) in t.iter_mut() {
        if k.ends_with(".bias") {
            let n = v.elem_count();
            let s = if zero_bias { 0.0 } else { 0.2 };
            *v = Tensor::from_vec(
                (0..n).map(|_| rng.normal() * s).collect::<Vec<f32>>(),
                n,
                &Device::Cpu,
            )
            .unwrap();
        }
    }
    let mut named: Vec<(String, Tensor)> = t.into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let p = dir.join(name);
    zerobias::checkpoint::save(&p, &named, Default::default()).unwrap();
    p
}

fn save_inputs(dir: &Path, n: usize) -> PathBuf {
    let mut rng = zerobias::data::Rng::new(5);
    let x: Vec<f32> = (0..n * 3 * 32 * 32).map(|_| rng.normal()).collect();
    let p = dir.join("x.safetensors");
    zerobias::checkpoint::save(
        &p,
        &[(
            "input".into(),
            Tensor::from_vec(x, (n, 3, 32, 32), &Device::Cpu).unwrap(),
        )],
        Default::default(),
    )
    .unwrap();
    p
}

fn zerobias(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_zerobias"))
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {err}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn evaluate_two_models_writes_tables_and_figures() {
    let dir = tempfile::tempdir().unwrap();
    let a = save_model(dir.path(), "vanilla.safetensors", false);
    let b = save_model(dir.path(), "zerobias.safetensors", true);
    let x = save_inputs(dir.path(), 4);
    let out = dir.path().join("eval");
    let stdout = zerobias(&[
        "evaluate",
        "--model",
        a.to_str().unwrap(),
        "--model",
        b.to_str().unwrap(),
        "--input",
        x.to_str().unwrap(),
        "--methods",
        "act.*,bias.*,grad,gradcam,agg.1",
        "--steps",
        "8",
        "--noise-samples",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(stdout.contains("forward passes"), "{stdout}");
    let per_image = std::fs::read_to_string(out.join("per_image.csv")).unwrap();
    let lines: Vec<&str> = per_image.lines().collect();
    // 2 models × 4 images × (14 act + 13 conv-bias + grad + gradcam + agg.1) methods.
    assert_eq!(lines.len() - 1, 2 * 4 * (14 + 13 + 3), "{}", lines[0]);
    assert!(lines.iter().skip(1).all(|l| l.split(',').count() == 16));
    assert!(
        !per_image.contains("bias.classifier"),
        "linear bias maps are not spatial"
    );
    let tests = std::fs::read_to_string(out.join("tests.csv")).unwrap();
    assert!(tests.starts_with("metric,a,b,n,statistic,p_value,log10_p,median_diff"));
    assert!(
        tests.contains("vanilla:act.1,zerobias:act.1"),
        "cross-model rows missing"
    );
    let corr = std::fs::read_to_string(out.join("correlations.csv")).unwrap();
    assert!(
        corr.starts_with("layer,n,median_rho,p10_rho,p90_rho,kind,a,b,skipped\n"),
        "{corr}"
    );
    let rows: Vec<Vec<&str>> = corr
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert!(rows.iter().all(|r| r.len() == 9), "{corr}");
    assert!(!corr.to_lowercase().contains("nan"), "{corr}");
    let of = |kind: &str, model: &str| -> Vec<&Vec<&str>> {
        rows.iter()
            .filter(|r| r[5] == kind && r[6] == model)
            .collect()
    };
    // Between the models: a^{h,l} of layers 0..=13, every image with a ρ.
    let between = of("between_models", "vanilla");
    assert_eq!(between.len(), 14, "{corr}");
    assert!(between.iter().all(|r| r[7] == "zerobias"), "{corr}");
    // Within each model: a^{h,l} against a^{b,l}, layers 1..=13.
    let vanilla = of("act_vs_bias", "vanilla");
    assert_eq!(vanilla.len(), 13, "{corr}");
    for r in &vanilla {
        let (n, skipped): (usize, usize) = (r[1].parse().unwrap(), r[8].parse().unwrap());
        assert_eq!(n + skipped, 4, "{r:?}");
        if n > 0 {
            let rho: f64 = r[2].parse().unwrap();
            assert!((-1.0..=1.0).contains(&rho), "{r:?}");
        }
    }
    assert!(vanilla.iter().any(|r| r[1] == "4"), "{corr}");
    // Zero biases make every a^{b,l} constant (zero): no ρ, each image counted as skipped.
    let zero = of("act_vs_bias", "zerobias");
    assert_eq!(zero.len(), 13, "{corr}");
    for r in &zero {
        assert_eq!(
            (r[1], r[2], r[3], r[4], r[8]),
            ("0", "", "", "", "4"),
            "{r:?}"
        );
    }
    let summary = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    assert!(
        summary.contains("vanilla,grad,delta_e_minus,8,"),
        "{summary}"
    );
    for f in [
        "fig5-vanilla-delta_e_minus.png",
        "fig9-difference-delta_e_minus.png",
        "fig6-aggregates-e_minus.png",
        "fig8-correlations.png",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let fig8 = image::open(out.join("fig8-correlations.png")).unwrap();
    assert!(fig8.width() > 0 && fig8.height() > 0);
}

#[test]
fn survey_reports_zero_bias_accuracy_and_robustness() {
    let dir = tempfile::tempdir().unwrap();
    let a = save_model(dir.path(), "vanilla.safetensors", false);
    let x = save_inputs(dir.path(), 6);
    let out = dir.path().join("survey");
    let stdout = zerobias(&[
        "survey",
        "--model",
        a.to_str().unwrap(),
        "--input",
        x.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        stdout.contains("zero-bias") && stdout.contains("bias parameters: 151"),
        "{stdout}"
    );
    let acc = std::fs::read_to_string(out.join("accuracy.csv")).unwrap();
    assert!(
        acc.contains("vanilla,1.000000"),
        "without labels vanilla agrees with itself: {acc}"
    );
    let rob = std::fs::read_to_string(out.join("robustness.csv")).unwrap();
    assert_eq!(rob.lines().count(), 1 + 2 * (7 + 9));
    let reg = std::fs::read_to_string(out.join("regression.csv")).unwrap();
    assert_eq!(reg.lines().count(), 1 + 6);
    for f in [
        "regression.png",
        "scaling.png",
        "shift.png",
        "input_scaling.png",
    ] {
        assert!(out.join(f).exists());
    }
}
