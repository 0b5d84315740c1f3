//! The one place convolutions are computed, so a faster kernel can replace it everywhere.
//!
//! On the CPU, f32 convolutions run as a custom op (im2col + gemm) whose backward computes
//! the input gradient with gemm + col2im instead of candle's direct `conv_transpose2d`
//! loop, and skips the kernel (or input) gradient when that operand is not tracked: during
//! attribution the weights are detached, so their gradient would be thrown away. On CPUs
//! with AVX-512, convolutions wider than 1×1 between at least 16 channels (forward, and the
//! input gradient at stride 1) run as direct convolutions instead ([`direct`]), and the
//! 3×3 ones with many channels on small maps as Winograd's ([`winograd`]).
//! Other devices and dtypes, and the portable configuration, use candle's built-in
//! convolution.

use std::borrow::Cow;

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::{KernelError as Error, Result};
use crate::sgemm::{
    avx512_kernel_runs, copy_panel_row, sgemm, sgemm_to, sgemm_with, transpose_rows, with_scratch,
    written, Lhs, Mat, Out, RhsPanels, Segmented, PANEL, ROW,
};
use crate::storage::{dense, CHUNK};
use std::mem::MaybeUninit;

#[cfg(target_arch = "x86_64")]
mod direct;
#[cfg(target_arch = "x86_64")]
mod winograd;

/// 2-D convolution of `x` [N, C, H, W] with `w` [O, C, kh, kw] (no groups, no dilation).
pub fn conv2d(x: &Tensor, w: &Tensor, padding: usize, stride: usize) -> Result<Tensor> {
    if !crate::storage::cpu_f32(x)
        || w.dtype() != DType::F32
        || x.elem_count() == 0
        || w.elem_count() == 0
        || candle_conv_forced()
    {
        // Empty operands too: the kernels split buffers into per-image / per-channel chunks.
        return Ok(x.conv2d(w, padding, stride, 1, 1)?);
    }
    let g = Geom::new(x.dims(), w.dims(), padding, stride)?;
    // The kernels index dense row-major buffers; contiguous() is free when already dense.
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    Ok(x.apply_op2(&w, ConvOp(g))?)
}

/// Which kernel [`conv2d`] uses on the CPU: "candle" when forced or portable, else
/// "zerobias".
pub fn backend() -> &'static str {
    if candle_conv_forced() || crate::config::config().portable() {
        "candle"
    } else {
        "zerobias"
    }
}

/// `ZEROBIAS_CONV=candle` selects candle's built-in convolution, so that benchmarks can
/// compare both kernels in one binary (and as an escape hatch should a result be doubted).
fn candle_conv_forced() -> bool {
    crate::config::config().candle_conv
}

/// Shapes of one convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geom {
    n: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: usize,
    oh: usize,
    ow: usize,
}

impl Geom {
    fn new(x: &[usize], w: &[usize], pad: usize, stride: usize) -> Result<Self> {
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
    fn kk(&self) -> usize {
        self.kh * self.kw
    }
    /// Rows of the im2col matrix (its contraction length).
    fn k_size(&self) -> usize {
        self.c_in * self.kk()
    }
    fn hw(&self) -> usize {
        self.h * self.w
    }
    fn ohw(&self) -> usize {
        self.oh * self.ow
    }
    /// For a stride-1 convolution with a square kernel, the convolution
    /// that maps its output gradient to its input gradient: O → C channels, padding
    /// k − 1 − pad, output the input's size.
    fn transposed(&self) -> Option<Geom> {
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
    fn phase_dims(&self) -> (usize, usize) {
        (self.h.div_ceil(self.stride), self.w.div_ceil(self.stride))
    }
    /// The stride phases along one axis that the kernel reads: `count` consecutive
    /// residues (mod stride) from `first` (all of them unless the kernel is narrower than
    /// the stride, as for a 1×1 convolution with stride 2).
    fn phases_along(&self, k: usize) -> (usize, usize) {
        let s = self.stride;
        ((s - self.pad % s) % s, k.min(s))
    }
    /// Index of residue `r` among the phases along an axis from the first one read (the
    /// phase is read if the index is below their count).
    fn phase_index(&self, k: usize, r: usize) -> usize {
        (r + self.stride - self.phases_along(k).0) % self.stride
    }
    /// Values of one image in the [`source`] layout.
    fn source_len(&self) -> usize {
        let (hq, wq) = self.phase_dims();
        self.c_in * self.phases_along(self.kh).1 * self.phases_along(self.kw).1 * hq * wq
    }
    /// Where im2col row r reads in the [`source`] layout: plane index, and the shift
    /// (dy, dx) with which output pixel (oy, ox) reads the plane's pixel (oy + dy, ox + dx).
    fn source_of(&self, r: usize) -> (usize, (isize, isize)) {
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
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }
    /// Output pixels per gemm tile: bounds the im2col buffer (≤ k_size × TILE floats)
    /// while keeping the gemm wide enough to run at full speed.
    fn tile(&self) -> usize {
        const TILE: usize = 512;
        TILE.min(self.ohw()).max(1)
    }
}

/// Whether to parallelise across images (each image single-threaded) or inside each image
/// (rayon in im2col/col2im, multi-threaded gemm). Across images has no synchronisation but
/// needs at least one image per thread.
fn across_images(n: usize) -> bool {
    n >= rayon::current_num_threads()
}

/// Range [lo, hi) of output columns `ox` whose input column `ox*s + kx - pad` is inside
/// the image.
pub(super) fn valid_range(
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

/// The input in the layout the im2col rows read (see [`Geom::source_of`]): as it is for
/// stride 1; for stride s, each channel plane split into the stride phases its kernel
/// reads (phase (py, px) holds pixels (r·s + py, c·s + px), zero past the image), so that
/// every im2col row is a contiguous shifted run of one phase plane instead of a strided
/// gather. `x` holds whole images.
fn source<'a>(g: &Geom, x: &'a [f32]) -> Cow<'a, [f32]> {
    if g.stride == 1 {
        return Cow::Borrowed(x);
    }
    let s = g.stride;
    let (hq, wq) = g.phase_dims();
    let (ny, nx) = (g.phases_along(g.kh).1, g.phases_along(g.kw).1);
    let per_channel = ny * nx * hq * wq;
    // Zeroed: the cells past the image's last row or column are read as padding.
    let mut out = zeros_on_all_threads(x.len() / g.hw() * per_channel);
    out.par_chunks_mut(per_channel)
        .zip(x.par_chunks(g.hw()))
        .for_each(|(dst, plane)| {
            for (y, row) in plane.chunks_exact(g.w).enumerate() {
                let iy = g.phase_index(g.kh, y % s);
                if iy >= ny {
                    continue;
                }
                for px in 0..s.min(g.w) {
                    let ix = g.phase_index(g.kw, px);
                    if ix >= nx {
                        continue;
                    }
                    let at = ((iy * nx + ix) * hq + y / s) * wq;
                    for (d, &v) in dst[at..at + wq].iter_mut().zip(row[px..].iter().step_by(s)) {
                        *d = v;
                    }
                }
            }
        });
    Cow::Owned(out)
}

/// out[j] = plane[(oy + dy)·pw + ox + dx] for the output pixels q = q0 + j (oy = q / ow,
/// ox = q % ow), zero where that lies outside the ph × pw plane: one im2col row (see
/// [`Geom::source_of`]). When the plane is as wide as the output, a run over several
/// output rows is one contiguous copy of the plane, then zeros for the rows above or below
/// it and for the edge columns (where the copy wrapped into the neighbouring row): per
/// output row a store or two instead of a bounds computation and a short `memcpy` call.
fn shifted_run(
    plane: &[f32],
    (ph, pw): (usize, usize),
    ow: usize,
    (dy, dx): (isize, isize),
    q0: usize,
    out: &mut [f32],
) {
    let q1 = q0 + out.len();
    // Output rows oy with oy + dy in the plane, and columns ox with ox + dx in it.
    let (rows_lo, rows_hi) = shifted_range(ph, dy);
    let (lo, hi) = shifted_range(pw, dx);
    let (lo, hi) = (lo.min(ow), hi.min(ow));
    if pw != ow {
        // Row by row: each row's valid columns are one contiguous copy.
        let mut q = q0;
        while q < q1 {
            let (oy, ox0) = (q / ow, q % ow);
            let end = (q - ox0 + ow).min(q1);
            let dst = &mut out[q - q0..end - q0];
            let ox1 = ox0 + dst.len();
            if oy < rows_lo || oy >= rows_hi {
                dst.fill(0.0);
            } else {
                let a = lo.clamp(ox0, ox1);
                let b = hi.clamp(a, ox1);
                dst[..a - ox0].fill(0.0);
                dst[b - ox0..].fill(0.0);
                if a < b {
                    let src = ((oy as isize + dy) * pw as isize + a as isize + dx) as usize;
                    dst[a - ox0..b - ox0].copy_from_slice(&plane[src..src + (b - a)]);
                }
            }
            q = end;
        }
        return;
    }
    let row_lo = (rows_lo * ow).clamp(q0, q1);
    let row_hi = (rows_hi * ow).clamp(row_lo, q1);
    out[..row_lo - q0].fill(0.0);
    out[row_hi - q0..].fill(0.0);
    if row_lo == row_hi {
        return;
    }
    // Pixels whose source q + shift lies in the plane; the rest are edge columns (zeroed
    // below), at the plane's first or last pixel (or all, for a kernel wider than the image).
    let shift = dy * pw as isize + dx;
    let copy_lo = ((-shift).max(0) as usize).clamp(row_lo, row_hi);
    let copy_hi = (((ph * pw) as isize - shift).max(0) as usize).clamp(copy_lo, row_hi);
    out[row_lo - q0..copy_lo - q0].fill(0.0);
    if copy_lo < copy_hi {
        let src = (copy_lo as isize + shift) as usize;
        out[copy_lo - q0..copy_hi - q0].copy_from_slice(&plane[src..src + (copy_hi - copy_lo)]);
    }
    out[copy_hi - q0..row_hi - q0].fill(0.0);
    if lo == 0 && hi == ow {
        return;
    }
    for oy in row_lo / ow..row_hi.div_ceil(ow) {
        let base = oy * ow;
        for ox in (0..lo).chain(hi.max(lo)..ow) {
            let q = base + ox;
            if q >= row_lo && q < row_hi {
                out[q - q0] = 0.0;
            }
        }
    }
}

/// The output indices i ≥ 0 with i + d in [0, len).
fn shifted_range(len: usize, d: isize) -> (usize, usize) {
    let lo = (-d).max(0) as usize;
    let hi = (len as isize - d).max(0) as usize;
    (lo, hi.max(lo))
}

/// The im2col matrix [k_size, t] of images laid side by side, for output pixels p0..p0+t
/// of that sequence (pixel q of image b is p = b·ohw + q): one image's tile, or a whole
/// batch when each image's map is too small to fill the kernel's panels. Written panel by
/// panel into the gemm kernel's buffers (or whole, for the portable path).
struct Im2col<'a> {
    g: &'a Geom,
    /// One or more images in the [`source`] layout, one after the other.
    x: &'a [f32],
    p0: usize,
}

