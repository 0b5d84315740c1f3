//! Training loss.

use candle_core::{Tensor, D};

use crate::error::Result;

/// Softmax cross-entropy averaged over the batch.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = logp.gather(&labels.unsqueeze(1)?, 1)?;
    Ok(picked.mean_all()?.neg()?)
}
