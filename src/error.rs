//! The library's error type: every variant names the thing that was wrong and what was expected.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },

    #[error("{path}: I/O error: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },

    #[error("unknown architecture '{0}': expected vgg16 or resnet50 (VGG with features.* keys, or ResNet bottleneck keys layer1..layer4)")]
    UnknownArch(String),

    #[error("shape mismatch for {what}: expected {expected}, got {got}")]
    Shape {
        what: String,
        expected: String,
        got: String,
    },

    #[error("invalid input: {0}")]
    Input(String),

    #[error("recipe {field}: {message}")]
    Recipe { field: String, message: String },

    #[error("training stopped: {0}")]
    Training(String),

    /// A non-finite loss, gradient, weight or result during training: the run stops
    /// (summary.json records it as incomplete) rather than report it.
    #[error("training stopped: {0}")]
    Diverged(String),

    /// A logit, attribution or metric that is NaN or infinite: never reported as a result.
    #[error("non-finite result: {0}")]
    NonFinite(String),

    #[error(transparent)]
    Hub(#[from] crate::hub::HubError),

    #[error(transparent)]
    Data(#[from] crate::data::DataError),

    #[error(transparent)]
    Plot(#[from] crate::report::plot::PlotError),

    #[error(transparent)]
    Stats(#[from] crate::stats::StatsError),

    #[error(transparent)]
    TensorBoard(#[from] crate::report::tensorboard::TensorBoardError),

    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl From<zerobias_kernels::KernelError> for Error {
    fn from(e: zerobias_kernels::KernelError) -> Self {
        use zerobias_kernels::KernelError as K;
        match e {
            K::Shape {
                what,
                expected,
                got,
            } => Error::Shape {
                what,
                expected,
                got,
            },
            K::Candle(e) => Error::Candle(e),
            config @ K::Config { .. } => Error::Input(config.to_string()),
        }
    }
}

impl Error {
    pub fn input(msg: impl Into<String>) -> Self {
        Error::Input(msg.into())
    }
    pub fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::File {
            path: path.into(),
            message: message.into(),
        }
    }
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub fn recipe(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Recipe {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Atomically write bytes: temp file in the same directory, fsync, rename.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    // fsync before the rename: a crash never leaves a renamed but partly written file.
    if let Err(e) = f.write_all(bytes).and_then(|_| f.sync_all()) {
        drop(f);
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })?;
    // The rename itself is durable only once the directory is synced. Some file systems
    // refuse fsync on a directory; the data are already on disk, so that is not an error.
    #[cfg(unix)]
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
