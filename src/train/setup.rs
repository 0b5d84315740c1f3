//! What a run opens before its first step: device, data, model and optimiser.

use std::sync::Arc;

use candle_core::Device;

use super::optim;
use super::recipe::{Recipe, Stage, StageKind};
use crate::data::{Dataset, ImageFolder, Synthetic};
use crate::error::{Error, Result};
use crate::models::{self, Classifier, ParamKind};

pub(super) struct Data {
    pub(super) train: Arc<dyn Dataset>,
    pub(super) val: Arc<dyn Dataset>,
}

pub(super) fn open_data(r: &Recipe) -> Result<Data> {
    let d = &r.data;
    match d.kind.as_str() {
        "synthetic" => Ok(Data {
            train: Arc::new(Synthetic::new(
                d.train_len,
                d.size,
                d.synthetic_classes(),
                r.seed,
            )?),
            val: Arc::new(Synthetic::new(
                d.val_len,
                d.size,
                d.synthetic_classes(),
                r.seed ^ 0x0005_eed0_f7a1,
            )?),
        }),
        _ => {
            let train = d
                .train
                .as_deref()
                .ok_or_else(|| Error::recipe("data.train", "missing"))?;
            let val = d
                .val
                .as_deref()
                .ok_or_else(|| Error::recipe("data.val", "missing"))?;
            let augment = crate::data::Augment::parse(&d.augment).unwrap_or_default();
            let resize = d.resize_or_default() as u32;
            let (train, val) = (
                ImageFolder::open(train, d.size as u32)?.with_preprocessing(resize, augment)?,
                ImageFolder::open(val, d.size as u32)?.with_preprocessing(resize, augment)?,
            );
            crate::data::check_splits(&train, &val)?;
            if let Some(n) = d.classes.filter(|&n| n != train.num_classes()) {
                eprintln!(
                    "warning: data.classes = {n}, but {} holds {} class folders: the folders decide (data.classes is for the synthetic dataset)",
                    train.root().display(),
                    train.num_classes()
                );
            }
            Ok(Data {
                train: Arc::new(train),
                val: Arc::new(val),
            })
        }
    }
}

pub(super) fn parse_device(spec: &str, precision: &str) -> Result<Device> {
    let dev =
        crate::models::parse_device(spec).map_err(|e| Error::recipe("device", e.to_string()))?;
    let p = crate::device::Precision::parse(precision)
        .map_err(|e| Error::recipe("precision", e.to_string()))?;
    crate::device::set_precision(p, &dev);
    Ok(dev)
}

/// Seed of a new model's initialisation: the recipe's, then another for each restart.
pub(super) fn init_seed(seed: u64, restarts: usize) -> u64 {
    if restarts == 0 {
        seed
    } else {
        crate::data::mix_seed(seed, restarts as u64)
    }
}

pub(super) fn build_model(
    r: &Recipe,
    classes: usize,
    restarts: usize,
    device: &Device,
) -> Result<Box<dyn Classifier>> {
    let m = &r.model;
    if m.source == "new" {
        let width = m.width.unwrap_or(8);
        let classes = m.classes.unwrap_or(classes);
        let seed = init_seed(r.seed, restarts);
        let tensors = match m.arch.as_deref() {
            Some("resnet50") => models::init::resnet50(width, classes, seed, device)?,
            _ => models::init::vgg16(width, m.hidden.unwrap_or(64), classes, seed, device)?,
        };
        return models::build(&tensors, "new model");
    }
    models::open(&m.source, m.revision.as_deref(), device)
}

pub(super) fn new_optimiser(model: &dyn Classifier, stage: &Stage) -> Result<optim::Adam> {
    let mut adam = optim::Adam::new(
        trainable(model, stage),
        stage.lr,
        stage.beta1,
        stage.beta2,
        stage.weight_decay,
    )?;
    adam.clip_grad_norm = stage.clip_grad_norm;
    adam.anchor = stage.anchor;
    adam.average_decay = stage.ema;
    Ok(adam)
}

pub(super) fn trainable(model: &dyn Classifier, stage: &Stage) -> Vec<(String, candle_core::Var)> {
    model
        .params()
        .iter()
        .filter(|p| match stage.kind {
            StageKind::Train => matches!(
                p.kind,
                ParamKind::Weight | ParamKind::Bias | ParamKind::BnGamma | ParamKind::BnBeta
            ),
            // The running statistics stay fixed, γ too unless the stage says otherwise; β and
            // the biases are trained and rescaled, or only rescaled with `freeze_biases`.
            StageKind::Decay => match p.kind {
                ParamKind::Weight => true,
                ParamKind::Bias | ParamKind::BnBeta => !stage.freeze_biases,
                ParamKind::BnGamma => stage.train_gamma,
                ParamKind::BnMean | ParamKind::BnVar => false,
            },
        })
        .map(|p| (p.name.clone(), p.var.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decay_trains_gamma_only_when_asked() {
        let dev = Device::Cpu;
        let m = models::build(&models::init::resnet50(1, 2, 0, &dev).unwrap(), "t").unwrap();
        let text = "name = \"t\"\n[model]\nsource = \"new\"\narch = \"resnet50\"\nwidth = 1\n\
                    [data]\nkind = \"synthetic\"\n[[stage]]\nkind = \"train\"\nsteps = 1\n\
                    lr = 1e-3\nbatch_size = 4\n[[stage]]\nkind = \"decay\"\n\
                    schedule = \"linear\"\nrescales = 2\nrescale_every = 2\nlr = 1e-4\nbatch_size = 4\n";
        let r = Recipe::parse(text, &[], "t").unwrap();
        let mut stage = r.stages[1].clone();
        let has_gamma = |stage: &Stage| {
            trainable(m.as_ref(), stage)
                .iter()
                .any(|(n, _)| n == "layer1.0.bn3.weight")
        };
        assert!(!has_gamma(&stage));
        stage.train_gamma = true;
        assert!(has_gamma(&stage));
        stage.freeze_biases = true;
        let names: Vec<String> = trainable(m.as_ref(), &stage)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert!(names.iter().any(|n| n == "layer1.0.conv1.weight"));
        assert!(!names.iter().any(|n| n.ends_with(".bias")), "{names:?}");
        // Running statistics are never trained.
        assert!(!trainable(m.as_ref(), &stage)
            .iter()
            .any(|(n, _)| n.contains("running")));
    }
}
