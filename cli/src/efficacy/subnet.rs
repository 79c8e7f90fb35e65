//! A subnet run of `subnet efficacy`: honest miners train each window and send through the codec
//! with their own error-feedback residuals, and the validator's own window steps
//! (`validator::window`) score, decide and aggregate it.

use super::{Measure, Run, Setup, drawn_seed, eval_seed, progress};
use pseudo_gradient::codec::{self, Layout};
use scoring::{Averages, Bans, averages_after};
use std::collections::BTreeMap;
use task::segment::TrainState;
use task::{Checkpoint, CpuTrainBackend, Digest, TaskEngine, TaskSpec};
use validator::window::{
    Artefacts, AuditGap, AuditRequest, Carried, Gathered, Gradient, PendingAudit, ResidualLink,
    ServedSegment, Setting, Subject, Unresolved, WindowInputs,
};

/// The task with `layout` as its gradient codec.
fn with_layout(spec: &TaskSpec, layout: Layout) -> TaskEngine {
    let mut spec = spec.clone();
    let c = &mut spec.compression;
    (c.chunk, c.top_k, c.value_bits) = match layout {
        Layout::DenseF32 => (c.chunk, 0, c.value_bits),
        Layout::TopK { chunk, k } => (chunk, k, 8),
        Layout::PackedTopK { chunk, k, bits } => (chunk, k, bits as u32),
    };
    TaskEngine::new(spec)
}

/// Honest miners' artefacts, served from memory when the validator's steps audit one.
struct Honest {
    served: BTreeMap<u16, Artefacts>,
}

impl WindowInputs for Honest {
    type Error = std::convert::Infallible;

    /// Honest miners pass their audits; only a failed assignment check asks for one here.
    fn due_audits(&mut self, _: &BTreeMap<u16, Gradient>) -> Vec<u16> {
        Vec::new()
    }

    fn residual_chain(&mut self, _: u16) -> ResidualLink {
        ResidualLink::Continues
    }

    fn artefacts(
        &mut self,
        requests: &[AuditRequest],
    ) -> Result<Vec<Result<Artefacts, AuditGap>>, Self::Error> {
        Ok(requests
            .iter()
            .map(|r| Ok(self.served[&r.uid].clone()))
            .collect())
    }

    /// Honest miners serve every audit in its window: none stays unresolved.
    fn subject(&mut self, _: u16, _: &PendingAudit) -> Result<Option<Subject>, Self::Error> {
        Ok(None)
    }
}

/// One miner's window `who` trained on the CPU from the checkpoint (and its carried optimizer
/// state, where the task carries one): its pseudo-gradient and the segment states a validator
/// whose secret is 0 would audit.
fn train_one(
    engine: &TaskEngine,
    checkpoint: &Checkpoint,
    who: (u64, u64, u16),
    trainable: std::ops::Range<usize>,
) -> (Vec<f32>, Vec<ServedSegment>) {
    let (window, _, uid) = who;
    let mut states = Vec::new();
    let outcome = engine
        .train_window_in_segments::<CpuTrainBackend>(
            &Default::default(),
            &checkpoint.params,
            checkpoint.inner.as_ref(),
            who,
            trainable,
            |_, _| {},
            |state| states.push(state),
        )
        .expect("uid fits the window");
    let bytes: Vec<Vec<u8>> = states.iter().map(TrainState::to_bytes).collect();
    let audited = validator::audit::audited_segments(0, uid, window, states.len());
    let segments = audited
        .into_iter()
        .map(|index| ServedSegment {
            index,
            start: index.checked_sub(1).map(|i| bytes[i].clone().into()),
            end: bytes[index].clone().into(),
        })
        .collect();
    (outcome.pseudo_gradient(&checkpoint.params), segments)
}

