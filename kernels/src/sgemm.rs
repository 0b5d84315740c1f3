//! f32 matrix product for the convolution kernels.
//!
//! On x86-64 CPUs with AVX-512 it runs our own 16-lane kernel; elsewhere it calls the
//! `gemm` crate. The AVX-512 kernel sums in exactly the order of the `gemm` crate's AVX2
//! (FMA) kernel: the depth is cut into the same blocks (`kc`), each block is one FMA chain
//! per output element starting from zero, and the blocks are added to the destination in
//! order. Results are therefore bit-identical to the `gemm` crate's (and to candle's own
//! convolution, which also uses the `gemm` crate), while running at twice the vector
//! width. Shapes the `gemm` crate treats specially (vectors, depth ≤ 2, tiny outputs) go
//! to the `gemm` crate.

use gemm::Parallelism;

pub(crate) use crate::storage::written;

/// Strided view of a dense f32 matrix: element (i, j) at ptr[i*rs + j*cs].
#[derive(Clone, Copy)]
pub(crate) struct Mat {
    pub ptr: *const f32,
    pub rs: isize,
    pub cs: isize,
}

// SAFETY: a Mat is a read-only view; the callers guarantee the memory outlives its use.
unsafe impl Send for Mat {}
unsafe impl Sync for Mat {}

/// A right operand that writes itself block by block, so that operands never stored whole
/// (a convolution's im2col matrix) go straight into the kernel's packed layout.
pub(crate) trait RhsPanels: Sync {
    /// Writes rows k0..k0+depth, columns j0..j0+cols as out[p * stride + q] (p < depth,
    /// q < cols).
    fn pack(&self, k0: usize, depth: usize, j0: usize, cols: usize, out: &mut [f32], stride: usize);

    /// Writes rows k0..k0+depth, columns j0..j0+cols as consecutive panels of [`PANEL`]
    /// columns, each [depth][PANEL] and zero past `cols`: the layout of the AVX-512 kernel.
    fn pack_panels(&self, k0: usize, depth: usize, j0: usize, cols: usize, out: &mut [f32]) {
        if let Some(mat) = self.as_mat().filter(|m| m.rs == 1 && m.cs != 1) {
            // SAFETY: the sgemm callers guarantee the view covers these rows and columns.
            return unsafe { mat.pack_transposed(k0, depth, j0, cols, out) };
        }
        for (i, q0) in (0..cols).step_by(PANEL).enumerate() {
            let live = PANEL.min(cols - q0);
            let panel = &mut out[i * PANEL * depth..(i + 1) * PANEL * depth];
            self.pack(k0, depth, j0 + q0, live, panel, PANEL);
            if live < PANEL {
                for row in panel.chunks_exact_mut(PANEL) {
                    row[live..].fill(0.0);
                }
            }
        }
    }

    /// The operand as a strided matrix, when it is one.
    fn as_mat(&self) -> Option<Mat> {
        None
    }

    /// Where rows k0..k0+depth start, when each is a contiguous run in memory that the
    /// AVX-512 kernel can read in place (no packing): row p's column j is at
    /// `rows[p] + j`, readable for every j < n rounded up to a whole panel.
    fn direct_rows(&self, _k0: usize, _depth: usize) -> Option<Vec<*const f32>> {
        None
    }
}

