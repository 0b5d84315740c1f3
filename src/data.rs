//! Image data for training and evaluation, without tensors: every function here yields plain
//! `Vec<f32>` in CHW (one sample) or NCHW (a [`Batch`]) layout, normalised with the ImageNet
//! mean/std; the caller turns them into tensors.
//!
//! * [`preprocess_eval`] / [`augment_train`]: torchvision's eval (Resize + CenterCrop) and train
//!   (RandomResizedCrop + RandomHorizontalFlip) pipelines. Resampling reproduces PIL's
//!   antialiased bilinear filter (fixed point, Pillow 13's pass order), which is what
//!   torchvision runs on PIL images, so eval inputs match the PyTorch reference bit for bit
//!   (up to JPEG decoder differences).
//! * [`ImageFolder`] (ImageNet layout) and [`Synthetic`] (shapes/textures with object masks,
//!   generated from `(seed, index)`) implement [`Dataset`].
//! * [`Loader`] batches a dataset with parallel decoding and a prefetch thread; its order and
//!   augmentation depend only on `(seed, epoch, index)`, so training can resume mid-epoch.
//! * [`Rng`]: a small xoshiro256** generator whose whole state is a `pub [u64; 4]`, so
//!   checkpoints can store and restore it exactly.

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use image::{DynamicImage, ImageFormat, RgbImage};
use rayon::prelude::*;

pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// How many skipped-sample messages a [`Loader`] keeps (the count is unbounded).
pub const MAX_SKIP_MESSAGES: usize = 16;

/// Directory depth [`ImageFolder`] descends below a class folder (guards symlink loops).
const MAX_WALK_DEPTH: usize = 8;

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: I/O error: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: {message}", path.display())]
    Decode { path: PathBuf, message: String },

    #[error("{}: not found (expected {expected})", path.display())]
    NotFound { path: PathBuf, expected: String },

    #[error("{}: not a directory (expected a directory of images)", path.display())]
    NotADirectory { path: PathBuf },

    #[error("{}: no .png/.jpg/.jpeg images in any class folder (expected root/class_name/*.jpg)", path.display())]
    EmptyDataset { path: PathBuf },

    #[error("{}: no class folders (expected one sub-directory per class, root/class_name/*.jpg)", path.display())]
    NoClasses { path: PathBuf },

    #[error("shape mismatch: {0}")]
    Shape(String),

    #[error("invalid argument: {0}")]
    Invalid(String),

    #[error("sample index {index} out of range for a dataset of {len} samples")]
    Index { index: usize, len: usize },

    #[error("train {} and val {} have different class folders ({differ}); labels are folder positions, so val images would be scored against the wrong classes", train.display(), val.display())]
    ClassMismatch {
        train: PathBuf,
        val: PathBuf,
        differ: String,
    },
}

// ---------------------------------------------------------------------------------------------
// Random numbers
// ---------------------------------------------------------------------------------------------

/// xoshiro256** seeded through SplitMix64. The full state is `state`, so serialising it and
/// building `Rng { state }` later continues the exact same stream. An all-zero state (which
/// xoshiro cannot leave) is never produced by [`Rng::new`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rng {
    pub state: [u64; 4],
}

fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Order-sensitive combination of two words into a well-mixed seed.
pub fn mix_seed(a: u64, b: u64) -> u64 {
    let mut x = a;
    let ha = splitmix64(&mut x);
    let mut y = b ^ ha.rotate_left(17);
    splitmix64(&mut y)
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut state = [0u64; 4];
        for s in &mut state {
            *s = splitmix64(&mut x);
        }
        if state == [0; 4] {
            state[0] = 1;
        }
        Rng { state }
    }

    /// An independent stream for `seed` and a path of stream identifiers (e.g. epoch, index).
    pub fn derive(seed: u64, stream: &[u64]) -> Self {
        Rng::new(stream.iter().fold(seed, |acc, &s| mix_seed(acc, s)))
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 24 bits of precision (every value exactly representable).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// Uniform in [0, 1) with 53 bits of precision.
    pub fn uniform_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.uniform()
    }

    /// Unbiased integer in [0, n) (Lemire's multiply-and-reject); `below(0)` is 0.
    pub fn below(&mut self, n: usize) -> usize {
        if n <= 1 {
            return 0;
        }
        let n = n as u64;
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        if (m as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
            }
        }
        (m >> 64) as usize
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }

    /// Standard normal via Box–Muller; no spare value is cached so `state` stays the whole state.
    pub fn normal(&mut self) -> f32 {
        let u1 = 1.0 - self.uniform_f64(); // (0, 1]: keeps ln finite
        let u2 = self.uniform_f64();
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
}

// ---------------------------------------------------------------------------------------------
// Normalisation
// ---------------------------------------------------------------------------------------------

/// `(v/255 - mean)/std` for every byte value, per channel (same f32 expression as computing it
/// directly, so results are bit-identical).
fn norm_lut() -> &'static [[f32; 256]; 3] {
    static LUT: OnceLock<[[f32; 256]; 3]> = OnceLock::new();
    LUT.get_or_init(|| {
        let mut t = [[0.0f32; 256]; 3];
        for (c, row) in t.iter_mut().enumerate() {
            for (v, out) in row.iter_mut().enumerate() {
                *out = (v as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
            }
        }
        t
    })
}

/// RGB8 HWC bytes (`len == h*w*3`) → normalised CHW floats.
pub fn normalise_hwc(rgb: &[u8], height: usize, width: usize) -> Vec<f32> {
    let lut = norm_lut();
    let plane = height * width;
    let mut out = vec![0.0f32; 3 * plane];
    for (i, px) in rgb.chunks_exact(3).take(plane).enumerate() {
        out[i] = lut[0][px[0] as usize];
        out[plane + i] = lut[1][px[1] as usize];
        out[2 * plane + i] = lut[2][px[2] as usize];
    }
    out
}

