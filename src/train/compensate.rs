//! `compensate = true` in a decay stage: at every rescale, before the biases shrink, each
//! convolution feeding a bias handle (its own bias, or the BatchNorm after it) takes over
//! the constant the rescale removes, as well as its input allows. Per convolution, the
//! least-squares weight change ΔW_c = t_c · v with v = (E[ppᵀ] + λI)⁻¹ E[p] over the
//! teacher's input patches p makes ΔW_c · p the best linear stand-in for the constant t_c
//! (R² = E[p]ᵀv of it on average, never worse than leaving it out). The statistics come
//! from the frozen teacher once per stage, so every rescale costs one rank-1 update per
//! convolution; distillation then corrects the rest.

use std::collections::HashMap;

use candle_core::{DType, Tensor, Var};

use crate::bias::BiasKind;
use crate::error::{Error, Result};
use crate::models::{Classifier, Ctx};
use crate::nn::window_out_len;
use crate::taps::ConvInput;

/// Patch positions sampled per convolution and batch.
const POSITIONS_PER_BATCH: usize = 1024;
/// Largest patch (C_in·k_h·k_w) handled: VGG-16's and ResNet-50's widest 3×3 convolution.
const MAX_PATCH: usize = 512 * 9;
/// torchvision's BatchNorm ε.
const BN_EPS: f64 = 1e-5;
/// Ridge λ relative to the mean eigenvalue of E[ppᵀ].
const RIDGE: f64 = 1e-3;

/// Where the constant of a convolution's output channel lives.
enum Output {
    ConvBias(Var),
    BatchNorm {
        gamma: Var,
        beta: Var,
        mean: Var,
        var: Var,
    },
}

struct Target {
    weight: Var,
    output: Output,
    /// v, shaped [1, C_in·k_h·k_w].
    direction: Tensor,
}

pub(super) struct Compensator {
    targets: Vec<Target>,
    /// (convolution, R²): the share of a constant its input patches can stand in for.
    pub(super) recovered: Vec<(String, f64)>,
    /// Bias modules without a convolution to compensate through (e.g. linear layers).
    pub(super) skipped: Vec<String>,
}

/// Running sums of one convolution's input patches.
struct Moments {
    second: Tensor,
    first: Tensor,
    count: usize,
}

impl Compensator {
    /// Patch statistics of the teacher's convolutions over `batches`, and the direction v
    /// of each convolution that feeds one of the student's bias handles.
    pub(super) fn new(
        student: &dyn Classifier,
        teacher: &dyn Classifier,
        batches: &[Tensor],
    ) -> Result<Self> {
        let mut moments: HashMap<String, Moments> = HashMap::new();
        for x in batches {
            let mut ctx = Ctx::inference();
            ctx.conv_inputs = Some(Vec::new());
            teacher.forward_ctx(x, &mut ctx)?;
            for c in ctx.conv_inputs.unwrap_or_default() {
                let Some(w) = teacher.params().get(&format!("{}.weight", c.name)) else {
                    continue;
                };
                let dims = w.var.dims().to_vec();
                if dims[1] * dims[2] * dims[3] > MAX_PATCH {
                    continue;
                }
                let p = patches(&c, dims[2], dims[3])?;
                let second = p.t()?.matmul(&p)?;
                let first = p.sum(0)?;
                let m = p.dim(0)?;
                match moments.get_mut(&c.name) {
                    Some(acc) => {
                        acc.second = (&acc.second + second)?;
                        acc.first = (&acc.first + first)?;
                        acc.count += m;
                    }
                    None => {
                        moments.insert(
                            c.name.clone(),
                            Moments {
                                second,
                                first,
                                count: m,
                            },
                        );
                    }
                }
            }
        }
        let mut out = Compensator {
            targets: Vec::new(),
            recovered: Vec::new(),
            skipped: Vec::new(),
        };
        let mut modules: Vec<(String, BiasKind)> = student
            .bias_set()
            .iter()
            .filter(|h| h.kind != BiasKind::BnRunningMean)
            .map(|h| (h.module.clone(), h.kind))
            .collect();
        modules.dedup();
        let param = |name: &str| -> Result<Var> {
            student
                .params()
                .get(name)
                .map(|p| p.var.clone())
                .ok_or_else(|| Error::Training(format!("compensate: the model has no '{name}'")))
        };
        for (module, kind) in modules {
            let conv = match kind {
                BiasKind::ConvBias => Some(module.clone()),
                BiasKind::BnBeta => feeding_conv(&module),
                _ => None,
            };
            let Some((conv, m)) = conv.and_then(|c| moments.get(&c).map(|m| (c, m))) else {
                out.skipped.push(module);
                continue;
            };
            let (direction, r2) = solve_direction(m)?;
            let output = match kind {
                BiasKind::ConvBias => Output::ConvBias(param(&format!("{module}.bias"))?),
                _ => Output::BatchNorm {
                    gamma: param(&format!("{module}.weight"))?,
                    beta: param(&format!("{module}.bias"))?,
                    mean: param(&format!("{module}.running_mean"))?,
                    var: param(&format!("{module}.running_var"))?,
                },
            };
            let weight = param(&format!("{conv}.weight"))?;
            let direction = direction.to_device(weight.device())?.unsqueeze(0)?;
            out.targets.push(Target {
                weight,
                output,
                direction,
            });
            out.recovered.push((conv, r2));
        }
        Ok(out)
    }

