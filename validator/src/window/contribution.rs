//! What each candidate adds: the candidates' similarities, and the eval losses of their aggregate
//! with every one of them and with each left out, at the aggregate's own step.

use super::Gradient;
use crate::evaluate;
use pseudo_gradient::Sparse;
use pseudo_gradient::sketch::{self, Sketch};
use scoring::checks::Similarity;
use scoring::{ScoringParams, WindowEvidence, candidates};
use std::collections::BTreeMap;
use std::ops::Range;
use task::{Batch, TaskEngine};

/// How far below the copy threshold a pair's sketched cosine may fall and still be compared
/// exactly: eight times the worst error of the estimate in `pseudo_gradient::sketch`'s tests
/// (0.031 over 140 pairs and seeds, cosines from 0 to 1).
pub const SKETCH_MARGIN: f64 = 0.25;

/// Salt of the sketch's seed, drawn from the validator's secret of the window.
const SKETCH_SALT: u64 = 0x534B_4554_4348;

/// Fills in `evidence` the similarities, the aggregate's losses (at each of `rules.step_scales`
/// and at the scoring step: the whole outer rate, or under `rules.score_at_best_scale` the fraction
/// whose aggregate lowers the eval loss most) and each candidate's leave-one-out losses at that
/// step for the candidates under `params` (every other miner's are emptied), each clipped to its
/// group's clip norm, with the share `rules.leave_one_out` names. Where `scoring::measured` names other gradients than the
/// candidates (there are none), only their aggregate is measured. `params`, `momentum` and `batches`
/// are the checkpoint, the outer momentum buffer and the eval batches the window started from;
/// `eval_seed` is the validator's secret of the window and `reference` its own dense training of
/// the window (the common direction the copy check sets aside under
/// `rules.copy_beside_reference`).
pub fn contributions(
    engine: &TaskEngine,
    (params, momentum, batches): (&[f32], &[f32], &[Batch]),
    (evidence, eval_seed, reference): (&mut WindowEvidence, u64, &[f32]),
    gradients: &BTreeMap<u16, Gradient>,
    rules: &ScoringParams,
) {
    // Candidates are scored; gradients measured only for an unpaid step (`scoring::measured`)
    // are not.
    let uids = scoring::measured(evidence, rules);
    let scored = uids == candidates(evidence, rules);
    let values: Vec<&Sparse> = uids.iter().map(|u| &gradients[u].values).collect();
    let pairs: Vec<(u16, &Sparse)> = uids.iter().copied().zip(values.iter().copied()).collect();
    let seed = eval_seed ^ SKETCH_SALT;
    let ranges: Vec<Range<usize>> = uids
        .iter()
        .map(|u| gradients[u].group.range.clone())
        .collect();
    let common = rules
        .copy_beside_reference
        .then_some((reference, &ranges[..]));
    evidence.similarities = if scored {
        similar_pairs(&pairs, seed, rules.copy_cosine, common)
    } else {
        Vec::new()
    };
    let clips = evidence.clip_norms();
    let caps: Vec<f64> = uids
        .iter()
        .map(|u| clips[gradients[u].group.index])
        .collect();
    let measured = evaluate::leave_one_out(
        engine,
        (params, momentum),
        &values,
        &caps,
        (batches, rules.leave_one_out, &rules.step_scales),
        (
            scored,
            rules.score_at_best_scale.then_some(&evidence.base[..]),
        ),
    );
    evidence.aggregate = measured.aggregate;
    evidence.scaled = measured.scaled;
    for m in &mut evidence.miners {
        m.without = Vec::new();
    }
    for (uid, losses) in uids.iter().zip(measured.without) {
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
///
/// With a `common` direction (the validator's own training of the window) and each gradient's
/// parameter group, the cosine is that of what is left of each gradient once its projection on
/// the direction over its group is taken out (`Beside`): the direction every honest window
/// shares, which no miner chooses, does not make two honest miners look like copies, while a copy
/// shares everything else too.
pub fn similar_pairs(
    pairs: &[(u16, &Sparse)],
    seed: u64,
    copy_cosine: f64,
    common: Option<(&[f32], &[Range<usize>])>,
) -> Vec<Similarity> {
    let beside = Beside::new(pairs, common);
    let cosine = |i: usize, j: usize| match &beside {
        Some(b) => b.cosine(pairs, i, j),
        None => pairs[i].1.cosine(pairs[j].1),
    };
    let entries = pairs.iter().map(|(_, g)| g.nonzeros()).sum::<usize>() / pairs.len().max(1);
    let mut out = Vec::new();
    if entries <= sketch::ROWS * sketch::WIDTH {
        for i in 0..pairs.len() {
            for j in i + 1..pairs.len() {
                out.push(similarity(pairs, i, j, cosine(i, j)));
            }
        }
    } else {
        let mut sketches: Vec<Sketch> = pairs.iter().map(|(_, g)| Sketch::of(g, seed)).collect();
        if let Some(b) = &beside {
            // The direction over each group, sketched once a group.
            let mut directions: BTreeMap<(usize, usize), Sketch> = BTreeMap::new();
            for (i, sketch) in sketches.iter_mut().enumerate() {
                let range = &b.ranges[i];
                let direction = directions
                    .entry((range.start, range.end))
                    .or_insert_with(|| {
                        let over = &b.direction[range.clone()];
                        Sketch::of(
                            &Sparse::scattered(over, b.direction.len(), range.start),
                            seed,
                        )
                    });
                *sketch = sketch.minus(direction, b.amounts[i]);
            }
        }
        for i in 0..pairs.len() {
            for j in i + 1..pairs.len() {
                if sketches[i].cosine(&sketches[j]) >= copy_cosine - SKETCH_MARGIN {
                    out.push(similarity(pairs, i, j, cosine(i, j)));
                }
            }
        }
    }
    out.sort_by_key(|s| (s.a, s.b));
    out
}

/// The similarity of pairs `i` and `j`, its uids in order.
fn similarity(pairs: &[(u16, &Sparse)], i: usize, j: usize, cosine: f64) -> Similarity {
    let (a, b) = (pairs[i].0, pairs[j].0);
    Similarity {
        a: a.min(b),
        b: a.max(b),
        cosine,
    }
}

/// Each gradient g, zero outside its group's range R, against a direction d: g's share
/// `amount` = g.d_R / d_R.d_R of d over R, so that the rest r = g - amount d_R is orthogonal to d.
/// The rests' dot products and norms follow from the gradients' own: r_i.r_j = g_i.g_j -
/// amount_i amount_j d_R.d_R for two gradients of one group, g_i.g_j (zero) for two of disjoint
/// groups.
struct Beside<'a> {
    direction: &'a [f32],
    ranges: &'a [Range<usize>],
    /// Each gradient's d_R.d_R.
    squares: Vec<f64>,
    amounts: Vec<f64>,
    /// Each rest's squared norm.
    rests: Vec<f64>,
}

impl<'a> Beside<'a> {
    /// None without a direction.
    fn new(
        pairs: &[(u16, &Sparse)],
        common: Option<(&'a [f32], &'a [Range<usize>])>,
    ) -> Option<Self> {
        let (direction, ranges) = common?;
        assert_eq!(ranges.len(), pairs.len(), "one range a gradient");
        // d_R.d_R once a group: every candidate of a whole-model task shares one.
        let mut by_group: BTreeMap<(usize, usize), f64> = BTreeMap::new();
        let squares: Vec<f64> = ranges
            .iter()
            .map(|r| {
                *by_group.entry((r.start, r.end)).or_insert_with(|| {
                    direction[r.clone()]
                        .iter()
                        .map(|&x| x as f64 * x as f64)
                        .sum()
                })
            })
            .collect();
        // A zero direction over a group sets nothing aside there.
        let amounts: Vec<f64> = pairs
            .iter()
            .zip(&squares)
            .map(|((_, g), &square)| {
                if square == 0.0 {
                    0.0
                } else {
                    g.dot_dense(direction) / square
                }
            })
            .collect();
        let rests = pairs
            .iter()
            .zip(amounts.iter().zip(&squares))
            .map(|((_, g), (a, square))| (g.norm().powi(2) - a * a * square).max(0.0))
            .collect();
        Some(Beside {
            direction,
            ranges,
            squares,
            amounts,
            rests,
        })
    }

    /// The cosine of pairs `i`'s and `j`'s rests (0 when either is zero).
    fn cosine(&self, pairs: &[(u16, &Sparse)], i: usize, j: usize) -> f64 {
        let norms = (self.rests[i] * self.rests[j]).sqrt();
        if norms == 0.0 {
            return 0.0;
        }
        let shared = if self.ranges[i] == self.ranges[j] {
            self.amounts[i] * self.amounts[j] * self.squares[i]
        } else {
            0.0
        };
        ((pairs[i].1.dot(pairs[j].1) - shared) / norms).clamp(-1.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scoring::checks::pairwise_similarity;

    /// Each gradient with its index as its uid.
    fn numbered(sparse: &[Sparse]) -> Vec<(u16, &Sparse)> {
        sparse
            .iter()
            .enumerate()
            .map(|(u, s)| (u as u16, s))
            .collect()
    }

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
        let pairs = numbered(&sparse);
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
            let sketched = similar_pairs(&pairs, seed, copy_cosine, None);
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
        let pairs = numbered(&sparse);
        assert_eq!(
            similar_pairs(&pairs, 7, 0.95, None),
            pairwise_similarity(&pairs, |a, b| a.cosine(b))
        );
    }

    /// Honest dense windows share one large common direction (each a common vector plus 20% of
    /// its norm of its own), so that whole gradients of honest miners pass the copy threshold. The
    /// validator's own training is that direction plus its own noise. Beside it, no two honest
    /// windows are copies (their cosine is about a half: the reference's own noise is common to
    /// every rest), while a scaled, noised copy still is; exactly and through the sketches alike.
    #[test]
    fn honest_windows_that_share_a_direction_are_not_copies_beside_it() {
        for len in [4_000, 40_000] {
            let common = random(len, len, 1);
            let own = |seed: u64| -> Vec<f32> {
                let noise = random(len, len, seed);
                common
                    .iter()
                    .zip(&noise)
                    .map(|(c, n)| c + 0.2 * n)
                    .collect()
            };
            let mut windows: Vec<Vec<f32>> = (10..14).map(own).collect();
            let reference = own(20);
            // Miner 4 copies miner 0, scaled, with noise of its own.
            let noise = random(len, len, 30);
            windows.push(
                windows[0]
                    .iter()
                    .zip(&noise)
                    .map(|(x, n)| 1.5 * (x + 0.01 * n))
                    .collect(),
            );
            let sparse: Vec<Sparse> = windows.iter().map(|v| Sparse::from_dense(v)).collect();
            let pairs = numbered(&sparse);
            let copies = |list: &[Similarity]| -> Vec<(u16, u16)> {
                list.iter()
                    .filter(|s| s.cosine >= 0.95)
                    .map(|s| (s.a, s.b))
                    .collect()
            };
            let whole = similar_pairs(&pairs, 7, 0.95, None);
            let honest = |s: &&Similarity| s.a < 4 && s.b < 4;
            assert!(
                whole.iter().filter(honest).all(|s| s.cosine >= 0.95),
                "whole honest gradients look like copies: {whole:?}"
            );
            let ranges = vec![0..len; pairs.len()];
            let beside = similar_pairs(&pairs, 7, 0.95, Some((&reference, &ranges)));
            assert_eq!(copies(&beside), vec![(0, 4)], "len {len}: {beside:?}");
            for s in beside.iter().filter(honest) {
                assert!(s.cosine < 0.7, "len {len}: {s:?}");
            }
        }
    }

    /// Where miners train parameter groups, each gradient is compared beside the reference over
    /// its own group: honest windows of one group are not copies, windows of two groups are
    /// unrelated (cosine 0), and a copy within a group still is one.
    #[test]
    fn beside_the_reference_over_each_group() {
        let (len, half) = (8_000, 4_000);
        let common = random(len, len, 1);
        let own = |seed: u64, range: Range<usize>| -> Vec<f32> {
            let noise = random(len, len, seed);
            (0..len)
                .map(|i| {
                    if range.contains(&i) {
                        common[i] + 0.2 * noise[i]
                    } else {
                        0.0
                    }
                })
                .collect()
        };
        let ranges = vec![0..half, 0..half, half..len, half..len, 0..half];
        let mut windows: Vec<Vec<f32>> = (0..4)
            .map(|k| own(10 + k, ranges[k as usize].clone()))
            .collect();
        windows.push(windows[0].iter().map(|x| 2.0 * x).collect());
        let reference = own(20, 0..len);
        let sparse: Vec<Sparse> = windows.iter().map(|v| Sparse::from_dense(v)).collect();
        let pairs = numbered(&sparse);
        let whole = similar_pairs(&pairs, 7, 0.95, None);
        let beside = similar_pairs(&pairs, 7, 0.95, Some((&reference, &ranges)));
        let cosine = |list: &[Similarity], a: u16, b: u16| {
            list.iter()
                .find(|s| (s.a, s.b) == (a, b))
                .expect("every pair")
                .cosine
        };
        for (a, b) in [(0, 1), (2, 3)] {
            assert!(cosine(&whole, a, b) >= 0.95, "{whole:?}");
            assert!(cosine(&beside, a, b) < 0.7, "{beside:?}");
        }
        for (a, b) in [(0, 2), (1, 3), (2, 4)] {
            assert_eq!(cosine(&beside, a, b), 0.0, "{beside:?}");
        }
        assert!(cosine(&beside, 0, 4) > 0.999, "{beside:?}");
    }
}
