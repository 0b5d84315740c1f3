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
        for m in rec.modules.iter().filter(|m| m.grad.rank() == 4) {
            let c = m.bias.dim(0)?;
            let term = m
                .grad
                .broadcast_mul(&m.bias.reshape((1, c, 1, 1))?)?
                .abs()?;
            // Upsampling is linear per channel, so summing channels first is exact and
            // avoids upsampling every channel.
            let summed = rescale_per_sample(&term, EPS)?.sum(1)?;
            cam = (cam + upsample(&summed, h, w, true)?)?;
        }
        out.insert("fullgrad", cam);
        Ok(())
    }
}
