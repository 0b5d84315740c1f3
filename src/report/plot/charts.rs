//! Line and scatter charts (survey curves, logit regressions, Fig. 8's medians with their
//! percentile bands), drawn with `plotters` in the shared `frame`.

use image::RgbImage;
use plotters::prelude::*;
use plotters::series::LineSeries as PlotLine;

use super::error::PlotError;
use super::frame::{
    bad_value, draw_marker, render, rgb, Axis, Frame, LegendEntry, Mapping, Marker, Swatch,
    BAND_ALPHA, MARKERS,
};
use super::frame::{PLOT_HEIGHT, PLOT_WIDTH};
use super::text::draw_err;
use super::ticks::{finite_range, format_sig, padded, padded_log};

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

/// A filled area between two curves over the same x (a percentile range around a median):
/// `lo` and `hi` must have `x`'s length; which of the two is larger may change along x.
#[derive(Debug, Clone)]
pub struct Band {
    /// Legend name.
    pub name: String,
    /// Colour; the band is a translucent shade of it.
    pub color: [u8; 3],
    /// X values.
    pub x: Vec<f64>,
    /// One edge of the band, same length as `x`.
    pub lo: Vec<f64>,
    /// The other edge, same length as `x`.
    pub hi: Vec<f64>,
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
    line_layout(series, &[], opts, title, x_label, y_label).map(|(img, _)| img)
}

