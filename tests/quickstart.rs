//! The README's main jobs, end to end: recipes/quickstart.toml (quickstart-resnet.toml)
//! trains a narrow VGG-16 (ResNet-50) on the built-in synthetic data and decays all its
//! biases to zero. The bar: the zero-bias student keeps at least 99% of the teacher's
//! top-1, while zeroing the biases outright does not.
//!
//! Set ZEROBIAS_QUICKSTART_SHORT=1 to run a shortened schedule (a smoke test).

use zerobias::train::{run, RunOptions};

#[test]
fn quickstart_decays_biases_to_zero_and_keeps_accuracy() {
    // Seeds and conv paths land at 96-99% (chance is 0.1).
    decays_and_keeps("recipes/quickstart.toml", 0.9);
}

/// The ResNet quickstart (BatchNorm): its narrow teachers land at 55-63%.
#[test]
fn resnet_quickstart_decays_biases_to_zero_and_keeps_accuracy() {
    decays_and_keeps("recipes/quickstart-resnet.toml", 0.5);
}

/// Runs `recipe` as the README does and checks every bias ends at zero, the teacher reaches
/// `min_teacher`, and the zero-bias student keeps ≥ 99% of its top-1.
fn decays_and_keeps(recipe: &str, min_teacher: f64) {
    // The same runtime set-up as the CLI, so the test trains exactly what the README runs.
    zerobias::init_cpu_runtime();
    let recipe = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(recipe);
    let dir = tempfile::tempdir().unwrap();
    let short = std::env::var_os("ZEROBIAS_QUICKSTART_SHORT").is_some();
    let overrides: Vec<String> = if short {
        [
            "stage.0.steps=200",
            "stage.0.restart_patience=0",
            "stage.1.rescales=2",
            "stage.1.zero_steps=20",
            "data.val_len=200",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    } else {
        Vec::new()
    };
    let opts = RunOptions {
        run_dir: Some(dir.path().join("run")),
        resume: false,
        overrides,
        quiet: true,
        stop_after: None,
        force: false,
    };
    let s = run(&recipe, &opts).unwrap();
    println!("{}", s.table());
    assert_eq!(
        s.final_max_abs_bias, 0.0,
        "every bias must end at exactly zero"
    );
    assert!(s.final_checkpoint.exists() && s.run_dir.join("summary.json").exists());
    if !short {
        assert!(
            s.teacher_top1 >= min_teacher,
            "teacher top-1 {} (chance is 0.1)",
            s.teacher_top1
        );
        assert!(
            s.retention >= 0.99,
            "zero-bias student keeps {:.2}% of the teacher's top-1",
            100.0 * s.retention
        );
        assert!(
            s.brute_force_zero_top1 < s.student_top1,
            "zeroing biases outright should hurt more than decaying them"
        );
    }
}

/// Largest spread of teacher top-1 (as a fraction) allowed across seeds and conv paths:
/// teachers trained from scratch should land within a few points of each other (before
/// the init and schedule were made robust they ranged from 70% to 93%).
const TEACHER_SPREAD: f64 = 0.05;

/// The same for the ResNet quickstart's weaker teachers (a stride-4 stem on 32-px inputs):
/// measured 54.9-63.0% over the runs below (docs/decay.md).
const RESNET_TEACHER_SPREAD: f64 = 0.10;

/// One quickstart run in its own process: the kernel switches (`ZEROBIAS_*`) are read once
/// per process, so each conv path needs a process of its own.
struct PathRun {
    seed: u64,
    path: &'static str,
    env: &'static [(&'static str, &'static str)],
}

const IM2COL: &[(&str, &str)] = &[("ZEROBIAS_DIRECT_CONV", "0")];
const GEMM_CRATE: &[(&str, &str)] = &[("ZEROBIAS_DIRECT_CONV", "0"), ("ZEROBIAS_GEMM", "crate")];

/// The quickstart's result is a property of the method, not of one rounding path: seeds
/// 1–3 on this machine's default kernels, seeds 0–3 on im2col with our matrix kernel, and
/// one seed on im2col with the `gemm` crate (what a CPU without AVX-512 runs). Two runs at
/// a time, one thread each (another summation order again). About 15 minutes on 2 cores:
/// ignored by default, run by `.ci/run`.
#[test]
#[ignore]
fn quickstart_keeps_accuracy_across_seeds_and_conv_paths() {
    let mut runs: Vec<PathRun> = (1..4)
        .map(|seed| PathRun {
            seed,
            path: "default",
            env: &[],
        })
        .collect();
    runs.extend((0..4).map(|seed| PathRun {
        seed,
        path: "im2col",
        env: IM2COL,
    }));
    // The `gemm` crate sums in the order of our matrix kernel (bit for bit: measured, the
    // same runs as im2col), so one seed suffices to keep that true.
    runs.push(PathRun {
        seed: 2,
        path: "im2col+gemm-crate",
        env: GEMM_CRATE,
    });
    keeps_accuracy("recipes/quickstart.toml", &runs, TEACHER_SPREAD);
}

/// The ResNet quickstart (BatchNorm) on the same footing: seeds 0–2 on the default
/// kernels and on im2col, one seed on the `gemm` crate. About 25 minutes on 2 cores.
#[test]
#[ignore]
fn resnet_quickstart_keeps_accuracy_across_seeds_and_conv_paths() {
    let mut runs = Vec::new();
    for (path, env) in [("default", &[][..]), ("im2col", IM2COL)] {
        runs.extend((0..3).map(|seed| PathRun { seed, path, env }));
    }
    runs.push(PathRun {
        seed: 1,
        path: "im2col+gemm-crate",
        env: GEMM_CRATE,
    });
    keeps_accuracy(
        "recipes/quickstart-resnet.toml",
        &runs,
        RESNET_TEACHER_SPREAD,
    );
}

/// Runs `recipe` for every entry of `runs`, two at a time, and asserts every bias ends at
/// zero, every student keeps ≥ 99% of its teacher's top-1, and the teachers land within
/// `spread` of each other.
fn keeps_accuracy(recipe: &str, runs: &[PathRun], spread: f64) {
    let recipe = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(recipe);
    let dir = tempfile::tempdir().unwrap();
    let mut results = Vec::new();
    for pair in runs.chunks(2) {
        let children: Vec<_> = pair
            .iter()
            .map(|r| {
                let run_dir = dir.path().join(format!("{}-s{}", r.path, r.seed));
                let child = std::process::Command::new(env!("CARGO_BIN_EXE_zerobias"))
                    .arg("decay")
                    .arg(&recipe)
                    .arg("--run-dir")
                    .arg(&run_dir)
                    .arg("--set")
                    .arg(format!("seed={}", r.seed))
                    .env("RAYON_NUM_THREADS", "1")
                    .envs(r.env.iter().copied())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                (r, run_dir, child)
            })
            .collect();
        for (r, run_dir, child) in children {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "seed {} on {}: {}",
                r.seed,
                r.path,
                String::from_utf8_lossy(&out.stderr)
            );
            let s: serde_json::Value =
                serde_json::from_slice(&std::fs::read(run_dir.join("summary.json")).unwrap())
                    .unwrap();
            let get = |k: &str| s[k].as_f64().unwrap();
            println!(
                "seed {} {:<18} teacher {:.1}%  student {:.1}%  retention {:.2}%  biases zeroed outright {:.1}%",
                r.seed,
                r.path,
                100.0 * get("teacher_top1"),
                100.0 * get("student_top1"),
                100.0 * get("retention"),
                100.0 * get("brute_force_zero_top1")
            );
            results.push((
                r.seed,
                r.path,
                get("teacher_top1"),
                get("retention"),
                get("final_max_abs_bias"),
            ));
        }
    }
    for &(seed, path, _, retention, max_bias) in &results {
        assert_eq!(
            max_bias, 0.0,
            "seed {seed} on {path}: every bias must end at exactly zero"
        );
        assert!(
            retention >= 0.99,
            "seed {seed} on {path}: the zero-bias student keeps {:.2}% of its teacher's top-1",
            100.0 * retention
        );
    }
    let teachers: Vec<f64> = results.iter().map(|r| r.2).collect();
    let (lo, hi) = teachers
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &t| (lo.min(t), hi.max(t)));
    assert!(
        hi - lo <= spread,
        "teachers range from {:.1}% to {:.1}%: training from scratch should not depend this much on seed and rounding",
        100.0 * lo,
        100.0 * hi
    );
}
