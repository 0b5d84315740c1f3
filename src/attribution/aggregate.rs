use candle_core::Tensor;

use super::act::act_map;
use super::{layer, rescale_per_sample, upsample, Maps, Method};
use crate::error::{Error, Result};
use crate::models::Classifier;
use crate::taps::Recorded;

/// The paper's Eq. 16 aggregate from layer `from` to L, with Ψ = bilinear ∘ rescale ∘ abs:
/// each |a^{h,l}| min-max rescaled over H×W per image, upsampled (align_corners=False) to
/// the input size, averaged over layers.
pub struct Aggregate {
    pub from: usize,
}

impl Method for Aggregate {
    fn outputs(&self, _model: &dyn Classifier) -> Vec<String> {
        vec![format!("agg.{}", self.from)]
    }
    fn compute(&self, rec: &Recorded, out: &mut Maps) -> Result<()> {
        let top = rec.acts.len();
        if self.from == 0 || self.from > top {
            return Err(Error::input(format!(
                "agg.{}: the aggregate starts at a layer in 1..={top}",
                self.from
            )));
        }
        let (_, _, h, w) = rec.input.dims4()?;
        let mut sum: Option<Tensor> = None;
        for l in self.from..=top {
            let m = act_map(layer(rec, l)?)?.abs()?;
            let m = upsample(&rescale_per_sample(&m, 0.0)?, h, w, false)?;
            sum = Some(match sum {
                None => m,
                Some(s) => (s + m)?,
            });
        }
        let count = (top - self.from + 1) as f64;
        if let Some(s) = sum {
            out.insert(format!("agg.{}", self.from), (s / count)?);
        }
        Ok(())
    }
}
