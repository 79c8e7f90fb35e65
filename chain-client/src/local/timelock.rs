//! Commit-reveal v4: weights encrypted to a round of the chain's own randomness beacon (a local
//! extension standing in for drand), opened by the chain when the round's pulse exists.

use super::epoch::pipeline;
use super::weights::{Commits, apply_weights, check_can_commit};
use super::{EventKind, LocalChain, Tx, account, blob, corrupt, event, subnet_params};
use crate::error::{ChainError, Result};
use crate::tlock::{self, Beacon, TimelockTarget};
use crate::types::{AccountId, SubnetParams, TimelockReveal};
use rusqlite::{OptionalExtension, params};

impl LocalChain {
    /// What a timelocked commit made now must target: this chain's beacon key, the round of the
    /// first block of the reveal epoch (the beacon signs round r at block r), and the version.
    pub fn timelock_target_sync(&self, netuid: u16) -> Result<TimelockTarget> {
        self.transact(|tx, block| {
            let params = subnet_params(tx, netuid)?;
            if !params.commit_reveal_weights_enabled {
                return Err(ChainError::CommitRevealDisabled { netuid });
            }
            // The first block of the reveal epoch as the schedule stands: an owner who changes
            // the tempo or triggers an epoch before then moves it, as on subtensor.
            let start =
                pipeline(tx, netuid, &params)?.start_of_epoch_ahead(params.reveal_period_epochs);
            Ok(TimelockTarget {
                beacon_public_key: beacon(tx)?.public_key(),
                reveal_round: start.max(block + 1),
                commit_reveal_version: params.commit_reveal_version,
            })
        })
    }

    /// commit_timelocked_weights: stores a ciphertext the chain opens with its beacon's pulse for
    /// `reveal_round` during epoch `commit epoch + reveal_period_epochs`, and applies what it holds
    /// as the committer's weights (`set_weights`' rules). Checks as subtensor's pool and call make
    /// them, with its error names.
    pub fn commit_timelocked_weights_sync(
        &self,
        hotkey: AccountId,
        netuid: u16,
        commit: &[u8],
        reveal_round: u64,
        commit_reveal_version: u16,
    ) -> Result<()> {
        self.transact(|tx, block| {
            if commit.len() > tlock::MAX_COMMIT_BYTES {
                return Err(ChainError::CommitTooLong { len: commit.len(), max: tlock::MAX_COMMIT_BYTES });
            }
            // The beacon's latest round is the current block's.
            if reveal_round < block {
                return Err(ChainError::InvalidRevealRound { round: reveal_round, latest: block });
            }
            let params = subnet_params(tx, netuid)?;
            if !params.commit_reveal_weights_enabled {
                return Err(ChainError::CommitRevealDisabled { netuid });
            }
            if commit_reveal_version != params.commit_reveal_version {
                return Err(ChainError::IncorrectCommitRevealVersion {
                    given: commit_reveal_version,
                    required: params.commit_reveal_version,
                });
            }
            check_can_commit(tx, Commits::Timelocked, netuid, &hotkey)?;
            tx.execute(
                "INSERT INTO timelocked_commits (netuid, hotkey, commit_bytes, reveal_round, block, epoch) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![netuid, blob(&hotkey), commit, reveal_round as i64, block as i64, pipeline(tx, netuid, &params)?.epoch_index as i64],
            )?;
            event(tx, block, Some(netuid), EventKind::TimelockedWeightsCommitted, &format!("{} round {reveal_round}", hotkey.short()))
        })
    }

    /// The beacon's pulse for `round`, once the chain has reached it (round r at block r).
    pub fn beacon_pulse(&self, round: u64) -> Result<Option<[u8; 48]>> {
        self.transact(|tx, block| {
            if round > block {
                return Ok(None);
            }
            pulse(tx, round).map(Some)
        })
    }

