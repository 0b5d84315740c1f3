//! Winograd F(2×2, 3×3) for 3×3 stride-1 convolutions on small maps with many channels
//! (ResNet-50's 256-channel 14×14 layers, VGG-16's 28×28 and 14×14 ones; forward and
//! input gradient, the kernel gradient stays direct).
//!
//! Each 2×2 block of outputs ("tile") comes from a 4×4 window of the input. The window is
//! transformed (V = Bᵀ d B), multiplied point by point with the transformed kernel
//! (U = G g Gᵀ) and summed over input channels, then transformed back (y = Aᵀ m A). The
//! channel sums are 16 matrix products, one per point ξ of the 4×4 transform:
//! M_ξ [O, tiles] = U_ξ [O, C] · V_ξ [C, tiles]: 16·O·C multiplications per tile instead of
//! the direct 36·O·C, 2.25× fewer. The transforms only add, subtract and halve, so results
//! stay within rounding of the direct sums (the tests hold them to 1e-5 of im2col's and
//! candle's).
//! Sums run in a fixed order: deterministic whatever the thread count.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::Geom;
use crate::models::sgemm::{avx512_available, sgemm_with, written, Dst, Lhs, Mat};

/// Points of the 4×4 transform.
const POINTS: usize = 16;

/// Whether [`forward`] computes this convolution: 3×3, stride 1, at least 256 channels in
/// and out, maps of at most 28×28 and at least 256 tiles in the batch. Measured against the
/// direct convolution at batch 8, alternating: 1.2× on ResNet-50's 256-channel 14×14
/// layers, about 1.4× on VGG-16's 512-channel 28×28 ones, 1.05× on its 14×14 ones; the
/// VGG-16 training step 10% faster, its attribution 12%. Below that its fixed costs lose:
/// with 128 channels (28×28) it was 1.02–1.05×, with fewer tiles (7×7 maps, batch 1)
/// slower, as the kernel's transform and packing (16·O·C values) no longer pay; on larger
/// maps the transformed input and products (4× the input and output) outgrow the caches.
/// `ZEROBIAS_WINOGRAD=0` turns it off.
pub(super) fn applies(g: &Geom) -> bool {
    computes(g)
        && g.c_in >= 256
        && g.c_out >= 256
        && g.ohw() <= 28 * 28
        && g.n * g.oh.div_ceil(2) * g.ow.div_ceil(2) >= 256
        && avx512_available()
        && !disabled()
}

/// Whether [`forward`] can compute this convolution at all (the tests use it on small
/// ones).
fn computes(g: &Geom) -> bool {
    g.kh == 3 && g.kw == 3 && g.stride == 1
}

/// The kernel `w` [O, C, 3, 3] as [`forward`]'s `tap`.
pub(super) fn forward_tap<'w>(
    g: &Geom,
    w: &'w [f32],
) -> impl Fn(usize, usize, usize, usize) -> f32 + Sync + 'w {
    let k_size = g.k_size();
    move |o, c, ky, kx| w[o * k_size + (c * 3 + ky) * 3 + kx]
}

/// The kernel of the input gradient of `g` (whose kernel is `w` [O, C, 3, 3]) as
/// [`forward`]'s `tap` for `g.transposed()`: the flipped, transposed kernel, whose output
/// channel o is w's input channel.
pub(super) fn input_grad_tap<'w>(
    g: &Geom,
    w: &'w [f32],
) -> impl Fn(usize, usize, usize, usize) -> f32 + Sync + 'w {
    let k_size = g.k_size();
    move |o, c, ky, kx| w[c * k_size + (o * 3 + 2 - ky) * 3 + 2 - kx]
}

fn disabled() -> bool {
    static DISABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    crate::models::env_switch(&DISABLED, "ZEROBIAS_WINOGRAD", "0")
}

/// Tile rows and columns of the output.
fn tiles(g: &Geom) -> (usize, usize) {
    (g.oh.div_ceil(2), g.ow.div_ceil(2))
}

