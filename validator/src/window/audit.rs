//! Audits: a miner's committed artefacts checked against its payload and against the validator's
//! re-execution of its window, and what the finding does to its evidence.
//!
//! An audit that cannot complete in its window (the miner cannot be reached, or does not answer
//! within the window's audit budget) stays unresolved: the miner earns nothing from this validator
//! until it serves that window's artefacts, and an audit still unresolved `audit_grace` windows
//! later is fraud. Every audit a window runs, of its own window or of an earlier one, is fetched at
//! once (`WindowInputs::artefacts`), so a miner that stalls delays nobody but itself.

use super::{Blob, Gradient, Start, WindowInputs, Work};
use crate::audit::{ArtefactError, verify_artefacts};
use crate::evaluate;
use crate::record::{AuditRecord, SegmentAudit};
use scoring::checks::{relative_difference, reproduces};
use scoring::{MinerEvidence, Reason, ReasonKind};
use segments::examine_segments;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use task::{Checkpoint, Digest, TaskEngine};

/// What an audited miner served: its dense pseudo-gradient and the residual that went into its
/// compression, both in the codec's dense form.
#[derive(Clone, Debug)]
pub struct Artefacts {
    pub dense: Blob,
    pub residual_in: Blob,
    /// The training states of the segments the audit re-executes, each at its start and end as
    /// the miner committed to them (none in records from before segments: the audit then
    /// re-executes the whole window).
    pub segments: Vec<ServedSegment>,
}

impl Artefacts {
    /// Writes the digests of what was served into `record`.
    fn name_in(&self, record: &mut AuditRecord) {
        record.dense_digest = Some(self.dense.digest());
        record.residual_digest = Some(self.residual_in.digest());
        record.segments = self
            .segments
            .iter()
            .map(|s| SegmentAudit {
                segment: s.index,
                start: s.start.as_ref().map(Blob::digest),
                end: s.end.digest(),
                relative_difference: None,
            })
            .collect();
    }
}

/// One segment's training states as served (`task::segment` bytes, checked against the
/// commitment's digests when fetched).
#[derive(Clone, Debug)]
pub struct ServedSegment {
    pub index: usize,
    /// The state at its start: None for the window's first segment, which starts from the
    /// checkpoint with a fresh optimizer.
    pub start: Option<Blob>,
    pub end: Blob,
}

/// Why an audit got no artefacts.
#[derive(Clone, Debug)]
pub struct AuditGap {
    pub reason: Reason,
    /// The miner could not be reached, or did not answer within the budget: the audit stays
    /// unresolved. Any other gap is a refusal to serve what it committed to.
    pub unreachable: bool,
}

/// What an audit found.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditFinding {
    pub record: AuditRecord,
    /// The miner could not be reached: the audit stays unresolved.
    pub incomplete: bool,
}

/// One audit a window asks artefacts for: `uid`'s commitment of `window` (this window's or an
/// earlier one whose audit is unresolved).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRequest {
    pub uid: u16,
    pub window: u64,
    /// The parameters the miner trained that window (its group): the segment states cover them.
    pub range: std::ops::Range<usize>,
}

/// An audit that has not resolved: which window of which hotkey, and what the window's commitment
/// named (the checkpoint, payload and outgoing residual, blobs in a data directory).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingAudit {
    pub hotkey: String,
    pub window: u64,
    /// The window the audit was first asked in: the grace runs from it.
    pub since: u64,
    pub window_seed: u64,
    pub checkpoint: Digest,
    pub payload: Digest,
    /// The parameter group the window gave the miner.
    #[serde(default)]
    pub group: usize,
    pub residual_out: Digest,
    /// The backend the commitment declared (empty in states from before segments).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub backend: String,
}

/// The unresolved audits by uid (at most one each: the oldest).
pub type Unresolved = BTreeMap<u16, PendingAudit>;

/// An earlier window's audit, ready to run again: the checkpoint that window started from and the
/// gradient the miner committed to in it.
#[derive(Clone, Debug)]
pub struct Subject {
    pub window: u64,
    pub window_seed: u64,
    pub checkpoint: Arc<Checkpoint>,
    pub gradient: Gradient,
}

