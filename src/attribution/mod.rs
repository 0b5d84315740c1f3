//! Attribution methods. Each one is a pure function of what one forward + one backward
//! pass recorded ([`Recorded`]), behind one interface ([`Method`]), so a new method is one
//! small module.

mod act;
mod aggregate;
mod bias;
mod fullgrad;
mod grad;
mod gradcam;
/// The fused per-module reductions, which live with the other kernels.
pub use zerobias_kernels::reduce as kernels;

pub use act::Activation;
pub use aggregate::Aggregate;
pub use bias::BiasAttribution;
pub use fullgrad::{FullGrad, FullGradLayers};
pub use grad::Gradient;
pub use gradcam::GradCam;

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::models::Classifier;
use crate::taps::{record, Recorded, Target};

/// Named maps in a fixed order: `act.{l}`, `bias.{module}`, `grad`, `gradcam`, ...
#[derive(Default, Clone)]
pub struct Maps {
    entries: Vec<(String, Tensor)>,
}

impl Maps {
    pub fn insert(&mut self, name: impl Into<String>, t: Tensor) {
        let name = name.into();
        match self.entries.iter_mut().find(|(k, _)| *k == name) {
            Some(e) => e.1 = t,
            None => self.entries.push((name, t)),
        }
    }
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.entries.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
    pub fn iter(&self) -> impl Iterator<Item = &(String, Tensor)> {
        self.entries.iter()
    }
    pub fn names(&self) -> Vec<String> {
        self.entries.iter().map(|(k, _)| k.clone()).collect()
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    pub fn into_vec(self) -> Vec<(String, Tensor)> {
        self.entries
    }
}

/// One attribution method: reads the recording, writes its maps.
pub trait Method {
    /// Names of the maps this method produces for `model`.
    fn outputs(&self, model: &dyn Classifier) -> Vec<String>;
    fn compute(&self, rec: &Recorded, out: &mut Maps) -> Result<()>;
}

/// Every method of the attribution contract, for `model`.
pub fn all_methods(model: &dyn Classifier) -> Vec<Box<dyn Method>> {
    vec![
        Box::new(Activation),
        Box::new(BiasAttribution),
        Box::new(Gradient),
        Box::new(GradCam),
        Box::new(FullGrad),
        Box::new(FullGradLayers),
        Box::new(Aggregate::all(model)),
    ]
}

/// The result of `attribute`: maps plus the quantities that check them.
pub struct Attribution {
    pub logits: Tensor,
    pub target: Vec<u32>,
    pub target_logit: Tensor,
    pub maps: Maps,
    /// logit − (Σ act.0 + Σ of all bias terms), per image.
    pub completeness_residual: Tensor,
    /// A^{h,l}: gross sum of act.l per image, l = 0..=L, [N, L+1].
    pub gross_act: Tensor,
    /// A^{b,l}: gross bias attribution of the modules of layer l, l = 1..=L+1 (L+1 = head), [N, L+1].
    pub gross_bias: Tensor,
}

/// Record once, run every method, and add the completeness bookkeeping.
pub fn attribute(
    model: &dyn Classifier,
    x: &Tensor,
    target: &Target,
    methods: &[Box<dyn Method>],
) -> Result<Attribution> {
    let rec = record(model, x, target)?;
    let mut maps = Maps::default();
    for m in methods {
        m.compute(&rec, &mut maps)?;
    }
    let n = rec.target.len();
    let layers = model.num_layers();
    // Gross sums from the recording itself, so they do not depend on the chosen methods.
    let mut gross_act = Vec::with_capacity(layers + 1);
    gross_act.push(act::input_times_grad(&rec)?.sum((1, 2))?);
    for a in &rec.acts {
        gross_act.push(act::act_map(a)?.sum((1, 2))?);
    }
    let zeros = Tensor::zeros(n, candle_core::DType::F32, rec.input.device())?;
    let mut gross_bias = vec![zeros.clone(); layers + 1];
    let mut bias_total = zeros;
    for m in &rec.modules {
        let s = bias::module_map(m)?;
        let s = if s.rank() == 3 { s.sum((1, 2))? } else { s };
        let slot = m.layer.clamp(1, layers + 1) - 1;
        gross_bias[slot] = (&gross_bias[slot] + &s)?;
        bias_total = (bias_total + s)?;
    }
    let residual = ((&rec.target_logit - &gross_act[0])? - bias_total)?;
    Ok(Attribution {
        logits: rec.logits.clone(),
        target: rec.target.clone(),
        target_logit: rec.target_logit.clone(),
        maps,
        completeness_residual: residual,
        gross_act: Tensor::stack(&gross_act, 1)?,
        gross_bias: Tensor::stack(&gross_bias, 1)?,
    })
}

/// The layer l record, with a clear error when the model has no such layer.
pub(crate) fn layer(rec: &Recorded, l: usize) -> Result<&crate::taps::ActRecord> {
    rec.acts.iter().find(|a| a.layer == l).ok_or_else(|| {
        Error::input(format!(
            "the model has no layer {l} (it has layers 1..={})",
            rec.acts.len()
        ))
    })
}

/// Per-sample min-max rescale of a [N, ...] tensor over all non-batch dims, as the official
/// FullGrad post-processing: (v − min) / (max(v − min) + eps).
pub(crate) fn rescale_per_sample(v: &Tensor, eps: f64) -> Result<Tensor> {
    let n = v.dim(0)?;
    let flat = v.reshape((n, ()))?;
    let min = flat.min_keepdim(1)?;
    let shifted = flat.broadcast_sub(&min)?;
    let max = shifted.max_keepdim(1)?;
    let scaled = if eps > 0.0 {
        shifted.broadcast_div(&(max + eps)?)?
    } else {
        // A constant map rescales to 0 rather than dividing by zero.
        let safe = max.maximum(f32::MIN_POSITIVE as f64)?;
        shifted.broadcast_div(&safe)?
    };
    Ok(scaled.reshape(v.shape())?)
}

/// Bilinear upsampling of [N, H, W] maps to (h, w).
pub fn upsample(m: &Tensor, h: usize, w: usize, align_corners: bool) -> Result<Tensor> {
    let (_, mh, mw) = m.dims3()?;
    if mh == h && mw == w {
        return Ok(m.clone());
    }
    Ok(m.unsqueeze(1)?
        .upsample_bilinear2d(h, w, align_corners)?
        .squeeze(1)?)
}
