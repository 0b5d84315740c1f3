//! Per-channel affine map y[n, c, …] = x[n, c, …]·scale[c] + shift[c] as one custom op: the
//! bias add of convolutions and linear layers and eval-mode BatchNorm.
//!
//! Built from candle's broadcast ops this costs two passes forward, and backward about ten
//! full-size tensors (the gradient of each operand, each added into a fresh zero tensor, also
//! for the constant scale). Here forward is one pass and backward is one pass for the input
//! gradient plus per-channel sums for the operands that are tracked. Values are identical to
//! the broadcast version: the same multiply then add, in f32.

use std::iter::StepBy;
use std::mem::MaybeUninit;
use std::ops::Range;

use crate::relu::{relu_grad, relu_value};
use crate::storage::{cpu_f32, dense, written};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::Result;
use crate::hook::{GradHook, GradSlot};

/// Work below this many elements stays on the calling thread.
const PARALLEL_MIN: usize = 1 << 15;

/// y = x·scale[c] + shift[c] for x of shape [N, C, …], scale and shift of shape [C].
/// `scale = None` is the plain bias add. On CPU the op itself fills the hook with the
/// gradient at its output.
pub fn channel_affine(
    x: &Tensor,
    scale: Option<&Tensor>,
    shift: &Tensor,
    tap: &GradHook,
) -> Result<Tensor> {
    if let Some((x, scale, shift)) = op_operands(x, scale, shift)? {
        return Ok(x.apply_op3(&scale, &shift, ChannelAffine(tap.attach()))?);
    }
    let c = x.dim(1)?;
    let mut bshape = vec![1usize; x.rank()];
    bshape[1] = c;
    let y = match scale {
        Some(s) => x.broadcast_mul(&s.reshape(bshape.as_slice())?)?,
        None => x.clone(),
    };
    Ok(y.broadcast_add(&shift.reshape(bshape.as_slice())?)?)
}

/// The dense (x, scale, shift) operands of the affine ops (a missing scale as ones), or
/// `None` when the input takes candle's broadcast ops instead (not CPU f32).
fn op_operands(
    x: &Tensor,
    scale: Option<&Tensor>,
    shift: &Tensor,
) -> Result<Option<(Tensor, Tensor, Tensor)>> {
    if !(cpu_f32(x) && cpu_f32(shift) && scale.is_none_or(cpu_f32)) {
        return Ok(None);
    }
    let scale = match scale {
        Some(s) => s.contiguous()?,
        None => Tensor::ones(x.dim(1)?, DType::F32, x.device())?,
    };
    Ok(Some((x.contiguous()?, scale, shift.contiguous()?)))
}

/// relu(x·scale[c] + shift[c]) as one op (`scale = None`: relu(x + shift[c])), when nothing
/// records the affine map's output (training, inference): one pass forward instead of two,
/// and backward reads the ReLU's mask from its output instead of materialising the masked
/// gradient. The same values and gradients, bit for bit, as [`channel_affine`] followed by
/// the ReLU. `None` when this input takes the unfused path (not CPU f32).
pub fn channel_affine_relu(
    x: &Tensor,
    scale: Option<&Tensor>,
    shift: &Tensor,
    graph: bool,
) -> Result<Option<Tensor>> {
    let Some((x, scale, shift)) = op_operands(x, scale, shift)? else {
        return Ok(None);
    };
    Ok(Some(if graph {
        x.apply_op3(&scale, &shift, ChannelAffineRelu)?
    } else {
        x.apply_op3_no_bwd(&scale, &shift, &ChannelAffineRelu)?
    }))
}

/// relu(x·scale[c] + shift[c] + residual) as one op: eval-mode BatchNorm closing a residual
/// block, the shortcut added and the ReLU applied, when nothing records the BN output
/// (training, inference). Forward is one pass instead of two; backward one pass for the
/// shortcut's gradient, the input's and the scale and shift sums instead of two. The same
/// values and gradients, bit for bit, as [`channel_affine`] then `relu::add_relu`. `None`
/// when this input takes the unfused path (not CPU f32, or shapes that differ).
pub fn channel_affine_add_relu(
    x: &Tensor,
    scale: &Tensor,
    shift: &Tensor,
    residual: &Tensor,
    graph: bool,
) -> Result<Option<Tensor>> {
    if !(cpu_f32(x) && cpu_f32(scale) && cpu_f32(shift) && cpu_f32(residual))
        || x.shape() != residual.shape()
    {
        return Ok(None);
    }
    // Scale and shift as one [2, C] operand (the op takes three); stack passes its
    // gradient's rows back to each.
    let params = Tensor::stack(&[scale, shift], 0)?;
    let (x, residual) = (x.contiguous()?, residual.contiguous()?);
    Ok(Some(if graph {
        x.apply_op3(&params, &residual, ChannelAffineAddRelu)?
    } else {
        x.apply_op3_no_bwd(&params, &residual, &ChannelAffineAddRelu)?
    }))
}

/// The fused residual op (see [`channel_affine_add_relu`]): (x, [scale; shift], residual).
struct ChannelAffineAddRelu;

