//! PIL's `ImagingResample` with the BILINEAR filter on 8-bit RGB (Pillow `Resample.c`):
//! antialiased (support scales with the downscale factor), fixed-point weights with 22
//! fractional bits, two separable passes rounded to u8 in between, in Pillow 13's order. Only
//! the requested output window is computed, so a centre crop never pays for (or allocates) the
//! full resized image.

use std::ops::Range;

const PRECISION_BITS: u32 = 22;

/// A rectangle of an RGB8 HWC buffer used as the resampling input.
pub(super) struct View<'a> {
    pub data: &'a [u8],
    /// Row length of `data` in pixels.
    pub stride: usize,
    pub x0: usize,
    pub y0: usize,
    pub width: usize,
    pub height: usize,
}

/// An output window `[x, x+w) × [y, y+h)` of the resized image.
#[derive(Clone, Copy)]
pub(super) struct Window {
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
}

struct Coeffs {
    /// (first input index, number of taps) per output index.
    bounds: Vec<(usize, usize)>,
    k: Vec<i64>,
    ksize: usize,
}

fn bilinear(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for outputs `start..start+count`.
fn coeffs(in_size: usize, out_size: usize, start: usize, count: usize) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale; // bilinear support is 1.0
    let ksize = (support.ceil() as usize) * 2 + 1;
    let ss = 1.0 / filterscale;
    let one = f64::from(1u32 << PRECISION_BITS);
    let mut bounds = Vec::with_capacity(count);
    let mut k = vec![0i64; count * ksize];
    let mut w = vec![0f64; ksize];
    for (o, xx) in (start..start + count).enumerate() {
        let center = (xx as f64 + 0.5) * scale;
        // `as i64` truncates toward zero like C's `(int)` cast.
        let xmin = ((center - support + 0.5) as i64).clamp(0, in_size as i64 - 1);
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
        let n = ((xmax - xmin).max(1) as usize).min(ksize);
        let mut ww = 0.0;
        for (x, wx) in w.iter_mut().enumerate().take(n) {
            *wx = bilinear((x as f64 + xmin as f64 - center + 0.5) * ss);
            ww += *wx;
        }
        for (x, &wx) in w.iter().enumerate().take(n) {
            let v = if ww != 0.0 { wx / ww } else { wx };
            k[o * ksize + x] = if v < 0.0 {
                (-0.5 + v * one) as i64
            } else {
                (0.5 + v * one) as i64
            };
        }
        bounds.push((xmin as usize, n));
    }
    Coeffs { bounds, k, ksize }
}

fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// First and one-past-last input index any output of `c` reads.
fn span(c: &Coeffs) -> Range<usize> {
    let lo = c.bounds.iter().map(|b| b.0).min().unwrap_or(0);
    let hi = c.bounds.iter().map(|b| b.0 + b.1).max().unwrap_or(lo);
    lo..hi
}

fn pixel(src: &View, x: usize, y: usize) -> usize {
    ((src.y0 + y) * src.stride + src.x0 + x) * 3
}

/// Horizontal pass over view rows `rows`; input column `j` of `hc` is view column
/// `j - col_offset`. Returns `rows.len() × hc.bounds.len()` RGB8.
fn horizontal(src: &View, rows: Range<usize>, hc: &Coeffs, col_offset: usize) -> Vec<u8> {
    let half = 1i64 << (PRECISION_BITS - 1);
    let out_w = hc.bounds.len();
    let mut out = vec![0u8; rows.len() * out_w * 3];
    for (y, dst_row) in rows.zip(out.chunks_exact_mut(out_w * 3)) {
        for (c, dst) in dst_row.chunks_exact_mut(3).enumerate() {
            let (xmin, n) = hc.bounds[c];
            let k = &hc.k[c * hc.ksize..c * hc.ksize + n];
            let mut s = [half; 3];
            for (i, &kv) in k.iter().enumerate() {
                let p = pixel(src, xmin + i - col_offset, y);
                s[0] += i64::from(src.data[p]) * kv;
                s[1] += i64::from(src.data[p + 1]) * kv;
                s[2] += i64::from(src.data[p + 2]) * kv;
            }
            dst[0] = clip8(s[0]);
            dst[1] = clip8(s[1]);
            dst[2] = clip8(s[2]);
        }
    }
    out
}

