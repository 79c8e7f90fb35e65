//! The checks that catch lazy and dishonest miners, as pure functions over recorded evidence:
//! the assignment check (did the gradient learn the miner's own pages?) and the copy check
//! (near-duplicate gradients across miners).

use crate::usefulness::mean_and_standard_error;
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

/// Cosine similarity of two vectors, accumulated in f64; 0 when either is all zeros.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "cosine of vectors of different lengths");
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64, y as f64);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa.sqrt() * bb.sqrt())
    }
}

/// `|a - b| / |b|` in the L2 norm, accumulated in f64: how far a miner's dense gradient `a` is from a
/// re-execution `b`. 0 when both are zero, infinite when only `b` is.
pub fn relative_difference(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(
        a.len(),
        b.len(),
        "difference of vectors of different lengths"
    );
    let (mut diff, mut norm) = (0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        diff += (x as f64 - y as f64).powi(2);
        norm += (y as f64).powi(2);
    }
    if diff == 0.0 {
        0.0
    } else if norm == 0.0 {
        f64::INFINITY
    } else {
        (diff / norm).sqrt()
    }
}

/// Whether a spot check's relative difference is within the backend tolerance (NaN is not).
pub fn reproduces(relative_difference: f64, tolerance: f64) -> bool {
    matches!(
        relative_difference.partial_cmp(&tolerance),
        Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal)
    )
}

/// Per-batch losses behind one miner's assignment check.
///
/// Each window holds back half of every page from training. A gradient trained on the miner's pages
/// lowers the loss on the very sequences it trained on more than on held-back sequences of the same
/// pages, and more than a control does: the validator's own training of the window on pages no miner
/// was assigned, which nobody else can influence (so no one can frame a miner by training on its
/// pages). The double difference per batch i,
/// `(control_own[i] - after_own[i]) - (control_held_back[i] - after_held_back[i])`, cancels how much
/// any gradient teaches about this text in general and how hard the pages are, leaving what the
/// gradient learned from the miner's own training text; a gradient trained elsewhere (or a copy of
/// another miner's) shows none. The batches are drawn by the validator's secret seed, and a gradient
/// that raises the loss on the held-back sequences (it memorized its own instead of learning) fails
/// too.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AssignmentEvidence {
    /// Losses on the miner's own training batches after the control is applied.
    pub control_own: Vec<f32>,
    /// The same batches after the miner's gradient is applied.
    pub after_own: Vec<f32>,
    /// Losses on held-back batches of the same pages after the control.
    pub control_held_back: Vec<f32>,
    /// The same held-back batches after the miner's gradient.
    pub after_held_back: Vec<f32>,
    /// The held-back batches under the checkpoint itself.
    pub base_held_back: Vec<f32>,
}

/// The outcome of the assignment check: a one-sided paired t-test of "the gradient learned nothing
/// specific to its pages" against "it learned its pages".
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AssignmentCheck {
    /// Mean double difference of losses (nats).
    pub mean: f64,
    pub standard_error: f64,
    pub p_value: f64,
    pub batches: usize,
    /// Mean loss drop on the held-back batches (nats; negative when the gradient raised it).
    pub held_back_gain: f64,
    /// One-sided p-value of "the gradient raises the held-back loss".
    pub held_back_harm_p: f64,
}

impl AssignmentEvidence {
    pub fn check(&self) -> AssignmentCheck {
        let n = self.after_own.len();
        assert!(
            self.control_own.len() == n
                && self.control_held_back.len() == n
                && self.after_held_back.len() == n
                && self.base_held_back.len() == n,
            "assignment evidence must pair equally many batches"
        );
        let held_back_gains: Vec<f64> = (0..n)
            .map(|i| self.base_held_back[i] as f64 - self.after_held_back[i] as f64)
            .collect();
        let (held_back_gain, held_back_se) = mean_and_standard_error(&held_back_gains);
        let diffs: Vec<f64> = (0..n)
            .map(|i| {
                (self.control_own[i] as f64 - self.after_own[i] as f64)
                    - (self.control_held_back[i] as f64 - self.after_held_back[i] as f64)
            })
            .collect();
        let (mean, standard_error) = mean_and_standard_error(&diffs);
        AssignmentCheck {
            mean,
            standard_error,
            p_value: one_sided_p_value(mean, standard_error, n),
            batches: n,
            held_back_gain,
            held_back_harm_p: one_sided_p_value(-held_back_gain, held_back_se, n),
        }
    }
}

impl AssignmentCheck {
    /// It learned its own pages, and did not do so at the cost of the text around them.
    pub fn passed(&self, max_p_value: f64) -> bool {
        self.p_value <= max_p_value && self.held_back_harm_p > max_p_value
    }
}

/// P(T >= mean / standard_error) for Student's t with n - 1 degrees of freedom; 1 for fewer than two
/// samples or non-finite input.
pub fn one_sided_p_value(mean: f64, standard_error: f64, n: usize) -> f64 {
    if n < 2 || !mean.is_finite() || standard_error.is_nan() {
        return 1.0;
    }
    if standard_error == 0.0 {
        return if mean > 0.0 { 0.0 } else { 1.0 };
    }
    match StudentsT::new(0.0, 1.0, (n - 1) as f64) {
        Ok(dist) => 1.0 - dist.cdf(mean / standard_error),
        Err(_) => 1.0,
    }
}

