//! Offline replay of a validator's data directory: every recorded loss is recomputed on the CPU from
//! the recorded checkpoints and gradients and must match bit for bit; every decision is re-derived
//! and must give the recorded weights and the recorded next checkpoint. Optionally the same evidence
//! is re-decided under other scoring parameters ("what if").

use crate::evaluate;
use crate::record::WindowRecord;
use crate::store::{DataDir, StoreError};
use scoring::decide::averages_after;
use scoring::{Averages, MinerDecision, ScoringParams, decide, weights_to_u16};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use subnet_proto::codec;
use task::{Checkpoint, TaskEngine, TaskSpec};

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
    /// Bytes of a torn record cut from the end of the log (a crash mid-append).
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

fn digest_field(window: u64, what: &str, hex_digest: &str) -> Result<[u8; 32], ReplayError> {
    hex::decode(hex_digest)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| ReplayError::Invalid {
            window,
            what: format!("{what} {hex_digest:?} is not a 32-byte hex digest"),
        })
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
        let mut replayed = replay_window(&store, &engine, record)?;
        losses_checked += replayed.losses_checked;
        if let Some(params) = &what_if {
            let before = what_if_averages.get_or_insert_with(|| record.averages_before.clone());
            let decisions = decide(&record.evidence, params, before);
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

fn replay_window(
    store: &DataDir,
    engine: &TaskEngine,
    record: &WindowRecord,
) -> Result<ReplayedWindow, ReplayError> {
    let window = record.window;
    let spec = engine.spec();
    if record.task_digest != hex::encode(engine.digest()) {
        return Err(ReplayError::Invalid {
            window,
            what: format!(
                "recorded for task {}, the directory's task is {}",
                record.task_digest,
                hex::encode(engine.digest())
            ),
        });
    }
    let before_digest = digest_field(window, "checkpoint_before", &record.checkpoint_before)?;
    let checkpoint = Checkpoint::from_bytes(
        &store.blob(&before_digest)?,
        &engine.digest(),
        engine.num_params(),
        Some(&before_digest),
    )
    .map_err(|e| ReplayError::Invalid {
        window,
        what: format!("checkpoint {}: {e}", record.checkpoint_before),
    })?;
    let evidence = &record.evidence;
    let batches = engine.heldout_batches(record.eval_seed, spec.scoring.eval_batches);
    let mut checked = confirm(
        window,
        "checkpoint loss",
        &evidence.base,
        &evaluate::losses(engine, &checkpoint.params, &batches),
    )?;

    let mut gradients: BTreeMap<u16, Vec<f32>> = BTreeMap::new();
    for g in &record.gradients {
        let digest = digest_field(window, "payload_digest", &g.payload_digest)?;
        let payload = store.blob(&digest)?;
        let values =
            codec::decode(&payload, engine.num_params()).map_err(|e| ReplayError::Invalid {
                window,
                what: format!("uid {}'s gradient does not decode: {e}", g.uid),
            })?;
        gradients.insert(g.uid, values);
    }
    for g in &record.gradients {
        let miner = evidence
            .miners
            .iter()
            .find(|m| m.uid == g.uid)
            .ok_or_else(|| ReplayError::Invalid {
                window,
                what: format!("a gradient is recorded for uid {} but no evidence", g.uid),
            })?;
        let values = &gradients[&g.uid];
        checked += confirm(
            window,
            &format!("uid {} held-out loss", g.uid),
            &miner.after,
            &evaluate::losses_after(engine, &checkpoint.params, values, &batches),
        )?;
        let (Some(recorded), Some(control_uids)) = (&miner.assignment, &g.control) else {
            continue;
        };
        let refs = control_uids
            .iter()
            .map(|u| {
                gradients
                    .get(u)
                    .map(Vec::as_slice)
                    .ok_or_else(|| ReplayError::Invalid {
                        window,
                        what: format!("control uid {u} has no recorded gradient"),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let control = evaluate::control_gradient(&refs, engine.num_params());
        let (own, held_back) =
            evaluate::assignment_batches(engine, window, record.window_seed, g.uid).ok_or_else(
                || ReplayError::Invalid {
                    window,
                    what: format!("uid {} has no assignment", g.uid),
                },
            )?;
        let replayed = evaluate::assignment_evidence(
            engine,
            &checkpoint.params,
            values,
            &control,
            &own,
            &held_back,
        );
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
        ];
        for (part, recorded, replayed) in parts {
            let what = format!("uid {} assignment check, {part}", g.uid);
            checked += confirm(window, &what, recorded, replayed)?;
        }
    }
    for spot in &record.spot_checks {
        let digest = digest_field(window, "dense_digest", &spot.dense_digest)?;
        let dense = codec::decode(&store.blob(&digest)?, engine.num_params()).map_err(|e| {
            ReplayError::Invalid {
                window,
                what: format!("uid {}'s dense gradient does not decode: {e}", spot.uid),
            }
        })?;
        let reexecuted = evaluate::reexecute(
            engine,
            &checkpoint.params,
            window,
            record.window_seed,
            spot.uid,
        )
        .ok_or_else(|| ReplayError::Invalid {
            window,
            what: format!("uid {} has no assignment", spot.uid),
        })?;
        let difference = scoring::checks::relative_difference(&dense, &reexecuted);
        if difference.to_bits() != spot.relative_difference.to_bits() {
            return Err(ReplayError::Mismatch {
                window,
                what: format!("uid {} spot check", spot.uid),
                recorded: format!("{:e}", spot.relative_difference),
                replayed: format!("{difference:e}"),
            });
        }
        let fraud = !scoring::checks::reproduces(difference, spec.scoring.spot_check_tolerance);
        let recorded_fraud = evidence
            .miners
            .iter()
            .any(|m| m.uid == spot.uid && m.fraud.is_some());
        if fraud != recorded_fraud {
            return Err(ReplayError::Invalid {
                window,
                what: format!(
                    "uid {}'s spot check differs by {difference:e}, but the record {} it fraud",
                    spot.uid,
                    if recorded_fraud {
                        "calls"
                    } else {
                        "does not call"
                    }
                ),
            });
        }
        checked += 1;
    }
    let pairs: Vec<(u16, &[f32])> = gradients.iter().map(|(u, g)| (*u, g.as_slice())).collect();
    let similarities = scoring::checks::pairwise_similarity(&pairs);
    if similarities != evidence.similarities {
        return Err(ReplayError::Invalid {
            window,
            what: "gradient similarities differ from the record".into(),
        });
    }

    // The decisions must give the recorded weights, aggregation and next checkpoint.
    let decisions = decide(evidence, &record.scoring, &record.averages_before);
    if record.weights.error.is_none() {
        let uids: Vec<u16> = decisions.iter().map(|d| d.uid).collect();
        let weights: Vec<f64> = decisions.iter().map(|d| d.weight).collect();
        let (u, v) = weights_to_u16(&uids, &weights).map_err(|e| ReplayError::Invalid {
            window,
            what: e.to_string(),
        })?;
        if (&u, &v) != (&record.weights.uids, &record.weights.values) {
            return Err(ReplayError::Mismatch {
                window,
                what: "weights".into(),
                recorded: format!("{:?} {:?}", record.weights.uids, record.weights.values),
                replayed: format!("{u:?} {v:?}"),
            });
        }
    }
    let aggregated = crate::aggregation_order(&decisions, spec.scoring.aggregate_top);
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
        Some(digest) => crate::load_momentum(store, digest, engine.num_params())
            .map_err(|what| ReplayError::Invalid { window, what })?,
        None => Vec::new(),
    };
    let (next, momentum_after) = crate::next_checkpoint(engine, &checkpoint, &momentum, &deltas);
    let replayed_momentum =
        crate::momentum_blob(&momentum_after).map(|b| hex::encode(subnet_proto::digest(&b)));
    if replayed_momentum != record.momentum_after {
        return Err(ReplayError::Mismatch {
            window,
            what: "outer momentum".into(),
            recorded: format!("{:?}", record.momentum_after),
            replayed: format!("{replayed_momentum:?}"),
        });
    }
    if hex::encode(next.digest) != record.checkpoint_after {
        return Err(ReplayError::Mismatch {
            window,
            what: "next checkpoint".into(),
            recorded: record.checkpoint_after.clone(),
            replayed: hex::encode(next.digest),
        });
    }
    let weights = match &record.weights.error {
        None => Ok((record.weights.uids.clone(), record.weights.values.clone())),
        Some(e) => Err(e.clone()),
    };
    Ok(ReplayedWindow {
        window,
        base_loss: evidence.base.iter().map(|&l| l as f64).sum::<f64>()
            / evidence.base.len().max(1) as f64,
        losses_checked: checked,
        decisions,
        weights,
        what_if: None,
    })
}
