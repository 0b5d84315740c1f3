//! The bias-decay trainer: recipes with `train` stages (supervised, for teachers) and
//! `decay` stages (distillation from the frozen original while all bias handles are
//! rescaled to zero on a schedule, then held at zero).

pub mod loss;
pub mod optim;
pub mod recipe;
pub mod schedule;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::bias::BiasSet;
use crate::checkpoint;
use crate::data::{Dataset, ImageFolder, Loader, Synthetic};
use crate::error::{write_atomic, Error, Result};
use crate::models::{self, Classifier, Ctx, ParamKind};
use crate::report::tensorboard::EventWriter;
pub use recipe::{Recipe, Schedule, Stage, StageKind};

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

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    pub recipe: String,
    pub run_dir: PathBuf,
    pub arch: String,
    pub teacher_top1: f64,
    pub student_top1: f64,
    pub brute_force_zero_top1: f64,
    pub retention: f64,
    pub teacher_checkpoint: Option<PathBuf>,
    pub final_checkpoint: PathBuf,
    pub tensorboard_dir: PathBuf,
    pub steps: usize,
    pub seconds: f64,
    pub bias_parameters: usize,
    pub final_max_abs_bias: f32,
    pub completed: bool,
    /// Batches skipped for a non-finite loss or gradient (`skip_non_finite`), all stages.
    #[serde(default)]
    pub skipped_non_finite: usize,
}

/// `summary.json` of a run stopped by a non-finite loss, gradient, weight or result: no
/// accuracy of the diverged model is reported.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IncompleteRun {
    pub recipe: String,
    pub run_dir: PathBuf,
    pub completed: bool,
    pub reason: String,
    pub stage: usize,
    pub stage_step: usize,
    pub global_step: usize,
    /// The newest checkpoint on disk (all checkpoints hold finite values only).
    pub last_good_checkpoint: Option<PathBuf>,
    /// Teacher top-1 measured before the failure, if any.
    pub teacher_top1: Option<f64>,
    pub skipped_non_finite: usize,
}

/// Training progress stored in every checkpoint's metadata.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    pub stage: usize,
    /// Steps done within the stage.
    pub stage_step: usize,
    /// Batch positions of the stage's data stream consumed (epoch × batches per epoch +
    /// batch index), counting batches left out because none of their images decoded, so
    /// that a resumed run continues with the same batch as an uninterrupted one.
    #[serde(default)]
    pub data_position: Option<usize>,
    pub global_step: usize,
    /// Rescales applied so far in a decay stage.
    pub rescales_done: usize,
    pub bias_scale: f64,
    pub adam_t: u64,
    pub seconds: f64,
    /// Times the first stage re-initialised the model after a chance plateau.
    #[serde(default)]
    pub restarts: usize,
    /// Sum of the training losses so far inside the stage's plateau window.
    #[serde(default)]
    pub plateau_loss: f64,
    /// Batches of this stage skipped for a non-finite loss or gradient.
    #[serde(default)]
    pub skipped_non_finite: usize,
    /// The same over all stages.
    #[serde(default)]
    pub skipped_non_finite_total: usize,
}

impl TrainState {
    /// Moves to the start of stage `stage`: its step count, data stream, rescales, bias
    /// scale and optimiser (fresh Adam moments need a fresh bias correction) start over.
    fn begin_stage(&mut self, stage: usize) {
        self.stage = stage;
        self.stage_step = 0;
        self.data_position = Some(0);
        self.rescales_done = 0;
        self.bias_scale = 1.0;
        self.adam_t = 0;
        self.plateau_loss = 0.0;
        self.skipped_non_finite = 0;
    }
}

struct Data {
    train: Arc<dyn Dataset>,
    val: Arc<dyn Dataset>,
}

