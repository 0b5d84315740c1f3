//! Fused per-module reductions: one pass over a gradient tensor gives everything the
//! bias attribution, FullGrad and the gross sums need, instead of a chain of tensor ops
//! that each walk (and allocate) the whole tensor again.

use candle_core::{DType, Storage, Tensor};
use rayon::prelude::*;

use crate::error::Result;

/// For v = b_c · g[n, c, h, w]: Σ_c v (signed), Σ_c |v|, and per image min/max of |v|.
pub struct ChannelStats {
    pub signed: Tensor,
    pub abs_sum: Tensor,
    pub min_abs: Tensor,
    pub max_abs: Tensor,
}

/// Run `f` on the contiguous f32 data of a CPU tensor, or return None.
fn with_cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    if !crate::storage::cpu_f32(t) {
        return None;
    }
    let (storage, layout) = t.storage_and_layout();
    let (a, b) = layout.contiguous_offsets()?;
    match &*storage {
        Storage::Cpu(candle_core::CpuStorage::F32(v)) => Some(f(&v[a..b])),
        _ => None,
    }
}

/// One term v = g·b of [`channel_stats`]: signed and absolute sums, and |v|'s extremes.
#[inline(always)]
fn add_scaled(v: f32, signed: &mut f32, abs_sum: &mut f32, lo: &mut f32, hi: &mut f32) {
    let av = v.abs();
    *signed += v;
    *abs_sum += av;
    *lo = lo.min(av);
    *hi = hi.max(av);
}

/// ChannelStats of g [N, C, H, W] scaled by b [C].
pub fn channel_stats(g: &Tensor, b: &Tensor) -> Result<ChannelStats> {
    let (n, c, h, w) = g.dims4()?;
    let hw = h * w;
    let g = g.contiguous()?;
    let bias: Vec<f32> = b.to_dtype(DType::F32)?.to_vec1()?;
    let fused = with_cpu_f32(&g, |data| {
        let mut signed = vec![0f32; n * hw];
        let mut abs_sum = vec![0f32; n * hw];
        // Images are independent: one per rayon task (the sums within an image keep
        // their order, so results do not depend on the thread count).
        let extremes: Vec<(f32, f32)> = signed
            .par_chunks_mut(hw.max(1))
            .zip(abs_sum.par_chunks_mut(hw.max(1)))
            .enumerate()
            .map(|(i, (s, a))| {
                // Extremes kept per lane so the loop vectorises (min/max are exact, so the
                // lane order does not matter).
                const LANES: usize = 16;
                let (mut lo, mut hi) = ([f32::INFINITY; LANES], [0f32; LANES]);
                for (ch, &bc) in bias.iter().enumerate() {
                    let base = (i * c + ch) * hw;
                    let plane = &data[base..base + hw];
                    let mut chunks = plane.chunks_exact(LANES);
                    let mut p0 = 0;
                    for chunk in &mut chunks {
                        for (l, &gv) in chunk.iter().enumerate() {
                            let (sp, ap) = (&mut s[p0 + l], &mut a[p0 + l]);
                            add_scaled(gv * bc, sp, ap, &mut lo[l], &mut hi[l]);
                        }
                        p0 += LANES;
                    }
                    for (l, &gv) in chunks.remainder().iter().enumerate() {
                        let (sp, ap) = (&mut s[p0 + l], &mut a[p0 + l]);
                        add_scaled(gv * bc, sp, ap, &mut lo[l], &mut hi[l]);
                    }
                }
                let lo = lo.iter().fold(f32::INFINITY, |m, &v| m.min(v));
                let hi = hi.iter().fold(0f32, |m, &v| m.max(v));
                (lo, hi)
            })
            .collect();
        let mut mins = vec![f32::INFINITY; n];
        let mut maxs = vec![0f32; n];
        for (i, &(lo, hi)) in extremes.iter().enumerate() {
            mins[i] = lo;
            maxs[i] = hi;
        }
        (signed, abs_sum, mins, maxs)
    });
    let dev = g.device();
    match fused {
        Some((s, a, lo, hi)) => Ok(ChannelStats {
            signed: Tensor::from_vec(s, (n, h, w), dev)?,
            abs_sum: Tensor::from_vec(a, (n, h, w), dev)?,
            min_abs: Tensor::from_vec(lo, n, dev)?,
            max_abs: Tensor::from_vec(hi, n, dev)?,
        }),
        None => {
            let v = g.broadcast_mul(&b.reshape((1, c, 1, 1))?)?;
            let av = v.abs()?;
            let flat = av.reshape((n, ()))?;
            Ok(ChannelStats {
                signed: v.sum(1)?,
                abs_sum: av.sum(1)?,
                min_abs: flat.min(1)?,
                max_abs: flat.max(1)?,
            })
        }
    }
}

/// Σ_c a ⊙ b for two [N, C, H, W] tensors.
pub fn channel_dot(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = a.dims4()?;
    let hw = h * w;
    let (a, b) = (a.contiguous()?, b.contiguous()?);
    let fused = with_cpu_f32(&a, |x| {
        with_cpu_f32(&b, |y| {
            let mut out = vec![0f32; n * hw];
            for i in 0..n {
                let o = &mut out[i * hw..(i + 1) * hw];
                for ch in 0..c {
                    let base = (i * c + ch) * hw;
                    for ((o, &xv), &yv) in o
                        .iter_mut()
                        .zip(&x[base..base + hw])
                        .zip(&y[base..base + hw])
                    {
                        *o += xv * yv;
                    }
                }
            }
            out
        })
    })
    .flatten();
    match fused {
        Some(v) => Ok(Tensor::from_vec(v, (n, h, w), a.device())?),
        None => Ok((a * b)?.sum(1)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn fused_matches_tensor_ops() {
        let g = Tensor::randn(0f32, 1f32, (2, 5, 3, 4), &Device::Cpu).unwrap();
        let b = Tensor::randn(0f32, 1f32, 5, &Device::Cpu).unwrap();
        let s = channel_stats(&g, &b).unwrap();
        let v = g.broadcast_mul(&b.reshape((1, 5, 1, 1)).unwrap()).unwrap();
        let close = |x: &Tensor, y: &Tensor| {
            let d = (x - y)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(d < 1e-5, "{d}");
        };
        close(&s.signed, &v.sum(1).unwrap());
        close(&s.abs_sum, &v.abs().unwrap().sum(1).unwrap());
        close(
            &s.max_abs,
            &v.abs().unwrap().reshape((2, ())).unwrap().max(1).unwrap(),
        );
        close(
            &s.min_abs,
            &v.abs().unwrap().reshape((2, ())).unwrap().min(1).unwrap(),
        );
        let h = Tensor::randn(0f32, 1f32, (2, 5, 3, 4), &Device::Cpu).unwrap();
        close(
            &channel_dot(&h, &g).unwrap(),
            &(&h * &g).unwrap().sum(1).unwrap(),
        );
    }
}
