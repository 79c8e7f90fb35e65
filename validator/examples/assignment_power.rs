//! How well the assignment check tells honest work from work on other pages, without any network:
//! for each seed, four honest miners train their windows from a shared model (compressed with error
//! feedback, as they send them), a validator checks each against its own reference training, and the
//! same check runs on an honest gradient presented as another uid's (a free rider). Prints every
//! p-value and the share of honest checks that fail and of free-rider checks that pass at the task's
//! threshold. A failed check is not a verdict: it sends the miner to an audit in the same window.
//!
//! cargo run --release -p validator --example assignment_power -- [SEEDS] [WINDOWS]

use pseudo_gradient::aggregate::{aggregate_clipped, l2_norm, outer_sgd_step};
use pseudo_gradient::codec;
use task::{TaskEngine, TaskSpec};
use validator::evaluate;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seeds: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(4);
    let windows: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(4);
    let spec = TaskSpec::from_toml_str(include_str!("../../tasks/localnet-lm.toml")).unwrap();
    let threshold = spec.scoring.assignment_p_value;
    let c = spec.compression.clone();
    let engine = TaskEngine::new(spec);
    let layout = c.layout();
    let n = engine.num_params();
    let send = |dense: &[f32], residual: &mut Vec<f32>| {
        let out = codec::compress(dense, residual, layout, c.error_feedback as f32);
        *residual = out.residual_out;
        codec::decode(&out.payload, n).unwrap()
    };
    let (mut honest, mut honest_failed, mut riders, mut riders_passed) = (0, 0, 0, 0);
    for seed in 1..=seeds {
        let mut params = engine.genesis().params.to_vec();
        let mut residuals = vec![vec![0.0f32; n]; 4];
        let mut reference_residual = vec![0.0f32; n];
        for window in 1..=windows {
            let window_seed = task::rng::derive_seed(&[seed, window]);
            let eval_seed = task::rng::derive_seed(&[seed, window, 1]);
            let checkpoint = task::Checkpoint::new(engine.digest(), params.clone());
            let reference =
                evaluate::reference(&engine, &checkpoint, window, window_seed, 8, eval_seed);
            let control = send(&reference, &mut reference_residual);
            let clip = l2_norm(&control);
            let mut line = format!("seed {seed} window {window}: honest");
            let mut sent = Vec::new();
            for (i, uid) in (2..6u16).enumerate() {
                let dense = evaluate::reexecute(
                    &engine,
                    &checkpoint,
                    window,
                    window_seed,
                    uid,
                    0..params.len(),
                )
                .unwrap();
                let payload = send(&dense, &mut residuals[i]);
                let draw = evaluate::AssignmentDraw {
                    window,
                    window_seed,
                    eval_seed,
                    uid,
                };
                let p = evaluate::assignment_evidence(
                    &engine,
                    &params,
                    (&payload, &control, clip),
                    engine.spec().scoring.eval_step,
                    draw,
                )
                .unwrap()
                .check()
                .p_value;
                line += &format!(" {p:.4}");
                honest += 1;
                honest_failed += usize::from(p > threshold);
                sent.push(payload);
            }
            let draw = evaluate::AssignmentDraw {
                window,
                window_seed,
                eval_seed,
                uid: 9,
            };
            let p = evaluate::assignment_evidence(
                &engine,
                &params,
                (&sent[0], &control, clip),
                engine.spec().scoring.eval_step,
                draw,
            )
            .unwrap()
            .check()
            .p_value;
            line += &format!(" | free rider {p:.4}");
            riders += 1;
            riders_passed += usize::from(p <= threshold);
            println!("{line}");
            let refs: Vec<&[f32]> = sent.iter().map(Vec::as_slice).collect();
            let mean = aggregate_clipped(&refs, clip).unwrap();
            params = outer_sgd_step(&params, &mean, engine.spec().training.outer_lr);
        }
    }
    println!(
        "at p <= {threshold}: {honest_failed} of {honest} honest checks failed (each sent to an audit), {riders_passed} of {riders} free-rider checks passed"
    );
}
