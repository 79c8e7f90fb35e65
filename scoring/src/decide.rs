//! One window's decisions from its evidence: which miners earn, their moving averages and weights.
//! A validator calls this with what it just measured; a replay calls it with what was recorded, under
//! the recorded or other scoring parameters.
//!
//! A window is decided in two stages. `screen` sorts out, miner by miner, the gradients that cannot
//! earn (refused, banned, fraud, oversized, harmful on their own, not trained on their pages); the
//! rest are the window's candidates. Each candidate then scores what it adds to the aggregate of
//! all candidates, at the step the aggregate really takes: the relative held-out loss drop between
//! the aggregate without it and the aggregate with it (leave-one-out). Near-duplicate candidates,
//! which under commit-before-reveal can only be one training run served by several identities,
//! share one score.
//!
//! The file holds both stages and the averages they feed (a little over 500 lines): each rule is
//! short, and a reader checking what a miner can earn reads them in one place, in order.

use crate::checks::{AssignmentCheck, AssignmentEvidence, Similarity};
pub use crate::params::{DEFAULT_AUDIT_GRACE, LeaveOneOut, ScoringParams};
use crate::reason::Reason;
use crate::usefulness::{UsefulnessScore, mean_and_standard_error, relative_drops};
use crate::weights::{moving_average, normalize_max_weight};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a validator saw of one miner in one window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MinerEvidence {
    pub uid: u16,
    pub hotkey: String,
    /// Why the gradient was refused before evaluation (absent, late, malformed, ...).
    pub refused: Option<Reason>,
    /// L2 norm of the decoded gradient (0 when none was decoded).
    pub norm: f64,
    /// Losses on the window's eval batches after the gradient, clipped to the reference norm, is
    /// applied alone at the evaluation step (empty when refused).
    pub after: Vec<f32>,
    /// The assignment check's losses, for gradients that help on their own.
    pub assignment: Option<AssignmentEvidence>,
    /// What showed the miner did not do or serve the work it committed to (a failed re-execution,
    /// a payload that is not the codec of its committed artefacts, a broken residual chain).
    pub fraud: Option<Reason>,
    /// The last window of a ban from an earlier fraud, if the hotkey is banned.
    pub banned_until: Option<u64>,
    /// An audit this window reproduced the miner's work (its artefacts fit together and the
    /// re-executed window matches): the assignment check does not apply.
    #[serde(default)]
    pub audited_clean: bool,
    /// For candidates: losses on the eval batches of the aggregate of every other candidate, with
    /// this one left out (empty for non-candidates).
    pub without: Vec<f32>,
    /// The parameter group the gradient covers (0 where the task trains the whole model).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub group: usize,
    /// An audit of this or an earlier window has not resolved: the miner earns nothing from this
    /// validator, and keeps its moving average, until it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withheld: Option<Reason>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Everything a window's decisions rest on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowEvidence {
    pub window: u64,
    /// Losses of the window's checkpoint on the eval batches.
    pub base: Vec<f32>,
    /// Norm of the validator's own training of the window (on pages no miner was assigned),
    /// compressed as a miner with an empty residual sends it: what honest work of this window looks
    /// like, without the mass error feedback carries. The clip norm never falls below it.
    pub reference_norm: f64,
    /// Where the task cuts the model into parameter groups: the reference's norm over each group
    /// (empty for a whole-model task). Each group's clip norm never falls below its entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reference_group_norms: Vec<f64>,
    /// Where the task cuts the model into parameter groups: the mean relative loss drop on the eval
    /// batches that the reference's own training over each group gives alone, at the evaluation
    /// step (empty for a whole-model task). It prices the groups: see `group_values`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reference_group_gains: Vec<f64>,
    pub miners: Vec<MinerEvidence>,
    /// Cosine similarity of every pair of candidates.
    pub similarities: Vec<Similarity>,
    /// Losses on the eval batches of the aggregate of every candidate (empty without candidates),
    /// at the step leave-one-out scores at: the whole outer rate, or under `score_at_best_scale`
    /// the fraction of `scaled` at which they are lowest (`best_scale`; the same losses).
    pub aggregate: Vec<f32>,
    /// Losses on the eval batches of the aggregate `measured` names at each of the rules'
    /// `step_scales`, for a step with candidates and for the fraction `score_at_best_scale`
    /// scores at (empty without scales or gradients to measure).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scaled: Vec<Vec<f32>>,
}

