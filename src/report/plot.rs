//! Self-contained figure rendering for the paper's plots.
//!
//! Everything is rasterised by hand onto an [`image::RgbImage`] (Bresenham lines,
//! filled rectangles, the embedded `font8x8` bitmap font), so figures render
//! identically on every machine without system fonts or a plotting stack.
//!
//! Conventions:
//! * White background; plots default to [`PLOT_WIDTH`] x [`PLOT_HEIGHT`] pixels
//!   (box plots widen when there are many categories).
//! * Non-finite values are skipped everywhere and never panic. In log-x line
//!   plots, points with `x <= 0` are skipped as well.
//! * Empty input policy: when there is nothing structural to lay out (no rows,
//!   no cells, no series, no categories, zero-length point slices, a 0x0 image)
//!   the functions return [`PlotError::Empty`]. When the structure exists but
//!   every value is non-finite (or every box-plot group is empty), a valid plot
//!   is returned with "no data" written in the plot area, so batch figure
//!   generation keeps going.
//! * Text is ASCII, Latin-1 and Greek (what `font8x8` covers); other
//!   characters render as `?`.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};

/// Default plot canvas width in pixels.
pub const PLOT_WIDTH: u32 = 800;
/// Default plot canvas height in pixels.
pub const PLOT_HEIGHT: u32 = 500;

const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const BLACK: Rgb<u8> = Rgb([0, 0, 0]);
const TEXT: Rgb<u8> = Rgb([20, 20, 20]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);
const AXIS: Rgb<u8> = Rgb([60, 60, 60]);
const ZERO_LINE: Rgb<u8> = Rgb([90, 90, 90]);
const CELL_BORDER: Rgb<u8> = Rgb([150, 150, 150]);

/// Text scale for titles, axis labels and legends (16 px glyphs).
const BIG: u32 = 2;
/// Text scale for dense annotations (8 px glyphs).
const SMALL: u32 = 1;
const PAD: i64 = 10;
const TICK_LEN: i64 = 5;

/// Errors from building or writing a figure.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// Writing or renaming a file failed; `path` is the file that failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// File that failed (the temporary file for write errors).
        path: PathBuf,
        #[source]
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// Inconsistent sizes (map dimensions, mismatched x/y lengths, ...).
    #[error("shape error: {0}")]
    Shape(String),
    /// Nothing to lay out (see the module docs for the policy).
    #[error("empty input: {0}")]
    Empty(String),
}

/// A 2-D map, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Map2 {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// `height * width` values, row-major.
    pub data: Vec<f32>,
}

impl Map2 {
    /// Builds a map, checking that `data` holds exactly `height * width` values.
    pub fn new(height: usize, width: usize, data: Vec<f32>) -> Result<Self, PlotError> {
        let m = Map2 {
            height,
            width,
            data,
        };
        m.check("Map2::new")?;
        Ok(m)
    }

    /// Validates the shape; `what` names the map in the error message.
    fn check(&self, what: &str) -> Result<(), PlotError> {
        if self.height == 0 || self.width == 0 {
            return Err(PlotError::Shape(format!(
                "{what}: map is {}x{} (height x width), both must be > 0",
                self.height, self.width
            )));
        }
        if self.height.checked_mul(self.width) != Some(self.data.len()) {
            return Err(PlotError::Shape(format!(
                "{what}: map is {}x{} (height x width) but has {} values",
                self.height,
                self.width,
                self.data.len()
            )));
        }
        Ok(())
    }

    fn max_abs(&self) -> f32 {
        self.data
            .iter()
            .filter(|v| v.is_finite())
            .fold(0.0f32, |m, v| m.max(v.abs()))
    }

    /// Sum of the finite entries, accumulated in f64 so large maps don't lose digits.
    fn finite_sum(&self) -> f64 {
        self.data
            .iter()
            .filter(|v| v.is_finite())
            .map(|&v| f64::from(v))
            .sum()
    }

    /// Value at the source pixel that the nearest-neighbour upscale to
    /// `out_h` x `out_w` puts at (`y`, `x`).
    fn sample(&self, y: u32, x: u32, out_h: u32, out_w: u32) -> f32 {
        let r = (y as usize * self.height / out_h as usize).min(self.height - 1);
        let c = (x as usize * self.width / out_w as usize).min(self.width - 1);
        self.data[r * self.width + c]
    }
}

// ---------------------------------------------------------------------------
// Colormaps
// ---------------------------------------------------------------------------

fn to_u8(v: f32) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

/// Signed diverging colormap: red positive, blue negative, white 0, symmetric
/// scale `[-vmax, vmax]` (values beyond are clamped). Non-finite values and a
/// non-positive or non-finite `vmax` give white, i.e. "no signal".
pub fn diverging_rgb(value: f32, vmax: f32) -> [u8; 3] {
    if !value.is_finite() || !vmax.is_finite() || vmax <= 0.0 {
        return [255, 255, 255];
    }
    let t = (value / vmax).clamp(-1.0, 1.0);
    let fade = to_u8(255.0 * (1.0 - t.abs()));
    if t >= 0.0 {
        [255, fade, fade]
    } else {
        [fade, fade, 255]
    }
}

/// Sequential colormap (jet) for saliency in `[0, 1]`: dark blue at 0, through
/// cyan, green and yellow, to dark red at 1. Input is clamped; non-finite maps to 0.
pub fn sequential_rgb(t: f32) -> [u8; 3] {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let ch = |centre: f32| to_u8(255.0 * (1.5 - (4.0 * t - centre).abs()).clamp(0.0, 1.0));
    [ch(3.0), ch(2.0), ch(1.0)]
}

fn mix(a: [u8; 3], b: [u8; 3], alpha: f32) -> [u8; 3] {
    let f = |x: u8, y: u8| to_u8(f32::from(x) * (1.0 - alpha) + f32::from(y) * alpha);
    [f(a[0], b[0]), f(a[1], b[1]), f(a[2], b[2])]
}

/// Light tint of a series colour, used for box fills so the median line stays visible.
fn tint(c: [u8; 3]) -> [u8; 3] {
    mix(c, [255, 255, 255], 0.55)
}

// ---------------------------------------------------------------------------
// Text
// ---------------------------------------------------------------------------

fn glyph(c: char) -> [u8; 8] {
    use font8x8::legacy::{BASIC_LEGACY, GREEK_LEGACY, LATIN_LEGACY};
    let cp = c as u32;
    match cp {
        0x20..=0x7e => BASIC_LEGACY[cp as usize],
        0xa0..=0xff => LATIN_LEGACY[(cp - 0xa0) as usize],
        0x390..=0x3c9 => GREEK_LEGACY[(cp - 0x390) as usize],
        _ => BASIC_LEGACY[b'?' as usize],
    }
}

fn text_width(text: &str, scale: u32) -> i64 {
    text.chars().count() as i64 * 8 * i64::from(scale)
}

fn text_height(scale: u32) -> i64 {
    8 * i64::from(scale)
}

/// Draws `text` with its top-left corner at (`x`, `y`).
fn draw_text(img: &mut RgbImage, x: i64, y: i64, text: &str, scale: u32, color: Rgb<u8>) {
    let s = i64::from(scale);
    for (i, ch) in text.chars().enumerate() {
        let g = glyph(ch);
        for (row, bits) in g.iter().enumerate() {
            for col in 0..8 {
                // font8x8 stores the leftmost pixel in the least significant bit.
                if (bits >> col) & 1 == 1 {
                    let px = x + (i as i64 * 8 + col) * s;
                    fill_rect(img, px, y + row as i64 * s, s, s, color);
                }
            }
        }
    }
}

fn draw_text_centered(img: &mut RgbImage, cx: i64, y: i64, text: &str, scale: u32, c: Rgb<u8>) {
    draw_text(img, cx - text_width(text, scale) / 2, y, text, scale, c);
}

fn draw_text_right(img: &mut RgbImage, right: i64, y: i64, text: &str, scale: u32, c: Rgb<u8>) {
    draw_text(img, right - text_width(text, scale), y, text, scale, c);
}

/// Text rotated 90 degrees counter-clockwise (reads bottom to top, like a
/// matplotlib y label), its left edge at `x` and centred vertically on `cy`.
fn draw_text_up(img: &mut RgbImage, x: i64, cy: i64, text: &str, scale: u32, color: Rgb<u8>) {
    let s = i64::from(scale);
    let bottom = cy + text_width(text, scale) / 2;
    for (i, ch) in text.chars().enumerate() {
        let g = glyph(ch);
        for (row, bits) in g.iter().enumerate() {
            for col in 0..8 {
                if (bits >> col) & 1 == 1 {
                    let along = (i as i64 * 8 + col + 1) * s;
                    fill_rect(img, x + row as i64 * s, bottom - along, s, s, color);
                }
            }
        }
    }
}

/// Largest scale in `1..=preferred` at which `text` fits in `max_w` pixels (1 if none).
fn fit_scale(text: &str, max_w: i64, preferred: u32) -> u32 {
    (1..=preferred)
        .rev()
        .find(|&s| text_width(text, s) <= max_w)
        .unwrap_or(1)
}

/// Shortens `text` with a trailing ".." so it fits in `max_w` pixels at `scale`.
fn truncate_to(text: &str, max_w: i64, scale: u32) -> String {
    if text_width(text, scale) <= max_w {
        return text.to_string();
    }
    let fit = (max_w / (8 * i64::from(scale))).max(0) as usize;
    if fit <= 2 {
        return text.chars().take(fit).collect();
    }
    let mut s: String = text.chars().take(fit - 2).collect();
    s.push_str("..");
    s
}

// ---------------------------------------------------------------------------
// Raster primitives
// ---------------------------------------------------------------------------

/// Pixel rectangle `[x0, x1) x [y0, y1)`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rect {
    x0: i64,
    y0: i64,
    x1: i64,
    y1: i64,
}

impl Rect {
    fn of_image(img: &RgbImage) -> Rect {
        Rect {
            x0: 0,
            y0: 0,
            x1: i64::from(img.width()),
            y1: i64::from(img.height()),
        }
    }

