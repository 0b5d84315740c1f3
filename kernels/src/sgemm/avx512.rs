//! The AVX-512 matrix kernel: 16-lane FMA micro-tiles that sum in the `gemm` crate's order
//! (see the parent module).

use std::arch::x86_64::*;
use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::{Dst, Mat, Out, RhsPanels, Segmented};

/// Rows of lhs per micro-tile (each broadcast to a whole vector). 28 accumulators: on
/// AMD Zen 4, an FMA loop on data in L1 ran at 117 GFLOP/s per core with 28 or 30
/// independent accumulator vectors against 78–86 with 24–27 (12×2, 13×2, 8×3, 9×3,
/// 6×4, 7×4 and 24×1 alike), measured side by side in one process.
const MR: usize = 14;
/// Vectors of 16 columns per micro-tile.
const NV: usize = 2;
/// Columns per micro-tile.
const NR: usize = 16 * NV;
const _: () = assert!(NR == super::PANEL);

pub(super) fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| std::arch::is_x86_feature_detected!("avx512f"))
}

/// [`super::transpose_rows`] in 16 × 16 tiles of register shuffles.
///
/// # Safety
/// The CPU must support AVX-512F; the sizes as checked by the caller.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn transpose_rows(sources: &[&[f32]], rows: &mut [f32]) {
    use super::PANEL;
    let pixels = rows.len() / PANEL;
    for p0 in (0..pixels).step_by(16) {
        let live = 16.min(pixels - p0);
        let mask: __mmask16 = if live == 16 { 0xffff } else { (1 << live) - 1 };
        for q0 in (0..PANEL).step_by(16) {
            let r: [__m512; 16] = std::array::from_fn(|i| match sources.get(q0 + i) {
                // SAFETY: the source holds at least `pixels` values; the mask stops
                // at them.
                Some(src) => unsafe { _mm512_maskz_loadu_ps(mask, src.as_ptr().add(p0)) },
                None => _mm512_setzero_ps(),
            });
            let t = transpose16(r);
            for (j, v) in t.iter().enumerate().take(live) {
                // SAFETY: pixel p0 + j < pixels; columns q0..q0+16 < PANEL.
                unsafe { _mm512_storeu_ps(rows.as_mut_ptr().add((p0 + j) * PANEL + q0), *v) };
            }
        }
    }
}

/// Transposes a 16 × 16 matrix held as 16 row vectors.
#[target_feature(enable = "avx512f")]
pub(crate) fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
    // Pairs of rows interleaved, then pairs of pairs: u[4g + c] holds, in 128-bit lane
    // L, column 4L + c of rows 4g..4g+4.
    let t: [__m512; 16] = std::array::from_fn(|i| {
        let (a, b) = (r[i & !1], r[i | 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_ps(a, b)
        } else {
            _mm512_unpackhi_ps(a, b)
        }
    });
    let u: [__m512; 16] = std::array::from_fn(|i| {
        let (g, c) = (i / 4, i % 4);
        // c = 0, 1 from the low interleave of rows 4g, 4g+1 and 4g+2, 4g+3; 2, 3 high.
        let (a, b) = (
            _mm512_castps_pd(t[4 * g + c / 2]),
            _mm512_castps_pd(t[4 * g + 2 + c / 2]),
        );
        _mm512_castpd_ps(if c % 2 == 0 {
            _mm512_unpacklo_pd(a, b)
        } else {
            _mm512_unpackhi_pd(a, b)
        })
    });
    // Lane L of u[4g + c] over g = 0..4 is column 4L + c.
    let mut out = [_mm512_setzero_ps(); 16];
    for c in 0..4 {
        let (u0, u1, u2, u3) = (u[c], u[4 + c], u[8 + c], u[12 + c]);
        let lo01 = _mm512_shuffle_f32x4::<0x44>(u0, u1);
        let hi01 = _mm512_shuffle_f32x4::<0xEE>(u0, u1);
        let lo23 = _mm512_shuffle_f32x4::<0x44>(u2, u3);
        let hi23 = _mm512_shuffle_f32x4::<0xEE>(u2, u3);
        out[c] = _mm512_shuffle_f32x4::<0x88>(lo01, lo23);
        out[4 + c] = _mm512_shuffle_f32x4::<0xDD>(lo01, lo23);
        out[8 + c] = _mm512_shuffle_f32x4::<0x88>(hi01, hi23);
        out[12 + c] = _mm512_shuffle_f32x4::<0xDD>(hi01, hi23);
    }
    out
}

