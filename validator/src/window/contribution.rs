//! What each candidate adds: the candidates' similarities, and the eval losses of their aggregate
//! with every one of them and with each left out, at the aggregate's own step.

use super::Gradient;
use crate::evaluate;
use pseudo_gradient::Sparse;
use pseudo_gradient::sketch::{self, Sketch};
use scoring::checks::{Similarity, pairwise_similarity};
use scoring::{ScoringParams, WindowEvidence, candidates};
use std::collections::BTreeMap;
use task::{Batch, TaskEngine};

/// How far below the copy threshold a pair's sketched cosine may fall and still be compared
/// exactly: eight times the worst error of the estimate in `pseudo_gradient::sketch`'s tests
/// (0.031 over 140 pairs and seeds, cosines from 0 to 1).
pub const SKETCH_MARGIN: f64 = 0.25;

/// Salt of the sketch's seed, drawn from the validator's secret of the window.
const SKETCH_SALT: u64 = 0x534B_4554_4348;

/// Fills in `evidence` the similarities, the aggregate's losses and each candidate's leave-one-out
/// losses for the candidates under `params` (every other miner's are emptied), each clipped to its
/// group's clip norm, at the step `rules.leave_one_out` names. `params`, `momentum` and `batches`
/// are the checkpoint, the outer momentum buffer and the eval batches the window started from;
/// `eval_seed` is the validator's secret of the window.
pub fn contributions(
    engine: &TaskEngine,
    (params, momentum, batches): (&[f32], &[f32], &[Batch]),
    (evidence, eval_seed): (&mut WindowEvidence, u64),
    gradients: &BTreeMap<u16, Gradient>,
    rules: &ScoringParams,
) {
    let uids = candidates(evidence, rules);
    let values: Vec<&Sparse> = uids.iter().map(|u| &gradients[u].values).collect();
    let pairs: Vec<(u16, &Sparse)> = uids.iter().copied().zip(values.iter().copied()).collect();
    let seed = eval_seed ^ SKETCH_SALT;
    evidence.similarities = similar_pairs(&pairs, seed, rules.copy_cosine);
    let clips = evidence.clip_norms();
    let caps: Vec<f64> = uids
        .iter()
        .map(|u| clips[gradients[u].group.index])
        .collect();
    let (aggregate, without) = evaluate::leave_one_out(
        engine,
        (params, momentum),
        &values,
        &caps,
        (batches, rules.leave_one_out),
    );
    evidence.aggregate = aggregate;
    for m in &mut evidence.miners {
        m.without = Vec::new();
    }
    for (uid, losses) in uids.iter().zip(without) {
        if let Some(m) = evidence.miners.iter_mut().find(|m| m.uid == *uid) {
            m.without = losses;
        }
    }
}

/// The exact cosine of every pair of candidates that may be copies, in uid order. Where the
/// candidates send more entries than a sketch holds, each pair's cosine is first estimated from
/// count sketches drawn from `seed` (`pseudo_gradient::sketch`) and only the pairs whose estimate
/// is within `SKETCH_MARGIN` of `copy_cosine` are compared exactly: the pairs left out are below
/// the threshold unless the estimate erred by more than the margin. Smaller gradients are all
/// compared exactly, as the sketches would cost more.
pub fn similar_pairs(pairs: &[(u16, &Sparse)], seed: u64, copy_cosine: f64) -> Vec<Similarity> {
    let entries = pairs.iter().map(|(_, g)| g.nonzeros()).sum::<usize>() / pairs.len().max(1);
    if entries <= sketch::ROWS * sketch::WIDTH {
        return pairwise_similarity(pairs, |a, b| a.cosine(b));
    }
    let sketches: Vec<Sketch> = pairs.iter().map(|(_, g)| Sketch::of(g, seed)).collect();
    let mut out = Vec::new();
    for (i, (a, ga)) in pairs.iter().enumerate() {
        for (j, (b, gb)) in pairs.iter().enumerate().skip(i + 1) {
            if sketches[i].cosine(&sketches[j]) >= copy_cosine - SKETCH_MARGIN {
                let (a, b) = ((*a).min(*b), (*a).max(*b));
                out.push(Similarity {
                    a,
                    b,
                    cosine: ga.cosine(gb),
                });
            }
        }
    }
    out.sort_by_key(|s| (s.a, s.b));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `nonzeros` entries of a vector of `len`, drawn from `seed`.
    fn random(len: usize, nonzeros: usize, seed: u64) -> Vec<f32> {
        let mut v = vec![0f32; len];
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for _ in 0..nonzeros {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            v[(state as usize) % len] = ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5;
        }
        v
    }

    /// Large gradients go through the sketches: among 24 unrelated gradients and copies of some of
    /// them at cosines from 0.90 to 0.999 (scaled, noised), the pairs at or above the copy
    /// threshold are exactly those that comparing every pair finds, with their exact cosines, and
    /// few other pairs are compared.
    #[test]
    fn sketched_pairs_find_every_copy_that_all_pairs_find() {
        let (len, nonzeros) = (400_000, 20_000);
        let mut dense: Vec<Vec<f32>> = (0..24).map(|k| random(len, nonzeros, k + 1)).collect();
        for (k, noise) in [0.05f32, 0.25, 0.33, 0.36, 0.5].iter().enumerate() {
            let noise_vector = random(len, nonzeros, 100 + k as u64);
            let copy = dense[k]
                .iter()
                .zip(&noise_vector)
                .map(|(&x, &n)| 2.5 * (x + noise * n))
                .collect();
            dense.push(copy);
        }
        let sparse: Vec<Sparse> = dense.iter().map(|v| Sparse::from_dense(v)).collect();
        let pairs: Vec<(u16, &Sparse)> = sparse
            .iter()
            .enumerate()
            .map(|(u, s)| (u as u16, s))
            .collect();
        let copy_cosine = 0.95;
        let all = pairwise_similarity(&pairs, |a, b| a.cosine(b));
        let copies = |list: &[Similarity]| -> Vec<Similarity> {
            list.iter()
                .filter(|s| s.cosine >= copy_cosine)
                .cloned()
                .collect()
        };
        let near: Vec<f64> = all.iter().map(|s| s.cosine).filter(|c| *c > 0.5).collect();
        assert_eq!(
            near.len(),
            5,
            "five copies, from below to above the threshold: {near:?}"
        );
        assert!(near.iter().any(|c| *c < copy_cosine) && near.iter().any(|c| *c >= copy_cosine));
        for seed in 0..5 {
            let sketched = similar_pairs(&pairs, seed, copy_cosine);
            assert_eq!(copies(&sketched), copies(&all), "seed {seed}");
            eprintln!(
                "seed {seed}: {} of {} pairs compared exactly",
                sketched.len(),
                all.len()
            );
            assert!(sketched.len() <= 10, "{} pairs compared", sketched.len());
            for s in &sketched {
                assert!(all.contains(s), "exact cosines");
            }
        }
    }

    /// Small gradients are all compared exactly, as before sketches.
    #[test]
    fn small_gradients_are_compared_pair_by_pair() {
        let sparse: Vec<Sparse> = (0..4)
            .map(|k| Sparse::from_dense(&random(1000, 100, k + 1)))
            .collect();
        let pairs: Vec<(u16, &Sparse)> = sparse
            .iter()
            .enumerate()
            .map(|(u, s)| (u as u16, s))
            .collect();
        assert_eq!(
            similar_pairs(&pairs, 7, 0.95),
            pairwise_similarity(&pairs, |a, b| a.cosine(b))
        );
    }
}
