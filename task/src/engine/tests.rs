use super::*;
use crate::trainer::CpuTrainBackend;

pub(crate) fn tiny_spec() -> TaskSpec {
    let mut spec =
        TaskSpec::from_toml_str(include_str!("../../../tasks/localnet-lm.toml")).unwrap();
    let model = spec.model.transformer_mut().unwrap();
    model.d_model = 32;
    model.seq_len = 32;
    model.n_layers = 1;
    spec.training.batch_size = 8;
    spec.training.set_inner_steps(12);
    spec.scoring.eval_batch_size = 8;
    spec
}

#[test]
fn a_batch_splits_into_its_rows_in_order() {
    let engine = TaskEngine::new(tiny_spec());
    let assignment = engine.assignment(0, 3, 0).unwrap();
    let batch = engine.training_batches(&assignment, 3).remove(0);
    for parts in [1, 2, 3, 8, 20] {
        let split = batch.split(parts);
        assert_eq!(split.len(), parts.min(batch.rows));
        assert!(split.iter().all(|p| p.rows > 0));
        assert!(split.windows(2).all(|w| w[0].rows >= w[1].rows));
        assert_eq!(Batch::concat(&split), batch, "{parts} parts");
    }
}

#[test]
fn parameters_round_trip_through_the_model() {
    let engine = TaskEngine::new(tiny_spec());
    let genesis = engine.genesis();
    let model = engine.model::<CpuBackend>(&Default::default(), &genesis.params);
    let (layout, values) = read_params(&model);
    assert_eq!(&layout, engine.layout());
    assert_eq!(values, *genesis.params);
    assert!(layout.entries.iter().any(|e| e.name.ends_with("gamma")));
}

#[test]
fn training_lowers_loss_and_its_pseudo_gradient_is_useful_on_heldout_data() {
    let engine = TaskEngine::new(tiny_spec());
    let start = engine.genesis();
    let assignment = engine.assignment(0, 11, 0).unwrap();
    let batches = engine.training_batches(&assignment, 11);
    let device = Default::default();
    let outcome = engine.train::<CpuTrainBackend>(&device, &start.params, 0, &batches, |_, _| {});
    assert!(outcome.losses.last().unwrap() < outcome.losses.first().unwrap());
    let delta = outcome.pseudo_gradient(&start.params);
    let heldout = engine.heldout_batches(5, 4);
    let before: f32 = engine
        .losses::<CpuBackend>(&device, &start.params, &heldout)
        .iter()
        .sum();
    let moved = pseudo_gradient::aggregate::outer_sgd_step(&start.params, &delta, 1.0);
    let after: f32 = engine
        .losses::<CpuBackend>(&device, &moved, &heldout)
        .iter()
        .sum();
    assert!(after < before, "held-out loss {before} -> {after}");
    // Evaluation is bit-for-bit reproducible on the CPU backend.
    assert_eq!(
        engine.losses::<CpuBackend>(&device, &moved, &heldout),
        engine.losses::<CpuBackend>(&device, &moved, &heldout)
    );
}

#[test]
fn a_group_miner_moves_only_its_group_and_its_gradient_still_helps() {
    let mut spec = tiny_spec();
    spec.shards.groups = 3;
    let engine = TaskEngine::new(spec);
    assert_eq!(engine.groups().len(), 3);
    let start = engine.genesis();
    let device = Default::default();
    let heldout = engine.heldout_batches(5, 4);
    let before: f32 = engine
        .losses::<CpuBackend>(&device, &start.params, &heldout)
        .iter()
        .sum();
    for group in engine.groups().groups() {
        let outcome = engine
            .train_window::<CpuTrainBackend>(
                &device,
                &start.params,
                None,
                0,
                11,
                0,
                group.range.clone(),
                |_, _| {},
            )
            .unwrap();
        let delta = outcome.pseudo_gradient(&start.params);
        let moved: Vec<usize> = (0..delta.len()).filter(|&i| delta[i] != 0.0).collect();
        assert!(!moved.is_empty(), "group {}", group.index);
        assert!(
            moved.iter().all(|i| group.range.contains(i)),
            "group {} moved a frozen parameter",
            group.index
        );
        let moved = pseudo_gradient::aggregate::outer_sgd_step(&start.params, &delta, 1.0);
        let after: f32 = engine
            .losses::<CpuBackend>(&device, &moved, &heldout)
            .iter()
            .sum();
        assert!(after < before, "group {}: {before} -> {after}", group.index);
    }
}

