//! Measurements of a model during training: validation top-1 and the probe panel.

use std::sync::Arc;

use candle_core::{Device, Tensor};

use super::optim;
use crate::data::{Dataset, Loader};
use crate::error::{Error, Result};
use crate::models::Classifier;
use crate::report::tensorboard::EventWriter;

/// Fraction of images whose argmax is the label (and agreement with `reference` if given).
pub fn evaluate_top1(
    model: &dyn Classifier,
    data: &Arc<dyn Dataset>,
    limit: usize,
    device: &Device,
) -> Result<f64> {
    let loader = Loader::new(data.clone(), 64, false, 0, 2);
    let mut correct = 0usize;
    let mut total = 0usize;
    for batch in loader.epoch(0, 0) {
        let x = Tensor::from_vec(
            batch.pixels,
            (batch.n, 3, batch.height, batch.width),
            device,
        )?;
        let logits = model.forward(&x)?;
        // The argmax of a NaN row is meaningless: no accuracy from such logits.
        if !optim::all_finite(&logits)? {
            return Err(Error::Diverged(format!(
                "non-finite logits for validation images {}..{}",
                total,
                total + batch.n
            )));
        }
        let pred: Vec<u32> = logits.argmax(1)?.to_vec1()?;
        for (p, l) in pred.iter().zip(&batch.labels) {
            correct += (p == l) as usize;
        }
        total += batch.n;
        if limit > 0 && total >= limit {
            break;
        }
    }
    if total == 0 {
        return Err(Error::input("validation set is empty"));
    }
    Ok(correct as f64 / total as f64)
}

/// TensorBoard image: the attribution panel of a fixed probe image (validation image 0).
pub(super) fn log_probe_panel(
    tb: &mut EventWriter,
    model: &dyn Classifier,
    val: &Arc<dyn Dataset>,
    device: &Device,
    step: i64,
) -> Result<()> {
    let (h, w) = val.image_size();
    let sample = val.get(0, false, &mut crate::data::Rng::new(0))?;
    let x = Tensor::from_vec(sample.pixels, (1, 3, h, w), device)?;
    let methods: Vec<Box<dyn crate::attribution::Method>> = vec![
        Box::new(crate::attribution::Activation),
        Box::new(crate::attribution::BiasAttribution),
    ];
    let att = crate::attribution::attribute(model, &x, &crate::taps::Target::Predicted, &methods)?;
    let img = crate::report::figures::layer_panel(
        model,
        &att,
        0,
        &format!("step {step}, class {}", att.target[0]),
    )?;
    tb.add_image_rgb(
        "attribution/probe",
        img.width(),
        img.height(),
        img.as_raw(),
        step,
    )?;
    Ok(())
}
