//! Tukey box statistics (numpy's percentile definition) and grouped box plots (paper
//! Figs. 5, 6 and 9), drawn with `plotters`, optionally with horizontal reference lines
//! (Fig. 6's reference methods: their median across the plot over a band of their quartiles).

use image::RgbImage;
use plotters::element::DashedPathElement;
use plotters::prelude::*;

use super::colour::tint;
use super::error::PlotError;
use super::frame::{
    bad_value, render, rgb, Axis, Frame, LegendEntry, Mapping, Swatch, REF_BAND_ALPHA,
};
use super::frame::{PLOT_HEIGHT, PLOT_WIDTH};
use super::text::{draw_err, text_size};
use super::ticks::{finite_range, padded};

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

/// A method drawn as a horizontal line across a box plot rather than as boxes (paper Fig. 6:
/// one value per image, not per layer): the median of `samples`, over a light band from the
/// first to the third quartile.
#[derive(Debug, Clone)]
pub struct RefLine {
    /// Legend name.
    pub name: String,
    /// Line colour; the band is a translucent shade of it.
    pub color: [u8; 3],
    /// The method's samples; every value must be finite, and there must be at least one.
    pub samples: Vec<f64>,
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
    box_layout(categories, series, &[], title, x_label, y_label).map(|(img, _, _)| img)
}

/// [`box_plot`] with reference lines: each [`RefLine`] is drawn across the whole plot at its
/// median, over a translucent band from its first to its third quartile (behind the boxes),
/// with a legend entry after the series'. A reference line without samples, or with a
/// non-finite one, is an error.
pub fn box_plot_with_refs(
    categories: &[String],
    series: &[BoxSeries],
    refs: &[RefLine],
    title: &str,
    x_label: &str,
    y_label: &str,
) -> Result<RgbImage, PlotError> {
    box_layout(categories, series, refs, title, x_label, y_label).map(|(img, _, _)| img)
}

