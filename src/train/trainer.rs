//! The training loop: a [`Trainer`] holds what lives for the whole run (model, data,
//! TensorBoard writer, progress), a [`StageRun`] what lives for one stage (teacher,
//! optimiser, bias handles, progress bar).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use indicatif::ProgressBar;

use super::compensate::Compensator;
use super::evaluate::{evaluate_top1, log_probe_panel, predict, Predictions};
use super::recipe::{self, BnVariance, CeTarget, Recipe, Schedule, Stage, StageKind};
use super::run_dir::{
    check_run_dir, check_same_recipe, default_run_dir, load_resume_checkpoint,
    remove_orphaned_temporaries, save_checkpoint,
};
use super::setup::{build_model, init_seed, new_optimiser, open_data, parse_device, Data};
use super::state::{CurvePoint, TrainState};
use super::summary::{Progress, Summary};
use super::{bn_variance, loss, optim, schedule};
use crate::bias::BiasSet;
use crate::data::{Batch, Loader};
use crate::error::{write_atomic, Error, Result};
use crate::models::{self, Classifier, Ctx, ParamKind};
use crate::report::plot::{line_plot, save_png, LineSeries};
use crate::report::tensorboard::EventWriter;

pub struct RunOptions {
    /// Run directory; default `checkpoints/{name}-{timestamp}` (or the latest such run
    /// with `resume`).
    pub run_dir: Option<PathBuf>,
    pub resume: bool,
    pub overrides: Vec<String>,
    /// Hide the progress bar (tests).
    pub quiet: bool,
    /// Stop after this many global steps (for tests of interruption); None = run all.
    pub stop_after: Option<usize>,
    /// With `resume`: continue even though the recipe differs from the run's `recipe.toml`
    /// (the differences are printed).
    pub force: bool,
}

pub(super) struct Trainer<'a> {
    opts: &'a RunOptions,
    /// What summary.json needs should a non-finite value stop the run.
    progress: &'a mut Progress,
    recipe: Recipe,
    provenance: String,
    run_dir: PathBuf,
    device: Device,
    data: Data,
    model: Box<dyn Classifier>,
    tb: EventWriter,
    tb_dir: PathBuf,
    state: TrainState,
    /// Adam's moments from the checkpoint a resumed run continues.
    resume_extra: HashMap<String, Tensor>,
    started: Instant,
    /// Seconds spent before a resume.
    base_seconds: f64,
    total_steps: usize,
    teacher_top1: f64,
    teacher_ckpt: Option<PathBuf>,
    student_top1: f64,
    /// Share of validation images on which the student's top-1 class is the teacher's.
    agreement: Option<f64>,
    /// `ema`: the student's top-1 before its average replaced its last weights.
    last_weights_top1: Option<f64>,
    /// Global step and top-1 of the latest evaluation of the training weights.
    last_eval: Option<(usize, f64)>,
    brute_force: f64,
}

/// What lives for one stage.
struct StageRun {
    si: usize,
    stage: Stage,
    /// The frozen original of a decay stage.
    teacher: Option<Box<dyn Classifier>>,
    /// The teacher's top-1 class of each validation image, for the closing agreement.
    teacher_predictions: Option<Predictions>,
    /// A second copy of it whose biases are set to each scale for the decay curve.
    curve_teacher: Option<Box<dyn Classifier>>,
    /// `compensate`: moves each rescale's removed constants into the weights.
    compensator: Option<Compensator>,
    /// `bn_variance = "recalibrate"`: the training images BN variances are measured on.
    recalibration: Vec<Tensor>,
    adam: optim::Adam,
    biases: BiasSet,
    bias_names: Vec<String>,
    loader: Loader,
    per_epoch: usize,
    bar: ProgressBar,
    window: Instant,
    window_images: usize,
    ips: f64,
}

/// A step that updated the model.
struct Stepped {
    loss: f64,
    grad_norm: f64,
    /// Fraction of the batch on which student and teacher agree (NaN without teacher).
    agreement: f64,
}

