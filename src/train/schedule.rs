//! The bias scale after each rescale: s_0 = 1, s_k for k = 1..=n, and s_n = 0 exactly.

use super::recipe::Schedule;

/// Bias scale after `k` rescales out of `n`.
pub fn scale_after(schedule: Schedule, factor: f64, k: usize, n: usize) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k >= n {
        return 0.0;
    }
    match schedule {
        Schedule::Exponential => factor.powi(k as i32),
        Schedule::Linear => 1.0 - k as f64 / n as f64,
    }
}

/// Bias scale after `steps` of a smooth decay whose rescale period is `every` steps: the
/// schedule evaluated at the fractional rescale count `steps / every`, so that the scale
/// passes through s_k at every period's end and reaches exactly 0 at `n · every`.
pub fn smooth_scale(schedule: Schedule, factor: f64, steps: usize, every: usize, n: usize) -> f64 {
    if steps == 0 {
        return 1.0;
    }
    if steps >= n * every {
        return 0.0;
    }
    let k = steps as f64 / every as f64;
    match schedule {
        Schedule::Exponential => factor.powf(k),
        Schedule::Linear => 1.0 - k / n as f64,
    }
}

/// The factor that takes the biases from s_{k-1} to s_k (0 on the last rescale), applied
/// to the live, trained biases.
pub fn step_factor(schedule: Schedule, factor: f64, k: usize, n: usize) -> f64 {
    let prev = scale_after(schedule, factor, k - 1, n);
    let next = scale_after(schedule, factor, k, n);
    if next == 0.0 || prev == 0.0 {
        0.0
    } else {
        next / prev
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_at_exactly_zero() {
        for s in [Schedule::Exponential, Schedule::Linear] {
            for n in 1..12 {
                assert_eq!(scale_after(s, 0.5, n, n), 0.0);
                let mut scale = 1.0;
                for k in 1..=n {
                    scale *= step_factor(s, 0.5, k, n);
                    if k < n {
                        assert!(scale > 0.0);
                        assert!((scale - scale_after(s, 0.5, k, n)).abs() < 1e-12);
                    }
                }
                assert_eq!(scale, 0.0, "{s:?} n={n}");
            }
        }
    }

    #[test]
    fn smooth_scale_meets_the_stepwise_one_at_every_rescale() {
        for s in [Schedule::Exponential, Schedule::Linear] {
            for k in 0..=10 {
                let smooth = smooth_scale(s, 0.5, k * 50, 50, 10);
                let step = scale_after(s, 0.5, k, 10);
                assert!(
                    (smooth - step).abs() < 1e-12,
                    "{s:?} k={k}: {smooth} vs {step}"
                );
            }
            let mut prev = 1.0;
            for t in 1..500 {
                let now = smooth_scale(s, 0.5, t, 50, 10);
                assert!(now < prev && now > 0.0, "{s:?} t={t}: not decreasing");
                prev = now;
            }
            assert_eq!(smooth_scale(s, 0.5, 500, 50, 10), 0.0);
        }
    }

    #[test]
    fn linear_and_exponential_values() {
        assert!((scale_after(Schedule::Linear, 0.5, 1, 4) - 0.75).abs() < 1e-12);
        assert!((scale_after(Schedule::Exponential, 0.5, 3, 10) - 0.125).abs() < 1e-12);
    }
}
