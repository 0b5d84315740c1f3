//! The frame every chart shares, drawn with `plotters` on a bitmap: title, legend strip,
//! axes with our tick choice, grid and axes box; markers and the data-to-pixel mapping.

use std::ops::Range;

use image::RgbImage;
use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::error::PlotError;
use super::text::{draw_err, draw_text, draw_text_up, ensure_font, text_size, Align};
use super::ticks::{format_log_ticks, format_tick, log_ticks, nice_ticks};

/// Default plot canvas width in pixels.
pub const PLOT_WIDTH: u32 = 800;
/// Default plot canvas height in pixels.
pub const PLOT_HEIGHT: u32 = 500;

const AXIS: RGBColor = RGBColor(60, 60, 60);
const GRID: RGBColor = RGBColor(222, 222, 222);
const GRID_MINOR: RGBColor = RGBColor(242, 242, 242);
/// Text sizes in pixels.
const TITLE_PX: f64 = 20.0;
const LABEL_PX: f64 = 16.0;
const TICK_PX: f64 = 13.0;
const LEGEND_PX: f64 = 14.0;
const SWATCH_W: i64 = 30;
const LEGEND_ROW_H: i64 = 22;

/// A linear f64 coordinate whose grid and tick positions are ours (plotters' own
/// `WithKeyPoints` cannot take a label formatter for f64 axes).
#[derive(Clone)]
pub(super) struct Ticked {
    inner: RangedCoordf64,
    major: Vec<f64>,
    minor: Vec<f64>,
}

impl Ranged for Ticked {
    type ValueType = f64;
    type FormatOption = NoDefaultFormatting;

    fn range(&self) -> Range<f64> {
        self.inner.range()
    }

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.minor.clone()
        } else {
            self.major.clone()
        }
    }
}

impl ValueFormatter<f64> for Ticked {
    fn format(value: &f64) -> String {
        format!("{value}")
    }
}

/// The plotters chart every figure draws into: data coordinates on both axes (log axes in
/// log10 units), with our tick positions.
pub(super) type Chart<'a, 'b> = ChartContext<'a, BitMapBackend<'b>, Cartesian2d<Ticked, Ticked>>;

/// A series colour as plotters' colour.
pub(super) fn rgb(c: [u8; 3]) -> RGBColor {
    RGBColor(c[0], c[1], c[2])
}

/// Point marker shapes, cycled per line series so curves stay apart in grey print.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Marker {
    Circle,
    Square,
    Triangle,
    Diamond,
    Cross,
}

pub(super) const MARKERS: [Marker; 5] = [
    Marker::Circle,
    Marker::Square,
    Marker::Triangle,
    Marker::Diamond,
    Marker::Cross,
];

/// Draws marker `m` of radius `r` pixels centred on `at` (in the area's coordinates).
pub(super) fn draw_marker<CT: CoordTranslate>(
    area: &DrawingArea<BitMapBackend<'_>, CT>,
    at: CT::From,
    m: Marker,
    r: i32,
    style: ShapeStyle,
) -> Result<(), PlotError> {
    let r1 = r + 1;
    match m {
        Marker::Circle => area.draw(&(EmptyElement::at(at) + Circle::new((0, 0), r, style))),
        Marker::Square => {
            area.draw(&(EmptyElement::at(at) + Rectangle::new([(-r, -r), (r, r)], style)))
        }
        Marker::Triangle => {
            area.draw(&(EmptyElement::at(at) + TriangleMarker::new((0, 0), r1, style)))
        }
        Marker::Diamond => area.draw(
            &(EmptyElement::at(at)
                + Polygon::new(vec![(0, -r1), (r1, 0), (0, r1), (-r1, 0)], style)),
        ),
        Marker::Cross => area.draw(&(EmptyElement::at(at) + Cross::new((0, 0), r, style))),
    }
    .map_err(draw_err)
}

/// How a legend entry's swatch is drawn.
#[derive(Debug, Clone, Copy)]
pub(super) enum Swatch {
    /// Filled box with an edge (box plots).
    Box,
    /// A line (fits).
    Line,
    /// A marker alone (scatter points).
    Marker(Marker),
    /// A line through a marker (line plots).
    LineMarker(Marker),
    /// A line over a light band of the given opacity (reference lines over their
    /// interquartile range).
    Band(f64),
    /// A light band alone (a percentile band around a median line).
    Fill,
}

