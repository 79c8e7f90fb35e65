//! A synthetic corpus with learnable structure and a known entropy rate: an order-2 Markov chain over a
//! small alphabet of printable bytes. The last symbol decides which few symbols may follow and their
//! base probabilities (structure a model learns first, from one symbol of context); the symbol before
//! it shifts those probabilities (structure that needs attention to learn). No model can beat the
//! chain's entropy rate. Pages are generated on demand from
//! (corpus seed, page index), so the corpus is as large as the page index space and nothing is stored.

use crate::rng::{SeededRng, salt};
use serde::{Deserialize, Serialize};

/// The printable symbols, in order; the chain uses the first `alphabet` of them.
const SYMBOLS: &[u8; 64] = b"etaoinshrdlucmfwypvbgkqjxz ETAOINSHRDLUCMFWYPVBGKQJXZ.,;:!?-'012";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MarkovSpec {
    pub seed: u64,
    /// Number of distinct symbols (2..=64).
    pub alphabet: usize,
    /// Number of possible next symbols after each symbol (1..=alphabet).
    pub successors: usize,
    /// Spread of the successors' base log-probabilities, set by the last symbol: larger means more
    /// predictable from one symbol of context.
    pub skew: f64,
    /// Spread of the shift of those log-probabilities by the symbol before the last: larger means
    /// more to gain from two symbols of context.
    pub context_skew: f64,
}

#[derive(Clone, Debug)]
pub struct MarkovCorpus {
    spec: MarkovSpec,
    /// For each context (a * alphabet + b): the successor symbols and their cumulative probabilities.
    next: Vec<Vec<(u8, f64)>>,
    /// Stationary distribution over contexts.
    stationary: Vec<f64>,
    stationary_cumulative: Vec<f64>,
}

/// Per last symbol: its successors (partial Fisher-Yates) and their base log-probabilities, drawn
/// from `rng` in symbol order.
fn successors(spec: &MarkovSpec, rng: &mut SeededRng) -> Vec<(Vec<u8>, Vec<f64>)> {
    let a = spec.alphabet;
    (0..a)
        .map(|_| {
            let mut symbols: Vec<u8> = (0..a as u8).collect();
            for i in 0..spec.successors {
                let j = i + rng.below((a - i) as u64) as usize;
                symbols.swap(i, j);
            }
            symbols.truncate(spec.successors);
            let logits = (0..spec.successors)
                .map(|_| spec.skew * rng.normal())
                .collect();
            (symbols, logits)
        })
        .collect()
}

impl MarkovCorpus {
    pub fn new(spec: MarkovSpec) -> Self {
        let a = spec.alphabet;
        assert!(
            (2..=SYMBOLS.len()).contains(&a),
            "alphabet must be in 2..=64"
        );
        assert!(
            (1..=a).contains(&spec.successors),
            "successors must be in 1..=alphabet"
        );
        let mut rng = SeededRng::derived(&[spec.seed, salt::CORPUS]);
        let per_symbol = successors(&spec, &mut rng);
        let mut next = Vec::with_capacity(a * a);
        for context in 0..a * a {
            let (symbols, base) = &per_symbol[context % a];
            let logits: Vec<f64> = base
                .iter()
                .map(|l| l + spec.context_skew * rng.normal())
                .collect();
            let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let weights: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
            let total: f64 = weights.iter().sum();
            let mut cumulative = 0.0;
            let row = symbols
                .iter()
                .zip(&weights)
                .map(|(&s, w)| {
                    cumulative += w / total;
                    (s, cumulative)
                })
                .collect();
            next.push(row);
        }
        let stationary = stationary_distribution(a, &next);
        let mut acc = 0.0;
        let stationary_cumulative = stationary
            .iter()
            .map(|p| {
                acc += p;
                acc
            })
            .collect();
        Self {
            spec,
            next,
            stationary,
            stationary_cumulative,
        }
    }

    pub fn spec(&self) -> &MarkovSpec {
        &self.spec
    }

    /// The byte of a symbol.
    pub fn byte(symbol: u8) -> u8 {
        SYMBOLS[symbol as usize]
    }