/// Every honest miner's window: its pseudo-gradient through the codec with its own error-feedback
/// residual, as gathered, and its artefacts.
fn train_miners(
    engine: &TaskEngine,
    checkpoint: &Checkpoint,
    (window, seed): (u64, u64),
    residuals: &mut [Vec<f32>],
) -> (Vec<Gathered>, Honest) {
    let c = &engine.spec().compression;
    let layout = c.layout();
    let mut honest = Honest {
        served: BTreeMap::new(),
    };
    let mut gathered = Vec::with_capacity(residuals.len());
    for (uid, residual) in residuals.iter_mut().enumerate() {
        let uid = uid as u16;
        let group = engine.group(seed, uid, 0).expect("uid fits the window");
        let (dense, segments) =
            train_one(engine, checkpoint, (window, seed, uid), group.range.clone());
        let out = c.compress(&dense, residual, group.range.clone());
        let values = codec::decode_as(&out.payload, group.len(), layout).expect("own payload");
        let artefacts = Artefacts {
            dense: codec::encode_dense(&dense).into(),
            residual_in: codec::encode_dense(residual).into(),
            segments,
        };
        honest.served.insert(uid, artefacts);
        let residual_out = codec::encode_dense(&out.residual_out);
        *residual = out.residual_out;
        gathered.push(Gathered {
            uid,
            hotkey: format!("miner {uid}"),
            outcome: Ok(Gradient {
                payload: out.payload.into(),
                values: pseudo_gradient::Sparse::scattered(
                    &values,
                    engine.num_params(),
                    group.range.start,
                ),
                group: group.clone(),
                residual_out: Digest(subnet_proto::digest(&residual_out)),
                backend: task::device::cpu_backend().into(),
            }),
        });
    }
    (gathered, honest)
}

/// The subnet with honest miners sending in `layout`, each window scored, decided and aggregated
/// by the validator's own steps (`validator::window`).
pub(super) fn subnet(spec: &TaskSpec, setup: &Setup, measure: &Measure, layout: Layout) -> Run {
    let engine = with_layout(spec, layout);
    let n = engine.num_params();
    let mut checkpoint = engine.genesis();
    let (mut momentum, mut reference_residual) = (Vec::new(), Vec::new());
    let mut averages = Averages::new();
    let mut residuals = vec![vec![0f32; n]; setup.miners as usize];
    let mut run = Run {
        name: format!("subnet, {layout} ({:.1}x)", layout.ratio(n)),
        bytes: layout.payload_len(n),
        losses: vec![measure.loss(&checkpoint.params)],
        idle_windows: Vec::new(),
        copy_windows: Vec::new(),
        scaled_windows: Vec::new(),
        earned: 0,
        worse_windows: Vec::new(),
        seconds: 0.0,
    };
    for window in 0..setup.windows {
        let started = std::time::Instant::now();
        let seed = drawn_seed(setup.draw, window);
        let (gathered, mut honest) =
            train_miners(&engine, &checkpoint, (window, seed), &mut residuals);
        let setting = Setting {
            window,
            window_seed: seed,
            eval_seed: eval_seed(setup.draw, window),
            assigned_uids: setup.miners as u64,
            params: engine.spec().scoring.params(),
            checkpoint: checkpoint.clone(),
            bans: Bans::new(),
            evaluator: task::device::cpu_backend().into(),
        };
        let start = validator::window::start(&engine, setting, reference_residual);
        let carried = Carried {
            averages: &averages,
            momentum: &momentum,
            unresolved: &Unresolved::new(),
        };
        let Ok(scored) = validator::window::score(&engine, &start, gathered, &mut honest, carried);
        averages = averages_after(&scored.decisions);
        run.earned += scored
            .decisions
            .iter()
            .filter(|d| d.verdict == scoring::Verdict::Earned)
            .count();
        if scored.decisions.iter().any(|d| !d.duplicates.is_empty()) {
            run.copy_windows.push(window);
        }
        let step = scored.step;
        // As the validator does, its reference's error feedback starts over when the model stays.
        reference_residual = if step.next.digest == checkpoint.digest {
            Vec::new()
        } else {
            start.reference.residual_out
        };
        if !step.aggregated.is_empty() && step.scale != 1.0 {
            run.scaled_windows.push((window, step.scale));
        }
        if step.aggregated.is_empty() {
            let rules = engine.spec().scoring.params();
            eprintln!(
                "  {}: window {window} stays: {} candidate(s) of {}, {} earned, {} helped alone",
                run.name,
                scoring::candidates(&scored.evidence, &rules).len(),
                scored.evidence.miners.len(),
                scored
                    .decisions
                    .iter()
                    .filter(|d| d.verdict == scoring::Verdict::Earned)
                    .count(),
                scored
                    .decisions
                    .iter()
                    .filter(|d| d.usefulness.as_ref().is_some_and(|u| u.score() > 0.0))
                    .count(),
            );
            // As a miner does (`Miner::residual_into`): when the model did not move, nothing the
            // window sent was applied, and the error feedback starts over from zero.
            residuals.iter_mut().for_each(|r| r.fill(0.0));
            run.idle_windows.push(window);
        }
        run.seconds += started.elapsed().as_secs_f64();
        let before = run.last();
        (checkpoint, momentum) = (step.next, step.momentum_after);
        run.losses.push(measure.loss(&checkpoint.params));
        if run.last() > before {
            run.worse_windows.push(window);
        }
        progress(&run.name, window, &run.losses);
    }
    run
}
