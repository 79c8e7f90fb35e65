//! From scores to the u16 weights a validator sets on chain.

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WeightError {
    #[error("weight {value} for uid {uid} is negative or not finite: weights must be >= 0")]
    Negative { uid: u16, value: f64 },
    #[error("{uids} uids but {weights} weights: the vectors must have equal length")]
    LengthMismatch { uids: usize, weights: usize },
}

/// Normalizes `x` to sum 1 so that no entry exceeds `limit`, by clipping the largest entries at a
/// common cutoff (the idea of the SDK's `normalize_max_weight`). All-zero input, or a limit that
/// cannot be met (n * limit <= 1), gives the uniform vector.
pub fn normalize_max_weight(x: &[f64], limit: f64) -> Vec<f64> {
    let n = x.len();
    if n == 0 {
        return Vec::new();
    }
    let total: f64 = x.iter().sum();
    if total <= 0.0 || n as f64 * limit <= 1.0 {
        return vec![1.0 / n as f64; n];
    }
    let mut sorted: Vec<f64> = x.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    // Clip the m largest entries at c: c = limit * (m c + rest) gives c = limit * rest / (1 - m limit);
    // take the smallest m whose cutoff does not cut into the (m + 1)-th value.
    let mut rest = total;
    let mut cutoff = f64::INFINITY;
    for (m, &value) in sorted.iter().enumerate() {
        let c = limit * rest / (1.0 - m as f64 * limit);
        if value <= c {
            cutoff = c;
            break;
        }
        rest -= value;
    }
    let clipped: Vec<f64> = x.iter().map(|&v| v.min(cutoff)).collect();
    let sum: f64 = clipped.iter().sum();
    if sum <= 0.0 {
        // Too few positive entries to spread the mass under the limit: plain normalization.
        return x.iter().map(|v| v / total).collect();
    }
    clipped.into_iter().map(|v| v / sum).collect()
}

/// The SDK's `convert_weights_and_uids_for_emit`: errors on negative weights or unequal lengths;
/// all-zero gives empty vectors; otherwise w / max(w), rounded (half to even, as Python's `round`) to
/// u16 over 65535, zeros dropped.
pub fn weights_to_u16(uids: &[u16], weights: &[f64]) -> Result<(Vec<u16>, Vec<u16>), WeightError> {
    if uids.len() != weights.len() {
        return Err(WeightError::LengthMismatch {
            uids: uids.len(),
            weights: weights.len(),
        });
    }
    if let Some((&uid, &value)) = uids
        .iter()
        .zip(weights)
        .find(|(_, w)| w.is_nan() || **w < 0.0 || w.is_infinite())
    {
        return Err(WeightError::Negative { uid, value });
    }
    let max = weights.iter().cloned().fold(0.0, f64::max);
    if max == 0.0 {
        return Ok((Vec::new(), Vec::new()));
    }
    let (mut out_uids, mut out_weights) = (Vec::new(), Vec::new());
    for (&uid, &w) in uids.iter().zip(weights) {
        let v = (w / max * 65535.0).round_ties_even() as u16;
        if v > 0 {
            out_uids.push(uid);
            out_weights.push(v);
        }
    }
    Ok((out_uids, out_weights))
}

/// Exponential moving average: the newest value gets weight `rate`.
pub fn moving_average(previous: Option<f64>, newest: f64, rate: f64) -> f64 {
    match previous {
        Some(p) => (1.0 - rate) * p + rate * newest,
        None => rate * newest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_weight_limit_holds_and_order_is_kept() {
        let w = normalize_max_weight(&[10.0, 1.0, 1.0, 1.0, 1.0], 0.4);
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!((w[0] - 0.4).abs() < 1e-12, "{w:?}");
        assert!(w[1..].iter().all(|&v| (v - 0.15).abs() < 1e-12));
        // Already within the limit: plain normalization.
        let w = normalize_max_weight(&[1.0, 1.0, 2.0], 0.5);
        assert_eq!(w, vec![0.25, 0.25, 0.5]);
        // Unreachable limit or zero sum: uniform.
        assert_eq!(normalize_max_weight(&[5.0, 1.0], 0.4), vec![0.5, 0.5]);
        assert_eq!(
            normalize_max_weight(&[0.0, 0.0, 0.0], 0.5),
            vec![1.0 / 3.0; 3]
        );
        // One positive entry cannot be spread: it keeps all the mass.
        assert_eq!(
            normalize_max_weight(&[0.0, 2.0, 0.0], 0.5),
            vec![0.0, 1.0, 0.0]
        );
    }

    #[test]
    fn u16_conversion_matches_the_sdk() {
        // w / max * 65535 = [65535, 32767.5 -> 32768 (half to even), 0 dropped]
        let (uids, w) = weights_to_u16(&[0, 1, 2], &[0.5, 0.25, 0.0]).unwrap();
        assert_eq!(uids, vec![0, 1]);
        assert_eq!(w, vec![65535, 32768]);
        // 1/3 of 65535 = 21845 exactly; 0.1/0.7 * 65535 = 9362.14 -> 9362
        let (_, w) = weights_to_u16(&[0, 1, 2], &[0.7, 0.1, 0.7 / 3.0]).unwrap();
        assert_eq!(w, vec![65535, 9362, 21845]);
        assert_eq!(
            weights_to_u16(&[0, 1], &[0.0, 0.0]).unwrap(),
            (vec![], vec![])
        );
        assert!(matches!(
            weights_to_u16(&[0, 1], &[1.0, -1.0]),
            Err(WeightError::Negative { uid: 1, .. })
        ));
        assert!(matches!(
            weights_to_u16(&[0], &[1.0, 1.0]),
            Err(WeightError::LengthMismatch { .. })
        ));
    }
}