    fn probabilities(&self, context: usize) -> impl Iterator<Item = (u8, f64)> + '_ {
        let mut previous = 0.0;
        self.next[context].iter().map(move |&(s, c)| {
            let p = c - previous;
            previous = c;
            (s, p)
        })
    }

    /// Entropy rate in nats per byte: sum over contexts of stationary probability times the entropy of
    /// the next symbol. The lowest average loss any model can reach deep inside a long sequence.
    pub fn entropy_rate(&self) -> f64 {
        self.stationary
            .iter()
            .enumerate()
            .map(|(ctx, &pi)| pi * entropy(self.probabilities(ctx).map(|(_, p)| p)))
            .sum()
    }

    /// The lowest mean loss (nats per predicted byte) any model can reach on a sequence of `len`
    /// predictions that starts at a stationary position with no earlier context: the first prediction
    /// has one symbol of context, the rest have two.
    pub fn min_sequence_loss(&self, len: usize) -> f64 {
        let a = self.spec.alphabet;
        // First prediction: H(X2 | X1) = H(X1, X2) - H(X1) under the stationary pair distribution.
        let pair_entropy = entropy(self.stationary.iter().copied());
        let mut first = vec![0.0; a];
        for (ctx, &pi) in self.stationary.iter().enumerate() {
            first[ctx / a] += pi;
        }
        let conditional_first = pair_entropy - entropy(first.into_iter());
        (conditional_first + (len as f64 - 1.0) * self.entropy_rate()) / len as f64
    }

    /// Page `index`: `len` bytes from a stationary start, a pure function of (seed, index).
    pub fn page(&self, index: u64, len: usize) -> Vec<u8> {
        let a = self.spec.alphabet;
        let mut rng = SeededRng::derived(&[self.spec.seed, salt::PAGE, index]);
        let u = rng.next_f64();
        let start = self
            .stationary_cumulative
            .partition_point(|&c| c <= u)
            .min(a * a - 1);
        let (mut x, mut y) = ((start / a) as u8, (start % a) as u8);
        let mut out = Vec::with_capacity(len);
        out.extend([x, y].into_iter().take(len));
        while out.len() < len {
            let row = &self.next[x as usize * a + y as usize];
            let u = rng.next_f64();
            let z = row
                .iter()
                .find(|&&(_, c)| u < c)
                .unwrap_or(&row[row.len() - 1])
                .0;
            out.push(z);
            (x, y) = (y, z);
        }
        out.into_iter().map(Self::byte).collect()
    }
}

fn entropy(p: impl Iterator<Item = f64>) -> f64 {
    p.filter(|&p| p > 0.0).map(|p| -p * p.ln()).sum()
}

/// Stationary distribution of the context chain by lazy power iteration (pi <- (pi + pi P) / 2), which
/// converges for periodic chains too; started from uniform, it is the long-run distribution of pages
/// whose first context is drawn uniformly.
fn stationary_distribution(a: usize, next: &[Vec<(u8, f64)>]) -> Vec<f64> {
    let n = a * a;
    let mut pi = vec![1.0 / n as f64; n];
    for _ in 0..100_000 {
        let mut stepped = vec![0.0; n];
        for (ctx, row) in next.iter().enumerate() {
            let b = ctx % a;
            let mut previous = 0.0;
            for &(z, c) in row {
                stepped[b * a + z as usize] += pi[ctx] * (c - previous);
                previous = c;
            }
        }
        let mut change = 0.0;
        for (p, s) in pi.iter_mut().zip(&stepped) {
            let updated = 0.5 * (*p + s);
            change += (updated - *p).abs();
            *p = updated;
        }
        if change < 1e-14 {
            break;
        }
    }
    let total: f64 = pi.iter().sum();
    pi.iter().map(|p| p / total).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> MarkovCorpus {
        MarkovCorpus::new(MarkovSpec {
            seed: 3,
            alphabet: 16,
            successors: 4,
            skew: 1.0,
            context_skew: 1.0,
        })
    }

    #[test]
    fn pages_are_pure_functions_of_seed_and_index() {
        let c = corpus();
        assert_eq!(c.page(5, 300), c.page(5, 300));
        assert_ne!(c.page(5, 300), c.page(6, 300));
        assert_eq!(c.page(5, 300)[..100], c.page(5, 100)[..]);
    }

    /// The closed-form entropy rate agrees with the empirical conditional entropy of generated text,
    /// an estimate that knows nothing about the chain's tables.
    #[test]
    fn entropy_rate_matches_empirical_conditional_entropy() {
        let c = corpus();
        let mut counts = std::collections::HashMap::<(u8, u8, u8), f64>::new();
        let mut context_counts = std::collections::HashMap::<(u8, u8), f64>::new();
        for page in 0..400 {
            let bytes = c.page(page, 1000);
            for w in bytes.windows(3) {
                *counts.entry((w[0], w[1], w[2])).or_default() += 1.0;
                *context_counts.entry((w[0], w[1])).or_default() += 1.0;
            }
        }
        let total: f64 = counts.values().sum();
        let empirical: f64 = counts
            .iter()
            .map(|(&(x, y, _), &n)| -(n / total) * (n / context_counts[&(x, y)]).ln())
            .sum();
        let exact = c.entropy_rate();
        assert!(
            (empirical - exact).abs() < 0.02,
            "empirical {empirical} vs exact {exact}"
        );
        assert!(exact < (4f64).ln(), "at most ln(successors)");
        assert!(c.min_sequence_loss(64) > exact);
    }
}
