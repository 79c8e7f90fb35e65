//! Deterministic randomness. Every random choice in the subnet (corpus, assignment, eval batches,
//! initial weights) comes from a seed derived from (window seed, role salt, uid), so every party that
//! knows the inputs computes the same values on any machine.

/// SplitMix64: tiny, fast and fully specified, so the stream never changes with a crate upgrade.
#[derive(Clone, Debug)]
pub struct SeededRng {
    state: u64,
}

impl SeededRng {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A generator for one purpose, keyed by several parts (seed, salt, uid, index, ...).
    pub fn derived(parts: &[u64]) -> Self {
        Self::new(derive_seed(parts))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.state)
    }

    /// Uniform in [0, 1) with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [0, n). Lemire's multiply-shift; the bias for n << 2^64 is negligible
    /// and, more importantly, identical everywhere.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0) has no values");
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Standard normal by Box-Muller (one value per call, the second is discarded for simplicity).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Folds several parts into one seed; order matters, so (a, b) and (b, a) differ.
pub fn derive_seed(parts: &[u64]) -> u64 {
    parts.iter().fold(0x6A09_E667_F3BC_C908u64, |acc, &p| {
        mix(acc ^ mix(p.wrapping_add(0x9E37_79B9_7F4A_7C15)))
    })
}

/// Role salts keep the streams of different purposes apart.
pub mod salt {
    pub const ASSIGNMENT: u64 = 0x4153_5349_474E;
    pub const TRAIN_BATCHES: u64 = 0x0054_5241_494E;
    pub const HELD_BACK_SLOTS: u64 = 0x0048_454C_4442;
    pub const EVAL_BATCHES: u64 = 0x4556_414C;
    pub const UNASSIGNED: u64 = 0x554E_4153;
    pub const FRESH: u64 = 0x4652_4553;
    pub const ASSIGNMENT_CHECK: u64 = 0x4143_484B;
    pub const INIT: u64 = 0x494E_4954;
    pub const CORPUS: u64 = 0x434F_5250;
    pub const PAGE: u64 = 0x5041_4745;
    pub const TABLE_ROWS: u64 = 0x5441_424C;
    pub const GROUPS: u64 = 0x4752_5053;
    pub const INNER_STATE: u64 = 0x494E_5354;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut r = SeededRng::derived(&[1, 2]);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..4)
            .map({
                let mut r = SeededRng::derived(&[1, 2]);
                move |_| r.next_u64()
            })
            .collect();
        let c = SeededRng::derived(&[2, 1]).next_u64();
        assert_eq!(a, b);
        assert_ne!(a[0], c);
    }

    #[test]
    fn uniform_and_normal_moments() {
        let mut r = SeededRng::new(7);
        let n = 200_000;
        let (mut s, mut s2) = (0.0, 0.0);
        for _ in 0..n {
            let x = r.normal();
            s += x;
            s2 += x * x;
        }
        let mean = s / n as f64;
        let var = s2 / n as f64 - mean * mean;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
        let mut counts = [0usize; 10];
        for _ in 0..n {
            counts[r.below(10) as usize] += 1;
        }
        for c in counts {
            assert!((c as f64 / n as f64 - 0.1).abs() < 0.005);
        }
    }
}
