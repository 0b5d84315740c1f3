//! Tests of the convolution kernels against candle's convolution and each other.

use super::im2col::shifted_run;
use super::*;
use candle_core::{Device, Var};

fn randn(shape: &[usize], seed: u64) -> Tensor {
    // Deterministic pseudo-random values (xorshift), so failures reproduce.
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
    let s = b.abs().unwrap().max_all().unwrap();
    d.to_scalar::<f32>().unwrap() / s.to_scalar::<f32>().unwrap().max(1e-12)
}

/// (n, c_in, h, w, c_out, k, stride, pad)
type Case = (usize, usize, usize, usize, usize, usize, usize, usize);
const CASES: &[Case] = &[
    (1, 3, 17, 19, 8, 7, 2, 3),
    (2, 3, 32, 32, 16, 7, 2, 3),
    (3, 8, 9, 9, 12, 1, 2, 0),
    (2, 16, 10, 10, 8, 1, 1, 0),
    (1, 5, 12, 11, 7, 3, 1, 1),
    (4, 6, 13, 13, 9, 3, 2, 1),
    (1, 4, 40, 40, 6, 3, 1, 1), // more than one pixel tile
    (2, 3, 64, 64, 4, 3, 1, 1), // several tiles, across images
    (2, 4, 33, 31, 5, 3, 2, 1),
    (2, 2, 5, 5, 3, 3, 1, 0),
    (1, 2, 7, 7, 3, 5, 3, 2),
    (1, 2, 2, 2, 3, 3, 1, 1),
    (2, 24, 20, 20, 40, 3, 1, 1), // several gemm row and column panels
    (3, 16, 7, 7, 72, 3, 1, 1),   // small maps: all images in one product
    (3, 80, 9, 9, 70, 1, 1, 0),   // 1×1, small maps, input gradient as a convolution
    (2, 10, 12, 12, 70, 3, 2, 1), // strided small maps: images straddle pixel blocks
    (32, 8, 16, 16, 16, 3, 1, 1), // quickstart VGG, 16×16 stage: few output channels
    (32, 16, 16, 16, 16, 3, 1, 1),
    (5, 3, 16, 16, 66, 3, 1, 1),
    (2, 3, 6, 9, 5, 5, 1, 2), // "same" stride 1 (contiguous im2col runs): wide kernel
    (1, 2, 1, 4, 3, 3, 1, 1), // … a single row
    (2, 2, 3, 2, 2, 7, 1, 3), // … a kernel wider than the image
    (4, 8, 5, 3, 40, 3, 1, 1), // … small maps batched, runs across images
    (2, 8, 28, 30, 16, 3, 1, 1), // rows read in place from a padded copy
    (1, 4, 29, 28, 10, 5, 1, 2), // … a wider kernel
    (3, 20, 30, 31, 60, 3, 1, 1), // … several row and column panels
    (2, 3, 8, 8, 5, 3, 2, 0), // stride phases wider than the output (row by row)
    (2, 3, 9, 9, 40, 3, 2, 2), // … padding past the phase planes
    (1, 2, 10, 13, 4, 3, 3, 1), // … stride 3
    (2, 4, 7, 9, 6, 1, 2, 1), // … 1×1 with padding
    (2, 3, 13, 13, 70, 5, 2, 2), // … 5×5, several row panels
    (9, 6, 14, 14, 80, 3, 2, 1), // … small maps, all images in one product
    (2, 32, 20, 16, 40, 3, 1, 1), // kernel gradient from a channels-last copy
    (1, 64, 9, 18, 20, 5, 1, 2), // … a wider kernel, two channel panels
    (2, 80, 9, 11, 40, 3, 2, 1), // direct: strided, two channel blocks, tiles across images
    (1, 48, 30, 30, 33, 3, 1, 1), // … one image split over threads, a part-filled panel
    (3, 17, 6, 6, 20, 5, 1, 2), // … 17 channels (a part-filled transpose), 5×5
    (2, 130, 4, 5, 18, 3, 1, 1), // … three channel blocks, the last of 2 channels
    (4, 16, 19, 17, 64, 3, 1, 1), // … rows of the tiles across output rows
];

