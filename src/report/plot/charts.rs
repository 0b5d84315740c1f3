//! Line and scatter charts, and the frame every chart shares (title, legend strip, axes with
//! our tick choice, grid), drawn with `plotters` on a bitmap.

use std::ops::Range;

use image::RgbImage;
use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::series::LineSeries as PlotLine;

use super::text::{draw_err, draw_text, draw_text_up, ensure_font, text_size, Align};
use super::ticks::{
    finite_range, format_log_ticks, format_sig, format_tick, log_ticks, nice_ticks, padded,
    padded_log,
};
use super::{PlotError, PLOT_HEIGHT, PLOT_WIDTH};

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
}

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

/// Options of [`line_plot_with`] beyond the series and labels.
#[derive(Debug, Clone)]
pub struct ChartOptions {
    /// Decade-ticked log x axis (every x must be > 0).
    pub log_x: bool,
    /// Decade-ticked log y axis (every y must be > 0).
    pub log_y: bool,
    /// Canvas width in pixels.
    pub width: u32,
    /// Canvas height in pixels.
    pub height: u32,
}

impl Default for ChartOptions {
    fn default() -> Self {
        ChartOptions {
            log_x: false,
            log_y: false,
            width: PLOT_WIDTH,
            height: PLOT_HEIGHT,
        }
    }
}

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

/// Line plot with markers (shape cycles per series), legend, axes and nice ticks; `log_x`
/// gives a decade-ticked log x axis. Every value must be finite, and every x > 0 on a log
/// axis ([`PlotError::NonFinite`] otherwise).
pub fn line_plot(
    series: &[LineSeries],
    log_x: bool,
    title: &str,
    x_label: &str,
    y_label: &str,
) -> Result<RgbImage, PlotError> {
    let opts = ChartOptions {
        log_x,
        ..ChartOptions::default()
    };
    line_plot_with(series, &opts, title, x_label, y_label)
}

/// [`line_plot`] with the options of [`ChartOptions`] (log y, canvas size).
pub fn line_plot_with(
    series: &[LineSeries],
    opts: &ChartOptions,
    title: &str,
    x_label: &str,
    y_label: &str,
) -> Result<RgbImage, PlotError> {
    line_layout(series, opts, title, x_label, y_label).map(|(img, _)| img)
}

fn check_size(opts: &ChartOptions, what: &str) -> Result<(), PlotError> {
    if opts.width < 200 || opts.height < 150 {
        return Err(PlotError::Shape(format!(
            "{what}: canvas {}x{} is too small for axes and labels (at least 200x150)",
            opts.width, opts.height
        )));
    }
    Ok(())
}

fn axis_for(range: Option<(f64, f64)>, log: bool, pad: f64) -> Axis {
    if log {
        let (lo, hi) = padded_log(range, pad);
        Axis::log(lo, hi)
    } else {
        let (lo, hi) = padded(range, pad);
        Axis::linear(lo, hi, 6)
    }
}

pub(super) fn line_layout(
    series: &[LineSeries],
    opts: &ChartOptions,
    title: &str,
    x_label: &str,
    y_label: &str,
) -> Result<(RgbImage, Mapping), PlotError> {
    check_size(opts, "line_plot")?;
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
        let what = format!("line_plot: series '{}'", s.name);
        for (i, (&x, &y)) in s.x.iter().zip(&s.y).enumerate() {
            if !x.is_finite() || (opts.log_x && x <= 0.0) {
                return Err(bad_value(&what, i, "x", x, opts.log_x));
            }
            if !y.is_finite() || (opts.log_y && y <= 0.0) {
                return Err(bad_value(&what, i, "y", y, opts.log_y));
            }
        }
    }
    if series.iter().all(|s| s.x.is_empty()) {
        return Err(PlotError::Empty(
            "line_plot: every series has zero points".into(),
        ));
    }
    let xs = finite_range(series.iter().flat_map(|s| s.x.iter().copied()));
    let ys = finite_range(series.iter().flat_map(|s| s.y.iter().copied()));
    let legend = series
        .iter()
        .enumerate()
        .map(|(i, s)| LegendEntry {
            name: s.name.clone(),
            color: s.color,
            swatch: Swatch::LineMarker(MARKERS[i % MARKERS.len()]),
        })
        .collect();
    let frame = Frame {
        width: opts.width,
        height: opts.height,
        title,
        x_label,
        y_label,
        legend,
        x: axis_for(xs, opts.log_x, 0.04),
        y: axis_for(ys, opts.log_y, 0.08),
        no_data: false,
    };
    let (fx, fy) = (frame.x.clone(), frame.y.clone());
    render(&frame, |chart| {
        for (i, s) in series.iter().enumerate() {
            let c = rgb(s.color);
            let pts: Vec<(f64, f64)> =
                s.x.iter()
                    .zip(&s.y)
                    .map(|(&x, &y)| (fx.coord(x), fy.coord(y)))
                    .collect();
            chart
                .draw_series(PlotLine::new(pts.clone(), c.stroke_width(2)))
                .map_err(draw_err)?;
            let m = MARKERS[i % MARKERS.len()];
            for p in pts {
                draw_marker(chart.plotting_area(), p, m, 4, c.filled())?;
            }
        }
        Ok(())
    })
}