    fn contains(&self, x: i64, y: i64) -> bool {
        x >= self.x0 && x < self.x1 && y >= self.y0 && y < self.y1
    }

    fn width(&self) -> i64 {
        self.x1 - self.x0
    }

    fn height(&self) -> i64 {
        self.y1 - self.y0
    }
}

fn put(img: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && x < i64::from(img.width()) && y < i64::from(img.height()) {
        img.put_pixel(x as u32, y as u32, c);
    }
}

fn blend_px(img: &mut RgbImage, x: i64, y: i64, c: [u8; 3], alpha: f32) {
    if x >= 0 && y >= 0 && x < i64::from(img.width()) && y < i64::from(img.height()) {
        let p = img.get_pixel_mut(x as u32, y as u32);
        p.0 = mix(p.0, c, alpha);
    }
}

fn fill_rect(img: &mut RgbImage, x: i64, y: i64, w: i64, h: i64, c: Rgb<u8>) {
    let xa = x.max(0);
    let ya = y.max(0);
    let xb = (x + w).min(i64::from(img.width()));
    let yb = (y + h).min(i64::from(img.height()));
    for yy in ya..yb {
        for xx in xa..xb {
            img.put_pixel(xx as u32, yy as u32, c);
        }
    }
}

fn rect_outline(img: &mut RgbImage, x: i64, y: i64, w: i64, h: i64, c: Rgb<u8>) {
    fill_rect(img, x, y, w, 1, c);
    fill_rect(img, x, y + h - 1, w, 1, c);
    fill_rect(img, x, y, 1, h, c);
    fill_rect(img, x + w - 1, y, 1, h, c);
}

/// Stroke style for [`draw_line`].
#[derive(Debug, Clone, Copy)]
struct Stroke {
    color: Rgb<u8>,
    width: i64,
    /// (on, off) lengths in steps, for dashed lines.
    dash: Option<(u32, u32)>,
}

impl Stroke {
    fn solid(color: Rgb<u8>, width: i64) -> Stroke {
        Stroke {
            color,
            width,
            dash: None,
        }
    }
}

/// Liang-Barsky clipping of a float segment to `r`, so Bresenham never walks
/// millions of off-screen pixels for a steep fitted line.
fn clip_segment(p: (f64, f64), q: (f64, f64), r: Rect) -> Option<((f64, f64), (f64, f64))> {
    let (dx, dy) = (q.0 - p.0, q.1 - p.1);
    let (xmin, xmax) = (r.x0 as f64, (r.x1 - 1) as f64);
    let (ymin, ymax) = (r.y0 as f64, (r.y1 - 1) as f64);
    let mut t0 = 0.0f64;
    let mut t1 = 1.0f64;
    for (pk, qk) in [
        (-dx, p.0 - xmin),
        (dx, xmax - p.0),
        (-dy, p.1 - ymin),
        (dy, ymax - p.1),
    ] {
        if pk == 0.0 {
            if qk < 0.0 {
                return None;
            }
        } else {
            let t = qk / pk;
            if pk < 0.0 {
                t0 = t0.max(t);
            } else {
                t1 = t1.min(t);
            }
        }
    }
    if t0 > t1 || !t0.is_finite() || !t1.is_finite() {
        return None;
    }
    Some((
        (p.0 + t0 * dx, p.1 + t0 * dy),
        (p.0 + t1 * dx, p.1 + t1 * dy),
    ))
}

/// Bresenham line with a square brush of `stroke.width`, clipped to `clip`.
fn draw_line(img: &mut RgbImage, p: (f64, f64), q: (f64, f64), stroke: Stroke, clip: Rect) {
    if ![p.0, p.1, q.0, q.1].iter().all(|v| v.is_finite()) {
        return;
    }
    let Some((p, q)) = clip_segment(p, q, clip) else {
        return;
    };
    let (mut x0, mut y0) = (p.0.round() as i64, p.1.round() as i64);
    let (x1, y1) = (q.0.round() as i64, q.1.round() as i64);
    let dx = (x1 - x0).abs();
    let dy = -(y1 - y0).abs();
    let sx = if x0 < x1 { 1 } else { -1 };
    let sy = if y0 < y1 { 1 } else { -1 };
    let mut err = dx + dy;
    let off = (stroke.width - 1) / 2;
    let mut step = 0u32;
    loop {
        let on = match stroke.dash {
            Some((a, b)) => step % (a + b) < a,
            None => true,
        };
        if on {
            for by in 0..stroke.width {
                for bx in 0..stroke.width {
                    let (x, y) = (x0 - off + bx, y0 - off + by);
                    if clip.contains(x, y) {
                        put(img, x, y, stroke.color);
                    }
                }
            }
        }
        if x0 == x1 && y0 == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x0 += sx;
        }
        if e2 <= dx {
            err += dx;
            y0 += sy;
        }
        step += 1;
    }
}

/// Marker shapes; line series cycle through them so curves stay distinguishable in greyscale.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Marker {
    Circle,
    Square,
    TriangleUp,
    Diamond,
    TriangleDown,
}

const MARKERS: [Marker; 5] = [
    Marker::Circle,
    Marker::Square,
    Marker::TriangleUp,
    Marker::Diamond,
    Marker::TriangleDown,
];

fn marker_covers(m: Marker, dx: i64, dy: i64, r: i64) -> bool {
    match m {
        Marker::Circle => dx * dx + dy * dy <= r * r + r / 2,
        Marker::Square => dx.abs() < r && dy.abs() < r,
        Marker::Diamond => dx.abs() + dy.abs() <= r,
        // Half-width grows linearly from the apex row to the base row.
        Marker::TriangleUp => 2 * dx.abs() <= dy + r,
        Marker::TriangleDown => 2 * dx.abs() <= r - dy,
    }
}

