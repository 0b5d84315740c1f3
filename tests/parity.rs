//! PyTorch parity on ../shared/fixtures (skipped with a reason when absent), on the
//! device `ZEROBIAS_TEST_DEVICE` names (cpu by default).

mod common;

use candle_core::{DType, Device, Tensor};
use zerobias::attribution::{all_methods, attribute};
use zerobias::taps::Target;

fn load_expected(name: &str) -> std::collections::HashMap<String, Tensor> {
    let dir = common::fixtures().unwrap();
    zerobias::checkpoint::read_tensors(&dir.join(name), &Device::Cpu)
        .unwrap()
        .0
}

fn input() -> Tensor {
    let dir = common::fixtures().unwrap();
    zerobias::checkpoint::read_tensors(&dir.join("inputs.safetensors"), &common::device())
        .unwrap()
        .0
        .remove("input")
        .unwrap()
}

fn check_logits(model_file: &str, expected_file: &str) {
    let Some(dir) = common::fixtures() else {
        return;
    };
    let model = zerobias::models::load(&dir.join(model_file), &common::device()).unwrap();
    let logits = model.forward(&input()).unwrap();
    let want = load_expected(expected_file).remove("logits").unwrap();
    let err = common::rel_max(
        &logits.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        &want.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
    );
    assert!(err < 1e-4, "{model_file}: logits relative error {err}");
}

#[test]
fn vgg16_logits_match_pytorch() {
    check_logits("vgg16.safetensors", "vgg16_expected.safetensors");
}

#[test]
fn vgg16_timm_logits_match_pytorch() {
    check_logits("vgg16_timm.safetensors", "vgg16_expected.safetensors");
}

#[test]
fn resnet50_logits_match_pytorch() {
    check_logits("resnet50.safetensors", "resnet50_expected.safetensors");
}