/// What an audit re-executes and compares: a window, its checkpoint and the committed gradient.
#[derive(Clone, Copy)]
struct Audited<'a> {
    window: u64,
    window_seed: u64,
    checkpoint: &'a Checkpoint,
    gradient: &'a Gradient,
}

/// How an audit compares the re-executed training with the miner's: the task's tolerance, and
/// the backend the validator re-executes on (a window trained on the same one must match bit for
/// bit).
#[derive(Clone, Copy, Debug)]
pub struct Comparison<'a> {
    pub tolerance: f64,
    pub evaluator: &'a str,
}

impl<'a> Comparison<'a> {
    /// The comparison a window's audits make.
    pub fn of(start: &'a Start) -> Self {
        Comparison {
            tolerance: start.params().spot_check_tolerance,
            evaluator: &start.setting.evaluator,
        }
    }
}

/// The failure an audit's relative difference means under `tolerance`, if any.
pub fn irreproducible(difference: f64, tolerance: f64) -> Option<Reason> {
    (!reproduces(difference, tolerance)).then(|| {
        Reason::new(
            ReasonKind::Irreproducible,
            format!(
                "audit: its dense gradient differs from the re-executed training by {difference:.3e} (relative L2), beyond the backend tolerance {tolerance}"
            ),
        )
    })
}

/// One miner's audit of the window `start` scores: the artefacts it served (or why there are
/// none) must give its payload byte for byte and the committed outgoing residual, and the dense
/// gradient must match the re-executed window within the audit tolerance.
pub fn examine(
    engine: &TaskEngine,
    start: &Start,
    uid: u16,
    gradient: &Gradient,
    served: Result<Artefacts, AuditGap>,
) -> AuditFinding {
    let s = &start.setting;
    let audited = Audited {
        window: s.window,
        window_seed: s.window_seed,
        checkpoint: &s.checkpoint,
        gradient,
    };
    examine_window(engine, audited, uid, served, Comparison::of(start))
}

fn examine_window(
    engine: &TaskEngine,
    audited: Audited,
    uid: u16,
    served: Result<Artefacts, AuditGap>,
    comparison: Comparison,
) -> AuditFinding {
    let mut record = AuditRecord {
        uid,
        window: None,
        dense_digest: None,
        residual_digest: None,
        relative_difference: None,
        failure: None,
        segments: Vec::new(),
    };
    let served = match served {
        Ok(served) => served,
        Err(gap) => {
            record.failure = Some(gap.reason);
            return AuditFinding {
                record,
                incomplete: gap.unreachable,
            };
        }
    };
    served.name_in(&mut record);
    if !served.segments.is_empty() {
        let incomplete = examine_segments(engine, audited, uid, &served, comparison, &mut record);
        return AuditFinding { record, incomplete };
    }
    let mut incomplete = false;
    match reexecuted_difference(engine, audited, uid, &served) {
        Ok(difference) => {
            tracing::info!(
                uid,
                window = audited.window,
                relative_difference = difference,
                "audit"
            );
            record.relative_difference = Some(difference);
            record.failure = irreproducible(difference, comparison.tolerance);
        }
        Err(error) => {
            incomplete = matches!(error, AuditError::Unreadable(_));
            record.failure = Some(audit_failure(error));
        }
    }
    AuditFinding { record, incomplete }
}

/// The failure an audit error is: the artefacts do not fit together, or (the validator's own
/// trouble, and the audit stays unresolved) they could not be read back.
fn audit_failure(error: AuditError) -> Reason {
    let kind = match error {
        AuditError::Unreadable(_) => ReasonKind::AuditUnreachable,
        _ => ReasonKind::Inconsistent,
    };
    Reason::new(kind, format!("audit: {error}"))
}

impl From<crate::store::StoreError> for AuditError {
    fn from(e: crate::store::StoreError) -> Self {
        AuditError::Unreadable(e.to_string())
    }
}

