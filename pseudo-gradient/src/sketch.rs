//! Count sketches of pseudo-gradients: a fixed-size signed random projection from which the cosine
//! of two gradients is estimated in time that does not grow with their size. A validator looks for
//! copies by estimating every pair's cosine from sketches and computing the exact cosine only of the
//! pairs whose estimate comes near the copy threshold.
//!
//! Each of `ROWS` rows hashes every parameter to one of `WIDTH` buckets with a random sign, both
//! drawn from a seed; a row's cosine estimates the true one with a standard deviation of at most
//! about sqrt(2 / WIDTH) (0.03) whatever the vectors, and the estimate is the median of the rows'.
//! The seed is the validator's secret of the window, drawn after the commitments are fixed, so a
//! miner cannot shape a gradient against the projection.

use crate::Sparse;

/// Rows of a sketch: the estimate is their median.
pub const ROWS: usize = 5;
/// Buckets of a row.
pub const WIDTH: usize = 2048;

/// A gradient's count sketch under one seed.
#[derive(Clone, Debug, PartialEq)]
pub struct Sketch {
    /// `ROWS` rows of `WIDTH` sums, row after row.
    sums: Vec<f32>,
    /// Each row's L2 norm.
    norms: [f64; ROWS],
}

impl Sketch {
    /// The sketch of `v` under `seed`.
    pub fn of(v: &Sparse, seed: u64) -> Sketch {
        let mut sums = vec![0f32; ROWS * WIDTH];
        for (i, x) in v.iter() {
            for (row, bucket_sums) in sums.chunks_exact_mut(WIDTH).enumerate() {
                let h = mix(seed ^ mix((i as u64) << 3 | row as u64));
                let bucket = (h as usize) % WIDTH;
                let sign = if h >> 63 == 1 { -1.0 } else { 1.0 };
                bucket_sums[bucket] += sign * x;
            }
        }
        Sketch::with_sums(sums)
    }

    /// The sketch whose rows are `sums`, with each row's norm.
    fn with_sums(sums: Vec<f32>) -> Sketch {
        let mut norms = [0f64; ROWS];
        for (norm, row) in norms.iter_mut().zip(sums.chunks_exact(WIDTH)) {
            *norm = row.iter().map(|&s| s as f64 * s as f64).sum::<f64>().sqrt();
        }
        Sketch { sums, norms }
    }

    /// The estimated cosine with `other` (sketched under the same seed): the median of the rows'
    /// (0 for a row where either is zero).
    pub fn cosine(&self, other: &Sketch) -> f64 {
        let mut rows = [0f64; ROWS];
        for (r, estimate) in rows.iter_mut().enumerate() {
            let (a, b) = (self.row(r), other.row(r));
            let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
            let norms = self.norms[r] * other.norms[r];
            *estimate = if norms == 0.0 { 0.0 } else { dot / norms };
        }
        rows.sort_by(f64::total_cmp);
        rows[ROWS / 2]
    }

    /// The sketch of `v - amount * d`, where `self` is `v`'s sketch and `direction` is `d`'s (the
    /// sketch is linear).
    pub fn minus(&self, direction: &Sketch, amount: f64) -> Sketch {
        let sums: Vec<f32> = self
            .sums
            .iter()
            .zip(&direction.sums)
            .map(|(&s, &d)| (s as f64 - amount * d as f64) as f32)
            .collect();
        Sketch::with_sums(sums)
    }

    fn row(&self, r: usize) -> &[f32] {
        &self.sums[r * WIDTH..(r + 1) * WIDTH]
    }
}

/// SplitMix64's finalizer: a well-mixed 64-bit hash of `z`.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A top-k-like vector: `nonzeros` entries spread over `len`, drawn from `seed`.
    fn payload(len: usize, nonzeros: usize, seed: u64) -> Vec<f32> {
        let mut v = vec![0f32; len];
        let mut state = seed;
        for k in 0..nonzeros {
            state = mix(state ^ k as u64);
            let at = (state as usize) % len;
            v[at] = ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5;
        }
        v
    }

    /// `a` with `noise` of `b` mixed in: cosines from near 0 to near 1.
    fn blend(a: &[f32], b: &[f32], noise: f32) -> Vec<f32> {
        a.iter().zip(b).map(|(&x, &y)| x + noise * y).collect()
    }

    /// A sketch less a multiple of another is the sketch of the vector less that multiple.
    #[test]
    fn a_sketch_is_linear() {
        let (a, d) = (payload(50_000, 5_000, 1), payload(50_000, 5_000, 2));
        let rest: Vec<f32> = a.iter().zip(&d).map(|(&x, &y)| x - 0.75 * y).collect();
        let (sa, sd) = (
            Sketch::of(&Sparse::from_dense(&a), 9),
            Sketch::of(&Sparse::from_dense(&d), 9),
        );
        let direct = Sketch::of(&Sparse::from_dense(&rest), 9);
        let minus = sa.minus(&sd, 0.75);
        for (x, y) in minus.sums.iter().zip(&direct.sums) {
            assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{x} {y}");
        }
        assert!((minus.cosine(&direct) - 1.0).abs() < 1e-9);
    }

    /// Over pairs from unrelated to near copies, and many seeds, the estimate stays within 0.12 of
    /// the exact cosine (the margin a validator leaves is twice that).
    #[test]
    fn the_estimate_stays_near_the_exact_cosine() {
        let len = 200_000;
        let base = payload(len, 20_000, 1);
        let other = payload(len, 20_000, 2);
        let mut worst = 0f64;
        for (k, noise) in [0.0, 0.1, 0.3, 0.6, 1.0, 3.0, 100.0].iter().enumerate() {
            let mixed = blend(&base, &other, *noise);
            let (a, b) = (Sparse::from_dense(&base), Sparse::from_dense(&mixed));
            let exact = a.cosine(&b);
            for seed in 0..20u64 {
                let seed = seed * 1000 + k as u64;
                let estimate = Sketch::of(&a, seed).cosine(&Sketch::of(&b, seed));
                worst = worst.max((estimate - exact).abs());
            }
        }
        eprintln!("worst error of the estimate: {worst:.4}");
        assert!(worst < 0.12, "worst error {worst}");
    }

    #[test]
    fn a_vector_is_its_own_copy_and_zero_is_like_nothing() {
        let v = Sparse::from_dense(&payload(10_000, 500, 3));
        let s = Sketch::of(&v, 9);
        assert!((s.cosine(&s) - 1.0).abs() < 1e-9);
        let zero = Sketch::of(&Sparse::from_dense(&[0.0; 10_000]), 9);
        assert_eq!(s.cosine(&zero), 0.0);
        let scaled: Vec<f32> = v.to_dense().iter().map(|x| -3.0 * x).collect();
        let flipped = Sketch::of(&Sparse::from_dense(&scaled), 9);
        assert!((s.cosine(&flipped) + 1.0).abs() < 1e-6);
    }
}
