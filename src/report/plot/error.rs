//! The one error type of the figures.

use std::path::PathBuf;

/// Errors from building or writing a figure.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// Writing or renaming a file failed; `path` is the file that failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// File that failed (the temporary file for write errors).
        path: PathBuf,
        #[source]
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// Inconsistent sizes (map dimensions, mismatched x/y lengths, ...).
    #[error("shape error: {0}")]
    Shape(String),
    /// Nothing to lay out (see the module docs for the policy).
    #[error("empty input: {0}")]
    Empty(String),
    /// A data value that cannot be drawn: NaN, infinite, or non-positive on a log axis.
    #[error("cannot plot {0}")]
    NonFinite(String),
    /// The drawing library failed (a figure too small for its labels, say).
    #[error("drawing failed: {0}")]
    Draw(String),
}