/// Winograd's forward and input gradient against im2col + gemm and its kernel gradient
/// against the definition, on geometries smaller than those it is dispatched to (the
/// dispatch thresholds are about speed only).
#[cfg(target_arch = "x86_64")]
#[test]
fn winograd_matches_im2col() {
    let cases = [
        (2, 64, 7, 7, 64, 1),   // odd sizes: part-filled tiles
        (1, 70, 10, 12, 66, 0), // no padding
        (3, 20, 5, 9, 40, 2),   // padding 2 (its input gradient unpadded)
        (2, 256, 14, 14, 256, 1),
        (1, 8, 40, 45, 8, 1), // one image in bands of tile rows; rows of 16+ pairs
        (9, 16, 6, 6, 16, 1), // several images per task, the last task with fewer
    ];
    let close = |got: &[f32], want: &[f32], what: &str| {
        let num: f32 = got.iter().zip(want).map(|(a, b)| (a - b) * (a - b)).sum();
        let den: f32 = want.iter().map(|b| b * b).sum();
        let r = (num / den.max(1e-30)).sqrt();
        assert!(r < 1e-5, "{what}: rel err {r}");
    };
    for (i, &(n, c, h, w, o, p)) in cases.iter().enumerate() {
        let x = randn(&[n, c, h, w], 300 + i as u64);
        let wt = randn(&[o, c, 3, 3], 400 + i as u64);
        let g = Geom::new(x.dims(), wt.dims(), p, 1).unwrap();
        let (xv, wv) = (flat(&x), flat(&wt));
        let got = winograd::forward(&g, &xv, winograd::forward_tap(&g, &wv));
        close(&got, &forward(&g, &xv, &wv), &format!("case {i} forward"));
        // The input gradient: the flipped, transposed kernel written out, through im2col.
        let gr = flat(&randn(&[n, o, g.oh, g.ow], 500 + i as u64));
        let gt = g.transposed().unwrap();
        let mut flipped = vec![0f32; wv.len()];
        for (oo, ci, t) in
            (0..o).flat_map(|a| (0..c).flat_map(move |b| (0..9).map(move |t| (a, b, t))))
        {
            flipped[(ci * o + oo) * 9 + 8 - t] = wv[(oo * c + ci) * 9 + t];
        }
        let got = winograd::forward(&gt, &gr, winograd::input_grad_tap(&g, &wv));
        close(
            &got,
            &forward(&gt, &gr, &flipped),
            &format!("case {i} input gradient"),
        );
        // The kernel gradient against its definition, summed in f64.
        let mut want = vec![0f64; wv.len()];
        for (b, oo, ci) in
            (0..n).flat_map(|b| (0..o).flat_map(move |oo| (0..c).map(move |ci| (b, oo, ci))))
        {
            let dy = &gr[(b * o + oo) * g.ohw()..][..g.ohw()];
            let xp = &xv[(b * c + ci) * h * w..][..h * w];
            for t in 0..9 {
                let (ky, kx) = (t / 3, t % 3);
                let mut acc = 0f64;
                for (oy, row) in dy.chunks_exact(g.ow).enumerate() {
                    let Some(y) = (oy + ky).checked_sub(p).filter(|&y| y < h) else {
                        continue;
                    };
                    for (ox, &d) in row.iter().enumerate() {
                        if let Some(xx) = (ox + kx).checked_sub(p).filter(|&xx| xx < w) {
                            acc += d as f64 * xp[y * w + xx] as f64;
                        }
                    }
                }
                want[(oo * c + ci) * 9 + t] += acc;
            }
        }
        let want: Vec<f32> = want.iter().map(|&v| v as f32).collect();
        close(
            &winograd::weight_grad(&g, &xv, &gr),
            &want,
            &format!("case {i} kernel gradient"),
        );
        // One image per chunk: the products sum over the chunks.
        close(
            &winograd::weight_grad_in_chunks(&g, &xv, &gr, 1),
            &want,
            &format!("case {i} kernel gradient, image by image"),
        );
    }
}

/// Winograd's tasks depend on the thread count; its values (forward, kernel gradient)
/// must not.
#[cfg(target_arch = "x86_64")]
#[test]
fn winograd_values_do_not_depend_on_the_thread_count() {
    let x = randn(&[8, 512, 6, 6], 600);
    let wt = randn(&[512, 512, 3, 3], 601);
    let g = Geom::new(x.dims(), wt.dims(), 1, 1).unwrap();
    let (xv, wv) = (flat(&x), flat(&wt));
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let y = winograd::forward(&g, &xv, winograd::forward_tap(&g, &wv));
            let dw = winograd::weight_grad(&g, &xv, &y);
            (y, dw)
        })
    };
    let one = run(1);
    assert!(one == run(3), "1 vs 3 threads");
    assert!(one == run(8), "1 vs 8 threads");
}

/// Whether the direct convolution or Winograd's (not im2col + gemm) computes case
/// `g`'s forward.
fn direct_forward(g: &Geom) -> bool {
    #[cfg(target_arch = "x86_64")]
    if direct::applies(g) || winograd::applies(g) {
        return true;
    }
    let _ = g;
    false
}

#[test]
fn forward_matches_candle() {
    for (i, &(n, c, h, w, o, k, s, p)) in CASES.iter().enumerate() {
        let x = randn(&[n, c, h, w], 1 + i as u64);
        let wt = randn(&[o, c, k, k], 100 + i as u64);
        let ours = conv2d(&x, &wt, p, s).unwrap();
        let theirs = x.conv2d(&wt, p, s, 1, 1).unwrap();
        let r = max_rel(&ours, &theirs);
        assert!(r < 1e-5, "case {i}: rel err {r}");
    }
}