impl CustomOp3 for ChannelAffineAddRelu {
    fn name(&self) -> &'static str {
        "zerobias-channel-affine-add-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, c, p) = planes(l1.shape())?;
        let x = dense(s1, l1, "affine input")?;
        let params = dense(s2, l2, "affine scale and shift")?;
        let r = dense(s3, l3, "residual")?;
        check_channels("scale and shift", params, 2 * c)?;
        if r.len() != x.len() {
            candle_core::bail!(
                "channel affine: {} residual values for {} inputs",
                r.len(),
                x.len()
            );
        }
        let (scale, shift) = params.split_at(c);
        let y = map_planes(x, p, |i, o, a| {
            let (s, b) = (scale[i % c], shift[i % c]);
            let r = &r[i * p..(i + 1) * p];
            o.iter_mut().zip(a).zip(r).for_each(|((o, a), r)| {
                o.write(relu_value(a * s + b + r));
            });
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        residual: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let y = res.contiguous()?;
        let op = ResidualGrads(params.get(0)?.to_vec1()?);
        let out = grad.apply_op3_no_bwd(&y, x, &op)?;
        // [masked gradient; input gradient; sums [2, C]], flat.
        let len = x.elem_count();
        let masked = out.narrow(0, 0, len)?.reshape(x.shape())?;
        let (dx, sums) = split_grads(&out.narrow(0, len, out.dim(0)? - len)?, x)?;
        Ok((
            x.track_op().then_some(dx),
            params.track_op().then_some(sums),
            residual.track_op().then_some(masked),
        ))
    }
}

/// (g, y, x) → [relu_grad(g, y); that ·scale[c]; its sums with x and alone per channel]:
/// the fused residual op's backward in one pass (see [`channel_grads`]).
struct ResidualGrads(Vec<f32>);

impl CustomOp3 for ResidualGrads {
    fn name(&self) -> &'static str {
        "zerobias-channel-affine-add-relu-grads"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (c, p, g, y) = gradient_and_input(s1, l1, s2, l2)?;
        let (_, _, _, x) = gradient_and_input(s1, l1, s3, l3)?;
        check_channels("scale", &self.0, c)?;
        let out = channel_grads(g, Some(y), x, Some(&self.0), true, c, p);
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}

/// (planes N, channels C, plane size P) of a [N, C, …] layout.
fn planes(shape: &Shape) -> candle_core::Result<(usize, usize, usize)> {
    let dims = shape.dims();
    if dims.len() < 2 {
        candle_core::bail!("channel affine: expected [N, C, ...], got {dims:?}");
    }
    Ok((dims[0], dims[1], dims[2..].iter().product()))
}

fn check_channels(what: &str, v: &[f32], c: usize) -> candle_core::Result<()> {
    if v.len() != c {
        candle_core::bail!(
            "channel affine: {what} has {} values for {c} channels",
            v.len()
        );
    }
    Ok(())
}

/// out[n, c, p] = a[n, c, p]·scale[c] + shift[c].
fn affine_planes(a: &[f32], scale: &[f32], shift: Option<&[f32]>, c: usize, p: usize) -> Vec<f32> {
    map_planes(a, p, |i, o, a| {
        let s = scale[i % c];
        match shift {
            Some(b) => {
                let b = b[i % c];
                o.iter_mut().zip(a).for_each(|(o, a)| {
                    o.write(a * s + b);
                });
            }
            None => o.iter_mut().zip(a).for_each(|(o, a)| {
                o.write(a * s);
            }),
        }
    })
}

/// out[n, c, p] = relu(a[n, c, p]·scale[c] + shift[c]).
fn affine_relu_planes(a: &[f32], scale: &[f32], shift: &[f32], c: usize, p: usize) -> Vec<f32> {
    map_planes(a, p, |i, o, a| {
        let (s, b) = (scale[i % c], shift[i % c]);
        o.iter_mut().zip(a).for_each(|(o, a)| {
            o.write(relu_value(a * s + b));
        });
    })
}

/// out[n, c, p] = (g[n, c, p] where y[n, c, p] > 0, else 0)·scale[c]: the input gradient
/// of [`affine_relu_planes`], y its output.
fn masked_scale_planes(g: &[f32], y: &[f32], scale: &[f32], c: usize, p: usize) -> Vec<f32> {
    map_planes(g, p, |i, o, g| {
        let s = scale[i % c];
        let y = &y[i * p..(i + 1) * p];
        o.iter_mut().zip(g).zip(y).for_each(|((o, &g), &y)| {
            o.write(relu_grad(g, y) * s);
        });
    })
}

/// A new buffer like `a` whose planes (i = n·C + c) `f` writes, every value, from a's.
fn map_planes(
    a: &[f32],
    p: usize,
    f: impl Fn(usize, &mut [MaybeUninit<f32>], &[f32]) + Sync + Send,
) -> Vec<f32> {
    let plane = |(i, (o, a)): (usize, (&mut [MaybeUninit<f32>], &[f32]))| f(i, o, a);
    if p == 0 {
        return Vec::new();
    }
    // SAFETY: the planes of `out` and `a` pair up one to one (equal lengths, equal chunk
    // size), and every output value is written.
    unsafe {
        written(a.len(), |out| {
            if a.len() >= PARALLEL_MIN {
                out.par_chunks_mut(p)
                    .zip(a.par_chunks(p))
                    .enumerate()
                    .for_each(plane);
            } else {
                out.chunks_mut(p)
                    .zip(a.chunks(p))
                    .enumerate()
                    .for_each(plane);
            }
        })
    }
}

/// An affine op's operands, checked to match: C channels of P values per plane.
struct AffineOperands<'a> {
    c: usize,
    p: usize,
    x: &'a [f32],
    scale: &'a [f32],
    shift: &'a [f32],
}