/// A pair of gradients close enough to be one gradient served twice.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Similarity {
    pub a: u16,
    pub b: u16,
    pub cosine: f64,
}

/// The similarity `cosine` gives every pair of `(uid, gradient)`, in uid order (`cosine` over
/// dense slices; a validator passes the same figure over its sparse gradients).
pub fn pairwise_similarity<G>(
    gradients: &[(u16, G)],
    cosine: impl Fn(&G, &G) -> f64,
) -> Vec<Similarity> {
    let mut out = Vec::new();
    for (i, (a, ga)) in gradients.iter().enumerate() {
        for (b, gb) in &gradients[i + 1..] {
            let (a, b) = ((*a).min(*b), (*a).max(*b));
            let cosine = cosine(ga, gb);
            out.push(Similarity { a, b, cosine });
        }
    }
    out.sort_by_key(|s| (s.a, s.b));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_of_known_vectors() {
        assert!((cosine(&[1.0, 0.0], &[0.0, 1.0])).abs() < 1e-12);
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-12);
        assert!((cosine(&[1.0, 2.0], &[-1.0, -2.0]) + 1.0).abs() < 1e-12);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 2.0]), 0.0);
    }

    #[test]
    fn relative_difference_of_known_vectors() {
        assert_eq!(relative_difference(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
        assert!(
            (relative_difference(&[3.0, 4.0], &[0.0, 5.0]) - (10f64).sqrt() / 5.0).abs() < 1e-12
        );
        assert_eq!(relative_difference(&[1.0], &[0.0]), f64::INFINITY);
    }

    #[test]
    fn p_value_matches_students_t_table() {
        // t = 2.262 is the 97.5% quantile of Student's t with 9 degrees of freedom.
        let p = one_sided_p_value(2.262, 1.0, 10);
        assert!((p - 0.025).abs() < 2e-4, "{p}");
        assert_eq!(one_sided_p_value(-1.0, 0.0, 10), 1.0);
        assert_eq!(one_sided_p_value(1.0, 0.5, 1), 1.0);
    }

    #[test]
    fn a_gradient_that_learned_its_pages_passes() {
        // The gradient lowers the loss on its own training batches by about 0.05 and leaves the
        // held-back batches of the same pages as they were (up to noise).
        let control_own = vec![3.0, 3.1, 2.9, 3.05, 2.95, 3.0];
        let after_own: Vec<f32> = control_own
            .iter()
            .zip([0.05, 0.06, 0.04, 0.05, 0.055, 0.045])
            .map(|(c, d)| c - d)
            .collect();
        let control_held_back = vec![3.0, 2.8, 3.2, 3.1, 2.9, 3.0];
        let after_held_back: Vec<f32> = control_held_back
            .iter()
            .zip([0.001, -0.002, 0.0, 0.002, -0.001, 0.0])
            .map(|(c, d)| c - d)
            .collect();
        let evidence = AssignmentEvidence {
            control_own,
            after_own,
            base_held_back: control_held_back.iter().map(|c| c + 0.01).collect(),
            control_held_back,
            after_held_back,
        };
        let check = evidence.check();
        assert!((check.mean - 0.05).abs() < 1e-3, "{check:?}");
        assert!(check.passed(0.01), "{check:?}");

        // A gradient that helps held-back text as much as its own learned nothing of its pages.
        let lazy = AssignmentEvidence {
            after_own: evidence.control_own.iter().map(|c| c - 0.02).collect(),
            after_held_back: evidence
                .control_held_back
                .iter()
                .map(|c| c - 0.02)
                .collect(),
            ..evidence.clone()
        };
        assert!(!lazy.check().passed(0.01), "{:?}", lazy.check());

        // A gradient that memorized its own sequences and made the text around them worse fails.
        let memorizer = AssignmentEvidence {
            after_held_back: evidence
                .base_held_back
                .iter()
                .zip([0.3, 0.31, 0.29, 0.3, 0.32, 0.3])
                .map(|(b, d)| b + d)
                .collect(),
            control_held_back: evidence
                .base_held_back
                .iter()
                .zip([0.3, 0.31, 0.29, 0.3, 0.32, 0.3])
                .map(|(b, d)| b + d - 0.001)
                .collect(),
            ..evidence
        };
        let check = memorizer.check();
        assert!(check.p_value < 0.01 && !check.passed(0.01), "{check:?}");
    }

    #[test]
    fn pairs_are_ordered_by_uid() {
        let a = [1.0f32, 0.0];
        let b = [1.0f32, 0.01];
        let c = [0.0f32, 1.0];
        let pairs = pairwise_similarity(&[(5, &a[..]), (2, &b[..]), (9, &c[..])], |x, y| {
            cosine(x, y)
        });
        let keys: Vec<(u16, u16)> = pairs.iter().map(|s| (s.a, s.b)).collect();
        assert_eq!(keys, vec![(2, 5), (2, 9), (5, 9)]);
        assert!(pairs[0].cosine > 0.99);
    }
}