fn open_data(r: &Recipe) -> Result<Data> {
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
            let (train, val) = (
                ImageFolder::open(train, d.size as u32)?,
                ImageFolder::open(val, d.size as u32)?,
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

fn parse_device(spec: &str, precision: &str) -> Result<Device> {
    let dev =
        crate::models::parse_device(spec).map_err(|e| Error::recipe("device", e.to_string()))?;
    let p = crate::device::Precision::parse(precision)
        .map_err(|e| Error::recipe("precision", e.to_string()))?;
    crate::device::set_precision(p, &dev);
    Ok(dev)
}

/// Seed of a new model's initialisation: the recipe's, then another for each restart.
fn init_seed(seed: u64, restarts: usize) -> u64 {
    if restarts == 0 {
        seed
    } else {
        crate::data::mix_seed(seed, restarts as u64)
    }
}

fn build_model(
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

/// Latest `step-XXXXXX.safetensors` in a run directory.
pub fn latest_checkpoint(dir: &Path) -> Option<PathBuf> {
    let mut best: Option<(usize, PathBuf)> = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(step) = name
            .strip_prefix("step-")
            .and_then(|s| s.strip_suffix(".safetensors"))
            .and_then(|s| s.parse::<usize>().ok())
        {
            if best.as_ref().map(|(b, _)| step > *b).unwrap_or(true) {
                best = Some((step, e.path()));
            }
        }
    }
    best.map(|(_, p)| p)
}

/// `step-XXXXXX.safetensors` files of a run directory, newest first.
fn step_checkpoints(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<(usize, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name
                .strip_prefix("step-")?
                .strip_suffix(".safetensors")?
                .parse::<usize>()
                .ok()?;
            Some((step, e.path()))
        })
        .collect();
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    found.into_iter().map(|(_, p)| p).collect()
}

/// The newest checkpoint of a run that loads, passes its checksum and holds a training
/// state; damaged ones are named and the one before is taken. None when there is no
/// checkpoint; an error when there are some but none is usable.
fn load_resume_checkpoint(
    run_dir: &Path,
    device: &Device,
) -> Result<Option<(PathBuf, checkpoint::Checkpoint, TrainState)>> {
    let candidates = step_checkpoints(run_dir);
    let mut damaged: Vec<String> = Vec::new();
    for ck in &candidates {
        let loaded = checkpoint::load(ck, device).and_then(|c| {
            let s = c
                .metadata
                .get("train_state")
                .and_then(|s| serde_json::from_str::<TrainState>(s).ok())
                .ok_or_else(|| Error::Checkpoint {
                    path: ck.clone(),
                    message: "no train_state metadata (not a zerobias training checkpoint)".into(),
                })?;
            Ok((c, s))
        });
        match loaded {
            Ok((c, s)) => {
                if !damaged.is_empty() {
                    eprintln!(
                        "falling back to the previous good checkpoint {} (global step {})",
                        ck.display(),
                        s.global_step
                    );
                }
                return Ok(Some((ck.clone(), c, s)));
            }
            Err(e) => {
                eprintln!("warning: cannot resume from {}: {e}", ck.display());
                damaged.push(e.to_string());
            }
        }
    }
    match candidates.first() {
        None => Ok(None),
        Some(newest) => Err(Error::Checkpoint {
            path: newest.clone(),
            message: format!(
                "no usable checkpoint to resume from in {}: {}",
                run_dir.display(),
                damaged.join("; ")
            ),
        }),
    }
}

/// Temporary files of atomic writes (`.NAME.tmp-PID`) left by a run that was killed.
fn remove_orphaned_temporaries(run_dir: &Path) {
    for e in std::fs::read_dir(run_dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let orphan = name.starts_with('.')
            && name
                .rsplit_once(".tmp-")
                .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
        if orphan && e.path().is_file() && std::fs::remove_file(e.path()).is_ok() {
            eprintln!("removed the orphaned temporary file {}", e.path().display());
        }
    }
}

/// A run directory must be new, empty, or a zerobias run continued with `--resume`; and
/// none of the recipe's inputs may be where the run writes.
fn check_run_dir(dir: &Path, recipe: &Recipe, resume: bool) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::file(
            dir,
            "is a file; expected a run directory (new, empty, or a zerobias run to continue with --resume)",
        ));
    }
    let mut entries: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    let is_run = entries.iter().any(|n| n == "recipe.toml") || !step_checkpoints(dir).is_empty();
    if !entries.is_empty() {
        if is_run && !resume {
            return Err(Error::input(format!(
                "run directory {} already holds a zerobias run (recipe.toml, checkpoints): pass --resume to continue it, or another --run-dir",
                dir.display()
            )));
        }
        if !is_run {
            let shown: Vec<&str> = entries.iter().take(5).map(|s| s.as_str()).collect();
            return Err(Error::input(format!(
                "run directory {} is not empty and holds no zerobias run (no recipe.toml; it holds {}{}): a run directory must be new, empty, or a zerobias run continued with --resume; choose another --run-dir",
                dir.display(),
                shown.join(", "),
                if entries.len() > 5 { ", ..." } else { "" }
            )));
        }
    }
    let source = PathBuf::from(&recipe.model.source);
    let mut inputs = Vec::new();
    if recipe.model.source != "new" {
        inputs.push(crate::paths::Input::new("model.source", &source));
    }
    if recipe.data.kind == "imagefolder" {
        if let Some(t) = &recipe.data.train {
            inputs.push(crate::paths::Input::new("data.train", t));
        }
        if let Some(v) = &recipe.data.val {
            inputs.push(crate::paths::Input::new("data.val", v));
        }
    }
    crate::paths::check_output_dir("--run-dir", dir, &["safetensors", "toml", "json"], &inputs)
}