/// Vertical pass over view columns `cols`; input row `j` of `vc` is view row
/// `j - row_offset`. Returns `vc.bounds.len() × cols.len()` RGB8.
fn vertical(src: &View, cols: Range<usize>, vc: &Coeffs, row_offset: usize) -> Vec<u8> {
    let half = 1i64 << (PRECISION_BITS - 1);
    let row_len = cols.len() * 3;
    let mut out = vec![0u8; vc.bounds.len() * row_len];
    for (y, dst_row) in out.chunks_exact_mut(row_len).enumerate() {
        let (ymin, n) = vc.bounds[y];
        let k = &vc.k[y * vc.ksize..y * vc.ksize + n];
        for (c, dst) in dst_row.iter_mut().enumerate() {
            let mut s = half;
            for (i, &kv) in k.iter().enumerate() {
                let p = pixel(src, cols.start, ymin + i - row_offset) + c;
                s += i64::from(src.data[p]) * kv;
            }
            *dst = clip8(s);
        }
    }
    out
}

/// Resize `src` to `out_w × out_h` and return only `win` (RGB8 HWC, `win.w × win.h`).
/// Degenerate inputs or a window outside the output give black pixels.
pub(super) fn resize_window(src: &View, out_w: usize, out_h: usize, win: Window) -> Vec<u8> {
    if src.width == 0
        || src.height == 0
        || win.w == 0
        || win.h == 0
        || win.x + win.w > out_w
        || win.y + win.h > out_h
        || (src.y0 + src.height - 1) * src.stride * 3 + (src.x0 + src.width) * 3 > src.data.len()
    {
        return vec![0u8; win.w * win.h * 3];
    }
    let rows = win.y..win.y + win.h;
    let cols = win.x..win.x + win.w;
    let hc = (out_w != src.width).then(|| coeffs(src.width, out_w, win.x, win.w));
    let vc = (out_h != src.height).then(|| coeffs(src.height, out_h, win.y, win.h));
    match (hc, vc) {
        (None, None) => {
            let mut out = Vec::with_capacity(win.w * win.h * 3);
            for y in rows {
                let p = pixel(src, cols.start, y);
                out.extend_from_slice(&src.data[p..p + win.w * 3]);
            }
            out
        }
        (Some(hc), None) => horizontal(src, rows, &hc, 0),
        (None, Some(vc)) => vertical(src, cols, &vc, 0),
        (Some(hc), Some(vc)) => {
            // Pillow 13 (python-pillow/Pillow#9549) runs the vertical pass first when the
            // height shrinks by more than twice what the width does; the passes round to
            // u8 in between, so the order shows in the last bit.
            let shrink_h = src.height as i64 - out_h as i64;
            let shrink_w = src.width as i64 - out_w as i64;
            if shrink_h > 0 && shrink_h > 2 * shrink_w {
                let cols = span(&hc);
                let tmp = vertical(src, cols.clone(), &vc, 0);
                let tv = View {
                    data: &tmp,
                    stride: cols.len(),
                    x0: 0,
                    y0: 0,
                    width: cols.len(),
                    height: win.h,
                };
                horizontal(&tv, 0..win.h, &hc, cols.start)
            } else {
                let rows = span(&vc);
                let tmp = horizontal(src, rows.clone(), &hc, 0);
                let tv = View {
                    data: &tmp,
                    stride: win.w,
                    x0: 0,
                    y0: 0,
                    width: win.w,
                    height: rows.len(),
                };
                vertical(&tv, 0..win.w, &vc, rows.start)
            }
        }
    }
}

/// Resize a whole RGB8 HWC image with PIL's antialiased bilinear filter (what
/// `PIL.Image.resize(..., BILINEAR)` returns).
pub fn resize_rgb8(
    rgb: &[u8],
    width: usize,
    height: usize,
    new_width: usize,
    new_height: usize,
) -> Vec<u8> {
    let view = View {
        data: rgb,
        stride: width,
        x0: 0,
        y0: 0,
        width,
        height,
    };
    resize_window(
        &view,
        new_width,
        new_height,
        Window {
            x: 0,
            y: 0,
            w: new_width,
            h: new_height,
        },
    )
}

