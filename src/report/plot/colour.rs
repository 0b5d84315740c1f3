//! Colour maps for attribution cells and saliency overlays, and the tints of chart series.

fn to_u8(v: f32) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

/// Signed diverging colormap: red positive, blue negative, white 0, symmetric
/// scale `[-vmax, vmax]` (values beyond are clamped). Non-finite values and a
/// non-positive or non-finite `vmax` give white, i.e. "no signal".
pub fn diverging_rgb(value: f32, vmax: f32) -> [u8; 3] {
    if !value.is_finite() || !vmax.is_finite() || vmax <= 0.0 {
        return [255, 255, 255];
    }
    let t = (value / vmax).clamp(-1.0, 1.0);
    let fade = to_u8(255.0 * (1.0 - t.abs()));
    if t >= 0.0 {
        [255, fade, fade]
    } else {
        [fade, fade, 255]
    }
}

/// Sequential colormap (jet) for saliency in `[0, 1]`: dark blue at 0, through
/// cyan, green and yellow, to dark red at 1. Input is clamped; non-finite maps to 0.
pub fn sequential_rgb(t: f32) -> [u8; 3] {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let ch = |centre: f32| to_u8(255.0 * (1.5 - (4.0 * t - centre).abs()).clamp(0.0, 1.0));
    [ch(3.0), ch(2.0), ch(1.0)]
}

pub(super) fn mix(a: [u8; 3], b: [u8; 3], alpha: f32) -> [u8; 3] {
    let f = |x: u8, y: u8| to_u8(f32::from(x) * (1.0 - alpha) + f32::from(y) * alpha);
    [f(a[0], b[0]), f(a[1], b[1]), f(a[2], b[2])]
}

/// Light tint of a series colour, used for box fills so the median line stays visible.
pub(super) fn tint(c: [u8; 3]) -> [u8; 3] {
    mix(c, [255, 255, 255], 0.55)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diverging_endpoints() {
        assert_eq!(diverging_rgb(2.0, 2.0), [255, 0, 0]);
        assert_eq!(diverging_rgb(-2.0, 2.0), [0, 0, 255]);
        assert_eq!(diverging_rgb(0.0, 2.0), [255, 255, 255]);
        // Clamped beyond vmax; half way is a half-saturated tint.
        assert_eq!(diverging_rgb(10.0, 2.0), [255, 0, 0]);
        assert_eq!(diverging_rgb(1.0, 2.0), [255, 128, 128]);
        assert_eq!(diverging_rgb(-1.0, 2.0), [128, 128, 255]);
        // Degenerate inputs are "no signal".
        assert_eq!(diverging_rgb(f32::NAN, 1.0), [255, 255, 255]);
        assert_eq!(diverging_rgb(1.0, 0.0), [255, 255, 255]);
        assert_eq!(diverging_rgb(1.0, f32::INFINITY), [255, 255, 255]);
    }

    #[test]
    fn sequential_endpoints() {
        assert_eq!(sequential_rgb(0.0), [0, 0, 128]);
        assert_eq!(sequential_rgb(1.0), [128, 0, 0]);
        assert_eq!(sequential_rgb(0.5), [128, 255, 128]);
        assert_eq!(sequential_rgb(-3.0), sequential_rgb(0.0));
        assert_eq!(sequential_rgb(7.0), sequential_rgb(1.0));
        assert_eq!(sequential_rgb(f32::NAN), sequential_rgb(0.0));
    }
}
