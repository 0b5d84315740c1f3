use candle_core::Tensor;

use super::{rescale_per_sample, upsample, Maps, Method};
use crate::error::Result;
use crate::models::Classifier;
use crate::taps::Recorded;

/// FullGrad with the official code's post-processing: |·|, per-sample min-max over the
/// whole C×H×W tensor (ε = 1e-6 on the max), bilinear upsampling with align_corners=True,
/// channel sum; input term x ⊙ ∂f/∂x; only conv/BN (4-D) bias terms; no final rescale.
pub struct FullGrad;

const EPS: f64 = 1e-6;

impl Method for FullGrad {
    fn outputs(&self, _model: &dyn Classifier) -> Vec<String> {
        vec!["fullgrad".into()]
    }
    fn compute(&self, rec: &Recorded, out: &mut Maps) -> Result<()> {
        let (_, _, h, w) = rec.input.dims4()?;
        let input_term = (&rec.input * &rec.input_grad)?.abs()?;
        let mut cam = rescale_per_sample(&input_term, EPS)?.sum(1)?;
        // Upsampling is linear (per channel too), so channels and then all terms of equal
        // resolution are summed first and each resolution is upsampled once.
        let mut by_size: Vec<((usize, usize), Tensor)> = Vec::new();
        for m in rec.modules.iter().filter(|m| m.grad.rank() == 4) {
            // Σ_c (|v| − min)/(max − min + ε) = (Σ_c |v| − C·min)/(max − min + ε), with
            // min/max of |v| = |b ⊙ ∂f/∂out| over C×H×W per image: the official rescale
            // without materialising it.
            let c = m.bias.dim(0)? as f64;
            let s = super::bias::stats(m)?;
            let n = s.min_abs.dim(0)?;
            let lo = s.min_abs.reshape((n, 1, 1))?;
            let denom = ((s.max_abs.reshape((n, 1, 1))? - &lo)? + EPS)?;
            let summed = s.abs_sum.broadcast_sub(&(lo * c)?)?.broadcast_div(&denom)?;
            let (_, mh, mw) = summed.dims3()?;
            match by_size.iter_mut().find(|(k, _)| *k == (mh, mw)) {
                Some((_, acc)) => *acc = (&*acc + summed)?,
                None => by_size.push(((mh, mw), summed)),
            }
        }
        for (_, t) in by_size {
            cam = (cam + upsample(&t, h, w, true)?)?;
        }
        out.insert("fullgrad", cam);
        Ok(())
    }
}
