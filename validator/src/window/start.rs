//! The window's start: what every later step reads, fixed before any miner's work is measured.

use crate::evaluate;
use pseudo_gradient::aggregate::l2_norm;
use pseudo_gradient::codec;
use scoring::{Bans, ScoringParams};
use task::{Batch, Checkpoint, Digest, InnerState, TaskEngine};

/// Which window is scored, from which checkpoint, under which rules.
#[derive(Clone, Debug)]
pub struct Setting {
    pub window: u64,
    /// The chain's seed of the window: it fixes every miner's assignment.
    pub window_seed: u64,
    /// The validator's secret seed of the window: its eval batches, its reference training and its
    /// assignment-check batches.
    pub eval_seed: u64,
    /// The uids whose page ranges the window's assignment covers.
    pub assigned_uids: u64,
    pub params: ScoringParams,
    pub checkpoint: Checkpoint,
    /// The bans in force when the window starts.
    pub bans: Bans,
    /// The backend the validator evaluates and re-executes audited training on (its device's
    /// `task::Device::backend`): an audit compares bits only with a window trained on the same
    /// CPU backend.
    pub evaluator: String,
}

/// The validator's own training of the window, on pages no miner was assigned.
#[derive(Clone, Debug)]
pub struct Reference {
    pub dense: Vec<f32>,
    /// As a miner sends it: compressed with the validator's own error-feedback residual.
    pub sent: Vec<f32>,
    /// The residual it was compressed with (empty: zero), and the one it leaves.
    pub residual_in: Vec<f32>,
    pub residual_out: Vec<f32>,
    /// The norm of `sent` over each parameter group (empty for a whole-model task).
    pub group_norms: Vec<f64>,
    /// What `sent` over each parameter group gains alone on the eval batches (empty for a
    /// whole-model task).
    pub group_gains: Vec<f64>,
}

impl Reference {
    /// The digest of the dense training, as the record names its blob.
    pub fn digest(&self) -> Digest {
        Digest(subnet_proto::digest(&codec::encode_dense(&self.dense)))
    }

    /// The norm of what it sends: the floor of the clip norm.
    pub fn norm(&self) -> f64 {
        l2_norm(&self.sent)
    }
}

/// A started window: its setting, eval batches, the checkpoint's losses on them and the reference.
#[derive(Clone, Debug)]
pub struct Start {
    pub setting: Setting,
    pub batches: Vec<Batch>,
    /// The checkpoint's losses on `batches`.
    pub base: Vec<f32>,
    pub reference: Reference,
    /// The inner optimizer state the next checkpoint carries, where the task carries one
    /// (`TaskEngine::next_inner`): public, so whoever recomputes the step derives the same.
    pub next_inner: Option<InnerState>,
}

impl Start {
    pub fn params(&self) -> &ScoringParams {
        &self.setting.params
    }

    pub fn checkpoint(&self) -> &Checkpoint {
        &self.setting.checkpoint
    }

    /// The same window under other rules: only what the rules change is measured again (the
    /// reference's per-group gains, which depend on the evaluation step).
    pub fn under(&self, engine: &TaskEngine, params: &ScoringParams) -> Start {
        let mut start = self.clone();
        start.setting.params = params.clone();
        if params.eval_step.to_bits() != self.params().eval_step.to_bits() {
            start.reference.group_gains = evaluate::group_gains(
                engine,
                &self.checkpoint().params,
                &self.reference.sent,
                (&self.base, &self.batches),
                params.eval_step,
            );
        }
        start
    }
}

/// Starts `setting`'s window: draws its eval batches, measures the checkpoint on them, and trains
/// the reference, compressed with `reference_residual` (the validator's error feedback; empty:
/// zero).
pub fn start(engine: &TaskEngine, setting: Setting, reference_residual: Vec<f32>) -> Start {
    let s = &setting;
    let params = &s.checkpoint.params;
    let batches = evaluate::eval_batches(engine, s.window_seed, s.assigned_uids, s.eval_seed);
    let base = evaluate::losses(engine, params, &batches);
    let dense = evaluate::reference(
        engine,
        &s.checkpoint,
        s.window,
        s.window_seed,
        s.assigned_uids,
        s.eval_seed,
    );
    let (sent, residual_out) = evaluate::reference_payload(engine, &dense, &reference_residual);
    let group_norms = evaluate::group_norms(engine, &sent);
    let group_gains =
        evaluate::group_gains(engine, params, &sent, (&base, &batches), s.params.eval_step);
    let next_inner = engine.next_inner(&s.checkpoint, (s.window, s.window_seed));
    Start {
        next_inner,
        batches,
        base,
        reference: Reference {
            dense,
            sent,
            residual_in: reference_residual,
            residual_out,
            group_norms,
            group_gains,
        },
        setting,
    }
}
