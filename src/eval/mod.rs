//! Evaluation of explanations: the flip metric with a noise baseline of other images'
//! maps, and the bias survey.

pub mod flip;
pub mod run;
pub mod survey;

pub use flip::{FlipEvaluator, FlipOutcome, Order};