/// Why a miner earned nothing this window, or that it earned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Verdict {
    Earned,
    Refused { reason: Reason },
    Withheld { reason: Reason },
    Banned { until: u64 },
    Fraud { reason: Reason },
    Oversized { ratio: f64 },
    Harmful { mean_relative_drop: f64 },
    WrongPages { p_value: f64 },
    NoContribution { relative: f64 },
}

impl Verdict {
    /// A stable one-word name (metrics labels, tables).
    pub fn kind(&self) -> &'static str {
        match self {
            Verdict::Earned => "earned",
            Verdict::Refused { .. } => "refused",
            Verdict::Withheld { .. } => "withheld",
            Verdict::Banned { .. } => "banned",
            Verdict::Fraud { .. } => "fraud",
            Verdict::Oversized { .. } => "oversized",
            Verdict::Harmful { .. } => "harmful",
            Verdict::WrongPages { .. } => "wrong_pages",
            Verdict::NoContribution { .. } => "no_contribution",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Earned => write!(f, "earned"),
            Verdict::Refused { reason } => write!(f, "refused: {reason}"),
            Verdict::Withheld { reason } => write!(f, "withheld: {reason}"),
            Verdict::Banned { until } => {
                write!(f, "banned after a fraud, through window {until}")
            }
            Verdict::Fraud { reason } => write!(f, "fraud: {reason}"),
            Verdict::Oversized { ratio } => write!(
                f,
                "gradient norm is {ratio:.2} times the window's clip norm"
            ),
            Verdict::Harmful { mean_relative_drop } => write!(
                f,
                "does not help: held-out loss changes by {:+.4}%",
                -100.0 * mean_relative_drop
            ),
            Verdict::WrongPages { p_value } => write!(
                f,
                "not trained on its assigned pages (assignment check p = {p_value:.3})"
            ),
            Verdict::NoContribution { relative } => write!(
                f,
                "adds nothing to the other gradients (leave-one-out {:+.4}%)",
                100.0 * relative
            ),
        }
    }
}

/// One miner's outcome for one window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MinerDecision {
    pub uid: u16,
    pub hotkey: String,
    /// Usefulness of the gradient alone, when it was evaluated.
    pub usefulness: Option<UsefulnessScore>,
    pub assignment: Option<AssignmentCheck>,
    /// What the candidate adds to the aggregate (mean relative loss drop), when it was one.
    pub contribution: Option<f64>,
    /// Other candidates it is a near-duplicate of (it shares its score with them).
    pub duplicates: Vec<u16>,
    pub verdict: Verdict,
    /// This window's score: the contribution of an earning gradient (shared among duplicates),
    /// else 0.
    pub score: f64,
    pub moving_average: f64,
    /// Normalized weight (0 for all when nobody has earned yet).
    pub weight: f64,
    /// The parameter group its gradient covers (0 where the task trains the whole model).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub group: usize,
}

/// Moving averages per uid, with the hotkey each belongs to.
pub type Averages = BTreeMap<u16, (String, f64)>;

/// Bans per uid: the hotkey and the last window it is banned through.
pub type Bans = BTreeMap<u16, (String, u64)>;

/// The lower median of the values (the smaller middle one for an even count): one outlier cannot
/// move it past an honest value. None when empty.
pub fn lower_median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    (!sorted.is_empty()).then(|| sorted[(sorted.len() - 1) / 2])
}

/// The norm every gradient of the window is clipped to before it is scored or aggregated: the lower
/// median of the decoded gradients' norms (honest miners' error-feedback payloads, when they are the
/// majority), never below the reference norm (so that small gradients cannot pull it under honest
/// work). One large gradient cannot move it, so scale alone never pays.
pub fn clip_norm(miners: &[MinerEvidence], reference_norm: f64) -> f64 {
    let norms: Vec<f64> = miners
        .iter()
        .filter(|m| m.norm > 0.0)
        .map(|m| m.norm)
        .collect();
    lower_median(&norms).map_or(reference_norm, |median| median.max(reference_norm))
}

