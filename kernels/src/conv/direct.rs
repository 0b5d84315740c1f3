//! Direct convolution on CPUs with AVX-512, for kernels wider than 1×1 from and to at
//! least 16 channels (VGG's and ResNet's 3×3 layers, forward and stride-1 input gradient).
//!
//! The image is copied once into a zero-padded channels-last layout. A micro-tile computes
//! MR output pixels × 32 output channels over the whole contraction in registers: for every
//! kernel offset and input channel it broadcasts each pixel's input value, read in place
//! (a pixel's channels are contiguous, so the tile reads MR short sequential streams that
//! stay in L1 across the kernel offsets), against two vectors of the kernel, packed once
//! per call. No im2col panel is built, and each output value is stored once, transposed
//! into [N, O, pixels] in registers. Sums run in a fixed order (channel block, kernel
//! offset, channel), so results are deterministic, but they differ from the im2col path's
//! at rounding level.

use std::arch::x86_64::*;

use rayon::prelude::*;

use super::geom::{across_images, zeros_on_all_threads, Geom};
use crate::cpu::avx512_available;
use crate::sgemm::{transpose16 as registers_transposed, with_scratch, written, Dst};

/// Output pixels per micro-tile, each broadcast from its own input window.
const MR: usize = 14;
/// Output channels per micro-tile: two vectors.
const NR: usize = 32;
/// Input channels per depth block: every kernel offset of a block reads the same few
/// cache lines of each pixel window while they are in L1.
const CB: usize = 64;

/// Whether [`forward`] and [`weight_grad`] compute this convolution. Measured side by side
/// against im2col + gemm (batch 8, 224²): 5–35% faster on VGG-16's and ResNet-50's 3×3
/// layers (forward and input gradient; even on a few), 2–4× on the quickstart's 4×4 and
/// 2×2 maps; kernel gradient (against the im2col and channels-last products, ResNet-50's
/// 3×3 layers) 6–20% faster at stride 1, 4–40% at stride 2; with fewer than 16 channels
/// in or out, im2col + gemm was as fast or faster.
pub(super) fn applies(g: &Geom) -> bool {
    g.kk() > 1 && g.c_in >= 16 && g.c_out >= 16 && avx512_available() && !disabled()
}

/// `ZEROBIAS_DIRECT_CONV=0` sends these convolutions back to im2col + gemm (to compare
/// both paths in one binary).
fn disabled() -> bool {
    !crate::config::config().direct_conv
}

/// The kernel packed for [`forward`]: per panel of NR output channels, k_size rows of NR
/// values (output channels past O as zeros); row c0·kk + t·cb + (c − c0) holds kernel
/// offset t of input channel c, c0 and cb being the start and length of c's block.
pub(super) struct Kernel {
    data: Vec<f32>,
}

impl Kernel {
    /// The kernel `w` [O, C, kh, kw] of the convolution `g`.
    pub(super) fn forward(g: &Geom, w: &[f32]) -> Self {
        assert_eq!(w.len(), g.c_out * g.k_size());
        Self::pack(g, |o, q0, values| {
            // Output channel o's values from q0 (index c·kk + t): a run of w.
            let at = o * g.k_size() + q0;
            values.copy_from_slice(&w[at..at + values.len()]);
        })
    }

    /// The kernel of the convolution `gt` = `g.transposed()` that gives the input gradient
    /// of `g` with kernel `w` [O, C, kh, kw]: gt's output channel o and input channel c,
    /// offset t are w's input channel o, output channel c, offset kk − 1 − t.
    pub(super) fn input_grad(g: &Geom, gt: &Geom, w: &[f32]) -> Self {
        assert_eq!(w.len(), g.c_out * g.k_size());
        let kk = g.kk();
        Self::pack(gt, |o, q0, values| {
            for (j, v) in values.iter_mut().enumerate() {
                let (c, t) = ((q0 + j) / kk, (q0 + j) % kk);
                *v = w[(c * g.c_in + o) * kk + kk - 1 - t];
            }
        })
    }