/// The columns of an [`Im2col`] that come from one image.
struct Piece<'a> {
    /// The image, in the [`source`] layout.
    x_b: &'a [f32],
    /// First output pixel in the image.
    start: usize,
    len: usize,
    /// Offset of the piece within the columns asked for.
    at: usize,
}

impl Im2col<'_> {
    /// The per-image pieces of columns j0..j0+cols.
    fn pieces(&self, j0: usize, cols: usize) -> Vec<Piece<'_>> {
        let (ohw, xs) = (self.g.ohw(), self.g.source_len());
        let (first, end) = (self.p0 + j0, self.p0 + j0 + cols);
        let mut pieces = Vec::new();
        let mut j = first;
        while j < end {
            let (b, q) = (j / ohw, j % ohw);
            let len = (ohw - q).min(end - j);
            pieces.push(Piece {
                x_b: &self.x[b * xs..(b + 1) * xs],
                start: q,
                len,
                at: j - first,
            });
            j += len;
        }
        pieces
    }

    /// Row r of the im2col matrix over the piece's columns, into out[..pc.len].
    fn run(&self, pc: &Piece, r: usize, out: &mut [f32]) {
        let g = self.g;
        let (hq, wq) = g.phase_dims();
        let (plane, shift) = g.source_of(r);
        let plane = &pc.x_b[plane * hq * wq..(plane + 1) * hq * wq];
        shifted_run(plane, (hq, wq), g.ow, shift, pc.start, &mut out[..pc.len]);
    }

    /// Im2col row r over the columns of `pieces`, into row[..cols].
    fn fill_row(&self, pieces: &[Piece], r: usize, row: &mut [f32]) {
        for pc in pieces {
            self.run(pc, r, &mut row[pc.at..]);
        }
    }
}

impl RhsPanels for Im2col<'_> {
    fn pack(
        &self,
        k0: usize,
        depth: usize,
        j0: usize,
        cols: usize,
        out: &mut [f32],
        stride: usize,
    ) {
        let pieces = self.pieces(j0, cols);
        for p in 0..depth {
            self.fill_row(&pieces, k0 + p, &mut out[p * stride..p * stride + cols]);
        }
    }

    fn pack_panels(&self, k0: usize, depth: usize, j0: usize, cols: usize, out: &mut [f32]) {
        // One im2col segment per row for all the panels (panels are narrower than most
        // output rows, so per-panel segments would mostly be setup), then split.
        let pieces = self.pieces(j0, cols);
        with_scratch(&ROW, cols.next_multiple_of(PANEL), |row| {
            // Columns past `cols` pad the last panel.
            row[cols..].fill(0.0);
            for p in 0..depth {
                self.fill_row(&pieces, k0 + p, row);
                row_into_panels(row, depth, p, out);
            }
        });
    }
}

/// Row p of a block of `depth` rows, split into the kernel's panels ([depth][PANEL] each).
fn row_into_panels(row: &[f32], depth: usize, p: usize, out: &mut [f32]) {
    for (i, src) in row.chunks_exact(PANEL).enumerate() {
        let at = (i * depth + p) * PANEL;
        copy_panel_row(&mut out[at..at + PANEL], src);
    }
}

/// Its transpose [t, k_size] (pixels × im2col rows), the right operand of the kernel
/// gradient: a tile of one image, or the pixels of several images one after the other.
struct Im2colT<'a>(Im2col<'a>);

impl RhsPanels for Im2colT<'_> {
    fn pack(
        &self,
        k0: usize,
        depth: usize,
        j0: usize,
        cols: usize,
        out: &mut [f32],
        stride: usize,
    ) {
        // (The portable path only.) Column q of the block is im2col row j0 + q.
        let pieces = self.0.pieces(k0, depth);
        let mut row = vec![0f32; depth];
        for q in 0..cols {
            self.0.fill_row(&pieces, j0 + q, &mut row);
            for (p, &v) in row.iter().enumerate() {
                out[p * stride + q] = v;
            }
        }
    }

    fn pack_panels(&self, k0: usize, depth: usize, j0: usize, cols: usize, out: &mut [f32]) {
        const PIXELS: usize = 64;
        let g = self.0.g;
        let hw = g.hw();
        let blocks: Vec<(usize, usize, Vec<Piece>)> = (0..depth)
            .step_by(PIXELS)
            .map(|b0| {
                let len = PIXELS.min(depth - b0);
                (b0, len, self.0.pieces(k0 + b0, len))
            })
            .collect();
        let mut block = [0f32; PANEL * PIXELS];
        // Panel by panel, so that only its PANEL input rows stream through the cache.
        for (i, q0) in (0..cols).step_by(PANEL).enumerate() {
            let live = PANEL.min(cols - q0);
            let panel = &mut out[i * PANEL * depth..(i + 1) * PANEL * depth];
            for (b0, len, pieces) in &blocks {
                let rows = &mut panel[b0 * PANEL..(b0 + len) * PANEL];
                if g.is_pointwise() {
                    // Each im2col row is a plain run of its input plane: transpose straight
                    // from the planes.
                    for pc in pieces {
                        let sources: Vec<&[f32]> = (0..live)
                            .map(|q| {
                                let ci = j0 + q0 + q;
                                &pc.x_b[ci * hw + pc.start..ci * hw + pc.start + pc.len]
                            })
                            .collect();
                        transpose_rows(
                            &sources,
                            &mut rows[pc.at * PANEL..(pc.at + pc.len) * PANEL],
                        );
                    }
                    continue;
                }
                // Contiguous im2col segments over the block's pixels, then a transpose
                // inside L1 (writing each segment with the panel's stride would touch a new
                // cache line per value).
                for (q, seg) in block.chunks_exact_mut(PIXELS).take(live).enumerate() {
                    for pc in pieces {
                        self.0.run(pc, j0 + q0 + q, &mut seg[pc.at..]);
                    }
                }
                let sources: Vec<&[f32]> = block.chunks_exact(PIXELS).take(live).collect();
                transpose_rows(&sources, rows);
            }
        }
    }
}