fn affine_operands<'a>(
    s1: &'a CpuStorage,
    l1: &Layout,
    s2: &'a CpuStorage,
    l2: &Layout,
    s3: &'a CpuStorage,
    l3: &Layout,
) -> candle_core::Result<AffineOperands<'a>> {
    let (_, c, p) = planes(l1.shape())?;
    let x = dense(s1, l1, "affine input")?;
    let scale = dense(s2, l2, "affine scale")?;
    let shift = dense(s3, l3, "affine shift")?;
    check_channels("scale", scale, c)?;
    check_channels("shift", shift, c)?;
    Ok(AffineOperands {
        c,
        p,
        x,
        scale,
        shift,
    })
}

/// The op, storing the gradient at its output in the slot if one is attached (a tap).
struct ChannelAffine(Option<GradSlot>);

impl CustomOp3 for ChannelAffine {
    fn name(&self) -> &'static str {
        "zerobias-channel-affine"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let AffineOperands {
            c,
            p,
            x,
            scale,
            shift,
        } = affine_operands(s1, l1, s2, l2, s3, l3)?;
        Ok((
            CpuStorage::F32(affine_planes(x, scale, Some(shift), c, p)),
            l1.shape().clone(),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        scale: &Tensor,
        shift: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        if let Some(slot) = &self.0 {
            slot.store(&grad);
        }
        if x.track_op() && scale.track_op() && shift.track_op() {
            // Eval-mode BatchNorm in training: all three in one pass over the gradient.
            let op = ChannelDotAndSum(Some(scale.to_vec1()?));
            let (dx, both) = split_grads(&grad.apply_op2_no_bwd(x, &op)?, x)?;
            return Ok((Some(dx), Some(both.get(0)?), Some(both.get(1)?)));
        }
        let dx = if x.track_op() {
            Some(grad.apply_op2_no_bwd(scale, &ScaleGrad)?)
        } else {
            None
        };
        let (dscale, dshift) = match (scale.track_op(), shift.track_op()) {
            (true, true) => {
                // Both sums in one pass over the gradient.
                let (_, both) =
                    split_grads(&grad.apply_op2_no_bwd(x, &ChannelDotAndSum(None))?, x)?;
                (Some(both.get(0)?), Some(both.get(1)?))
            }
            (true, false) => (Some(grad.apply_op2_no_bwd(x, &ChannelDot)?), None),
            (false, true) => (None, Some(grad.apply_op1_no_bwd(&ChannelSum)?)),
            (false, false) => (None, None),
        };
        Ok((dx, dscale, dshift))
    }
}

/// The fused affine map and ReLU (see [`channel_affine_relu`]).
struct ChannelAffineRelu;

impl CustomOp3 for ChannelAffineRelu {
    fn name(&self) -> &'static str {
        "zerobias-channel-affine-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let AffineOperands {
            c,
            p,
            x,
            scale,
            shift,
        } = affine_operands(s1, l1, s2, l2, s3, l3)?;
        Ok((
            CpuStorage::F32(affine_relu_planes(x, scale, shift, c, p)),
            l1.shape().clone(),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        scale: &Tensor,
        shift: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        // The ReLU's mask is read from the output.
        let y = res.contiguous()?;
        let (track_scale, track_shift) = (scale.track_op(), shift.track_op());
        if !(track_scale || track_shift) {
            let dx = if x.track_op() {
                Some(grad.apply_op3_no_bwd(&y, scale, &MaskedScaleGrad)?)
            } else {
                None
            };
            return Ok((dx, None, None));
        }
        // The sums, and the input gradient in the same pass when it is needed.
        let op = MaskedDotAndSum(x.track_op().then(|| scale.to_vec1()).transpose()?);
        let (dx, both) = split_grads(&grad.apply_op3_no_bwd(&y, x, &op)?, x)?;
        Ok((
            x.track_op().then_some(dx),
            track_scale.then(|| both.get(0)).transpose()?,
            track_shift.then(|| both.get(1)).transpose()?,
        ))
    }
}

/// (g, y, scale) → (g where y > 0)·scale[c]: the fused op's input gradient.
struct MaskedScaleGrad;

impl CustomOp3 for MaskedScaleGrad {
    fn name(&self) -> &'static str {
        "zerobias-channel-affine-relu-input-grad"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (c, p, g, y) = gradient_and_input(s1, l1, s2, l2)?;
        let scale = dense(s3, l3, "affine scale")?;
        check_channels("scale", scale, c)?;
        Ok((
            CpuStorage::F32(masked_scale_planes(g, y, scale, c, p)),
            l1.shape().clone(),
        ))
    }
}

/// (g, y, x) → [Σ g'·x, Σ g'] per channel with g' = g where y > 0: the fused op's scale and
/// shift gradients, summed exactly as [`ChannelDotAndSum`] sums g' and x; given the scale,
/// preceded by the input gradient (as [`MaskedScaleGrad`] computes it) from the same pass.
struct MaskedDotAndSum(Option<Vec<f32>>);