    /// Packs the kernel of `g`: `fill(o, q0, values)` writes output channel o's values from
    /// q0 on, in c·kk + t order. They are read in blocks of 16 channels × 16 values and
    /// transposed in registers into the panels' rows.
    fn pack(g: &Geom, fill: impl Fn(usize, usize, &mut [f32]) + Sync) -> Self {
        let (k, kk) = (g.k_size(), g.kk());
        let panels = g.c_out.div_ceil(NR);
        // Where value q = c·kk + t goes in a panel (in rows of NR).
        let row_of = |q: usize| {
            let (c, t) = (q / kk, q % kk);
            let c0 = c / CB * CB;
            c0 * kk + t * CB.min(g.c_in - c0) + c - c0
        };
        // SAFETY: every row of every panel is written below: for each 16 output channels
        // of the panel (zeros past O), all k values.
        let data = unsafe {
            written(panels * k * NR, |data| {
                data.par_chunks_mut(k * NR)
                    .enumerate()
                    .for_each(|(p, panel)| {
                        for half in 0..NR / 16 {
                            let o0 = p * NR + 16 * half;
                            let rows = g.c_out.saturating_sub(o0).min(16);
                            let mut block = [[0f32; 16]; 16];
                            for q0 in (0..k).step_by(16) {
                                let lanes = 16.min(k - q0);
                                for (i, row) in block.iter_mut().enumerate().take(rows) {
                                    fill(o0 + i, q0, &mut row[..lanes]);
                                }
                                let t = transpose16(&block);
                                for (j, v) in t.iter().enumerate().take(lanes) {
                                    let at = row_of(q0 + j) * NR + 16 * half;
                                    panel[at..at + 16]
                                        .iter_mut()
                                        .zip(v)
                                        .for_each(|(d, &v)| _ = d.write(v));
                                }
                            }
                        }
                    })
            })
        };
        Kernel { data }
    }
}

/// A 16 × 16 block transposed (in registers).
fn transpose16(block: &[[f32; 16]; 16]) -> [[f32; 16]; 16] {
    // SAFETY: the CPU supports AVX-512F (the only way to a direct convolution); the loads
    // and stores stay inside the two blocks.
    unsafe { transpose16_avx512(block) }
}

#[target_feature(enable = "avx512f")]
unsafe fn transpose16_avx512(block: &[[f32; 16]; 16]) -> [[f32; 16]; 16] {
    // SAFETY: each row holds 16 values.
    let rows = std::array::from_fn(|i| unsafe { _mm512_loadu_ps(block[i].as_ptr()) });
    let t = registers_transposed(rows);
    let mut out = [[0f32; 16]; 16];
    for (o, v) in out.iter_mut().zip(t) {
        // SAFETY: as above.
        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), v) };
    }
    out
}

/// The depth blocks: (first channel, channels).
fn blocks(c: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..c).step_by(CB).map(move |c0| (c0, CB.min(c - c0)))
}

/// Whether small maps (several images of at most 256 pixels) are copied all at once and
/// run as one parallel pass: per-image passes leave tiles part-filled (forward) or cost
/// more in thread hand-offs than they compute (kernel gradient).
fn across_small_maps(g: &Geom) -> bool {
    g.n > 1 && g.ohw() <= 256
}

/// Every image of `x` in its padded channels-last copy, one per `plane` values (at least
/// an image's copy), made in parallel.
fn padded_copies(g: &Geom, x: &[f32], plane: usize) -> Vec<f32> {
    let mut xp = zeros_on_all_threads(g.n * plane);
    xp.par_chunks_mut(plane)
        .zip(x.par_chunks(g.c_in * g.hw()))
        .for_each(|(xp_b, x_b)| to_padded_channels_last(g, x_b, xp_b, false));
    xp
}