/// The im2col path is bit-identical to candle's kernel. (The direct convolution sums in
/// another order, as PyTorch's does too; `forward_matches_candle` covers it.)
#[test]
fn forward_is_bit_identical_to_candle() {
    for (i, &(n, c, h, w, o, k, s, p)) in CASES.iter().enumerate() {
        let x = randn(&[n, c, h, w], 1 + i as u64);
        let wt = randn(&[o, c, k, k], 100 + i as u64);
        if direct_forward(&Geom::new(x.dims(), wt.dims(), p, s).unwrap()) {
            continue;
        }
        let ours = conv2d(&x, &wt, p, s).unwrap();
        let theirs = x.conv2d(&wt, p, s, 1, 1).unwrap();
        let d = (ours - theirs).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0, "case {i}");
    }
}

#[test]
fn forward_accepts_strided_input() {
    let x = randn(&[2, 5, 9, 9], 7).transpose(2, 3).unwrap();
    let wt = randn(&[4, 5, 3, 3], 8);
    let ours = conv2d(&x, &wt, 1, 1).unwrap();
    let theirs = x.contiguous().unwrap().conv2d(&wt, 1, 1, 1, 1).unwrap();
    assert!(max_rel(&ours, &theirs) < 1e-5);
}

#[test]
fn bad_shapes_are_errors() {
    let empty = Tensor::zeros((0, 3, 4, 4), DType::F32, &Device::Cpu).unwrap();
    let _ = conv2d(&empty, &randn(&[2, 3, 3, 3], 2), 1, 1); // no panic
    let x = randn(&[1, 3, 4, 4], 1);
    assert!(conv2d(&x, &randn(&[2, 4, 3, 3], 2), 0, 1).is_err());
    assert!(conv2d(&x, &randn(&[2, 3, 7, 7], 2), 1, 1).is_err());
    assert!(conv2d(&x, &randn(&[2, 3, 3, 3], 2), 0, 0).is_err());
}

/// Gradients of Σ y·r (r random) for both operands, ours and candle's.
fn grads(
    x: &Var,
    w: &Var,
    s: usize,
    p: usize,
    r: &Tensor,
    ours: bool,
) -> (Option<Tensor>, Option<Tensor>) {
    let y = if ours {
        conv2d(x.as_tensor(), w.as_tensor(), p, s).unwrap()
    } else {
        x.as_tensor().conv2d(w.as_tensor(), p, s, 1, 1).unwrap()
    };
    let gs = (y * r).unwrap().sum_all().unwrap().backward().unwrap();
    (
        gs.get(x.as_tensor()).cloned(),
        gs.get(w.as_tensor()).cloned(),
    )
}