impl<'a> Trainer<'a> {
    /// Everything that can fail on the user's input is checked before the run directory is
    /// created, so that a refused run leaves nothing behind.
    pub(super) fn new(
        recipe_path: &Path,
        opts: &'a RunOptions,
        progress: &'a mut Progress,
    ) -> Result<Self> {
        let recipe = Recipe::load(recipe_path, &opts.overrides)?;
        progress.recipe = recipe.name.clone();
        let run_dir = match &opts.run_dir {
            Some(d) => d.clone(),
            None => default_run_dir(&recipe.name, opts.resume)?,
        };
        check_run_dir(&run_dir, &recipe, opts.resume)?;
        if opts.resume {
            check_same_recipe(&run_dir, &recipe, opts.force)?;
        }
        let device = parse_device(&recipe.device, &recipe.precision)?;
        let data = open_data(&recipe)?;
        let model = build_model(&recipe, data.train.num_classes(), 0, &device)?;
        if model.num_classes() != data.train.num_classes() {
            return Err(Error::input(format!(
                "model has {} classes but the training data has {}",
                model.num_classes(),
                data.train.num_classes()
            )));
        }
        let resumed = if opts.resume {
            remove_orphaned_temporaries(&run_dir);
            let r = load_resume_checkpoint(&run_dir, &device)?;
            if r.is_none() {
                eprintln!(
                    "no checkpoint in {} yet: starting from the beginning",
                    run_dir.display()
                );
            }
            r
        } else {
            None
        };
        std::fs::create_dir_all(&run_dir).map_err(|e| Error::io(&run_dir, e))?;
        progress.run_dir = Some(run_dir.clone());
        write_atomic(&run_dir.join("recipe.toml"), recipe.to_toml().as_bytes())?;
        let tb_dir = run_dir.join("tb");
        let tb = EventWriter::create(&tb_dir)?;

        let mut state = TrainState::start();
        let mut resume_extra = HashMap::new();
        if let Some((ck, c, s)) = resumed {
            model.params().assign(&c.model, &ck.display().to_string())?;
            resume_extra = c.extra;
            eprintln!(
                "resuming {} at stage {} step {} (global step {})",
                ck.display(),
                s.stage,
                s.stage_step,
                s.global_step
            );
            state = s;
        }
        Ok(Trainer {
            opts,
            progress,
            total_steps: recipe.stages.iter().map(|s| s.total_steps()).sum(),
            provenance: format!("recipe {} ({})", recipe.name, recipe_path.display()),
            recipe,
            run_dir,
            device,
            data,
            model,
            tb,
            tb_dir,
            base_seconds: state.seconds,
            state,
            resume_extra,
            started: Instant::now(),
            teacher_top1: f64::NAN,
            teacher_ckpt: None,
            student_top1: f64::NAN,
            agreement: None,
            last_weights_top1: None,
            last_eval: None,
            brute_force: f64::NAN,
        })
    }

    /// The stages not yet done, then the final checkpoint and summary.
    pub(super) fn run(mut self) -> Result<Summary> {
        for si in self.state.stage..self.recipe.stages.len() {
            self.run_stage(si)?;
        }
        self.finish()
    }

    fn run_stage(&mut self, si: usize) -> Result<()> {
        let mut st = self.begin_stage(si)?;
        while self.state.stage_step < st.stage.total_steps() {
            self.stop_if_requested(&st)?;
            self.epoch(&mut st)?;
        }
        self.end_stage(st)
    }

    /// Steps through the rest of the current epoch (or until the stage or --stop-after
    /// ends, or a restart begins the stage again).
    fn epoch(&mut self, st: &mut StageRun) -> Result<()> {
        // Checkpoints from before `data_position` existed: one batch per step.
        let position = self.state.data_position.unwrap_or(self.state.stage_step);
        let epoch = position / st.per_epoch;
        let mut batches = 0;
        for batch in st.loader.epoch(epoch as u64, position % st.per_epoch) {
            if !self.steps_remain(st) {
                break;
            }
            self.progress.state = Some(self.state.clone());
            let next_position = epoch * st.per_epoch + batch.batch_index + 1;
            batches += 1;
            let Some(out) = self.step(st, batch, next_position)? else {
                continue;
            };
            if self.restart_if_plateau(st, out.loss)? {
                return Ok(());
            }
            if self.rescale(st)? && st.curve_teacher.is_some() {
                self.curve_point(st)?;
            }
            self.log(st, &out)?;
            let last_step = self.state.stage_step == st.stage.total_steps();
            if self.state.stage_step.is_multiple_of(st.stage.eval_every) || last_step {
                self.evaluate(st)?;
            }
            if self
                .state
                .stage_step
                .is_multiple_of(st.stage.checkpoint_every)
                || last_step
            {
                self.checkpoint(st)?;
            }
        }
        if self.steps_remain(st) {
            // The epoch ran out: the next one starts at its first batch.
            self.state.data_position = Some((epoch + 1) * st.per_epoch);
        }
        if batches == 0 && self.steps_remain(st) {
            return Err(Error::Training(format!(
                "stage {}: the training data yielded no batch ({} images skipped as unreadable)",
                st.si,
                st.loader.skipped()
            )));
        }
        Ok(())
    }

    /// Steps remain in this stage and within --stop-after.
    fn steps_remain(&self, st: &StageRun) -> bool {
        self.state.stage_step < st.stage.total_steps()
            && self
                .opts
                .stop_after
                .is_none_or(|l| self.state.global_step < l)
    }

    fn stop_if_requested(&self, st: &StageRun) -> Result<()> {
        match self.opts.stop_after {
            Some(limit) if self.state.global_step >= limit => {
                st.bar.abandon();
                Err(Error::Training(format!(
                    "stopped after {limit} steps as requested"
                )))
            }
            _ => Ok(()),
        }
    }

