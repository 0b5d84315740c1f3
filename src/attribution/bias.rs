use candle_core::Tensor;

use super::{Maps, Method};
use crate::error::Result;
use crate::models::Classifier;
use crate::taps::{ModuleRecord, Recorded};

/// Bias attribution of each bias-carrying module: Σ_channels b ⊙ ∂f/∂(module output),
/// [N, H, W] for conv/BN modules and [N] for linear ones.
pub struct BiasAttribution;

pub(crate) fn module_map(m: &ModuleRecord) -> Result<Tensor> {
    let c = m.bias.dim(0)?;
    let b = match m.grad.rank() {
        4 => m.bias.reshape((1, c, 1, 1))?,
        _ => m.bias.reshape((1, c))?,
    };
    Ok(m.grad.broadcast_mul(&b)?.sum(1)?)
}

impl Method for BiasAttribution {
    fn outputs(&self, model: &dyn Classifier) -> Vec<String> {
        model
            .bias_modules()
            .into_iter()
            .map(|(m, _)| format!("bias.{m}"))
            .collect()
    }
    fn compute(&self, rec: &Recorded, out: &mut Maps) -> Result<()> {
        for m in &rec.modules {
            out.insert(format!("bias.{}", m.name), module_map(m)?);
        }
        Ok(())
    }
}
