//! Decay options beyond the paper (`bn_variance`, `feature_weight`, `freeze_biases`,
//! `mixup`, `anchor`, `ema`, `ce_weight`, `ce_target`), end to end on tiny VGG and ResNet
//! (BatchNorm) runs, with resume.

use std::collections::HashMap;
use std::path::Path;

mod common;

use common::{run_opts as opts, weights, TINY};
use zerobias::train::{run, Summary};

const RESNET: [&str; 3] = [
    "model.arch=\"resnet50\"",
    "model.width=1",
    "stage.0.lr=1e-2",
];

fn tensors(path: &Path) -> HashMap<String, Vec<f32>> {
    weights(path).into_iter().collect()
}

/// Stopped after `stop_after` steps and resumed in `dir`, the run ends with the same network
/// as the uninterrupted one that wrote `expected`.
fn assert_resumes_exactly(
    recipe: &Path,
    dir: &Path,
    set: &[&str],
    stop_after: usize,
    expected: &Path,
) {
    run(recipe, &opts(dir, false, Some(stop_after), set)).unwrap_err();
    let resumed = run(recipe, &opts(dir, true, None, set)).unwrap();
    assert_eq!(weights(expected), weights(&resumed.final_checkpoint));
}

fn with<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    RESNET
        .iter()
        .copied()
        .chain(extra.iter().copied())
        .collect()
}

/// The run with `set` ends with another network than the run with `plain` (in `tmp`, run
/// directories named after `tag`), and stopped after 9 steps and resumed it ends the same.
/// Returns the summary of the run with `set`.
fn assert_changes_student_and_resumes(
    tmp: &Path,
    tag: &str,
    set: &[&str],
    plain: &[&str],
) -> Summary {
    let recipe = tmp.join("tiny.toml");
    std::fs::write(&recipe, TINY).unwrap();
    let dir = |n: &str| tmp.join(format!("{n}-{tag}"));
    let changed = run(&recipe, &opts(&dir("a"), false, None, set)).unwrap();
    let unchanged = run(&recipe, &opts(&dir("p"), false, None, plain)).unwrap();
    assert_ne!(
        weights(&changed.final_checkpoint),
        weights(&unchanged.final_checkpoint),
        "{set:?} had no effect against {plain:?}"
    );
    assert_resumes_exactly(&recipe, &dir("b"), set, 9, &changed.final_checkpoint);
    changed
}

#[test]
fn second_moment_variance_follows_the_removed_mean_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tmp.path().join("tiny.toml");
    std::fs::write(&recipe, TINY).unwrap();
    let set = with(&["stage.1.bn_variance=\"second_moment\""]);
    let a = tmp.path().join("a");
    let sa = run(&recipe, &opts(&a, false, None, &set)).unwrap();
    assert_eq!(sa.final_max_abs_bias, 0.0);
    let teacher = tensors(&a.join("teacher-stage1.safetensors"));
    let student = tensors(&sa.final_checkpoint);
    let mut checked = 0;
    for (name, var) in &student {
        let Some(module) = name.strip_suffix(".running_var") else {
            continue;
        };
        let mean0 = &teacher[&format!("{module}.running_mean")];
        let var0 = &teacher[name];
        for i in 0..var.len() {
            let want = var0[i] + mean0[i] * mean0[i];
            assert!(
                (var[i] - want).abs() <= 1e-6 * want.max(1.0),
                "{name}[{i}]: {} vs var0 + mean0² = {want}",
                var[i]
            );
        }
        assert!(
            mean0.iter().any(|m| m.abs() > 1e-6),
            "{module}: the teacher's running mean is zero, so the test shows nothing"
        );
        checked += 1;
    }
    assert!(checked >= 50, "only {checked} BN layers");

    // The paper's fixed variance keeps the teacher's.
    let fixed = run(&recipe, &opts(&tmp.path().join("f"), false, None, &RESNET)).unwrap();
    let fixed_student = tensors(&fixed.final_checkpoint);
    for (name, var) in &fixed_student {
        if name.ends_with(".running_var") {
            assert_eq!(var, &teacher[name], "{name}");
        }
    }

    // Interrupted mid-decay (after a rescale) and resumed: the same network.
    let b = tmp.path().join("b");
    assert_resumes_exactly(&recipe, &b, &set, 9, &sa.final_checkpoint);
}

