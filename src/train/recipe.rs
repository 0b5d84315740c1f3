//! Recipes: TOML files in `recipes/`, validated field by field, overridable with
//! `--set key=value`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::recipe_fields::{apply_override, check_types};
use crate::error::{Error, Result};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub name: String,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "default_device")]
    pub device: String,
    /// f32 matrix products on CUDA: "f32" (default) or "tf32" (see docs/gpu.md).
    #[serde(default = "default_precision")]
    pub precision: String,
    pub model: ModelSpec,
    pub data: DataSpec,
    #[serde(rename = "stage")]
    pub stages: Vec<Stage>,
}

fn default_device() -> String {
    "cpu".into()
}

fn default_precision() -> String {
    "f32".into()
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// "new" (random init, trained by a `train` stage), a .safetensors path, or a Hub id.
    pub source: String,
    /// For source = "new": vgg16 or resnet50.
    #[serde(default)]
    pub arch: Option<String>,
    /// For source = "new": base width (VGG: w,2w,4w,8w,8w; ResNet: stem w, planes w..8w).
    #[serde(default)]
    pub width: Option<usize>,
    /// For source = "new", VGG: classifier hidden width.
    #[serde(default)]
    pub hidden: Option<usize>,
    /// For source = "new": number of classes (defaults to the dataset's).
    #[serde(default)]
    pub classes: Option<usize>,
    #[serde(default)]
    pub revision: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// "synthetic" (built-in, offline) or "imagefolder".
    pub kind: String,
    /// imagefolder: training root (ImageNet layout).
    #[serde(default)]
    pub train: Option<PathBuf>,
    /// imagefolder: validation root.
    #[serde(default)]
    pub val: Option<PathBuf>,
    /// Image side in pixels (imagefolder: crop size).
    #[serde(default = "default_size")]
    pub size: usize,
    /// imagefolder: shorter side before the centre crop (eval, and training with
    /// `augment` = "flip" or "none"). Default round(size·256/224), filled in on parsing so
    /// that the run's recipe.toml records it.
    #[serde(default)]
    pub resize: Option<usize>,
    /// imagefolder training augmentation: "imagenet" (RandomResizedCrop + flip), "flip"
    /// (resize, centre crop, flip) or "none" (resize, centre crop).
    #[serde(default = "default_augment")]
    pub augment: String,
    /// synthetic: number of classes (default 10). ImageFolder data takes its classes from
    /// the folders; a value given here that disagrees is warned about.
    #[serde(default)]
    pub classes: Option<usize>,
    /// synthetic: images in the training / validation split.
    #[serde(default = "default_train_len")]
    pub train_len: usize,
    #[serde(default = "default_val_len")]
    pub val_len: usize,
    /// Cap on validation images per evaluation (0 = all): one fixed selection drawn across
    /// the whole set, not the first images (a folder lists one class after another).
    #[serde(default)]
    pub val_limit: usize,
    /// Batches decoded ahead of the model.
    #[serde(default = "default_prefetch")]
    pub prefetch: usize,
}

fn default_size() -> usize {
    64
}
fn default_augment() -> String {
    "imagenet".into()
}
fn default_train_len() -> usize {
    4000
}
fn default_val_len() -> usize {
    1000
}
fn default_prefetch() -> usize {
    4
}

impl DataSpec {
    /// Shorter side before the centre crop (see `resize`).
    pub fn resize_or_default(&self) -> usize {
        self.resize
            .unwrap_or_else(|| crate::data::default_resize(self.size as u32) as usize)
    }