/// `--resume` continues the run's own recipe: a different one (other than by `--force`)
/// is refused, naming the keys that differ.
fn check_same_recipe(run_dir: &Path, recipe: &Recipe, force: bool) -> Result<()> {
    let path = run_dir.join("recipe.toml");
    if !path.exists() {
        return Ok(());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let stored = match Recipe::parse(&text, &[], &path.display().to_string()) {
        Ok(r) => r,
        Err(e) if force => {
            eprintln!("warning: --force: the run's {} is not a valid recipe ({e}); continuing with the recipe given", path.display());
            return Ok(());
        }
        Err(e) => {
            return Err(Error::file(
                &path,
                format!("the run's recipe cannot be read ({e}); pass --force to resume with the recipe given"),
            ))
        }
    };
    let diffs = recipe::differences(&stored, recipe);
    if diffs.is_empty() {
        return Ok(());
    }
    let list = diffs.join("; ");
    if force {
        eprintln!(
            "--force: resuming with a recipe that differs from {}: {list}",
            path.display()
        );
        return Ok(());
    }
    Err(Error::input(format!(
        "--resume: the recipe differs from the run's {} in {list}. Resume with the run's recipe, or pass --force to continue with this one",
        path.display()
    )))
}

fn default_run_dir(name: &str, resume: bool) -> Result<PathBuf> {
    let root = PathBuf::from("checkpoints");
    if resume {
        let mut runs: Vec<PathBuf> = std::fs::read_dir(&root)
            .map_err(|e| Error::io(&root, e))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.is_dir()
                    && p.file_name()
                        .map(|n| n.to_string_lossy().starts_with(&format!("{name}-")))
                        .unwrap_or(false)
            })
            .collect();
        runs.sort();
        return runs.pop().ok_or_else(|| {
            Error::input(format!(
                "--resume: no earlier run of '{name}' under {}",
                root.display()
            ))
        });
    }
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Ok(root.join(format!("{name}-{secs}")))
}

/// Model + optimiser + progress as one safetensors file (atomic).
fn save_checkpoint(
    path: &Path,
    model: &dyn Classifier,
    adam: Option<&optim::Adam>,
    state: &TrainState,
    provenance: &str,
) -> Result<()> {
    let mut tensors = model.params().named_tensors();
    if let Some(a) = adam {
        tensors.extend(a.state());
    }
    // A checkpoint is a promise of a usable state: never one with NaN or inf in it.
    for (name, t) in &tensors {
        if !optim::all_finite(t)? {
            return Err(Error::Diverged(format!(
                "tensor '{name}' holds non-finite values; {} was not written",
                path.display()
            )));
        }
    }
    let mut meta = HashMap::new();
    meta.insert(checkpoint::FORMAT_KEY.to_string(), "1".to_string());
    meta.insert("arch".into(), model.name());
    meta.insert("bias_scale".into(), state.bias_scale.to_string());
    meta.insert("provenance".into(), provenance.to_string());
    meta.insert(
        "train_state".into(),
        serde_json::to_string(state).unwrap_or_default(),
    );
    checkpoint::save(path, &tensors, meta)
}

/// Fraction of images whose argmax is the label (and agreement with `reference` if given).
pub fn evaluate_top1(
    model: &dyn Classifier,
    data: &Arc<dyn Dataset>,
    limit: usize,
    device: &Device,
) -> Result<f64> {
    let loader = Loader::new(data.clone(), 64, false, 0, 2);
    let mut correct = 0usize;
    let mut total = 0usize;
    for batch in loader.epoch(0, 0) {
        let x = Tensor::from_vec(
            batch.pixels,
            (batch.n, 3, batch.height, batch.width),
            device,
        )?;
        let logits = model.forward(&x)?;
        // The argmax of a NaN row is meaningless: no accuracy from such logits.
        if !optim::all_finite(&logits)? {
            return Err(Error::Diverged(format!(
                "non-finite logits for validation images {}..{}",
                total,
                total + batch.n
            )));
        }
        let pred: Vec<u32> = logits.argmax(1)?.to_vec1()?;
        for (p, l) in pred.iter().zip(&batch.labels) {
            correct += (p == l) as usize;
        }
        total += batch.n;
        if limit > 0 && total >= limit {
            break;
        }
    }
    if total == 0 {
        return Err(Error::input("validation set is empty"));
    }
    Ok(correct as f64 / total as f64)
}

