//! What top-k compression costs: trains a few windows of a task from genesis (one worker, its own
//! pages), and for each window compares the held-out usefulness (relative loss drop after stepping
//! `scoring.eval_step` of the gradient) of the dense pseudo-gradient with that of the compressed one
//! that a miner with error feedback would send. Also prints the payload sizes.
//!
//! `cargo run --release -p subnet-cli --example compression -- [TASK.toml] [WINDOWS]`

use pseudo_gradient::aggregate::outer_sgd_step;
use pseudo_gradient::codec;
use scoring::UsefulnessScore;
use task::{CpuBackend, CpuTrainBackend, TaskEngine, TaskSpec};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .map(String::as_str)
        .unwrap_or("tasks/localnet-lm.toml");
    let windows: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let spec = TaskSpec::from_toml_str(&std::fs::read_to_string(path).expect("task file"))
        .expect("valid task");
    let engine = TaskEngine::new(spec);
    let c = engine.spec().compression.clone();
    let n = engine.num_params();
    let layout = c.layout();
    println!(
        "{}: {n} parameters; dense {} bytes, {layout} {} bytes ({:.1}x smaller)",
        engine.spec().task.name,
        codec::Layout::DenseF32.payload_len(n),
        layout.payload_len(n),
        layout.ratio(n)
    );
    let device = Default::default();
    let heldout = engine.heldout_batches(0xE7A1, engine.spec().scoring.eval_batches);
    let step = engine.spec().scoring.eval_step;
    let mut params = engine.genesis().params.to_vec();
    let mut trainer = engine.trainer::<CpuTrainBackend>(&device);
    let mut residual = vec![0f32; n];
    let (mut sum_dense, mut sum_sparse) = (0.0, 0.0);
    for window in 0..windows {
        let seed = task::rng::derive_seed(&[window, 5]);
        let assignment = engine.assignment(window, seed, 0).expect("uid 0 fits");
        let batches = engine.training_batches(&assignment, seed);
        let outcome =
            trainer.train_from(&params, &batches, engine.spec().inner_lr(window), |_, _| {});
        let delta = outcome.pseudo_gradient(&params);
        let accumulated: Vec<f32> = delta
            .iter()
            .zip(&residual)
            .map(|(d, r)| d + c.error_feedback as f32 * r)
            .collect();
        let (_, sent) = layout.encode(&accumulated);
        residual = accumulated.iter().zip(&sent).map(|(a, s)| a - s).collect();
        let base = engine.losses::<CpuBackend>(&device, &params, &heldout);
        let usefulness = |g: &[f32]| {
            let after =
                engine.losses::<CpuBackend>(&device, &outer_sgd_step(&params, g, step), &heldout);
            UsefulnessScore::from_losses(&base, &after)
        };
        let (dense, sparse) = (usefulness(&delta), usefulness(&sent));
        sum_dense += dense.mean_relative_drop;
        sum_sparse += sparse.mean_relative_drop;
        println!(
            "window {window}: usefulness dense {:.4} ± {:.4}, compressed {:.4} ± {:.4} ({:.0}% of dense)",
            dense.mean_relative_drop,
            dense.standard_error,
            sparse.mean_relative_drop,
            sparse.standard_error,
            100.0 * sparse.mean_relative_drop / dense.mean_relative_drop
        );
        // The single worker's model moves by what it sends, as the subnet's would.
        params = outer_sgd_step(&params, &sent, engine.spec().training.outer_lr);
    }
    println!(
        "over {windows} windows the compressed gradient kept {:.0}% of the dense usefulness",
        100.0 * sum_sparse / sum_dense
    );
}