#[test]
fn shifted_run_matches_its_definition() {
    // Every plane shape against output widths, shifts and runs, the output prefilled
    // with NaN so that a value not written shows.
    for (ph, pw) in [(1, 1), (2, 3), (4, 4), (5, 2)] {
        let plane: Vec<f32> = (0..ph * pw).map(|i| i as f32 + 1.0).collect();
        for ow in 1..=6 {
            for dy in -3..=3isize {
                for dx in -3..=3isize {
                    for (q0, len) in [(0, 1), (0, 3 * ow), (1, 2 * ow + 1), (ow, ow)] {
                        let mut out = vec![f32::NAN; len];
                        shifted_run(&plane, (ph, pw), ow, (dy, dx), q0, &mut out);
                        for (j, &v) in out.iter().enumerate() {
                            let (oy, ox) = (((q0 + j) / ow) as isize, ((q0 + j) % ow) as isize);
                            let (y, x) = (oy + dy, ox + dx);
                            let inside =
                                (0..ph as isize).contains(&y) && (0..pw as isize).contains(&x);
                            let want = if inside {
                                plane[(y * pw as isize + x) as usize]
                            } else {
                                0.0
                            };
                            assert_eq!(
                                v.to_bits(),
                                want.to_bits(),
                                "plane {ph}×{pw}, ow {ow}, shift ({dy}, {dx}), q0 {q0}, j {j}"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn gradients_match_candle() {
    for (i, &(n, c, h, w, o, k, s, p)) in CASES.iter().enumerate() {
        let x = Var::from_tensor(&randn(&[n, c, h, w], 1 + i as u64)).unwrap();
        let wt = Var::from_tensor(&randn(&[o, c, k, k], 100 + i as u64)).unwrap();
        let g = Geom::new(x.dims(), wt.dims(), p, s).unwrap();
        let r = randn(&[n, o, g.oh, g.ow], 200 + i as u64);
        let (dx, dw) = grads(&x, &wt, s, p, &r, true);
        let (cx, cw) = grads(&x, &wt, s, p, &r, false);
        let rx = max_rel(&dx.unwrap(), &cx.unwrap());
        let rw = max_rel(&dw.unwrap(), &cw.unwrap());
        assert!(rx < 1e-5 && rw < 1e-5, "case {i}: dx {rx}, dw {rw}");
    }
}

#[test]
fn frozen_operands_get_no_gradient() {
    let x = Var::from_tensor(&randn(&[2, 3, 8, 8], 1)).unwrap();
    let w = randn(&[4, 3, 3, 3], 2); // detached, as during attribution
    let y = conv2d(x.as_tensor(), &w, 1, 1).unwrap();
    let gs = y.sum_all().unwrap().backward().unwrap();
    assert!(gs.get(x.as_tensor()).is_some());
    assert!(gs.get(&w).is_none());

    let x = randn(&[2, 3, 8, 8], 3); // raw image during training
    let w = Var::from_tensor(&randn(&[4, 3, 3, 3], 4)).unwrap();
    let y = conv2d(&x, w.as_tensor(), 1, 2).unwrap();
    let gs = y.sum_all().unwrap().backward().unwrap();
    assert!(gs.get(&x).is_none());
    assert!(gs.get(w.as_tensor()).is_some());
}

/// Also covers a non-square input with stride 3, where candle's own backward fails
/// (its conv_transpose2d output padding is only derived from the height).
#[test]
fn gradients_match_finite_differences() {
    for (n, c, h, w, o, k, s, p) in [(1, 2, 5, 4, 2, 3, 2, 1), (2, 2, 6, 7, 2, 5, 3, 2)] {
        fd_case(n, c, h, w, o, k, s, p);
    }
}

#[allow(clippy::too_many_arguments)]
fn fd_case(n: usize, c: usize, h: usize, w: usize, o: usize, k: usize, s: usize, p: usize) {
    let x0 = randn(&[n, c, h, w], 11).to_dtype(DType::F64).unwrap();
    let w0 = randn(&[o, c, k, k], 12).to_dtype(DType::F64).unwrap();
    let g = Geom::new(x0.dims(), w0.dims(), p, s).unwrap();
    let r = randn(&[n, o, g.oh, g.ow], 13);
    // The loss in f64 through candle's conv, as the reference function.
    let loss = |x: &Tensor, wt: &Tensor| -> f64 {
        let y = x.conv2d(wt, p, s, 1, 1).unwrap();
        let r = r.to_dtype(DType::F64).unwrap();
        (y * r)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let xv = Var::from_tensor(&x0.to_dtype(DType::F32).unwrap()).unwrap();
    let wv = Var::from_tensor(&w0.to_dtype(DType::F32).unwrap()).unwrap();
    let (dx, dw) = grads(&xv, &wv, s, p, &r, true);
    let check = |t0: &Tensor, an: Tensor, is_x: bool| {
        let an = an.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let base = t0.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let eps = 1e-6;
        for (i, a) in an.iter().enumerate() {
            let mut v = base.clone();
            v[i] += eps;
            let tp = Tensor::from_vec(v.clone(), t0.shape(), &Device::Cpu).unwrap();
            v[i] -= 2.0 * eps;
            let tm = Tensor::from_vec(v, t0.shape(), &Device::Cpu).unwrap();
            let num = if is_x {
                (loss(&tp, &w0) - loss(&tm, &w0)) / (2.0 * eps)
            } else {
                (loss(&x0, &tp) - loss(&x0, &tm)) / (2.0 * eps)
            };
            assert!((num - *a as f64).abs() < 1e-4, "{i}: fd {num} vs {a}");
        }
    };
    check(&x0, dx.unwrap(), true);
    check(&w0, dw.unwrap(), false);
}

/// Training must be reproducible: the weight gradient summed over a batch is bit-identical
/// from call to call, however rayon schedules the images.
#[test]
fn weight_gradient_is_deterministic() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap();
    pool.install(|| {
        let x = randn(&[32, 16, 16, 16], 21);
        let w = Var::from_tensor(&randn(&[16, 16, 3, 3], 22)).unwrap();
        let r = randn(&[32, 16, 16, 16], 23);
        let first = grads_w(&x, &w, &r);
        for _ in 0..20 {
            let again = grads_w(&x, &w, &r);
            let d = (&again - &first).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);
        }
    });
}

fn grads_w(x: &Tensor, w: &Var, r: &Tensor) -> Tensor {
    let y = conv2d(x, w.as_tensor(), 1, 1).unwrap();
    let gs = (y * r).unwrap().sum_all().unwrap().backward().unwrap();
    gs.get(w.as_tensor()).unwrap().clone()
}
