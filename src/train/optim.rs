//! Adam (decoupled weight decay optional) with state that checkpoints can save and restore.

use std::collections::HashMap;

use candle_core::{backprop::GradStore, Tensor, Var};

use crate::error::Result;

pub struct Adam {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Optimiser steps taken.
    pub t: u64,
    params: Vec<(String, Var)>,
    frozen: Vec<bool>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
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
        Ok(Self {
            lr,
            beta1,
            beta2,
            eps: 1e-8,
            weight_decay,
            t: 0,
            params,
            frozen,
            m,
            v,
        })
    }

    /// One update from the gradients; returns the global gradient L2 norm.
    pub fn step(&mut self, grads: &GradStore) -> Result<f64> {
        self.t += 1;
        let t = self.t as i32;
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2 = 1.0 - self.beta2.powi(t);
        let mut norm2 = 0f64;
        for (i, (_, p)) in self.params.iter().enumerate() {
            if self.frozen[i] {
                continue;
            }
            // Gradients carry the step's autograd graph: detach them so that the moments
            // do not keep every past step's graph alive.
            let Some(g) = grads.get(p.as_tensor()).map(|g| g.detach()) else {
                continue;
            };
            let g = &g;
            norm2 += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            let m = ((&self.m[i] * self.beta1)? + (g * (1.0 - self.beta1))?)?;
            let v = ((&self.v[i] * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let update = ((&m / bc1)? / ((&v / bc2)?.sqrt()? + self.eps)?)?;
            let mut value = p.as_tensor().detach();
            if self.weight_decay > 0.0 {
                value = (&value * (1.0 - self.lr * self.weight_decay))?;
            }
            p.set(&(value - (update * self.lr)?)?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(norm2.sqrt())
    }

    /// Stop updating these parameters (e.g. biases held at zero).
    pub fn freeze(&mut self, names: &[String]) {
        for (i, (name, _)) in self.params.iter().enumerate() {
            if names.contains(name) {
                self.frozen[i] = true;
            }
        }
    }

    /// Moments as named tensors (`optim.m.{param}`, `optim.v.{param}`).
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.params.len());
        for (i, (name, _)) in self.params.iter().enumerate() {
            out.push((format!("optim.m.{name}"), self.m[i].clone()));
            out.push((format!("optim.v.{name}"), self.v[i].clone()));
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
        self.t = t;
        Ok(())
    }
}