/// The pool-input activations of the feature path up to its last max-pool, in float64
/// with plain candle ops (layer index as the recorder numbers it, activation [N, C, H, W]),
/// and each pool's kernel, stride and padding.
fn float64_pool_inputs(model_file: &str) -> Vec<(usize, Tensor, (usize, usize, usize))> {
    let dir = common::fixtures().unwrap();
    let dev = Device::Cpu;
    let w = candle_core::safetensors::load(dir.join(model_file), &dev).unwrap();
    let p = |k: &str| w[k].to_dtype(DType::F64).unwrap();
    let x = input()
        .to_device(&dev)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let conv = |h: &Tensor, name: &str, pad, stride| {
        let y = h
            .conv2d(&p(&format!("{name}.weight")), pad, stride, 1, 1)
            .unwrap();
        match w.contains_key(&format!("{name}.bias")) {
            true => y
                .broadcast_add(&p(&format!("{name}.bias")).reshape((1, (), 1, 1)).unwrap())
                .unwrap(),
            false => y,
        }
    };
    if model_file.starts_with("vgg16") {
        let mut out = Vec::new();
        let mut h = x;
        for (l, c) in [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
            .iter()
            .enumerate()
        {
            h = conv(&h, &format!("features.{c}"), 1, 1).relu().unwrap();
            if [2, 4, 7, 10, 13].contains(&(l + 1)) {
                out.push((l + 1, h.clone(), (2, 2, 0)));
                h = h.max_pool2d(2).unwrap();
            }
        }
        out
    } else {
        let h = conv(&x, "conv1", 3, 2);
        let c = (1, (), 1, 1);
        let scale =
            (p("bn1.weight") / (p("bn1.running_var") + 1e-5).unwrap().sqrt().unwrap()).unwrap();
        let h = h
            .broadcast_sub(&p("bn1.running_mean").reshape(c).unwrap())
            .unwrap()
            .broadcast_mul(&scale.reshape(c).unwrap())
            .unwrap()
            .broadcast_add(&p("bn1.bias").reshape(c).unwrap())
            .unwrap()
            .relu()
            .unwrap();
        vec![(1, h, (3, 2, 1))]
    }
}

/// Per window of a max-pool over [C, H, W] values: the winner (PyTorch's rule, the first
/// maximum in raster order) and the gap between the two largest values.
fn pool_winners(
    v: &[f64],
    (c, h, w): (usize, usize, usize),
    (k, s, pad): (usize, usize, usize),
) -> Vec<(usize, f64)> {
    let mut out = Vec::new();
    for ch in 0..c {
        for oy in 0..(h + 2 * pad - k) / s + 1 {
            for ox in 0..(w + 2 * pad - k) / s + 1 {
                let (mut best, mut first, mut second) = (0, f64::NEG_INFINITY, f64::NEG_INFINITY);
                for ky in 0..k {
                    for kx in 0..k {
                        let (y, x) = (
                            (oy * s + ky) as isize - pad as isize,
                            (ox * s + kx) as isize - pad as isize,
                        );
                        if y < 0 || x < 0 || y >= h as isize || x >= w as isize {
                            continue;
                        }
                        let at = ch * h * w + y as usize * w + x as usize;
                        if v[at] > first {
                            (second, first, best) = (first, v[at], at);
                        } else if v[at] > second {
                            second = v[at];
                        }
                    }
                }
                out.push((best, first - second));
            }
        }
    }
    out
}

/// Relative to the window's largest value, a gap below which float32 rounding upstream may
/// decide a max-pool's winner.
const ROUNDING_TIE: f64 = 1e-3;

/// Images on which our float32 pass routes a max-pool's gradient to another element than
/// the float64 pass does (each such window is reported on stderr). The fixtures' second VGG image
/// has a window after layer 13 whose two values, ~0.0141, are 3e-6 apart in float64: on
/// an AVX2 CPU (im2col + the gemm crate, and candle's own convolution alike) float32 picks
/// the other one, also with the last convolution in float64, and every layer below gets
/// another gradient. No float32 implementation can promise PyTorch's choice there; a flip
/// where the float64 values are further apart than [`ROUNDING_TIE`] is a bug and fails.
fn rounding_flips(model: &dyn zerobias::models::Classifier, model_file: &str) -> Vec<usize> {
    let rec = zerobias::taps::record(model, &input(), &Target::Predicted).unwrap();
    let mut flipped = Vec::new();
    for (layer, exact, geometry) in float64_pool_inputs(model_file) {
        let ours = rec.acts.iter().find(|a| a.layer == layer).unwrap();
        let (n, c, h, w) = exact.dims4().unwrap();
        assert_eq!(ours.value.dims4().unwrap(), (n, c, h, w), "layer {layer}");
        for img in 0..n {
            let values = |t: &Tensor| -> Vec<f64> {
                t.get(img)
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_device(&Device::Cpu)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            };
            let (want, got) = (values(&exact), values(&ours.value));
            let shape = (c, h, w);
            for ((best, gap), (ours_best, _)) in pool_winners(&want, shape, geometry)
                .into_iter()
                .zip(pool_winners(&got, shape, geometry))
            {
                if best == ours_best {
                    continue;
                }
                assert!(
                    gap <= ROUNDING_TIE * want[best].abs(),
                    "{model_file}: image {img}: the max-pool after layer {layer} picks element {ours_best} ({}), float64 picks {best} ({}), {gap:.2e} apart: more than rounding",
                    got[ours_best], want[best]
                );
                eprintln!(
                    "{model_file}: image {img}: the max-pool after layer {layer} picks element {ours_best}, float64 picks {best}: {:.6e} vs {:.6e}, {gap:.1e} apart in float64; float32 rounding decided it, so this image's maps below it are not compared",
                    got[ours_best], want[best]
                );
                flipped.push(img);
            }
        }
    }
    flipped
}

fn check_attribution(model_file: &str, expected_file: &str) {
    let Some(dir) = common::fixtures() else {
        return;
    };
    let model = zerobias::models::load(&dir.join(model_file), &common::device()).unwrap();
    let methods = all_methods(model.as_ref());
    let att = attribute(model.as_ref(), &input(), &Target::Predicted, &methods).unwrap();
    let expected = load_expected(expected_file);
    let mut names: Vec<_> = expected.keys().cloned().collect();
    names.sort();
    // Maps below a rounding-decided max-pool are compared on the other images only; the
    // logits, the classifier's bias terms, Grad-CAM's top layer and the completeness
    // residual are compared on every image.
    let tied = rounding_flips(model.as_ref(), model_file);
    assert!(
        (0..input().dims()[0]).any(|i| !tied.contains(&i)),
        "{model_file}: float32 rounding decided a max-pool on every image; nothing left to compare"
    );
    let routed = |name: &str| {
        let above = [
            "logits",
            "target",
            "completeness_residual",
            "gradcam",
            "bias.fc",
        ];
        !(above.contains(&name) || name.starts_with("bias.classifier"))
    };
    let mut failures = Vec::new();
    for name in names {
        let keep: Vec<usize> = (0..expected[&name].dims()[0])
            .filter(|i| !(routed(&name) && tied.contains(i)))
            .collect();
        let pick = |t: &Tensor| {
            let idx = Tensor::new(
                keep.iter().map(|&i| i as u32).collect::<Vec<_>>(),
                t.device(),
            )
            .unwrap();
            t.index_select(&idx, 0).unwrap()
        };
        let want = pick(&expected[&name]).flatten_all().unwrap();
        let got = match name.as_str() {
            "logits" => att.logits.clone(),
            "target" => {
                let t: Vec<i64> = want.to_vec1().unwrap();
                let g: Vec<i64> = att.target.iter().map(|&v| v as i64).collect();
                assert_eq!(t, g, "target");
                continue;
            }
            "completeness_residual" => {
                let logit: Vec<f32> = att.target_logit.to_vec1().unwrap();
                let r: Vec<f32> = att.completeness_residual.to_vec1().unwrap();
                for (r, l) in r.iter().zip(&logit) {
                    assert!(
                        r.abs() <= 1e-4 * l.abs().max(1.0),
                        "{model_file}: residual {r} for logit {l}"
                    );
                }
                continue;
            }
            _ => match att.maps.get(&name) {
                Some(t) => pick(&t.to_device(&Device::Cpu).unwrap()),
                None => {
                    failures.push(format!("{name}: missing"));
                    continue;
                }
            },
        };
        let got = got.flatten_all().unwrap();
        if got.dims() != want.dims() {
            failures.push(format!(
                "{name}: {} values, expected {}",
                got.dims()[0],
                want.dims()[0]
            ));
            continue;
        }
        let err = common::rel_l2(
            &got.to_vec1::<f32>().unwrap(),
            &want.to_vec1::<f32>().unwrap(),
        );
        if err > 1e-3 {
            failures.push(format!("{name}: relative L2 error {err}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{model_file}:\n{}",
        failures.join("\n")
    );
}

#[test]
fn vgg16_attributions_match_pytorch() {
    check_attribution("vgg16.safetensors", "vgg16_expected.safetensors");
}

#[test]
fn resnet50_attributions_match_pytorch() {
    check_attribution("resnet50.safetensors", "resnet50_expected.safetensors");
}