/// The inverse scatter of an im2col row: plane[window position] += row.
fn col2im_row(g: &Geom, plane: &mut [f32], ky: usize, kx: usize, p0: usize, row: &[f32]) {
    let (lo, hi) = valid_range(g.ow, g.w, kx, g.stride, g.pad);
    let mut j = 0;
    let (mut oy, mut ox0) = (p0 / g.ow, p0 % g.ow);
    while j < row.len() {
        let len = (g.ow - ox0).min(row.len() - j);
        let iy = (oy * g.stride + ky).wrapping_sub(g.pad);
        if iy < g.h {
            let dst = &mut plane[iy * g.w..(iy + 1) * g.w];
            let (a, b) = (lo.max(ox0), hi.min(ox0 + len));
            for ox in a..b {
                dst[ox * g.stride + kx - g.pad] += row[j + ox - ox0];
            }
        }
        j += len;
        oy += 1;
        ox0 = 0;
    }
}

/// Row r of the im2col matrix is input channel `r % c_in` at kernel offset `r / c_in`
/// (kernel-offset-major, as candle's kernel orders its contraction, so that forward sums
/// are accumulated in the same order and come out bit-identical).
fn row_of(g: &Geom, r: usize) -> (usize, usize, usize) {
    let (o, ci) = (r / g.c_in, r % g.c_in);
    (ci, o / g.kw, o % g.kw)
}

/// dx_b += col2im(col) for output pixels p0..p0+t, col [k_size, t].
fn col2im(g: &Geom, col: &[f32], p0: usize, t: usize, dx_b: &mut [f32], inner: bool) {
    // One task per input channel: its rows scatter into its own plane only.
    let add = |(ci, plane): (usize, &mut [f32])| {
        for o in 0..g.kk() {
            let r = o * g.c_in + ci;
            col2im_row(g, plane, o / g.kw, o % g.kw, p0, &col[r * t..(r + 1) * t]);
        }
    };
    if inner {
        dx_b.par_chunks_mut(g.hw()).enumerate().for_each(add);
    } else {
        dx_b.chunks_mut(g.hw()).enumerate().for_each(add);
    }
}

/// The weight [O, C, kh, kw] as the gemm operand [O, k_size] in im2col row order.
fn weight_to_rows<'a>(g: &Geom, w: &'a [f32]) -> Cow<'a, [f32]> {
    let kk = g.kk();
    if kk == 1 {
        return Cow::Borrowed(w);
    }
    let mut out = vec![0f32; w.len()];
    out.par_chunks_mut(g.k_size())
        .zip(w.par_chunks(g.k_size()))
        .for_each(|(dst, src)| {
            for ci in 0..g.c_in {
                for o in 0..kk {
                    dst[o * g.c_in + ci] = src[ci * kk + o];
                }
            }
        });
    Cow::Owned(out)
}

/// The inverse of [`weight_to_rows`].
fn rows_to_weight(g: &Geom, rows: Vec<f32>) -> Vec<f32> {
    let kk = g.kk();
    if kk == 1 {
        return rows;
    }
    let mut out = vec![0f32; rows.len()];
    out.par_chunks_mut(g.k_size())
        .zip(rows.par_chunks(g.k_size()))
        .for_each(|(dst, src)| {
            for ci in 0..g.c_in {
                for o in 0..kk {
                    dst[ci * kk + o] = src[o * g.c_in + ci];
                }
            }
        });
    out
}

/// Whether [`forward`] multiplies all images at once: when each image's map is too small to
/// fill the kernel's 32-column panels well (ResNet's 14×14 and 7×7 stages). Only where the
/// depth blocking of the product does not depend on its width (see `sgemm::depth_block`), so
/// results are bit-identical to image-by-image products.
fn batches_images(g: &Geom) -> bool {
    g.n > 1 && g.ohw() <= 256 && (g.c_out > 64 || g.ohw() > 64)
}

/// The convolution of a dense batch `x` with dense weights `w` [O, C, kh, kw].
fn forward(g: &Geom, x: &[f32], w: &[f32]) -> Vec<f32> {
    // Weights [O, C, kh, kw] as im2col rows: column t·C + c (kernel offset t) of row o.
    let rows = Segmented {
        mat: Mat {
            ptr: w.as_ptr(),
            rs: g.k_size() as isize,
            cs: g.kk() as isize,
        },
        seg: g.c_in,
        seg_step: 1,
    };
    // SAFETY: w holds O × k_size values and outlives lhs; prepared once for every image.
    forward_with(g, x, &unsafe { Lhs::new(rows, g.c_out, g.k_size()) })
}

/// [`forward`] with the weights as a prepared left operand [O, k_size] (im2col row order).
fn forward_with(g: &Geom, x: &[f32], w: &Lhs) -> Vec<f32> {
    let x = &*source(g, x);
    let (xs, ys) = (g.source_len(), g.c_out * g.ohw());
    if batches_images(g) {
        // One product over every image's pixels, each image's columns written to its own
        // output [O, ohw].
        let out = Out {
            rs: g.ohw(),
            block: g.ohw(),
            block_stride: ys,
        };
        // SAFETY: the product overwrites all O rows of n·ohw columns, which `out` maps onto
        // every value of y; the im2col view reads inside x.
        return unsafe {
            written(g.n * ys, |y| {
                sgemm_to(
                    w,
                    g.n * g.ohw(),
                    y.as_mut_ptr().cast(),
                    out,
                    false,
                    &Im2col { g, x, p0: 0 },
                    true,
                )
            })
        };
    }
    // SAFETY: every image's product overwrites its whole output (see forward_image).
    unsafe {
        written(g.n * ys, |y| {
            if across_images(g.n) {
                y.par_chunks_mut(ys)
                    .zip(x.par_chunks(xs))
                    .for_each(|(y_b, x_b)| forward_image(g, x_b, w, y_b, false));
            } else {
                for (y_b, x_b) in y.chunks_mut(ys).zip(x.chunks(xs)) {
                    forward_image(g, x_b, w, y_b, true);
                }
            }
        })
    }
}

/// The im2col matrix of a "same" stride-1 convolution over a zero-padded copy of the image
/// ([C, H + 2·pad, W + 2·pad] plus slack), for output pixels on the padded-width grid
/// (oy·(W + 2·pad) + ox, the last 2·pad columns of each row unused): every row is then one
/// contiguous run of the copy, shifted by its kernel offset, and the kernel reads it in
/// place instead of packing it.
struct PaddedRows<'a> {
    g: &'a Geom,
    /// The padded copy.
    xp: &'a [f32],
}

impl PaddedRows<'_> {
    fn pitch(g: &Geom) -> (usize, usize) {
        (g.h + 2 * g.pad, g.w + 2 * g.pad)
    }

    /// Padded copy length: the planes, plus what the kernel's last panel reads past the
    /// end of the last plane (its columns round up to a whole panel).
    fn len(g: &Geom) -> usize {
        let (hp, wp) = Self::pitch(g);
        g.c_in * hp * wp + g.kw + PANEL
    }

    /// Offset of row r's run in the copy.
    fn start(&self, r: usize) -> usize {
        let (hp, wp) = Self::pitch(self.g);
        let (ci, ky, kx) = row_of(self.g, r);
        ci * hp * wp + ky * wp + kx
    }
}