/// [`line_plot_with`] over translucent [`Band`]s, drawn behind the lines in order, each with
/// a legend entry after the series'. Every band value must be finite (and > 0 on a log
/// axis), like the series'.
pub fn line_plot_bands(
    series: &[LineSeries],
    bands: &[Band],
    opts: &ChartOptions,
    title: &str,
    x_label: &str,
    y_label: &str,
) -> Result<RgbImage, PlotError> {
    line_layout(series, bands, opts, title, x_label, y_label).map(|(img, _)| img)
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
    bands: &[Band],
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
    for b in bands {
        if b.lo.len() != b.x.len() || b.hi.len() != b.x.len() {
            return Err(PlotError::Shape(format!(
                "line_plot: band '{}' has {} x values but {} lower and {} upper values",
                b.name,
                b.x.len(),
                b.lo.len(),
                b.hi.len()
            )));
        }
        let what = format!("line_plot: band '{}'", b.name);
        for (i, ((&x, &lo), &hi)) in b.x.iter().zip(&b.lo).zip(&b.hi).enumerate() {
            if !x.is_finite() || (opts.log_x && x <= 0.0) {
                return Err(bad_value(&what, i, "x", x, opts.log_x));
            }
            for v in [lo, hi] {
                if !v.is_finite() || (opts.log_y && v <= 0.0) {
                    return Err(bad_value(&what, i, "y", v, opts.log_y));
                }
            }
        }
    }
    if series.iter().all(|s| s.x.is_empty()) {
        return Err(PlotError::Empty(
            "line_plot: every series has zero points".into(),
        ));
    }
    let xs = finite_range(
        series
            .iter()
            .flat_map(|s| s.x.iter().copied())
            .chain(bands.iter().flat_map(|b| b.x.iter().copied())),
    );
    let ys = finite_range(
        series
            .iter()
            .flat_map(|s| s.y.iter().copied())
            .chain(bands.iter().flat_map(|b| b.lo.iter().chain(&b.hi).copied())),
    );
    let legend = series
        .iter()
        .enumerate()
        .map(|(i, s)| LegendEntry {
            name: s.name.clone(),
            color: s.color,
            swatch: Swatch::LineMarker(MARKERS[i % MARKERS.len()]),
        })
        .chain(bands.iter().map(|b| LegendEntry {
            name: b.name.clone(),
            color: b.color,
            swatch: Swatch::Fill,
        }))
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
        for b in bands.iter().filter(|b| !b.x.is_empty()) {
            // The outline: along `hi`, back along `lo`.
            let outline: Vec<(f64, f64)> =
                b.x.iter()
                    .zip(&b.hi)
                    .chain(b.x.iter().zip(&b.lo).rev())
                    .map(|(&x, &y)| (fx.coord(x), fy.coord(y)))
                    .collect();
            let fill = rgb(b.color).mix(BAND_ALPHA).filled();
            chart
                .draw_series(std::iter::once(Polygon::new(outline, fill)))
                .map_err(draw_err)?;
        }
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
    use std::ops::Range;

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
            let (img, m) =
                line_layout(std::slice::from_ref(&s), &[], &opts, "t", "x", "y").unwrap();
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
    fn band_fills_between_its_edges_behind_the_line() {
        // Median 0 at every x, band from -1 to +1 growing to -2..+2 at x = 4.
        let x: Vec<f64> = (0..5).map(f64::from).collect();
        let median = series("median", [31, 119, 180], x.clone(), vec![0.0; 5]);
        let band = Band {
            name: "10th-90th pct".into(),
            color: [31, 119, 180],
            x: x.clone(),
            lo: vec![-1.0, -1.0, -1.0, -1.0, -2.0],
            hi: vec![1.0, 1.0, 1.0, 1.0, 2.0],
        };
        // A second curve far above the band widens the y range, leaving white around it.
        let other = series("other", [255, 127, 14], x.clone(), vec![6.0; 5]);
        let opts = ChartOptions::default();
        let all = [median.clone(), other.clone()];
        let (img, m) =
            line_layout(&all, std::slice::from_ref(&band), &opts, "t", "x", "y").unwrap();
        let shade = |p: [u8; 3]| {
            [31u8, 119, 180].iter().zip(p).all(|(&c, p)| {
                let want = f64::from(c) * BAND_ALPHA + 255.0 * (1.0 - BAND_ALPHA);
                (f64::from(p) - want).abs() <= 1.5
            })
        };
        for (xv, yv) in [(1.5, 0.6), (2.5, -0.6), (3.9, 1.7), (3.9, -1.7)] {
            let (px, py) = m.px(xv, yv);
            assert!(
                shade(img.get_pixel(px, py).0),
                "({xv},{yv}): {:?}",
                img.get_pixel(px, py)
            );
        }
        // Outside the band, above and below it: white.
        for (xv, yv) in [(1.5, 1.5), (1.5, -1.5), (2.5, 3.5), (0.5, -3.0)] {
            let (px, py) = m.px(xv, yv);
            assert_eq!(img.get_pixel(px, py).0, [255, 255, 255], "({xv},{yv})");
        }
        // The median line is drawn over the band.
        let (px, py) = m.px(2.5, 0.0);
        assert_eq!(img.get_pixel(px, py).0, [31, 119, 180]);
        // Legend: a band swatch besides the series'.
        let top = m.area.1.start as u32;
        let head = (0..top).flat_map(|y| (0..img.width()).map(move |x| (x, y)));
        assert!(head.map(|(x, y)| img.get_pixel(x, y).0).any(shade));
        // Without the band the same pixels are white.
        let (img, m) = line_layout(&all, &[], &opts, "t", "x", "y").unwrap();
        let (px, py) = m.px(1.5, 0.6);
        assert_eq!(img.get_pixel(px, py).0, [255, 255, 255]);
        // Bad bands are refused with their name.
        let mut short = band.clone();
        short.hi.pop();
        let err = line_plot_bands(&all, &[short], &opts, "", "", "").unwrap_err();
        assert!(matches!(err, PlotError::Shape(_)) && err.to_string().contains("10th-90th"));
        let mut nan = band;
        nan.lo[2] = f64::NAN;
        let err = line_plot_bands(&all, &[nan], &opts, "", "", "").unwrap_err();
        assert!(matches!(err, PlotError::NonFinite(_)), "{err}");
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
        let (img, m) = line_layout(std::slice::from_ref(&s), &[], &opts, "", "x", "y").unwrap();
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
        let (img, m) = line_layout(&[a, b], &[], &opts, "Title", "x label", "y label").unwrap();
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
