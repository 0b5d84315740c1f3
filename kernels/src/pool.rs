//! Max pooling with PyTorch's gradient. On CPU a custom op: one pass forward, one pass
//! backward, PyTorch's rule
//! (the first maximum of each window in raster order wins, except that any NaN wins and
//! the last NaN wins over earlier ones: ATen's `(val > maxval) || isnan(val)`; padding
//! never wins).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::{KernelError, Result};
use crate::storage::{cpu_f32, dense};

/// Max pooling with PyTorch's gradient: one winner per window (the first maximum in
/// raster order), for any kernel, stride and padding; `graph` says whether a backward pass
/// will follow. CPU f32 tensors take [`MaxPool`]; the generic path is built from strided
/// views + argmax + gather because candle's max_pool2d has no backward unless
/// kernel == stride and spreads the gradient over ties.
pub fn max_pool2d(
    x: &Tensor,
    kernel: usize,
    stride: usize,
    padding: usize,
    graph: bool,
) -> Result<Tensor> {
    let (_n, _c, h, w) = x.dims4()?;
    if h + 2 * padding < kernel || w + 2 * padding < kernel {
        return Err(KernelError::Shape {
            what: "max-pool input".into(),
            expected: format!("spatial size >= {} after padding", kernel),
            got: format!("{h}x{w}"),
        });
    }
    let ho = (h + 2 * padding - kernel) / stride + 1;
    let wo = (w + 2 * padding - kernel) / stride + 1;
    if cpu_f32(x) {
        let op = MaxPool {
            kernel,
            stride,
            padding,
        };
        let x = x.contiguous()?;
        if !graph {
            return Ok(x.apply_op1_no_bwd(&op)?);
        }
        return Ok(x.apply_op1(op)?);
    }
    if !graph && padding == 0 && kernel == stride {
        // Inference: candle's kernel gives the max; it drops a NaN unless the NaN comes first
        // in its window, so windows holding one are set to NaN after (PyTorch propagates it).
        let y = x.max_pool2d_with_stride(kernel, stride)?;
        let nan = x.ne(x)?.to_dtype(x.dtype())?;
        let has_nan = nan.max_pool2d_with_stride(kernel, stride)?.gt(0f32)?;
        let nans = Tensor::full(f32::NAN, y.shape(), y.device())?.to_dtype(y.dtype())?;
        return Ok(has_nan.where_cond(&nans, &y)?);
    }
    // Edge padding is equivalent to -inf padding for a max: the padded value is a copy of
    // an element already inside the window.
    let need_h = (kernel - 1) + stride * ho;
    let need_w = (kernel - 1) + stride * wo;
    let extra_h = need_h.saturating_sub(h + padding);
    let extra_w = need_w.saturating_sub(w + padding);
    let xp = x
        .pad_with_same(2, padding, extra_h)?
        .pad_with_same(3, padding, extra_w)?;
    let mut views = Vec::with_capacity(kernel * kernel);
    for dy in 0..kernel {
        let rows = strided(&xp, 2, dy, stride, ho)?;
        for dx in 0..kernel {
            views.push(strided(&rows, 3, dx, stride, wo)?);
        }
    }
    let stacked = Tensor::stack(&views, 0)?;
    let idx = stacked.detach().argmax_keepdim(0)?;
    // As ATen, a NaN wins its window and the last NaN in raster order (the order of the
    // views) wins over earlier ones; argmax's choice among NaNs is unspecified. The rank of
    // view v is v + 1 where it holds NaN, else 0; the largest rank is the last NaN.
    let stacked_d = stacked.detach();
    let ranks = Tensor::arange(1u32, (kernel * kernel) as u32 + 1, x.device())?
        .to_dtype(x.dtype())?
        .reshape((kernel * kernel, 1, 1, 1, 1))?;
    let rank = stacked_d
        .ne(&stacked_d)?
        .to_dtype(x.dtype())?
        .broadcast_mul(&ranks)?;
    let has_nan = rank.max_keepdim(0)?.gt(0f32)?;
    let idx = has_nan.where_cond(&rank.argmax_keepdim(0)?, &idx)?;
    Ok(stacked.gather(&idx, 0)?.squeeze(0)?)
}