    /// Classes of the synthetic dataset.
    pub fn synthetic_classes(&self) -> usize {
        self.classes.unwrap_or(10)
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StageKind {
    Train,
    Decay,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    Exponential,
    Linear,
}

/// What a decay stage does with BN running variances (see [`Stage::bn_variance`]).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BnVariance {
    #[default]
    Fixed,
    SecondMoment,
    /// Re-estimated at every rescale from the student's own activations on a fixed set of
    /// training images.
    Recalibrate,
}

/// Whose classes the decay's cross-entropy term (`ce_weight`) trains toward.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CeTarget {
    /// The data set's labels.
    #[default]
    Labels,
    /// The teacher's top-1 class on the same (augmented) image: hard distillation, no
    /// labels needed.
    Teacher,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub kind: StageKind,
    pub lr: f64,
    pub batch_size: usize,
    /// train: number of steps.
    #[serde(default)]
    pub steps: usize,
    #[serde(default = "default_eval_every")]
    pub eval_every: usize,
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: usize,
    /// decay: schedule of the bias scale.
    #[serde(default)]
    pub schedule: Option<Schedule>,
    /// decay: number of rescales (the last one reaches exactly zero).
    #[serde(default)]
    pub rescales: usize,
    /// decay: steps between rescales (paper: 200).
    #[serde(default)]
    pub rescale_every: usize,
    /// decay, exponential: factor per rescale.
    #[serde(default = "default_factor")]
    pub factor: f64,
    /// decay: rescale a little at every step, along the schedule evaluated at the fractional
    /// rescale count, instead of once per `rescale_every` steps (the same scale at every
    /// period's end; no jump for the network to recover from).
    #[serde(default)]
    pub smooth: bool,
    /// decay: train BN γ too (an extension: the paper keeps γ fixed during decay, with the
    /// running statistics; β and the other biases are trained either way).
    #[serde(default)]
    pub train_gamma: bool,
    /// decay: weight of a distillation loss on every recorded layer activation (the
    /// attribution layers), each layer's squared error relative to the teacher's mean
    /// square, averaged over layers (an extension; 0 = off, the paper's logits only).
    #[serde(default)]
    pub feature_weight: f64,
    /// decay: BN running variance as the running mean is scaled by s: `fixed` (the paper)
    /// or `second_moment`, var₀ + ((1 − s)·μ₀)², the variance about the scaled mean, so
    /// that each BN output keeps its scale as μ goes, or `recalibrate`, after every
    /// rescale the student's own second moment about the scaled mean on 256 training
    /// images, layer by layer (both extensions).
    #[serde(default)]
    pub bn_variance: BnVariance,
    /// decay: before each rescale, move the constant it removes into the weights of the
    /// convolution feeding each bias (least squares over the teacher's input patches; an
    /// extension, train/compensate.rs).
    #[serde(default)]
    pub compensate: bool,
    /// decay: the bias handles are only rescaled, never trained, so that what the student
    /// learns between rescales goes into the weights rather than regrowing biases that the
    /// next rescale takes away (an extension; the default trains them).
    #[serde(default)]
    pub freeze_biases: bool,
    /// decay: teacher and student see mixup blends λ·x_i + (1 − λ)·x_j of the batch's
    /// images, λ ~ U(0, 1) per step (an extension: distillation as function matching).
    #[serde(default)]
    pub mixup: bool,
    /// decay: distil z-scored logits, (z − mean)/std per image, of student and teacher (logit
    /// standardisation; an extension: the student's logit scale is left free).
    #[serde(default)]
    pub standardize_logits: bool,
    /// decay: the student's logits enter the losses divided by r^(1 − s), r its input's
    /// norm over the batch's mean norm and s the bias scale (an extension). A zero-bias
    /// ReLU network's logits grow with its input's norm, f(a·x) = a·f(x), a teacher's need
    /// not: this leaves the student the part of the teacher's logits it can represent. Its
    /// classes (argmax) are unchanged, so evaluation and attributions are untouched.
    #[serde(default)]
    pub norm_free_logits: bool,
    /// decay: decoupled pull of every trained weight and γ toward the teacher's value: after
    /// each Adam update, w ← w − lr·anchor·(w − w_teacher) (L2-SP; an extension, 0 = off).
    /// Biases are not pulled: the schedule takes them to zero.
    #[serde(default)]
    pub anchor: f64,
    /// decay: the student ends as the exponential moving average, with this decay per step,
    /// of its weights over the zero phase (an extension; 0 = off, the last weights).
    #[serde(default)]
    pub ema: f64,
    /// decay: steps at zero bias after the last rescale, biases frozen.
    #[serde(default)]
    pub zero_steps: usize,
    /// decay: distillation temperature (paper: 100).
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// decay: weight of an extra cross-entropy term (an extension; 0 = off).
    #[serde(default)]
    pub ce_weight: f64,
    /// decay: that term's target classes: the labels, or the teacher's top-1.
    #[serde(default)]
    pub ce_target: CeTarget,
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    #[serde(default)]
    pub weight_decay: f64,
    /// Rescale the gradients so that their global L2 norm is at most this (0 = no clipping,
    /// as torch.nn.utils.clip_grad_norm_).
    #[serde(default)]
    pub clip_grad_norm: f64,
    /// Linear learning-rate warm-up over the first steps (0 = none).
    #[serde(default)]
    pub warmup_steps: usize,
    /// Cosine decay of the learning rate to 0 over the stage.
    #[serde(default)]
    pub cosine: bool,
    /// decay: the learning rate stays constant through the rescales and falls to 0 by
    /// cosine over the zero phase only (an extension: a schedule per phase).
    #[serde(default)]
    pub zero_phase_cosine: bool,
    /// train, new model: if after this many steps the mean training loss of the last
    /// [`PLATEAU_WINDOW`] steps is still near chance level (above
    /// [`PLATEAU_FRACTION`]·ln C), re-initialise with the next seed and start the stage
    /// again (0 = never). Plain deep networks trained from scratch sometimes never leave
    /// the chance plateau; which seeds do depends on rounding.
    #[serde(default)]
    pub restart_patience: usize,
    /// train: at most this many such restarts before the run stops with an error.
    #[serde(default = "default_max_restarts")]
    pub max_restarts: usize,
    /// Skip at most this many batches of the stage whose loss or gradient is non-finite
    /// (the update is not applied) instead of stopping the run (0 = stop at the first).
    #[serde(default)]
    pub skip_non_finite: usize,
    /// decay: at every rescale, the validation top-1 of the teacher with its biases set to
    /// the current scale outright (no training) next to the student's (Supplementary
    /// Fig. 6): TensorBoard `decay/*`, `summary.json`'s `decay_curve`, `decay_curve.png`.
    #[serde(default = "default_true")]
    pub decay_curve: bool,
    /// decay: validation images of each of those two evaluations, at most, drawn across the
    /// whole set as for `data.val_limit` (0 = as many as `data.val_limit`). Bounded by
    /// default: two evaluations per rescale.
    #[serde(default = "default_decay_curve_images")]
    pub decay_curve_images: usize,
}

