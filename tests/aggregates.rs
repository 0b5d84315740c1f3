//! `agg.0` and `fullgrad.layers` against their definitions, recomputed here from the
//! per-layer maps (`act.{l}`, `bias.{module}`) that `attribute` returns alongside them.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use candle_core::{Device, Tensor};
use zerobias::attribution::{all_methods, attribute};
use zerobias::models::Classifier;
use zerobias::taps::Target;

fn model(dir: &Path, arch: &str) -> Box<dyn Classifier> {
    let dev = Device::Cpu;
    let mut t = match arch {
        "vgg16" => zerobias::models::init::vgg16(2, 8, 3, 1, &dev).unwrap(),
        _ => zerobias::models::init::resnet50(2, 5, 3, &dev).unwrap(),
    };
    // Non-zero biases, so bias maps are not all zero.
    let mut rng = zerobias::data::Rng::new(4);
    for (k, v) in t.iter_mut() {
        if k.ends_with(".bias") || k.ends_with("running_mean") {
            let n = v.elem_count();
            let vals: Vec<f32> = (0..n).map(|_| rng.normal() * 0.3).collect();
            *v = Tensor::from_vec(vals, n, &dev).unwrap();
        }
    }
    let mut named: Vec<(String, Tensor)> = t.into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let p = dir.join(format!("{arch}.safetensors"));
    zerobias::checkpoint::save(&p, &named, Default::default()).unwrap();
    zerobias::models::load(&p, &dev).unwrap()
}

fn input(n: usize) -> Tensor {
    let mut rng = zerobias::data::Rng::new(9);
    let x: Vec<f32> = (0..n * 3 * 32 * 32).map(|_| rng.normal()).collect();
    Tensor::from_vec(x, (n, 3, 32, 32), &Device::Cpu).unwrap()
}

/// Bilinear (align_corners = False) resampling of one [h, w] map; identity at equal size.
fn resize(m: &Tensor, h: usize, w: usize) -> Tensor {
    let (mh, mw) = m.dims2().unwrap();
    if (mh, mw) == (h, w) {
        return m.clone();
    }
    m.unsqueeze(0)
        .unwrap()
        .unsqueeze(0)
        .unwrap()
        .upsample_bilinear2d(h, w, false)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .squeeze(0)
        .unwrap()
}

/// Ψ of one image's map: |m|, min-max to [0, 1] over the map, bilinear to (h, w).
fn psi(m: &Tensor, h: usize, w: usize) -> Vec<f32> {
    let (mh, mw) = m.dims2().unwrap();
    let v: Vec<f32> = m.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let a: Vec<f32> = v.iter().map(|x| x.abs()).collect();
    let lo = a.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = a.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let r: Vec<f32> = a
        .iter()
        .map(|x| if hi > lo { (x - lo) / (hi - lo) } else { 0.0 })
        .collect();
    let t = Tensor::from_vec(r, (mh, mw), &Device::Cpu).unwrap();
    resize(&t, h, w).flatten_all().unwrap().to_vec1().unwrap()
}

fn mean(terms: &[Vec<f32>]) -> Vec<f32> {
    let k = terms.len() as f32;
    (0..terms[0].len())
        .map(|i| terms.iter().map(|t| t[i]).sum::<f32>() / k)
        .collect()
}

fn assert_close(name: &str, got: &Tensor, want: &[f32]) {
    let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(got.len(), want.len(), "{name}");
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-5, "{name}: max abs difference {worst}");
    // The map is not degenerate (a constant would pass any ranking check).
    let spread = want.iter().copied().fold(f32::MIN, f32::max)
        - want.iter().copied().fold(f32::MAX, f32::min);
    assert!(spread > 0.05, "{name}: spread {spread}");
}

