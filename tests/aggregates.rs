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