/// Python's `int(round(x))` (round half to even), saturating.
pub(super) fn py_round(x: f64) -> i64 {
    x.round_ties_even() as i64
}

/// torchvision `Resize(size)` with an int: shorter side → `size`, longer side truncated.
pub fn resized_dims(width: u32, height: u32, size: u32) -> (u32, u32) {
    if width == 0 || height == 0 {
        return (width, height);
    }
    let size = size.max(1);
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    // `int(size * long / short)` in double precision, like torchvision.
    let new_long = (f64::from(size) * f64::from(long) / f64::from(short)) as u32;
    let new_long = new_long.max(1);
    if width <= height {
        (size, new_long)
    } else {
        (new_long, size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 7x5 RGB test pattern (pixel = (x*37 + y*11 + c*80) mod 256).
    fn pattern(w: usize, h: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    v.push(((x * 37 + y * 11 + c * 80) % 256) as u8);
                }
            }
        }
        v
    }

    #[test]
    fn resize_matches_pillow() {
        // Expected bytes from Pillow 13: Image.frombytes('RGB', (7, 5), pattern).resize(size,
        // Image.BILINEAR).
        let src = pattern(7, 5);
        let down = resize_rgb8(&src, 7, 5, 3, 2);
        let want_down: Vec<u8> = PIL_DOWN_3X2.to_vec();
        assert_eq!(down, want_down);
        // Height shrinks by more than twice the width: Pillow 13 goes vertical first.
        assert_eq!(resize_rgb8(&src, 7, 5, 6, 2), PIL_V_FIRST_6X2.to_vec());
        let up = resize_rgb8(&src, 7, 5, 10, 8);
        assert_eq!(up, PIL_UP_10X8.to_vec());
        // Same size: identity (Pillow returns a copy).
        assert_eq!(resize_rgb8(&src, 7, 5, 7, 5), src);
    }

    const PIL_V_FIRST_6X2: [u8; 36] = [
        18, 98, 178, 60, 140, 198, 101, 181, 110, 143, 216, 47, 184, 85, 88, 226, 50, 130, 40, 120,
        200, 82, 162, 165, 123, 203, 34, 165, 140, 69, 206, 52, 110, 182, 72, 152,
    ];
    const PIL_DOWN_3X2: [u8; 18] = [
        43, 123, 188, 122, 184, 85, 201, 78, 105, 65, 145, 172, 144, 165, 66, 194, 62, 127,
    ];
    const PIL_UP_10X8: [u8; 240] = [
        0, 80, 160, 20, 100, 180, 46, 126, 206, 72, 152, 232, 98, 178, 92, 124, 204, 28, 150, 217,
        54, 176, 64, 80, 202, 26, 106, 222, 46, 126, 5, 85, 165, 25, 105, 185, 51, 131, 211, 77,
        157, 237, 103, 183, 97, 129, 209, 33, 155, 222, 59, 181, 69, 85, 207, 31, 111, 227, 51,
        131, 12, 92, 172, 32, 112, 192, 58, 138, 214, 84, 164, 229, 110, 190, 98, 136, 216, 40,
        162, 229, 66, 188, 76, 92, 214, 38, 118, 234, 58, 138, 19, 99, 179, 39, 119, 199, 65, 145,
        181, 91, 171, 84, 117, 197, 49, 143, 223, 47, 169, 236, 73, 195, 83, 99, 221, 45, 125, 241,
        65, 145, 25, 105, 185, 45, 125, 205, 71, 151, 167, 97, 177, 14, 123, 203, 27, 149, 201, 53,
        175, 167, 79, 201, 69, 105, 227, 51, 131, 247, 71, 151, 32, 112, 192, 52, 132, 212, 78,
        158, 174, 104, 184, 21, 130, 210, 34, 156, 152, 60, 182, 22, 86, 208, 36, 112, 234, 58,
        138, 254, 78, 158, 39, 119, 199, 59, 139, 219, 85, 165, 181, 111, 191, 28, 137, 217, 41,
        163, 153, 67, 189, 13, 93, 215, 39, 119, 176, 65, 145, 117, 85, 165, 44, 124, 204, 64, 144,
        224, 90, 170, 186, 116, 196, 33, 142, 222, 46, 168, 158, 72, 194, 18, 98, 220, 44, 124,
        130, 70, 150, 10, 90, 170,
    ];
}
