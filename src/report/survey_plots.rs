//! Figures of the bias survey (`eval::survey`): the logits with all biases set to 0 against
//! the model's own (as loaded) with their fit (part b), top-1 under input scaling and
//! shifts (part c), and how often the class survives scaling the normalised input (part d).
//! The survey's variants are one model with and without its biases, so the figures say
//! "biases set to 0" rather than "zero-bias", which a report uses for the second (decayed)
//! model.

use std::path::Path;

use super::plot::{line_plot, save_png, scatter_plot, LineSeries};
use crate::error::Result;
use crate::eval::survey::{SurveyReport, INPUT_SCALES, SCALES, SHIFTS};

/// Line colours of the two variants, vanilla then zero-bias, in every survey figure.
const VARIANT_COLORS: [[u8; 3]; 2] = [[214, 96, 77], [67, 147, 195]];

/// The logits with every bias set to 0 against the model's as loaded, with the fit.
pub fn regression(report: &SurveyReport, label: &str, path: &Path) -> Result<()> {
    let img = scatter_plot(
        &report.vanilla_logits,
        &report.zero_logits,
        Some(report.fit),
        &format!("{label}: logits with biases set to 0 vs as loaded"),
        "logit f (biases as loaded)",
        "logit f0 (biases set to 0)",
    )?;
    save_png(&img, path)?;
    Ok(())
}

/// Legend name of a survey variant (`robustness.csv` keeps `vanilla` / `zero-bias`).
fn variant_name(variant: &str) -> String {
    match variant {
        "vanilla" => "biases as loaded".into(),
        "zero-bias" => "biases set to 0".into(),
        other => other.into(),
    }
}

/// Top-1 of both variants under input scaling (into `scaling`) and shifts (into `shift`).
pub fn robustness(report: &SurveyReport, label: &str, scaling: &Path, shift: &Path) -> Result<()> {
    let scale_series: Vec<LineSeries> = report
        .curves
        .iter()
        .zip(VARIANT_COLORS)
        .map(|((n, sc, _), c)| LineSeries {
            name: variant_name(n),
            color: c,
            x: SCALES.to_vec(),
            y: sc.clone(),
        })
        .collect();
    save_png(
        &line_plot(
            &scale_series,
            true,
            &format!("{label}: top-1 under input scaling"),
            "input scale",
            "top-1",
        )?,
        scaling,
    )?;
    let shift_series: Vec<LineSeries> = report
        .curves
        .iter()
        .zip(VARIANT_COLORS)
        .map(|((n, _, sh), c)| LineSeries {
            name: variant_name(n),
            color: c,
            x: SHIFTS.to_vec(),
            y: sh.clone(),
        })
        .collect();
    save_png(
        &line_plot(
            &shift_series,
            false,
            &format!("{label}: top-1 under input shifts"),
            "shift (fraction of value range)",
            "top-1",
        )?,
        shift,
    )?;
    Ok(())
}

/// Part (d): the share of images that keep their class when the normalised input is scaled,
/// per variant, with the unscaled input (factor 1, share 1 by definition) as the middle
/// point. A bias-free ReLU network stays at 1 everywhere.
pub fn input_norm(report: &SurveyReport, label: &str, path: &Path) -> Result<()> {
    let series: Vec<LineSeries> = report
        .input_scaling
        .iter()
        .zip(VARIANT_COLORS)
        .map(|((n, rows), c)| {
            let mut points: Vec<(f64, f64)> = INPUT_SCALES
                .iter()
                .zip(rows)
                .map(|(&a, &(_, same))| (a, same))
                .chain([(1.0, 1.0)])
                .collect();
            points.sort_by(|p, q| p.0.total_cmp(&q.0));
            LineSeries {
                name: variant_name(n),
                color: c,
                x: points.iter().map(|p| p.0).collect(),
                y: points.iter().map(|p| p.1).collect(),
            }
        })
        .collect();
    save_png(
        &line_plot(
            &series,
            true,
            &format!("{label}: class kept when the normalised input is scaled"),
            "factor on the normalised input",
            "share of images with the same class",
        )?,
        path,
    )?;
    Ok(())
}

