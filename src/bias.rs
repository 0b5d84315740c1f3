//! Bias handles: one mechanism for the trainer (rescale), the survey (zero), the
//! attributions and `info` (count). Every handle is the live `Var` of the model.

use candle_core::{Tensor, Var};

use crate::error::Result;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BiasKind {
    ConvBias,
    LinearBias,
    BnBeta,
    BnRunningMean,
}

impl BiasKind {
    pub fn label(&self) -> &'static str {
        match self {
            BiasKind::ConvBias => "conv bias",
            BiasKind::LinearBias => "linear bias",
            BiasKind::BnBeta => "batchnorm beta",
            BiasKind::BnRunningMean => "batchnorm running mean",
        }
    }
}

#[derive(Clone)]
pub struct BiasHandle {
    /// Owning module, torchvision name (e.g. `layer1.0.bn2`).
    pub module: String,
    /// Parameter name (e.g. `layer1.0.bn2.running_mean`).
    pub param: String,
    pub kind: BiasKind,
    pub var: Var,
}

impl BiasHandle {
    pub fn len(&self) -> usize {
        self.var.elem_count()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn read(&self) -> Tensor {
        self.var.as_tensor().detach()
    }
    pub fn scale(&self, factor: f64) -> Result<()> {
        let scaled = (self.var.as_tensor().detach() * factor)?;
        self.var.set(&scaled)?;
        Ok(())
    }
}

/// All bias-like parameters of one model.
#[derive(Clone)]
pub struct BiasSet {
    handles: Vec<BiasHandle>,
}

impl BiasSet {
    pub fn new(handles: Vec<BiasHandle>) -> Self {
        Self { handles }
    }
    pub fn iter(&self) -> impl Iterator<Item = &BiasHandle> {
        self.handles.iter()
    }
    pub fn len(&self) -> usize {
        self.handles.len()
    }
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }
    /// Total number of bias scalars.
    pub fn numel(&self) -> usize {
        self.handles.iter().map(|h| h.len()).sum()
    }
    /// (kind, handles, scalars) per kind, in a fixed order.
    pub fn count_by_kind(&self) -> Vec<(BiasKind, usize, usize)> {
        let mut out: Vec<(BiasKind, usize, usize)> = Vec::new();
        for h in &self.handles {
            match out.iter_mut().find(|(k, _, _)| *k == h.kind) {
                Some(e) => {
                    e.1 += 1;
                    e.2 += h.len();
                }
                None => out.push((h.kind, 1, h.len())),
            }
        }
        out.sort_by_key(|e| e.0);
        out
    }
    /// Multiply every bias in place.
    pub fn scale(&self, factor: f64) -> Result<()> {
        for h in &self.handles {
            h.scale(factor)?;
        }
        Ok(())
    }
    pub fn zero(&self) -> Result<()> {
        for h in &self.handles {
            h.var.set(&h.var.as_tensor().zeros_like()?)?;
        }
        Ok(())
    }
    /// Snapshot of the current values, to restore after an experiment.
    pub fn snapshot(&self) -> Vec<Tensor> {
        self.handles
            .iter()
            .map(|h| h.var.as_tensor().copy())
            .collect::<candle_core::Result<Vec<_>>>()
            .unwrap_or_default()
    }
    pub fn restore(&self, values: &[Tensor]) -> Result<()> {
        for (h, v) in self.handles.iter().zip(values) {
            h.var.set(v)?;
        }
        Ok(())
    }
    /// Largest |value| over all handles (0 for a zero-bias network).
    pub fn max_abs(&self) -> Result<f32> {
        let mut m = 0f32;
        for h in &self.handles {
            if !h.is_empty() {
                m = m.max(h.var.as_tensor().abs()?.max_all()?.to_scalar::<f32>()?);
            }
        }
        Ok(m)
    }
    pub fn is_trainable(kind: BiasKind) -> bool {
        kind != BiasKind::BnRunningMean
    }
}