/// Draws a marker centred on (`cx`, `cy`), blended with `alpha` (1 = opaque).
fn draw_marker(
    img: &mut RgbImage,
    centre: (i64, i64),
    r: i64,
    m: Marker,
    c: [u8; 3],
    alpha: f32,
    clip: Rect,
) {
    for dy in -r..=r {
        for dx in -r..=r {
            let (x, y) = (centre.0 + dx, centre.1 + dy);
            if marker_covers(m, dx, dy, r) && clip.contains(x, y) {
                blend_px(img, x, y, c, alpha);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Ticks and number formatting
// ---------------------------------------------------------------------------

/// Nice step (1, 2 or 5 x 10^k) nearest to `raw` on a log-ish scale, so the
/// tick count stays close to the requested one (Heckbert's rounding rule).
pub fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let exp = raw.log10().floor() as i32;
    let base = 10f64.powi(exp);
    let f = raw / base;
    let m = if f < 1.5 {
        1.0
    } else if f < 3.0 {
        2.0
    } else if f < 7.0 {
        5.0
    } else {
        10.0
    };
    m * base
}

/// `k * step` computed so decimal steps stay exact-ish (0.3, not 0.30000000000000004).
fn tick_value(k: i64, step: f64) -> f64 {
    let exp = step.log10().floor() as i32;
    if exp < 0 {
        let scale = 10f64.powi(-exp);
        (k as f64 * (step * scale).round()) / scale
    } else {
        k as f64 * step
    }
}

/// Nice tick positions (multiples of a 1/2/5 x 10^k step) inside `[lo, hi]`,
/// aiming for about `target` intervals. Returns the ticks and the step.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> (Vec<f64>, f64) {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return (Vec::new(), 1.0);
    }
    let step = nice_step((hi - lo) / target.max(1) as f64);
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    let ticks = (first..=last)
        .map(|k| {
            let v = tick_value(k, step);
            // Avoid printing "-0".
            if v == 0.0 {
                0.0
            } else {
                v
            }
        })
        .collect();
    (ticks, step)
}

/// Tick label with just enough digits to tell ticks `step` apart.
pub fn format_tick(v: f64, step: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let step_exp = step.abs().log10().floor() as i32;
    let fixed = (-4..6).contains(&step_exp) && v.abs() < 1e6;
    // Zero gets the same number of decimals as its neighbours ("0.0", not "0").
    let v = if v.abs() < step.abs() * 1e-6 { 0.0 } else { v };
    if v == 0.0 && !fixed {
        return "0".to_string();
    }
    if fixed {
        let decimals = (-step_exp).max(0) as usize;
        format!("{v:.decimals$}")
    } else {
        let v_exp = v.abs().log10().floor() as i32;
        let digits = (v_exp - step_exp).clamp(0, 6) as usize;
        format!("{v:.digits$e}")
    }
}

/// Short scientific format with sign, e.g. `+1.23e-1`, as written above panel cells.
pub fn format_sci(v: f64) -> String {
    format!("{v:+.2e}")
}

/// Three significant digits, for fitted coefficients in legends.
fn format_sig(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let e = v.abs().log10().floor() as i32;
    if (-3..5).contains(&e) {
        let decimals = (2 - e).max(0) as usize;
        format!("{v:.decimals$}")
    } else {
        format!("{v:.2e}")
    }
}

/// Decade-based ticks for a log axis: (labelled majors, unlabelled minors).
fn log_ticks(lo: f64, hi: f64) -> (Vec<f64>, Vec<f64>) {
    if !(lo > 0.0 && hi > lo && hi.is_finite()) {
        return (Vec::new(), Vec::new());
    }
    let k0 = lo.log10().floor() as i32;
    let k1 = hi.log10().ceil() as i32;
    let decades = k1 - k0;
    // Few decades: label 1,2,5 so there are enough ticks; many: thin the decades.
    let mults: &[f64] = if decades <= 2 {
        &[1.0, 2.0, 5.0]
    } else {
        &[1.0]
    };
    let every = ((decades.max(0) as u32).div_ceil(8)).max(1) as i32;
    let pow10 = |k: i32| {
        if k < 0 {
            1.0 / 10f64.powi(-k)
        } else {
            10f64.powi(k)
        }
    };
    let in_range = |v: f64| v >= lo * (1.0 - 1e-9) && v <= hi * (1.0 + 1e-9);
    let mut major = Vec::new();
    let mut minor = Vec::new();
    for k in k0..=k1 {
        for m in 1..10 {
            let v = if k < 0 {
                f64::from(m) / 10f64.powi(-k)
            } else {
                f64::from(m) * pow10(k)
            };
            if !in_range(v) {
                continue;
            }
            let is_major = mults.contains(&f64::from(m)) && (m != 1 || (k - k0) % every == 0);
            if is_major {
                major.push(v);
            } else if decades <= 10 {
                minor.push(v);
            }
        }
    }
    (major, minor)
}

/// Labels for log-axis ticks: plain decimals when all fit in [1e-3, 1e5),
/// otherwise scientific for all, so one axis never mixes "1e-4" with "0.001".
fn format_log_ticks(ticks: &[f64]) -> Vec<String> {
    let plain = ticks.iter().all(|v| (1e-3..1e5).contains(v));
    ticks
        .iter()
        .map(|v| {
            if plain {
                format!("{v}")
            } else {
                format!("{v:e}")
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Axes and frame layout shared by the box, line and scatter plots
// ---------------------------------------------------------------------------

/// Maps data values to pixel coordinates along one axis.
#[derive(Debug, Clone, Copy)]
struct Scale {
    lo: f64,
    hi: f64,
    log: bool,
    /// Pixel coordinate of `lo`.
    p_lo: f64,
    /// Pixel coordinate of `hi`.
    p_hi: f64,
}

impl Scale {
    fn px(&self, v: f64) -> f64 {
        let (a, b, v) = if self.log {
            (self.lo.log10(), self.hi.log10(), v.log10())
        } else {
            (self.lo, self.hi, v)
        };
        self.p_lo + (v - a) / (b - a) * (self.p_hi - self.p_lo)
    }
}

/// Finite min/max of an iterator, None if nothing finite.
fn finite_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((a, b)) => Some((a.min(v), b.max(v))),
        })
}

/// Pads a data range by `frac` each side; widens degenerate ranges so a single
/// value still gets a sensible axis.
fn padded(range: Option<(f64, f64)>, frac: f64) -> (f64, f64) {
    let (lo, hi) = range.unwrap_or((0.0, 1.0));
    if hi > lo {
        let pad = (hi - lo) * frac;
        (lo - pad, hi + pad)
    } else {
        let half = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        (lo - half, hi + half)
    }
}

fn padded_log(range: Option<(f64, f64)>, frac: f64) -> (f64, f64) {
    match range {
        Some((lo, hi)) if lo > 0.0 => {
            let (a, b) = padded(Some((lo.log10(), hi.log10())), frac);
            (10f64.powf(a), 10f64.powf(b))
        }
        _ => (1.0, 10.0),
    }
}

/// How a legend entry's swatch is drawn.
#[derive(Debug, Clone, Copy)]
enum Swatch {
    Box,
    LineMarker(Marker),
    Marker(Marker),
    Line,
}

struct LegendEntry {
    name: String,
    color: [u8; 3],
    swatch: Swatch,
}

const SWATCH_W: i64 = 28;
const LEGEND_ROW_H: i64 = 22;

fn legend_entry_width(e: &LegendEntry) -> i64 {
    SWATCH_W + 10 + text_width(&e.name, BIG) + 24
}

/// Greedy wrapping of legend entries into rows no wider than `max_w`.
fn legend_rows(entries: &[LegendEntry], max_w: i64) -> Vec<Vec<usize>> {
    let mut rows: Vec<Vec<usize>> = Vec::new();
    let mut cur: Vec<usize> = Vec::new();
    let mut w = 0;
    for (i, e) in entries.iter().enumerate() {
        let ew = legend_entry_width(e);
        if !cur.is_empty() && w + ew > max_w {
            rows.push(std::mem::take(&mut cur));
            w = 0;
        }
        cur.push(i);
        w += ew;
    }
    if !cur.is_empty() {
        rows.push(cur);
    }
    rows
}

fn draw_legend(img: &mut RgbImage, entries: &[LegendEntry], rows: &[Vec<usize>], top: i64) {
    let img_w = i64::from(img.width());
    let full = Rect::of_image(img);
    for (r, row) in rows.iter().enumerate() {
        let total: i64 = row
            .iter()
            .map(|&i| legend_entry_width(&entries[i]))
            .sum::<i64>()
            - 24;
        let mut x = (img_w - total) / 2;
        let cy = top + r as i64 * LEGEND_ROW_H + LEGEND_ROW_H / 2;
        for &i in row {
            let e = &entries[i];
            match e.swatch {
                Swatch::Box => {
                    fill_rect(img, x + 4, cy - 7, SWATCH_W - 8, 14, Rgb(tint(e.color)));
                    rect_outline(img, x + 4, cy - 7, SWATCH_W - 8, 14, Rgb(e.color));
                }
                Swatch::Line | Swatch::LineMarker(_) => {
                    let st = Stroke::solid(Rgb(e.color), 2);
                    draw_line(
                        img,
                        (x as f64, cy as f64),
                        ((x + SWATCH_W) as f64, cy as f64),
                        st,
                        full,
                    );
                    if let Swatch::LineMarker(m) = e.swatch {
                        draw_marker(img, (x + SWATCH_W / 2, cy), 5, m, e.color, 1.0, full);
                    }
                }
                Swatch::Marker(m) => {
                    draw_marker(img, (x + SWATCH_W / 2, cy), 4, m, e.color, 1.0, full);
                }
            }
            draw_text(
                img,
                x + SWATCH_W + 10,
                cy - text_height(BIG) / 2,
                &e.name,
                BIG,
                TEXT,
            );
            x += legend_entry_width(e);
        }
    }
}

/// Everything the frame needs apart from the data.
struct Frame<'a> {
    width: u32,
    height: u32,
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    legend: Vec<LegendEntry>,
    y_lo: f64,
    y_hi: f64,
}

/// A laid-out, partially drawn plot: canvas plus the plot area and y scale.
struct Canvas {
    img: RgbImage,
    plot: Rect,
    y: Scale,
}

/// Lays out title, legend, y axis (ticks, grid, label) and x label, returning
/// the canvas with the plot area left for the caller's x axis and data.
fn frame(f: &Frame) -> Canvas {
    let mut img = RgbImage::from_pixel(f.width, f.height, WHITE);
    let w = i64::from(f.width);
    let h = i64::from(f.height);

    let mut top = PAD;
    if !f.title.is_empty() {
        let title = truncate_to(f.title, w - 2 * PAD, BIG);
        draw_text_centered(&mut img, w / 2, top, &title, BIG, BLACK);
        top += text_height(BIG) + 8;
    }
    let rows = legend_rows(&f.legend, w - 2 * PAD);
    if !rows.is_empty() {
        draw_legend(&mut img, &f.legend, &rows, top);
        top += rows.len() as i64 * LEGEND_ROW_H + 4;
    }
    top += 6;

    let bottom_margin = TICK_LEN + 4 + text_height(BIG) + 8 + text_height(BIG) + PAD;
    let plot_h = (h - top - bottom_margin).max(20);
    let target = (plot_h / 60).clamp(3, 10) as usize;
    let (ticks, step) = nice_ticks(f.y_lo, f.y_hi, target);
    let labels: Vec<String> = ticks.iter().map(|&v| format_tick(v, step)).collect();
    let label_w = labels.iter().map(|l| text_width(l, BIG)).max().unwrap_or(0);
    let y_label_w = if f.y_label.is_empty() {
        0
    } else {
        text_height(BIG) + 8
    };
    let left = PAD + y_label_w + label_w + 6 + TICK_LEN;
    // Room for half of the last x tick label.
    let right = 40;
    let plot = Rect {
        x0: left,
        y0: top,
        x1: (w - right).max(left + 20),
        y1: top + plot_h,
    };
    let y = Scale {
        lo: f.y_lo,
        hi: f.y_hi,
        log: false,
        p_lo: (plot.y1 - 1) as f64,
        p_hi: plot.y0 as f64,
    };

    for (v, label) in ticks.iter().zip(&labels) {
        let py = y.px(*v).round() as i64;
        fill_rect(&mut img, plot.x0, py, plot.width(), 1, GRID);
        fill_rect(&mut img, plot.x0 - TICK_LEN, py, TICK_LEN, 1, AXIS);
        let ty = py - text_height(BIG) / 2;
        draw_text_right(&mut img, plot.x0 - TICK_LEN - 4, ty, label, BIG, TEXT);
    }
    if !f.y_label.is_empty() {
        let label = truncate_to(f.y_label, plot.height(), BIG);
        draw_text_up(&mut img, PAD, (plot.y0 + plot.y1) / 2, &label, BIG, TEXT);
    }
    if !f.x_label.is_empty() {
        let label = truncate_to(f.x_label, w - 2 * PAD, BIG);
        let ly = h - PAD - text_height(BIG);
        draw_text_centered(&mut img, (plot.x0 + plot.x1) / 2, ly, &label, BIG, TEXT);
    }
    Canvas { img, plot, y }
}

/// Axes box drawn last so data never paints over it.
fn finish_axes(c: &mut Canvas) {
    let p = c.plot;
    rect_outline(
        &mut c.img,
        p.x0 - 1,
        p.y0 - 1,
        p.width() + 2,
        p.height() + 2,
        AXIS,
    );
}

fn draw_no_data(c: &mut Canvas) {
    let p = c.plot;
    let y = (p.y0 + p.y1) / 2 - text_height(BIG) / 2;
    draw_text_centered(
        &mut c.img,
        (p.x0 + p.x1) / 2,
        y,
        "no data",
        BIG,
        Rgb([120, 120, 120]),
    );
}

/// Numeric x axis: ticks, grid lines and labels. Thins labels that would overlap.
fn draw_numeric_x_axis(c: &mut Canvas, x: &Scale) {
    let p = c.plot;
    let label_y = p.y1 + TICK_LEN + 4;
    let (ticks, labels, minor): (Vec<f64>, Vec<String>, Vec<f64>) = if x.log {
        let (major, minor) = log_ticks(x.lo, x.hi);
        let labels = format_log_ticks(&major);
        (major, labels, minor)
    } else {
        let target = (p.width() / 110).clamp(3, 10) as usize;
        let (t, step) = nice_ticks(x.lo, x.hi, target);
        let labels = t.iter().map(|&v| format_tick(v, step)).collect();
        (t, labels, Vec::new())
    };
    for v in &minor {
        let px = x.px(*v).round() as i64;
        fill_rect(&mut c.img, px, p.y1, 1, TICK_LEN - 2, AXIS);
    }
    let mut last_right = i64::MIN;
    for (v, label) in ticks.iter().zip(&labels) {
        let px = x.px(*v).round() as i64;
        fill_rect(&mut c.img, px, p.y0, 1, p.height(), GRID);
        fill_rect(&mut c.img, px, p.y1, 1, TICK_LEN, AXIS);
        let lw = text_width(label, BIG);
        let img_w = i64::from(c.img.width());
        if px - lw / 2 > last_right + 8 && px + lw / 2 < img_w {
            draw_text_centered(&mut c.img, px, label_y, label, BIG, TEXT);
            last_right = px + lw / 2;
        }
    }
}

// ---------------------------------------------------------------------------
// Signed panel grid (Fig. 2/4 style)
// ---------------------------------------------------------------------------

/// One row of [`signed_panel`]: a label and `(title, map)` cells, one per layer.
#[derive(Debug, Clone)]
pub struct PanelRow {
    /// Row label drawn at the left (e.g. `a^h`).
    pub label: String,
    /// `(title, map)` per column (e.g. `("l=3", map)`).
    pub cells: Vec<(String, Map2)>,
}

/// Panel grid: one row per entry of `rows`, one column per cell. Each cell is
/// its signed map drawn with its own symmetric scale (`vmax = max|v|` of that
/// cell), upscaled nearest-neighbour to `cell_px` square, with the cell title
/// and the gross sum (sum of finite entries, e.g. `+1.23e-1`) above it. Row
/// labels on the left, a colour key at the bottom.
pub fn signed_panel(rows: &[PanelRow], cell_px: u32, title: &str) -> Result<RgbImage, PlotError> {
    if rows.is_empty() {
        return Err(PlotError::Empty("signed_panel: no rows".into()));
    }
    let n_cols = rows.iter().map(|r| r.cells.len()).max().unwrap_or(0);
    if n_cols == 0 {
        return Err(PlotError::Empty(
            "signed_panel: every row has zero cells".into(),
        ));
    }
    if cell_px == 0 {
        return Err(PlotError::Shape("signed_panel: cell_px must be > 0".into()));
    }
    for row in rows {
        for (name, map) in &row.cells {
            map.check(&format!(
                "signed_panel: row '{}', cell '{}'",
                row.label, name
            ))?;
        }
    }

    let cell = i64::from(cell_px);
    let gap = 14;
    // Header scales shared by all cells so the grid reads uniformly.
    let pitch = cell + gap;
    let title_scale = rows
        .iter()
        .flat_map(|r| r.cells.iter())
        .map(|(t, _)| fit_scale(t, pitch - 4, BIG))
        .min()
        .unwrap_or(SMALL);
    let sum_scale = fit_scale("+1.23e-10", pitch - 4, BIG);
    let header_h = text_height(title_scale) + 4 + text_height(sum_scale) + 6;
    let label_w = rows
        .iter()
        .map(|r| text_width(&r.label, BIG))
        .max()
        .unwrap_or(0)
        + 2 * PAD;
    let title_h = if title.is_empty() {
        0
    } else {
        text_height(BIG) + 12
    };
    let key_w = 180;
    let key_h = 14 + 6 + text_height(SMALL) + PAD;

    let grid_w = label_w + n_cols as i64 * pitch - gap + PAD;
    let width = grid_w
        .max(text_width(title, BIG) + 2 * PAD)
        .max(key_w + 2 * PAD + 160);
    let row_h = header_h + cell + gap;
    let height = PAD + title_h + rows.len() as i64 * row_h + key_h;
    let mut img = RgbImage::from_pixel(width as u32, height as u32, WHITE);

    if !title.is_empty() {
        draw_text_centered(&mut img, width / 2, PAD, title, BIG, BLACK);
    }
    let grid_x0 = label_w + (width - grid_w) / 2;
    for (r, row) in rows.iter().enumerate() {
        let row_y = PAD + title_h + r as i64 * row_h;
        let cell_y = row_y + header_h;
        let ly = cell_y + cell / 2 - text_height(BIG) / 2;
        draw_text_right(&mut img, grid_x0 - PAD, ly, &row.label, BIG, BLACK);
        for (c, (name, map)) in row.cells.iter().enumerate() {
            let cx = grid_x0 + c as i64 * pitch;
            let mid = cx + cell / 2;
            let name = truncate_to(name, pitch - 4, title_scale);
            draw_text_centered(&mut img, mid, row_y, &name, title_scale, BLACK);
            let sum = format_sci(map.finite_sum());
            let sy = row_y + text_height(title_scale) + 4;
            draw_text_centered(&mut img, mid, sy, &sum, sum_scale, TEXT);
            let vmax = map.max_abs();
            for y in 0..cell_px {
                for x in 0..cell_px {
                    let v = map.sample(y, x, cell_px, cell_px);
                    put(
                        &mut img,
                        cx + i64::from(x),
                        cell_y + i64::from(y),
                        Rgb(diverging_rgb(v, vmax)),
                    );
                }
            }
            // Thin frame so an all-zero (white) cell is still visibly a cell.
            rect_outline(
                &mut img,
                cx - 1,
                cell_y - 1,
                cell + 2,
                cell + 2,
                CELL_BORDER,
            );
        }
    }

    // Colour key: the scale is per cell, so the key names the endpoints symbolically.
    let ky = height - key_h;
    let kx = (width - key_w) / 2;
    for i in 0..key_w {
        let v = (i as f32 / (key_w - 1) as f32) * 2.0 - 1.0;
        fill_rect(&mut img, kx + i, ky, 1, 14, Rgb(diverging_rgb(v, 1.0)));
    }
    rect_outline(&mut img, kx - 1, ky - 1, key_w + 2, 16, CELL_BORDER);
    let ty = ky + 14 + 6;
    draw_text_centered(&mut img, kx, ty, "-max|v|", SMALL, TEXT);
    draw_text_centered(&mut img, kx + key_w / 2, ty, "0", SMALL, TEXT);
    draw_text_centered(&mut img, kx + key_w, ty, "+max|v|", SMALL, TEXT);
    draw_text(&mut img, kx + key_w + 36, ky + 3, "(per cell)", SMALL, TEXT);
    Ok(img)
}

// ---------------------------------------------------------------------------
// Saliency overlays
// ---------------------------------------------------------------------------

/// Saliency overlays in one row: the plain image first, then for each
/// `(name, map)` the image blended (alpha 0.5) with the min-max normalised map
/// in [`sequential_rgb`], name above. `image_rgb` is HWC u8 of
/// `width * height * 3` bytes; every map must be `height x width`. Small images
/// are upscaled by an integer factor (nearest-neighbour) so cells are at least
/// ~160 px and names stay legible. Non-finite map pixels show the plain image.
pub fn saliency_overlays(
    image_rgb: &[u8],
    width: u32,
    height: u32,
    maps: &[(String, Map2)],
) -> Result<RgbImage, PlotError> {
    if width == 0 || height == 0 {
        return Err(PlotError::Empty(format!(
            "saliency_overlays: image is {height}x{width} (height x width)"
        )));
    }
    let expected = width as usize * height as usize * 3;
    if image_rgb.len() != expected {
        return Err(PlotError::Shape(format!(
            "saliency_overlays: image buffer has {} bytes, {height}x{width}x3 needs {expected}",
            image_rgb.len()
        )));
    }
    for (name, map) in maps {
        if map.height != height as usize || map.width != width as usize {
            return Err(PlotError::Shape(format!(
                "saliency_overlays: map '{name}' is {}x{} but the image is {height}x{width} (height x width)",
                map.height, map.width
            )));
        }
        map.check(&format!("saliency_overlays: map '{name}'"))?;
    }

    let up = 160u32.div_ceil(width.max(height)).clamp(1, 8);
    let cw = i64::from(width * up);
    let ch = i64::from(height * up);
    let gap = 12;
    let n = maps.len() as i64 + 1;
    let names: Vec<&str> = std::iter::once("image")
        .chain(maps.iter().map(|(s, _)| s.as_str()))
        .collect();
    let name_scale = names
        .iter()
        .map(|s| fit_scale(s, cw + gap - 4, BIG))
        .min()
        .unwrap_or(SMALL);
    let name_h = text_height(name_scale) + 6;
    let bar_h = 10;
    let foot_h = PAD + bar_h + 4 + text_height(SMALL);
    let key_w = 160;
    let total_w = (PAD * 2 + n * cw + (n - 1) * gap).max(key_w + 2 * PAD + 90);
    let total_h = PAD + name_h + ch + foot_h + PAD;
    let mut img = RgbImage::from_pixel(total_w as u32, total_h as u32, WHITE);

    let src = |x: u32, y: u32| -> [u8; 3] {
        let i = (y as usize * width as usize + x as usize) * 3;
        [image_rgb[i], image_rgb[i + 1], image_rgb[i + 2]]
    };
    let row_x0 = (total_w - (n * cw + (n - 1) * gap)) / 2;
    let cell_y = PAD + name_h;
    for (k, name) in names.iter().enumerate() {
        let x0 = row_x0 + k as i64 * (cw + gap);
        let label = truncate_to(name, cw + gap - 4, name_scale);
        draw_text_centered(&mut img, x0 + cw / 2, PAD, &label, name_scale, BLACK);
        // Per-map min-max normalisation over finite values; a constant map is all 0.
        let map = if k == 0 { None } else { Some(&maps[k - 1].1) };
        let range = map.and_then(|m| finite_range(m.data.iter().map(|&v| f64::from(v))));
        for y in 0..height * up {
            for x in 0..width * up {
                let (sx, sy) = (x / up, y / up);
                let base = src(sx, sy);
                let px = match (map, range) {
                    (Some(m), Some((lo, hi))) => {
                        let v = m.data[sy as usize * width as usize + sx as usize];
                        if v.is_finite() {
                            let t = if hi > lo {
                                ((f64::from(v) - lo) / (hi - lo)) as f32
                            } else {
                                0.0
                            };
                            mix(base, sequential_rgb(t), 0.5)
                        } else {
                            base
                        }
                    }
                    _ => base,
                };
                put(&mut img, x0 + i64::from(x), cell_y + i64::from(y), Rgb(px));
            }
        }
    }

    // Colour key for the overlay ramp (normalised per map, hence "low"/"high").
    let ky = cell_y + ch + PAD;
    let kx = (total_w - key_w) / 2;
    for i in 0..key_w {
        let t = i as f32 / (key_w - 1) as f32;
        fill_rect(&mut img, kx + i, ky, 1, bar_h, Rgb(sequential_rgb(t)));
    }
    draw_text_right(&mut img, kx - 6, ky + 1, "low", SMALL, TEXT);
    draw_text(&mut img, kx + key_w + 6, ky + 1, "high", SMALL, TEXT);
    draw_text_centered(
        &mut img,
        kx + key_w / 2,
        ky + bar_h + 4,
        "(min-max per map)",
        SMALL,
        TEXT,
    );
    Ok(img)
}

// ---------------------------------------------------------------------------
// Box plots
// ---------------------------------------------------------------------------

/// One series of a grouped box plot: one `Vec` of samples per category.
#[derive(Debug, Clone)]
pub struct BoxSeries {
    /// Legend name.
    pub name: String,
    /// Box edge colour; the fill is a light tint of it.
    pub color: [u8; 3],
    /// Samples per category, in category order; may be empty.
    pub groups: Vec<Vec<f64>>,
}

/// Tukey box statistics of one group.
#[derive(Debug, Clone, PartialEq)]
pub struct BoxStats {
    /// First quartile (25th percentile).
    pub q1: f64,
    /// Median.
    pub median: f64,
    /// Third quartile (75th percentile).
    pub q3: f64,
    /// Lowest sample >= q1 - 1.5 IQR.
    pub whisker_lo: f64,
    /// Highest sample <= q3 + 1.5 IQR.
    pub whisker_hi: f64,
    /// Samples beyond the 1.5 IQR fences, sorted.
    pub outliers: Vec<f64>,
    /// Number of finite samples used.
    pub n: usize,
}

/// Quantile of sorted data with linear interpolation (numpy's default,
/// "type 7"): position `p * (n - 1)`.
pub fn quantile_sorted(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let pos = p.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    let frac = pos - lo as f64;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * frac)
}

