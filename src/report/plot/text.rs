//! Text in figures: DejaVu Sans, embedded in the binary and rasterised anti-aliased with
//! `ab_glyph`, so every machine draws the same glyphs without system fonts. We lay glyphs
//! out ourselves (sub-pixel pen positions, side bearings, kerning): plotters' own text path
//! drops the side bearings and rounds each pen position, which spaces letters unevenly. The
//! font is registered with plotters as well, so its layout code measures with the same font.

use std::sync::{Once, OnceLock};

use ab_glyph::{point, Font, FontRef, PxScale, ScaleFont};
use image::RgbImage;
use plotters::style::FontStyle;

use super::error::PlotError;

/// DejaVu Sans 2.37 (Bitstream Vera licence, see assets/fonts/LICENSE-DejaVu.txt).
const FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");

/// The family name plotters knows the embedded font by (its default for chart text).
pub(super) const FAMILY: &str = "sans-serif";

fn font() -> &'static FontRef<'static> {
    static PARSED: OnceLock<FontRef<'static>> = OnceLock::new();
    // The bytes are compiled in and tested (`font_renders_anti_aliased`), so a failure here
    // is a build defect, not a user input.
    PARSED.get_or_init(|| {
        FontRef::try_from_slice(FONT).expect("the embedded DejaVu Sans font parses")
    })
}

/// Registers the embedded font with plotters; idempotent and cheap after the first call.
pub(super) fn ensure_font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        if plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_err() {
            panic!("the embedded DejaVu Sans font could not be parsed");
        }
    });
}

/// Width and height in pixels of `text` at `size` px (height = ascent + descent).
pub(super) fn text_size(text: &str, size: f64) -> (i64, i64) {
    let f = font().as_scaled(PxScale::from(size as f32));
    let h = (f.ascent() - f.descent()).ceil() as i64;
    (advance(text, size).ceil() as i64, h)
}

fn advance(text: &str, size: f64) -> f32 {
    let f = font().as_scaled(PxScale::from(size as f32));
    let mut pen = 0.0;
    let mut prev = None;
    for c in text.chars() {
        let id = f.glyph_id(c);
        if let Some(p) = prev {
            pen += f.kern(p, id);
        }
        pen += f.h_advance(id);
        prev = Some(id);
    }
    pen
}

/// Coverage raster of `text` (row-major, 0..=1), `width` x `height` pixels, top at ascent.
struct Raster {
    width: usize,
    height: usize,
    coverage: Vec<f32>,
}

fn raster(text: &str, size: f64) -> Raster {
    let scale = PxScale::from(size as f32);
    let f = font().as_scaled(scale);
    let (w, h) = text_size(text, size);
    let (width, height) = (w.max(0) as usize + 2, h.max(0) as usize + 1);
    let mut coverage = vec![0f32; width * height];
    let mut pen = 0.0;
    let mut prev = None;
    for c in text.chars() {
        let id = f.glyph_id(c);
        if let Some(p) = prev {
            pen += f.kern(p, id);
        }
        let glyph = id.with_scale_and_position(scale, point(pen, f.ascent()));
        pen += f.h_advance(id);
        prev = Some(id);
        let Some(outline) = font().outline_glyph(glyph) else {
            continue;
        };
        let b = outline.px_bounds();
        outline.draw(|x, y, c| {
            let px = b.min.x as i64 + i64::from(x);
            let py = b.min.y as i64 + i64::from(y);
            if px >= 0 && py >= 0 && (px as usize) < width && (py as usize) < height {
                let cell = &mut coverage[py as usize * width + px as usize];
                *cell = (*cell + c).min(1.0);
            }
        });
    }
    Raster {
        width,
        height,
        coverage,
    }
}

fn blend(img: &mut RgbImage, x: i64, y: i64, color: [u8; 3], alpha: f32) {
    if alpha <= 0.0 || x < 0 || y < 0 || x >= i64::from(img.width()) || y >= i64::from(img.height())
    {
        return;
    }
    let p = img.get_pixel_mut(x as u32, y as u32);
    for (ch, &c) in p.0.iter_mut().zip(&color) {
        let v = f32::from(*ch) * (1.0 - alpha) + f32::from(c) * alpha;
        *ch = v.round().clamp(0.0, 255.0) as u8;
    }
}

