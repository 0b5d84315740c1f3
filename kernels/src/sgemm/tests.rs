//! Tests of the matrix product: the AVX-512 kernel against the `gemm` crate, bit for bit.

use super::*;

fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[test]
fn transpose_rows_transposes() {
    let data: Vec<f32> = (0..PANEL * 70).map(|i| i as f32).collect();
    for (pixels, live) in [(64, 32), (63, 32), (17, 5), (16, 16), (1, 31), (40, 0)] {
        let sources: Vec<&[f32]> = data.chunks(70).take(live).collect();
        let mut rows = vec![-1f32; pixels * PANEL];
        transpose_rows(&sources, &mut rows);
        for p in 0..pixels {
            for q in 0..PANEL {
                let want = if q < live { data[q * 70 + p] } else { 0.0 };
                assert_eq!(rows[p * PANEL + q], want, "{pixels} {live} {p} {q}");
            }
        }
    }
}

/// The defined order, written plainly: per depth block one FMA chain from zero, then
/// added to the destination.
fn reference(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32], acc: bool) {
    let kc = depth_block(m, n, k);
    for i in 0..m {
        for j in 0..n {
            let mut out = if acc { c[i * n + j] } else { 0.0 };
            let mut k0 = 0;
            while k0 < k {
                let mut s = 0f32;
                for p in k0..(k0 + kc).min(k) {
                    s = a[i * k + p].mul_add(b[p * n + j], s);
                }
                out = if k0 == 0 && !acc { s } else { out + s };
                k0 += kc;
            }
            c[i * n + j] = out;
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn product(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    acc: bool,
    par: bool,
    b_transposed: bool,
) {
    let rhs = if b_transposed {
        Mat {
            ptr: b.as_ptr(),
            rs: 1,
            cs: k as isize,
        }
    } else {
        Mat {
            ptr: b.as_ptr(),
            rs: n as isize,
            cs: 1,
        }
    };
    let lhs = Mat {
        ptr: a.as_ptr(),
        rs: k as isize,
        cs: 1,
    };
    // SAFETY: buffers sized m×k, k×n, m×n.
    unsafe { sgemm(m, n, k, c.as_mut_ptr(), n, acc, lhs, &rhs, par) }
}

#[test]
fn matches_the_defined_summation_order_bit_for_bit() {
    let shapes = [
        (64, 512, 576),
        (13, 100, 1200),
        (300, 49, 4608),
        (65, 33, 3),
        (100, 17, 2049),
        (20, 20, 700),
        (512, 196, 2304),
        // Last row panels of 4 and 5 rows (the 4- and 8-row tiles at their edges).
        (18, 40, 300),
        (33, 70, 129),
    ];
    for (s, &(m, n, k)) in shapes.iter().enumerate() {
        let a = random(m * k, 3 * s as u64 + 1);
        let b = random(k * n, 3 * s as u64 + 2);
        let bt: Vec<f32> = (0..n * k).map(|q| b[(q % k) * n + q / k]).collect();
        let c0 = random(m * n, 3 * s as u64 + 3);
        for acc in [false, true] {
            let mut want = c0.clone();
            reference(m, n, k, &a, &b, &mut want, acc);
            for (par, transposed) in [(false, false), (true, false), (false, true)] {
                let mut got = c0.clone();
                let rhs = if transposed { &bt } else { &b };
                product(m, n, k, &a, rhs, &mut got, acc, par, transposed);
                let bad = got
                    .iter()
                    .zip(&want)
                    .position(|(x, y)| x.to_bits() != y.to_bits());
                if let Some(q) = bad {
                    eprintln!(
                        "first mismatch at {q}: {} vs {}, count {}",
                        got[q],
                        want[q],
                        got.iter()
                            .zip(&want)
                            .filter(|(x, y)| x.to_bits() != y.to_bits())
                            .count()
                    );
                }
                let same = bad.is_none();
                assert!(
                    same,
                    "{m}x{n}x{k} acc={acc} par={par} transposed={transposed} ({})",
                    backend()
                );
            }
        }
    }
}

/// A product written in blocks of columns (images of a batch) gives the plain product's
/// values, bit for bit, at the block layout's places, and leaves every other value of the
/// destination alone: blocks narrower than a vector, straddling tiles, and the last
/// partial tile, overwriting and accumulating.
#[test]
fn blocked_output_places_the_plain_product() {
    for (s, &(m, n, k, block)) in [
        (30, 196, 300, 49),
        (70, 100, 64, 5),
        (13, 64, 40, 1),
        (40, 90, 33, 45),
        (25, 40, 20, 16),
        (3, 20, 5, 4), // too small for the AVX-512 kernel: the `gemm` crate
    ]
    .iter()
    .enumerate()
    {
        let a = random(m * k, 7 * s as u64 + 1);
        let b = random(k * n, 7 * s as u64 + 2);
        let blocks = n.div_ceil(block);
        // Each block [m, block] with a gap of 3 values after it, which must stay as is.
        let block_stride = m * block + 3;
        let out = Out {
            rs: block,
            block,
            block_stride,
        };
        let c0 = random(blocks * block_stride, 7 * s as u64 + 3);
        for acc in [false, true] {
            let mut plain: Vec<f32> = (0..m * n).map(|q| c0[out.offset(q / n, q % n)]).collect();
            product(m, n, k, &a, &b, &mut plain, acc, true, false);
            let lhs = Mat {
                ptr: a.as_ptr(),
                rs: k as isize,
                cs: 1,
            };
            // SAFETY: a is m × k and outlives lhs.
            let lhs = unsafe { Lhs::new(lhs, m, k) };
            let rhs = Mat {
                ptr: b.as_ptr(),
                rs: n as isize,
                cs: 1,
            };
            let mut got = c0.clone();
            // SAFETY: `out` addresses inside got for m rows and n columns.
            unsafe { sgemm_to(&lhs, n, got.as_mut_ptr(), out, acc, &rhs, true) };
            let mut want = c0.clone();
            for (q, &v) in plain.iter().enumerate() {
                want[out.offset(q / n, q % n)] = v;
            }
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&got),
                bits(&want),
                "{m}x{n}x{k} block {block} acc={acc}"
            );
        }
    }
}