    /// Before the bias handles are multiplied by `factor`: moves the part of each output
    /// constant that the rescale removes into the convolution's weights.
    pub(super) fn apply(&self, factor: f64) -> Result<()> {
        let lost = 1.0 - factor;
        for t in &self.targets {
            let shift: Vec<f32> = match &t.output {
                Output::ConvBias(b) => read(b)?.iter().map(|b| (lost * b) as f32).collect(),
                Output::BatchNorm {
                    gamma,
                    beta,
                    mean,
                    var,
                } => {
                    let (g, b, m, v) = (read(gamma)?, read(beta)?, read(mean)?, read(var)?);
                    (0..g.len())
                        .map(|c| {
                            // The pre-BN shift that restores γ(x − μ)/σ + β's constant.
                            if g[c].abs() < 1e-12 {
                                return 0.0;
                            }
                            let sigma = (v[c] + BN_EPS).sqrt();
                            (lost * (b[c] * sigma / g[c] - m[c])) as f32
                        })
                        .collect()
                }
            };
            let w = t.weight.as_tensor();
            let shift = Tensor::from_vec(shift, (w.dim(0)?, 1), w.device())?;
            let delta = shift.broadcast_mul(&t.direction)?.reshape(w.shape())?;
            t.weight.set(&(w.detach() + delta)?)?;
        }
        Ok(())
    }
}

fn read(v: &Var) -> Result<Vec<f64>> {
    Ok(v.as_tensor()
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?)
}

/// The convolution whose output a torchvision BatchNorm normalises: `bnK` after `convK`,
/// `downsample.1` after `downsample.0`.
fn feeding_conv(bn: &str) -> Option<String> {
    if let Some(prefix) = bn.strip_suffix("downsample.1") {
        return Some(format!("{prefix}downsample.0"));
    }
    let (prefix, last) = match bn.rsplit_once('.') {
        Some((p, l)) => (format!("{p}."), l),
        None => (String::new(), bn),
    };
    last.strip_prefix("bn").map(|k| format!("{prefix}conv{k}"))
}

/// [M, C_in·k_h·k_w] input patches at up to [`POSITIONS_PER_BATCH`] output positions,
/// evenly spread over the batch (zero padding as the convolution sees it).
fn patches(c: &ConvInput, kh: usize, kw: usize) -> Result<Tensor> {
    let (n, ch, h, w) = c.input.dims4()?;
    let out_len = |len: usize, k: usize| {
        window_out_len(len, k, c.stride, c.padding).ok_or_else(|| {
            Error::Training(format!(
                "compensate: '{}' saw a {h}x{w} input, smaller than its {kh}x{kw} kernel",
                c.name
            ))
        })
    };
    let (oh, ow) = (out_len(h, kh)?, out_len(w, kw)?);
    let total = n * oh * ow;
    let m = total.min(POSITIONS_PER_BATCH);
    let x = c
        .input
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let d = ch * kh * kw;
    let mut out = vec![0f32; m * d];
    for (row, patch) in out.chunks_mut(d).enumerate() {
        let pos = row * total / m;
        let (img, rest) = (pos / (oh * ow), pos % (oh * ow));
        let (oy, ox) = (rest / ow, rest % ow);
        for ci in 0..ch {
            for ky in 0..kh {
                let iy = (oy * c.stride + ky) as isize - c.padding as isize;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
                for kx in 0..kw {
                    let ix = (ox * c.stride + kx) as isize - c.padding as isize;
                    if ix < 0 || ix >= w as isize {
                        continue;
                    }
                    patch[(ci * kh + ky) * kw + kx] =
                        x[((img * ch + ci) * h + iy as usize) * w + ix as usize];
                }
            }
        }
    }
    Ok(Tensor::from_vec(out, (m, d), c.input.device())?)
}

