//! One recorded window replayed: the window's own steps (`crate::window`) run again on the
//! recorded inputs (the checkpoint, the gathered payloads, the audited artefacts, the validator's
//! memory of earlier windows as the record keeps it), and what they produce must be what was
//! recorded: every loss bit for bit, the audits, the decisions, the weights, the aggregation and
//! the next checkpoint.

use super::{ReplayError, ReplayedWindow, confirm};
use crate::record::{AuditRecord, WindowRecord};
use crate::store::DataDir;
use crate::window::{
    self, Artefacts, AuditGap, Carried, Gathered, Gradient, Refusal, Scored, Setting, Start,
    WindowInputs,
};
use scoring::weights_to_u16;
use scoring::{Averages, MinerEvidence, Reason, ReasonKind, ScoringParams, WindowEvidence};
use std::collections::BTreeMap;
use subnet_proto::codec::{self, Layout};
use task::{Checkpoint, Digest, TaskEngine};

/// What a replayed window's steps ran on, for running them again under other rules.
pub(super) struct Replayable {
    start: Start,
    gathered: Vec<Gathered>,
    momentum: Vec<f32>,
}

impl Replayable {
    /// The window's decisions under `params`, from the moving averages `averages` (the recorded
    /// artefacts serve the audits; a miner the record never audited is refused as unaudited).
    pub(super) fn decide_under(
        &self,
        engine: &TaskEngine,
        store: &DataDir,
        record: &WindowRecord,
        (params, averages): (&ScoringParams, &Averages),
    ) -> Result<Vec<scoring::MinerDecision>, ReplayError> {
        let start = self.start.under(engine, params);
        let carried = Carried {
            averages,
            momentum: &self.momentum,
        };
        let mut inputs = Recorded { store, record };
        let scored = window::score(engine, &start, self.gathered.clone(), &mut inputs, carried)?;
        Ok(scored.decisions)
    }
}

/// Replays `record`: the window's steps on its inputs, compared with what it says they gave.
pub(super) fn replay_window(
    store: &DataDir,
    engine: &TaskEngine,
    record: &WindowRecord,
) -> Result<(ReplayedWindow, Replayable), ReplayError> {
    let invalid = |what: String| ReplayError::Invalid {
        window: record.window,
        what,
    };
    if record.task_digest != Digest(engine.digest()) {
        return Err(invalid(format!(
            "recorded for task {}, the directory's task is {}",
            record.task_digest,
            Digest(engine.digest())
        )));
    }
    let before = record.checkpoint_before.0;
    let checkpoint = Checkpoint::from_bytes(
        &store.blob(&before)?,
        &engine.digest(),
        engine.num_params(),
        Some(&before),
    )
    .map_err(|e| invalid(format!("checkpoint {}: {e}", record.checkpoint_before)))?;
    let vector = |digest: &Option<Digest>| match digest {
        Some(d) => crate::aggregation::load_vector(store, d, engine.num_params())
            .map_err(|e| invalid(e.to_string())),
        None => Ok(Vec::new()),
    };
    let (residual, momentum) = (
        vector(&record.reference_residual)?,
        vector(&record.momentum_before)?,
    );
    let setting = Setting {
        window: record.window,
        window_seed: record.window_seed,
        eval_seed: record.eval_seed,
        assigned_uids: record.assigned_uids,
        params: record.scoring.clone(),
        checkpoint,
        bans: record.bans_before.clone(),
    };
    let start = window::start(engine, setting, residual);
    if start.reference.digest() != record.reference {
        return Err(mismatch(
            record,
            "the validator's reference training",
            record.reference.to_string(),
            start.reference.digest().to_string(),
        ));
    }
    let gathered = gathered(store, engine, record)?;
    let carried = Carried {
        averages: &record.averages_before,
        momentum: &momentum,
    };
    let mut inputs = Recorded { store, record };
    let scored = window::score(engine, &start, gathered.clone(), &mut inputs, carried)?;
    let checked = confirm_evidence(record, &scored.evidence)?;
    confirm_outcome(record, &scored)?;
    let weights = match &record.weights.error {
        None => Ok((record.weights.uids.clone(), record.weights.values.clone())),
        Some(e) => Err(e.clone()),
    };
    let base = &scored.evidence.base;
    Ok((
        ReplayedWindow {
            window: record.window,
            base_loss: base.iter().map(|&l| l as f64).sum::<f64>() / base.len().max(1) as f64,
            losses_checked: checked,
            decisions: scored.decisions,
            weights,
            what_if: None,
        },
        Replayable {
            start,
            gathered,
            momentum,
        },
    ))
}

fn mismatch(record: &WindowRecord, what: &str, recorded: String, replayed: String) -> ReplayError {
    ReplayError::Mismatch {
        window: record.window,
        what: what.into(),
        recorded,
        replayed,
    }
}

fn invalid(record: &WindowRecord, what: String) -> ReplayError {
    ReplayError::Invalid {
        window: record.window,
        what,
    }
}

