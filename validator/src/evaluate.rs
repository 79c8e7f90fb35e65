//! The deterministic evaluations behind a window's evidence, shared by the validator and by offline
//! replays: on the CPU backend they give the same losses bit for bit wherever they run.

use scoring::AssignmentEvidence;
use task::aggregate::outer_sgd_step;
use task::rng::derive_seed;
use task::{Batch, CpuBackend, TaskEngine};

const HELD_BACK: u64 = 0x6865_6c64_6261_636b;

/// Held-out losses of `params` on `batches`.
pub fn losses(engine: &TaskEngine, params: &[f32], batches: &[Batch]) -> Vec<f32> {
    engine.losses::<CpuBackend>(&Default::default(), params, batches)
}

/// Losses on `batches` after `gradient` is applied to `params` at the task's evaluation step.
pub fn losses_after(
    engine: &TaskEngine,
    params: &[f32],
    gradient: &[f32],
    batches: &[Batch],
) -> Vec<f32> {
    let moved = outer_sgd_step(params, gradient, engine.spec().scoring.eval_step);
    losses(engine, &moved, batches)
}

/// The miner's own training batches the assignment check replays, and as many batches from the
/// held-back half of the same pages, drawn with the validator's seed.
pub fn assignment_batches(
    engine: &TaskEngine,
    window: u64,
    window_seed: u64,
    eval_seed: u64,
    uid: u16,
) -> Option<(Vec<Batch>, Vec<Batch>)> {
    let spec = engine.spec();
    let count = spec.scoring.assignment_batches;
    let assignment = engine.assignment(window, window_seed, uid).ok()?;
    let mut own = engine.training_spans(&assignment, window_seed);
    own.truncate(count);
    let held_back = engine.slot_spans(
        &assignment.pages,
        window_seed,
        true,
        derive_seed(&[eval_seed, HELD_BACK, uid as u64]),
        count,
        spec.training.batch_size,
    );
    let batches = |spans: Vec<Vec<task::Span>>| spans.iter().map(|s| engine.batch(s)).collect();
    Some((batches(own), batches(held_back)))
}

/// The losses behind a miner's assignment check.
pub fn assignment_evidence(
    engine: &TaskEngine,
    params: &[f32],
    gradient: &[f32],
    own: &[Batch],
    held_back: &[Batch],
) -> AssignmentEvidence {
    AssignmentEvidence {
        before_own: losses(engine, params, own),
        after_own: losses_after(engine, params, gradient, own),
        before_held_back: losses(engine, params, held_back),
        after_held_back: losses_after(engine, params, gradient, held_back),
    }
}
