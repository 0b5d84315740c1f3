//! Distillation loss (Hinton): KL(softmax(t/T) ‖ softmax(s/T)) · T², averaged over the batch.

use candle_core::{Tensor, D};
use candle_nn::ops::{log_softmax, softmax};

use crate::error::Result;

pub fn kd_loss(student: &Tensor, teacher: &Tensor, temperature: f64) -> Result<Tensor> {
    let n = student.dim(0)? as f64;
    let log_ps = log_softmax(&(student / temperature)?, D::Minus1)?;
    let t = (teacher.detach() / temperature)?;
    let pt = softmax(&t, D::Minus1)?;
    let log_pt = log_softmax(&t, D::Minus1)?;
    let kl = (pt * (log_pt - log_ps)?)?.sum_all()?;
    Ok((kl * (temperature * temperature / n))?)
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
}
