//! Hugging Face Hub access: turns a `--model` argument into a local
//! `.safetensors` path.
//!
//! Downloads go through hf-hub's blocking client into the standard HF cache
//! layout (`models--{owner}--{name}/{blobs,refs,snapshots}`), so files are
//! shared with Python tooling and can be used offline later.

use std::fmt;
use std::io::IsTerminal;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Component, Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};

const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
const DEFAULT_REVISION: &str = "main";
const MODEL_FILE: &str = "model.safetensors";
/// The Hub's own limit on owner and name lengths.
const MAX_ID_PART: usize = 96;

/// Why a model could not be located or fetched.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The Hub answered 404 (or "repository not found"): wrong id, revision or
    /// file, or a private repo without a token.
    #[error(
        "`{file}` not found in Hub model repo `{repo}` (HTTP 404): expected an existing \
         repo, revision and file; private or gated repos also need HF_TOKEN"
    )]
    NotFound { repo: String, file: String },
    /// HF_HUB_OFFLINE is on and the file has never been downloaded.
    #[error(
        "offline mode is on (HF_HUB_OFFLINE) and `{file}` of Hub repo `{repo}` is not in \
         the cache at {cache}; unset HF_HUB_OFFLINE to download it"
    )]
    Offline {
        repo: String,
        file: String,
        cache: PathBuf,
    },
    /// Any other failure talking to the Hub (connection, HTTP status, bad
    /// response, local I/O while storing the download).
    #[error("network error for Hub repo `{repo}`: {message}")]
    Network { repo: String, message: String },
    /// The argument names a local file that is not there.
    #[error("model file {path} does not exist (expected a .safetensors file)")]
    LocalMissing { path: PathBuf },
    /// The argument is neither a usable path nor a Hub id.
    #[error(
        "invalid model spec `{spec}`: {why} (expected a path to a .safetensors file, \
         `owner/name` or `owner/name@revision`)"
    )]
    BadSpec { spec: String, why: String },
}

/// Where the model weights come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    LocalFile(PathBuf),
    Hub { repo: String, revision: String },
}

/// Interpret a --model argument: an existing file path (or anything ending in
/// .safetensors, or containing a path separator that starts with '.' or '/')
/// is local (error LocalMissing if it does not exist); otherwise "owner/name"
/// (exactly one '/', chars [A-Za-z0-9._-]) or "owner/name@revision" is a Hub
/// id; anything else BadSpec.
pub fn parse_model_spec(spec: &str) -> Result<ModelSource, HubError> {
    let bad = |why: String| HubError::BadSpec {
        spec: spec.to_owned(),
        why,
    };
    if spec.trim().is_empty() {
        return Err(bad("it is empty".to_owned()));
    }
    let path = Path::new(spec);
    if path.is_file() {
        return Ok(ModelSource::LocalFile(path.to_path_buf()));
    }
    if looks_like_path(spec) {
        if path.exists() {
            return Err(bad("it is a directory, not a file".to_owned()));
        }
        return Err(HubError::LocalMissing {
            path: path.to_path_buf(),
        });
    }
    let (repo, revision) = match spec.split_once('@') {
        Some((repo, revision)) => (repo, revision),
        None => (spec, DEFAULT_REVISION),
    };
    check_repo_id(repo).map_err(|why| bad(format!("not an existing file, and {why}")))?;
    check_revision(revision).map_err(bad)?;
    Ok(ModelSource::Hub {
        repo: repo.to_owned(),
        revision: revision.to_owned(),
    })
}

/// Hub connection settings.
#[derive(Clone)]
pub struct HubConfig {
    pub endpoint: String,
    pub cache_dir: PathBuf,
    pub offline: bool,
    pub token: Option<String>,
}