    /// Opens stage `si` (or continues it after a resume): its teacher, optimiser, data
    /// stream and progress bar.
    fn begin_stage(&mut self, si: usize) -> Result<StageRun> {
        let stage = self.recipe.stages[si].clone();
        // A stage with no step done starts afresh, also when a run is resumed from the
        // checkpoint written as the previous stage ended (its Adam state is that stage's).
        if si > self.state.stage || self.state.stage_step == 0 {
            self.state.begin_stage(si);
            self.resume_extra.clear();
        }
        let teacher = self.teacher(si, &stage)?;
        let curve_teacher = match &self.teacher_ckpt {
            Some(path) if teacher.is_some() && stage.decay_curve => {
                Some(models::load(path, &self.device)?)
            }
            _ => None,
        };
        let teacher_predictions = teacher
            .as_ref()
            .map(|t| {
                predict(
                    t.as_ref(),
                    &self.data.val,
                    self.recipe.data.val_limit,
                    &self.device,
                )
            })
            .transpose()?;
        if let Some(p) = &teacher_predictions {
            self.teacher_top1 = p.top1();
            self.progress.teacher_top1 = Some(self.teacher_top1);
            self.tb.add_scalar(
                "eval/teacher_top1",
                self.teacher_top1 as f32,
                self.state.global_step as i64,
            )?;
        }
        let compensator = match &teacher {
            Some(t) if stage.compensate => Some(self.compensator(si, &stage, t.as_ref())?),
            _ => None,
        };
        let recalibration = if teacher.is_some() && stage.bn_variance == BnVariance::Recalibrate {
            self.side_batches(si, &stage, 0xb4_7a2e, bn_variance::RECALIBRATION_IMAGES)?
        } else {
            Vec::new()
        };
        let mut adam = new_optimiser(self.model.as_ref(), &stage)?;
        adam.load_state(&self.resume_extra, self.state.adam_t)?;
        if let (true, Some(t)) = (stage.anchor > 0.0, &teacher) {
            adam.anchor_to(&anchor_values(self.model.as_ref(), t.as_ref()))?;
        }
        let biases = self.model.bias_set();
        let bias_names: Vec<String> = biases.iter().map(|h| h.param.clone()).collect();
        if stage.kind == StageKind::Decay && self.state.rescales_done >= stage.rescales {
            // A checkpoint from the zero phase carries any average; begun here otherwise.
            hold_at_zero(&mut adam, &bias_names)?;
        }
        let loader = Loader::new(
            self.data.train.clone(),
            stage.batch_size,
            true,
            self.stage_seed(si),
            self.recipe.data.prefetch,
        );
        if loader.batches_per_epoch() == 0 {
            return Err(Error::input(format!(
                "stage {si}: batch_size {} is larger than the training set ({} images)",
                stage.batch_size,
                self.data.train.len()
            )));
        }
        let bar = if self.opts.quiet {
            ProgressBar::hidden()
        } else {
            crate::report::progress::bar(
                stage.total_steps() as u64,
                &format!("{:?}", stage.kind).to_lowercase(),
            )
        };
        bar.set_position(self.state.stage_step as u64);
        Ok(StageRun {
            si,
            per_epoch: loader.batches_per_epoch(),
            stage,
            teacher,
            teacher_predictions,
            curve_teacher,
            compensator,
            recalibration,
            adam,
            biases,
            bias_names,
            loader,
            bar,
            window: Instant::now(),
            window_images: 0,
            ips: 0.0,
        })
    }

    /// Seed of stage `si`'s training stream (and, mixed further, its other streams).
    fn stage_seed(&self, si: usize) -> u64 {
        self.recipe.seed.wrapping_add(si as u64 * 7919)
    }

    /// About `images` augmented training images in batches of the stage's size, from a
    /// stream of their own (`salt`): the training stream is untouched, and every resume
    /// draws the same images.
    fn side_batches(
        &self,
        si: usize,
        stage: &Stage,
        salt: u64,
        images: usize,
    ) -> Result<Vec<Tensor>> {
        let loader = Loader::new(
            self.data.train.clone(),
            stage.batch_size,
            true,
            self.stage_seed(si) ^ salt,
            self.recipe.data.prefetch,
        );
        let batches = loader
            .epoch(0, 0)
            .take(images.div_ceil(stage.batch_size))
            .map(|b| Tensor::from_vec(b.pixels, (b.n, 3, b.height, b.width), &self.device))
            .collect::<std::result::Result<_, _>>()?;
        Ok(batches)
    }