fn box_layout(
    categories: &[String],
    series: &[BoxSeries],
    refs: &[RefLine],
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
    let mut ref_stats = Vec::with_capacity(refs.len());
    for r in refs {
        let what = format!("box_plot: reference '{}'", r.name);
        if let Some((i, &v)) = r.samples.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(bad_value(&what, i, "value", v, false));
        }
        let Some(b) = box_stats(&r.samples) else {
            return Err(PlotError::Empty(format!("{what} has no samples")));
        };
        ref_stats.push(b);
    }
    let stats: Vec<Vec<Option<BoxStats>>> = series
        .iter()
        .map(|s| s.groups.iter().map(|g| box_stats(g)).collect())
        .collect();
    let range = finite_range(
        stats
            .iter()
            .flatten()
            .flatten()
            .flat_map(|b| {
                b.outliers
                    .iter()
                    .copied()
                    .chain([b.whisker_lo, b.whisker_hi])
            })
            .chain(ref_stats.iter().flat_map(|b| [b.q1, b.q3])),
    );
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
        .chain(refs.iter().map(|r| LegendEntry {
            name: r.name.clone(),
            color: r.color,
            swatch: Swatch::Band(REF_BAND_ALPHA),
        }))
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
        // Reference bands behind the boxes, their median lines over them (drawn below).
        let span = n_cat as f64;
        let bands = refs.iter().zip(&ref_stats).map(|(r, b)| {
            Rectangle::new(
                [(0.0, b.q3), (span, b.q1)],
                rgb(r.color).mix(REF_BAND_ALPHA).filled(),
            )
        });
        chart.draw_series(bands).map_err(e)?;
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
        let lines = refs.iter().zip(&ref_stats).map(|(r, b)| {
            PathElement::new(
                vec![(0.0, b.median), (span, b.median)],
                rgb(r.color).stroke_width(2),
            )
        });
        chart.draw_series(lines).map_err(e)?;
        Ok(())
    })?;
    Ok((img, mapping, centres))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approx(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * (1.0 + a.abs().max(b.abs()))
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
    fn box_statistics_match_numpy_more_cases() {
        // numpy.percentile([0.3, -1.2, 5.5, 2.25, 2.25, 8.0, -0.7, 40.0], [25, 50, 75])
        //   = [0.04999999999999999, 2.25, 6.125]
        let b = box_stats(&[0.3, -1.2, 5.5, 2.25, 2.25, 8.0, -0.7, 40.0]).unwrap();
        assert!(approx(b.q1, 0.05) && approx(b.median, 2.25) && approx(b.q3, 6.125));
        // IQR 6.075: fences -9.0625 and 15.2375.
        assert_eq!((b.whisker_lo, b.whisker_hi), (-1.2, 8.0));
        assert_eq!(b.outliers, vec![40.0]);
        // numpy.percentile([10, 20, 30, 40, 50, 60], [25, 50, 75]) = [22.5, 35.0, 47.5]
        let b = box_stats(&[60.0, 10.0, 30.0, 20.0, 50.0, 40.0]).unwrap();
        assert!(approx(b.q1, 22.5) && approx(b.median, 35.0) && approx(b.q3, 47.5));
    }

    fn grey_levels(img: &RgbImage, x0: u32, y0: u32, x1: u32, y1: u32) -> (usize, usize) {
        let (mut ink, mut grey) = (0, 0);
        for y in y0..y1.min(img.height()) {
            for x in x0..x1.min(img.width()) {
                let p = img.get_pixel(x, y).0;
                if p != [255, 255, 255] {
                    ink += 1;
                }
                if p[0] == p[1] && p[1] == p[2] && (40..215).contains(&p[0]) {
                    grey += 1;
                }
            }
        }
        (ink, grey)
    }

    fn two_series() -> (Vec<String>, BoxSeries, BoxSeries) {
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
            groups: vec![vec![-3.0, -2.0, -1.0], vec![0.5, 1.5], vec![2.0; 4]],
        };
        (cats, act, bias)
    }

    #[test]
    fn box_plot_draws_boxes_at_their_quartiles() {
        let (cats, act, bias) = two_series();
        let (img, m, centres) = box_layout(
            &cats,
            &[act.clone(), bias.clone()],
            &[],
            "t",
            "layer",
            "value",
        )
        .unwrap();
        assert_eq!((img.width(), img.height()), (PLOT_WIDTH, PLOT_HEIGHT));
        // Between q1 = 2 and median = 3 of act in category 1 the box is filled with the tint.
        let (x, y) = m.px(centres[0][0], 2.5);
        assert_eq!(img.get_pixel(x, y).0, tint(act.color));
        // Above q3 (4) but below the whisker end (5): the whisker line at the centre.
        let (x, y) = m.px(centres[0][0], 4.6);
        assert_eq!(img.get_pixel(x, y).0, act.color);
        // Bias box in category 1 (q1 = -2.5, q3 = -1.5) sits below zero.
        let (x, y) = m.px(centres[0][1], -1.75);
        assert_eq!(img.get_pixel(x, y).0, tint(bias.color));
        // The empty act group in category 2 draws no series colour in its column.
        let (x, _) = m.px(centres[1][0], 0.0);
        for y in m.area.1.clone() {
            let p = img.get_pixel(x, y as u32).0;
            assert!(p != act.color && p != tint(act.color), "{p:?} at y={y}");
        }
        // The outlier 30 of act in category 3 is drawn as a dot.
        let (x, y) = m.px(centres[2][0], 30.0);
        assert_eq!(img.get_pixel(x, y).0, act.color);
    }

    #[test]
    fn box_plot_text_is_drawn_and_anti_aliased() {
        let (cats, act, bias) = two_series();
        let (img, m, _) =
            box_layout(&cats, &[act, bias], &[], "A title", "layer", "value").unwrap();
        let top = m.area.1.start as u32;
        // Title and legend above the plotting area: ink, with grey anti-aliasing levels.
        let (ink, grey) = grey_levels(&img, 0, 0, img.width(), top);
        assert!(ink > 200 && grey > 30, "ink {ink}, grey {grey}");
        // Legend swatches carry the series colours.
        let head = (0..top).flat_map(|y| (0..img.width()).map(move |x| (x, y)));
        let colours: Vec<[u8; 3]> = head.map(|(x, y)| img.get_pixel(x, y).0).collect();
        assert!(colours.contains(&[31, 119, 180]) && colours.contains(&[255, 127, 14]));
        // Tick labels and the y label left of the plotting area, category labels below it.
        let left = m.area.0.start as u32;
        assert!(grey_levels(&img, 0, top, left - 6, img.height()).1 > 20);
        let bottom = m.area.1.end as u32;
        assert!(grey_levels(&img, left, bottom + 6, img.width(), img.height()).1 > 20);
        // Without title and labels that space stays white.
        let (cats, act, bias) = two_series();
        let (img, m, _) = box_layout(&cats, &[act, bias], &[], "", "", "").unwrap();
        let top = m.area.1.start as u32;
        let (ink, _) = grey_levels(&img, 0, 0, img.width(), top.saturating_sub(30));
        assert_eq!(ink, 0);
    }

    /// The colour of `c` at REF_BAND_ALPHA over white, within plotters' rounding.
    fn over_white(c: [u8; 3], p: [u8; 3]) -> bool {
        c.iter().zip(p).all(|(&c, p)| {
            let want = f64::from(c) * REF_BAND_ALPHA + 255.0 * (1.0 - REF_BAND_ALPHA);
            (f64::from(p) - want).abs() <= 1.5
        })
    }

    #[test]
    fn reference_lines_span_the_plot_over_their_quartile_band() {
        let (cats, act, bias) = two_series();
        let grad = RefLine {
            name: "grad".into(),
            color: [102, 102, 102],
            // q1 = 11, median 12, q3 = 13: above every box.
            samples: vec![10.0, 11.0, 12.0, 13.0, 14.0],
        };
        let fg = RefLine {
            name: "fullgrad.layers".into(),
            color: [118, 42, 131],
            samples: vec![-6.0, -5.0, -4.0],
        };
        let (img, m, centres) = box_layout(
            &cats,
            &[act.clone(), bias.clone()],
            &[grad.clone(), fg.clone()],
            "t",
            "layer",
            "value",
        )
        .unwrap();
        // The median line runs across every category, at both ends of the plot too.
        for x in [0.02, 1.5, 2.98] {
            let (px, py) = m.px(x, 12.0);
            assert_eq!(img.get_pixel(px, py).0, grad.color, "x = {x}");
            let (px, py) = m.px(x, -5.0);
            assert_eq!(img.get_pixel(px, py).0, fg.color, "x = {x}");
        }
        // Inside the band (between q1 and q3, off the line) the translucent shade; above q3
        // and between the two bands, white.
        let (px, py) = m.px(0.5, 12.6);
        assert!(
            over_white(grad.color, img.get_pixel(px, py).0),
            "{:?}",
            img.get_pixel(px, py)
        );
        let (px, py) = m.px(0.5, 11.4);
        assert!(over_white(grad.color, img.get_pixel(px, py).0));
        let (px, py) = m.px(0.05, 13.6);
        assert_eq!(img.get_pixel(px, py).0, [255, 255, 255]);
        let (px, py) = m.px(0.05, 8.0);
        assert_eq!(img.get_pixel(px, py).0, [255, 255, 255]);
        // Boxes are drawn over the bands: act's box in category 1 keeps its tint.
        let (px, py) = m.px(centres[0][0], 2.5);
        assert_eq!(img.get_pixel(px, py).0, tint(act.color));
        // The y range grew to hold the bands; the legend shows both references.
        let top = m.area.1.start as u32;
        let head: Vec<[u8; 3]> = (0..top)
            .flat_map(|y| (0..img.width()).map(move |x| (x, y)))
            .map(|(x, y)| img.get_pixel(x, y).0)
            .collect();
        assert!(head.contains(&grad.color) && head.contains(&fg.color));
        // Without references the same pixels are white.
        let (img, m, _) = box_layout(&cats, &[act, bias], &[], "t", "layer", "value").unwrap();
        let (px, py) = m.px(0.05, 0.5);
        assert_eq!(img.get_pixel(px, py).0, [255, 255, 255]);
    }

    #[test]
    fn reference_lines_refuse_what_they_cannot_draw() {
        let (cats, act, _) = two_series();
        let empty = RefLine {
            name: "gradcam".into(),
            color: [0, 0, 0],
            samples: vec![],
        };
        let err = box_plot_with_refs(&cats, std::slice::from_ref(&act), &[empty], "", "", "")
            .unwrap_err();
        assert!(matches!(err, PlotError::Empty(_)) && err.to_string().contains("gradcam"));
        let nan = RefLine {
            name: "grad".into(),
            color: [0, 0, 0],
            samples: vec![1.0, f64::NAN],
        };
        let err = box_plot_with_refs(&cats, &[act], &[nan], "", "", "").unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, PlotError::NonFinite(_)) && msg.contains("'grad'"),
            "{msg}"
        );
    }

    #[test]
    fn box_plot_refuses_non_finite_values() {
        let (cats, act, mut bias) = two_series();
        bias.groups[1] = vec![0.5, f64::NAN, 1.5];
        let err = box_plot(&cats, &[act.clone(), bias], "", "", "").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, PlotError::NonFinite(_)), "{msg}");
        assert!(
            msg.contains("'bias'") && msg.contains("'2'") && msg.contains("point 1"),
            "{msg}"
        );
        let (_, _, mut bias) = two_series();
        bias.groups[2][0] = f64::NEG_INFINITY;
        assert!(matches!(
            box_plot(&cats, &[act, bias], "", "", ""),
            Err(PlotError::NonFinite(_))
        ));
    }

    #[test]
    fn box_plot_shape_and_empty_errors() {
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
        assert!(matches!(
            box_plot(&cats, &[], "", "", ""),
            Err(PlotError::Empty(_))
        ));
    }

    #[test]
    fn box_plot_all_empty_is_no_data() {
        let cats = vec!["a".to_string()];
        let s = BoxSeries {
            name: "x".into(),
            color: [0, 0, 0],
            groups: vec![vec![]],
        };
        let (img, m, _) = box_layout(&cats, &[s], &[], "t", "", "").unwrap();
        assert_eq!((img.width(), img.height()), (PLOT_WIDTH, PLOT_HEIGHT));
        // "no data" is written in the middle of the plotting area.
        let (cx, cy) = (
            (m.area.0.start + m.area.0.end) / 2,
            (m.area.1.start + m.area.1.end) / 2,
        );
        let (cx, cy) = (cx as u32, cy as u32);
        let (ink, grey) = grey_levels(&img, cx - 40, cy - 12, cx + 40, cy + 12);
        assert!(ink > 30 && grey > 10, "{ink} {grey}");
    }

    #[test]
    fn box_plot_widens_and_thins_labels_for_many_categories() {
        let cats: Vec<String> = (0..60).map(|i| format!("layer {i}")).collect();
        let s = BoxSeries {
            name: "x".into(),
            color: [0, 0, 0],
            groups: vec![vec![1.0]; 60],
        };
        let img = box_plot(&cats, &[s], "", "", "").unwrap();
        assert!(img.width() > PLOT_WIDTH);
    }
}