thread_local! {
    /// Per-thread padded channels-last copy of one image.
    static IMAGE: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The convolution `g` of the dense batch `x` [N, C, H, W] with a [`Kernel`] packed for it:
/// y [N, O, oh, ow].
pub(super) fn forward(g: &Geom, x: &[f32], kernel: &Kernel) -> Vec<f32> {
    let (hp, wp) = (g.h + 2 * g.pad, g.w + 2 * g.pad);
    let plane = hp * wp * g.c_in;
    let (xs, ys) = (g.c_in * g.hw(), g.c_out * g.ohw());
    // SAFETY: the tiles of every image cover all its pixels and output channels.
    unsafe {
        written(g.n * ys, |y| {
            let y = Dst(y.as_mut_ptr().cast());
            if across_small_maps(g) {
                // Tiles run across images, so that they stay full.
                let xp = padded_copies(g, x, plane);
                let cols = g.n * g.ohw();
                let threads = rayon::current_num_threads().max(1);
                let per = cols.div_ceil(threads).next_multiple_of(MR);
                (0..cols.div_ceil(per)).into_par_iter().for_each(|i| {
                    let j0 = i * per;
                    tiles(g, &xp, kernel, j0, per.min(cols - j0), y);
                });
            } else if across_images(g.n) {
                (0..g.n).into_par_iter().for_each(|b| {
                    with_scratch(&IMAGE, plane, |xp| {
                        to_padded_channels_last(g, &x[b * xs..(b + 1) * xs], xp, false);
                        tiles_at(g, xp, kernel, b, 0, g.ohw(), y);
                    })
                });
            } else {
                for b in 0..g.n {
                    with_scratch(&IMAGE, plane, |xp| {
                        to_padded_channels_last(g, &x[b * xs..(b + 1) * xs], xp, true);
                        // The image's pixels split over the threads.
                        let ohw = g.ohw();
                        let threads = rayon::current_num_threads().max(1);
                        let per = ohw.div_ceil(threads).next_multiple_of(MR);
                        let xp = &*xp;
                        (0..ohw.div_ceil(per)).into_par_iter().for_each(|i| {
                            let j0 = i * per;
                            tiles_at(g, xp, kernel, b, j0, per.min(ohw - j0), y);
                        });
                    })
                }
            }
        })
    }
}

/// Pixels j0..j0+cols of image b, whose copy alone is `xp`.
fn tiles_at(g: &Geom, xp: &[f32], kernel: &Kernel, b: usize, j0: usize, cols: usize, y: Dst) {
    // Pointers are computed for global pixel indices b·ohw + j: shift the base so that
    // image b's copy sits where a batch of copies would have it.
    let plane = (g.h + 2 * g.pad) * (g.w + 2 * g.pad) * g.c_in;
    assert!(xp.len() >= plane && j0 + cols <= g.ohw());
    let base = xp.as_ptr().wrapping_sub(b * plane);
    // SAFETY: only image b's pixels are touched (checked above), whose windows lie in xp.
    unsafe { tiles_from(g, base, kernel, b * g.ohw() + j0, cols, y) }
}

/// Global pixels j0..j0+cols (over the batch) of the copies `xp` (one plane per image).
fn tiles(g: &Geom, xp: &[f32], kernel: &Kernel, j0: usize, cols: usize, y: Dst) {
    assert!(xp.len() >= g.n * (g.h + 2 * g.pad) * (g.w + 2 * g.pad) * g.c_in);
    assert!(j0 + cols <= g.n * g.ohw());
    // SAFETY: checked above.
    unsafe { tiles_from(g, xp.as_ptr(), kernel, j0, cols, y) }
}

/// # Safety
/// `xp` (with one padded channels-last plane per image, image b's at b·plane) must hold
/// the windows of global pixels j0..j0+cols, which lie in the batch; y must hold N × O ×
/// ohw values, and only this task writes those pixels.
unsafe fn tiles_from(g: &Geom, xp: *const f32, kernel: &Kernel, j0: usize, cols: usize, y: Dst) {
    let (wp, c) = (g.w + 2 * g.pad, g.c_in);
    let plane = (g.h + 2 * g.pad) * wp * c;
    let ohw = g.ohw();
    // Every pixel's window origin, computed once for all panels.
    let origin = |q: usize| {
        let (b, pix) = (q / ohw, q % ohw);
        let (oy, ox) = (pix / g.ow, pix % g.ow);
        xp.wrapping_add(b * plane + (oy * g.stride * wp + ox * g.stride) * c)
    };
    let windows: Vec<*const f32> = (j0..j0 + cols).map(origin).collect();
    let taps: Vec<usize> = (0..g.kh)
        .flat_map(|ky| (0..g.kw).map(move |kx| (ky * wp + kx) * c))
        .collect();
    let blocks: Vec<(usize, usize)> = blocks(c).collect();
    let k = g.k_size();
    for (p, panel) in kernel.data.chunks_exact(k * NR).enumerate() {
        let o0 = p * NR;
        for t0 in (0..cols).step_by(MR) {
            let live = MR.min(cols - t0);
            // Rows past the tile's pixels repeat its first (computed, never stored).
            let rows: [*const f32; MR] =
                std::array::from_fn(|r| windows[t0 + if r < live { r } else { 0 }]);
            // SAFETY: the windows lie in xp, pixels j0+t0.. are this task's (caller
            // contract); the panel holds k × NR values.
            unsafe {
                tile(&rows, (&taps, &blocks, g.kk()), panel.as_ptr(), |acc| {
                    store(g, acc, y, o0, j0 + t0, live)
                })
            };
        }
    }
}

/// acc[r][v] = Σ over blocks, offsets t and channels c of rows[r][taps[t] + c] ·
/// panel[row(c, t)][16·v..16·v + 16], handed to `done`. (Not returned: as a return value
/// the accumulators would live in the caller's memory through the whole loop.)
///
/// # Safety
/// Every rows[r] + taps[t] + c must lie in the copy, the panel must hold k × NR values.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile(
    rows: &[*const f32; MR],
    (taps, blocks, kk): (&[usize], &[(usize, usize)], usize),
    panel: *const f32,
    done: impl FnOnce(&[[__m512; 2]; MR]),
) {
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    for &(c0, cb) in blocks {
        for (t, &tap) in taps.iter().enumerate() {
            // SAFETY (all below): caller contract.
            let bp = unsafe { panel.add((c0 * kk + t * cb) * NR) };
            let a: [*const f32; MR] = std::array::from_fn(|r| rows[r].wrapping_add(tap + c0));
            let step = |acc: &mut [[__m512; 2]; MR], c: usize| unsafe {
                let b0 = _mm512_loadu_ps(bp.add(c * NR));
                let b1 = _mm512_loadu_ps(bp.add(c * NR + 16));
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*a[r].add(c));
                    acc_r[0] = _mm512_fmadd_ps(av, b0, acc_r[0]);
                    acc_r[1] = _mm512_fmadd_ps(av, b1, acc_r[1]);
                }
            };
            let mut c = 0;
            while c + 4 <= cb {
                for u in 0..4 {
                    step(&mut acc, c + u);
                }
                c += 4;
            }
            for c in c..cb {
                step(&mut acc, c);
            }
        }
    }
    done(&acc)
}

