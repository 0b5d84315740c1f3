//! The README's main job, end to end: recipes/quickstart.toml trains a narrow VGG-16 on
//! the built-in synthetic data and decays all its biases to zero. The bar: the zero-bias
//! student keeps at least 99% of the teacher's top-1, while zeroing the biases outright
//! does not.
//!
//! Set ZEROBIAS_QUICKSTART_SHORT=1 to run a shortened schedule (a smoke test).

use zerobias::train::{run, RunOptions};

#[test]
fn quickstart_decays_biases_to_zero_and_keeps_accuracy() {
    // The same runtime set-up as the CLI, so the test trains exactly what the README runs.
    zerobias::init_cpu_runtime();
    let recipe = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/quickstart.toml");
    let dir = tempfile::tempdir().unwrap();
    let short = std::env::var_os("ZEROBIAS_QUICKSTART_SHORT").is_some();
    let overrides: Vec<String> = if short {
        [
            "stage.0.steps=200",
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
            s.teacher_top1 >= 0.75,
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
