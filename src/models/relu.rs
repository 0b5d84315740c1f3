//! ReLU as a custom op: one pass forward, one pass backward, derivative 0 at exactly 0 as
//! in PyTorch. (candle's `relu` has derivative 1 at 0, which matters once biases decay and
//! many pre-activations sit at exactly 0; building it from a mask costs three passes and
//! stores a gradient for the mask too.)

use std::mem::MaybeUninit;

use super::conv::dense;
use super::sgemm::written;
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
        Ok((CpuStorage::F32(relu_values(x)), l.shape().clone()))
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

/// Values per task of an element-wise pass (and below which it runs on one thread): large
/// enough to amortise scheduling, small enough to split a 14×14 map across both threads.
const CHUNK: usize = 1 << 14;

/// out[i] = f(x[i], y[i]) over equal-length slices, in chunks whose loops vectorise (a
/// per-element parallel iterator calls the closure once per value, out of line).
type Pair<'a> = (&'a [f32], &'a [f32]);

fn zip_values(x: &[f32], y: &[f32], f: impl Fn(f32, f32) -> f32 + Sync + Send) -> Vec<f32> {
    let chunk = |(o, (x, y)): (&mut [MaybeUninit<f32>], Pair)| {
        for ((o, &x), &y) in o.iter_mut().zip(x).zip(y) {
            o.write(f(x, y));
        }
    };
    // SAFETY: the chunks of out, x and y pair up one to one; every value is written.
    unsafe {
        written(x.len(), |out| {
            if x.len() > CHUNK {
                out.par_chunks_mut(CHUNK)
                    .zip(x.par_chunks(CHUNK).zip(y.par_chunks(CHUNK)))
                    .for_each(chunk);
            } else {
                chunk((out, (x, y)));
            }
        })
    }
}

fn relu_values(x: &[f32]) -> Vec<f32> {
    zip_values(x, x, |v, _| v.max(0.0))
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
        let out = zip_values(g, y, |g, y| if y > 0.0 { g } else { 0.0 });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// ReLU with PyTorch's gradient; `graph` says whether a backward pass will follow. On CPU
/// the op itself serves the tap at its output.
pub fn relu(x: &Tensor, graph: bool, tap: &TapPoint) -> Result<Tensor> {
    let cpu_f32 = x.device().is_cpu() && x.dtype() == DType::F32;
    if !graph {
        if cpu_f32 {
            return Ok(x.contiguous()?.apply_op1_no_bwd(&Relu(None))?);
        }
        return Ok(x.relu()?);
    }
    if cpu_f32 {
        return Ok(x.contiguous()?.apply_op1(Relu(tap.attach()))?);
    }
    let mask = x.gt(0f32)?.to_dtype(x.dtype())?;
    Ok((x * mask)?)
}
