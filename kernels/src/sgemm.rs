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

/// Whether this CPU runs AVX-512F code.
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx512_available() -> bool {
    avx512::available()
}

/// Whether this CPU runs AVX-512F code (never, off x86-64).
#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn avx512_available() -> bool {
    false
}

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
mod avx512;

#[cfg(test)]
mod tests {
    use super::*;

    fn random(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn transpose_rows_transposes() {
        let data: Vec<f32> = (0..PANEL * 70).map(|i| i as f32).collect();
        for (pixels, live) in [(64, 32), (63, 32), (17, 5), (16, 16), (1, 31), (40, 0)] {
            let sources: Vec<&[f32]> = data.chunks(70).take(live).collect();
            let mut rows = vec![-1f32; pixels * PANEL];
            transpose_rows(&sources, &mut rows);
            for p in 0..pixels {
                for q in 0..PANEL {
                    let want = if q < live { data[q * 70 + p] } else { 0.0 };
                    assert_eq!(rows[p * PANEL + q], want, "{pixels} {live} {p} {q}");
                }
            }
        }
    }

    /// The defined order, written plainly: per depth block one FMA chain from zero, then
    /// added to the destination.
    fn reference(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32], acc: bool) {
        let kc = depth_block(m, n, k);
        for i in 0..m {
            for j in 0..n {
                let mut out = if acc { c[i * n + j] } else { 0.0 };
                let mut k0 = 0;
                while k0 < k {
                    let mut s = 0f32;
                    for p in k0..(k0 + kc).min(k) {
                        s = a[i * k + p].mul_add(b[p * n + j], s);
                    }
                    out = if k0 == 0 && !acc { s } else { out + s };
                    k0 += kc;
                }
                c[i * n + j] = out;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn product(
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
        acc: bool,
        par: bool,
        b_transposed: bool,
    ) {
        let rhs = if b_transposed {
            Mat {
                ptr: b.as_ptr(),
                rs: 1,
                cs: k as isize,
            }
        } else {
            Mat {
                ptr: b.as_ptr(),
                rs: n as isize,
                cs: 1,
            }
        };
        let lhs = Mat {
            ptr: a.as_ptr(),
            rs: k as isize,
            cs: 1,
        };
        // SAFETY: buffers sized m×k, k×n, m×n.
        unsafe { sgemm(m, n, k, c.as_mut_ptr(), n, acc, lhs, &rhs, par) }
    }

    #[test]
    fn matches_the_defined_summation_order_bit_for_bit() {
        let shapes = [
            (64, 512, 576),
            (13, 100, 1200),
            (300, 49, 4608),
            (65, 33, 3),
            (100, 17, 2049),
            (20, 20, 700),
            (512, 196, 2304),
            // Last row panels of 4 and 5 rows (the 4- and 8-row tiles at their edges).
            (18, 40, 300),
            (33, 70, 129),
        ];
        for (s, &(m, n, k)) in shapes.iter().enumerate() {
            let a = random(m * k, 3 * s as u64 + 1);
            let b = random(k * n, 3 * s as u64 + 2);
            let bt: Vec<f32> = (0..n * k).map(|q| b[(q % k) * n + q / k]).collect();
            let c0 = random(m * n, 3 * s as u64 + 3);
            for acc in [false, true] {
                let mut want = c0.clone();
                reference(m, n, k, &a, &b, &mut want, acc);
                for (par, transposed) in [(false, false), (true, false), (false, true)] {
                    let mut got = c0.clone();
                    let rhs = if transposed { &bt } else { &b };
                    product(m, n, k, &a, rhs, &mut got, acc, par, transposed);
                    let bad = got
                        .iter()
                        .zip(&want)
                        .position(|(x, y)| x.to_bits() != y.to_bits());
                    if let Some(q) = bad {
                        eprintln!(
                            "first mismatch at {q}: {} vs {}, count {}",
                            got[q],
                            want[q],
                            got.iter()
                                .zip(&want)
                                .filter(|(x, y)| x.to_bits() != y.to_bits())
                                .count()
                        );
                    }
                    let same = bad.is_none();
                    assert!(
                        same,
                        "{m}x{n}x{k} acc={acc} par={par} transposed={transposed} ({})",
                        backend()
                    );
                }
            }
        }
    }

    /// A product written in blocks of columns (images of a batch) gives the plain product's
    /// values, bit for bit, at the block layout's places, and leaves every other value of the
    /// destination alone: blocks narrower than a vector, straddling tiles, and the last
    /// partial tile, overwriting and accumulating.
    #[test]
    fn blocked_output_places_the_plain_product() {
        for (s, &(m, n, k, block)) in [
            (30, 196, 300, 49),
            (70, 100, 64, 5),
            (13, 64, 40, 1),
            (40, 90, 33, 45),
            (25, 40, 20, 16),
            (3, 20, 5, 4), // too small for the AVX-512 kernel: the `gemm` crate
        ]
        .iter()
        .enumerate()
        {
            let a = random(m * k, 7 * s as u64 + 1);
            let b = random(k * n, 7 * s as u64 + 2);
            let blocks = n.div_ceil(block);
            // Each block [m, block] with a gap of 3 values after it, which must stay as is.
            let block_stride = m * block + 3;
            let out = Out {
                rs: block,
                block,
                block_stride,
            };
            let c0 = random(blocks * block_stride, 7 * s as u64 + 3);
            for acc in [false, true] {
                let mut plain: Vec<f32> =
                    (0..m * n).map(|q| c0[out.offset(q / n, q % n)]).collect();
                product(m, n, k, &a, &b, &mut plain, acc, true, false);
                let lhs = Mat {
                    ptr: a.as_ptr(),
                    rs: k as isize,
                    cs: 1,
                };
                // SAFETY: a is m × k and outlives lhs.
                let lhs = unsafe { Lhs::new(lhs, m, k) };
                let rhs = Mat {
                    ptr: b.as_ptr(),
                    rs: n as isize,
                    cs: 1,
                };
                let mut got = c0.clone();
                // SAFETY: `out` addresses inside got for m rows and n columns.
                unsafe { sgemm_to(&lhs, n, got.as_mut_ptr(), out, acc, &rhs, true) };
                let mut want = c0.clone();
                for (q, &v) in plain.iter().enumerate() {
                    want[out.offset(q / n, q % n)] = v;
                }
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&got),
                    bits(&want),
                    "{m}x{n}x{k} block {block} acc={acc}"
                );
            }
        }
    }
}