// Hand-written so that logging a config never leaks the token.
impl fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubConfig")
            .field("endpoint", &self.endpoint)
            .field("cache_dir", &self.cache_dir)
            .field("offline", &self.offline)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl HubConfig {
    /// From env: HF_ENDPOINT (default https://huggingface.co), HF_HUB_CACHE,
    /// else HF_HOME/hub, else ~/.cache/huggingface/hub; HF_HUB_OFFLINE in
    /// {1,true,yes,on} (case-insensitive); HF_TOKEN, else the token file that
    /// `huggingface-cli login` writes (HF_HOME/token), as hf-hub itself does.
    pub fn from_env() -> Self {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// `from_env` with the environment injected, so it can be unit-tested
    /// without mutating the (process-global) environment.
    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        // Empty variables count as unset, like in huggingface_hub.
        let var = |key: &str| get(key).filter(|v| !v.trim().is_empty());
        let endpoint = var("HF_ENDPOINT")
            .map(|e| e.trim().trim_end_matches('/').to_owned())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
        let hf_home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            // No home directory: a relative path beats panicking (hf-hub's
            // own default cache panics here).
            let home = var("HOME")
                .or_else(|| var("USERPROFILE"))
                .unwrap_or_default();
            Path::new(&home).join(".cache").join("huggingface")
        });
        let cache_dir = var("HF_HUB_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("hub"));
        let offline = var("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        });
        let token = var("HF_TOKEN").map(|t| t.trim().to_owned()).or_else(|| {
            std::fs::read_to_string(hf_home.join("token"))
                .ok()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
        });
        HubConfig {
            endpoint,
            cache_dir,
            offline,
            token,
        }
    }
}

/// Download (or take from cache) one file of a model repo; returns the local
/// path in the standard HF cache layout (hf-hub's). In offline mode: only the
/// cache (look up `models--{owner}--{name}/refs/{revision}` then
/// `snapshots/{commit}/{file}`; a revision that is itself a commit hash goes
/// straight to the snapshot), never the network.
pub fn fetch_file(
    cfg: &HubConfig,
    repo: &str,
    revision: &str,
    file: &str,
) -> Result<PathBuf, HubError> {
    // Validated here too because the arguments become cache paths.
    check_repo_id(repo).map_err(|why| HubError::BadSpec {
        spec: repo.to_owned(),
        why,
    })?;
    check_revision(revision).map_err(|why| HubError::BadSpec {
        spec: format!("{repo}@{revision}"),
        why,
    })?;
    check_file(file).map_err(|why| HubError::BadSpec {
        spec: file.to_owned(),
        why,
    })?;

    // Checked in both modes: the cache also covers commit-hash revisions that
    // hf-hub's own lookup (refs/ only) would needlessly re-download.
    if let Some(path) = cached_path(&cfg.cache_dir, repo, revision, file) {
        return Ok(path);
    }
    if cfg.offline {
        return Err(HubError::Offline {
            repo: repo.to_owned(),
            file: file.to_owned(),
            cache: cfg.cache_dir.clone(),
        });
    }
    download(cfg, repo, revision, file)
}

/// `resolve(spec)`: LocalFile -> the path; Hub -> fetch_file(cfg, repo, rev,
/// "model.safetensors"). `revision_override` replaces the spec's revision (a
/// local file has no revisions, so it is ignored there).
pub fn resolve_model(
    cfg: &HubConfig,
    spec: &str,
    revision_override: Option<&str>,
) -> Result<PathBuf, HubError> {
    match parse_model_spec(spec)? {
        ModelSource::LocalFile(path) => Ok(path),
        ModelSource::Hub { repo, revision } => {
            let revision = revision_override.unwrap_or(&revision);
            fetch_file(cfg, &repo, revision, MODEL_FILE)
        }
    }
}

/// Arguments the user clearly meant as a path rather than a Hub id.
fn looks_like_path(spec: &str) -> bool {
    let has_separator = spec.contains('/') || spec.contains(std::path::MAIN_SEPARATOR);
    spec.ends_with(".safetensors")
        || Path::new(spec).is_absolute()
        || (has_separator && (spec.starts_with('.') || spec.starts_with('/')))
        // The shell did not expand it, but it is still a path.
        || spec.starts_with("~/")
}

