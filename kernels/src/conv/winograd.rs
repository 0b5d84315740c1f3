//! Winograd F(2×2, 3×3) for 3×3 stride-1 convolutions with at least 64 channels on maps of
//! up to 56×56 (most of ResNet-50's and VGG-16's 3×3 layers): forward, input gradient and
//! kernel gradient.
//!
//! Each 2×2 block of outputs ("tile") comes from a 4×4 window of the input. The window is
//! transformed (V = Bᵀ d B), multiplied point by point with the transformed kernel
//! (U = G g Gᵀ) and summed over input channels, then transformed back (y = Aᵀ m A). The
//! channel sums are 16 matrix products, one per point ξ of the 4×4 transform:
//! M_ξ [O, tiles] = U_ξ [O, C] · V_ξ [C, tiles]: 16·O·C multiplications per tile instead of
//! the direct 36·O·C, 2.25× fewer. The transforms only add, subtract and halve, so results
//! stay within rounding of the direct sums (the tests hold them to 1e-5 of im2col's and
//! candle's).
//! The work runs in tasks of about 256 tiles (a band of tile rows, or whole images), each
//! transforming its input, multiplying and transforming back while its data is in the
//! caches. Sums run in a fixed order: deterministic whatever the thread count.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::geom::Geom;
use crate::cpu::avx512_available;
use crate::sgemm::{sgemm, sgemm_with, with_scratch, written, Dst, Lhs, Mat};

/// Points of the 4×4 transform.
const POINTS: usize = 16;

/// Tiles per task of [`forward`] (see [`tasks`]).
const TASK_TILES: usize = 256;

/// Whether [`forward`] and [`weight_grad`] compute this convolution: 3×3, stride 1, at
/// least 64 channels in and out, maps from 7×7 to 56×56 and at least 128 tiles in the batch.
/// Below these bounds (few tiles, few channels) the transform and packing (16·O·C values)
/// cost more than the 2.25× fewer multiplications save; larger maps stay direct because they
/// were never shown to gain (docs/performance.md has the measurements).
/// `ZEROBIAS_WINOGRAD=0` turns it off.
pub(super) fn applies(g: &Geom) -> bool {
    computes(g)
        && g.c_in >= 64
        && g.c_out >= 64
        && g.ohw() <= 56 * 56
        && g.oh.min(g.ow) >= 7
        && g.n * g.oh.div_ceil(2) * g.ow.div_ceil(2) >= 128
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
    !crate::config::config().winograd
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
    let u = kernel_transform(g, tap);
    // U_ξ packed once for every task's product.
    // SAFETY: each view covers O × C values of u, which outlives the Lhs.
    let lhs: Vec<Lhs> = (0..POINTS)
        .into_par_iter()
        .map(|xi| unsafe {
            Lhs::new(
                Mat {
                    ptr: u[xi * g.c_in..].as_ptr(),
                    rs: (POINTS * g.c_in) as isize,
                    cs: 1,
                },
                g.c_out,
                g.c_in,
            )
        })
        .collect();
    let Tasks { images, band } = tasks(g);
    let bands = th.div_ceil(band);
    let groups = g.n.div_ceil(images);
    let most = images * band * tw;
    let fill = |y: &mut [MaybeUninit<f32>]| {
        let y = Dst(y.as_mut_ptr().cast());
        let lens = [
            POINTS * g.c_in * most,
            POINTS * g.c_out * most,
            2 * POINTS * band * tw + 4 * tw + 4,
        ];
        (0..groups * bands).into_par_iter().for_each(|task| {
            with_scratch(&TASK, lens.iter().sum(), |buf| {
                let (v, rest) = buf.split_at_mut(lens[0]);
                let (m, transform) = rest.split_at_mut(lens[1]);
                let (b0, ty0) = ((task / bands) * images, (task % bands) * band);
                let batch = b0..(b0 + images).min(g.n);
                let rows = ty0..(ty0 + band).min(th);
                let per_image = rows.len() * tw;
                let t = batch.len() * per_image;
                let (v, m) = (
                    &mut v[..POINTS * g.c_in * t],
                    &mut m[..POINTS * g.c_out * t],
                );
                let vd = Dst(v.as_mut_ptr().cast());
                for (i, b) in batch.clone().enumerate() {
                    for (c, x_p) in x[b * g.c_in * g.hw()..][..g.c_in * g.hw()]
                        .chunks_exact(g.hw())
                        .enumerate()
                    {
                        // Point ξ's values of this band of the plane: row c of V_ξ, the
                        // image's columns.
                        let at = |xi: usize| vd.at((xi * g.c_in + c) * t + i * per_image);
                        input_transform(g, x_p, rows.clone(), at, transform);
                    }
                }
                for (xi, (v_xi, m_xi)) in v
                    .chunks_exact(g.c_in * t)
                    .zip(m.chunks_exact_mut(g.c_out * t))
                    .enumerate()
                {
                    let rhs = Mat {
                        ptr: v_xi.as_ptr(),
                        rs: t as isize,
                        cs: 1,
                    };
                    // SAFETY: the product writes all O × t values of m_xi; the operands
                    // cover what they are read for.
                    unsafe { sgemm_with(&lhs[xi], t, m_xi.as_mut_ptr(), t, false, &rhs, false) };
                }
                let (oy0, oy1) = (2 * rows.start, (2 * rows.end).min(g.oh));
                for (i, b) in batch.enumerate() {
                    for o in 0..g.c_out {
                        // SAFETY: rows oy0..oy1 of plane (b, o) belong to this task alone.
                        let y_rows = unsafe {
                            std::slice::from_raw_parts_mut(
                                y.at((b * g.c_out + o) * g.ohw() + oy0 * g.ow).cast(),
                                (oy1 - oy0) * g.ow,
                            )
                        };
                        let at =
                            |xi: usize| &m[(xi * g.c_out + o) * t + i * per_image..][..per_image];
                        output_transform(g, at, rows.clone(), y_rows, transform);
                    }
                }
            })
        });
    };
    // SAFETY: the tasks' (image, band) output rows partition y, and every task's output
    // transform writes all of its rows of every output channel.
    unsafe { written(g.n * g.c_out * g.ohw(), fill) }
}

