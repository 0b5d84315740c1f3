//! The raw-TOML side of recipes: every field's expected type, checked by its full path
//! (`stage.0.steps`) before serde sees it, and `--set key=value` overrides.

use crate::error::{Error, Result};

/// What a recipe field holds, for messages that say what was expected.
#[derive(Clone, Copy)]
pub(super) enum Expect {
    /// usize that validate() requires to be at least 1 (0 still passes the type check).
    PositiveInt,
    /// usize / u64 where 0 means "none" or "default".
    Count,
    Number,
    Text,
    Flag,
    OneOf(&'static [&'static str]),
}

/// (field, expected, required): every field of the recipe structs, so a wrong type is
/// reported with its full path (serde's message lacks array indices). A unit test keeps
/// these in step with the structs.
pub(super) type Fields = &'static [(&'static str, Expect, bool)];

pub(super) const TOP_FIELDS: Fields = &[
    ("name", Expect::Text, true),
    ("seed", Expect::Count, false),
    ("device", Expect::Text, false),
    (
        "precision",
        Expect::OneOf(&crate::device::Precision::NAMES),
        false,
    ),
];
pub(super) const MODEL_FIELDS: Fields = &[
    ("source", Expect::Text, true),
    ("arch", Expect::Text, false),
    ("width", Expect::PositiveInt, false),
    ("hidden", Expect::PositiveInt, false),
    ("classes", Expect::PositiveInt, false),
    ("revision", Expect::Text, false),
];
pub(super) const DATA_FIELDS: Fields = &[
    ("kind", Expect::Text, true),
    ("train", Expect::Text, false),
    ("val", Expect::Text, false),
    ("size", Expect::PositiveInt, false),
    ("resize", Expect::PositiveInt, false),
    (
        "augment",
        Expect::OneOf(&["imagenet", "flip", "none"]),
        false,
    ),
    ("classes", Expect::PositiveInt, false),
    ("train_len", Expect::PositiveInt, false),
    ("val_len", Expect::PositiveInt, false),
    ("val_limit", Expect::Count, false),
    ("prefetch", Expect::Count, false),
];
pub(super) const STAGE_FIELDS: Fields = &[
    ("kind", Expect::OneOf(&["train", "decay"]), true),
    ("lr", Expect::Number, true),
    ("batch_size", Expect::PositiveInt, true),
    ("steps", Expect::PositiveInt, false),
    ("eval_every", Expect::PositiveInt, false),
    ("checkpoint_every", Expect::PositiveInt, false),
    ("schedule", Expect::OneOf(&["exponential", "linear"]), false),
    ("rescales", Expect::PositiveInt, false),
    ("rescale_every", Expect::PositiveInt, false),
    ("factor", Expect::Number, false),
    ("zero_steps", Expect::Count, false),
    ("temperature", Expect::Number, false),
    ("ce_weight", Expect::Number, false),
    ("ce_target", Expect::OneOf(&["labels", "teacher"]), false),
    ("beta1", Expect::Number, false),
    ("beta2", Expect::Number, false),
    ("weight_decay", Expect::Number, false),
    ("clip_grad_norm", Expect::Number, false),
    ("warmup_steps", Expect::Count, false),
    ("cosine", Expect::Flag, false),
    ("zero_phase_cosine", Expect::Flag, false),
    ("restart_patience", Expect::Count, false),
    ("max_restarts", Expect::Count, false),
    ("smooth", Expect::Flag, false),
    ("train_gamma", Expect::Flag, false),
    ("feature_weight", Expect::Number, false),
    ("compensate", Expect::Flag, false),
    ("freeze_biases", Expect::Flag, false),
    ("mixup", Expect::Flag, false),
    ("anchor", Expect::Number, false),
    ("standardize_logits", Expect::Flag, false),
    ("norm_free_logits", Expect::Flag, false),
    ("ema", Expect::Number, false),
    (
        "bn_variance",
        Expect::OneOf(&["fixed", "second_moment", "recalibrate"]),
        false,
    ),
    ("skip_non_finite", Expect::Count, false),
    ("decay_curve", Expect::Flag, false),
    ("decay_curve_images", Expect::Count, false),
];

/// A value as the user wrote it (TOML syntax), or what kind of thing it is.
fn describe(v: &toml::Value) -> String {
    match v {
        toml::Value::Table(_) => "a table".into(),
        toml::Value::Array(_) => "an array".into(),
        other => other.to_string(),
    }
}

fn expected(e: Expect) -> String {
    match e {
        Expect::PositiveInt => "a positive integer".into(),
        Expect::Count => "a non-negative integer".into(),
        Expect::Number => "a number".into(),
        Expect::Text => "a string (in quotes)".into(),
        Expect::Flag => "true or false".into(),
        Expect::OneOf(choices) => choices
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(" or "),
    }
}