/// Hub repo id rules: `owner/name`, [A-Za-z0-9._-], plus the Hub's own bans
/// on `--`/`..` and leading/trailing `-`/`.` (which also keeps ids safe as
/// cache folder names).
fn check_repo_id(repo: &str) -> Result<(), String> {
    let parts: Vec<&str> = repo.split('/').collect();
    let [owner, name] = parts[..] else {
        return Err(format!(
            "`{repo}` is not a Hub id: expected exactly one '/' (owner/name)"
        ));
    };
    for part in [owner, name] {
        if part.is_empty() {
            return Err(format!(
                "`{repo}` is not a Hub id: owner and name must be non-empty"
            ));
        }
        if let Some(c) = part
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(format!(
                "`{repo}` is not a Hub id: character {c:?} is not allowed (only A-Z a-z 0-9 . _ -)"
            ));
        }
        if part.contains("--") || part.contains("..") {
            return Err(format!(
                "`{repo}` is not a Hub id: `--` and `..` are not allowed"
            ));
        }
        if part.starts_with(['-', '.']) || part.ends_with(['-', '.']) {
            return Err(format!(
                "`{repo}` is not a Hub id: `{part}` must not start or end with '-' or '.'"
            ));
        }
        if part.len() > MAX_ID_PART {
            return Err(format!(
                "`{repo}` is not a Hub id: `{part}` is longer than {MAX_ID_PART} characters"
            ));
        }
    }
    Ok(())
}

/// Revisions are branch/tag names or commits; `/` is allowed (`refs/pr/1`)
/// but nothing that could climb out of the cache's refs/ folder.
fn check_revision(revision: &str) -> Result<(), String> {
    if revision.is_empty() {
        return Err("the revision after '@' is empty".to_owned());
    }
    if revision
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!("revision `{revision}` contains whitespace"));
    }
    if revision.contains("..") || revision.contains('\\') || revision.starts_with('/') {
        return Err(format!(
            "revision `{revision}` is not a branch, tag or commit name"
        ));
    }
    Ok(())
}

/// A file inside the repo: relative, no `..`, so it stays inside the snapshot.
fn check_file(file: &str) -> Result<(), String> {
    let path = Path::new(file);
    let normal = path.components().all(|c| matches!(c, Component::Normal(_)));
    if file.is_empty() || file.contains('\\') || !normal {
        return Err(format!(
            "`{file}` is not a relative file path inside the repo"
        ));
    }
    Ok(())
}