    /// Patch statistics for `compensate` from a few training batches of a stream of its own
    /// (the training stream is untouched), the same on every resume.
    fn compensator(
        &self,
        si: usize,
        stage: &Stage,
        teacher: &dyn Classifier,
    ) -> Result<Compensator> {
        let batches = self.side_batches(si, stage, 0xc0_4e45, 128)?;
        let c = Compensator::new(self.model.as_ref(), teacher, &batches)?;
        let mut r2: Vec<f64> = c.recovered.iter().map(|(_, r)| *r).collect();
        r2.sort_by(f64::total_cmp);
        eprintln!(
            "stage {si}: compensate through {} convolutions (median R² {:.3}, lowest {:.3}){}",
            r2.len(),
            r2.get(r2.len() / 2).copied().unwrap_or(f64::NAN),
            r2.first().copied().unwrap_or(f64::NAN),
            if c.skipped.is_empty() {
                String::new()
            } else {
                format!("; not through {}", c.skipped.join(", "))
            }
        );
        Ok(c)
    }

    /// The teacher of a decay stage is the model as it entered the stage, kept on disk so
    /// that a resumed run distils from the same network.
    fn teacher(&mut self, si: usize, stage: &Stage) -> Result<Option<Box<dyn Classifier>>> {
        if stage.kind != StageKind::Decay {
            return Ok(None);
        }
        let path = self.run_dir.join(format!("teacher-stage{si}.safetensors"));
        if !path.exists() {
            save_checkpoint(
                &path,
                self.model.as_ref(),
                None,
                &self.state,
                &format!("{}; teacher of stage {si}", self.provenance),
            )?;
        }
        let teacher = models::load(&path, &self.device)?;
        self.teacher_ckpt = Some(path);
        Ok(Some(teacher))
    }

    /// One optimiser step on `batch`; None when the batch was skipped for a non-finite
    /// loss or gradient. `next_position` is the data position after this batch.
    fn step(
        &mut self,
        st: &mut StageRun,
        batch: Batch,
        next_position: usize,
    ) -> Result<Option<Stepped>> {
        let stage = &st.stage;
        let x = Tensor::from_vec(
            batch.pixels,
            (batch.n, 3, batch.height, batch.width),
            &self.device,
        )?;
        let labels = Tensor::from_vec(batch.labels.clone(), batch.n, &self.device)?;
        let (loss, agreement) = match &st.teacher {
            None => {
                let train_bn = self.model.arch() == models::Arch::ResNet;
                let logits = self.model.forward_ctx(&x, &mut Ctx::training(train_bn))?;
                let loss = crate::nn::cross_entropy(&logits, &labels)?;
                (loss, f64::NAN)
            }
            Some(t) => {
                // mixup: the pair sees a blend of two images (function matching away from
                // the training images themselves), drawn from the step number so that a
                // resumed run draws the same.
                let mut mixed = None;
                let mut x = x;
                if stage.mixup {
                    let mut rng = crate::data::Rng::derive(
                        self.recipe.seed,
                        &[0x0031_3c0b, st.si as u64, self.state.global_step as u64],
                    );
                    let lambda = rng.uniform_f64();
                    let mut order: Vec<u32> = (0..batch.n as u32).collect();
                    rng.shuffle(&mut order);
                    let order = Tensor::from_vec(order, batch.n, &self.device)?;
                    x = ((&x * lambda)? + (x.index_select(&order, 0)? * (1.0 - lambda))?)?;
                    mixed = Some((lambda, labels.index_select(&order, 0)?));
                }
                let features = stage.feature_weight > 0.0;
                let (mut t_ctx, mut s_ctx) = (Ctx::inference(), Ctx::training(false));
                if features {
                    (t_ctx, s_ctx) = (t_ctx.collecting_features(), s_ctx.collecting_features());
                }
                let t_logits = t.forward_ctx(&x, &mut t_ctx)?;
                let mut s_logits = self.model.forward_ctx(&x, &mut s_ctx)?;
                if stage.norm_free_logits {
                    let divisor = loss::norm_divisor(&x, 1.0 - self.state.bias_scale)?;
                    s_logits = s_logits.broadcast_div(&divisor)?;
                }
                let mut loss = if stage.standardize_logits {
                    let (s, t) = (loss::standardize(&s_logits)?, loss::standardize(&t_logits)?);
                    loss::kd_loss(&s, &t, stage.temperature)?
                } else {
                    loss::kd_loss(&s_logits, &t_logits, stage.temperature)?
                };
                if let (true, Some(s_f), Some(t_f)) = (features, s_ctx.features, t_ctx.features) {
                    let feature = loss::feature_loss(&s_f, &t_f)?;
                    loss = (loss + (feature * stage.feature_weight)?)?;
                }
                let t_top1 = t_logits.argmax(1)?;
                if stage.ce_weight > 0.0 {
                    let ce = match (&mixed, stage.ce_target) {
                        (_, CeTarget::Teacher) => crate::nn::cross_entropy(&s_logits, &t_top1)?,
                        (None, CeTarget::Labels) => crate::nn::cross_entropy(&s_logits, &labels)?,
                        (Some((lambda, other)), CeTarget::Labels) => {
                            ((crate::nn::cross_entropy(&s_logits, &labels)? * *lambda)?
                                + (crate::nn::cross_entropy(&s_logits, other)? * (1.0 - lambda))?)?
                        }
                    };
                    loss = (loss + (ce * stage.ce_weight)?)?;
                }
                let a: Vec<u32> = s_logits.detach().argmax(1)?.to_vec1()?;
                let b: Vec<u32> = t_top1.to_vec1()?;
                let agree =
                    a.iter().zip(&b).filter(|(p, q)| p == q).count() as f64 / a.len() as f64;
                (loss, agree)
            }
        };
        let loss_value = loss.to_scalar::<f32>()? as f64;
        // A non-finite loss or gradient leaves the model untouched: the batch may be
        // skipped. A non-finite weight from a finite gradient stops the run.
        let (grad_norm, bad, skippable) = if loss_value.is_finite() {
            let grads = loss.backward()?;
            st.adam.lr = stage.lr_at(self.state.stage_step);
            let report = st.adam.step(&grads)?;
            match report.rejected {
                None => (report.grad_norm, None, false),
                Some(optim::Rejected::Gradient(m)) => (report.grad_norm, Some(m), true),
                Some(optim::Rejected::Weight(m)) => (report.grad_norm, Some(m), false),
            }
        } else {
            (
                f64::NAN,
                Some(format!("non-finite loss ({loss_value})")),
                true,
            )
        };
        if let Some(what) = bad {
            self.skip_non_finite(st, what, skippable, next_position)?;
            return Ok(None);
        }
        self.state.stage_step += 1;
        self.state.data_position = Some(next_position);
        self.state.global_step += 1;
        self.state.adam_t = st.adam.t;
        st.window_images += batch.n;
        Ok(Some(Stepped {
            loss: loss_value,
            grad_norm,
            agreement,
        }))
    }

