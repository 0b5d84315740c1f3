//! Fresh, randomly initialised weights in torchvision naming (torchvision's init), so a
//! teacher can be trained from scratch with the same loader as pretrained checkpoints.

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use crate::data::Rng;
use crate::error::{Error, Result};

fn normal(shape: &[usize], std: f32, rng: &mut Rng, device: &Device) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.normal() * std).collect();
    Ok(Tensor::from_vec(v, shape, device)?)
}

fn uniform(shape: &[usize], bound: f32, rng: &mut Rng, device: &Device) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| (rng.uniform() * 2.0 - 1.0) * bound)
        .collect();
    Ok(Tensor::from_vec(v, shape, device)?)
}

/// Kaiming normal, ReLU gain, mode fan_in (preserves the forward signal through a plain
/// VGG whose widths double; torchvision's fan_out halves it at every widening).
#[allow(clippy::too_many_arguments)]
fn conv(
    t: &mut HashMap<String, Tensor>,
    name: &str,
    out: usize,
    inp: usize,
    k: usize,
    bias: bool,
    rng: &mut Rng,
    dev: &Device,
) -> Result<()> {
    let std = (2.0 / (inp * k * k) as f32).sqrt();
    t.insert(
        format!("{name}.weight"),
        normal(&[out, inp, k, k], std, rng, dev)?,
    );
    if bias {
        t.insert(
            format!("{name}.bias"),
            Tensor::zeros(out, candle_core::DType::F32, dev)?,
        );
    }
    Ok(())
}

fn bn(t: &mut HashMap<String, Tensor>, name: &str, c: usize, dev: &Device) -> Result<()> {
    let f = candle_core::DType::F32;
    t.insert(format!("{name}.weight"), Tensor::ones(c, f, dev)?);
    t.insert(format!("{name}.bias"), Tensor::zeros(c, f, dev)?);
    t.insert(format!("{name}.running_mean"), Tensor::zeros(c, f, dev)?);
    t.insert(format!("{name}.running_var"), Tensor::ones(c, f, dev)?);
    Ok(())
}

/// VGG-16 topology with widths (w, 2w, 4w, 8w, 8w), classifier hidden width `hidden`.
pub fn vgg16(
    width: usize,
    hidden: usize,
    classes: usize,
    seed: u64,
    dev: &Device,
) -> Result<HashMap<String, Tensor>> {
    check(width, classes)?;
    let mut rng = Rng::new(seed);
    let mut t = HashMap::new();
    let cfg: [&[usize]; 5] = [&[1, 1], &[2, 2], &[4, 4, 4], &[8, 8, 8], &[8, 8, 8]];
    let (mut idx, mut inp) = (0, 3);
    for stage in cfg {
        for &mult in stage {
            let out = width * mult;
            conv(
                &mut t,
                &format!("features.{idx}"),
                out,
                inp,
                3,
                true,
                &mut rng,
                dev,
            )?;
            inp = out;
            idx += 2;
        }
        idx += 1;
    }
    let f = candle_core::DType::F32;
    // Kaiming (fan_in) for the hidden layers and LeCun for the logits, not torchvision's
    // N(0, 0.01): with three 0.01 layers a narrow network starts with logits ~1e-3 of its
    // features and sits at chance for a seed- and rounding-dependent number of steps.
    for (name, o, i, gain) in [
        ("classifier.0", hidden, inp * 49, 2.0),
        ("classifier.3", hidden, hidden, 2.0),
        ("classifier.6", classes, hidden, 1.0),
    ] {
        let std = (gain / i as f32).sqrt();
        t.insert(
            format!("{name}.weight"),
            normal(&[o, i], std, &mut rng, dev)?,
        );
        t.insert(format!("{name}.bias"), Tensor::zeros(o, f, dev)?);
    }
    Ok(t)
}

