//! ReLU as a custom op: one pass forward, one pass backward, derivative 0 at exactly 0 as
//! in PyTorch. (candle's `relu` has derivative 1 at 0, which matters once biases decay and
//! many pre-activations sit at exactly 0; building it from a mask costs three passes and
//! stores a gradient for the mask too.)

use super::conv::dense;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::Result;
use crate::taps::{GradSlot, TapPoint};

/// ReLU, storing the gradient at its output in the slot if one is attached (a tap).
struct Relu(Option<GradSlot>);
struct ReluGrad;

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "zerobias-relu"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = dense(s, l, "relu input")?;
        Ok((
            CpuStorage::F32(map_values(x, |v| v.max(0.0))),
            l.shape().clone(),
        ))
    }
    fn bwd(
        &self,
        _arg: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        if let Some(slot) = &self.0 {
            slot.store(&grad);
        }
        Ok(Some(grad.apply_op2_no_bwd(&res.contiguous()?, &ReluGrad)?))
    }
}

/// Below this many values an element-wise pass runs on one thread.
const PARALLEL_MIN: usize = 1 << 15;

fn map_values(x: &[f32], f: impl Fn(f32) -> f32 + Sync + Send) -> Vec<f32> {
    if x.len() >= PARALLEL_MIN {
        x.par_iter()
            .with_min_len(PARALLEL_MIN)
            .map(|&v| f(v))
            .collect()
    } else {
        x.iter().map(|&v| f(v)).collect()
    }
}

impl CustomOp2 for ReluGrad {
    fn name(&self) -> &'static str {
        "zerobias-relu-grad"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = dense(s1, l1, "relu gradient")?;
        let y = dense(s2, l2, "relu output")?;
        if g.len() != y.len() {
            candle_core::bail!(
                "relu backward: {} gradients for {} outputs",
                g.len(),
                y.len()
            );
        }
        let pairs = |(g, y): (&f32, &f32)| if *y > 0.0 { *g } else { 0.0 };
        let out = if g.len() >= PARALLEL_MIN {
            g.par_iter()
                .with_min_len(PARALLEL_MIN)
                .zip(y)
                .map(pairs)
                .collect()
        } else {
            g.iter().zip(y).map(pairs).collect()
        };
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// ReLU with PyTorch's gradient; `graph` says whether a backward pass will follow. On CPU
/// the op itself serves the tap at its output.
pub fn relu(x: &Tensor, graph: bool, tap: &TapPoint) -> Result<Tensor> {
    if !graph {
        return Ok(x.relu()?);
    }
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        return Ok(x.contiguous()?.apply_op1(Relu(tap.attach()))?);
    }
    let mask = x.gt(0f32)?.to_dtype(x.dtype())?;
    Ok((x * mask)?)
}