    /// Skips the batch of a non-finite loss or gradient while the stage's
    /// `skip_non_finite` allows; otherwise stops the run.
    fn skip_non_finite(
        &mut self,
        st: &StageRun,
        what: String,
        skippable: bool,
        next_position: usize,
    ) -> Result<()> {
        let si = st.si;
        let at = format!(
            "stage {si} ({:?}) step {} (global step {})",
            st.stage.kind,
            self.state.stage_step + 1,
            self.state.global_step + 1
        );
        if !(skippable && self.state.skipped_non_finite < st.stage.skip_non_finite) {
            st.bar.abandon();
            return Err(Error::Diverged(format!("{what} at {at}")));
        }
        self.state.skipped_non_finite += 1;
        self.state.skipped_non_finite_total += 1;
        self.state.data_position = Some(next_position);
        // eprintln, not bar.println: a hidden bar (no terminal) prints nothing.
        st.bar.suspend(|| {
            eprintln!(
                "warning: {what} at {at}: batch skipped ({} of at most {} in stage {si})",
                self.state.skipped_non_finite, st.stage.skip_non_finite
            )
        });
        self.tb.add_scalar(
            "train/skipped_non_finite",
            self.state.skipped_non_finite_total as f32,
            self.state.global_step as i64,
        )?;
        Ok(())
    }

    /// A first stage whose loss stays at chance level re-initialises the model with the
    /// next seed and starts over (true), up to `max_restarts` times.
    fn restart_if_plateau(&mut self, st: &mut StageRun, loss: f64) -> Result<bool> {
        let (si, stage) = (st.si, &st.stage);
        if stage.restart_patience == 0 || self.state.stage_step > stage.restart_patience {
            return Ok(false);
        }
        if self.state.stage_step + recipe::PLATEAU_WINDOW > stage.restart_patience {
            self.state.plateau_loss += loss;
        }
        let mean = self.state.plateau_loss / recipe::PLATEAU_WINDOW as f64;
        let classes = self.model.num_classes();
        let chance = (classes as f64).ln();
        if self.state.stage_step != stage.restart_patience
            || mean <= recipe::PLATEAU_FRACTION * chance
        {
            return Ok(false);
        }
        if self.state.restarts >= stage.max_restarts {
            st.bar.abandon();
            return Err(Error::Training(format!(
                "stage {si}: the training loss stayed at chance level ({mean:.3}, ln {classes} = {chance:.3}) for {} steps after each of {} initialisations; try a lower stage[{si}].lr or longer stage[{si}].warmup_steps",
                stage.restart_patience,
                self.state.restarts + 1
            )));
        }
        self.state.restarts += 1;
        // Through suspend: println prints nothing while the bar is hidden.
        st.bar.suspend(|| eprintln!(
            "stage {si}: mean loss {mean:.3} after {} steps is chance level (ln {classes} = {chance:.3}): re-initialising with seed {} (restart {} of at most {})",
            stage.restart_patience,
            init_seed(self.recipe.seed, self.state.restarts),
            self.state.restarts,
            stage.max_restarts
        ));
        self.tb.add_scalar(
            "train/restarts",
            self.state.restarts as f32,
            self.state.global_step as i64,
        )?;
        self.model = build_model(
            &self.recipe,
            self.data.train.num_classes(),
            self.state.restarts,
            &self.device,
        )?;
        st.adam = new_optimiser(self.model.as_ref(), stage)?;
        st.biases = self.model.bias_set();
        self.state.begin_stage(si);
        Ok(true)
    }

