//! Compute devices (`--device`, a recipe's `device`) and the GPU matrix precision
//! (`--precision`, a recipe's `precision`).

use candle_core::Device;

use crate::error::{Error, Result};

/// A parsed device spec: `cpu`, `cuda`, `cuda:N`, `metal` or `metal:N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
    Metal(usize),
}

const EXPECTED: &str = "expected cpu, cuda, cuda:N, metal or metal:N";

impl DeviceSpec {
    pub fn parse(spec: &str) -> Result<DeviceSpec> {
        let s = spec.trim();
        let (kind, index) = match s.split_once(':') {
            Some((k, n)) => (k, Some(n)),
            None => (s, None),
        };
        let ordinal = || match index {
            None => Ok(0),
            Some(n) => n.parse::<usize>().map_err(|_| {
                Error::input(format!(
                    "device \"{spec}\": expected {kind}:N with a device index N (0, 1, ...)"
                ))
            }),
        };
        match kind {
            "cpu" if index.is_none() => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(ordinal()?)),
            "metal" => Ok(DeviceSpec::Metal(ordinal()?)),
            _ => Err(Error::input(format!("device \"{spec}\": {EXPECTED}"))),
        }
    }

    /// The cargo feature a build needs for this device, if any.
    pub fn feature(&self) -> Option<&'static str> {
        match self {
            DeviceSpec::Cpu => None,
            DeviceSpec::Cuda(_) => Some("cuda"),
            DeviceSpec::Metal(_) => Some("metal"),
        }
    }

    /// Whether this zerobias was built with the feature the device needs.
    pub fn compiled_in(&self) -> bool {
        match self {
            DeviceSpec::Cpu => true,
            DeviceSpec::Cuda(_) => cfg!(feature = "cuda"),
            DeviceSpec::Metal(_) => cfg!(feature = "metal"),
        }
    }

    pub fn name(&self) -> String {
        match self {
            DeviceSpec::Cpu => "cpu".into(),
            DeviceSpec::Cuda(n) => format!("cuda:{n}"),
            DeviceSpec::Metal(n) => format!("metal:{n}"),
        }
    }

    /// Opens the device: an error naming the missing feature, or the device and candle's
    /// message when it is absent or cannot be opened.
    pub fn open(&self) -> Result<Device> {
        if !self.compiled_in() {
            let f = self.feature().unwrap_or_default();
            return Err(Error::input(format!(
                "device \"{}\": this zerobias was built without the `{f}` feature; rebuild with `cargo build --release --features {f}`",
                self.name()
            )));
        }
        let opened = match *self {
            DeviceSpec::Cpu => return Ok(Device::Cpu),
            DeviceSpec::Cuda(n) => Device::new_cuda(n),
            DeviceSpec::Metal(n) => Device::new_metal(n),
        };
        opened.map_err(|e| {
            Error::input(format!(
                "device \"{}\" could not be opened (absent, or its driver failed): {e}",
                self.name()
            ))
        })
    }
}

/// A device from `cpu`, `cuda`, `cuda:N`, `metal` or `metal:N`.
pub fn parse_device(spec: &str) -> Result<Device> {
    DeviceSpec::parse(spec)?.open()
}

/// Precision of f32 matrix products on CUDA (convolutions run as matrix products there).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    /// Full f32 (the default; what the parity tests check).
    #[default]
    F32,
    /// cuBLAS TF32 tensor-core products: 10-bit mantissa inputs, f32 accumulation.
    Tf32,
}

