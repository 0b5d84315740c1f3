//! Writers for what people read: tables, pictures and TensorBoard logs.

pub mod progress;
pub mod tensorboard;