/// Every depth block of lhs packed in order (block at k0 starts at m_panels·MR·k0),
/// the panels spread over the rayon pool when `parallel`.
///
/// # Safety
/// lhs must cover m × k.
pub(super) unsafe fn pack_all(
    lhs: Segmented,
    m: usize,
    k: usize,
    kc: usize,
    parallel: bool,
) -> Vec<f32> {
    let m_panels = m.div_ceil(MR);
    // SAFETY: every panel of every depth block is handed to fill_panel, which writes
    // all of it (rows past m as zeros).
    unsafe {
        super::written(m_panels * MR * k, |out| {
            let mut tasks = Vec::with_capacity(m_panels * k.div_ceil(kc.max(1)));
            let (mut rest, mut k0) = (out, 0);
            while k0 < k {
                let depth = kc.min(k - k0);
                for ip in 0..m_panels {
                    let (panel, tail) = rest.split_at_mut(MR * depth);
                    tasks.push((k0, depth, ip * MR, panel));
                    rest = tail;
                }
                k0 += depth;
            }
            let pack = |(k0, depth, i0, panel): (usize, usize, usize, &mut [_])| {
                let rows = MR.min(m - i0);
                lhs.runs(k0, depth, |p, len, run| {
                    // (Unsafe block above.) Rows i0..i0+rows of the run lie inside lhs
                    // (caller contract); the CPU supports AVX-512F (the only way here).
                    fill_panel(run, i0, rows, len, &mut panel[p * MR..(p + len) * MR])
                });
            };
            // Parallel only for sizeable operands: small ones are packed inside tasks
            // that already run on every thread.
            if parallel && m * k >= 1 << 16 {
                tasks.into_par_iter().for_each(pack);
            } else {
                tasks.into_iter().for_each(pack);
            }
        })
    }
}

/// # Safety
/// See [`super::sgemm`]; `packed` comes from [`pack_all`] with this kc; the CPU must
/// support AVX-512F.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn sgemm<R: RhsPanels>(
    m: usize,
    n: usize,
    k: usize,
    kc: usize,
    packed: &[f32],
    dst: *mut f32,
    out: Out,
    accumulate: bool,
    rhs: &R,
    parallel: bool,
) {
    let dst = Dst(dst);
    let m_panels = m.div_ceil(MR);
    let n_panels = n.div_ceil(NR);
    let groups = if parallel {
        rayon::current_num_threads().min(n_panels)
    } else {
        1
    };
    let per_group = n_panels.div_ceil(groups);
    // Panels packed together per depth block: about 1 MiB, so that they stay in L2.
    let chunk = ((1 << 18) / (NR * kc)).clamp(1, n_panels);
    let run_group = |g: usize, buf: &mut [f32]| {
        let (first, last) = (g * per_group, ((g + 1) * per_group).min(n_panels));
        for c0 in (first..last).step_by(chunk) {
            let panels = chunk.min(last - c0);
            let j0 = c0 * NR;
            let cols = (panels * NR).min(n - j0);
            let mut k0 = 0;
            while k0 < k {
                let depth = kc.min(k - k0);
                let overwrite = k0 == 0 && !accumulate;
                let block = &packed[m_panels * MR * k0..];
                let tiles = Tiles {
                    m,
                    n,
                    m_panels,
                    depth,
                    block,
                    dst,
                    out,
                    overwrite,
                };
                let pjs = (0..panels).map(|jp| (jp, j0 + jp * NR));
                // SAFETY (both): see Tiles::run; direct_rows covers NR columns from
                // every pj of each row, and the packed panels hold depth × NR values.
                if let Some(rows) = rhs.direct_rows(k0, depth) {
                    // Each B row is read where it lies (see direct_rows).
                    let rows = rows.as_ptr();
                    unsafe { tiles.run(pjs, |_, col| Direct { rows, col }) };
                } else {
                    rhs.pack_panels(k0, depth, j0, cols, buf);
                    let buf = &*buf;
                    unsafe { tiles.run(pjs, |jp, _| Packed(buf[jp * NR * depth..].as_ptr())) };
                }
                k0 += depth;
            }
        }
    };
    let run =
        |g: usize| super::with_scratch(&super::PANELS, chunk * NR * kc, |buf| run_group(g, buf));
    if groups > 1 {
        (0..groups).into_par_iter().for_each(run);
    } else {
        run(0);
    }
}