impl CustomOp3 for MaskedDotAndSum {
    fn name(&self) -> &'static str {
        "zerobias-channel-affine-relu-dot-and-sum"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (c, p, g, y) = gradient_and_input(s1, l1, s2, l2)?;
        let (_, _, _, x) = gradient_and_input(s1, l1, s3, l3)?;
        grads_storage(g, Some(y), x, self.0.as_deref(), c, p)
    }
}

/// g·scale[c]: the input gradient.
struct ScaleGrad;

impl CustomOp2 for ScaleGrad {
    fn name(&self) -> &'static str {
        "zerobias-channel-affine-input-grad"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, c, p) = planes(l1.shape())?;
        let g = dense(s1, l1, "affine gradient")?;
        let scale = dense(s2, l2, "affine scale")?;
        check_channels("scale", scale, c)?;
        Ok((
            CpuStorage::F32(affine_planes(g, scale, None, c, p)),
            l1.shape().clone(),
        ))
    }
}

/// Σ_{n,p} g[n, c, p] per channel: the shift gradient.
struct ChannelSum;

impl CustomOp1 for ChannelSum {
    fn name(&self) -> &'static str {
        "zerobias-channel-sum"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, c, p) = planes(l.shape())?;
        let g = dense(s, l, "affine gradient")?;
        Ok((
            CpuStorage::F32(per_channel_sums(g, None, c, p)),
            Shape::from(c),
        ))
    }
}

/// (channels, plane size, gradient, input) of a backward op's operands, checked to match.
fn gradient_and_input<'a>(
    s1: &'a CpuStorage,
    l1: &Layout,
    s2: &'a CpuStorage,
    l2: &Layout,
) -> candle_core::Result<(usize, usize, &'a [f32], &'a [f32])> {
    let (_, c, p) = planes(l1.shape())?;
    let g = dense(s1, l1, "affine gradient")?;
    let x = dense(s2, l2, "affine input")?;
    if g.len() != x.len() {
        candle_core::bail!(
            "channel affine: {} gradients for {} inputs",
            g.len(),
            x.len()
        );
    }
    Ok((c, p, g, x))
}

/// Σ_{n,p} g[n, c, p]·x[n, c, p] per channel: the scale gradient.
struct ChannelDot;

impl CustomOp2 for ChannelDot {
    fn name(&self) -> &'static str {
        "zerobias-channel-dot"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (c, p, g, x) = gradient_and_input(s1, l1, s2, l2)?;
        Ok((
            CpuStorage::F32(per_channel_sums(g, Some(x), c, p)),
            Shape::from(c),
        ))
    }
}

/// [ChannelDot; ChannelSum] from one pass over g and x; given the scale, preceded by the
/// input gradient (as [`ScaleGrad`] computes it) from the same pass.
struct ChannelDotAndSum(Option<Vec<f32>>);

impl CustomOp2 for ChannelDotAndSum {
    fn name(&self) -> &'static str {
        "zerobias-channel-dot-and-sum"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (c, p, g, x) = gradient_and_input(s1, l1, s2, l2)?;
        grads_storage(g, None, x, self.0.as_deref(), c, p)
    }
}

/// The flat output of the gradient ops: the input gradient (if computed), then the [2, C]
/// sums.
fn grads_storage(
    g: &[f32],
    relu_out: Option<&[f32]>,
    x: &[f32],
    scale: Option<&[f32]>,
    c: usize,
    p: usize,
) -> candle_core::Result<(CpuStorage, Shape)> {
    if let Some(scale) = scale {
        check_channels("scale", scale, c)?;
    }
    let out = channel_grads(g, relu_out, x, scale, false, c, p);
    let len = out.len();
    Ok((CpuStorage::F32(out), Shape::from(len)))
}

/// Splits a gradient op's flat output into the input gradient (shaped like x; empty when
/// not computed) and the [2, C] sums.
fn split_grads(out: &Tensor, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
    let c = x.dim(1)?;
    let len = out.dim(0)? - 2 * c;
    let dx = if len == 0 {
        out.narrow(0, 0, 0)?
    } else {
        out.narrow(0, 0, len)?.reshape(x.shape())?
    };
    Ok((dx, out.narrow(0, len, 2 * c)?.reshape((2, c))?))
}