const SCATTER_COLOR: [u8; 3] = [31, 119, 180];
const FIT_COLOR: [u8; 3] = [214, 39, 40];

/// Scatter plot of `(x[i], y[i])` (semi-transparent dots so density shows), with the fitted
/// line `y = a x + b` across the plot when `fit` is `Some((a, b))`. Every point must be
/// finite ([`PlotError::NonFinite`] otherwise); a non-finite fit (undefined, e.g. fewer than
/// two distinct x) is not drawn and the legend says so. Axis ranges follow the points only.
pub fn scatter_plot(
    x: &[f64],
    y: &[f64],
    fit: Option<(f64, f64)>,
    title: &str,
    x_label: &str,
    y_label: &str,
) -> Result<RgbImage, PlotError> {
    scatter_layout(x, y, fit, title, x_label, y_label).map(|(img, _)| img)
}

/// The part of the line `y = a x + b` inside the box `[x0, x1] x [y0, y1]`, if any.
fn clip_line(
    a: f64,
    b: f64,
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
) -> Option<[(f64, f64); 2]> {
    // Parametrise by x; narrow [x0, x1] to where y stays inside [y0, y1].
    let (mut lo, mut hi) = (x0, x1);
    if a == 0.0 {
        if b < y0 || b > y1 {
            return None;
        }
    } else {
        let (xa, xb) = ((y0 - b) / a, (y1 - b) / a);
        lo = lo.max(xa.min(xb));
        hi = hi.min(xa.max(xb));
    }
    (lo < hi).then_some([(lo, a * lo + b), (hi, a * hi + b)])
}

