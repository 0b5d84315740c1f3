//! `survey` part (c) on raw pixels: scaling 0.001×–1000× and shifts up to a full value range
//! (±1 on [0, 1] pixels), before normalisation, with the relative change per model.

use std::process::Command;

use candle_core::{Device, Tensor};

#[test]
fn robustness_table_spans_the_papers_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let t = zerobias::models::init::vgg16(2, 8, 3, 1, &Device::Cpu).unwrap();
    let mut named: Vec<(String, Tensor)> = t.into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let model = dir.path().join("m.safetensors");
    zerobias::checkpoint::save(&model, &named, Default::default()).unwrap();
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
    let o = Command::new(env!("CARGO_BIN_EXE_zerobias"))
        .arg("survey")
        .arg("--model")
        .arg(&model)
        .arg("--input")
        .arg(&xp)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
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