impl RhsPanels for PaddedRows<'_> {
    fn pack(
        &self,
        k0: usize,
        depth: usize,
        j0: usize,
        cols: usize,
        out: &mut [f32],
        stride: usize,
    ) {
        pack_runs(
            self.xp,
            |r| self.start(r),
            (k0, depth, j0, cols),
            out,
            stride,
        );
    }

    fn direct_rows(&self, k0: usize, depth: usize) -> Option<Vec<*const f32>> {
        // In range: start(r) + n rounded up to a panel <= len (see PaddedRows::len).
        Some(run_starts(self.xp, |r| self.start(r), k0, depth))
    }
}

/// [`RhsPanels::pack`] of an operand whose row r is the run of `data` from `start(r)`.
fn pack_runs(
    data: &[f32],
    start: impl Fn(usize) -> usize,
    (k0, depth, j0, cols): (usize, usize, usize, usize),
    out: &mut [f32],
    stride: usize,
) {
    for p in 0..depth {
        let at = start(k0 + p) + j0;
        out[p * stride..p * stride + cols].copy_from_slice(&data[at..at + cols]);
    }
}

/// [`RhsPanels::direct_rows`] of such an operand.
fn run_starts(
    data: &[f32],
    start: impl Fn(usize) -> usize,
    k0: usize,
    depth: usize,
) -> Vec<*const f32> {
    (k0..k0 + depth)
        .map(|r| data[start(r)..].as_ptr())
        .collect()
}

/// Whether [`forward_image`] reads the im2col rows in place from a padded copy: "same"
/// stride-1 convolutions with few output channels (packing the im2col matrix costs the
/// most per product there), whose padded image stays in L2 (rows read in place come from
/// far-apart planes) and whose rows are long enough that the unused columns of the padded
/// grid cost less than the packing (2·pad of every row). Measured side by side on 3×3
/// convolutions at batch 8: 64 channels at 56×56 and 28×28, 14-23% faster; 128 at 28×28
/// even; 256 at 56×56 and 512 at 28×28 (2-4 MB padded images), 10-23% slower.
fn reads_padded_rows(g: &Geom) -> bool {
    g.stride == 1
        && g.oh == g.h
        && g.ow == g.w
        && g.kk() > 1
        && g.c_out <= 64
        && g.w >= 16
        && PaddedRows::len(g) * std::mem::size_of::<f32>() <= 1 << 20
        && avx512_kernel_runs(g.c_out, g.h * PaddedRows::pitch(g).1, g.k_size())
}

/// [`forward_image`] through [`PaddedRows`].
fn forward_image_padded(
    g: &Geom,
    x_b: &[f32],
    lhs: &Lhs,
    y_b: &mut [MaybeUninit<f32>],
    inner: bool,
) {
    let (hp, wp) = PaddedRows::pitch(g);
    let n = g.h * wp;
    with_scratch(&PADDED, PaddedRows::len(g), |xp| {
        xp.fill(0.0);
        for (src, dst) in x_b.chunks_exact(g.hw()).zip(xp.chunks_exact_mut(hp * wp)) {
            for (row, d) in src
                .chunks_exact(g.w)
                .zip(dst[g.pad * wp..].chunks_exact_mut(wp))
            {
                d[g.pad..g.pad + g.w].copy_from_slice(row);
            }
        }
        with_scratch(&PADDED_OUT, g.c_out * n, |yp| {
            let rhs = PaddedRows { g, xp };
            // SAFETY: yp holds O rows of n; the padded rows cover n columns (rounded up to
            // a panel) from every start.
            unsafe { sgemm_with(lhs, n, yp.as_mut_ptr(), n, false, &rhs, inner) };
            // The valid columns of each row of the padded grid.
            for (dst, src) in y_b.chunks_exact_mut(g.w).zip(yp.chunks_exact(wp)) {
                for (d, &v) in dst.iter_mut().zip(&src[..g.w]) {
                    d.write(v);
                }
            }
        })
    })
}

thread_local! {
    /// Per-thread scratch for a padded copy of an image and a matrix on its padded-width
    /// grid: [`forward_image_padded`]'s image and output, [`weight_grad_image_nhwc`]'s
    /// channels-last image and gradient.
    static PADDED: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
    static PADDED_OUT: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Forward of one image (x_b in the [`source`] layout): y_b [O, oh*ow] = W [O, k_size] ·
/// im2col(x_b), every value of y_b written.
fn forward_image(g: &Geom, x_b: &[f32], lhs: &Lhs, y_b: &mut [MaybeUninit<f32>], inner: bool) {
    if reads_padded_rows(g) {
        return forward_image_padded(g, x_b, lhs, y_b, inner);
    }
    let ohw = g.ohw();
    let y_ptr = y_b.as_mut_ptr().cast::<f32>();
    if g.is_pointwise() {
        // Untiled: the image is its own im2col matrix, and candle multiplies it whole.
        let rhs = Mat {
            ptr: x_b.as_ptr(),
            rs: ohw as isize,
            cs: 1,
        };
        // SAFETY: y_b holds O rows of ohw; x_b holds C rows of ohw.
        unsafe { sgemm_with(lhs, ohw, y_ptr, ohw, false, &rhs, inner) };
        return;
    }
    let tile = g.tile();
    for p0 in (0..ohw).step_by(tile) {
        let t = tile.min(ohw - p0);
        let rhs = Im2col { g, x: x_b, p0 };
        // SAFETY: y_b holds O rows of ohw; columns p0..p0+t are in range; the tiles cover
        // every column.
        unsafe { sgemm_with(lhs, t, y_ptr.add(p0), ohw, false, &rhs, inner) }
    }
}

/// Input gradient of one image of a strided or padded-beyond-kernel convolution:
/// dx_b += col2im(Wᵀ · grad_b) (dx_b arrives zeroed).
fn input_grad_image(g: &Geom, gr_b: &[f32], lhs: &Lhs, dx_b: &mut [f32], inner: bool) {
    let (ohw, ks) = (g.ohw(), g.k_size());
    let tile = g.tile();
    // (1×1 stride-1 convolutions never come here: their input gradient is a convolution.)
    let mut col = vec![0f32; ks * tile];
    for p0 in (0..ohw).step_by(tile) {
        let t = tile.min(ohw - p0);
        // SAFETY: col holds ks × t; grad columns p0..p0+t of O rows are in range.
        unsafe {
            sgemm_with(
                lhs,
                t,
                col.as_mut_ptr(),
                t,
                false,
                &Mat {
                    ptr: gr_b[p0..].as_ptr(),
                    rs: ohw as isize,
                    cs: 1,
                },
                inner,
            )
        }
        col2im(g, &col, p0, t, dx_b, inner);
    }
}

/// Kernel gradient contribution of one image (x_b in the [`source`] layout):
/// dw [O, k_size] += grad_b · im2col(x_b)ᵀ.
fn weight_grad_image(
    g: &Geom,
    x_b: &[f32],
    gr_b: &[f32],
    dw: &mut [f32],
    accumulate: bool,
    inner: bool,
) {
    if weight_grad_reads_nhwc(g) {
        return weight_grad_image_nhwc(g, x_b, gr_b, dw, accumulate, inner);
    }
    let (ohw, ks) = (g.ohw(), g.k_size());
    let tile = g.tile();
    let mut acc = accumulate;
    for p0 in (0..ohw).step_by(tile) {
        let t = tile.min(ohw - p0);
        let lhs = Mat {
            ptr: gr_b[p0..].as_ptr(),
            rs: ohw as isize,
            cs: 1,
        };
        let rhs = Im2colT(Im2col { g, x: x_b, p0 });
        // SAFETY: dw is O × k_size; grad columns p0..p0+t of O rows are in range.
        unsafe { sgemm(g.c_out, ks, t, dw.as_mut_ptr(), ks, acc, lhs, &rhs, inner) }
        acc = true;
    }
}

/// Whether [`weight_grad_image`] takes the kernel gradient from a channels-last copy of the
/// padded image ([`weight_grad_image_nhwc`]): "same" stride-1 convolutions whose channels
/// fill whole panels of the kernel. (Batches of small maps go through
/// [`weight_grad_batch`]; per image this way they were 4-20% slower, measured side by side.)
fn weight_grad_reads_nhwc(g: &Geom) -> bool {
    g.stride == 1
        && g.oh == g.h
        && g.ow == g.w
        && g.kk() > 1
        && g.c_in.is_multiple_of(PANEL)
        && avx512_kernel_runs(g.c_out, g.c_in, g.h * PaddedRows::pitch(g).1)
}

/// The rows of a channels-last image [pixels, C] from pixel `shift` on, as a right operand
/// [pixels, C]. The kernel reads the rows in place up to 256 channels; wider rows lie so far
/// apart that packing them is faster (512 channels at 28×28: in place 25% slower).
struct ChannelsLast<'a> {
    xt: &'a [f32],
    c: usize,
    shift: usize,
}

