use candle_core::Tensor;

use super::act::input_times_grad;
use super::bias::module_map;
use super::method::{Maps, Method};
use super::ops::{rescale_per_sample, upsample};
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

/// a^{b,l}: the channel-summed bias maps (`bias.{module}`) of layer l's conv/BN modules,
/// each resampled bilinearly (align_corners = False) to `size`, or to the largest of them
/// when `size` is None, then summed. None when the layer has no spatial bias module.
pub(crate) fn layer_bias_map(
    rec: &Recorded,
    l: usize,
    size: Option<(usize, usize)>,
) -> Result<Option<Tensor>> {
    let mut maps = Vec::new();
    for m in rec
        .modules
        .iter()
        .filter(|m| m.layer == l && m.grad.rank() == 4)
    {
        maps.push(module_map(m)?);
    }
    let (mh, mw) = match size {
        Some(s) => s,
        None => {
            let (mut mh, mut mw) = (0, 0);
            for m in &maps {
                let (_, a, b) = m.dims3()?;
                if a * b > mh * mw {
                    (mh, mw) = (a, b);
                }
            }
            (mh, mw)
        }
    };
    let mut acc: Option<Tensor> = None;
    for m in maps {
        let m = upsample(&m, mh, mw, false)?;
        acc = Some(match acc {
            None => m,
            Some(a) => (a + m)?,
        });
    }
    Ok(acc)
}

/// a^{b,l} of every layer l = 1..=L with conv/BN biases, at the resolution of that layer's
/// activation map a^{h,l} (`layerbias.{l}`, [N, H_l, W_l]), for correlating the two
/// (the paper's Fig. 8). Not one of the attribution contract's methods: `evaluate` asks
/// for it.
pub struct LayerBias;

impl Method for LayerBias {
    fn outputs(&self, model: &dyn Classifier) -> Vec<String> {
        let top = model.num_layers();
        let mut layers: Vec<usize> = model
            .bias_modules()
            .into_iter()
            .map(|(_, l)| l)
            .filter(|&l| (1..=top).contains(&l))
            .collect();
        layers.sort_unstable();
        layers.dedup();
        layers.iter().map(|l| format!("layerbias.{l}")).collect()
    }
    fn compute(&self, rec: &Recorded, out: &mut Maps) -> Result<()> {
        for a in rec.acts.iter().filter(|a| a.value.rank() == 4) {
            let (_, _, h, w) = a.value.dims4()?;
            if let Some(m) = layer_bias_map(rec, a.layer, Some((h, w)))? {
                out.insert(format!("layerbias.{}", a.layer), m);
            }
        }
        Ok(())
    }
}

/// The paper's own "FullGrad" (§2.4, Fig. 6): bias attributions aggregated per layer
/// rather than per feature, with the aggregate's Ψ = bilinear ∘ rescale ∘ abs:
/// mean of Ψ(a^{h,0}) and Ψ(a^{b,l}) over the layers l with conv/BN biases, where a^{b,l}
/// is the channel-summed b ⊙ ∂f/∂out of the layer's modules (`bias.{module}` maps). A
/// ResNet layer whose modules differ in resolution (the first block of a stage) has its
/// maps upsampled bilinearly to the largest of them before summing. Linear-layer biases
/// have no spatial map and stay out, as in the official FullGrad.
pub struct FullGradLayers;

impl Method for FullGradLayers {
    fn outputs(&self, _model: &dyn Classifier) -> Vec<String> {
        vec!["fullgrad.layers".into()]
    }
    fn compute(&self, rec: &Recorded, out: &mut Maps) -> Result<()> {
        let (_, _, h, w) = rec.input.dims4()?;
        let input = input_times_grad(rec)?.abs()?;
        let mut sum = upsample(&rescale_per_sample(&input, 0.0)?, h, w, false)?;
        let mut terms = 1usize;
        let mut layers: Vec<usize> = rec
            .modules
            .iter()
            .filter(|m| m.grad.rank() == 4)
            .map(|m| m.layer)
            .collect();
        layers.sort_unstable();
        layers.dedup();
        for l in layers {
            let Some(acc) = layer_bias_map(rec, l, None)? else {
                continue;
            };
            let psi = upsample(&rescale_per_sample(&acc.abs()?, 0.0)?, h, w, false)?;
            sum = (sum + psi)?;
            terms += 1;
        }
        out.insert("fullgrad.layers", (sum / terms as f64)?);
        Ok(())
    }
}