/// panel[p][r] = lhs[i0 + r][p] for p < depth, zero for r ≥ rows.
#[target_feature(enable = "avx512f")]
unsafe fn fill_panel(
    lhs: Mat,
    i0: usize,
    rows: usize,
    depth: usize,
    panel: &mut [MaybeUninit<f32>],
) {
    if lhs.cs == 1 {
        // Rows are contiguous: 16 × 16 register transposes, the first MR lanes stored.
        const _: () = assert!(MR <= 16);
        let lanes: __mmask16 = (1 << MR) - 1;
        for p0 in (0..depth).step_by(16) {
            let live = 16.min(depth - p0);
            let mask: __mmask16 = if live == 16 { 0xffff } else { (1 << live) - 1 };
            let r: [__m512; 16] = std::array::from_fn(|i| {
                if i < rows {
                    // SAFETY: row i0 + i, columns p0..p0+live lie inside lhs.
                    unsafe {
                        let row = lhs.ptr.offset((i0 + i) as isize * lhs.rs + p0 as isize);
                        _mm512_maskz_loadu_ps(mask, row)
                    }
                } else {
                    _mm512_setzero_ps()
                }
            });
            let t = transpose16(r);
            for (j, v) in t.iter().enumerate().take(live) {
                let at = (p0 + j) * MR;
                assert!(at + MR <= panel.len());
                // SAFETY: checked above.
                unsafe { _mm512_mask_storeu_ps(panel.as_mut_ptr().add(at).cast(), lanes, *v) };
            }
        }
        return;
    }
    if rows < MR {
        // In slices of the depth, so that the panel lines being filled stay in L1
        // while the MR rows are read.
        const SLICE: usize = 64;
        for p0 in (0..depth).step_by(SLICE) {
            let p1 = (p0 + SLICE).min(depth);
            for r in 0..MR {
                if r >= rows {
                    for p in p0..p1 {
                        panel[p * MR + r].write(0.0);
                    }
                    continue;
                }
                // SAFETY: row i0 + r, columns 0..depth lie inside lhs.
                let row = unsafe { lhs.ptr.offset((i0 + r) as isize * lhs.rs) };
                for p in p0..p1 {
                    // SAFETY: as above.
                    panel[p * MR + r].write(unsafe { *row.offset(p as isize * lhs.cs) });
                }
            }
        }
    } else {
        for p in 0..depth {
            // SAFETY: rows i0..i0+MR at column p lie inside lhs.
            let col = unsafe { lhs.ptr.offset(i0 as isize * lhs.rs + p as isize * lhs.cs) };
            for r in 0..MR {
                // SAFETY: as above.
                panel[p * MR + r].write(unsafe { *col.offset(r as isize * lhs.rs) });
            }
        }
    }
}

