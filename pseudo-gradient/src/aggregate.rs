//! Turning several pseudo-gradients into one outer step: clip each to a norm no single contributor
//! can move (a validator clips to the norm of its own training of the window; Templar clips to the
//! median across peers), average each parameter over the gradients that carry it, in the order
//! given, and step with SGD or with Nesterov momentum (DiLoCo's outer optimizer).

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

/// The factor that scales a vector of norm `norm` down to at most `cap` (1 when it is within).
pub fn clip_scale(norm: f64, cap: f64) -> f64 {
    if norm > cap && norm > 0.0 {
        cap / norm
    } else {
        1.0
    }
}

/// `delta` scaled down to at most `cap` in L2 norm.
pub fn clipped(delta: &[f32], cap: f64) -> Vec<f32> {
    let scale = clip_scale(l2_norm(delta), cap);
    delta.iter().map(|&x| (scale * x as f64) as f32).collect()
}

/// The deltas after scaling each down to at most `cap`, averaged per parameter over the deltas that
/// carry it (a nonzero value there), summed in the order given (in f64), so every party that
/// aggregates the same deltas in the same order gets the same bits. For dense deltas this is their
/// mean; for sparse (top-k) ones a parameter that one miner sent moves as that miner's gradient
/// alone would move it, which is how each gradient was scored, instead of being divided by every
/// miner that did not send it. Empty input gives None.
pub fn aggregate_clipped(deltas: &[&[f32]], cap: f64) -> Option<Vec<f32>> {
    aggregate_clipped_each(deltas, &vec![cap; deltas.len()])
}

/// `aggregate_clipped` with a cap of its own for each delta (its parameter group's clip norm).
pub fn aggregate_clipped_each(deltas: &[&[f32]], caps: &[f64]) -> Option<Vec<f32>> {
    assert_eq!(deltas.len(), caps.len(), "one cap per delta");
    let first = deltas.first()?;
    let mut sum = vec![0f64; first.len()];
    let mut carriers = vec![0u32; first.len()];
    for (delta, &cap) in deltas.iter().zip(caps) {
        assert_eq!(delta.len(), sum.len(), "deltas of different lengths");
        let scale = clip_scale(l2_norm(delta), cap);
        for ((s, c), &x) in sum.iter_mut().zip(carriers.iter_mut()).zip(delta.iter()) {
            if x != 0.0 {
                *s += scale * x as f64;
                *c += 1;
            }
        }
    }
    Some(
        sum.into_iter()
            .zip(carriers)
            .map(|(s, c)| if c == 0 { 0.0 } else { (s / c as f64) as f32 })
            .collect(),
    )
}

/// Mean of the deltas after scaling each down to at most the median norm. Empty input gives None.
pub fn aggregate_median_clipped(deltas: &[&[f32]]) -> Option<Vec<f32>> {
    let norms: Vec<f64> = deltas.iter().map(|d| l2_norm(d)).collect();
    if norms.is_empty() {
        return None;
    }
    aggregate_clipped(deltas, median(norms))
}

/// theta <- theta - lr * delta (delta is start - end, so lr = 1 lands where the miners ended).
pub fn outer_sgd_step(theta: &[f32], delta: &[f32], lr: f64) -> Vec<f32> {
    theta
        .iter()
        .zip(delta)
        .map(|(&t, &d)| (t as f64 - lr * d as f64) as f32)
        .collect()
}

/// One outer step with Nesterov momentum `mu`, as PyTorch's SGD(nesterov=True) takes it:
/// `m <- mu * m + delta; theta <- theta - lr * (delta + mu * m)`. `momentum` is the buffer before the
/// step (empty: zeros); returns the new parameters and buffer. With `mu = 0` this is `outer_sgd_step`.
pub fn outer_nesterov_step(
    theta: &[f32],
    delta: &[f32],
    momentum: &[f32],
    lr: f64,
    mu: f64,
) -> (Vec<f32>, Vec<f32>) {
    assert!(
        momentum.is_empty() || momentum.len() == delta.len(),
        "momentum buffer of another length"
    );
    let buffer: Vec<f32> = delta
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            let m = momentum.get(i).copied().unwrap_or(0.0) as f64;
            (mu * m + d as f64) as f32
        })
        .collect();
    let params = theta
        .iter()
        .zip(delta)
        .zip(&buffer)
        .map(|((&t, &d), &m)| (t as f64 - lr * (d as f64 + mu * m as f64)) as f32)
        .collect();
    (params, buffer)
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
        // b carries nothing at parameter 0: the mean there is over a and c.
        assert!((mean[0] - (3.0 + 3.0) / 2.0).abs() < 1e-6);
        assert!((mean[1] - (4.0 + 5.0 + 4.0) / 3.0).abs() < 1e-6);
        assert!(aggregate_median_clipped(&[]).is_none());
    }

    #[test]
    fn sparse_deltas_average_over_the_ones_that_carry_each_parameter() {
        let a = [1.0f32, 0.0, 0.0, 2.0];
        let b = [0.0f32, -4.0, 0.0, 4.0];
        let mean = aggregate_clipped(&[&a, &b], 100.0).unwrap();
        assert_eq!(mean, vec![1.0, -4.0, 0.0, 3.0]);
        // Clipping applies before: b (norm 5.66) at cap 2.83 is halved.
        let half = aggregate_clipped(&[&a, &b], 32f64.sqrt() / 2.0).unwrap();
        assert_eq!(half, vec![1.0, -2.0, 0.0, 2.0]);
    }

    #[test]
    fn outer_step_with_unit_rate_reaches_the_end_point() {
        let start = [1.0f32, 2.0];
        let end = [0.5f32, 2.5];
        let delta: Vec<f32> = start.iter().zip(&end).map(|(s, e)| s - e).collect();
        assert_eq!(outer_sgd_step(&start, &delta, 1.0), end);
    }

    /// A constant pseudo-gradient g: the buffer after k steps is g (1 - mu^k) / (1 - mu), and the
    /// parameters move by lr * g * (1 + mu (1 - mu^k) / (1 - mu)) at step k (closed form).
    #[test]
    fn nesterov_matches_the_closed_form_for_a_constant_gradient() {
        let (lr, mu, g) = (0.5f64, 0.9f64, 0.25f32);
        let mut theta = vec![1.0f32];
        let mut momentum = Vec::new();
        let mut expected = 1.0f64;
        for k in 1..=5 {
            (theta, momentum) = outer_nesterov_step(&theta, &[g], &momentum, lr, mu);
            let geometric = (1.0 - mu.powi(k)) / (1.0 - mu);
            assert!((momentum[0] as f64 - g as f64 * geometric).abs() < 1e-6);
            expected -= lr * g as f64 * (1.0 + mu * geometric);
            assert!((theta[0] as f64 - expected).abs() < 1e-5, "step {k}");
        }
        // mu = 0 is plain SGD.
        let (sgd, _) = outer_nesterov_step(&[1.0, 2.0], &[0.5, -0.5], &[], 1.0, 0.0);
        assert_eq!(sgd, outer_sgd_step(&[1.0, 2.0], &[0.5, -0.5], 1.0));
    }
}
