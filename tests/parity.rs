//! PyTorch parity on ../shared/fixtures (skipped with a reason when absent), on the
//! device `ZEROBIAS_TEST_DEVICE` names (cpu by default).

mod common;

use candle_core::{Device, Tensor};
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
    let mut failures = Vec::new();
    for name in names {
        let want = expected[&name].flatten_all().unwrap();
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
                Some(t) => t.clone(),
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