/// Whether a miner's gradient cannot earn this window, and why (None: it is a candidate).
/// `clip_norm` is the window's `clip_norm`. The assignment check is statistical: a miner that fails
/// it is audited in the same window, and an audit that reproduces its work clears it.
pub fn screen(
    m: &MinerEvidence,
    window: u64,
    base: &[f32],
    clip_norm: f64,
    params: &ScoringParams,
) -> Option<Verdict> {
    if let Some(until) = m.banned_until.filter(|&until| until >= window) {
        return Some(Verdict::Banned { until });
    }
    if let Some(reason) = &m.fraud {
        return Some(Verdict::Fraud {
            reason: reason.clone(),
        });
    }
    if let Some(reason) = &m.withheld {
        return Some(Verdict::Withheld {
            reason: reason.clone(),
        });
    }
    if let Some(reason) = &m.refused {
        return Some(Verdict::Refused {
            reason: reason.clone(),
        });
    }
    let ratio = if clip_norm > 0.0 {
        m.norm / clip_norm
    } else {
        f64::INFINITY
    };
    // NaN is oversized too.
    if ratio.is_nan() || ratio > params.max_norm_ratio {
        return Some(Verdict::Oversized { ratio });
    }
    let usefulness = UsefulnessScore::from_losses(base, &m.after);
    if usefulness.score() <= 0.0 {
        return Some(Verdict::Harmful {
            mean_relative_drop: usefulness.mean_relative_drop,
        });
    }
    if m.audited_clean {
        return None;
    }
    match m.assignment.as_ref().map(AssignmentEvidence::check) {
        Some(a) if a.passed(params.assignment_p_value) => None,
        Some(a) => Some(Verdict::WrongPages { p_value: a.p_value }),
        None => Some(Verdict::WrongPages { p_value: 1.0 }),
    }
}

/// The clip norm of each parameter group: `clip_norm` over the gradients of that group, floored by
/// the reference's norm over it. A whole-model task (no group norms) has one.
pub fn group_clip_norms(
    miners: &[MinerEvidence],
    reference_norm: f64,
    reference_group_norms: &[f64],
) -> Vec<f64> {
    if reference_group_norms.is_empty() {
        return vec![clip_norm(miners, reference_norm)];
    }
    reference_group_norms
        .iter()
        .enumerate()
        .map(|(group, &floor)| {
            let members: Vec<MinerEvidence> = miners
                .iter()
                .filter(|m| m.group == group)
                .cloned()
                .collect();
            clip_norm(&members, floor)
        })
        .collect()
}

/// A group's gain is never taken below this fraction of the mean gain, so no group's value exceeds
/// 1 / this.
pub const MIN_GROUP_GAIN_FRACTION: f64 = 0.25;

/// What a unit of contribution to each parameter group is worth: the mean of the reference's group
/// gains over the group's own (floored at `MIN_GROUP_GAIN_FRACTION` of the mean). Groups differ in
/// how much a window of training on them lowers the loss; without this, a miner that declares a
/// capacity only the most valuable group fits would be paid more for the same work. The prices
/// come from the validator's own training on secret pages and batches, so no miner moves them.
/// All 1 when the reference gained nothing on average (or for a whole-model task: empty).
pub fn group_values(gains: &[f64]) -> Vec<f64> {
    if gains.is_empty() {
        return Vec::new();
    }
    let mean = gains.iter().sum::<f64>() / gains.len() as f64;
    if !(mean.is_finite() && mean > 0.0) || gains.iter().any(|g| !g.is_finite()) {
        return vec![1.0; gains.len()];
    }
    gains
        .iter()
        .map(|&g| mean / g.max(MIN_GROUP_GAIN_FRACTION * mean))
        .collect()
}

impl WindowEvidence {
    /// The window's clip norm per parameter group (see `group_clip_norms`).
    pub fn clip_norms(&self) -> Vec<f64> {
        group_clip_norms(
            &self.miners,
            self.reference_norm,
            &self.reference_group_norms,
        )
    }

