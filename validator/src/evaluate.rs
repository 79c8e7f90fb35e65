//! The deterministic evaluations behind a window's evidence, shared by the validator and by offline
//! replays. They run on the engine's device (`TaskEngine::on`, `validator run --device`); on the CPU
//! backend they give the same losses bit for bit wherever its fingerprint (`cpu_backend`) is the same.

use pseudo_gradient::Sparse;
use pseudo_gradient::aggregate::{
    clip_scale, clipped, l2_norm, outer_nesterov_step, outer_sgd_step,
};
use pseudo_gradient::codec;
use pseudo_gradient::sparse::{clipped_sums, per_parameter};
use scoring::{AssignmentEvidence, LeaveOneOut};
use task::{Batch, Checkpoint, TaskEngine};

/// Losses of `params` on `batches`.
pub fn losses(engine: &TaskEngine, params: &[f32], batches: &[Batch]) -> Vec<f32> {
    engine.device().losses(engine, params, batches)
}

/// Losses on `batches` after `gradient`, clipped to `clip_norm`, is applied alone to `params` at
/// `eval_step` of a full outer step (`ScoringParams::eval_step`).
pub fn losses_after(
    engine: &TaskEngine,
    params: &[f32],
    (gradient, clip_norm): (&[f32], f64),
    eval_step: f64,
    batches: &[Batch],
) -> Vec<f32> {
    let moved = outer_sgd_step(params, &clipped(gradient, clip_norm), eval_step);
    losses(engine, &moved, batches)
}

/// The window's eval batches for a validator's secret `eval_seed` (see `TaskEngine::eval_batches`).
pub fn eval_batches(
    engine: &TaskEngine,
    window_seed: u64,
    assigned_uids: u64,
    eval_seed: u64,
) -> Vec<Batch> {
    engine.eval_batches(
        window_seed,
        assigned_uids,
        eval_seed,
        engine.spec().scoring.eval_batches,
    )
}

/// The validator's own training of the window, on pages no miner was assigned, drawn by its secret
/// seed: its pseudo-gradient. Its norm is what honest work of the window looks like, and it is the
/// assignment check's control.
pub fn reference(
    engine: &TaskEngine,
    start: &Checkpoint,
    window: u64,
    window_seed: u64,
    assigned_uids: u64,
    eval_seed: u64,
) -> Vec<f32> {
    let pages = engine.reference_pages(window_seed, assigned_uids, eval_seed);
    engine
        .device()
        .train_reference(
            engine,
            &start.params,
            start.inner.as_ref(),
            (window, window_seed),
            &pages,
            eval_seed,
        )
        .pseudo_gradient(&start.params)
}

/// The reference as a miner would send it, with the validator's own error-feedback residual
/// `residual_in` (empty: zero): the decoded payload, and the residual it leaves. The payload's
/// norm is the floor of the clip norm, and it is the assignment check's control: it carries older
/// windows' learning the way honest miners' payloads do.
pub fn reference_payload(
    engine: &TaskEngine,
    dense: &[f32],
    residual_in: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let c = &engine.spec().compression;
    let layout = c.layout();
    let zero;
    let residual_in = if residual_in.is_empty() {
        zero = vec![0.0; dense.len()];
        &zero
    } else {
        residual_in
    };
    let out = c.compress(dense, residual_in, 0..dense.len());
    let sent = codec::decode_as(&out.payload, dense.len(), layout)
        .expect("the codec decodes its own output");
    (sent, out.residual_out)
}

/// `f` of each of the task's parameter groups (empty for a whole-model task).
fn per_group(engine: &TaskEngine, f: impl Fn(&task::groups::ParamGroup) -> f64) -> Vec<f64> {
    let groups = engine.groups();
    if groups.is_whole() {
        return Vec::new();
    }
    groups.groups().iter().map(f).collect()
}

/// The norm of `v` over each of the task's parameter groups (empty for a whole-model task).
pub fn group_norms(engine: &TaskEngine, v: &[f32]) -> Vec<f64> {
    per_group(engine, |g| l2_norm(&v[g.range.clone()]))
}

