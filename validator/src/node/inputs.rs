//! The window's inputs over gRPC and the chain: gathering every committed payload once the window
//! has closed, and for the window's steps (`crate::window`) the audit schedule, the residual
//! chain and the artefacts audited miners serve.

use super::*;
use crate::window::{Artefacts, AuditGap, Gradient, WindowInputs};

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
        let fetches = ctx.miners.iter().map(|neuron| {
            let gatherer = &gatherer;
            async move {
                let fetched = async {
                    let commitment = collected.get(&neuron.uid).ok_or(Rejection::NotCommitted)?;
                    let claims = &commitment.claims;
                    if claims.checkpoint_digest != checkpoint.0 {
                        return Err(Rejection::Commitment(
                            subnet_proto::commitment::CommitmentError::WrongCheckpoint {
                                expected: checkpoint.to_string(),
                                found: hex::encode(claims.checkpoint_digest),
                            },
                        ));
                    }
                    let group = gatherer.group_of(window_seed, neuron.uid, commitment)?;
                    let payload = gatherer
                        .part(neuron, window, pb::GradientPart::Payload, commitment)
                        .await?;
                    let values = gatherer.decode(&payload, &group.range)?;
                    Ok(Fetched {
                        commitment: commitment.clone(),
                        gradient: Gradient {
                            payload,
                            values,
                            group,
                            residual_out: Digest(claims.residual_out_digest),
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
    /// it contributes to, then once per audit period at a window drawn from the validator's secret,
    /// and every window while an earlier audit could not complete.
    fn due_audits<'a>(
        &self,
        window: u64,
        miners: &[Neuron],
        uids: impl Iterator<Item = &'a u16>,
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
        uids.filter(|uid| {
            let hotkey = miners
                .iter()
                .find(|n| n.uid == **uid)
                .map(|n| n.hotkey.to_string());
            audited(secret, **uid, window, period)
                || audited_before.get(uid) != hotkey.as_ref()
                || pending.get(uid).is_some_and(|h| Some(h) == hotkey.as_ref())
        })
        .copied()
        .collect()
    }

    /// The dense gradient and the residual a miner committed to, or why the audit stops here and
    /// whether it is to be tried again (the miner could not be reached).
    async fn fetch_artefacts(
        &self,
        neuron: &Neuron,
        window: u64,
        c: &SignedCommitment,
    ) -> Result<Artefacts, AuditGap> {
        let gatherer = self.gatherer();
        let served = async {
            let dense = gatherer
                .part(neuron, window, pb::GradientPart::Dense, c)
                .await?;
            let residual_in = gatherer
                .part(neuron, window, pb::GradientPart::Residual, c)
                .await?;
            Ok::<_, Rejection>(Artefacts { dense, residual_in })
        }
        .await;
        served.map_err(|e| match e {
            Rejection::Unreachable(_) | Rejection::Timeout { .. } => AuditGap {
                reason: Reason::new(
                    ReasonKind::AuditUnreachable,
                    format!(
                        "audit: its dense gradient and residual could not be fetched ({e}); audited again next window"
                    ),
                ),
                unreachable: true,
            },
            e => AuditGap {
                reason: Reason::new(
                    ReasonKind::Unserved,
                    format!(
                        "audit: it did not serve the dense gradient and residual it committed to ({e})"
                    ),
                ),
                unreachable: false,
            },
        })
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
}

impl<C: Chain> LiveInputs<C> {
    fn neuron(&self, uid: u16) -> &Neuron {
        self.miners
            .iter()
            .find(|n| n.uid == uid)
            .expect("gathered gradients come from the metagraph")
    }
}

impl<C: Chain> WindowInputs for LiveInputs<C> {
    type Error = StoreError;

    fn due_audits(&mut self, gradients: &BTreeMap<u16, Gradient>) -> Vec<u16> {
        self.validator
            .due_audits(self.window, &self.miners, gradients.keys())
    }

    fn residual_chain(&mut self, uid: u16) -> Option<Reason> {
        let hotkey = self.neuron(uid).hotkey.to_string();
        let zero = &self.zero_residual;
        self.ledger
            .check(uid, &hotkey, &self.collected[&uid].claims, zero)
    }

    fn artefacts(&mut self, uid: u16) -> Result<Result<Artefacts, AuditGap>, StoreError> {
        let (neuron, commitment) = (self.neuron(uid), &self.collected[&uid]);
        let served = self.runtime.block_on(self.validator.fetch_artefacts(
            neuron,
            self.window,
            commitment,
        ));
        // Kept as blobs now (the record that names them is appended later), so that a window
        // holds one miner's audit artefacts at a time.
        if let (Ok(a), Some(store)) = (&served, &self.validator.inner.store) {
            store.put_blob(&a.dense)?;
            store.put_blob(&a.residual_in)?;
        }
        Ok(served)
    }
}
