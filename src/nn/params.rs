//! The model's parameters: every tensor under its checkpoint name, with what it is.

use std::collections::HashMap;

use candle_core::{Tensor, Var};

use crate::error::{Error, Result};

/// What a parameter is, so that the trainer and the bias handles can select them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    Weight,
    Bias,
    BnGamma,
    BnBeta,
    BnMean,
    BnVar,
}

#[derive(Clone)]
pub struct Param {
    pub name: String,
    pub kind: ParamKind,
    pub var: Var,
}

/// Every tensor of a model, in load order, under its torchvision name.
#[derive(Default, Clone)]
pub struct ParamStore {
    params: Vec<Param>,
}

impl ParamStore {
    pub fn push(&mut self, name: &str, kind: ParamKind, var: Var) {
        self.params.push(Param {
            name: name.to_string(),
            kind,
            var,
        });
    }
    pub fn iter(&self) -> impl Iterator<Item = &Param> {
        self.params.iter()
    }
    pub fn get(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name == name)
    }
    pub fn len(&self) -> usize {
        self.params.len()
    }
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }
    /// Number of scalars.
    pub fn numel(&self) -> usize {
        self.params.iter().map(|p| p.var.elem_count()).sum()
    }
    /// Named tensors (detached copies of the current values) for saving.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .map(|p| (p.name.clone(), p.var.as_tensor().detach()))
            .collect()
    }
    /// Overwrite the live values from a map (e.g. a checkpoint being resumed).
    pub fn assign(&self, tensors: &HashMap<String, Tensor>, source: &str) -> Result<()> {
        for p in &self.params {
            let t = tensors.get(&p.name).ok_or_else(|| Error::Checkpoint {
                path: source.into(),
                message: format!("missing key '{}'", p.name),
            })?;
            if t.dims() != p.var.dims() {
                return Err(Error::Checkpoint {
                    path: source.into(),
                    message: format!(
                        "key '{}' has shape {:?}, expected {:?}",
                        p.name,
                        t.dims(),
                        p.var.dims()
                    ),
                });
            }
            p.var.set(&t.to_device(p.var.device())?)?;
        }
        Ok(())
    }
}