/// [Σ g·x per channel, Σ g per channel], each summed exactly as [`per_channel_sums`] does;
/// with a ReLU output y, of g' = g where y > 0 instead of g. Given `scale`, also the input
/// gradient g'·scale[c] (as [`affine_planes`] or [`masked_scale_planes`] computes it), and
/// with `write_masked` and y given, g' itself (a residual block's shortcut gets it), all
/// written in the same pass over each plane, so that backward reads the gradient once.
/// Returns one buffer: [g' if written; the input gradient if computed; the [2, C] sums].
fn channel_grads(
    g: &[f32],
    relu_out: Option<&[f32]>,
    x: &[f32],
    scale: Option<&[f32]>,
    write_masked: bool,
    c: usize,
    p: usize,
) -> Vec<f32> {
    let len = g.len();
    let write_masked = write_masked && relu_out.is_some();
    let masked_len = if write_masked { len } else { 0 };
    let dx_len = if scale.is_some() { len } else { 0 };
    let mut all: Vec<f32> = Vec::with_capacity(masked_len + dx_len + 2 * c);
    let out = PlanesOut(all.spare_capacity_mut().as_mut_ptr());
    let sums = per_channel(len, c, p, |ch, planes| {
        let (mut dot, mut sum) = ([0f64; LANES], [0f64; LANES]);
        for at in planes {
            let (gp, xp) = (&g[at..at + p], &x[at..at + p]);
            let yp = relu_out.map(|y| &y[at..at + p]);
            // SAFETY (both writes): `all` has room for the masked and input gradients;
            // each channel task writes only its own planes of them.
            if let (true, Some(yp)) = (write_masked, yp) {
                let o = unsafe { std::slice::from_raw_parts_mut(out.at(at), p) };
                o.iter_mut().zip(gp).zip(yp).for_each(|((o, &g), &y)| {
                    o.write(relu_grad(g, y));
                });
            }
            if let Some(scale) = scale {
                let o = unsafe { std::slice::from_raw_parts_mut(out.at(masked_len + at), p) };
                let s = scale[ch];
                match yp {
                    Some(yp) => o.iter_mut().zip(gp).zip(yp).for_each(|((o, &g), &y)| {
                        o.write(relu_grad(g, y) * s);
                    }),
                    None => o.iter_mut().zip(gp).for_each(|(o, &g)| {
                        o.write(g * s);
                    }),
                }
            }
            match yp {
                Some(yp) => {
                    add_masked_products(&mut dot, gp, yp, xp);
                    add_masked_values(&mut sum, gp, yp);
                }
                None => {
                    add_products(&mut dot, gp, xp);
                    add_values(&mut sum, gp);
                }
            }
        }
        (fold(&dot), fold(&sum))
    });
    // SAFETY: the channel tasks wrote every plane of every image of both gradients.
    unsafe { all.set_len(masked_len + dx_len) };
    all.extend(sums.iter().map(|s| s.0).chain(sums.iter().map(|s| s.1)));
    all
}

/// An output buffer that per-channel tasks write plane by plane (disjoint planes).
#[derive(Clone, Copy)]
struct PlanesOut(*mut MaybeUninit<f32>);
// SAFETY: the tasks write disjoint planes (see channel_grads).
unsafe impl Send for PlanesOut {}
unsafe impl Sync for PlanesOut {}
impl PlanesOut {
    /// A method, so that closures capture the whole (Send) wrapper, not its field.
    fn at(self, offset: usize) -> *mut MaybeUninit<f32> {
        self.0.wrapping_add(offset)
    }
}

/// Σ_{n,p} g[n, c, p] (·x[n, c, p] when given) per channel, accumulated in f64.
fn per_channel_sums(g: &[f32], x: Option<&[f32]>, c: usize, p: usize) -> Vec<f32> {
    per_channel(g.len(), c, p, |_, planes| {
        let mut lanes = [0f64; LANES];
        for at in planes {
            let gp = &g[at..at + p];
            match x {
                Some(x) => add_products(&mut lanes, gp, &x[at..at + p]),
                None => add_values(&mut lanes, gp),
            }
        }
        fold(&lanes)
    })
}

/// One task per channel of a [N, C, P] buffer of `len` values: `f` gets the offsets of the
/// channel's plane in every image. (Sums go in f64 lanes that are independent, so that the
/// loops vectorise instead of waiting on one add chain per value.)
fn per_channel<R: Send>(
    len: usize,
    c: usize,
    p: usize,
    f: impl Fn(usize, StepBy<Range<usize>>) -> R + Sync + Send,
) -> Vec<R> {
    let image = c * p;
    let images = len.checked_div(image).unwrap_or(0);
    (0..c)
        .into_par_iter()
        .map(|ch| f(ch, (ch * p..images * image).step_by(image.max(1))))
        .collect()
}

fn fold(lanes: &[f64; LANES]) -> f32 {
    lanes.iter().sum::<f64>() as f32
}

const LANES: usize = 8;

#[inline(always)]
fn add_values(lanes: &mut [f64; LANES], v: &[f32]) {
    let mut chunks = v.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (l, &e) in lanes.iter_mut().zip(chunk) {
            *l += e as f64;
        }
    }
    for (l, &e) in lanes.iter_mut().zip(chunks.remainder()) {
        *l += e as f64;
    }
}