/// Stores the first `live` rows of acc (pixels q0.., global over the batch) for output
/// channels o0..o0+NR below O: transposed in registers, so that each channel's pixels go
/// out as one masked store per image they fall in.
///
/// # Safety
/// y holds N × O × ohw values; those pixels are this task's.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn store(g: &Geom, acc: &[[__m512; 2]; MR], y: Dst, o0: usize, q0: usize, live: usize) {
    let ohw = g.ohw();
    // Pieces of the tile's pixels within one image: (first lane, lanes mask, offset of
    // lane 0 in the image's plane, image).
    let mut pieces = [(0u16, 0isize, 0usize); MR];
    let mut count = 0;
    let mut lane = 0;
    while lane < live {
        let q = q0 + lane;
        let (b, pix) = (q / ohw, q % ohw);
        let len = (live - lane).min(ohw - pix);
        let mask = (((1u32 << len) - 1) << lane) as u16;
        pieces[count] = (mask, pix as isize - lane as isize, b);
        count += 1;
        lane += len;
    }
    for (v, first) in (o0..o0 + NR).step_by(16).enumerate() {
        let rows: [__m512; 16] = std::array::from_fn(|r| {
            if r < MR {
                acc[r][v]
            } else {
                _mm512_setzero_ps()
            }
        });
        let t = registers_transposed(rows);
        for (l, tv) in t.iter().enumerate() {
            let o = first + l;
            if o >= g.c_out {
                break;
            }
            for &(mask, offset, b) in &pieces[..count] {
                let at = y.at((b * g.c_out + o) * ohw).wrapping_offset(offset);
                // SAFETY: the masked lanes address this tile's pixels of image b.
                unsafe { _mm512_mask_storeu_ps(at, mask, *tv) };
            }
        }
    }
}

