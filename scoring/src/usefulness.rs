//! Usefulness of a pseudo-gradient: the relative loss drop on held-out batches when it is applied to
//! the global checkpoint, with its standard error across batches.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UsefulnessScore {
    /// Mean over batches of (loss_before - loss_after) / loss_before.
    pub mean_relative_drop: f64,
    /// Standard error of that mean across batches.
    pub standard_error: f64,
    pub batches: usize,
}

impl UsefulnessScore {
    /// `before[b]` and `after[b]` are the losses on batch b without and with the gradient applied.
    pub fn from_losses(before: &[f32], after: &[f32]) -> Self {
        let drops = relative_drops(before, before, after);
        let (mean, standard_error) = mean_and_standard_error(&drops);
        Self {
            mean_relative_drop: mean,
            standard_error,
            batches: drops.len(),
        }
    }

    /// One-sided p-value of "this gradient does not help" against "it lowers the held-out loss":
    /// Student's t with batches - 1 degrees of freedom on the mean relative drop.
    pub fn p_value_helps(&self) -> f64 {
        if self.batches < 2 || !self.mean_relative_drop.is_finite() {
            return 1.0;
        }
        if self.standard_error == 0.0 {
            return if self.mean_relative_drop > 0.0 {
                0.0
            } else {
                1.0
            };
        }
        let t = self.mean_relative_drop / self.standard_error;
        match StudentsT::new(0.0, 1.0, (self.batches - 1) as f64) {
            Ok(dist) => 1.0 - dist.cdf(t),
            Err(_) => 1.0,
        }
    }

    /// The score that earns weight: a harmful or non-finite gradient scores 0, never more.
    pub fn score(&self) -> f64 {
        if self.mean_relative_drop.is_finite() {
            self.mean_relative_drop.max(0.0)
        } else {
            0.0
        }
    }
}

/// Per batch, the loss drop from `from` to `to` relative to the batch's loss `base` (0 where the base
/// loss is not positive).
pub fn relative_drops(base: &[f32], from: &[f32], to: &[f32]) -> Vec<f64> {
    assert!(
        base.len() == from.len() && from.len() == to.len(),
        "paired losses must have equal length"
    );
    base.iter()
        .zip(from.iter().zip(to))
        .map(|(&b, (&f, &t))| {
            if b > 0.0 {
                (f as f64 - t as f64) / b as f64
            } else {
                0.0
            }
        })
        .collect()
}

/// Sample mean and its standard error (sample standard deviation / sqrt(n)); n < 2 gives an infinite
/// standard error.
pub fn mean_and_standard_error(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    if xs.is_empty() {
        return (0.0, f64::INFINITY);
    }
    let mean = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (mean, f64::INFINITY);
    }
    let variance = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (variance / n).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_and_their_standard_error() {
        let s = UsefulnessScore::from_losses(&[2.0, 4.0, 5.0], &[1.0, 3.0, 5.0]);
        // drops 0.5, 0.25, 0.0: mean 0.25, sd 0.25, se 0.25 / sqrt(3)
        assert!((s.mean_relative_drop - 0.25).abs() < 1e-12);
        assert!((s.standard_error - 0.25 / 3f64.sqrt()).abs() < 1e-12);
        assert!((s.score() - 0.25).abs() < 1e-12);
    }

    /// t = 2 with 5 degrees of freedom: one-sided p = 0.050970 (t tables: the 5% critical value of
    /// t(5) is 2.015, just above 2).
    #[test]
    fn p_value_of_a_helpful_gradient() {
        let s = UsefulnessScore {
            mean_relative_drop: 0.02,
            standard_error: 0.01,
            batches: 6,
        };
        assert!(
            (s.p_value_helps() - 0.050970).abs() < 1e-5,
            "{}",
            s.p_value_helps()
        );
        let harmful = UsefulnessScore {
            mean_relative_drop: -0.02,
            standard_error: 0.01,
            batches: 6,
        };
        assert!(harmful.p_value_helps() > 0.9);
    }

    #[test]
    fn harmful_or_nan_gradients_score_zero() {
        assert_eq!(
            UsefulnessScore::from_losses(&[2.0, 2.0], &[3.0, 2.5]).score(),
            0.0
        );
        assert_eq!(
            UsefulnessScore::from_losses(&[2.0, 2.0], &[f32::NAN, 1.0]).score(),
            0.0
        );
    }
}
