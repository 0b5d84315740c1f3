use candle_core::Tensor;

use super::act::{act_map, input_times_grad};
use super::method::{Maps, Method};
use super::ops::{layer, rescale_per_sample, upsample};
use crate::error::{Error, Result};
use crate::models::Classifier;
use crate::taps::Recorded;

/// The paper's Eq. 16 aggregates agg.{l0} for each requested start layer l0, from l0 to L,
/// with Ψ = bilinear ∘ rescale ∘ abs: each |a^{h,l}| min-max rescaled over H×W per image,
/// upsampled (align_corners=False) to the input size, averaged over layers. agg.0 includes
/// the input attributions a^{h,0} (Fig. 6's cyan line). Every layer's Ψ map is computed
/// once and the aggregates are suffix sums.
pub struct Aggregate {
    pub from: Vec<usize>,
}

impl Aggregate {
    /// agg.{l0} for every l0 in 0..=L.
    pub fn all(model: &dyn Classifier) -> Self {
        Self {
            from: (0..=model.num_layers()).collect(),
        }
    }
}

impl Method for Aggregate {
    fn outputs(&self, _model: &dyn Classifier) -> Vec<String> {
        self.from.iter().map(|l| format!("agg.{l}")).collect()
    }
    fn compute(&self, rec: &Recorded, out: &mut Maps) -> Result<()> {
        let top = rec.acts.len();
        let Some(&lowest) = self.from.iter().min() else {
            return Ok(());
        };
        if let Some(bad) = self.from.iter().find(|&&l| l > top) {
            return Err(Error::input(format!(
                "agg.{bad}: the aggregate starts at a layer in 0..={top}"
            )));
        }
        let (_, _, h, w) = rec.input.dims4()?;
        let mut suffix: Option<Tensor> = None;
        for l in (lowest..=top).rev() {
            let m = if l == 0 {
                input_times_grad(rec)?
            } else {
                act_map(layer(rec, l)?)?
            };
            let m = m.abs()?;
            let m = upsample(&rescale_per_sample(&m, 0.0)?, h, w, false)?;
            let s = match suffix {
                None => m,
                Some(s) => (s + m)?,
            };
            if self.from.contains(&l) {
                out.insert(format!("agg.{l}"), (&s / (top - l + 1) as f64)?);
            }
            suffix = Some(s);
        }
        Ok(())
    }
}
