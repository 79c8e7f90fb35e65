use super::*;
use pseudo_gradient::codec;
use task::segment::TrainState;
use task::{CpuTrainBackend, TaskSpec};

/// Segments of 4 steps in a 12-step window of a small model.
fn engine() -> TaskEngine {
    TaskEngine::new(spec())
}

fn spec() -> TaskSpec {
    let mut spec =
        TaskSpec::from_toml_str(include_str!("../../../../tasks/localnet-lm.toml")).unwrap();
    let model = spec.model.transformer_mut().unwrap();
    model.d_model = 32;
    model.seq_len = 32;
    model.n_layers = 1;
    spec.training.batch_size = 8;
    spec.training.set_inner_steps(12);
    spec.training.segment_steps = 4;
    spec
}

const WHO: (u64, u64, u16) = (3, 17, 1);

/// A miner's window as it commits it: the segment states, and its gradient and artefacts
/// with every segment served, trained with per-step `noise` (seeded) when given.
struct Work {
    states: Vec<TrainState>,
    gradient: Gradient,
    dense: Vec<f32>,
}

fn train(engine: &TaskEngine, start: &[f32], noise: Option<u64>) -> Vec<TrainState> {
    train_carrying(engine, start, None, noise)
}

/// `train` from the optimizer state `carried` (None: fresh).
fn train_carrying(
    engine: &TaskEngine,
    start: &[f32],
    carried: Option<std::sync::Arc<task::InnerState>>,
    noise: Option<u64>,
) -> Vec<TrainState> {
    let (window, seed, uid) = WHO;
    let assignment = engine.assignment(window, seed, uid).unwrap();
    let batches = engine.training_batches(&assignment, seed);
    let mut trainer = engine
        .trainer::<CpuTrainBackend>(&Default::default())
        .carrying(carried);
    if let Some(noise) = noise {
        trainer = trainer.with_step_noise(1e-6, noise);
    }
    let mut states = Vec::new();
    let segment_steps = engine.spec().training.segment_steps;
    let lr = engine.spec().inner_lr(window);
    trainer.train_in_segments(
        start,
        &batches,
        lr,
        segment_steps,
        |_, _| {},
        |s| states.push(s),
    );
    states
}

fn commit(engine: &TaskEngine, start: &[f32], states: Vec<TrainState>, backend: &str) -> Work {
    let end = states.last().unwrap().whole(start);
    let dense: Vec<f32> = start.iter().zip(&end).map(|(s, e)| s - e).collect();
    let zero = vec![0.0; dense.len()];
    let group = engine.groups().groups()[0].clone();
    let out = engine
        .spec()
        .compression
        .compress(&dense, &zero, group.range.clone());
    let layout = engine.spec().compression.layout();
    let values = codec::decode_as(&out.payload, group.len(), layout).unwrap();
    let values = pseudo_gradient::Sparse::scattered(&values, dense.len(), group.range.start);
    let residual_out = Digest::of(&codec::encode_dense(&out.residual_out));
    let gradient = Gradient {
        payload: out.payload.into(),
        values,
        group,
        residual_out,
        backend: backend.into(),
    };
    Work {
        states,
        gradient,
        dense,
    }
}

fn audit(engine: &TaskEngine, start: &[f32], work: &Work, tolerance: f64) -> AuditRecord {
    let checkpoint = task::Checkpoint::new(engine.digest(), start.to_vec());
    audit_from(engine, &checkpoint, work, tolerance)
}

/// `audit` of a window of `checkpoint` (its carried optimizer state included).
fn audit_from(
    engine: &TaskEngine,
    checkpoint: &task::Checkpoint,
    work: &Work,
    tolerance: f64,
) -> AuditRecord {
    let segments = (0..work.states.len())
        .map(|index| ServedSegment {
            index,
            start: index
                .checked_sub(1)
                .map(|i| work.states[i].to_bytes().into()),
            end: work.states[index].to_bytes().into(),
        })
        .collect();
    let served = Artefacts {
        dense: codec::encode_dense(&work.dense).into(),
        residual_in: codec::encode_dense(&vec![0.0; work.dense.len()]).into(),
        segments,
    };
    let audited = Audited {
        window: WHO.0,
        window_seed: WHO.1,
        checkpoint,
        gradient: &work.gradient,
    };
    let comparison = Comparison {
        tolerance,
        evaluator: task::device::cpu_backend(),
    };
    let finding = examine_window(engine, audited, WHO.2, Ok(served), comparison);
    assert!(!finding.incomplete);
    finding.record
}

const TOLERANCE: f64 = 5e-3;