/// A destination that parallel tasks write, each its own disjoint part (the callers'
/// contract).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct Dst(pub(crate) *mut f32);
// SAFETY: tasks write disjoint parts of the destination.
#[cfg(target_arch = "x86_64")]
unsafe impl Send for Dst {}
#[cfg(target_arch = "x86_64")]
unsafe impl Sync for Dst {}
#[cfg(target_arch = "x86_64")]
impl Dst {
    /// A method, so that closures capture the whole (Send) wrapper, not its field.
    pub(crate) fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use avx512::transpose16;

/// Whether an m × n × k product runs on the AVX-512 kernel here (which reads
/// [`RhsPanels::direct_rows`] operands in place; the other paths pack them).
pub(crate) fn avx512_kernel_runs(m: usize, n: usize, k: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    if own_kernel_applies(m, n, k) && avx512::available() {
        return true;
    }
    false
}

/// Runs `f` on a scratch buffer of `len` values kept per thread between calls: packing
/// buffers are written in full before they are read, so reusing them saves the zero fill
/// (and page faults) a fresh allocation costs every product. Contents are unspecified.
pub(crate) fn with_scratch<T>(
    slot: &'static std::thread::LocalKey<std::cell::Cell<Vec<f32>>>,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> T,
) -> T {
    // Taken out while in use, so a nested use of the same slot gets a buffer of its own.
    let mut buf = slot.take();
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let out = f(&mut buf[..len]);
    slot.set(buf);
    out
}

thread_local! {
    /// Packed right-operand panels of the AVX-512 kernel.
    static PANELS: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
    /// One operand row before it is split into panels (see `conv::Im2col`).
    pub(crate) static ROW: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// rows[p][q] = sources[q][p] for the pixels p < rows.len() / PANEL, and zero for
/// q ≥ sources.len() (at most PANEL sources, each at least that long): turns im2col rows
/// into the kernel's panel rows.
pub(crate) fn transpose_rows(sources: &[&[f32]], rows: &mut [f32]) {
    let pixels = rows.len() / PANEL;
    assert!(
        rows.len().is_multiple_of(PANEL)
            && sources.len() <= PANEL
            && sources.iter().all(|s| s.len() >= pixels)
    );
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // SAFETY: the CPU supports AVX-512F; sizes checked above.
        unsafe { avx512::transpose_rows(sources, rows) };
        return;
    }
    for (p, row) in rows.chunks_exact_mut(PANEL).enumerate() {
        for (q, v) in row.iter_mut().enumerate() {
            *v = sources.get(q).map_or(0.0, |s| s[p]);
        }
    }
}

/// Columns per panel of the AVX-512 kernel's packed right operand.
pub(crate) const PANEL: usize = 32;

/// Copies `src` into `dst` (equal lengths); full panels as fixed-size copies, which
/// compile to a few vector moves instead of a `memcpy` call.
#[inline]
pub(crate) fn copy_panel_row(dst: &mut [f32], src: &[f32]) {
    match (
        <&mut [f32; PANEL]>::try_from(&mut *dst),
        <&[f32; PANEL]>::try_from(src),
    ) {
        (Ok(d), Ok(s)) => *d = *s,
        _ => dst.copy_from_slice(src),
    }
}

impl Mat {
    /// [`RhsPanels::pack_panels`] of a transposed matrix (rs = 1: each column contiguous,
    /// such as Winograd's V_ξᵀ): every panel is a transpose of PANEL contiguous runs,
    /// through the kernel's register transposes instead of a strided gather per value.
    ///
    /// # Safety
    /// The view covers rows k0..k0+depth of columns j0..j0+cols.
    unsafe fn pack_transposed(
        &self,
        k0: usize,
        depth: usize,
        j0: usize,
        cols: usize,
        out: &mut [f32],
    ) {
        for (i, q0) in (0..cols).step_by(PANEL).enumerate() {
            let live = PANEL.min(cols - q0);
            let sources: Vec<&[f32]> = (0..live)
                .map(|q| {
                    // SAFETY: caller contract; column j0 + q0 + q is contiguous (rs = 1).
                    unsafe {
                        std::slice::from_raw_parts(
                            self.ptr
                                .offset(k0 as isize + (j0 + q0 + q) as isize * self.cs),
                            depth,
                        )
                    }
                })
                .collect();
            transpose_rows(
                &sources,
                &mut out[i * PANEL * depth..(i + 1) * PANEL * depth],
            );
        }
    }
}

impl RhsPanels for Mat {
    fn pack(
        &self,
        k0: usize,
        depth: usize,
        j0: usize,
        cols: usize,
        out: &mut [f32],
        stride: usize,
    ) {
        for p in 0..depth {
            let dst = &mut out[p * stride..p * stride + cols];
            // SAFETY: the sgemm callers guarantee the view covers rows k0..k0+depth and
            // columns j0..j0+cols.
            let src = unsafe {
                self.ptr
                    .offset((k0 + p) as isize * self.rs + j0 as isize * self.cs)
            };
            if self.cs == 1 {
                // SAFETY: as above; cols contiguous elements.
                copy_panel_row(dst, unsafe { std::slice::from_raw_parts(src, cols) });
            } else {
                for (q, d) in dst.iter_mut().enumerate() {
                    // SAFETY: as above.
                    *d = unsafe { *src.offset(q as isize * self.cs) };
                }
            }
        }
    }