/// Every miner as the validator gathered it: the recorded payloads decoded in the task's layout
/// over each miner's group, and the recorded refusals.
fn gathered(
    store: &DataDir,
    engine: &TaskEngine,
    record: &WindowRecord,
) -> Result<Vec<Gathered>, ReplayError> {
    let c = &engine.spec().compression;
    let layout = Layout::of_task(c.chunk, c.top_k, c.value_bits);
    let mut out = Vec::with_capacity(record.evidence.miners.len());
    for m in &record.evidence.miners {
        let outcome = match record.gradients.iter().find(|g| g.uid == m.uid) {
            Some(g) => {
                let payload = store.blob(&g.payload_digest.0)?;
                let group = engine
                    .group(record.window_seed, g.uid, g.group_capacity)
                    .map_err(|e| invalid(record, format!("uid {}: {e}", g.uid)))?;
                let values = codec::decode_as(&payload, group.len(), layout).map_err(|e| {
                    invalid(
                        record,
                        format!("uid {}'s gradient does not decode: {e}", g.uid),
                    )
                })?;
                Ok(Gradient {
                    payload,
                    values: task::groups::scattered(&values, engine.num_params(), &group.range),
                    group: group.clone(),
                    residual_out: g.residual_out_digest,
                })
            }
            None => Err(Refusal {
                reason: m.refused.clone().ok_or_else(|| {
                    invalid(
                        record,
                        format!(
                            "uid {} has neither a recorded gradient nor a refusal",
                            m.uid
                        ),
                    )
                })?,
                norm: m.norm,
                group: m.group,
            }),
        };
        out.push(Gathered {
            uid: m.uid,
            hotkey: m.hotkey.clone(),
            outcome,
        });
    }
    Ok(out)
}

/// A recorded window's inputs from outside it.
struct Recorded<'a> {
    store: &'a DataDir,
    record: &'a WindowRecord,
}

impl Recorded<'_> {
    fn miner(&self, uid: u16) -> Option<&MinerEvidence> {
        self.record.evidence.miners.iter().find(|m| m.uid == uid)
    }
}

impl WindowInputs for Recorded<'_> {
    type Error = ReplayError;

    /// The audits made before the assignment check: those of miners the record has no assignment
    /// check for (an audit made because the check failed follows the check's evidence).
    fn due_audits(&mut self, gradients: &BTreeMap<u16, Gradient>) -> Vec<u16> {
        self.record
            .audits
            .iter()
            .map(|a| a.uid)
            .filter(|uid| gradients.contains_key(uid))
            .filter(|uid| self.miner(*uid).is_some_and(|m| m.assignment.is_none()))
            .collect()
    }

    /// The residual chain the validator's ledger broke, as recorded.
    fn residual_chain(&mut self, uid: u16) -> Option<Reason> {
        self.miner(uid)?
            .fraud
            .clone()
            .filter(|r| r.kind == ReasonKind::ResidualChain)
    }

    fn artefacts(&mut self, uid: u16) -> Result<Result<Artefacts, AuditGap>, ReplayError> {
        let Some(audit) = self.record.audits.iter().find(|a| a.uid == uid) else {
            return Ok(Err(AuditGap {
                reason: Reason::new(
                    ReasonKind::AuditUnreachable,
                    "audit: the record holds no audit of this miner in this window",
                ),
                unreachable: true,
            }));
        };
        served(self.store, self.record, audit)
    }
}

/// What an audit was served, from the blobs its record names, or why it was served nothing.
fn served(
    store: &DataDir,
    record: &WindowRecord,
    audit: &AuditRecord,
) -> Result<Result<Artefacts, AuditGap>, ReplayError> {
    match (&audit.dense_digest, &audit.residual_digest, &audit.failure) {
        (Some(dense), Some(residual), _) => Ok(Ok(Artefacts {
            dense: store.blob(&dense.0)?,
            residual_in: store.blob(&residual.0)?,
        })),
        (None, None, Some(reason)) => Ok(Err(AuditGap {
            reason: reason.clone(),
            unreachable: reason.kind == ReasonKind::AuditUnreachable,
        })),
        _ => Err(invalid(
            record,
            format!(
                "uid {}'s audit names neither its artefacts nor a failure",
                audit.uid
            ),
        )),
    }
}

/// Whether two vectors hold the same bits.
fn same_bits(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Compares the replayed evidence with the recorded one, loss by loss; returns how many losses
/// were confirmed.
fn confirm_evidence(
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
    if replayed.similarities != recorded.similarities {
        return Err(invalid(
            record,
            "gradient similarities differ from the record".into(),
        ));
    }
    checked += confirm(
        window,
        "aggregate",
        &recorded.aggregate,
        &replayed.aggregate,
    )?;
    // Whatever the comparisons above do not name, to the last bit.
    let json = |e: &WindowEvidence| serde_json::to_string(e).expect("evidence serializes");
    if json(recorded) != json(replayed) {
        return Err(mismatch(record, "evidence", json(recorded), json(replayed)));
    }
    Ok(checked)
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
    match (&r.assignment, &p.assignment) {
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
    let what = format!("aggregate without uid {uid}");
    checked += confirm(window, &what, &r.without, &p.without)?;
    Ok(checked)
}

/// The audits, weights, aggregation, outer momentum and next checkpoint must be the recorded ones.
fn confirm_outcome(record: &WindowRecord, scored: &Scored) -> Result<(), ReplayError> {
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
    if Digest(step.next.digest) != record.checkpoint_after {
        return Err(mismatch(
            record,
            "next checkpoint",
            record.checkpoint_after.to_string(),
            Digest(step.next.digest).to_string(),
        ));
    }
    Ok(())
}
