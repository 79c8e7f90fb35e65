//! Offline replay of a validator's data directory: each recorded window's steps (`crate::window`,
//! the very ones the validator ran) run again on the recorded inputs, on the CPU; every loss must
//! match bit for bit, and the audits, decisions, weights and next checkpoint must be the recorded
//! ones. Optionally the same window runs again under other scoring parameters ("what if"): any
//! rule of `ScoringParams` may change, the audit tolerance and the evaluation step included.

mod confirm;
mod window;

use window::replay_window;

use crate::record::WindowRecord;
use crate::store::{DataDir, StoreError};
use scoring::{Averages, MinerDecision, ScoringParams, averages_after};
use serde::Serialize;
use std::path::Path;
use task::{Device, TaskEngine, TaskSpec};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the data directory's task.toml is not a valid task: {0}")]
    Task(String),
    #[error("window {window}: {what}")]
    Invalid { window: u64, what: String },
    #[error("window {window}: {what}: recorded {recorded}, replayed {replayed}")]
    Mismatch {
        window: u64,
        what: String,
        recorded: String,
        replayed: String,
    },
    #[error(
        "{source} (the record was measured on {recorded}, this replay on {here}: bits can differ between backends and between CPUs, so replay on the record's backend: its --device, on a host whose CPU backend is the record's)"
    )]
    AcrossHosts {
        source: Box<ReplayError>,
        recorded: String,
        here: String,
    },
}

/// One replayed window.
#[derive(Clone, Debug, Serialize)]
pub struct ReplayedWindow {
    pub window: u64,
    /// The backend the validator measured it on (`validator run --device`; a CPU names its
    /// arithmetic, see `task::device::cpu_backend`).
    pub evaluator: String,
    /// Mean held-out loss of the window's checkpoint.
    pub base_loss: f64,
    /// Losses recomputed and found bit-identical to the record.
    pub losses_checked: usize,
    /// The decisions under the recorded scoring parameters (they reproduce the recorded weights).
    pub decisions: Vec<MinerDecision>,
    /// The weights the validator set (uids, u16 values), or why none were set.
    pub weights: Result<(Vec<u16>, Vec<u16>), String>,
    /// The decisions under the what-if parameters, when given.
    pub what_if: Option<Vec<MinerDecision>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ReplayReport {
    pub task: String,
    /// The backend this replay measured on.
    pub backend: String,
    pub windows: Vec<ReplayedWindow>,
    pub losses_checked: usize,
    /// Bytes of a torn record at the end of the log (a crash or an append in progress), skipped.
    pub torn_bytes: u64,
    pub what_if: Option<ScoringParams>,
}

fn loss_mismatch(
    window: u64,
    what: impl Into<String>,
    recorded: f32,
    replayed: f32,
) -> ReplayError {
    ReplayError::Mismatch {
        window,
        what: what.into(),
        recorded: format!("{recorded:e} (bits {:08x})", recorded.to_bits()),
        replayed: format!("{replayed:e} (bits {:08x})", replayed.to_bits()),
    }
}

/// A recorded figure the replay computed otherwise.
fn mismatch(record: &WindowRecord, what: &str, recorded: String, replayed: String) -> ReplayError {
    ReplayError::Mismatch {
        window: record.window,
        what: what.into(),
        recorded,
        replayed,
    }
}

/// A mismatch on a backend that is not the record's (another device, or a CPU with other
/// arithmetic) says so.
fn across_hosts(error: ReplayError, record: &WindowRecord, here: &str) -> ReplayError {
    match error {
        ReplayError::Mismatch { .. } if record.evaluator != here => ReplayError::AcrossHosts {
            source: Box::new(error),
            recorded: record.evaluator.clone(),
            here: here.into(),
        },
        other => other,
    }
}

/// A record that does not hold together.
fn invalid(record: &WindowRecord, what: String) -> ReplayError {
    ReplayError::Invalid {
        window: record.window,
        what,
    }
}

/// Compares two loss vectors bit for bit.
fn confirm(
    window: u64,
    what: &str,
    recorded: &[f32],
    replayed: &[f32],
) -> Result<usize, ReplayError> {
    if recorded.len() != replayed.len() {
        return Err(ReplayError::Invalid {
            window,
            what: format!(
                "{what}: {} losses recorded, {} batches replayed",
                recorded.len(),
                replayed.len()
            ),
        });
    }
    for (i, (r, p)) in recorded.iter().zip(replayed).enumerate() {
        if r.to_bits() != p.to_bits() {
            return Err(loss_mismatch(window, format!("{what}, batch {i}"), *r, *p));
        }
    }
    Ok(recorded.len())
}

/// Replays every window recorded in `dir` on the CPU; `on_window` sees each as it is confirmed.
pub fn replay(
    dir: &Path,
    what_if: Option<ScoringParams>,
    on_window: impl FnMut(&ReplayedWindow),
) -> Result<ReplayReport, ReplayError> {
    replay_on(dir, Device::Cpu, what_if, on_window)
}

/// `replay`, measuring on `device` (a record is confirmed bit for bit only on the backend it was
/// measured on).
pub fn replay_on(
    dir: &Path,
    device: Device,
    what_if: Option<ScoringParams>,
    mut on_window: impl FnMut(&ReplayedWindow),
) -> Result<ReplayReport, ReplayError> {
    let (store, task_toml) = DataDir::open_existing(dir)?;
    let spec = TaskSpec::from_toml_str(&task_toml).map_err(|e| ReplayError::Task(e.to_string()))?;
    let engine = TaskEngine::new(spec).on(device);
    let here = device.backend();
    let (records, torn_bytes) = store.records()?;
    let mut windows = Vec::with_capacity(records.len());
    let mut what_if_averages: Option<Averages> = None;
    let mut losses_checked = 0;
    for record in &records {
        let (mut replayed, replayable) =
            replay_window(&store, &engine, record).map_err(|e| across_hosts(e, record, &here))?;
        losses_checked += replayed.losses_checked;
        if let Some(params) = &what_if {
            let before = what_if_averages.get_or_insert_with(|| record.averages_before.clone());
            let decisions = replayable.decide_under(&engine, &store, record, (params, before))?;
            *before = averages_after(&decisions);
            replayed.what_if = Some(decisions);
        }
        on_window(&replayed);
        windows.push(replayed);
    }
    Ok(ReplayReport {
        task: engine.spec().task.name.clone(),
        backend: here,
        windows,
        losses_checked,
        torn_bytes,
        what_if,
    })
}
