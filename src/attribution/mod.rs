//! Attribution methods. Each one is a pure function of what one forward + one backward
//! pass recorded ([`Recorded`](crate::taps::Recorded)), behind one interface ([`Method`]),
//! so a new method is one small module.
//!
//! This file declares the methods and re-exports them; what they share (the [`Method`]
//! trait and [`Maps`] in `method`, helpers in `ops`) lives in sibling files that the methods
//! import directly, so the imports form no circle.

mod act;
mod aggregate;
mod bias;
mod fullgrad;
mod grad;
mod gradcam;
mod method;
mod ops;
/// The fused per-module reductions, which live with the other kernels.
pub use zerobias_kernels::reduce as kernels;

pub use act::Activation;
pub use aggregate::Aggregate;
pub use bias::BiasAttribution;
pub use fullgrad::{FullGrad, FullGradLayers, LayerBias};
pub use grad::Gradient;
pub use gradcam::GradCam;
pub use method::{Maps, Method};
pub use ops::upsample;

use candle_core::Tensor;

use crate::error::Result;
use crate::models::Classifier;
use crate::taps::{record, Target};

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
