//! What a run reports: `summary.json` of a finished run and of one stopped by a
//! non-finite value, and the closing table.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::run_dir::latest_checkpoint;
use super::state::{CurvePoint, TrainState};
use crate::error::{write_atomic, Error};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    pub recipe: String,
    pub run_dir: PathBuf,
    pub arch: String,
    pub teacher_top1: f64,
    pub student_top1: f64,
    pub brute_force_zero_top1: f64,
    pub retention: f64,
    /// Share of validation images on which the zero-bias student's top-1 class is its
    /// teacher's (absent without a decay stage). Retention can pass 100% with agreement
    /// below it; |student − teacher top-1| is at most 1 − agreement.
    #[serde(default)]
    pub agreement: Option<f64>,
    /// With `ema`: the top-1 of the student's last weights, before their average replaced
    /// them (absent without an average).
    #[serde(default)]
    pub student_top1_last_weights: Option<f64>,
    pub teacher_checkpoint: Option<PathBuf>,
    pub final_checkpoint: PathBuf,
    pub tensorboard_dir: PathBuf,
    pub steps: usize,
    pub seconds: f64,
    pub bias_parameters: usize,
    pub final_max_abs_bias: f32,
    pub completed: bool,
    /// Batches skipped for a non-finite loss or gradient (`skip_non_finite`), all stages.
    #[serde(default)]
    pub skipped_non_finite: usize,
    /// Teacher with biases set to each scale vs the student, at every rescale.
    #[serde(default)]
    pub decay_curve: Vec<CurvePoint>,
}

/// `summary.json` of a run stopped by a non-finite loss, gradient, weight or result: no
/// accuracy of the diverged model is reported.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IncompleteRun {
    pub recipe: String,
    pub run_dir: PathBuf,
    pub completed: bool,
    pub reason: String,
    pub stage: usize,
    pub stage_step: usize,
    pub global_step: usize,
    /// The newest checkpoint on disk (all checkpoints hold finite values only).
    pub last_good_checkpoint: Option<PathBuf>,
    /// Teacher top-1 measured before the failure, if any.
    pub teacher_top1: Option<f64>,
    pub skipped_non_finite: usize,
}

/// What a stopped run's summary needs, kept up to date by the training loop.
#[derive(Default)]
pub(super) struct Progress {
    pub(super) recipe: String,
    pub(super) run_dir: Option<PathBuf>,
    pub(super) state: Option<TrainState>,
    pub(super) teacher_top1: Option<f64>,
}

/// A non-finite value stopped the run: record it in summary.json (completed = false) and
/// say where the last good checkpoint is.
pub(super) fn stop_non_finite(p: &Progress, reason: String) -> Error {
    let Some(run_dir) = &p.run_dir else {
        return Error::Diverged(reason);
    };
    let state = p.state.clone().unwrap_or_else(TrainState::start);
    let last = latest_checkpoint(run_dir);
    let incomplete = IncompleteRun {
        recipe: p.recipe.clone(),
        run_dir: run_dir.clone(),
        completed: false,
        reason: reason.clone(),
        stage: state.stage,
        stage_step: state.stage_step,
        global_step: state.global_step,
        last_good_checkpoint: last.clone(),
        teacher_top1: p.teacher_top1.filter(|v| v.is_finite()),
        skipped_non_finite: state.skipped_non_finite_total,
    };
    let summary_path = run_dir.join("summary.json");
    let written = write_atomic(
        &summary_path,
        serde_json::to_string_pretty(&incomplete)
            .unwrap_or_default()
            .as_bytes(),
    );
    let si = state.stage;
    Error::Diverged(format!(
        "{reason}; last good checkpoint: {}; {}. Lower stage[{si}].lr and continue with --resume --force --set stage.{si}.lr=..., or allow skipped batches with stage[{si}].skip_non_finite",
        last.map(|l| l.display().to_string())
            .unwrap_or_else(|| "none yet".into()),
        match written {
            Ok(()) => format!("{} records the run as incomplete", summary_path.display()),
            Err(e) => format!("summary.json could not be written ({e})"),
        }
    ))
}

