//! The embedded local chain: one SQLite file that several processes share. Every call runs in one
//! `BEGIN IMMEDIATE` transaction that first runs any epochs that fell due (lazily, exactly once: the
//! subnet's `last_epoch_block` moves inside the same transaction), then applies the call with
//! subtensor's checks. A `kill -9` loses nothing committed: SQLite's WAL makes each transaction
//! atomic and durable.

use crate::error::{ChainError, Result};
use crate::tlock::{self, Beacon, TimelockTarget};
use crate::types::{
    AccountId, FraudOutcome, Metagraph, Neuron, Slash, SubnetParams, TimelockReveal, WeightsReveal,
};
use blake2::{Blake2b, Digest, digest::consts::U32};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use scoring::yuma::{self, EpochInput, YumaState};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

const SCHEMA: &str = "
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
    last_epoch_block INTEGER NOT NULL
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

/// Subtensor's limit on a hotkey's unrevealed weight commits per subnet.
pub const MAX_UNREVEALED_COMMITS: usize = 10;

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
        conn.execute_batch(SCHEMA)?;
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
            return Err(ChainError::Unsupported(format!(
                "no local chain at {}: create one with `subnet chain init --dir {}`",
                path.display(),
                path.parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            )));
        }
        Self::open_or_create(path, BlockClock::Manual, 0)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in one immediate transaction at the current block, after any epochs that fell due.
    pub fn transact<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>, u64) -> Result<T>,
    ) -> Result<T> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| ChainError::Task("a previous call panicked".into()))?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let block = current_block(&tx)?;
        run_due_epochs(&tx, block)?;
        reveal_due_commits(&tx, block)?;
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

    /// Mints `amount` rao to `coldkey` (a balance stays within SQLite's signed 64-bit integers).
    pub fn fund(&self, coldkey: AccountId, amount: u64) -> Result<u64> {
        self.transact(|tx, block| {
            let held = balance(tx, &coldkey)?;
            let limit = i64::MAX as u64;
            if held.checked_add(amount).is_none_or(|total| total > limit) {
                return Err(ChainError::BalanceOverflow {
                    coldkey: coldkey.to_string(),
                    balance: held,
                    amount,
                    limit,
                });
            }
            tx.execute(
                "INSERT INTO balances (coldkey, free) VALUES (?1, ?2) ON CONFLICT(coldkey) DO UPDATE SET free = free + ?2",
                params![blob(&coldkey), amount as i64],
            )?;
            event(tx, block, None, "Funded", &format!("{coldkey} +{amount}"))?;
            balance(tx, &coldkey)
        })
    }

    pub fn balance(&self, coldkey: AccountId) -> Result<u64> {
        self.transact(|tx, _| balance(tx, &coldkey))
    }

    /// Creates a subnet owned by `owner`; returns its netuid (the lowest free one above 0).
    pub fn create_subnet(&self, owner: AccountId, params: SubnetParams) -> Result<u16> {
        self.transact(|tx, block| {
            let netuid: i64 = tx.query_row("SELECT COALESCE(MAX(netuid), 0) + 1 FROM subnets", [], |r| r.get(0))?;
            tx.execute(
                "INSERT INTO subnets (netuid, owner, params, yuma_state, last_epoch_block) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    netuid,
                    blob(&owner),
                    serde_json::to_string(&params).map_err(corrupt)?,
                    serde_json::to_string(&YumaState::default()).map_err(corrupt)?,
                    block as i64
                ],
            )?;
            event(tx, block, Some(netuid as u16), "NetworkAdded", &format!("owner {owner}"))?;
            Ok(netuid as u16)
        })
    }

    /// burned_register: the coldkey pays the burn; the hotkey gets the next uid, or replaces the
    /// lowest-emission uid outside its immunity period when the subnet is full.
    pub fn burned_register(
        &self,
        coldkey: AccountId,
        netuid: u16,
        hotkey: AccountId,
    ) -> Result<u16> {
        self.transact(|tx, block| {
            let params = subnet_params(tx, netuid)?;
            if let Some(uid) = uid_of(tx, netuid, &hotkey)? {
                return Err(ChainError::HotKeyAlreadyRegisteredInSubNet { hotkey: hotkey.to_string(), uid, netuid });
            }
            let owner: Option<Vec<u8>> = tx
                .query_row("SELECT coldkey FROM neurons WHERE hotkey = ?1 LIMIT 1", [blob(&hotkey)], |r| r.get(0))
                .optional()?;
            if owner.is_some_and(|o| o != coldkey.0) {
                return Err(ChainError::NonAssociatedColdKey { hotkey: hotkey.to_string() });
            }
            let free = balance(tx, &coldkey)?;
            if free < params.burn {
                return Err(ChainError::NotEnoughBalanceToStake { coldkey: coldkey.to_string(), balance: free, needed: params.burn });
            }
            let n: i64 = tx.query_row("SELECT COUNT(*) FROM neurons WHERE netuid = ?1", [netuid], |r| r.get(0))?;
            let uid = if (n as u64) < params.max_allowed_uids as u64 {
                n as u16
            } else {
                // Pruning (subtensor): lowest emission outside the immunity period; ties go to the
                // oldest registration, then the lowest uid.
                let victim: Option<(u16, Vec<u8>, i64)> = tx
                    .query_row(
                        "SELECT uid, coldkey, stake FROM neurons WHERE netuid = ?1 AND ?2 - registered_at >= ?3
                         ORDER BY emission ASC, registered_at ASC, uid ASC LIMIT 1",
                        params![netuid, block as i64, params.immunity_period as i64],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .optional()?;
                let Some((uid, old_coldkey, stake)) = victim else {
                    return Err(ChainError::NoNeuronIdAvailable { netuid });
                };
                // The pruned hotkey's stake goes back to its coldkey.
                tx.execute(
                    "INSERT INTO balances (coldkey, free) VALUES (?1, ?2) ON CONFLICT(coldkey) DO UPDATE SET free = free + ?2",
                    params![old_coldkey, stake],
                )?;
                tx.execute("DELETE FROM neurons WHERE netuid = ?1 AND uid = ?2", params![netuid, uid])?;
                event(tx, block, Some(netuid), "NeuronPruned", &format!("uid {uid}"))?;
                uid
            };
            tx.execute("UPDATE balances SET free = free - ?1 WHERE coldkey = ?2", params![params.burn as i64, blob(&coldkey)])?;
            tx.execute(
                "INSERT INTO neurons (netuid, uid, hotkey, coldkey, registered_at, last_update) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                params![netuid, uid, blob(&hotkey), blob(&coldkey), block as i64],
            )?;
            event(tx, block, Some(netuid), "NeuronRegistered", &format!("uid {uid} hotkey {hotkey} burned {}", params.burn))?;
            Ok(uid)
        })
    }

    /// add_stake: moves `amount` rao from the coldkey's balance onto its hotkey on `netuid`.
    pub fn add_stake(
        &self,
        coldkey: AccountId,
        hotkey: AccountId,
        netuid: u16,
        amount: u64,
    ) -> Result<u64> {
        self.transact(|tx, block| {
            let row: Option<(u16, Vec<u8>)> = tx
                .query_row(
                    "SELECT uid, coldkey FROM neurons WHERE netuid = ?1 AND hotkey = ?2",
                    params![netuid, blob(&hotkey)],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((uid, owner)) = row else {
                return Err(ChainError::HotKeyNotRegisteredInSubNet {
                    hotkey: hotkey.to_string(),
                    netuid,
                });
            };
            if owner != coldkey.0 {
                return Err(ChainError::NonAssociatedColdKey {
                    hotkey: hotkey.to_string(),
                });
            }
            let free = balance(tx, &coldkey)?;
            if free < amount {
                return Err(ChainError::NotEnoughBalanceToStake {
                    coldkey: coldkey.to_string(),
                    balance: free,
                    needed: amount,
                });
            }
            tx.execute(
                "UPDATE balances SET free = free - ?1 WHERE coldkey = ?2",
                params![amount as i64, blob(&coldkey)],
            )?;
            tx.execute(
                "UPDATE neurons SET stake = stake + ?1 WHERE netuid = ?2 AND uid = ?3",
                params![amount as i64, netuid, uid],
            )?;
            event(
                tx,
                block,
                Some(netuid),
                "StakeAdded",
                &format!("uid {uid} +{amount}"),
            )?;
            Ok(tx.query_row(
                "SELECT stake FROM neurons WHERE netuid = ?1 AND uid = ?2",
                params![netuid, uid],
                |r| r.get::<_, i64>(0),
            )? as u64)
        })
    }

    pub fn serve_axon_sync(&self, hotkey: AccountId, netuid: u16, addr: SocketAddr) -> Result<()> {
        self.transact(|tx, block| {
            subnet_params(tx, netuid)?;
            let changed = tx.execute(
                "UPDATE neurons SET axon = ?1 WHERE netuid = ?2 AND hotkey = ?3",
                params![addr.to_string(), netuid, blob(&hotkey)],
            )?;
            if changed == 0 {
                return Err(ChainError::HotKeyNotRegisteredInSubNet {
                    hotkey: hotkey.to_string(),
                    netuid,
                });
            }
            event(
                tx,
                block,
                Some(netuid),
                "AxonServed",
                &format!("{hotkey} {addr}"),
            )
        })
    }

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
    /// `commit epoch + reveal_period_epochs` (epochs are `block / tempo`).
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
            if uid_of(tx, netuid, &hotkey)?.is_none() {
                return Err(ChainError::HotKeyNotRegisteredInSubNet { hotkey: hotkey.to_string(), netuid });
            }
            let epoch = epoch_of(block, &params);
            // Commits whose reveal epoch has passed can never be revealed: drop them first.
            tx.execute(
                "DELETE FROM weight_commits WHERE netuid = ?1 AND hotkey = ?2 AND epoch + ?3 < ?4",
                params![netuid, blob(&hotkey), params.reveal_period_epochs as i64, epoch as i64],
            )?;
            let pending: i64 = tx.query_row(
                "SELECT COUNT(*) FROM weight_commits WHERE netuid = ?1 AND hotkey = ?2",
                params![netuid, blob(&hotkey)],
                |r| r.get(0),
            )?;
            if pending as usize >= MAX_UNREVEALED_COMMITS {
                return Err(ChainError::TooManyUnrevealedCommits { pending: pending as usize });
            }
            tx.execute(
                "INSERT INTO weight_commits (netuid, hotkey, hash, block, epoch) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![netuid, blob(&hotkey), &hash[..], block as i64, epoch as i64],
            )?;
            event(tx, block, Some(netuid), "WeightsCommitted", &format!("{} {}", hotkey.short(), hex::encode(hash)))
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
            let epoch = epoch_of(block, &params);
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

    /// What a timelocked commit made now must target: this chain's beacon key, the round of the
    /// first block of the reveal epoch (the beacon signs round r at block r), and the version.
    pub fn timelock_target_sync(&self, netuid: u16) -> Result<TimelockTarget> {
        self.transact(|tx, block| {
            let params = subnet_params(tx, netuid)?;
            if !params.commit_reveal_weights_enabled {
                return Err(ChainError::CommitRevealDisabled { netuid });
            }
            let reveal_epoch = epoch_of(block, &params) + params.reveal_period_epochs;
            Ok(TimelockTarget {
                beacon_public_key: beacon(tx)?.public_key(),
                reveal_round: (reveal_epoch * tempo_of(&params)).max(block + 1),
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
            if uid_of(tx, netuid, &hotkey)?.is_none() {
                return Err(ChainError::HotKeyNotRegisteredInSubNet { hotkey: hotkey.to_string(), netuid });
            }
            let pending: i64 = tx.query_row(
                "SELECT COUNT(*) FROM timelocked_commits WHERE netuid = ?1 AND hotkey = ?2",
                params![netuid, blob(&hotkey)],
                |r| r.get(0),
            )?;
            if pending as usize >= MAX_UNREVEALED_COMMITS {
                return Err(ChainError::TooManyUnrevealedCommits { pending: pending as usize });
            }
            tx.execute(
                "INSERT INTO timelocked_commits (netuid, hotkey, commit_bytes, reveal_round, block, epoch) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![netuid, blob(&hotkey), commit, reveal_round as i64, block as i64, epoch_of(block, &params) as i64],
            )?;
            event(tx, block, Some(netuid), "TimelockedWeightsCommitted", &format!("{} round {reveal_round}", hotkey.short()))
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

    /// A validator reports `offender` for fraud in `window`, naming the evidence by digest. A local
    /// chain extension: only one of the last `fraud_report_windows` closed windows (a window is
    /// `tempo` blocks) can be reported, each reporter once per (miner, window); once validators
    /// holding at least kappa of the subnet's permitted stake have reported the same miner for any of
    /// those windows, `slash_per_million` of its stake is burned, once for all of them.
    pub fn report_fraud_sync(
        &self,
        reporter: AccountId,
        netuid: u16,
        offender: AccountId,
        window: u64,
        evidence: [u8; 32],
    ) -> Result<FraudOutcome> {
        self.transact(|tx, block| {
            let params = subnet_params(tx, netuid)?;
            let Some(reporter_uid) = uid_of(tx, netuid, &reporter)? else {
                return Err(ChainError::HotKeyNotRegisteredInSubNet { hotkey: reporter.to_string(), netuid });
            };
            let permit: bool = tx.query_row(
                "SELECT validator_permit FROM neurons WHERE netuid = ?1 AND uid = ?2",
                params![netuid, reporter_uid],
                |r| r.get(0),
            )?;
            if !permit {
                return Err(ChainError::NeuronNoValidatorPermit { uid: reporter_uid, netuid });
            }
            let Some(offender_uid) = uid_of(tx, netuid, &offender)? else {
                return Err(ChainError::HotKeyNotRegisteredInSubNet { hotkey: offender.to_string(), netuid });
            };
            // Windows [first, last] have closed and are recent enough to report.
            let current = block / params.tempo.max(1);
            let first = current.saturating_sub(params.fraud_report_windows);
            if current == 0 || window < first || window >= current {
                return Err(ChainError::FraudReportOutOfRange { window, first, last: current.saturating_sub(1) });
            }
            let inserted = tx.execute(
                "INSERT OR IGNORE INTO fraud_reports (netuid, offender, window, reporter, evidence, block)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![netuid, blob(&offender), window as i64, blob(&reporter), &evidence[..], block as i64],
            )?;
            let slashed: bool = tx.query_row(
                "SELECT COUNT(*) > 0 FROM slashes WHERE netuid = ?1 AND offender = ?2 AND window >= ?3",
                params![netuid, blob(&offender), first as i64],
                |r| r.get(0),
            )?;
            if inserted == 0 || slashed {
                return Ok(FraudOutcome::AlreadyHandled);
            }
            event(tx, block, Some(netuid), "FraudReported", &format!(
                "uid {reporter_uid} reports uid {offender_uid} for window {window} (evidence {})",
                hex::encode(evidence)
            ))?;
            // Stake of the reporters (of any recent window) that hold a permit now, against all
            // permitted stake.
            let (reported, permitted): (i64, i64) = tx.query_row(
                "SELECT
                   COALESCE(SUM(CASE WHEN hotkey IN (SELECT reporter FROM fraud_reports
                       WHERE netuid = ?1 AND offender = ?2 AND window >= ?3) THEN stake ELSE 0 END), 0),
                   COALESCE(SUM(stake), 0)
                 FROM neurons WHERE netuid = ?1 AND validator_permit = 1",
                params![netuid, blob(&offender), first as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let share = if permitted > 0 { (reported as f64 / permitted as f64 * 65535.0).floor() as u16 } else { 0 };
            if share < params.kappa {
                return Ok(FraudOutcome::Recorded { reported_share: share });
            }
            let stake: i64 = tx.query_row(
                "SELECT stake FROM neurons WHERE netuid = ?1 AND uid = ?2",
                params![netuid, offender_uid],
                |r| r.get(0),
            )?;
            let amount = (stake as u128 * params.slash_per_million as u128 / 1_000_000) as u64;
            tx.execute(
                "UPDATE neurons SET stake = stake - ?1 WHERE netuid = ?2 AND uid = ?3",
                params![amount as i64, netuid, offender_uid],
            )?;
            let reporters: Vec<String> = {
                let mut stmt = tx.prepare(
                    "SELECT DISTINCT reporter FROM fraud_reports WHERE netuid = ?1 AND offender = ?2 AND window >= ?3 ORDER BY reporter",
                )?;
                let rows = stmt.query_map(params![netuid, blob(&offender), first as i64], |r| r.get::<_, Vec<u8>>(0))?;
                rows.map(|r| r.map(hex::encode)).collect::<rusqlite::Result<_>>()?
            };
            tx.execute(
                "INSERT INTO slashes (netuid, offender, window, block, amount, evidence, reporters)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![netuid, blob(&offender), window as i64, block as i64, amount as i64, &evidence[..],
                        serde_json::to_string(&reporters).map_err(corrupt)?],
            )?;
            event(tx, block, Some(netuid), "Slashed", &format!(
                "uid {offender_uid} loses {amount} rao for window {window} (evidence {})",
                hex::encode(evidence)
            ))?;
            Ok(FraudOutcome::Slashed { amount })
        })
    }

    /// Every slash on a subnet, oldest first.
    pub fn slashes(&self, netuid: u16) -> Result<Vec<Slash>> {
        self.transact(|tx, _| {
            let mut stmt = tx.prepare(
                "SELECT offender, window, block, amount, evidence, reporters FROM slashes
                 WHERE netuid = ?1 ORDER BY block, window",
            )?;
            let rows = stmt.query_map([netuid], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (offender, window, block, amount, evidence, reporters) = row?;
                let reporters: Vec<String> = serde_json::from_str(&reporters).map_err(corrupt)?;
                let reporters = reporters
                    .iter()
                    .map(|h| {
                        hex::decode(h)
                            .ok()
                            .and_then(|b| <[u8; 32]>::try_from(b).ok())
                            .map(AccountId)
                            .ok_or_else(|| corrupt("bad reporter"))
                    })
                    .collect::<Result<Vec<_>>>()?;
                out.push(Slash {
                    netuid,
                    hotkey: account(offender).map_err(corrupt)?,
                    window: window as u64,
                    block: block as u64,
                    amount: amount as u64,
                    evidence: hex::encode(evidence),
                    reporters,
                });
            }
            Ok(out)
        })
    }

    pub fn metagraph_sync(&self, netuid: u16) -> Result<Metagraph> {
        self.transact(|tx, block| {
            let params = subnet_params(tx, netuid)?;
            let mut stmt = tx.prepare(
                "SELECT uid, hotkey, coldkey, stake, axon, validator_permit, active, last_update, registered_at,
                        consensus, incentive, dividends, validator_trust, emission, total_emission, weights
                 FROM neurons WHERE netuid = ?1 ORDER BY uid",
            )?;
            let neurons = stmt
                .query_map([netuid], |r| {
                    let axon: Option<String> = r.get(4)?;
                    let weights: String = r.get(15)?;
                    Ok(Neuron {
                        uid: r.get(0)?,
                        hotkey: account(r.get(1)?)?,
                        coldkey: account(r.get(2)?)?,
                        stake: r.get::<_, i64>(3)? as u64,
                        axon: axon.and_then(|a| a.parse().ok()),
                        validator_permit: r.get(5)?,
                        active: r.get(6)?,
                        last_update: r.get::<_, i64>(7)? as u64,
                        registered_at: r.get::<_, i64>(8)? as u64,
                        consensus: r.get(9)?,
                        incentive: r.get(10)?,
                        dividends: r.get(11)?,
                        validator_trust: r.get(12)?,
                        emission: r.get::<_, i64>(13)? as u64,
                        total_emission: r.get::<_, i64>(14)? as u64,
                        weights: serde_json::from_str(&weights).unwrap_or_default(),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Metagraph { netuid, block, params, neurons })
        })
    }

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

fn event(
    tx: &rusqlite::Transaction<'_>,
    block: u64,
    netuid: Option<u16>,
    kind: &str,
    detail: &str,
) -> Result<()> {
    tx.execute(
        "INSERT INTO events (block, netuid, kind, detail) VALUES (?1, ?2, ?3, ?4)",
        params![block as i64, netuid, kind, detail],
    )?;
    Ok(())
}

fn current_block(tx: &rusqlite::Transaction<'_>) -> Result<u64> {
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

fn balance(tx: &rusqlite::Transaction<'_>, coldkey: &AccountId) -> Result<u64> {
    let free: Option<i64> = tx
        .query_row(
            "SELECT free FROM balances WHERE coldkey = ?1",
            [blob(coldkey)],
            |r| r.get(0),
        )
        .optional()?;
    Ok(free.unwrap_or(0) as u64)
}

fn subnet_params(tx: &rusqlite::Transaction<'_>, netuid: u16) -> Result<SubnetParams> {
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

fn uid_of(tx: &rusqlite::Transaction<'_>, netuid: u16, hotkey: &AccountId) -> Result<Option<u16>> {
    Ok(tx
        .query_row(
            "SELECT uid FROM neurons WHERE netuid = ?1 AND hotkey = ?2",
            params![netuid, blob(hotkey)],
            |r| r.get(0),
        )
        .optional()?)
}

fn beacon(tx: &rusqlite::Transaction<'_>) -> Result<Beacon> {
    let secret: Vec<u8> = tx.query_row("SELECT secret FROM beacon", [], |r| r.get(0))?;
    Beacon::from_bytes(&secret).map_err(ChainError::Corrupt)
}

/// The beacon's signature for `round`, signed once and kept.
fn pulse(tx: &rusqlite::Transaction<'_>, round: u64) -> Result<[u8; 48]> {
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

/// Opens the timelocked commits due at `block`, as subtensor's reveal does each block of a reveal
/// epoch: commits of epoch `current - reveal_period_epochs` whose round the beacon has reached are
/// decrypted, checked to name their committer and applied as its weights; a commit that fails is
/// dropped with its reason; one whose round is still ahead waits (within the epoch); commits of
/// earlier epochs can no longer be revealed and are dropped.
fn reveal_commits_at(
    tx: &rusqlite::Transaction<'_>,
    netuid: u16,
    params: &SubnetParams,
    block: u64,
) -> Result<()> {
    let due_epoch = epoch_of(block, params).checked_sub(params.reveal_period_epochs);
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
            let opened = tlock::open_weights(&commit, &pulse(tx, round)?, &hotkey);
            match opened {
                Ok((uids, values, version_key)) => {
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
                        Ok(()) => None,
                        Err(ChainError::Database(e)) => return Err(ChainError::Database(e)),
                        Err(e) => Some(e.to_string()),
                    }
                }
                Err(reason) => Some(reason),
            }
        };
        tx.execute("DELETE FROM timelocked_commits WHERE id = ?1", [id])?;
        tx.execute(
            "INSERT INTO timelocked_reveals (netuid, block, hotkey, commit_block, reveal_round, failure) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![netuid, block as i64, blob(&hotkey), commit_block as i64, round as i64, failure],
        )?;
        let (kind, detail) = match &failure {
            None => ("TimelockedWeightsRevealed", hotkey.short()),
            Some(reason) => (
                "TimelockedRevealFailed",
                format!("{}: {reason}", hotkey.short()),
            ),
        };
        event(tx, block, Some(netuid), kind, &detail)?;
    }
    Ok(())
}

/// Opens the timelocked commits due at `block` on every subnet.
fn reveal_due_commits(tx: &rusqlite::Transaction<'_>, block: u64) -> Result<()> {
    let pending: Vec<u16> = {
        let mut stmt = tx.prepare("SELECT DISTINCT netuid FROM timelocked_commits")?;
        stmt.query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?
    };
    for netuid in pending {
        reveal_commits_at(tx, netuid, &subnet_params(tx, netuid)?, block)?;
    }
    Ok(())
}

/// The commit-reveal epoch of `block`.
fn tempo_of(params: &SubnetParams) -> u64 {
    params.tempo.max(1)
}

fn epoch_of(block: u64, params: &SubnetParams) -> u64 {
    block / params.tempo.max(1)
}

/// set_weights' checks after the commit-reveal one, in subtensor's order, then the stored row.
#[allow(clippy::too_many_arguments)]
fn apply_weights(
    tx: &rusqlite::Transaction<'_>,
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
    let self_weight_only = uids.len() == 1 && uids[0] == uid;
    if !permit && !self_weight_only {
        return Err(ChainError::NeuronNoValidatorPermit { uid, netuid });
    }
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
        "WeightsSet",
        &format!("uid {uid} {} weights", row.len()),
    )
}

/// Runs every epoch whose block (a multiple of the subnet's tempo) is past the subnet's last epoch and
/// not after `block`.
fn run_due_epochs(tx: &rusqlite::Transaction<'_>, block: u64) -> Result<()> {
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

fn run_epoch(
    tx: &rusqlite::Transaction<'_>,
    netuid: u16,
    params: &SubnetParams,
    block: u64,
    blocks: u64,
) -> Result<()> {
    struct Row {
        uid: u16,
        hotkey: Vec<u8>,
        stake: u64,
        weights: Vec<(u16, u16)>,
        last_update: u64,
        registered_at: u64,
    }
    let rows: Vec<Row> = {
        let mut stmt =
            tx.prepare("SELECT uid, stake, weights, last_update, registered_at, hotkey FROM neurons WHERE netuid = ?1 ORDER BY uid")?;
        stmt.query_map([netuid], |r| {
            let weights: String = r.get(2)?;
            Ok(Row {
                uid: r.get(0)?,
                hotkey: r.get(5)?,
                stake: r.get::<_, i64>(1)? as u64,
                weights: serde_json::from_str(&weights).unwrap_or_default(),
                last_update: r.get::<_, i64>(3)? as u64,
                registered_at: r.get::<_, i64>(4)? as u64,
            })
        })?
        .collect::<rusqlite::Result<_>>()?
    };
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
    // Under commit-reveal, weights committed before their target registered do not count for it.
    let earliest_commit = if params.commit_reveal_weights_enabled {
        let current = epoch_of(block, params);
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
        Some(earliest)
    } else {
        None
    };
    let out = yuma::epoch(
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
    // A miner slashed within the recent fraud span earns nothing meanwhile: its emission is burned.
    let slashed: Vec<Vec<u8>> = {
        let since = (block / tempo_of(params)).saturating_sub(params.fraud_report_windows);
        let mut stmt =
            tx.prepare("SELECT DISTINCT offender FROM slashes WHERE netuid = ?1 AND window >= ?2")?;
        stmt.query_map(params![netuid, since as i64], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?
    };
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
    let owner: Vec<u8> = tx.query_row(
        "SELECT owner FROM subnets WHERE netuid = ?1",
        [netuid],
        |r| r.get(0),
    )?;
    tx.execute(
        "INSERT INTO balances (coldkey, free) VALUES (?1, ?2) ON CONFLICT(coldkey) DO UPDATE SET free = free + ?2",
        params![owner, owner_cut as i64],
    )?;
    state.advance(block, &out);
    tx.execute(
        "UPDATE subnets SET yuma_state = ?1, last_epoch_block = ?2 WHERE netuid = ?3",
        params![
            serde_json::to_string(&state).map_err(corrupt)?,
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
        "EpochRun",
        &format!("{} uids, {} rao", rows.len(), total),
    )
}