/// ResNet-50 (v1.5) topology with stem width w and planes (w, 2w, 4w, 8w), outputs ×4.
pub fn resnet50(
    width: usize,
    classes: usize,
    seed: u64,
    dev: &Device,
) -> Result<HashMap<String, Tensor>> {
    check(width, classes)?;
    let mut rng = Rng::new(seed);
    let mut t = HashMap::new();
    conv(&mut t, "conv1", width, 3, 7, false, &mut rng, dev)?;
    bn(&mut t, "bn1", width, dev)?;
    let mut inp = width;
    for (s, depth) in [3usize, 4, 6, 3].iter().enumerate() {
        let planes = width << s;
        for i in 0..*depth {
            let p = format!("layer{}.{i}", s + 1);
            conv(
                &mut t,
                &format!("{p}.conv1"),
                planes,
                inp,
                1,
                false,
                &mut rng,
                dev,
            )?;
            bn(&mut t, &format!("{p}.bn1"), planes, dev)?;
            conv(
                &mut t,
                &format!("{p}.conv2"),
                planes,
                planes,
                3,
                false,
                &mut rng,
                dev,
            )?;
            bn(&mut t, &format!("{p}.bn2"), planes, dev)?;
            conv(
                &mut t,
                &format!("{p}.conv3"),
                planes * 4,
                planes,
                1,
                false,
                &mut rng,
                dev,
            )?;
            bn(&mut t, &format!("{p}.bn3"), planes * 4, dev)?;
            // γ = 0 on each block's last BN (torchvision's zero_init_residual): every block
            // starts as its shortcut. With γ = 1 a narrow ResNet-50 trained from scratch with
            // batch statistics starts chaotic (gradient norm ~200, mostly in the stem) and
            // stays at chance.
            t.insert(
                format!("{p}.bn3.weight"),
                Tensor::zeros(planes * 4, candle_core::DType::F32, dev)?,
            );
            if i == 0 {
                conv(
                    &mut t,
                    &format!("{p}.downsample.0"),
                    planes * 4,
                    inp,
                    1,
                    false,
                    &mut rng,
                    dev,
                )?;
                bn(&mut t, &format!("{p}.downsample.1"), planes * 4, dev)?;
            }
            inp = planes * 4;
        }
    }
    let bound = 1.0 / (inp as f32).sqrt();
    t.insert(
        "fc.weight".into(),
        uniform(&[classes, inp], bound, &mut rng, dev)?,
    );
    t.insert("fc.bias".into(), uniform(&[classes], bound, &mut rng, dev)?);
    Ok(t)
}

fn check(width: usize, classes: usize) -> Result<()> {
    if width == 0 || classes < 2 {
        return Err(Error::input(format!("new model: width {width} and classes {classes}: expected width >= 1 and at least 2 classes")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{self, Ctx};

    /// A new narrow ResNet-50 trained with batch statistics must start tame: with γ = 1 on
    /// every block's last BN its first gradient norm here was ~190 (mostly in the stem) and
    /// training from scratch sat at chance; with γ = 0 it is ~3.
    #[test]
    fn new_resnet_starts_with_a_moderate_gradient() {
        let dev = Device::Cpu;
        let m = models::build(&resnet50(8, 10, 7, &dev).unwrap(), "new").unwrap();
        let mut rng = Rng::new(1);
        let x = normal(&[32, 3, 32, 32], 1.0, &mut rng, &dev).unwrap();
        let labels: Vec<u32> = (0..32).map(|i| i % 10).collect();
        let labels = Tensor::from_vec(labels, 32, &dev).unwrap();
        let logits = m.forward_ctx(&x, &mut Ctx::training(true)).unwrap();
        let logp = candle_nn::ops::log_softmax(&logits, 1).unwrap();
        let picked = logp.gather(&labels.unsqueeze(1).unwrap(), 1).unwrap();
        let loss = picked.mean_all().unwrap().neg().unwrap();
        let grads = loss.backward().unwrap();
        let mut norm2 = 0f64;
        for p in m.params().iter() {
            if let Some(g) = grads.get(p.var.as_tensor()) {
                norm2 += g
                    .sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap() as f64;
            }
        }
        let norm = norm2.sqrt();
        assert!(
            norm.is_finite() && norm < 20.0,
            "initial gradient norm {norm}"
        );
    }
}
