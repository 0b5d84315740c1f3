//! [`Synthetic`]: procedural shapes and textures with object masks, generated from
//! `(seed, index)`, and the rasteriser that draws them.

use super::dataset::{Dataset, Sample};
use super::error::DataError;
use super::normalise::normalise_hwc;
use super::rng::{Rng, STREAM_IMAGE, STREAM_LABELS};

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
    use crate::data::rng::Rng;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::normalise::{IMAGENET_MEAN, IMAGENET_STD};

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
}
