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

#[cfg(test)]
mod tests {
    use super::*;
    use scoring::checks::Similarity;

    /// A record of the fixture directory (a real window of a real validator), with `similarities`
    /// in place of what its copy check found.
    fn record_with(similarities: Vec<Similarity>) -> WindowRecord {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/before-window-steps"
        );
        let (store, _) = crate::DataDir::open_existing(dir).unwrap();
        let (records, _) = store.records().unwrap();
        let mut record = records.into_iter().next().unwrap();
        record.evidence.similarities = similarities;
        record
    }

    fn pair(a: u16, b: u16, cosine: f64) -> Similarity {
        Similarity { a, b, cosine }
    }

    #[test]
    fn a_record_of_every_pair_confirms_a_sketched_replay_that_compared_fewer() {
        let threshold = record_with(Vec::new()).scoring.copy_cosine;
        let copy = pair(1, 3, threshold + 0.01);
        let near = pair(2, 3, threshold - 0.1);
        // Written by a validator that compared every pair (before sketches, or a small model).
        let every = vec![pair(1, 2, 0.1), copy.clone(), pair(1, 4, 0.0), near.clone()];
        let record = record_with(every.clone());
        let sketched = |similarities: Vec<Similarity>| WindowEvidence {
            similarities,
            ..record.evidence.clone()
        };
        // The sketches sent only the copy and the pair near the threshold to an exact cosine.
        confirm_similarities(&record, &sketched(vec![copy.clone(), near.clone()])).unwrap();
        confirm_similarities(&record, &sketched(every.clone())).unwrap();
        // A recorded copy the replay did not compare is not confirmed.
        let err = confirm_similarities(&record, &sketched(vec![near.clone()])).unwrap_err();
        assert!(err.to_string().contains("recorded as copies"), "{err}");
        // Nor a pair the record does not hold, or holds with other bits.
        let err = confirm_similarities(&record, &sketched(vec![copy.clone(), pair(2, 4, 0.5)]))
            .unwrap_err();
        assert!(err.to_string().contains("not in the record"), "{err}");
        let moved = pair(1, 3, f64::from_bits(copy.cosine.to_bits() + 1));
        let err = confirm_similarities(&record, &sketched(vec![moved])).unwrap_err();
        assert!(err.to_string().contains("not in the record"), "{err}");
    }
}