#[test]
fn recalibrated_variance_is_measured_on_the_student_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let set = with(&["stage.1.bn_variance=\"recalibrate\""]);
    let second_moment = with(&["stage.1.bn_variance=\"second_moment\""]);
    let s = assert_changes_student_and_resumes(tmp.path(), "recal", &set, &second_moment);
    assert_eq!(s.final_max_abs_bias, 0.0);
    // Neither the teacher's variance nor var₀ + μ₀²: the student's own second moments.
    let teacher = tensors(&tmp.path().join("a-recal/teacher-stage1.safetensors"));
    let student = tensors(&s.final_checkpoint);
    let mut changed = 0;
    for (name, var) in &student {
        if !name.ends_with(".running_var") {
            continue;
        }
        assert!(var.iter().all(|v| v.is_finite() && *v >= 0.0), "{name}");
        changed += usize::from(var != &teacher[name]);
    }
    assert!(changed >= 50, "only {changed} BN variances moved");
}

#[test]
fn feature_distillation_changes_the_student_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    for arch in [&[][..], &RESNET[..]] {
        let set: Vec<&str> = arch
            .iter()
            .copied()
            .chain(["stage.1.feature_weight=1"])
            .collect();
        let a = assert_changes_student_and_resumes(tmp.path(), &arch.len().to_string(), &set, arch);
        assert_eq!(a.final_max_abs_bias, 0.0);
    }
}

/// The activations a training pass hands to feature distillation are the layers that
/// attribution records (layers 1..=L, same values), on the fused kernels too.
#[test]
fn collected_features_are_the_recorded_layer_activations() {
    use candle_core::{Device, Tensor};
    use zerobias::models::{self, Ctx};
    use zerobias::taps::{record, Target};
    let dev = Device::Cpu;
    for (arch, tensors) in [
        ("vgg16", models::init::vgg16(2, 8, 3, 1, &dev).unwrap()),
        ("resnet50", models::init::resnet50(1, 3, 1, &dev).unwrap()),
    ] {
        let model = models::build(&tensors, arch).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &dev).unwrap();
        let recorded = record(model.as_ref(), &x, &Target::Predicted).unwrap();
        for ctx in [Ctx::inference(), Ctx::training(false)] {
            let mut ctx = ctx.collecting_features();
            model.forward_ctx(&x, &mut ctx).unwrap();
            let features = ctx.features.unwrap();
            assert_eq!(features.len(), recorded.acts.len(), "{arch}");
            assert!(features.len() >= 13, "{arch}: {} layers", features.len());
            for (f, a) in features.iter().zip(&recorded.acts) {
                let d = (f - &a.value)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(d < 1e-5, "{arch} layer {}: max diff {d}", a.layer);
            }
        }
    }
}

/// With `freeze_biases`, a bias handle mid-decay is the teacher's times the scale: nothing
/// but the rescales touched it. Without, training moves it.
#[test]
fn frozen_biases_are_only_rescaled() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tmp.path().join("tiny.toml");
    std::fs::write(&recipe, TINY).unwrap();
    for arch in [&[][..], &RESNET[..]] {
        let drift = |freeze: bool| -> f32 {
            let mut set: Vec<&str> = arch.to_vec();
            if freeze {
                set.push("stage.1.freeze_biases=true");
            }
            let dir = tmp.path().join(format!("{}-{freeze}", arch.len()));
            run(&recipe, &opts(&dir, false, None, &set)).unwrap();
            let teacher = tensors(&dir.join("teacher-stage1.safetensors"));
            // Global step 8: the decay stage's second step, then its first rescale (linear,
            // 2 rescales: scale ½).
            let mid = tensors(&dir.join("step-000008.safetensors"));
            let mut worst = 0f32;
            let mut seen = 0;
            for (name, b) in &mid {
                let is_bias = name.ends_with(".bias") || name.ends_with(".running_mean");
                if !is_bias {
                    continue;
                }
                for (v, t) in b.iter().zip(&teacher[name]) {
                    worst = worst.max((v - 0.5 * t).abs());
                    seen += 1;
                }
            }
            assert!(seen > 0);
            worst
        };
        assert_eq!(drift(true), 0.0, "frozen biases moved");
        assert!(drift(false) > 0.0, "trained biases did not move");
    }
}

/// mixup (with or without labels), `standardize_logits` and `norm_free_logits` change what
/// the student learns, and a resumed run draws the same blends.
#[test]
fn mixup_and_logit_options_change_the_student_and_resume_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, (option, ce)) in [
        ("stage.1.mixup=true", "stage.1.ce_weight=0"),
        ("stage.1.mixup=true", "stage.1.ce_weight=1"),
        ("stage.1.standardize_logits=true", "stage.1.ce_weight=0"),
        ("stage.1.norm_free_logits=true", "stage.1.ce_weight=1"),
    ]
    .into_iter()
    .enumerate()
    {
        assert_changes_student_and_resumes(tmp.path(), &i.to_string(), &[option, ce], &[ce]);
    }
}

