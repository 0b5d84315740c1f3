//! Builds the layers from a checkpoint's tensors, checking every key and shape.

use std::collections::{HashMap, HashSet};

use candle_core::{DType, Tensor, Var};

use super::batch_norm::BatchNorm;
use super::conv::Conv2d;
use super::linear::Linear;
use super::module::Post;
use super::params::{ParamKind, ParamStore};
use crate::error::{Error, Result};

/// Reads parameters out of a weight map, remembering which keys were used so that
/// leftovers can be reported as unexpected.
pub struct WeightReader<'a> {
    pub tensors: &'a HashMap<String, Tensor>,
    pub used: HashSet<String>,
    pub store: ParamStore,
    pub source: String,
}

impl<'a> WeightReader<'a> {
    pub fn new(tensors: &'a HashMap<String, Tensor>, source: &str) -> Self {
        Self {
            tensors,
            used: Default::default(),
            store: ParamStore::default(),
            source: source.to_string(),
        }
    }

    pub fn has(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    fn take(&mut self, key: &str, kind: ParamKind, dims: Option<&[usize]>) -> Result<Var> {
        let t = self.tensors.get(key).ok_or_else(|| Error::Checkpoint {
            path: self.source.clone().into(),
            message: format!("missing key '{key}'"),
        })?;
        if let Some(d) = dims {
            if t.dims() != d {
                return Err(Error::Checkpoint {
                    path: self.source.clone().into(),
                    message: format!("key '{key}' has shape {:?}, expected {:?}", t.dims(), d),
                });
            }
        }
        self.used.insert(key.to_string());
        let var = Var::from_tensor(&t.to_dtype(DType::F32)?)?;
        self.store.push(key, kind, var.clone());
        Ok(var)
    }

    pub fn conv(
        &mut self,
        name: &str,
        in_c: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Conv2d> {
        let (weight, bias) = self.weight_and_bias(name, 4, in_c, |c| {
            format!("a conv weight [out, {c}, kh, kw]")
        })?;
        Ok(Conv2d {
            name: name.to_string(),
            weight,
            bias,
            stride,
            padding,
            post: Post::Identity,
        })
    }

    /// `{name}.weight` of rank `rank` whose second axis is `inputs` (else an error saying it
    /// should be `expected(inputs)`), and `{name}.bias` sized to its outputs when present.
    fn weight_and_bias(
        &mut self,
        name: &str,
        rank: usize,
        inputs: usize,
        expected: impl Fn(usize) -> String,
    ) -> Result<(Var, Option<Var>)> {
        let key = format!("{name}.weight");
        let dims = self
            .tensors
            .get(&key)
            .map(|t| t.dims().to_vec())
            .unwrap_or_default();
        if dims.is_empty() {
            // Missing: the reader's own error names the key.
            self.take(&key, ParamKind::Weight, None)?;
        }
        if dims.len() != rank || dims[1] != inputs {
            return Err(Error::Checkpoint {
                path: self.source.clone().into(),
                message: format!(
                    "key '{key}' has shape {dims:?}, expected {}",
                    expected(inputs)
                ),
            });
        }
        let weight = self.take(&key, ParamKind::Weight, None)?;
        let bias_key = format!("{name}.bias");
        let bias = if self.has(&bias_key) {
            Some(self.take(&bias_key, ParamKind::Bias, Some(&[dims[0]]))?)
        } else {
            None
        };
        Ok((weight, bias))
    }

    pub fn linear(&mut self, name: &str, in_f: usize) -> Result<Linear> {
        let (weight, bias) =
            self.weight_and_bias(name, 2, in_f, |f| format!("a linear weight [out, {f}]"))?;
        Ok(Linear {
            name: name.to_string(),
            weight,
            bias,
            post: Post::Identity,
        })
    }

    pub fn batch_norm(&mut self, name: &str, c: usize) -> Result<BatchNorm> {
        let shape = [c];
        Ok(BatchNorm {
            name: name.to_string(),
            gamma: self.take(&format!("{name}.weight"), ParamKind::BnGamma, Some(&shape))?,
            beta: self.take(&format!("{name}.bias"), ParamKind::BnBeta, Some(&shape))?,
            running_mean: self.take(
                &format!("{name}.running_mean"),
                ParamKind::BnMean,
                Some(&shape),
            )?,
            running_var: self.take(
                &format!("{name}.running_var"),
                ParamKind::BnVar,
                Some(&shape),
            )?,
            eps: 1e-5,
            momentum: 0.1,
            post: Post::Identity,
        })
    }

    /// Errors on keys nobody asked for (ignoring BN's num_batches_tracked counters).
    pub fn finish(self) -> Result<ParamStore> {
        let mut extra: Vec<&String> = self
            .tensors
            .keys()
            .filter(|k| !self.used.contains(*k) && !k.ends_with("num_batches_tracked"))
            .collect();
        extra.sort();
        if !extra.is_empty() {
            let shown: Vec<_> = extra.iter().take(5).map(|s| s.as_str()).collect();
            return Err(Error::Checkpoint {
                path: self.source.into(),
                message: format!(
                    "unexpected key{} {}{} (not part of the detected architecture)",
                    if extra.len() > 1 { "s" } else { "" },
                    shown.join(", "),
                    if extra.len() > 5 {
                        format!(" and {} more", extra.len() - 5)
                    } else {
                        String::new()
                    }
                ),
            });
        }
        Ok(self.store)
    }
}