impl RhsPanels for ChannelsLast<'_> {
    fn pack(
        &self,
        k0: usize,
        depth: usize,
        j0: usize,
        cols: usize,
        out: &mut [f32],
        stride: usize,
    ) {
        let start = |r| (r + self.shift) * self.c;
        pack_runs(self.xt, start, (k0, depth, j0, cols), out, stride);
    }

    fn direct_rows(&self, k0: usize, depth: usize) -> Option<Vec<*const f32>> {
        // Whole panels: the caller's columns (channels) are a multiple of the panel width.
        (self.c <= 256).then(|| run_starts(self.xt, |r| (r + self.shift) * self.c, k0, depth))
    }
}

/// [`weight_grad_image`] of a "same" stride-1 convolution, one product per kernel offset t:
/// dw[:, t·C..(t+1)·C] += grad · xt_t, where xt is the zero-padded image channels-last
/// ([H + 2·pad, W + 2·pad, C]) and xt_t its rows from t's offset on, over the output pixels
/// on the padded-width grid (the gradient is zero in the grid's unused columns, so they add
/// nothing). The kernel reads xt's rows in place: the image is reordered once (C·HW values)
/// instead of packing its im2col matrix (C·kh·kw·HW), and the packed gradient serves all
/// kh·kw products.
fn weight_grad_image_nhwc(
    g: &Geom,
    x_b: &[f32],
    gr_b: &[f32],
    dw: &mut [f32],
    accumulate: bool,
    inner: bool,
) {
    let (hp, wp) = PaddedRows::pitch(g);
    let (c, n) = (g.c_in, g.h * wp);
    with_scratch(&PADDED, (hp * wp + g.kw) * c, |xt| {
        xt.fill(0.0);
        let mut block = vec![0f32; g.w * PANEL];
        for y in 0..g.h {
            for c0 in (0..c).step_by(PANEL) {
                let sources: Vec<&[f32]> = (c0..c0 + PANEL)
                    .map(|ci| &x_b[ci * g.hw() + y * g.w..][..g.w])
                    .collect();
                transpose_rows(&sources, &mut block);
                for (x, src) in block.chunks_exact(PANEL).enumerate() {
                    let at = ((y + g.pad) * wp + x + g.pad) * c + c0;
                    xt[at..at + PANEL].copy_from_slice(src);
                }
            }
        }
        with_scratch(&PADDED_OUT, g.c_out * n, |gp| {
            for (dst, src) in gp.chunks_exact_mut(n).zip(gr_b.chunks_exact(g.ohw())) {
                for (d, s) in dst.chunks_exact_mut(wp).zip(src.chunks_exact(g.w)) {
                    d[..g.w].copy_from_slice(s);
                    d[g.w..].fill(0.0);
                }
            }
            // In slices of 4096 pixels, so that a large image's packed gradient is not
            // streamed from memory for each of the kh·kw products (whole 224×224 images
            // were 10% slower than im2col; slices of 1 MiB of gradient lost the gain on
            // 56×56 maps of 256 channels).
            let slice = 4096;
            for (i, q0) in (0..n).step_by(slice).enumerate() {
                let depth = slice.min(n - q0);
                let grad = Mat {
                    ptr: gp[q0..].as_ptr(),
                    rs: n as isize,
                    cs: 1,
                };
                // SAFETY: gp holds O × n values and outlives lhs.
                let lhs = unsafe { Lhs::new(grad, g.c_out, depth) };
                for t in 0..g.kk() {
                    let rhs = ChannelsLast {
                        xt,
                        c,
                        shift: q0 + (t / g.kw) * wp + t % g.kw,
                    };
                    // SAFETY: dw is O × k_size, columns t·C..(t+1)·C in range; xt holds
                    // the padded grid plus kw rows past it, so rows up to n + shift are in
                    // range.
                    unsafe {
                        sgemm_with(
                            &lhs,
                            c,
                            dw[t * c..].as_mut_ptr(),
                            g.k_size(),
                            accumulate || i > 0,
                            &rhs,
                            inner,
                        )
                    }
                }
            }
        })
    })
}

/// Kernel gradient of a whole batch of small maps (x in the [`source`] layout) as one
/// product over every image's pixels: dw [O, k_size] = grad [O, n·ohw] · im2col(x)ᵀ. Per
/// image, the depth (49 or 196 pixels) would be too short to amortise reading and writing
/// dw for every image; here dw is written once per depth block, and the threads split its
/// columns (deterministic).
fn weight_grad_batch(g: &Geom, x: &[f32], gr: &[f32]) -> Vec<f32> {
    let (ohw, ks) = (g.ohw(), g.k_size());
    // grad [n, O, ohw] read as [O, n·ohw]: row o's columns come in one segment per image.
    let grad = Segmented {
        mat: Mat {
            ptr: gr.as_ptr(),
            rs: ohw as isize,
            cs: 1,
        },
        seg: ohw,
        seg_step: (g.c_out * ohw) as isize,
    };
    // SAFETY: gr holds n × O × ohw values and outlives lhs.
    let lhs = unsafe { Lhs::new(grad, g.c_out, g.n * ohw) };
    // (Up to 8 MB for ResNet-50's last stage: zeroed on every thread.)
    let mut dw = zeros_on_all_threads(g.c_out * ks);
    let rhs = Im2colT(Im2col { g, x, p0: 0 });
    // SAFETY: dw is O × k_size; the im2col view reads inside x.
    unsafe { sgemm_with(&lhs, ks, dw.as_mut_ptr(), ks, false, &rhs, true) };
    dw
}