    /// The decay schedule after a step: rescale the bias handles when one is due (every
    /// step with `smooth`), and zero and freeze them on the last rescale. True when the
    /// count of rescales went up.
    fn rescale(&mut self, st: &mut StageRun) -> Result<bool> {
        let stage = &st.stage;
        let state = &mut self.state;
        let before = state.rescales_done;
        let scale_before = state.bias_scale;
        let schedule = stage.schedule.unwrap_or(Schedule::Exponential);
        let decaying = stage.kind == StageKind::Decay && state.rescales_done < stage.rescales;
        if decaying && stage.smooth {
            let scale_at = |steps| {
                schedule::smooth_scale(
                    schedule,
                    stage.factor,
                    steps,
                    stage.rescale_every,
                    stage.rescales,
                )
            };
            let (prev, next) = (scale_at(state.stage_step - 1), scale_at(state.stage_step));
            if let (Some(c), true) = (&st.compensator, prev > 0.0) {
                c.apply(next / prev)?;
            }
            if next > 0.0 {
                st.biases.scale(next / prev)?;
            }
            state.rescales_done = state.stage_step / stage.rescale_every;
            state.bias_scale = next;
            if state.rescales_done == stage.rescales {
                st.biases.zero()?;
                hold_at_zero(&mut st.adam, &st.bias_names)?;
            }
        } else if decaying && state.stage_step == (state.rescales_done + 1) * stage.rescale_every {
            let k = state.rescales_done + 1;
            let factor = schedule::step_factor(schedule, stage.factor, k, stage.rescales);
            if let Some(c) = &st.compensator {
                c.apply(factor)?;
            }
            st.biases.scale(factor)?;
            state.rescales_done = k;
            state.bias_scale = schedule::scale_after(schedule, stage.factor, k, stage.rescales);
            if k == stage.rescales {
                st.biases.zero()?;
                hold_at_zero(&mut st.adam, &st.bias_names)?;
            }
        }
        match stage.bn_variance {
            BnVariance::SecondMoment if state.bias_scale != scale_before => {
                if let Some(teacher) = &st.teacher {
                    bn_variance::set_second_moment(
                        self.model.as_ref(),
                        teacher.as_ref(),
                        state.bias_scale,
                    )?;
                }
            }
            // Once per rescale period also with `smooth` (a pass per image set is not free).
            BnVariance::Recalibrate if state.rescales_done > before => {
                bn_variance::recalibrate(self.model.as_ref(), &st.recalibration)?;
            }
            _ => {}
        }
        Ok(state.rescales_done > before)
    }

    /// Supplementary Fig. 6: right after a rescale, the teacher with its biases set to the
    /// new scale outright (no training) next to the student, on the same validation
    /// images. Neither touches the training: the teacher is a separate copy, and an
    /// evaluation draws on no training random stream.
    fn curve_point(&mut self, st: &StageRun) -> Result<()> {
        let (Some(teacher), Some(scaled)) = (&st.teacher, &st.curve_teacher) else {
            return Ok(());
        };
        let scale = self.state.bias_scale;
        for (original, h) in teacher.bias_set().iter().zip(scaled.bias_set().iter()) {
            // Exactly the brute-force zeroing at the last rescale.
            let value = if scale == 0.0 {
                original.read().zeros_like()?
            } else {
                (original.read() * scale)?
            };
            h.var.set(&value)?;
        }
        let limit = match (self.recipe.data.val_limit, st.stage.decay_curve_images) {
            (all, 0) => all,
            (0, n) => n,
            (all, n) => all.min(n),
        };
        let teacher_scaled_top1 =
            evaluate_top1(scaled.as_ref(), &self.data.val, limit, &self.device)?;
        let student_top1 = evaluate_top1(self.model.as_ref(), &self.data.val, limit, &self.device)?;
        let g = self.state.global_step as i64;
        self.tb
            .add_scalar("decay/teacher_scaled_top1", teacher_scaled_top1 as f32, g)?;
        self.tb
            .add_scalar("decay/student_top1", student_top1 as f32, g)?;
        self.tb.add_scalar("decay/scale", scale as f32, g)?;
        self.state.decay_curve.push(CurvePoint {
            stage: st.si,
            rescale: self.state.rescales_done,
            step: self.state.global_step,
            scale,
            teacher_scaled_top1,
            student_top1,
        });
        Ok(())
    }

