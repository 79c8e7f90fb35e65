//! What each candidate adds: the candidates' similarities, and the eval losses of their aggregate
//! with every one of them and with each left out, at the aggregate's own step.

use super::Gradient;
use crate::evaluate;
use pseudo_gradient::Sparse;
use scoring::checks::pairwise_similarity;
use scoring::{ScoringParams, WindowEvidence, candidates};
use std::collections::BTreeMap;
use task::{Batch, TaskEngine};

/// Fills in `evidence` the similarities, the aggregate's losses and each candidate's leave-one-out
/// losses for the candidates under `params` (every other miner's are emptied), each clipped to its
/// group's clip norm, at the step `rules.leave_one_out` names. `params`, `momentum` and `batches`
/// are the checkpoint, the outer momentum buffer and the eval batches the window started from.
pub fn contributions(
    engine: &TaskEngine,
    (params, momentum, batches): (&[f32], &[f32], &[Batch]),
    evidence: &mut WindowEvidence,
    gradients: &BTreeMap<u16, Gradient>,
    rules: &ScoringParams,
) {
    let uids = candidates(evidence, rules);
    let values: Vec<&Sparse> = uids.iter().map(|u| &gradients[u].values).collect();
    let pairs: Vec<(u16, &Sparse)> = uids.iter().copied().zip(values.iter().copied()).collect();
    evidence.similarities = pairwise_similarity(&pairs, |a, b| a.cosine(b));
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
