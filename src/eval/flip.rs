//! The flip metric: remove pixels in saliency order until the decision changes.
//!
//! Pixels are ranked by saliency (ascending for e−, descending for e+; ties by raster
//! index), set to 0 in the normalised input space (the dataset mean colour) in all
//! channels, cumulatively on a grid of K steps (step t removes ⌊t·P/K⌋ pixels). The scan
//! stops at the first step whose argmax differs from the clean argmax;
//! e = 1 − ‖x_t‖₂ / ‖x‖₂. If no step flips, e = 1 and the case is marked unflipped.

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::models::Classifier;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Order {
    /// Least salient first (e−).
    Minus,
    /// Most salient first (e+).
    Plus,
}

impl Order {
    pub fn label(&self) -> &'static str {
        match self {
            Order::Minus => "minus",
            Order::Plus => "plus",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FlipOutcome {
    pub e: f64,
    /// 1-based step of the flip (K when unflipped).
    pub step: usize,
    pub flipped: bool,
    /// Forward passes (images) spent.
    pub forwards: usize,
}

pub struct FlipEvaluator<'a> {
    pub model: &'a dyn Classifier,
    /// K, the number of grid steps.
    pub steps: usize,
    /// Perturbed images per forward pass.
    pub batch: usize,
    pub device: Device,
}

/// Pixel indices in removal order.
pub fn ranking(saliency: &[f32], order: Order) -> Result<Vec<usize>> {
    if let Some(i) = saliency.iter().position(|v| !v.is_finite()) {
        return Err(Error::input(format!(
            "saliency map has a non-finite value at pixel {i}"
        )));
    }
    let mut idx: Vec<usize> = (0..saliency.len()).collect();
    match order {
        Order::Minus => idx.sort_by(|&a, &b| saliency[a].total_cmp(&saliency[b]).then(a.cmp(&b))),
        Order::Plus => idx.sort_by(|&a, &b| saliency[b].total_cmp(&saliency[a]).then(a.cmp(&b))),
    }
    Ok(idx)
}

impl<'a> FlipEvaluator<'a> {
    pub fn new(model: &'a dyn Classifier, steps: usize, batch: usize) -> Result<Self> {
        if steps == 0 {
            return Err(Error::input(
                "--steps 0: the flip metric needs at least 1 step",
            ));
        }
        Ok(Self {
            model,
            steps,
            batch: batch.max(1),
            device: model.device(),
        })
    }

    /// Flip scan of one image `x` (3·H·W values, normalised) with a saliency map (H·W).
    pub fn scan(
        &self,
        x: &[f32],
        height: usize,
        width: usize,
        clean_class: u32,
        saliency: &[f32],
        order: Order,
    ) -> Result<FlipOutcome> {
        let norm0 = l2(x);
        let mut outcome = FlipOutcome {
            e: 1.0,
            step: self.steps,
            flipped: false,
            forwards: 0,
        };
        self.walk(x, height, width, saliency, order, |t0, preds, norms| {
            outcome.forwards += preds.len();
            match preds.iter().position(|&c| c != clean_class) {
                Some(j) => {
                    outcome.e = if norm0 > 0.0 {
                        1.0 - norms[j] / norm0
                    } else {
                        1.0
                    };
                    outcome.step = t0 + j;
                    outcome.flipped = true;
                    false
                }
                None => true,
            }
        })?;
        Ok(outcome)
    }

    /// The predicted class at every step t = 1..=K, without early exit (deletion curves,
    /// benchmarks).
    pub fn predictions(
        &self,
        x: &[f32],
        height: usize,
        width: usize,
        saliency: &[f32],
        order: Order,
    ) -> Result<Vec<u32>> {
        let mut all = Vec::with_capacity(self.steps);
        self.walk(x, height, width, saliency, order, |_, preds, _| {
            all.extend_from_slice(preds);
            true
        })?;
        Ok(all)
    }

    /// Run the perturbation grid in batches; `visit(first_step, predictions, norms)`
    /// returns whether to continue.
    fn walk(
        &self,
        x: &[f32],
        height: usize,
        width: usize,
        saliency: &[f32],
        order: Order,
        mut visit: impl FnMut(usize, &[u32], &[f64]) -> bool,
    ) -> Result<()> {
        let p = height * width;
        if x.len() != 3 * p {
            return Err(Error::Shape {
                what: "flip input".into(),
                expected: format!("3x{height}x{width}"),
                got: format!("{} values", x.len()),
            });
        }
        if saliency.len() != p {
            return Err(Error::Shape {
                what: "saliency map".into(),
                expected: format!("{height}x{width} (the input size)"),
                got: format!("{} values", saliency.len()),
            });
        }
        let rank = ranking(saliency, order)?;
        let k = self.steps;
        let removed = |t: usize| (t * p) / k;
        let mut work = x.to_vec();
        let mut t = 1;
        while t <= k {
            let chunk = self.batch.min(k - t + 1);
            let mut buf = Vec::with_capacity(chunk * 3 * p);
            let mut norms = Vec::with_capacity(chunk);
            for s in t..t + chunk {
                for &pix in &rank[removed(s - 1)..removed(s)] {
                    work[pix] = 0.0;
                    work[p + pix] = 0.0;
                    work[2 * p + pix] = 0.0;
                }
                norms.push(l2(&work));
                buf.extend_from_slice(&work);
            }
            let xb = Tensor::from_vec(buf, (chunk, 3, height, width), &self.device)?;
            let logits = self.model.forward(&xb)?;
            // argmax of a NaN row is meaningless: a non-finite logit is an error.
            crate::finite::check_result(&logits, "logits", |j| {
                format!(
                    "the image with {} of {p} pixels removed (flip step {} of {k})",
                    removed(t + j),
                    t + j
                )
            })?;
            let pred: Vec<u32> = logits.argmax(1)?.to_vec1()?;
            if !visit(t, &pred, &norms) {
                return Ok(());
            }
            t += chunk;
        }
        Ok(())
    }
}

fn l2(v: &[f32]) -> f64 {
    v.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranking_breaks_ties_by_raster_index() {
        let s = [0.5f32, 0.1, 0.5, 0.1, 0.9];
        assert_eq!(ranking(&s, Order::Minus).unwrap(), vec![1, 3, 0, 2, 4]);
        assert_eq!(ranking(&s, Order::Plus).unwrap(), vec![4, 0, 2, 1, 3]);
        assert!(ranking(&[f32::NAN], Order::Plus).is_err());
    }
}