/// The mean relative loss drop on `batches` (whose losses under `params` are `base`) that `v`
/// restricted to each of the task's parameter groups gives alone at `eval_step` (empty for a
/// whole-model task): the prices of the groups (`scoring::decide::group_values`).
pub fn group_gains(
    engine: &TaskEngine,
    params: &[f32],
    v: &[f32],
    (base, batches): (&[f32], &[Batch]),
    eval_step: f64,
) -> Vec<f64> {
    per_group(engine, |g| {
        let part = task::groups::masked(v, &g.range);
        let after = losses_after(engine, params, (&part, f64::INFINITY), eval_step, batches);
        scoring::UsefulnessScore::from_losses(base, &after).mean_relative_drop
    })
}

/// A miner's window re-executed on the engine's device: its pseudo-gradient, or None when the uid has no
/// assignment.
pub fn reexecute(
    engine: &TaskEngine,
    start: &Checkpoint,
    window: u64,
    window_seed: u64,
    uid: u16,
    trainable: std::ops::Range<usize>,
) -> Option<Vec<f32>> {
    engine
        .device()
        .train_window(
            engine,
            &start.params,
            start.inner.as_ref(),
            window,
            window_seed,
            uid,
            trainable,
            |_, _| {},
        )
        .ok()
        .map(|outcome| outcome.pseudo_gradient(&start.params))
}

/// Whose assignment check, in which window, on batches drawn by which secret seed.
#[derive(Clone, Copy, Debug)]
pub struct AssignmentDraw {
    pub window: u64,
    pub window_seed: u64,
    pub eval_seed: u64,
    pub uid: u16,
}

/// The losses behind a miner's assignment check: `gradient` and `control`, each clipped to
/// `clip_norm` and applied at `eval_step`, on batches of the miner's pages and of their held-back
/// neighbours (`None` when the uid has no assignment).
pub fn assignment_evidence(
    engine: &TaskEngine,
    params: &[f32],
    (gradient, control, clip_norm): (&[f32], &[f32], f64),
    eval_step: f64,
    draw: AssignmentDraw,
) -> Option<AssignmentEvidence> {
    let assignment = engine
        .assignment(draw.window, draw.window_seed, draw.uid)
        .ok()?;
    let (own, held_back) = engine.assignment_check_batches(
        &assignment,
        draw.window_seed,
        draw.eval_seed,
        engine.spec().scoring.assignment_batches,
    );
    let after = |v: &[f32], batches: &[Batch]| {
        losses_after(engine, params, (v, clip_norm), eval_step, batches)
    };
    Some(AssignmentEvidence {
        control_own: after(control, &own),
        after_own: after(gradient, &own),
        control_held_back: after(control, &held_back),
        after_held_back: after(gradient, &held_back),
        base_held_back: losses(engine, params, &held_back),
    })
}

/// What leave-one-out measured of the candidates' aggregate.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LeaveOneOutLosses {
    /// The losses of the aggregate of every candidate at the whole outer rate.
    pub aggregate: Vec<f32>,
    /// For each candidate, the losses with it left out (empty where not asked).
    pub without: Vec<Vec<f32>>,
    /// The losses of the aggregate of every candidate at each fraction of the outer rate asked.
    pub scaled: Vec<Vec<f32>>,
}

