//! The trainer: resume equivalence, failure handling, and a short quickstart run.

use candle_core::Device;
mod common;

use common::{run_opts as opts, tensorboard_events, weights, TINY};
use zerobias::train::run;

#[test]
fn resumed_run_equals_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tmp.path().join("tiny.toml");
    std::fs::write(&recipe, TINY).unwrap();
    let a = tmp.path().join("a");
    let sa = run(&recipe, &opts(&a, false, None, &[])).unwrap();
    assert_eq!(sa.steps, 6 + 2 * 2 + 3);
    assert_eq!(
        sa.final_max_abs_bias, 0.0,
        "biases must end at exactly zero"
    );

    // Interrupt in the decay stage (after the step-8 checkpoint), then resume.
    let b = tmp.path().join("b");
    let err = run(&recipe, &opts(&b, false, Some(9), &[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("stopped after 9"), "{err}");
    assert!(b.join("step-000008.safetensors").exists());
    let sb = run(&recipe, &opts(&b, true, None, &[])).unwrap();
    assert_eq!(sb.steps, sa.steps);
    assert_eq!(
        weights(&sa.final_checkpoint),
        weights(&sb.final_checkpoint),
        "resumed weights differ"
    );

    // Interrupt inside the train stage too.
    let c = tmp.path().join("c");
    run(&recipe, &opts(&c, false, Some(3), &[])).unwrap_err();
    let sc = run(&recipe, &opts(&c, true, None, &[])).unwrap();
    assert_eq!(weights(&sa.final_checkpoint), weights(&sc.final_checkpoint));

    // And exactly at the boundary between the stages.
    let d = tmp.path().join("d");
    run(&recipe, &opts(&d, false, Some(6), &[])).unwrap_err();
    let sd = run(&recipe, &opts(&d, true, None, &[])).unwrap();
    assert_eq!(weights(&sa.final_checkpoint), weights(&sd.final_checkpoint));

    // The decay stage's Adam started afresh (moments and bias correction): its step count
    // is the stage's own, and the final checkpoint records the biases' final scale.
    let (_, meta) = zerobias::checkpoint::read_tensors(&sa.final_checkpoint, &Device::Cpu).unwrap();
    let state: serde_json::Value = serde_json::from_str(&meta["train_state"]).unwrap();
    assert_eq!(state["adam_t"], 2 * 2 + 3, "{state}");
    assert_eq!(meta["bias_scale"], "0", "{meta:?}");

    // A summary and TensorBoard events are there.
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("summary.json")).unwrap()).unwrap();
    for k in [
        "teacher_top1",
        "student_top1",
        "brute_force_zero_top1",
        "agreement",
        "final_checkpoint",
        "tensorboard_dir",
        "steps",
        "seconds",
    ] {
        assert!(summary.get(k).is_some(), "summary.json lacks {k}");
    }
    // Agreement with the teacher bounds the top-1 gap: images on which both predict the
    // same class count alike for both. A resumed run agrees as often as an uninterrupted one.
    let agreement = sa.agreement.expect("a decay stage reports agreement");
    assert!((0.0..=1.0).contains(&agreement), "{agreement}");
    assert!(
        (sa.student_top1 - sa.teacher_top1).abs() <= 1.0 - agreement + 1e-12,
        "{sa:?}"
    );
    assert_eq!(sb.agreement, sa.agreement);
    assert!(std::fs::read_dir(a.join("tb")).unwrap().count() >= 1);
    // TensorBoard gets the closing agreement once, as the decay stage ends.
    assert_eq!(tensorboard_events(&a, "eval/teacher_agreement"), 1);
    // Existing checkpoints without --resume are refused.
    let e = run(&recipe, &opts(&a, false, None, &[]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("--resume"), "{e}");
}

/// Two runs of one recipe give bit-identical weights (batch 8 on several rayon threads, so the
/// convolution weight gradient is summed across threads).
#[test]
fn two_runs_of_a_recipe_are_bit_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tmp.path().join("tiny.toml");
    std::fs::write(&recipe, TINY).unwrap();
    let wider = ["model.width=8", "model.hidden=16", "data.size=32"];
    let a = run(&recipe, &opts(&tmp.path().join("a"), false, None, &wider)).unwrap();
    let b = run(&recipe, &opts(&tmp.path().join("b"), false, None, &wider)).unwrap();
    assert_eq!(weights(&a.final_checkpoint), weights(&b.final_checkpoint));
}