/// Why an audit's artefacts could not be compared with the re-executed window.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Artefacts(#[from] ArtefactError),
    #[error("uid {0} has no assignment")]
    NoAssignment(u16),
    #[error("the task's window has no segments")]
    NoSegments,
    #[error("the window's last segment was not checked")]
    LastSegmentUnchecked,
    #[error("the window has no segment {0}")]
    NoSuchSegment(usize),
    #[error("no state was served for the start of its segment {0}")]
    NoSegmentStart(usize),
    #[error("its segment {0} state: {1}")]
    Segment(usize, task::segment::SegmentError),
    #[error(
        "its dense gradient is not the checkpoint less its last segment's end state (parameter {0} differs)"
    )]
    DenseNotFromEnd(usize),
    /// The validator could not read back what it kept of the artefacts (its own disk, not the
    /// miner: such an audit stays unresolved rather than failing).
    #[error("the validator could not read back its kept artefacts: {0}")]
    Unreadable(String),
}

/// The relative difference between the served dense gradient and the re-executed window, or why
/// the artefacts do not fit together.
fn reexecuted_difference(
    engine: &TaskEngine,
    audited: Audited,
    uid: u16,
    served: &Artefacts,
) -> Result<f64, AuditError> {
    let gradient = audited.gradient;
    let range = &gradient.group.range;
    let dense = verify_artefacts(
        engine,
        &gradient.residual_out,
        &gradient.payload.read()?,
        (&served.dense.read()?, &served.residual_in.read()?),
        range,
    )?;
    let reexecuted = evaluate::reexecute(
        engine,
        audited.checkpoint,
        audited.window,
        audited.window_seed,
        uid,
        range.clone(),
    )
    .ok_or(AuditError::NoAssignment(uid))?;
    Ok(relative_difference(&dense, &reexecuted))
}

impl Work {
    /// Audits `uids` of this window and the earlier windows of `earlier` (unresolved audits),
    /// with the artefacts `inputs` serves for all of them at once, and puts the findings into the
    /// evidence.
    pub(super) fn audit<I: WindowInputs>(
        &mut self,
        engine: &TaskEngine,
        start: &Start,
        (uids, earlier): (&[u16], &[(u16, Subject)]),
        inputs: &mut I,
    ) -> Result<(), I::Error> {
        let window = start.setting.window;
        let current: Vec<u16> = uids
            .iter()
            .copied()
            .filter(|u| self.gradients.contains_key(u))
            .collect();
        let requests: Vec<AuditRequest> = current
            .iter()
            .map(|&uid| AuditRequest {
                uid,
                window,
                range: self.gradients[&uid].group.range.clone(),
            })
            .chain(earlier.iter().map(|(uid, s)| AuditRequest {
                uid: *uid,
                window: s.window,
                range: s.gradient.group.range.clone(),
            }))
            .collect();
        if requests.is_empty() {
            return Ok(());
        }
        let mut served = inputs.artefacts(&requests)?.into_iter();
        let comparison = Comparison::of(start);
        for uid in current {
            let finding = examine(engine, start, uid, &self.gradients[&uid], next(&mut served));
            if let Some(m) = self.evidence.iter_mut().find(|m| m.uid == uid) {
                apply(m, &finding);
            }
            self.audits.push(finding);
        }
        for (uid, subject) in earlier {
            let audited = Audited {
                window: subject.window,
                window_seed: subject.window_seed,
                checkpoint: &subject.checkpoint,
                gradient: &subject.gradient,
            };
            let mut finding = examine_window(engine, audited, *uid, next(&mut served), comparison);
            finding.record.window = Some(subject.window);
            if let Some(m) = self.evidence.iter_mut().find(|m| m.uid == *uid) {
                apply_earlier(m, subject.window, &finding);
            }
            self.audits.push(finding);
        }
        Ok(())
    }

    /// The audits still unresolved after this window, from those before it (`before`), and what
    /// they do to the evidence: a miner with one earns nothing from this validator (withheld), and
    /// one unresolved for `audit_grace` windows is fraud.
    pub(super) fn settle(&mut self, start: &Start, before: &Unresolved) -> Unresolved {
        let mut unresolved = self.still_unresolved(start, before);
        self.withhold_or_accuse(start, &unresolved);
        // A fraud ends the audit: the miner is banned and reported.
        unresolved.retain(|uid, _| {
            self.evidence
                .iter()
                .find(|m| m.uid == *uid)
                .is_some_and(|m| m.fraud.is_none())
        });
        unresolved
    }