/// Leave-one-out losses of the candidates' aggregate, each candidate clipped to its entry of
/// `caps` (in the order given): the losses with every candidate at each fraction of the outer rate
/// in `scales`, the losses with every candidate at the scoring step, and where `leave_out` asks,
/// for each candidate the losses at that step with it left out (the others keep their share). The
/// scoring step is the whole outer rate; with `best_against` (the checkpoint's losses on
/// `batches`), the fraction of `scales` at which the aggregate lowers them most
/// (`scoring::best_scale`), so that where the whole step overshoots, leaving a candidate out does
/// not gain by shrinking the step. The aggregate steps from
/// `params` as `rule` says: `Uniform`, the rate over n times the sum; `Applied`, the outer step
/// aggregation takes (each parameter averaged over the candidates that carry it, with the outer
/// momentum buffer `momentum`), so that each candidate is scored at the share of each parameter's
/// move it really makes: the whole move of a parameter only it sends, 1/n of one all n send (for
/// dense gradients, as `Uniform`).
pub fn leave_one_out(
    engine: &TaskEngine,
    (params, momentum): (&[f32], &[f32]),
    candidates: &[&Sparse],
    caps: &[f64],
    (batches, rule, scales): (&[Batch], LeaveOneOut, &[f64]),
    (leave_out, best_against): (bool, Option<&[f32]>),
) -> LeaveOneOutLosses {
    assert_eq!(candidates.len(), caps.len(), "one cap per candidate");
    let Some((sum, carriers)) = clipped_sums(candidates, caps) else {
        return LeaveOneOutLosses::default();
    };
    let clipping: Vec<f64> = candidates
        .iter()
        .zip(caps)
        .map(|(g, &cap)| clip_scale(g.norm(), cap))
        .collect();
    // Each parameter's sum, less the left-out candidate's term where it has one (elsewhere its
    // term is zero, and subtracting it would change no bit).
    let totals = |leave_out: Option<usize>| -> Vec<f64> {
        let mut total = sum.clone();
        if let Some(i) = leave_out {
            for (p, x) in candidates[i].iter() {
                total[p] -= clipping[i] * x as f64;
            }
        }
        total
    };
    let step = |leave_out: Option<usize>, fraction: f64| {
        stepped(
            engine,
            (params, momentum),
            totals(leave_out),
            (&carriers, candidates.len()),
            (rule, fraction),
        )
    };
    let scaled: Vec<Vec<f32>> = scales
        .iter()
        .map(|&f| losses(engine, &step(None, f), batches))
        .collect();
    let best = best_against.and_then(|base| scoring::best_scale(base, &scaled));
    let (aggregate, fraction) = match best {
        Some(i) => (scaled[i].clone(), scales[i]),
        None => match scales.iter().position(|&f| f == 1.0) {
            Some(i) => (scaled[i].clone(), 1.0),
            None => (losses(engine, &step(None, 1.0), batches), 1.0),
        },
    };
    let without = if leave_out {
        (0..candidates.len())
            .map(|i| losses(engine, &step(Some(i), fraction), batches))
            .collect()
    } else {
        Vec::new()
    };
    LeaveOneOutLosses {
        aggregate,
        without,
        scaled,
    }
}

