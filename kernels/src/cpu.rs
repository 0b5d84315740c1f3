//! What this CPU offers, detected once. Its own file because the configuration (which
//! describes the paths) and the kernels (which choose them) both ask.

/// Whether this CPU runs AVX-512F code.
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx512_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| std::arch::is_x86_feature_detected!("avx512f"))
}

/// Whether this CPU runs AVX-512F code (never, off x86-64).
#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn avx512_available() -> bool {
    false
}
