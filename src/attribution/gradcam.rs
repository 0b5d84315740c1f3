use super::method::{Maps, Method};
use super::ops::layer;
use crate::error::Result;
use crate::models::Classifier;
use crate::taps::{Recorded, TapPoint};

/// Grad-CAM at the top layer L: relu(Σ_φ h_φ · mean_ij ∂f/∂h_φ).
pub struct GradCam;

impl Method for GradCam {
    fn outputs(&self, _model: &dyn Classifier) -> Vec<String> {
        vec!["gradcam".into()]
    }
    fn compute(&self, rec: &Recorded, out: &mut Maps) -> Result<()> {
        let top = layer(rec, rec.acts.len())?;
        let weights = top.grad.mean_keepdim((2, 3))?;
        let cam = top.value.broadcast_mul(&weights)?.sum(1)?;
        // Our ReLU, not candle's: that one turns NaN into 0, as PyTorch's does not.
        let cam = zerobias_kernels::relu::relu(&cam, false, &TapPoint::default())?;
        out.insert("gradcam", cam);
        Ok(())
    }
}
