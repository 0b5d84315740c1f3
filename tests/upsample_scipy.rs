//! `--upsample` against scipy (Supplementary Fig. 12): `linear` is scipy's linear resize,
//! `scipy.ndimage.zoom(order=1)` (corner-aligned, i.e. PyTorch's align_corners = True and
//! the official FullGrad's upsampling), and `bilinear`, the default, is PyTorch's
//! `F.interpolate(mode="bilinear")` (half-pixel centres, edges replicated), which scipy
//! gives with `grid_mode=True, mode="nearest"` (and scikit-image's `resize(order=1)`).
//! Skipped with a message when python3 cannot import scipy.

use std::process::Command;

use candle_core::{Device, Tensor};
use zerobias::eval::run::{psi_with, Upsample};

fn python() -> String {
    std::env::var("ZEROBIAS_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

const SCRIPT: &str = r#"
import sys
import numpy as np
from scipy import ndimage
h, w, H, W = map(int, sys.argv[1:5])
a = np.array([float(v) for v in sys.argv[5:]]).reshape(h, w)
zoom = (H / h, W / w)
for out in (ndimage.zoom(a, zoom, order=1),
            ndimage.zoom(a, zoom, order=1, grid_mode=True, mode="nearest")):
    assert out.shape == (H, W), out.shape
    print(",".join(repr(float(v)) for v in out.ravel()))
"#;

#[test]
fn linear_and_bilinear_match_scipy() {
    match Command::new(python())
        .args(["-c", "import scipy, numpy"])
        .output()
    {
        Ok(o) if o.status.success() => {}
        _ => {
            eprintln!(
                "skipping: `{} -c \"import scipy\"` failed (pip install scipy)",
                python()
            );
            return;
        }
    }
    let mut rng = zerobias::data::Rng::new(12);
    // Small maps to input sizes with non-integer factors, as a deep layer's map is resized.
    for (h, w, big_h, big_w) in [(3, 5, 12, 17), (7, 7, 32, 32), (2, 3, 9, 4)] {
        let vals: Vec<f32> = (0..h * w).map(|_| rng.normal()).collect();
        let m = Tensor::from_vec(vals.clone(), (1, h, w), &Device::Cpu).unwrap();
        let mut args: Vec<String> = [h, w, big_h, big_w].iter().map(|v| v.to_string()).collect();
        // |m|: Ψ upsamples the absolute map.
        args.extend(vals.iter().map(|v| v.abs().to_string()));
        let o = Command::new(python())
            .args(["-c", SCRIPT])
            .args(&args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let text = String::from_utf8(o.stdout).unwrap();
        let want: Vec<Vec<f32>> = text
            .lines()
            .map(|l| {
                l.split(',')
                    .map(|v| v.parse::<f64>().unwrap() as f32)
                    .collect()
            })
            .collect();
        for (how, want) in [(Upsample::Linear, &want[0]), (Upsample::Bilinear, &want[1])] {
            let got: Vec<f32> = psi_with(&m, big_h, big_w, false, how)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let worst = got
                .iter()
                .zip(want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                worst < 1e-5,
                "{how:?} {h}x{w} -> {big_h}x{big_w}: max diff {worst}"
            );
        }
        // The two readings differ (so the check above tells them apart).
        let lin = psi_with(&m, big_h, big_w, false, Upsample::Linear).unwrap();
        let bil = psi_with(&m, big_h, big_w, false, Upsample::Bilinear).unwrap();
        let gap: f32 = (lin - bil)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(gap > 1e-3, "{gap}");
    }
}
