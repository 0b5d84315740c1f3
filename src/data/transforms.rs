//! torchvision's eval (Resize + CenterCrop) and train (RandomResizedCrop +
//! RandomHorizontalFlip) pipelines on decoded images, yielding normalised CHW floats.

use std::borrow::Cow;

use image::{DynamicImage, RgbImage};

use super::normalise::normalise_hwc;
use super::resample::{self, py_round, resized_dims};
use super::rng::Rng;

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

/// The training augmentation of an ImageFolder (`data.augment`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Augment {
    /// torchvision's `RandomResizedCrop(size)` + `RandomHorizontalFlip()`.
    #[default]
    ImageNet,
    /// The eval pipeline (`Resize` + `CenterCrop`) + `RandomHorizontalFlip()`.
    Flip,
    /// The eval pipeline only.
    None,
}

impl Augment {
    pub const NAMES: [&'static str; 3] = ["imagenet", "flip", "none"];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "imagenet" => Some(Augment::ImageNet),
            "flip" => Some(Augment::Flip),
            "none" => Some(Augment::None),
            _ => None,
        }
    }
}

/// A training sample under `augment`: `resize` is the shorter side of the eval pipeline,
/// `size` the crop. Deterministic given `rng`.
pub fn augment_with(
    img: &DynamicImage,
    augment: Augment,
    resize: u32,
    size: u32,
    rng: &mut Rng,
) -> Vec<f32> {
    match augment {
        Augment::ImageNet => augment_train(img, size, rng),
        Augment::Flip => {
            let flip = rng.uniform() < 0.5;
            let mut out = preprocess_eval(img, resize, size);
            if flip {
                // CHW floats: mirror every row of every channel.
                let s = size as usize;
                if s > 0 {
                    for row in out.chunks_exact_mut(s) {
                        row.reverse();
                    }
                }
            }
            out
        }
        Augment::None => preprocess_eval(img, resize, size),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::normalise::{IMAGENET_MEAN, IMAGENET_STD};

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

    #[test]
    fn augment_modes() {
        let img = DynamicImage::ImageRgb8(image::RgbImage::from_fn(40, 30, |x, y| {
            image::Rgb([(x * 6) as u8, (y * 8) as u8, ((x + y) * 3) as u8])
        }));
        let eval = preprocess_eval(&img, 24, 16);
        assert_eq!(
            augment_with(&img, Augment::None, 24, 16, &mut Rng::new(1)),
            eval
        );
        // Flip draws once per sample: across seeds both the plain and the mirrored crop occur.
        let mirrored: Vec<f32> = eval
            .chunks_exact(16)
            .flat_map(|r| r.iter().rev().copied())
            .collect();
        let (mut plain, mut flipped) = (0, 0);
        for seed in 0..32 {
            let out = augment_with(&img, Augment::Flip, 24, 16, &mut Rng::new(seed));
            if out == eval {
                plain += 1;
            } else {
                assert_eq!(out, mirrored, "seed {seed}");
                flipped += 1;
            }
        }
        assert!(plain > 0 && flipped > 0, "{plain} plain, {flipped} flipped");
        assert_eq!(
            augment_with(&img, Augment::ImageNet, 24, 16, &mut Rng::new(5)),
            augment_train(&img, 16, &mut Rng::new(5))
        );
        assert_eq!(Augment::parse("flip"), Some(Augment::Flip));
        assert_eq!(Augment::parse("random"), None);
    }

    #[test]
    fn resize_to_the_same_size_is_the_identity() {
        // torchvision's Resize(64) leaves a 64-px shorter side as it is (PIL returns a copy),
        // and CenterCrop(64) then cuts the middle of the longer side.
        let img = DynamicImage::ImageRgb8(image::RgbImage::from_fn(80, 64, |x, y| {
            image::Rgb([(x * 3) as u8, (y * 4) as u8, ((x * y) % 251) as u8])
        }));
        let out = preprocess_eval(&img, 64, 64);
        let rgb = img.to_rgb8();
        let mut crop = Vec::new();
        for y in 0..64 {
            for x in 8..72 {
                crop.extend_from_slice(&rgb.get_pixel(x, y).0);
            }
        }
        assert_eq!(out, crate::data::normalise::normalise_hwc(&crop, 64, 64));
    }

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
}
