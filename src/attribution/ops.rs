//! Small operations the methods share: finding a layer's record, per-sample rescaling and
//! upsampling of maps.

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::taps::{ActRecord, Recorded};

/// The layer l record, with a clear error when the model has no such layer.
pub(crate) fn layer(rec: &Recorded, l: usize) -> Result<&ActRecord> {
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