    /// `decay_curve.png`: the curve so far, against the rescale count.
    fn plot_decay_curve(&self) -> Result<()> {
        let points = &self.state.decay_curve;
        let x: Vec<f64> = (1..=points.len()).map(|i| i as f64).collect();
        let series = |name: &str, color: [u8; 3], y: Vec<f64>| LineSeries {
            name: name.into(),
            color,
            x: x.clone(),
            y,
        };
        let img = line_plot(
            &[
                series(
                    "student (decayed by distillation)",
                    [230, 120, 20],
                    points.iter().map(|p| p.student_top1).collect(),
                ),
                series(
                    "teacher, biases set to the scale",
                    [40, 100, 200],
                    points.iter().map(|p| p.teacher_scaled_top1).collect(),
                ),
                series(
                    "bias scale",
                    [150, 150, 150],
                    points.iter().map(|p| p.scale).collect(),
                ),
            ],
            false,
            "Bias decay: validation top-1 at each rescale",
            "rescale",
            "top-1 / bias scale",
        )?;
        save_png(&img, &self.run_dir.join("decay_curve.png"))?;
        Ok(())
    }

    /// TensorBoard scalars of a step and the progress bar's line.
    fn log(&mut self, st: &mut StageRun, out: &Stepped) -> Result<()> {
        let g = self.state.global_step as i64;
        self.tb.add_scalar("train/loss", out.loss as f32, g)?;
        self.tb
            .add_scalar("train/grad_norm", out.grad_norm as f32, g)?;
        self.tb.add_scalar("train/lr", st.adam.lr as f32, g)?;
        self.tb
            .add_scalar("train/bias_scale", self.state.bias_scale as f32, g)?;
        if out.agreement.is_finite() {
            self.tb
                .add_scalar("train/teacher_agreement", out.agreement as f32, g)?;
        }
        let dt = st.window.elapsed().as_secs_f64();
        if dt > 2.0 {
            st.ips = st.window_images as f64 / dt;
            self.tb
                .add_scalar("train/images_per_second", st.ips as f32, g)?;
            st.window = Instant::now();
            st.window_images = 0;
        }
        st.bar.set_position(self.state.stage_step as u64);
        st.bar.set_message(format!(
            "loss {:.4}{} scale {:.3e} {:.0} img/s [{}/{} total]",
            out.loss,
            if out.agreement.is_finite() {
                format!(" agree {:.2}", out.agreement)
            } else {
                String::new()
            },
            self.state.bias_scale,
            st.ips,
            self.state.global_step,
            self.total_steps
        ));
        Ok(())
    }

    /// Validation top-1, the probe image's attribution panel and the bias histograms.
    fn evaluate(&mut self, st: &StageRun) -> Result<()> {
        let g = self.state.global_step as i64;
        let top1 = evaluate_top1(
            self.model.as_ref(),
            &self.data.val,
            self.recipe.data.val_limit,
            &self.device,
        )?;
        self.tb.add_scalar("eval/top1", top1 as f32, g)?;
        self.last_eval = Some((self.state.global_step, top1));
        log_probe_panel(
            &mut self.tb,
            self.model.as_ref(),
            &self.data.val,
            &self.device,
            g,
        )?;
        for (kind, _, _) in st.biases.count_by_kind() {
            let values: Vec<f32> = st
                .biases
                .iter()
                .filter(|h| h.kind == kind)
                .flat_map(|h| {
                    h.read()
                        .flatten_all()
                        .and_then(|t| t.to_vec1::<f32>())
                        .unwrap_or_default()
                })
                .collect();
            self.tb.add_histogram(
                &format!("bias/{}", kind.label().replace(' ', "_")),
                &values,
                g,
            )?;
        }
        Ok(())
    }

    /// `step-XXXXXX.safetensors`: model, optimiser and progress.
    fn checkpoint(&mut self, st: &StageRun) -> Result<()> {
        self.state.seconds = self.base_seconds + self.started.elapsed().as_secs_f64();
        let path = self
            .run_dir
            .join(format!("step-{:06}.safetensors", self.state.global_step));
        save_checkpoint(
            &path,
            self.model.as_ref(),
            Some(&st.adam),
            &self.state,
            &self.provenance,
        )
    }

