//! The error type of the data module: every failure names the file or directory it concerns.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: I/O error: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: {message}", path.display())]
    Decode { path: PathBuf, message: String },

    #[error("{}: not found (expected {expected})", path.display())]
    NotFound { path: PathBuf, expected: String },

    #[error("{}: not a directory (expected a directory of images)", path.display())]
    NotADirectory { path: PathBuf },

    #[error("{}: no .png/.jpg/.jpeg images in any class folder (expected root/class_name/*.jpg)", path.display())]
    EmptyDataset { path: PathBuf },

    #[error("{}: no class folders (expected one sub-directory per class, root/class_name/*.jpg)", path.display())]
    NoClasses { path: PathBuf },

    #[error("shape mismatch: {0}")]
    Shape(String),

    #[error("invalid argument: {0}")]
    Invalid(String),

    #[error("sample index {index} out of range for a dataset of {len} samples")]
    Index { index: usize, len: usize },

    #[error("train {} and val {} have different class folders ({differ}); labels are folder positions, so val images would be scored against the wrong classes", train.display(), val.display())]
    ClassMismatch {
        train: PathBuf,
        val: PathBuf,
        differ: String,
    },
}
