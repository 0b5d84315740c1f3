//! Adam (decoupled weight decay optional, toward zero or toward anchor values) with an
//! optional running average of the weights, and state that checkpoints can save and restore.

use std::collections::HashMap;

use candle_core::{backprop::GradStore, Tensor, Var};

use crate::error::Result;

pub struct Adam {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Decoupled pull toward the anchored values (L2-SP): each step moves an anchored
    /// weight by −lr·anchor·(w − w₀).
    pub anchor: f64,
    /// Maximum global gradient L2 norm; larger gradients are scaled down to it (0 = none).
    pub clip_grad_norm: f64,
    /// Optimiser steps taken.
    pub t: u64,
    params: Vec<(String, Var)>,
    frozen: Vec<bool>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    anchors: Vec<Option<Tensor>>,
    /// Decay of the exponential moving average of the weights (0 = none kept).
    pub average_decay: f64,
    /// The moving average, once [`Adam::start_averaging`] has begun it.
    average: Option<Vec<Tensor>>,
}

/// What [`Adam::step`] did.
pub struct StepReport {
    /// Global gradient L2 norm, before any clipping.
    pub grad_norm: f64,
    /// Why the update was not (fully) applied.
    pub rejected: Option<Rejected>,
}

pub enum Rejected {
    /// Non-finite gradient: nothing was changed, the batch can be skipped.
    Gradient(String),
    /// A finite gradient gave a non-finite weight (the learning rate's fault, not the
    /// batch's): part of the update is applied, training must stop.
    Weight(String),
}

/// Whether every element is finite. The sum is finite for finite elements unless it
/// overflows; only then is the exact (and dearer) test needed: x·0 is 0 for finite x and
/// NaN for ±inf and NaN.
pub fn all_finite(t: &Tensor) -> Result<bool> {
    if (t
        .sum_all()?
        .to_dtype(candle_core::DType::F64)?
        .to_scalar::<f64>()?)
    .is_finite()
    {
        return Ok(true);
    }
    let zeros = (t * 0.0)?.sum_all()?.to_dtype(candle_core::DType::F64)?;
    Ok(zeros.to_scalar::<f64>()?.is_finite())
}

impl Adam {
    pub fn new(
        params: Vec<(String, Var)>,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
    ) -> Result<Self> {
        let m = params
            .iter()
            .map(|(_, p)| p.as_tensor().zeros_like())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let v = m.clone();
        let frozen = vec![false; params.len()];
        let anchors = vec![None; params.len()];
        Ok(Self {
            lr,
            beta1,
            beta2,
            eps: 1e-8,
            weight_decay,
            anchor: 0.0,
            clip_grad_norm: 0.0,
            t: 0,
            params,
            frozen,
            m,
            v,
            anchors,
            average_decay: 0.0,
            average: None,
        })
    }

