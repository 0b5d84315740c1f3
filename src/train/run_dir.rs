//! The run directory on disk: where a run goes, whether it may be (re)used, which
//! checkpoint a resumed run continues from, and how checkpoints are written.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Device;

use super::optim;
use super::recipe::{self, Recipe};
use super::state::TrainState;
use crate::checkpoint;
use crate::error::{Error, Result};
use crate::models::Classifier;

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
pub(super) fn step_checkpoints(dir: &Path) -> Vec<PathBuf> {
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
pub(super) fn load_resume_checkpoint(
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
pub(super) fn remove_orphaned_temporaries(run_dir: &Path) {
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
pub(super) fn check_run_dir(dir: &Path, recipe: &Recipe, resume: bool) -> Result<()> {
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
    crate::paths::check_output_dir(
        "--run-dir",
        dir,
        &["safetensors", "toml", "json", "png"],
        &inputs,
    )
}

/// `--resume` continues the run's own recipe: a different one (other than by `--force`)
/// is refused, naming the keys that differ.
pub(super) fn check_same_recipe(run_dir: &Path, recipe: &Recipe, force: bool) -> Result<()> {
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

pub(super) fn default_run_dir(name: &str, resume: bool) -> Result<PathBuf> {
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
pub(super) fn save_checkpoint(
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
