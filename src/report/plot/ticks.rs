//! Tick positions and number formats for chart axes, legends and panel annotations.

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
pub(super) fn format_sig(v: f64) -> String {
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
pub(super) fn log_ticks(lo: f64, hi: f64) -> (Vec<f64>, Vec<f64>) {
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
pub(super) fn format_log_ticks(ticks: &[f64]) -> Vec<String> {
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

/// Finite min/max of an iterator, None if nothing finite.
pub(super) fn finite_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((a, b)) => Some((a.min(v), b.max(v))),
        })
}

/// Pads a data range by `frac` each side; widens degenerate ranges so a single
/// value still gets a sensible axis.
pub(super) fn padded(range: Option<(f64, f64)>, frac: f64) -> (f64, f64) {
    let (lo, hi) = range.unwrap_or((0.0, 1.0));
    // A spread below 1e-9 of the values is rounding (ρ = 1 ± 1e-16 for a model whose biases
    // are already 0): scaling it up to the axis would draw noise as structure, with tick
    // labels that cannot tell the values apart. It is drawn as a constant.
    if hi - lo > 1e-9 * lo.abs().max(hi.abs()) {
        let pad = (hi - lo) * frac;
        (lo - pad, hi + pad)
    } else {
        let mid = lo + (hi - lo) / 2.0;
        let half = if mid == 0.0 { 1.0 } else { mid.abs() * 0.1 };
        (mid - half, mid + half)
    }
}

pub(super) fn padded_log(range: Option<(f64, f64)>, frac: f64) -> (f64, f64) {
    match range {
        Some((lo, hi)) if lo > 0.0 => {
            let (a, b) = padded(Some((lo.log10(), hi.log10())), frac);
            (10f64.powf(a), 10f64.powf(b))
        }
        _ => (1.0, 10.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_treats_rounding_spread_as_constant() {
        let (lo, hi) = padded(Some((1.0 - 2e-16, 1.0 + 4e-16)), 0.06);
        assert!(
            (lo - 0.9).abs() < 1e-12 && (hi - 1.1).abs() < 1e-12,
            "{lo} {hi}"
        );
        assert_eq!(padded(Some((0.0, 0.0)), 0.06), (-1.0, 1.0));
        // A real spread, however small against 1, is padded by its own size.
        let (lo, hi) = padded(Some((1.0, 1.0 + 1e-6)), 0.5);
        assert!((lo - (1.0 - 5e-7)).abs() < 1e-12 && (hi - (1.0 + 1.5e-6)).abs() < 1e-12);
    }

    fn approx(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * (1.0 + a.abs().max(b.abs()))
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
}