pub(super) fn scatter_layout(
    x: &[f64],
    y: &[f64],
    fit: Option<(f64, f64)>,
    title: &str,
    x_label: &str,
    y_label: &str,
) -> Result<(RgbImage, Mapping), PlotError> {
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
    for (i, (&a, &b)) in x.iter().zip(y).enumerate() {
        if !a.is_finite() {
            return Err(bad_value("scatter_plot", i, "x", a, false));
        }
        if !b.is_finite() {
            return Err(bad_value("scatter_plot", i, "y", b, false));
        }
    }
    let (x_lo, x_hi) = padded(finite_range(x.iter().copied()), 0.04);
    let (y_lo, y_hi) = padded(finite_range(y.iter().copied()), 0.06);
    let mut legend = vec![LegendEntry {
        name: format!("data (n={})", x.len()),
        color: SCATTER_COLOR,
        swatch: Swatch::Marker(Marker::Circle),
    }];
    let line = match fit {
        Some((a, b)) if a.is_finite() && b.is_finite() => {
            let sign = if b < 0.0 { "−" } else { "+" };
            legend.push(LegendEntry {
                name: format!("fit: y = {}x {sign} {}", format_sig(a), format_sig(b.abs())),
                color: FIT_COLOR,
                swatch: Swatch::Line,
            });
            clip_line(a, b, (x_lo, x_hi), (y_lo, y_hi))
        }
        Some(_) => {
            legend.push(LegendEntry {
                name: "fit: undefined".into(),
                color: [150, 150, 150],
                swatch: Swatch::Line,
            });
            None
        }
        None => None,
    };
    let frame = Frame {
        width: PLOT_WIDTH,
        height: PLOT_HEIGHT,
        title,
        x_label,
        y_label,
        legend,
        x: Axis::linear(x_lo, x_hi, 6),
        y: Axis::linear(y_lo, y_hi, 6),
        no_data: false,
    };
    render(&frame, |chart| {
        let dot = rgb(SCATTER_COLOR).mix(0.55).filled();
        for (&a, &b) in x.iter().zip(y) {
            draw_marker(chart.plotting_area(), (a, b), Marker::Circle, 3, dot)?;
        }
        if let Some(seg) = line {
            let l = PathElement::new(seg.to_vec(), rgb(FIT_COLOR).stroke_width(2));
            chart.draw_series(std::iter::once(l)).map_err(draw_err)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, color: [u8; 3], x: Vec<f64>, y: Vec<f64>) -> LineSeries {
        LineSeries {
            name: name.into(),
            color,
            x,
            y,
        }
    }

    fn anti_aliased_ink(img: &RgbImage, xs: Range<u32>, ys: Range<u32>) -> (usize, usize) {
        let (mut ink, mut grey) = (0, 0);
        for y in ys {
            for x in xs.clone() {
                let p = img.get_pixel(x, y).0;
                ink += usize::from(p != [255, 255, 255]);
                grey += usize::from(p[0] == p[1] && p[1] == p[2] && (40..215).contains(&p[0]));
            }
        }
        (ink, grey)
    }

    #[test]
    fn line_plot_markers_at_points() {
        let s = series(
            "a",
            [200, 0, 0],
            vec![1.0, 10.0, 100.0],
            vec![0.0, 1.0, 0.5],
        );
        for log_x in [false, true] {
            let opts = ChartOptions {
                log_x,
                ..ChartOptions::default()
            };
            let (img, m) = line_layout(std::slice::from_ref(&s), &opts, "t", "x", "y").unwrap();
            assert_eq!((img.width(), img.height()), (PLOT_WIDTH, PLOT_HEIGHT));
            for (x, y) in [(1.0, 0.0), (10.0, 1.0), (100.0, 0.5)] {
                let (px, py) = m.px(x, y);
                assert_eq!(
                    img.get_pixel(px, py).0,
                    [200, 0, 0],
                    "log={log_x} ({x},{y})"
                );
            }
            // On the log axis 10 sits half way between 1 and 100.
            if log_x {
                let (a, b, c) = (m.px(1.0, 0.0).0, m.px(10.0, 0.0).0, m.px(100.0, 0.0).0);
                assert!((i64::from(b) * 2 - i64::from(a) - i64::from(c)).abs() <= 1);
            }
        }
    }

    #[test]
    fn line_plot_log_y_and_size() {
        let s = series("a", [0, 90, 0], vec![0.0, 1.0, 2.0], vec![1e-4, 1e-2, 1.0]);
        let opts = ChartOptions {
            log_y: true,
            width: 640,
            height: 400,
            ..ChartOptions::default()
        };
        let (img, m) = line_layout(std::slice::from_ref(&s), &opts, "", "x", "y").unwrap();
        assert_eq!((img.width(), img.height()), (640, 400));
        let ys: Vec<u32> = [1e-4, 1e-2, 1.0].iter().map(|&y| m.px(0.0, y).1).collect();
        assert!((i64::from(ys[1]) * 2 - i64::from(ys[0]) - i64::from(ys[2])).abs() <= 1);
        let tiny = ChartOptions {
            width: 50,
            ..ChartOptions::default()
        };
        assert!(matches!(
            line_plot_with(&[s], &tiny, "", "", ""),
            Err(PlotError::Shape(_))
        ));
    }

    #[test]
    fn line_plot_refuses_what_it_cannot_draw() {
        let nan = series(
            "fullgrad",
            [0; 3],
            vec![1.0, 2.0, 3.0],
            vec![0.1, f64::NAN, 0.3],
        );
        let err = line_plot(&[nan], false, "", "", "").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, PlotError::NonFinite(_)), "{msg}");
        assert!(msg.contains("'fullgrad'") && msg.contains("point 1") && msg.contains("y = NaN"));
        let neg = series("scale", [0; 3], vec![1.0, -1.0], vec![0.1, 0.2]);
        let msg = line_plot(std::slice::from_ref(&neg), true, "", "", "")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("log axis") && msg.contains("x = -1"), "{msg}");
        // The same series is fine on a linear axis.
        assert!(line_plot(&[neg], false, "", "", "").is_ok());
    }

    #[test]
    fn line_plot_shape_and_empty_errors() {
        let s = series("fullgrad", [0; 3], vec![1.0, 2.0], vec![1.0]);
        let err = line_plot(&[s], false, "", "", "").unwrap_err();
        assert!(matches!(err, PlotError::Shape(_)) && err.to_string().contains("fullgrad"));
        assert!(matches!(
            line_plot(&[], false, "", "", ""),
            Err(PlotError::Empty(_))
        ));
        let empty = series("a", [0; 3], vec![], vec![]);
        assert!(matches!(
            line_plot(&[empty], false, "", "", ""),
            Err(PlotError::Empty(_))
        ));
    }

    #[test]
    fn legend_and_labels_render_anti_aliased() {
        let a = series("vanilla", [214, 96, 77], vec![0.0, 1.0], vec![0.2, 0.4]);
        let b = series("zero-bias", [67, 147, 195], vec![0.0, 1.0], vec![0.3, 0.1]);
        let opts = ChartOptions::default();
        let (img, m) = line_layout(&[a, b], &opts, "Title", "x label", "y label").unwrap();
        let (left, top) = (m.area.0.start as u32, m.area.1.start as u32);
        let bottom = m.area.1.end as u32;
        // Legend strip (between title and plot): names in grey-edged glyphs and both colours.
        let (ink, grey) = anti_aliased_ink(&img, 0..PLOT_WIDTH, 30..top);
        assert!(ink > 150 && grey > 20, "legend ink {ink} grey {grey}");
        let strip: Vec<[u8; 3]> = (30..top)
            .flat_map(|y| (0..PLOT_WIDTH).map(move |x| (x, y)))
            .map(|(x, y)| img.get_pixel(x, y).0)
            .collect();
        assert!(strip.contains(&[214, 96, 77]) && strip.contains(&[67, 147, 195]));
        // y tick labels and the turned y label left of the axis; x labels below it.
        let (ink, grey) = anti_aliased_ink(&img, 0..left - 6, top..bottom);
        assert!(ink > 100 && grey > 20, "y side ink {ink} grey {grey}");
        let (ink, grey) = anti_aliased_ink(&img, left..PLOT_WIDTH, bottom + 7..PLOT_HEIGHT);
        assert!(ink > 100 && grey > 20, "x side ink {ink} grey {grey}");
    }

    #[test]
    fn scatter_points_and_fit() {
        let x: Vec<f64> = (0..50).map(f64::from).collect();
        let y: Vec<f64> = x.iter().map(|v| 2.0 * v + 1.0).collect();
        let (img, m) = scatter_layout(&x, &y, Some((2.0, 1.0)), "t", "x", "y").unwrap();
        assert_eq!((img.width(), img.height()), (PLOT_WIDTH, PLOT_HEIGHT));
        // The fit passes through every point, so fit red is at or next to each point centre.
        let (px, py) = m.px(20.0, 41.0);
        let near = (0..9).any(|k| img.get_pixel(px + k % 3 - 1, py + k / 3 - 1).0 == FIT_COLOR);
        assert!(near);
        let (img, m) = scatter_layout(&x, &y, None, "t", "x", "y").unwrap();
        let (px, py) = m.px(20.0, 41.0);
        assert_ne!(img.get_pixel(px, py).0, [255, 255, 255]);
        assert!(!img.pixels().any(|p| p.0 == FIT_COLOR));
        // An undefined fit is not drawn; the figure still renders.
        let (img, _) = scatter_layout(&x, &y, Some((f64::NAN, 0.0)), "", "", "").unwrap();
        assert!(!img.pixels().any(|p| p.0 == FIT_COLOR));
    }

    #[test]
    fn scatter_refuses_non_finite_points() {
        let err = scatter_plot(&[0.0, 1.0], &[1.0, f64::INFINITY], None, "", "", "").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, PlotError::NonFinite(_)));
        assert!(msg.contains("point 1") && msg.contains("y = inf"), "{msg}");
        assert!(matches!(
            scatter_plot(&[1.0], &[], None, "", "", ""),
            Err(PlotError::Shape(_))
        ));
        assert!(matches!(
            scatter_plot(&[], &[], None, "", "", ""),
            Err(PlotError::Empty(_))
        ));
    }

    #[test]
    fn fit_line_is_clipped_to_the_box() {
        let seg = clip_line(1e12, 0.0, (-1.0, 1.0), (-2.0, 2.0)).unwrap();
        for (x, y) in seg {
            assert!((-1.0..=1.0).contains(&x) && (-2.0 - 1e-9..=2.0 + 1e-9).contains(&y));
        }
        assert!(clip_line(0.0, 5.0, (0.0, 1.0), (0.0, 1.0)).is_none());
        assert_eq!(
            clip_line(1.0, 0.0, (0.0, 4.0), (0.0, 2.0)),
            Some([(0.0, 0.0), (2.0, 2.0)])
        );
        let img = scatter_plot(&[0.0, 1.0], &[0.0, 1.0], Some((1e12, 0.0)), "", "", "").unwrap();
        assert_eq!(img.height(), PLOT_HEIGHT);
    }
}