/// Tukey statistics over the finite values; None when there are none.
pub fn box_stats(values: &[f64]) -> Option<BoxStats> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let q1 = quantile_sorted(&v, 0.25)?;
    let median = quantile_sorted(&v, 0.5)?;
    let q3 = quantile_sorted(&v, 0.75)?;
    let iqr = q3 - q1;
    let (lo_fence, hi_fence) = (q1 - 1.5 * iqr, q3 + 1.5 * iqr);
    let inside = || {
        v.iter()
            .copied()
            .filter(|&x| x >= lo_fence && x <= hi_fence)
    };
    // Quartiles always lie inside the fences, so `inside` is never empty; fall back anyway.
    let whisker_lo = inside().fold(f64::INFINITY, f64::min).min(q1);
    let whisker_hi = inside().fold(f64::NEG_INFINITY, f64::max).max(q3);
    let outliers = v
        .iter()
        .copied()
        .filter(|&x| x < lo_fence || x > hi_fence)
        .collect();
    Some(BoxStats {
        q1,
        median,
        q3,
        whisker_lo,
        whisker_hi,
        outliers,
        n: v.len(),
    })
}

/// The drawn canvas plus the pixel x centre of each (category, series) box,
/// so tests can probe the geometry.
type BoxLayout = (Canvas, Vec<Vec<f64>>);

