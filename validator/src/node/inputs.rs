//! The window's inputs over gRPC and the chain: gathering every committed payload once the window
//! has closed, and for the window's steps (`crate::window`) the audit schedule, the residual
//! chain and the artefacts audited miners serve.

use super::*;
use crate::audit::{Link, stored_subject};
use crate::window::Blob;
use crate::window::{
    Artefacts, AuditGap, AuditRequest, Gradient, PendingAudit, ResidualLink, ServedSegment,
    Subject, WindowInputs,
};

impl<C: Chain> Validator<C> {
    /// Fetches the payload of every miner's collected commitment, `MAX_CONCURRENT_FETCHES` at a time
    /// (results in the miners' order).
    pub(super) async fn gather(
        &self,
        ctx: &WindowContext,
    ) -> Vec<(Neuron, Result<Fetched, Rejection>)> {
        let gatherer = self.gatherer();
        let setting = &ctx.start.setting;
        let (window, checkpoint, collected) =
            (setting.window, &setting.checkpoint.digest, &ctx.collected);
        let window_seed = setting.window_seed;
        let (ledger, grouped) = (&ctx.ledger, !self.engine().groups().is_whole());
        let store = self.inner.store.as_ref();
        let fetches = ctx.miners.iter().map(|neuron| {
            let gatherer = &gatherer;
            async move {
                let fetched = async {
                    let commitment = collected.get(&neuron.uid).ok_or(Rejection::NotCommitted)?;
                    let claims = &commitment.claims;
                    let in_effect = ledger
                        .group_capacity(neuron.uid, &neuron.hotkey.to_string())
                        .filter(|_| grouped);
                    admissible(claims, checkpoint, in_effect).map_err(Rejection::Commitment)?;
                    let group = gatherer.group_of(window_seed, neuron.uid, commitment)?;
                    let payload = gatherer
                        .part(neuron, window, pb::GradientPart::Payload, commitment)
                        .await?;
                    let values = gatherer.decode(&payload, &group.range)?;
                    Ok(Fetched {
                        commitment: commitment.clone(),
                        gradient: Gradient {
                            payload: Blob::keep_or_hold(payload, store),
                            values,
                            group,
                            residual_out: Digest(claims.residual_out_digest),
                            backend: claims.backend.clone(),
                        },
                    })
                }
                .await;
                (neuron.clone(), fetched)
            }
        });
        futures::StreamExt::collect(futures::StreamExt::buffered(
            futures::stream::iter(fetches),
            MAX_CONCURRENT_FETCHES,
        ))
        .await
    }

    /// The miners with a gradient this window that are due an audit: a hotkey in the first window
    /// it contributes to, then each window with probability one in the audit period, drawn from
    /// the validator's secret.
    fn due_audits<'a>(
        &self,
        window: u64,
        miners: &[Neuron],
        uids: impl Iterator<Item = &'a u16>,
    ) -> Vec<u16> {
        let (secret, audited_before) = {
            let state = self.state();
            (state.audit_secret, state.audited_hotkeys.clone())
        };
        let period = self.audit_period();
        if period == 0 {
            return Vec::new();
        }
        uids.filter(|uid| {
            let hotkey = miners
                .iter()
                .find(|n| n.uid == **uid)
                .map(|n| n.hotkey.to_string());
            audited(secret, **uid, window, period) || audited_before.get(uid) != hotkey.as_ref()
        })
        .copied()
        .collect()
    }

    /// The dense gradient, the residual and the drawn segments' states a miner committed to, or
    /// why the audit stops here and whether it is to be tried again (the miner could not be
    /// reached). Each part is written to the data directory chunk by chunk as it arrives
    /// (`Gatherer::kept_part`), so that a window's audits hold a chunk of each miner in memory.
    async fn fetch_artefacts(
        &self,
        neuron: &Neuron,
        request: &AuditRequest,
        c: &SignedCommitment,
    ) -> Result<Artefacts, AuditGap> {
        let store = self.inner.store.as_ref();
        let gatherer = self.gatherer();
        let window = request.window;
        let secret = self.state().audit_secret;
        let count = self.engine().spec().training.segments().len();
        let drawn = crate::audit::audited_segments(secret, request.uid, window, count);
        let served = async {
            let part = |part| gatherer.kept_part(neuron, (window, part), c, store);
            let dense = part(pb::GradientPart::Dense).await?;
            let residual_in = part(pb::GradientPart::Residual).await?;
            let state = |segment: usize| {
                gatherer.segment_state(neuron, (window, segment), &request.range, c, store)
            };
            let mut segments = Vec::with_capacity(drawn.len());
            for index in drawn {
                let start = match index.checked_sub(1) {
                    Some(before) => Some(state(before).await?),
                    None => None,
                };
                let end = state(index).await?;
                segments.push(ServedSegment { index, start, end });
            }
            Ok::<_, Rejection>(Artefacts {
                dense,
                residual_in,
                segments,
            })
        }
        .await;
        served.map_err(|e| audit_gap(window, e))
    }
}

