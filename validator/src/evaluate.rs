//! The deterministic evaluations behind a window's evidence, shared by the validator and by offline
//! replays: on the CPU backend they give the same losses bit for bit wherever they run.

use scoring::AssignmentEvidence;
use task::aggregate::{aggregate_median_clipped, outer_sgd_step};
use task::{Batch, CpuBackend, CpuTrainBackend, TaskEngine};

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

/// The miner's own training batches the assignment check replays, and for each the batch of the
/// held-back neighbours of its sequences (same pages, adjacent slots).
pub fn assignment_batches(
    engine: &TaskEngine,
    window: u64,
    window_seed: u64,
    uid: u16,
) -> Option<(Vec<Batch>, Vec<Batch>)> {
    let spec = engine.spec();
    let count = spec
        .scoring
        .assignment_batches
        .min(spec.training.inner_steps);
    let assignment = engine.assignment(window, window_seed, uid).ok()?;
    let mut own = engine.training_spans(&assignment, window_seed);
    own.truncate(count);
    let held_back = own
        .iter()
        .map(|spans| engine.batch(&engine.held_back_partners(spans)))
        .collect();
    Some((own.iter().map(|s| engine.batch(s)).collect(), held_back))
}

/// A miner's window re-executed on the CPU: its pseudo-gradient, or None when the uid has no
/// assignment.
pub fn reexecute(
    engine: &TaskEngine,
    start: &[f32],
    window: u64,
    window_seed: u64,
    uid: u16,
) -> Option<Vec<f32>> {
    engine
        .train_window::<CpuTrainBackend>(
            &Default::default(),
            start,
            window,
            window_seed,
            uid,
            |_, _| {},
        )
        .ok()
        .map(|outcome| outcome.pseudo_gradient(start))
}

/// The control an assignment check compares a gradient against: the median-clipped mean of other
/// miners' gradients (none: a zero gradient, i.e. the checkpoint itself).
pub fn control_gradient(gradients: &[&[f32]], len: usize) -> Vec<f32> {
    aggregate_median_clipped(gradients).unwrap_or_else(|| vec![0.0; len])
}

/// The losses behind a miner's assignment check.
pub fn assignment_evidence(
    engine: &TaskEngine,
    params: &[f32],
    gradient: &[f32],
    control: &[f32],
    own: &[Batch],
    held_back: &[Batch],
) -> AssignmentEvidence {
    AssignmentEvidence {
        control_own: losses_after(engine, params, control, own),
        after_own: losses_after(engine, params, gradient, own),
        control_held_back: losses_after(engine, params, control, held_back),
        after_held_back: losses_after(engine, params, gradient, held_back),
    }
}
