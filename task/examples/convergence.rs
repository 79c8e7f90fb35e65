//! DiLoCo on one machine, without the network: W workers train H inner steps from the global model on
//! their own pages each window; the median-clipped mean of their pseudo-gradients takes an outer
//! step. Prints the held-out loss per window against the corpus's loss floor.
//!
//! `cargo run --release -p task --example convergence -- TASK.toml WINDOWS WORKERS [fresh|persistent] [LR] [STEPS] [OUTER_LR] [OUTER_MOMENTUM]`

use pseudo_gradient::aggregate::{aggregate_median_clipped, outer_nesterov_step};
use std::time::Instant;
use task::{CpuBackend, CpuTrainBackend, TaskEngine, TaskSpec};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let text = std::fs::read_to_string(
        args.get(1)
            .map(String::as_str)
            .unwrap_or("tasks/localnet-lm.toml"),
    )
    .expect("task file");
    let windows: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
    let workers: u16 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(3);
    let persistent = args.get(4).map(|a| a == "persistent").unwrap_or(true);
    let mut spec = TaskSpec::from_toml_str(&text).expect("task parses");
    if let Some(lr) = args.get(5).and_then(|a| a.parse().ok()) {
        spec.training.lr = lr;
    }
    if let Some(steps) = args.get(6).and_then(|a| a.parse().ok()) {
        spec.training.set_inner_steps(steps);
    }
    if let Some(lr) = args.get(7).and_then(|a| a.parse().ok()) {
        spec.training.outer_lr = lr;
    }
    if let Some(mu) = args.get(8).and_then(|a| a.parse().ok()) {
        spec.training.outer_momentum = mu;
    }
    let engine = TaskEngine::new(spec);
    let device = Default::default();
    let heldout = engine.heldout_batches(0xC0FFEE, 8);
    let loss = |p: &[f32]| {
        engine
            .losses::<CpuBackend>(&device, p, &heldout)
            .iter()
            .map(|&l| l as f64)
            .sum::<f64>()
            / heldout.len() as f64
    };
    let mut params = engine.genesis().params.to_vec();
    let mut trainers: Vec<_> = (0..workers)
        .map(|_| engine.trainer::<CpuTrainBackend>(&device))
        .collect();
    let floor = engine
        .loss_floor()
        .map_or("unknown".to_string(), |f| format!("{f:.4}"));
    println!(
        "floor {floor}, start {:.4}, {} optimizer state, lr {}",
        loss(&params),
        if persistent { "persistent" } else { "fresh" },
        engine.spec().training.lr
    );
    let mut momentum: Vec<f32> = Vec::new();
    let started = Instant::now();
    for window in 0..windows {
        let seed = task::rng::derive_seed(&[window, 99]);
        let deltas: Vec<Vec<f32>> = (0..workers)
            .map(|uid| {
                let a = engine.assignment(window, seed, uid).unwrap();
                let batches = engine.training_batches(&a, seed);
                let out = if persistent {
                    trainers[uid as usize].train_from(
                        &params,
                        &batches,
                        engine.spec().inner_lr(window),
                        |_, _| {},
                    )
                } else {
                    engine.train::<CpuTrainBackend>(&device, &params, window, &batches, |_, _| {})
                };
                out.pseudo_gradient(&params)
            })
            .collect();
        let refs: Vec<&[f32]> = deltas.iter().map(Vec::as_slice).collect();
        let mean = aggregate_median_clipped(&refs).unwrap();
        let t = &engine.spec().training;
        (params, momentum) =
            outer_nesterov_step(&params, &mean, &momentum, t.outer_lr, t.outer_momentum);
        println!(
            "window {window:>3}  held-out {:.4}  ({:.0} s)",
            loss(&params),
            started.elapsed().as_secs_f64()
        );
    }
}