impl Summary {
    /// The closing table of a run.
    pub fn table(&self) -> String {
        let pct = |v: f64| {
            if v.is_finite() {
                format!("{:.2}%", 100.0 * v)
            } else {
                "n/a".into()
            }
        };
        let mut s = String::new();
        s.push_str(&format!("\n  {} ({})\n", self.recipe, self.arch));
        s.push_str(&format!(
            "  {:<40} {}\n",
            "teacher top-1",
            pct(self.teacher_top1)
        ));
        // A recipe without a decay stage has no student, and its final model keeps its
        // biases: say so rather than report it as a zero-bias student.
        let decayed = self.brute_force_zero_top1.is_finite();
        if decayed {
            s.push_str(&format!(
                "  {:<40} {}\n",
                "zero-bias student top-1 (decayed)",
                pct(self.student_top1)
            ));
            if let Some(last) = self.student_top1_last_weights {
                s.push_str(&format!(
                    "  {:<40} {}\n",
                    "  its last weights, not averaged (ema)",
                    pct(last)
                ));
            }
            s.push_str(&format!(
                "  {:<40} {}\n",
                "teacher with biases set to zero",
                pct(self.brute_force_zero_top1)
            ));
            s.push_str(&format!(
                "  {:<40} {}\n",
                "retention (student / teacher)",
                pct(self.retention)
            ));
            if let Some(a) = self.agreement {
                s.push_str(&format!(
                    "  {:<40} {}\n",
                    "same top-1 class as the teacher",
                    pct(a)
                ));
            }
        } else {
            s.push_str(&format!(
                "  {:<40} {}\n",
                "biases", "kept (the recipe has no decay stage)"
            ));
        }
        s.push_str(&format!(
            "  {:<40} {} ({} values, max |b| = {:.1e})\n",
            "bias parameters", "all", self.bias_parameters, self.final_max_abs_bias
        ));
        s.push_str(&format!("  {:<40} {}\n", "steps", self.steps));
        s.push_str(&format!("  {:<40} {:.1} s\n", "wall time", self.seconds));
        if let Some(t) = &self.teacher_checkpoint {
            s.push_str(&format!("  {:<40} {}\n", "teacher checkpoint", t.display()));
        }
        s.push_str(&format!(
            "  {:<40} {}\n",
            if decayed {
                "zero-bias checkpoint"
            } else {
                "final checkpoint"
            },
            self.final_checkpoint.display()
        ));
        s.push_str(&format!(
            "  {:<40} {}\n",
            "summary",
            self.run_dir.join("summary.json").display()
        ));
        s.push_str(&format!(
            "\n  view the run: tensorboard --logdir {}\n",
            self.tensorboard_dir.display()
        ));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(brute_force: f64) -> Summary {
        Summary {
            recipe: "r".into(),
            run_dir: "run".into(),
            arch: "vgg16".into(),
            teacher_top1: 0.7,
            student_top1: 0.69,
            brute_force_zero_top1: brute_force,
            retention: 0.69 / 0.7,
            agreement: brute_force.is_finite().then_some(0.95),
            student_top1_last_weights: None,
            teacher_checkpoint: None,
            final_checkpoint: "run/final.safetensors".into(),
            tensorboard_dir: "run/tb".into(),
            steps: 10,
            seconds: 1.0,
            bias_parameters: 5,
            final_max_abs_bias: 0.0,
            completed: true,
            skipped_non_finite: 0,
            decay_curve: Vec::new(),
        }
    }

    #[test]
    fn an_averaged_student_is_reported_beside_its_last_weights() {
        let plain = summary(0.1).table();
        assert!(!plain.contains("not averaged"), "{plain}");
        let averaged = Summary {
            student_top1_last_weights: Some(0.675),
            ..summary(0.1)
        }
        .table();
        assert!(
            averaged.contains("    its last weights, not averaged (ema)   67.50%"),
            "{averaged}"
        );
    }

    #[test]
    fn a_run_without_decay_reports_no_student() {
        let decayed = summary(0.1).table();
        assert!(decayed.contains("zero-bias student top-1 (decayed)        69.00%"));
        assert!(decayed.contains("retention (student / teacher)            98.57%"));
        assert!(decayed.contains("same top-1 class as the teacher          95.00%"));
        let trained = summary(f64::NAN).table();
        assert!(!trained.contains("zero-bias"), "{trained}");
        assert!(!trained.contains("retention"), "{trained}");
        assert!(!trained.contains("same top-1"), "{trained}");
        assert!(trained.contains("kept (the recipe has no decay stage)"));
        assert!(trained.contains("final checkpoint"));
    }
}
