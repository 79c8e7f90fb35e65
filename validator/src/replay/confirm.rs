//! What a replayed window's steps produced, compared with what the record says they gave: every
//! loss bit for bit, each miner's verdicts, the audits, the weights, the aggregation and the next
//! checkpoint.

use super::{ReplayError, confirm, invalid, mismatch};
use crate::record::{AuditRecord, WindowRecord};
use crate::window::Scored;
use scoring::checks::AssignmentEvidence;
use scoring::weights_to_u16;
use scoring::{MinerEvidence, WindowEvidence};
use task::Digest;

/// Whether two vectors hold the same bits.
fn same_bits(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Compares the replayed evidence with the recorded one, loss by loss; returns how many losses
/// were confirmed.
pub(super) fn confirm_evidence(
    record: &WindowRecord,
    replayed: &WindowEvidence,
) -> Result<usize, ReplayError> {
    let (window, recorded) = (record.window, &record.evidence);
    let mut checked = confirm(window, "checkpoint loss", &recorded.base, &replayed.base)?;
    if replayed.reference_norm.to_bits() != recorded.reference_norm.to_bits() {
        return Err(invalid(
            record,
            "the reference norm differs from the record".into(),
        ));
    }
    if !same_bits(
        &replayed.reference_group_norms,
        &recorded.reference_group_norms,
    ) {
        return Err(invalid(
            record,
            "the reference's parameter-group norms differ from the record".into(),
        ));
    }
    if !same_bits(
        &replayed.reference_group_gains,
        &recorded.reference_group_gains,
    ) {
        return Err(invalid(
            record,
            "the reference's parameter-group gains differ from the record".into(),
        ));
    }
    for (r, p) in recorded.miners.iter().zip(&replayed.miners) {
        checked += confirm_miner(record, r, p)?;
    }
    confirm_similarities(record, replayed)?;
    checked += confirm(
        window,
        "aggregate",
        &recorded.aggregate,
        &replayed.aggregate,
    )?;
    // Whatever the comparisons above do not name, to the last bit.
    let json = |e: &WindowEvidence| {
        let mut e = e.clone();
        e.similarities.clear();
        serde_json::to_string(&e).expect("evidence serializes")
    };
    if json(recorded) != json(replayed) {
        return Err(mismatch(record, "evidence", json(recorded), json(replayed)));
    }
    Ok(checked)
}

/// The replayed similarities against the recorded ones: every pair the replay compared is in the
/// record with the same bits, and every recorded pair it did not compare (a record written before
/// the copy check was sketched holds every pair) is below the copy threshold, so that leaving it
/// out changes no decision.
fn confirm_similarities(
    record: &WindowRecord,
    replayed: &WindowEvidence,
) -> Result<(), ReplayError> {
    let recorded = &record.evidence.similarities;
    for s in &replayed.similarities {
        if !recorded.contains(s) {
            return Err(invalid(
                record,
                format!(
                    "uids {} and {}: cosine {} is not in the record",
                    s.a, s.b, s.cosine
                ),
            ));
        }
    }
    let threshold = record.scoring.copy_cosine;
    let missing = recorded.iter().find(|r| {
        r.cosine >= threshold
            && !replayed
                .similarities
                .iter()
                .any(|s| (s.a, s.b) == (r.a, r.b))
    });
    if let Some(r) = missing {
        return Err(invalid(
            record,
            format!(
                "uids {} and {} are recorded as copies (cosine {}) but were not compared",
                r.a, r.b, r.cosine
            ),
        ));
    }
    Ok(())
}

/// One miner's replayed evidence against the recorded one.
fn confirm_miner(
    record: &WindowRecord,
    r: &MinerEvidence,
    p: &MinerEvidence,
) -> Result<usize, ReplayError> {
    let (window, uid) = (record.window, r.uid);
    if p.uid != uid {
        return Err(mismatch(
            record,
            "miners",
            uid.to_string(),
            p.uid.to_string(),
        ));
    }
    if p.norm.to_bits() != r.norm.to_bits() {
        return Err(invalid(
            record,
            format!("uid {uid}'s norm differs from the record"),
        ));
    }
    if p.group != r.group {
        return Err(invalid(
            record,
            format!(
                "uid {uid} is recorded in parameter group {}, its commitment gives {}",
                r.group, p.group
            ),
        ));
    }
    let verdicts = |m: &MinerEvidence| format!("{:?} {:?} {}", m.refused, m.fraud, m.audited_clean);
    if verdicts(r) != verdicts(p) {
        return Err(mismatch(
            record,
            &format!("uid {uid}'s refusal, fraud and audit"),
            verdicts(r),
            verdicts(p),
        ));
    }
    let mut checked = confirm(
        window,
        &format!("uid {uid} held-out loss"),
        &r.after,
        &p.after,
    )?;
    checked += confirm_assignment(record, uid, (&r.assignment, &p.assignment))?;
    let what = format!("aggregate without uid {uid}");
    checked += confirm(window, &what, &r.without, &p.without)?;
    Ok(checked)
}

/// The audits, weights, aggregation, outer momentum and next checkpoint must be the recorded ones.
pub(super) fn confirm_outcome(record: &WindowRecord, scored: &Scored) -> Result<(), ReplayError> {
    let audits: Vec<AuditRecord> = scored.audits.iter().map(|f| f.record.clone()).collect();
    if audits != record.audits {
        return Err(mismatch(
            record,
            "audits",
            format!("{:?}", record.audits),
            format!("{audits:?}"),
        ));
    }
    if record.weights.error.is_none() {
        let uids: Vec<u16> = scored.decisions.iter().map(|d| d.uid).collect();
        let weights: Vec<f64> = scored.decisions.iter().map(|d| d.weight).collect();
        let (u, v) = weights_to_u16(&uids, &weights).map_err(|e| invalid(record, e.to_string()))?;
        if (&u, &v) != (&record.weights.uids, &record.weights.values) {
            return Err(mismatch(
                record,
                "weights",
                format!("{:?} {:?}", record.weights.uids, record.weights.values),
                format!("{u:?} {v:?}"),
            ));
        }
    }
    let step = &scored.step;
    if step.aggregated != record.aggregated {
        return Err(mismatch(
            record,
            "aggregated uids",
            format!("{:?}", record.aggregated),
            format!("{:?}", step.aggregated),
        ));
    }
    let momentum = crate::aggregation::vector_blob(&step.momentum_after)
        .map(|b| Digest(subnet_proto::digest(&b)));
    if momentum != record.momentum_after {
        return Err(mismatch(
            record,
            "outer momentum",
            format!("{:?}", record.momentum_after),
            format!("{momentum:?}"),
        ));
    }
    if step.next.digest != record.checkpoint_after {
        return Err(mismatch(
            record,
            "next checkpoint",
            record.checkpoint_after.to_string(),
            step.next.digest.to_string(),
        ));
    }
    Ok(())
}

/// One miner's replayed assignment check against the recorded one; how many losses were confirmed.
fn confirm_assignment(
    record: &WindowRecord,
    uid: u16,
    (r, p): (&Option<AssignmentEvidence>, &Option<AssignmentEvidence>),
) -> Result<usize, ReplayError> {
    let (window, mut checked) = (record.window, 0);
    match (r, p) {
        (Some(r), Some(p)) => {
            let parts = [
                ("control on own batches", &r.control_own, &p.control_own),
                ("gradient on own batches", &r.after_own, &p.after_own),
                (
                    "control on held-back batches",
                    &r.control_held_back,
                    &p.control_held_back,
                ),
                (
                    "gradient on held-back batches",
                    &r.after_held_back,
                    &p.after_held_back,
                ),
                (
                    "checkpoint on held-back batches",
                    &r.base_held_back,
                    &p.base_held_back,
                ),
            ];
            for (part, r, p) in parts {
                let what = format!("uid {uid} assignment check, {part}");
                checked += confirm(window, &what, r, p)?;
            }
        }
        (None, None) => {}
        (r, p) => {
            return Err(mismatch(
                record,
                &format!("uid {uid}'s assignment check"),
                format!("{}", r.is_some()),
                format!("{}", p.is_some()),
            ));
        }
    }
    Ok(checked)
}
