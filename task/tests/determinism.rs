//! On the CPU backend, training a window and evaluating the result give the same bits in another
//! process with another thread count, whether a training step's parts run on threads of their own
//! or one after the other: what lets anyone replay a validator's evaluations.

use pseudo_gradient::aggregate::outer_sgd_step;
use std::process::Command;
use task::{CpuBackend, CpuTrainBackend, TaskEngine, TaskSpec};

const CHILD: &str = "SUBNET_DETERMINISM_OUT";

/// Bits of the training delta and of the held-out losses after applying it, as hex lines; each
/// step's parts on threads of their own or one after the other.
fn fingerprint(threads: bool) -> String {
    let mut spec = TaskSpec::from_toml_str(include_str!("../../tasks/localnet-lm.toml")).unwrap();
    let model = spec.model.transformer_mut().unwrap();
    model.d_model = 32;
    model.n_layers = 1;
    model.seq_len = 32;
    spec.training.set_inner_steps(3);
    spec.training.batch_size = 4;
    spec.scoring.eval_batch_size = 4;
    let engine = TaskEngine::new(spec);
    let device = Default::default();
    let start = engine.genesis();
    let assignment = engine.assignment(2, 99, 1).unwrap();
    let batches = engine.training_batches(&assignment, 99);
    let outcome = engine
        .trainer::<CpuTrainBackend>(&device)
        .with_threads(threads)
        .train_from(
            &start.params,
            &batches,
            engine.spec().training.lr,
            |_, _| {},
        );
    let delta = outcome.pseudo_gradient(&start.params);
    let delta_bytes: Vec<u8> = delta.iter().flat_map(|x| x.to_le_bytes()).collect();
    let moved = outer_sgd_step(&start.params, &delta, 0.5);
    let losses = engine.losses::<CpuBackend>(&device, &moved, &engine.heldout_batches(7, 3));
    let mut out = format!(
        "delta {}\n",
        task::Checkpoint::new([0; 32], delta).short_digest()
    );
    out.push_str(&format!("delta-bytes {}\n", delta_bytes.len()));
    for l in losses {
        out.push_str(&format!("loss {:08x}\n", l.to_bits()));
    }
    out
}

#[test]
fn training_and_evaluation_are_bit_identical_across_processes() {
    if let Ok(path) = std::env::var(CHILD) {
        std::fs::write(path, fingerprint(false)).unwrap();
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("child.txt");
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "training_and_evaluation_are_bit_identical_across_processes",
            "--test-threads",
            "1",
        ])
        .env(CHILD, &path)
        .env("RAYON_NUM_THREADS", "1")
        .status()
        .unwrap();
    assert!(status.success(), "child process failed");
    let here = fingerprint(true);
    let there = std::fs::read_to_string(&path).unwrap();
    assert_eq!(here, there, "results differ between processes");
    assert!(here.lines().filter(|l| l.starts_with("loss")).count() == 3);
}