/// Grouped Tukey box plots: one slot per category, one box per series inside
/// it (median, quartiles, whiskers at 1.5 IQR, outliers as dots), legend of the
/// series, y ticks, dashed y = 0 line when 0 is in range. The canvas widens
/// beyond [`PLOT_WIDTH`] when many categories need room. Every series must have
/// one group per category; groups may be empty (no box drawn).
pub fn box_plot(
    categories: &[String],
    series: &[BoxSeries],
    title: &str,
    x_label: &str,
    y_label: &str,
) -> Result<RgbImage, PlotError> {
    box_plot_layout(categories, series, title, x_label, y_label).map(|(c, _)| c.img)
}

fn box_plot_layout(
    categories: &[String],
    series: &[BoxSeries],
    title: &str,
    x_label: &str,
    y_label: &str,
) -> Result<BoxLayout, PlotError> {
    if categories.is_empty() {
        return Err(PlotError::Empty("box_plot: no categories".into()));
    }
    if series.is_empty() {
        return Err(PlotError::Empty("box_plot: no series".into()));
    }
    for s in series {
        if s.groups.len() != categories.len() {
            return Err(PlotError::Shape(format!(
                "box_plot: series '{}' has {} groups but there are {} categories",
                s.name,
                s.groups.len(),
                categories.len()
            )));
        }
    }
    let stats: Vec<Vec<Option<BoxStats>>> = series
        .iter()
        .map(|s| s.groups.iter().map(|g| box_stats(g)).collect())
        .collect();
    let range = finite_range(stats.iter().flatten().flatten().flat_map(|b| {
        b.outliers
            .iter()
            .copied()
            .chain([b.whisker_lo, b.whisker_hi])
    }));
    let (y_lo, y_hi) = padded(range, 0.06);

    let n_cat = categories.len() as i64;
    let n_ser = series.len() as i64;
    let min_slot = (n_ser * 20 + 12).max(28);
    let width = (PLOT_WIDTH as i64).max(160 + n_cat * min_slot) as u32;
    let legend = series
        .iter()
        .map(|s| LegendEntry {
            name: s.name.clone(),
            color: s.color,
            swatch: Swatch::Box,
        })
        .collect();
    let mut c = frame(&Frame {
        width,
        height: PLOT_HEIGHT,
        title,
        x_label,
        y_label,
        legend,
        y_lo,
        y_hi,
    });
    let p = c.plot;
    let slot = p.width() as f64 / n_cat as f64;

    // Category separators and labels; shrink or thin labels so they never collide.
    let label_scale = categories
        .iter()
        .map(|s| fit_scale(s, slot as i64 - 4, BIG))
        .min()
        .unwrap_or(SMALL);
    let widest = categories
        .iter()
        .map(|s| text_width(s, label_scale))
        .max()
        .unwrap_or(0);
    let every = ((widest + 6) as f64 / slot).ceil().max(1.0) as usize;
    for (i, cat) in categories.iter().enumerate() {
        let mid = (p.x0 as f64 + slot * (i as f64 + 0.5)).round() as i64;
        if i > 0 {
            let sx = (p.x0 as f64 + slot * i as f64).round() as i64;
            fill_rect(&mut c.img, sx, p.y0, 1, p.height(), Rgb([240, 240, 240]));
        }
        fill_rect(&mut c.img, mid, p.y1, 1, TICK_LEN, AXIS);
        if i % every == 0 {
            draw_text_centered(&mut c.img, mid, p.y1 + TICK_LEN + 4, cat, label_scale, TEXT);
        }
    }

    if range.is_none() {
        draw_no_data(&mut c);
    }
    if y_lo <= 0.0 && y_hi >= 0.0 {
        let zy = c.y.px(0.0);
        let dash = Stroke {
            color: ZERO_LINE,
            width: 1,
            dash: Some((6, 4)),
        };
        draw_line(
            &mut c.img,
            (p.x0 as f64, zy),
            ((p.x1 - 1) as f64, zy),
            dash,
            p,
        );
    }

    let group_w = slot * 0.8;
    let sub = group_w / n_ser as f64;
    let box_w = ((sub * 0.75).round() as i64).max(3);
    let mut centres = vec![vec![0.0; series.len()]; categories.len()];
    for (si, s) in series.iter().enumerate() {
        let edge = Rgb(s.color);
        for (ci, st) in stats[si].iter().enumerate() {
            let cx = p.x0 as f64 + slot * ci as f64 + slot * 0.1 + sub * (si as f64 + 0.5);
            centres[ci][si] = cx;
            let Some(b) = st else { continue };
            let xc = cx.round() as i64;
            let x0 = xc - box_w / 2;
            let py = |v: f64| c.y.px(v);
            let whisk = Stroke::solid(edge, 1);
            draw_line(&mut c.img, (cx, py(b.whisker_lo)), (cx, py(b.q1)), whisk, p);
            draw_line(&mut c.img, (cx, py(b.q3)), (cx, py(b.whisker_hi)), whisk, p);
            let cap = (box_w / 4).max(1) as f64;
            for v in [b.whisker_lo, b.whisker_hi] {
                draw_line(&mut c.img, (cx - cap, py(v)), (cx + cap, py(v)), whisk, p);
            }
            let top = py(b.q3).round() as i64;
            let bot = py(b.q1).round() as i64;
            fill_rect(
                &mut c.img,
                x0,
                top,
                box_w,
                bot - top + 1,
                Rgb(tint(s.color)),
            );
            rect_outline(&mut c.img, x0, top, box_w, bot - top + 1, edge);
            let my = py(b.median);
            let med = Stroke::solid(BLACK, 2);
            draw_line(
                &mut c.img,
                (x0 as f64, my),
                ((x0 + box_w - 1) as f64, my),
                med,
                p,
            );
            for &o in &b.outliers {
                draw_marker(
                    &mut c.img,
                    (xc, py(o).round() as i64),
                    2,
                    Marker::Circle,
                    s.color,
                    1.0,
                    p,
                );
            }
        }
    }
    finish_axes(&mut c);
    Ok((c, centres))
}

