//! Offline replay of a validator's data directory: every recorded loss is recomputed on the CPU from
//! the recorded checkpoints and gradients and must match bit for bit, the validator's own reference
//! training and every audit are run again, and every decision is re-derived and must give the
//! recorded weights and the recorded next checkpoint. Optionally the same window is re-decided under
//! other scoring parameters ("what if"; when they change which gradients are candidates, what each
//! adds to the others is evaluated again).

use crate::record::WindowRecord;
use crate::store::{DataDir, StoreError};
use crate::{audit, evaluate};
use scoring::checks::{pairwise_similarity, relative_difference, reproduces};
use scoring::{
    Averages, MinerDecision, ScoringParams, WindowEvidence, averages_after, decide, weights_to_u16,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use subnet_proto::codec::{self, Layout};
use task::aggregate::l2_norm;
use task::{Checkpoint, Digest, TaskEngine, TaskSpec};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the data directory's task.toml is not a valid task: {0}")]
    Task(String),
    #[error("window {window}: {what}")]
    Invalid { window: u64, what: String },
    #[error("window {window}: {what}: recorded {recorded}, replayed {replayed}")]
    Mismatch {
        window: u64,
        what: String,
        recorded: String,
        replayed: String,
    },
}

/// One replayed window.
#[derive(Clone, Debug, Serialize)]
pub struct ReplayedWindow {
    pub window: u64,
    /// Mean held-out loss of the window's checkpoint.
    pub base_loss: f64,
    /// Losses recomputed and found bit-identical to the record.
    pub losses_checked: usize,
    /// The decisions under the recorded scoring parameters (they reproduce the recorded weights).
    pub decisions: Vec<MinerDecision>,
    /// The weights the validator set (uids, u16 values), or why none were set.
    pub weights: Result<(Vec<u16>, Vec<u16>), String>,
    /// The decisions under the what-if parameters, when given.
    pub what_if: Option<Vec<MinerDecision>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ReplayReport {
    pub task: String,
    pub windows: Vec<ReplayedWindow>,
    pub losses_checked: usize,
    /// Bytes of a torn record at the end of the log (a crash or an append in progress), skipped.
    pub torn_bytes: u64,
    pub what_if: Option<ScoringParams>,
}

fn mismatch(window: u64, what: impl Into<String>, recorded: f32, replayed: f32) -> ReplayError {
    ReplayError::Mismatch {
        window,
        what: what.into(),
        recorded: format!("{recorded:e} (bits {:08x})", recorded.to_bits()),
        replayed: format!("{replayed:e} (bits {:08x})", replayed.to_bits()),
    }
}

/// Compares two loss vectors bit for bit.
fn confirm(
    window: u64,
    what: &str,
    recorded: &[f32],
    replayed: &[f32],
) -> Result<usize, ReplayError> {
    if recorded.len() != replayed.len() {
        return Err(ReplayError::Invalid {
            window,
            what: format!(
                "{what}: {} losses recorded, {} batches replayed",
                recorded.len(),
                replayed.len()
            ),
        });
    }
    for (i, (r, p)) in recorded.iter().zip(replayed).enumerate() {
        if r.to_bits() != p.to_bits() {
            return Err(mismatch(window, format!("{what}, batch {i}"), *r, *p));
        }
    }
    Ok(recorded.len())
}

/// Replays every window recorded in `dir`; `on_window` sees each as it is confirmed.
pub fn replay(
    dir: &Path,
    what_if: Option<ScoringParams>,
    mut on_window: impl FnMut(&ReplayedWindow),
) -> Result<ReplayReport, ReplayError> {
    let (store, task_toml) = DataDir::open_existing(dir)?;
    let spec = TaskSpec::from_toml_str(&task_toml).map_err(|e| ReplayError::Task(e.to_string()))?;
    let engine = TaskEngine::new(spec);
    let (records, torn_bytes) = store.records()?;
    let mut windows = Vec::with_capacity(records.len());
    let mut what_if_averages: Option<Averages> = None;
    let mut losses_checked = 0;
    for record in &records {
        let (mut replayed, inputs) = replay_window(&store, &engine, record)?;
        losses_checked += replayed.losses_checked;
        if let Some(params) = &what_if {
            let before = what_if_averages.get_or_insert_with(|| record.averages_before.clone());
            let evidence = evidence_under(&engine, record, &inputs, params);
            let decisions = decide(&evidence, params, before);
            *before = averages_after(&decisions);
            replayed.what_if = Some(decisions);
        }
        on_window(&replayed);
        windows.push(replayed);
    }
    Ok(ReplayReport {
        task: engine.spec().task.name.clone(),
        windows,
        losses_checked,
        torn_bytes,
        what_if,
    })
}

/// What a replayed window's evaluations need again for a what-if.
struct WindowInputs {
    checkpoint: Checkpoint,
    batches: Vec<task::Batch>,
    gradients: BTreeMap<u16, Vec<f32>>,
}

/// The window's evidence as it would have been under `params`: when they change which gradients
/// are candidates, the similarities and leave-one-out losses are recomputed for the new set.
fn evidence_under(
    engine: &TaskEngine,
    record: &WindowRecord,
    inputs: &WindowInputs,
    params: &ScoringParams,
) -> WindowEvidence {
    let mut evidence = record.evidence.clone();
    let candidates = scoring::candidates(&evidence, params);
    if candidates == scoring::candidates(&evidence, &record.scoring) {
        return evidence;
    }
    let values: Vec<&[f32]> = candidates
        .iter()
        .map(|u| inputs.gradients[u].as_slice())
        .collect();
    let caps: Vec<f64> = candidates
        .iter()
        .map(|u| {
            evidence
                .miners
                .iter()
                .find(|m| m.uid == *u)
                .map_or(0.0, |m| evidence.clip_of(m))
        })
        .collect();
    let (aggregate, without) = evaluate::leave_one_out(
        engine,
        &inputs.checkpoint.params,
        &values,
        &caps,
        &inputs.batches,
    );
    evidence.similarities =
        pairwise_similarity(&candidates.iter().copied().zip(values).collect::<Vec<_>>());
    evidence.aggregate = aggregate;
    for m in &mut evidence.miners {
        m.without = Vec::new();
    }
    for (uid, losses) in candidates.iter().zip(without) {
        if let Some(m) = evidence.miners.iter_mut().find(|m| m.uid == *uid) {
            m.without = losses;
        }
    }
    evidence
}

fn replay_window(
    store: &DataDir,
    engine: &TaskEngine,
    record: &WindowRecord,
) -> Result<(ReplayedWindow, WindowInputs), ReplayError> {
    let window = record.window;
    let spec = engine.spec();
    let invalid = |what: String| ReplayError::Invalid { window, what };
    if record.task_digest != Digest(engine.digest()) {
        return Err(invalid(format!(
            "recorded for task {}, the directory's task is {}",
            record.task_digest,
            hex::encode(engine.digest())
        )));
    }
    let before_digest = record.checkpoint_before.0;
    let checkpoint = Checkpoint::from_bytes(
        &store.blob(&before_digest)?,
        &engine.digest(),
        engine.num_params(),
        Some(&before_digest),
    )
    .map_err(|e| invalid(format!("checkpoint {}: {e}", record.checkpoint_before)))?;
    let evidence = &record.evidence;
    let batches = evaluate::eval_batches(
        engine,
        record.window_seed,
        record.assigned_uids,
        record.eval_seed,
    );
    let mut checked = confirm(
        window,
        "checkpoint loss",
        &evidence.base,
        &evaluate::losses(engine, &checkpoint.params, &batches),
    )?;

    // The validator's own training of the window, trained again.
    let reference = evaluate::reference(
        engine,
        &checkpoint.params,
        window,
        record.window_seed,
        record.assigned_uids,
        record.eval_seed,
    );
    let reference_digest = Digest(subnet_proto::digest(&codec::encode_dense(&reference)));
    if reference_digest != record.reference {
        return Err(ReplayError::Mismatch {
            window,
            what: "the validator's reference training".into(),
            recorded: record.reference.to_string(),
            replayed: reference_digest.to_string(),
        });
    }
    let residual = match &record.reference_residual {
        Some(digest) => {
            crate::aggregation::load_vector(store, digest, engine.num_params()).map_err(invalid)?
        }
        None => Vec::new(),
    };
    let (reference, _) = evaluate::reference_payload(engine, &reference, &residual);
    if l2_norm(&reference).to_bits() != evidence.reference_norm.to_bits() {
        return Err(invalid("the reference norm differs from the record".into()));
    }
    let same_bits = |a: &[f64], b: &[f64]| {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
    };
    if !same_bits(
        &evaluate::group_norms(engine, &reference),
        &evidence.reference_group_norms,
    ) {
        return Err(invalid(
            "the reference's parameter-group norms differ from the record".into(),
        ));
    }
    let group_gains = evaluate::group_gains(
        engine,
        &checkpoint.params,
        &reference,
        &evidence.base,
        &batches,
    );
    if !same_bits(&group_gains, &evidence.reference_group_gains) {
        return Err(invalid(
            "the reference's parameter-group gains differ from the record".into(),
        ));
    }
    checked += 1;

    let layout = {
        let c = &spec.compression;
        Layout::of_task(c.chunk, c.top_k, c.value_bits)
    };
    let mut gradients: BTreeMap<u16, Vec<f32>> = BTreeMap::new();
    let mut payloads: BTreeMap<u16, Vec<u8>> = BTreeMap::new();
    let mut ranges: BTreeMap<u16, std::ops::Range<usize>> = BTreeMap::new();
    for g in &record.gradients {
        let digest = g.payload_digest.0;
        let payload = store.blob(&digest)?;
        let group = engine
            .group(record.window_seed, g.uid, g.group_capacity)
            .map_err(|e| invalid(format!("uid {}: {e}", g.uid)))?;
        let values = codec::decode_as(&payload, group.len(), layout)
            .map_err(|e| invalid(format!("uid {}'s gradient does not decode: {e}", g.uid)))?;
        gradients.insert(
            g.uid,
            task::groups::scattered(&values, engine.num_params(), &group.range),
        );
        payloads.insert(g.uid, payload);
        ranges.insert(g.uid, group.range.clone());
    }
    let miner_of = |uid: u16| {
        evidence
            .miners
            .iter()
            .find(|m| m.uid == uid)
            .ok_or_else(|| {
                invalid(format!(
                    "a gradient is recorded for uid {uid} but no evidence"
                ))
            })
    };
    for (uid, values) in &gradients {
        let miner = miner_of(*uid)?;
        if l2_norm(values).to_bits() != miner.norm.to_bits() {
            return Err(invalid(format!("uid {uid}'s norm differs from the record")));
        }
        let range = &ranges[uid];
        if engine.groups().get(miner.group).map(|g| &g.range) != Some(range) {
            return Err(invalid(format!(
                "uid {uid} is recorded in parameter group {}, its commitment gives another",
                miner.group
            )));
        }
        let clip = evidence.clip_of(miner);
        let control = if engine.groups().is_whole() {
            reference.clone()
        } else {
            task::groups::masked(&reference, range)
        };
        checked += confirm(
            window,
            &format!("uid {uid} held-out loss"),
            &miner.after,
            &evaluate::losses_after(engine, &checkpoint.params, values, clip, &batches),
        )?;
        let Some(recorded) = &miner.assignment else {
            continue;
        };
        let replayed = evaluate::assignment_evidence(
            engine,
            &checkpoint.params,
            values,
            &control,
            clip,
            window,
            record.window_seed,
            record.eval_seed,
            *uid,
        )
        .ok_or_else(|| invalid(format!("uid {uid} has no assignment")))?;
        let parts = [
            (
                "control on own batches",
                &recorded.control_own,
                &replayed.control_own,
            ),
            (
                "gradient on own batches",
                &recorded.after_own,
                &replayed.after_own,
            ),
            (
                "control on held-back batches",
                &recorded.control_held_back,
                &replayed.control_held_back,
            ),
            (
                "gradient on held-back batches",
                &recorded.after_held_back,
                &replayed.after_held_back,
            ),
            (
                "checkpoint on held-back batches",
                &recorded.base_held_back,
                &replayed.base_held_back,
            ),
        ];
        for (part, recorded, replayed) in parts {
            let what = format!("uid {uid} assignment check, {part}");
            checked += confirm(window, &what, recorded, replayed)?;
        }
    }

    // Audits: the served artefacts against the payload, and the re-executed window. Only an audit
    // that found nothing clears a miner.
    for m in &evidence.miners {
        let clean = record
            .audits
            .iter()
            .any(|a| a.uid == m.uid && a.failure.is_none());
        if m.audited_clean != clean {
            return Err(invalid(format!(
                "uid {} is recorded as {}cleared by an audit",
                m.uid,
                if m.audited_clean { "" } else { "not " }
            )));
        }
    }
    for audit in &record.audits {
        let (Some(dense), Some(residual)) = (&audit.dense_digest, &audit.residual_digest) else {
            continue;
        };
        let dense = store.blob(&dense.0)?;
        let residual = store.blob(&residual.0)?;
        let uid = audit.uid;
        let payload = payloads
            .get(&uid)
            .ok_or_else(|| invalid(format!("uid {uid} was audited but has no recorded payload")))?;
        let commitment = subnet_proto::pb::Commitment {
            residual_out_digest: residual_out_claim(record, uid)?,
            ..Default::default()
        };
        let range = ranges[&uid].clone();
        let replayed =
            audit::verify_artefacts(engine, &commitment, payload, &dense, &residual, &range).map(
                |dense| {
                    let reexecuted = evaluate::reexecute(
                        engine,
                        &checkpoint.params,
                        window,
                        record.window_seed,
                        uid,
                        range,
                    );
                    reexecuted.map(|r| relative_difference(&dense, &r))
                },
            );
        match (replayed, audit.relative_difference) {
            (Ok(Some(difference)), Some(recorded))
                if difference.to_bits() == recorded.to_bits() =>
            {
                let fraud = !reproduces(difference, spec.scoring.spot_check_tolerance);
                if fraud != audit.failure.is_some() {
                    return Err(invalid(format!(
                        "uid {uid}'s audit differs by {difference:e}, but the record {} it a failure",
                        if audit.failure.is_some() {
                            "calls"
                        } else {
                            "does not call"
                        }
                    )));
                }
            }
            (Err(_), None) if audit.failure.is_some() => {}
            (replayed, recorded) => {
                return Err(ReplayError::Mismatch {
                    window,
                    what: format!("uid {uid}'s audit"),
                    recorded: format!("{recorded:?} ({:?})", audit.failure),
                    replayed: format!("{replayed:?}"),
                });
            }
        }
        checked += 1;
    }

    // Candidates, their similarities and what each adds to the others.
    let candidates = scoring::candidates(evidence, &record.scoring);
    let recorded_candidates: Vec<u16> = evidence
        .miners
        .iter()
        .filter(|m| !m.without.is_empty())
        .map(|m| m.uid)
        .collect();
    if candidates != recorded_candidates {
        return Err(ReplayError::Mismatch {
            window,
            what: "candidates".into(),
            recorded: format!("{recorded_candidates:?}"),
            replayed: format!("{candidates:?}"),
        });
    }
    let values: Vec<&[f32]> = candidates
        .iter()
        .map(|u| {
            gradients
                .get(u)
                .map(Vec::as_slice)
                .ok_or_else(|| invalid(format!("candidate uid {u} has no recorded gradient")))
        })
        .collect::<Result<_, _>>()?;
    let similarities = pairwise_similarity(
        &candidates
            .iter()
            .copied()
            .zip(values.iter().copied())
            .collect::<Vec<_>>(),
    );
    if similarities != evidence.similarities {
        return Err(invalid(
            "gradient similarities differ from the record".into(),
        ));
    }
    let cap_of = |uid: &u16| miner_of(*uid).map(|m| evidence.clip_of(m));
    let caps: Vec<f64> = candidates.iter().map(cap_of).collect::<Result<_, _>>()?;
    let (aggregate, without) =
        evaluate::leave_one_out(engine, &checkpoint.params, &values, &caps, &batches);
    checked += confirm(window, "aggregate", &evidence.aggregate, &aggregate)?;
    for (uid, losses) in candidates.iter().zip(&without) {
        let what = format!("aggregate without uid {uid}");
        checked += confirm(window, &what, &miner_of(*uid)?.without, losses)?;
    }

    // The decisions must give the recorded weights, aggregation and next checkpoint.
    let decisions = decide(evidence, &record.scoring, &record.averages_before);
    if record.weights.error.is_none() {
        let uids: Vec<u16> = decisions.iter().map(|d| d.uid).collect();
        let weights: Vec<f64> = decisions.iter().map(|d| d.weight).collect();
        let (u, v) = weights_to_u16(&uids, &weights).map_err(|e| invalid(e.to_string()))?;
        if (&u, &v) != (&record.weights.uids, &record.weights.values) {
            return Err(ReplayError::Mismatch {
                window,
                what: "weights".into(),
                recorded: format!("{:?} {:?}", record.weights.uids, record.weights.values),
                replayed: format!("{u:?} {v:?}"),
            });
        }
    }
    let aggregated = scoring::aggregation_order(
        &decisions,
        spec.scoring.aggregate_top,
        spec.scoring.aggregate_min,
    );
    if aggregated != record.aggregated {
        return Err(ReplayError::Mismatch {
            window,
            what: "aggregated uids".into(),
            recorded: format!("{:?}", record.aggregated),
            replayed: format!("{aggregated:?}"),
        });
    }
    let deltas: Vec<&[f32]> = aggregated.iter().map(|u| gradients[u].as_slice()).collect();
    let momentum = match &record.momentum_before {
        Some(digest) => {
            crate::aggregation::load_vector(store, digest, engine.num_params()).map_err(invalid)?
        }
        None => Vec::new(),
    };
    let caps: Vec<f64> = aggregated.iter().map(cap_of).collect::<Result<_, _>>()?;
    let (next, momentum_after) =
        crate::aggregation::next_checkpoint(engine, &checkpoint, &momentum, &deltas, &caps);
    let replayed_momentum =
        crate::aggregation::vector_blob(&momentum_after).map(|b| Digest(subnet_proto::digest(&b)));
    if replayed_momentum != record.momentum_after {
        return Err(ReplayError::Mismatch {
            window,
            what: "outer momentum".into(),
            recorded: format!("{:?}", record.momentum_after),
            replayed: format!("{replayed_momentum:?}"),
        });
    }
    if Digest(next.digest) != record.checkpoint_after {
        return Err(ReplayError::Mismatch {
            window,
            what: "next checkpoint".into(),
            recorded: record.checkpoint_after.to_string(),
            replayed: Digest(next.digest).to_string(),
        });
    }
    let weights = match &record.weights.error {
        None => Ok((record.weights.uids.clone(), record.weights.values.clone())),
        Some(e) => Err(e.clone()),
    };
    Ok((
        ReplayedWindow {
            window,
            base_loss: evidence.base.iter().map(|&l| l as f64).sum::<f64>()
                / evidence.base.len().max(1) as f64,
            losses_checked: checked,
            decisions,
            weights,
            what_if: None,
        },
        WindowInputs {
            checkpoint,
            batches,
            gradients,
        },
    ))
}

/// The outgoing residual digest the audited miner's commitment claimed (kept in the record).
fn residual_out_claim(record: &WindowRecord, uid: u16) -> Result<Vec<u8>, ReplayError> {
    record
        .gradients
        .iter()
        .find(|g| g.uid == uid)
        .map(|g| g.residual_out_digest.0.to_vec())
        .ok_or_else(|| ReplayError::Invalid {
            window: record.window,
            what: format!("uid {uid} was audited but its commitment is not recorded"),
        })
}
