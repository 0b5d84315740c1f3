//! Non-finite values: NaN propagates through the network as in PyTorch; NaN/Inf weights and
//! inputs are refused at load naming the tensor or image; a non-finite logit, attribution
//! or metric ends the command with an error, and no file of the user's changes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use zerobias::attribution::{all_methods, attribute};
use zerobias::models::{self, Classifier};
use zerobias::taps::Target;

fn normal(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut rng = zerobias::data::Rng::new(seed);
    (0..n).map(|_| rng.normal() * scale).collect()
}

/// Tiny VGG-16 and ResNet-50 weights with non-zero biases (BN statistics too), so that
/// every fused op (bias + ReLU, BN + ReLU, BN + residual + ReLU) sees general values.
fn weights(arch: &str) -> HashMap<String, Tensor> {
    let mut t = match arch {
        "vgg16" => models::init::vgg16(8, 16, 3, 1, &Device::Cpu).unwrap(),
        _ => models::init::resnet50(8, 3, 1, &Device::Cpu).unwrap(),
    };
    let mut seed = 100;
    for (k, v) in t.iter_mut() {
        let n = v.elem_count();
        seed += 1;
        let shift = |v: Vec<f32>, by: f32| v.into_iter().map(|x| x + by).collect::<Vec<_>>();
        let values = if k.ends_with(".bias") || k.ends_with(".running_mean") {
            normal(n, seed, 0.1)
        } else if k.ends_with(".running_var") || (k.contains("bn") && k.ends_with(".weight")) {
            shift(normal(n, seed, 0.1), 1.0)
                .into_iter()
                .map(f32::abs)
                .collect()
        } else {
            continue;
        };
        *v = Tensor::from_vec(values, v.shape(), &Device::Cpu).unwrap();
    }
    t
}

fn image_batch(n: usize) -> Vec<f32> {
    normal(n * 3 * 32 * 32, 7, 1.0)
}

fn logits(model: &dyn Classifier, x: &[f32], n: usize) -> Vec<Vec<f32>> {
    let t = Tensor::from_vec(x.to_vec(), (n, 3, 32, 32), &Device::Cpu).unwrap();
    model.forward(&t).unwrap().to_vec2().unwrap()
}

/// Through the library (which does not check inputs): one NaN pixel makes its image's
/// logits and attribution maps NaN, for VGG-16 and ResNet-50, with and without a graph; the
/// other image of the batch is unaffected. An infinite pixel gives non-finite logits too.
#[test]
fn one_nan_pixel_gives_nan_logits_and_maps() {
    for arch in ["vgg16", "resnet50"] {
        let model = models::build(&weights(arch), arch).unwrap();
        let mut x = image_batch(2);
        let clean = logits(model.as_ref(), &x, 2);
        assert!(
            clean.iter().flatten().all(|v| v.is_finite()),
            "{arch}: {clean:?}"
        );
        x[32 * 32 + 17 * 32 + 9] = f32::NAN;
        let out = logits(model.as_ref(), &x, 2);
        assert!(out[0].iter().all(|v| v.is_nan()), "{arch}: {out:?}");
        assert_eq!(out[1], clean[1], "{arch}: the other image changed");

        let t = Tensor::from_vec(x.clone(), (2, 3, 32, 32), &Device::Cpu).unwrap();
        let att = attribute(
            model.as_ref(),
            &t,
            &Target::Class(1),
            &all_methods(model.as_ref()),
        )
        .unwrap();
        let first: Vec<f32> = att.logits.get(0).unwrap().to_vec1().unwrap();
        assert!(first.iter().all(|v| v.is_nan()), "{arch}: {first:?}");
        // Maps that multiply an activation by a gradient are NaN for image 0; gradients
        // alone stay finite (the backward pass multiplies by weights, not activations, and
        // ReLU and max-pool pass the gradient at a NaN on, as in PyTorch).
        for (name, map) in att.maps.iter() {
            let bad: Vec<usize> = zerobias::finite::per_item(map)
                .unwrap()
                .iter()
                .map(|(i, _)| *i)
                .collect();
            if name.starts_with("act.") || name == "gradcam" {
                assert_eq!(bad, [0], "{arch}: map {name}");
            } else {
                assert!(bad.iter().all(|&i| i == 0), "{arch}: map {name}");
            }
        }

        x[32 * 32 + 17 * 32 + 9] = f32::INFINITY;
        let out = logits(model.as_ref(), &x, 2);
        assert!(out[0].iter().all(|v| !v.is_finite()), "{arch}: {out:?}");
    }
}

