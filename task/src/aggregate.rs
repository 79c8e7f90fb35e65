//! Turning several pseudo-gradients into one outer step: clip each to the median norm so no single
//! contributor dominates (Templar clips to the median across peers), average, and step with SGD.

/// Euclidean norm, accumulated in f64.
pub fn l2_norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        0.5 * (xs[n / 2 - 1] + xs[n / 2])
    }
}

/// Mean of the deltas after scaling each down to at most the median norm. Empty input gives None.
pub fn aggregate_median_clipped(deltas: &[&[f32]]) -> Option<Vec<f32>> {
    let first = deltas.first()?;
    let norms: Vec<f64> = deltas.iter().map(|d| l2_norm(d)).collect();
    let cap = median(norms.clone());
    let mut sum = vec![0f64; first.len()];
    for (delta, norm) in deltas.iter().zip(&norms) {
        assert_eq!(delta.len(), sum.len(), "deltas of different lengths");
        let scale = if *norm > cap && *norm > 0.0 {
            cap / norm
        } else {
            1.0
        };
        for (s, &x) in sum.iter_mut().zip(delta.iter()) {
            *s += scale * x as f64;
        }
    }
    let n = deltas.len() as f64;
    Some(sum.into_iter().map(|s| (s / n) as f32).collect())
}

/// theta <- theta - lr * delta (delta is start - end, so lr = 1 lands where the miners ended).
pub fn outer_sgd_step(theta: &[f32], delta: &[f32], lr: f64) -> Vec<f32> {
    theta
        .iter()
        .zip(delta)
        .map(|(&t, &d)| (t as f64 - lr * d as f64) as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clips_outliers_to_the_median_norm() {
        let a = [3.0f32, 4.0]; // norm 5
        let b = [0.0f32, 5.0]; // norm 5
        let c = [600.0f32, 800.0]; // norm 1000, clipped to 5
        let mean = aggregate_median_clipped(&[&a, &b, &c]).unwrap();
        assert!((mean[0] - (3.0 + 0.0 + 3.0) / 3.0).abs() < 1e-6);
        assert!((mean[1] - (4.0 + 5.0 + 4.0) / 3.0).abs() < 1e-6);
        assert!(aggregate_median_clipped(&[]).is_none());
    }

    #[test]
    fn outer_step_with_unit_rate_reaches_the_end_point() {
        let start = [1.0f32, 2.0];
        let end = [0.5f32, 2.5];
        let delta: Vec<f32> = start.iter().zip(&end).map(|(s, e)| s - e).collect();
        assert_eq!(outer_sgd_step(&start, &delta, 1.0), end);
    }
}
