//! Image compositing of our own: attribution panels (paper Fig. 2/4) and saliency overlays.
//! Pixels are placed exactly (nearest-neighbour upscaling, one colour per source value), so
//! the cells can be checked pixel by pixel; only the text goes through the shared font.

use image::{Rgb, RgbImage};

use super::colour::{diverging_rgb, mix, sequential_rgb};
use super::error::PlotError;
use super::text::{draw_text, fit_size, text_size, truncate_to, Align};
use super::ticks::{finite_range, format_sci};

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

const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const BLACK: [u8; 3] = [0, 0, 0];
const TEXT: [u8; 3] = [20, 20, 20];
const CELL_BORDER: Rgb<u8> = Rgb([150, 150, 150]);
/// Text size in pixels for titles, row labels and cell names.
const BIG: f64 = 16.0;
/// Text size in pixels for the colour keys' annotations.
const SMALL: f64 = 11.0;
/// Smallest size a cell name shrinks to before it is cut.
const MIN_TEXT: f64 = 9.0;
const PAD: i64 = 10;

fn put(img: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && x < i64::from(img.width()) && y < i64::from(img.height()) {
        img.put_pixel(x as u32, y as u32, c);
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
    let title_size = rows
        .iter()
        .flat_map(|r| r.cells.iter())
        .map(|(t, _)| fit_size(t, pitch - 4, BIG, MIN_TEXT))
        .fold(BIG, f64::min);
    let sum_size = fit_size("+1.23e-10", pitch - 4, BIG - 2.0, MIN_TEXT);
    let header_h = text_size("l", title_size).1 + 4 + text_size("+", sum_size).1 + 6;
    let label_w = rows
        .iter()
        .map(|r| text_size(&r.label, BIG).0)
        .max()
        .unwrap_or(0)
        + 2 * PAD;
    let title_h = if title.is_empty() {
        0
    } else {
        text_size(title, BIG + 2.0).1 + 12
    };
    let key_w = 180;
    let key_h = 14 + 6 + text_size("0", SMALL).1 + PAD;

    let grid_w = label_w + n_cols as i64 * pitch - gap + PAD;
    let width = grid_w
        .max(text_size(title, BIG + 2.0).0 + 2 * PAD)
        .max(key_w + 2 * PAD + 160);
    let row_h = header_h + cell + gap;
    let height = PAD + title_h + rows.len() as i64 * row_h + key_h;
    let mut img = RgbImage::from_pixel(width as u32, height as u32, WHITE);

    if !title.is_empty() {
        let x = width / 2;
        draw_text(&mut img, x, PAD, title, BIG + 2.0, BLACK, Align::Center);
    }
    let grid_x0 = label_w + (width - grid_w) / 2;
    for (r, row) in rows.iter().enumerate() {
        let row_y = PAD + title_h + r as i64 * row_h;
        let cell_y = row_y + header_h;
        let ly = cell_y + cell / 2 - text_size(&row.label, BIG).1 / 2;
        draw_text(
            &mut img,
            grid_x0 - PAD,
            ly,
            &row.label,
            BIG,
            BLACK,
            Align::Right,
        );
        for (c, (name, map)) in row.cells.iter().enumerate() {
            let cx = grid_x0 + c as i64 * pitch;
            let mid = cx + cell / 2;
            let name = truncate_to(name, pitch - 4, title_size);
            draw_text(
                &mut img,
                mid,
                row_y,
                &name,
                title_size,
                BLACK,
                Align::Center,
            );
            let sum = format_sci(map.finite_sum());
            let sy = row_y + text_size("l", title_size).1 + 4;
            draw_text(&mut img, mid, sy, &sum, sum_size, TEXT, Align::Center);
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
    draw_text(&mut img, kx, ty, "−max|v|", SMALL, TEXT, Align::Center);
    draw_text(
        &mut img,
        kx + key_w / 2,
        ty,
        "0",
        SMALL,
        TEXT,
        Align::Center,
    );
    draw_text(
        &mut img,
        kx + key_w,
        ty,
        "+max|v|",
        SMALL,
        TEXT,
        Align::Center,
    );
    draw_text(
        &mut img,
        kx + key_w + 36,
        ky + 1,
        "(per cell)",
        SMALL,
        TEXT,
        Align::Left,
    );
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
    let name_size = names
        .iter()
        .map(|s| fit_size(s, cw + gap - 4, BIG, MIN_TEXT))
        .fold(BIG, f64::min);
    let name_h = text_size("l", name_size).1 + 6;
    let bar_h = 10;
    let foot_h = PAD + bar_h + 4 + text_size("l", SMALL).1;
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
        let label = truncate_to(name, cw + gap - 4, name_size);
        draw_text(
            &mut img,
            x0 + cw / 2,
            PAD,
            &label,
            name_size,
            BLACK,
            Align::Center,
        );
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
    draw_text(&mut img, kx - 6, ky - 1, "low", SMALL, TEXT, Align::Right);
    draw_text(
        &mut img,
        kx + key_w + 6,
        ky - 1,
        "high",
        SMALL,
        TEXT,
        Align::Left,
    );
    let (x, y) = (kx + key_w / 2, ky + bar_h + 4);
    draw_text(
        &mut img,
        x,
        y,
        "(min-max per map)",
        SMALL,
        TEXT,
        Align::Center,
    );
    Ok(img)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count_color(img: &RgbImage, c: [u8; 3]) -> usize {
        img.pixels().filter(|p| p.0 == c).count()
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
        // Title, row labels and sums are anti-aliased text: grey levels besides ink.
        let greys = img
            .pixels()
            .filter(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2] && (40..215).contains(&p.0[0]))
            .count();
        assert!(greys > 50, "{greys}");
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
    fn map_checks_its_shape() {
        assert!(matches!(
            Map2::new(2, 3, vec![0.0; 5]),
            Err(PlotError::Shape(_))
        ));
        assert!(matches!(Map2::new(0, 3, vec![]), Err(PlotError::Shape(_))));
        let m = Map2::new(2, 3, vec![1.0, f32::NAN, -3.0, 0.5, 0.0, 2.0]).unwrap();
        assert_eq!(m.max_abs(), 3.0);
        assert_eq!(m.finite_sum(), 0.5);
    }
}
