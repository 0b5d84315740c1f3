//! Distillation losses: on the logits (Hinton): KL(softmax(t/T) ‖ softmax(s/T)) · T²,
//! averaged over the batch; on the layer activations (an extension of the paper).

use candle_core::{Tensor, D};
use candle_nn::ops::{log_softmax, softmax};

use crate::error::{Error, Result};

pub fn kd_loss(student: &Tensor, teacher: &Tensor, temperature: f64) -> Result<Tensor> {
    let n = student.dim(0)? as f64;
    let log_ps = log_softmax(&(student / temperature)?, D::Minus1)?;
    let t = (teacher.detach() / temperature)?;
    let pt = softmax(&t, D::Minus1)?;
    let log_pt = log_softmax(&t, D::Minus1)?;
    let kl = (pt * (log_pt - log_ps)?)?.sum_all()?;
    Ok((kl * (temperature * temperature / n))?)
}

/// Each row z-scored, (z − mean)/std over the classes (logit standardisation, Sun et al.
/// 2024): distillation on these matches the shape of the teacher's logits and leaves their
/// scale free, which a zero-bias (positively homogeneous) student cannot always match.
pub fn standardize(logits: &Tensor) -> Result<Tensor> {
    let centred = logits.broadcast_sub(&logits.mean_keepdim(D::Minus1)?)?;
    let std = (centred.sqr()?.mean_keepdim(D::Minus1)? + 1e-7)?.sqrt()?;
    Ok(centred.broadcast_div(&std)?)
}

/// Per image, (‖x_i‖ / mean_j ‖x_j‖)^power as an (n, 1) column, detached: what a zero-bias
/// ReLU network's logits carry of its input's norm at `power` 1, since f(a·x) = a·f(x).
pub fn norm_divisor(x: &Tensor, power: f64) -> Result<Tensor> {
    let n = x.dim(0)?;
    let norms = x.detach().flatten_from(1)?.sqr()?.sum(1)?.sqrt()?;
    let mean = norms.mean_all()?.to_scalar::<f32>()? as f64;
    if !(mean.is_finite() && mean > 0.0) {
        return Err(Error::Training(format!(
            "norm_free_logits: the batch's mean input norm is {mean}; expected a positive number"
        )));
    }
    // An all-zero image has norm 0: its logits are 0 at zero bias whatever the divisor, so
    // a floor keeps the division finite without changing what is learnt.
    let relative = ((norms / mean)?.maximum(1e-6)?).powf(power)?;
    Ok(relative.reshape((n, 1))?)
}

