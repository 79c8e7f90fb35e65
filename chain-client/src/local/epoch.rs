//! Epochs: every `tempo` blocks each subnet runs its consensus (Yuma, or Null) over its weights and
//! stake and pays the emission of the blocks since its last epoch.

use super::accounts::credit;
use super::timelock::reveal_commits_at;
use super::{EventKind, LocalChain, Tx, corrupt, event, subnet_params, weight_row};
use crate::error::{ChainError, Result};
use crate::schedule::MAX_TEMPO;
use crate::types::{AccountId, EpochConsensus, SubnetParams};
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

/// A subnet's stored epoch pipeline, as subtensor keeps it on runtimes with dynamic tempo: the block
/// and number of its last epoch, and the block of the next one where it is set apart from the tempo
/// (0: none). Otherwise an epoch runs `tempo` blocks after the last one (at most `MAX_TEMPO + 1`,
/// as subtensor runs a subnet's epoch once that many blocks pass without one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalPipeline {
    pub last_epoch_block: u64,
    /// The block of the next epoch where the tempo does not set it: one the owner triggered, a new
    /// subnet's first (at the first multiple of its tempo), or where the owner changed the tempo,
    /// the first block the new tempo allows (never one already past).
    pub pending_epoch_at: u64,
    pub epoch_index: u64,
    /// Blocks between epochs (0 counts as 1).
    pub tempo: u64,
}

impl LocalPipeline {
    /// The block at which the next epoch runs, unless the owner changes the schedule first.
    pub fn next_epoch_block(&self) -> u64 {
        match self.pending_epoch_at {
            0 => self.due_block(),
            pending => pending.max(self.last_epoch_block + 1),
        }
    }

    /// The block the tempo alone gives the next epoch.
    fn due_block(&self) -> u64 {
        self.last_epoch_block + self.tempo.clamp(1, MAX_TEMPO + 1)
    }

    /// The pipeline once the next epoch has run.
    fn advanced(self) -> Self {
        Self {
            last_epoch_block: self.next_epoch_block(),
            pending_epoch_at: 0,
            epoch_index: self.epoch_index + 1,
            tempo: self.tempo,
        }
    }

    /// The first block of epoch `epoch_index + ahead` as the schedule stands (the current epoch's
    /// own first block for 0).
    pub fn start_of_epoch_ahead(&self, ahead: u64) -> u64 {
        let mut p = *self;
        for _ in 0..ahead {
            p = p.advanced();
        }
        p.last_epoch_block
    }

    /// A new subnet's pipeline at `block`: numbered and scheduled as if epochs had run at every
    /// multiple of the tempo, so that a subnet whose tempo never changes runs its epochs there
    /// (`block / tempo` numbers them, and windows of `tempo` blocks end at them).
    pub(super) fn created_at(block: u64, tempo: u64) -> Self {
        let t = tempo.max(1);
        Self {
            last_epoch_block: block,
            pending_epoch_at: if block.is_multiple_of(t) {
                0
            } else {
                (block / t + 1) * t
            },
            epoch_index: block / t,
            tempo,
        }
    }
}

/// The tempos a subnet owner may set (subtensor's bounds on runtimes with dynamic tempo).
pub const MIN_OWNER_TEMPO: u64 = 360;

impl LocalChain {
    /// A subnet's epoch pipeline at the current block.
    pub fn epoch_pipeline(&self, netuid: u16) -> Result<LocalPipeline> {
        self.transact(|tx, _| pipeline(tx, netuid, &subnet_params(tx, netuid)?))
    }

    /// The owner sets the subnet's tempo (360 to 50,400 blocks): the next epoch runs `tempo` blocks
    /// after the last one, or at the next block if that has already passed.
    pub fn set_tempo_sync(
        &self,
        owner: AccountId,
        netuid: u16,
        tempo: u64,
    ) -> Result<LocalPipeline> {
        self.transact(|tx, block| {
            let mut params = subnet_params(tx, netuid)?;
            check_owner(tx, netuid, &owner)?;
            if !(MIN_OWNER_TEMPO..=MAX_TEMPO).contains(&tempo) {
                return Err(ChainError::TempoOutOfRange {
                    tempo,
                    min: MIN_OWNER_TEMPO,
                    max: MAX_TEMPO,
                });
            }
            if params.window_blocks == 0 {
                params.window_blocks = params.tempo.max(1);
            }
            let old = params.tempo;
            params.tempo = tempo;
            let mut p = pipeline(tx, netuid, &params)?;
            // The sooner of what the new tempo gives and an epoch already set apart, but not in
            // the past: epochs that would have run already under the new tempo never ran.
            p.pending_epoch_at = p.next_epoch_block().min(p.due_block()).max(block + 1);
            tx.execute(
                "UPDATE subnets SET params = ?1, pending_epoch_at = ?2 WHERE netuid = ?3",
                params![
                    serde_json::to_string(&params).map_err(corrupt)?,
                    p.pending_epoch_at as i64,
                    netuid
                ],
            )?;
            event(
                tx,
                block,
                Some(netuid),
                EventKind::TempoSet,
                &format!(
                    "tempo {old} -> {tempo}, next epoch at block {}",
                    p.next_epoch_block()
                ),
            )?;
            Ok(p)
        })
    }

