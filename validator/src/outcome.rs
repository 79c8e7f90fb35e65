//! What a validator did in a window, miner by miner: the outcome `Validator::run_window` returns
//! and a record replays.

use crate::gather::Rejection;
use crate::record::WindowRecord;
use chain_client::{AccountId, FraudOutcome, Metagraph};
use scoring::{AssignmentCheck, UsefulnessScore, Verdict, decide};
use task::Digest;

/// How one miner fared in one window.
#[derive(Clone, Debug)]
pub struct MinerResult {
    pub uid: u16,
    pub hotkey: AccountId,
    /// Usefulness of the gradient alone, when it was evaluated.
    pub usefulness: Option<UsefulnessScore>,
    /// The assignment check, for gradients that help on their own.
    pub assignment: Option<AssignmentCheck>,
    /// What it added to the other candidates, when it was one.
    pub contribution: Option<f64>,
    /// Why the gradient was refused before evaluation.
    pub rejection: Option<Rejection>,
    /// Whether this validator re-executed the miner's window.
    pub audited: bool,
    /// Earned, or why not.
    pub verdict: Verdict,
    /// This window's score (0 unless it earned).
    pub score: f64,
    pub moving_average: f64,
    /// Normalized weight this validator gave the uid this window.
    pub weight: f64,
}

/// Weights set (or committed) on chain as uids and u16 values, or why none were.
pub type WeightsSet = Result<(Vec<u16>, Vec<u16>), String>;

/// A lead validator's checkpoint this validator took as the window's starting point.
#[derive(Clone, Debug, PartialEq)]
pub struct Adoption {
    pub lead: u16,
    pub digest: Digest,
    /// Recomputed here from the lead's recipe (else some gradient of it was not gathered here).
    pub verified: bool,
}

/// What a validator did in one window.
#[derive(Clone, Debug)]
pub struct WindowOutcome {
    pub window: u64,
    pub eval_seed: u64,
    /// Mean loss of the window's starting checkpoint on the eval batches.
    pub base_loss: f64,
    /// Norm of the validator's own training of the window.
    pub reference_norm: f64,
    pub checkpoint_before: Digest,
    pub checkpoint_after: Digest,
    pub results: Vec<MinerResult>,
    pub aggregated: Vec<u16>,
    /// Set on chain (uids, u16 values), or why not.
    pub weights_set: WeightsSet,
    /// The subnet runs commit-reveal: `weights_set` was committed, to be revealed an epoch later.
    pub weights_committed: bool,
    /// Earlier windows' commits revealed in this window, by the window that committed them, with
    /// what the chain said.
    pub reveals: Vec<(u64, Result<(), String>)>,
    /// Miners reported to the chain for fraud, with what the chain did.
    pub fraud_reports: Vec<(u16, Result<FraudOutcome, String>)>,
    /// The lead's checkpoint, when this validator adopted it for the window.
    pub adopted: Option<Adoption>,
    /// Seconds each step of the window took.
    pub timings: Vec<(&'static str, f64)>,
    /// Bytes of payloads and audited artefacts this validator streamed from miners while it ran
    /// the window.
    pub bytes_fetched: u64,
}

impl WindowOutcome {
    pub fn result(&self, uid: u16) -> Option<&MinerResult> {
        self.results.iter().find(|r| r.uid == uid)
    }

    /// The outcome of a window as its record in a validator's replay log tells it (what another
    /// process can learn of a validator's window): the decisions are re-derived from the recorded
    /// evidence, hotkeys come from `metagraph`. What the record does not keep (refusals as typed
    /// rejections, reveals, fraud reports, adoption, timings, bytes fetched) is left empty.
    pub fn from_record(record: &WindowRecord, metagraph: &Metagraph) -> Result<Self, String> {
        let decisions = decide(&record.evidence, &record.scoring, &record.averages_before);
        let base = &record.evidence.base;
        Ok(Self {
            window: record.window,
            eval_seed: record.eval_seed,
            base_loss: base.iter().map(|&l| l as f64).sum::<f64>() / base.len().max(1) as f64,
            reference_norm: record.evidence.reference_norm,
            checkpoint_before: record.checkpoint_before,
            checkpoint_after: record.checkpoint_after,
            results: decisions
                .into_iter()
                .map(|d| MinerResult {
                    uid: d.uid,
                    hotkey: metagraph
                        .by_uid(d.uid)
                        .map_or(AccountId([0; 32]), |n| n.hotkey),
                    usefulness: d.usefulness,
                    assignment: d.assignment,
                    contribution: d.contribution,
                    rejection: None,
                    audited: record.audits.iter().any(|a| a.uid == d.uid),
                    verdict: d.verdict,
                    score: d.score,
                    moving_average: d.moving_average,
                    weight: d.weight,
                })
                .collect(),
            aggregated: record.aggregated.clone(),
            weights_set: match &record.weights.error {
                Some(e) => Err(e.clone()),
                None => Ok((record.weights.uids.clone(), record.weights.values.clone())),
            },
            weights_committed: false,
            reveals: Vec::new(),
            fraud_reports: Vec::new(),
            adopted: None,
            timings: Vec::new(),
            bytes_fetched: 0,
        })
    }
}