/// xp[((y + pad)·wp + x + pad)·C + c] = x_b[c][y][x], zeros at the padding; the rows
/// spread over the threads when `parallel`.
fn to_padded_channels_last(g: &Geom, x_b: &[f32], xp: &mut [f32], parallel: bool) {
    let (hp, wp, c) = (g.h + 2 * g.pad, g.w + 2 * g.pad, g.c_in);
    assert!(x_b.len() == c * g.hw() && xp.len() >= hp * wp * c);
    // The padding rows.
    xp[..g.pad * wp * c].fill(0.0);
    xp[(g.pad + g.h) * wp * c..hp * wp * c].fill(0.0);
    let image_rows = &mut xp[g.pad * wp * c..(g.pad + g.h) * wp * c];
    let fill = |(y, row): (usize, &mut [f32])| {
        // The padding columns, then the image's values.
        row[..g.pad * c].fill(0.0);
        row[(g.pad + g.w) * c..].fill(0.0);
        // SAFETY: the row holds wp pixels of C values; the CPU supports AVX-512F (see
        // applies).
        unsafe { transpose_row(g, x_b, y, row) }
    };
    if parallel {
        image_rows.par_chunks_mut(wp * c).enumerate().for_each(fill);
    } else {
        image_rows.chunks_mut(wp * c).enumerate().for_each(fill);
    }
}

/// Image row y of [`to_padded_channels_last`] into its padded row, in 16 × 16 register
/// transposes.
///
/// # Safety
/// `row` must hold (W + 2·pad) × C values; the CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn transpose_row(g: &Geom, x_b: &[f32], y: usize, row: &mut [f32]) {
    let (c, hw) = (g.c_in, g.hw());
    for c0 in (0..c).step_by(16) {
        let lanes = 16.min(c - c0);
        let cmask: __mmask16 = if lanes == 16 {
            0xffff
        } else {
            (1 << lanes) - 1
        };
        for x0 in (0..g.w).step_by(16) {
            let live = 16.min(g.w - x0);
            let mask: __mmask16 = if live == 16 { 0xffff } else { (1 << live) - 1 };
            let r: [__m512; 16] = std::array::from_fn(|i| {
                if i < lanes {
                    // SAFETY: channel c0 + i, row y, columns x0..x0+live are in x_b.
                    unsafe {
                        _mm512_maskz_loadu_ps(mask, x_b.as_ptr().add((c0 + i) * hw + y * g.w + x0))
                    }
                } else {
                    _mm512_setzero_ps()
                }
            });
            let t = registers_transposed(r);
            for (j, v) in t.iter().enumerate().take(live) {
                let at = (g.pad + x0 + j) * c + c0;
                // SAFETY: pixel x0 + j of the row, channels c0..c0+lanes (caller contract).
                unsafe { _mm512_mask_storeu_ps(row.as_mut_ptr().add(at), cmask, *v) };
            }
        }
    }
}

