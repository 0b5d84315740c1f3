//! The one kernel configuration, read from the environment once per process.
//!
//! | variable | value | effect |
//! |---|---|---|
//! | `ZEROBIAS_KERNELS` | `cpu` (default) | our CPU kernels where they apply |
//! | `ZEROBIAS_KERNELS` | `portable` | every op takes the device-generic code that CUDA and Metal run |
//! | `ZEROBIAS_CONV` | `candle` | candle's convolution instead of ours |
//! | `ZEROBIAS_DIRECT_CONV` | `0` | no direct convolution: im2col + matrix product |
//! | `ZEROBIAS_WINOGRAD` | `0` | no Winograd convolution |
//! | `ZEROBIAS_GEMM` | `crate` | every matrix product in the `gemm` crate (no AVX-512 kernel) |
//!
//! The four older switches act on their one value and ignore any other, as they always
//! have; `ZEROBIAS_KERNELS` refuses values it does not know (see [`check_env`]).

use std::sync::OnceLock;

use crate::error::{KernelError, Result};

/// Which code the ops run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelPath {
    /// Our CPU kernels for CPU f32 tensors, the generic code for everything else.
    Cpu,
    /// The device-generic code everywhere (candle's ops, zero-`Var` gradient probes).
    Portable,
}

/// Every kernel switch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelConfig {
    pub path: KernelPath,
    /// Candle's convolution instead of ours (`ZEROBIAS_CONV=candle`).
    pub candle_conv: bool,
    /// Direct convolutions where they apply (off with `ZEROBIAS_DIRECT_CONV=0`).
    pub direct_conv: bool,
    /// Winograd convolutions where they apply (off with `ZEROBIAS_WINOGRAD=0`).
    pub winograd: bool,
    /// Our AVX-512 matrix kernel where it applies (off with `ZEROBIAS_GEMM=crate`).
    pub own_gemm: bool,
}

impl Default for KernelConfig {
    fn default() -> Self {
        KernelConfig {
            path: KernelPath::Cpu,
            candle_conv: false,
            direct_conv: true,
            winograd: true,
            own_gemm: true,
        }
    }
}

impl KernelConfig {
    /// The configuration from variables looked up by `var` (the environment, or a test's
    /// table).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let is = |name: &str, value: &str| var(name).is_some_and(|v| v == value);
        let path = match var("ZEROBIAS_KERNELS").as_deref() {
            None | Some("") | Some("cpu") => KernelPath::Cpu,
            Some("portable") => KernelPath::Portable,
            Some(other) => {
                return Err(KernelError::Config {
                    var: "ZEROBIAS_KERNELS".into(),
                    value: other.into(),
                    expected: "cpu (the default) or portable".into(),
                })
            }
        };
        Ok(KernelConfig {
            path,
            candle_conv: is("ZEROBIAS_CONV", "candle"),
            direct_conv: !is("ZEROBIAS_DIRECT_CONV", "0"),
            winograd: !is("ZEROBIAS_WINOGRAD", "0"),
            own_gemm: !is("ZEROBIAS_GEMM", "crate"),
        })
    }

    /// The configuration of this process's environment.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Whether every op takes the device-generic code.
    pub fn portable(&self) -> bool {
        self.path == KernelPath::Portable
    }

    /// The kernels in use on this CPU, e.g. `cpu (conv direct+winograd+im2col, gemm
    /// avx512)` or `portable`.
    pub fn describe(&self) -> String {
        self.describe_for(crate::cpu::avx512_available())
    }

    /// [`Self::describe`] on a CPU with (`avx512`) or without AVX-512.
    pub fn describe_for(&self, avx512: bool) -> String {
        if self.portable() {
            return "portable".into();
        }
        if self.candle_conv {
            // Our matrix kernel serves only our convolutions.
            return "cpu (conv candle)".into();
        }
        let gemm = if avx512 && self.own_gemm {
            "avx512"
        } else {
            "gemm-crate"
        };
        let conv = {
            // Direct and Winograd convolutions are AVX-512 kernels.
            let mut kinds = Vec::new();
            if avx512 && self.direct_conv {
                kinds.push("direct");
            }
            if avx512 && self.winograd {
                kinds.push("winograd");
            }
            kinds.push("im2col");
            kinds.join("+")
        };
        format!("cpu (conv {conv}, gemm {gemm})")
    }
}