// ---------------------------------------------------------------------------
// Line plot
// ---------------------------------------------------------------------------

/// One curve of [`line_plot`]; `x` and `y` must have equal lengths.
#[derive(Debug, Clone)]
pub struct LineSeries {
    /// Legend name.
    pub name: String,
    /// Line and marker colour.
    pub color: [u8; 3],
    /// X values.
    pub x: Vec<f64>,
    /// Y values, same length as `x`.
    pub y: Vec<f64>,
}

/// Line plot with markers (shape cycles per series), legend, axes and nice
/// ticks; `log_x` gives a decade-ticked log x axis (points with x <= 0 are
/// skipped). Lines break at skipped points.
pub fn line_plot(
    series: &[LineSeries],
    log_x: bool,
    title: &str,
    x_label: &str,
    y_label: &str,
) -> Result<RgbImage, PlotError> {
    line_plot_layout(series, log_x, title, x_label, y_label).map(|(c, _)| c.img)
}

fn line_plot_layout(
    series: &[LineSeries],
    log_x: bool,
    title: &str,
    x_label: &str,
    y_label: &str,
) -> Result<(Canvas, Scale), PlotError> {
    if series.is_empty() {
        return Err(PlotError::Empty("line_plot: no series".into()));
    }
    for s in series {
        if s.x.len() != s.y.len() {
            return Err(PlotError::Shape(format!(
                "line_plot: series '{}' has {} x values but {} y values",
                s.name,
                s.x.len(),
                s.y.len()
            )));
        }
    }
    if series.iter().all(|s| s.x.is_empty()) {
        return Err(PlotError::Empty(
            "line_plot: every series has zero points".into(),
        ));
    }
    let valid = |x: f64, y: f64| x.is_finite() && y.is_finite() && (!log_x || x > 0.0);
    let points = || {
        series
            .iter()
            .flat_map(|s| s.x.iter().zip(&s.y).map(|(&x, &y)| (x, y)))
            .filter(|&(x, y)| valid(x, y))
    };
    let x_range = finite_range(points().map(|p| p.0));
    let y_range = finite_range(points().map(|p| p.1));
    let (x_lo, x_hi) = if log_x {
        padded_log(x_range, 0.04)
    } else {
        padded(x_range, 0.04)
    };
    let (y_lo, y_hi) = padded(y_range, 0.08);
    let legend = series
        .iter()
        .enumerate()
        .map(|(i, s)| LegendEntry {
            name: s.name.clone(),
            color: s.color,
            swatch: Swatch::LineMarker(MARKERS[i % MARKERS.len()]),
        })
        .collect();
    let mut c = frame(&Frame {
        width: PLOT_WIDTH,
        height: PLOT_HEIGHT,
        title,
        x_label,
        y_label,
        legend,
        y_lo,
        y_hi,
    });
    let p = c.plot;
    let xs = Scale {
        lo: x_lo,
        hi: x_hi,
        log: log_x,
        p_lo: p.x0 as f64,
        p_hi: (p.x1 - 1) as f64,
    };
    draw_numeric_x_axis(&mut c, &xs);
    if x_range.is_none() {
        draw_no_data(&mut c);
    }
    for (i, s) in series.iter().enumerate() {
        let stroke = Stroke::solid(Rgb(s.color), 2);
        let mut prev: Option<(f64, f64)> = None;
        for (&x, &y) in s.x.iter().zip(&s.y) {
            if !valid(x, y) {
                prev = None;
                continue;
            }
            let cur = (xs.px(x), c.y.px(y));
            if let Some(pp) = prev {
                draw_line(&mut c.img, pp, cur, stroke, p);
            }
            prev = Some(cur);
        }
        let m = MARKERS[i % MARKERS.len()];
        for (&x, &y) in s.x.iter().zip(&s.y) {
            if valid(x, y) {
                let centre = (xs.px(x).round() as i64, c.y.px(y).round() as i64);
                draw_marker(&mut c.img, centre, 5, m, s.color, 1.0, p);
            }
        }
    }
    finish_axes(&mut c);
    Ok((c, xs))
}

// ---------------------------------------------------------------------------
// Scatter plot
// ---------------------------------------------------------------------------

const SCATTER_COLOR: [u8; 3] = [31, 119, 180];
const FIT_COLOR: [u8; 3] = [214, 39, 40];

/// Scatter plot of `(x[i], y[i])` (semi-transparent dots so density shows),
/// with the fitted line `y = a x + b` drawn across the plot when `fit` is
/// `Some((a, b))` and finite. Axis ranges follow the points only.
pub fn scatter_plot(
    x: &[f64],
    y: &[f64],
    fit: Option<(f64, f64)>,
    title: &str,
    x_label: &str,
    y_label: &str,
) -> Result<RgbImage, PlotError> {
    scatter_layout(x, y, fit, title, x_label, y_label).map(|(c, _)| c.img)
}

fn scatter_layout(
    x: &[f64],
    y: &[f64],
    fit: Option<(f64, f64)>,
    title: &str,
    x_label: &str,
    y_label: &str,
) -> Result<(Canvas, Scale), PlotError> {
    if x.len() != y.len() {
        return Err(PlotError::Shape(format!(
            "scatter_plot: {} x values but {} y values",
            x.len(),
            y.len()
        )));
    }
    if x.is_empty() {
        return Err(PlotError::Empty("scatter_plot: no points".into()));
    }
    let pts: Vec<(f64, f64)> = x
        .iter()
        .zip(y)
        .map(|(&a, &b)| (a, b))
        .filter(|(a, b)| a.is_finite() && b.is_finite())
        .collect();
    let x_range = finite_range(pts.iter().map(|p| p.0));
    let y_range = finite_range(pts.iter().map(|p| p.1));
    let (x_lo, x_hi) = padded(x_range, 0.04);
    let (y_lo, y_hi) = padded(y_range, 0.06);
    let fit = fit.filter(|(a, b)| a.is_finite() && b.is_finite());
    let mut legend = vec![LegendEntry {
        name: format!("data (n={})", pts.len()),
        color: SCATTER_COLOR,
        swatch: Swatch::Marker(Marker::Circle),
    }];
    if let Some((a, b)) = fit {
        let sign = if b < 0.0 { "-" } else { "+" };
        legend.push(LegendEntry {
            name: format!("fit: y = {}x {sign} {}", format_sig(a), format_sig(b.abs())),
            color: FIT_COLOR,
            swatch: Swatch::Line,
        });
    }
    let mut c = frame(&Frame {
        width: PLOT_WIDTH,
        height: PLOT_HEIGHT,
        title,
        x_label,
        y_label,
        legend,
        y_lo,
        y_hi,
    });
    let p = c.plot;
    let xs = Scale {
        lo: x_lo,
        hi: x_hi,
        log: false,
        p_lo: p.x0 as f64,
        p_hi: (p.x1 - 1) as f64,
    };
    draw_numeric_x_axis(&mut c, &xs);
    if pts.is_empty() {
        draw_no_data(&mut c);
    }
    for &(a, b) in &pts {
        let centre = (xs.px(a).round() as i64, c.y.px(b).round() as i64);
        draw_marker(&mut c.img, centre, 3, Marker::Circle, SCATTER_COLOR, 0.6, p);
    }
    if let Some((a, b)) = fit {
        let p0 = (xs.px(x_lo), c.y.px(a * x_lo + b));
        let p1 = (xs.px(x_hi), c.y.px(a * x_hi + b));
        draw_line(&mut c.img, p0, p1, Stroke::solid(Rgb(FIT_COLOR), 2), p);
    }
    finish_axes(&mut c);
    Ok((c, xs))
}

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

