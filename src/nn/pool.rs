//! Pooling: max pooling with PyTorch's gradient, adaptive and global average pooling.

use candle_core::Tensor;

use super::kernels::max_pool;
use crate::error::Result;
use crate::taps::Ctx;

/// Max pooling with PyTorch's gradient: one winner per window (the first maximum in
/// raster order), for any kernel, stride and padding (see
/// [`zerobias_kernels::pool::max_pool2d`]).
pub fn max_pool2d(
    x: &Tensor,
    kernel: usize,
    stride: usize,
    padding: usize,
    ctx: &Ctx,
) -> Result<Tensor> {
    Ok(max_pool(x, kernel, stride, padding, ctx.needs_graph())?)
}

/// PyTorch's AdaptiveAvgPool2d: bin i covers [floor(i·H/O), ceil((i+1)·H/O)), bins overlap
/// when H is not a multiple of O and repeat when H < O. Done as two small matmuls.
pub fn adaptive_avg_pool2d(x: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if h == out_h && w == out_w {
        return Ok(x.clone());
    }
    let ph = pool_matrix(h, out_h, x.device())?; // [out_h, h]
    let pw = pool_matrix(w, out_w, x.device())?; // [out_w, w]
    let y = x.reshape((n * c * h, w))?.matmul(&pw.t()?)?; // [n*c*h, out_w]
    let y = y.reshape((n * c, h, out_w))?;
    let y = ph
        .unsqueeze(0)?
        .broadcast_as((n * c, out_h, h))?
        .contiguous()?
        .matmul(&y)?;
    Ok(y.reshape((n, c, out_h, out_w))?)
}

fn pool_matrix(size: usize, out: usize, device: &candle_core::Device) -> Result<Tensor> {
    let mut m = vec![0f32; out * size];
    for i in 0..out {
        let start = (i * size) / out;
        let end = ((i + 1) * size).div_ceil(out);
        let len = (end - start) as f32;
        for j in start..end {
            m[i * size + j] = 1.0 / len;
        }
    }
    Ok(Tensor::from_vec(m, (out, size), device)?)
}

/// Mean over H and W, as ResNet's global pool.
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    Ok(x.mean((2, 3))?)
}
