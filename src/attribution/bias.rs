use candle_core::Tensor;

use super::method::{Maps, Method};
use crate::error::Result;
use crate::models::Classifier;
use crate::taps::{ModuleRecord, Recorded};

/// Bias attribution of each bias-carrying module: Σ_channels b ⊙ ∂f/∂(module output),
/// [N, H, W] for conv/BN modules and [N] for linear ones.
pub struct BiasAttribution;

pub(crate) fn module_map(m: &ModuleRecord) -> Result<Tensor> {
    if m.grad.rank() == 4 {
        return Ok(stats(m)?.signed.clone());
    }
    let c = m.bias.dim(0)?;
    Ok(m.grad.broadcast_mul(&m.bias.reshape((1, c))?)?.sum(1)?)
}

/// The fused channel statistics of a conv/BN module, computed once.
pub(crate) fn stats(m: &ModuleRecord) -> Result<&zerobias_kernels::reduce::ChannelStats> {
    if m.stats.get().is_none() {
        let s = zerobias_kernels::reduce::channel_stats(&m.grad, &m.bias)?;
        let _ = m.stats.set(s);
    }
    Ok(m.stats.get().expect("set above"))
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