/// Every convolution path (im2col + gemm, 1×1, strided, the direct and Winograd kernels
/// where the CPU has AVX-512) makes exactly the outputs whose window holds the NaN pixel
/// NaN, as a direct convolution (PyTorch's) does, and no others.
#[test]
fn convolutions_propagate_a_nan_pixel_to_exactly_its_windows() {
    // (batch, channels in, out, size, kernel, stride, padding)
    let cases = [
        (1, 3, 8, 9, 3, 1, 1),
        (1, 16, 16, 9, 3, 1, 1),
        (1, 16, 16, 9, 3, 2, 1),
        (1, 16, 32, 9, 1, 1, 0),
        (1, 3, 16, 16, 7, 2, 3),
        (8, 64, 64, 8, 3, 1, 1),
    ];
    for (i, &(n, c, o, s, k, stride, pad)) in cases.iter().enumerate() {
        let mut x = normal(n * c * s * s, 20 + i as u64, 1.0);
        let (img, ch, y, xx) = (n - 1, c / 2, s / 2 - 1, s / 2);
        x[((img * c + ch) * s + y) * s + xx] = f32::NAN;
        let x = Tensor::from_vec(x, (n, c, s, s), &Device::Cpu).unwrap();
        let w = Tensor::from_vec(
            normal(o * c * k * k, 40 + i as u64, 0.2),
            (o, c, k, k),
            &Device::Cpu,
        )
        .unwrap();
        let out = models::conv::conv2d(&x, &w, pad, stride).unwrap();
        let (_, _, oh, ow) = out.dims4().unwrap();
        let v: Vec<f32> = out.flatten_all().unwrap().to_vec1().unwrap();
        let touches = |p: usize, q: usize| {
            let inside = |out: usize, at: usize| {
                let lo = (out * stride) as isize - pad as isize;
                (lo..lo + k as isize).contains(&(at as isize))
            };
            inside(p, y) && inside(q, xx)
        };
        for b in 0..n {
            for oc in 0..o {
                for p in 0..oh {
                    for q in 0..ow {
                        let val = v[((b * o + oc) * oh + p) * ow + q];
                        let want_nan = b == img && touches(p, q);
                        assert_eq!(
                            val.is_nan(),
                            want_nan,
                            "case {i}: image {b} channel {oc} at ({p}, {q}) = {val}"
                        );
                        assert!(want_nan || val.is_finite(), "case {i}");
                    }
                }
            }
        }
    }
}

// ---- through the CLI ----

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_zerobias"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!err.contains("panicked"), "panic for {args:?}: {err}");
    (out.status.code().unwrap_or(-1), stdout, err)
}

fn save(path: &Path, t: &HashMap<String, Tensor>) {
    let mut named: Vec<(String, Tensor)> = t.clone().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    zerobias::checkpoint::save(path, &named, Default::default()).unwrap();
}

fn save_input(path: &Path, x: Vec<f32>, n: usize) {
    let t = Tensor::from_vec(x, (n, 3, 32, 32), &Device::Cpu).unwrap();
    zerobias::checkpoint::save(path, &[("input".into(), t)], Default::default()).unwrap();
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(snapshot(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out.sort();
    out
}

/// The command fails with a one-line error holding every needle, and leaves the folder
/// exactly as it was (no file written, changed or removed; no figure folder created).
fn expect_refused(dir: &Path, args: &[&str], needles: &[&str]) {
    let before = snapshot(dir);
    let (code, stdout, err) = run(args);
    assert_ne!(code, 0, "{args:?} succeeded: {stdout}");
    assert!(err.trim().starts_with("error:"), "{args:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: '{n}' not in: {err}");
    }
    assert!(
        !stdout.to_lowercase().contains("nan") && !stdout.contains("inf"),
        "{args:?} printed a non-finite number: {stdout}"
    );
    assert_eq!(snapshot(dir), before, "{args:?} changed the user's files");
}

struct Setup {
    dir: tempfile::TempDir,
    model: String,
    input: String,
    out_file: String,
    out_dir: String,
    png: String,
}

/// A folder with a good model, a good 2-image input, an existing output file and an existing
/// output folder (both must survive a failing command untouched).
fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    save(&dir.path().join("model.safetensors"), &weights("vgg16"));
    save_input(&dir.path().join("x.safetensors"), image_batch(2), 2);
    std::fs::write(dir.path().join("old.safetensors"), b"earlier results").unwrap();
    std::fs::create_dir(dir.path().join("results")).unwrap();
    std::fs::write(dir.path().join("results/summary.csv"), b"earlier,summary\n").unwrap();
    Setup {
        model: p("model.safetensors"),
        input: p("x.safetensors"),
        out_file: p("old.safetensors"),
        out_dir: p("results"),
        png: p("figures"),
        dir,
    }
}

/// Each command that reads a model, on the given model and input, each with its outputs.
fn every_command<'a>(s: &'a Setup, model: &'a str, input: &'a str) -> Vec<Vec<&'a str>> {
    vec![
        vec![
            "predict",
            "--model",
            model,
            "--input",
            input,
            "--out",
            &s.out_file,
        ],
        vec![
            "attribute",
            "--model",
            model,
            "--input",
            input,
            "--out",
            &s.out_file,
            "--png",
            &s.png,
        ],
        vec![
            "evaluate",
            "--model",
            model,
            "--input",
            input,
            "--steps",
            "4",
            "--methods",
            "grad",
            "--noise-samples",
            "1",
            "--out",
            &s.out_dir,
        ],
        vec![
            "survey", "--model", model, "--input", input, "--out", &s.out_dir,
        ],
    ]
}