    fn as_mat(&self) -> Option<Mat> {
        Some(*self)
    }
}

/// A left operand whose columns come in segments of `seg`: column p = s·seg + q of row i
/// is at mat.ptr[i·rs + q·cs + s·seg_step]. A convolution's weights [O, C, kh, kw] read
/// this way in im2col row order (kernel offset major, channel minor) without a reordered
/// copy; a plain matrix is one segment.
#[derive(Clone, Copy)]
pub(crate) struct Segmented {
    pub mat: Mat,
    pub seg: usize,
    pub seg_step: isize,
}

impl From<Mat> for Segmented {
    fn from(mat: Mat) -> Self {
        Segmented {
            mat,
            seg: usize::MAX,
            seg_step: 0,
        }
    }
}

impl Segmented {
    /// Calls f(p, len, view) for the runs of columns k0..k0+depth inside one segment,
    /// p counted from k0, view starting at that run's first column.
    fn runs(&self, k0: usize, depth: usize, mut f: impl FnMut(usize, usize, Mat)) {
        let mut p = 0;
        while p < depth {
            let (s, q) = ((k0 + p) / self.seg, (k0 + p) % self.seg);
            let len = (self.seg - q).min(depth - p);
            let ptr = self
                .mat
                .ptr
                .wrapping_offset(q as isize * self.mat.cs + s as isize * self.seg_step);
            f(p, len, Mat { ptr, ..self.mat });
            p += len;
        }
    }
}

/// A left operand prepared once for many products (a convolution's weights, used for
/// every image and tile): on the AVX-512 path it is packed into the kernel's layout once.
pub(crate) struct Lhs {
    view: Segmented,
    m: usize,
    k: usize,
    /// (depth block, packed panels of every depth block in order).
    packed: Option<(usize, Vec<f32>)>,
    /// The rows as a dense matrix, for the `gemm` crate, made when first needed.
    dense: std::sync::OnceLock<Vec<f32>>,
}

// SAFETY: read-only view plus owned data; see Mat.
unsafe impl Send for Lhs {}
unsafe impl Sync for Lhs {}

impl Lhs {
    /// Packs `view` (m × k) for products with more than 64 columns (the depth blocking of
    /// narrower products may differ; those pack on the fly).
    ///
    /// # Safety
    /// `view` must cover m × k elements for as long as the Lhs is used.
    pub(crate) unsafe fn new(view: impl Into<Segmented>, m: usize, k: usize) -> Self {
        let view = view.into();
        let mut packed = None;
        #[cfg(target_arch = "x86_64")]
        if avx512_kernel_runs(m, 65, k) {
            let kc = depth_block(m, 65, k);
            // SAFETY: forwarded.
            packed = Some((kc, unsafe { avx512::pack_all(view, m, k, kc, true) }));
        }
        Lhs {
            view,
            m,
            k,
            packed,
            dense: std::sync::OnceLock::new(),
        }
    }

