//! set_weights with subtensor's checks, and commit-reveal v2 (hash commits revealed in a later
//! epoch).

use super::epoch::pipeline;
use super::{EventKind, LocalChain, Tx, blob, corrupt, event, subnet_params, uid_of};
use crate::error::{ChainError, Result};
use crate::types::{AccountId, SubnetParams, WeightsReveal};
use rusqlite::params;
use scoring::yuma;

/// Subtensor's limit on a hotkey's unrevealed weight commits per subnet.
pub const MAX_UNREVEALED_COMMITS: usize = 10;

/// Where a kind of weight commit waits for its reveal.
#[derive(Clone, Copy)]
pub(super) enum Commits {
    /// Commit-reveal v2: hashes revealed by their validators.
    Hashed,
    /// Commit-reveal v4: ciphertexts opened by the chain.
    Timelocked,
}

/// Subtensor's checks before a weight commit is stored: the hotkey is on the subnet, and it holds
/// fewer than `MAX_UNREVEALED_COMMITS` commits of this kind.
pub(super) fn check_can_commit(
    tx: &Tx<'_>,
    kind: Commits,
    netuid: u16,
    hotkey: &AccountId,
) -> Result<()> {
    if uid_of(tx, netuid, hotkey)?.is_none() {
        return Err(ChainError::HotKeyNotRegisteredInSubNet {
            hotkey: hotkey.to_string(),
            netuid,
        });
    }
    let count = match kind {
        Commits::Hashed => "SELECT COUNT(*) FROM weight_commits WHERE netuid = ?1 AND hotkey = ?2",
        Commits::Timelocked => {
            "SELECT COUNT(*) FROM timelocked_commits WHERE netuid = ?1 AND hotkey = ?2"
        }
    };
    let pending: i64 = tx.query_row(count, params![netuid, blob(hotkey)], |r| r.get(0))?;
    if pending as usize >= MAX_UNREVEALED_COMMITS {
        return Err(ChainError::TooManyUnrevealedCommits {
            pending: pending as usize,
        });
    }
    Ok(())
}

impl LocalChain {
    /// set_weights with subtensor's checks, in subtensor's order.
    pub fn set_weights_sync(
        &self,
        hotkey: AccountId,
        netuid: u16,
        uids: &[u16],
        values: &[u16],
        version_key: u64,
    ) -> Result<()> {
        self.transact(|tx, block| {
            if netuid == 0 {
                return Err(ChainError::CanNotSetRootNetworkWeights);
            }
            let params = subnet_params(tx, netuid)?;
            if params.commit_reveal_weights_enabled {
                return Err(ChainError::CommitRevealEnabled { netuid });
            }
            apply_weights(
                tx,
                block,
                &params,
                hotkey,
                netuid,
                uids,
                values,
                version_key,
            )
        })
    }

    /// Commit-reveal v2, first half: stores the hash of weights to be revealed in epoch
    /// `commit epoch + reveal_period_epochs` (the subnet's stored epoch index).
    pub fn commit_weights_sync(
        &self,
        hotkey: AccountId,
        netuid: u16,
        hash: [u8; 32],
    ) -> Result<()> {
        self.transact(|tx, block| {
            let params = subnet_params(tx, netuid)?;
            if !params.commit_reveal_weights_enabled {
                return Err(ChainError::CommitRevealDisabled { netuid });
            }
            let epoch = pipeline(tx, netuid, &params)?.epoch_index;
            // Commits whose reveal epoch has passed can never be revealed: drop them first.
            tx.execute(
                "DELETE FROM weight_commits WHERE netuid = ?1 AND hotkey = ?2 AND epoch + ?3 < ?4",
                params![netuid, blob(&hotkey), params.reveal_period_epochs as i64, epoch as i64],
            )?;
            check_can_commit(tx, Commits::Hashed, netuid, &hotkey)?;
            tx.execute(
                "INSERT INTO weight_commits (netuid, hotkey, hash, block, epoch) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![netuid, blob(&hotkey), &hash[..], block as i64, epoch as i64],
            )?;
            event(tx, block, Some(netuid), EventKind::WeightsCommitted, &format!("{} {}", hotkey.short(), hex::encode(hash)))
        })
    }

    /// Commit-reveal v2, second half: the revealed weights must hash (`weights_commit_hash`) to one
    /// of the hotkey's commits and arrive in its reveal epoch; they are then checked and stored as
    /// `set_weights` would.
    pub fn reveal_weights_sync(
        &self,
        hotkey: AccountId,
        netuid: u16,
        reveal: &WeightsReveal,
    ) -> Result<()> {
        self.transact(|tx, block| {
            if netuid == 0 {
                return Err(ChainError::CanNotSetRootNetworkWeights);
            }
            let params = subnet_params(tx, netuid)?;
            if !params.commit_reveal_weights_enabled {
                return Err(ChainError::CommitRevealDisabled { netuid });
            }
            let commits: Vec<(i64, Vec<u8>, u64)> = {
                let mut stmt = tx.prepare(
                    "SELECT id, hash, epoch FROM weight_commits WHERE netuid = ?1 AND hotkey = ?2 ORDER BY id",
                )?;
                stmt.query_map(params![netuid, blob(&hotkey)], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
                })?
                .collect::<rusqlite::Result<_>>()?
            };
            if commits.is_empty() {
                return Err(ChainError::NoWeightsCommitFound { netuid });
            }
            let epoch = pipeline(tx, netuid, &params)?.epoch_index;
            let period = params.reveal_period_epochs;
            let hash = reveal.hash(&hotkey, netuid);
            let Some(&(id, _, committed)) = commits.iter().find(|c| c.1 == hash) else {
                if commits.iter().all(|c| c.2 + period < epoch) {
                    return Err(ChainError::ExpiredWeightCommit { epoch: commits[commits.len() - 1].2 + period, now: epoch });
                }
                return Err(ChainError::InvalidRevealCommitHashNotMatch);
            };
            if epoch < committed + period {
                return Err(ChainError::RevealTooEarly { epoch: committed + period, now: epoch });
            }
            if epoch > committed + period {
                return Err(ChainError::ExpiredWeightCommit { epoch: committed + period, now: epoch });
            }
            apply_weights(
                tx,
                block,
                &params,
                hotkey,
                netuid,
                &reveal.uids,
                &reveal.values,
                reveal.version_key,
            )?;
            tx.execute("DELETE FROM weight_commits WHERE id = ?1", [id])?;
            Ok(())
        })
    }
}

