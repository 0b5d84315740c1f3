//! ReLU as a custom op: one pass forward, one pass backward, derivative 0 at exactly 0 as
//! in PyTorch. (candle's `relu` has derivative 1 at 0, which matters once biases decay and
//! many pre-activations sit at exactly 0; building it from a mask costs three passes and
//! stores a gradient for the mask too.)

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::Result;
use crate::hook::{GradHook, GradSlot};
use crate::storage::{cpu_f32, dense, written, CHUNK};

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

type Pair<'a> = (&'a [f32], &'a [f32]);

/// out[i] = f(x[i], y[i]) over equal-length slices, in chunks whose loops vectorise (a
/// per-element parallel iterator calls the closure once per value, out of line).
fn zip_values(x: &[f32], y: &[f32], f: impl Fn(f32, f32) -> f32 + Sync + Send) -> Vec<f32> {
    // Callers check the lengths (as errors); every output value must be written.
    assert_eq!(
        x.len(),
        y.len(),
        "element-wise operands of different lengths"
    );
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

/// The ReLU of one value, as every ReLU op here computes it (the fused affine + ReLU too).
/// NaN passes through as in PyTorch (`f32::max` would drop it); -0 gives +0 as before. The
/// compare-and-mask form vectorises to fewer instructions than `max`.
#[inline(always)]
pub(crate) fn relu_value(v: f32) -> f32 {
    if v <= 0.0 {
        0.0
    } else {
        v
    }
}

/// The gradient a ReLU passes back, from its output y: 0 where y ≤ 0 (derivative 0 at
/// exactly 0), else g, NaN outputs included: PyTorch's `threshold_backward`.
#[inline(always)]
pub(crate) fn relu_grad(g: f32, y: f32) -> f32 {
    if y <= 0.0 {
        0.0
    } else {
        g
    }
}

fn relu_values(x: &[f32]) -> Vec<f32> {
    zip_values(x, x, |v, _| relu_value(v))
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
        let out = zip_values(g, y, relu_grad);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// ReLU of a sum (ResNet's residual join), storing the gradient at its output in the
/// slot if one is attached. One pass instead of an add pass and a ReLU pass; the values are
/// the same (the f32 sum, then the ReLU) and so is the gradient each addend receives.
struct AddRelu(Option<GradSlot>);

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "zerobias-add-relu"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            candle_core::bail!(
                "residual join: addends of shapes {:?} and {:?}",
                l1.shape(),
                l2.shape()
            );
        }
        let a = dense(s1, l1, "residual addend")?;
        let b = dense(s2, l2, "residual addend")?;
        Ok((
            CpuStorage::F32(zip_values(a, b, |a, b| relu_value(a + b))),
            l1.shape().clone(),
        ))
    }
    fn bwd(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        if let Some(slot) = &self.0 {
            slot.store(&grad);
        }
        let masked = grad.apply_op2_no_bwd(&res.contiguous()?, &ReluGrad)?;
        Ok((Some(masked.clone()), Some(masked)))
    }
}

/// relu(a + b) with PyTorch's gradient (see [`relu`]).
pub fn add_relu(a: &Tensor, b: &Tensor, graph: bool, tap: &GradHook) -> Result<Tensor> {
    if !(cpu_f32(a) && cpu_f32(b)) {
        return relu(&(a + b)?, graph, tap);
    }
    let (a, b) = (a.contiguous()?, b.contiguous()?);
    if !graph {
        return Ok(a.apply_op2_no_bwd(&b, &AddRelu(None))?);
    }
    Ok(a.apply_op2(&b, AddRelu(tap.attach()))?)
}