#[test]
fn weights_with_nan_or_inf_are_refused_naming_the_tensors() {
    let s = setup();
    let mut t = weights("vgg16");
    let poison = |t: &mut HashMap<String, Tensor>, k: &str, at: &[usize], v: f32| {
        let mut vals: Vec<f32> = t[k].flatten_all().unwrap().to_vec1().unwrap();
        for &i in at {
            vals[i] = v;
        }
        let shape = t[k].shape().clone();
        t.insert(
            k.into(),
            Tensor::from_vec(vals, shape, &Device::Cpu).unwrap(),
        );
    };
    poison(&mut t, "features.0.weight", &[0, 5, 9], f32::NAN);
    poison(&mut t, "classifier.6.bias", &[1], f32::NEG_INFINITY);
    let bad = s.dir.path().join("bad.safetensors");
    save(&bad, &t);
    let bad = bad.to_str().unwrap();
    let needles = [
        bad,
        "features.0.weight contains 3 non-finite values (3 NaN)",
        "classifier.6.bias contains 1 non-finite value (1 -inf)",
        "weights must be finite",
    ];
    for args in every_command(&s, bad, &s.input) {
        expect_refused(s.dir.path(), &args, &needles);
    }
    expect_refused(s.dir.path(), &["info", "--model", bad], &needles);
}

#[test]
fn inputs_with_nan_or_inf_are_refused_naming_the_image() {
    let s = setup();
    let mut x = image_batch(3);
    x[2 * 3 * 32 * 32 + 100] = f32::INFINITY;
    x[2 * 3 * 32 * 32 + 101] = f32::NAN;
    let bad = s.dir.path().join("bad-input.safetensors");
    save_input(&bad, x, 3);
    let bad = bad.to_str().unwrap();
    let needles = [
        bad,
        "image input[2] contains 2 non-finite values (1 NaN, 1 +inf)",
        "inputs must be finite",
    ];
    for args in every_command(&s, &s.model, bad) {
        expect_refused(s.dir.path(), &args, &needles);
    }
}

/// Finite weights whose products overflow: the logits are ±inf or NaN. Every command stops
/// with an error naming the logits and the image, prints no number, and writes nothing.
#[test]
fn non_finite_logits_are_an_error_not_a_result() {
    let s = setup();
    let mut t = weights("vgg16");
    for k in [
        "classifier.0.weight",
        "classifier.3.weight",
        "classifier.6.weight",
    ] {
        let big = (&t[k] * 1e30).unwrap();
        t.insert(k.into(), big);
    }
    let huge = s.dir.path().join("huge.safetensors");
    save(&huge, &t);
    let huge = huge.to_str().unwrap();
    let cmds = every_command(&s, huge, &s.input);
    let needles: [&[&str]; 4] = [
        &[
            "non-finite result: logits of input[0] contain",
            "nothing was written",
        ],
        &["non-finite result: logits of input[0] contain"],
        &["non-finite result: logits of model huge of image 0 contain"],
        &["non-finite result: logits (vanilla model) of image 0 contain"],
    ];
    for (args, n) in cmds.iter().zip(needles) {
        expect_refused(s.dir.path(), args, n);
    }
}

/// Saliency maps given to `evaluate --maps` must be finite: the file, the map and the image
/// are named.
#[test]
fn evaluate_refuses_non_finite_external_maps() {
    let s = setup();
    let mut m = vec![0.5f32; 2 * 32 * 32];
    m[32 * 32 + 3] = f32::NAN;
    let maps = s.dir.path().join("maps.safetensors");
    let t = Tensor::from_vec(m, (2, 32, 32), &Device::Cpu).unwrap();
    zerobias::checkpoint::save(&maps, &[("maps.captum".into(), t)], Default::default()).unwrap();
    let maps = maps.to_str().unwrap();
    expect_refused(
        s.dir.path(),
        &[
            "evaluate",
            "--model",
            &s.model,
            "--input",
            &s.input,
            "--maps",
            maps,
            "--steps",
            "4",
            "--noise-samples",
            "1",
            "--out",
            &s.out_dir,
        ],
        &[
            maps,
            "maps.captum contains 1 non-finite value (1 NaN) at image 1",
        ],
    );
}

/// The good setup works (so that the refusals above are about the bad values), and writes
/// finite results.
#[test]
fn finite_model_and_inputs_still_work() {
    let s = setup();
    let (code, stdout, err) = run(&[
        "predict",
        "--model",
        &s.model,
        "--input",
        &s.input,
        "--out",
        &s.out_file,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("input[1]"), "{stdout}");
    let (t, _) = zerobias::checkpoint::read_tensors(Path::new(&s.out_file), &Device::Cpu).unwrap();
    assert!(zerobias::finite::count(&t["logits"]).unwrap().is_empty());
    assert_eq!(t["logits"].dtype(), DType::F32);
}
