//! ImageNet mean/std normalisation: RGB8 HWC bytes to normalised CHW floats and back.

use std::sync::OnceLock;

pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// `(v/255 - mean)/std` for every byte value, per channel (same f32 expression as computing it
/// directly, so results are bit-identical).
fn norm_lut() -> &'static [[f32; 256]; 3] {
    static LUT: OnceLock<[[f32; 256]; 3]> = OnceLock::new();
    LUT.get_or_init(|| {
        let mut t = [[0.0f32; 256]; 3];
        for (c, row) in t.iter_mut().enumerate() {
            for (v, out) in row.iter_mut().enumerate() {
                *out = (v as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
            }
        }
        t
    })
}

/// RGB8 HWC bytes (`len == h*w*3`) → normalised CHW floats.
pub fn normalise_hwc(rgb: &[u8], height: usize, width: usize) -> Vec<f32> {
    let lut = norm_lut();
    let plane = height * width;
    let mut out = vec![0.0f32; 3 * plane];
    for (i, px) in rgb.chunks_exact(3).take(plane).enumerate() {
        out[i] = lut[0][px[0] as usize];
        out[plane + i] = lut[1][px[1] as usize];
        out[2 * plane + i] = lut[2][px[2] as usize];
    }
    out
}

/// Inverse of [`normalise_hwc`] for one CHW image (for figures): back to RGB8 HWC.
pub fn denormalise_chw(chw: &[f32], height: usize, width: usize) -> Vec<u8> {
    let plane = height * width;
    let mut out = vec![0u8; plane * 3];
    if chw.len() < 3 * plane {
        return out;
    }
    for i in 0..plane {
        for c in 0..3 {
            let v = (chw[c * plane + i] * IMAGENET_STD[c] + IMAGENET_MEAN[c]) * 255.0;
            out[i * 3 + c] = v.round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}
