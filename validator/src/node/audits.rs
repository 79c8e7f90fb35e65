//! Audits: which miners are re-executed this window, and the re-execution.

use super::*;

impl<C: Chain> Validator<C> {
    /// The miners with a gradient this window that are due an audit: a hotkey in the first window
    /// it contributes to, then once per audit period at a window drawn from the validator's secret,
    /// and every window while an earlier audit could not complete.
    pub(super) fn due_audits(
        &self,
        window: u64,
        miners: &[Neuron],
        gradients: &BTreeMap<u16, Fetched>,
    ) -> Vec<u16> {
        let (secret, pending, audited_before) = {
            let state = self.state();
            (
                state.audit_secret,
                state.pending_audits.clone(),
                state.audited_hotkeys.clone(),
            )
        };
        let period = self.audit_period();
        if period == 0 {
            return Vec::new();
        }
        gradients
            .keys()
            .filter(|uid| {
                let hotkey = miners
                    .iter()
                    .find(|n| n.uid == **uid)
                    .map(|n| n.hotkey.to_string());
                // A hotkey is audited in the first window it contributes to, then at a random
                // window of each period, and again every window while an audit could not complete.
                audited(secret, **uid, window, period)
                    || audited_before.get(uid) != hotkey.as_ref()
                    || pending.get(uid).is_some_and(|h| Some(h) == hotkey.as_ref())
            })
            .copied()
            .collect()
    }

    /// Audits `uids`: each serves its dense gradient and incoming residual, which must give its
    /// payload byte for byte, and the dense gradient must match the re-executed window.
    pub(super) async fn audit(
        &self,
        ctx: &WindowContext,
        gradients: &BTreeMap<u16, Fetched>,
        uids: &[u16],
    ) -> Result<Vec<AuditFinding>, ValidatorError> {
        let mut findings = Vec::new();
        for (uid, fetched) in gradients.iter().filter(|(uid, _)| uids.contains(uid)) {
            let neuron = ctx
                .miners
                .iter()
                .find(|n| n.uid == *uid)
                .expect("gradients come from the metagraph");
            findings.push(self.audit_one(ctx, neuron, fetched).await?);
        }
        Ok(findings)
    }

    /// One miner's audit: fetch its artefacts, keep them, check them against its payload and the
    /// re-executed window.
    async fn audit_one(
        &self,
        ctx: &WindowContext,
        neuron: &Neuron,
        fetched: &Fetched,
    ) -> Result<AuditFinding, ValidatorError> {
        let (window, window_seed, uid) = (ctx.window, ctx.window_seed, neuron.uid);
        let tolerance = self.engine().spec().scoring.spot_check_tolerance;
        let c = &fetched.commitment;
        let mut record = AuditRecord {
            uid,
            dense_digest: None,
            residual_digest: None,
            relative_difference: None,
            failure: None,
        };
        let (dense_bytes, residual_bytes) = match self.fetch_artefacts(neuron, window, c).await {
            Ok(parts) => parts,
            Err((failure, incomplete)) => {
                record.failure = Some(failure);
                return Ok(AuditFinding { record, incomplete });
            }
        };
        record.dense_digest = Some(Digest(subnet_proto::digest(&dense_bytes)));
        record.residual_digest = Some(Digest(subnet_proto::digest(&residual_bytes)));
        // Kept as blobs now (the record that names them is appended later), so that a window
        // holds one miner's audit artefacts at a time.
        if let Some(store) = &self.inner.store {
            store.put_blob(&dense_bytes)?;
            store.put_blob(&residual_bytes)?;
        }
        let (engine, params, c, payload, range) = (
            self.engine().clone(),
            ctx.checkpoint.params.clone(),
            c.clone(),
            fetched.payload.clone(),
            fetched.group.range.clone(),
        );
        let checked = blocking(move || {
            let dense =
                verify_artefacts(&engine, &c, &payload, &dense_bytes, &residual_bytes, &range)?;
            let reexecuted = evaluate::reexecute(&engine, &params, window, window_seed, uid, range)
                .ok_or_else(|| format!("uid {uid} has no assignment"))?;
            Ok::<f64, String>(relative_difference(&dense, &reexecuted))
        })
        .await?;
        match checked {
            Ok(difference) => {
                record.relative_difference = Some(difference);
                tracing::info!(uid, relative_difference = difference, "audit");
                if !reproduces(difference, tolerance) {
                    record.failure = Some(Reason::new(
                        ReasonKind::Irreproducible,
                        format!(
                            "audit: its dense gradient differs from the re-executed training by {difference:.3e} (relative L2), beyond the backend tolerance {tolerance}"
                        ),
                    ));
                }
            }
            Err(reason) => {
                record.failure = Some(Reason::new(
                    ReasonKind::Inconsistent,
                    format!("audit: {reason}"),
                ))
            }
        }
        Ok(AuditFinding {
            record,
            incomplete: false,
        })
    }

    /// The dense gradient and the residual a miner committed to, or why the audit stops here and
    /// whether it is to be tried again (the miner could not be reached).
    async fn fetch_artefacts(
        &self,
        neuron: &Neuron,
        window: u64,
        c: &pb::Commitment,
    ) -> Result<(Vec<u8>, Vec<u8>), (Reason, bool)> {
        let gatherer = self.gatherer();
        let served = async {
            let dense = gatherer
                .part(neuron, window, pb::GradientPart::Dense, c)
                .await?;
            let residual = gatherer
                .part(neuron, window, pb::GradientPart::Residual, c)
                .await?;
            Ok::<_, Rejection>((dense, residual))
        }
        .await;
        served.map_err(|e| match e {
            Rejection::Unreachable(_) | Rejection::Timeout { .. } => (
                Reason::new(
                    ReasonKind::AuditUnreachable,
                    format!(
                        "audit: its dense gradient and residual could not be fetched ({e}); audited again next window"
                    ),
                ),
                true,
            ),
            e => (
                Reason::new(
                    ReasonKind::Unserved,
                    format!(
                        "audit: it did not serve the dense gradient and residual it committed to ({e})"
                    ),
                ),
                false,
            ),
        })
    }
}

/// Puts what audits found into the evidence: a failed audit is fraud, one that could not complete
/// refuses the gradient for this window, one that reproduced the work clears the miner.
pub(super) fn apply_audits(evidence: &mut [MinerEvidence], findings: &[AuditFinding]) {
    for finding in findings {
        let Some(m) = evidence.iter_mut().find(|m| m.uid == finding.record.uid) else {
            continue;
        };
        match (&finding.record.failure, finding.incomplete) {
            (Some(reason), true) => m.refused = Some(reason.clone()),
            (Some(reason), false) => m.fraud = Some(reason.clone()),
            (None, _) => m.audited_clean = true,
        }
    }
}