    /// Every timelocked commit the chain has opened or dropped on `netuid`, in order.
    pub fn timelock_reveals(&self, netuid: u16) -> Result<Vec<TimelockReveal>> {
        self.transact(|tx, _| {
            let mut stmt = tx.prepare(
                "SELECT block, hotkey, commit_block, reveal_round, failure FROM timelocked_reveals WHERE netuid = ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map([netuid], |r| {
                let failure: Option<String> = r.get(4)?;
                Ok(TimelockReveal {
                    block: r.get::<_, i64>(0)? as u64,
                    hotkey: account(r.get(1)?)?,
                    commit_block: r.get::<_, i64>(2)? as u64,
                    reveal_round: r.get::<_, i64>(3)? as u64,
                    outcome: failure.map_or(Ok(()), Err),
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }
}

fn beacon(tx: &Tx<'_>) -> Result<Beacon> {
    let secret: Vec<u8> = tx.query_row("SELECT secret FROM beacon", [], |r| r.get(0))?;
    Beacon::from_bytes(&secret).map_err(ChainError::Corrupt)
}

/// The beacon's signature for `round`, signed once and kept.
fn pulse(tx: &Tx<'_>, round: u64) -> Result<[u8; 48]> {
    let stored: Option<Vec<u8>> = tx
        .query_row(
            "SELECT signature FROM pulses WHERE round = ?1",
            [round as i64],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(signature) = stored {
        return signature
            .try_into()
            .map_err(|_| corrupt(format!("the pulse of round {round} is not 48 bytes")));
    }
    let signature = beacon(tx)?.sign(round);
    tx.execute(
        "INSERT INTO pulses (round, signature) VALUES (?1, ?2)",
        params![round as i64, &signature[..]],
    )?;
    Ok(signature)
}

/// Opens the timelocked commits due at `block` (in epoch `current`), as subtensor's reveal does each
/// block of a reveal epoch: commits of epoch `current - reveal_period_epochs` whose round the beacon
/// has reached are
/// decrypted, checked to name their committer and applied as its weights; a commit that fails is
/// dropped with its reason; one whose round is still ahead waits (within the epoch); commits of
/// earlier epochs can no longer be revealed and are dropped.
pub(super) fn reveal_commits_at(
    tx: &Tx<'_>,
    netuid: u16,
    params: &SubnetParams,
    block: u64,
    current: u64,
) -> Result<()> {
    let due_epoch = current.checked_sub(params.reveal_period_epochs);
    type Commit = (i64, Vec<u8>, Vec<u8>, u64, u64, u64);
    let commits: Vec<Commit> = {
        let mut stmt = tx.prepare(
            "SELECT id, hotkey, commit_bytes, reveal_round, block, epoch FROM timelocked_commits WHERE netuid = ?1 AND epoch <= ?2 ORDER BY id",
        )?;
        let last = due_epoch.map_or(-1, |e| e as i64);
        stmt.query_map(params![netuid, last], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get::<_, i64>(3)? as u64,
                r.get::<_, i64>(4)? as u64,
                r.get::<_, i64>(5)? as u64,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?
    };
    for (id, hotkey, commit, round, commit_block, epoch) in commits {
        let hotkey = account(hotkey)?;
        let failure = if Some(epoch) != due_epoch {
            Some(format!(
                "expired: its reveal epoch {} passed without the pulse of round {round}",
                epoch + params.reveal_period_epochs
            ))
        } else if round > block {
            continue;
        } else {
            open_and_apply(tx, (netuid, params, block), hotkey, &commit, round)?
        };
        tx.execute("DELETE FROM timelocked_commits WHERE id = ?1", [id])?;
        tx.execute(
            "INSERT INTO timelocked_reveals (netuid, block, hotkey, commit_block, reveal_round, failure) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![netuid, block as i64, blob(&hotkey), commit_block as i64, round as i64, failure],
        )?;
        let (kind, detail) = match &failure {
            None => (EventKind::TimelockedWeightsRevealed, hotkey.short()),
            Some(reason) => (
                EventKind::TimelockedRevealFailed,
                format!("{}: {reason}", hotkey.short()),
            ),
        };
        event(tx, block, Some(netuid), kind, &detail)?;
    }
    Ok(())
}

/// Opens `commit` with the pulse of `round` and applies it as `hotkey`'s weights: None, or why it
/// failed (a database error stops the block instead).
fn open_and_apply(
    tx: &Tx<'_>,
    (netuid, params, block): (u16, &SubnetParams, u64),
    hotkey: AccountId,
    commit: &[u8],
    round: u64,
) -> Result<Option<String>> {
    let (uids, values, version_key) = match tlock::open_weights(commit, &pulse(tx, round)?, &hotkey)
    {
        Ok(opened) => opened,
        Err(reason) => return Ok(Some(reason)),
    };
    match apply_weights(
        tx,
        block,
        params,
        hotkey,
        netuid,
        &uids,
        &values,
        version_key,
    ) {
        Ok(()) => Ok(None),
        Err(ChainError::Database(e)) => Err(ChainError::Database(e)),
        Err(e) => Ok(Some(e.to_string())),
    }
}

/// Opens the timelocked commits due at `block` on every subnet.
pub(super) fn reveal_due_commits(tx: &Tx<'_>, block: u64) -> Result<()> {
    let pending: Vec<u16> = {
        let mut stmt = tx.prepare("SELECT DISTINCT netuid FROM timelocked_commits")?;
        stmt.query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?
    };
    for netuid in pending {
        let params = subnet_params(tx, netuid)?;
        let current = pipeline(tx, netuid, &params)?.epoch_index;
        reveal_commits_at(tx, netuid, &params, block, current)?;
    }
    Ok(())
}
