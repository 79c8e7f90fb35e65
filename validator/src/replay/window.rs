//! One recorded window replayed, step by step as the validator ran it: the starting checkpoint's
//! loss, the validator's reference training, each gradient's losses and assignment check, the
//! audits, the candidates and what each adds, then the decisions, the aggregation and the next
//! checkpoint.
//!
//! Longer than most: one method per step of the validator's window, in the order it ran them, so
//! that the replay reads as the window did.

use super::{ReplayError, ReplayedWindow, WindowInputs, confirm};
use crate::audit;
use crate::evaluate;
use crate::record::WindowRecord;
use crate::store::DataDir;
use scoring::checks::{pairwise_similarity, relative_difference, reproduces};
use scoring::{MinerDecision, MinerEvidence, decide, weights_to_u16};
use std::collections::BTreeMap;
use std::ops::Range;
use subnet_proto::codec::{self, Layout};
use task::aggregate::l2_norm;
use task::{Checkpoint, Digest, TaskEngine};

/// Replays `record`: every recorded loss, norm, audit and decision, recomputed.
pub(super) fn replay_window(
    store: &DataDir,
    engine: &TaskEngine,
    record: &WindowRecord,
) -> Result<(ReplayedWindow, WindowInputs), ReplayError> {
    let mut replay = WindowReplay::start(store, engine, record)?;
    let reference = replay.reference()?;
    let gradients = replay.gradients()?;
    replay.miners(&gradients, &reference)?;
    replay.audits(&gradients)?;
    replay.contributions(&gradients)?;
    let decisions = decide(&record.evidence, &record.scoring, &record.averages_before);
    replay.aggregation(&decisions, &gradients)?;
    let weights = match &record.weights.error {
        None => Ok((record.weights.uids.clone(), record.weights.values.clone())),
        Some(e) => Err(e.clone()),
    };
    let evidence = &record.evidence;
    Ok((
        ReplayedWindow {
            window: record.window,
            base_loss: evidence.base.iter().map(|&l| l as f64).sum::<f64>()
                / evidence.base.len().max(1) as f64,
            losses_checked: replay.checked,
            decisions,
            weights,
            what_if: None,
        },
        WindowInputs {
            checkpoint: replay.checkpoint,
            batches: replay.batches,
            gradients: gradients.values,
        },
    ))
}

/// A window being replayed: what it started from, and how many recorded figures are confirmed.
struct WindowReplay<'a> {
    store: &'a DataDir,
    engine: &'a TaskEngine,
    record: &'a WindowRecord,
    checkpoint: Checkpoint,
    batches: Vec<task::Batch>,
    checked: usize,
}

/// The window's recorded gradients, decoded: by uid, the dense vector, the payload and the
/// parameter range of the miner's group.
struct Gradients {
    values: BTreeMap<u16, Vec<f32>>,
    payloads: BTreeMap<u16, Vec<u8>>,
    ranges: BTreeMap<u16, Range<usize>>,
}

