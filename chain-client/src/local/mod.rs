//! The embedded local chain: one SQLite file that several processes share. Every call runs in one
//! `BEGIN IMMEDIATE` transaction that first runs any epochs that fell due (lazily, exactly once: the
//! subnet's `last_epoch_block` moves inside the same transaction), then applies the call with
//! subtensor's checks. A `kill -9` loses nothing committed: SQLite's WAL makes each transaction
//! atomic and durable.
//!
//! One module per concern: `schema` (tables and event kinds), `accounts` (balances, subnets,
//! registration, stake, axons, the metagraph), `weights` (set_weights and commit-reveal v2),
//! `timelock` (commit-reveal v4 and the chain's beacon), `fraud` (reports and slashes, a local
//! extension), `epoch` (the stored epoch pipeline with the owner's tempo and triggered epochs, Yuma
//! epochs and emission). This file holds the handle, its transaction,
//! the rows' shared helpers and the `Chain` implementation.

mod accounts;
mod epoch;
mod fraud;
mod schema;
mod timelock;
mod weights;

pub use epoch::{LocalPipeline, MIN_OWNER_TEMPO};
pub use schema::{ChainEvent, EventKind};
pub use weights::MAX_UNREVEALED_COMMITS;

use crate::Chain;
use crate::error::{ChainError, Result};
use crate::tlock::{Beacon, TimelockTarget};
use crate::types::{AccountId, FraudOutcome, Metagraph, SubnetParams, WeightsReveal};
use blake2::{Blake2b, Digest, digest::consts::U32};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use subxt_signer::sr25519::Keypair;

type Tx<'a> = rusqlite::Transaction<'a>;

/// How the local chain's block height moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockClock {
    /// Only `advance_blocks` moves it (tests, and the in-process localnet).
    Manual,
    /// One block every `block_time_ms` since genesis (separate miner and validator processes).
    WallTime { block_time_ms: u64 },
}

#[derive(Clone)]
pub struct LocalChain {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn blob(a: &AccountId) -> &[u8] {
    &a.0
}

fn account(bytes: Vec<u8>) -> rusqlite::Result<AccountId> {
    bytes
        .try_into()
        .map(AccountId)
        .map_err(|_| rusqlite::Error::InvalidQuery)
}

fn corrupt(e: impl std::fmt::Display) -> ChainError {
    ChainError::Corrupt(e.to_string())
}

impl LocalChain {
    /// Opens the chain at `path`, creating it with `clock` and `seed` if the file has no chain yet.
    /// An existing chain keeps its own clock and seed.
    pub fn open_or_create(path: impl AsRef<Path>, clock: BlockClock, seed: u64) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let conn = Connection::open(&path)?;
        conn.busy_timeout(Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(schema::SCHEMA)?;
        let mut conn = conn;
        schema::migrate(&mut conn)?;
        let block_time_ms = match clock {
            BlockClock::Manual => 0,
            BlockClock::WallTime { block_time_ms } => block_time_ms.max(1),
        };
        conn.execute(
            "INSERT OR IGNORE INTO chain (id, seed, genesis_unix_ms, block_time_ms, manual_block) VALUES (0, ?1, ?2, ?3, 0)",
            params![seed as i64, now_ms() as i64, block_time_ms as i64],
        )?;
        // The chain's randomness beacon: one BLS key per chain file, made with the chain.
        let has_beacon: bool =
            conn.query_row("SELECT COUNT(*) > 0 FROM beacon", [], |r| r.get(0))?;
        if !has_beacon {
            conn.execute(
                "INSERT OR IGNORE INTO beacon (id, secret) VALUES (0, ?1)",
                [Beacon::generate()?.to_bytes()],
            )?;
        }
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    /// Opens an existing chain; a missing file is an error that says how to create one.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if !path.exists() {
            return Err(ChainError::NoChainFile {
                path: path.display().to_string(),
                dir: path
                    .parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            });
        }
        Self::open_or_create(path, BlockClock::Manual, 0)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in one immediate transaction at the current block, after any epochs that fell due.
    pub fn transact<T>(&self, f: impl FnOnce(&Tx<'_>, u64) -> Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().map_err(|_| ChainError::Poisoned)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let block = current_block(&tx)?;
        epoch::run_due_epochs(&tx, block)?;
        timelock::reveal_due_commits(&tx, block)?;
        let out = f(&tx, block)?;
        tx.commit()?;
        Ok(out)
    }

    /// Moves a manual clock forward (epochs that fall due run on the next call).
    pub fn advance_blocks(&self, n: u64) -> Result<u64> {
        self.transact(|tx, block| {
            let block_time_ms: i64 =
                tx.query_row("SELECT block_time_ms FROM chain", [], |r| r.get(0))?;
            if block_time_ms != 0 {
                return Err(ChainError::Unsupported(
                    "this chain follows wall time; its blocks cannot be advanced by hand".into(),
                ));
            }
            tx.execute(
                "UPDATE chain SET manual_block = manual_block + ?1",
                [n as i64],
            )?;
            Ok(block + n)
        })
    }

    /// The hash of `block`: derived from the chain's seed, so a chain's window seeds are fixed.
    pub fn block_hash_sync(&self, block: u64) -> Result<[u8; 32]> {
        self.transact(|tx, _| {
            let seed: i64 = tx.query_row("SELECT seed FROM chain", [], |r| r.get(0))?;
            let mut h = Blake2b::<U32>::new();
            h.update(b"local-chain-block");
            h.update(seed.to_le_bytes());
            h.update(block.to_le_bytes());
            Ok(h.finalize().into())
        })
    }
}

/// A stored weight row; one that does not parse is corruption, never an empty row.
fn weight_row(text: &str) -> Result<Vec<(u16, u16)>> {
    serde_json::from_str(text).map_err(|e| corrupt(format!("a stored weight row: {e}")))
}

/// Records an event of `kind` (the chain's log, read by `LocalChain::events`).
fn event(
    tx: &Tx<'_>,
    block: u64,
    netuid: Option<u16>,
    kind: EventKind,
    detail: &str,
) -> Result<()> {
    tx.execute(
        "INSERT INTO events (block, netuid, kind, detail) VALUES (?1, ?2, ?3, ?4)",
        params![block as i64, netuid, kind.name(), detail],
    )?;
    Ok(())
}

fn current_block(tx: &Tx<'_>) -> Result<u64> {
    let (genesis, block_time, manual): (i64, i64, i64) = tx.query_row(
        "SELECT genesis_unix_ms, block_time_ms, manual_block FROM chain",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    Ok(if block_time == 0 {
        manual as u64
    } else {
        now_ms().saturating_sub(genesis as u64) / block_time as u64
    })
}

fn subnet_params(tx: &Tx<'_>, netuid: u16) -> Result<SubnetParams> {
    let text: Option<String> = tx
        .query_row(
            "SELECT params FROM subnets WHERE netuid = ?1",
            [netuid],
            |r| r.get(0),
        )
        .optional()?;
    let text = text.ok_or(ChainError::SubnetNotExists { netuid })?;
    serde_json::from_str(&text).map_err(corrupt)
}

fn uid_of(tx: &Tx<'_>, netuid: u16, hotkey: &AccountId) -> Result<Option<u16>> {
    Ok(tx
        .query_row(
            "SELECT uid FROM neurons WHERE netuid = ?1 AND hotkey = ?2",
            params![netuid, blob(hotkey)],
            |r| r.get(0),
        )
        .optional()?)
}

/// Runs a chain call (a SQLite transaction that may wait on another process) off the async runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ChainError::Task(e.to_string()))?
}

impl Chain for LocalChain {
    async fn current_block(&self) -> Result<u64> {
        let chain = self.clone();
        blocking(move || chain.transact(|_, block| Ok(block))).await
    }