    /// The earlier audits this window did not resolve, and this window's that could not complete
    /// (at most one a miner: the oldest).
    fn still_unresolved(&self, start: &Start, before: &Unresolved) -> Unresolved {
        let s = &start.setting;
        let mut unresolved = Unresolved::new();
        for m in &self.evidence {
            let found = |window: Option<u64>, incomplete: bool| {
                self.audits.iter().any(|a| {
                    a.record.uid == m.uid && a.record.window == window && a.incomplete == incomplete
                })
            };
            let earlier = before.get(&m.uid).filter(|p| p.hotkey == m.hotkey);
            if let Some(p) = earlier.filter(|p| !found(Some(p.window), false)) {
                unresolved.insert(m.uid, p.clone());
            } else if let Some(g) = self.gradients.get(&m.uid).filter(|_| found(None, true)) {
                let pending = PendingAudit {
                    hotkey: m.hotkey.clone(),
                    window: s.window,
                    since: s.window,
                    window_seed: s.window_seed,
                    checkpoint: s.checkpoint.digest,
                    payload: g.payload.digest(),
                    group: g.group.index,
                    residual_out: g.residual_out,
                    backend: g.backend.clone(),
                };
                unresolved.insert(m.uid, pending);
            }
        }
        unresolved
    }

    /// Withholds the pay of every miner with an unresolved audit, or makes it a fraud once the
    /// audit has been asked for `audit_grace` windows.
    fn withhold_or_accuse(&mut self, start: &Start, unresolved: &Unresolved) {
        let (window, grace) = (start.setting.window, start.params().audit_grace);
        for m in &mut self.evidence {
            let Some(p) = unresolved.get(&m.uid) else {
                m.withheld = None;
                continue;
            };
            if m.fraud.is_some() {
                continue;
            }
            let age = window.saturating_sub(p.since);
            if age >= grace.max(1) {
                m.fraud = Some(Reason::new(
                    ReasonKind::AuditUnresolved,
                    format!(
                        "audit: it has not served its window {} artefacts in the {age} windows since they were asked for",
                        p.window
                    ),
                ));
            } else {
                m.withheld = Some(Reason::new(
                    ReasonKind::AuditPending,
                    format!(
                        "audit of its window {} unresolved: nothing is paid until it serves that window's artefacts (at most {grace} windows later)",
                        p.window
                    ),
                ));
            }
        }
    }
}

fn next(
    served: &mut impl Iterator<Item = Result<Artefacts, AuditGap>>,
) -> Result<Artefacts, AuditGap> {
    served.next().unwrap_or_else(|| {
        Err(AuditGap {
            reason: Reason::new(ReasonKind::AuditUnreachable, "audit: no answer"),
            unreachable: true,
        })
    })
}

/// Puts what an audit of this window found into the miner's evidence: a failed audit is fraud,
/// one that reproduced the work clears the miner, one that could not complete withholds its pay
/// (`Work::settle` says for how long).
fn apply(m: &mut MinerEvidence, finding: &AuditFinding) {
    match (&finding.record.failure, finding.incomplete) {
        (Some(reason), true) => m.withheld = Some(reason.clone()),
        (Some(reason), false) => m.fraud = Some(reason.clone()),
        (None, _) => m.audited_clean = true,
    }
}

/// Puts what an earlier window's audit found into this window's evidence: a failure is fraud (of
/// that window), one still incomplete withholds the miner's pay, a pass resolves it.
fn apply_earlier(m: &mut MinerEvidence, window: u64, finding: &AuditFinding) {
    match (&finding.record.failure, finding.incomplete) {
        (Some(reason), true) => m.withheld = Some(reason.clone()),
        (Some(reason), false) => {
            m.fraud = Some(Reason::new(
                reason.kind,
                format!("window {window}: {}", reason.text),
            ))
        }
        (None, _) => {}
    }
}

mod segments;

#[cfg(test)]
mod tests;