/// `ce_weight` adds a cross-entropy to the distillation loss in a decay stage, toward the
/// labels or (`ce_target = "teacher"`) the teacher's top-1: each changes what the student
/// learns, on BN-free and BatchNorm networks, and a resumed run ends the same.
#[test]
fn cross_entropy_in_the_decay_changes_the_student_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let teacher_target = "stage.1.ce_target=\"teacher\"";
    let recipe = tmp.path().join("tiny.toml");
    std::fs::write(&recipe, TINY).unwrap();
    for (i, arch) in [&[][..], &RESNET[..]].into_iter().enumerate() {
        let set = |extra: &[&'static str]| -> Vec<&str> {
            arch.iter().copied().chain(extra.iter().copied()).collect()
        };
        let labels = set(&["stage.1.ce_weight=2"]);
        let teacher = set(&["stage.1.ce_weight=2", teacher_target]);
        let none = set(&["stage.1.ce_weight=0"]);
        let dir = |n: &str| tmp.path().join(format!("{n}-{i}"));
        let finals: Vec<_> = [("labels", &labels), ("teacher", &teacher), ("none", &none)]
            .into_iter()
            .map(|(name, set)| {
                let summary = run(&recipe, &opts(&dir(name), false, None, set)).unwrap();
                (name, summary.final_checkpoint)
            })
            .collect();
        for (a, (name_a, final_a)) in finals.iter().enumerate() {
            for (name_b, final_b) in &finals[a + 1..] {
                assert_ne!(weights(final_a), weights(final_b), "{name_a} = {name_b}");
            }
        }
        assert_resumes_exactly(&recipe, &dir("labels-b"), &labels, 9, &finals[0].1);
        assert_resumes_exactly(&recipe, &dir("teacher-b"), &teacher, 9, &finals[1].1);
    }
    // The target without the term, or outside a decay stage, is a recipe error.
    for (set, needle) in [
        (vec![teacher_target], "set ce_weight too"),
        (
            vec!["stage.0.ce_target=\"teacher\"", "stage.1.ce_weight=1"],
            "only a decay stage",
        ),
    ] {
        let e = run(&recipe, &opts(&tmp.path().join("e"), false, None, &set))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ce_target") && e.contains(needle), "{e}");
    }
}

#[test]
fn train_gamma_is_a_decay_option() {
    let r =
        zerobias::train::Recipe::parse(TINY, &["stage.1.train_gamma=true".into()], "t").unwrap();
    assert!(r.stages[1].train_gamma && !r.stages[0].train_gamma);
    let e = zerobias::train::Recipe::parse(TINY, &["stage.0.train_gamma=true".into()], "t")
        .unwrap_err()
        .to_string();
    assert!(e.contains("stage[0].train_gamma"), "{e}");
}

#[test]
fn feature_weight_and_bn_variance_are_decay_options() {
    let r = zerobias::train::Recipe::parse(
        TINY,
        &[
            "stage.1.feature_weight=0.5".into(),
            "stage.1.bn_variance=\"second_moment\"".into(),
        ],
        "t",
    )
    .unwrap();
    assert_eq!(r.stages[1].feature_weight, 0.5);
    assert_eq!(
        r.stages[1].bn_variance,
        zerobias::train::BnVariance::SecondMoment
    );
    assert_eq!(r.stages[0].bn_variance, zerobias::train::BnVariance::Fixed);
    // Round trip through the run's recipe.toml.
    let again = zerobias::train::Recipe::parse(&r.to_toml(), &[], "t").unwrap();
    assert_eq!(again.stages, r.stages);
    for (set, field) in [
        ("stage.0.feature_weight=1", "stage[0].feature_weight"),
        ("stage.1.feature_weight=-1", "stage[1].feature_weight"),
        (
            "stage.0.bn_variance=\"second_moment\"",
            "stage[0].bn_variance",
        ),
        ("stage.1.bn_variance=\"data\"", "bn_variance"),
        ("stage.0.compensate=true", "stage[0].compensate"),
        ("stage.0.freeze_biases=true", "stage[0].freeze_biases"),
        ("stage.0.mixup=true", "stage[0].mixup"),
        ("stage.0.anchor=1", "stage[0].anchor"),
        ("stage.1.anchor=-1", "stage[1].anchor"),
        ("stage.0.ema=0.9", "stage[0].ema"),
        ("stage.1.ema=1", "stage[1].ema"),
        ("stage.1.ema=-0.5", "stage[1].ema"),
        (
            "stage.0.standardize_logits=true",
            "stage[0].standardize_logits",
        ),
        ("stage.0.norm_free_logits=true", "stage[0].norm_free_logits"),
    ] {
        let e = zerobias::train::Recipe::parse(TINY, &[set.into()], "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains(field), "{set}: {e}");
    }
    // z-scored logits have no scale left to free.
    let both = [
        "stage.1.norm_free_logits=true".to_string(),
        "stage.1.standardize_logits=true".to_string(),
    ];
    let e = zerobias::train::Recipe::parse(TINY, &both, "t")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("stage[1].norm_free_logits") && e.contains("standardize_logits"),
        "{e}"
    );
}