/// Why a commitment is not taken this window: it names another checkpoint than the window's, or
/// another group capacity than the one `in_effect` for its miner.
fn admissible(
    claims: &subnet_proto::commitment::Claims,
    checkpoint: &Digest,
    in_effect: Option<u64>,
) -> Result<(), subnet_proto::commitment::CommitmentError> {
    use subnet_proto::commitment::CommitmentError;
    if claims.checkpoint_digest != checkpoint.0 {
        return Err(CommitmentError::WrongCheckpoint {
            expected: checkpoint.to_string(),
            found: hex::encode(claims.checkpoint_digest),
        });
    }
    match in_effect {
        Some(in_effect) if in_effect != claims.group_capacity => {
            Err(CommitmentError::CapacityChanged {
                in_effect,
                declared: claims.group_capacity,
            })
        }
        _ => Ok(()),
    }
}

/// The gap an audit's failed fetch of window `window`'s artefacts leaves: unreachable (asked again)
/// or unserved.
fn audit_gap(window: u64, e: Rejection) -> AuditGap {
    match e {
        Rejection::Unreachable(_) | Rejection::Timeout { .. } | Rejection::NotKept(_) => AuditGap {
            reason: Reason::new(
                ReasonKind::AuditUnreachable,
                format!(
                    "audit: its window {window} dense gradient, residual and segment states could not be fetched ({e}); asked again next window"
                ),
            ),
            unreachable: true,
        },
        e => AuditGap {
            reason: Reason::new(
                ReasonKind::Unserved,
                format!(
                    "audit: it did not serve the dense gradient, residual and segment states it committed to ({e})"
                ),
            ),
            unreachable: false,
        },
    }
}

/// The live window's inputs; the window's steps run on a blocking thread, and an audit's fetch is
/// driven on the runtime from there.
pub(super) struct LiveInputs<C> {
    pub(super) validator: Validator<C>,
    pub(super) runtime: tokio::runtime::Handle,
    pub(super) window: u64,
    pub(super) miners: Vec<Neuron>,
    pub(super) collected: BTreeMap<u16, SignedCommitment>,
    pub(super) ledger: ResidualLedger,
    /// The digest of a zero residual (the residual chain's start), computed once a window.
    pub(super) zero_residual: [u8; 32],
    /// The commitments and subjects of the unresolved audits of earlier windows, by uid.
    pub(super) earlier: BTreeMap<u16, (SignedCommitment, Option<Subject>)>,
}