    /// The norm `m`'s gradient is clipped to: its group's (0 for a group the task does not have,
    /// which no gradient fits under).
    pub fn clip_of(&self, m: &MinerEvidence) -> f64 {
        self.clip_norms().get(m.group).copied().unwrap_or(0.0)
    }
}

/// The uids of the window's candidates under `params`.
pub fn candidates(evidence: &WindowEvidence, params: &ScoringParams) -> Vec<u16> {
    let clips = evidence.clip_norms();
    let clip = |m: &MinerEvidence| clips.get(m.group).copied().unwrap_or(0.0);
    evidence
        .miners
        .iter()
        .filter(|m| screen(m, evidence.window, &evidence.base, clip(m), params).is_none())
        .map(|m| m.uid)
        .collect()
}

/// The gradients whose aggregate a window measures: its candidates; where there are none and the
/// rules step with unhelpful gradients (`step_with_candidates` and `step_with_unhelpful`), every
/// gradient screened out only because it did not help alone (it passed every other check: not
/// banned, no fraud, nothing withheld or refused, not oversized). Leave-one-out scores only
/// candidates.
pub fn measured(evidence: &WindowEvidence, params: &ScoringParams) -> Vec<u16> {
    let found = candidates(evidence, params);
    if !(found.is_empty() && params.step_with_candidates && params.step_with_unhelpful) {
        return found;
    }
    let clips = evidence.clip_norms();
    evidence
        .miners
        .iter()
        .filter(|m| {
            let clip = clips.get(m.group).copied().unwrap_or(0.0);
            matches!(
                screen(m, evidence.window, &evidence.base, clip, params),
                Some(Verdict::Harmful { mean_relative_drop }) if mean_relative_drop.is_finite()
            )
        })
        .map(|m| m.uid)
        .collect()
}

/// The index in `scaled` (the losses of one aggregate at each fraction of the outer rate, largest
/// first) of the fraction whose mean relative loss drop from `base` is the largest, ties to the
/// larger fraction; None where no fraction was measured or none has finite losses.
pub fn best_scale(base: &[f32], scaled: &[Vec<f32>]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, losses) in scaled.iter().enumerate() {
        if losses.len() != base.len() || base.is_empty() || losses.iter().any(|l| !l.is_finite()) {
            continue;
        }
        let gain = relative_gain(base, base, losses);
        if best.is_none_or(|(_, b)| gain > b) {
            best = Some((i, gain));
        }
    }
    best.map(|(i, _)| i)
}

/// Mean relative loss drop from `without` to `with`, per eval batch against the checkpoint's loss.
fn relative_gain(base: &[f32], without: &[f32], with: &[f32]) -> f64 {
    let (mean, _) = mean_and_standard_error(&relative_drops(base, without, with));
    if mean.is_finite() { mean } else { 0.0 }
}

/// Groups of candidates joined by near-duplicate pairs (cosine at least `threshold`), per uid.
fn duplicate_groups(
    candidates: &[u16],
    similarities: &[Similarity],
    threshold: f64,
) -> BTreeMap<u16, Vec<u16>> {
    let mut group: BTreeMap<u16, u16> = candidates.iter().map(|&u| (u, u)).collect();
    fn root(group: &BTreeMap<u16, u16>, mut u: u16) -> u16 {
        while group[&u] != u {
            u = group[&u];
        }
        u
    }
    for s in similarities {
        if s.cosine >= threshold && group.contains_key(&s.a) && group.contains_key(&s.b) {
            let (ra, rb) = (root(&group, s.a), root(&group, s.b));
            group.insert(ra.max(rb), ra.min(rb));
        }
    }
    let mut members: BTreeMap<u16, Vec<u16>> = BTreeMap::new();
    for &u in candidates {
        members.entry(root(&group, u)).or_default().push(u);
    }
    candidates
        .iter()
        .map(|&u| {
            let others = members[&root(&group, u)]
                .iter()
                .copied()
                .filter(|&o| o != u)
                .collect();
            (u, others)
        })
        .collect()
}