/// Elements start, start+step, ..., `count` of them, along `dim`.
fn strided(x: &Tensor, dim: usize, start: usize, step: usize, count: usize) -> Result<Tensor> {
    let t = x.narrow(dim, start, step * count)?;
    if step == 1 {
        return Ok(t);
    }
    let mut shape = t.dims().to_vec();
    shape[dim] = count;
    shape.insert(dim + 1, step);
    Ok(t.reshape(shape)?.narrow(dim + 1, 0, 1)?.squeeze(dim + 1)?)
}

#[derive(Clone, Copy)]
pub struct MaxPool {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl MaxPool {
    fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        (
            (h + 2 * self.padding - self.kernel) / self.stride + 1,
            (w + 2 * self.padding - self.kernel) / self.stride + 1,
        )
    }

    /// Where the window reads for kernel column `dx` come from in [`Phases`]: output column
    /// ox reads input column ox·s + dx − pad = (ox + off)·s + r, i.e. item ox + off of
    /// phase r.
    fn phase_of(&self, dx: usize) -> (usize, isize) {
        let t = dx as isize - self.padding as isize;
        let s = self.stride as isize;
        (t.rem_euclid(s) as usize, t.div_euclid(s))
    }

    /// Per kernel column dx: the output columns [lo, hi) whose read lies inside the row,
    /// and where those reads are (phase, offset; see [`Self::phase_of`]).
    fn runs(&self, w: usize, ow: usize) -> Vec<(usize, usize, usize, isize)> {
        (0..self.kernel)
            .map(|dx| {
                let (lo, hi) = crate::conv::geom::valid_range(ow, w, dx, self.stride, self.padding);
                let (r, off) = self.phase_of(dx);
                (lo, hi, r, off)
            })
            .collect()
    }

    /// The pooled plane, built a row at a time: each kernel offset updates a whole output
    /// row from a contiguous run of its input row's phase, so the inner loop has no bounds
    /// logic and vectorises. Same winner rule as [`Self::winner`]: a later value replaces
    /// the running one if strictly greater or NaN.
    fn pool_plane(&self, plane: &[f32], h: usize, w: usize, out: &mut [f32], ph: &mut Phases) {
        let (k, s, pad) = (self.kernel, self.stride, self.padding);
        let (oh, ow) = self.out_size(h, w);
        ph.split(plane, h, w, s);
        let runs = self.runs(w, ow);
        for (oy, row) in out.chunks_exact_mut(ow).enumerate().take(oh) {
            row.fill(f32::NEG_INFINITY);
            for dy in 0..k {
                let y = (oy * s + dy).wrapping_sub(pad);
                if y >= h {
                    continue;
                }
                for &(lo, hi, r, off) in &runs {
                    let src = ph.run(plane, y, r, lo as isize + off, hi - lo);
                    for (best, &v) in row[lo..hi].iter_mut().zip(src) {
                        // `&` and `|`, not `&&` and `||`: no branches, so the loop vectorises.
                        let take = (v > *best) | v.is_nan();
                        *best = if take { v } else { *best };
                    }
                }
            }
        }
    }

    /// [`Self::winner`] for every output position at once, row by row in the scan order of
    /// [`Self::pool_plane`] (so that the loops vectorise): index within the plane of each
    /// window's winner, u32::MAX for a window with no element inside the plane.
    fn winners_plane(&self, plane: &[f32], h: usize, w: usize, idx: &mut [u32], ph: &mut Phases) {
        let (k, s, pad) = (self.kernel, self.stride, self.padding);
        let (oh, ow) = self.out_size(h, w);
        ph.split(plane, h, w, s);
        let runs = self.runs(w, ow);
        let mut best = vec![f32::NEG_INFINITY; ow];
        for (oy, row) in idx.chunks_exact_mut(ow).enumerate().take(oh) {
            row.fill(u32::MAX);
            best.fill(f32::NEG_INFINITY);
            for dy in 0..k {
                let y = (oy * s + dy).wrapping_sub(pad);
                if y >= h {
                    continue;
                }
                for (dx, &(lo, hi, r, off)) in runs.iter().enumerate() {
                    if lo == hi {
                        continue;
                    }
                    let src = ph.run(plane, y, r, lo as isize + off, hi - lo);
                    // Plane index of the first value; the next ones are s apart.
                    let first = (y * w + lo * s + dx - pad) as u32;
                    let cells = best[lo..hi].iter_mut().zip(row[lo..hi].iter_mut());
                    for (j, ((b, win), &v)) in cells.zip(src).enumerate() {
                        let take = (*win == u32::MAX) | (v > *b) | v.is_nan();
                        *b = if take { v } else { *b };
                        *win = if take { first + (j * s) as u32 } else { *win };
                    }
                }
            }
        }
    }