/// Opacity of a band's fill over the white background (and over other bands, so that
/// overlapping bands stay visible).
pub(super) const BAND_ALPHA: f64 = 0.2;

/// Opacity of a reference line's quartile band: fainter, as several span the whole plot
/// behind the boxes.
pub(super) const REF_BAND_ALPHA: f64 = 0.1;

/// One legend entry.
#[derive(Debug, Clone)]
pub(super) struct LegendEntry {
    pub name: String,
    pub color: [u8; 3],
    pub swatch: Swatch,
}

/// One axis: its range in plotting coordinates (log10 units on a log axis), labelled ticks
/// and unlabelled minor grid positions.
#[derive(Debug, Clone)]
pub(super) struct Axis {
    pub lo: f64,
    pub hi: f64,
    pub log: bool,
    pub ticks: Vec<(f64, String)>,
    pub minor: Vec<f64>,
    /// Draw grid lines at the ticks (off for box plots' category axis).
    pub grid: bool,
}

impl Axis {
    /// Linear axis over `[lo, hi]` with about `target` nicely spaced ticks.
    pub fn linear(lo: f64, hi: f64, target: usize) -> Axis {
        let (ticks, step) = nice_ticks(lo, hi, target);
        Axis {
            lo,
            hi,
            log: false,
            ticks: ticks.iter().map(|&v| (v, format_tick(v, step))).collect(),
            minor: Vec::new(),
            grid: true,
        }
    }

    /// Log axis over `[lo, hi]` (both > 0), decade ticks.
    pub fn log(lo: f64, hi: f64) -> Axis {
        let (major, minor) = log_ticks(lo, hi);
        let labels = format_log_ticks(&major);
        Axis {
            lo: lo.log10(),
            hi: hi.log10(),
            log: true,
            ticks: major.iter().map(|v| v.log10()).zip(labels).collect(),
            minor: minor.iter().map(|v| v.log10()).collect(),
            grid: true,
        }
    }

    /// The plotting coordinate of data value `v`.
    pub fn coord(&self, v: f64) -> f64 {
        if self.log {
            v.log10()
        } else {
            v
        }
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }

    fn ticked(&self) -> Ticked {
        Ticked {
            inner: self.range().into(),
            major: self.ticks.iter().map(|t| t.0).collect(),
            minor: self.minor.clone(),
        }
    }

    fn widest_label(&self) -> i64 {
        self.ticks
            .iter()
            .map(|(_, s)| text_size(s, TICK_PX).0)
            .max()
            .unwrap_or(0)
    }
}

/// Everything around the data of a chart.
pub(super) struct Frame<'a> {
    pub width: u32,
    pub height: u32,
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub legend: Vec<LegendEntry>,
    pub x: Axis,
    pub y: Axis,
    /// Write "no data" across the plotting area (structure without any values).
    pub no_data: bool,
}

/// Data-to-pixel mapping of a drawn chart, the same arithmetic plotters used to draw it.
#[cfg_attr(not(test), allow(dead_code))]
pub(super) struct Mapping {
    coord: Cartesian2d<Ticked, Ticked>,
    x_log: bool,
    y_log: bool,
    /// Plotting area in pixels: x range, y range.
    pub area: (Range<i32>, Range<i32>),
}

impl Mapping {
    /// Pixel of data point (`x`, `y`).
    #[cfg(test)]
    pub fn px(&self, x: f64, y: f64) -> (u32, u32) {
        let t = |log: bool, v: f64| if log { v.log10() } else { v };
        let (px, py) = self.coord.translate(&(t(self.x_log, x), t(self.y_log, y)));
        (px as u32, py as u32)
    }
}

/// Splits legend entries into centred rows no wider than `max_w`.
fn legend_rows(entries: &[LegendEntry], max_w: i64) -> Vec<Vec<usize>> {
    let mut rows: Vec<Vec<usize>> = Vec::new();
    let mut w = 0;
    for (i, e) in entries.iter().enumerate() {
        let ew = SWATCH_W + 6 + text_size(&e.name, LEGEND_PX).0 + 22;
        if rows.is_empty() || (w + ew > max_w && w > 0) {
            rows.push(Vec::new());
            w = 0;
        }
        w += ew;
        if let Some(r) = rows.last_mut() {
            r.push(i);
        }
    }
    rows
}

