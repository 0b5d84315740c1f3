//! `ZEROBIAS_KERNELS` really changes the code that runs. The configuration is read once per
//! process, so each path is checked in a child process of this test binary with the
//! variable set (or removed): the child runs one of the ignored tests below.

use std::process::Command;

use candle_core::{DType, Device, Tensor, Var};
use zerobias_kernels::{affine, config, conv, cpu_f32, pool, relu, GradHook, KernelPath};

/// Runs the ignored test `name` of this binary in a child with `ZEROBIAS_KERNELS` set to
/// `value` (removed for `None`) and asserts that exactly that test ran and passed.
fn run_child(name: &str, value: Option<&str>) {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args(["--ignored", "--exact", name, "--test-threads=1"]);
    // The other switches stay at their defaults in the child.
    for var in [
        "ZEROBIAS_CONV",
        "ZEROBIAS_DIRECT_CONV",
        "ZEROBIAS_WINOGRAD",
        "ZEROBIAS_GEMM",
    ] {
        cmd.env_remove(var);
    }
    match value {
        Some(v) => cmd.env("ZEROBIAS_KERNELS", v),
        None => cmd.env_remove("ZEROBIAS_KERNELS"),
    };
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} with ZEROBIAS_KERNELS={value:?}:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn portable_takes_the_generic_code() {
    run_child("portable_child", Some("portable"));
}

#[test]
fn cpu_takes_our_kernels() {
    run_child("cpu_child", None);
    run_child("cpu_child", Some("cpu"));
}

fn values(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
}

/// Whether each dispatch point took our custom ops: ReLU and affine attach the gradient
/// hook (only the custom ops can), the fused affine + ReLU exists, the convolution is ours.
fn custom_ops_used() -> [bool; 5] {
    let x = values(&[-1.0, 0.0, 2.0, 3.0], &[1, 1, 2, 2]);
    let hook = GradHook::new(true);
    relu::relu(&x, true, &hook).unwrap();
    let relu_attached = hook.attached().is_some();
    let hook = GradHook::new(true);
    let shift = values(&[0.5], &[1]);
    affine::channel_affine(&x, None, &shift, &hook).unwrap();
    let affine_attached = hook.attached().is_some();
    let fused = affine::channel_affine_relu(&x, None, &shift, true)
        .unwrap()
        .is_some();
    [
        cpu_f32(&x),
        relu_attached,
        affine_attached,
        fused,
        conv::backend() == "zerobias",
    ]
}

/// PyTorch's semantics on whichever path runs: ReLU's gradient is 0 at exactly 0, and a
/// max-pool window's gradient goes to its first maximum in raster order.
fn pytorch_semantics_hold() {
    let x = Var::from_tensor(&values(&[-1.0, 0.0, 2.0], &[1, 1, 1, 3])).unwrap();
    let y = relu::relu(x.as_tensor(), true, &GradHook::default()).unwrap();
    let g = y.sum_all().unwrap().backward().unwrap();
    let dx: Vec<f32> = g
        .get(x.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(dx, [0.0, 0.0, 1.0]);

    // One 3×3 window (stride 2, padding 1) over ties of 7: the first 7 wins.
    let plane = [1.0, 7.0, 7.0, 7.0, 2.0, 7.0, 0.0, 7.0, 3.0];
    let x = Var::from_tensor(&values(&plane, &[1, 1, 3, 3])).unwrap();
    let y = pool::max_pool2d(x.as_tensor(), 3, 2, 1, true).unwrap();
    let g = y.sum_all().unwrap().backward().unwrap();
    let dx: Vec<f32> = g
        .get(x.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    // Windows: rows/cols {-1,0,1} → first 7 at index 1; {-1,0,1}×{1,2} → index 1;
    // {1,2}×{-1,0,1} → index 3; {1,2}×{1,2} → index 5.
    assert_eq!(dx, [0.0, 2.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0]);
    assert_eq!(y.dtype(), DType::F32);
}

#[test]
#[ignore = "run by portable_takes_the_generic_code in a child process"]
fn portable_child() {
    assert_eq!(config().path, KernelPath::Portable);
    assert_eq!(config().describe(), "portable");
    assert_eq!(custom_ops_used(), [false; 5]);
    pytorch_semantics_hold();
}

#[test]
#[ignore = "run by cpu_takes_our_kernels in a child process"]
fn cpu_child() {
    assert_eq!(config().path, KernelPath::Cpu);
    assert!(config().describe().starts_with("cpu (conv "));
    assert_eq!(custom_ops_used(), [true; 5]);
    pytorch_semantics_hold();
}