fn check(arch: &str) {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path(), arch);
    let x = input(2);
    let att = attribute(
        model.as_ref(),
        &x,
        &Target::Predicted,
        &all_methods(model.as_ref()),
    )
    .unwrap();
    let layers = model.num_layers();
    let layer_of: HashMap<String, usize> = model.bias_modules().into_iter().collect();
    let mut mixed_resolution = false;
    for i in 0..2 {
        let map = |name: &str| att.maps.get(name).unwrap().get(i).unwrap();
        // agg.0: Eq. 16 over layers 0..=L, the input attributions included.
        let acts: Vec<Vec<f32>> = (0..=layers)
            .map(|l| psi(&map(&format!("act.{l}")), 32, 32))
            .collect();
        assert_close(
            &format!("{arch} agg.0 image {i}"),
            &map("agg.0"),
            &mean(&acts),
        );
        assert_close(
            &format!("{arch} agg.1 image {i}"),
            &map("agg.1"),
            &mean(&acts[1..]),
        );

        // fullgrad.layers: Ψ(a^{h,0}) and Ψ of each layer's summed spatial bias maps.
        let mut by_layer: Vec<(usize, Vec<Tensor>)> = Vec::new();
        for (name, t) in att.maps.iter() {
            let Some(module) = name.strip_prefix("bias.") else {
                continue;
            };
            if t.rank() != 3 {
                continue;
            }
            let l = layer_of[module];
            match by_layer.iter_mut().find(|(k, _)| *k == l) {
                Some((_, v)) => v.push(t.get(i).unwrap()),
                None => by_layer.push((l, vec![t.get(i).unwrap()])),
            }
        }
        assert!(
            by_layer.len() >= layers,
            "{arch}: {} layers with biases",
            by_layer.len()
        );
        let mut terms = vec![acts[0].clone()];
        for (_, ms) in &by_layer {
            let (h, w) = ms
                .iter()
                .map(|m| m.dims2().unwrap())
                .max_by_key(|(a, b)| a * b)
                .unwrap();
            mixed_resolution |= ms.iter().any(|m| m.dims2().unwrap() != (h, w));
            let mut sum = resize(&ms[0], h, w);
            for m in &ms[1..] {
                sum = (sum + resize(m, h, w)).unwrap();
            }
            terms.push(psi(&sum, 32, 32));
        }
        assert_close(
            &format!("{arch} fullgrad.layers image {i}"),
            &map("fullgrad.layers"),
            &mean(&terms),
        );
    }
    // ResNet's first block of a stage mixes resolutions; VGG never does.
    assert_eq!(mixed_resolution, arch == "resnet50");
    // Both are spatial methods `evaluate` can select.
    let spatial = zerobias::eval::run::spatial_methods(model.as_ref());
    for m in ["agg.0", "fullgrad.layers"] {
        assert!(
            spatial.contains(&m.to_string()),
            "{arch}: {m} not selectable"
        );
    }
    let chosen =
        zerobias::eval::run::select_methods(&["fullgrad.layers".into(), "agg.*".into()], &spatial)
            .unwrap();
    assert_eq!(chosen.len(), 1 + layers + 1, "{chosen:?}");
}

#[test]
fn vgg16_agg0_and_fullgrad_layers_match_their_definitions() {
    check("vgg16");
}

#[test]
fn resnet50_agg0_and_fullgrad_layers_match_their_definitions() {
    check("resnet50");
}

#[test]
fn attribute_out_holds_both() {
    let dir = tempfile::tempdir().unwrap();
    let _ = model(dir.path(), "vgg16");
    let xp = dir.path().join("x.safetensors");
    zerobias::checkpoint::save(&xp, &[("input".into(), input(1))], Default::default()).unwrap();
    let out = dir.path().join("a.safetensors");
    let o = Command::new(env!("CARGO_BIN_EXE_zerobias"))
        .args(["attribute", "--model"])
        .arg(dir.path().join("vgg16.safetensors"))
        .arg("--input")
        .arg(&xp)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (t, _) = zerobias::checkpoint::read_tensors(&out, &Device::Cpu).unwrap();
    for k in ["agg.0", "fullgrad.layers"] {
        assert_eq!(t[k].dims(), [1, 32, 32], "{k}");
    }
}