/// v = (E[ppᵀ] + λI)⁻¹ E[p] by Cholesky in f64, and R² = E[p]ᵀ v.
fn solve_direction(m: &Moments) -> Result<(Tensor, f64)> {
    let d = m.first.dim(0)?;
    let scale = 1.0 / m.count as f64;
    let mut a: Vec<f64> = m
        .second
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?
        .iter()
        .map(|v| v * scale)
        .collect();
    let b: Vec<f64> = m
        .first
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?
        .iter()
        .map(|v| v * scale)
        .collect();
    let trace: f64 = (0..d).map(|i| a[i * d + i]).sum();
    let ridge = RIDGE * trace / d as f64 + 1e-12;
    for i in 0..d {
        a[i * d + i] += ridge;
    }
    // In-place Cholesky: a = L Lᵀ, L in the lower triangle.
    for j in 0..d {
        let mut diag = a[j * d + j];
        for k in 0..j {
            diag -= a[j * d + k] * a[j * d + k];
        }
        if diag <= 0.0 || !diag.is_finite() {
            return Err(Error::Training(
                "compensate: the input patch moments are not positive definite".into(),
            ));
        }
        let diag = diag.sqrt();
        a[j * d + j] = diag;
        for i in j + 1..d {
            let mut s = a[i * d + j];
            for k in 0..j {
                s -= a[i * d + k] * a[j * d + k];
            }
            a[i * d + j] = s / diag;
        }
    }
    let mut y = b.clone();
    for i in 0..d {
        for k in 0..i {
            y[i] -= a[i * d + k] * y[k];
        }
        y[i] /= a[i * d + i];
    }
    for i in (0..d).rev() {
        for k in i + 1..d {
            y[i] -= a[k * d + i] * y[k];
        }
        y[i] /= a[i * d + i];
    }
    let r2: f64 = b.iter().zip(&y).map(|(p, q)| p * q).sum();
    let v: Vec<f32> = y.iter().map(|&v| v as f32).collect();
    Ok((Tensor::from_vec(v, d, m.first.device())?, r2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_norms_map_to_their_convolutions() {
        assert_eq!(feeding_conv("bn1").as_deref(), Some("conv1"));
        assert_eq!(
            feeding_conv("layer2.0.bn3").as_deref(),
            Some("layer2.0.conv3")
        );
        assert_eq!(
            feeding_conv("layer2.0.downsample.1").as_deref(),
            Some("layer2.0.downsample.0")
        );
        assert_eq!(feeding_conv("classifier.0"), None);
    }

    #[test]
    fn a_constant_input_channel_carries_the_whole_constant() {
        // Patches [1, z] with z zero-mean noise: the constant lives in the first entry.
        let dev = candle_core::Device::Cpu;
        let z: Vec<f32> = (0..400)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        let mean = z.iter().sum::<f32>() / z.len() as f32;
        let rows: Vec<f32> = z.iter().flat_map(|&v| [1.0, v - mean]).collect();
        let p = Tensor::from_vec(rows, (400, 2), &dev).unwrap();
        let m = Moments {
            second: p.t().unwrap().matmul(&p).unwrap(),
            first: p.sum(0).unwrap(),
            count: 400,
        };
        let (v, r2) = solve_direction(&m).unwrap();
        let v: Vec<f32> = v.to_vec1().unwrap();
        assert!((r2 - 1.0).abs() < 2e-3, "R² {r2}");
        assert!((v[0] - 1.0).abs() < 2e-3 && v[1].abs() < 1e-3, "{v:?}");
    }

    /// On the batch its statistics came from, zeroing every bias after `apply(0)` leaves
    /// the first layer (whose input no other bias touches) closer to the teacher's than
    /// zeroing alone.
    #[test]
    fn compensation_brings_the_zero_bias_layer_closer_to_the_teacher() {
        use crate::models::{build, init};
        let dev = candle_core::Device::Cpu;
        let mut tensors = init::resnet50(2, 3, 5, &dev).unwrap();
        // Statistics and β as a trained network has them (init leaves μ = 0, β = 0).
        let c = tensors["bn1.running_mean"].dim(0).unwrap();
        let mean: Vec<f32> = (0..c).map(|i| (i as f32 - 0.5) * 0.7).collect();
        let beta: Vec<f32> = (0..c).map(|i| 0.3 - 0.2 * i as f32).collect();
        tensors.insert("bn1.running_mean".into(), Tensor::new(mean, &dev).unwrap());
        tensors.insert("bn1.bias".into(), Tensor::new(beta, &dev).unwrap());
        let teacher = build(&tensors, "t").unwrap();
        let first_layer = |m: &dyn Classifier, x: &Tensor| {
            let mut ctx = Ctx::inference().collecting_features();
            m.forward_ctx(x, &mut ctx).unwrap();
            ctx.features.unwrap().remove(0)
        };
        // Images with a mean, as normalised photographs have per patch.
        let x = (Tensor::randn(0f32, 1.0, (4, 3, 32, 32), &dev).unwrap() + 0.8).unwrap();
        let want = first_layer(teacher.as_ref(), &x);
        let error = |compensate: bool| {
            let student = build(&tensors, "s").unwrap();
            if compensate {
                let c =
                    Compensator::new(student.as_ref(), teacher.as_ref(), std::slice::from_ref(&x))
                        .unwrap();
                c.apply(0.0).unwrap();
            }
            student.bias_set().zero().unwrap();
            let got = first_layer(student.as_ref(), &x);
            (got - &want)
                .unwrap()
                .sqr()
                .unwrap()
                .mean_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        let (plain, compensated) = (error(false), error(true));
        assert!(plain > 1e-3, "zeroing changed nothing ({plain})");
        assert!(
            compensated < 0.5 * plain,
            "compensated {compensated} vs plain {plain}"
        );
    }
}