#[test]
fn non_finite_loss_stops_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tmp.path().join("tiny.toml");
    std::fs::write(&recipe, TINY).unwrap();
    let err = run(
        &recipe,
        &opts(&tmp.path().join("r"), false, None, &["stage.0.lr=1e30"]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("non-finite loss") && err.contains("stage 0"),
        "{err}"
    );
}

#[test]
fn recipe_errors_come_before_training() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tmp.path().join("tiny.toml");
    std::fs::write(&recipe, TINY).unwrap();
    let e = run(
        &recipe,
        &opts(
            &tmp.path().join("r"),
            false,
            None,
            &["stage.1.schedule=\"cosine\""],
        ),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("cosine"), "{e}");
    let e = run(
        &recipe,
        &opts(
            &tmp.path().join("r"),
            false,
            None,
            &[
                "data.kind=\"imagefolder\"",
                "data.train=/nonexistent/train",
                "data.val=/nonexistent/val",
            ],
        ),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("/nonexistent/train"), "{e}");
    let e = run(
        &recipe,
        &opts(
            &tmp.path().join("r"),
            false,
            None,
            &["model.source=\"/nonexistent/teacher.safetensors\""],
        ),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("/nonexistent/teacher.safetensors"), "{e}");
    assert!(!tmp
        .path()
        .join("r")
        .join("step-000001.safetensors")
        .exists());
}

/// An ImageFolder with unreadable files, batch size 1: every unreadable file is a batch
/// left out. A run interrupted and resumed still sees the same batches as one that was not.
#[test]
fn resume_after_skipped_batches_matches_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    for split in ["train", "val"] {
        for (c, class) in ["ant", "bee", "cat"].iter().enumerate() {
            let dir = tmp.path().join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..3u32 {
                let img = image::RgbImage::from_fn(40, 36, |x, y| {
                    let v = ((x * (c as u32 + 1) + y * (i + 2)) % 256) as u8;
                    image::Rgb([v, 255 - v, (v / 2) + 40 * c as u8])
                });
                img.save(dir.join(format!("{i}.png"))).unwrap();
            }
            if split == "train" {
                std::fs::write(dir.join("broken.png"), b"not a png").unwrap();
            }
        }
    }
    let recipe = format!(
        r#"
name = "skips"
seed = 5
[model]
source = "new"
arch = "vgg16"
width = 2
hidden = 8
[data]
kind = "imagefolder"
train = "{}"
val = "{}"
size = 32
prefetch = 2
[[stage]]
kind = "train"
steps = 30
lr = 1e-3
batch_size = 1
eval_every = 30
checkpoint_every = 2
"#,
        tmp.path().join("train").display(),
        tmp.path().join("val").display()
    );
    let path = tmp.path().join("skips.toml");
    std::fs::write(&path, recipe).unwrap();
    let a = run(&path, &opts(&tmp.path().join("a"), false, None, &[])).unwrap();
    assert_eq!(a.steps, 30);
    // An epoch has 12 batch positions, 9 of them readable; checkpoints every 2 steps, so
    // the interruptions fall at various places relative to the left-out batches.
    for stop in [5, 7, 11, 15, 21] {
        let b_dir = tmp.path().join(format!("b{stop}"));
        run(&path, &opts(&b_dir, false, Some(stop), &[])).unwrap_err();
        let b = run(&path, &opts(&b_dir, true, None, &[])).unwrap();
        let (wa, wb) = (weights(&a.final_checkpoint), weights(&b.final_checkpoint));
        let differ: Vec<&str> = wa
            .iter()
            .zip(&wb)
            .filter(|(x, y)| x != y)
            .map(|(x, _)| x.0.as_str())
            .collect();
        assert!(
            differ.is_empty(),
            "interrupted after step {stop}: {differ:?} differ"
        );
    }
}