thread_local! {
    /// One task's transformed input [ξ][C][tiles], products [ξ][O][tiles] and the
    /// transforms' intermediate runs, kept per thread between calls (see `with_scratch`).
    static TASK: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// What one task of [`forward`] covers: `images` whole images (band = all tile rows), or a
/// band of `band` tile rows of one image.
struct Tasks {
    images: usize,
    band: usize,
}

/// A task transforms the input of its tiles, multiplies and transforms back, so that its
/// transformed input and products (16 values per tile and channel each) stay in the
/// caches between the steps instead of going through memory. About 256 tiles per task: with
/// fewer, each packed kernel matrix U_ξ (O × C) serves too few columns (at 64 tiles ResNet-50's
/// 128-channel 28×28 layers ran 1.18× the direct convolution instead of 1.31×, VGG-16's
/// 512-channel ones 1.41× instead of 1.56×); with 1024, 0.84× and 1.35×.
fn tasks(g: &Geom) -> Tasks {
    let (th, tw) = tiles(g);
    let per_image = th * tw;
    // At least two tasks per thread, so that no thread is left with a larger share.
    let tasks = 2 * rayon::current_num_threads();
    if TASK_TILES >= per_image {
        Tasks {
            images: (TASK_TILES / per_image).min(g.n / tasks).max(1),
            band: th,
        }
    } else {
        let bands = tasks.div_ceil(g.n.max(1));
        Tasks {
            images: 1,
            band: TASK_TILES.div_ceil(tw).min(th.div_ceil(bands)).clamp(1, th),
        }
    }
}

/// The kernel gradient of the convolution `g` (its input `x` [N, C, H, W], the output
/// gradient `dy` [N, O, oh, ow]): dw [O, C, 3, 3]. The forward computes y = Aᵀ [Σ_c U ⊙ V]
/// A per tile with U = G w Gᵀ, so dw = Gᵀ [Σ_tiles (A dy Aᵀ) ⊙ V] G: 16 products
/// M_ξ [O, C] = D_ξ [O, tiles] · V_ξᵀ [tiles, C] over all tiles of the batch (D = A dy Aᵀ of
/// each 2×2 tile of the output gradient, zero past the map's edge), then the 3×3 kernel of
/// each (o, c) from its 16 values. 16·O·C multiplications per tile instead of 36·O·C. Each
/// product runs whole on one thread, over chunks of images whose transformed input and
/// gradient take at most 128 MiB (fixed by the shapes): the sums over tiles are in a fixed
/// order. (One chunk of 5 of VGG-16's 512-channel 28×28 images and one of 3 was 1–2% slower
/// on its training step than one of 8; 128 MiB keeps batch 8 in one.) Timed per
/// call inside ResNet-50's training step (batch 8) against the direct kernel gradient:
/// 10.1 vs 11.7 ms on the 64-channel 56×56 layers, 8.1 vs 9.2 ms at 128 channels (28×28),
/// 7.6 vs 8.4 ms at 256 (14×14); one layer at a time, 1.67× on VGG-16's 512-channel 28×28
/// layers, 1.41× at 14×14 and 1.32× on its 256-channel 56×56 ones.
pub(super) fn weight_grad(g: &Geom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    weight_grad_in_chunks(g, x, dy, 128 << 20)
}

/// [`weight_grad`] with the batch in chunks of images whose transformed input and gradient
/// take at most `budget` bytes together (at least one image).
pub(super) fn weight_grad_in_chunks(g: &Geom, x: &[f32], dy: &[f32], budget: usize) -> Vec<f32> {
    assert!(computes(g) && x.len() == g.n * g.c_in * g.hw() && dy.len() == g.n * g.c_out * g.ohw());
    let (th, tw) = tiles(g);
    let per_image = th * tw;
    let rows = 0..th;
    let scratch_len = 2 * POINTS * per_image + 4 * tw + 4;
    let oc = g.c_out * g.c_in;
    // The batch in chunks of images (at batch 64, VGG-16's 256-channel 56×56 layers would
    // otherwise hold 1.6 GB of transformed values); each product sums chunk after chunk.
    // The chunks depend on the shapes only, so the sums' order does not depend on the
    // thread count.
    let bytes_per_image = POINTS * (g.c_in + g.c_out) * per_image * std::mem::size_of::<f32>();
    let chunk = (budget / bytes_per_image).clamp(1, g.n.max(1));
    let most = chunk * per_image;
    // Every value is written before it is read (by the transforms, and by the first chunk's
    // products), so the buffers skip the zero fill (up to `budget` bytes a call).
    let uninit = |len: usize| {
        let mut buf: Vec<MaybeUninit<f32>> = Vec::with_capacity(len);
        // SAFETY: MaybeUninit values need no initialisation.
        unsafe { buf.set_len(len) };
        buf
    };
    let (mut v, mut d, mut m) = (
        uninit(POINTS * g.c_in * most),
        uninit(POINTS * g.c_out * most),
        uninit(POINTS * oc),
    );
    for (k, (x, dy)) in x
        .chunks(chunk * g.c_in * g.hw())
        .zip(dy.chunks(chunk * g.c_out * g.ohw()))
        .enumerate()
    {
        let t = x.len() / (g.c_in * g.hw()) * per_image;
        // V [ξ][C][tiles] and D [ξ][O][tiles], each plane's tiles of image b at b·per_image;
        // each (image, channel) plane's task writes its own columns of every point's matrix.
        let vd = Dst(v.as_mut_ptr().cast());
        x.par_chunks_exact(g.hw())
            .enumerate()
            .for_each(|(plane, x_p)| {
                let (b, c) = (plane / g.c_in, plane % g.c_in);
                let at = |xi: usize| vd.at((xi * g.c_in + c) * t + b * per_image);
                with_scratch(&TASK, scratch_len, |scratch| {
                    input_transform(g, x_p, rows.clone(), at, scratch)
                })
            });
        let dd = Dst(d.as_mut_ptr().cast());
        dy.par_chunks_exact(g.ohw())
            .enumerate()
            .for_each(|(plane, dy_p)| {
                let (b, o) = (plane / g.c_out, plane % g.c_out);
                let at = |xi: usize| dd.at((xi * g.c_out + o) * t + b * per_image);
                with_scratch(&TASK, scratch_len, |scratch| {
                    output_grad_transform(g, dy_p, at, scratch)
                })
            });
        // SAFETY: the transforms above wrote the chunk's 16·C·t and 16·O·t values.
        let (v, d) = unsafe {
            (
                std::slice::from_raw_parts(v.as_ptr().cast::<f32>(), POINTS * g.c_in * t),
                std::slice::from_raw_parts(d.as_ptr().cast::<f32>(), POINTS * g.c_out * t),
            )
        };
        let md = Dst(m.as_mut_ptr().cast());
        (0..POINTS).into_par_iter().for_each(|xi| {
            let lhs = Mat {
                ptr: d[xi * g.c_out * t..].as_ptr(),
                rs: t as isize,
                cs: 1,
            };
            // V_ξᵀ: column c is V_ξ's row c (packed through register transposes).
            let rhs = Mat {
                ptr: v[xi * g.c_in * t..].as_ptr(),
                rs: 1,
                cs: t as isize,
            };
            // SAFETY: every product writes (from the second chunk on, adds to) all O × C
            // values of its own matrix; the operands cover what they are read for.
            unsafe {
                sgemm(
                    g.c_out,
                    g.c_in,
                    t,
                    md.at(xi * oc),
                    g.c_in,
                    k > 0,
                    lhs,
                    &rhs,
                    false,
                )
            };
        });
    }
    // SAFETY: the first chunk's products wrote all 16·O·C values.
    let m = unsafe { std::slice::from_raw_parts(m.as_ptr().cast::<f32>(), POINTS * oc) };
    // dw = Gᵀ M G for each (o, c), along runs over the input channels, then placed.
    let c_in = g.c_in;
    // SAFETY: each output channel's task writes all C × 9 values of its chunk.
    unsafe {
        written(oc * 9, |dw| {
            dw.par_chunks_exact_mut(c_in * 9)
                .enumerate()
                .for_each(|(o, dw_o)| {
                    with_scratch(&TASK, 21 * c_in, |scratch| {
                        let (z, k) = scratch.split_at_mut(12 * c_in);
                        let m_at = |xi: usize| &m[xi * oc + o * c_in..][..c_in];
                        // Gᵀ over the rows: z[r][j], r < 3, j < 4.
                        for j in 0..4 {
                            let (z0, rest) = z[j * c_in..].split_at_mut(4 * c_in);
                            let (z1, z2) = rest.split_at_mut(4 * c_in);
                            let m = [m_at(j), m_at(4 + j), m_at(8 + j), m_at(12 + j)];
                            g_transposed_runs(m, [z0, z1, z2]);
                        }
                        // G over the columns: k[3r + s].
                        for r in 0..3 {
                            let zr = |j: usize| &z[(4 * r + j) * c_in..][..c_in];
                            let (k0, rest) = k[3 * r * c_in..].split_at_mut(c_in);
                            let (k1, k2) = rest.split_at_mut(c_in);
                            g_transposed_runs([zr(0), zr(1), zr(2), zr(3)], [k0, k1, k2]);
                        }
                        for (c, dw_oc) in dw_o.chunks_exact_mut(9).enumerate() {
                            for (t, v) in dw_oc.iter_mut().enumerate() {
                                v.write(k[t * c_in + c]);
                            }
                        }
                    })
                })
        })
    }
}

/// Gᵀ applied along runs (over input channels) of four rows or columns m of a 4×4
/// transform: out[0] = m0 + ½(m1 + m2), out[1] = ½(m1 − m2), out[2] = ½(m1 + m2) + m3, for
/// the first m0.len() values of each out.
fn g_transposed_runs([m0, m1, m2, m3]: [&[f32]; 4], [o0, o1, o2]: [&mut [f32]; 3]) {
    for c in 0..m0.len() {
        o0[c] = m0[c] + 0.5 * (m1[c] + m2[c]);
        o1[c] = 0.5 * (m1[c] - m2[c]);
        o2[c] = 0.5 * (m1[c] + m2[c]) + m3[c];
    }
}

/// D = A dy Aᵀ of every 2×2 tile of the output-gradient plane dy_p [oh, ow] (zeros past its
/// edge), A = [[1, 0], [1, 1], [1, −1], [0, −1]]; point ξ's values for the tiles in raster
/// order go to at(ξ). Runs along the plane's tiles, as [`input_transform`].
fn output_grad_transform(
    g: &Geom,
    dy_p: &[f32],
    at: impl Fn(usize) -> *mut f32,
    scratch: &mut [f32],
) {
    let (th, tw) = tiles(g);
    let nt = th * tw;
    // e[2r + c]: the tiles' value (2·ty + r, 2·tx + c).
    let (e, rest) = scratch.split_at_mut(4 * nt);
    let (padded, rest) = rest.split_at_mut(2 * tw);
    let (even, odd) = rest[..2 * tw].split_at_mut(tw);
    for ty in 0..th {
        for r in 0..2 {
            let y = 2 * ty + r;
            let (e0, e1) = (2 * r * nt + ty * tw, (2 * r + 1) * nt + ty * tw);
            if y >= g.oh {
                e[e0..e0 + tw].fill(0.0);
                e[e1..e1 + tw].fill(0.0);
                continue;
            }
            padded[..g.ow].copy_from_slice(&dy_p[y * g.ow..][..g.ow]);
            padded[g.ow..].fill(0.0);
            deinterleave(padded, even, odd);
            e[e0..e0 + tw].copy_from_slice(even);
            e[e1..e1 + tw].copy_from_slice(odd);
        }
    }
    let (e00, e01, e10, e11) = (&e[..nt], &e[nt..2 * nt], &e[2 * nt..3 * nt], &e[3 * nt..]);
    // Row i of A dy (for the tile's two columns), then the four points of that row: each
    // pass writes four runs, so that it vectorises along the tiles.
    let row = |i: usize, e0: f32, e1: f32| match i {
        0 => e0,
        1 => e0 + e1,
        2 => e0 - e1,
        _ => -e1,
    };
    for i in 0..4 {
        // SAFETY: at(ξ) holds this plane's nt values (caller contract).
        let [d0, d1, d2, d3]: [&mut [MaybeUninit<f32>]; 4] = std::array::from_fn(|j| unsafe {
            std::slice::from_raw_parts_mut(at(4 * i + j).cast(), nt)
        });
        for q in 0..nt {
            let (a, b) = (row(i, e00[q], e10[q]), row(i, e01[q], e11[q]));
            d0[q].write(a);
            d1[q].write(a + b);
            d2[q].write(a - b);
            d3[q].write(-b);
        }
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
                .for_each(|(o, u_o)| {
                    with_scratch(&TASK, 21 * c_in, |scratch| {
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
                    })
                })
        })
    }
}

