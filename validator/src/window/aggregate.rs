//! The window's outer step: the earners, clipped to their groups' clip norms and averaged, applied
//! to the checkpoint the window started from.

use super::Gradient;
use crate::aggregation::next_checkpoint;
use scoring::{MinerDecision, ScoringParams, WindowEvidence};
use std::collections::BTreeMap;
use task::{Checkpoint, InnerState, TaskEngine};

/// The window's outer step.
#[derive(Clone, Debug)]
pub struct Step {
    /// The aggregated uids, in uid order.
    pub aggregated: Vec<u16>,
    /// The clip norm of each aggregated gradient (its group's).
    pub caps: Vec<f64>,
    /// The fraction of the outer rate the step takes (`scoring::aggregate_step`).
    pub scale: f64,
    pub next: Checkpoint,
    /// The outer momentum buffer before and after (empty: zero, or plain SGD).
    pub momentum_before: Vec<f32>,
    pub momentum_after: Vec<f32>,
}

/// The next checkpoint: the gradients `scoring::aggregate_step` names (the best earners of each
/// group, at most `aggregate_top`; where fewer than `aggregate_min` earned and the rules allow it,
/// every candidate whose aggregate lowered the eval loss, at the first fraction of the outer rate
/// at which it did) clipped to their group's entry of `clips` and averaged in uid order, with the
/// outer step at that fraction from `checkpoint` and the momentum buffer `momentum`, carrying the
/// inner optimizer state `inner` where the task carries one.
pub fn aggregate(
    engine: &TaskEngine,
    (checkpoint, momentum): (&Checkpoint, &[f32]),
    (evidence, decisions): (&WindowEvidence, &[MinerDecision]),
    (gradients, clips): (&BTreeMap<u16, Gradient>, &[f64]),
    (rules, inner): (&ScoringParams, Option<InnerState>),
) -> Step {
    let (aggregated, scale) = scoring::aggregate_step(evidence, decisions, rules);
    let deltas: Vec<&pseudo_gradient::Sparse> =
        aggregated.iter().map(|u| &gradients[u].values).collect();
    let caps: Vec<f64> = aggregated
        .iter()
        .map(|u| clips[gradients[u].group.index])
        .collect();
    let (next, momentum_after) = next_checkpoint(
        engine,
        (checkpoint, momentum),
        &deltas,
        (&caps, scale),
        inner,
    );
    Step {
        aggregated,
        caps,
        scale,
        next,
        momentum_before: momentum.to_vec(),
        momentum_after,
    }
}