fn new_optimiser(model: &dyn Classifier, stage: &Stage) -> Result<optim::Adam> {
    let mut adam = optim::Adam::new(
        trainable(model, stage.kind),
        stage.lr,
        stage.beta1,
        stage.beta2,
        stage.weight_decay,
    )?;
    adam.clip_grad_norm = stage.clip_grad_norm;
    Ok(adam)
}

fn trainable(model: &dyn Classifier, kind: StageKind) -> Vec<(String, candle_core::Var)> {
    model
        .params()
        .iter()
        .filter(|p| match kind {
            StageKind::Train => matches!(
                p.kind,
                ParamKind::Weight | ParamKind::Bias | ParamKind::BnGamma | ParamKind::BnBeta
            ),
            // γ and the running statistics stay fixed; β and biases are trained and rescaled.
            StageKind::Decay => matches!(
                p.kind,
                ParamKind::Weight | ParamKind::Bias | ParamKind::BnBeta
            ),
        })
        .map(|p| (p.name.clone(), p.var.clone()))
        .collect()
}

/// Run a recipe end to end.
pub fn run(recipe_path: &Path, opts: &RunOptions) -> Result<Summary> {
    let mut progress = Progress::default();
    let result = run_inner(recipe_path, opts, &mut progress);
    match result {
        Err(Error::Diverged(reason) | Error::NonFinite(reason)) => {
            Err(stop_non_finite(&progress, reason))
        }
        other => other,
    }
}

/// What a stopped run's summary needs, kept up to date by the training loop.
#[derive(Default)]
struct Progress {
    recipe: String,
    run_dir: Option<PathBuf>,
    state: Option<TrainState>,
    teacher_top1: Option<f64>,
}

/// A non-finite value stopped the run: record it in summary.json (completed = false) and
/// say where the last good checkpoint is.
fn stop_non_finite(p: &Progress, reason: String) -> Error {
    let Some(run_dir) = &p.run_dir else {
        return Error::Diverged(reason);
    };
    let state = p.state.clone().unwrap_or_else(TrainState::start);
    let last = latest_checkpoint(run_dir);
    let incomplete = IncompleteRun {
        recipe: p.recipe.clone(),
        run_dir: run_dir.clone(),
        completed: false,
        reason: reason.clone(),
        stage: state.stage,
        stage_step: state.stage_step,
        global_step: state.global_step,
        last_good_checkpoint: last.clone(),
        teacher_top1: p.teacher_top1.filter(|v| v.is_finite()),
        skipped_non_finite: state.skipped_non_finite_total,
    };
    let summary_path = run_dir.join("summary.json");
    let written = write_atomic(
        &summary_path,
        serde_json::to_string_pretty(&incomplete)
            .unwrap_or_default()
            .as_bytes(),
    );
    let si = state.stage;
    Error::Diverged(format!(
        "{reason}; last good checkpoint: {}; {}. Lower stage[{si}].lr and continue with --resume --force --set stage.{si}.lr=..., or allow skipped batches with stage[{si}].skip_non_finite",
        last.map(|l| l.display().to_string())
            .unwrap_or_else(|| "none yet".into()),
        match written {
            Ok(()) => format!("{} records the run as incomplete", summary_path.display()),
            Err(e) => format!("summary.json could not be written ({e})"),
        }
    ))
}

impl TrainState {
    fn start() -> Self {
        TrainState {
            stage: 0,
            stage_step: 0,
            data_position: Some(0),
            global_step: 0,
            rescales_done: 0,
            bias_scale: 1.0,
            adam_t: 0,
            seconds: 0.0,
            restarts: 0,
            plateau_loss: 0.0,
            skipped_non_finite: 0,
            skipped_non_finite_total: 0,
        }
    }
}

