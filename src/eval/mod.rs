//! Evaluation of explanations: the flip metric with a noise baseline of other images'
//! maps, and the bias survey.

pub mod flip;
pub mod run;

pub use flip::{FlipEvaluator, FlipOutcome, Order};
