//! The random numbers of the crate (data order and augmentation, synthetic images, weight
//! initialisation, evaluation): a small xoshiro256** generator whose whole state is a
//! `pub [u64; 4]`, so checkpoints can store and restore it exactly.

/// xoshiro256** seeded through SplitMix64. The full state is `state`, so serialising it and
/// building `Rng { state }` later continues the exact same stream. An all-zero state (which
/// xoshiro cannot leave) is never produced by [`Rng::new`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rng {
    pub state: [u64; 4],
}

fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Order-sensitive combination of two words into a well-mixed seed.
pub fn mix_seed(a: u64, b: u64) -> u64 {
    let mut x = a;
    let ha = splitmix64(&mut x);
    let mut y = b ^ ha.rotate_left(17);
    splitmix64(&mut y)
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut state = [0u64; 4];
        for s in &mut state {
            *s = splitmix64(&mut x);
        }
        if state == [0; 4] {
            state[0] = 1;
        }
        Rng { state }
    }

    /// An independent stream for `seed` and a path of stream identifiers (e.g. epoch, index).
    pub fn derive(seed: u64, stream: &[u64]) -> Self {
        Rng::new(stream.iter().fold(seed, |acc, &s| mix_seed(acc, s)))
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 24 bits of precision (every value exactly representable).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// Uniform in [0, 1) with 53 bits of precision.
    pub fn uniform_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.uniform()
    }

    /// Unbiased integer in [0, n) (Lemire's multiply-and-reject); `below(0)` is 0.
    pub fn below(&mut self, n: usize) -> usize {
        if n <= 1 {
            return 0;
        }
        let n = n as u64;
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        if (m as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
            }
        }
        (m >> 64) as usize
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }

    /// `k` distinct indices of `0..n` drawn uniformly (the first `k` of a shuffle), in
    /// increasing order; all of them when `k >= n`.
    pub fn sorted_sample(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        if k >= n {
            return order;
        }
        self.shuffle(&mut order);
        order.truncate(k);
        order.sort_unstable();
        order
    }

    /// Standard normal via Box–Muller; no spare value is cached so `state` stays the whole state.
    pub fn normal(&mut self) -> f32 {
        let u1 = 1.0 - self.uniform_f64(); // (0, 1]: keeps ln finite
        let u2 = self.uniform_f64();
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
}

/// Stream identifiers for [`Rng::derive`], so the different uses never share random numbers.
pub(super) const STREAM_LABELS: u64 = 0x6C61_6265_6C73; // "labels"
pub(super) const STREAM_IMAGE: u64 = 0x0069_6D61_6765; // "image"
pub(super) const STREAM_ORDER: u64 = 0x006F_7264_6572; // "order"
pub(super) const STREAM_SAMPLE: u64 = 0x7361_6D70_6C65; // "sample"

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_determinism_and_state_round_trip() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        let xs: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());

        // Restore mid-stream from the serialised state: identical continuation.
        let json = serde_json::to_string(&a).unwrap();
        let mut restored: Rng = serde_json::from_str(&json).unwrap();
        assert_eq!(restored, a);
        let mut copy = Rng { state: a.state };
        for _ in 0..50 {
            let v = a.next_u64();
            assert_eq!(restored.next_u64(), v);
            assert_eq!(copy.next_u64(), v);
        }
        assert_eq!(restored.normal(), a.normal());
    }

    #[test]
    fn rng_distributions() {
        let mut r = Rng::new(7);
        let n = 20000;
        let mut sum = 0.0f64;
        let mut sq = 0.0f64;
        for _ in 0..n {
            let u = r.uniform();
            assert!((0.0..1.0).contains(&u));
            let z = f64::from(r.normal());
            assert!(z.is_finite());
            sum += z;
            sq += z * z;
        }
        let mean = sum / n as f64;
        let var = sq / n as f64 - mean * mean;
        assert!(mean.abs() < 0.05, "normal mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "normal variance {var}");

        let mut counts = [0usize; 7];
        for _ in 0..7000 {
            counts[r.below(7)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(r.below(0), 0);
        assert_eq!(r.below(1), 0);

        let mut v: Vec<usize> = (0..100).collect();
        r.shuffle(&mut v);
        assert_ne!(v, (0..100).collect::<Vec<_>>());
        v.sort();
        assert_eq!(v, (0..100).collect::<Vec<_>>());
    }
}