impl Precision {
    pub const NAMES: [&'static str; 2] = ["f32", "tf32"];

    pub fn parse(s: &str) -> Result<Precision> {
        match s.trim() {
            "f32" => Ok(Precision::F32),
            "tf32" => Ok(Precision::Tf32),
            other => Err(Error::input(format!(
                "precision \"{other}\": expected \"f32\" or \"tf32\""
            ))),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Tf32 => "tf32",
        }
    }
}

/// Sets the process-wide precision of f32 matrix products for work on `device`.
/// TF32 exists only on CUDA: elsewhere it is a no-op, warned about on stderr (the warning
/// is also returned), so one recipe runs on a laptop and on a GPU node.
pub fn set_precision(precision: Precision, device: &Device) -> Option<String> {
    // candle's switch is global; always set it so an earlier call cannot leak into this one.
    candle_core::cuda::set_gemm_reduced_precision_f32(
        precision == Precision::Tf32 && device.is_cuda(),
    );
    if precision == Precision::Tf32 && !device.is_cuda() {
        let w = format!(
            "precision = \"tf32\" has no effect on {}: it applies to CUDA f32 matrix products only; computing in f32",
            name(device)
        );
        eprintln!("warning: {w}");
        return Some(w);
    }
    None
}

/// "cpu", "cuda:N" or "metal:N".
pub fn name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling() {
        let p = |s| DeviceSpec::parse(s).unwrap();
        assert_eq!(p("cpu"), DeviceSpec::Cpu);
        assert_eq!(p("cuda"), DeviceSpec::Cuda(0));
        assert_eq!(p("cuda:0"), DeviceSpec::Cuda(0));
        assert_eq!(p("cuda:3"), DeviceSpec::Cuda(3));
        assert_eq!(p(" cuda:1 "), DeviceSpec::Cuda(1));
        assert_eq!(p("metal"), DeviceSpec::Metal(0));
        assert_eq!(p("metal:2"), DeviceSpec::Metal(2));
        assert_eq!(p("cuda:12").name(), "cuda:12");
    }

    #[test]
    fn rejects_malformed_specs_by_name() {
        for (spec, needle) in [
            ("gpu", "expected cpu, cuda, cuda:N"),
            ("gpu:x", "expected cpu, cuda, cuda:N"),
            ("cuda:", "expected cuda:N with a device index"),
            ("cuda:x", "expected cuda:N with a device index"),
            ("cuda:-1", "expected cuda:N"),
            ("metal:one", "expected metal:N"),
            ("cpu:0", "expected cpu, cuda"),
            ("CUDA", "expected cpu, cuda"),
            ("", "expected cpu, cuda"),
        ] {
            let e = DeviceSpec::parse(spec).unwrap_err().to_string();
            assert!(e.contains(needle), "{spec:?}: {e}");
            assert!(e.contains(&format!("\"{spec}\"")), "{spec:?}: {e}");
        }
    }

    #[test]
    fn cpu_opens_everywhere() {
        assert!(parse_device("cpu").unwrap().is_cpu());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_rebuild() {
        for spec in ["cuda", "cuda:1"] {
            let e = parse_device(spec).unwrap_err().to_string();
            assert!(
                e.contains("built without the `cuda` feature")
                    && e.contains("cargo build --release --features cuda"),
                "{e}"
            );
        }
        let e = parse_device("cuda:1").unwrap_err().to_string();
        assert!(e.contains("\"cuda:1\""), "{e}");
    }

    #[cfg(not(feature = "metal"))]
    #[test]
    fn metal_without_the_feature_says_how_to_rebuild() {
        let e = parse_device("metal:0").unwrap_err().to_string();
        assert!(e.contains("without the `metal` feature"), "{e}");
    }

    #[cfg(feature = "cuda")]
    #[test]
    fn an_absent_gpu_is_named() {
        // Only meaningful where no GPU has this index.
        if let Err(e) = parse_device("cuda:977") {
            let e = e.to_string();
            assert!(e.contains("\"cuda:977\" could not be opened"), "{e}");
        }
    }

    #[test]
    fn precision_parses_and_tf32_is_a_warned_no_op_on_cpu() {
        assert_eq!(Precision::parse("f32").unwrap(), Precision::F32);
        assert_eq!(Precision::parse("tf32").unwrap(), Precision::Tf32);
        let e = Precision::parse("fp16").unwrap_err().to_string();
        assert!(e.contains("\"fp16\"") && e.contains("\"tf32\""), "{e}");
        assert_eq!(set_precision(Precision::F32, &Device::Cpu), None);
        let w = set_precision(Precision::Tf32, &Device::Cpu).unwrap();
        assert!(w.contains("no effect on cpu"), "{w}");
    }
}