    /// The stage's closing evaluation: a train stage's model becomes the teacher; a decay
    /// stage's is the student, compared with its teacher's biases set to zero outright.
    fn end_stage(&mut self, st: StageRun) -> Result<()> {
        let si = st.si;
        st.bar.finish_and_clear();
        if st.loader.skipped() > 0 {
            eprintln!(
                "stage {si}: skipped {} unreadable images",
                st.loader.skipped()
            );
        }
        if st.stage.kind == StageKind::Decay && st.adam.is_averaging() {
            // `ema`: the student is the average of its zero phase; its last weights are
            // reported beside it, so that the average's effect is on record. The stage's
            // last step evaluated them, unless a resume began after it.
            self.last_weights_top1 = Some(match self.last_eval {
                Some((step, top1)) if step == self.state.global_step => top1,
                _ => evaluate_top1(
                    self.model.as_ref(),
                    &self.data.val,
                    self.recipe.data.val_limit,
                    &self.device,
                )?,
            });
            st.adam.assign_average()?;
        }
        let predicted = predict(
            self.model.as_ref(),
            &self.data.val,
            self.recipe.data.val_limit,
            &self.device,
        )?;
        let top1 = predicted.top1();
        match st.stage.kind {
            StageKind::Train => {
                self.teacher_top1 = top1;
                let path = self.run_dir.join(format!("stage{si}-trained.safetensors"));
                save_checkpoint(
                    &path,
                    self.model.as_ref(),
                    None,
                    &self.state,
                    &self.provenance,
                )?;
                self.teacher_ckpt = Some(path);
            }
            StageKind::Decay => {
                self.student_top1 = top1;
                if let Some(teacher) = &st.teacher_predictions {
                    let agreement = predicted.agreement(teacher)?;
                    self.agreement = Some(agreement);
                    self.tb.add_scalar(
                        "eval/teacher_agreement",
                        agreement as f32,
                        self.state.global_step as i64,
                    )?;
                }
                if let Some(t) = &st.teacher {
                    let set = t.bias_set();
                    set.zero()?;
                    self.brute_force = evaluate_top1(
                        t.as_ref(),
                        &self.data.val,
                        self.recipe.data.val_limit,
                        &self.device,
                    )?;
                }
                if st.curve_teacher.is_some() && !self.state.decay_curve.is_empty() {
                    self.plot_decay_curve()?;
                }
            }
        }
        eprintln!(
            "stage {si} ({:?}) done: top-1 {:.2}%",
            st.stage.kind,
            100.0 * top1
        );
        // The rest is reset as the next stage begins: the final checkpoint keeps this
        // stage's bias scale.
        self.state.stage = si + 1;
        self.state.stage_step = 0;
        self.state.data_position = Some(0);
        Ok(())
    }

    /// `final.safetensors` and `summary.json`.
    fn finish(mut self) -> Result<Summary> {
        if self.student_top1.is_nan() {
            self.student_top1 = evaluate_top1(
                self.model.as_ref(),
                &self.data.val,
                self.recipe.data.val_limit,
                &self.device,
            )?;
        }
        self.state.seconds = self.base_seconds + self.started.elapsed().as_secs_f64();
        let final_path = self.run_dir.join("final.safetensors");
        save_checkpoint(
            &final_path,
            self.model.as_ref(),
            None,
            &self.state,
            &self.provenance,
        )?;
        let biases = self.model.bias_set();
        let summary = Summary {
            recipe: self.recipe.name.clone(),
            run_dir: self.run_dir.clone(),
            arch: self.model.name(),
            teacher_top1: self.teacher_top1,
            student_top1: self.student_top1,
            brute_force_zero_top1: self.brute_force,
            retention: self.student_top1 / self.teacher_top1,
            agreement: self.agreement,
            student_top1_last_weights: self.last_weights_top1,
            teacher_checkpoint: self.teacher_ckpt.clone(),
            final_checkpoint: final_path,
            tensorboard_dir: self.tb_dir.clone(),
            steps: self.state.global_step,
            seconds: self.state.seconds,
            bias_parameters: biases.numel(),
            final_max_abs_bias: biases.max_abs()?,
            completed: true,
            skipped_non_finite: self.state.skipped_non_finite_total,
            decay_curve: self.state.decay_curve.clone(),
        };
        write_atomic(
            &self.run_dir.join("summary.json"),
            serde_json::to_string_pretty(&summary)
                .unwrap_or_default()
                .as_bytes(),
        )?;
        Ok(summary)
    }
}

/// From the last rescale on: biases no longer trained, and with `ema` the zero phase's
/// average begun, so that it holds no bias.
fn hold_at_zero(adam: &mut optim::Adam, bias_names: &[String]) -> Result<()> {
    adam.freeze(bias_names);
    adam.start_averaging()
}

/// `anchor`: the teacher's value of every weight and γ of the student (biases, β and
/// the running statistics are not pulled).
fn anchor_values(student: &dyn Classifier, teacher: &dyn Classifier) -> HashMap<String, Tensor> {
    let teacher = teacher.params();
    student
        .params()
        .iter()
        .filter(|p| matches!(p.kind, ParamKind::Weight | ParamKind::BnGamma))
        .filter_map(|p| {
            let t = teacher.get(&p.name)?;
            Some((p.name.clone(), t.var.as_tensor().detach()))
        })
        .collect()
}