/// ReLU with PyTorch's gradient; `graph` says whether a backward pass will follow. On CPU
/// the op itself fills the hook with the gradient at its output.
pub fn relu(x: &Tensor, graph: bool, tap: &GradHook) -> Result<Tensor> {
    if cpu_f32(x) {
        let x = x.contiguous()?;
        if !graph {
            return Ok(x.apply_op1_no_bwd(&Relu(None))?);
        }
        return Ok(x.apply_op1(Relu(tap.attach()))?);
    }
    // Other devices: x where x > 0 or NaN, else 0, as [`relu_value`]; the gradient flows
    // where the output is x, as [`relu_grad`]. (candle's `relu` drops NaN, and x·mask
    // would turn -inf into NaN.)
    let zero = x.zeros_like()?;
    Ok(x.le(0f32)?.where_cond(&zero, x)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;
    use candle_core::{Device, Var};

    /// Values with exact zeros, sums at exactly 0 and both signs, over more than one chunk.
    fn operands() -> (Var, Var) {
        let n = 2 * 3 * 60 * 60;
        let a: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 8.0)
            .collect();
        let b: Vec<f32> = (0..n)
            .map(|i| {
                if i % 7 == 0 {
                    -a[i]
                } else {
                    ((i * 53 % 89) as f32 - 44.0) / 16.0
                }
            })
            .collect();
        let shape = (2, 3, 60, 60);
        (
            Var::from_tensor(&Tensor::from_vec(a, shape, &Device::Cpu).unwrap()).unwrap(),
            Var::from_tensor(&Tensor::from_vec(b, shape, &Device::Cpu).unwrap()).unwrap(),
        )
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        v.into_iter().map(f32::to_bits).collect()
    }

    #[test]
    fn add_relu_matches_relu_of_the_sum_bit_for_bit() {
        let (a, b) = operands();
        let weights = Tensor::arange(0f32, a.elem_count() as f32, &Device::Cpu)
            .unwrap()
            .reshape(a.shape())
            .unwrap();
        let none = GradHook::default();
        let fused = add_relu(a.as_tensor(), b.as_tensor(), true, &none).unwrap();
        let plain = relu(&(a.as_tensor() + b.as_tensor()).unwrap(), true, &none).unwrap();
        assert_eq!(bits(&fused), bits(&plain));
        let inference = add_relu(a.as_tensor(), b.as_tensor(), false, &none).unwrap();
        assert_eq!(bits(&inference), bits(&plain));
        let loss = |y: &Tensor| (y * &weights).unwrap().sum_all().unwrap();
        let gf = loss(&fused).backward().unwrap();
        let gp = loss(&plain).backward().unwrap();
        for v in [&a, &b] {
            let (f, p) = (
                gf.get(v.as_tensor()).unwrap(),
                gp.get(v.as_tensor()).unwrap(),
            );
            assert_eq!(bits(f), bits(p));
        }
        // Where the sum is exactly 0 the gradient is 0, as in PyTorch.
        let sum: Vec<f32> = (a.as_tensor() + b.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let ga: Vec<f32> = gf
            .get(a.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(sum.contains(&0.0));
        for (s, g) in sum.iter().zip(&ga) {
            if *s <= 0.0 {
                assert_eq!(*g, 0.0);
            }
        }
    }

    /// PyTorch: relu(NaN) = NaN, relu(±inf) = (inf, 0), and the gradient passes where the
    /// output is NaN (`threshold_backward` zeroes only y ≤ 0). Also on the path other
    /// devices take (here through f64, which the CPU op does not serve).
    #[test]
    fn relu_propagates_nan_and_inf_as_pytorch() {
        let xs = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -0.0,
            0.0,
            -2.0,
            3.0,
        ];
        let want = [f32::NAN, f32::INFINITY, 0.0, 0.0, 0.0, 0.0, 3.0];
        let want_grad = [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0];
        let none = GradHook::default();
        for dtype in [DType::F32, DType::F64] {
            let x = Tensor::new(&xs, &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let x = Var::from_tensor(&x).unwrap();
            let zeros = x.as_tensor().zeros_like().unwrap();
            for graph in [false, true] {
                for y in [
                    relu(x.as_tensor(), graph, &none).unwrap(),
                    add_relu(x.as_tensor(), &zeros, graph, &none).unwrap(),
                ] {
                    let y: Vec<f32> = y.to_dtype(DType::F32).unwrap().to_vec1().unwrap();
                    for (g, w) in y.iter().zip(&want) {
                        assert!(g == w || (g.is_nan() && w.is_nan()), "{dtype:?}: {y:?}");
                    }
                    // +0 for -0, as `f32::max` gave before (bit-identical outputs).
                    assert_eq!(y[3].to_bits(), 0, "{dtype:?}");
                }
            }
            for y in [
                relu(x.as_tensor(), true, &none).unwrap(),
                add_relu(x.as_tensor(), &zeros, true, &none).unwrap(),
            ] {
                let g = y.sum_all().unwrap().backward().unwrap();
                let dx: Vec<f32> = g
                    .get(x.as_tensor())
                    .unwrap()
                    .to_dtype(DType::F32)
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                assert_eq!(dx, want_grad, "{dtype:?}");
            }
        }
    }

    #[test]
    fn add_relu_rejects_mismatched_shapes() {
        let a = Tensor::zeros((1, 2, 3, 3), DType::F32, &Device::Cpu).unwrap();
        let b = Tensor::zeros((1, 2, 3, 4), DType::F32, &Device::Cpu).unwrap();
        let err = add_relu(&a, &b, false, &GradHook::default()).unwrap_err();
        assert!(err.to_string().contains("residual join"), "{err}");
    }
}