impl<C: Chain> LiveInputs<C> {
    /// The commitment of `uid`'s window `from`, which its residual comes from and which this
    /// validator did not collect: served by the miner (signed), leaving exactly the residual
    /// claimed, made from the checkpoint of its window, and continuing a chain this validator
    /// holds. Its window is then audited like any other (its payload is fetched now); the
    /// commitment joins the ledger.
    async fn trace(&mut self, uid: u16, from: u64) -> Result<ResidualLink, String> {
        if self.earlier.contains_key(&uid) {
            return Err("an audit of an earlier window of it is unresolved".into());
        }
        let neuron = self.neuron(uid).clone();
        let source = self
            .validator
            .gatherer()
            .commitment(&neuron, from)
            .await
            .map_err(|e| format!("it did not serve it ({e})"))?;
        if let Some(reason) = self.breaks_chain(&neuron, from, &source)? {
            return Ok(ResidualLink::Broken(reason));
        }
        let (pending, subject) = self.earlier_window(&neuron, from, &source).await?;
        tracing::info!(
            uid,
            from,
            "a residual from an uncollected commitment: auditing its window"
        );
        self.ledger.record(uid, &pending.hotkey, &source.claims);
        self.earlier.insert(uid, (source, Some(subject)));
        Ok(ResidualLink::Unseen(pending))
    }

    /// Why `source` (the miner's window `from` commitment) breaks the residual chain of the
    /// commitment it collected this window, if it does; an error when the chain cannot be
    /// followed further back.
    fn breaks_chain(
        &self,
        neuron: &Neuron,
        from: u64,
        source: &SignedCommitment,
    ) -> Result<Option<Reason>, String> {
        let claims = &self.collected[&neuron.uid].claims;
        if source.claims.residual_out_digest != claims.residual_in_digest {
            return Ok(Some(Reason::new(
                ReasonKind::ResidualChain,
                format!(
                    "its window {} residual is not the residual its window {from} commitment left",
                    claims.window
                ),
            )));
        }
        let hotkey = neuron.hotkey.to_string();
        match self
            .ledger
            .check(neuron.uid, &hotkey, &source.claims, &self.zero_residual)
        {
            Link::Continues => Ok(None),
            Link::Broken(reason) => Ok(Some(reason)),
            Link::Unseen { from: before } => Err(format!(
                "that commitment's own residual comes from window {before}, which this validator did not collect either"
            )),
        }
    }

    /// Window `from`'s checkpoint (the one `source` names, which this validator must hold) and
    /// seed.
    async fn window_of(
        &self,
        from: u64,
        source: &SignedCommitment,
    ) -> Result<(Checkpoint, u64), String> {
        let checkpoint = self
            .validator
            .state()
            .recent
            .get(&from)
            .filter(|c| c.digest.0 == source.claims.checkpoint_digest)
            .cloned()
            .ok_or_else(|| {
                format!("it names a checkpoint this validator does not hold as window {from}'s")
            })?;
        let blocks = self.validator.engine().spec().window.blocks;
        let seed = self
            .validator
            .chain()
            .block_hash(from * blocks)
            .await
            .map_err(|e| format!("cannot read window {from}'s seed: {e}"))?;
        Ok((checkpoint, chain_client::window_seed(&seed)))
    }

    /// The audit of the miner's window `from` under `source`: its checkpoint (one this validator
    /// holds), seed, group and payload (fetched now, and kept with a data directory).
    async fn earlier_window(
        &self,
        neuron: &Neuron,
        from: u64,
        source: &SignedCommitment,
    ) -> Result<(PendingAudit, Subject), String> {
        let (checkpoint, window_seed) = self.window_of(from, source).await?;
        let gatherer = self.validator.gatherer();
        let group = gatherer
            .group_of(window_seed, neuron.uid, source)
            .map_err(|e| e.to_string())?;
        let payload = gatherer
            .part(neuron, from, pb::GradientPart::Payload, source)
            .await
            .map_err(|e| format!("its payload could not be fetched ({e})"))?;
        let values = gatherer
            .decode(&payload, &group.range)
            .map_err(|e| format!("its payload: {e}"))?;
        if let Some(store) = &self.validator.inner.store {
            store.put_blob(&payload).map_err(|e| e.to_string())?;
            store
                .put_blob(&checkpoint.to_bytes())
                .map_err(|e| e.to_string())?;
        }
        let pending = PendingAudit {
            hotkey: neuron.hotkey.to_string(),
            window: from,
            since: self.window,
            window_seed,
            checkpoint: checkpoint.digest,
            payload: Digest::of(&payload),
            group: group.index,
            residual_out: Digest(source.claims.residual_out_digest),
            backend: source.claims.backend.clone(),
        };
        let subject = Subject {
            window: from,
            window_seed,
            checkpoint: Arc::new(checkpoint),
            gradient: Gradient {
                payload: payload.into(),
                values,
                group,
                residual_out: pending.residual_out,
                backend: pending.backend.clone(),
            },
        };
        Ok((pending, subject))
    }