/// Whether two vectors hold the same bits.
fn same_bits(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

impl<'a> WindowReplay<'a> {
    /// Loads the starting checkpoint and confirms its loss on the window's eval batches.
    fn start(
        store: &'a DataDir,
        engine: &'a TaskEngine,
        record: &'a WindowRecord,
    ) -> Result<Self, ReplayError> {
        let window = record.window;
        let invalid = |what: String| ReplayError::Invalid { window, what };
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
        let batches = evaluate::eval_batches(
            engine,
            record.window_seed,
            record.assigned_uids,
            record.eval_seed,
        );
        let checked = confirm(
            window,
            "checkpoint loss",
            &record.evidence.base,
            &evaluate::losses(engine, &checkpoint.params, &batches),
        )?;
        Ok(Self {
            store,
            engine,
            record,
            checkpoint,
            batches,
            checked,
        })
    }

    fn invalid(&self, what: String) -> ReplayError {
        ReplayError::Invalid {
            window: self.record.window,
            what,
        }
    }

    fn mismatch(&self, what: &str, recorded: String, replayed: String) -> ReplayError {
        ReplayError::Mismatch {
            window: self.record.window,
            what: what.into(),
            recorded,
            replayed,
        }
    }

    /// The validator's own training of the window, trained again: its digest, its compressed form's
    /// norm, and its per-group norms and gains must be the recorded ones. Returns the compressed
    /// reference (the assignment check's control).
    fn reference(&mut self) -> Result<Vec<f32>, ReplayError> {
        let (engine, record) = (self.engine, self.record);
        let evidence = &record.evidence;
        let trained = evaluate::reference(
            engine,
            &self.checkpoint.params,
            record.window,
            record.window_seed,
            record.assigned_uids,
            record.eval_seed,
        );
        let digest = Digest(subnet_proto::digest(&codec::encode_dense(&trained)));
        if digest != record.reference {
            return Err(self.mismatch(
                "the validator's reference training",
                record.reference.to_string(),
                digest.to_string(),
            ));
        }
        let residual = match &record.reference_residual {
            Some(digest) => {
                crate::aggregation::load_vector(self.store, digest, engine.num_params())
                    .map_err(|e| self.invalid(e))?
            }
            None => Vec::new(),
        };
        let (reference, _) = evaluate::reference_payload(engine, &trained, &residual);
        if l2_norm(&reference).to_bits() != evidence.reference_norm.to_bits() {
            return Err(self.invalid("the reference norm differs from the record".into()));
        }
        if !same_bits(
            &evaluate::group_norms(engine, &reference),
            &evidence.reference_group_norms,
        ) {
            return Err(
                self.invalid("the reference's parameter-group norms differ from the record".into())
            );
        }
        let gains = evaluate::group_gains(
            engine,
            &self.checkpoint.params,
            &reference,
            &evidence.base,
            &self.batches,
        );
        if !same_bits(&gains, &evidence.reference_group_gains) {
            return Err(
                self.invalid("the reference's parameter-group gains differ from the record".into())
            );
        }
        self.checked += 1;
        Ok(reference)
    }

    /// Every recorded payload, decoded in the task's layout over the miner's group.
    fn gradients(&self) -> Result<Gradients, ReplayError> {
        let (engine, record) = (self.engine, self.record);
        let c = &engine.spec().compression;
        let layout = Layout::of_task(c.chunk, c.top_k, c.value_bits);
        let mut out = Gradients {
            values: BTreeMap::new(),
            payloads: BTreeMap::new(),
            ranges: BTreeMap::new(),
        };
        for g in &record.gradients {
            let payload = self.store.blob(&g.payload_digest.0)?;
            let group = engine
                .group(record.window_seed, g.uid, g.group_capacity)
                .map_err(|e| self.invalid(format!("uid {}: {e}", g.uid)))?;
            let values = codec::decode_as(&payload, group.len(), layout).map_err(|e| {
                self.invalid(format!("uid {}'s gradient does not decode: {e}", g.uid))
            })?;
            out.values.insert(
                g.uid,
                task::groups::scattered(&values, engine.num_params(), &group.range),
            );
            out.payloads.insert(g.uid, payload);
            out.ranges.insert(g.uid, group.range.clone());
        }
        Ok(out)
    }

    fn miner(&self, uid: u16) -> Result<&'a MinerEvidence, ReplayError> {
        self.record
            .evidence
            .miners
            .iter()
            .find(|m| m.uid == uid)
            .ok_or_else(|| {
                self.invalid(format!(
                    "a gradient is recorded for uid {uid} but no evidence"
                ))
            })
    }

    /// Each gradient's norm, group, held-out losses and assignment check.
    fn miners(&mut self, gradients: &Gradients, reference: &[f32]) -> Result<(), ReplayError> {
        let (engine, record) = (self.engine, self.record);
        for (&uid, values) in &gradients.values {
            let miner = self.miner(uid)?;
            if l2_norm(values).to_bits() != miner.norm.to_bits() {
                return Err(self.invalid(format!("uid {uid}'s norm differs from the record")));
            }
            let range = &gradients.ranges[&uid];
            if engine.groups().get(miner.group).map(|g| &g.range) != Some(range) {
                return Err(self.invalid(format!(
                    "uid {uid} is recorded in parameter group {}, its commitment gives another",
                    miner.group
                )));
            }
            let clip = record.evidence.clip_of(miner);
            self.checked += confirm(
                record.window,
                &format!("uid {uid} held-out loss"),
                &miner.after,
                &evaluate::losses_after(
                    engine,
                    &self.checkpoint.params,
                    values,
                    clip,
                    &self.batches,
                ),
            )?;
            let control = if engine.groups().is_whole() {
                reference.to_vec()
            } else {
                task::groups::masked(reference, range)
            };
            self.assignment_check(uid, miner, values, &control, clip)?;
        }
        Ok(())
    }

    /// The assignment check of one gradient, where the record has one.
    fn assignment_check(
        &mut self,
        uid: u16,
        miner: &MinerEvidence,
        values: &[f32],
        control: &[f32],
        clip: f64,
    ) -> Result<(), ReplayError> {
        let Some(recorded) = &miner.assignment else {
            return Ok(());
        };
        let record = self.record;
        let replayed = evaluate::assignment_evidence(
            self.engine,
            &self.checkpoint.params,
            values,
            control,
            clip,
            record.window,
            record.window_seed,
            record.eval_seed,
            uid,
        )
        .ok_or_else(|| self.invalid(format!("uid {uid} has no assignment")))?;
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
            self.checked += confirm(record.window, &what, recorded, replayed)?;
        }
        Ok(())
    }

    /// Audits: the served artefacts against the payload, and the re-executed window. Only an
    /// audit that found nothing clears a miner.
    fn audits(&mut self, gradients: &Gradients) -> Result<(), ReplayError> {
        let record = self.record;
        for m in &record.evidence.miners {
            let clean = record
                .audits
                .iter()
                .any(|a| a.uid == m.uid && a.failure.is_none());
            if m.audited_clean != clean {
                return Err(self.invalid(format!(
                    "uid {} is recorded as {}cleared by an audit",
                    m.uid,
                    if m.audited_clean { "" } else { "not " }
                )));
            }
        }
        for audit in &record.audits {
            let (Some(dense), Some(residual)) = (&audit.dense_digest, &audit.residual_digest)
            else {
                continue;
            };
            let dense = self.store.blob(&dense.0)?;
            let residual = self.store.blob(&residual.0)?;
            self.audit(audit, gradients, &dense, &residual)?;
            self.checked += 1;
        }
        Ok(())
    }

    /// One audit with its artefacts: the same relative difference, and the same verdict.
    fn audit(
        &self,
        audit: &crate::record::AuditRecord,
        gradients: &Gradients,
        dense: &[u8],
        residual: &[u8],
    ) -> Result<(), ReplayError> {
        let (engine, record, uid) = (self.engine, self.record, audit.uid);
        let payload = gradients.payloads.get(&uid).ok_or_else(|| {
            self.invalid(format!("uid {uid} was audited but has no recorded payload"))
        })?;
        let commitment = subnet_proto::pb::Commitment {
            residual_out_digest: self.residual_out_claim(uid)?,
            ..Default::default()
        };
        let range = gradients.ranges[&uid].clone();
        let replayed =
            audit::verify_artefacts(engine, &commitment, payload, dense, residual, &range).map(
                |dense| {
                    evaluate::reexecute(
                        engine,
                        &self.checkpoint.params,
                        record.window,
                        record.window_seed,
                        uid,
                        range,
                    )
                    .map(|r| relative_difference(&dense, &r))
                },
            );
        match (replayed, audit.relative_difference) {
            (Ok(Some(difference)), Some(recorded))
                if difference.to_bits() == recorded.to_bits() =>
            {
                let tolerance = engine.spec().scoring.spot_check_tolerance;
                let fraud = !reproduces(difference, tolerance);
                if fraud != audit.failure.is_some() {
                    return Err(self.invalid(format!(
                        "uid {uid}'s audit differs by {difference:e}, but the record {} it a failure",
                        if audit.failure.is_some() {
                            "calls"
                        } else {
                            "does not call"
                        }
                    )));
                }
                Ok(())
            }
            (Err(_), None) if audit.failure.is_some() => Ok(()),
            (replayed, recorded) => Err(self.mismatch(
                &format!("uid {uid}'s audit"),
                format!("{recorded:?} ({:?})", audit.failure),
                format!("{replayed:?}"),
            )),
        }
    }

    /// The outgoing residual digest the audited miner's commitment claimed (kept in the record).
    fn residual_out_claim(&self, uid: u16) -> Result<Vec<u8>, ReplayError> {
        self.record
            .gradients
            .iter()
            .find(|g| g.uid == uid)
            .map(|g| g.residual_out_digest.0.to_vec())
            .ok_or_else(|| {
                self.invalid(format!(
                    "uid {uid} was audited but its commitment is not recorded"
                ))
            })
    }

    /// The candidates, their similarities and what each adds to the others.
    fn contributions(&mut self, gradients: &Gradients) -> Result<(), ReplayError> {
        let (record, evidence) = (self.record, &self.record.evidence);
        let candidates = scoring::candidates(evidence, &record.scoring);
        let recorded: Vec<u16> = evidence
            .miners
            .iter()
            .filter(|m| !m.without.is_empty())
            .map(|m| m.uid)
            .collect();
        if candidates != recorded {
            return Err(self.mismatch(
                "candidates",
                format!("{recorded:?}"),
                format!("{candidates:?}"),
            ));
        }
        let values: Vec<&[f32]> = candidates
            .iter()
            .map(|u| {
                gradients.values.get(u).map(Vec::as_slice).ok_or_else(|| {
                    self.invalid(format!("candidate uid {u} has no recorded gradient"))
                })
            })
            .collect::<Result<_, _>>()?;
        let pairs: Vec<(u16, &[f32])> = candidates
            .iter()
            .copied()
            .zip(values.iter().copied())
            .collect();
        if pairwise_similarity(&pairs) != evidence.similarities {
            return Err(self.invalid("gradient similarities differ from the record".into()));
        }
        let caps = self.caps(&candidates)?;
        let (aggregate, without) = evaluate::leave_one_out(
            self.engine,
            &self.checkpoint.params,
            &values,
            &caps,
            &self.batches,
        );
        self.checked += confirm(record.window, "aggregate", &evidence.aggregate, &aggregate)?;
        for (uid, losses) in candidates.iter().zip(&without) {
            let what = format!("aggregate without uid {uid}");
            self.checked += confirm(record.window, &what, &self.miner(*uid)?.without, losses)?;
        }
        Ok(())
    }

    /// The clip norm each of `uids` was capped at.
    fn caps(&self, uids: &[u16]) -> Result<Vec<f64>, ReplayError> {
        uids.iter()
            .map(|&uid| self.miner(uid).map(|m| self.record.evidence.clip_of(m)))
            .collect()
    }

    /// The decisions must give the recorded weights, aggregation, outer momentum and next
    /// checkpoint.
    fn aggregation(
        &self,
        decisions: &[MinerDecision],
        gradients: &Gradients,
    ) -> Result<(), ReplayError> {
        let (engine, record) = (self.engine, self.record);
        let spec = engine.spec();
        if record.weights.error.is_none() {
            let uids: Vec<u16> = decisions.iter().map(|d| d.uid).collect();
            let weights: Vec<f64> = decisions.iter().map(|d| d.weight).collect();
            let (u, v) =
                weights_to_u16(&uids, &weights).map_err(|e| self.invalid(e.to_string()))?;
            if (&u, &v) != (&record.weights.uids, &record.weights.values) {
                return Err(self.mismatch(
                    "weights",
                    format!("{:?} {:?}", record.weights.uids, record.weights.values),
                    format!("{u:?} {v:?}"),
                ));
            }
        }
        let aggregated = scoring::aggregation_order(
            decisions,
            spec.scoring.aggregate_top,
            spec.scoring.aggregate_min,
        );
        if aggregated != record.aggregated {
            return Err(self.mismatch(
                "aggregated uids",
                format!("{:?}", record.aggregated),
                format!("{aggregated:?}"),
            ));
        }
        let deltas: Vec<&[f32]> = aggregated
            .iter()
            .map(|u| gradients.values[u].as_slice())
            .collect();
        let momentum = match &record.momentum_before {
            Some(digest) => {
                crate::aggregation::load_vector(self.store, digest, engine.num_params())
                    .map_err(|e| self.invalid(e))?
            }
            None => Vec::new(),
        };
        let caps = self.caps(&aggregated)?;
        let (next, momentum_after) = crate::aggregation::next_checkpoint(
            engine,
            &self.checkpoint,
            &momentum,
            &deltas,
            &caps,
        );
        let replayed_momentum = crate::aggregation::vector_blob(&momentum_after)
            .map(|b| Digest(subnet_proto::digest(&b)));
        if replayed_momentum != record.momentum_after {
            return Err(self.mismatch(
                "outer momentum",
                format!("{:?}", record.momentum_after),
                format!("{replayed_momentum:?}"),
            ));
        }
        if Digest(next.digest) != record.checkpoint_after {
            return Err(self.mismatch(
                "next checkpoint",
                record.checkpoint_after.to_string(),
                Digest(next.digest).to_string(),
            ));
        }
        Ok(())
    }
}
