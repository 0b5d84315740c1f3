//! Self-contained gradient checks (no fixtures): max-pool backward, ReLU at 0, probes,
//! attribution completeness and a^{h,l} against finite differences.

use candle_core::{DType, Device, Tensor, Var};
use zerobias::attribution::{all_methods, attribute};
use zerobias::models::layers::{max_pool2d, relu};
use zerobias::models::{self, Classifier, Ctx};
use zerobias::taps::{record, Target};

fn rand(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = zerobias::data::Rng::new(seed);
    let n: usize = shape.iter().product();
    Tensor::from_vec(
        (0..n).map(|_| rng.normal()).collect::<Vec<f32>>(),
        shape,
        &Device::Cpu,
    )
    .unwrap()
}

/// Every logit of `model` on `x`, flattened.
fn logits(model: &dyn Classifier, x: &Tensor) -> Vec<f32> {
    model
        .forward(x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Central finite differences of sum(w ⊙ f(x)) vs autograd.
fn check_fd(f: &dyn Fn(&Tensor) -> Tensor, x0: &Tensor, seed: u64) {
    let w = rand(f(x0).dims(), seed + 1);
    let x = Var::from_tensor(x0).unwrap();
    let y = (f(x.as_tensor()) * &w).unwrap().sum_all().unwrap();
    let g: Vec<f32> = y
        .backward()
        .unwrap()
        .get(x.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let base: Vec<f32> = x0.flatten_all().unwrap().to_vec1().unwrap();
    let eval = |v: &[f32]| -> f64 {
        let t = Tensor::from_vec(v.to_vec(), x0.dims(), &Device::Cpu).unwrap();
        (f(&t) * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    for i in 0..base.len() {
        let h = 1e-3f32;
        let mut p = base.clone();
        p[i] += h;
        let mut m = base.clone();
        m[i] -= h;
        let fd = (eval(&p) - eval(&m)) / (2.0 * h as f64);
        assert!(
            (fd - g[i] as f64).abs() < 1e-2 * (1.0 + fd.abs()),
            "element {i}: finite difference {fd} vs autograd {}",
            g[i]
        );
    }
}

#[test]
fn max_pool_3x3_stride2_pad1_backward_matches_finite_differences() {
    // Distinct values so the max is unique and the function is differentiable.
    let mut v: Vec<f32> = (0..2 * 3 * 7 * 6)
        .map(|i| ((i * 37 % 101) as f32) * 0.1)
        .collect();
    v[5] = -3.0;
    let x = Tensor::from_vec(v, (2, 3, 7, 6), &Device::Cpu).unwrap();
    let mut rec = zerobias::taps::Recorder::default();
    let ctx = Ctx::recording(&mut rec);
    check_fd(&|t| max_pool2d(t, 3, 2, 1, &ctx).unwrap(), &x, 1);
    let out = max_pool2d(&x, 3, 2, 1, &ctx).unwrap();
    assert_eq!(out.dims(), &[2, 3, 4, 3]);
}

#[test]
fn max_pool_2x2_gives_one_winner_per_window_like_pytorch() {
    // A window of ties (all zeros): PyTorch routes the gradient to the first element only.
    let x =
        Var::from_tensor(&Tensor::zeros((1, 1, 2, 2), DType::F32, &Device::Cpu).unwrap()).unwrap();
    let mut rec = zerobias::taps::Recorder::default();
    let ctx = Ctx::recording(&mut rec);
    let y = max_pool2d(x.as_tensor(), 2, 2, 0, &ctx)
        .unwrap()
        .sum_all()
        .unwrap();
    let g: Vec<f32> = y
        .backward()
        .unwrap()
        .get(x.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(g, vec![1.0, 0.0, 0.0, 0.0]);
}

#[test]
fn relu_gradient_is_zero_at_zero() {
    let x = Var::from_vec(vec![-1.0f32, 0.0, 2.0], 3, &Device::Cpu).unwrap();
    let mut rec = zerobias::taps::Recorder::default();
    let ctx = Ctx::recording(&mut rec);
    let y = relu(x.as_tensor(), &ctx).unwrap().sum_all().unwrap();
    let g: Vec<f32> = y
        .backward()
        .unwrap()
        .get(x.as_tensor())
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(g, vec![0.0, 0.0, 1.0]);
    let xs = Tensor::new(&[-0.5f32, 0.3, 1.2, -2.0], &Device::Cpu).unwrap();
    check_fd(&|t| relu(t, &ctx).unwrap(), &xs, 3);
}

fn tiny_vgg(bias_scale: f64) -> Box<dyn Classifier> {
    let mut t = models::init::vgg16(2, 8, 4, 7, &Device::Cpu).unwrap();
    let mut rng = zerobias::data::Rng::new(11);
    for (k, v) in t.iter_mut() {
        if k.ends_with(".bias") {
            let n = v.elem_count();
            *v = Tensor::from_vec(
                (0..n)
                    .map(|_| rng.normal() * 0.1 * bias_scale as f32)
                    .collect::<Vec<f32>>(),
                n,
                &Device::Cpu,
            )
            .unwrap();
        }
    }
    models::build(&t, "tiny").unwrap()
}

fn tiny_resnet() -> Box<dyn Classifier> {
    let mut t = models::init::resnet50(2, 5, 3, &Device::Cpu).unwrap();
    let mut rng = zerobias::data::Rng::new(5);
    for (k, v) in t.iter_mut() {
        if k.contains("bn") || k.contains("downsample.1") {
            let n = v.elem_count();
            let vals: Vec<f32> = (0..n)
                .map(|_| {
                    let r = rng.normal() * 0.1;
                    if k.ends_with("running_var") || k.ends_with("weight") {
                        1.0 + r.abs()
                    } else {
                        r
                    }
                })
                .collect();
            *v = Tensor::from_vec(vals, n, &Device::Cpu).unwrap();
        }
    }
    models::build(&t, "tiny resnet").unwrap()
}

#[test]
fn probes_give_the_gradient_of_the_target_logit() {
    // d f / d x through the probe mechanism equals a finite difference of the logit.
    let model = tiny_vgg(1.0);
    let x = rand(&[1, 3, 32, 32], 2);
    let rec = record(model.as_ref(), &x, &Target::Class(1)).unwrap();
    let g: Vec<f32> = rec.input_grad.flatten_all().unwrap().to_vec1().unwrap();
    let base: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
    let logit = |v: &[f32]| -> f64 {
        let t = Tensor::from_vec(v.to_vec(), (1, 3, 32, 32), &Device::Cpu).unwrap();
        model
            .forward(&t)
            .unwrap()
            .get(0)
            .unwrap()
            .get(1)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64
    };
    for i in [0usize, 100, 1000, 2000, 3071] {
        let h = 1e-2f32;
        let mut p = base.clone();
        p[i] += h;
        let mut m = base.clone();
        m[i] -= h;
        let fd = (logit(&p) - logit(&m)) / (2.0 * h as f64);
        assert!(
            (fd - g[i] as f64).abs() < 2e-3 * (1.0 + fd.abs()),
            "pixel {i}: fd {fd} vs {}",
            g[i]
        );
    }
    assert_eq!(rec.acts.len(), 13);
    // Probes do not change the forward result.
    let plain: Vec<f32> = logits(model.as_ref(), &x);
    let tapped: Vec<f32> = rec.logits.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(plain, tapped);
}

#[test]
fn completeness_holds_for_vgg_and_resnet() {
    for model in [tiny_vgg(1.0), tiny_resnet()] {
        let x = rand(&[2, 3, 48, 48], 9);
        let att = attribute(
            model.as_ref(),
            &x,
            &Target::Predicted,
            &all_methods(model.as_ref()),
        )
        .unwrap();
        let r: Vec<f32> = att.completeness_residual.to_vec1().unwrap();
        let l: Vec<f32> = att.target_logit.to_vec1().unwrap();
        for (r, l) in r.iter().zip(&l) {
            assert!(
                r.abs() <= 1e-4 * l.abs().max(1.0),
                "{}: residual {r} for logit {l}",
                model.name()
            );
        }
    }
}

#[test]
fn zero_bias_network_is_complete_at_every_layer() {
    // With every bias at zero, Σ a^{h,l} equals the logit for each layer l.
    let model = tiny_resnet();
    model.bias_set().zero().unwrap();
    assert_eq!(model.bias_set().max_abs().unwrap(), 0.0);
    let x = rand(&[2, 3, 40, 40], 4);
    let att = attribute(
        model.as_ref(),
        &x,
        &Target::Predicted,
        &all_methods(model.as_ref()),
    )
    .unwrap();
    let logit: Vec<f32> = att.target_logit.to_vec1().unwrap();
    let gross: Vec<Vec<f32>> = att.gross_act.to_vec2().unwrap();
    for (i, row) in gross.iter().enumerate() {
        for (l, a) in row.iter().enumerate() {
            assert!(
                (a - logit[i]).abs() <= 1e-4 * logit[i].abs().max(1.0),
                "image {i} layer {l}: {a} vs logit {}",
                logit[i]
            );
        }
    }
}

#[test]
fn activation_attribution_matches_finite_differences() {
    // a^{h,l} = Σ h ⊙ ∂f/∂h: perturbing layer 3's activation by ε·h scales its contribution,
    // so d f(h + ε h)/dε at 0 equals Σ a^{h,3}. Checked via the bias-free network where
    // f is 1-homogeneous in h: f(h·(1+ε)) = (1+ε) f.
    let model = tiny_vgg(0.0);
    let x = rand(&[1, 3, 32, 32], 12);
    let att = attribute(
        model.as_ref(),
        &x,
        &Target::Predicted,
        &all_methods(model.as_ref()),
    )
    .unwrap();
    let logit = att.target_logit.to_vec1::<f32>().unwrap()[0];
    let scaled = model.forward(&(x.clone() * 1.01).unwrap()).unwrap();
    let t = att.target[0] as usize;
    let f2 = scaled
        .get(0)
        .unwrap()
        .get(t)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let fd = (f2 - logit) / 0.01;
    let a0: f32 = att
        .maps
        .get("act.0")
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(
        (fd - a0).abs() <= 1e-3 * fd.abs().max(1.0),
        "d f / d scale {fd} vs Σ act.0 {a0}"
    );
}

#[test]
fn rescaling_biases_acts_on_the_live_model() {
    let model = tiny_vgg(1.0);
    let x = rand(&[1, 3, 32, 32], 3);
    let before: Vec<f32> = logits(model.as_ref(), &x);
    let set = model.bias_set();
    set.scale(0.0).unwrap();
    let after: Vec<f32> = logits(model.as_ref(), &x);
    assert_ne!(before, after);
    let zeroed = tiny_vgg(0.0);
    let expect: Vec<f32> = logits(zeroed.as_ref(), &x);
    for (a, b) in after.iter().zip(&expect) {
        assert!((a - b).abs() < 1e-5);
    }
    // Counting: VGG-16 has 13 conv and 3 linear biases.
    assert_eq!(set.len(), 16);
}

/// Every bias handle at s times its value is the input at 1/s times its norm:
/// f_{s·b}(x) = s·f_b(x/s), since each layer's pre-activation W·h + s·b is s·(W·h/s + b)
/// and ReLU, max-pool, average-pool and the residual sums commute with positive scaling.
/// So the decay curve's teacher at scale s is the teacher shown inputs 1/s times larger.
/// It holds only if the handles are exactly the bias-like parameters: conv and linear
/// biases, BN β and running mean, not γ or the running variance.
#[test]
fn biases_at_scale_s_are_the_input_at_one_over_s() {
    let x = rand(&[2, 3, 32, 32], 21);
    for model in [tiny_vgg(1.0), tiny_resnet()] {
        let set = model.bias_set();
        let saved = set.snapshot();
        for s in [0.5, 0.125, 0.3] {
            let inflated: Vec<f32> = logits(model.as_ref(), &(&x / s).unwrap())
                .iter()
                .map(|v| v * s as f32)
                .collect();
            set.scale(s).unwrap();
            let scaled: Vec<f32> = logits(model.as_ref(), &x);
            set.restore(&saved).unwrap();
            let top = inflated.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(top > 0.0);
            for (a, b) in inflated.iter().zip(&scaled) {
                assert!(
                    (a - b).abs() <= 1e-5 * top,
                    "{:?}, s = {s}: s·f(x/s) = {a}, f with biases × s = {b}",
                    model.arch()
                );
            }
        }
        // Not a tautology: without the biases the two differ.
        set.scale(0.0).unwrap();
        let zero: Vec<f32> = logits(model.as_ref(), &x);
        set.restore(&saved).unwrap();
        let full: Vec<f32> = logits(model.as_ref(), &x);
        assert_ne!(zero, full);
    }
}

#[test]
fn adaptive_pool_matches_pytorch_bins() {
    // 5 -> 7 (bins repeat) and 10 -> 7 (bins overlap), against hand-computed PyTorch bins.
    let x = Tensor::arange(0f32, 10.0, &Device::Cpu)
        .unwrap()
        .reshape((1, 1, 1, 10))
        .unwrap()
        .broadcast_as((1, 1, 7, 10))
        .unwrap()
        .contiguous()
        .unwrap();
    let y = models::layers::adaptive_avg_pool2d(&x, 7, 7).unwrap();
    let row: Vec<f32> = y
        .get(0)
        .unwrap()
        .get(0)
        .unwrap()
        .get(0)
        .unwrap()
        .to_vec1()
        .unwrap();
    // bins: [0,2) [1,3) [2,5) [4,6) [5,8) [7,9) [8,10)
    let want = [0.5f32, 1.5, 3.0, 4.5, 6.0, 7.5, 8.5];
    for (a, b) in row.iter().zip(&want) {
        assert!((a - b).abs() < 1e-6, "{row:?}");
    }
    let x = Tensor::arange(0f32, 5.0, &Device::Cpu)
        .unwrap()
        .reshape((1, 1, 1, 5))
        .unwrap()
        .broadcast_as((1, 1, 5, 5))
        .unwrap()
        .contiguous()
        .unwrap();
    let row: Vec<f32> = models::layers::adaptive_avg_pool2d(&x, 7, 7)
        .unwrap()
        .get(0)
        .unwrap()
        .get(0)
        .unwrap()
        .get(0)
        .unwrap()
        .to_vec1()
        .unwrap();
    // bins: [0,1) [0,2) [1,3) [2,3) [2,4) [3,5) [4,5)
    let want = [0.0f32, 0.5, 1.5, 2.0, 2.5, 3.5, 4.0];
    for (a, b) in row.iter().zip(&want) {
        assert!((a - b).abs() < 1e-6, "{row:?}");
    }
}

/// A tensor used twice gets the sum of both gradients. Large f32 sums go through the
/// vendored candle's rayon add (vendor/candle-core/ZEROBIAS.md): same values as candle's add,
/// bit for bit, for any shape (small ones keep candle's add).
#[test]
fn gradients_of_a_tensor_used_twice_add_up_exactly() {
    for shape in [(2usize, 3usize, 130usize, 129usize), (1, 2, 5, 7)] {
        let n = shape.0 * shape.1 * shape.2 * shape.3;
        let values = |seed: u64| -> Tensor {
            let mut s = seed;
            let v: Vec<f32> = (0..n)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    (s % 20_001) as f32 / 997.0 - 10.0
                })
                .collect();
            Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
        };
        let (a, b) = (values(0x9E37_79B9_7F4A_7C15), values(0xD1B5_4A32_D192_ED03));
        let x = Var::from_tensor(&values(7)).unwrap();
        let loss = ((x.as_tensor() * &a).unwrap().sum_all().unwrap()
            + (x.as_tensor() * &b).unwrap().sum_all().unwrap())
        .unwrap();
        let grads = loss.backward().unwrap();
        let got: Vec<f32> = grads
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let want: Vec<f32> = (&a + &b).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g.to_bits(),
                w.to_bits(),
                "shape {shape:?}, value {i}: {g} vs {w}"
            );
        }
    }
}