    /// The operand as a strided matrix (a dense copy when it is segmented).
    fn mat(&self) -> Mat {
        if self.view.seg >= self.k {
            return self.view.mat;
        }
        let dense = self.dense.get_or_init(|| {
            let mut out = vec![0f32; self.m * self.k];
            for (i, row) in out.chunks_exact_mut(self.k).enumerate() {
                self.view.runs(0, self.k, |p, len, run| {
                    for (q, v) in row[p..p + len].iter_mut().enumerate() {
                        // SAFETY: the view covers m × k (constructor contract).
                        *v = unsafe { *run.ptr.offset(i as isize * run.rs + q as isize * run.cs) };
                    }
                });
            }
            out
        });
        Mat {
            ptr: dense.as_ptr(),
            rs: self.k as isize,
            cs: 1,
        }
    }
}

/// dst[m×n] (row stride dst_rs, unit column stride) = (accumulate ? dst : 0) + lhs · rhs,
/// with lhs m×k and rhs k×n. `parallel` spreads the work over the rayon pool.
///
/// # Safety
/// All pointers must cover the addressed elements; dst must not alias lhs or rhs.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm<R: RhsPanels>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: Mat,
    rhs: &R,
    parallel: bool,
) {
    let lhs = Lhs {
        view: lhs.into(),
        m,
        k,
        packed: None,
        dense: std::sync::OnceLock::new(),
    };
    // SAFETY: forwarded caller contract.
    unsafe { sgemm_with(&lhs, n, dst, dst_rs, accumulate, rhs, parallel) }
}

/// Where a product's m × n values go: value (i, j) at dst + (j / block)·block_stride +
/// i·rs + j % block. One block (`Out::rows`) is a plain matrix with row stride rs; several
/// blocks write images of a batch multiplied as one product straight into [N, O, pixels]
/// order.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Out {
    pub rs: usize,
    pub block: usize,
    pub block_stride: usize,
}

impl Out {
    /// A plain matrix with row stride rs.
    pub(crate) fn rows(rs: usize) -> Self {
        Out {
            rs,
            block: usize::MAX,
            block_stride: 0,
        }
    }

    fn offset(&self, i: usize, j: usize) -> usize {
        (j / self.block) * self.block_stride + i * self.rs + j % self.block
    }
}

/// [`sgemm`] with a prepared left operand.
///
/// # Safety
/// As for [`sgemm`].
pub(crate) unsafe fn sgemm_with<R: RhsPanels>(
    lhs: &Lhs,
    n: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    rhs: &R,
    parallel: bool,
) {
    // SAFETY: forwarded caller contract.
    unsafe { sgemm_to(lhs, n, dst, Out::rows(dst_rs), accumulate, rhs, parallel) }
}

/// [`sgemm_with`] into the layout `out`.
///
/// # Safety
/// As for [`sgemm`], with dst covering every value `out` addresses.
pub(crate) unsafe fn sgemm_to<R: RhsPanels>(
    lhs: &Lhs,
    n: usize,
    dst: *mut f32,
    out: Out,
    accumulate: bool,
    rhs: &R,
    parallel: bool,
) {
    let (m, k) = (lhs.m, lhs.k);
    if m == 0 || n == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if avx512_kernel_runs(m, n, k) {
        let kc = depth_block(m, n, k);
        // SAFETY: forwarded caller contract.
        unsafe { avx512_product(lhs, n, k, kc, dst, out, accumulate, rhs, parallel) };
        return;
    }
    if out.block < n {
        // The other kernels write plain matrices: through one, then into place.
        let mut tmp = vec![0f32; m * n];
        if accumulate {
            for (i, row) in tmp.chunks_exact_mut(n).enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    // SAFETY: out addresses inside dst (caller contract).
                    *v = unsafe { *dst.add(out.offset(i, j)) };
                }
            }
        }
        // SAFETY: tmp holds m × n values.
        unsafe {
            sgemm_to(
                lhs,
                n,
                tmp.as_mut_ptr(),
                Out::rows(n),
                accumulate,
                rhs,
                parallel,
            )
        };
        for (i, row) in tmp.chunks_exact(n).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                // SAFETY: as above.
                unsafe { *dst.add(out.offset(i, j)) = v };
            }
        }
        return;
    }
    let dst_rs = out.rs;
    let lhs = lhs.mat();
    // The gemm crate takes strided matrices: materialise any other operand.
    let materialised;
    let rhs = match rhs.as_mat() {
        Some(mat) => mat,
        None => {
            let mut full = vec![0f32; k * n];
            rhs.pack(0, k, 0, n, &mut full, n);
            materialised = full;
            Mat {
                ptr: materialised.as_ptr(),
                rs: n as isize,
                cs: 1,
            }
        }
    };
    let threads = rayon::current_num_threads();
    let par = if parallel && threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: forwarded caller contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs.ptr,
            lhs.cs,
            lhs.rs,
            rhs.ptr,
            rhs.cs,
            rhs.rs,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// The AVX-512 product with lhs packed for depth blocks of kc (reusing its prepared