/// Pearson ρ of two equal-length series, in f64.
fn pearson(x: &[f32], y: &[f32]) -> f64 {
    let n = x.len() as f64;
    let mx = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let my = y.iter().map(|&v| v as f64).sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (&a, &b) in x.iter().zip(y) {
        let (dx, dy) = (a as f64 - mx, b as f64 - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx == 0.0 || syy == 0.0 {
        return f64::NAN;
    }
    sxy / (sxx * syy).sqrt()
}

/// numpy's default (linear) quantile of values.
fn np_quantile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = q * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(v.len() - 1);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// Fig. 8's within-model ρ(a^{h,l}, a^{b,l}) in `evaluate`'s correlations.csv (one model)
/// against Pearson recomputed here from `attribute`'s act.{l} and bias.{module} maps, with
/// a^{b,l} the sum of the layer's module maps resampled to the activation's resolution.
fn check_act_vs_bias(arch: &str) {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path(), arch);
    let n = 4;
    let x = input(n);
    let att = attribute(
        model.as_ref(),
        &x,
        &Target::Predicted,
        &all_methods(model.as_ref()),
    )
    .unwrap();
    let layer_of: HashMap<String, usize> = model.bias_modules().into_iter().collect();
    let mut summed_modules = 0;
    let mut want: Vec<(usize, Vec<f64>)> = Vec::new();
    for l in 1..=model.num_layers() {
        let act = att.maps.get(&format!("act.{l}")).unwrap();
        let (_, h, w) = act.dims3().unwrap();
        let modules: Vec<&Tensor> = att
            .maps
            .iter()
            .filter(|(name, t)| {
                t.rank() == 3 && name.strip_prefix("bias.").is_some_and(|m| layer_of[m] == l)
            })
            .map(|(_, t)| t)
            .collect();
        assert!(!modules.is_empty(), "{arch}: layer {l} has no bias map");
        if modules.len() > 1 {
            summed_modules += 1;
        }
        let mut rhos = Vec::new();
        for i in 0..n {
            let mut b = resize(&modules[0].get(i).unwrap(), h, w);
            for m in &modules[1..] {
                b = (b + resize(&m.get(i).unwrap(), h, w)).unwrap();
            }
            let a: Vec<f32> = act
                .get(i)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
            rhos.push(pearson(&a, &b));
        }
        // A constant map (here: a 1×1 layer) has no ρ; evaluate skips and counts it.
        let defined: Vec<f64> = rhos.iter().copied().filter(|r| r.is_finite()).collect();
        if h * w > 1 {
            assert_eq!(defined.len(), n, "{arch} layer {l} ({h}x{w}): {rhos:?}");
        }
        want.push((l, defined));
    }
    // ResNet's blocks carry several BN modules, each first block of a stage one at a
    // larger resolution than its output; VGG's layers one conv each.
    if arch == "resnet50" {
        assert!(summed_modules >= model.num_layers() - 1, "{summed_modules}");
    } else {
        assert_eq!(summed_modules, 0);
    }

    let xp = dir.path().join("x.safetensors");
    zerobias::checkpoint::save(&xp, &[("input".into(), x)], Default::default()).unwrap();
    let out = dir.path().join("eval");
    let o = Command::new(env!("CARGO_BIN_EXE_zerobias"))
        .args(["evaluate", "--model"])
        .arg(dir.path().join(format!("{arch}.safetensors")))
        .arg("--input")
        .arg(&xp)
        .args(["--methods", "grad", "--steps", "1", "--noise-samples", "0"])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let csv = std::fs::read_to_string(out.join("correlations.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert!(
        rows.iter().all(|r| r[5] == "act_vs_bias"),
        "one model has no between-model rows: {csv}"
    );
    assert_eq!(rows.len(), want.len(), "{csv}");
    assert!(!csv.to_lowercase().contains("nan"), "{csv}");
    let mut skipped_layers = 0;
    for ((l, rhos), r) in want.iter().zip(&rows) {
        assert_eq!(r[0], l.to_string(), "{csv}");
        let counts = (rhos.len().to_string(), (n - rhos.len()).to_string());
        assert_eq!(
            (r[1], r[8]),
            (counts.0.as_str(), counts.1.as_str()),
            "{r:?}"
        );
        if rhos.is_empty() {
            skipped_layers += 1;
            assert_eq!((r[2], r[3], r[4]), ("", "", ""), "no NaN: {r:?}");
            continue;
        }
        for (col, q) in [(2, 0.5), (3, 0.1), (4, 0.9)] {
            let got: f64 = r[col].parse().unwrap();
            let expect = np_quantile(rhos, q);
            assert!(
                (got - expect).abs() < 2e-5,
                "{arch} layer {l} column {col}: {got} vs {expect}"
            );
        }
    }
    // ResNet's last stage is 1×1 on 32×32 inputs; VGG's layers are at least 2×2.
    assert_eq!(skipped_layers > 0, arch == "resnet50");
    let fig = image::open(out.join("fig8-correlations.png")).unwrap();
    assert!(fig.width() > 200 && fig.height() > 150);
}

#[test]
fn vgg16_act_vs_bias_rho_is_pearson_of_the_maps() {
    check_act_vs_bias("vgg16");
}

#[test]
fn resnet50_act_vs_bias_rho_sums_the_block_modules() {
    check_act_vs_bias("resnet50");
}
