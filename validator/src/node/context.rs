//! What the live window keeps beside its steps' start, and what it reads from it: the frauds to
//! report and each miner's result.

use crate::audit::ResidualLedger;
use crate::gather::Rejection;
use crate::outcome::MinerResult;
use crate::window;
use chain_client::{AccountId, Neuron};
use scoring::ReasonKind;
use std::collections::BTreeMap;
use std::sync::Arc;
use subnet_proto::commitment::SignedCommitment;

/// What the live window keeps beside its steps' start: the miners, what they committed while the
/// window was open, and the residual ledger as the window began.
pub(super) struct WindowContext {
    pub(super) start: Arc<window::Start>,
    /// Every registered uid but this validator's.
    pub(super) miners: Vec<Neuron>,
    /// The commitments collected before the window closed.
    pub(super) collected: BTreeMap<u16, SignedCommitment>,
    pub(super) ledger: ResidualLedger,
    /// The unresolved audits of earlier windows as the window began, and for each the commitment
    /// it names and what it needs to run again, when this process has it.
    pub(super) unresolved_before: window::Unresolved,
    pub(super) earlier: BTreeMap<u16, (SignedCommitment, Option<window::Subject>)>,
}

impl WindowContext {
    pub(super) fn window(&self) -> u64 {
        self.start.setting.window
    }

    /// The frauds to report: uid, hotkey and the digest of (commitment signature, reason).
    pub(super) fn frauds(&self, scored: &window::Scored) -> Vec<(u16, AccountId, [u8; 32])> {
        scored
            .evidence
            .miners
            .iter()
            .filter_map(|m| {
                let reason = m.fraud.as_ref()?;
                // The commitment the fraud is about: the earlier one an audit of an earlier window
                // failed (or could not resolve) on, else this window's.
                let about_earlier = scored.audits.iter().any(|a| {
                    a.record.uid == m.uid && a.record.window.is_some() && a.record.failure.is_some()
                });
                let commitment = match self.earlier.get(&m.uid) {
                    Some((c, _)) if about_earlier || !scored.gradients.contains_key(&m.uid) => c,
                    _ => self.collected.get(&m.uid)?,
                };
                let mut bytes = commitment.signature.to_vec();
                bytes.extend_from_slice(reason.text.as_bytes());
                let offender = self.miners.iter().find(|n| n.uid == m.uid)?.hotkey;
                Some((m.uid, offender, subnet_proto::digest(&bytes)))
            })
            .collect()
    }

    /// Each miner's result, from its decision (paired with its miner by uid: the decisions are
    /// made over the window's miners, one each).
    pub(super) fn results(
        &self,
        scored: &window::Scored,
        mut rejections: BTreeMap<u16, Rejection>,
    ) -> Vec<MinerResult> {
        let hotkeys: BTreeMap<u16, AccountId> =
            self.miners.iter().map(|n| (n.uid, n.hotkey)).collect();
        scored
            .decisions
            .iter()
            .map(|d| MinerResult {
                uid: d.uid,
                hotkey: hotkeys[&d.uid],
                usefulness: d.usefulness.clone(),
                assignment: d.assignment.clone(),
                contribution: d.contribution,
                rejection: rejections.remove(&d.uid).or_else(|| {
                    let refused = scored.evidence.miners.iter().find(|m| m.uid == d.uid)?;
                    (refused.refused.as_ref()?.kind == ReasonKind::NonFiniteLoss)
                        .then_some(Rejection::NonFiniteLoss)
                }),
                audited: scored.audits.iter().any(|f| f.record.uid == d.uid),
                verdict: d.verdict.clone(),
                score: d.score,
                moving_average: d.moving_average,
                weight: d.weight,
            })
            .collect()
    }
}

/// A gradient that arrived intact, with the commitment it came under.
pub(super) struct Fetched {
    pub(super) commitment: SignedCommitment,
    pub(super) gradient: window::Gradient,
}