/// Where the checkpoint carries an optimizer state (`training.carry_moments`), the window trained
/// from it passes bit for bit, and one trained from a fresh optimizer instead fails, even held
/// only to the tolerance of another backend.
#[test]
fn a_window_that_ignores_the_carried_optimizer_state_fails_its_audit() {
    let mut spec = spec();
    spec.training.carry_moments = true;
    let engine = TaskEngine::new(spec);
    let genesis = engine.genesis();
    let inner = engine.next_inner(&genesis, (2, 5));
    assert!(inner.is_some(), "the task carries the state");
    let carrying = task::Checkpoint::with_inner(engine.digest(), genesis.params.to_vec(), inner);
    let start = &carrying.params;
    let here = task::device::cpu_backend();
    let states = train_carrying(&engine, start, carrying.inner.clone(), None);
    let honest = commit(&engine, start, states, here);
    assert_eq!(audit_from(&engine, &carrying, &honest, 0.0).failure, None);
    let fresh = commit(&engine, start, train(&engine, start, None), "cuda:0");
    let failure = audit_from(&engine, &carrying, &fresh, TOLERANCE)
        .failure
        .unwrap();
    assert_eq!(failure.kind, ReasonKind::Irreproducible, "{}", failure.text);
}

/// Honest work passes: bit for bit on the CPU; within the tolerance, over a seeded sweep,
/// when every step carries noise of 1e-6 relative (a stand-in for another card) and the
/// commitment says so. The same noisy work declared as training on the validator's own CPU
/// arithmetic fails; declared as another host's CPU, it is held to the tolerance and passes.
#[test]
fn honest_segments_pass_and_noise_passes_only_under_a_tolerant_backend() {
    let engine = engine();
    let start = engine.genesis().params;
    let here = task::device::cpu_backend();
    let exact = commit(&engine, &start, train(&engine, &start, None), here);
    let record = audit(&engine, &start, &exact, 0.0);
    assert_eq!(record.failure, None);
    assert_eq!(record.relative_difference, Some(0.0));
    assert_eq!(record.segments.len(), 3);
    let mut worst = 0f64;
    for seed in 0..6 {
        let states = train(&engine, &start, Some(seed));
        let noisy = commit(&engine, &start, states.clone(), "cuda:0");
        let record = audit(&engine, &start, &noisy, TOLERANCE);
        assert_eq!(record.failure, None, "seed {seed}");
        worst = worst.max(record.relative_difference.unwrap());
        if seed == 0 {
            let as_here = commit(&engine, &start, states.clone(), here);
            let failure = audit(&engine, &start, &as_here, TOLERANCE).failure.unwrap();
            assert_eq!(failure.kind, ReasonKind::Irreproducible);
            assert!(failure.text.contains("bit for bit"), "{}", failure.text);
            // Another host's CPU arithmetic is held to the tolerance, as a GPU is.
            let elsewhere = commit(&engine, &start, states, "cpu:aarch64/00000000");
            assert_eq!(audit(&engine, &start, &elsewhere, TOLERANCE).failure, None);
        }
    }
    assert!(
        worst > 0.0 && worst * 10.0 < TOLERANCE,
        "noise drift {worst}"
    );
}

