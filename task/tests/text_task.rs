//! Tasks on a real corpus file: the shipped text-lm (the GNU GPL v3 as bytes) trains and its held-out
//! loss falls; nanoGPT-style u16 token files load; broken text tasks list every problem.

use pseudo_gradient::aggregate::{aggregate_median_clipped, outer_sgd_step};
use task::{CpuBackend, CpuTrainBackend, TaskEngine, TaskSpec};

fn shipped(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tasks")
        .join(name)
}

fn mean(xs: &[f32]) -> f64 {
    xs.iter().map(|&x| x as f64).sum::<f64>() / xs.len() as f64
}

/// Two windows of three workers, DiLoCo-style, on the shipped text task.
#[test]
fn text_lm_trains_on_the_gpl_and_its_held_out_loss_falls() {
    let spec = TaskSpec::from_file(shipped("text-lm.toml")).unwrap();
    let engine = TaskEngine::new(spec);
    let device = Default::default();
    let heldout = engine.heldout_batches(0xC0FFEE, 4);
    // Held-out batches come from the pages after the training split.
    let train_pages = engine.spec().data.train_pages;
    for spans in engine.page_spans(&[train_pages, train_pages + 7], 1, 2, 4) {
        assert!(spans.iter().all(|s| s.page >= train_pages));
    }
    let mut params = engine.genesis().params.to_vec();
    let start = mean(&engine.losses::<CpuBackend>(&device, &params, &heldout));
    for window in 0..2u64 {
        let seed = task::rng::derive_seed(&[window, 5]);
        let deltas: Vec<Vec<f32>> = (0..3u16)
            .map(|uid| {
                let a = engine.assignment(window, seed, uid).unwrap();
                assert!(a.pages.iter().all(|&p| p < train_pages));
                let batches = engine.training_batches(&a, seed);
                engine
                    .train::<CpuTrainBackend>(&device, &params, window, &batches, |_, _| {})
                    .pseudo_gradient(&params)
            })
            .collect();
        let refs: Vec<&[f32]> = deltas.iter().map(Vec::as_slice).collect();
        let mean_delta = aggregate_median_clipped(&refs).unwrap();
        params = outer_sgd_step(&params, &mean_delta, engine.spec().training.outer_lr);
    }
    let end = mean(&engine.losses::<CpuBackend>(&device, &params, &heldout));
    // Uniform over bytes is ln 256 = 5.55 nats; English text is far more predictable.
    assert!(start > 5.0, "{start}");
    // Measured: 5.57 -> 4.63 nats after these two windows.
    assert!(end < start - 0.5, "held-out loss {start} -> {end}");
    assert!(
        engine.loss_floor().is_none(),
        "a real corpus has no known floor"
    );
}

/// The same text as a nanoGPT-style file of u16 token ids (each byte b as token 1000 + b).
#[test]
fn u16_token_files_load_and_broken_text_tasks_list_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read(shipped("data/gpl-3.0.txt")).unwrap();
    let tokens: Vec<u8> = text
        .iter()
        .flat_map(|&b| (1000u16 + b as u16).to_le_bytes())
        .collect();
    let path = dir.path().join("train.bin");
    std::fs::write(&path, &tokens).unwrap();
    let digest = hex::encode(task::Checkpoint::digest_of(&tokens));
    let base = std::fs::read_to_string(shipped("text-lm.toml")).unwrap();
    let with = |vocab: usize, train_pages: u64, digest: &str| {
        base.replace("vocab = 256", &format!("vocab = {vocab}"))
            .replace("train_pages = 60", &format!("train_pages = {train_pages}"))
            .replace(
                "path = \"data/gpl-3.0.txt\"",
                &format!("path = {:?}", path.display().to_string()),
            )
            .replace("format = \"bytes\"", "format = \"u16\"")
            .replace(
                "3e02b2d6f92222549c672c8bc91fff9b87139fd77b725f8c387888922339cacd",
                digest,
            )
    };

    let max = 1000 + *text.iter().max().unwrap() as usize;
    let spec = TaskSpec::from_toml_str(&with(max + 1, 60, &digest)).unwrap();
    let engine = TaskEngine::new(spec);
    let batch = &engine.heldout_batches(3, 1)[0];
    assert!(
        batch
            .tokens()
            .unwrap()
            .iter()
            .all(|&t| (1000..=max as i32).contains(&t))
    );
    assert!(
        engine.losses::<CpuBackend>(
            &Default::default(),
            &engine.genesis().params,
            std::slice::from_ref(batch)
        )[0]
        .is_finite()
    );

    // Too small a vocab and too many pages: both reported, with the key and what to use.
    let problems = match TaskSpec::from_toml_str(&with(256, 70, &digest)) {
        Err(task::problems::SpecError::Invalid(p)) => p,
        other => panic!("expected problems, got {other:?}"),
    };
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["model.vocab", "data.train_pages"], "{problems:?}");
    assert!(
        problems[0]
            .message
            .contains(&format!("use at least {}", max + 1))
    );
    assert!(
        problems[1].message.contains("68 pages"),
        "{}",
        problems[1].message
    );

    // A file that is not the one the task names: the message gives the file's digest.
    let e = TaskSpec::from_toml_str(&with(max + 1, 60, &"0".repeat(64)))
        .unwrap_err()
        .to_string();
    assert!(e.contains(&digest), "{e}");

    // Two sources at once: one problem that says so.
    let both = base
        .replace(
            "path = \"data/gpl-3.0.txt\"",
            &format!("path = {:?}", shipped("data/gpl-3.0.txt").display().to_string()),
        )
        .replace(
            "[shards]",
            "[data.markov]\nseed = 1\nalphabet = 8\nsuccessors = 2\nskew = 1.0\ncontext_skew = 0.0\n\n[shards]",
        );
    let e = TaskSpec::from_toml_str(&both).unwrap_err().to_string();
    assert!(e.contains("exactly one source"), "{e}");
}