/// `ema`: the zero phase's average begins as the zeroed student, follows
/// a ← d·a + (1 − d)·w each step, becomes the final student (no bias), and resumes exactly.
#[test]
fn ema_student_is_the_zero_phase_average_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tmp.path().join("tiny.toml");
    std::fs::write(&recipe, TINY).unwrap();
    for arch in [&[][..], &RESNET[..]] {
        let set: Vec<&str> = arch.iter().copied().chain(["stage.1.ema=0.5"]).collect();
        let dir = |n: &str| tmp.path().join(format!("{n}-{}", arch.len()));
        let a = run(&recipe, &opts(&dir("a"), false, None, &set)).unwrap();
        assert_eq!(a.final_max_abs_bias, 0.0);
        let last_weights = a.student_top1_last_weights;
        assert!(
            last_weights.is_some_and(|t| (0.0..=1.0).contains(&t)),
            "the last weights' top-1 is reported beside the average's: {last_weights:?}"
        );
        // Train 6 steps; decay: rescales after global steps 8 and 10 (zero), then 3 steps.
        let all = |step: usize| -> HashMap<String, Vec<f32>> {
            let path = dir("a").join(format!("step-{step:06}.safetensors"));
            let (t, _) =
                zerobias::checkpoint::read_tensors(&path, &candle_core::Device::Cpu).unwrap();
            t.into_iter()
                .map(|(k, v)| (k, v.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
                .collect()
        };
        let (at8, at10, at12, last) = (all(8), all(10), all(12), all(13));
        assert!(
            !at8.keys().any(|k| k.starts_with("optim.avg.")),
            "averaging began before the zero phase"
        );
        let student = tensors(&a.final_checkpoint);
        let mut trained = 0;
        for (name, w) in &student {
            let Some(avg10) = at10.get(&format!("optim.avg.{name}")) else {
                continue;
            };
            assert_eq!(
                avg10, &at10[name],
                "{name}: the average begins as the weights"
            );
            let (avg12, w13) = (&at12[&format!("optim.avg.{name}")], &last[name]);
            for i in 0..w.len() {
                let want = 0.5 * avg12[i] + 0.5 * w13[i];
                assert!(
                    (w[i] - want).abs() <= 1e-6 * want.abs().max(1e-3),
                    "{name}[{i}]"
                );
            }
            if w != w13 {
                trained += 1;
            }
        }
        assert!(trained > 0, "the final student is the last step's weights");
        assert_resumes_exactly(&recipe, &dir("b"), &set, 12, &a.final_checkpoint);
    }
}

/// `anchor` = 1/lr pulls every weight and γ all the way back to the teacher's each step,
/// while the biases still decay to zero; resumed, the same network.
#[test]
fn anchor_pulls_weights_to_the_teacher_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tmp.path().join("tiny.toml");
    std::fs::write(&recipe, TINY).unwrap();
    for arch in [&[][..], &RESNET[..]] {
        // lr: stage.1's 1e-4 (both archs' decay stage).
        let free_set: Vec<&str> = arch
            .iter()
            .copied()
            .chain(["stage.1.train_gamma=true"])
            .collect();
        let mut set = free_set.clone();
        set.push("stage.1.anchor=1e4");
        let dir = |n: &str| tmp.path().join(format!("{n}-{}", arch.len()));
        let a = run(&recipe, &opts(&dir("a"), false, None, &set)).unwrap();
        assert_eq!(a.final_max_abs_bias, 0.0);
        let teacher = tensors(&dir("a").join("teacher-stage1.safetensors"));
        let student = tensors(&a.final_checkpoint);
        let free = run(&recipe, &opts(&dir("f"), false, None, &free_set)).unwrap();
        let free = tensors(&free.final_checkpoint);
        let (mut pulled, mut moved) = (0, 0);
        for (name, w) in &student {
            // Conv, linear and BN γ: the torchvision names end in `.weight`.
            if !name.ends_with(".weight") {
                continue;
            }
            for (x, t) in w.iter().zip(&teacher[name]) {
                assert!(
                    (x - t).abs() <= 1e-6 * t.abs().max(1e-3),
                    "{name}: {x} vs {t}"
                );
            }
            pulled += 1;
            moved += usize::from(free[name] != teacher[name]);
        }
        assert!(
            pulled >= 14 && moved > 0,
            "{pulled} weights, {moved} moved unanchored"
        );
        assert_resumes_exactly(&recipe, &dir("b"), &set, 9, &a.final_checkpoint);
    }
}