/// Steps whose mean loss decides whether a stage is still on the chance plateau.
pub const PLATEAU_WINDOW: usize = 100;
/// A mean loss above this fraction of ln(classes) counts as the chance plateau.
pub const PLATEAU_FRACTION: f64 = 0.9;

fn default_true() -> bool {
    true
}
fn default_decay_curve_images() -> usize {
    1000
}

fn default_max_restarts() -> usize {
    3
}

fn default_eval_every() -> usize {
    100
}
fn default_checkpoint_every() -> usize {
    100
}
fn default_factor() -> f64 {
    0.5
}
fn default_temperature() -> f64 {
    100.0
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}

impl Stage {
    /// Learning rate for the optimiser step that follows `done` completed steps.
    pub fn lr_at(&self, done: usize) -> f64 {
        let total = self.total_steps().max(1) as f64;
        let warm = if self.warmup_steps > 0 && done < self.warmup_steps {
            (done + 1) as f64 / self.warmup_steps as f64
        } else {
            1.0
        };
        let cosine = |fraction: f64| 0.5 * (1.0 + (std::f64::consts::PI * fraction).cos());
        let rescaling = self.rescales * self.rescale_every;
        let decay = if self.cosine {
            cosine(done as f64 / total)
        } else if self.zero_phase_cosine && self.kind == StageKind::Decay && done >= rescaling {
            cosine((done - rescaling) as f64 / self.zero_steps.max(1) as f64)
        } else {
            1.0
        };
        self.lr * warm * decay
    }

    /// Total optimiser steps of this stage.
    pub fn total_steps(&self) -> usize {
        match self.kind {
            StageKind::Train => self.steps,
            StageKind::Decay => self.rescales * self.rescale_every + self.zero_steps,
        }
    }
}

