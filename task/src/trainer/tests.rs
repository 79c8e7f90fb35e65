use super::*;
use crate::engine::TaskEngine;
use crate::engine::tests::tiny_spec;

/// Two validators re-execute windows at once in one process: trainings running together
/// finish, each with the bits it has alone. (With the parts on rayon's pool a localnet hung
/// after 15 windows: a worker waiting inside burn took up another training's part while
/// holding its graph's lock.)
#[test]
fn trainings_at_once_in_one_process_finish_with_the_bits_of_each_alone() {
    // Matrices large enough for burn to spread its products over rayon's threads.
    let spec = crate::TaskSpec::from_toml_str(include_str!("../../../tasks/localnet-lm.toml"))
        .expect("the localnet task parses");
    let engine = std::sync::Arc::new(TaskEngine::new(spec));
    let train = |engine: &TaskEngine, uid: u16| {
        let start = engine.genesis();
        let assignment = engine.assignment(0, 5, uid).unwrap();
        let batches = &engine.training_batches(&assignment, 5)[..4];
        engine
            .trainer::<CpuTrainBackend>(&Default::default())
            .with_threads(true)
            .train_from(&start.params, batches, 1e-3, |_, _| {})
            .end
    };
    let (done, finished) = std::sync::mpsc::channel();
    for uid in 0..3u16 {
        let (engine, done) = (engine.clone(), done.clone());
        std::thread::spawn(move || {
            let ends: Vec<Vec<f32>> = (0..3).map(|_| train(&engine, uid)).collect();
            done.send((uid, ends)).unwrap();
        });
    }
    for _ in 0..3 {
        let (uid, ends) = finished
            .recv_timeout(std::time::Duration::from_secs(300))
            .expect("trainings running together finish");
        let alone = train(&engine, uid);
        assert!(
            ends.iter().all(|end| *end == alone),
            "uid {uid}: bits changed"
        );
    }
}

#[test]
fn a_step_in_parts_is_the_whole_batch_step_up_to_rounding() {
    let engine = TaskEngine::new(tiny_spec());
    let start = engine.genesis();
    let assignment = engine.assignment(0, 5, 0).unwrap();
    let batches = &engine.training_batches(&assignment, 5)[..2];
    let device = Default::default();
    let run = |parts: usize, parallel: bool| {
        let mut trainer = engine.trainer::<CpuTrainBackend>(&device);
        trainer.parts = parts;
        trainer.parallel = parallel;
        trainer.train_from(&start.params, batches, 1e-3, |_, _| {})
    };
    let whole = run(1, false);
    let threads = run(STEP_SHARDS, true);
    let in_turn = run(STEP_SHARDS, false);
    assert_eq!(threads.end, in_turn.end, "threads change no bit");
    assert_eq!(threads.losses, in_turn.losses);
    for (a, b) in whole.losses.iter().zip(&threads.losses) {
        assert!((a - b).abs() < 1e-5, "loss {a} against {b}");
    }
    let moved = |o: &TrainOutcome| o.pseudo_gradient(&start.params);
    let (a, b) = (moved(&whole), moved(&threads));
    // Adam divides by the gradients' size, so an entry whose gradient is near zero may round
    // either way: compare the whole moves.
    let norm = |v: &mut dyn Iterator<Item = f32>| v.map(|x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let diff = norm(&mut a.iter().zip(&b).map(|(x, y)| x - y));
    let size = norm(&mut a.iter().copied());
    assert!(
        diff < 1e-2 * size,
        "parts moved the weights {diff} away (move {size})"
    );
}