/// Mean over layers of ‖s_l − t_l‖² / ‖t_l‖²: each layer's error relative to the
/// teacher's activation energy, so that wide early maps and the narrow top count alike.
pub fn feature_loss(student: &[Tensor], teacher: &[Tensor]) -> Result<Tensor> {
    if student.len() != teacher.len() || student.is_empty() {
        return Err(Error::Training(format!(
            "feature distillation: the student recorded {} layer activations and the teacher {}",
            student.len(),
            teacher.len()
        )));
    }
    let mut total: Option<Tensor> = None;
    for (l, (s, t)) in student.iter().zip(teacher).enumerate() {
        if s.dims() != t.dims() {
            return Err(Error::Training(format!(
                "feature distillation: layer {} has shape {:?} in the student and {:?} in the teacher",
                l + 1,
                s.dims(),
                t.dims()
            )));
        }
        let t = t.detach();
        // A dead teacher layer (all zero) must not divide by zero.
        let energy = (t.sqr()?.sum_all()? + 1e-12)?;
        let term = (s - &t)?.sqr()?.sum_all()?.div(&energy)?;
        total = Some(match total {
            None => term,
            Some(acc) => (acc + term)?,
        });
    }
    let total = total.expect("at least one layer, checked above");
    Ok((total / student.len() as f64)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn zero_when_equal_and_gradient_matches_finite_differences() {
        let dev = Device::Cpu;
        let t = Tensor::new(&[[1.0f32, -2.0, 0.5], [0.3, 0.1, -0.7]], &dev).unwrap();
        let l = kd_loss(&t, &t, 3.0).unwrap().to_scalar::<f32>().unwrap();
        assert!(l.abs() < 1e-6);

        let s0 = vec![0.2f32, 0.4, -1.0, 1.5, -0.3, 0.0];
        let s = Var::from_vec(s0.clone(), (2, 3), &dev).unwrap();
        let loss = kd_loss(s.as_tensor(), &t, 2.0).unwrap();
        let g: Vec<f32> = loss
            .backward()
            .unwrap()
            .get(s.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let eval = |v: &[f32]| -> f64 {
            let st = Tensor::from_vec(v.to_vec(), (2, 3), &dev).unwrap();
            kd_loss(&st, &t, 2.0).unwrap().to_scalar::<f32>().unwrap() as f64
        };
        for i in 0..6 {
            let h = 1e-2f32;
            let mut p = s0.clone();
            p[i] += h;
            let mut m = s0.clone();
            m[i] -= h;
            let fd = (eval(&p) - eval(&m)) / (2.0 * h as f64);
            assert!(
                (fd - g[i] as f64).abs() < 2e-3,
                "component {i}: fd {fd} vs {}",
                g[i]
            );
        }
    }

    #[test]
    fn feature_loss_is_relative_per_layer_and_refuses_mismatches() {
        let dev = Device::Cpu;
        let t1 = Tensor::new(&[[1.0f32, 2.0], [0.0, 2.0]], &dev).unwrap(); // energy 9
        let t2 = Tensor::new(&[100.0f32, 0.0, 0.0], &dev).unwrap(); // energy 1e4
        let s1 = Tensor::new(&[[1.0f32, 2.0], [3.0, 2.0]], &dev).unwrap(); // error 9
        let s2 = Tensor::new(&[100.0f32, 50.0, 0.0], &dev).unwrap(); // error 2500
        let l = feature_loss(&[s1.clone(), s2.clone()], &[t1.clone(), t2.clone()])
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((l - (1.0 + 0.25) / 2.0).abs() < 1e-5, "{l}");
        let same = feature_loss(&[t1.clone(), t2.clone()], &[t1.clone(), t2.clone()])
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(same, 0.0);
        assert!(feature_loss(std::slice::from_ref(&s1), &[t1.clone(), t2.clone()]).is_err());
        assert!(feature_loss(&[s2], &[t1]).is_err());
        assert!(feature_loss(&[], &[]).is_err());
    }

    /// At power 1 the divisor takes out exactly what scaling an input does to a bias-free
    /// map's logits; at power 0 it is 1; in between it follows the power.
    #[test]
    fn norm_divisor_removes_the_input_scale_of_a_bias_free_map() {
        let dev = Device::Cpu;
        // (0.6, 0.8, 0) has norm 1 and (1.8, 0, 2.4) norm 3: mean 2.
        let x = Tensor::new(&[[0.6f32, 0.8, 0.0], [1.8, 0.0, 2.4]], &dev).unwrap();
        let d = |p: f64| -> Vec<f32> {
            norm_divisor(&x, p)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        for (p, want) in [(1.0, [0.5f32, 1.5]), (0.0, [1.0, 1.0])] {
            let got = d(p);
            assert!(
                got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-6),
                "{p}: {got:?}"
            );
        }
        let half = d(0.5);
        assert!((half[0] - 0.5f32.sqrt()).abs() < 1e-6 && (half[1] - 1.5f32.sqrt()).abs() < 1e-6);

        // A bias-free linear map W: the same image at norm a and at norm 3a gives one set of
        // divided logits.
        let w = Tensor::new(&[[1.0f32, -2.0], [0.5, 3.0], [-1.0, 0.25]], &dev).unwrap();
        let img = Tensor::new(&[0.3f32, -0.4, 1.2], &dev).unwrap();
        let pair = Tensor::stack(&[&img, &(&img * 3.0).unwrap()], 0).unwrap();
        let logits = pair.matmul(&w).unwrap();
        let free: Vec<Vec<f32>> = logits
            .broadcast_div(&norm_divisor(&pair, 1.0).unwrap())
            .unwrap()
            .to_vec2()
            .unwrap();
        for (a, b) in free[0].iter().zip(&free[1]) {
            assert!((a - b).abs() < 1e-5, "{free:?}");
        }
        let zero = Tensor::zeros((2, 3), candle_core::DType::F32, &dev).unwrap();
        let e = norm_divisor(&zero, 1.0).unwrap_err().to_string();
        assert!(
            e.contains("norm_free_logits") && e.contains("positive"),
            "{e}"
        );
    }

    /// Each row has mean 0 and standard deviation 1, and a row's positive scaling and
    /// shift do not change it (the student's logit scale is free).
    #[test]
    fn standardized_rows_are_z_scores_free_of_scale_and_shift() {
        let dev = Device::Cpu;
        let z = Tensor::new(&[[1.0f32, -2.0, 0.5, 4.0], [0.3, 0.1, -0.7, 0.2]], &dev).unwrap();
        let a = standardize(&z).unwrap().to_vec2::<f32>().unwrap();
        for row in &a {
            let mean = row.iter().sum::<f32>() / 4.0;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / 4.0;
            assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5, "{row:?}");
        }
        let moved = ((&z * 7.5).unwrap() + 3.0).unwrap();
        let b = standardize(&moved).unwrap().to_vec2::<f32>().unwrap();
        for (ra, rb) in a.iter().zip(&b) {
            for (x, y) in ra.iter().zip(rb) {
                assert!((x - y).abs() < 1e-5, "{x} vs {y}");
            }
        }
    }
}
