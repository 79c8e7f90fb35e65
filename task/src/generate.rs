//! Generating from a language-model task's checkpoint: the next token drawn from the model's
//! logits over the last `seq_len` tokens, with a temperature, a top-k cut and a seed, so that the
//! same checkpoint, prompt and settings give the same text.

use crate::architecture::transformer::ByteTransformer;
use crate::rng::SeededRng;
use crate::trainer::CpuBackend;
use burn::prelude::*;

/// How tokens are drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// Logits are divided by it; 0 picks the most likely token every time.
    pub temperature: f64,
    /// Only the `top_k` most likely tokens can be drawn (0: all).
    pub top_k: usize,
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            seed: 0,
        }
    }
}

/// A transformer task's model on the CPU, ready to generate.
pub struct Generator {
    model: ByteTransformer<CpuBackend>,
    seq_len: usize,
    vocab: usize,
}

impl Generator {
    pub(crate) fn new(model: ByteTransformer<CpuBackend>, seq_len: usize, vocab: usize) -> Self {
        Self {
            model,
            seq_len,
            vocab,
        }
    }

    /// The logits of the token after `context` (its last `seq_len` tokens are read).
    pub fn next_logits(&self, context: &[i32]) -> Vec<f32> {
        assert!(!context.is_empty(), "a context holds at least one token");
        let context = &context[context.len().saturating_sub(self.seq_len)..];
        let device = Default::default();
        let tokens = Tensor::<CpuBackend, 1, Int>::from_data(
            TensorData::new(context.to_vec(), [context.len()]),
            &device,
        )
        .reshape([1, context.len()]);
        let t = context.len();
        self.model
            .forward(tokens)
            .narrow(1, t - 1, 1)
            .reshape([self.vocab])
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .expect("logits are f32")
    }

    /// `count` tokens after `prompt`.
    pub fn generate(&self, prompt: &[i32], count: usize, sampling: Sampling) -> Vec<i32> {
        let mut rng = SeededRng::new(sampling.seed);
        let mut context = prompt.to_vec();
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let token = draw(&self.next_logits(&context), sampling, &mut rng);
            context.push(token);
            out.push(token);
        }
        out
    }
}

/// One token from `logits`: the most likely at temperature 0, else a draw from the softmax of
/// the `top_k` largest logits divided by the temperature.
pub fn draw(logits: &[f32], sampling: Sampling, rng: &mut SeededRng) -> i32 {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    // Ties go to the lower token, so the order is the same everywhere.
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    if sampling.temperature <= 0.0 {
        return order[0] as i32;
    }
    let k = match sampling.top_k {
        0 => order.len(),
        k => k.min(order.len()),
    };
    let top = logits[order[0]] as f64;
    let weights: Vec<f64> = order[..k]
        .iter()
        .map(|&i| ((logits[i] as f64 - top) / sampling.temperature).exp())
        .collect();
    let mut u = rng.next_f64() * weights.iter().sum::<f64>();
    for (&i, w) in order.iter().zip(&weights) {
        if u < *w {
            return i as i32;
        }
        u -= w;
    }
    order[k - 1] as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temperature_zero_takes_the_largest_logit_and_top_one_agrees() {
        let logits = [0.1, 2.0, -1.0, 1.9];
        let mut rng = SeededRng::new(1);
        let greedy = Sampling {
            temperature: 0.0,
            top_k: 0,
            seed: 1,
        };
        assert_eq!(draw(&logits, greedy, &mut rng), 1);
        let top_one = Sampling {
            temperature: 1.0,
            top_k: 1,
            seed: 1,
        };
        for _ in 0..20 {
            assert_eq!(draw(&logits, top_one, &mut rng), 1);
        }
    }

    #[test]
    fn draws_follow_the_softmax_and_never_leave_the_top_k() {
        // Softmax of (ln 1, ln 3) at temperature 1: 1/4 and 3/4; the third token is cut by top-2.
        let logits = [0.0, 3f32.ln(), -0.5];
        let sampling = Sampling {
            temperature: 1.0,
            top_k: 2,
            seed: 7,
        };
        let mut rng = SeededRng::new(7);
        let mut counts = [0usize; 3];
        for _ in 0..20_000 {
            counts[draw(&logits, sampling, &mut rng) as usize] += 1;
        }
        assert_eq!(counts[2], 0);
        let share = counts[1] as f64 / 20_000.0;
        // Three standard errors of a binomial share at 3/4 over 20,000 draws is about 0.009.
        assert!((share - 0.75).abs() < 0.01, "share of token 1: {share}");
    }
}