impl Recipe {
    /// Parse a recipe file, apply `key=value` overrides, validate.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::file(
                path,
                "recipe not found (expected a TOML file, e.g. recipes/quickstart.toml)",
            ),
            _ => Error::io(path, e),
        })?;
        Self::parse(&text, overrides, &path.display().to_string())
    }

    pub fn parse(text: &str, overrides: &[String], origin: &str) -> Result<Self> {
        let mut value: toml::Value = toml::from_str(text).map_err(|e| {
            let at = match e.span() {
                Some(span) => {
                    let (line, col) = line_col(text, span.start);
                    format!(" at line {line}, column {col}")
                }
                None => String::new(),
            };
            Error::file(origin, format!("invalid TOML{at}: {}", e.message().trim()))
        })?;
        let mut sets = Vec::new();
        for o in overrides {
            apply_override(&mut value, o)?;
            if let Some((key, _)) = o.split_once('=') {
                sets.push((key.trim().to_string(), o.clone()));
            }
        }
        let from_set = |e: Error| match e {
            Error::Recipe { field, message } => {
                let note = override_note(&field, &sets);
                Error::recipe(field, format!("{message}{note}"))
            }
            other => other,
        };
        check_types(&value).map_err(from_set)?;
        let recipe: Recipe = value.try_into().map_err(|e: toml::de::Error| {
            // Not reached while `check_types` knows every field; serde's message then
            // carries the key path on a line of its own.
            let text = e.to_string();
            let field = text
                .lines()
                .find_map(|l| l.strip_prefix("in `")?.strip_suffix('`'))
                .unwrap_or(origin)
                .to_string();
            from_set(Error::recipe(field, e.message().to_string()))
        })?;
        recipe.validate().map_err(from_set)?;
        let mut recipe = recipe;
        if recipe.data.kind == "imagefolder" {
            recipe.data.resize = Some(recipe.data.resize_or_default());
        }
        Ok(recipe)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |f: &str, m: String| Err(Error::recipe(f, m));
        if self.name.trim().is_empty() {
            return bad("name", "must not be empty".into());
        }
        // Syntax only: whether the device exists is known when the run opens it.
        if let Err(e) = crate::device::DeviceSpec::parse(&self.device) {
            return bad("device", e.to_string());
        }
        match self.model.source.as_str() {
            "new" => {
                match self.model.arch.as_deref() {
                    Some("vgg16") | Some("resnet50") => {}
                    other => return bad("model.arch", format!("{other:?}: expected \"vgg16\" or \"resnet50\" when model.source = \"new\"")),
                }
                if self.model.width.unwrap_or(0) == 0 {
                    return bad(
                        "model.width",
                        "expected a positive base width when model.source = \"new\"".into(),
                    );
                }
                if self.model.arch.as_deref() == Some("vgg16")
                    && self.model.hidden.unwrap_or(0) == 0
                {
                    return bad(
                        "model.hidden",
                        "expected a positive classifier width for a new vgg16".into(),
                    );
                }
            }
            "" => {
                return bad(
                    "model.source",
                    "expected \"new\", a .safetensors path or a Hub id".into(),
                )
            }
            _ => {}
        }
        match self.data.kind.as_str() {
            "synthetic" => {
                if self.data.synthetic_classes() < 2 {
                    return bad(
                        "data.classes",
                        format!("{}: expected at least 2", self.data.synthetic_classes()),
                    );
                }
                if self.data.train_len == 0 || self.data.val_len == 0 {
                    return bad(
                        "data.train_len",
                        "train_len and val_len must be positive".into(),
                    );
                }
            }
            "imagefolder" => {
                if self.data.train.is_none() {
                    return bad("data.train", "expected the training folder (ImageNet layout) for data.kind = \"imagefolder\"".into());
                }
                if self.data.val.is_none() {
                    return bad(
                        "data.val",
                        "expected the validation folder for data.kind = \"imagefolder\"".into(),
                    );
                }
            }
            other => {
                return bad(
                    "data.kind",
                    format!("\"{other}\": expected \"synthetic\" or \"imagefolder\""),
                )
            }
        }
        if self.data.resize == Some(0) {
            return bad(
                "data.resize",
                "0: expected the shorter side in pixels before the centre crop (at least 1)".into(),
            );
        }
        if crate::data::Augment::parse(&self.data.augment).is_none() {
            return bad(
                "data.augment",
                format!(
                    "\"{}\": expected \"imagenet\", \"flip\" or \"none\"",
                    self.data.augment
                ),
            );
        }
        if self.data.size < 32 {
            return bad(
                "data.size",
                format!(
                    "{}: expected at least 32 pixels (five 2x2 pools)",
                    self.data.size
                ),
            );
        }
        if self.stages.is_empty() {
            return bad("stage", "expected at least one [[stage]]".into());
        }
        if self.model.source == "new" && self.stages[0].kind != StageKind::Train {
            return bad(
                "stage[0].kind",
                "a new model must be trained first: expected kind = \"train\"".into(),
            );
        }
        for (i, s) in self.stages.iter().enumerate() {
            let f = |n: &str| format!("stage[{i}].{n}");
            if !(s.lr.is_finite() && s.lr > 0.0) {
                return bad(
                    &f("lr"),
                    format!("{}: expected a positive learning rate", s.lr),
                );
            }
            if s.batch_size == 0 {
                return bad(&f("batch_size"), "expected at least 1".into());
            }
            if s.eval_every == 0 || s.checkpoint_every == 0 {
                return bad(
                    &f("eval_every"),
                    "eval_every and checkpoint_every must be positive".into(),
                );
            }
            if !(0.0..1.0).contains(&s.beta1) || !(0.0..1.0).contains(&s.beta2) {
                return bad(&f("beta1"), "Adam betas must lie in [0, 1)".into());
            }
            if !(s.clip_grad_norm.is_finite() && s.clip_grad_norm >= 0.0) {
                return bad(
                    &f("clip_grad_norm"),
                    format!(
                        "{}: expected a positive maximum gradient norm, or 0 for none",
                        s.clip_grad_norm
                    ),
                );
            }
            if s.restart_patience > 0 {
                if i != 0 || s.kind != StageKind::Train || self.model.source != "new" {
                    return bad(
                            &f("restart_patience"),
                            "restarts re-initialise the model: only the first stage (kind = \"train\") of a \
                             recipe with model.source = \"new\" may set it"
                                .into(),
                        );
                }
                if s.restart_patience < PLATEAU_WINDOW || s.restart_patience >= s.steps {
                    return bad(
                            &f("restart_patience"),
                            format!(
                                "{}: expected at least {PLATEAU_WINDOW} steps and fewer than the stage's {} steps, or 0 for no restarts",
                                s.restart_patience, s.steps
                            ),
                        );
                }
            }
            // Fields that only mean something in a decay stage.
            let (rescale, distil) = (
                "only a decay stage rescales biases",
                "only a decay stage distils",
            );
            let decay_only = [
                (s.smooth, "smooth", rescale),
                (s.feature_weight != 0.0, "feature_weight", distil),
                (s.bn_variance != BnVariance::Fixed, "bn_variance", rescale),
                (s.mixup, "mixup", distil),
                (s.freeze_biases, "freeze_biases", rescale),
                (s.compensate, "compensate", rescale),
                (s.anchor != 0.0, "anchor", distil),
                (s.standardize_logits, "standardize_logits", distil),
                (s.norm_free_logits, "norm_free_logits", distil),
                (
                    s.ema != 0.0,
                    "ema",
                    "only a decay stage has a zero phase to average",
                ),
                (
                    s.train_gamma,
                    "train_gamma",
                    "only a decay stage holds γ fixed",
                ),
                (
                    s.zero_phase_cosine,
                    "zero_phase_cosine",
                    "only a decay stage has a zero phase",
                ),
                (s.ce_target != CeTarget::Labels, "ce_target", distil),
            ];
            for (set, field, why) in decay_only {
                if set && s.kind != StageKind::Decay {
                    return bad(&f(field), why.into());
                }
            }
            if s.zero_phase_cosine && s.cosine {
                return bad(
                    &f("zero_phase_cosine"),
                    "set either cosine (over the whole stage) or zero_phase_cosine (over the zero phase), not both".into(),
                );
            }
            if s.norm_free_logits && s.standardize_logits {
                return bad(
                    &f("norm_free_logits"),
                    "standardize_logits already leaves the student's logit scale free; set one of them, not both".into(),
                );
            }
            if s.zero_phase_cosine && s.zero_steps == 0 {
                return bad(
                    &f("zero_phase_cosine"),
                    "the stage has no zero phase (zero_steps = 0) for the rate to fall over".into(),
                );
            }
            if s.ce_target != CeTarget::Labels && s.ce_weight == 0.0 {
                return bad(
                    &f("ce_target"),
                    "it chooses the target of the ce_weight term, which is 0 (off); set ce_weight too".into(),
                );
            }
            if !(s.anchor.is_finite() && s.anchor >= 0.0) {
                return bad(
                    &f("anchor"),
                    format!("{}: expected >= 0 (0 = off)", s.anchor),
                );
            }
            if !(0.0..1.0).contains(&s.ema) {
                return bad(
                    &f("ema"),
                    format!(
                        "{}: expected a decay per step in [0, 1), e.g. 0.99 (0 = off)",
                        s.ema
                    ),
                );
            }
            if !(s.feature_weight.is_finite() && s.feature_weight >= 0.0) {
                return bad(
                    &f("feature_weight"),
                    format!("{}: expected >= 0 (0 = off)", s.feature_weight),
                );
            }
            match s.kind {
                StageKind::Train => {
                    if s.steps == 0 {
                        return bad(&f("steps"), "expected a positive number of steps".into());
                    }
                }
                StageKind::Decay => {
                    if s.schedule.is_none() {
                        return bad(
                            &f("schedule"),
                            "expected \"exponential\" or \"linear\"".into(),
                        );
                    }
                    if s.rescales == 0 {
                        return bad(
                            &f("rescales"),
                            "expected at least 1 rescale (the last one sets biases to zero)".into(),
                        );
                    }
                    if s.rescale_every == 0 {
                        return bad(
                            &f("rescale_every"),
                            "expected a positive number of steps (paper: 200)".into(),
                        );
                    }
                    if s.schedule == Some(Schedule::Exponential)
                        && !(s.factor > 0.0 && s.factor < 1.0)
                    {
                        return bad(
                            &f("factor"),
                            format!("{}: expected a factor in (0, 1)", s.factor),
                        );
                    }
                    if !(s.temperature.is_finite() && s.temperature > 0.0) {
                        return bad(
                            &f("temperature"),
                            format!(
                                "{}: expected a positive temperature (paper: 100)",
                                s.temperature
                            ),
                        );
                    }
                    if !(s.ce_weight.is_finite() && s.ce_weight >= 0.0) {
                        return bad(&f("ce_weight"), format!("{}: expected >= 0", s.ce_weight));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Keys whose values differ between two recipes, as `stage.1.lr: 0.0001 (run) → 0.001 (now)`
/// (`absent` where a side lacks the key).
pub fn differences(run: &Recipe, now: &Recipe) -> Vec<String> {
    fn flatten(
        prefix: &str,
        v: &toml::Value,
        out: &mut std::collections::BTreeMap<String, String>,
    ) {
        let key = |k: &str| {
            if prefix.is_empty() {
                k.to_string()
            } else {
                format!("{prefix}.{k}")
            }
        };
        match v {
            toml::Value::Table(t) => t.iter().for_each(|(k, v)| flatten(&key(k), v, out)),
            toml::Value::Array(a) => a
                .iter()
                .enumerate()
                .for_each(|(i, v)| flatten(&key(&i.to_string()), v, out)),
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }
    let table = |r: &Recipe| {
        let mut out = std::collections::BTreeMap::new();
        if let Ok(v) = toml::Value::try_from(r) {
            flatten("", &v, &mut out);
        }
        out
    };
    let (a, b) = (table(run), table(now));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "absent".into());
            format!("{k}: {} (run) → {} (now)", show(a.get(k)), show(b.get(k)))
        })
        .collect()
}

/// 1-based line and column (in characters) of byte offset `at` of `text`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..text.floor_char_boundary(at.min(text.len()))];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, col)
}

/// " (from --set KEY=VALUE)" when an override set `field` or a table around or inside it;
/// `field` may use validate()'s `stage[1].lr` spelling.
fn override_note(field: &str, sets: &[(String, String)]) -> String {
    let field = field.replace('[', ".").replace(']', "");
    let related = |key: &str| {
        key == field
            || key
                .strip_prefix(field.as_str())
                .is_some_and(|r| r.starts_with('.'))
            || field.strip_prefix(key).is_some_and(|r| r.starts_with('.'))
    };
    // The last override of a key is the one in effect.
    match sets.iter().rev().find(|(key, _)| related(key)) {
        Some((_, spec)) => format!(" (from --set {spec})"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::recipe_fields::{
        Fields, DATA_FIELDS, MODEL_FIELDS, STAGE_FIELDS, TOP_FIELDS,
    };
    use super::*;

    const BASE: &str = r#"
name = "t"
[model]
source = "new"
arch = "vgg16"
width = 4
hidden = 16
[data]
kind = "synthetic"
[[stage]]
kind = "train"
steps = 10
lr = 1e-3
batch_size = 4
[[stage]]
kind = "decay"
schedule = "exponential"
rescales = 3
rescale_every = 2
zero_steps = 2
lr = 1e-4
batch_size = 4
"#;

    #[test]
    fn parses_and_overrides() {
        let r = Recipe::parse(
            BASE,
            &["stage.1.zero_steps=7".into(), "data.size=48".into()],
            "t",
        )
        .unwrap();
        assert_eq!(r.stages[1].zero_steps, 7);
        assert_eq!(r.data.size, 48);
        assert_eq!(r.stages[1].total_steps(), 3 * 2 + 7);
    }

    #[test]
    fn zero_phase_cosine_holds_the_rate_through_the_rescales_then_falls_to_zero() {
        let r = Recipe::parse(
            BASE,
            &[
                "stage.1.zero_phase_cosine=true".into(),
                "stage.1.zero_steps=4".into(),
            ],
            "t",
        )
        .unwrap();
        let decay = &r.stages[1];
        let rates: Vec<f64> = (0..decay.total_steps()).map(|d| decay.lr_at(d)).collect();
        // 3 rescales × 2 steps at the full rate, then cos over the 4 zero steps.
        let expected = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.853553, 0.5, 0.146447];
        for (got, want) in rates.iter().zip(expected) {
            assert!((got / 1e-4 - want).abs() < 1e-5, "{rates:?}");
        }
        for (sets, needle) in [
            (
                vec!["stage.1.zero_phase_cosine=true", "stage.1.cosine=true"],
                "not both",
            ),
            (
                vec!["stage.1.zero_phase_cosine=true", "stage.1.zero_steps=0"],
                "no zero phase",
            ),
            (vec!["stage.0.zero_phase_cosine=true"], "only a decay stage"),
        ] {
            let sets: Vec<String> = sets.into_iter().map(String::from).collect();
            let e = Recipe::parse(BASE, &sets, "t").unwrap_err().to_string();
            assert!(e.contains("zero_phase_cosine") && e.contains(needle), "{e}");
        }
    }

    #[test]
    fn preprocessing_is_validated_and_recorded() {
        let folder = [
            "data.kind=\"imagefolder\"",
            "data.train=\"a\"",
            "data.val=\"b\"",
        ];
        let sets = |extra: &[&str]| -> Vec<String> {
            folder.iter().chain(extra).map(|s| s.to_string()).collect()
        };
        // The default resize is filled in, so recipe.toml records it.
        let r = Recipe::parse(BASE, &sets(&[]), "t").unwrap();
        assert_eq!(
            (r.data.resize, r.data.augment.as_str()),
            (Some(73), "imagenet")
        );
        assert!(r.to_toml().contains("resize = 73"), "{}", r.to_toml());
        let r = Recipe::parse(
            BASE,
            &sets(&["data.resize=64", "data.augment=\"none\""]),
            "t",
        )
        .unwrap();
        assert_eq!((r.data.resize, r.data.augment.as_str()), (Some(64), "none"));
        let again = Recipe::parse(&r.to_toml(), &[], "t").unwrap();
        assert_eq!(again, r);
        // Synthetic data has no resize step.
        assert_eq!(Recipe::parse(BASE, &[], "t").unwrap().data.resize, None);
        for (set, field) in [
            ("data.augment=\"random\"", "data.augment"),
            ("data.resize=0", "data.resize"),
            ("data.resize=\"big\"", "data.resize"),
        ] {
            let e = Recipe::parse(BASE, &sets(&[set]), "t")
                .unwrap_err()
                .to_string();
            assert!(e.contains(field), "{set}: {e}");
        }
    }

    #[test]
    fn field_table_matches_the_structs() {
        // Every field set, so that serialising writes each one.
        let mut r = Recipe::parse(BASE, &[], "t").unwrap();
        r.model.classes = Some(3);
        r.model.revision = Some("main".into());
        r.data.train = Some("train".into());
        r.data.classes = Some(10);
        r.data.val = Some("val".into());
        r.data.resize = Some(80);
        let v = toml::Value::try_from(&r).unwrap();
        let keys = |t: &toml::Value, skip: &[&str]| -> Vec<String> {
            let mut k: Vec<String> = t
                .as_table()
                .unwrap()
                .keys()
                .filter(|k| !skip.contains(&k.as_str()))
                .cloned()
                .collect();
            k.sort();
            k
        };
        let names = |f: Fields| -> Vec<String> {
            let mut k: Vec<String> = f.iter().map(|(n, _, _)| n.to_string()).collect();
            k.sort();
            k
        };
        assert_eq!(keys(&v, &["model", "data", "stage"]), names(TOP_FIELDS));
        assert_eq!(keys(&v["model"], &[]), names(MODEL_FIELDS));
        assert_eq!(keys(&v["data"], &[]), names(DATA_FIELDS));
        assert_eq!(keys(&v["stage"][1], &[]), names(STAGE_FIELDS));
        // And every value the structs accept passes the type check.
        check_types(&v).unwrap();
    }

    #[test]
    fn device_and_precision_are_checked_before_the_run() {
        let r = Recipe::parse(
            BASE,
            &["device=cuda:1".into(), "precision=tf32".into()],
            "t",
        )
        .unwrap();
        assert_eq!(
            (r.device.as_str(), r.precision.as_str()),
            ("cuda:1", "tf32")
        );
        assert_eq!(Recipe::parse(BASE, &[], "t").unwrap().precision, "f32");
        let e = Recipe::parse(BASE, &["device=gpu0".into()], "t")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("recipe device:") && e.contains("expected cpu, cuda, cuda:N"),
            "{e}"
        );
        assert!(e.ends_with("(from --set device=gpu0)"), "{e}");
        let e = Recipe::parse(BASE, &["precision=fp16".into()], "t")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("precision: expected \"f32\" or \"tf32\", got \"fp16\""),
            "{e}"
        );
    }

    #[test]
    fn type_errors_name_the_path_and_the_override() {
        let e = Recipe::parse(&BASE.replace("steps = 10", "steps = \"many\""), &[], "t")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "recipe stage.0.steps: expected a positive integer, got \"many\""
        );
        let e = Recipe::parse(BASE, &["stage.1.rescales=-2".into()], "t")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "recipe stage.1.rescales: expected a positive integer, got -2 (from --set stage.1.rescales=-2)"
        );
        let e = Recipe::parse(BASE, &["data.size=1.5".into()], "t")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("data.size: expected a positive integer, got 1.5"),
            "{e}"
        );
        let one_stage = &BASE[..BASE.rfind("[[stage]]").unwrap()];
        let e = Recipe::parse(&one_stage.replace("[[stage]]", "[stage]"), &[], "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("stage") && e.contains("[[stage]]"), "{e}");
        let e = Recipe::parse(&BASE.replace("lr = 1e-4\n", ""), &[], "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("stage.1.lr: missing (expected a number)"), "{e}");
        // A later override of the same key is the one named.
        let e = Recipe::parse(
            BASE,
            &["stage.0.lr=1".into(), "stage.0.lr=\"fast\"".into()],
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(e.ends_with("(from --set stage.0.lr=\"fast\")"), "{e}");
    }

    #[test]
    fn syntax_errors_give_line_and_column() {
        let text = BASE.replace("width = 4", "width = 4 4");
        let e = Recipe::parse(&text, &[], "r.toml").unwrap_err().to_string();
        assert!(
            e.starts_with("r.toml: invalid TOML at line 6, column 9:"),
            "{e}"
        );
        assert_eq!(line_col("ab\nçd\n", 5), (2, 2));
        assert_eq!(line_col("ab\nçd\n", 4), (2, 1));
        assert_eq!(line_col("x", 9), (1, 2));
    }

    #[test]
    fn typo_names_the_field() {
        let text = BASE.replace("zero_steps", "zero_stpes");
        let e = Recipe::parse(&text, &[], "t").unwrap_err().to_string();
        assert!(e.contains("zero_stpes"), "{e}");
        let e = Recipe::parse(BASE, &["stage.0.lr=-1".into()], "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("stage[0].lr"), "{e}");
        let e = Recipe::parse(BASE, &["stage.0.clip_grad_norm=-1".into()], "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("stage[0].clip_grad_norm"), "{e}");
        let e = Recipe::parse(BASE, &["data.kind=\"folder\"".into()], "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("data.kind"), "{e}");
        let e = Recipe::parse(BASE, &["stage.5.lr=1".into()], "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("out of range"), "{e}");
    }
}