/// Draws the legend swatches into `area` (the strip below the title) and returns where each
/// entry's name goes: (left x, centre y) in image pixels, offset by `top`.
fn draw_legend(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    entries: &[LegendEntry],
    rows: &[Vec<usize>],
    top: i64,
) -> Result<Vec<(i64, i64)>, PlotError> {
    let (w, _) = area.dim_in_pixel();
    let entry_w = |e: &LegendEntry| SWATCH_W + 6 + text_size(&e.name, LEGEND_PX).0;
    let mut names = vec![(0, 0); entries.len()];
    let err = draw_err;
    for (r, row) in rows.iter().enumerate() {
        let total: i64 = row.iter().map(|&i| entry_w(&entries[i]) + 22).sum::<i64>() - 22;
        let mut x = (i64::from(w) - total) / 2;
        let cy = (r as i64 * LEGEND_ROW_H + LEGEND_ROW_H / 2) as i32;
        for &i in row {
            let e = &entries[i];
            let c = rgb(e.color);
            let (x0, x1) = (x as i32, (x + SWATCH_W) as i32);
            let mid = ((x0 + x1) / 2, cy);
            let line = || PathElement::new(vec![(x0, cy), (x1, cy)], c.stroke_width(2));
            match e.swatch {
                Swatch::Box => {
                    let tint = rgb(super::colour::tint(e.color));
                    let b = [(x0 + 4, cy - 7), (x1 - 4, cy + 7)];
                    area.draw(&Rectangle::new(b, tint.filled())).map_err(err)?;
                    area.draw(&Rectangle::new(b, c.stroke_width(1)))
                        .map_err(err)?;
                }
                Swatch::Line => area.draw(&line()).map_err(err)?,
                Swatch::Marker(m) => draw_marker(area, mid, m, 4, c.mix(0.8).filled())?,
                Swatch::LineMarker(m) => {
                    area.draw(&line()).map_err(err)?;
                    draw_marker(area, mid, m, 4, c.filled())?;
                }
                Swatch::Band(_) | Swatch::Fill => {
                    let alpha = match e.swatch {
                        Swatch::Band(a) => a,
                        _ => BAND_ALPHA,
                    };
                    let b = [(x0, cy - 6), (x1, cy + 6)];
                    area.draw(&Rectangle::new(b, c.mix(alpha).filled()))
                        .map_err(err)?;
                    if matches!(e.swatch, Swatch::Band(_)) {
                        area.draw(&line()).map_err(err)?;
                    }
                }
            }
            names[i] = (i64::from(x1) + 6, top + i64::from(cy));
            x += entry_w(e) + 22;
        }
    }
    Ok(names)
}

/// Gap between the plotting area and tick labels (tick mark plus space).
const TICK_GAP: i64 = 5 + 4;