/// The configuration, read from the environment on first use. A `ZEROBIAS_KERNELS` value
/// it does not know leaves the default in place here; [`check_env`] reports it.
pub fn config() -> &'static KernelConfig {
    &state().0
}

/// The error for a kernel switch that has a value it does not take, so that programs can
/// refuse to run rather than silently take the default path.
pub fn check_env() -> Result<()> {
    match &state().1 {
        None => Ok(()),
        Some((var, value, expected)) => Err(KernelError::Config {
            var: var.clone(),
            value: value.clone(),
            expected: expected.clone(),
        }),
    }
}

type Refused = Option<(String, String, String)>;

fn state() -> &'static (KernelConfig, Refused) {
    static STATE: OnceLock<(KernelConfig, Refused)> = OnceLock::new();
    STATE.get_or_init(|| match KernelConfig::from_env() {
        Ok(c) => (c, None),
        Err(KernelError::Config {
            var,
            value,
            expected,
        }) => (KernelConfig::default(), Some((var, value, expected))),
        Err(_) => (KernelConfig::default(), None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(vars: &[(&str, &str)]) -> Result<KernelConfig> {
        KernelConfig::from_vars(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn each_switch_acts_on_its_documented_value_only() {
        assert_eq!(with(&[]).unwrap(), KernelConfig::default());
        assert!(with(&[("ZEROBIAS_KERNELS", "portable")])
            .unwrap()
            .portable());
        assert!(!with(&[("ZEROBIAS_KERNELS", "cpu")]).unwrap().portable());
        assert!(with(&[("ZEROBIAS_CONV", "candle")]).unwrap().candle_conv);
        assert!(!with(&[("ZEROBIAS_CONV", "ours")]).unwrap().candle_conv);
        assert!(!with(&[("ZEROBIAS_DIRECT_CONV", "0")]).unwrap().direct_conv);
        assert!(with(&[("ZEROBIAS_DIRECT_CONV", "1")]).unwrap().direct_conv);
        assert!(!with(&[("ZEROBIAS_WINOGRAD", "0")]).unwrap().winograd);
        assert!(!with(&[("ZEROBIAS_GEMM", "crate")]).unwrap().own_gemm);
        assert!(with(&[("ZEROBIAS_GEMM", "avx512")]).unwrap().own_gemm);
    }

    #[test]
    fn an_unknown_path_is_refused_by_name() {
        let err = with(&[("ZEROBIAS_KERNELS", "gpu")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("ZEROBIAS_KERNELS=gpu"), "{err}");
        assert!(err.contains("portable"), "{err}");
    }

    #[test]
    fn describe_names_the_kernels_that_run() {
        let d = |vars: &[(&str, &str)], avx512| with(vars).unwrap().describe_for(avx512);
        assert_eq!(d(&[("ZEROBIAS_KERNELS", "portable")], true), "portable");
        assert_eq!(
            d(&[], true),
            "cpu (conv direct+winograd+im2col, gemm avx512)"
        );
        assert_eq!(d(&[], false), "cpu (conv im2col, gemm gemm-crate)");
        assert_eq!(
            d(
                &[("ZEROBIAS_DIRECT_CONV", "0"), ("ZEROBIAS_GEMM", "crate")],
                true
            ),
            "cpu (conv winograd+im2col, gemm gemm-crate)"
        );
        assert_eq!(d(&[("ZEROBIAS_CONV", "candle")], true), "cpu (conv candle)");
    }
}