/// Largest size in `[min, preferred]` (1 px steps) at which `text` fits `max_w` pixels.
pub(super) fn fit_size(text: &str, max_w: i64, preferred: f64, min: f64) -> f64 {
    let mut s = preferred;
    while s > min && text_size(text, s).0 > max_w {
        s -= 1.0;
    }
    s.max(min)
}

/// `text`, cut and ended with an ellipsis where it is wider than `max_w` at `size`.
pub(super) fn truncate_to(text: &str, max_w: i64, size: f64) -> String {
    if text_size(text, size).0 <= max_w {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    for n in (0..chars.len()).rev() {
        let cut: String = chars[..n].iter().chain(['…'].iter()).collect();
        if text_size(&cut, size).0 <= max_w {
            return cut;
        }
    }
    String::new()
}

/// Horizontal anchor of [`draw_text`].
#[derive(Debug, Clone, Copy)]
pub(super) enum Align {
    Left,
    Center,
    Right,
}

/// Draws `text` at `size` px with its top edge at `y`; `x` is the left edge, centre or right
/// edge as `align` says. Glyph edges blend into what is below (anti-aliased).
pub(super) fn draw_text(
    img: &mut RgbImage,
    x: i64,
    y: i64,
    text: &str,
    size: f64,
    color: [u8; 3],
    align: Align,
) {
    if text.is_empty() {
        return;
    }
    let r = raster(text, size);
    let w = text_size(text, size).0;
    let x0 = match align {
        Align::Left => x,
        Align::Center => x - w / 2,
        Align::Right => x - w,
    };
    for ty in 0..r.height {
        for tx in 0..r.width {
            let a = r.coverage[ty * r.width + tx];
            blend(img, x0 + tx as i64, y + ty as i64, color, a);
        }
    }
}

/// Draws `text` turned 90° anticlockwise (read bottom to top), its left edge at `x` and
/// centred on row `cy`, as a y-axis label.
pub(super) fn draw_text_up(
    img: &mut RgbImage,
    x: i64,
    cy: i64,
    text: &str,
    size: f64,
    color: [u8; 3],
) {
    if text.is_empty() {
        return;
    }
    let r = raster(text, size);
    let half = text_size(text, size).0 / 2;
    for ty in 0..r.height {
        for tx in 0..r.width {
            let a = r.coverage[ty * r.width + tx];
            blend(img, x + ty as i64, cy + half - tx as i64, color, a);
        }
    }
}

/// A plotters drawing error as ours.
pub(super) fn draw_err<E: std::fmt::Debug>(e: E) -> PlotError {
    PlotError::Draw(format!("{e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn font_renders_anti_aliased() {
        let mut img = RgbImage::from_pixel(120, 40, image::Rgb([255, 255, 255]));
        draw_text(&mut img, 4, 4, "Aλé 0.5", 20.0, [0, 0, 0], Align::Left);
        let dark = img.pixels().filter(|p| p.0[0] < 60).count();
        // Anti-aliased edges: grey levels strictly between ink and paper.
        let grey = img.pixels().filter(|p| (60..230).contains(&p.0[0])).count();
        assert!(dark > 40, "{dark} dark pixels");
        assert!(grey > 20, "{grey} grey pixels");
        // Text starts near its anchor, not elsewhere.
        let first_col = (0..120)
            .find(|&x| (0..40).any(|y| img.get_pixel(x, y).0[0] < 128))
            .unwrap();
        assert!((3..10).contains(&first_col), "{first_col}");
    }

    #[test]
    fn sizes_fit_and_truncate() {
        let (w10, _) = text_size("layer", 10.0);
        let (w20, h20) = text_size("layer", 20.0);
        assert!(w20 > w10 + 10 && h20 >= 15, "{w10} {w20} {h20}");
        let s = fit_size("a long cell title", 60, 18.0, 8.0);
        assert!(text_size("a long cell title", s).0 <= 60 || s == 8.0);
        assert!(s < 18.0);
        let t = truncate_to("abcdefghijklmnop", 40, 14.0);
        assert!(t.ends_with('…') && text_size(&t, 14.0).0 <= 40, "{t}");
        assert_eq!(truncate_to("ab", 40, 14.0), "ab");
    }
}