/// Inverse of [`normalise_hwc`] for one CHW image (for figures): back to RGB8 HWC.
pub fn denormalise_chw(chw: &[f32], height: usize, width: usize) -> Vec<u8> {
    let plane = height * width;
    let mut out = vec![0u8; plane * 3];
    if chw.len() < 3 * plane {
        return out;
    }
    for i in 0..plane {
        for c in 0..3 {
            let v = (chw[c * plane + i] * IMAGENET_STD[c] + IMAGENET_MEAN[c]) * 255.0;
            out[i * 3 + c] = v.round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// PIL-compatible resampling
// ---------------------------------------------------------------------------------------------

/// PIL's `ImagingResample` with the BILINEAR filter on 8-bit RGB (Pillow `Resample.c`):
/// antialiased (support scales with the downscale factor), fixed-point weights with 22
/// fractional bits, two separable passes rounded to u8 in between, in Pillow 13's order. Only
/// the requested output window is computed, so a centre crop never pays for (or allocates) the
/// full resized image.
mod resample {
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
            || (src.y0 + src.height - 1) * src.stride * 3 + (src.x0 + src.width) * 3
                > src.data.len()
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
    let view = resample::View {
        data: rgb,
        stride: width,
        x0: 0,
        y0: 0,
        width,
        height,
    };
    resample::resize_window(
        &view,
        new_width,
        new_height,
        resample::Window {
            x: 0,
            y: 0,
            w: new_width,
            h: new_height,
        },
    )
}

/// Python's `int(round(x))` (round half to even), saturating.
fn py_round(x: f64) -> i64 {
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

fn as_rgb8(img: &DynamicImage) -> Cow<'_, RgbImage> {
    match img.as_rgb8() {
        Some(b) => Cow::Borrowed(b),
        None => Cow::Owned(img.to_rgb8()),
    }
}

/// Eval preprocessing exactly like torchvision: `Resize(resize)` (shorter side, PIL bilinear
/// with antialias), `CenterCrop(crop)` (zero padding when the image is smaller), `ToTensor`,
/// `Normalize(IMAGENET_MEAN, IMAGENET_STD)`. Returns CHW, `3*crop*crop` floats.
pub fn preprocess_eval(img: &DynamicImage, resize: u32, crop: u32) -> Vec<f32> {
    let crop = crop as usize;
    let rgb = as_rgb8(img);
    let (w, h) = rgb.dimensions();
    let (nw, nh) = resized_dims(w, h, resize);
    let (nw, nh) = (nw as usize, nh as usize);

    // torchvision pads by (crop-n)//2 when the crop is larger, then offsets by
    // round((n-crop)/2); `start` is where output pixel 0 lands in resized coordinates.
    let start = |n: usize| -> i64 {
        if crop > n {
            -(((crop - n) / 2) as i64)
        } else {
            py_round((n - crop) as f64 / 2.0)
        }
    };
    let (sx, sy) = (start(nw), start(nh));
    let x_lo = sx.max(0) as usize;
    let x_hi = ((sx + crop as i64).min(nw as i64)).max(x_lo as i64) as usize;
    let y_lo = sy.max(0) as usize;
    let y_hi = ((sy + crop as i64).min(nh as i64)).max(y_lo as i64) as usize;

    let mut out = vec![0u8; crop * crop * 3];
    if x_hi > x_lo && y_hi > y_lo {
        let view = resample::View {
            data: rgb.as_raw(),
            stride: w as usize,
            x0: 0,
            y0: 0,
            width: w as usize,
            height: h as usize,
        };
        let win = resample::Window {
            x: x_lo,
            y: y_lo,
            w: x_hi - x_lo,
            h: y_hi - y_lo,
        };
        let part = resample::resize_window(&view, nw, nh, win);
        let ox = (x_lo as i64 - sx) as usize;
        let oy = (y_lo as i64 - sy) as usize;
        for (r, row) in part.chunks_exact(win.w * 3).enumerate() {
            let d = ((oy + r) * crop + ox) * 3;
            out[d..d + row.len()].copy_from_slice(row);
        }
    }
    normalise_hwc(&out, crop, crop)
}

/// Read and decode an image file, recognising PNG/JPEG by content (not by extension).
pub fn decode_image_file(path: &Path) -> Result<DynamicImage, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let decode_err = |message: String| DataError::Decode {
        path: path.to_path_buf(),
        message,
    };
    if bytes.is_empty() {
        return Err(decode_err(
            "empty file (expected a PNG or JPEG image)".into(),
        ));
    }
    let reader = image::ImageReader::new(Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let format = match reader.format() {
        Some(ImageFormat::Png) => "PNG",
        Some(ImageFormat::Jpeg) => "JPEG",
        Some(other) => {
            return Err(decode_err(format!(
                "unsupported image format {other:?} (expected PNG or JPEG)"
            )))
        }
        None => {
            return Err(decode_err(format!(
                "not an image: unrecognised content ({} bytes; expected PNG or JPEG)",
                bytes.len()
            )))
        }
    };
    let img = reader
        .decode()
        .map_err(|e| decode_err(format!("corrupt or truncated {format} image: {e}")))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(decode_err(format!(
            "image has zero size ({}x{})",
            img.width(),
            img.height()
        )));
    }
    Ok(img)
}

/// Load + eval-preprocess one image file (CHW, `3*crop*crop`). Errors name the file.
pub fn load_image_file(path: &Path, resize: u32, crop: u32) -> Result<Vec<f32>, DataError> {
    let img = decode_image_file(path)?;
    Ok(preprocess_eval(&img, resize, crop))
}

/// torchvision `RandomResizedCrop.get_params` with scale (0.08, 1) and ratio (3/4, 4/3):
/// returns `(top, left, height, width)`. Ten tries, then the centre-crop fallback.
pub fn random_resized_crop_params(width: u32, height: u32, rng: &mut Rng) -> (u32, u32, u32, u32) {
    const SCALE: (f64, f64) = (0.08, 1.0);
    const RATIO: (f64, f64) = (3.0 / 4.0, 4.0 / 3.0);
    let (wf, hf) = (f64::from(width), f64::from(height));
    let area = wf * hf;
    let (log_lo, log_hi) = (RATIO.0.ln(), RATIO.1.ln());
    for _ in 0..10 {
        let target_area = area * (SCALE.0 + (SCALE.1 - SCALE.0) * rng.uniform_f64());
        let aspect = (log_lo + (log_hi - log_lo) * rng.uniform_f64()).exp();
        let w = py_round((target_area * aspect).sqrt());
        let h = py_round((target_area / aspect).sqrt());
        if 0 < w && w <= i64::from(width) && 0 < h && h <= i64::from(height) {
            let i = rng.below((i64::from(height) - h + 1) as usize) as u32;
            let j = rng.below((i64::from(width) - w + 1) as usize) as u32;
            return (i, j, h as u32, w as u32);
        }
    }
    if width == 0 || height == 0 {
        return (0, 0, height, width);
    }
    let in_ratio = wf / hf;
    let (w, h) = if in_ratio < RATIO.0 {
        (width, (py_round(wf / RATIO.0) as u32).clamp(1, height))
    } else if in_ratio > RATIO.1 {
        ((py_round(hf * RATIO.1) as u32).clamp(1, width), height)
    } else {
        (width, height)
    };
    ((height - h) / 2, (width - w) / 2, h, w)
}

/// Train augmentation like torchvision `RandomResizedCrop(size)` (PIL bilinear, antialiased)
/// followed by `RandomHorizontalFlip(0.5)`, then normalisation. Deterministic given `rng`
/// (draw order as torchvision: crop tries, crop position, then the flip).
pub fn augment_train(img: &DynamicImage, size: u32, rng: &mut Rng) -> Vec<f32> {
    let s = size as usize;
    let rgb = as_rgb8(img);
    let (w, h) = rgb.dimensions();
    let (top, left, ch, cw) = random_resized_crop_params(w, h, rng);
    let flip = rng.uniform() < 0.5;
    let view = resample::View {
        data: rgb.as_raw(),
        stride: w as usize,
        x0: left as usize,
        y0: top as usize,
        width: cw as usize,
        height: ch as usize,
    };
    let win = resample::Window {
        x: 0,
        y: 0,
        w: s,
        h: s,
    };
    let mut out = resample::resize_window(&view, s, s, win);
    if flip {
        flip_rows_rgb(&mut out, s);
    }
    normalise_hwc(&out, s, s)
}

/// Mirror each row of an RGB8 HWC image of the given width.
fn flip_rows_rgb(rgb: &mut [u8], width: usize) {
    if width == 0 {
        return;
    }
    for row in rgb.chunks_exact_mut(width * 3) {
        for x in 0..width / 2 {
            let (a, b) = (x * 3, (width - 1 - x) * 3);
            for c in 0..3 {
                row.swap(a + c, b + c);
            }
        }
    }
}

fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| {
            e.eq_ignore_ascii_case("png")
                || e.eq_ignore_ascii_case("jpg")
                || e.eq_ignore_ascii_case("jpeg")
        })
        .unwrap_or(false)
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let io = |source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        paths.push(entry.map_err(io)?.path());
    }
    paths.sort();
    Ok(paths)
}

