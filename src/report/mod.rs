//! Writers for what people read: tables, pictures and TensorBoard logs. `report` reads the
//! results of `eval`; `eval` never uses `report`.

pub mod attribution;
pub mod eval_plots;
pub mod figures;
pub mod page;
pub mod paper;
pub mod plot;
pub mod survey_plots;
pub mod tensorboard;

/// The progress bars moved to [`crate::progress`] (used by `eval` and `train` too).
pub use crate::progress;