/// Decides a window. `previous` holds the moving averages before it; a uid whose hotkey changed
/// starts over, a miner that was absent or refused scores 0, so its average decays, and a fraud or
/// a ban clears it.
pub fn decide(
    evidence: &WindowEvidence,
    params: &ScoringParams,
    previous: &Averages,
) -> Vec<MinerDecision> {
    let candidates = candidates(evidence, params);
    let groups = duplicate_groups(&candidates, &evidence.similarities, params.copy_cosine);
    let clips = evidence.clip_norms();
    let values = group_values(&evidence.reference_group_gains);
    let mut decisions: Vec<MinerDecision> = evidence
        .miners
        .iter()
        .map(|m| {
            let clip = clips.get(m.group).copied().unwrap_or(0.0);
            let value = values.get(m.group).copied().unwrap_or(1.0);
            let evaluated = m.refused.is_none() && m.after.len() == evidence.base.len();
            let (verdict, contribution, duplicates, score) =
                match screen(m, evidence.window, &evidence.base, clip, params) {
                    Some(verdict) => (verdict, None, Vec::new(), 0.0),
                    None => {
                        let duplicates = groups.get(&m.uid).cloned().unwrap_or_default();
                        let (verdict, contribution, score) =
                            scored(evidence, m, value, duplicates.len());
                        (verdict, Some(contribution), duplicates, score)
                    }
                };
            MinerDecision {
                uid: m.uid,
                hotkey: m.hotkey.clone(),
                usefulness: evaluated
                    .then(|| UsefulnessScore::from_losses(&evidence.base, &m.after)),
                assignment: m.assignment.as_ref().map(AssignmentEvidence::check),
                contribution,
                duplicates,
                verdict,
                score,
                moving_average: 0.0,
                weight: 0.0,
                group: m.group,
            }
        })
        .collect();
    average_and_weigh(&mut decisions, params, previous);
    decisions
}

/// A candidate's verdict, contribution and score: what it adds to the aggregate, times its
/// group's value, shared with its `duplicates` near-copies.
fn scored(
    evidence: &WindowEvidence,
    m: &MinerEvidence,
    value: f64,
    duplicates: usize,
) -> (Verdict, f64, f64) {
    let contribution = if m.without.len() == evidence.base.len() && !evidence.aggregate.is_empty() {
        relative_gain(&evidence.base, &m.without, &evidence.aggregate)
    } else {
        0.0
    };
    let score = value * contribution.max(0.0) / (1 + duplicates) as f64;
    let verdict = if score > 0.0 {
        Verdict::Earned
    } else {
        Verdict::NoContribution {
            relative: contribution,
        }
    };
    (verdict, contribution, score)
}

/// Fills each decision's moving average (from `previous`) and weight.
fn average_and_weigh(decisions: &mut [MinerDecision], params: &ScoringParams, previous: &Averages) {
    for d in decisions.iter_mut() {
        let before = previous
            .get(&d.uid)
            .filter(|(hotkey, _)| *hotkey == d.hotkey)
            .map(|(_, a)| *a);
        d.moving_average = match d.verdict {
            // Whatever a cheater earned before is forgotten at once.
            Verdict::Fraud { .. } | Verdict::Banned { .. } => 0.0,
            // Held, not averaged in, until the audit resolves.
            Verdict::Withheld { .. } => before.unwrap_or(0.0),
            _ => moving_average(before, d.score, params.moving_average),
        };
    }
    let averages: Vec<f64> = decisions
        .iter()
        .map(|d| match d.verdict {
            Verdict::Withheld { .. } => 0.0,
            _ => d.moving_average,
        })
        .collect();
    if averages.iter().any(|&a| a > 0.0) {
        let weights = normalize_max_weight(&averages, params.max_weight);
        for (d, w) in decisions.iter_mut().zip(weights) {
            d.weight = w;
        }
    }
}

/// The moving averages after a window's decisions.
pub fn averages_after(decisions: &[MinerDecision]) -> Averages {
    decisions
        .iter()
        .map(|d| (d.uid, (d.hotkey.clone(), d.moving_average)))
        .collect()
}

