//! The kernels' error type. The library converts it into its own error with the same
//! message texts.

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("shape mismatch for {what}: expected {expected}, got {got}")]
    Shape {
        what: String,
        expected: String,
        got: String,
    },

    /// A `ZEROBIAS_*` kernel switch with a value it does not take.
    #[error("environment variable {var}={value}: expected {expected}")]
    Config {
        var: String,
        value: String,
        expected: String,
    },

    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, KernelError>;
