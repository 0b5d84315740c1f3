//! Max pooling as a custom op on CPU: one pass forward, one pass backward, PyTorch's rule
//! (the first maximum of each window in raster order wins; padding never wins).

use super::conv::dense;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

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

    /// Index (within the plane) of the winning element of output position (oy, ox).
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
                    if v.is_nan() {
                        return best;
                    }
                }
            }
        }
        best
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
            .for_each(|(out, plane)| {
                for oy in 0..oh {
                    for ox in 0..ow {
                        out[oy * ow + ox] = plane[self.winner(plane, h, w, oy, ox)];
                    }
                }
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
        let mut dx = vec![0f32; n * c * h * w];
        dx.par_chunks_mut(h * w)
            .zip(x.par_chunks(h * w))
            .zip(g.par_chunks(oh * ow))
            .for_each(|((d, plane), gp)| {
                for oy in 0..oh {
                    for ox in 0..ow {
                        d[self.0.winner(plane, h, w, oy, ox)] += gp[oy * ow + ox];
                    }
                }
            });
        Ok((CpuStorage::F32(dx), l2.shape().clone()))
    }
}