/// V = Bᵀ d B of every 4×4 window d of the plane x_p (zeros outside it), with Bᵀ = [[1, 0,
/// −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]]; point ξ's values for the tiles in
/// raster order go to at(ξ). The plane's windows are gathered into 16 runs over all its
/// tiles (d_ij[tile]) first, so that the arithmetic runs along whole runs and vectorises.
fn input_transform(
    g: &Geom,
    x_p: &[f32],
    rows: std::ops::Range<usize>,
    at: impl Fn(usize) -> *mut f32,
    scratch: &mut [f32],
) {
    let (_, tw) = tiles(g);
    let nt = rows.len() * tw;
    let (d, rest) = scratch.split_at_mut(POINTS * nt);
    let (t, rest) = rest.split_at_mut(POINTS * nt);
    // The window columns of a row, −pad .. 2·tw + 2 − pad (zeros outside the image), split
    // into even and odd ones: window column 2·tx + j is even[tx + j/2] (j even) or
    // odd[tx + j/2] (j odd), so that each of the four runs is a plain copy.
    let (padded, rest) = rest.split_at_mut(2 * tw + 2);
    let (even, odd) = rest[..2 * tw + 2].split_at_mut(tw + 1);
    for (r, ty) in rows.clone().enumerate() {
        for i in 0..4 {
            let y = (2 * ty + i).wrapping_sub(g.pad);
            let runs = (0..4).map(|j| (4 * i + j) * nt + r * tw);
            if y >= g.h {
                for at in runs {
                    d[at..at + tw].fill(0.0);
                }
                continue;
            }
            let row = &x_p[y * g.w..][..g.w];
            let inside = g.w.min(padded.len() - g.pad);
            padded[..g.pad].fill(0.0);
            padded[g.pad..g.pad + inside].copy_from_slice(&row[..inside]);
            padded[g.pad + inside..].fill(0.0);
            deinterleave(padded, even, odd);
            for (j, at) in runs.enumerate() {
                let half = if j % 2 == 0 { &*even } else { &*odd };
                d[at..at + tw].copy_from_slice(&half[j / 2..j / 2 + tw]);
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
    rows: std::ops::Range<usize>,
    y_p: &mut [MaybeUninit<f32>],
    scratch: &mut [f32],
) {
    let (_, tw) = tiles(g);
    let nt = rows.len() * tw;
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
        interleave(c0, c1, row);
    }
}

/// even[q] = pairs[2q], odd[q] = pairs[2q + 1] (pairs holds 2·even.len() values).
fn deinterleave(pairs: &[f32], even: &mut [f32], odd: &mut [f32]) {
    let n = even.len();
    assert!(odd.len() == n && pairs.len() == 2 * n);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if avx512_available() {
        // SAFETY: the CPU supports AVX-512F; lengths checked above.
        done = unsafe { avx512::deinterleave(pairs, even, odd) };
    }
    for q in done..n {
        even[q] = pairs[2 * q];
        odd[q] = pairs[2 * q + 1];
    }
}

/// row[2q] = even[q], row[2q + 1] = odd[q] for every value of row (row.len() ≤
/// 2·even.len(); an odd length ends with an even value).
fn interleave(even: &[f32], odd: &[f32], row: &mut [MaybeUninit<f32>]) {
    let half = row.len() / 2;
    assert!(even.len() >= row.len().div_ceil(2) && odd.len() >= half);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if avx512_available() {
        // SAFETY: the CPU supports AVX-512F; lengths checked above.
        done = unsafe { avx512::interleave(&even[..half], &odd[..half], row) };
    }
    for q in done..half {
        row[2 * q].write(even[q]);
        row[2 * q + 1].write(odd[q]);
    }
    if row.len() % 2 == 1 {
        row[2 * half].write(even[half]);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// [`super::deinterleave`] in blocks of 16 pairs; returns how many pairs it did.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn deinterleave(pairs: &[f32], even: &mut [f32], odd: &mut [f32]) -> usize {
        let blocks = even.len() / 16;
        let pick_even =
            _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let pick_odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        for b in 0..blocks {
            // SAFETY: 32 values from 32·b lie in pairs, 16 from 16·b in even and odd.
            unsafe {
                let lo = _mm512_loadu_ps(pairs.as_ptr().add(32 * b));
                let hi = _mm512_loadu_ps(pairs.as_ptr().add(32 * b + 16));
                _mm512_storeu_ps(
                    even.as_mut_ptr().add(16 * b),
                    _mm512_permutex2var_ps(lo, pick_even, hi),
                );
                _mm512_storeu_ps(
                    odd.as_mut_ptr().add(16 * b),
                    _mm512_permutex2var_ps(lo, pick_odd, hi),
                );
            }
        }
        16 * blocks
    }

    /// [`super::interleave`] of even.len() = odd.len() pairs in blocks of 16; returns how
    /// many pairs it wrote.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn interleave(
        even: &[f32],
        odd: &[f32],
        row: &mut [MaybeUninit<f32>],
    ) -> usize {
        let blocks = even.len() / 16;
        let first = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
        let second =
            _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
        for b in 0..blocks {
            // SAFETY: 16 values from 16·b lie in even and odd, 32 from 32·b in row.
            unsafe {
                let e = _mm512_loadu_ps(even.as_ptr().add(16 * b));
                let o = _mm512_loadu_ps(odd.as_ptr().add(16 * b));
                let out = row.as_mut_ptr().add(32 * b).cast::<f32>();
                _mm512_storeu_ps(out, _mm512_permutex2var_ps(e, first, o));
                _mm512_storeu_ps(out.add(16), _mm512_permutex2var_ps(e, second, o));
            }
        }
        16 * blocks
    }
}
