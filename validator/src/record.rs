//! What a validator records of each window in its replay log: enough to re-run every evaluation on
//! the CPU and confirm each loss bit for bit, and to re-decide the window under other scoring
//! parameters.

use scoring::{Averages, Bans, ScoringParams, WindowEvidence};
use serde::{Deserialize, Serialize};
use task::Digest;

/// One window, as the validator saw and decided it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowRecord {
    pub window: u64,
    /// The chain's seed for the window (it fixes every miner's assignment).
    pub window_seed: u64,
    /// The validator's own seed for its eval batches, its reference training and its
    /// assignment-check batches.
    pub eval_seed: u64,
    /// The uids whose page ranges the window's assignment covered (the eval batches and the
    /// reference training draw from pages past them).
    pub assigned_uids: u64,
    /// The validator's own training of the window (a blob, codec dense form).
    pub reference: Digest,
    /// The error-feedback residual its reference payload was compressed with (a blob), None for
    /// zero.
    pub reference_residual: Option<Digest>,
    /// Hex digests of the task and of the checkpoints before and after the window (blobs).
    pub task_digest: Digest,
    pub checkpoint_before: Digest,
    pub checkpoint_after: Digest,
    /// Digests of the outer Nesterov momentum buffer before and after the window (blobs); None for
    /// a zero buffer or plain SGD.
    #[serde(default)]
    pub momentum_before: Option<Digest>,
    #[serde(default)]
    pub momentum_after: Option<Digest>,
    pub scoring: ScoringParams,
    /// The backend the validator measured the window on (`task::Device::backend` of its
    /// --device; a CPU names its arithmetic); records from before it was kept were made when
    /// every CPU was named `cpu`.
    #[serde(default = "old_evaluator")]
    pub evaluator: String,
    pub evidence: WindowEvidence,
    /// How each evaluated gradient can be found again.
    pub gradients: Vec<GradientRecord>,
    /// Moving averages and bans before the window.
    pub averages_before: Averages,
    pub bans_before: Bans,
    /// The miners whose training was re-executed this window (of this window, or of an earlier one
    /// whose audit had not resolved).
    pub audits: Vec<AuditRecord>,
    /// The audits of earlier windows unresolved when the window began.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub unresolved_before: crate::window::Unresolved,
    /// Commitments of earlier windows the validator had not collected, which residuals gathered
    /// this window came from (the miners served them; each window is audited in this one).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub unseen_sources: crate::window::Unresolved,
    /// The uids aggregated into the next checkpoint, in uid order.
    pub aggregated: Vec<u16>,
    pub weights: WeightsRecord,
}

fn old_evaluator() -> String {
    "cpu".into()
}

/// An evaluated gradient: its payload is the blob `payload_digest`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GradientRecord {
    pub uid: u16,
    pub payload_digest: Digest,
    /// The commitment's signature, so anyone can check the miner signed this payload.
    pub commitment_signature: String,
    /// The outgoing residual the commitment names (an audit checks the payload leaves exactly it).
    pub residual_out_digest: Digest,
    /// The group capacity the commitment declares (with the window seed it fixes the miner's
    /// parameter group, which the payload encodes).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub group_capacity: u64,
    /// The backend the commitment says trained the gradient (`cpu`: its audits compare bits;
    /// empty in records from before segments).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub backend: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// An audit: the miner's dense pseudo-gradient and incoming residual (blobs), checked against its
/// payload and against the validator's re-execution of its window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub uid: u16,
    /// The window audited, when it is an earlier one than the record's (an unresolved audit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<u64>,
    /// The artefacts as served (None when the miner did not serve them).
    pub dense_digest: Option<Digest>,
    pub residual_digest: Option<Digest>,
    /// Relative L2 difference between the dense gradient and the re-execution, when both exist.
    pub relative_difference: Option<f64>,
    /// Why the audit failed, if it did.
    pub failure: Option<scoring::Reason>,
    /// The segments re-executed, with the states served (blobs); empty in records from before
    /// segments, whose audits re-executed whole windows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<SegmentAudit>,
}

/// One segment an audit re-executed: the states the miner served for its start (none for a
/// window's first segment, which starts from the checkpoint) and end, and how far the
/// re-execution ended from the served end (relative to the segment's movement).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SegmentAudit {
    pub segment: usize,
    pub start: Option<Digest>,
    pub end: Digest,
    pub relative_difference: Option<f64>,
}

/// The weights a validator set on chain (uids and u16 values, as the SDK converts them), or why none
/// were set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WeightsRecord {
    pub uids: Vec<u16>,
    pub values: Vec<u16>,
    pub error: Option<String>,
    /// Committed under commit-reveal (revealed an epoch later) rather than set.
    #[serde(default)]
    pub committed: bool,
}

/// Parses a record's JSON body. A record written before some of the window's rules joined
/// `ScoringParams` (`ScoringParams::LATER_RULES`) takes each missing one from `task_scoring`, the
/// `[scoring]` section of its directory's task file, which set it when the record was written.
pub fn parse_record(
    body: &[u8],
    task_scoring: Option<&toml::Table>,
) -> Result<WindowRecord, String> {
    let mut value: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if let (Some(scoring), Some(task)) = (
        value.get_mut("scoring").and_then(|s| s.as_object_mut()),
        task_scoring,
    ) {
        for rule in ScoringParams::LATER_RULES {
            if let (false, Some(v)) = (scoring.contains_key(rule), task.get(rule)) {
                let v = serde_json::to_value(v).map_err(|e| format!("scoring.{rule}: {e}"))?;
                scoring.insert(rule.to_string(), v);
            }
        }
    }
    serde_json::from_value(value).map_err(|e| e.to_string())
}