/// packing when that has the same blocks).
///
/// # Safety
/// As for [`sgemm_to`]; the CPU supports AVX-512F.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn avx512_product<R: RhsPanels>(
    lhs: &Lhs,
    n: usize,
    k: usize,
    kc: usize,
    dst: *mut f32,
    out: Out,
    accumulate: bool,
    rhs: &R,
    parallel: bool,
) {
    let m = lhs.m;
    let owned;
    let packed = match &lhs.packed {
        Some((pkc, p)) if *pkc == kc => p.as_slice(),
        // SAFETY: forwarded caller contract.
        _ => {
            owned = unsafe { avx512::pack_all(lhs.view, m, k, kc, parallel) };
            owned.as_slice()
        }
    };
    // SAFETY: forwarded caller contract.
    unsafe { avx512::sgemm(m, n, k, kc, packed, dst, out, accumulate, rhs, parallel) };
}

/// Shapes for which the `gemm` crate uses its blocked microkernel path (whose summation
/// order we reproduce) rather than gemv, outer-product or horizontal dot-product kernels.
fn own_kernel_applies(m: usize, n: usize, k: usize) -> bool {
    m > 1 && n > 1 && k > 2 && m * n > 16 * 16 && !own_kernel_disabled()
}

/// `ZEROBIAS_GEMM=crate` sends every product to the `gemm` crate (benchmarks compare both).
fn own_kernel_disabled() -> bool {
    !crate::config::config().own_gemm
}

/// Which kernel [`sgemm`] uses for large products on this machine.
pub fn backend() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if !own_kernel_disabled() && !crate::config::config().portable() && avx512::available() {
        return "avx512";
    }
    "gemm-crate"
}

/// Depth block of the `gemm` crate's f32 FMA kernel (16 rows × 6 columns) for this shape:
/// its sums restart from zero at every block boundary, so ours must cut at the same places.
fn depth_block(m: usize, n: usize, k: usize) -> usize {
    if m <= 64 && n <= 64 {
        k.min(512)
    } else {
        gemm_common::cache::kernel_params(m, n, k, 16, 6, std::mem::size_of::<f32>()).kc
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    use rayon::prelude::*;

    use super::{Dst, Mat, Out, RhsPanels, Segmented};

    /// Rows of lhs per micro-tile (each broadcast to a whole vector): 28 independent
    /// accumulators hide the FMA latency, which 24–27 did not (docs/performance.md).
    const MR: usize = 14;
    /// Vectors of 16 columns per micro-tile.
    const NV: usize = 2;
    /// Columns per micro-tile.
    const NR: usize = 16 * NV;
    const _: () = assert!(NR == super::PANEL);

    pub(super) fn available() -> bool {
        crate::cpu::avx512_available()
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
        let run = |g: usize| {
            super::with_scratch(&super::PANELS, chunk * NR * kc, |buf| run_group(g, buf))
        };
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
        // Four depth steps per loop iteration: less loop overhead between the FMAs; the same
        // FMA chain per element either way.
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
}

#[cfg(test)]
mod tests;