/// A segment's end pushed by 1% of its movement, or a segment with a step skipped, fails
/// even under a tolerant backend; so does a dense gradient that is not the checkpoint less
/// the last segment's end.
#[test]
fn a_push_a_skipped_step_and_a_dense_gradient_off_the_end_fail() {
    let engine = engine();
    let start = engine.genesis().params;
    let honest = train(&engine, &start, None);
    // The last segment's end pushed by 1% of the segment's movement on eight parameters,
    // the dense gradient and payload made from the pushed end.
    let mut pushed = honest.clone();
    let (before, last) = (&honest[1], pushed.last_mut().unwrap());
    let movement = last
        .params
        .iter()
        .zip(&before.params)
        .map(|(e, s)| (*e as f64 - *s as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    let n = last.params.len();
    for p in last.params.iter_mut().step_by(n / 8).take(8) {
        *p -= (0.01 * movement / 8f64.sqrt()) as f32;
    }
    let work = commit(&engine, &start, pushed, "cuda:0");
    let record = audit(&engine, &start, &work, TOLERANCE);
    let failure = record.failure.unwrap();
    assert_eq!(failure.kind, ReasonKind::Irreproducible, "{}", failure.text);
    assert!(failure.text.contains("segment 2"), "{}", failure.text);
    let difference = record.relative_difference.unwrap();
    assert!((difference - 0.01).abs() < 1e-3, "{difference}");

    // Segment 1 with its first step skipped, and the rest trained on from there.
    let (window, seed, uid) = WHO;
    let assignment = engine.assignment(window, seed, uid).unwrap();
    let batches = engine.training_batches(&assignment, seed);
    let lr = engine.spec().inner_lr(window);
    let resume = |from: &TrainState, steps: std::ops::Range<usize>| {
        let end = engine
            .trainer::<CpuTrainBackend>(&Default::default())
            .resume(&start, from, &batches[steps.clone()], lr);
        TrainState {
            step: steps.end,
            ..end
        }
    };
    let lazy_one = resume(&honest[0], 5..8);
    let lazy_two = resume(&lazy_one, 8..12);
    let lazy = vec![honest[0].clone(), lazy_one, lazy_two];
    let work = commit(&engine, &start, lazy, "cuda:0");
    let failure = audit(&engine, &start, &work, TOLERANCE).failure.unwrap();
    assert_eq!(failure.kind, ReasonKind::Irreproducible, "{}", failure.text);
    assert!(failure.text.contains("segment 1"), "{}", failure.text);

    // Honest states, but a dense gradient 1% larger than the last end gives.
    let mut work = commit(&engine, &start, honest, task::device::cpu_backend());
    work.dense.iter_mut().for_each(|d| *d *= 1.01);
    let group = work.gradient.group.range.clone();
    let zero = vec![0.0; work.dense.len()];
    let out = engine
        .spec()
        .compression
        .compress(&work.dense, &zero, group);
    work.gradient.payload = out.payload.into();
    work.gradient.residual_out = Digest::of(&codec::encode_dense(&out.residual_out));
    let failure = audit(&engine, &start, &work, 0.0).failure.unwrap();
    assert_eq!(failure.kind, ReasonKind::Inconsistent, "{}", failure.text);
    assert!(
        failure.text.contains("last segment's end"),
        "{}",
        failure.text
    );
}

/// A miner that jumps: it commits a made-up end for segment 0 (the honest end pushed by 5% of
/// the window's movement on eight parameters) and trains the rest honestly from there, so
/// the push lands in its dense gradient while every later segment re-executes exactly. The
/// audit finds it exactly when its draw includes segment 0, which is why cheating confined to
/// s of the segments before the last is found with probability s/(segments - 1) per audit.
#[test]
fn a_jump_between_segments_is_found_when_the_draw_hits_it() {
    let engine = engine();
    let start = engine.genesis().params;
    let honest = train(&engine, &start, None);
    let (window, seed, uid) = WHO;
    let assignment = engine.assignment(window, seed, uid).unwrap();
    let batches = engine.training_batches(&assignment, seed);
    let lr = engine.spec().inner_lr(window);
    let steps = engine.spec().training.segments();
    let movement = honest
        .last()
        .unwrap()
        .params
        .iter()
        .zip(start.iter())
        .map(|(e, s)| (*e as f64 - *s as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    let mut jumped = vec![honest[0].clone()];
    let n = start.len();
    for p in jumped[0].params.iter_mut().step_by(n / 8).take(8) {
        *p += (0.05 * movement / 8f64.sqrt()) as f32;
    }
    for at in &steps[1..] {
        let from = jumped.last().unwrap();
        let end = engine
            .trainer::<CpuTrainBackend>(&Default::default())
            .resume(&start, from, &batches[at.clone()], lr);
        jumped.push(TrainState {
            step: at.end,
            ..end
        });
    }
    let here = task::device::cpu_backend();
    let work = commit(&engine, &start, jumped, here);
    let push = 0.05 * movement / 8f64.sqrt();
    let honest_end = honest.last().unwrap().whole(&start);
    for i in (0..n).step_by(n / 8).take(8) {
        let moved = (start[i] - honest_end[i] - work.dense[i]) as f64;
        assert!(moved > push / 2.0, "parameter {i}: {moved} of {push}");
    }
    // The audit that draws segment 0 finds the jump, bit for bit.
    let failure = audit(&engine, &start, &work, 0.0).failure.unwrap();
    assert_eq!(failure.kind, ReasonKind::Irreproducible, "{}", failure.text);
    assert!(failure.text.contains("segment 0"), "{}", failure.text);
    // The audit that draws segment 1 (and the last) re-executes both exactly.
    let served = Artefacts {
        dense: codec::encode_dense(&work.dense).into(),
        residual_in: codec::encode_dense(&vec![0.0; n]).into(),
        segments: [1, 2]
            .into_iter()
            .map(|index| ServedSegment {
                index,
                start: Some(work.states[index - 1].to_bytes().into()),
                end: work.states[index].to_bytes().into(),
            })
            .collect(),
    };
    let checkpoint = engine.genesis();
    let audited = Audited {
        window,
        window_seed: seed,
        checkpoint: &checkpoint,
        gradient: &work.gradient,
    };
    let comparison = Comparison {
        tolerance: 0.0,
        evaluator: here,
    };
    let finding = examine_window(&engine, audited, uid, Ok(served), comparison);
    assert_eq!(finding.record.failure, None);
    assert_eq!(finding.record.relative_difference, Some(0.0));
}
