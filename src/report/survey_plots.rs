//! Figures of the bias survey (`eval::survey`): zero-bias against vanilla logits with their
//! fit (part b) and top-1 under input scaling and shifts (part c).

use std::path::Path;

use super::plot::{line_plot, save_png, scatter_plot, LineSeries};
use crate::error::Result;
use crate::eval::survey::{SurveyReport, SCALES, SHIFTS};

/// The logits of the zero-bias model against the vanilla model's, with the fit.
pub fn regression(report: &SurveyReport, label: &str, path: &Path) -> Result<()> {
    let img = scatter_plot(
        &report.vanilla_logits,
        &report.zero_logits,
        Some(report.fit),
        &format!("{label}: zero-bias vs vanilla logits"),
        "vanilla logit f",
        "zero-bias logit f0",
    )?;
    save_png(&img, path)?;
    Ok(())
}

/// Top-1 of both variants under input scaling (into `scaling`) and shifts (into `shift`).
pub fn robustness(report: &SurveyReport, label: &str, scaling: &Path, shift: &Path) -> Result<()> {
    let colors = [[214, 96, 77], [67, 147, 195]];
    let scale_series: Vec<LineSeries> = report
        .curves
        .iter()
        .zip(colors)
        .map(|((n, sc, _), c)| LineSeries {
            name: n.clone(),
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
        .zip(colors)
        .map(|((n, _, sh), c)| LineSeries {
            name: n.clone(),
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
