//! Measuring the gathered gradients: each one's norm, the window's clip norms, each gradient's
//! losses on its own at the evaluation step, and the assignment check of those that need it.

use super::{Gathered, Gradient, ResidualLink, Start, WindowInputs, Work};
use crate::evaluate::{self, AssignmentDraw};
use crate::gather::Rejection;
use scoring::{MinerEvidence, Verdict, screen};
use task::TaskEngine;

/// Each gathered miner's evidence so far: refused, or its gradient's norm, residual chain and
/// losses on its own, clipped to its group's clip norm.
pub(super) fn measure<I: WindowInputs>(
    engine: &TaskEngine,
    start: &Start,
    gathered: Vec<Gathered>,
    inputs: &mut I,
) -> Work {
    let mut work = Work::default();
    for g in gathered {
        let mut miner = fresh_evidence(start, &g);
        match g.outcome {
            Ok(gradient) => {
                miner.norm = gradient.values.norm();
                miner.group = gradient.group.index;
                match inputs.residual_chain(g.uid) {
                    ResidualLink::Continues => {}
                    ResidualLink::Broken(reason) => miner.fraud = Some(reason),
                    ResidualLink::Unseen(pending) => {
                        work.unseen.insert(g.uid, pending);
                    }
                    ResidualLink::Untraced(reason) => {
                        miner.refused = Some(reason);
                        work.evidence.push(miner);
                        continue;
                    }
                }
                work.gradients.insert(g.uid, gradient);
            }
            Err(refusal) => {
                miner.refused = Some(refusal.reason);
                miner.norm = refusal.norm;
                miner.group = refusal.group;
            }
        }
        work.evidence.push(miner);
    }
    work.clips = scoring::decide::group_clip_norms(
        &work.evidence,
        start.reference.norm(),
        &start.reference.group_norms,
    );
    for m in work.evidence.iter_mut() {
        let Some(g) = work.gradients.get(&m.uid) else {
            continue;
        };
        let clip = work.clips[m.group];
        tracing::info!(uid = m.uid, norm_ratio = m.norm / clip, "gradient measured");
        let after = alone(engine, start, g, clip);
        if after.iter().all(|l| l.is_finite()) {
            m.after = after;
        } else {
            work.gradients.remove(&m.uid);
            m.refused = Some(Rejection::NonFiniteLoss.reason());
        }
    }
    work
}

/// A gathered miner's evidence before anything is measured: its ban, if its hotkey has one.
fn fresh_evidence(start: &Start, g: &Gathered) -> MinerEvidence {
    MinerEvidence {
        uid: g.uid,
        hotkey: g.hotkey.clone(),
        refused: None,
        norm: 0.0,
        after: Vec::new(),
        assignment: None,
        fraud: None,
        banned_until: start
            .setting
            .bans
            .get(&g.uid)
            .filter(|(h, _)| *h == g.hotkey)
            .map(|(_, until)| *until),
        audited_clean: false,
        without: Vec::new(),
        group: 0,
        withheld: None,
    }
}

/// The eval batches' losses after `g`, clipped to `clip`, is applied alone at the evaluation step.
fn alone(engine: &TaskEngine, start: &Start, g: &Gradient, clip: f64) -> Vec<f32> {
    evaluate::losses_after(
        engine,
        &start.checkpoint().params,
        (&g.values.to_dense(), clip),
        start.params().eval_step,
        &start.batches,
    )
}

/// Runs the assignment check on every miner whose screen asks for it (every earlier gate passed,
/// no audit cleared it), against the validator's own training over the miner's group as the
/// control. Returns the uids that fail it: they are audited at once, and only the audit decides.
pub(super) fn assignment_checks(engine: &TaskEngine, start: &Start, work: &mut Work) -> Vec<u16> {
    let s = &start.setting;
    let mut suspects = Vec::new();
    for m in work.evidence.iter_mut() {
        let clip = work.clips.get(m.group).copied().unwrap_or(0.0);
        let wrong_pages = |m: &MinerEvidence| {
            matches!(
                screen(m, s.window, &start.base, clip, &s.params),
                Some(Verdict::WrongPages { .. })
            )
        };
        if !wrong_pages(m) {
            continue;
        }
        let g = &work.gradients[&m.uid];
        let masked;
        let control: &[f32] = if engine.groups().is_whole() {
            &start.reference.sent
        } else {
            masked = task::groups::masked(&start.reference.sent, &g.group.range);
            &masked
        };
        let draw = AssignmentDraw {
            window: s.window,
            window_seed: s.window_seed,
            eval_seed: s.eval_seed,
            uid: m.uid,
        };
        let evidence = evaluate::assignment_evidence(
            engine,
            &s.checkpoint.params,
            (&g.values.to_dense(), control, clip),
            s.params.eval_step,
            draw,
        );
        m.assignment = evidence.filter(|a| {
            [
                &a.control_own,
                &a.after_own,
                &a.control_held_back,
                &a.after_held_back,
                &a.base_held_back,
            ]
            .iter()
            .all(|v| v.iter().all(|l| l.is_finite()))
        });
        if wrong_pages(m) {
            suspects.push(m.uid);
        }
    }
    suspects
}
