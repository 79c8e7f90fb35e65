//! The segment audit: the artefacts must fit the payload (as for a whole window), each served
//! segment re-executed from its start must end where the miner's did (bit for bit for a window
//! trained on the validator's own CPU arithmetic, within the tolerance of the segment's movement
//! otherwise), and the dense gradient must be exactly the checkpoint less the last segment's end.

use super::{Artefacts, AuditError, Audited, Comparison, ServedSegment, audit_failure};
use crate::audit::verify_artefacts;
use crate::record::{AuditRecord, SegmentAudit};
use scoring::checks::reproduces;
use scoring::{Reason, ReasonKind};
use std::ops::Range;
use task::segment::{TrainState, segment_difference};
use task::{Checkpoint, TaskEngine};

/// Runs the segment audit and writes what it found into `record`; true when the validator could
/// not read back its kept artefacts (the audit stays unresolved).
pub(super) fn examine_segments(
    engine: &TaskEngine,
    audited: Audited,
    uid: u16,
    served: &Artefacts,
    comparison: Comparison,
    record: &mut AuditRecord,
) -> bool {
    let outcome = check_segments(
        engine,
        (audited, uid),
        served,
        comparison,
        &mut record.segments,
    );
    record.relative_difference = record
        .segments
        .iter()
        .filter_map(|s| s.relative_difference)
        .reduce(f64::max);
    let unreadable = matches!(outcome, Err(AuditError::Unreadable(_)));
    record.failure = match outcome {
        Ok(failure) => failure,
        Err(error) => Some(audit_failure(error)),
    };
    unreadable
}

/// The failure the served segments show (None: they pass), or why they cannot be compared;
/// each segment's difference goes into its entry of `audits`.
fn check_segments(
    engine: &TaskEngine,
    (audited, uid): (Audited, u16),
    served: &Artefacts,
    comparison: Comparison,
    audits: &mut [SegmentAudit],
) -> Result<Option<Reason>, AuditError> {
    let gradient = audited.gradient;
    let range = gradient.group.range.clone();
    let dense = verify_artefacts(
        engine,
        &gradient.residual_out,
        &gradient.payload.read()?,
        (&served.dense.read()?, &served.residual_in.read()?),
        &range,
    )?;
    let steps = engine.spec().training.segments();
    let last = steps.len().checked_sub(1).ok_or(AuditError::NoSegments)?;
    if !served.segments.iter().any(|s| s.index == last) {
        return Err(AuditError::LastSegmentUnchecked);
    }
    let exact = gradient.bit_exact(comparison.evaluator);
    let who = (audited.window, audited.window_seed, uid);
    for (s, audit) in served.segments.iter().zip(audits) {
        let at = steps
            .get(s.index)
            .ok_or(AuditError::NoSuchSegment(s.index))?;
        let start = segment_start(audited.checkpoint, s, at, &range)?;
        let end_bytes = s.end.read()?;
        let end = TrainState::from_bytes(&end_bytes, at.end, range.clone())
            .map_err(|e| AuditError::Segment(s.index, e))?;
        let redone = engine
            .reexecute_segment(audited.checkpoint, who, s.index, &start)
            .map_err(|_| AuditError::NoAssignment(uid))?;
        let difference = segment_difference(&start, &end, &redone);
        // A record keeps finite numbers only (JSON has no infinity).
        audit.relative_difference = difference.is_finite().then_some(difference);
        tracing::info!(
            uid,
            window = audited.window,
            segment = s.index,
            relative_difference = difference,
            "segment audit"
        );
        let reproduced = if exact {
            redone.to_bytes() == *end_bytes
        } else {
            reproduces(difference, comparison.tolerance)
        };
        if !reproduced {
            let (tolerance, index) = (comparison.tolerance, s.index);
            return Ok(Some(irreproducible(
                index, at, difference, exact, tolerance,
            )));
        }
        if s.index == last {
            let whole = end.whole(&audited.checkpoint.params);
            let read = audited
                .checkpoint
                .params
                .iter()
                .zip(&whole)
                .map(|(c, e)| c - e);
            if let Some(index) = read.zip(&dense).position(|(r, d)| r != *d) {
                return Err(AuditError::DenseNotFromEnd(index));
            }
        }
    }
    Ok(None)
}

/// The state segment `s` starts from: the window's start state (the checkpoint, with its carried
/// moments or fresh ones) for the first segment, the served state for the others.
fn segment_start(
    checkpoint: &Checkpoint,
    s: &ServedSegment,
    at: &Range<usize>,
    range: &Range<usize>,
) -> Result<TrainState, AuditError> {
    match &s.start {
        None if s.index == 0 => Ok(TrainState::window_start(checkpoint, range.clone())),
        None => Err(AuditError::NoSegmentStart(s.index)),
        Some(blob) => TrainState::from_bytes(&blob.read()?, at.start, range.clone())
            .map_err(|e| AuditError::Segment(s.index, e)),
    }
}

fn irreproducible(
    index: usize,
    steps: &Range<usize>,
    difference: f64,
    exact: bool,
    tolerance: f64,
) -> Reason {
    let rule = if exact {
        "a window trained on the validator's own CPU arithmetic must reproduce bit for bit"
            .to_string()
    } else {
        format!("beyond the backend tolerance {tolerance}")
    };
    Reason::new(
        ReasonKind::Irreproducible,
        format!(
            "audit: its segment {index} (inner steps {}..{}) ends {difference:.3e} (relative L2 of the segment's movement) from the re-executed segment; {rule}",
            steps.start, steps.end
        ),
    )
}
