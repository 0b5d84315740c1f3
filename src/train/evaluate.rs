//! Measurements of a model during training: validation top-1 and the probe panel.

use std::sync::Arc;

use candle_core::{Device, Tensor};

use super::optim;
use crate::data::{Dataset, Loader, Subset};
use crate::error::{Error, Result};
use crate::models::Classifier;
use crate::report::tensorboard::EventWriter;

/// A model's top-1 class for each validation image, beside the labels.
pub struct Predictions {
    pub predicted: Vec<u32>,
    pub labels: Vec<u32>,
}

impl Predictions {
    /// Fraction of images whose predicted class is the label.
    pub fn top1(&self) -> f64 {
        matching(&self.predicted, &self.labels)
    }

    /// Fraction of images on which two models predict the same class (the same images,
    /// in the same order).
    pub fn agreement(&self, other: &Predictions) -> Result<f64> {
        if self.labels != other.labels {
            return Err(Error::input(format!(
                "agreement needs predictions for the same images ({} vs {} images, or another order)",
                self.labels.len(),
                other.labels.len()
            )));
        }
        Ok(matching(&self.predicted, &other.predicted))
    }
}

fn matching(a: &[u32], b: &[u32]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64
}

/// The top-1 class of `limit` validation images (all when 0), in order: the same fixed
/// selection spread over the whole set ([`Subset::spread`]) at every call.
pub fn predict(
    model: &dyn Classifier,
    data: &Arc<dyn Dataset>,
    limit: usize,
    device: &Device,
) -> Result<Predictions> {
    let loader = Loader::new(Subset::spread(data.clone(), limit), 64, false, 0, 2);
    let mut out = Predictions {
        predicted: Vec::new(),
        labels: Vec::new(),
    };
    for batch in loader.epoch(0, 0) {
        let x = Tensor::from_vec(
            batch.pixels,
            (batch.n, 3, batch.height, batch.width),
            device,
        )?;
        let logits = model.forward(&x)?;
        // The argmax of a NaN row is meaningless: no accuracy from such logits.
        if !optim::all_finite(&logits)? {
            let total = out.labels.len();
            return Err(Error::Diverged(format!(
                "non-finite logits for validation images {}..{}",
                total,
                total + batch.n
            )));
        }
        out.predicted.extend(logits.argmax(1)?.to_vec1::<u32>()?);
        out.labels.extend(&batch.labels);
    }
    if out.labels.is_empty() {
        return Err(Error::input("validation set is empty"));
    }
    Ok(out)
}

/// Fraction of `limit` validation images (all when 0; see [`predict`]) whose argmax is the
/// label.
pub fn evaluate_top1(
    model: &dyn Classifier,
    data: &Arc<dyn Dataset>,
    limit: usize,
    device: &Device,
) -> Result<f64> {
    Ok(predict(model, data, limit, device)?.top1())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn predictions(predicted: &[u32], labels: &[u32]) -> Predictions {
        Predictions {
            predicted: predicted.to_vec(),
            labels: labels.to_vec(),
        }
    }

    #[test]
    fn agreement_counts_equal_predictions_not_correct_ones() {
        let labels = [0, 1, 2, 3];
        let student = predictions(&[0, 1, 0, 0], &labels);
        let teacher = predictions(&[0, 2, 0, 3], &labels);
        assert_eq!(student.top1(), 0.5);
        assert_eq!(teacher.top1(), 0.5);
        // Both right on image 0, both wrong alike on image 2, apart on 1 and 3.
        assert_eq!(student.agreement(&teacher).unwrap(), 0.5);
        assert_eq!(teacher.agreement(&teacher).unwrap(), 1.0);
    }

    #[test]
    fn a_limited_evaluation_covers_every_class_of_a_class_sorted_folder() {
        let dev = Device::Cpu;
        let tensors = crate::models::init::vgg16(2, 8, 10, 0, &dev).unwrap();
        let model = crate::models::build(&tensors, "test").unwrap();
        let data: Arc<dyn Dataset> = Arc::new(crate::data::dataset::ClassSorted {
            classes: 10,
            per_class: 30,
            size: 32,
        });
        let limited = predict(model.as_ref(), &data, 100, &dev).unwrap();
        assert_eq!(limited.labels.len(), 100);
        for c in 0..10 {
            // The first 100 images would be classes 0–3 only.
            assert!(limited.labels.contains(&c), "class {c} missing");
        }
        let all = predict(model.as_ref(), &data, 0, &dev).unwrap();
        let expected: Vec<u32> = (0..300).map(|i| i / 30).collect();
        assert_eq!(all.labels, expected);
    }

    #[test]
    fn agreement_of_different_images_is_an_error() {
        let a = predictions(&[0, 1], &[0, 1]);
        let shorter = predictions(&[0], &[0]);
        let reordered = predictions(&[1, 0], &[1, 0]);
        assert!(a.agreement(&shorter).is_err());
        assert!(a.agreement(&reordered).is_err());
    }
}
