//! The decay curve (Supplementary Fig. 6): the teacher with its biases set to each scale
//! outright next to the student, at every rescale.

use std::path::Path;

mod common;

use common::{run_opts as opts, tensorboard_events, weights, TINY};
use zerobias::train::{run, Summary};

fn tiny(dir: &Path) -> std::path::PathBuf {
    let recipe = dir.join("tiny.toml");
    std::fs::write(&recipe, TINY).unwrap();
    recipe
}

fn summary_json(run_dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap()).unwrap()
}

fn check_curve(s: &Summary, rescales: usize, first_step: usize, every: usize) {
    let c = &s.decay_curve;
    assert_eq!(c.len(), rescales, "one point per rescale: {c:?}");
    for (i, p) in c.iter().enumerate() {
        assert_eq!(p.stage, 1);
        assert_eq!(p.rescale, i + 1);
        assert_eq!(p.step, first_step + (i + 1) * every, "{p:?}");
        assert!((0.0..=1.0).contains(&p.teacher_scaled_top1), "{p:?}");
        assert!((0.0..=1.0).contains(&p.student_top1), "{p:?}");
        if i > 0 {
            assert!(p.scale < c[i - 1].scale, "scales fall: {c:?}");
        }
    }
    assert!(c[0].scale < 1.0 && c[0].scale > 0.0, "{c:?}");
    let last = c.last().unwrap();
    assert_eq!(last.scale, 0.0, "the last rescale reaches zero");
    // At scale 0 the scaled teacher is the brute-force zero-bias teacher (the tiny
    // recipe's 16 validation images are fewer than decay_curve_images).
    assert_eq!(last.teacher_scaled_top1, s.brute_force_zero_top1);
}

#[test]
fn curve_has_a_point_per_rescale_ending_at_the_brute_force_number() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tiny(tmp.path());
    let a = tmp.path().join("a");
    let s = run(&recipe, &opts(&a, false, None, &[])).unwrap();
    // The tiny recipe: 6 train steps, then a linear decay of 2 rescales every 2 steps.
    check_curve(&s, 2, 6, 2);
    assert_eq!(s.decay_curve[0].scale, 0.5);
    // The same trace in summary.json.
    let json = summary_json(&a);
    let trace = json["decay_curve"].as_array().unwrap();
    assert_eq!(trace.len(), 2);
    for k in ["step", "scale", "teacher_scaled_top1", "student_top1"] {
        assert!(
            trace[1].get(k).is_some(),
            "summary.json trace lacks {k}: {json}"
        );
    }
    // The figure: a PNG of plausible size.
    let png = std::fs::read(a.join("decay_curve.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 2000);
    let img = image::load_from_memory(&png).unwrap();
    assert!(img.width() >= 300 && img.height() >= 200);
    // And in TensorBoard.
    for tag in [
        "decay/teacher_scaled_top1",
        "decay/student_top1",
        "decay/scale",
    ] {
        assert_eq!(
            tensorboard_events(&a, tag),
            2,
            "{tag}: one event per rescale"
        );
    }

    // Smooth decay: points at the same rescale boundaries and the same scales.
    let b = tmp.path().join("b");
    let sb = run(&recipe, &opts(&b, false, None, &["stage.1.smooth=true"])).unwrap();
    check_curve(&sb, 2, 6, 2);
    assert_eq!(sb.decay_curve[0].scale, 0.5);
}

#[test]
fn curve_leaves_the_training_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tiny(tmp.path());
    let on = tmp.path().join("on");
    let off = tmp.path().join("off");
    let s_on = run(&recipe, &opts(&on, false, None, &[])).unwrap();
    let s_off = run(
        &recipe,
        &opts(&off, false, None, &["stage.1.decay_curve=false"]),
    )
    .unwrap();
    assert!(s_off.decay_curve.is_empty());
    assert!(!off.join("decay_curve.png").exists());
    assert_eq!(s_on.decay_curve.len(), 2);
    // Same weights at every checkpoint, same teacher, student and brute-force numbers.
    for name in ["teacher-stage1", "step-000008", "step-000010", "final"] {
        let f = format!("{name}.safetensors");
        assert_eq!(
            weights(&on.join(&f)),
            weights(&off.join(&f)),
            "{f} differs with the decay curve on"
        );
    }
    assert_eq!(s_on.teacher_top1, s_off.teacher_top1);
    assert_eq!(s_on.student_top1, s_off.student_top1);
    assert_eq!(s_on.brute_force_zero_top1, s_off.brute_force_zero_top1);
}

#[test]
fn resume_mid_decay_keeps_the_whole_curve() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tiny(tmp.path());
    let a = tmp.path().join("a");
    let sa = run(&recipe, &opts(&a, false, None, &[])).unwrap();
    // Stop after the first rescale (global step 8, checkpointed), then resume.
    let b = tmp.path().join("b");
    run(&recipe, &opts(&b, false, Some(9), &[])).unwrap_err();
    let sb = run(&recipe, &opts(&b, true, None, &[])).unwrap();
    assert_eq!(sb.decay_curve, sa.decay_curve);
    assert_eq!(
        summary_json(&b)["decay_curve"],
        summary_json(&a)["decay_curve"]
    );
    assert!(b.join("decay_curve.png").exists());
    // Resumed after the last rescale, nothing is measured twice.
    let c = tmp.path().join("c");
    run(&recipe, &opts(&c, false, Some(11), &[])).unwrap_err();
    let sc = run(&recipe, &opts(&c, true, None, &[])).unwrap();
    assert_eq!(sc.decay_curve, sa.decay_curve);
}
