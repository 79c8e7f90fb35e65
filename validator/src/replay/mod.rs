//! Offline replay of a validator's data directory: every recorded loss is recomputed on the CPU from
//! the recorded checkpoints and gradients and must match bit for bit, the validator's own reference
//! training and every audit are run again, and every decision is re-derived and must give the
//! recorded weights and the recorded next checkpoint. Optionally the same window is re-decided under
//! other scoring parameters ("what if"; when they change which gradients are candidates, what each
//! adds to the others is evaluated again).

mod window;

use window::replay_window;

use crate::evaluate;
use crate::record::WindowRecord;
use crate::store::{DataDir, StoreError};
use scoring::checks::pairwise_similarity;
use scoring::{Averages, MinerDecision, ScoringParams, WindowEvidence, averages_after, decide};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use task::{Checkpoint, TaskEngine, TaskSpec};

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
}

/// One replayed window.
#[derive(Clone, Debug, Serialize)]
pub struct ReplayedWindow {
    pub window: u64,
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
    pub windows: Vec<ReplayedWindow>,
    pub losses_checked: usize,
    /// Bytes of a torn record at the end of the log (a crash or an append in progress), skipped.
    pub torn_bytes: u64,
    pub what_if: Option<ScoringParams>,
}

fn mismatch(window: u64, what: impl Into<String>, recorded: f32, replayed: f32) -> ReplayError {
    ReplayError::Mismatch {
        window,
        what: what.into(),
        recorded: format!("{recorded:e} (bits {:08x})", recorded.to_bits()),
        replayed: format!("{replayed:e} (bits {:08x})", replayed.to_bits()),
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
            return Err(mismatch(window, format!("{what}, batch {i}"), *r, *p));
        }
    }
    Ok(recorded.len())
}

/// Replays every window recorded in `dir`; `on_window` sees each as it is confirmed.
pub fn replay(
    dir: &Path,
    what_if: Option<ScoringParams>,
    mut on_window: impl FnMut(&ReplayedWindow),
) -> Result<ReplayReport, ReplayError> {
    let (store, task_toml) = DataDir::open_existing(dir)?;
    let spec = TaskSpec::from_toml_str(&task_toml).map_err(|e| ReplayError::Task(e.to_string()))?;
    let engine = TaskEngine::new(spec);
    let (records, torn_bytes) = store.records()?;
    let mut windows = Vec::with_capacity(records.len());
    let mut what_if_averages: Option<Averages> = None;
    let mut losses_checked = 0;
    for record in &records {
        let (mut replayed, inputs) = replay_window(&store, &engine, record)?;
        losses_checked += replayed.losses_checked;
        if let Some(params) = &what_if {
            let before = what_if_averages.get_or_insert_with(|| record.averages_before.clone());
            let evidence = evidence_under(&engine, record, &inputs, params);
            let decisions = decide(&evidence, params, before);
            *before = averages_after(&decisions);
            replayed.what_if = Some(decisions);
        }
        on_window(&replayed);
        windows.push(replayed);
    }
    Ok(ReplayReport {
        task: engine.spec().task.name.clone(),
        windows,
        losses_checked,
        torn_bytes,
        what_if,
    })
}

/// What a replayed window's evaluations need again for a what-if.
struct WindowInputs {
    checkpoint: Checkpoint,
    batches: Vec<task::Batch>,
    gradients: BTreeMap<u16, Vec<f32>>,
}

/// The window's evidence as it would have been under `params`: when they change which gradients
/// are candidates, the similarities and leave-one-out losses are recomputed for the new set.
fn evidence_under(
    engine: &TaskEngine,
    record: &WindowRecord,
    inputs: &WindowInputs,
    params: &ScoringParams,
) -> WindowEvidence {
    let mut evidence = record.evidence.clone();
    let candidates = scoring::candidates(&evidence, params);
    if candidates == scoring::candidates(&evidence, &record.scoring) {
        return evidence;
    }
    let values: Vec<&[f32]> = candidates
        .iter()
        .map(|u| inputs.gradients[u].as_slice())
        .collect();
    let caps: Vec<f64> = candidates
        .iter()
        .map(|u| {
            evidence
                .miners
                .iter()
                .find(|m| m.uid == *u)
                .map_or(0.0, |m| evidence.clip_of(m))
        })
        .collect();
    let (aggregate, without) = evaluate::leave_one_out(
        engine,
        &inputs.checkpoint.params,
        &values,
        &caps,
        &inputs.batches,
    );
    evidence.similarities =
        pairwise_similarity(&candidates.iter().copied().zip(values).collect::<Vec<_>>());
    evidence.aggregate = aggregate;
    for m in &mut evidence.miners {
        m.without = Vec::new();
    }
    for (uid, losses) in candidates.iter().zip(without) {
        if let Some(m) = evidence.miners.iter_mut().find(|m| m.uid == *uid) {
            m.without = losses;
        }
    }
    evidence
}