    /// The owner triggers an epoch: it runs at the next block, and the tempo counts from there.
    pub fn trigger_epoch_sync(&self, owner: AccountId, netuid: u16) -> Result<LocalPipeline> {
        self.transact(|tx, block| {
            let params = subnet_params(tx, netuid)?;
            check_owner(tx, netuid, &owner)?;
            let mut p = pipeline(tx, netuid, &params)?;
            p.pending_epoch_at = block + 1;
            tx.execute(
                "UPDATE subnets SET pending_epoch_at = ?1 WHERE netuid = ?2",
                params![p.pending_epoch_at as i64, netuid],
            )?;
            event(
                tx,
                block,
                Some(netuid),
                EventKind::EpochTriggered,
                &format!(
                    "epoch {} at block {}",
                    p.epoch_index + 1,
                    p.pending_epoch_at
                ),
            )?;
            Ok(p)
        })
    }
}

fn check_owner(tx: &Tx<'_>, netuid: u16, coldkey: &AccountId) -> Result<()> {
    let owner: Vec<u8> = tx.query_row(
        "SELECT owner FROM subnets WHERE netuid = ?1",
        [netuid],
        |r| r.get(0),
    )?;
    if owner != coldkey.0 {
        return Err(ChainError::NotSubnetOwner {
            coldkey: coldkey.to_string(),
            netuid,
        });
    }
    Ok(())
}

/// The stored pipeline of `netuid` (after the epochs due by the transaction's block have run).
pub(super) fn pipeline(tx: &Tx<'_>, netuid: u16, params: &SubnetParams) -> Result<LocalPipeline> {
    let (last, pending, index): (i64, i64, i64) = tx.query_row(
        "SELECT last_epoch_block, pending_epoch_at, epoch_index FROM subnets WHERE netuid = ?1",
        [netuid],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    Ok(LocalPipeline {
        last_epoch_block: last as u64,
        pending_epoch_at: pending as u64,
        epoch_index: index as u64,
        tempo: params.tempo,
    })
}

/// Runs every epoch that fell due by `block`, in order, each after the timelocked commits due in
/// the block before it have been opened.
pub(super) fn run_due_epochs(tx: &Tx<'_>, block: u64) -> Result<()> {
    type Row = (u16, String, i64, i64, i64);
    let subnets: Vec<Row> = {
        let mut stmt = tx.prepare(
            "SELECT netuid, params, last_epoch_block, pending_epoch_at, epoch_index FROM subnets ORDER BY netuid",
        )?;
        stmt.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<rusqlite::Result<_>>()?
    };
    for (netuid, params, last, pending, index) in subnets {
        let params: SubnetParams = serde_json::from_str(&params).map_err(corrupt)?;
        let mut p = LocalPipeline {
            last_epoch_block: last as u64,
            pending_epoch_at: pending as u64,
            epoch_index: index as u64,
            tempo: params.tempo,
        };
        while p.next_epoch_block() <= block {
            let next = p.next_epoch_block();
            // Commits due before this epoch's block are opened first, as the blocks went by.
            reveal_commits_at(tx, netuid, &params, next - 1, p.epoch_index)?;
            let blocks = next - p.last_epoch_block;
            p = p.advanced();
            run_epoch(tx, netuid, &params, &p, blocks)?;
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
    current: u64,
    rows: &[EpochRow],
) -> Result<Option<Vec<u64>>> {
    if !params.commit_reveal_weights_enabled {
        return Ok(None);
    }
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
        .window_of(block)
        .saturating_sub(params.fraud_report_windows);
    let mut stmt =
        tx.prepare("SELECT DISTINCT offender FROM slashes WHERE netuid = ?1 AND window >= ?2")?;
    let slashed = stmt
        .query_map(params![netuid, since as i64], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(slashed)
}

/// One epoch of `netuid`, the one that made `pipeline` (run at its last epoch block), paying the
/// emission of the `blocks` since the one before.
fn run_epoch(
    tx: &Tx<'_>,
    netuid: u16,
    params: &SubnetParams,
    pipeline: &LocalPipeline,
    blocks: u64,
) -> Result<()> {
    let block = pipeline.last_epoch_block;
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
    let earliest_commit = earliest_commits(tx, netuid, params, pipeline.epoch_index, &rows)?;
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
        (netuid, pipeline),
        &state,
        &out,
        (owner_cut, total, rows.len()),
    )
}

/// Keeps the epoch's state and output, and its event.
fn record_epoch(
    tx: &Tx<'_>,
    (netuid, pipeline): (u16, &LocalPipeline),
    state: &YumaState,
    out: &EpochOutput,
    (owner_cut, total, uids): (u64, u64, usize),
) -> Result<()> {
    let block = pipeline.last_epoch_block;
    tx.execute(
        "UPDATE subnets SET yuma_state = ?1, last_epoch_block = ?2, epoch_index = ?3, pending_epoch_at = ?4
         WHERE netuid = ?5",
        params![
            serde_json::to_string(state).map_err(corrupt)?,
            block as i64,
            pipeline.epoch_index as i64,
            pipeline.pending_epoch_at as i64,
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
        &format!("epoch {}: {uids} uids, {total} rao", pipeline.epoch_index),
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