fn is_commit_hash(revision: &str) -> bool {
    revision.len() == 40
        && revision
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The snapshot path of `file` if it is already in the cache.
fn cached_path(cache_dir: &Path, repo: &str, revision: &str, file: &str) -> Option<PathBuf> {
    // Same folder naming as hf-hub's `Repo::folder_name`.
    let repo_dir = cache_dir.join(format!("models--{}", repo.replace('/', "--")));
    let commit = if is_commit_hash(revision) {
        revision.to_owned()
    } else {
        let commit = std::fs::read_to_string(repo_dir.join("refs").join(revision)).ok()?;
        let commit = commit.trim();
        // A corrupted ref must not point outside snapshots/.
        if commit.is_empty() || commit.contains(['/', '\\']) || commit.contains("..") {
            return None;
        }
        commit.to_owned()
    };
    let path = repo_dir.join("snapshots").join(commit).join(file);
    // is_file follows the snapshot symlink, so a dangling link is a miss.
    path.is_file().then_some(path)
}

fn download(cfg: &HubConfig, repo: &str, revision: &str, file: &str) -> Result<PathBuf, HubError> {
    let network = |message: String| HubError::Network {
        repo: repo.to_owned(),
        message,
    };
    // `from_cache` rather than `ApiBuilder::new()`: `new()` builds hf-hub's
    // default cache, which panics when there is no home directory.
    let api = ApiBuilder::from_cache(Cache::new(cfg.cache_dir.clone()))
        .with_endpoint(cfg.endpoint.trim_end_matches('/').to_owned())
        .with_token(cfg.token.clone())
        .with_progress(std::io::stderr().is_terminal())
        .build()
        .map_err(|e| network(format!("cannot set up the HTTP client: {e}")))?;
    let handle = api.repo(Repo::with_revision(
        repo.to_owned(),
        RepoType::Model,
        revision.to_owned(),
    ));
    // hf-hub 0.4.3 has unwrap/assert paths reachable from server responses
    // (e.g. a 3xx without Location); turn those into errors.
    match catch_unwind(AssertUnwindSafe(|| handle.get(file))) {
        Ok(Ok(path)) => Ok(path),
        Ok(Err(err)) => Err(map_api_error(err, cfg, repo, revision, file)),
        Err(_) => Err(network(format!(
            "hf-hub failed unexpectedly while downloading `{file}` (revision `{revision}`) \
             from {}",
            cfg.endpoint
        ))),
    }
}

fn map_api_error(
    err: ApiError,
    cfg: &HubConfig,
    repo: &str,
    revision: &str,
    file: &str,
) -> HubError {
    let network = |detail: String| HubError::Network {
        repo: repo.to_owned(),
        message: format!("downloading `{file}` (revision `{revision}`) failed: {detail}"),
    };
    match err {
        ApiError::RequestError(err) => {
            let text = err.to_string();
            // ureq is not our direct dependency, so inspect the error through
            // its methods instead of matching `ureq::Error::Status`.
            let Some(response) = err.into_response() else {
                return network(format!(
                    "{text} (set HF_HUB_OFFLINE=1 to use only the local cache at {})",
                    cfg.cache_dir.display()
                ));
            };
            let status = response.status();
            let code = response.header("x-error-code").unwrap_or_default();
            let hub_message = response
                .header("x-error-message")
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            // The real Hub answers 401 + RepositoryNotFound for unknown repos
            // when no token is sent (it hides whether private repos exist).
            if status == 404 || (status == 401 && code == "RepositoryNotFound") {
                return HubError::NotFound {
                    repo: repo.to_owned(),
                    file: file.to_owned(),
                };
            }
            let hint = if matches!(status, 401 | 403) {
                " (access denied: set HF_TOKEN, and accept the terms of gated repos on the Hub)"
            } else {
                ""
            };
            network(format!(
                "HTTP {status} {} from {}{hub_message}{hint}",
                response.status_text(),
                response.get_url()
            ))
        }
        ApiError::MissingHeader(header) | ApiError::InvalidHeader(header) => network(format!(
            "the response lacks a valid `{header}` header; is {} a Hugging Face Hub endpoint?",
            cfg.endpoint
        )),
        ApiError::TooManyRetries(inner) => map_api_error(*inner, cfg, repo, revision, file),
        ApiError::LockAcquisition(lock) => network(format!(
            "another process is downloading the same file (lock {}); retry when it is done",
            lock.display()
        )),
        other => network(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config_from(vars: &[(&str, &str)]) -> HubConfig {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        HubConfig::from_lookup(|k| vars.get(k).cloned())
    }

    #[test]
    fn env_defaults() {
        let cfg = config_from(&[("HOME", "/home/u")]);
        assert_eq!(cfg.endpoint, DEFAULT_ENDPOINT);
        assert_eq!(
            cfg.cache_dir,
            PathBuf::from("/home/u/.cache/huggingface/hub")
        );
        assert!(!cfg.offline);
    }

    #[test]
    fn env_overrides() {
        let cfg = config_from(&[
            ("HF_ENDPOINT", "http://mirror.local/"),
            ("HF_HOME", "/data/hf"),
            ("HF_HUB_OFFLINE", "Yes"),
            ("HF_TOKEN", "hf_secret"),
        ]);
        assert_eq!(cfg.endpoint, "http://mirror.local");
        assert_eq!(cfg.cache_dir, PathBuf::from("/data/hf/hub"));
        assert!(cfg.offline);
        assert_eq!(cfg.token.as_deref(), Some("hf_secret"));
        assert!(!format!("{cfg:?}").contains("hf_secret"));

        let cfg = config_from(&[
            ("HF_HOME", "/data/hf"),
            ("HF_HUB_CACHE", "/fast/cache"),
            ("HF_HUB_OFFLINE", "0"),
        ]);
        assert_eq!(cfg.cache_dir, PathBuf::from("/fast/cache"));
        assert!(!cfg.offline);
    }

    #[test]
    fn repo_id_rules() {
        assert!(check_repo_id("google/vit-base-patch16-224").is_ok());
        assert!(check_repo_id("a_b/c.d").is_ok());
        for bad in [
            "gpt2", "a/b/c", "/b", "a/", "a b/c", "a--b/c", "a/..", "-a/b", "a/b.",
        ] {
            assert!(check_repo_id(bad).is_err(), "{bad}");
        }
        assert!(check_file("sub/model.safetensors").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a/../../x"] {
            assert!(check_file(bad).is_err(), "{bad}");
        }
        assert!(check_revision("refs/pr/1").is_ok());
        assert!(check_revision("../x").is_err());
        assert!(is_commit_hash("0123456789abcdef0123456789abcdef01234567"));
        assert!(!is_commit_hash("main"));
    }
}
