use super::method::{Maps, Method};
use crate::error::Result;
use crate::models::Classifier;
use crate::taps::Recorded;

/// Σ_RGB |∂f/∂x|.
pub struct Gradient;

impl Method for Gradient {
    fn outputs(&self, _model: &dyn Classifier) -> Vec<String> {
        vec!["grad".into()]
    }
    fn compute(&self, rec: &Recorded, out: &mut Maps) -> Result<()> {
        out.insert("grad", rec.input_grad.abs()?.sum(1)?);
        Ok(())
    }
}