/// Per image: Pearson ρ between the vanilla and zero-bias logits, and the fit
/// f0 = α f + β over the classes (Supplementary Figs 4–5). Images whose fit is undefined
/// (constant logits) are left out; `None` when no image has one.
pub fn per_image_fits(report: &SurveyReport, classes: usize) -> Option<Vec<(f64, f64, f64)>> {
    if classes < 2 || report.vanilla_logits.len() != report.zero_logits.len() {
        return None;
    }
    let fits: Vec<(f64, f64, f64)> = report
        .vanilla_logits
        .chunks(classes)
        .zip(report.zero_logits.chunks(classes))
        .filter_map(|(f, f0)| {
            let rho = crate::stats::pearson(f, f0).ok()?;
            let n = f.len() as f64;
            let (mx, my) = (f.iter().sum::<f64>() / n, f0.iter().sum::<f64>() / n);
            let sxy: f64 = f.iter().zip(f0).map(|(x, y)| (x - mx) * (y - my)).sum();
            let sxx: f64 = f.iter().map(|x| (x - mx) * (x - mx)).sum();
            let alpha = sxy / sxx;
            let beta = my - alpha * mx;
            [rho, alpha, beta]
                .iter()
                .all(|v| v.is_finite())
                .then_some((rho, alpha, beta))
        })
        .collect();
    (!fits.is_empty()).then_some(fits)
}

/// Supplementary Fig. 4 (ρ per image, into `correlation`) and Fig. 5 (α against β per
/// image, into `alpha_beta`). Returns false (nothing written) when no fit is defined.
pub fn output_fits(
    report: &SurveyReport,
    classes: usize,
    label: &str,
    correlation: &Path,
    alpha_beta: &Path,
) -> Result<bool> {
    let Some(fits) = per_image_fits(report, classes) else {
        return Ok(false);
    };
    let index: Vec<f64> = (0..fits.len()).map(|i| i as f64).collect();
    let rho: Vec<f64> = fits.iter().map(|f| f.0).collect();
    save_png(
        &scatter_plot(
            &index,
            &rho,
            None,
            &format!("{label}: outputs as loaded vs with biases set to 0"),
            "image",
            "Pearson rho over classes",
        )?,
        correlation,
    )?;
    let alpha: Vec<f64> = fits.iter().map(|f| f.1).collect();
    let beta: Vec<f64> = fits.iter().map(|f| f.2).collect();
    save_png(
        &scatter_plot(
            &alpha,
            &beta,
            None,
            &format!("{label}: f0 = alpha f + beta per image"),
            "scale alpha",
            "offset beta",
        )?,
        alpha_beta,
    )?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_image_fits_recover_scale_and_offset() {
        let vanilla = vec![1.0, 2.0, 4.0, -1.0, 0.0, 3.0, 5.0, 5.0, 5.0];
        // Image 0: f0 = 2 f + 1; image 1: f0 = -0.5 f; image 2: constant logits (no fit).
        let zero = vec![3.0, 5.0, 9.0, 0.5, 0.0, -1.5, 5.0, 5.0, 5.0];
        let report = SurveyReport {
            top1_vanilla: 1.0,
            top5_vanilla: 1.0,
            top1_zero: 1.0,
            top5_zero: 1.0,
            bias_parameters: 0,
            files: Vec::new(),
            vanilla_logits: vanilla,
            zero_logits: zero,
            fit: (1.0, 0.0),
            curves: Vec::new(),
            input_scaling: Vec::new(),
        };
        let fits = per_image_fits(&report, 3).unwrap();
        assert_eq!(fits.len(), 2);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(fits[0].0, 1.0) && close(fits[0].1, 2.0) && close(fits[0].2, 1.0));
        assert!(close(fits[1].0, -1.0) && close(fits[1].1, -0.5) && close(fits[1].2, 0.0));
        assert!(per_image_fits(&report, 1).is_none());
    }
}
