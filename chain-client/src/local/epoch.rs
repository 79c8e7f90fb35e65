//! Epochs: every `tempo` blocks each subnet runs its consensus (Yuma, or Null) over its weights and
//! stake and pays the emission of the blocks since its last epoch.

use super::accounts::credit;
use super::timelock::reveal_commits_at;
use super::{EventKind, LocalChain, Tx, corrupt, event, weight_row};
use crate::error::Result;
use crate::types::{EpochConsensus, SubnetParams};
use rusqlite::params;
use scoring::yuma::{self, EpochInput, EpochOutput, YumaState};

impl LocalChain {
    /// Per-epoch emissions of a subnet, oldest first: (block, emission per uid, owner cut).
    pub fn epochs(&self, netuid: u16) -> Result<Vec<(u64, Vec<u64>, u64)>> {
        self.transact(|tx, _| {
            let mut stmt = tx.prepare(
                "SELECT block, emission, owner_cut FROM epochs WHERE netuid = ?1 ORDER BY block",
            )?;
            let rows = stmt
                .query_map([netuid], |r| {
                    Ok((
                        r.get::<_, i64>(0)? as u64,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)? as u64,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(b, e, c)| Ok((b, serde_json::from_str(&e).map_err(corrupt)?, c)))
                .collect()
        })
    }
}

/// Runs every epoch whose block (a multiple of the subnet's tempo) is past the subnet's last epoch and
/// not after `block`.
pub(super) fn run_due_epochs(tx: &Tx<'_>, block: u64) -> Result<()> {
    let subnets: Vec<(u16, String, i64)> = {
        let mut stmt =
            tx.prepare("SELECT netuid, params, last_epoch_block FROM subnets ORDER BY netuid")?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?
    };
    for (netuid, params, last) in subnets {
        let params: SubnetParams = serde_json::from_str(&params).map_err(corrupt)?;
        let tempo = params.tempo.max(1);
        let mut last = last as u64;
        let mut next = (last / tempo + 1) * tempo;
        while next <= block {
            // Commits due before this epoch's block are opened first, as the blocks went by.
            reveal_commits_at(tx, netuid, &params, next - 1)?;
            run_epoch(tx, netuid, &params, next, next - last)?;
            last = next;
            next += tempo;
        }
    }
    Ok(())
}

/// A neuron as an epoch reads it.
struct EpochRow {
    uid: u16,
    hotkey: Vec<u8>,
    stake: u64,
    weights: Vec<(u16, u16)>,
    last_update: u64,
    registered_at: u64,
}

fn epoch_rows(tx: &Tx<'_>, netuid: u16) -> Result<Vec<EpochRow>> {
    let mut stmt = tx.prepare(
        "SELECT uid, stake, weights, last_update, registered_at, hotkey FROM neurons WHERE netuid = ?1 ORDER BY uid",
    )?;
    let rows = stmt
        .query_map([netuid], |r| {
            Ok((
                r.get::<_, u16>(0)?,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)? as u64,
                r.get::<_, i64>(4)? as u64,
                r.get::<_, Vec<u8>>(5)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(
            |(uid, stake, weights, last_update, registered_at, hotkey)| {
                Ok(EpochRow {
                    uid,
                    hotkey,
                    stake,
                    weights: weight_row(&weights)?,
                    last_update,
                    registered_at,
                })
            },
        )
        .collect()
}

/// Under commit-reveal, each row's earliest pending commit block (`u64::MAX` for none): weights
/// committed before their target registered do not count for it.
fn earliest_commits(
    tx: &Tx<'_>,
    netuid: u16,
    params: &SubnetParams,
    block: u64,
    rows: &[EpochRow],
) -> Result<Option<Vec<u64>>> {
    if !params.commit_reveal_weights_enabled {
        return Ok(None);
    }
    let current = params.epoch_of(block);
    let mut earliest = vec![u64::MAX; rows.len()];
    for table in ["weight_commits", "timelocked_commits"] {
        let mut stmt = tx.prepare(&format!(
            "SELECT hotkey, MIN(block) FROM {table} WHERE netuid = ?1 AND epoch + ?2 >= ?3 GROUP BY hotkey"
        ))?;
        let commits: Vec<(Vec<u8>, i64)> = stmt
            .query_map(
                params![netuid, params.reveal_period_epochs as i64, current as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?
            .collect::<rusqlite::Result<_>>()?;
        for (hotkey, committed) in commits {
            if let Some(i) = rows.iter().position(|r| r.hotkey == hotkey) {
                earliest[i] = earliest[i].min(committed as u64);
            }
        }
    }
    Ok(Some(earliest))
}

/// Hotkeys slashed within the recent fraud span: they earn nothing meanwhile (their emission is
/// burned).
fn recently_slashed(
    tx: &Tx<'_>,
    netuid: u16,
    params: &SubnetParams,
    block: u64,
) -> Result<Vec<Vec<u8>>> {
    let since = params
        .epoch_of(block)
        .saturating_sub(params.fraud_report_windows);
    let mut stmt =
        tx.prepare("SELECT DISTINCT offender FROM slashes WHERE netuid = ?1 AND window >= ?2")?;
    let slashed = stmt
        .query_map(params![netuid, since as i64], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(slashed)
}

/// One epoch of `netuid` at `block`, paying the emission of the `blocks` since the last one.
fn run_epoch(
    tx: &Tx<'_>,
    netuid: u16,
    params: &SubnetParams,
    block: u64,
    blocks: u64,
) -> Result<()> {
    let rows = epoch_rows(tx, netuid)?;
    let state_text: String = tx.query_row(
        "SELECT yuma_state FROM subnets WHERE netuid = ?1",
        [netuid],
        |r| r.get(0),
    )?;
    let mut state: YumaState = serde_json::from_str(&state_text).map_err(corrupt)?;
    let total = params.emission_per_block.saturating_mul(blocks);
    let owner_cut = (total as u128 * params.owner_cut as u128 / 65535) as u64;
    let stake: Vec<u64> = rows.iter().map(|r| r.stake).collect();
    let weights: Vec<Vec<(u16, u16)>> = rows.iter().map(|r| r.weights.clone()).collect();
    let last_update: Vec<u64> = rows.iter().map(|r| r.last_update).collect();
    let registered: Vec<u64> = rows.iter().map(|r| r.registered_at).collect();
    let earliest_commit = earliest_commits(tx, netuid, params, block, &rows)?;
    let epoch = match params.epoch_consensus {
        EpochConsensus::Yuma => yuma::epoch,
        EpochConsensus::Null => yuma::null_epoch,
    };
    let out = epoch(
        &params.yuma(),
        &state,
        &EpochInput {
            block,
            emission: total - owner_cut,
            stake: &stake,
            weights: &weights,
            last_update: &last_update,
            block_at_registration: &registered,
            earliest_commit: earliest_commit.as_deref(),
        },
    );
    store_epoch_output(
        tx,
        netuid,
        &rows,
        &out,
        &recently_slashed(tx, netuid, params, block)?,
    )?;
    let owner: Vec<u8> = tx.query_row(
        "SELECT owner FROM subnets WHERE netuid = ?1",
        [netuid],
        |r| r.get(0),
    )?;
    credit(tx, &owner, owner_cut)?;
    state.advance(block, &out);
    record_epoch(
        tx,
        (netuid, block),
        &state,
        &out,
        (owner_cut, total, rows.len()),
    )
}

/// Keeps the epoch's state and output, and its event.
fn record_epoch(
    tx: &Tx<'_>,
    (netuid, block): (u16, u64),
    state: &YumaState,
    out: &EpochOutput,
    (owner_cut, total, uids): (u64, u64, usize),
) -> Result<()> {
    tx.execute(
        "UPDATE subnets SET yuma_state = ?1, last_epoch_block = ?2 WHERE netuid = ?3",
        params![
            serde_json::to_string(state).map_err(corrupt)?,
            block as i64,
            netuid
        ],
    )?;
    tx.execute(
        "INSERT INTO epochs (netuid, block, emission, owner_cut) VALUES (?1, ?2, ?3, ?4)",
        params![
            netuid,
            block as i64,
            serde_json::to_string(&out.emission).map_err(corrupt)?,
            owner_cut as i64
        ],
    )?;
    event(
        tx,
        block,
        Some(netuid),
        EventKind::EpochRun,
        &format!("{uids} uids, {total} rao"),
    )
}

/// Writes each uid's part of an epoch's output; a uid slashed lately earns nothing.
fn store_epoch_output(
    tx: &Tx<'_>,
    netuid: u16,
    rows: &[EpochRow],
    out: &EpochOutput,
    slashed: &[Vec<u8>],
) -> Result<()> {
    for (i, row) in rows.iter().enumerate() {
        let emission = if slashed.contains(&row.hotkey) {
            0
        } else {
            out.emission[i]
        };
        tx.execute(
            "UPDATE neurons SET active = ?1, consensus = ?2, incentive = ?3, dividends = ?4, validator_trust = ?5,
                 validator_permit = ?6, emission = ?7, total_emission = total_emission + ?7, stake = stake + ?7
             WHERE netuid = ?8 AND uid = ?9",
            params![
                out.active[i],
                out.consensus[i],
                out.incentive[i],
                out.dividends[i],
                out.validator_trust[i],
                out.validator_permit[i],
                emission as i64,
                netuid,
                row.uid
            ],
        )?;
    }
    Ok(())
}