fn run_inner(recipe_path: &Path, opts: &RunOptions, progress: &mut Progress) -> Result<Summary> {
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
    // Everything that can fail on the user's input is done before the run directory is
    // created, so that a refused run leaves nothing behind.
    let device = parse_device(&recipe.device, &recipe.precision)?;
    let data = open_data(&recipe)?;
    let mut model = build_model(&recipe, data.train.num_classes(), 0, &device)?;
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
    let mut tb = EventWriter::create(&tb_dir)?;

    let mut state = TrainState::start();
    let mut resume_extra: HashMap<String, Tensor> = HashMap::new();
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
    let started = Instant::now();
    let base_seconds = state.seconds;
    let mut teacher_top1 = f64::NAN;
    let mut teacher_ckpt: Option<PathBuf> = None;
    let mut student_top1 = f64::NAN;
    let mut brute_force = f64::NAN;
    let total_steps: usize = recipe.stages.iter().map(|s| s.total_steps()).sum();
    let provenance = format!("recipe {} ({})", recipe.name, recipe_path.display());

    for (si, stage) in recipe.stages.iter().enumerate() {
        if si < state.stage {
            continue;
        }
        // A stage with no step done starts afresh, also when a run is resumed from the
        // checkpoint written as the previous stage ended (its Adam state is that stage's).
        if si > state.stage || state.stage_step == 0 {
            state.begin_stage(si);
            resume_extra.clear();
        }
        // The teacher of a decay stage is the model as it entered the stage, kept on disk
        // so that a resumed run distils from the same network.
        let teacher: Option<Box<dyn Classifier>> = if stage.kind == StageKind::Decay {
            let path = run_dir.join(format!("teacher-stage{si}.safetensors"));
            if !path.exists() {
                save_checkpoint(
                    &path,
                    model.as_ref(),
                    None,
                    &state,
                    &format!("{provenance}; teacher of stage {si}"),
                )?;
            }
            teacher_ckpt = Some(path.clone());
            Some(models::load(&path, &device)?)
        } else {
            None
        };
        if let Some(t) = &teacher {
            teacher_top1 = evaluate_top1(t.as_ref(), &data.val, recipe.data.val_limit, &device)?;
            progress.teacher_top1 = Some(teacher_top1);
            tb.add_scalar(
                "eval/teacher_top1",
                teacher_top1 as f32,
                state.global_step as i64,
            )?;
        }
        let mut adam = new_optimiser(model.as_ref(), stage)?;
        adam.load_state(&resume_extra, state.adam_t)?;
        let mut biases: BiasSet = model.bias_set();
        let bias_names: Vec<String> = biases.iter().map(|h| h.param.clone()).collect();
        if stage.kind == StageKind::Decay && state.rescales_done >= stage.rescales {
            adam.freeze(&bias_names);
        }
        let loader = Loader::new(
            data.train.clone(),
            stage.batch_size,
            true,
            recipe.seed.wrapping_add(si as u64 * 7919),
            recipe.data.prefetch,
        );
        let per_epoch = loader.batches_per_epoch().max(1);
        if loader.batches_per_epoch() == 0 {
            return Err(Error::input(format!(
                "stage {si}: batch_size {} is larger than the training set ({} images)",
                stage.batch_size,
                data.train.len()
            )));
        }
        let total = stage.total_steps();
        let bar = if opts.quiet {
            indicatif::ProgressBar::hidden()
        } else {
            crate::report::progress::bar(total as u64, &format!("{:?}", stage.kind).to_lowercase())
        };
        bar.set_position(state.stage_step as u64);
        let mut window = Instant::now();
        let mut window_images = 0usize;
        let mut ips = 0.0;
        // Steps remain in this stage and within --stop-after.
        let steps_remain = |state: &TrainState| {
            state.stage_step < total && opts.stop_after.is_none_or(|l| state.global_step < l)
        };
        while state.stage_step < total {
            if let Some(limit) = opts.stop_after {
                if state.global_step >= limit {
                    bar.abandon();
                    return Err(Error::Training(format!(
                        "stopped after {limit} steps as requested"
                    )));
                }
            }
            // Checkpoints from before `data_position` existed: one batch per step.
            let position = state.data_position.unwrap_or(state.stage_step);
            let epoch = position / per_epoch;
            let in_epoch = position % per_epoch;
            let mut steps_this_epoch = 0;
            let mut restarted = false;
            for batch in loader.epoch(epoch as u64, in_epoch) {
                if !steps_remain(&state) {
                    break;
                }
                progress.state = Some(state.clone());
                let x = Tensor::from_vec(
                    batch.pixels,
                    (batch.n, 3, batch.height, batch.width),
                    &device,
                )?;
                let labels = Tensor::from_vec(batch.labels.clone(), batch.n, &device)?;
                let (loss, agreement) = match &teacher {
                    None => {
                        let train_bn = model.arch() == models::Arch::ResNet;
                        let logits = model.forward_ctx(&x, &mut Ctx::training(train_bn))?;
                        let loss = models::layers::cross_entropy(&logits, &labels)?;
                        (loss, f64::NAN)
                    }
                    Some(t) => {
                        let t_logits = t.forward(&x)?;
                        let s_logits = model.forward_ctx(&x, &mut Ctx::training(false))?;
                        let mut loss = loss::kd_loss(&s_logits, &t_logits, stage.temperature)?;
                        if stage.ce_weight > 0.0 {
                            loss = (loss
                                + (models::layers::cross_entropy(&s_logits, &labels)?
                                    * stage.ce_weight)?)?;
                        }
                        let a: Vec<u32> = s_logits.detach().argmax(1)?.to_vec1()?;
                        let b: Vec<u32> = t_logits.argmax(1)?.to_vec1()?;
                        let agree = a.iter().zip(&b).filter(|(p, q)| p == q).count() as f64
                            / a.len() as f64;
                        (loss, agree)
                    }
                };
                let loss_value = loss.to_scalar::<f32>()? as f64;
                // A non-finite loss or gradient leaves the model untouched: the batch may be
                // skipped. A non-finite weight from a finite gradient stops the run.
                let (grad_norm, bad, skippable) = if loss_value.is_finite() {
                    let grads = loss.backward()?;
                    adam.lr = stage.lr_at(state.stage_step);
                    let report = adam.step(&grads)?;
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
                    let at = format!(
                        "stage {si} ({:?}) step {} (global step {})",
                        stage.kind,
                        state.stage_step + 1,
                        state.global_step + 1
                    );
                    if skippable && state.skipped_non_finite < stage.skip_non_finite {
                        state.skipped_non_finite += 1;
                        state.skipped_non_finite_total += 1;
                        state.data_position = Some(epoch * per_epoch + batch.batch_index + 1);
                        steps_this_epoch += 1;
                        // eprintln, not bar.println: a hidden bar (no terminal) prints nothing.
                        bar.suspend(|| {
                            eprintln!(
                                "warning: {what} at {at}: batch skipped ({} of at most {} in stage {si})",
                                state.skipped_non_finite, stage.skip_non_finite
                            )
                        });
                        tb.add_scalar(
                            "train/skipped_non_finite",
                            state.skipped_non_finite_total as f32,
                            state.global_step as i64,
                        )?;
                        continue;
                    }
                    bar.abandon();
                    return Err(Error::Diverged(format!("{what} at {at}")));
                }
                state.stage_step += 1;
                state.data_position = Some(epoch * per_epoch + batch.batch_index + 1);
                state.global_step += 1;
                state.adam_t = adam.t;
                steps_this_epoch += 1;
                window_images += batch.n;

                if stage.restart_patience > 0 && state.stage_step <= stage.restart_patience {
                    if state.stage_step + recipe::PLATEAU_WINDOW > stage.restart_patience {
                        state.plateau_loss += loss_value;
                    }
                    let mean = state.plateau_loss / recipe::PLATEAU_WINDOW as f64;
                    let chance = (model.num_classes() as f64).ln();
                    if state.stage_step == stage.restart_patience
                        && mean > recipe::PLATEAU_FRACTION * chance
                    {
                        if state.restarts >= stage.max_restarts {
                            bar.abandon();
                            return Err(Error::Training(format!(
                                "stage {si}: the training loss stayed at chance level ({mean:.3}, ln {} = {chance:.3}) for {} steps after each of {} initialisations; try a lower stage[{si}].lr or longer stage[{si}].warmup_steps",
                                model.num_classes(),
                                stage.restart_patience,
                                state.restarts + 1
                            )));
                        }
                        state.restarts += 1;
                        // Through suspend: println prints nothing while the bar is hidden.
                        bar.suspend(|| eprintln!(
                            "stage {si}: mean loss {mean:.3} after {} steps is chance level (ln {} = {chance:.3}): re-initialising with seed {} (restart {} of at most {})",
                            stage.restart_patience,
                            model.num_classes(),
                            init_seed(recipe.seed, state.restarts),
                            state.restarts,
                            stage.max_restarts
                        ));
                        tb.add_scalar(
                            "train/restarts",
                            state.restarts as f32,
                            state.global_step as i64,
                        )?;
                        model = build_model(
                            &recipe,
                            data.train.num_classes(),
                            state.restarts,
                            &device,
                        )?;
                        adam = new_optimiser(model.as_ref(), stage)?;
                        biases = model.bias_set();
                        state.begin_stage(si);
                        restarted = true;
                        break;
                    }
                }

                let schedule = stage.schedule.unwrap_or(Schedule::Exponential);
                let decaying =
                    stage.kind == StageKind::Decay && state.rescales_done < stage.rescales;
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
                    if next > 0.0 {
                        biases.scale(next / prev)?;
                    }
                    state.rescales_done = state.stage_step / stage.rescale_every;
                    state.bias_scale = next;
                    if state.rescales_done == stage.rescales {
                        biases.zero()?;
                        adam.freeze(&bias_names);
                    }
                } else if decaying
                    && state.stage_step == (state.rescales_done + 1) * stage.rescale_every
                {
                    let k = state.rescales_done + 1;
                    biases.scale(schedule::step_factor(
                        schedule,
                        stage.factor,
                        k,
                        stage.rescales,
                    ))?;
                    state.rescales_done = k;
                    state.bias_scale =
                        schedule::scale_after(schedule, stage.factor, k, stage.rescales);
                    if k == stage.rescales {
                        biases.zero()?;
                        adam.freeze(&bias_names);
                    }
                }

                let g = state.global_step as i64;
                tb.add_scalar("train/loss", loss_value as f32, g)?;
                tb.add_scalar("train/grad_norm", grad_norm as f32, g)?;
                tb.add_scalar("train/lr", adam.lr as f32, g)?;
                tb.add_scalar("train/bias_scale", state.bias_scale as f32, g)?;
                if agreement.is_finite() {
                    tb.add_scalar("train/teacher_agreement", agreement as f32, g)?;
                }
                let dt = window.elapsed().as_secs_f64();
                if dt > 2.0 {
                    ips = window_images as f64 / dt;
                    tb.add_scalar("train/images_per_second", ips as f32, g)?;
                    window = Instant::now();
                    window_images = 0;
                }
                bar.set_position(state.stage_step as u64);
                bar.set_message(format!(
                    "loss {loss_value:.4}{} scale {:.3e} {ips:.0} img/s [{}/{} total]",
                    if agreement.is_finite() {
                        format!(" agree {:.2}", agreement)
                    } else {
                        String::new()
                    },
                    state.bias_scale,
                    state.global_step,
                    total_steps
                ));
                let last_step = state.stage_step == total;
                if state.stage_step.is_multiple_of(stage.eval_every) || last_step {
                    let top1 =
                        evaluate_top1(model.as_ref(), &data.val, recipe.data.val_limit, &device)?;
                    tb.add_scalar("eval/top1", top1 as f32, g)?;
                    log_probe_panel(&mut tb, model.as_ref(), &data.val, &device, g)?;
                    for (kind, _, _) in biases.count_by_kind() {
                        let values: Vec<f32> = biases
                            .iter()
                            .filter(|h| h.kind == kind)
                            .flat_map(|h| {
                                h.read()
                                    .flatten_all()
                                    .and_then(|t| t.to_vec1::<f32>())
                                    .unwrap_or_default()
                            })
                            .collect();
                        tb.add_histogram(
                            &format!("bias/{}", kind.label().replace(' ', "_")),
                            &values,
                            g,
                        )?;
                    }
                }
                if state.stage_step.is_multiple_of(stage.checkpoint_every) || last_step {
                    state.seconds = base_seconds + started.elapsed().as_secs_f64();
                    let path = run_dir.join(format!("step-{:06}.safetensors", state.global_step));
                    save_checkpoint(&path, model.as_ref(), Some(&adam), &state, &provenance)?;
                }
            }
            if restarted {
                continue;
            }
            if steps_remain(&state) {
                // The epoch ran out: the next one starts at its first batch.
                state.data_position = Some((epoch + 1) * per_epoch);
            }
            if steps_this_epoch == 0 && steps_remain(&state) {
                return Err(Error::Training(format!("stage {si}: the training data yielded no batch ({} images skipped as unreadable)", loader.skipped())));
            }
        }
        bar.finish_and_clear();
        if loader.skipped() > 0 {
            eprintln!("stage {si}: skipped {} unreadable images", loader.skipped());
        }
        let top1 = evaluate_top1(model.as_ref(), &data.val, recipe.data.val_limit, &device)?;
        match stage.kind {
            StageKind::Train => {
                teacher_top1 = top1;
                let path = run_dir.join(format!("stage{si}-trained.safetensors"));
                save_checkpoint(&path, model.as_ref(), None, &state, &provenance)?;
                teacher_ckpt = Some(path);
            }
            StageKind::Decay => {
                student_top1 = top1;
                if let Some(t) = &teacher {
                    let set = t.bias_set();
                    set.zero()?;
                    brute_force =
                        evaluate_top1(t.as_ref(), &data.val, recipe.data.val_limit, &device)?;
                }
            }
        }
        eprintln!(
            "stage {si} ({:?}) done: top-1 {:.2}%",
            stage.kind,
            100.0 * top1
        );
        // The rest is reset as the next stage begins: the final checkpoint keeps this
        // stage's bias scale.
        state.stage = si + 1;
        state.stage_step = 0;
        state.data_position = Some(0);
    }
    if student_top1.is_nan() {
        student_top1 = evaluate_top1(model.as_ref(), &data.val, recipe.data.val_limit, &device)?;
    }
    state.seconds = base_seconds + started.elapsed().as_secs_f64();
    let final_path = run_dir.join("final.safetensors");
    save_checkpoint(&final_path, model.as_ref(), None, &state, &provenance)?;
    let biases = model.bias_set();
    let summary = Summary {
        recipe: recipe.name.clone(),
        run_dir: run_dir.clone(),
        arch: model.name(),
        teacher_top1,
        student_top1,
        brute_force_zero_top1: brute_force,
        retention: student_top1 / teacher_top1,
        teacher_checkpoint: teacher_ckpt,
        final_checkpoint: final_path,
        tensorboard_dir: tb_dir,
        steps: state.global_step,
        seconds: state.seconds,
        bias_parameters: biases.numel(),
        final_max_abs_bias: biases.max_abs()?,
        completed: true,
        skipped_non_finite: state.skipped_non_finite_total,
    };
    write_atomic(
        &run_dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    let _ = &mut model;
    Ok(summary)
}

