//! Pooling: max pooling with PyTorch's gradient, adaptive and global average pooling.

use candle_core::{DType, Tensor};

use super::kernels::MaxPool;
use crate::error::{Error, Result};
use crate::taps::Ctx;

/// Max pooling with PyTorch's gradient: one winner per window (the first maximum in
/// raster order), for any kernel, stride and padding. Built from strided views + argmax +
/// gather because candle's max_pool2d has no backward unless kernel == stride and spreads
/// the gradient over ties.
pub fn max_pool2d(
    x: &Tensor,
    kernel: usize,
    stride: usize,
    padding: usize,
    ctx: &Ctx,
) -> Result<Tensor> {
    let (_n, _c, h, w) = x.dims4()?;
    if h + 2 * padding < kernel || w + 2 * padding < kernel {
        return Err(Error::Shape {
            what: "max-pool input".into(),
            expected: format!("spatial size >= {} after padding", kernel),
            got: format!("{h}x{w}"),
        });
    }
    let ho = (h + 2 * padding - kernel) / stride + 1;
    let wo = (w + 2 * padding - kernel) / stride + 1;
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        let op = MaxPool {
            kernel,
            stride,
            padding,
        };
        let x = x.contiguous()?;
        if !ctx.needs_graph() {
            return Ok(x.apply_op1_no_bwd(&op)?);
        }
        return Ok(x.apply_op1(op)?);
    }
    if !ctx.needs_graph() && padding == 0 && kernel == stride {
        // Inference: candle's kernel gives the max; it drops a NaN unless the NaN comes first
        // in its window, so windows holding one are set to NaN after (PyTorch propagates it).
        let y = x.max_pool2d_with_stride(kernel, stride)?;
        let nan = x.ne(x)?.to_dtype(x.dtype())?;
        let has_nan = nan.max_pool2d_with_stride(kernel, stride)?.gt(0f32)?;
        let nans = Tensor::full(f32::NAN, y.shape(), y.device())?.to_dtype(y.dtype())?;
        return Ok(has_nan.where_cond(&nans, &y)?);
    }
    // Edge padding is equivalent to -inf padding for a max: the padded value is a copy of
    // an element already inside the window.
    let need_h = (kernel - 1) + stride * ho;
    let need_w = (kernel - 1) + stride * wo;
    let extra_h = need_h.saturating_sub(h + padding);
    let extra_w = need_w.saturating_sub(w + padding);
    let xp = x
        .pad_with_same(2, padding, extra_h)?
        .pad_with_same(3, padding, extra_w)?;
    let mut views = Vec::with_capacity(kernel * kernel);
    for dy in 0..kernel {
        let rows = strided(&xp, 2, dy, stride, ho)?;
        for dx in 0..kernel {
            views.push(strided(&rows, 3, dx, stride, wo)?);
        }
    }
    let stacked = Tensor::stack(&views, 0)?;
    let idx = stacked.detach().argmax_keepdim(0)?;
    // As ATen, a NaN wins its window and the last NaN in raster order (the order of the
    // views) wins over earlier ones; argmax's choice among NaNs is unspecified. The rank of
    // view v is v + 1 where it holds NaN, else 0; the largest rank is the last NaN.
    let stacked_d = stacked.detach();
    let ranks = Tensor::arange(1u32, (kernel * kernel) as u32 + 1, x.device())?
        .to_dtype(x.dtype())?
        .reshape((kernel * kernel, 1, 1, 1, 1))?;
    let rank = stacked_d
        .ne(&stacked_d)?
        .to_dtype(x.dtype())?
        .broadcast_mul(&ranks)?;
    let has_nan = rank.max_keepdim(0)?.gt(0f32)?;
    let idx = has_nan.where_cond(&rank.argmax_keepdim(0)?, &idx)?;
    Ok(stacked.gather(&idx, 0)?.squeeze(0)?)
}

/// Elements start, start+step, ..., `count` of them, along `dim`.
fn strided(x: &Tensor, dim: usize, start: usize, step: usize, count: usize) -> Result<Tensor> {
    let t = x.narrow(dim, start, step * count)?;
    if step == 1 {
        return Ok(t);
    }
    let mut shape = t.dims().to_vec();
    shape[dim] = count;
    shape.insert(dim + 1, step);
    Ok(t.reshape(shape)?.narrow(dim + 1, 0, 1)?.squeeze(dim + 1)?)
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
