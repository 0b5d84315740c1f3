//! Tukey box statistics (numpy's percentile definition) and grouped box plots (paper
//! Figs. 5, 6 and 9), drawn with `plotters`.

use image::RgbImage;
use plotters::element::DashedPathElement;
use plotters::prelude::*;

use super::charts::{bad_value, render, rgb, Axis, Frame, LegendEntry, Mapping, Swatch};
use super::colour::tint;
use super::text::{draw_err, text_size};
use super::ticks::{finite_range, padded};
use super::{PlotError, PLOT_HEIGHT, PLOT_WIDTH};

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

/// Where each box landed, so tests can probe the drawing: x coordinate (in category units,
/// category `i` spans `[i, i + 1]`) of each (category, series) box centre.
type BoxCentres = Vec<Vec<f64>>;

/// Grouped Tukey box plots: one slot per category, one box per series inside it (median,
/// quartiles, whiskers at 1.5 IQR, outliers as dots), legend of the series, y ticks, dashed
/// y = 0 line when 0 is in range. The canvas widens beyond [`PLOT_WIDTH`] when many
/// categories need room. Every series must have one group per category; groups may be empty
/// (no box drawn), but every value must be finite ([`PlotError::NonFinite`] otherwise).
pub fn box_plot(
    categories: &[String],
    series: &[BoxSeries],
    title: &str,
    x_label: &str,
    y_label: &str,
) -> Result<RgbImage, PlotError> {
    box_layout(categories, series, title, x_label, y_label).map(|(img, _, _)| img)
}

fn box_layout(
    categories: &[String],
    series: &[BoxSeries],
    title: &str,
    x_label: &str,
    y_label: &str,
) -> Result<(RgbImage, Mapping, BoxCentres), PlotError> {
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
        for (g, cat) in s.groups.iter().zip(categories) {
            if let Some((i, &v)) = g.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                let what = format!("box_plot: series '{}', category '{cat}'", s.name);
                return Err(bad_value(&what, i, "value", v, false));
            }
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

    let n_cat = categories.len();
    let n_ser = series.len() as i64;
    let min_slot = (n_ser * 20 + 12).max(28);
    let width = (i64::from(PLOT_WIDTH)).max(160 + n_cat as i64 * min_slot) as u32;
    // Label every k-th category so labels never collide (the plot spans ~width - 130 px).
    let slot_px = (f64::from(width) - 130.0) / n_cat as f64;
    let widest = categories
        .iter()
        .map(|s| text_size(s, 13.0).0)
        .max()
        .unwrap_or(0);
    let every = ((widest + 8) as f64 / slot_px).ceil().max(1.0) as usize;
    let x = Axis {
        lo: 0.0,
        hi: n_cat as f64,
        log: false,
        ticks: categories
            .iter()
            .enumerate()
            .filter(|(i, _)| i % every == 0)
            .map(|(i, c)| (i as f64 + 0.5, c.clone()))
            .collect(),
        minor: Vec::new(),
        grid: false,
    };
    let legend = series
        .iter()
        .map(|s| LegendEntry {
            name: s.name.clone(),
            color: s.color,
            swatch: Swatch::Box,
        })
        .collect();
    let frame = Frame {
        width,
        height: PLOT_HEIGHT,
        title,
        x_label,
        y_label,
        legend,
        x,
        y: Axis::linear(y_lo, y_hi, 6),
        no_data: range.is_none(),
    };

    let group_w = 0.8;
    let sub = group_w / n_ser as f64;
    let half = sub * 0.75 / 2.0;
    let centres: BoxCentres = (0..n_cat)
        .map(|ci| {
            (0..series.len())
                .map(|si| ci as f64 + 0.1 + sub * (si as f64 + 0.5))
                .collect()
        })
        .collect();
    let (img, mapping) = render(&frame, |chart| {
        let e = draw_err;
        // Light separators between categories.
        let sep = RGBColor(236, 236, 236).stroke_width(1);
        let seps =
            (1..n_cat).map(|i| PathElement::new(vec![(i as f64, y_lo), (i as f64, y_hi)], sep));
        chart.draw_series(seps).map_err(e)?;
        if y_lo <= 0.0 && y_hi >= 0.0 {
            let zero = DashedPathElement::new(
                vec![(0.0, 0.0), (n_cat as f64, 0.0)],
                6,
                4,
                RGBColor(90, 90, 90).stroke_width(1),
            );
            chart.draw_series(std::iter::once(zero)).map_err(e)?;
        }
        for (si, s) in series.iter().enumerate() {
            let edge = rgb(s.color);
            for (ci, st) in stats[si].iter().enumerate() {
                let Some(b) = st else { continue };
                let cx = centres[ci][si];
                let (x0, x1) = (cx - half, cx + half);
                let cap = half / 2.0;
                let line = |pts: Vec<(f64, f64)>, w: u32, c: RGBColor| {
                    PathElement::new(pts, c.stroke_width(w))
                };
                let whisk = [
                    line(vec![(cx, b.whisker_lo), (cx, b.q1)], 1, edge),
                    line(vec![(cx, b.q3), (cx, b.whisker_hi)], 1, edge),
                    line(
                        vec![(cx - cap, b.whisker_lo), (cx + cap, b.whisker_lo)],
                        1,
                        edge,
                    ),
                    line(
                        vec![(cx - cap, b.whisker_hi), (cx + cap, b.whisker_hi)],
                        1,
                        edge,
                    ),
                ];
                chart.draw_series(whisk).map_err(e)?;
                let corners = [(x0, b.q3), (x1, b.q1)];
                let fill = rgb(tint(s.color)).filled();
                chart
                    .draw_series([
                        Rectangle::new(corners, fill),
                        Rectangle::new(corners, edge.stroke_width(1)),
                    ])
                    .map_err(e)?;
                let med = line(vec![(x0, b.median), (x1, b.median)], 2, BLACK);
                chart.draw_series(std::iter::once(med)).map_err(e)?;
                let dots = b
                    .outliers
                    .iter()
                    .map(|&o| Circle::new((cx, o), 2, edge.filled()));
                chart.draw_series(dots).map_err(e)?;
            }
        }
        Ok(())
    })?;
    Ok((img, mapping, centres))
}