/// A zeroed buffer, filled on every thread: `vec![0.0; len]` reuses freed memory (glibc
/// keeps it, see `init_cpu_runtime` in runtime.rs) and zero-fills it on the calling thread
/// while the others wait.
fn zeros_on_all_threads(len: usize) -> Vec<f32> {
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

fn check_len(data: &[f32], want: usize, what: &str) -> candle_core::Result<()> {
    if data.len() != want {
        candle_core::bail!(
            "conv2d: {what} has {} elements, expected {want}",
            data.len()
        );
    }
    Ok(())
}

/// Forward convolution (x, w) → y.
struct ConvOp(Geom);

impl CustomOp2 for ConvOp {
    fn name(&self) -> &'static str {
        "zerobias-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let x = dense(s1, l1, "conv2d input")?;
        let w = dense(s2, l2, "conv2d weight")?;
        check_len(x, g.n * g.c_in * g.hw(), "input")?;
        check_len(w, g.c_out * g.k_size(), "weight")?;
        let shape = Shape::from((g.n, g.c_out, g.oh, g.ow));
        #[cfg(target_arch = "x86_64")]
        if winograd::applies(g) {
            let y = winograd::forward(g, x, winograd::forward_tap(g, w));
            return Ok((CpuStorage::F32(y), shape));
        }
        #[cfg(target_arch = "x86_64")]
        if direct::applies(g) {
            let kernel = direct::Kernel::forward(g, w);
            return Ok((CpuStorage::F32(direct::forward(g, x, &kernel)), shape));
        }
        let y = forward(g, x, w);
        Ok((CpuStorage::F32(y), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = self.0;
        let grad = grad.contiguous()?;
        // An operand that is neither a variable nor computed from one (a detached weight
        // during attribution, the raw image during training) gets no gradient.
        let dx = if x.track_op() {
            Some(grad.apply_op2_no_bwd(w, &InputGradOp(g))?)
        } else {
            None
        };
        let dw = if w.track_op() {
            Some(x.apply_op2_no_bwd(&grad, &WeightGradOp(g))?)
        } else {
            None
        };
        Ok((dx, dw))
    }
}

/// (grad, w) → dL/dx.
struct InputGradOp(Geom);

impl CustomOp2 for InputGradOp {
    fn name(&self) -> &'static str {
        "zerobias-conv2d-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let gr = dense(s1, l1, "conv2d output gradient")?;
        let w = dense(s2, l2, "conv2d weight")?;
        check_len(gr, g.n * g.c_out * g.ohw(), "output gradient")?;
        check_len(w, g.c_out * g.k_size(), "weight")?;
        let shape = Shape::from((g.n, g.c_in, g.h, g.w));
        #[cfg(target_arch = "x86_64")]
        if let Some(gt) = g.transposed().filter(winograd::applies) {
            // As below: the convolution of the output gradient with the flipped, transposed
            // kernel.
            let dx = winograd::forward(&gt, gr, winograd::input_grad_tap(g, w));
            return Ok((CpuStorage::F32(dx), shape));
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(gt) = g.transposed().filter(direct::applies) {
            // The same convolution of the output gradient with the flipped, transposed
            // kernel: its output channel o is W's input channel, its input channel W's
            // output channel.
            let kernel = direct::Kernel::input_grad(g, &gt, w);
            return Ok((CpuStorage::F32(direct::forward(&gt, gr, &kernel)), shape));
        }
        if let Some(gt) = g.transposed() {
            // A stride-1 convolution's input gradient is itself a convolution: of the
            // output gradient with the flipped, transposed kernel. Its contraction runs over
            // O·kh·kw at once, with no im2col matrix to scatter back (col2im).
            // Its weights [C, kh·kw·O] in im2col row order, read straight from W [O, C,
            // kh, kw]: column t·O + o of row c is W[o, c, kh·kw − 1 − t].
            let flipped = Segmented {
                mat: Mat {
                    ptr: w[g.kk() - 1..].as_ptr(),
                    rs: g.kk() as isize,
                    cs: g.k_size() as isize,
                },
                seg: g.c_out,
                seg_step: -1,
            };
            // SAFETY: w holds O × C × kh × kw values and outlives the product.
            let dx = forward_with(&gt, gr, &unsafe {
                Lhs::new(flipped, g.c_in, g.c_out * g.kk())
            });
            return Ok((CpuStorage::F32(dx), shape));
        }
        let w = weight_to_rows(g, w);
        // Wᵀ as a [k_size, O] matrix without copying, prepared once for every image.
        let wt = Mat {
            ptr: w.as_ptr(),
            rs: 1,
            cs: g.k_size() as isize,
        };
        // SAFETY: w holds O × k_size values and outlives lhs.
        let w = unsafe { Lhs::new(wt, g.k_size(), g.c_out) };
        let (xs, ys) = (g.c_in * g.hw(), g.c_out * g.ohw());
        let mut dx = zeros_on_all_threads(g.n * xs);
        if across_images(g.n) {
            dx.par_chunks_mut(xs)
                .zip(gr.par_chunks(ys))
                .for_each(|(dx_b, gr_b)| input_grad_image(g, gr_b, &w, dx_b, false));
        } else {
            for (dx_b, gr_b) in dx.chunks_mut(xs).zip(gr.chunks(ys)) {
                input_grad_image(g, gr_b, &w, dx_b, true);
            }
        }
        Ok((CpuStorage::F32(dx), shape))
    }
}

/// (x, grad) → dL/dw.
struct WeightGradOp(Geom);

impl CustomOp2 for WeightGradOp {
    fn name(&self) -> &'static str {
        "zerobias-conv2d-weight-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let x = dense(s1, l1, "conv2d input")?;
        let gr = dense(s2, l2, "conv2d output gradient")?;
        check_len(x, g.n * g.c_in * g.hw(), "input")?;
        check_len(gr, g.n * g.c_out * g.ohw(), "output gradient")?;
        #[cfg(target_arch = "x86_64")]
        if winograd::applies(g) {
            return Ok((
                CpuStorage::F32(winograd::weight_grad(g, x, gr)),
                Shape::from((g.c_out, g.c_in, g.kh, g.kw)),
            ));
        }
        #[cfg(target_arch = "x86_64")]
        if direct::applies(g) {
            return Ok((
                CpuStorage::F32(direct::weight_grad(g, x, gr)),
                Shape::from((g.c_out, g.c_in, g.kh, g.kw)),
            ));
        }
        let x = &*source(g, x);
        let (xs, ys, ws) = (g.source_len(), g.c_out * g.ohw(), g.c_out * g.k_size());
        let dw = if batches_images(g) {
            weight_grad_batch(g, x, gr)
        } else if across_images(g.n) {
            // A fixed partition into one contiguous group of images per thread, summed in
            // group order: rayon's work-stealing fold would group the partial sums by thread
            // timing and make training irreproducible between runs.
            let groups = rayon::current_num_threads().min(g.n).max(1);
            let per_group = g.n.div_ceil(groups);
            let partials: Vec<Vec<f32>> = x
                .par_chunks(xs * per_group)
                .zip(gr.par_chunks(ys * per_group))
                .map(|(x_g, gr_g)| {
                    let mut acc = vec![0f32; ws];
                    for (i, (x_b, gr_b)) in x_g.chunks(xs).zip(gr_g.chunks(ys)).enumerate() {
                        weight_grad_image(g, x_b, gr_b, &mut acc, i > 0, false);
                    }
                    acc
                })
                .collect();
            let mut partials = partials.into_iter();
            let mut dw = partials.next().unwrap_or_else(|| vec![0f32; ws]);
            for partial in partials {
                // In chunks on every thread: the same sums, in the same group order.
                dw.par_chunks_mut(CHUNK)
                    .zip(partial.par_chunks(CHUNK))
                    .for_each(|(p, q)| p.iter_mut().zip(q).for_each(|(p, q)| *p += q));
            }
            dw
        } else {
            let mut dw = vec![0f32; ws];
            for (i, (x_b, gr_b)) in x.chunks(xs).zip(gr.chunks(ys)).enumerate() {
                weight_grad_image(g, x_b, gr_b, &mut dw, i > 0, true);
            }
            dw
        };
        Ok((
            CpuStorage::F32(rows_to_weight(g, dw)),
            Shape::from((g.c_out, g.c_in, g.kh, g.kw)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        // Deterministic pseudo-random values (xorshift), so failures reproduce.
        let n: usize = shape.iter().product();
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let v: Vec<f32> = (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn flat(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
        assert_eq!(a.dims(), b.dims());
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        let s = b.abs().unwrap().max_all().unwrap();
        d.to_scalar::<f32>().unwrap() / s.to_scalar::<f32>().unwrap().max(1e-12)
    }

    /// (n, c_in, h, w, c_out, k, stride, pad)
    type Case = (usize, usize, usize, usize, usize, usize, usize, usize);
    const CASES: &[Case] = &[
        (1, 3, 17, 19, 8, 7, 2, 3),
        (2, 3, 32, 32, 16, 7, 2, 3),
        (3, 8, 9, 9, 12, 1, 2, 0),
        (2, 16, 10, 10, 8, 1, 1, 0),
        (1, 5, 12, 11, 7, 3, 1, 1),
        (4, 6, 13, 13, 9, 3, 2, 1),
        (1, 4, 40, 40, 6, 3, 1, 1), // more than one pixel tile
        (2, 3, 64, 64, 4, 3, 1, 1), // several tiles, across images
        (2, 4, 33, 31, 5, 3, 2, 1),
        (2, 2, 5, 5, 3, 3, 1, 0),
        (1, 2, 7, 7, 3, 5, 3, 2),
        (1, 2, 2, 2, 3, 3, 1, 1),
        (2, 24, 20, 20, 40, 3, 1, 1), // several gemm row and column panels
        (3, 16, 7, 7, 72, 3, 1, 1),   // small maps: all images in one product
        (3, 80, 9, 9, 70, 1, 1, 0),   // 1×1, small maps, input gradient as a convolution
        (2, 10, 12, 12, 70, 3, 2, 1), // strided small maps: images straddle pixel blocks
        (32, 8, 16, 16, 16, 3, 1, 1), // quickstart VGG, 16×16 stage: few output channels
        (32, 16, 16, 16, 16, 3, 1, 1),
        (5, 3, 16, 16, 66, 3, 1, 1),
        (2, 3, 6, 9, 5, 5, 1, 2), // "same" stride 1 (contiguous im2col runs): wide kernel
        (1, 2, 1, 4, 3, 3, 1, 1), // … a single row
        (2, 2, 3, 2, 2, 7, 1, 3), // … a kernel wider than the image
        (4, 8, 5, 3, 40, 3, 1, 1), // … small maps batched, runs across images
        (2, 8, 28, 30, 16, 3, 1, 1), // rows read in place from a padded copy
        (1, 4, 29, 28, 10, 5, 1, 2), // … a wider kernel
        (3, 20, 30, 31, 60, 3, 1, 1), // … several row and column panels
        (2, 3, 8, 8, 5, 3, 2, 0), // stride phases wider than the output (row by row)
        (2, 3, 9, 9, 40, 3, 2, 2), // … padding past the phase planes
        (1, 2, 10, 13, 4, 3, 3, 1), // … stride 3
        (2, 4, 7, 9, 6, 1, 2, 1), // … 1×1 with padding
        (2, 3, 13, 13, 70, 5, 2, 2), // … 5×5, several row panels
        (9, 6, 14, 14, 80, 3, 2, 1), // … small maps, all images in one product
        (2, 32, 20, 16, 40, 3, 1, 1), // kernel gradient from a channels-last copy
        (1, 64, 9, 18, 20, 5, 1, 2), // … a wider kernel, two channel panels
        (2, 80, 9, 11, 40, 3, 2, 1), // direct: strided, two channel blocks, tiles across images
        (1, 48, 30, 30, 33, 3, 1, 1), // … one image split over threads, a part-filled panel
        (3, 17, 6, 6, 20, 5, 1, 2), // … 17 channels (a part-filled transpose), 5×5
        (2, 130, 4, 5, 18, 3, 1, 1), // … three channel blocks, the last of 2 channels
        (4, 16, 19, 17, 64, 3, 1, 1), // … rows of the tiles across output rows
    ];

    /// Winograd's forward and input gradient against im2col + gemm and its kernel gradient
    /// against the definition, on geometries smaller than those it is dispatched to (the
    /// dispatch thresholds are about speed only).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn winograd_matches_im2col() {
        let cases = [
            (2, 64, 7, 7, 64, 1),   // odd sizes: part-filled tiles
            (1, 70, 10, 12, 66, 0), // no padding
            (3, 20, 5, 9, 40, 2),   // padding 2 (its input gradient unpadded)
            (2, 256, 14, 14, 256, 1),
            (1, 8, 40, 45, 8, 1), // one image in bands of tile rows; rows of 16+ pairs
            (9, 16, 6, 6, 16, 1), // several images per task, the last task with fewer
        ];
        let close = |got: &[f32], want: &[f32], what: &str| {
            let num: f32 = got.iter().zip(want).map(|(a, b)| (a - b) * (a - b)).sum();
            let den: f32 = want.iter().map(|b| b * b).sum();
            let r = (num / den.max(1e-30)).sqrt();
            assert!(r < 1e-5, "{what}: rel err {r}");
        };
        for (i, &(n, c, h, w, o, p)) in cases.iter().enumerate() {
            let x = randn(&[n, c, h, w], 300 + i as u64);
            let wt = randn(&[o, c, 3, 3], 400 + i as u64);
            let g = Geom::new(x.dims(), wt.dims(), p, 1).unwrap();
            let (xv, wv) = (flat(&x), flat(&wt));
            let got = winograd::forward(&g, &xv, winograd::forward_tap(&g, &wv));
            close(&got, &forward(&g, &xv, &wv), &format!("case {i} forward"));
            // The input gradient: the flipped, transposed kernel written out, through im2col.
            let gr = flat(&randn(&[n, o, g.oh, g.ow], 500 + i as u64));
            let gt = g.transposed().unwrap();
            let mut flipped = vec![0f32; wv.len()];
            for (oo, ci, t) in
                (0..o).flat_map(|a| (0..c).flat_map(move |b| (0..9).map(move |t| (a, b, t))))
            {
                flipped[(ci * o + oo) * 9 + 8 - t] = wv[(oo * c + ci) * 9 + t];
            }
            let got = winograd::forward(&gt, &gr, winograd::input_grad_tap(&g, &wv));
            close(
                &got,
                &forward(&gt, &gr, &flipped),
                &format!("case {i} input gradient"),
            );
            // The kernel gradient against its definition, summed in f64.
            let mut want = vec![0f64; wv.len()];
            for (b, oo, ci) in
                (0..n).flat_map(|b| (0..o).flat_map(move |oo| (0..c).map(move |ci| (b, oo, ci))))
            {
                let dy = &gr[(b * o + oo) * g.ohw()..][..g.ohw()];
                let xp = &xv[(b * c + ci) * h * w..][..h * w];
                for t in 0..9 {
                    let (ky, kx) = (t / 3, t % 3);
                    let mut acc = 0f64;
                    for (oy, row) in dy.chunks_exact(g.ow).enumerate() {
                        let Some(y) = (oy + ky).checked_sub(p).filter(|&y| y < h) else {
                            continue;
                        };
                        for (ox, &d) in row.iter().enumerate() {
                            if let Some(xx) = (ox + kx).checked_sub(p).filter(|&xx| xx < w) {
                                acc += d as f64 * xp[y * w + xx] as f64;
                            }
                        }
                    }
                    want[(oo * c + ci) * 9 + t] += acc;
                }
            }
            let want: Vec<f32> = want.iter().map(|&v| v as f32).collect();
            close(
                &winograd::weight_grad(&g, &xv, &gr),
                &want,
                &format!("case {i} kernel gradient"),
            );
            // One image per chunk: the products sum over the chunks.
            close(
                &winograd::weight_grad_in_chunks(&g, &xv, &gr, 1),
                &want,
                &format!("case {i} kernel gradient, image by image"),
            );
        }
    }

    /// Winograd's tasks depend on the thread count; its values (forward, kernel gradient)
    /// must not.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn winograd_values_do_not_depend_on_the_thread_count() {
        let x = randn(&[8, 512, 6, 6], 600);
        let wt = randn(&[512, 512, 3, 3], 601);
        let g = Geom::new(x.dims(), wt.dims(), 1, 1).unwrap();
        let (xv, wv) = (flat(&x), flat(&wt));
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let y = winograd::forward(&g, &xv, winograd::forward_tap(&g, &wv));
                let dw = winograd::weight_grad(&g, &xv, &y);
                (y, dw)
            })
        };
        let one = run(1);
        assert!(one == run(3), "1 vs 3 threads");
        assert!(one == run(8), "1 vs 8 threads");
    }

    /// Whether the direct convolution or Winograd's (not im2col + gemm) computes case
    /// `g`'s forward.
    fn direct_forward(g: &Geom) -> bool {
        #[cfg(target_arch = "x86_64")]
        if direct::applies(g) || winograd::applies(g) {
            return true;
        }
        let _ = g;
        false
    }

    #[test]
    fn forward_matches_candle() {
        for (i, &(n, c, h, w, o, k, s, p)) in CASES.iter().enumerate() {
            let x = randn(&[n, c, h, w], 1 + i as u64);
            let wt = randn(&[o, c, k, k], 100 + i as u64);
            let ours = conv2d(&x, &wt, p, s).unwrap();
            let theirs = x.conv2d(&wt, p, s, 1, 1).unwrap();
            let r = max_rel(&ours, &theirs);
            assert!(r < 1e-5, "case {i}: rel err {r}");
        }
    }

    /// The im2col path is bit-identical to candle's kernel. (The direct convolution sums in
    /// another order, as PyTorch's does too; `forward_matches_candle` covers it.)
    #[test]
    fn forward_is_bit_identical_to_candle() {
        for (i, &(n, c, h, w, o, k, s, p)) in CASES.iter().enumerate() {
            let x = randn(&[n, c, h, w], 1 + i as u64);
            let wt = randn(&[o, c, k, k], 100 + i as u64);
            if direct_forward(&Geom::new(x.dims(), wt.dims(), p, s).unwrap()) {
                continue;
            }
            let ours = conv2d(&x, &wt, p, s).unwrap();
            let theirs = x.conv2d(&wt, p, s, 1, 1).unwrap();
            let d = (ours - theirs).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0, "case {i}");
        }
    }

    #[test]
    fn forward_accepts_strided_input() {
        let x = randn(&[2, 5, 9, 9], 7).transpose(2, 3).unwrap();
        let wt = randn(&[4, 5, 3, 3], 8);
        let ours = conv2d(&x, &wt, 1, 1).unwrap();
        let theirs = x.contiguous().unwrap().conv2d(&wt, 1, 1, 1, 1).unwrap();
        assert!(max_rel(&ours, &theirs) < 1e-5);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let empty = Tensor::zeros((0, 3, 4, 4), DType::F32, &Device::Cpu).unwrap();
        let _ = conv2d(&empty, &randn(&[2, 3, 3, 3], 2), 1, 1); // no panic
        let x = randn(&[1, 3, 4, 4], 1);
        assert!(conv2d(&x, &randn(&[2, 4, 3, 3], 2), 0, 1).is_err());
        assert!(conv2d(&x, &randn(&[2, 3, 7, 7], 2), 1, 1).is_err());
        assert!(conv2d(&x, &randn(&[2, 3, 3, 3], 2), 0, 0).is_err());
    }

    /// Gradients of Σ y·r (r random) for both operands, ours and candle's.
    fn grads(
        x: &Var,
        w: &Var,
        s: usize,
        p: usize,
        r: &Tensor,
        ours: bool,
    ) -> (Option<Tensor>, Option<Tensor>) {
        let y = if ours {
            conv2d(x.as_tensor(), w.as_tensor(), p, s).unwrap()
        } else {
            x.as_tensor().conv2d(w.as_tensor(), p, s, 1, 1).unwrap()
        };
        let gs = (y * r).unwrap().sum_all().unwrap().backward().unwrap();
        (
            gs.get(x.as_tensor()).cloned(),
            gs.get(w.as_tensor()).cloned(),
        )
    }

    #[test]
    fn shifted_run_matches_its_definition() {
        // Every plane shape against output widths, shifts and runs, the output prefilled
        // with NaN so that a value not written shows.
        for (ph, pw) in [(1, 1), (2, 3), (4, 4), (5, 2)] {
            let plane: Vec<f32> = (0..ph * pw).map(|i| i as f32 + 1.0).collect();
            for ow in 1..=6 {
                for dy in -3..=3isize {
                    for dx in -3..=3isize {
                        for (q0, len) in [(0, 1), (0, 3 * ow), (1, 2 * ow + 1), (ow, ow)] {
                            let mut out = vec![f32::NAN; len];
                            shifted_run(&plane, (ph, pw), ow, (dy, dx), q0, &mut out);
                            for (j, &v) in out.iter().enumerate() {
                                let (oy, ox) = (((q0 + j) / ow) as isize, ((q0 + j) % ow) as isize);
                                let (y, x) = (oy + dy, ox + dx);
                                let inside =
                                    (0..ph as isize).contains(&y) && (0..pw as isize).contains(&x);
                                let want = if inside {
                                    plane[(y * pw as isize + x) as usize]
                                } else {
                                    0.0
                                };
                                assert_eq!(
                                    v.to_bits(),
                                    want.to_bits(),
                                    "plane {ph}×{pw}, ow {ow}, shift ({dy}, {dx}), q0 {q0}, j {j}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn gradients_match_candle() {
        for (i, &(n, c, h, w, o, k, s, p)) in CASES.iter().enumerate() {
            let x = Var::from_tensor(&randn(&[n, c, h, w], 1 + i as u64)).unwrap();
            let wt = Var::from_tensor(&randn(&[o, c, k, k], 100 + i as u64)).unwrap();
            let g = Geom::new(x.dims(), wt.dims(), p, s).unwrap();
            let r = randn(&[n, o, g.oh, g.ow], 200 + i as u64);
            let (dx, dw) = grads(&x, &wt, s, p, &r, true);
            let (cx, cw) = grads(&x, &wt, s, p, &r, false);
            let rx = max_rel(&dx.unwrap(), &cx.unwrap());
            let rw = max_rel(&dw.unwrap(), &cw.unwrap());
            assert!(rx < 1e-5 && rw < 1e-5, "case {i}: dx {rx}, dw {rw}");
        }
    }

    #[test]
    fn frozen_operands_get_no_gradient() {
        let x = Var::from_tensor(&randn(&[2, 3, 8, 8], 1)).unwrap();
        let w = randn(&[4, 3, 3, 3], 2); // detached, as during attribution
        let y = conv2d(x.as_tensor(), &w, 1, 1).unwrap();
        let gs = y.sum_all().unwrap().backward().unwrap();
        assert!(gs.get(x.as_tensor()).is_some());
        assert!(gs.get(&w).is_none());

        let x = randn(&[2, 3, 8, 8], 3); // raw image during training
        let w = Var::from_tensor(&randn(&[4, 3, 3, 3], 4)).unwrap();
        let y = conv2d(&x, w.as_tensor(), 1, 2).unwrap();
        let gs = y.sum_all().unwrap().backward().unwrap();
        assert!(gs.get(&x).is_none());
        assert!(gs.get(w.as_tensor()).is_some());
    }

    /// Also covers a non-square input with stride 3, where candle's own backward fails
    /// (its conv_transpose2d output padding is only derived from the height).
    #[test]
    fn gradients_match_finite_differences() {
        for (n, c, h, w, o, k, s, p) in [(1, 2, 5, 4, 2, 3, 2, 1), (2, 2, 6, 7, 2, 5, 3, 2)] {
            fd_case(n, c, h, w, o, k, s, p);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn fd_case(n: usize, c: usize, h: usize, w: usize, o: usize, k: usize, s: usize, p: usize) {
        let x0 = randn(&[n, c, h, w], 11).to_dtype(DType::F64).unwrap();
        let w0 = randn(&[o, c, k, k], 12).to_dtype(DType::F64).unwrap();
        let g = Geom::new(x0.dims(), w0.dims(), p, s).unwrap();
        let r = randn(&[n, o, g.oh, g.ow], 13);
        // The loss in f64 through candle's conv, as the reference function.
        let loss = |x: &Tensor, wt: &Tensor| -> f64 {
            let y = x.conv2d(wt, p, s, 1, 1).unwrap();
            let r = r.to_dtype(DType::F64).unwrap();
            (y * r)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let xv = Var::from_tensor(&x0.to_dtype(DType::F32).unwrap()).unwrap();
        let wv = Var::from_tensor(&w0.to_dtype(DType::F32).unwrap()).unwrap();
        let (dx, dw) = grads(&xv, &wv, s, p, &r, true);
        let check = |t0: &Tensor, an: Tensor, is_x: bool| {
            let an = an.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let base = t0.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let eps = 1e-6;
            for (i, a) in an.iter().enumerate() {
                let mut v = base.clone();
                v[i] += eps;
                let tp = Tensor::from_vec(v.clone(), t0.shape(), &Device::Cpu).unwrap();
                v[i] -= 2.0 * eps;
                let tm = Tensor::from_vec(v, t0.shape(), &Device::Cpu).unwrap();
                let num = if is_x {
                    (loss(&tp, &w0) - loss(&tm, &w0)) / (2.0 * eps)
                } else {
                    (loss(&x0, &tp) - loss(&x0, &tm)) / (2.0 * eps)
                };
                assert!((num - *a as f64).abs() < 1e-4, "{i}: fd {num} vs {a}");
            }
        };
        check(&x0, dx.unwrap(), true);
        check(&w0, dw.unwrap(), false);
    }

    /// Training must be reproducible: the weight gradient summed over a batch is bit-identical
    /// from call to call, however rayon schedules the images.
    #[test]
    fn weight_gradient_is_deterministic() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        pool.install(|| {
            let x = randn(&[32, 16, 16, 16], 21);
            let w = Var::from_tensor(&randn(&[16, 16, 3, 3], 22)).unwrap();
            let r = randn(&[32, 16, 16, 16], 23);
            let first = grads_w(&x, &w, &r);
            for _ in 0..20 {
                let again = grads_w(&x, &w, &r);
                let d = (&again - &first).unwrap().abs().unwrap().max_all().unwrap();
                assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);
            }
        });
    }

    fn grads_w(x: &Tensor, w: &Var, r: &Tensor) -> Tensor {
        let y = conv2d(x, w.as_tensor(), 1, 1).unwrap();
        let gs = (y * r).unwrap().sum_all().unwrap().backward().unwrap();
        gs.get(w.as_tensor()).unwrap().clone()
    }
}