    fn neuron(&self, uid: u16) -> &Neuron {
        self.miners
            .iter()
            .find(|n| n.uid == uid)
            .expect("gathered gradients come from the metagraph")
    }

    /// The commitment an audit request names: this window's collected one, or the one of the
    /// unresolved audit.
    fn commitment(&self, r: &AuditRequest) -> Option<&SignedCommitment> {
        if r.window == self.window {
            self.collected.get(&r.uid)
        } else {
            self.earlier
                .get(&r.uid)
                .map(|(c, _)| c)
                .filter(|c| c.claims.window == r.window)
        }
    }
}

impl<C: Chain> WindowInputs for LiveInputs<C> {
    type Error = StoreError;

    fn due_audits(&mut self, gradients: &BTreeMap<u16, Gradient>) -> Vec<u16> {
        self.validator
            .due_audits(self.window, &self.miners, gradients.keys())
    }

    fn residual_chain(&mut self, uid: u16) -> ResidualLink {
        let hotkey = self.neuron(uid).hotkey.to_string();
        let zero = &self.zero_residual;
        match self
            .ledger
            .check(uid, &hotkey, &self.collected[&uid].claims, zero)
        {
            Link::Continues => ResidualLink::Continues,
            Link::Broken(reason) => ResidualLink::Broken(reason),
            Link::Unseen { from } => {
                let runtime = self.runtime.clone();
                let traced = runtime.block_on(self.trace(uid, from));
                traced.unwrap_or_else(|why| {
                    ResidualLink::Untraced(Reason::new(
                        ReasonKind::ResidualChain,
                        format!("its residual comes from its window {from} commitment, which this validator did not collect: {why}"),
                    ))
                })
            }
        }
    }

    /// Every audit's artefacts fetched at once, all under one budget: a miner that does not
    /// answer in time delays nobody, and its audit stays unresolved.
    fn artefacts(
        &mut self,
        requests: &[AuditRequest],
    ) -> Result<Vec<Result<Artefacts, AuditGap>>, StoreError> {
        let budget = self.validator.audit_budget();
        let deadline = tokio::time::Instant::now() + budget;
        let fetches = requests.iter().map(|r| {
            let (neuron, commitment) = (self.neuron(r.uid), self.commitment(r));
            let validator = &self.validator;
            async move {
                let Some(commitment) = commitment else {
                    return Err(AuditGap {
                        reason: Reason::new(
                            ReasonKind::AuditUnreachable,
                            format!("audit: no commitment of window {} is kept", r.window),
                        ),
                        unreachable: true,
                    });
                };
                let fetch = validator.fetch_artefacts(neuron, r, commitment);
                tokio::time::timeout_at(deadline, fetch)
                    .await
                    .unwrap_or_else(|_| {
                        Err(AuditGap {
                            reason: Reason::new(
                                ReasonKind::AuditUnreachable,
                                format!(
                                    "audit: its window {} dense gradient and residual did not arrive within the window's audit budget of {} s",
                                    r.window,
                                    budget.as_secs()
                                ),
                            ),
                            unreachable: true,
                        })
                    })
            }
        });
        // Each part is kept as a blob as it arrives (the record that names them is appended
        // later).
        Ok(self.runtime.block_on(futures::future::join_all(fetches)))
    }

    fn subject(&mut self, uid: u16, pending: &PendingAudit) -> Result<Option<Subject>, StoreError> {
        if let Some((_, Some(subject))) = self.earlier.get(&uid)
            && subject.window == pending.window
        {
            return Ok(Some(subject.clone()));
        }
        match &self.validator.inner.store {
            Some(store) => stored_subject(store, self.validator.engine(), pending),
            None => Ok(None),
        }
    }
}
