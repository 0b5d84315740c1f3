//! What the custom ops share: which tensors they take, their dense f32 data, and output
//! buffers written without a zero fill.

use candle_core::{CpuStorage, DType, Layout, Tensor};

/// Values per task of an element-wise pass (and below which it runs on one thread): large
/// enough to amortise scheduling, small enough to split a 14×14 map across both threads.
pub(crate) const CHUNK: usize = 1 << 14;

/// Whether a tensor can be an operand of the CPU custom ops: CPU, f32, and the kernel
/// configuration not [portable](crate::config::KernelPath::Portable).
pub fn cpu_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32 && !crate::config::config().portable()
}

/// The contiguous f32 data behind a CPU storage, for the custom ops of this crate.
pub(crate) fn dense<'a>(
    s: &'a CpuStorage,
    l: &Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(v) => v.as_slice(),
        _ => candle_core::bail!("{what} must be f32"),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what} must be contiguous"),
    }
}

/// A vector of `len` values that `fill` writes, every one, into the vector's spare
/// capacity: outputs that are overwritten anyway skip the zero fill of `vec![0.0; len]`
/// (a full memory pass, about 5% of a training step).
///
/// # Safety
/// `fill` must write every element of the slice it is given.
pub(crate) unsafe fn written(
    len: usize,
    fill: impl FnOnce(&mut [std::mem::MaybeUninit<f32>]),
) -> Vec<f32> {
    let mut out = Vec::with_capacity(len);
    fill(&mut out.spare_capacity_mut()[..len]);
    // SAFETY: all len elements are initialised (caller contract).
    unsafe { out.set_len(len) };
    out
}
