//! The im2col path: each kernel offset's shifted view of the input as rows of the matrix
//! product (never stored whole), its transpose for the kernel gradient, col2im for the
//! input gradient, and the weight in im2col row order.

use std::borrow::Cow;

use rayon::prelude::*;

use super::geom::{valid_range, zeros_on_all_threads, Geom};
use crate::sgemm::{copy_panel_row, transpose_rows, with_scratch, RhsPanels, PANEL, ROW};

/// The input in the layout the im2col rows read (see [`Geom::source_of`]): as it is for
/// stride 1; for stride s, each channel plane split into the stride phases its kernel
/// reads (phase (py, px) holds pixels (r·s + py, c·s + px), zero past the image), so that
/// every im2col row is a contiguous shifted run of one phase plane instead of a strided
/// gather. `x` holds whole images.
pub(super) fn source<'a>(g: &Geom, x: &'a [f32]) -> Cow<'a, [f32]> {
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
pub(super) fn shifted_run(
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
/// panel into the gemm kernel's buffers (or whole, for the `gemm` crate).
pub(super) struct Im2col<'a> {
    pub(super) g: &'a Geom,
    /// One or more images in the [`source`] layout, one after the other.
    pub(super) x: &'a [f32],
    pub(super) p0: usize,
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
pub(super) struct Im2colT<'a>(pub(super) Im2col<'a>);

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
        // (The `gemm` crate only.) Column q of the block is im2col row j0 + q.
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
pub(super) fn col2im_row(
    g: &Geom,
    plane: &mut [f32],
    ky: usize,
    kx: usize,
    p0: usize,
    row: &[f32],
) {
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

/// dx_b += col2im(col) for output pixels p0..p0+t, col [k_size, t].
pub(super) fn col2im(g: &Geom, col: &[f32], p0: usize, t: usize, dx_b: &mut [f32], inner: bool) {
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
pub(super) fn weight_to_rows<'a>(g: &Geom, w: &'a [f32]) -> Cow<'a, [f32]> {
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
pub(super) fn rows_to_weight(g: &Geom, rows: Vec<f32>) -> Vec<f32> {
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
