//! Evaluation of explanations: the flip metric with a noise baseline of other images'
//! maps, and the bias survey.

pub mod flip;
pub mod rows;
pub mod run;
pub mod survey;
pub mod tables;

pub use flip::{FlipEvaluator, FlipOutcome, Order};
pub use rows::Row;
