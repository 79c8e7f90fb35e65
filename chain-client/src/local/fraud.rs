//! Fraud reports and slashing, a local chain extension (subtensor has no stake slashing).

use super::{EventKind, LocalChain, Tx, account, blob, corrupt, event, subnet_params, uid_of};
use crate::error::{ChainError, Result};
use crate::types::{AccountId, FraudOutcome, Slash, SubnetParams};
use rusqlite::params;

impl LocalChain {
    /// A validator reports `offender` for fraud in `window`, naming the evidence by digest. A local
    /// chain extension: only one of the last `fraud_report_windows` closed windows (a window is
    /// `window_blocks` blocks) can be reported, each reporter once per (miner, window); once validators
    /// holding at least `slash_quorum` of the subnet's permitted stake have reported the same miner for any of
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
            let current = params.window_of(block);
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
            event(tx, block, Some(netuid), EventKind::FraudReported, &format!(
                "uid {reporter_uid} reports uid {offender_uid} for window {window} (evidence {})",
                hex::encode(evidence)
            ))?;
            let share = reported_share(tx, netuid, &offender, first)?;
            if share < params.slash_quorum {
                return Ok(FraudOutcome::Recorded { reported_share: share });
            }
            let amount = slash(tx, block, netuid, &params, (&offender, offender_uid), window, evidence, first)?;
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
}

/// The share (of u16::MAX) of the subnet's permitted stake held by validators that hold a permit now
/// and reported `offender` for a window from `first` on.
fn reported_share(tx: &Tx<'_>, netuid: u16, offender: &AccountId, first: u64) -> Result<u16> {
    // Stake of the reporters (of any recent window) that hold a permit now, against all
    // permitted stake.
    let (reported, permitted): (i64, i64) = tx.query_row(
        "SELECT
           COALESCE(SUM(CASE WHEN hotkey IN (SELECT reporter FROM fraud_reports
               WHERE netuid = ?1 AND offender = ?2 AND window >= ?3) THEN stake ELSE 0 END), 0),
           COALESCE(SUM(stake), 0)
         FROM neurons WHERE netuid = ?1 AND validator_permit = 1",
        params![netuid, blob(offender), first as i64],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(if permitted > 0 {
        (reported as f64 / permitted as f64 * 65535.0).floor() as u16
    } else {
        0
    })
}

/// Burns `slash_per_million` of the offender's stake, once for its recent windows, and records the
/// slash with its reporters. Returns the rao burned.
#[allow(clippy::too_many_arguments)]
fn slash(
    tx: &Tx<'_>,
    block: u64,
    netuid: u16,
    params: &SubnetParams,
    (offender, offender_uid): (&AccountId, u16),
    window: u64,
    evidence: [u8; 32],
    first: u64,
) -> Result<u64> {
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
        let rows = stmt.query_map(params![netuid, blob(offender), first as i64], |r| {
            r.get::<_, Vec<u8>>(0)
        })?;
        rows.map(|r| r.map(hex::encode))
            .collect::<rusqlite::Result<_>>()?
    };
    tx.execute(
        "INSERT INTO slashes (netuid, offender, window, block, amount, evidence, reporters)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            netuid,
            blob(offender),
            window as i64,
            block as i64,
            amount as i64,
            &evidence[..],
            serde_json::to_string(&reporters).map_err(corrupt)?
        ],
    )?;
    event(
        tx,
        block,
        Some(netuid),
        EventKind::Slashed,
        &format!(
            "uid {offender_uid} loses {amount} rao for window {window} (evidence {})",
            hex::encode(evidence)
        ),
    )?;
    Ok(amount)
}
