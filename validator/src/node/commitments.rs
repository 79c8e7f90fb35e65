//! Commitments: collected while a window is open, kept per window.

use super::*;
use crate::store::KeptCommitments;

impl<C: Chain> Validator<C> {
    /// Collects the commitments of `window` from every miner that has not given one yet; call it
    /// while the window is open (again and again: miners commit when they finish training). A
    /// commitment that arrives once the window has closed on chain is dropped. Returns how many
    /// commitments are held for the window.
    pub async fn collect_commitments(&self, window: u64) -> Result<usize, ValidatorError> {
        let metagraph = self.chain().metagraph(self.netuid()).await?;
        let me = self.own_uid(&metagraph)?;
        let held: Vec<u16> = self
            .state()
            .collected
            .get(&window)
            .map(|c| c.keys().copied().collect())
            .unwrap_or_default();
        let missing: Vec<&Neuron> = metagraph
            .neurons
            .iter()
            .filter(|n| n.uid != me && n.axon.is_some() && !held.contains(&n.uid))
            .collect();
        let gatherer = Gatherer {
            deadline: Duration::from_secs(5),
            ..self.gatherer()
        };
        let fetched = futures::future::join_all(
            missing
                .iter()
                .map(|n| async { (n.uid, gatherer.commitment(n, window).await) }),
        )
        .await;
        let close = self.engine().spec().window.close_block(window);
        if self.chain().current_block().await? >= close {
            tracing::debug!(window, "commitments arrived after the window closed");
            return Ok(held.len());
        }
        let mut state = self.state_mut();
        let collected = state.collected.entry(window).or_default();
        for (uid, outcome) in fetched {
            match outcome {
                Ok(c) => {
                    collected.entry(uid).or_insert(c);
                }
                Err(e) => tracing::debug!(window, uid, reason = %e, "no commitment yet"),
            }
        }
        let count = collected.len();
        while state.collected.len() > KEPT_COLLECTIONS {
            state.collected.pop_first();
        }
        if count > held.len()
            && let Some(store) = &self.inner.store
        {
            let kept = kept(&state.collected);
            drop(state);
            store.save_commitments(&kept)?;
        }
        Ok(count)
    }

    /// Whether commitments for `window` were collected (in this run, or kept in the data directory
    /// by an earlier one).
    pub fn holds_commitments(&self, window: u64) -> bool {
        self.state()
            .collected
            .get(&window)
            .is_some_and(|c| !c.is_empty())
    }

    pub(super) fn own_uid(&self, metagraph: &Metagraph) -> Result<u16, ValidatorError> {
        Ok(self.inner.member.uid_in(metagraph)?)
    }
}

/// The collected commitments as `commitments.json` keeps them (hex of each wire commitment).
fn kept(collected: &BTreeMap<u64, BTreeMap<u16, SignedCommitment>>) -> KeptCommitments {
    collected
        .iter()
        .map(|(w, c)| {
            let c = c.iter().map(|(uid, c)| (*uid, encode(c))).collect();
            (*w, c)
        })
        .collect()
}

/// The commitments a data directory kept for `from` and later windows.
pub(super) fn load_commitments(
    store: &DataDir,
    from: u64,
) -> Result<BTreeMap<u64, BTreeMap<u16, SignedCommitment>>, ValidatorError> {
    let Some(kept) = store.load_commitments()? else {
        return Ok(BTreeMap::new());
    };
    let corrupt = |message: String| {
        ValidatorError::Store(StoreError::Corrupt {
            path: store.root().join("commitments.json"),
            message,
        })
    };
    let mut collected = BTreeMap::new();
    for (window, by_uid) in kept.into_iter().filter(|(w, _)| *w >= from) {
        let mut commitments = BTreeMap::new();
        for (uid, encoded) in by_uid {
            let c = decode(&encoded)
                .map_err(|e| corrupt(format!("window {window}, uid {uid}: {e}")))?;
            commitments.insert(uid, c);
        }
        collected.insert(window, commitments);
    }
    Ok(collected)
}

/// A commitment as the data directory keeps it: hex of its encoded wire form.
pub(super) fn encode(c: &SignedCommitment) -> String {
    hex::encode(prost::Message::encode_to_vec(&c.to_wire()))
}

/// A commitment kept by `encode`.
pub(super) fn decode(encoded: &str) -> Result<SignedCommitment, String> {
    let bytes = hex::decode(encoded).map_err(|e| e.to_string())?;
    let c = <pb::Commitment as prost::Message>::decode(&bytes[..]).map_err(|e| e.to_string())?;
    SignedCommitment::from_wire(&c).map_err(|e| e.to_string())
}