    /// Index (within the plane) of the winning element of output position (oy, ox): the
    /// rule written per window, which the row-wise passes are tested against.
    #[cfg(test)]
    fn winner(&self, plane: &[f32], h: usize, w: usize, oy: usize, ox: usize) -> usize {
        let y0 = (oy * self.stride) as isize - self.padding as isize;
        let x0 = (ox * self.stride) as isize - self.padding as isize;
        let mut best = usize::MAX;
        let mut best_v = f32::NEG_INFINITY;
        for dy in 0..self.kernel as isize {
            let y = y0 + dy;
            if y < 0 || y >= h as isize {
                continue;
            }
            for dx in 0..self.kernel as isize {
                let x = x0 + dx;
                if x < 0 || x >= w as isize {
                    continue;
                }
                let i = y as usize * w + x as usize;
                let v = plane[i];
                if best == usize::MAX || v > best_v || v.is_nan() {
                    best = i;
                    best_v = v;
                }
            }
        }
        best
    }
}

/// A plane with each row split into its `s` phases (phase r holds columns r, r + s, …), so
/// that strided window reads become contiguous runs. With a stride of 1 the plane itself
/// is read.
#[derive(Default)]
struct Phases {
    data: Vec<f32>,
    /// Values per phase row (⌈w/s⌉), and the row pitch (s phases of that).
    len: usize,
    pitch: usize,
    stride: usize,
}

impl Phases {
    fn split(&mut self, plane: &[f32], h: usize, w: usize, s: usize) {
        self.stride = s;
        self.len = w.div_ceil(s);
        self.pitch = s * self.len;
        if s == 1 {
            return;
        }
        self.data.clear();
        self.data.resize(h * self.pitch, 0.0);
        for (src, dst) in plane
            .chunks_exact(w)
            .zip(self.data.chunks_exact_mut(self.pitch))
        {
            if s == 2 {
                // The common case (ResNet's stem), in pairs: the loop vectorises.
                let (even, odd) = dst.split_at_mut(self.len);
                for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(src.chunks(2)) {
                    *e = pair[0];
                    *o = pair.get(1).copied().unwrap_or(0.0);
                }
                continue;
            }
            for (r, phase) in dst.chunks_exact_mut(self.len).enumerate() {
                for (d, &v) in phase.iter_mut().zip(src.iter().skip(r).step_by(s)) {
                    *d = v;
                }
            }
        }
    }

    /// `len` values of phase r of row y of `plane` (the one last split) from item `start`
    /// (≥ 0 for the valid ranges).
    fn run<'a>(
        &'a self,
        plane: &'a [f32],
        y: usize,
        r: usize,
        start: isize,
        len: usize,
    ) -> &'a [f32] {
        let at = y * self.pitch + r * self.len + start as usize;
        let src = if self.stride == 1 { plane } else { &self.data };
        &src[at..at + len]
    }
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "zerobias-max-pool"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let x = dense(s, l, "max-pool input")?;
        let (oh, ow) = self.out_size(h, w);
        let mut y = vec![0f32; n * c * oh * ow];
        y.par_chunks_mut(oh * ow)
            .zip(x.par_chunks(h * w))
            .for_each_init(Phases::default, |ph, (out, plane)| {
                self.pool_plane(plane, h, w, out, ph)
            });
        Ok((CpuStorage::F32(y), Shape::from((n, c, oh, ow))))
    }
    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op2_no_bwd(
            &arg.contiguous()?,
            &MaxPoolGrad(*self),
        )?))
    }
}

struct MaxPoolGrad(MaxPool);

