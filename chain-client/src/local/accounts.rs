//! Balances, subnets, registration (with subtensor's pruning), stake, axons and the metagraph.

use super::epoch::LocalPipeline;
use super::{
    EventKind, LocalChain, Tx, account, blob, corrupt, event, subnet_params, uid_of, weight_row,
};
use crate::error::{ChainError, Result};
use crate::types::{AccountId, Metagraph, Neuron, SubnetParams};
use rusqlite::{OptionalExtension, params};
use scoring::yuma::YumaState;
use std::net::SocketAddr;

impl LocalChain {
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
            credit(tx, blob(&coldkey), amount)?;
            event(
                tx,
                block,
                None,
                EventKind::Funded,
                &format!("{coldkey} +{amount}"),
            )?;
            balance(tx, &coldkey)
        })
    }

    pub fn balance(&self, coldkey: AccountId) -> Result<u64> {
        self.transact(|tx, _| balance(tx, &coldkey))
    }

    /// Creates a subnet owned by `owner`; returns its netuid (the lowest free one above 0).
    /// Its first epoch runs at the first multiple of the tempo after `block`, and the epochs after
    /// it every tempo blocks until the owner changes the schedule (`set_tempo`, `trigger_epoch`).
    pub fn create_subnet(&self, owner: AccountId, params: SubnetParams) -> Result<u16> {
        self.transact(|tx, block| {
            let netuid: i64 = tx.query_row("SELECT COALESCE(MAX(netuid), 0) + 1 FROM subnets", [], |r| r.get(0))?;
            let pipeline = LocalPipeline::created_at(block, params.tempo);
            tx.execute(
                "INSERT INTO subnets (netuid, owner, params, yuma_state, last_epoch_block, epoch_index, pending_epoch_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    netuid,
                    blob(&owner),
                    serde_json::to_string(&params).map_err(corrupt)?,
                    serde_json::to_string(&YumaState::default()).map_err(corrupt)?,
                    pipeline.last_epoch_block as i64,
                    pipeline.epoch_index as i64,
                    pipeline.pending_epoch_at as i64
                ],
            )?;
            event(tx, block, Some(netuid as u16), EventKind::NetworkAdded, &format!("owner {owner}"))?;
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
                credit(tx, &old_coldkey, stake as u64)?;
                tx.execute("DELETE FROM neurons WHERE netuid = ?1 AND uid = ?2", params![netuid, uid])?;
                event(tx, block, Some(netuid), EventKind::NeuronPruned, &format!("uid {uid}"))?;
                uid
            };
            tx.execute("UPDATE balances SET free = free - ?1 WHERE coldkey = ?2", params![params.burn as i64, blob(&coldkey)])?;
            tx.execute(
                "INSERT INTO neurons (netuid, uid, hotkey, coldkey, registered_at, last_update) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                params![netuid, uid, blob(&hotkey), blob(&coldkey), block as i64],
            )?;
            event(tx, block, Some(netuid), EventKind::NeuronRegistered, &format!("uid {uid} hotkey {hotkey} burned {}", params.burn))?;
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
                EventKind::StakeAdded,
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
                EventKind::AxonServed,
                &format!("{hotkey} {addr}"),
            )
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
                    let neuron = Neuron {
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
                        weights: Vec::new(),
                    };
                    Ok((neuron, weights))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?
                .into_iter()
                .map(|(neuron, weights)| {
                    Ok(Neuron {
                        weights: weight_row(&weights)?,
                        ..neuron
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Metagraph { netuid, block, params, neurons })
        })
    }
}

/// A coldkey's free balance (0 when it never held any).
pub(super) fn balance(tx: &Tx<'_>, coldkey: &AccountId) -> Result<u64> {
    let free: Option<i64> = tx
        .query_row(
            "SELECT free FROM balances WHERE coldkey = ?1",
            [blob(coldkey)],
            |r| r.get(0),
        )
        .optional()?;
    Ok(free.unwrap_or(0) as u64)
}

/// Adds `amount` rao to the free balance of the coldkey whose bytes are `coldkey`.
pub(super) fn credit(tx: &Tx<'_>, coldkey: &[u8], amount: u64) -> Result<()> {
    tx.execute(
        "INSERT INTO balances (coldkey, free) VALUES (?1, ?2) ON CONFLICT(coldkey) DO UPDATE SET free = free + ?2",
        params![coldkey, amount as i64],
    )?;
    Ok(())
}