    /// One update from the gradients. With a non-finite gradient nothing is updated
    /// (parameters, moments, step count); a non-finite new weight stops the update there.
    /// Either comes back as `rejected`.
    pub fn step(&mut self, grads: &GradStore) -> Result<StepReport> {
        // Gradients carry the step's autograd graph: detach them so that the moments do not
        // keep every past step's graph alive.
        let live: Vec<(usize, Tensor)> = (0..self.params.len())
            .filter(|&i| !self.frozen[i])
            .filter_map(|i| {
                let g = grads.get(self.params[i].1.as_tensor())?;
                Some((i, g.detach()))
            })
            .collect();
        // Per-tensor sums stay on the model's device; one read brings them all to the host
        // (a GPU would otherwise wait once per parameter tensor).
        let mut norm2 = 0f64;
        if !live.is_empty() {
            let sums = live
                .iter()
                .map(|(_, g)| g.sqr()?.sum_all())
                .collect::<candle_core::Result<Vec<_>>>()?;
            for s in Tensor::stack(&sums, 0)?.to_vec1::<f32>()? {
                norm2 += s as f64;
            }
        }
        let norm = norm2.sqrt();
        if !norm.is_finite() {
            return Ok(StepReport {
                grad_norm: norm,
                rejected: Some(Rejected::Gradient(format!(
                    "non-finite gradient (global L2 norm {norm})"
                ))),
            });
        }
        // As torch's clip_grad_norm_: scale by max_norm / (norm + 1e-6) when above it.
        let scale = if self.clip_grad_norm > 0.0 && norm > self.clip_grad_norm {
            Some(self.clip_grad_norm / (norm + 1e-6))
        } else {
            None
        };
        self.t += 1;
        let t = self.t as i32;
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2 = 1.0 - self.beta2.powi(t);
        for (i, g) in live {
            let g = match scale {
                Some(s) => (g * s)?,
                None => g,
            };
            let g = &g;
            let m = ((&self.m[i] * self.beta1)? + (g * (1.0 - self.beta1))?)?;
            let v = ((&self.v[i] * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let update = ((&m / bc1)? / ((&v / bc2)?.sqrt()? + self.eps)?)?;
            let p = &self.params[i].1;
            let mut value = p.as_tensor().detach();
            if self.weight_decay > 0.0 {
                value = (&value * (1.0 - self.lr * self.weight_decay))?;
            }
            let mut value = (value - (update * self.lr)?)?;
            // After the update, as a proximal step would: lr·anchor = 1 lands on the anchor.
            if let (true, Some(a)) = (self.anchor > 0.0, &self.anchors[i]) {
                value = (&value - ((&value - a)? * (self.lr * self.anchor))?)?;
            }
            // Checked tensor by tensor so that no copy of the whole model is held; the
            // parameters before this one are already updated, so the caller must stop.
            if !all_finite(&value)? {
                return Ok(StepReport {
                    grad_norm: norm,
                    rejected: Some(Rejected::Weight(format!(
                        "the update made weight '{}' non-finite (learning rate {:e})",
                        self.params[i].0, self.lr
                    ))),
                });
            }
            if let Some(avg) = &mut self.average {
                let d = self.average_decay;
                avg[i] = ((&avg[i] * d)? + (&value * (1.0 - d))?)?;
            }
            p.set(&value)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(StepReport {
            grad_norm: norm,
            rejected: None,
        })
    }

    /// Stop updating these parameters (e.g. biases held at zero).
    pub fn freeze(&mut self, names: &[String]) {
        for (i, (name, _)) in self.params.iter().enumerate() {
            if names.contains(name) {
                self.frozen[i] = true;
            }
        }
    }

    /// Pull each named parameter toward the given value (see [`Adam::anchor`]); the
    /// others are not pulled.
    pub fn anchor_to(&mut self, values: &HashMap<String, Tensor>) -> Result<()> {
        for (i, (name, p)) in self.params.iter().enumerate() {
            self.anchors[i] = match values.get(name) {
                Some(v) => Some(v.to_device(p.device())?.detach()),
                None => None,
            };
        }
        Ok(())
    }

    /// Begin the moving average of the weights at their current values (no-op once begun,
    /// or when no average is kept: `average_decay` 0).
    pub fn start_averaging(&mut self) -> Result<()> {
        if self.average.is_none() && self.average_decay > 0.0 {
            self.average = Some(
                self.params
                    .iter()
                    .map(|(_, p)| p.as_tensor().copy())
                    .collect::<candle_core::Result<Vec<_>>>()?,
            );
        }
        Ok(())
    }

    /// Whether a moving average has begun (and [`Adam::assign_average`] would change the
    /// parameters).
    pub fn is_averaging(&self) -> bool {
        self.average.is_some()
    }

    /// Set the parameters to their moving average, if one was kept.
    pub fn assign_average(&self) -> Result<()> {
        if let Some(avg) = &self.average {
            for ((_, p), a) in self.params.iter().zip(avg) {
                p.set(a)?;
            }
        }
        Ok(())
    }

    /// Moments as named tensors (`optim.m.{param}`, `optim.v.{param}`), and the weights'
    /// moving average (`optim.avg.{param}`) once begun.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(3 * self.params.len());
        for (i, (name, _)) in self.params.iter().enumerate() {
            out.push((format!("optim.m.{name}"), self.m[i].clone()));
            out.push((format!("optim.v.{name}"), self.v[i].clone()));
            if let Some(avg) = &self.average {
                out.push((format!("optim.avg.{name}"), avg[i].clone()));
            }
        }
        out
    }

    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, t: u64) -> Result<()> {
        for (i, (name, p)) in self.params.iter().enumerate() {
            if let (Some(m), Some(v)) = (
                tensors.get(&format!("optim.m.{name}")),
                tensors.get(&format!("optim.v.{name}")),
            ) {
                self.m[i] = m.to_device(p.device())?;
                self.v[i] = v.to_device(p.device())?;
            }
        }
        let saved: Option<Vec<Tensor>> = self
            .params
            .iter()
            .map(|(name, p)| {
                tensors
                    .get(&format!("optim.avg.{name}"))
                    .map(|a| a.to_device(p.device()))
            })
            .collect::<Option<candle_core::Result<Vec<_>>>>()
            .transpose()?;
        if saved.is_some() {
            self.average = saved;
        }
        self.t = t;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn first_moment_after_step(clip: f64) -> (Vec<f32>, f64) {
        let p = Var::from_slice(&[1f32, 2.0], 2, &Device::Cpu).unwrap();
        // Gradient (3, 4): norm 5.
        let loss = (p.as_tensor() * Tensor::new(&[3f32, 4.0], &Device::Cpu).unwrap())
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        let mut adam = Adam::new(vec![("p".into(), p)], 1e-3, 0.9, 0.999, 0.0).unwrap();
        adam.clip_grad_norm = clip;
        let norm = adam.step(&grads).unwrap().grad_norm;
        (adam.m[0].to_vec1::<f32>().unwrap(), norm)
    }

    #[test]
    fn gradients_above_the_clip_norm_are_scaled_to_it() {
        let (m, norm) = first_moment_after_step(1.0);
        assert!(
            (norm - 5.0).abs() < 1e-6,
            "reported norm is the unclipped one"
        );
        // m = (1 - β1)·g·(1/5): the clipped gradient (0.6, 0.8).
        assert!(
            (m[0] - 0.06).abs() < 1e-6 && (m[1] - 0.08).abs() < 1e-6,
            "{m:?}"
        );
        let (m, _) = first_moment_after_step(10.0);
        assert!(
            (m[0] - 0.3).abs() < 1e-6 && (m[1] - 0.4).abs() < 1e-6,
            "{m:?}"
        );
        let (m, _) = first_moment_after_step(0.0);
        assert!(
            (m[0] - 0.3).abs() < 1e-6 && (m[1] - 0.4).abs() < 1e-6,
            "{m:?}"
        );
    }
}
