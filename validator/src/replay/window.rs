//! One recorded window replayed: the window's own steps (`crate::window`) run again on the
//! recorded inputs (the checkpoint, the gathered payloads, the audited artefacts, the validator's
//! memory of earlier windows as the record keeps it), and what they produce must be what was
//! recorded: every loss bit for bit, the audits, the decisions, the weights, the aggregation and
//! the next checkpoint.

use super::confirm::{confirm_evidence, confirm_outcome};
use super::{ReplayError, ReplayedWindow, invalid, mismatch};
use crate::audit::stored_subject;
use crate::record::{AuditRecord, WindowRecord};
use crate::store::DataDir;
use crate::window::{
    self, Artefacts, AuditGap, AuditRequest, Carried, Gathered, Gradient, PendingAudit, Refusal,
    ResidualLink, ServedSegment, Setting, Start, Subject, WindowInputs,
};
use pseudo_gradient::codec;
use scoring::{Averages, MinerEvidence, Reason, ReasonKind, ScoringParams};
use std::collections::BTreeMap;
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
            unresolved: &record.unresolved_before,
        };
        let mut inputs = Recorded {
            store,
            engine,
            record,
        };
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
    let (setting, residual, momentum) = recorded_start(store, engine, record)?;
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
        unresolved: &record.unresolved_before,
    };
    let mut inputs = Recorded {
        store,
        engine,
        record,
    };
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
            evaluator: record.evaluator.clone(),
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

/// The recorded window's setting, the reference's incoming residual and the outer momentum before
/// it, read from the directory's blobs.
fn recorded_start(
    store: &DataDir,
    engine: &TaskEngine,
    record: &WindowRecord,
) -> Result<(Setting, Vec<f32>, Vec<f32>), ReplayError> {
    if record.task_digest != Digest(engine.digest()) {
        return Err(invalid(
            record,
            format!(
                "recorded for task {}, the directory's task is {}",
                record.task_digest,
                Digest(engine.digest())
            ),
        ));
    }
    let before = record.checkpoint_before;
    let checkpoint = Checkpoint::from_bytes(
        &store.blob(&before.0)?,
        &engine.digest(),
        engine.num_params(),
        Some(&before),
    )
    .map_err(|e| {
        invalid(
            record,
            format!("checkpoint {}: {e}", record.checkpoint_before),
        )
    })?;
    let vector = |digest: &Option<Digest>| match digest {
        Some(d) => crate::aggregation::load_vector(store, d, engine.num_params())
            .map_err(|e| invalid(record, e.to_string())),
        None => Ok(Vec::new()),
    };
    let setting = Setting {
        window: record.window,
        window_seed: record.window_seed,
        eval_seed: record.eval_seed,
        assigned_uids: record.assigned_uids,
        params: record.scoring.clone(),
        checkpoint,
        bans: record.bans_before.clone(),
        evaluator: record.evaluator.clone(),
    };
    Ok((
        setting,
        vector(&record.reference_residual)?,
        vector(&record.momentum_before)?,
    ))
}

/// Every miner as the validator gathered it: the recorded payloads decoded in the task's layout
/// over each miner's group, and the recorded refusals.
fn gathered(
    store: &DataDir,
    engine: &TaskEngine,
    record: &WindowRecord,
) -> Result<Vec<Gathered>, ReplayError> {
    let c = &engine.spec().compression;
    let layout = c.layout();
    let mut out = Vec::with_capacity(record.evidence.miners.len());
    for m in &record.evidence.miners {
        let outcome = match record.gradients.iter().find(|g| g.uid == m.uid) {
            Some(g) => {
                let payload = store.kept_blob(&g.payload_digest)?;
                let bytes = payload.read()?;
                let group = engine
                    .group(record.window_seed, g.uid, g.group_capacity)
                    .map_err(|e| invalid(record, format!("uid {}: {e}", g.uid)))?;
                let values = codec::decode_as(&bytes, group.len(), layout).map_err(|e| {
                    invalid(
                        record,
                        format!("uid {}'s gradient does not decode: {e}", g.uid),
                    )
                })?;
                Ok(Gradient {
                    payload,
                    values: pseudo_gradient::Sparse::scattered(
                        &values,
                        engine.num_params(),
                        group.range.start,
                    ),
                    group: group.clone(),
                    residual_out: g.residual_out_digest,
                    backend: g.backend.clone(),
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
    engine: &'a TaskEngine,
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
            .filter(|a| a.window.is_none())
            .map(|a| a.uid)
            .filter(|uid| gradients.contains_key(uid))
            .filter(|uid| self.miner(*uid).is_some_and(|m| m.assignment.is_none()))
            .collect()
    }

    /// The residual chain as the validator's ledger found it, as recorded: broken, from an
    /// uncollected commitment it audited, or continued.
    fn residual_chain(&mut self, uid: u16) -> ResidualLink {
        if let Some(pending) = self.record.unseen_sources.get(&uid) {
            return ResidualLink::Unseen(pending.clone());
        }
        match self.miner(uid).and_then(|m| m.fraud.clone()) {
            Some(reason) if reason.kind == ReasonKind::ResidualChain => {
                ResidualLink::Broken(reason)
            }
            _ => ResidualLink::Continues,
        }
    }

    fn artefacts(
        &mut self,
        requests: &[AuditRequest],
    ) -> Result<Vec<Result<Artefacts, AuditGap>>, ReplayError> {
        let window = self.record.window;
        requests
            .iter()
            .map(|r| {
                let audited =
                    |a: &&AuditRecord| a.uid == r.uid && a.window.unwrap_or(window) == r.window;
                match self.record.audits.iter().find(audited) {
                    Some(audit) => served(self.store, self.record, audit),
                    None => Ok(Err(AuditGap {
                        reason: Reason::new(
                            ReasonKind::AuditUnreachable,
                            format!(
                                "audit: the record holds no audit of this miner's window {}",
                                r.window
                            ),
                        ),
                        unreachable: true,
                    })),
                }
            })
            .collect()
    }

    /// An unresolved audit's subject, from the directory's blobs (a record names none that are not
    /// there, or the replay could not confirm its window).
    fn subject(
        &mut self,
        _uid: u16,
        pending: &PendingAudit,
    ) -> Result<Option<Subject>, ReplayError> {
        Ok(stored_subject(self.store, self.engine, pending)?)
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
            dense: store.kept_blob(dense)?,
            residual_in: store.kept_blob(residual)?,
            segments: audit
                .segments
                .iter()
                .map(|s| {
                    Ok(ServedSegment {
                        index: s.segment,
                        start: s.start.map(|d| store.kept_blob(&d)).transpose()?,
                        end: store.kept_blob(&s.end)?,
                    })
                })
                .collect::<Result<_, ReplayError>>()?,
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