/// The bans after a window's decisions: a fraud bans the hotkey for `fraud_ban_windows` windows
/// after this one; bans that ended, or whose uid changed hands, are dropped.
pub fn bans_after(
    previous: &Bans,
    decisions: &[MinerDecision],
    window: u64,
    params: &ScoringParams,
) -> Bans {
    let mut bans: Bans = previous
        .iter()
        .filter(|(uid, (hotkey, until))| {
            *until > window
                && decisions
                    .iter()
                    .find(|d| d.uid == **uid)
                    .is_none_or(|d| d.hotkey == *hotkey)
        })
        .map(|(uid, ban)| (*uid, ban.clone()))
        .collect();
    for d in decisions {
        if matches!(d.verdict, Verdict::Fraud { .. }) {
            bans.insert(
                d.uid,
                (
                    d.hotkey.clone(),
                    window.saturating_add(params.fraud_ban_windows),
                ),
            );
        }
    }
    bans
}

/// The uids to aggregate: the best `top` earners by score (ties to the lower uid) of each parameter
/// group (the whole model is one), in uid order (the order every party sums them in); none when
/// fewer than `min` earned, so that the model never moves by the say of fewer miners.
pub fn aggregation_order(decisions: &[MinerDecision], top: usize, min: usize) -> Vec<u16> {
    let mut earning: Vec<(usize, u16, f64)> = decisions
        .iter()
        .filter(|d| d.verdict == Verdict::Earned && d.score > 0.0)
        .map(|d| (d.group, d.uid, d.score))
        .collect();
    if earning.len() < min.max(1) {
        return Vec::new();
    }
    earning.sort_by(|a, b| a.0.cmp(&b.0).then(b.2.total_cmp(&a.2)).then(a.1.cmp(&b.1)));
    let mut uids = Vec::new();
    let mut taken: BTreeMap<usize, usize> = BTreeMap::new();
    for (group, uid, _) in earning {
        let count = taken.entry(group).or_default();
        if *count < top {
            *count += 1;
            uids.push(uid);
        }
    }
    uids.sort_unstable();
    uids
}

/// The uids a window aggregates, in uid order: see `aggregate_step`.
pub fn aggregated(
    evidence: &WindowEvidence,
    decisions: &[MinerDecision],
    params: &ScoringParams,
) -> Vec<u16> {
    aggregate_step(evidence, decisions, params).0
}

/// The uids a window aggregates, in uid order, and the fraction of the outer rate it steps at: its
/// best earners (`aggregation_order`) at the whole rate (whatever step leave-one-out scored them
/// at: see `ScoringParams::score_at_best_scale`); or, where too few earned and the rules
/// step with candidates, every gradient `measured` names (the candidates, or where there are none
/// and the rules allow it the unhelpful ones), provided there are at least `aggregate_min`, at
/// the first of `step_scales` at which their aggregate (`evidence.scaled`, measured on exactly
/// these; `evidence.aggregate` at the whole rate without scales) lowers the eval loss. None
/// otherwise: the checkpoint stays.
pub fn aggregate_step(
    evidence: &WindowEvidence,
    decisions: &[MinerDecision],
    params: &ScoringParams,
) -> (Vec<u16>, f64) {
    let earners = aggregation_order(decisions, params.aggregate_top, params.aggregate_min);
    if !earners.is_empty() || !params.step_with_candidates {
        return (earners, 1.0);
    }
    let mut all = measured(evidence, params);
    all.sort_unstable();
    let base = &evidence.base;
    let lowers = |losses: &[f32]| {
        losses.len() == base.len() && !base.is_empty() && relative_gain(base, base, losses) > 0.0
    };
    let scale = if params.step_scales.is_empty() {
        lowers(&evidence.aggregate).then_some(1.0)
    } else {
        params
            .step_scales
            .iter()
            .zip(&evidence.scaled)
            .find(|(_, losses)| lowers(losses))
            .map(|(&scale, _)| scale)
    };
    match scale {
        Some(scale) if all.len() >= params.aggregate_min.max(1) => (all, scale),
        _ => (Vec::new(), 1.0),
    }
}

#[cfg(test)]
mod tests;