impl CustomOp2 for MaxPoolGrad {
    fn name(&self) -> &'static str {
        "zerobias-max-pool-grad"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = dense(s1, l1, "max-pool gradient")?;
        let x = dense(s2, l2, "max-pool input")?;
        let (n, c, h, w) = l2.shape().dims4()?;
        let (oh, ow) = self.0.out_size(h, w);
        if g.len() != n * c * oh * ow {
            candle_core::bail!(
                "max-pool backward: gradient has {} values, expected {}",
                g.len(),
                n * c * oh * ow
            );
        }
        if h * w > u32::MAX as usize {
            candle_core::bail!("max-pool backward: planes of {h}×{w} are too large");
        }
        let mut dx = vec![0f32; n * c * h * w];
        dx.par_chunks_mut(h * w)
            .zip(x.par_chunks(h * w))
            .zip(g.par_chunks(oh * ow))
            .for_each_init(
                || (vec![0u32; oh * ow], Phases::default()),
                |(idx, ph), ((d, plane), gp)| {
                    self.0.winners_plane(plane, h, w, idx, ph);
                    for (&i, &v) in idx.iter().zip(gp) {
                        if let Some(d) = d.get_mut(i as usize) {
                            *d += v;
                        }
                    }
                },
            );
        Ok((CpuStorage::F32(dx), l2.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    /// ATen's results for one 2×2 window [1, NaN; 3, NaN] and one [-inf, 5; 2, 4] (stride 2):
    /// NaN and 5; the gradient goes to the last NaN (index 3) and to the 5. The same through
    /// every path of `max_pool2d`: inference (no graph), with graph, and the other-device
    /// path (here f64, which the CPU op does not serve), also with padding.
    #[test]
    fn nan_wins_its_window_and_the_last_nan_takes_the_gradient() {
        let plane = [
            1.0,
            f32::NAN,
            f32::NEG_INFINITY,
            5.0,
            3.0,
            f32::NAN,
            2.0,
            4.0,
        ];
        for dtype in [DType::F32, DType::F64] {
            let x = Tensor::from_vec(plane.to_vec(), (1, 1, 2, 4), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let x = Var::from_tensor(&x).unwrap();
            for graph in [false, true] {
                let y = max_pool2d(x.as_tensor(), 2, 2, 0, graph).unwrap();
                let v: Vec<f32> = y
                    .to_dtype(DType::F32)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                assert!(v[0].is_nan() && v[1] == 5.0, "{dtype:?}: {v:?}");
            }
            let y = max_pool2d(x.as_tensor(), 2, 2, 0, true).unwrap();
            let g = y.sum_all().unwrap().backward().unwrap();
            let dx: Vec<f32> = g
                .get(x.as_tensor())
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_eq!(dx, [0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0], "{dtype:?}");
            // 3×3 stride 2 pad 1 (ResNet's stem): every window touching a NaN is NaN.
            for graph in [false, true] {
                let y = max_pool2d(x.as_tensor(), 3, 2, 1, graph).unwrap();
                let v: Vec<f32> = y
                    .to_dtype(DType::F32)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                assert!(v.iter().all(|v| v.is_nan()), "{dtype:?}: {v:?}");
            }
        }
    }

    /// The row-wise forward picks the same value, bit for bit, and the row-wise backward the
    /// same element, as the per-window winner rule: ties (including -0 vs +0), NaNs and
    /// padded borders.
    #[test]
    fn row_pooling_matches_the_winner_rule() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for &(k, s, p) in &[(3, 2, 1), (2, 2, 0), (3, 1, 1), (3, 2, 0), (5, 3, 2)] {
            let pool = MaxPool {
                kernel: k,
                stride: s,
                padding: p,
            };
            for &(h, w) in &[(7, 9), (8, 8), (11, 5)] {
                let plane: Vec<f32> = (0..h * w)
                    .map(|_| match next() % 10 {
                        0 => 0.0,
                        1 => -0.0,
                        2 if next() % 4 == 0 => f32::NAN,
                        _ => (next() % 5) as f32 - 2.0,
                    })
                    .collect();
                let (oh, ow) = pool.out_size(h, w);
                let mut rows = vec![0f32; oh * ow];
                let mut ph = Phases::default();
                pool.pool_plane(&plane, h, w, &mut rows, &mut ph);
                let mut idx = vec![0u32; oh * ow];
                pool.winners_plane(&plane, h, w, &mut idx, &mut ph);
                for oy in 0..oh {
                    for ox in 0..ow {
                        let win = pool.winner(&plane, h, w, oy, ox);
                        assert_eq!(idx[oy * ow + ox] as usize, win, "k{k} s{s} p{p} {h}x{w}");
                        let want = plane[win];
                        let got = rows[oy * ow + ox];
                        assert_eq!(
                            got.to_bits(),
                            want.to_bits(),
                            "k{k} s{s} p{p} {h}x{w} at ({oy}, {ox})"
                        );
                    }
                }
            }
        }
    }
}
