//! The local chain's tables, and the kinds of event it records and how they are read back.

use super::LocalChain;
use crate::error::Result;
use rusqlite::params;

/// Every table, created if missing when a chain file is opened.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS chain (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    seed INTEGER NOT NULL,
    genesis_unix_ms INTEGER NOT NULL,
    block_time_ms INTEGER NOT NULL,
    manual_block INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS balances (coldkey BLOB PRIMARY KEY, free INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS subnets (
    netuid INTEGER PRIMARY KEY,
    owner BLOB NOT NULL,
    params TEXT NOT NULL,
    yuma_state TEXT NOT NULL,
    last_epoch_block INTEGER NOT NULL,
    epoch_index INTEGER NOT NULL DEFAULT 0,
    pending_epoch_at INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS neurons (
    netuid INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    hotkey BLOB NOT NULL,
    coldkey BLOB NOT NULL,
    stake INTEGER NOT NULL DEFAULT 0,
    axon TEXT,
    registered_at INTEGER NOT NULL,
    last_update INTEGER NOT NULL,
    weights TEXT NOT NULL DEFAULT '[]',
    validator_permit INTEGER NOT NULL DEFAULT 0,
    active INTEGER NOT NULL DEFAULT 1,
    consensus INTEGER NOT NULL DEFAULT 0,
    incentive INTEGER NOT NULL DEFAULT 0,
    dividends INTEGER NOT NULL DEFAULT 0,
    validator_trust INTEGER NOT NULL DEFAULT 0,
    emission INTEGER NOT NULL DEFAULT 0,
    total_emission INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (netuid, uid)
);
CREATE UNIQUE INDEX IF NOT EXISTS neurons_by_hotkey ON neurons (netuid, hotkey);
CREATE TABLE IF NOT EXISTS epochs (
    netuid INTEGER NOT NULL,
    block INTEGER NOT NULL,
    emission TEXT NOT NULL,
    owner_cut INTEGER NOT NULL,
    PRIMARY KEY (netuid, block)
);
CREATE TABLE IF NOT EXISTS fraud_reports (
    netuid INTEGER NOT NULL,
    offender BLOB NOT NULL,
    window INTEGER NOT NULL,
    reporter BLOB NOT NULL,
    evidence BLOB NOT NULL,
    block INTEGER NOT NULL,
    PRIMARY KEY (netuid, offender, window, reporter)
);
CREATE TABLE IF NOT EXISTS slashes (
    netuid INTEGER NOT NULL,
    offender BLOB NOT NULL,
    window INTEGER NOT NULL,
    block INTEGER NOT NULL,
    amount INTEGER NOT NULL,
    evidence BLOB NOT NULL,
    reporters TEXT NOT NULL,
    PRIMARY KEY (netuid, offender, window)
);
CREATE TABLE IF NOT EXISTS weight_commits (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    netuid INTEGER NOT NULL,
    hotkey BLOB NOT NULL,
    hash BLOB NOT NULL,
    block INTEGER NOT NULL,
    epoch INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS weight_commits_by_hotkey ON weight_commits (netuid, hotkey);
CREATE TABLE IF NOT EXISTS beacon (id INTEGER PRIMARY KEY CHECK (id = 0), secret BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS pulses (round INTEGER PRIMARY KEY, signature BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS timelocked_commits (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    netuid INTEGER NOT NULL,
    hotkey BLOB NOT NULL,
    commit_bytes BLOB NOT NULL,
    reveal_round INTEGER NOT NULL,
    block INTEGER NOT NULL,
    epoch INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS timelocked_commits_by_epoch ON timelocked_commits (netuid, epoch);
CREATE TABLE IF NOT EXISTS timelocked_reveals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    netuid INTEGER NOT NULL,
    block INTEGER NOT NULL,
    hotkey BLOB NOT NULL,
    commit_block INTEGER NOT NULL,
    reveal_round INTEGER NOT NULL,
    failure TEXT
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    block INTEGER NOT NULL,
    netuid INTEGER,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
";

/// Brings a chain file made before the stored epoch pipeline up to date: its subnets' epochs fell at
/// multiples of the tempo, so the epoch index is `last_epoch_block / tempo`, and a subnet that has
/// run no epoch yet has its first scheduled at the next multiple.
pub(super) fn migrate(conn: &mut rusqlite::Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let has_index: bool = tx.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info('subnets') WHERE name = 'epoch_index'",
        [],
        |r| r.get(0),
    )?;
    if !has_index {
        tx.execute_batch(
            "ALTER TABLE subnets ADD COLUMN epoch_index INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE subnets ADD COLUMN pending_epoch_at INTEGER NOT NULL DEFAULT 0;
             UPDATE subnets SET
                 epoch_index = last_epoch_block / MAX(json_extract(params, '$.tempo'), 1),
                 pending_epoch_at = CASE
                     WHEN last_epoch_block % MAX(json_extract(params, '$.tempo'), 1) = 0 THEN 0
                     ELSE (last_epoch_block / MAX(json_extract(params, '$.tempo'), 1) + 1)
                          * MAX(json_extract(params, '$.tempo'), 1)
                 END;",
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// What an event row records (the `kind` column of `events`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Funded,
    NetworkAdded,
    NeuronRegistered,
    NeuronPruned,
    StakeAdded,
    AxonServed,
    WeightsSet,
    WeightsCommitted,
    TimelockedWeightsCommitted,
    TimelockedWeightsRevealed,
    TimelockedRevealFailed,
    FraudReported,
    Slashed,
    EpochRun,
    TempoSet,
    EpochTriggered,
}

impl EventKind {
    /// The name stored in the `kind` column (subtensor's event name where it has one).
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Funded => "Funded",
            EventKind::NetworkAdded => "NetworkAdded",
            EventKind::NeuronRegistered => "NeuronRegistered",
            EventKind::NeuronPruned => "NeuronPruned",
            EventKind::StakeAdded => "StakeAdded",
            EventKind::AxonServed => "AxonServed",
            EventKind::WeightsSet => "WeightsSet",
            EventKind::WeightsCommitted => "WeightsCommitted",
            EventKind::TimelockedWeightsCommitted => "TimelockedWeightsCommitted",
            EventKind::TimelockedWeightsRevealed => "TimelockedWeightsRevealed",
            EventKind::TimelockedRevealFailed => "TimelockedRevealFailed",
            EventKind::FraudReported => "FraudReported",
            EventKind::Slashed => "Slashed",
            EventKind::EpochRun => "EpochRun",
            EventKind::TempoSet => "TempoSet",
            EventKind::EpochTriggered => "EpochTriggered",
        }
    }
}

/// One row of the chain's event log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainEvent {
    /// Increases with every event recorded: read on from the last one seen.
    pub id: i64,
    pub block: u64,
    /// None for chain-wide events (funding).
    pub netuid: Option<u16>,
    /// `EventKind::name`.
    pub kind: String,
    pub detail: String,
}

impl LocalChain {
    /// Events of `netuid` and chain-wide ones recorded after event `after` (0: from the start),
    /// oldest first, at most `limit`.
    pub fn events_after(&self, netuid: u16, after: i64, limit: usize) -> Result<Vec<ChainEvent>> {
        self.transact(|tx, _| {
            let mut stmt = tx.prepare(
                "SELECT id, block, netuid, kind, detail FROM events
                 WHERE id > ?1 AND (netuid = ?2 OR netuid IS NULL) ORDER BY id LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![after, netuid, limit as i64], |r| {
                Ok(ChainEvent {
                    id: r.get(0)?,
                    block: r.get::<_, i64>(1)? as u64,
                    netuid: r.get(2)?,
                    kind: r.get(3)?,
                    detail: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }
}
