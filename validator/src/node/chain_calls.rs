//! Weights on chain (set, or committed for a later reveal) and fraud reports.

use super::*;

impl<C: Chain> Validator<C> {
    /// Sets (or commits) the window's weights after revealing earlier commits that are due. Under
    /// Null consensus only the top-stake validator's weights count: any other sends none.
    pub(super) async fn put_weights(
        &self,
        window: u64,
        decisions: &[scoring::MinerDecision],
        version_key: u64,
        metagraph: &Metagraph,
    ) -> (Vec<(u64, Result<(), String>)>, WeightsSet, bool) {
        let (hotkey, netuid) = (self.keypair(), self.netuid());
        let pending = std::mem::take(&mut self.state_mut().pending_reveals);
        let (reveals, mut keep) = weights::reveal_due(self.chain(), hotkey, netuid, pending).await;
        let ignored = weights::ignored_under_null_consensus(metagraph, &self.hotkey());
        let (weights_set, committed) = match &ignored {
            Some(why) => (Err(why.clone()), false),
            None => {
                self.send_weights(window, decisions, version_key, &mut keep)
                    .await
            }
        };
        match &weights_set {
            Err(e) if ignored.is_some() => tracing::info!(window, reason = %e, "weights not sent"),
            Err(e) => tracing::warn!(window, error = %e, "weights not set"),
            Ok(_) => {}
        }
        if let Err(e) = self.save_reveals(&keep) {
            tracing::warn!(window, error = %e, "cannot save the pending reveals");
        }
        self.state_mut().pending_reveals = keep;
        (reveals, weights_set, committed)
    }

    /// Sets or commits the decisions' weights; a hash commit joins `keep`. Whether they were
    /// committed rather than set.
    async fn send_weights(
        &self,
        window: u64,
        decisions: &[scoring::MinerDecision],
        version_key: u64,
        keep: &mut Vec<PendingReveal>,
    ) -> (WeightsSet, bool) {
        if !decisions.iter().any(|d| d.weight > 0.0) {
            return (Err("no miner has earned weight yet".to_string()), false);
        }
        let uids: Vec<u16> = decisions.iter().map(|d| d.uid).collect();
        let weights: Vec<f64> = decisions.iter().map(|d| d.weight).collect();
        let row = match weights_to_u16(&uids, &weights) {
            Ok(row) => row,
            Err(e) => return (Err(e.to_string()), false),
        };
        let persist = |commit: &PendingReveal| {
            let all: Vec<PendingReveal> = keep.iter().cloned().chain([commit.clone()]).collect();
            self.save_reveals(&all)
        };
        let (hotkey, netuid) = (self.keypair(), self.netuid());
        let submitted = weights::submit(
            self.chain(),
            hotkey,
            netuid,
            window,
            row.clone(),
            version_key,
            persist,
        )
        .await;
        match submitted {
            Ok(submitted) => {
                let committed = submitted != weights::Submitted::Set;
                if let weights::Submitted::Committed(commit) = submitted {
                    keep.push(commit);
                }
                (Ok(row), committed)
            }
            Err(e) => (Err(e), false),
        }
    }

    /// Keeps the commits still to reveal in the data directory (when there is one).
    pub(super) fn save_reveals(&self, reveals: &[PendingReveal]) -> Result<(), String> {
        match &self.inner.store {
            Some(store) => store.save_reveals(reveals).map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    /// Reports each fraud to the chain (on the local chain, enough reports slash the miner's stake).
    pub(super) async fn report_frauds(
        &self,
        window: u64,
        frauds: Vec<(u16, AccountId, [u8; 32])>,
    ) -> Vec<(u16, Result<FraudOutcome, String>)> {
        let mut reports = Vec::new();
        for (uid, offender, evidence) in frauds {
            let outcome = self
                .chain()
                .report_fraud(self.keypair(), self.netuid(), offender, window, evidence)
                .await
                .map_err(|e| e.to_string());
            match &outcome {
                Ok(outcome) => tracing::info!(window, uid, ?outcome, "reported fraud"),
                Err(e) => tracing::warn!(window, uid, error = %e, "fraud report refused"),
            }
            reports.push((uid, outcome));
        }
        reports
    }
}