/// Output channels (broadcast) per kernel-gradient tile.
const WO: usize = 14;
/// Output rows per chunk of the kernel gradient: a chunk's gradient rows and input rows
/// stay in L2 while every tile runs over them. (Side by side, 16 rows beat 2, 4 and 8 on
/// ResNet-50's 3×3 layers, and whole images of up to 56 rows were no faster.)
const CHUNK_ROWS: usize = 16;

/// The kernel gradient of the convolution `g` over the dense batch `x` [N, C, H, W] and
/// the output gradient `grad` [N, O, oh, ow]: dw [O, C, kh, kw], dw[o][c][t] = Σ over
/// images and output pixels q of grad[o][q] · x at q's window, offset t, channel c.
///
/// A tile holds 14 output channels × 32 input channels of one kernel offset in registers
/// and runs over a chunk of output rows, the gradient rows read in place (broadcast) and
/// the input from a padded channels-last copy (two vectors per pixel). Each value is one
/// FMA chain over the images and pixels in order, whatever the number of threads.
pub(super) fn weight_grad(g: &Geom, x: &[f32], grad: &[f32]) -> Vec<f32> {
    let (hp, wp, c, kk) = (g.h + 2 * g.pad, g.w + 2 * g.pad, g.c_in, g.kk());
    let (xs, ys, ohw) = (c * g.hw(), g.c_out * g.ohw(), g.ohw());
    assert!(x.len() == g.n * xs && grad.len() == g.n * ys);
    let (o_tiles, c_tiles) = (g.c_out.div_ceil(WO), c.div_ceil(NR));
    // Tiles in (channel block, offset, output block) order: neighbours share input columns.
    let tiles = c_tiles * kk * o_tiles;
    // Tile i's (channel block, offset, output block).
    let tile_of = |i: usize| (i / (kk * o_tiles), i / o_tiles % kk, i % o_tiles);
    // Zeroed on every thread: a serial fill of up to 9 MB (512 channels, 3×3) would leave
    // the other threads waiting.
    let mut accs = zeros_on_all_threads(tiles * WO * NR);
    // Adds image b's output rows oy0..oy0+rows to tile i, from the image's copy xp_b.
    let run = |i: usize, acc: &mut [f32], xp_b: &[f32], gr_b: &[f32], oy0: usize| {
        let acc: &mut [f32; WO * NR] = acc.try_into().expect("a tile's accumulators");
        let rows = CHUNK_ROWS.min(g.oh - oy0);
        let (ct, t, ot) = tile_of(i);
        let (ky, kx) = (t / g.kw, t % g.kw);
        let (o0, c0) = (ot * WO, ct * NR);
        // Gradient rows past O repeat the tile's first (computed, never stored).
        let a: [*const f32; WO] = std::array::from_fn(|r| {
            let o = if o0 + r < g.c_out { o0 + r } else { o0 };
            gr_b[o * ohw + oy0 * g.ow..].as_ptr()
        });
        let b = ((oy0 * g.stride + ky) * wp + kx) * c + c0;
        assert!(b + ((rows - 1) * g.stride * wp + (g.ow - 1) * g.stride) * c + NR <= xp_b.len());
        // SAFETY: the gradient rows hold `rows` output rows from oy0; the copy holds every
        // pixel read (checked above); the CPU supports AVX-512F.
        unsafe {
            weight_tile(
                acc,
                &a,
                xp_b[b..].as_ptr(),
                (rows, g.ow),
                (g.stride * c, g.stride * wp * c),
            )
        };
    };
    // Each copy, plus what a part-filled channel tile reads past its last pixel.
    let plane = hp * wp * c + NR;
    if across_small_maps(g) {
        let xp = padded_copies(g, x, plane);
        // Each thread a run of tiles, image after image: an image's rows stay in L2 while
        // the thread's tiles run over them.
        let per = tiles.div_ceil(rayon::current_num_threads().max(1));
        accs.par_chunks_mut(per * WO * NR)
            .enumerate()
            .for_each(|(part, accs)| {
                for (xp_b, gr_b) in xp.chunks_exact(plane).zip(grad.chunks_exact(ys)) {
                    for oy0 in (0..g.oh).step_by(CHUNK_ROWS) {
                        for (j, acc) in accs.chunks_exact_mut(WO * NR).enumerate() {
                            run(part * per + j, acc, xp_b, gr_b, oy0);
                        }
                    }
                }
            });
    } else {
        let mut xp = vec![0f32; plane];
        for (x_b, gr_b) in x.chunks_exact(xs).zip(grad.chunks_exact(ys)) {
            to_padded_channels_last(g, x_b, &mut xp, true);
            for oy0 in (0..g.oh).step_by(CHUNK_ROWS) {
                accs.par_chunks_exact_mut(WO * NR)
                    .enumerate()
                    .for_each(|(i, acc)| run(i, acc, &xp, gr_b, oy0));
            }
        }
    }
    // dw[o][c][t] from the tiles, an output channel per task.
    let mut dw = zeros_on_all_threads(g.c_out * g.k_size());
    dw.par_chunks_mut(g.k_size())
        .enumerate()
        .for_each(|(o, dw_o)| {
            let (ot, r) = (o / WO, o % WO);
            for ct in 0..c_tiles {
                for t in 0..kk {
                    let i = (ct * kk + t) * o_tiles + ot;
                    let acc = &accs[(i * WO + r) * NR..][..NR];
                    for (l, &v) in acc.iter().take(c - ct * NR).enumerate() {
                        dw_o[(ct * NR + l) * kk + t] = v;
                    }
                }
            }
        });
    dw
}