#[inline(always)]
fn add_products(lanes: &mut [f64; LANES], a: &[f32], b: &[f32]) {
    let (mut ca, mut cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (qa, qb) in (&mut ca).zip(&mut cb) {
        for ((l, &u), &v) in lanes.iter_mut().zip(qa).zip(qb) {
            *l += u as f64 * v as f64;
        }
    }
    for ((l, &u), &v) in lanes.iter_mut().zip(ca.remainder()).zip(cb.remainder()) {
        *l += u as f64 * v as f64;
    }
}

/// [`add_values`] of relu_grad(g, y).
#[inline(always)]
fn add_masked_values(lanes: &mut [f64; LANES], g: &[f32], y: &[f32]) {
    let (mut cg, mut cy) = (g.chunks_exact(LANES), y.chunks_exact(LANES));
    for (qg, qy) in (&mut cg).zip(&mut cy) {
        for ((l, &g), &y) in lanes.iter_mut().zip(qg).zip(qy) {
            *l += relu_grad(g, y) as f64;
        }
    }
    for ((l, &g), &y) in lanes.iter_mut().zip(cg.remainder()).zip(cy.remainder()) {
        *l += relu_grad(g, y) as f64;
    }
}

/// [`add_products`] of relu_grad(g, y) and x.
#[inline(always)]
fn add_masked_products(lanes: &mut [f64; LANES], g: &[f32], y: &[f32], x: &[f32]) {
    let (mut cg, mut cy, mut cx) = (
        g.chunks_exact(LANES),
        y.chunks_exact(LANES),
        x.chunks_exact(LANES),
    );
    for ((qg, qy), qx) in (&mut cg).zip(&mut cy).zip(&mut cx) {
        for (((l, &g), &y), &x) in lanes.iter_mut().zip(qg).zip(qy).zip(qx) {
            *l += relu_grad(g, y) as f64 * x as f64;
        }
    }
    let rest = cg
        .remainder()
        .iter()
        .zip(cy.remainder())
        .zip(cx.remainder());
    for (l, ((&g, &y), &x)) in lanes.iter_mut().zip(rest) {
        *l += relu_grad(g, y) as f64 * x as f64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// [`channel_grads`] without g': (input gradient, empty without `scale`; sums).
    fn per_channel_grads(
        g: &[f32],
        relu_out: Option<&[f32]>,
        x: &[f32],
        scale: Option<&[f32]>,
        c: usize,
        p: usize,
    ) -> (Vec<f32>, Vec<f32>) {
        let mut all = channel_grads(g, relu_out, x, scale, false, c, p);
        let sums = all.split_off(all.len() - 2 * c);
        (all, sums)
    }

    fn values(shape: &[usize], seed: u32) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 250.0 - 2.0
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn reference(x: &Tensor, scale: &Tensor, shift: &Tensor) -> Tensor {
        let mut b = vec![1usize; x.rank()];
        b[1] = x.dim(1).unwrap();
        x.broadcast_mul(&scale.reshape(b.as_slice()).unwrap())
            .unwrap()
            .broadcast_add(&shift.reshape(b.as_slice()).unwrap())
            .unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn forward_is_bit_identical_to_broadcast_ops() {
        for shape in [vec![2, 3, 5, 7], vec![4, 6], vec![3, 64, 16, 16]] {
            let c = shape[1];
            let x = values(&shape, 1);
            let (scale, shift) = (values(&[c], 2), values(&[c], 3));
            let ours = channel_affine(&x, Some(&scale), &shift, &GradHook::default()).unwrap();
            assert_eq!(max_diff(&ours, &reference(&x, &scale, &shift)), 0.0);
            let plain = channel_affine(&x, None, &shift, &GradHook::default()).unwrap();
            let mut b = vec![1usize; x.rank()];
            b[1] = c;
            let want = x
                .broadcast_add(&shift.reshape(b.as_slice()).unwrap())
                .unwrap();
            assert_eq!(max_diff(&plain, &want), 0.0);
        }
    }

    #[test]
    fn gradients_match_broadcast_ops() {
        let x = Var::from_tensor(&values(&[3, 4, 6, 5], 4)).unwrap();
        let scale = Var::from_tensor(&values(&[4], 5)).unwrap();
        let shift = Var::from_tensor(&values(&[4], 6)).unwrap();
        let r = values(&[3, 4, 6, 5], 7);
        let loss = |y: Tensor| (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let ours = loss(channel_affine(&x, Some(&scale), &shift, &GradHook::default()).unwrap());
        let theirs = loss(reference(&x, &scale, &shift));
        for v in [&x, &scale, &shift] {
            let (a, b) = (ours.get(v).unwrap(), theirs.get(v).unwrap());
            let scale_of = b.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
            let tol = 1e-5 * scale_of.to_scalar::<f32>().unwrap().max(1.0);
            assert!(max_diff(a, b) <= tol, "{:?}", v.dims());
        }
    }

    #[test]
    fn fused_channel_sums_equal_the_separate_ones_bit_for_bit() {
        for shape in [[3usize, 5, 7, 9], [2, 64, 14, 14], [1, 3, 1, 1]] {
            let (c, p) = (shape[1], shape[2] * shape[3]);
            let g: Vec<f32> = values(&shape, 11).flatten_all().unwrap().to_vec1().unwrap();
            let x: Vec<f32> = values(&shape, 12).flatten_all().unwrap().to_vec1().unwrap();
            let (_, both) = per_channel_grads(&g, None, &x, None, c, p);
            let dot = per_channel_sums(&g, Some(&x), c, p);
            let sum = per_channel_sums(&g, None, c, p);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&both[..c]), bits(&dot));
            assert_eq!(bits(&both[c..]), bits(&sum));
        }
    }

    /// The one-pass backward (input gradient and both sums) gives what the separate ops
    /// give, bit for bit, with and without the ReLU mask (whose output has exact zeros).
    #[test]
    fn one_pass_backward_equals_the_separate_ops_bit_for_bit() {
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for shape in [[3usize, 5, 7, 9], [2, 64, 14, 14], [1, 3, 1, 1]] {
            let (c, p) = (shape[1], shape[2] * shape[3]);
            let vec = |seed| -> Vec<f32> {
                values(&shape, seed)
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            };
            let (g, x) = (vec(31), vec(32));
            let y: Vec<f32> = vec(33).iter().map(|&v| relu_value(v)).collect();
            let scale: Vec<f32> = values(&[c], 34).to_vec1().unwrap();
            let (dx, sums) = per_channel_grads(&g, None, &x, Some(&scale), c, p);
            assert_eq!(bits(&dx), bits(&affine_planes(&g, &scale, None, c, p)));
            assert_eq!(
                bits(&sums[..c]),
                bits(&per_channel_sums(&g, Some(&x), c, p))
            );
            assert_eq!(bits(&sums[c..]), bits(&per_channel_sums(&g, None, c, p)));
            let (dx, sums) = per_channel_grads(&g, Some(&y), &x, Some(&scale), c, p);
            assert_eq!(bits(&dx), bits(&masked_scale_planes(&g, &y, &scale, c, p)));
            let masked: Vec<f32> = g.iter().zip(&y).map(|(&g, &y)| relu_grad(g, y)).collect();
            assert_eq!(
                bits(&sums[..c]),
                bits(&per_channel_sums(&masked, Some(&x), c, p))
            );
            assert_eq!(
                bits(&sums[c..]),
                bits(&per_channel_sums(&masked, None, c, p))
            );
        }
    }

    /// The fused affine + ReLU gives the values and gradients of the two ops bit for bit:
    /// with negative scales, pre-activations at exactly 0 (gradient 0, as the ReLU's),
    /// without a scale, on 2-D inputs, and with only some operands tracked.
    #[test]
    fn fused_relu_is_bit_identical_to_affine_then_relu() {
        let bits = |t: &Tensor| -> Vec<u32> {
            let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            v.iter().map(|f| f.to_bits()).collect()
        };
        for shape in [vec![3, 4, 6, 5], vec![4, 6], vec![2, 64, 14, 14]] {
            let c = shape[1];
            // Every 5th input is 0 (some of them in channel 0 for every shape here).
            let mut xs: Vec<f32> = values(&shape, 21).flatten_all().unwrap().to_vec1().unwrap();
            xs.iter_mut().step_by(5).for_each(|v| *v = 0.0);
            let x =
                Var::from_tensor(&Tensor::from_vec(xs, shape.as_slice(), &Device::Cpu).unwrap())
                    .unwrap();
            // Channel 0 has shift 0, so its zero inputs sit exactly at the ReLU's kink.
            let mut b: Vec<f32> = values(&[c], 23).to_vec1().unwrap();
            b[0] = 0.0;
            let scale = Var::from_tensor(&values(&[c], 22)).unwrap();
            let shift = Var::from_tensor(&Tensor::new(b, &Device::Cpu).unwrap()).unwrap();
            let r = values(&shape, 24);
            for with_scale in [true, false] {
                let s = with_scale.then_some(scale.as_tensor());
                let fused = channel_affine_relu(&x, s, &shift, true).unwrap().unwrap();
                let tap = GradHook::default();
                let pre = channel_affine(&x, s, &shift, &tap).unwrap();
                let apart = crate::relu::relu(&pre, true, &tap).unwrap();
                assert_eq!(bits(&fused), bits(&apart));
                let loss = |y: &Tensor| (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
                let (gf, ga) = (loss(&fused), loss(&apart));
                for v in [&x, &scale, &shift] {
                    match (gf.get(v), ga.get(v)) {
                        (Some(a), Some(b)) => {
                            assert_eq!(bits(a), bits(b), "{shape:?} {:?}", v.dims())
                        }
                        (None, None) => assert!(!with_scale),
                        _ => panic!("gradient present in only one of them: {:?}", v.dims()),
                    }
                }
            }
            // Only the input tracked, then only the parameters.
            let (sc, sh) = (scale.as_tensor().detach(), shift.as_tensor().detach());
            let y = channel_affine_relu(&x, Some(&sc), &sh, true)
                .unwrap()
                .unwrap();
            let g = y.sum_all().unwrap().backward().unwrap();
            assert!(g.get(&x).is_some() && g.get(&sc).is_none() && g.get(&sh).is_none());
            let xd = x.as_tensor().detach();
            let y = channel_affine_relu(&xd, Some(&scale), &shift, true)
                .unwrap()
                .unwrap();
            let g = y.sum_all().unwrap().backward().unwrap();
            assert!(g.get(&xd).is_none() && g.get(&scale).is_some() && g.get(&shift).is_some());
        }
    }

    /// The fused residual op gives the values and gradients of the separate ops (affine,
    /// then add and ReLU) bit for bit, with sums at exactly 0 (gradient 0 at the kink) and
    /// with only some operands tracked.
    #[test]
    fn fused_residual_is_bit_identical_to_the_separate_ops() {
        let bits = |t: &Tensor| -> Vec<u32> {
            let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            v.iter().map(|f| f.to_bits()).collect()
        };
        for shape in [vec![3, 4, 6, 5], vec![2, 64, 14, 14]] {
            let c = shape[1];
            let var = |seed| Var::from_tensor(&values(&shape, seed)).unwrap();
            let (x, r) = (var(41), var(42));
            // Zero scale and shift in channel 0 and a residual of 0 at every 3rd value: the
            // sums there are exactly 0.
            let mut sc: Vec<f32> = values(&[c], 43).to_vec1().unwrap();
            let mut sh: Vec<f32> = values(&[c], 44).to_vec1().unwrap();
            (sc[0], sh[0]) = (0.0, 0.0);
            let mut rv: Vec<f32> = r.flatten_all().unwrap().to_vec1().unwrap();
            rv.iter_mut().step_by(3).for_each(|v| *v = 0.0);
            let r =
                Var::from_tensor(&Tensor::from_vec(rv, shape.as_slice(), &Device::Cpu).unwrap())
                    .unwrap();
            let scale = Var::from_tensor(&Tensor::new(sc, &Device::Cpu).unwrap()).unwrap();
            let shift = Var::from_tensor(&Tensor::new(sh, &Device::Cpu).unwrap()).unwrap();
            let w = values(&shape, 45);
            let loss = |y: &Tensor| (y * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let tap = GradHook::default();
            for tracked in [
                [true; 4],
                [true, false, false, true],
                [false, true, true, false],
            ] {
                let t = |v: &Var, i: usize| {
                    if tracked[i] {
                        v.as_tensor().clone()
                    } else {
                        v.as_tensor().detach()
                    }
                };
                let (xt, st, bt, rt) = (t(&x, 0), t(&scale, 1), t(&shift, 2), t(&r, 3));
                let fused = channel_affine_add_relu(&xt, &st, &bt, &rt, true)
                    .unwrap()
                    .unwrap();
                let pre = channel_affine(&xt, Some(&st), &bt, &tap).unwrap();
                let apart = crate::relu::add_relu(&pre, &rt, true, &tap).unwrap();
                assert_eq!(bits(&fused), bits(&apart));
                let (gf, ga) = (loss(&fused), loss(&apart));
                for (i, v) in [&xt, &st, &bt, &rt].into_iter().enumerate() {
                    // (The separate ops also hand a gradient to an untracked operand.)
                    match (tracked[i], gf.get(v), ga.get(v)) {
                        (true, Some(a), Some(b)) => {
                            assert_eq!(bits(a), bits(b), "{shape:?} operand {i}")
                        }
                        (false, None, _) => {}
                        _ => panic!("{shape:?} operand {i} (tracked {}): gradient", tracked[i]),
                    }
                }
            }
            let no_graph = channel_affine_add_relu(&x, &scale, &shift, &r, false)
                .unwrap()
                .unwrap();
            let pre = channel_affine(&x, Some(&scale), &shift, &tap).unwrap();
            let apart = crate::relu::add_relu(&pre, &r, false, &tap).unwrap();
            assert_eq!(bits(&no_graph), bits(&apart));
        }
    }

    #[test]
    fn untracked_operands_get_no_gradient() {
        let x = Var::from_tensor(&values(&[2, 3, 4, 4], 8)).unwrap();
        let scale = values(&[3], 9);
        let shift = values(&[3], 10);
        let g = channel_affine(&x, Some(&scale), &shift, &GradHook::default())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(g.get(&x).is_some());
        assert!(g.get(&scale).is_none() && g.get(&shift).is_none());
    }

    #[test]
    fn wrong_channel_count_is_an_error() {
        let x = values(&[2, 3, 4, 4], 1);
        assert!(channel_affine(
            &x,
            Some(&values(&[4], 2)),
            &values(&[3], 3),
            &GradHook::default()
        )
        .is_err());
        assert!(channel_affine(&x, None, &values(&[2], 3), &GradHook::default()).is_err());
    }
}

#[cfg(test)]
mod non_finite {
    use super::*;
    use candle_core::{Device, Var};

    /// PyTorch's values for relu(x·s + b [+ r]) at these inputs, and that the input
    /// gradient flows where the output is NaN (`threshold_backward` masks only y ≤ 0).
    #[test]
    fn fused_ops_propagate_nan_and_inf_as_pytorch() {
        let dev = Device::Cpu;
        let xs = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -1.0, 2.0, 0.5];
        let x =
            Var::from_tensor(&Tensor::from_vec(xs.to_vec(), (1, 2, 1, 3), &dev).unwrap()).unwrap();
        let scale = Tensor::new(&[1f32, 2.0], &dev).unwrap();
        let shift = Tensor::new(&[0f32, 0.0], &dev).unwrap();
        let want = [f32::NAN, f32::INFINITY, 0.0, 0.0, 4.0, 1.0];
        let same = |t: &Tensor| {
            let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            for (g, w) in v.iter().zip(&want) {
                assert!(
                    g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                    "{v:?}"
                );
            }
        };
        for graph in [false, true] {
            let y = channel_affine_relu(x.as_tensor(), Some(&scale), &shift, graph)
                .unwrap()
                .unwrap();
            same(&y);
            let zeros = x.as_tensor().zeros_like().unwrap();
            let y = channel_affine_add_relu(x.as_tensor(), &scale, &shift, &zeros, graph)
                .unwrap()
                .unwrap();
            same(&y);
        }
        // A NaN shift makes its whole channel NaN.
        let nan_shift = Tensor::new(&[0f32, f32::NAN], &dev).unwrap();
        let y = channel_affine_relu(x.as_tensor(), None, &nan_shift, false)
            .unwrap()
            .unwrap();
        let v: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        assert!(v[3..].iter().all(|v| v.is_nan()), "{v:?}");
        // Gradient: 1·s where the output is > 0 or NaN, 0 where it is 0.
        let y = channel_affine_relu(x.as_tensor(), Some(&scale), &shift, true)
            .unwrap()
            .unwrap();
        let g = y.sum_all().unwrap().backward();
        // sum_all of a NaN output is NaN; the backward still runs with gradient 1.
        let g = g.unwrap();
        let dx: Vec<f32> = g.get(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(dx, [1.0, 1.0, 0.0, 0.0, 2.0, 2.0]);
    }
}