/// The convolution `g` of the dense batch `x` [N, C, H, W], its kernel given by
/// `tap(o, c, ky, kx)`: y [N, O, oh, ow].
pub(super) fn forward(
    g: &Geom,
    x: &[f32],
    tap: impl Fn(usize, usize, usize, usize) -> f32 + Sync,
) -> Vec<f32> {
    assert!(computes(g) && x.len() == g.n * g.c_in * g.hw());
    let (th, tw) = tiles(g);
    let t = g.n * th * tw;
    let u = kernel_transform(g, tap);
    // SAFETY: each task writes its own (image, channel) columns of every point's matrix,
    // and the tasks cover them all.
    let v = unsafe {
        written(POINTS * g.c_in * t, |v| {
            let v = Dst(v.as_mut_ptr().cast());
            x.par_chunks_exact(g.hw()).enumerate().for_each_init(
                || vec![0f32; 2 * POINTS * th * tw],
                |scratch, (plane, x_p)| {
                    let (b, c) = (plane / g.c_in, plane % g.c_in);
                    // Point ξ's values of this plane: row c of V_ξ, image b's columns.
                    let at = |xi: usize| v.at((xi * g.c_in + c) * t + b * th * tw);
                    input_transform(g, x_p, at, scratch)
                },
            );
        })
    };
    // The 16 products, each on one thread (as many tasks as points keeps both cores busy
    // without splitting a product).
    // SAFETY: every product writes all O × t values of its own matrix; the operands cover
    // what they are read for.
    let m = unsafe {
        written(POINTS * g.c_out * t, |m| {
            let m = Dst(m.as_mut_ptr().cast());
            (0..POINTS).into_par_iter().for_each(|xi| {
                let lhs = Lhs::new(
                    Mat {
                        ptr: u[xi * g.c_in..].as_ptr(),
                        rs: (POINTS * g.c_in) as isize,
                        cs: 1,
                    },
                    g.c_out,
                    g.c_in,
                );
                let rhs = Mat {
                    ptr: v[xi * g.c_in * t..].as_ptr(),
                    rs: t as isize,
                    cs: 1,
                };
                sgemm_with(&lhs, t, m.at(xi * g.c_out * t), t, false, &rhs, false);
            })
        })
    };
    // SAFETY: each (image, output channel) plane is written in full by its own task.
    unsafe {
        written(g.n * g.c_out * g.ohw(), |y| {
            y.par_chunks_exact_mut(g.ohw()).enumerate().for_each_init(
                || vec![0f32; 12 * th * tw],
                |scratch, (plane, y_p)| {
                    let (b, o) = (plane / g.c_out, plane % g.c_out);
                    let at = |xi: usize| &m[(xi * g.c_out + o) * t + b * th * tw..][..th * tw];
                    output_transform(g, at, y_p, scratch)
                },
            )
        })
    }
}

/// U_ξ[o][c] = (G g Gᵀ)_ξ of each 3×3 kernel g = tap(o, c, ·, ·), laid out [o][ξ][c]
/// (each point's matrix a strided view), with G = [[1, 0, 0], [½, ½, ½], [½, −½, ½],
/// [0, 0, 1]].
fn kernel_transform(g: &Geom, tap: impl Fn(usize, usize, usize, usize) -> f32 + Sync) -> Vec<f32> {
    let c_in = g.c_in;
    // SAFETY: each output channel's task writes all 16 runs of its chunk (i, j < 4).
    unsafe {
        written(g.c_out * POINTS * c_in, |u| {
            u.par_chunks_exact_mut(POINTS * c_in)
                .enumerate()
                .for_each_init(
                    || vec![0f32; 21 * c_in],
                    |scratch, (o, u_o)| {
                        // The kernel of output channel o as 9 runs over the input channels, so
                        // that the arithmetic below runs along them (and vectorises) and writes
                        // each point's run in one piece.
                        let (k, gk) = scratch.split_at_mut(9 * c_in);
                        for c in 0..c_in {
                            for t in 0..9 {
                                k[t * c_in + c] = tap(o, c, t / 3, t % 3);
                            }
                        }
                        let k_at = |ky: usize, kx: usize| &k[(ky * 3 + kx) * c_in..][..c_in];
                        // G g, row by row: (ky, kx) → 4 × 3 runs.
                        for kx in 0..3 {
                            let (k0, k1, k2) = (k_at(0, kx), k_at(1, kx), k_at(2, kx));
                            for c in 0..c_in {
                                gk[kx * c_in + c] = k0[c];
                                gk[(3 + kx) * c_in + c] = 0.5 * (k0[c] + k1[c] + k2[c]);
                                gk[(6 + kx) * c_in + c] = 0.5 * (k0[c] - k1[c] + k2[c]);
                                gk[(9 + kx) * c_in + c] = k2[c];
                            }
                        }
                        // (G g) Gᵀ, row i: [a, ½(a + b + d), ½(a − b + d), d].
                        for i in 0..4 {
                            let (a, b, d) = (
                                &gk[3 * i * c_in..][..c_in],
                                &gk[(3 * i + 1) * c_in..][..c_in],
                                &gk[(3 * i + 2) * c_in..][..c_in],
                            );
                            let (u0, rest) =
                                u_o[4 * i * c_in..(4 * i + 4) * c_in].split_at_mut(c_in);
                            let (u1, rest) = rest.split_at_mut(c_in);
                            let (u2, u3) = rest.split_at_mut(c_in);
                            for c in 0..c_in {
                                u0[c].write(a[c]);
                                u1[c].write(0.5 * (a[c] + b[c] + d[c]));
                                u2[c].write(0.5 * (a[c] - b[c] + d[c]));
                                u3[c].write(d[c]);
                            }
                        }
                    },
                )
        })
    }
}