/// acc[r][l] += Σ over `rows` output rows of `ow` pixels of a[r][pixel] · b[pixel][l],
/// the pixel's input columns `step` apart along a row and `row_step` between rows.
///
/// # Safety
/// a[r] must hold rows × ow values; b every pixel's NR values; AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn weight_tile(
    acc: &mut [f32; WO * NR],
    a: &[*const f32; WO],
    b: *const f32,
    (rows, ow): (usize, usize),
    (step, row_step): (usize, usize),
) {
    // SAFETY (all below): caller contract.
    let mut sums: [[__m512; 2]; WO] = std::array::from_fn(|r| unsafe {
        [
            _mm512_loadu_ps(acc.as_ptr().add(r * NR)),
            _mm512_loadu_ps(acc.as_ptr().add(r * NR + 16)),
        ]
    });
    for y in 0..rows {
        let by = unsafe { b.add(y * row_step) };
        let ay = y * ow;
        for q in 0..ow {
            let bp = unsafe { by.add(q * step) };
            let (b0, b1) = unsafe { (_mm512_loadu_ps(bp), _mm512_loadu_ps(bp.add(16))) };
            for (r, s) in sums.iter_mut().enumerate() {
                let av = _mm512_set1_ps(unsafe { *a[r].add(ay + q) });
                s[0] = _mm512_fmadd_ps(av, b0, s[0]);
                s[1] = _mm512_fmadd_ps(av, b1, s[1]);
            }
        }
    }
    for (r, s) in sums.iter().enumerate() {
        unsafe {
            _mm512_storeu_ps(acc.as_mut_ptr().add(r * NR), s[0]);
            _mm512_storeu_ps(acc.as_mut_ptr().add(r * NR + 16), s[1]);
        }
    }
}