/// One depth block of the product over some column panels: what every tile shares.
struct Tiles<'a> {
    m: usize,
    n: usize,
    m_panels: usize,
    depth: usize,
    /// The block's packed left operand.
    block: &'a [f32],
    dst: Dst,
    out: Out,
    overwrite: bool,
}

impl Tiles<'_> {
    /// Every tile of the column panels (index, first column) given, each column panel's
    /// right operand from `b_of`.
    ///
    /// # Safety
    /// The tiles lie in dst and only this task writes their columns; `b_of` gives
    /// operands covering depth × NR values; the CPU supports AVX-512F.
    unsafe fn run<B: BRows>(
        &self,
        panels: impl Iterator<Item = (usize, usize)>,
        b_of: impl Fn(usize, usize) -> B,
    ) {
        for (jp, pj) in panels {
            let live = NR.min(self.n - pj);
            let b = b_of(jp, pj);
            for ip in 0..self.m_panels {
                let i0 = ip * MR;
                let rows = MR.min(self.m - i0);
                let a = self.block[ip * MR * self.depth..].as_ptr();
                let to = TileOut {
                    dst: self.dst,
                    out: self.out,
                    i0,
                    j0: pj,
                };
                let (depth, overwrite) = (self.depth, self.overwrite);
                // A last panel of few rows computes only as many (rounded up to 4 or 8)
                // instead of MR: M = 64 is 4 full panels and one of 8 rows. Each row's
                // FMA chain is the same either way.
                // SAFETY (all three): caller contract.
                unsafe {
                    match rows {
                        9.. => micro_tile::<B, MR>(depth, a, b, to, rows, live, overwrite),
                        5..=8 => micro_tile::<B, 8>(depth, a, b, to, rows, live, overwrite),
                        _ => micro_tile::<B, 4>(depth, a, b, to, rows, live, overwrite),
                    }
                };
            }
        }
    }
}

/// Where a micro-tile reads row p of its NR columns of the right operand.
trait BRows: Copy {
    /// # Safety
    /// p within the depth the operand was made for.
    unsafe fn row(self, p: usize) -> *const f32;
}

/// A packed panel, [depth][NR].
#[derive(Clone, Copy)]
struct Packed(*const f32);

impl BRows for Packed {
    #[inline(always)]
    unsafe fn row(self, p: usize) -> *const f32 {
        // SAFETY: caller contract.
        unsafe { self.0.add(p * NR) }
    }
}

/// Rows read in place: row p starts at rows[p], the tile's columns at `col`.
#[derive(Clone, Copy)]
struct Direct {
    rows: *const *const f32,
    col: usize,
}

impl BRows for Direct {
    #[inline(always)]
    unsafe fn row(self, p: usize) -> *const f32 {
        // SAFETY: caller contract (rows holds the depth's row starts).
        unsafe { (*self.rows.add(p)).add(self.col) }
    }
}

/// Where a tile's values go: rows from i0, columns from j0 of the product, in `out`.
#[derive(Clone, Copy)]
struct TileOut {
    dst: Dst,
    out: Out,
    i0: usize,
    j0: usize,
}