/// TensorBoard image: the attribution panel of a fixed probe image (validation image 0).
fn log_probe_panel(
    tb: &mut EventWriter,
    model: &dyn Classifier,
    val: &Arc<dyn Dataset>,
    device: &Device,
    step: i64,
) -> Result<()> {
    let (h, w) = val.image_size();
    let sample = val.get(0, false, &mut crate::data::Rng::new(0))?;
    let x = Tensor::from_vec(sample.pixels, (1, 3, h, w), device)?;
    let methods: Vec<Box<dyn crate::attribution::Method>> = vec![
        Box::new(crate::attribution::Activation),
        Box::new(crate::attribution::BiasAttribution),
    ];
    let att = crate::attribution::attribute(model, &x, &crate::taps::Target::Predicted, &methods)?;
    let img = crate::report::figures::layer_panel(
        model,
        &att,
        0,
        &format!("step {step}, class {}", att.target[0]),
    )?;
    tb.add_image_rgb(
        "attribution/probe",
        img.width(),
        img.height(),
        img.as_raw(),
        step,
    )?;
    Ok(())
}

impl Summary {
    /// The closing table of a run.
    pub fn table(&self) -> String {
        let pct = |v: f64| {
            if v.is_finite() {
                format!("{:.2}%", 100.0 * v)
            } else {
                "n/a".into()
            }
        };
        let mut s = String::new();
        s.push_str(&format!("\n  {} ({})\n", self.recipe, self.arch));
        s.push_str(&format!(
            "  {:<40} {}\n",
            "teacher top-1",
            pct(self.teacher_top1)
        ));
        s.push_str(&format!(
            "  {:<40} {}\n",
            "zero-bias student top-1 (decayed)",
            pct(self.student_top1)
        ));
        s.push_str(&format!(
            "  {:<40} {}\n",
            "teacher with biases set to zero",
            pct(self.brute_force_zero_top1)
        ));
        s.push_str(&format!(
            "  {:<40} {}\n",
            "retention (student / teacher)",
            pct(self.retention)
        ));
        s.push_str(&format!(
            "  {:<40} {} ({} values, max |b| = {:.1e})\n",
            "bias parameters", "all", self.bias_parameters, self.final_max_abs_bias
        ));
        s.push_str(&format!("  {:<40} {}\n", "steps", self.steps));
        s.push_str(&format!("  {:<40} {:.1} s\n", "wall time", self.seconds));
        if let Some(t) = &self.teacher_checkpoint {
            s.push_str(&format!("  {:<40} {}\n", "teacher checkpoint", t.display()));
        }
        s.push_str(&format!(
            "  {:<40} {}\n",
            "zero-bias checkpoint",
            self.final_checkpoint.display()
        ));
        s.push_str(&format!(
            "  {:<40} {}\n",
            "summary",
            self.run_dir.join("summary.json").display()
        ));
        s.push_str(&format!(
            "\n  view the run: tensorboard --logdir {}\n",
            self.tensorboard_dir.display()
        ));
        s
    }
}