/// V = Bᵀ d B of every 4×4 window d of the plane x_p (zeros outside it), with Bᵀ = [[1, 0,
/// −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]]; point ξ's values for the tiles in
/// raster order go to at(ξ). The plane's windows are gathered into 16 runs over all its
/// tiles (d_ij[tile]) first, so that the arithmetic runs along whole runs and vectorises.
fn input_transform(g: &Geom, x_p: &[f32], at: impl Fn(usize) -> *mut f32, scratch: &mut [f32]) {
    let (th, tw) = tiles(g);
    let nt = th * tw;
    let (d, t) = scratch.split_at_mut(POINTS * nt);
    for i in 0..4 {
        for j in 0..4 {
            let dij = &mut d[(4 * i + j) * nt..][..nt];
            // Tiles whose window column 2·tx + j − pad lies in the image: lo..hi.
            let lo = g.pad.saturating_sub(j).div_ceil(2).min(tw);
            let hi = ((g.w + g.pad).saturating_sub(j).div_ceil(2)).clamp(lo, tw);
            for (ty, run) in dij.chunks_exact_mut(tw).enumerate() {
                let y = (2 * ty + i).wrapping_sub(g.pad);
                if y >= g.h {
                    run.fill(0.0);
                    continue;
                }
                let row = &x_p[y * g.w..][..g.w];
                run[..lo].fill(0.0);
                run[hi..].fill(0.0);
                if hi > lo {
                    // Every other value of the row from the first window column.
                    let src = row[2 * lo + j - g.pad..].iter().step_by(2);
                    for (v, &x) in run[lo..hi].iter_mut().zip(src) {
                        *v = x;
                    }
                }
            }
        }
    }
    // Bᵀ over the window's rows: t[i][j] from d[·][j].
    for j in 0..4 {
        for q in 0..nt {
            let (d0, d1, d2, d3) = (
                d[j * nt + q],
                d[(4 + j) * nt + q],
                d[(8 + j) * nt + q],
                d[(12 + j) * nt + q],
            );
            t[j * nt + q] = d0 - d2;
            t[(4 + j) * nt + q] = d1 + d2;
            t[(8 + j) * nt + q] = d2 - d1;
            t[(12 + j) * nt + q] = d1 - d3;
        }
    }
    // B over the columns, straight into V.
    for i in 0..4 {
        // SAFETY: at(ξ) holds this plane's nt values (caller contract).
        let dst: [&mut [MaybeUninit<f32>]; 4] = std::array::from_fn(|j| unsafe {
            std::slice::from_raw_parts_mut(at(4 * i + j).cast(), nt)
        });
        let [v0, v1, v2, v3] = dst;
        let ti = &t[4 * i * nt..][..4 * nt];
        for q in 0..nt {
            let (a0, a1, a2, a3) = (ti[q], ti[nt + q], ti[2 * nt + q], ti[3 * nt + q]);
            v0[q].write(a0 - a2);
            v1[q].write(a1 + a2);
            v2[q].write(a2 - a1);
            v3[q].write(a1 - a3);
        }
    }
}

/// y = Aᵀ m A of every tile, Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]], m's point ξ for the
/// tiles in raster order at(ξ); writes every value of the plane y_p [oh, ow]. The
/// arithmetic runs along the plane's tiles; only the final placement is per value.
fn output_transform<'a>(
    g: &Geom,
    at: impl Fn(usize) -> &'a [f32],
    y_p: &mut [MaybeUninit<f32>],
    scratch: &mut [f32],
) {
    let (th, tw) = tiles(g);
    let nt = th * tw;
    let (s, out) = scratch.split_at_mut(8 * nt);
    let m: [&[f32]; POINTS] = std::array::from_fn(|xi| &at(xi)[..nt]);
    // Aᵀ over the rows: s[r][j].
    for j in 0..4 {
        let (m0, m1, m2, m3) = (m[j], m[4 + j], m[8 + j], m[12 + j]);
        let (s0, s1) = s.split_at_mut(4 * nt);
        let (s0, s1) = (&mut s0[j * nt..][..nt], &mut s1[j * nt..][..nt]);
        for q in 0..nt {
            s0[q] = m0[q] + m1[q] + m2[q];
            s1[q] = m1[q] - m2[q] - m3[q];
        }
    }
    // A over the columns: out[r][c], the tiles' output (2·ty + r, 2·tx + c).
    for r in 0..2 {
        let sr = &s[r * 4 * nt..][..4 * nt];
        let (o0, rest) = out[2 * r * nt..].split_at_mut(nt);
        let o1 = &mut rest[..nt];
        for q in 0..nt {
            let (a0, a1, a2, a3) = (sr[q], sr[nt + q], sr[2 * nt + q], sr[3 * nt + q]);
            o0[q] = a0 + a1 + a2;
            o1[q] = a1 - a2 - a3;
        }
    }
    for (oy, row) in y_p.chunks_exact_mut(g.ow).enumerate() {
        let (ty, r) = (oy / 2, oy % 2);
        let c0 = &out[2 * r * nt + ty * tw..][..tw];
        let c1 = &out[(2 * r + 1) * nt + ty * tw..][..tw];
        let mut pairs = row.chunks_exact_mut(2);
        for ((pair, &v0), &v1) in (&mut pairs).zip(c0).zip(c1) {
            pair[0].write(v0);
            pair[1].write(v1);
        }
        if let [last] = pairs.into_remainder() {
            last.write(c0[tw - 1]);
        }
    }
}
