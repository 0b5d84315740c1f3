//! Writers for what people read: tables, pictures and TensorBoard logs.

pub mod attribution;
pub mod eval_plots;
pub mod figures;
pub mod plot;
pub mod progress;
pub mod tensorboard;
