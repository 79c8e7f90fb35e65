//! Putting a window's weights on chain: set them, or under commit-reveal commit them now and reveal
//! them in a later window.

use crate::store::PendingReveal;
use chain_client::{AccountId, Chain, ChainError, WeightsReveal};
use subxt_signer::sr25519::Keypair;

/// Sets the weights, or commits them when the subnet runs commit-reveal. Ok(Some) is the commit to
/// reveal later; `persist` keeps it (its salt above all) before the commit is sent, so that a
/// validator that stops right after can still reveal it.
pub(crate) async fn submit<C: Chain>(
    chain: &C,
    hotkey: &Keypair,
    netuid: u16,
    window: u64,
    (uids, values): (Vec<u16>, Vec<u16>),
    version_key: u64,
    persist: impl FnOnce(&PendingReveal) -> Result<(), String>,
) -> Result<Option<PendingReveal>, String> {
    match chain
        .set_weights(hotkey, netuid, uids.clone(), values.clone(), version_key)
        .await
    {
        Ok(()) => Ok(None),
        Err(ChainError::CommitRevealEnabled { .. }) => {
            let mut salt = [0u8; 16];
            getrandom::fill(&mut salt).map_err(|e| format!("no randomness for a salt: {e}"))?;
            let reveal = WeightsReveal {
                uids,
                values,
                salt: salt
                    .chunks(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect(),
                version_key,
            };
            let hash = reveal.hash(&AccountId::from(hotkey), netuid);
            let pending = PendingReveal { window, reveal };
            persist(&pending).map_err(|e| format!("cannot keep the commit's salt: {e}"))?;
            chain
                .commit_weights(hotkey, netuid, hash)
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(window, hash = %hex::encode(hash), "weights committed");
            Ok(Some(pending))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Reveals committed weights whose reveal epoch has come, oldest first. A commit the chain says is
/// too early is kept for a later window; any other answer ends it. Returns what was revealed (by the
/// window that committed it, with the chain's answer) and the commits still pending.
pub(crate) async fn reveal_due<C: Chain>(
    chain: &C,
    hotkey: &Keypair,
    netuid: u16,
    pending: Vec<PendingReveal>,
) -> (Vec<(u64, Result<(), String>)>, Vec<PendingReveal>) {
    let mut done = Vec::new();
    let mut keep = Vec::new();
    for p in pending {
        match chain.reveal_weights(hotkey, netuid, p.reveal.clone()).await {
            Err(ChainError::RevealTooEarly { .. }) => keep.push(p),
            outcome => {
                match &outcome {
                    Ok(()) => tracing::info!(committed_in = p.window, "weights revealed"),
                    Err(e) => tracing::warn!(committed_in = p.window, error = %e, "reveal failed"),
                }
                done.push((p.window, outcome.map_err(|e| e.to_string())));
            }
        }
    }
    (done, keep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chain_client::{BlockClock, LocalChain, SubnetParams};

    #[tokio::test]
    async fn the_salt_is_kept_before_the_commit_is_sent() {
        let dir = tempfile::tempdir().unwrap();
        let chain =
            LocalChain::open_or_create(dir.path().join("chain.sqlite"), BlockClock::Manual, 1)
                .unwrap();
        let key = |uri: &str| chain_client::keypair_from_uri(uri).unwrap();
        let (owner, validator, miner) = (key("//owner"), key("//validator"), key("//miner"));
        let params = SubnetParams {
            tempo: 10,
            commit_reveal_weights_enabled: true,
            min_allowed_weights: 1,
            ..SubnetParams::default()
        };
        let netuid = chain
            .create_subnet(AccountId::from(&owner), params)
            .unwrap();
        for k in [&validator, &miner] {
            chain.fund(AccountId::from(k), 10_000_000_000_000).unwrap();
            chain
                .burned_register(AccountId::from(k), netuid, AccountId::from(k))
                .unwrap();
        }
        chain
            .add_stake(
                AccountId::from(&validator),
                AccountId::from(&validator),
                netuid,
                1_000_000_000_000,
            )
            .unwrap();
        chain.advance_blocks(10).unwrap();
        let mut kept = None;
        let committed = submit(
            &chain,
            &validator,
            netuid,
            1,
            (vec![1], vec![u16::MAX]),
            0,
            |pending| {
                // Nothing is committed yet when the salt is kept.
                let reveal =
                    chain.reveal_weights_sync(AccountId::from(&validator), netuid, &pending.reveal);
                assert!(
                    matches!(reveal, Err(ChainError::NoWeightsCommitFound { .. })),
                    "{reveal:?}"
                );
                kept = Some(pending.clone());
                Ok(())
            },
        )
        .await
        .unwrap();
        assert_eq!(committed, kept);
        // Now it is, to be revealed in a later epoch.
        let reveal = chain.reveal_weights_sync(
            AccountId::from(&validator),
            netuid,
            &committed.unwrap().reveal,
        );
        assert!(
            matches!(reveal, Err(ChainError::RevealTooEarly { .. })),
            "{reveal:?}"
        );
        // A salt that cannot be kept is never committed.
        let refused = submit(
            &chain,
            &validator,
            netuid,
            2,
            (vec![1], vec![u16::MAX]),
            0,
            |_| Err("disk full".into()),
        )
        .await;
        assert!(refused.unwrap_err().contains("disk full"));
    }
}