/// A first stage stuck at chance level re-initialises the model with the next seed
/// (`mix_seed(seed, k)` for restart k) and starts over; after `max_restarts` it stops with
/// an error that says so. A learning rate of 1e-9 keeps every initialisation at its
/// starting loss, above 0.9·ln 3 for these seeds.
#[test]
fn chance_plateau_restarts_with_the_next_seed_then_gives_up() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tmp.path().join("tiny.toml");
    std::fs::write(&recipe, TINY).unwrap();
    let dir = tmp.path().join("r");
    let err = run(
        &recipe,
        &opts(
            &dir,
            false,
            None,
            &[
                "stage.0.lr=1e-9",
                "stage.0.steps=150",
                "stage.0.restart_patience=100",
                "stage.0.max_restarts=1",
                "stage.0.checkpoint_every=50",
                "stage.0.eval_every=1000",
            ],
        ),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("chance level") && err.contains("each of 2 initialisations"),
        "{err}"
    );
    // Global steps keep counting across restarts: step 50 is the first initialisation,
    // step 150 the second one's 50th step.
    let first = weights(&dir.join("step-000050.safetensors"));
    let second = weights(&dir.join("step-000150.safetensors"));
    let expected = |seed: u64| {
        let t = zerobias::models::init::vgg16(2, 8, 3, seed, &Device::Cpu).unwrap();
        let mut v: Vec<(String, Vec<f32>)> = t
            .into_iter()
            .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1().unwrap()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let close = |a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)]| {
        a.len() == b.len()
            && a.iter().zip(b).all(|((ka, va), (kb, vb))| {
                ka == kb && va.iter().zip(vb).all(|(x, y)| (x - y).abs() < 1e-5)
            })
    };
    assert!(close(&first, &expected(3)), "first attempt: recipe seed");
    assert!(
        close(&second, &expected(zerobias::data::mix_seed(3, 1))),
        "restart 1: seed mix_seed(3, 1)"
    );
    assert!(!close(&first, &second));
}

#[test]
fn restart_patience_is_validated() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tmp.path().join("tiny.toml");
    std::fs::write(&recipe, TINY).unwrap();
    for (set, needle) in [
        ("stage.0.restart_patience=6", "at least 100 steps"),
        ("stage.1.restart_patience=100", "only the first stage"),
    ] {
        let e = run(&recipe, &opts(&tmp.path().join("r"), false, None, &[set]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("restart_patience") && e.contains(needle), "{e}");
    }
}

/// A smooth decay rescales the biases at every step: mid-decay they sit at the schedule's
/// fractional value, they end at exactly zero, and a run interrupted mid-decay resumes to
/// the same weights.
#[test]
fn smooth_decay_scales_every_step_ends_at_zero_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tmp.path().join("tiny.toml");
    std::fs::write(&recipe, TINY).unwrap();
    let smooth = [
        "stage.1.smooth=true",
        "stage.1.schedule=\"exponential\"",
        "stage.1.checkpoint_every=1",
    ];
    let a = tmp.path().join("a");
    let sa = run(&recipe, &opts(&a, false, None, &smooth)).unwrap();
    assert_eq!(
        sa.final_max_abs_bias, 0.0,
        "biases must end at exactly zero"
    );
    // Global step 7 is the decay stage's first step: scale 0.5^(1/2), not 1 and not 0.5.
    let (_, meta) =
        zerobias::checkpoint::read_tensors(&a.join("step-000007.safetensors"), &Device::Cpu)
            .unwrap();
    let scale: f64 = meta["bias_scale"].parse().unwrap();
    assert!((scale - 0.5f64.sqrt()).abs() < 1e-12, "bias scale {scale}");

    let b = tmp.path().join("b");
    run(&recipe, &opts(&b, false, Some(8), &smooth)).unwrap_err();
    let sb = run(&recipe, &opts(&b, true, None, &smooth)).unwrap();
    assert_eq!(weights(&sa.final_checkpoint), weights(&sb.final_checkpoint));

    // The stepwise decay of the same recipe ends elsewhere.
    let c = tmp.path().join("c");
    let sc = run(&recipe, &opts(&c, false, None, &smooth[1..])).unwrap();
    assert_ne!(weights(&sa.final_checkpoint), weights(&sc.final_checkpoint));
}
