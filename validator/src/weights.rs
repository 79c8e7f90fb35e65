//! Putting a window's weights on chain: set them, or under commit-reveal commit them now, encrypted
//! to a beacon round the chain opens itself (version 4), or hashed, to be revealed by this validator
//! in a later window (earlier versions).

use crate::store::PendingReveal;
use chain_client::{AccountId, Chain, Metagraph, WeightsReveal, tlock};
use subxt_signer::sr25519::Keypair;

/// The commit-reveal version from which commits are timelocked.
const TIMELOCKED_VERSION: u16 = 4;

/// How a window's weights went on chain.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Submitted {
    Set,
    /// Encrypted to `reveal_round`; the chain opens and applies them in the reveal epoch.
    Timelocked {
        reveal_round: u64,
    },
    /// Hash-committed: this validator reveals them later.
    Committed(PendingReveal),
}

/// Sets the weights, or commits them when the subnet runs commit-reveal: timelocked where the chain
/// runs version 4 or later, otherwise by hash. A hash commit's salt is kept by `persist` before the
/// commit is sent, so that a validator that stops right after can still reveal it.
pub(crate) async fn submit<C: Chain>(
    chain: &C,
    hotkey: &Keypair,
    netuid: u16,
    window: u64,
    (uids, values): (Vec<u16>, Vec<u16>),
    version_key: u64,
    persist: impl FnOnce(&PendingReveal) -> Result<(), String>,
) -> Result<Submitted, String> {
    match chain
        .set_weights(hotkey, netuid, uids.clone(), values.clone(), version_key)
        .await
    {
        Ok(()) => Ok(Submitted::Set),
        Err(e) if e.is_named("CommitRevealEnabled") => {
            let target = chain
                .timelock_target(netuid)
                .await
                .map_err(|e| e.to_string())?;
            if target.commit_reveal_version < TIMELOCKED_VERSION {
                return commit_by_hash(
                    chain,
                    (hotkey, netuid, window),
                    (uids, values),
                    version_key,
                    persist,
                )
                .await;
            }
            let me = AccountId::from(hotkey);
            let commit = tlock::commit_weights(&target, &me, &uids, &values, version_key)
                .map_err(|e| e.to_string())?;
            chain
                .commit_timelocked_weights(
                    hotkey,
                    netuid,
                    commit,
                    target.reveal_round,
                    target.commit_reveal_version,
                )
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(
                window,
                reveal_round = target.reveal_round,
                "weights committed, timelocked"
            );
            Ok(Submitted::Timelocked {
                reveal_round: target.reveal_round,
            })
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Commits the weights by hash with a fresh salt, kept by `persist` before the commit is sent.
async fn commit_by_hash<C: Chain>(
    chain: &C,
    (hotkey, netuid, window): (&Keypair, u16, u64),
    (uids, values): (Vec<u16>, Vec<u16>),
    version_key: u64,
    persist: impl FnOnce(&PendingReveal) -> Result<(), String>,
) -> Result<Submitted, String> {
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
    Ok(Submitted::Committed(pending))
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
            // Too early on the local chain or on a subtensor node alike: keep it for a later window.
            Err(e) if e.is_named("RevealTooEarly") => keep.push(p),
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

/// Why weights from `me` would be wasted: under Null consensus the chain takes the weights of the
/// permitted validator with the most stake alone, so any other validator's extrinsic pays a fee for
/// nothing.
pub(crate) fn ignored_under_null_consensus(
    metagraph: &Metagraph,
    me: &AccountId,
) -> Option<String> {
    let winner = metagraph.null_consensus_winner();
    match winner {
        Some(w) if &w.hotkey == me => None,
        Some(w) => Some(format!(
            "subnet {} runs Null consensus: the epoch takes only the weights of uid {} (the most \
             validator stake, {} rao); this validator's would be ignored",
            metagraph.netuid, w.uid, w.stake
        )),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chain_client::{BlockClock, ChainError, LocalChain, SubnetParams};

    /// A commit-reveal subnet of tempo 10 at `version`, at block 10: a staked validator (uid 0,
    /// with a permit from the epoch at block 10) and a miner (uid 1).
    fn subnet(version: u16) -> (tempfile::TempDir, LocalChain, u16, Keypair) {
        let dir = tempfile::tempdir().unwrap();
        let chain =
            LocalChain::open_or_create(dir.path().join("chain.sqlite"), BlockClock::Manual, 1)
                .unwrap();
        let key = |uri: &str| chain_client::keypair_from_uri(uri).unwrap();
        let (owner, validator, miner) = (key("//owner"), key("//validator"), key("//miner"));
        let params = SubnetParams {
            tempo: 10,
            commit_reveal_weights_enabled: true,
            commit_reveal_version: version,
            min_allowed_weights: 1,
            weights_rate_limit: 5,
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
        (dir, chain, netuid, validator)
    }

    #[test]
    fn under_null_consensus_only_the_top_stake_validator_sends_weights() {
        let (_dir, chain, netuid, validator) = subnet(4);
        let me = AccountId::from(&validator);
        let mut metagraph = chain.metagraph_sync(netuid).unwrap();
        assert_eq!(ignored_under_null_consensus(&metagraph, &me), None);
        metagraph.params.epoch_consensus = chain_client::EpochConsensus::Null;
        assert_eq!(ignored_under_null_consensus(&metagraph, &me), None);
        // Another validator with more stake: this one's weights would be ignored, and it says why.
        let mut rival = metagraph.neurons[0].clone();
        rival.uid = 7;
        rival.hotkey = AccountId([7; 32]);
        rival.stake += 1;
        metagraph.neurons.push(rival);
        let why = ignored_under_null_consensus(&metagraph, &me).unwrap();
        assert!(
            why.contains("Null consensus") && why.contains("uid 7"),
            "{why}"
        );
    }

    #[tokio::test]
    async fn version_4_commits_are_timelocked_and_the_chain_reveals_them_itself() {
        let (_dir, chain, netuid, validator) = subnet(4);
        let submitted = submit(
            &chain,
            &validator,
            netuid,
            1,
            (vec![1], vec![u16::MAX]),
            0,
            |_| panic!("a timelocked commit has no salt to keep"),
        )
        .await
        .unwrap();
        assert_eq!(submitted, Submitted::Timelocked { reveal_round: 20 });
        let weights = |chain: &LocalChain| {
            chain.metagraph_sync(netuid).unwrap().neurons[0]
                .weights
                .clone()
        };
        assert!(weights(&chain).is_empty());
        chain.advance_blocks(10).unwrap();
        assert_eq!(weights(&chain), vec![(1, u16::MAX)]);
    }

    #[tokio::test]
    async fn the_salt_is_kept_before_the_commit_is_sent() {
        let (_dir, chain, netuid, validator) = subnet(2);
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
        let Submitted::Committed(committed) = committed else {
            panic!("a version 2 subnet takes hash commits: {committed:?}");
        };
        assert_eq!(Some(committed.clone()), kept);
        // Now it is, to be revealed in a later epoch.
        let reveal =
            chain.reveal_weights_sync(AccountId::from(&validator), netuid, &committed.reveal);
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
