//! What a validator records of each window in its replay log: enough to re-run every evaluation on
//! the CPU and confirm each loss bit for bit, and to re-decide the window under other scoring
//! parameters.

use scoring::{Averages, ScoringParams, WindowEvidence};
use serde::{Deserialize, Serialize};

/// One window, as the validator saw and decided it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowRecord {
    pub window: u64,
    /// The chain's seed for the window (it fixes every miner's assignment).
    pub window_seed: u64,
    /// The validator's own seed for its held-out batches and unassigned-page batches.
    pub eval_seed: u64,
    /// Hex digests of the task and of the checkpoints before and after the window (blobs).
    pub task_digest: String,
    pub checkpoint_before: String,
    pub checkpoint_after: String,
    /// Digests of the outer Nesterov momentum buffer before and after the window (blobs); None for
    /// a zero buffer or plain SGD.
    #[serde(default)]
    pub momentum_before: Option<String>,
    #[serde(default)]
    pub momentum_after: Option<String>,
    pub scoring: ScoringParams,
    pub evidence: WindowEvidence,
    /// How each evaluated gradient can be found again .
    pub gradients: Vec<GradientRecord>,
    /// Moving averages before the window.
    pub averages_before: Averages,
    /// The miners whose training was re-executed this window.
    pub spot_checks: Vec<SpotCheckRecord>,
    /// The uids aggregated into the next checkpoint, best first.
    pub aggregated: Vec<u16>,
    pub weights: WeightsRecord,
}

/// An evaluated gradient: its payload is the blob `payload_digest`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GradientRecord {
    pub uid: u16,
    pub payload_digest: String,
    /// The commitment's signature, so anyone can check the miner signed this payload.
    pub commitment_signature: String,
    /// The uids whose gradients formed this miner's assignment-check control (empty: the checkpoint
    /// itself), when the check ran.
    pub control: Option<Vec<u16>>,
}

/// A spot check: the miner's dense pseudo-gradient (the blob `dense_digest`) against the
/// validator's re-execution of its window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpotCheckRecord {
    pub uid: u16,
    pub dense_digest: String,
    /// Relative L2 difference between the two.
    pub relative_difference: f64,
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
