//! BN running variances during decay (`bn_variance = "second_moment"`): as the running mean
//! is scaled from μ₀ to s·μ₀, the variance about it becomes var₀ + ((1 − s)·μ₀)², so each BN
//! output keeps the scale the layers after it were trained on. `bn_variance = "recalibrate"`
//! measures that second moment instead, on the student's own activations: upstream biases
//! shrink too, so each BN's input is no longer the teacher's.

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::models::{Classifier, Ctx, ParamKind};

/// Training images the recalibration averages over.
pub(super) const RECALIBRATION_IMAGES: usize = 256;

/// Every BN's running variance ← the mean over `batches` of the second moment of its input
/// about its running mean, the student's own network in eval mode. One pass per batch, in
/// which each BN normalises with its updated variance before the next layer runs, so each
/// layer's estimate sees the recalibrated layers before it.
pub(super) fn recalibrate(student: &dyn Classifier, batches: &[Tensor]) -> Result<()> {
    for (k, x) in batches.iter().enumerate() {
        student.forward_ctx(x, &mut Ctx::recalibrating_bn(1.0 / (k + 1) as f64))?;
    }
    Ok(())
}

/// Sets every student BN's running variance from the teacher's statistics at `scale`.
pub(super) fn set_second_moment(
    student: &dyn Classifier,
    teacher: &dyn Classifier,
    scale: f64,
) -> Result<()> {
    let original = |name: &str| {
        teacher
            .params()
            .get(name)
            .map(|p| p.var.as_tensor().detach())
            .ok_or_else(|| Error::Training(format!("bn_variance: the teacher has no '{name}'")))
    };
    for p in student
        .params()
        .iter()
        .filter(|p| p.kind == ParamKind::BnVar)
    {
        let module = p.name.trim_end_matches(".running_var");
        let mean = original(&format!("{module}.running_mean"))?;
        let var = original(&p.name)?;
        let shifted = (mean * (1.0 - scale))?.sqr()?;
        p.var.set(&(var + shifted)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn running_vars(model: &dyn Classifier) -> Vec<Vec<f32>> {
        model
            .params()
            .iter()
            .filter(|p| p.kind == ParamKind::BnVar)
            .map(|p| p.var.as_tensor().to_vec1().unwrap())
            .collect()
    }

    #[test]
    fn recalibration_of_one_batch_is_what_that_pass_normalised_with() {
        let dev = Device::Cpu;
        let model =
            crate::models::build(&crate::models::init::resnet50(1, 2, 3, &dev).unwrap(), "s")
                .unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &dev).unwrap();
        let before = running_vars(model.as_ref());
        let during = model
            .forward_ctx(&x, &mut Ctx::recalibrating_bn(1.0))
            .unwrap();
        let after = running_vars(model.as_ref());
        assert_eq!(before.len(), after.len());
        assert!(before.iter().zip(&after).all(|(b, a)| b != a));
        assert!(after.iter().flatten().all(|v| v.is_finite() && *v >= 0.0));
        // Every BN kept the variance it normalised with: a plain pass gives the same logits.
        let plain = model.forward(&x).unwrap();
        let diff = (during - plain).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
        // Two batches: recalibrating again on the first one alone restores one-batch values.
        let y = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &dev).unwrap();
        recalibrate(model.as_ref(), &[x.clone(), y]).unwrap();
        assert_ne!(running_vars(model.as_ref()), after);
        recalibrate(model.as_ref(), &[x]).unwrap();
        assert_eq!(running_vars(model.as_ref()), after);
    }

    #[test]
    fn variance_grows_by_the_removed_part_of_the_mean() {
        let dev = Device::Cpu;
        let build = || {
            crate::models::build(&crate::models::init::resnet50(1, 2, 3, &dev).unwrap(), "t")
                .unwrap()
        };
        let (student, teacher) = (build(), build());
        let name = "layer2.1.bn1";
        let mean = teacher
            .params()
            .get(&format!("{name}.running_mean"))
            .unwrap()
            .var
            .clone();
        let var = teacher
            .params()
            .get(&format!("{name}.running_var"))
            .unwrap();
        let m0: Vec<f32> = vec![0.5, -2.0][..mean.dims()[0].min(2)].to_vec();
        let mut m = vec![0.0f32; mean.dims()[0]];
        m[..m0.len()].copy_from_slice(&m0);
        mean.set(&candle_core::Tensor::new(m.as_slice(), &dev).unwrap())
            .unwrap();
        let v0: Vec<f32> = var.var.as_tensor().to_vec1().unwrap();
        let read = |s: f64| -> Vec<f32> {
            set_second_moment(student.as_ref(), teacher.as_ref(), s).unwrap();
            student
                .params()
                .get(&format!("{name}.running_var"))
                .unwrap()
                .var
                .as_tensor()
                .to_vec1()
                .unwrap()
        };
        for s in [1.0, 0.25, 0.0] {
            let v = read(s);
            for i in 0..m.len() {
                let want = v0[i] + ((1.0 - s as f32) * m[i]).powi(2);
                assert!(
                    (v[i] - want).abs() < 1e-6,
                    "s={s} channel {i}: {} vs {want}",
                    v[i]
                );
            }
        }
    }
}
