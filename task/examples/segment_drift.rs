//! How far an honest segment drifts from its re-execution on the CPU, against what cheating moves
//! it: the measurements behind a task's audit tolerance (`scoring.spot_check_tolerance`).
//!
//! For one miner window of the task it prints, per segment, the relative difference
//! (`task::segment::segment_difference`) between the segment's end and the CPU's re-execution of
//! the segment from the same start:
//! - trained on the CPU with per-step noise of 1e-6 relative (`Trainer::with_step_noise`), one
//!   row per seed: a stand-in for a card whose rounding differs from the CPU's;
//! - trained on another device (`wgpu`, `cuda:0`) when one is named;
//! - a step skipped in the segment, and the segment's end pushed by 1% of its movement.
//!
//! With `carried` after the seeds, the window is the second, from the checkpoint that carries the
//! inner optimizer state of the first window's public training (`TaskEngine::next_inner`), as
//! under `training.carry_moments`.
//!
//! `cargo run --release -p task --example segment_drift -- tasks/localnet-lm.toml [cpu|wgpu|cuda:0] [seeds] [carried]`

use task::segment::{TrainState, segment_difference};
use task::{Checkpoint, CpuTrainBackend, Device, TaskEngine, TaskSpec};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let task = args
        .next()
        .unwrap_or_else(|| "tasks/localnet-lm.toml".into());
    let device: Device = args
        .next()
        .unwrap_or_else(|| "cpu".into())
        .parse()
        .map_err(anyhow::Error::msg)?;
    let seeds: u64 = args.next().map_or(Ok(3), |s| s.parse())?;
    let carried = args.next().as_deref() == Some("carried");
    let engine = TaskEngine::new(TaskSpec::from_file(&task)?);
    let seed = 7;
    let (base, window) = if carried {
        let genesis = engine.genesis();
        let inner = engine
            .next_inner(&genesis, (0, seed))
            .ok_or_else(|| anyhow::anyhow!("{task} carries no optimizer state"))?;
        let params = genesis.params.to_vec();
        (
            Checkpoint::with_inner(engine.digest(), params, Some(inner)),
            1,
        )
    } else {
        (engine.genesis(), 0)
    };
    let start = base.params.clone();
    let uid = 1;
    let who = (window, seed, uid);
    let all = 0..start.len();
    let steps = engine.spec().training.segments();
    println!(
        "{}: {} parameters, {} segments of {} steps",
        engine.spec().task.name,
        start.len(),
        steps.len(),
        engine.spec().training.segment_steps
    );
    let drift = |states: &[TrainState]| -> Vec<f64> {
        let mut from = TrainState::window_start(&base, all.clone());
        let mut out = Vec::new();
        for (i, end) in states.iter().enumerate() {
            let redone = engine
                .reexecute_segment(&base, who, i, &from)
                .expect("uid fits");
            out.push(segment_difference(&from, end, &redone));
            from = end.clone();
        }
        out
    };
    let row = |name: &str, values: &[f64]| {
        let cells: Vec<String> = values.iter().map(|v| format!("{v:.2e}")).collect();
        println!("| {name} | {} |", cells.join(" | "));
    };
    let header: Vec<String> = (0..steps.len()).map(|i| format!("segment {i}")).collect();
    println!("| training | {} |", header.join(" | "));
    println!("|---|{}", "---|".repeat(steps.len()));
    let assignment = engine.assignment(window, seed, uid)?;
    let batches = engine.training_batches(&assignment, seed);
    let lr = engine.spec().inner_lr(window);
    let mut exact = Vec::new();
    engine.train_window_in_segments::<CpuTrainBackend>(
        &Default::default(),
        &start,
        base.inner.as_ref(),
        who,
        all.clone(),
        |_, _| {},
        |s| exact.push(s),
    )?;
    row("cpu, as re-executed", &drift(&exact));
    for noise_seed in 0..seeds {
        let mut states = Vec::new();
        engine
            .trainer::<CpuTrainBackend>(&Default::default())
            .carrying(base.inner.clone())
            .with_step_noise(1e-6, noise_seed)
            .train_in_segments(
                &start,
                &batches,
                lr,
                engine.spec().training.segment_steps,
                |_, _| {},
                |s| states.push(s),
            );
        row(
            &format!("cpu, 1e-6 noise, seed {noise_seed}"),
            &drift(&states),
        );
    }
    if device != Device::Cpu {
        let mut states = Vec::new();
        device.train_window_in_segments(
            &engine,
            &start,
            base.inner.as_ref(),
            who,
            all.clone(),
            |_, _| {},
            |s| states.push(s),
        )?;
        row(&format!("{device}"), &drift(&states));
        // Which part of the state drifts: the parameters alone, each moment alone.
        let mut from = TrainState::window_start(&base, all.clone());
        for (i, end) in states.iter().enumerate() {
            let redone = engine
                .reexecute_segment(&base, who, i, &from)
                .expect("uid fits");
            let only = |keep: usize| {
                let pick = |s: &TrainState| TrainState {
                    params: if keep == 0 {
                        s.params.clone()
                    } else {
                        from.params.clone()
                    },
                    first_moment: if keep == 1 {
                        s.first_moment.clone()
                    } else {
                        vec![]
                    },
                    second_moment: if keep == 2 {
                        s.second_moment.clone()
                    } else {
                        vec![]
                    },
                    ..s.clone()
                };
                segment_difference(&pick(&from), &pick(end), &pick(&redone))
            };
            println!(
                "segment {i}: parameters {:.2e}, first moment {:.2e}, second moment {:.2e}",
                only(0),
                only(1),
                only(2)
            );
            if i == 0 {
                drift_by_tensor(&engine, &end.params, &redone.params);
            }
            from = end.clone();
        }
    }
    // Cheating: the segment with its first step skipped, and its end pushed by 1% of its movement
    // onto eight parameters.
    let mut skipped = Vec::new();
    let mut pushed = Vec::new();
    let mut from = TrainState::window_start(&base, all.clone());
    for (i, at) in steps.iter().enumerate() {
        let end = &exact[i];
        let lazy = engine
            .trainer::<CpuTrainBackend>(&Default::default())
            .carrying(base.inner.clone())
            .resume(&start, &from, &batches[at.start + 1..at.end], lr);
        skipped.push(segment_difference(
            &from,
            end,
            &TrainState {
                step: end.step,
                ..lazy
            },
        ));
        let movement: f64 = end
            .params
            .iter()
            .zip(&from.params)
            .map(|(e, s)| (*e as f64 - *s as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let mut push = end.clone();
        let each = (0.01 * movement / 8f64.sqrt()) as f32;
        for p in push.params.iter_mut().step_by(start.len() / 8).take(8) {
            *p += each;
        }
        pushed.push(segment_difference(&from, &push, end));
        from = end.clone();
    }
    row("one step skipped", &skipped);
    row("end pushed by 1% of the movement", &pushed);
    // What an audit re-executes: the whole window (before segments), or two of its segments (one
    // drawn and the last), each from its start state read from its bytes.
    let median = |mut runs: Vec<f64>| {
        runs.sort_by(f64::total_cmp);
        runs[runs.len() / 2]
    };
    let whole = median(
        (0..3)
            .map(|_| {
                let began = std::time::Instant::now();
                engine
                    .train_window::<CpuTrainBackend>(
                        &Default::default(),
                        &start,
                        base.inner.as_ref(),
                        window,
                        seed,
                        uid,
                        all.clone(),
                        |_, _| {},
                    )
                    .expect("uid fits");
                began.elapsed().as_secs_f64()
            })
            .collect(),
    );
    let last = steps.len() - 1;
    let audited = [last.saturating_sub(2), last];
    let segments = median(
        (0..3)
            .map(|_| {
                let began = std::time::Instant::now();
                for &i in &audited {
                    let from = match i.checked_sub(1) {
                        Some(before) => {
                            let bytes = exact[before].to_bytes();
                            TrainState::from_bytes(&bytes, exact[before].step, all.clone())
                                .expect("own state")
                        }
                        None => TrainState::window_start(&base, all.clone()),
                    };
                    engine
                        .reexecute_segment(&base, who, i, &from)
                        .expect("uid fits");
                }
                began.elapsed().as_secs_f64()
            })
            .collect(),
    );
    println!(
        "audit re-execution (median of 3): whole window {whole:.2} s, segments {audited:?} {segments:.2} s ({:.0}% of the window)",
        100.0 * segments / whole
    );
    Ok(())
}

/// The tensors whose parameters differ most between a segment's end and its re-execution, with
/// their share of the squared difference.
fn drift_by_tensor(engine: &TaskEngine, end: &[f32], redone: &[f32]) {
    let mut shares: Vec<(f64, usize, &str)> = engine
        .layout()
        .entries
        .iter()
        .map(|e| {
            let range = e.offset..e.offset + e.len;
            let squared = end[range.clone()]
                .iter()
                .zip(&redone[range])
                .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
                .sum::<f64>();
            let differing = end[e.offset..e.offset + e.len]
                .iter()
                .zip(&redone[e.offset..e.offset + e.len])
                .filter(|(a, b)| a != b)
                .count();
            (squared, differing, e.name.as_str())
        })
        .collect();
    let total: f64 = shares.iter().map(|s| s.0).sum();
    shares.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (squared, differing, name) in shares.iter().take(6) {
        println!(
            "  {name}: {:.1}% of the squared difference, {differing} parameters differ",
            100.0 * squared / total.max(f64::MIN_POSITIVE)
        );
    }
}