/// One tile of R ≤ MR rows × NR: acc = Σ_p a[p] ⊗ b[p] (one FMA chain per element, from
/// zero; a's packed panel has MR rows per depth step), then dst = acc (overwrite) or
/// dst + acc, for the first `rows` ≤ R rows and `cols` columns.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn micro_tile<B: BRows, const R: usize>(
    depth: usize,
    a: *const f32,
    b: B,
    to: TileOut,
    rows: usize,
    cols: usize,
    overwrite: bool,
) {
    let mut acc = [[_mm512_setzero_ps(); NV]; R];
    let step = |acc: &mut [[__m512; NV]; R], p: usize| {
        // SAFETY: the packed panels hold depth × NR and depth × MR values.
        unsafe {
            let bp = b.row(p);
            let bv: [__m512; NV] = std::array::from_fn(|v| _mm512_loadu_ps(bp.add(16 * v)));
            let ap = a.add(p * MR);
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*ap.add(r));
                for v in 0..NV {
                    acc_r[v] = _mm512_fmadd_ps(av, bv[v], acc_r[v]);
                }
            }
        }
    };
    // Four depth steps per loop iteration (measured a few percent faster than one: less
    // loop overhead between the FMAs); the same FMA chain per element either way.
    let mut p = 0;
    while p + 4 <= depth {
        for u in 0..4 {
            step(&mut acc, p + u);
        }
        p += 4;
    }
    for p in p..depth {
        step(&mut acc, p);
    }
    let Out {
        rs,
        block,
        block_stride,
    } = to.out;
    let (first_block, first_col) = (to.j0 / block, to.j0 % block);
    if first_col + cols <= block {
        // The tile's columns lie in one block (the usual case): one run per row. Rows are
        // written with constant indices into acc (spelled out, not a loop the compiler may
        // keep rolled), so that acc stays in registers: indexed by a run-time value, it
        // was kept on the stack, zeroed there with a memset on every call and stored back
        // (5–15% of a product of depth 64).
        let base = (first_block * block_stride + first_col) as isize;
        let store_row = |r: usize, acc_r: [__m512; NV]| {
            let row = to.dst.at((to.i0 + r) * rs).wrapping_offset(base);
            for (v, acc_v) in acc_r.into_iter().enumerate() {
                let live = cols.saturating_sub(16 * v).min(16);
                if live == 0 {
                    break;
                }
                let mask = ((1u32 << live) - 1) as u16;
                // SAFETY: the masked lanes address values of this tile in dst (caller
                // contract); the others are not accessed.
                unsafe { store_masked(row.add(16 * v), mask, acc_v, overwrite) };
            }
        };
        macro_rules! store_rows {
            ($($r:literal)*) => {
                $(
                    // (`min`: rows past R are never stored, but must index in bounds.)
                    if $r < R && $r < rows {
                        store_row($r, acc[$r.min(R - 1)]);
                    }
                )*
            };
        }
        const _: () = assert!(MR <= 16);
        store_rows!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
        return;
    }
    // The tile's columns cut where blocks of `out` end: (vector, lanes, offset from the
    // row's start such that lane l of vector v lands at offset + 16·v + l).
    // (At most one piece per column: NR.)
    let mut pieces = [(0usize, 0u16, 0isize); NR];
    let mut count = 0;
    for v in 0..NV {
        let c0 = 16 * v;
        let live = cols.saturating_sub(c0).min(16);
        let mut lane = 0;
        while lane < live {
            let col = to.j0 + c0 + lane;
            let (blk, q) = (col / block, col % block);
            let len = (live - lane).min(block - q);
            let lanes = (((1u32 << len) - 1) << lane) as u16;
            let offset = (blk * block_stride + q) as isize - (c0 + lane) as isize;
            pieces[count] = (v, lanes, offset);
            count += 1;
            lane += len;
        }
    }
    // A copy: run-time indices into it leave acc itself in registers (see above).
    let copy = acc;
    for (r, acc_r) in copy.iter().enumerate().take(rows) {
        let row = to.dst.at((to.i0 + r) * rs);
        for &(v, mask, offset) in &pieces[..count] {
            let d = row.wrapping_offset(offset + 16 * v as isize);
            // SAFETY: as above.
            unsafe { store_masked(d, mask, acc_r[v], overwrite) };
        }
    }
}

/// dst = acc (overwrite) or dst + acc on the lanes of `mask`.
///
/// # Safety
/// The masked lanes from d are writable; the CPU supports AVX-512F.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn store_masked(d: *mut f32, mask: __mmask16, acc: __m512, overwrite: bool) {
    // SAFETY: caller contract.
    unsafe {
        let out = if overwrite {
            acc
        } else {
            _mm512_add_ps(_mm512_maskz_loadu_ps(mask, d), acc)
        };
        _mm512_mask_storeu_ps(d, mask, out);
    }
}
