//! Putting a window's weights on chain: set them, or under commit-reveal commit them now and reveal
//! them in a later window.

use crate::store::PendingReveal;
use chain_client::{AccountId, Chain, ChainError, WeightsReveal};
use subxt_signer::sr25519::Keypair;

/// Sets the weights, or commits them when the subnet runs commit-reveal. Ok(Some) is the commit to
/// reveal later.
pub(crate) async fn submit<C: Chain>(
    chain: &C,
    hotkey: &Keypair,
    netuid: u16,
    window: u64,
    (uids, values): (Vec<u16>, Vec<u16>),
    version_key: u64,
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
            chain
                .commit_weights(hotkey, netuid, hash)
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(window, hash = %hex::encode(hash), "weights committed");
            Ok(Some(PendingReveal { window, reveal }))
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
