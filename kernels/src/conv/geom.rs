//! The shapes of one convolution and the helpers every convolution path shares.

use rayon::prelude::*;

use crate::error::{KernelError as Error, Result};
use crate::storage::{written, CHUNK};

/// Shapes of one convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Geom {
    pub(super) n: usize,
    pub(super) c_in: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) c_out: usize,
    pub(super) kh: usize,
    pub(super) kw: usize,
    pub(super) stride: usize,
    pub(super) pad: usize,
    pub(super) oh: usize,
    pub(super) ow: usize,
}

impl Geom {
    pub(super) fn new(x: &[usize], w: &[usize], pad: usize, stride: usize) -> Result<Self> {
        let (&[n, c_in, h, wi], &[c_out, wc, kh, kw]) = (x, w) else {
            return Err(Error::Shape {
                what: "conv2d operands".into(),
                expected: "input [N, C, H, W] and weight [O, C, kh, kw]".into(),
                got: format!("{x:?} and {w:?}"),
            });
        };
        if wc != c_in || stride == 0 || kh == 0 || kw == 0 {
            return Err(Error::Shape {
                what: "conv2d weight".into(),
                expected: format!("[O, {c_in}, kh>0, kw>0] with stride > 0"),
                got: format!("{w:?} with stride {stride}"),
            });
        }
        if h + 2 * pad < kh || wi + 2 * pad < kw {
            return Err(Error::Shape {
                what: "conv2d input".into(),
                expected: format!("spatial size >= {kh}x{kw} after padding {pad}"),
                got: format!("{h}x{wi}"),
            });
        }
        Ok(Geom {
            n,
            c_in,
            h,
            w: wi,
            c_out,
            kh,
            kw,
            stride,
            pad,
            oh: (h + 2 * pad - kh) / stride + 1,
            ow: (wi + 2 * pad - kw) / stride + 1,
        })
    }
    pub(super) fn kk(&self) -> usize {
        self.kh * self.kw
    }
    /// Rows of the im2col matrix (its contraction length).
    pub(super) fn k_size(&self) -> usize {
        self.c_in * self.kk()
    }
    pub(super) fn hw(&self) -> usize {
        self.h * self.w
    }
    pub(super) fn ohw(&self) -> usize {
        self.oh * self.ow
    }
    /// For a stride-1 convolution with a square kernel, the convolution
    /// that maps its output gradient to its input gradient: O → C channels, padding
    /// k − 1 − pad, output the input's size.
    pub(super) fn transposed(&self) -> Option<Geom> {
        let square = self.kh == self.kw;
        if self.stride != 1 || !square || self.pad >= self.kh {
            return None;
        }
        Some(Geom {
            n: self.n,
            c_in: self.c_out,
            h: self.oh,
            w: self.ow,
            c_out: self.c_in,
            kh: self.kh,
            kw: self.kw,
            stride: 1,
            pad: self.kh - 1 - self.pad,
            oh: self.h,
            ow: self.w,
        })
    }
    /// Rows and columns of each plane of the [`source`] layout: the input's for stride 1,
    /// else those of its stride phases.
    pub(super) fn phase_dims(&self) -> (usize, usize) {
        (self.h.div_ceil(self.stride), self.w.div_ceil(self.stride))
    }
    /// The stride phases along one axis that the kernel reads: `count` consecutive
    /// residues (mod stride) from `first` (all of them unless the kernel is narrower than
    /// the stride, as for a 1×1 convolution with stride 2).
    pub(super) fn phases_along(&self, k: usize) -> (usize, usize) {
        let s = self.stride;
        ((s - self.pad % s) % s, k.min(s))
    }
    /// Index of residue `r` among the phases along an axis from the first one read (the
    /// phase is read if the index is below their count).
    pub(super) fn phase_index(&self, k: usize, r: usize) -> usize {
        (r + self.stride - self.phases_along(k).0) % self.stride
    }
    /// Values of one image in the [`source`] layout.
    pub(super) fn source_len(&self) -> usize {
        let (hq, wq) = self.phase_dims();
        self.c_in * self.phases_along(self.kh).1 * self.phases_along(self.kw).1 * hq * wq
    }
    /// Where im2col row r reads in the [`source`] layout: plane index, and the shift
    /// (dy, dx) with which output pixel (oy, ox) reads the plane's pixel (oy + dy, ox + dx).
    pub(super) fn source_of(&self, r: usize) -> (usize, (isize, isize)) {
        let (ci, ky, kx) = row_of(self, r);
        let s = self.stride as isize;
        let (ry, rx) = (
            ky as isize - self.pad as isize,
            kx as isize - self.pad as isize,
        );
        let (iy, ix) = (
            self.phase_index(self.kh, ry.rem_euclid(s) as usize),
            self.phase_index(self.kw, rx.rem_euclid(s) as usize),
        );
        let (ny, nx) = (self.phases_along(self.kh).1, self.phases_along(self.kw).1);
        (
            (ci * ny + iy) * nx + ix,
            (ry.div_euclid(s), rx.div_euclid(s)),
        )
    }
    /// 1×1, stride 1, no padding: the input image already is its im2col matrix.
    pub(super) fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }
    /// Output pixels per gemm tile: bounds the im2col buffer (≤ k_size × TILE floats)
    /// while keeping the gemm wide enough to run at full speed.
    pub(super) fn tile(&self) -> usize {
        const TILE: usize = 512;
        TILE.min(self.ohw()).max(1)
    }
}

/// Whether to parallelise across images (each image single-threaded) or inside each image
/// (rayon in im2col/col2im, multi-threaded gemm). Across images has no synchronisation but
/// needs at least one image per thread.
pub(super) fn across_images(n: usize) -> bool {
    n >= rayon::current_num_threads()
}

/// Range [lo, hi) of output columns `ox` whose input column `ox*s + kx - pad` is inside
/// the image.
pub(crate) fn valid_range(
    out: usize,
    inp: usize,
    k: usize,
    s: usize,
    pad: usize,
) -> (usize, usize) {
    // ox*s + k >= pad  ⇔  ox >= ceil((pad - k) / s)
    let lo = pad.saturating_sub(k).div_ceil(s).min(out);
    // ox*s + k - pad <= inp - 1  ⇔  ox <= (inp - 1 + pad - k) / s
    let hi = match (inp + pad).checked_sub(k + 1) {
        Some(v) => (v / s + 1).min(out),
        None => 0,
    };
    (lo, hi.max(lo))
}

/// A zeroed buffer, filled on every thread: `vec![0.0; len]` reuses freed memory (glibc
/// keeps it, see `init_cpu_runtime` in runtime.rs) and zero-fills it on the calling thread
/// while the others wait.
pub(super) fn zeros_on_all_threads(len: usize) -> Vec<f32> {
    // SAFETY: the chunks cover every value.
    unsafe {
        written(len, |out| {
            out.par_chunks_mut(CHUNK).for_each(|c| {
                for v in c {
                    v.write(0.0);
                }
            })
        })
    }
}

/// Row r of the im2col matrix is input channel `r % c_in` at kernel offset `r / c_in`
/// (kernel-offset-major, as candle's kernel orders its contraction, so that forward sums
/// are accumulated in the same order and come out bit-identical).
pub(super) fn row_of(g: &Geom, r: usize) -> (usize, usize, usize) {
    let (o, ci) = (r / g.c_in, r % g.c_in);
    (ci, o / g.kw, o % g.kw)
}
