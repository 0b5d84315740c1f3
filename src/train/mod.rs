//! The bias-decay trainer: recipes with `train` stages (supervised, for teachers) and
//! `decay` stages (distillation from the frozen original while all bias handles are
//! rescaled to zero on a schedule, then held at zero).
//!
//! [`run`] builds a `Trainer` (trainer.rs: the stage loop), which keeps its run directory
//! through run_dir.rs and reports through summary.rs.

mod bn_variance;
mod compensate;
mod evaluate;
pub mod loss;
pub mod optim;
pub mod recipe;
mod recipe_fields;
mod run_dir;
pub mod schedule;
mod setup;
mod state;
mod summary;
mod trainer;

use std::path::Path;

use crate::error::{Error, Result};
pub use evaluate::evaluate_top1;
pub use recipe::{BnVariance, Recipe, Schedule, Stage, StageKind};
pub use run_dir::latest_checkpoint;
pub use state::{CurvePoint, TrainState};
pub use summary::{IncompleteRun, Summary};
pub use trainer::RunOptions;

/// Run a recipe end to end.
pub fn run(recipe_path: &Path, opts: &RunOptions) -> Result<Summary> {
    let mut progress = summary::Progress::default();
    let result = trainer::Trainer::new(recipe_path, opts, &mut progress).and_then(|t| t.run());
    match result {
        Err(Error::Diverged(reason) | Error::NonFinite(reason)) => {
            Err(summary::stop_non_finite(&progress, reason))
        }
        other => other,
    }
}
