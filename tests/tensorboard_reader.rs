//! Round-trips zerobias' hand-encoded TensorBoard events through TensorBoard's
//! own Python `EventAccumulator` (via scripts/read_tb.py).
//!
//! Skips (with a message) when `python3` cannot import `tensorboard`; CI
//! installs it. Set `ZEROBIAS_PYTHON` to use another interpreter.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use zerobias::report::tensorboard::{EventWriter, TensorBoardError};

fn python() -> String {
    std::env::var("ZEROBIAS_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

fn tensorboard_available() -> Result<(), String> {
    match Command::new(python())
        .args(["-c", "import tensorboard"])
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "`{} -c \"import tensorboard\"` failed: {}",
            python(),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run `{}`: {e}", python())),
    }
}

fn read_with_tensorboard(dir: &Path) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/read_tb.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(dir)
        .output()
        .expect("run read_tb.py");
    assert!(
        out.status.success(),
        "read_tb.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("read_tb.py prints JSON")
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn scalar_value(step: i64) -> f32 {
    // Values that are not exactly representable in decimal, plus a negative.
    1.0 / (step as f32 + 3.0) - 0.25
}

#[test]
fn tensorboard_reads_what_event_writer_wrote() {
    if let Err(reason) = tensorboard_available() {
        eprintln!("SKIPPING tensorboard_reader test: {reason} (pip install tensorboard)");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let log_dir = tmp.path().join("run");
    let mut writer = EventWriter::create(&log_dir).expect("create writer");
    assert!(writer.path().starts_with(&log_dir));
    let file_name = writer.path().file_name().unwrap().to_string_lossy();
    assert!(file_name.starts_with("events.out.tfevents."), "{file_name}");

    let steps = [0i64, 1, 2, 5, 10, 1000];
    for &step in &steps {
        writer
            .add_scalar("train/loss", scalar_value(step), step)
            .unwrap();
    }
    writer.add_scalar("train/lr", 3e-4, 7).unwrap();

    let mut weights: Vec<f32> = (0..500).map(|i| (i as f32 * 0.37).sin() * 2.0).collect();
    weights.extend([f32::NAN, f32::INFINITY, f32::NEG_INFINITY]);
    writer.add_histogram("weights/conv1", &weights, 3).unwrap();
    writer.add_histogram("weights/empty", &[], 3).unwrap();

    let (w, h) = (5u32, 3u32);
    let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 17 % 256) as u8).collect();
    writer
        .add_image_rgb("saliency/sample0", w, h, &rgb, 4)
        .unwrap();
    let bad = writer.add_image_rgb("saliency/bad", w, h, &rgb[1..], 4);
    assert!(matches!(bad, Err(TensorBoardError::Image(_))));

    // Read while the writer is still alive: each add must already be on disk.
    let got = read_with_tensorboard(&log_dir);
    drop(writer);

    // EventAccumulator parses "brain.Event:2" into the number 2.0.
    assert_eq!(got["file_version"].as_f64(), Some(2.0));

    let loss = got["scalars"]["train/loss"]
        .as_array()
        .expect("loss scalars");
    assert_eq!(loss.len(), steps.len());
    for (event, &step) in loss.iter().zip(&steps) {
        assert_eq!(event["step"].as_i64(), Some(step));
        let value = event["value"].as_f64().unwrap() as f32;
        assert_eq!(value.to_bits(), scalar_value(step).to_bits(), "step {step}");
    }
    let lr = &got["scalars"]["train/lr"][0];
    assert_eq!(lr["step"].as_i64(), Some(7));
    assert_eq!(lr["value"].as_f64().unwrap() as f32, 3e-4f32);

    let finite: Vec<f64> = weights
        .iter()
        .filter(|v| v.is_finite())
        .map(|&v| f64::from(v))
        .collect();
    let hist = &got["histograms"]["weights/conv1"][0];
    assert_eq!(hist["step"].as_i64(), Some(3));
    assert_eq!(hist["num"].as_f64(), Some(finite.len() as f64));
    let bucket_total: f64 = hist["bucket"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_f64().unwrap())
        .sum();
    assert_eq!(bucket_total, finite.len() as f64);
    assert_eq!(
        hist["bucket"].as_array().unwrap().len(),
        hist["bucket_limit"].as_array().unwrap().len()
    );
    let min = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let max = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(hist["min"].as_f64(), Some(min));
    assert_eq!(hist["max"].as_f64(), Some(max));
    let sum: f64 = finite.iter().sum();
    assert!((hist["sum"].as_f64().unwrap() - sum).abs() < 1e-9);

    let empty = &got["histograms"]["weights/empty"][0];
    assert_eq!(empty["num"].as_f64(), Some(0.0));

    let images = got["images"]["saliency/sample0"].as_array().unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0]["step"].as_i64(), Some(4));
    assert_eq!(images[0]["width"].as_u64(), Some(u64::from(w)));
    assert_eq!(images[0]["height"].as_u64(), Some(u64::from(h)));
    let png = hex_decode(images[0]["encoded_hex"].as_str().unwrap());
    let decoded = image::load_from_memory(&png).expect("valid PNG").to_rgb8();
    assert_eq!(decoded.dimensions(), (w, h));
    assert_eq!(decoded.into_raw(), rgb, "pixels survive the round trip");
    assert!(got["images"].get("saliency/bad").is_none());
}