    async fn burned_register(
        &self,
        coldkey: &Keypair,
        netuid: u16,
        hotkey: AccountId,
    ) -> Result<u16> {
        let (chain, coldkey) = (self.clone(), AccountId::from(coldkey));
        blocking(move || LocalChain::burned_register(&chain, coldkey, netuid, hotkey)).await
    }

    async fn add_stake(
        &self,
        coldkey: &Keypair,
        hotkey: AccountId,
        netuid: u16,
        amount: u64,
    ) -> Result<()> {
        let (chain, coldkey) = (self.clone(), AccountId::from(coldkey));
        blocking(move || LocalChain::add_stake(&chain, coldkey, hotkey, netuid, amount).map(|_| ()))
            .await
    }

    async fn block_hash(&self, block: u64) -> Result<[u8; 32]> {
        let chain = self.clone();
        blocking(move || chain.block_hash_sync(block)).await
    }

    async fn metagraph(&self, netuid: u16) -> Result<Metagraph> {
        let chain = self.clone();
        blocking(move || chain.metagraph_sync(netuid)).await
    }

    async fn serve_axon(&self, hotkey: &Keypair, netuid: u16, addr: SocketAddr) -> Result<()> {
        let (chain, hotkey) = (self.clone(), AccountId::from(hotkey));
        blocking(move || chain.serve_axon_sync(hotkey, netuid, addr)).await
    }

    async fn set_weights(
        &self,
        hotkey: &Keypair,
        netuid: u16,
        uids: Vec<u16>,
        values: Vec<u16>,
        version_key: u64,
    ) -> Result<()> {
        let (chain, hotkey) = (self.clone(), AccountId::from(hotkey));
        blocking(move || chain.set_weights_sync(hotkey, netuid, &uids, &values, version_key)).await
    }

    async fn commit_weights(&self, hotkey: &Keypair, netuid: u16, hash: [u8; 32]) -> Result<()> {
        let (chain, hotkey) = (self.clone(), AccountId::from(hotkey));
        blocking(move || chain.commit_weights_sync(hotkey, netuid, hash)).await
    }

    async fn reveal_weights(
        &self,
        hotkey: &Keypair,
        netuid: u16,
        reveal: WeightsReveal,
    ) -> Result<()> {
        let (chain, hotkey) = (self.clone(), AccountId::from(hotkey));
        blocking(move || chain.reveal_weights_sync(hotkey, netuid, &reveal)).await
    }

    async fn timelock_target(&self, netuid: u16) -> Result<TimelockTarget> {
        let chain = self.clone();
        blocking(move || chain.timelock_target_sync(netuid)).await
    }

    async fn commit_timelocked_weights(
        &self,
        hotkey: &Keypair,
        netuid: u16,
        commit: Vec<u8>,
        reveal_round: u64,
        commit_reveal_version: u16,
    ) -> Result<()> {
        let (chain, hotkey) = (self.clone(), AccountId::from(hotkey));
        blocking(move || {
            chain.commit_timelocked_weights_sync(
                hotkey,
                netuid,
                &commit,
                reveal_round,
                commit_reveal_version,
            )
        })
        .await
    }

    async fn report_fraud(
        &self,
        reporter: &Keypair,
        netuid: u16,
        offender: AccountId,
        window: u64,
        evidence: [u8; 32],
    ) -> Result<FraudOutcome> {
        let (chain, reporter) = (self.clone(), AccountId::from(reporter));
        blocking(move || chain.report_fraud_sync(reporter, netuid, offender, window, evidence))
            .await
    }
}
