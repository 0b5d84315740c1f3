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

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::Result;
use crate::sgemm::{
    avx512_kernel_runs, sgemm, sgemm_to, sgemm_with, transpose_rows, with_scratch, written, Lhs,
    Mat, Out, RhsPanels, Segmented, PANEL,
};
use crate::storage::{dense, CHUNK};
use std::mem::MaybeUninit;

#[cfg(target_arch = "x86_64")]
mod direct;
pub(crate) mod geom;
mod im2col;
#[cfg(target_arch = "x86_64")]
mod winograd;

use geom::{across_images, row_of, zeros_on_all_threads, Geom};
use im2col::{col2im, rows_to_weight, source, weight_to_rows, Im2col, Im2colT};

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
/// [`weight_grad_batch`], which is faster for them: see docs/performance.md.)
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
mod tests;