/// The parameters after the step `rule` takes, at `fraction` of the outer rate, with each
/// parameter's clipped sum `totals` over the `n` candidates, `carriers[p]` of which carry
/// parameter p (see `leave_one_out`).
fn stepped(
    engine: &TaskEngine,
    (params, momentum): (&[f32], &[f32]),
    totals: Vec<f64>,
    (carriers, n): (&[u32], usize),
    (rule, fraction): (LeaveOneOut, f64),
) -> Vec<f32> {
    let t = &engine.spec().training;
    let rate = t.outer_lr * fraction;
    match rule {
        LeaveOneOut::Uniform => {
            let share = rate / n as f64;
            params
                .iter()
                .zip(totals)
                .map(|(&theta, total)| (theta as f64 - share * total) as f32)
                .collect()
        }
        // A candidate's share of the applied step at a parameter is its value over what the
        // candidates carrying it divide by (`per_parameter`): left out, its share is missing and
        // the others keep theirs.
        LeaveOneOut::Applied => {
            let mean = per_parameter(totals, carriers, t.outer_agreement);
            if t.outer_momentum > 0.0 {
                outer_nesterov_step(params, &mean, momentum, rate, t.outer_momentum).0
            } else {
                outer_sgd_step(params, &mean, rate)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wine-quality task's engine, genesis parameters and two held-out batches.
    fn wine_quality() -> (TaskEngine, std::sync::Arc<Vec<f32>>, Vec<Batch>) {
        let spec =
            task::TaskSpec::from_toml_str(include_str!("../../tasks/wine-quality.toml")).unwrap();
        let engine = TaskEngine::new(spec);
        let params = engine.genesis().params;
        let batches = engine.heldout_batches(7, 2);
        (engine, params, batches)
    }

    /// Miner `uid`'s first window on `engine` from genesis, sent at `times` its work.
    fn sent_at(engine: &TaskEngine, uid: u16, times: f32) -> Sparse {
        let genesis = engine.genesis();
        let g = reexecute(engine, &genesis, 0, 1, uid, 0..genesis.params.len()).unwrap();
        Sparse::from_dense(&g.iter().map(|x| x * times).collect::<Vec<_>>())
    }

    /// At the applied step a candidate is scored at its real share of each parameter's move: for
    /// dense gradients that is the uniform step; a parameter only one candidate sends moves whole,
    /// and leaving that candidate out takes the whole move away.
    #[test]
    fn leave_one_out_at_the_applied_step() {
        let (engine, params, batches) = wine_quality();
        let n = params.len();
        let a: Vec<f32> = (0..n).map(|i| ((i % 7) as f32 - 3.5) * 2e-3).collect();
        let b: Vec<f32> = (0..n).map(|i| ((i % 5) as f32 - 2.5) * 2e-3).collect();
        let caps = [f64::INFINITY; 2];
        let run = |candidates: &[&[f32]], rule| {
            let sparse: Vec<Sparse> = candidates.iter().map(|c| Sparse::from_dense(c)).collect();
            let measured = leave_one_out(
                &engine,
                (&params, &[]),
                &sparse.iter().collect::<Vec<_>>(),
                &caps[..candidates.len()],
                (&batches, rule, &[]),
                (true, None),
            );
            assert!(measured.scaled.is_empty());
            (measured.aggregate, measured.without)
        };
        let close = |x: &[f32], y: &[f32]| {
            x.iter()
                .zip(y)
                .all(|(x, y)| (x - y).abs() <= 1e-5 * x.abs().max(1.0))
        };
        let (uniform, uniform_without) = run(&[&a, &b], LeaveOneOut::Uniform);
        let (applied, applied_without) = run(&[&a, &b], LeaveOneOut::Applied);
        assert!(close(&uniform, &applied), "{uniform:?} {applied:?}");
        for (u, p) in uniform_without.iter().zip(&applied_without) {
            assert!(close(u, p), "{u:?} {p:?}");
        }
        // Disjoint supports: each parameter moves by its one carrier's whole value.
        let half = |v: &[f32], first: bool| -> Vec<f32> {
            (0..n)
                .map(|i| if (i < n / 2) == first { v[i] } else { 0.0 })
                .collect()
        };
        let (a, b) = (half(&a, true), half(&b, false));
        let both: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        let (with, without) = run(&[&a, &b], LeaveOneOut::Applied);
        let (alone_both, _) = run(&[&both], LeaveOneOut::Uniform);
        let (alone_b, _) = run(&[&b], LeaveOneOut::Uniform);
        assert!(close(&with, &alone_both), "{with:?} {alone_both:?}");
        assert!(close(&without[0], &alone_b), "{:?} {alone_b:?}", without[0]);
        // The uniform step scored each at half its move.
        let (uniform_with, _) = run(&[&a, &b], LeaveOneOut::Uniform);
        assert!(!close(&uniform_with, &with));
    }

    /// The aggregate is measured at each fraction of the outer rate asked, on a line from the
    /// checkpoint: the whole step of two overlong windows overshoots, a fraction of it helps.
    #[test]
    fn the_aggregate_at_fractions_of_the_outer_rate() {
        let (engine, params, batches) = wine_quality();
        // Two miners' windows, each sent at many times its size: downhill, but far too long a step.
        let (a, b) = (sent_at(&engine, 1, 16.0), sent_at(&engine, 2, 16.0));
        let caps = [f64::INFINITY; 2];
        let scales = [1.0, 0.5, 0.125];
        let measured = leave_one_out(
            &engine,
            (&params, &[]),
            &[&a, &b],
            &caps,
            (&batches, LeaveOneOut::Uniform, &scales),
            (false, None),
        );
        assert!(measured.without.is_empty());
        assert_eq!(measured.scaled.len(), scales.len());
        assert_eq!(measured.scaled[0], measured.aggregate);
        let mean = |l: &[f32]| l.iter().map(|&x| x as f64).sum::<f64>() / l.len() as f64;
        let base = mean(&losses(&engine, &params, &batches));
        assert!(
            mean(&measured.aggregate) > base,
            "the whole step overshoots"
        );
        assert!(mean(&measured.scaled[2]) < base, "an eighth of it helps");
        // An eighth of the rate is the whole rate with the windows an eighth as long.
        let short = leave_one_out(
            &engine,
            (&params, &[]),
            &[&sent_at(&engine, 1, 2.0), &sent_at(&engine, 2, 2.0)],
            &caps,
            (&batches, LeaveOneOut::Uniform, &[]),
            (false, None),
        );
        let close = |x: &[f32], y: &[f32]| {
            x.iter()
                .zip(y)
                .all(|(x, y)| (x - y).abs() <= 1e-5 * x.abs().max(1.0))
        };
        assert!(close(&short.aggregate, &measured.scaled[2]));
    }

    /// Where the whole step of two honest windows overshoots, leaving either out halves the step
    /// and looks like a gain: at the whole rate both score below zero. At the fraction whose
    /// aggregate lowers the loss most, each one's share helps.
    #[test]
    fn leave_one_out_at_the_best_fraction_of_the_outer_rate() {
        let (engine, params, batches) = wine_quality();
        let (a, b) = (sent_at(&engine, 1, 16.0), sent_at(&engine, 2, 16.0));
        let caps = [f64::INFINITY; 2];
        let scales = [1.0, 0.5, 0.25, 0.125, 0.0625];
        let base = losses(&engine, &params, &batches);
        let measure = |best_against: Option<&[f32]>| {
            leave_one_out(
                &engine,
                (&params, &[]),
                &[&a, &b],
                &caps,
                (&batches, LeaveOneOut::Uniform, &scales),
                (true, best_against),
            )
        };
        let mean = |l: &[f32]| l.iter().map(|&x| x as f64).sum::<f64>() / l.len() as f64;
        let whole = measure(None);
        assert_eq!(whole.aggregate, whole.scaled[0]);
        for without in &whole.without {
            assert!(mean(without) < mean(&whole.aggregate), "overshoots");
        }
        let best = measure(Some(&base));
        let i = scoring::best_scale(&base, &best.scaled).unwrap();
        assert!(i > 0, "the whole step is not the best");
        assert_eq!(best.scaled, whole.scaled);
        assert_eq!(best.aggregate, best.scaled[i]);
        for without in &best.without {
            assert!(
                mean(without) > mean(&best.aggregate),
                "each one's share helps"
            );
        }
    }

    /// A gradient sent shorter than its work gave scores higher in leave-one-out, at the whole
    /// rate and at the best fraction alike: the fraction is one for the whole aggregate, and where
    /// one candidate's own direction is too long a step, shortening it alone helps the aggregate.
    /// Leave-one-out cannot tell a shrunk gradient from a more useful one; the audit, which
    /// re-derives the payload from the re-executed window, is what refuses it (the adversaries
    /// suite's `shrunk` miner).
    #[test]
    fn a_shrunk_gradient_scores_higher_in_leave_one_out() {
        let (engine, params, batches) = wine_quality();
        let caps = [f64::INFINITY; 2];
        let scales = [1.0, 0.5, 0.25, 0.125, 0.0625];
        let base = losses(&engine, &params, &batches);
        let mean = |l: &[f32]| l.iter().map(|&x| x as f64).sum::<f64>() / l.len() as f64;
        // Both windows sent at `times` their work (4: the whole step overshoots), the second
        // shrunk by `shrink`: its leave-one-out gain.
        let gain = |times: f32, shrink: f32, best_against: Option<&[f32]>| {
            let m = leave_one_out(
                &engine,
                (&params, &[]),
                &[
                    &sent_at(&engine, 1, times),
                    &sent_at(&engine, 2, times * shrink),
                ],
                &caps,
                (&batches, LeaveOneOut::Uniform, &scales),
                (true, best_against),
            );
            mean(&m.without[1]) - mean(&m.aggregate)
        };
        for times in [2.0, 4.0] {
            for best_against in [None, Some(&base[..])] {
                let honest = gain(times, 1.0, best_against);
                let shrunk = gain(times, 0.5, best_against);
                assert!(shrunk > honest, "{times}: {shrunk} against {honest}");
            }
        }
        // At the best fraction the overshoot no longer makes the honest gradient look harmful.
        assert!(gain(4.0, 1.0, Some(&base)) > 0.0);
        assert!(gain(4.0, 1.0, None) < 0.0);
    }
}