fn fits(v: &toml::Value, e: Expect) -> bool {
    use toml::Value as V;
    match (e, v) {
        (Expect::PositiveInt | Expect::Count, V::Integer(i)) => *i >= 0,
        (Expect::Number, V::Integer(_) | V::Float(_)) => true,
        (Expect::Text, V::String(_)) => true,
        (Expect::Flag, V::Boolean(_)) => true,
        (Expect::OneOf(choices), V::String(s)) => choices.contains(&s.as_str()),
        _ => false,
    }
}

/// Check one table's fields against `fields` (`path` names the table, "" for the root).
fn check_fields(table: &toml::Table, path: &str, fields: Fields, sections: &[&str]) -> Result<()> {
    let full = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    for (key, value) in table {
        if sections.contains(&key.as_str()) {
            continue;
        }
        match fields.iter().find(|(name, _, _)| name == key) {
            Some(&(_, e, _)) if !fits(value, e) => {
                return Err(Error::recipe(
                    full(key),
                    format!("expected {}, got {}", expected(e), describe(value)),
                ))
            }
            Some(_) => {}
            None => {
                let mut known: Vec<&str> = fields.iter().map(|(n, _, _)| *n).collect();
                known.extend(sections);
                return Err(Error::recipe(
                    full(key),
                    format!("unknown field (expected one of: {})", known.join(", ")),
                ));
            }
        }
    }
    for &(name, e, required) in fields {
        if required && !table.contains_key(name) {
            return Err(Error::recipe(
                full(name),
                format!("missing (expected {})", expected(e)),
            ));
        }
    }
    Ok(())
}

/// Every field's type, named by its full path (`stage.0.steps`), before serde sees it.
pub(super) fn check_types(root: &toml::Value) -> Result<()> {
    let root = root
        .as_table()
        .ok_or_else(|| Error::recipe("recipe", "expected a TOML table"))?;
    check_fields(root, "", TOP_FIELDS, &["model", "data", "stage"])?;
    for (name, fields) in [("model", MODEL_FIELDS), ("data", DATA_FIELDS)] {
        match root.get(name) {
            Some(toml::Value::Table(t)) => check_fields(t, name, fields, &[])?,
            Some(other) => {
                return Err(Error::recipe(
                    name,
                    format!("expected a [{name}] table, got {}", describe(other)),
                ))
            }
            None => {
                return Err(Error::recipe(
                    name,
                    format!("missing (expected a [{name}] table)"),
                ))
            }
        }
    }
    match root.get("stage") {
        Some(toml::Value::Array(stages)) => {
            for (i, s) in stages.iter().enumerate() {
                let path = format!("stage.{i}");
                match s {
                    toml::Value::Table(t) => check_fields(t, &path, STAGE_FIELDS, &[])?,
                    other => {
                        return Err(Error::recipe(
                            path,
                            format!("expected a [[stage]] table, got {}", describe(other)),
                        ))
                    }
                }
            }
        }
        Some(toml::Value::Table(_)) => {
            return Err(Error::recipe(
                "stage",
                "expected an array of [[stage]] tables, got a single table (write [[stage]], not [stage])",
            ))
        }
        Some(other) => {
            return Err(Error::recipe(
                "stage",
                format!("expected [[stage]] tables, got {}", describe(other)),
            ))
        }
        None => {
            return Err(Error::recipe(
                "stage",
                "missing (expected at least one [[stage]] table)",
            ))
        }
    }
    Ok(())
}

/// `a.b=value` or `stage.1.lr=1e-3` (array index), the value parsed as TOML when possible
/// and as a string otherwise.
pub(super) fn apply_override(root: &mut toml::Value, spec: &str) -> Result<()> {
    let (key, raw) = spec.split_once('=').ok_or_else(|| {
        Error::recipe(
            spec,
            "--set expects key=value (e.g. --set stage.0.steps=100)",
        )
    })?;
    let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let parts: Vec<&str> = key.trim().split('.').collect();
    let mut cur = root;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        cur = match cur {
            toml::Value::Table(t) => {
                if last {
                    t.insert(part.to_string(), value);
                    return Ok(());
                }
                if !t.contains_key(*part) {
                    t.insert(part.to_string(), toml::Value::Table(Default::default()));
                }
                t.get_mut(*part)
                    .ok_or_else(|| Error::recipe(key, "cannot set"))?
            }
            toml::Value::Array(a) => {
                let idx: usize = part.parse().map_err(|_| {
                    Error::recipe(key, format!("'{part}' is not an index into an array"))
                })?;
                let len = a.len();
                let slot = a.get_mut(idx).ok_or_else(|| {
                    Error::recipe(
                        key,
                        format!("index {idx} is out of range (the array has {len} entries)"),
                    )
                })?;
                if last {
                    *slot = value;
                    return Ok(());
                }
                slot
            }
            _ => return Err(Error::recipe(key, format!("'{part}' is not a table"))),
        };
    }
    Ok(())
}
