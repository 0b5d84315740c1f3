use candle_core::Tensor;

use super::method::{Maps, Method};
use crate::error::Result;
use crate::models::Classifier;
use crate::taps::{ActRecord, Recorded};

/// a^{h,l} = Σ_channels h ⊙ ∂f/∂h at layer l; a^{h,0} = Σ_RGB x ⊙ ∂f/∂x.
pub struct Activation;

pub(crate) fn act_map(a: &ActRecord) -> Result<Tensor> {
    if let Some(m) = a.map.get() {
        return Ok(m.clone());
    }
    let m = zerobias_kernels::reduce::channel_dot(&a.value, &a.grad)?;
    Ok(a.map.get_or_init(|| m).clone())
}

pub(crate) fn input_times_grad(rec: &Recorded) -> Result<Tensor> {
    Ok((&rec.input * &rec.input_grad)?.sum(1)?)
}

impl Method for Activation {
    fn outputs(&self, model: &dyn Classifier) -> Vec<String> {
        (0..=model.num_layers())
            .map(|l| format!("act.{l}"))
            .collect()
    }
    fn compute(&self, rec: &Recorded, out: &mut Maps) -> Result<()> {
        out.insert("act.0", input_times_grad(rec)?);
        for a in &rec.acts {
            out.insert(format!("act.{}", a.layer), act_map(a)?);
        }
        Ok(())
    }
}