/// Image files directly in `dir` (not recursive), sorted, by extension png/jpg/jpeg (any case).
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    if !dir.exists() {
        return Err(DataError::NotFound {
            path: dir.to_path_buf(),
            expected: "a directory of .png/.jpg/.jpeg images".into(),
        });
    }
    if !dir.is_dir() {
        return Err(DataError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    Ok(read_dir_sorted(dir)?
        .into_iter()
        .filter(|p| p.is_file() && has_image_extension(p))
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Datasets
// ---------------------------------------------------------------------------------------------

/// One normalised sample: CHW pixels, its label, and (synthetic data) an object mask `h*w`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub pixels: Vec<f32>,
    pub label: u32,
    pub mask: Option<Vec<u8>>,
}

pub trait Dataset: Send + Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn num_classes(&self) -> usize;
    fn class_names(&self) -> Vec<String>;
    /// `(height, width)` of every sample.
    fn image_size(&self) -> (usize, usize);
    /// One normalised CHW sample; `train` applies augmentation drawn from `rng`.
    fn get(&self, index: usize, train: bool, rng: &mut Rng) -> Result<Sample, DataError>;
}

/// ImageNet layout `root/class_name/**/*.{png,jpg,jpeg}` like torchvision's `ImageFolder`:
/// classes are the sorted sub-directory names, label = position, files walked recursively in
/// torchvision's order.
pub struct ImageFolder {
    root: PathBuf,
    size: u32,
    resize: u32,
    classes: Vec<String>,
    samples: Vec<(PathBuf, u32)>,
}

impl ImageFolder {
    /// `size` is the crop; eval resizes the shorter side to `round(size*256/224)` first.
    pub fn open(root: &Path, size: u32) -> Result<Self, DataError> {
        if size == 0 {
            return Err(DataError::Invalid("image size must be > 0".into()));
        }
        if !root.exists() {
            return Err(DataError::NotFound {
                path: root.to_path_buf(),
                expected:
                    "a dataset directory with one sub-folder per class (root/class_name/*.jpg)"
                        .into(),
            });
        }
        if !root.is_dir() {
            return Err(DataError::NotADirectory {
                path: root.to_path_buf(),
            });
        }
        let class_dirs: Vec<PathBuf> = read_dir_sorted(root)?
            .into_iter()
            .filter(|p| p.is_dir())
            .collect();
        if class_dirs.is_empty() {
            return Err(DataError::NoClasses {
                path: root.to_path_buf(),
            });
        }
        let mut classes = Vec::with_capacity(class_dirs.len());
        let mut samples = Vec::new();
        for (label, dir) in class_dirs.iter().enumerate() {
            classes.push(
                dir.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
            // torchvision: `sorted(os.walk(dir))` sorts directories by path string, then the
            // sorted file names within each.
            let mut dirs = Vec::new();
            collect_dirs(dir, 0, &mut dirs)?;
            dirs.sort_by(|a, b| a.0.cmp(&b.0));
            for (_, files) in dirs {
                samples.extend(files.into_iter().map(|f| (f, label as u32)));
            }
        }
        if samples.is_empty() {
            return Err(DataError::EmptyDataset {
                path: root.to_path_buf(),
            });
        }
        let resize = (f64::from(size) * 256.0 / 224.0).round() as u32;
        Ok(ImageFolder {
            root: root.to_path_buf(),
            size,
            resize,
            classes,
            samples,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Shorter-side size used before the eval centre crop.
    pub fn eval_resize(&self) -> u32 {
        self.resize
    }

    /// `(file, label)` for every sample, in dataset index order.
    pub fn samples(&self) -> &[(PathBuf, u32)] {
        &self.samples
    }

    /// Class folders without a single image (their labels never occur).
    pub fn empty_classes(&self) -> Vec<PathBuf> {
        let mut seen = vec![false; self.classes.len()];
        for (_, label) in &self.samples {
            seen[*label as usize] = true;
        }
        self.classes
            .iter()
            .zip(seen)
            .filter(|(_, s)| !s)
            .map(|(c, _)| self.root.join(c))
            .collect()
    }
}

/// Train and val must have the same class folders: labels are positions in the sorted
/// folder list, so one extra or missing folder shifts every label after it. Empty class
/// folders are warned about on stderr (and returned).
pub fn check_splits(train: &ImageFolder, val: &ImageFolder) -> Result<Vec<String>, DataError> {
    if train.classes != val.classes {
        let only = |a: &ImageFolder, b: &ImageFolder| -> Vec<String> {
            a.classes
                .iter()
                .filter(|c| !b.classes.contains(c))
                .cloned()
                .collect()
        };
        let list = |names: Vec<String>| {
            const SHOWN: usize = 10;
            let more = names.len().saturating_sub(SHOWN);
            let mut s = names.into_iter().take(SHOWN).collect::<Vec<_>>().join(", ");
            if more > 0 {
                s.push_str(&format!(" and {more} more"));
            }
            s
        };
        let (in_train, in_val) = (only(train, val), only(val, train));
        let mut differ = Vec::new();
        if !in_train.is_empty() {
            differ.push(format!("only in train: {}", list(in_train)));
        }
        if !in_val.is_empty() {
            differ.push(format!("only in val: {}", list(in_val)));
        }
        return Err(DataError::ClassMismatch {
            train: train.root.clone(),
            val: val.root.clone(),
            differ: differ.join("; "),
        });
    }
    let warnings: Vec<String> = [train, val]
        .iter()
        .flat_map(|f| f.empty_classes())
        .map(|dir| format!("class folder {} has no images", dir.display()))
        .collect();
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    Ok(warnings)
}

/// Every directory under (and including) `dir` with its sorted image files.
fn collect_dirs(
    dir: &Path,
    depth: usize,
    out: &mut Vec<(String, Vec<PathBuf>)>,
) -> Result<(), DataError> {
    let entries = read_dir_sorted(dir)?;
    let files = entries
        .iter()
        .filter(|p| p.is_file() && has_image_extension(p))
        .cloned()
        .collect();
    out.push((dir.to_string_lossy().into_owned(), files));
    if depth < MAX_WALK_DEPTH {
        for sub in entries.iter().filter(|p| p.is_dir()) {
            collect_dirs(sub, depth + 1, out)?;
        }
    }
    Ok(())
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.samples.len()
    }
    fn num_classes(&self) -> usize {
        self.classes.len()
    }
    fn class_names(&self) -> Vec<String> {
        self.classes.clone()
    }
    fn image_size(&self) -> (usize, usize) {
        (self.size as usize, self.size as usize)
    }
    fn get(&self, index: usize, train: bool, rng: &mut Rng) -> Result<Sample, DataError> {
        let (path, label) = self.samples.get(index).ok_or(DataError::Index {
            index,
            len: self.samples.len(),
        })?;
        let img = decode_image_file(path)?;
        let pixels = if train {
            augment_train(&img, self.size, rng)
        } else {
            preprocess_eval(&img, self.resize, self.size)
        };
        Ok(Sample {
            pixels,
            label: *label,
            mask: None,
        })
    }
}

/// Class names of the synthetic generators, in label order.
pub const SYNTHETIC_CLASSES: [&str; 12] = [
    "disc",
    "square",
    "triangle",
    "ring",
    "cross",
    "horizontal_stripes",
    "vertical_stripes",
    "checker",
    "diagonal_stripes",
    "two_discs",
    "frame",
    "x_cross",
];

/// Procedural shapes and textures (see [`SYNTHETIC_CLASSES`]) on a cluttered, noisy background,
/// each with an object mask, rendered on demand (nothing is stored but the labels). Labels are
/// `i % classes` shuffled once by the seed, so classes are balanced to within one sample;
/// sample `i` is a pure function of `(len, classes, seed, i)`. Use another seed for a
/// validation split.
pub struct Synthetic {
    len: usize,
    size: usize,
    classes: usize,
    seed: u64,
    labels: Vec<u32>,
}

/// Stream identifiers for [`Rng::derive`], so the different uses never share random numbers.
const STREAM_LABELS: u64 = 0x6C61_6265_6C73; // "labels"
const STREAM_IMAGE: u64 = 0x0069_6D61_6765; // "image"
const STREAM_ORDER: u64 = 0x006F_7264_6572; // "order"
const STREAM_SAMPLE: u64 = 0x7361_6D70_6C65; // "sample"

impl Synthetic {
    pub const DEFAULT_SIZE: usize = 64;
    pub const MIN_SIZE: usize = 16;
    pub const MAX_SIZE: usize = 1024;

    pub fn new(len: usize, size: usize, classes: usize, seed: u64) -> Result<Self, DataError> {
        if !(2..=SYNTHETIC_CLASSES.len()).contains(&classes) {
            return Err(DataError::Invalid(format!(
                "synthetic dataset: {classes} classes requested, expected 2..={} ({})",
                SYNTHETIC_CLASSES.len(),
                SYNTHETIC_CLASSES.join(", ")
            )));
        }
        if !(Self::MIN_SIZE..=Self::MAX_SIZE).contains(&size) {
            return Err(DataError::Invalid(format!(
                "synthetic dataset: image size {size} out of range, expected {}..={}",
                Self::MIN_SIZE,
                Self::MAX_SIZE
            )));
        }
        if len == 0 {
            return Err(DataError::Invalid(
                "synthetic dataset: length must be > 0".into(),
            ));
        }
        let mut labels: Vec<u32> = (0..len).map(|i| (i % classes) as u32).collect();
        Rng::derive(seed, &[STREAM_LABELS]).shuffle(&mut labels);
        Ok(Synthetic {
            len,
            size,
            classes,
            seed,
            labels,
        })
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn label(&self, index: usize) -> Option<u32> {
        self.labels.get(index).copied()
    }

    /// `(rgb HWC, mask HW with 1 = object, label)`, un-augmented; `None` if out of range.
    pub fn render(&self, index: usize) -> Option<(Vec<u8>, Vec<u8>, u32)> {
        let label = self.label(index)?;
        let mut rng = Rng::derive(self.seed, &[STREAM_IMAGE, index as u64]);
        let (rgb, mask) = synth::render(label as usize, self.size, &mut rng);
        Some((rgb, mask, label))
    }

    /// Un-normalised RGB8 HWC pixels of sample `index` (for figures); empty if out of range.
    pub fn image_rgb(&self, index: usize) -> Vec<u8> {
        self.render(index).map(|r| r.0).unwrap_or_default()
    }
}

impl Dataset for Synthetic {
    fn len(&self) -> usize {
        self.len
    }
    fn num_classes(&self) -> usize {
        self.classes
    }
    fn class_names(&self) -> Vec<String> {
        SYNTHETIC_CLASSES[..self.classes]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }
    fn image_size(&self) -> (usize, usize) {
        (self.size, self.size)
    }
    fn get(&self, index: usize, train: bool, rng: &mut Rng) -> Result<Sample, DataError> {
        let (mut rgb, mut mask, label) = self.render(index).ok_or(DataError::Index {
            index,
            len: self.len,
        })?;
        if train {
            // Flip + small shift only: shapes are already randomly placed and scaled, and the
            // classes are defined to be invariant to both (diagonal stripes come in both slants).
            let s = self.size;
            let flip = rng.uniform() < 0.5;
            let m = s / 10;
            let dx = rng.below(2 * m + 1) as i64 - m as i64;
            let dy = rng.below(2 * m + 1) as i64 - m as i64;
            let (rgb2, mask2) = synth::flip_shift(&rgb, &mask, s, flip, dx, dy);
            rgb = rgb2;
            mask = mask2;
        }
        Ok(Sample {
            pixels: normalise_hwc(&rgb, self.size, self.size),
            label,
            mask: Some(mask),
        })
    }
}

/// Scene description and rasteriser for [`Synthetic`]. All lengths scale with the image size;
/// shapes are described in a local frame where the object's radius is 1.
mod synth {
    use super::Rng;

    /// Supersampling per axis: antialiased edges and a coverage-based mask.
    const SS: usize = 2;

    #[derive(Clone, Copy)]
    enum Outline {
        Rect { a: f32, b: f32 },
        Disc,
    }

    enum Clutter {
        Dot {
            x: f32,
            y: f32,
            r: f32,
        },
        Rect {
            x0: f32,
            y0: f32,
            x1: f32,
            y1: f32,
        },
        Line {
            x: f32,
            y: f32,
            dx: f32,
            dy: f32,
            len: f32,
            half_width: f32,
        },
    }

    impl Clutter {
        fn contains(&self, px: f32, py: f32) -> bool {
            match *self {
                Clutter::Dot { x, y, r } => (px - x).powi(2) + (py - y).powi(2) <= r * r,
                Clutter::Rect { x0, y0, x1, y1 } => px >= x0 && px <= x1 && py >= y0 && py <= y1,
                Clutter::Line {
                    x,
                    y,
                    dx,
                    dy,
                    len,
                    half_width,
                } => {
                    let (rx, ry) = (px - x, py - y);
                    let along = rx * dx + ry * dy;
                    let across = (-rx * dy + ry * dx).abs();
                    (0.0..=len).contains(&along) && across <= half_width
                }
            }
        }
    }

    struct Scene {
        class: usize,
        size: f32,
        cx: f32,
        cy: f32,
        r: f32,
        cos: f32,
        sin: f32,
        fg: [f32; 3],
        fg2: [f32; 3],
        shade: [f32; 2],
        /// Shape parameter: ring inner radius, stroke half-width, frame thickness.
        p: f32,
        /// Texture period in pixels and phase offsets.
        period: f32,
        phase: [f32; 2],
        diag: f32,
        outline: Outline,
        pair: [f32; 2],
        bg: [f32; 3],
        bg_grad: [f32; 3],
        bg_dir: [f32; 2],
        clutter: Vec<(Clutter, [f32; 3], f32)>,
        noise: f32,
    }

    fn colour(rng: &mut Rng) -> [f32; 3] {
        [rng.uniform(), rng.uniform(), rng.uniform()]
    }

    fn dist(a: [f32; 3], b: [f32; 3]) -> f32 {
        ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
    }

    /// A random colour at least `min` (RGB distance) away from `from`, so the object is
    /// always visible against its background / second texture colour.
    fn contrasting(rng: &mut Rng, from: [f32; 3], min: f32) -> [f32; 3] {
        for _ in 0..32 {
            let c = colour(rng);
            if dist(c, from) >= min {
                return c;
            }
        }
        [1.0 - from[0], 1.0 - from[1], 1.0 - from[2]].map(|v| if v < 0.5 { 0.0 } else { 1.0 })
    }

    fn is_texture(class: usize) -> bool {
        (5..=8).contains(&class)
    }

    impl Scene {
        fn new(class: usize, size: usize, rng: &mut Rng) -> Scene {
            let s = size as f32;
            let bg = [
                rng.range(0.1, 0.9),
                rng.range(0.1, 0.9),
                rng.range(0.1, 0.9),
            ];
            let bg_grad = [
                rng.range(-0.15, 0.15),
                rng.range(-0.15, 0.15),
                rng.range(-0.15, 0.15),
            ];
            let a = rng.range(0.0, std::f32::consts::TAU);
            let bg_dir = [a.cos(), a.sin()];

            let n_clutter = 3 + rng.below(4);
            let mut clutter = Vec::with_capacity(n_clutter);
            for _ in 0..n_clutter {
                let (x, y) = (rng.range(0.0, s), rng.range(0.0, s));
                let shape = match rng.below(3) {
                    0 => Clutter::Dot {
                        x,
                        y,
                        r: s * rng.range(0.025, 0.06),
                    },
                    1 => {
                        let (hw, hh) = (s * rng.range(0.02, 0.06), s * rng.range(0.02, 0.06));
                        Clutter::Rect {
                            x0: x - hw,
                            y0: y - hh,
                            x1: x + hw,
                            y1: y + hh,
                        }
                    }
                    _ => {
                        let a = rng.range(0.0, std::f32::consts::TAU);
                        Clutter::Line {
                            x,
                            y,
                            dx: a.cos(),
                            dy: a.sin(),
                            len: s * rng.range(0.1, 0.25),
                            half_width: (s / 64.0) * rng.range(0.4, 0.7),
                        }
                    }
                };
                let c = colour(rng);
                let alpha = rng.range(0.35, 0.7);
                clutter.push((shape, c, alpha));
            }

            let r = s * rng.range(0.22, 0.34);
            // Every shape fits in radius 1.12 of its local frame; keep it inside the image.
            let extent = 1.12 * r + 1.0;
            let cx = rng.range(extent, s - extent);
            let cy = rng.range(extent, s - extent);
            let angle = match class {
                4 => rng.range(-0.1, 0.1),
                11 => std::f32::consts::FRAC_PI_4 + rng.range(-0.1, 0.1),
                c if is_texture(c) => rng.range(-0.06, 0.06),
                _ => rng.range(-0.25, 0.25),
            };
            let fg = contrasting(rng, bg, 0.5);
            let fg2 = contrasting(rng, fg, 0.5);
            let shade = [rng.range(-0.12, 0.12), rng.range(-0.12, 0.12)];
            let p = match class {
                3 => rng.range(0.58, 0.68),     // ring inner radius
                4 | 11 => rng.range(0.2, 0.28), // cross arm half-width
                10 => rng.range(0.24, 0.32),    // frame thickness
                _ => 0.0,
            };
            let period = s * rng.range(0.09, 0.13);
            let phase = [rng.uniform(), rng.uniform()];
            let diag = if rng.uniform() < 0.5 { 1.0 } else { -1.0 };
            let outline = if rng.uniform() < 0.5 {
                Outline::Disc
            } else {
                Outline::Rect {
                    a: rng.range(0.7, 0.92),
                    b: rng.range(0.7, 0.92),
                }
            };
            let pa = rng.range(0.0, std::f32::consts::TAU);
            let noise = rng.range(0.01, 0.05);
            Scene {
                class,
                size: s,
                cx,
                cy,
                r,
                cos: angle.cos(),
                sin: angle.sin(),
                fg,
                fg2,
                shade,
                p,
                period,
                phase,
                diag,
                outline,
                pair: [pa.cos(), pa.sin()],
                bg,
                bg_grad,
                bg_dir,
                clutter,
                noise,
            }
        }

        fn background(&self, x: f32, y: f32) -> [f32; 3] {
            let t = (x / self.size - 0.5) * self.bg_dir[0] + (y / self.size - 0.5) * self.bg_dir[1];
            let mut c = [
                self.bg[0] + self.bg_grad[0] * t,
                self.bg[1] + self.bg_grad[1] * t,
                self.bg[2] + self.bg_grad[2] * t,
            ];
            for (shape, col, alpha) in &self.clutter {
                if shape.contains(x, y) {
                    for k in 0..3 {
                        c[k] = c[k] * (1.0 - alpha) + col[k] * alpha;
                    }
                }
            }
            c
        }

        /// Colour of the object at (x, y) in pixels, or `None` outside it.
        fn object(&self, x: f32, y: f32) -> Option<[f32; 3]> {
            let (dx, dy) = ((x - self.cx) / self.r, (y - self.cy) / self.r);
            let u = dx * self.cos + dy * self.sin;
            let v = -dx * self.sin + dy * self.cos;
            let cheb = u.abs().max(v.abs());
            let rad2 = u * u + v * v;
            let inside = match self.class {
                0 => rad2 <= 1.0,
                1 => cheb <= 0.82,
                2 => v <= 0.65 && u.abs() <= (v + 0.9) * (0.9 / 1.55),
                3 => rad2 <= 1.0 && rad2 >= self.p * self.p,
                4 | 11 => {
                    (u.abs() <= self.p && v.abs() <= 0.95) || (v.abs() <= self.p && u.abs() <= 0.95)
                }
                9 => {
                    let (ox, oy) = (0.58 * self.pair[0], 0.58 * self.pair[1]);
                    let r2 = 0.45 * 0.45;
                    (u - ox).powi(2) + (v - oy).powi(2) <= r2
                        || (u + ox).powi(2) + (v + oy).powi(2) <= r2
                }
                10 => cheb <= 0.85 && cheb >= 0.85 - self.p,
                _ => match self.outline {
                    Outline::Disc => rad2 <= 1.0,
                    Outline::Rect { a, b } => u.abs() <= a && v.abs() <= b,
                },
            };
            if !inside {
                return None;
            }
            if !is_texture(self.class) {
                let f = 1.0 + self.shade[0] * u + self.shade[1] * v;
                return Some(self.fg.map(|c| c * f));
            }
            // Texture coordinates in pixels along the (nearly axis-aligned) local frame.
            let (pu, pv) = (u * self.r / self.period, v * self.r / self.period);
            let odd = match self.class {
                5 => (pv + self.phase[0]).floor() as i64 & 1,
                6 => (pu + self.phase[0]).floor() as i64 & 1,
                7 => {
                    ((2.0 * pu + self.phase[0]).floor() as i64
                        + (2.0 * pv + self.phase[1]).floor() as i64)
                        & 1
                }
                _ => {
                    ((pu + self.diag * pv) * std::f32::consts::FRAC_1_SQRT_2 + self.phase[0])
                        .floor() as i64
                        & 1
                }
            };
            Some(if odd == 0 { self.fg } else { self.fg2 })
        }
    }

    /// Roughly standard normal noise from one `u64` (Irwin–Hall sum of four 16-bit uniforms):
    /// pixel noise needs the shape, not exact tails, and Box–Muller dominated render time.
    fn approx_normal(rng: &mut Rng) -> f32 {
        let x = rng.next_u64();
        let sum: u64 = (0..4).map(|i| (x >> (16 * i)) & 0xFFFF).sum();
        (sum as f32 / 65536.0 - 2.0) * 3f32.sqrt()
    }

    /// Render class `class` at `size`×`size`: (RGB8 HWC, mask HW with 1 = object).
    pub(super) fn render(class: usize, size: usize, rng: &mut Rng) -> (Vec<u8>, Vec<u8>) {
        let scene = Scene::new(class, size, rng);
        let mut rgb = vec![0u8; size * size * 3];
        let mut mask = vec![0u8; size * size];
        let n = (SS * SS) as f32;
        for py in 0..size {
            for px in 0..size {
                // Only the object is supersampled: the background (gradient + clutter) is
                // sampled once per pixel, which keeps generation cheap next to training.
                let mut acc = [0.0f32; 3];
                let mut cover = 0usize;
                for sy in 0..SS {
                    for sx in 0..SS {
                        let x = px as f32 + (sx as f32 + 0.5) / SS as f32;
                        let y = py as f32 + (sy as f32 + 0.5) / SS as f32;
                        if let Some(c) = scene.object(x, y) {
                            cover += 1;
                            for k in 0..3 {
                                acc[k] += c[k];
                            }
                        }
                    }
                }
                if cover < SS * SS {
                    let bg = scene.background(px as f32 + 0.5, py as f32 + 0.5);
                    let rest = (SS * SS - cover) as f32;
                    for k in 0..3 {
                        acc[k] += bg[k] * rest;
                    }
                }
                let i = py * size + px;
                for k in 0..3 {
                    let v = acc[k] / n + scene.noise * approx_normal(rng);
                    rgb[i * 3 + k] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
                }
                mask[i] = u8::from(cover * 2 >= SS * SS);
            }
        }
        (rgb, mask)
    }

    /// Horizontal flip and shift by (dx, dy) pixels, replicating edge pixels into the gap.
    pub(super) fn flip_shift(
        rgb: &[u8],
        mask: &[u8],
        size: usize,
        flip: bool,
        dx: i64,
        dy: i64,
    ) -> (Vec<u8>, Vec<u8>) {
        let mut out = vec![0u8; rgb.len()];
        let mut out_mask = vec![0u8; mask.len()];
        let last = size as i64 - 1;
        for y in 0..size {
            let sy = (y as i64 - dy).clamp(0, last) as usize;
            for x in 0..size {
                let mut sx = (x as i64 - dx).clamp(0, last) as usize;
                if flip {
                    sx = size - 1 - sx;
                }
                let (d, s) = (y * size + x, sy * size + sx);
                out[d * 3..d * 3 + 3].copy_from_slice(&rgb[s * 3..s * 3 + 3]);
                out_mask[d] = mask[s];
            }
        }
        (out, out_mask)
    }
}

// ---------------------------------------------------------------------------------------------
// Loader
// ---------------------------------------------------------------------------------------------

/// A batch, already normalised with ImageNet mean/std. `pixels.len() == n*3*height*width`, NCHW.
/// `n` can be below the batch size when samples were skipped.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub pixels: Vec<f32>,
    pub n: usize,
    pub height: usize,
    pub width: usize,
    pub labels: Vec<u32>,
    /// `n*height*width`, 1 = object (only when every sample has a mask).
    pub masks: Option<Vec<u8>>,
    /// Dataset index of each sample.
    pub indices: Vec<usize>,
    /// Position of this batch in the epoch (what `start_batch` counts), stable even when a
    /// batch whose samples all failed is left out.
    pub batch_index: usize,
}

#[derive(Default)]
struct SkipLog {
    count: AtomicUsize,
    messages: Mutex<Vec<String>>,
}

/// Print a failed load once per process: the same corrupt file fails again in every epoch
/// and every evaluation, and one line naming it (with the decoder's reason) is enough.
fn warn_once(err: &DataError) {
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let msg = err.to_string();
    let new = SEEN
        .get_or_init(Default::default)
        .lock()
        .map(|mut seen| seen.insert(msg.clone()))
        .unwrap_or(false);
    if new {
        eprintln!("warning: skipping {msg}");
    }
}

impl SkipLog {
    fn record(&self, err: &DataError) {
        warn_once(err);
        self.count.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.messages.lock() {
            if m.len() < MAX_SKIP_MESSAGES {
                m.push(err.to_string());
            }
        }
    }
}

/// Batches over a dataset: order and augmentation are functions of `(seed, epoch, index)`,
/// samples of a batch are decoded in parallel (rayon), and a background thread keeps up to
/// `prefetch` batches ready. Samples that fail to load are skipped and counted.
pub struct Loader {
    dataset: Arc<dyn Dataset>,
    batch_size: usize,
    train: bool,
    seed: u64,
    prefetch: usize,
    skips: Arc<SkipLog>,
}

impl Loader {
    /// `batch_size` 0 is treated as 1; `prefetch` 0 loads synchronously in `next()`.
    pub fn new(
        dataset: Arc<dyn Dataset>,
        batch_size: usize,
        train: bool,
        seed: u64,
        prefetch: usize,
    ) -> Self {
        Loader {
            dataset,
            batch_size: batch_size.max(1),
            train,
            seed,
            prefetch,
            skips: Arc::new(SkipLog::default()),
        }
    }

    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.dataset
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Sample order of `epoch`: shuffled by `(seed, epoch)` when training, else sequential.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        if self.train {
            Rng::derive(self.seed, &[STREAM_ORDER, epoch]).shuffle(&mut order);
        }
        order
    }

    /// Full batches only when training (drop_last), else the last partial batch too.
    pub fn batches_per_epoch(&self) -> usize {
        let len = self.dataset.len();
        if self.train {
            len / self.batch_size
        } else {
            len.div_ceil(self.batch_size)
        }
    }

    /// Iterate epoch `epoch` from batch `start_batch`; `epoch(e, k)` yields exactly what
    /// `epoch(e, 0).skip(k)` would. Dropping the iterator stops the prefetch thread.
    pub fn epoch(&self, epoch: u64, start_batch: usize) -> EpochIter {
        let end = self.batches_per_epoch();
        let start = start_batch.min(end);
        let sync = |producer| EpochIter {
            inner: Inner::Sync {
                producer,
                next: start,
                end,
            },
        };
        if self.prefetch == 0 {
            return sync(self.producer(epoch));
        }
        // Bounded channel: `prefetch - 1` queued plus one waiting in `send` = `prefetch` ready.
        let (tx, rx): (SyncSender<Batch>, Receiver<Batch>) =
            std::sync::mpsc::sync_channel(self.prefetch - 1);
        let producer = self.producer(epoch);
        let spawned = std::thread::Builder::new()
            .name("zerobias-loader".into())
            .spawn(move || {
                for b in start..end {
                    if let Some(batch) = producer.batch(b) {
                        if tx.send(batch).is_err() {
                            return; // the consumer dropped the iterator
                        }
                    }
                }
            });
        match spawned {
            Ok(handle) => EpochIter {
                inner: Inner::Threaded {
                    rx: Some(rx),
                    handle: Some(handle),
                },
            },
            // No thread to be had: load in `next()` instead (same batches, no overlap).
            Err(_) => sync(self.producer(epoch)),
        }
    }

    fn producer(&self, epoch: u64) -> Producer {
        Producer {
            dataset: Arc::clone(&self.dataset),
            order: self.order(epoch),
            batch_size: self.batch_size,
            train: self.train,
            seed: self.seed,
            epoch,
            skips: Arc::clone(&self.skips),
        }
    }

    /// Samples skipped so far (all epochs), each failed load counted once.
    pub fn skipped(&self) -> usize {
        self.skips.count.load(Ordering::Relaxed)
    }

    /// The first [`MAX_SKIP_MESSAGES`] skip reasons (each names the file).
    pub fn skip_messages(&self) -> Vec<String> {
        self.skips
            .messages
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }
}

struct Producer {
    dataset: Arc<dyn Dataset>,
    order: Vec<usize>,
    batch_size: usize,
    train: bool,
    seed: u64,
    epoch: u64,
    skips: Arc<SkipLog>,
}

impl Producer {
    /// Batch `b` of the epoch, or `None` if every one of its samples failed.
    fn batch(&self, b: usize) -> Option<Batch> {
        let lo = b.checked_mul(self.batch_size)?;
        let hi = (lo + self.batch_size).min(self.order.len());
        let ids = self.order.get(lo..hi)?;
        let (height, width) = self.dataset.image_size();
        let plane = height * width;
        let results: Vec<(usize, Result<Sample, DataError>)> = ids
            .par_iter()
            .map(|&idx| {
                let mut rng = Rng::derive(self.seed, &[STREAM_SAMPLE, self.epoch, idx as u64]);
                let r = self.dataset.get(idx, self.train, &mut rng).and_then(|s| {
                    if s.pixels.len() != 3 * plane
                        || s.mask.as_ref().is_some_and(|m| m.len() != plane)
                    {
                        Err(DataError::Shape(format!(
                            "sample {idx}: expected 3x{height}x{width} pixels{}, got {} values",
                            if s.mask.is_some() { " and mask" } else { "" },
                            s.pixels.len()
                        )))
                    } else {
                        Ok(s)
                    }
                });
                (idx, r)
            })
            .collect();

        let mut pixels = Vec::with_capacity(ids.len() * 3 * plane);
        let mut labels = Vec::with_capacity(ids.len());
        let mut indices = Vec::with_capacity(ids.len());
        let mut masks: Option<Vec<u8>> = Some(Vec::with_capacity(ids.len() * plane));
        for (idx, r) in results {
            match r {
                Ok(s) => {
                    pixels.extend_from_slice(&s.pixels);
                    labels.push(s.label);
                    indices.push(idx);
                    masks = match (masks, s.mask) {
                        (Some(mut all), Some(m)) => {
                            all.extend_from_slice(&m);
                            Some(all)
                        }
                        _ => None,
                    };
                }
                Err(e) => self.skips.record(&e),
            }
        }
        if indices.is_empty() {
            return None;
        }
        Some(Batch {
            pixels,
            n: indices.len(),
            height,
            width,
            labels,
            masks,
            indices,
            batch_index: b,
        })
    }
}

enum Inner {
    Sync {
        producer: Producer,
        next: usize,
        end: usize,
    },
    Threaded {
        rx: Option<Receiver<Batch>>,
        handle: Option<JoinHandle<()>>,
    },
}

/// The batches of one epoch (see [`Loader::epoch`]).
pub struct EpochIter {
    inner: Inner,
}

impl Iterator for EpochIter {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        match &mut self.inner {
            Inner::Sync {
                producer,
                next,
                end,
            } => {
                while *next < *end {
                    let b = *next;
                    *next += 1;
                    if let Some(batch) = producer.batch(b) {
                        return Some(batch);
                    }
                }
                None
            }
            Inner::Threaded { rx, handle } => {
                if let Some(batch) = rx.as_ref().and_then(|r| r.recv().ok()) {
                    return Some(batch);
                }
                // Channel closed: the epoch is done, or the producer panicked (a bug in a
                // Dataset implementation), which is re-raised here rather than hidden.
                rx.take();
                if let Some(h) = handle.take() {
                    if let Err(panic) = h.join() {
                        std::panic::resume_unwind(panic);
                    }
                }
                None
            }
        }
    }
}

impl Drop for EpochIter {
    fn drop(&mut self) {
        if let Inner::Threaded { rx, handle } = &mut self.inner {
            // Closing the receiver first makes the producer's next `send` fail, so it exits.
            rx.take();
            if let Some(h) = handle.take() {
                let _ = h.join();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_determinism_and_state_round_trip() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        let xs: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());

        // Restore mid-stream from the serialised state: identical continuation.
        let json = serde_json::to_string(&a).unwrap();
        let mut restored: Rng = serde_json::from_str(&json).unwrap();
        assert_eq!(restored, a);
        let mut copy = Rng { state: a.state };
        for _ in 0..50 {
            let v = a.next_u64();
            assert_eq!(restored.next_u64(), v);
            assert_eq!(copy.next_u64(), v);
        }
        assert_eq!(restored.normal(), a.normal());
    }

    #[test]
    fn rng_distributions() {
        let mut r = Rng::new(7);
        let n = 20000;
        let mut sum = 0.0f64;
        let mut sq = 0.0f64;
        for _ in 0..n {
            let u = r.uniform();
            assert!((0.0..1.0).contains(&u));
            let z = f64::from(r.normal());
            assert!(z.is_finite());
            sum += z;
            sq += z * z;
        }
        let mean = sum / n as f64;
        let var = sq / n as f64 - mean * mean;
        assert!(mean.abs() < 0.05, "normal mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "normal variance {var}");

        let mut counts = [0usize; 7];
        for _ in 0..7000 {
            counts[r.below(7)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(r.below(0), 0);
        assert_eq!(r.below(1), 0);

        let mut v: Vec<usize> = (0..100).collect();
        r.shuffle(&mut v);
        assert_ne!(v, (0..100).collect::<Vec<_>>());
        v.sort();
        assert_eq!(v, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn synthetic_is_deterministic_balanced_masked_and_normalised() {
        let ds = Synthetic::new(120, 64, 12, 3).unwrap();
        let again = Synthetic::new(120, 64, 12, 3).unwrap();
        let mut rng = Rng::new(0);
        for i in [0, 1, 57, 119] {
            let a = ds.get(i, false, &mut rng).unwrap();
            let b = again.get(i, false, &mut rng).unwrap();
            assert_eq!(a, b, "sample {i} differs between two constructions");
            assert_eq!(ds.image_rgb(i), again.image_rgb(i));
        }
        assert_ne!(ds.image_rgb(0), ds.image_rgb(1));
        assert_ne!(
            ds.image_rgb(0),
            Synthetic::new(120, 64, 12, 4).unwrap().image_rgb(0)
        );

        let mut counts = vec![0usize; 12];
        let lo: Vec<f32> = (0..3)
            .map(|c| -IMAGENET_MEAN[c] / IMAGENET_STD[c])
            .collect();
        let hi: Vec<f32> = (0..3)
            .map(|c| (1.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c])
            .collect();
        for i in 0..ds.len() {
            let s = ds.get(i, false, &mut rng).unwrap();
            counts[s.label as usize] += 1;
            assert_eq!(s.pixels.len(), 3 * 64 * 64);
            let mask = s.mask.unwrap();
            let on = mask.iter().filter(|&&m| m == 1).count();
            assert!(on > 64, "sample {i}: mask has only {on} object pixels");
            assert!(on < 64 * 64 / 2, "sample {i}: mask covers {on} pixels");
            for c in 0..3 {
                for &v in &s.pixels[c * 4096..(c + 1) * 4096] {
                    assert!(v >= lo[c] - 1e-5 && v <= hi[c] + 1e-5);
                }
            }
        }
        assert!(counts.iter().all(|&c| c == 10), "{counts:?}");

        // Train augmentation: deterministic given the rng, same label, shape kept.
        let a = ds.get(5, true, &mut Rng::new(9)).unwrap();
        let b = ds.get(5, true, &mut Rng::new(9)).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.label, ds.label(5).unwrap());
        assert_eq!(a.pixels.len(), 3 * 64 * 64);

        assert!(Synthetic::new(10, 64, 1, 0).is_err());
        assert!(Synthetic::new(10, 64, SYNTHETIC_CLASSES.len() + 1, 0).is_err());
        assert!(Synthetic::new(10, 4, 10, 0).is_err());
        assert!(Synthetic::new(0, 64, 10, 0).is_err());
        assert!(ds.get(120, false, &mut rng).is_err());
        assert!(ds.image_rgb(120).is_empty());
    }

    #[test]
    fn eval_preprocessing_shape_and_uniform_pixel() {
        let colour = [200u8, 30, 90];
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(300, 200, image::Rgb(colour)));
        let out = preprocess_eval(&img, 256, 224);
        assert_eq!(out.len(), 3 * 224 * 224);
        for c in 0..3 {
            let want = (colour[c] as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
            for &v in &out[c * 224 * 224..(c + 1) * 224 * 224] {
                assert_eq!(v, want);
            }
        }
        // Smaller than the crop: zero padding like torchvision's CenterCrop.
        let small = DynamicImage::ImageRgb8(RgbImage::from_pixel(10, 10, image::Rgb(colour)));
        let out = preprocess_eval(&small, 10, 16);
        let pad = -IMAGENET_MEAN[0] / IMAGENET_STD[0];
        assert_eq!(out[0], pad);
        assert_eq!(
            out[3 * 16 + 3],
            (colour[0] as f32 / 255.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
        );
        assert_eq!(preprocess_eval(&img, 256, 0).len(), 0);
        assert_eq!(resized_dims(500, 375, 256), (341, 256));
        assert_eq!(resized_dims(375, 500, 256), (256, 341));
    }

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

    #[test]
    fn random_resized_crop_is_valid_and_deterministic() {
        let mut rng = Rng::new(5);
        for _ in 0..500 {
            let (w, h) = (1 + rng.below(400) as u32, 1 + rng.below(400) as u32);
            let (i, j, ch, cw) = random_resized_crop_params(w, h, &mut rng);
            assert!(
                ch >= 1 && cw >= 1 && i + ch <= h && j + cw <= w,
                "{w}x{h}: {i} {j} {ch} {cw}"
            );
        }
        // Extreme aspect ratio always falls back to the centred crop of ratio 4/3.
        let (i, j, ch, cw) = random_resized_crop_params(1000, 10, &mut Rng::new(1));
        assert_eq!((i, ch, cw), (0, 10, 13));
        assert_eq!(j, (1000 - 13) / 2);

        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(50, 40, |x, y| {
            image::Rgb([(x * 5) as u8, (y * 6) as u8, 77])
        }));
        let a = augment_train(&img, 32, &mut Rng::new(11));
        let b = augment_train(&img, 32, &mut Rng::new(11));
        assert_eq!(a.len(), 3 * 32 * 32);
        assert_eq!(a, b);
        assert_ne!(a, augment_train(&img, 32, &mut Rng::new(12)));
    }

    fn write_png(path: &Path, w: u32, h: u32, colour: [u8; 3]) {
        RgbImage::from_pixel(w, h, image::Rgb(colour))
            .save(path)
            .unwrap();
    }

    #[test]
    fn list_images_filters_and_sorts() {
        let dir = tempfile::tempdir().unwrap();
        write_png(&dir.path().join("b.PNG"), 4, 4, [1, 2, 3]);
        write_png(&dir.path().join("a.png"), 4, 4, [1, 2, 3]);
        std::fs::write(dir.path().join("c.JpEg"), b"x").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        std::fs::create_dir(dir.path().join("sub.png")).unwrap();
        let names: Vec<String> = list_images(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.png", "b.PNG", "c.JpEg"]);
        let missing = dir.path().join("nope");
        let err = list_images(&missing).unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn non_image_file_error_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("readme_disguised.png");
        std::fs::write(&path, b"this is not an image").unwrap();
        let err = load_image_file(&path, 256, 224).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("readme_disguised.png"), "{msg}");
        assert!(msg.contains("not an image"), "{msg}");

        let truncated = dir.path().join("truncated.png");
        let mut bytes = Vec::new();
        RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3]))
            .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
            .unwrap();
        std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
        let msg = load_image_file(&truncated, 8, 8).unwrap_err().to_string();
        assert!(msg.contains("truncated.png"), "{msg}");

        let missing = dir.path().join("missing.jpg");
        let msg = load_image_file(&missing, 8, 8).unwrap_err().to_string();
        assert!(msg.contains("missing.jpg"), "{msg}");
    }

    /// root/{cat,dog,emu}/ with 3 PNGs each (one nested), one JPEG, and one corrupt .jpg.
    fn build_folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (k, class) in ["dog", "cat", "emu"].iter().enumerate() {
            let d = dir.path().join(class);
            std::fs::create_dir(&d).unwrap();
            for i in 0..3u8 {
                write_png(
                    &d.join(format!("img{i}.png")),
                    20 + u32::from(i),
                    16,
                    [k as u8 * 80, i * 40, 7],
                );
            }
        }
        std::fs::create_dir(dir.path().join("cat/nested")).unwrap();
        write_png(&dir.path().join("cat/nested/deep.png"), 12, 30, [9, 9, 9]);
        RgbImage::from_pixel(24, 24, image::Rgb([10, 200, 30]))
            .save(dir.path().join("dog/photo.jpg"))
            .unwrap();
        std::fs::write(
            dir.path().join("emu/corrupt.jpg"),
            b"\xFF\xD8\xFF\xE0garbage",
        )
        .unwrap();
        std::fs::write(dir.path().join("emu/notes.txt"), b"ignored").unwrap();
        std::fs::write(dir.path().join("stray.png"), b"root files are not classes").unwrap();
        dir
    }

    #[test]
    fn image_folder_and_loader_skip_corrupt_files() {
        let dir = build_folder();
        let ds = ImageFolder::open(dir.path(), 16).unwrap();
        assert_eq!(ds.class_names(), ["cat", "dog", "emu"]);
        assert_eq!(ds.len(), 3 + 1 + 3 + 1 + 3 + 1);
        assert_eq!(ds.eval_resize(), 18);
        assert_eq!(ds.image_size(), (16, 16));
        // cat: its own files first, then the nested folder (torchvision's os.walk order).
        assert!(ds.samples()[3].0.ends_with("cat/nested/deep.png"));
        assert_eq!(ds.samples()[4].1, 1);

        let ds: Arc<dyn Dataset> = Arc::new(ds);
        let loader = Loader::new(Arc::clone(&ds), 4, false, 0, 2);
        assert_eq!(loader.batches_per_epoch(), 3);
        let batches: Vec<Batch> = loader.epoch(0, 0).collect();
        let total: usize = batches.iter().map(|b| b.n).sum();
        assert_eq!(total, ds.len() - 1);
        assert_eq!(loader.skipped(), 1);
        let msgs = loader.skip_messages();
        assert_eq!(msgs.len(), 1);
        assert!(msgs[0].contains("corrupt.jpg"), "{msgs:?}");
        for b in &batches {
            assert_eq!(b.pixels.len(), b.n * 3 * 16 * 16);
            assert_eq!(b.labels.len(), b.n);
            assert!(b.masks.is_none());
        }
        let labels: Vec<u32> = batches.iter().flat_map(|b| b.labels.clone()).collect();
        assert_eq!(labels, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2]);

        // Training mode: augmented, shuffled, drop_last; corrupt file skipped again.
        let train = Loader::new(Arc::clone(&ds), 4, true, 1, 0);
        assert_eq!(train.batches_per_epoch(), 3);
        let n: usize = train.epoch(0, 0).map(|b| b.n).sum();
        assert_eq!(n, 11);
        assert_eq!(train.skipped(), 1);
    }

    #[test]
    fn image_folder_errors_name_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no_such_root");
        let msg = ImageFolder::open(&missing, 16).err().unwrap().to_string();
        assert!(msg.contains("no_such_root"), "{msg}");

        let msg = ImageFolder::open(dir.path(), 16).err().unwrap().to_string();
        assert!(msg.contains("no class folders"), "{msg}");

        std::fs::create_dir(dir.path().join("empty_class")).unwrap();
        let err = ImageFolder::open(dir.path(), 16).err().unwrap();
        assert!(matches!(err, DataError::EmptyDataset { .. }));
        assert!(err.to_string().contains(&*dir.path().to_string_lossy()));
    }

    #[test]
    fn loader_resume_reproduces_batches() {
        let ds: Arc<dyn Dataset> = Arc::new(Synthetic::new(50, 32, 10, 1).unwrap());
        let loader = Loader::new(Arc::clone(&ds), 8, true, 99, 2);
        assert_eq!(loader.batches_per_epoch(), 6);
        let full: Vec<Batch> = loader.epoch(3, 0).collect();
        assert_eq!(full.len(), 6);
        let resumed: Vec<Batch> = loader.epoch(3, 4).collect();
        assert_eq!(resumed, full[4..].to_vec());
        assert_eq!(resumed[0].batch_index, 4);

        // Synchronous loading yields the same batches as the prefetching thread.
        let sync = Loader::new(Arc::clone(&ds), 8, true, 99, 0);
        assert_eq!(sync.epoch(3, 0).collect::<Vec<_>>(), full);

        // Other epochs reorder; every sample at most once per epoch.
        let other: Vec<usize> = loader.epoch(4, 0).flat_map(|b| b.indices).collect();
        let this: Vec<usize> = full.iter().flat_map(|b| b.indices.clone()).collect();
        assert_ne!(this, other);
        let mut sorted = this.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 48);
        let b = &full[0];
        assert_eq!(b.masks.as_ref().unwrap().len(), 8 * 32 * 32);

        // Dropping a half-consumed iterator stops its thread cleanly.
        let mut it = loader.epoch(5, 0);
        assert!(it.next().is_some());
        drop(it);
        assert_eq!(loader.epoch(3, 100).count(), 0);
        assert_eq!(loader.skipped(), 0);

        // Eval: sequential order and the final partial batch.
        let eval = Loader::new(ds, 8, false, 0, 1);
        assert_eq!(eval.batches_per_epoch(), 7);
        let idx: Vec<usize> = eval.epoch(0, 0).flat_map(|b| b.indices).collect();
        assert_eq!(idx, (0..50).collect::<Vec<_>>());
    }
}