/// Draws the frame (legend swatches, grid, ticks), then the data through `draw`, then the
/// axes box on top, all with plotters; then every text (title, legend names, tick labels,
/// axis labels) with our glyph layout. Returns the image and its data-to-pixel mapping.
pub(super) fn render(
    f: &Frame,
    draw: impl FnOnce(&mut Chart) -> Result<(), PlotError>,
) -> Result<(RgbImage, Mapping), PlotError> {
    ensure_font();
    let (w, h) = (f.width, f.height);
    let title_h = if f.title.is_empty() {
        6
    } else {
        text_size(f.title, TITLE_PX).1 + 14
    };
    let rows = legend_rows(&f.legend, i64::from(w) - 40);
    let legend_h = rows.len() as i64 * LEGEND_ROW_H + if rows.is_empty() { 0 } else { 4 };
    let tick_h = text_size("0", TICK_PX).1;
    let desc_h = text_size("l", LABEL_PX).1;
    let y_desc_w = if f.y_label.is_empty() { 0 } else { desc_h + 8 };
    let y_area = f.y.widest_label() + TICK_GAP + 4 + y_desc_w;
    let x_area = TICK_GAP + tick_h + if f.x_label.is_empty() { 4 } else { desc_h + 12 };

    let mut buf = vec![255u8; w as usize * h as usize * 3];
    let (mapping, names) = {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let (head, plot_area) = root.split_vertically((title_h + legend_h) as i32);
        let (_, legend_area) = head.split_vertically(title_h as i32);
        let names = draw_legend(&legend_area, &f.legend, &rows, title_h)?;

        let mut chart = ChartBuilder::on(&plot_area)
            .margin_top(6)
            .margin_bottom(6)
            .margin_left(10)
            .margin_right(24)
            .x_label_area_size(x_area as i32)
            .y_label_area_size(y_area as i32)
            .build_cartesian_2d(f.x.ticked(), f.y.ticked())
            .map_err(draw_err)?;
        // Tick labels are ours (drawn below), so plotters gets empty ones.
        let no_label = |_: &f64| String::new();
        let mut mesh = chart.configure_mesh();
        mesh.x_label_formatter(&no_label)
            .y_label_formatter(&no_label)
            .bold_line_style(GRID.stroke_width(1))
            .light_line_style(GRID_MINOR.stroke_width(1))
            .axis_style(AXIS.stroke_width(1))
            .set_all_tick_mark_size(5);
        if !f.x.grid {
            mesh.disable_x_mesh();
        }
        mesh.draw().map_err(draw_err)?;

        draw(&mut chart)?;

        // Close the axes box (plotters draws the left and bottom axis only).
        let (xr, yr) = (f.x.range(), f.y.range());
        let corners = vec![(xr.start, yr.end), (xr.end, yr.end), (xr.end, yr.start)];
        let frame = PathElement::new(corners, AXIS.stroke_width(1));
        chart
            .draw_series(std::iter::once(frame))
            .map_err(draw_err)?;
        root.present().map_err(draw_err)?;
        let mapping = Mapping {
            coord: chart.as_coord_spec().clone(),
            x_log: f.x.log,
            y_log: f.y.log,
            area: chart.plotting_area().get_pixel_range(),
        };
        (mapping, names)
    };
    let mut img = RgbImage::from_raw(w, h, buf)
        .ok_or_else(|| PlotError::Draw("chart buffer has the wrong size".into()))?;

    let black = [0, 0, 0];
    let text = [20, 20, 20];
    let (ax, ay) = (&mapping.area.0, &mapping.area.1);
    let (left, bottom) = (i64::from(ax.start), i64::from(ay.end));
    if !f.title.is_empty() {
        draw_text(
            &mut img,
            i64::from(w) / 2,
            8,
            f.title,
            TITLE_PX,
            black,
            Align::Center,
        );
    }
    for (e, &(x, cy)) in f.legend.iter().zip(&names) {
        let top = cy - text_size(&e.name, LEGEND_PX).1 / 2;
        draw_text(&mut img, x, top, &e.name, LEGEND_PX, text, Align::Left);
    }
    for (v, label) in &f.x.ticks {
        let (px, _) = mapping.coord.translate(&(*v, f.y.lo));
        let y = bottom + TICK_GAP - 1;
        draw_text(
            &mut img,
            i64::from(px),
            y,
            label,
            TICK_PX,
            text,
            Align::Center,
        );
    }
    for (v, label) in &f.y.ticks {
        let (_, py) = mapping.coord.translate(&(f.x.lo, *v));
        let y = i64::from(py) - tick_h / 2;
        draw_text(
            &mut img,
            left - TICK_GAP,
            y,
            label,
            TICK_PX,
            text,
            Align::Right,
        );
    }
    let mid_x = (i64::from(ax.start) + i64::from(ax.end)) / 2;
    let x_desc_y = bottom + TICK_GAP + tick_h + 8;
    draw_text(
        &mut img,
        mid_x,
        x_desc_y,
        f.x_label,
        LABEL_PX,
        black,
        Align::Center,
    );
    let mid_y = (i64::from(ay.start) + i64::from(ay.end)) / 2;
    let y_desc_x = left - TICK_GAP - f.y.widest_label() - 8 - desc_h;
    draw_text_up(&mut img, y_desc_x, mid_y, f.y_label, LABEL_PX, black);
    if f.no_data {
        let y = mid_y - desc_h / 2;
        draw_text(
            &mut img,
            mid_x,
            y,
            "no data",
            LABEL_PX,
            [120, 120, 120],
            Align::Center,
        );
    }
    Ok((img, mapping))
}

/// Error for a value that cannot be drawn, naming where it sits.
pub(super) fn bad_value(what: &str, index: usize, axis: &str, v: f64, log: bool) -> PlotError {
    let why = if log && v.is_finite() {
        "a log axis needs values > 0"
    } else {
        "values must be finite"
    };
    PlotError::NonFinite(format!("{what}: point {index} has {axis} = {v} ({why})"))
}