/// Atomic PNG write: encodes to `<path>.tmp-<pid>` in the same directory, syncs
/// it, then renames over `path`, so readers never see a half-written figure.
/// The temporary file is removed on failure. The parent directory must exist.
pub fn save_png(img: &RgbImage, path: &Path) -> Result<(), PlotError> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp_name);
    let io_err = |p: &Path, source: std::io::Error| PlotError::Io {
        path: p.to_path_buf(),
        source,
    };

    let write = || -> std::io::Result<()> {
        let file = File::create(&tmp)?;
        let mut w = BufWriter::new(file);
        let enc = image::codecs::png::PngEncoder::new(&mut w);
        image::ImageEncoder::write_image(
            enc,
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| match e {
            image::ImageError::IoError(io) => io,
            other => std::io::Error::other(other),
        })?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(&tmp, e));
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approx(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * (1.0 + a.abs().max(b.abs()))
    }

    fn count_color(img: &RgbImage, c: [u8; 3]) -> usize {
        img.pixels().filter(|p| p.0 == c).count()
    }

    fn non_white_in(img: &RgbImage, r: Rect) -> usize {
        let mut n = 0;
        for y in r.y0.max(0)..r.y1.min(i64::from(img.height())) {
            for x in r.x0.max(0)..r.x1.min(i64::from(img.width())) {
                if img.get_pixel(x as u32, y as u32).0 != [255, 255, 255] {
                    n += 1;
                }
            }
        }
        n
    }

    #[test]
    fn diverging_endpoints() {
        assert_eq!(diverging_rgb(2.0, 2.0), [255, 0, 0]);
        assert_eq!(diverging_rgb(-2.0, 2.0), [0, 0, 255]);
        assert_eq!(diverging_rgb(0.0, 2.0), [255, 255, 255]);
        // Clamped beyond vmax; half way is a half-saturated tint.
        assert_eq!(diverging_rgb(10.0, 2.0), [255, 0, 0]);
        assert_eq!(diverging_rgb(1.0, 2.0), [255, 128, 128]);
        assert_eq!(diverging_rgb(-1.0, 2.0), [128, 128, 255]);
        // Degenerate inputs are "no signal".
        assert_eq!(diverging_rgb(f32::NAN, 1.0), [255, 255, 255]);
        assert_eq!(diverging_rgb(1.0, 0.0), [255, 255, 255]);
        assert_eq!(diverging_rgb(1.0, f32::INFINITY), [255, 255, 255]);
    }

    #[test]
    fn sequential_endpoints() {
        assert_eq!(sequential_rgb(0.0), [0, 0, 128]);
        assert_eq!(sequential_rgb(1.0), [128, 0, 0]);
        assert_eq!(sequential_rgb(0.5), [128, 255, 128]);
        assert_eq!(sequential_rgb(-3.0), sequential_rgb(0.0));
        assert_eq!(sequential_rgb(7.0), sequential_rgb(1.0));
        assert_eq!(sequential_rgb(f32::NAN), sequential_rgb(0.0));
    }

    #[test]
    fn nice_steps_are_1_2_5() {
        assert!(approx(nice_step(0.8), 1.0));
        assert!(approx(nice_step(1.0), 1.0));
        assert!(approx(nice_step(1.3), 1.0));
        assert!(approx(nice_step(0.2), 0.2));
        assert!(approx(nice_step(2.9), 2.0));
        assert!(approx(nice_step(3.0), 5.0));
        assert!(approx(nice_step(7.0), 10.0));
        assert!(approx(nice_step(0.013), 0.01));
        assert!(approx(nice_step(420.0), 500.0));
        assert!(approx(nice_step(f64::NAN), 1.0));
        // Every step is 1, 2 or 5 times a power of ten.
        for raw in [3e-7, 0.04, 0.9, 17.0, 6.6e5] {
            let s = nice_step(raw);
            let m = s / 10f64.powi(s.log10().floor() as i32);
            assert!(
                [1.0, 2.0, 5.0, 10.0].iter().any(|&n| approx(m, n)),
                "{raw} -> {s}"
            );
        }
    }

    #[test]
    fn tick_selection() {
        let (t, step) = nice_ticks(0.0, 1.0, 5);
        assert!(approx(step, 0.2));
        assert_eq!(t, vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        let (t, step) = nice_ticks(-0.37, 1.2, 5);
        assert!(approx(step, 0.5));
        assert_eq!(t, vec![0.0, 0.5, 1.0]);
        let (t, _) = nice_ticks(-13.0, 42.0, 5);
        assert_eq!(t, vec![-10.0, 0.0, 10.0, 20.0, 30.0, 40.0]);
        let (t, _) = nice_ticks(0.1, 0.35, 5);
        assert_eq!(t, vec![0.1, 0.15, 0.2, 0.25, 0.3, 0.35]);
        assert!(nice_ticks(1.0, 1.0, 5).0.is_empty());
        assert!(nice_ticks(f64::NAN, 1.0, 5).0.is_empty());
        // No "-0" tick.
        let (t, _) = nice_ticks(-1.0, 1.0, 4);
        assert!(t.iter().all(|v| v.to_bits() != (-0.0f64).to_bits()));
    }

    #[test]
    fn tick_labels() {
        assert_eq!(format_tick(0.30000000000000004, 0.1), "0.3");
        assert_eq!(format_tick(20.0, 10.0), "20");
        assert_eq!(format_tick(-0.05, 0.05), "-0.05");
        assert_eq!(format_tick(1e-17, 0.1), "0.0");
        assert_eq!(format_tick(0.0, 10.0), "0");
        assert_eq!(format_tick(0.0, 1e-6), "0");
        assert_eq!(format_tick(2e-5, 1e-5), "2e-5");
        assert_eq!(format_tick(2.5e-5, 5e-6), "2.5e-5");
        assert_eq!(format_tick(3e7, 1e7), "3e7");
        assert_eq!(format_sci(0.123), "+1.23e-1");
        assert_eq!(format_sci(-4560.0), "-4.56e3");
        assert_eq!(format_sig(1.02345), "1.02");
        assert_eq!(format_sig(0.0312), "0.0312");
    }

    #[test]
    fn log_tick_selection() {
        let (major, minor) = log_ticks(0.9e-3, 1.1e2);
        assert_eq!(major, vec![1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0]);
        assert!(minor.contains(&0.02) && minor.contains(&50.0));
        assert_eq!(
            format_log_ticks(&major),
            vec!["0.001", "0.01", "0.1", "1", "10", "100"]
        );
        let (major, _) = log_ticks(1.5, 40.0);
        assert_eq!(major, vec![2.0, 5.0, 10.0, 20.0]);
        assert_eq!(
            format_log_ticks(&[1e-5, 1e-3, 1.0, 1e2]),
            vec!["1e-5", "1e-3", "1e0", "1e2"]
        );
    }

    #[test]
    fn box_statistics_match_numpy_linear() {
        // numpy.percentile([1..9, 100], [25, 50, 75]) = [3.25, 5.5, 7.75]
        let v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 100.0];
        let b = box_stats(&v).unwrap();
        assert!(approx(b.q1, 3.25) && approx(b.median, 5.5) && approx(b.q3, 7.75));
        // IQR 4.5 -> fences -3.5 and 14.5.
        assert_eq!((b.whisker_lo, b.whisker_hi), (1.0, 9.0));
        assert_eq!(b.outliers, vec![100.0]);
        assert_eq!(b.n, 10);

        // numpy.percentile([4, 1, 3, 2], [25, 50, 75]) = [1.75, 2.5, 3.25]; order and NaN don't matter.
        let b = box_stats(&[4.0, f64::NAN, 1.0, 3.0, f64::INFINITY, 2.0]).unwrap();
        assert!(approx(b.q1, 1.75) && approx(b.median, 2.5) && approx(b.q3, 3.25));
        assert!(b.outliers.is_empty());
        assert_eq!(b.n, 4);

        // Low outlier: [-50, 0, 1, 2, 3]: q1 = 0, median 1, q3 = 2, fences -3 / 5.
        let b = box_stats(&[-50.0, 0.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!((b.q1, b.median, b.q3), (0.0, 1.0, 2.0));
        assert_eq!((b.whisker_lo, b.whisker_hi), (0.0, 3.0));
        assert_eq!(b.outliers, vec![-50.0]);

        let b = box_stats(&[7.0]).unwrap();
        assert_eq!(
            (b.q1, b.median, b.q3, b.whisker_lo, b.whisker_hi),
            (7.0, 7.0, 7.0, 7.0, 7.0)
        );
        assert!(box_stats(&[]).is_none());
        assert!(box_stats(&[f64::NAN]).is_none());
        assert_eq!(quantile_sorted(&[0.0, 10.0], 0.3), Some(3.0));
    }

    #[test]
    fn map_shape_errors() {
        assert!(matches!(
            Map2::new(2, 3, vec![0.0; 5]),
            Err(PlotError::Shape(_))
        ));
        assert!(Map2::new(2, 3, vec![0.0; 6]).is_ok());
        let bad = PanelRow {
            label: "a^h".into(),
            cells: vec![(
                "l=7".into(),
                Map2 {
                    height: 2,
                    width: 2,
                    data: vec![0.0; 3],
                },
            )],
        };
        let err = signed_panel(&[bad], 32, "t").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, PlotError::Shape(_)));
        assert!(msg.contains("a^h") && msg.contains("l=7"), "{msg}");
        assert!(matches!(
            signed_panel(&[], 32, "t"),
            Err(PlotError::Empty(_))
        ));
        let no_cells = PanelRow {
            label: "x".into(),
            cells: vec![],
        };
        assert!(matches!(
            signed_panel(&[no_cells], 32, "t"),
            Err(PlotError::Empty(_))
        ));
    }

    #[test]
    fn saliency_shape_errors() {
        let img = vec![0u8; 4 * 3 * 3];
        let good = Map2::new(3, 4, vec![0.0; 12]).unwrap();
        let wrong = Map2::new(4, 3, vec![0.0; 12]).unwrap();
        let err = saliency_overlays(
            &img,
            4,
            3,
            &[("ok".into(), good.clone()), ("gradcam".into(), wrong)],
        )
        .unwrap_err();
        assert!(matches!(err, PlotError::Shape(_)));
        assert!(err.to_string().contains("gradcam"), "{err}");
        let err = saliency_overlays(&img[..10], 4, 3, &[]).unwrap_err();
        assert!(matches!(err, PlotError::Shape(_)));
        assert!(matches!(
            saliency_overlays(&[], 0, 0, &[]),
            Err(PlotError::Empty(_))
        ));
        // Map whose data length lies about its shape.
        let liar = Map2 {
            height: 3,
            width: 4,
            data: vec![0.0; 11],
        };
        let err = saliency_overlays(&img, 4, 3, &[("liar".into(), liar)]).unwrap_err();
        assert!(err.to_string().contains("liar"), "{err}");
    }

    #[test]
    fn plot_shape_and_empty_errors() {
        let s = LineSeries {
            name: "fullgrad".into(),
            color: [0, 0, 0],
            x: vec![1.0, 2.0],
            y: vec![1.0],
        };
        let err = line_plot(&[s], false, "", "", "").unwrap_err();
        assert!(matches!(err, PlotError::Shape(_)) && err.to_string().contains("fullgrad"));
        assert!(matches!(
            line_plot(&[], false, "", "", ""),
            Err(PlotError::Empty(_))
        ));
        let err = scatter_plot(&[1.0], &[], None, "", "", "").unwrap_err();
        assert!(matches!(err, PlotError::Shape(_)));
        assert!(matches!(
            scatter_plot(&[], &[], None, "", "", ""),
            Err(PlotError::Empty(_))
        ));
        let cats = vec!["1".to_string(), "2".to_string()];
        let s = BoxSeries {
            name: "bias".into(),
            color: [0, 0, 0],
            groups: vec![vec![1.0]],
        };
        let err = box_plot(&cats, &[s], "", "", "").unwrap_err();
        assert!(matches!(err, PlotError::Shape(_)) && err.to_string().contains("bias"));
        assert!(matches!(
            box_plot(&[], &[], "", "", ""),
            Err(PlotError::Empty(_))
        ));
    }

    #[test]
    fn signed_panel_renders_cells() {
        let pos = Map2::new(2, 2, vec![1.0, 0.5, 0.0, 0.25]).unwrap();
        let neg = Map2::new(3, 3, vec![-2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0]).unwrap();
        let rows = vec![
            PanelRow {
                label: "a^h".into(),
                cells: vec![("l=1".into(), pos.clone()), ("l=2".into(), neg.clone())],
            },
            PanelRow {
                label: "a^b".into(),
                cells: vec![("l=1".into(), neg), ("l=2".into(), pos)],
            },
        ];
        let img = signed_panel(&rows, 48, "panel").unwrap();
        // Each cell's own max saturates: top-left quadrant of a 2x2 map is 24x24 pure red.
        assert!(count_color(&img, [255, 0, 0]) >= 2 * 24 * 24);
        // 3x3 upscaled to 48: one source pixel covers 16x16.
        assert!(count_color(&img, [0, 0, 255]) >= 2 * 16 * 16);
        assert!(img.width() >= 2 * 48 && img.height() >= 2 * 48);
    }

    #[test]
    fn saliency_overlay_pixels() {
        let (w, h) = (200u32, 100u32);
        let rgb: Vec<u8> = (0..w * h).flat_map(|_| [100u8, 150, 200]).collect();
        let data: Vec<f32> = (0..w * h)
            .map(|i| if i % w < w / 2 { 0.0 } else { 1.0 })
            .collect();
        let map = Map2::new(h as usize, w as usize, data).unwrap();
        let img = saliency_overlays(&rgb, w, h, &[("grad".into(), map)]).unwrap();
        assert_eq!(img.width() as i64, 2 * PAD + 2 * 200 + 12);
        // Plain image colour, and both blend extremes, are all present at full cell areas.
        assert!(count_color(&img, [100, 150, 200]) >= (w * h) as usize);
        let low = mix([100, 150, 200], sequential_rgb(0.0), 0.5);
        let high = mix([100, 150, 200], sequential_rgb(1.0), 0.5);
        assert!(count_color(&img, low) >= (w * h / 2) as usize);
        assert!(count_color(&img, high) >= (w * h / 2) as usize);
    }

    #[test]
    fn box_plot_draws_boxes_at_their_quartiles() {
        let cats: Vec<String> = (1..=3).map(|i| i.to_string()).collect();
        let act = BoxSeries {
            name: "act".into(),
            color: [31, 119, 180],
            groups: vec![
                vec![1.0, 2.0, 3.0, 4.0, 5.0],
                vec![],
                vec![-2.0, -1.0, 0.0, 1.0, 30.0],
            ],
        };
        let bias = BoxSeries {
            name: "bias".into(),
            color: [255, 127, 14],
            groups: vec![
                vec![-3.0, -2.0, -1.0],
                vec![0.5, f64::NAN, 1.5],
                vec![2.0; 4],
            ],
        };
        let (canvas, centres) =
            box_plot_layout(&cats, &[act.clone(), bias.clone()], "t", "layer", "value").unwrap();
        let img = &canvas.img;
        assert_eq!((img.width(), img.height()), (PLOT_WIDTH, PLOT_HEIGHT));
        // Between q1 = 2 and median = 3 of act in category 1 the box is filled with the tint.
        let x = centres[0][0].round() as u32;
        let y_in = canvas.y.px(2.5).round() as u32;
        assert_eq!(img.get_pixel(x, y_in).0, tint(act.color));
        // Above q3 (4) but below the whisker end (5): the whisker line at the centre.
        let y_wh = canvas.y.px(4.6).round() as u32;
        assert_eq!(img.get_pixel(x, y_wh).0, act.color);
        // Bias box in category 1 (q1=-2.5, q3=-1.5) sits below zero.
        let xb = centres[0][1].round() as u32;
        assert_eq!(
            img.get_pixel(xb, canvas.y.px(-1.75).round() as u32).0,
            tint(bias.color)
        );
        // Empty act group in category 2 draws nothing in its column.
        let xe = centres[1][0].round() as i64;
        let col = Rect {
            x0: xe,
            y0: canvas.plot.y0,
            x1: xe + 1,
            y1: canvas.plot.y1,
        };
        let greys = [GRID.0, ZERO_LINE.0, [240, 240, 240], [255, 255, 255]];
        for y in col.y0..col.y1 {
            assert!(greys.contains(&img.get_pixel(xe as u32, y as u32).0));
        }
        // The outlier 30 of act in category 3 is drawn as a dot.
        let xo = centres[2][0].round() as u32;
        assert_eq!(
            img.get_pixel(xo, canvas.y.px(30.0).round() as u32).0,
            act.color
        );
        // Title area has text.
        assert!(
            non_white_in(
                img,
                Rect {
                    x0: 0,
                    y0: 0,
                    x1: PLOT_WIDTH as i64,
                    y1: 26
                }
            ) > 0
        );
    }

    #[test]
    fn box_plot_all_empty_is_no_data() {
        let cats = vec!["a".to_string()];
        let s = BoxSeries {
            name: "x".into(),
            color: [0, 0, 0],
            groups: vec![vec![f64::NAN]],
        };
        let img = box_plot(&cats, &[s], "t", "", "").unwrap();
        assert_eq!((img.width(), img.height()), (PLOT_WIDTH, PLOT_HEIGHT));
    }

    #[test]
    fn box_plot_widens_for_many_categories() {
        let cats: Vec<String> = (0..60).map(|i| i.to_string()).collect();
        let s = BoxSeries {
            name: "x".into(),
            color: [0, 0, 0],
            groups: vec![vec![1.0]; 60],
        };
        let img = box_plot(&cats, &[s], "", "", "").unwrap();
        assert!(img.width() > PLOT_WIDTH);
    }

    #[test]
    fn line_plot_markers_at_points() {
        let s = LineSeries {
            name: "a".into(),
            color: [200, 0, 0],
            x: vec![1.0, 10.0, 100.0, f64::NAN, -1.0],
            y: vec![0.0, 1.0, 0.5, 2.0, 3.0],
        };
        for log in [false, true] {
            let (c, xs) = line_plot_layout(std::slice::from_ref(&s), log, "t", "x", "y").unwrap();
            assert_eq!((c.img.width(), c.img.height()), (PLOT_WIDTH, PLOT_HEIGHT));
            for (x, y) in [(1.0, 0.0), (10.0, 1.0), (100.0, 0.5)] {
                let (px, py) = (xs.px(x).round() as u32, c.y.px(y).round() as u32);
                assert_eq!(
                    c.img.get_pixel(px, py).0,
                    [200, 0, 0],
                    "log={log} at ({x},{y})"
                );
            }
            // Skipped y=3 point at x=-1 must not stretch the y range past the valid data.
            assert!(c.y.hi < 2.0 || !log);
        }
    }

    #[test]
    fn line_plot_all_nonfinite_is_no_data() {
        let s = LineSeries {
            name: "a".into(),
            color: [0, 0, 0],
            x: vec![f64::NAN],
            y: vec![1.0],
        };
        let img = line_plot(&[s], true, "t", "x", "y").unwrap();
        assert_eq!((img.width(), img.height()), (PLOT_WIDTH, PLOT_HEIGHT));
    }

    #[test]
    fn scatter_points_and_fit() {
        let x: Vec<f64> = (0..50).map(|i| i as f64).collect();
        let y: Vec<f64> = x.iter().map(|v| 2.0 * v + 1.0).collect();
        let (c, xs) = scatter_layout(&x, &y, Some((2.0, 1.0)), "t", "x", "y").unwrap();
        assert_eq!((c.img.width(), c.img.height()), (PLOT_WIDTH, PLOT_HEIGHT));
        // The fit passes through every point, so fit-red is next to each point centre.
        let (px, py) = (xs.px(20.0).round() as u32, c.y.px(41.0).round() as u32);
        let near = (0..9).any(|k| c.img.get_pixel(px + k % 3 - 1, py + k / 3 - 1).0 == FIT_COLOR);
        assert!(near);
        let (c, xs) = scatter_layout(&x, &y, None, "t", "x", "y").unwrap();
        let (px, py) = (xs.px(20.0).round() as u32, c.y.px(41.0).round() as u32);
        assert_ne!(c.img.get_pixel(px, py).0, [255, 255, 255]);
        // Non-finite fit is ignored, non-finite points skipped, never a panic.
        let img = scatter_plot(
            &[f64::NAN, 1.0],
            &[1.0, f64::INFINITY],
            Some((f64::NAN, 0.0)),
            "",
            "",
            "",
        )
        .unwrap();
        assert_eq!(img.width(), PLOT_WIDTH);
    }

    #[test]
    fn steep_fit_line_is_clipped() {
        let img = scatter_plot(&[0.0, 1.0], &[0.0, 1.0], Some((1e12, 0.0)), "", "", "").unwrap();
        assert_eq!(img.height(), PLOT_HEIGHT);
    }

    #[test]
    fn save_png_round_trip_and_errors() {
        let dir = std::env::temp_dir().join(format!("zerobias-plot-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("fig.png");
        let mut img = RgbImage::from_pixel(7, 5, WHITE);
        img.put_pixel(3, 2, Rgb([1, 2, 3]));
        save_png(&img, &path).unwrap();
        let back = image::open(&path).unwrap().to_rgb8();
        assert_eq!(back, img);
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();

        let missing = dir.join("no/such/dir/fig.png");
        let err = save_png(&img, &missing).unwrap_err();
        assert!(matches!(err, PlotError::Io { .. }));
        assert!(err.to_string().contains("fig.png"), "{err}");
    }

    #[test]
    fn text_helpers() {
        assert_eq!(text_width("abc", 2), 48);
        assert_eq!(fit_scale("abcd", 40, 2), 1);
        assert_eq!(fit_scale("ab", 40, 2), 2);
        assert_eq!(truncate_to("abcdefgh", 40, 1), "abc..");
        let mut img = RgbImage::from_pixel(40, 40, WHITE);
        draw_text(&mut img, 0, 0, "A", 1, BLACK);
        draw_text_up(&mut img, 20, 20, "é?λ", 1, BLACK);
        assert!(count_color(&img, [0, 0, 0]) > 10);
    }
}