/// A window trained in segments has the bits of the window trained whole, and every segment
/// re-executed from the state at its start (as a miner serves it, through its bytes; the window's
/// start state for the first) ends in the very state the window reached there: an audit of a
/// segment on the CPU compares bits. Whether the window starts from a fresh optimizer or from the
/// checkpoint's carried one.
#[test]
fn a_segment_resumed_from_its_served_state_ends_in_the_same_bits() {
    let mut spec = tiny_spec();
    spec.training.segment_steps = 5;
    spec.training.warmup_steps = 3;
    spec.training.carry_moments = true;
    let engine = TaskEngine::new(spec);
    let genesis = engine.genesis();
    let inner = engine.next_inner(&genesis, (1, 5));
    assert_eq!(inner.as_ref().unwrap().steps, 12, "one window of 12 steps");
    let carrying = task_checkpoint(&engine, &genesis, inner);
    let fresh_end = segments_reproduce(&engine, &genesis);
    let carried_end = segments_reproduce(&engine, &carrying);
    assert_ne!(
        fresh_end, carried_end,
        "the carried state steers the window"
    );
    // Another window's public training carries other moments: the state is the window's.
    assert_ne!(
        engine.next_inner(&genesis, (2, 6)),
        carrying.inner.as_deref().cloned()
    );
}

/// `genesis`'s parameters with the inner state `inner`.
fn task_checkpoint(
    engine: &TaskEngine,
    genesis: &crate::Checkpoint,
    inner: Option<crate::InnerState>,
) -> crate::Checkpoint {
    crate::Checkpoint::with_inner(engine.digest(), genesis.params.to_vec(), inner)
}

/// Checks every segment of one window from `start` against its re-execution; the window's end.
fn segments_reproduce(engine: &TaskEngine, start: &crate::Checkpoint) -> Vec<f32> {
    let device = Default::default();
    let (window, seed, uid) = (2, 11, 1);
    let whole = engine
        .train_window::<CpuTrainBackend>(
            &device,
            &start.params,
            start.inner.as_ref(),
            window,
            seed,
            uid,
            0..start.params.len(),
            |_, _| {},
        )
        .unwrap();
    let group = ParamGroups::balanced(engine.layout(), 3).groups()[1]
        .range
        .clone();
    for trainable in [0..start.params.len(), group] {
        let mut states = vec![TrainState::window_start(start, trainable.clone())];
        let outcome = engine
            .train_window_in_segments::<CpuTrainBackend>(
                &device,
                &start.params,
                start.inner.as_ref(),
                (window, seed, uid),
                trainable.clone(),
                |_, _| {},
                |state| states.push(state),
            )
            .unwrap();
        if trainable.len() == start.params.len() {
            assert_eq!(outcome.end, whole.end, "segments change no bit");
        }
        assert_eq!(states.len(), 4, "12 steps in segments of 5, 5 and 2");
        assert_eq!(states.last().unwrap().whole(&start.params), outcome.end);
        for segment in 0..3 {
            let served = &states[segment];
            let from = if segment == 0 {
                served.clone()
            } else {
                TrainState::from_bytes(&served.to_bytes(), served.step, trainable.clone()).unwrap()
            };
            let end = engine
                .reexecute_segment(start, (window, seed, uid), segment, &from)
                .unwrap();
            assert_eq!(
                end.digest(),
                states[segment + 1].digest(),
                "segment {segment}"
            );
        }
    }
    whole.end
}

/// An engine `on` the CPU device measures and trains with the very kernels the generic calls
/// name: a validator's `--device cpu` keeps every bit of its records.
#[test]
fn the_cpu_device_gives_the_bits_of_the_cpu_backend() {
    let engine = TaskEngine::new(tiny_spec()).on(crate::Device::Cpu);
    assert_eq!(engine.device(), crate::Device::Cpu);
    let start = engine.genesis();
    let pages = engine.reference_pages(7, 4, 3);
    let direct = engine
        .train_reference::<CpuTrainBackend>(
            &Default::default(),
            &start.params,
            None,
            1,
            7,
            &pages,
            3,
        )
        .end;
    let on_device = engine
        .device()
        .train_reference(&engine, &start.params, None, (1, 7), &pages, 3)
        .end;
    assert_eq!(direct, on_device);
    let batches = engine.eval_batches(7, 4, 3, 2);
    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
    assert_eq!(
        bits(engine.losses::<CpuBackend>(&Default::default(), &direct, &batches)),
        bits(engine.device().losses(&engine, &direct, &batches)),
    );
}

#[test]
fn only_cpu_backends_promise_the_same_bits() {
    assert!(crate::device::is_cpu_backend(crate::device::cpu_backend()));
    assert!(crate::device::is_cpu_backend("cpu"));
    for gpu in ["cuda:0", "wgpu", "cpux", ""] {
        assert!(!crate::device::is_cpu_backend(gpu), "{gpu}");
    }
}