/// set_weights' checks after the commit-reveal one, in subtensor's order, then the stored row.
#[allow(clippy::too_many_arguments)]
pub(super) fn apply_weights(
    tx: &Tx<'_>,
    block: u64,
    params: &SubnetParams,
    hotkey: AccountId,
    netuid: u16,
    uids: &[u16],
    values: &[u16],
    version_key: u64,
) -> Result<()> {
    if uids.len() != values.len() {
        return Err(ChainError::WeightVecNotEqualSize {
            uids: uids.len(),
            weights: values.len(),
        });
    }
    let n: i64 = tx.query_row(
        "SELECT COUNT(*) FROM neurons WHERE netuid = ?1",
        [netuid],
        |r| r.get(0),
    )?;
    let n = n as usize;
    if uids.len() > n {
        return Err(ChainError::UidsLengthExceedUidsInSubNet { len: uids.len(), n });
    }
    let (uid, permit) = check_sender(tx, block, params, (hotkey, netuid), version_key)?;
    let self_weight_only = uids.len() == 1 && uids[0] == uid;
    if !permit && !self_weight_only {
        return Err(ChainError::NeuronNoValidatorPermit { uid, netuid });
    }
    let upscaled = check_row(params, netuid, n, uids, values, self_weight_only)?;
    let mut row: Vec<(u16, u16)> = uids.iter().copied().zip(upscaled).collect();
    row.sort_unstable();
    tx.execute(
        "UPDATE neurons SET weights = ?1, last_update = ?2 WHERE netuid = ?3 AND uid = ?4",
        params![
            serde_json::to_string(&row).map_err(corrupt)?,
            block as i64,
            netuid,
            uid
        ],
    )?;
    event(
        tx,
        block,
        Some(netuid),
        EventKind::WeightsSet,
        &format!("uid {uid} {} weights", row.len()),
    )
}

/// The sender's checks, in subtensor's order: registered, staked enough, a current version key,
/// not too soon after its last row. Its uid and whether it holds a validator permit.
fn check_sender(
    tx: &Tx<'_>,
    block: u64,
    params: &SubnetParams,
    (hotkey, netuid): (AccountId, u16),
    version_key: u64,
) -> Result<(u16, bool)> {
    let Some(uid) = uid_of(tx, netuid, &hotkey)? else {
        return Err(ChainError::HotKeyNotRegisteredInSubNet {
            hotkey: hotkey.to_string(),
            netuid,
        });
    };
    let (stake, last_update, permit): (i64, i64, bool) = tx.query_row(
        "SELECT stake, last_update, validator_permit FROM neurons WHERE netuid = ?1 AND uid = ?2",
        params![netuid, uid],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    if (stake as u64) < params.stake_threshold {
        return Err(ChainError::NotEnoughStakeToSetWeights {
            stake: stake as u64,
            threshold: params.stake_threshold,
        });
    }
    if params.weights_version_key != 0 && version_key < params.weights_version_key {
        return Err(ChainError::IncorrectWeightVersionKey {
            given: version_key,
            required: params.weights_version_key,
        });
    }
    if block.saturating_sub(last_update as u64) < params.weights_rate_limit {
        return Err(ChainError::SettingWeightsTooFast {
            last_update: last_update as u64,
            rate_limit: params.weights_rate_limit,
            now: block,
        });
    }
    Ok((uid, permit))
}

/// The row's own checks, in subtensor's order: no uid twice, every uid on the subnet, enough
/// weights (unless the row is a self-weight), none above the limit once max-upscaled. Returns the
/// upscaled values.
fn check_row(
    params: &SubnetParams,
    netuid: u16,
    n: usize,
    uids: &[u16],
    values: &[u16],
    self_weight_only: bool,
) -> Result<Vec<u16>> {
    let mut seen = std::collections::HashSet::new();
    if let Some(&dup) = uids.iter().find(|u| !seen.insert(**u)) {
        return Err(ChainError::DuplicateUids { uid: dup });
    }
    if let Some(&bad) = uids.iter().find(|&&u| u as usize >= n) {
        return Err(ChainError::UidVecContainInvalidOne { uid: bad, netuid });
    }
    let min = (params.min_allowed_weights as usize).min(n);
    if uids.len() < min && !self_weight_only {
        return Err(ChainError::WeightVecLengthIsLow {
            len: uids.len(),
            min,
        });
    }
    let upscaled = yuma::max_upscale_to_u16(values);
    let max = upscaled.iter().copied().max().unwrap_or(0);
    if max > params.max_weights_limit {
        return Err(ChainError::MaxWeightExceeded {
            max,
            limit: params.max_weights_limit,
        });
    }
    Ok(upscaled)
}
