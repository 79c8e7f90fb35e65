//! A classifier on a real public table (the red wine quality data shipped inside linfa-datasets):
//! the shipped wine-quality task trains and its held-out loss falls below the loss of predicting the
//! class frequencies; broken table tasks list every problem.

use pseudo_gradient::aggregate::{aggregate_median_clipped, outer_sgd_step};
use task::engine::Corpus;
use task::problems::SpecError;
use task::{CpuBackend, CpuTrainBackend, Inputs, TaskEngine, TaskSpec};

const WINE: &str = include_str!("../../tasks/wine-quality.toml");

fn mean(xs: &[f32]) -> f64 {
    xs.iter().map(|&x| x as f64).sum::<f64>() / xs.len() as f64
}

/// Four windows of three workers, DiLoCo-style.
#[test]
fn wine_quality_trains_and_beats_the_class_prior_on_held_out_rows() {
    let engine = TaskEngine::new(TaskSpec::from_toml_str(WINE).unwrap());
    let Corpus::Table(table) = engine.corpus() else {
        panic!("wine-quality is a table task")
    };
    let data = &engine.spec().data;
    let (page_len, train_pages) = (data.page_len, data.train_pages);
    let train_rows = train_pages as usize * page_len;
    let heldout_rows = train_rows..train_rows + data.heldout_pages as usize * page_len;
    // The reference: predicting the held-out rows' own class frequencies, the best a model that
    // ignores the features can do there.
    let prior = table.prior_entropy(heldout_rows.clone());

    let device = Default::default();
    let heldout = engine.heldout_batches(0xC0FFEE, 8);
    for batch in &heldout {
        let Inputs::Features(values) = &batch.inputs else {
            panic!("table batches carry features")
        };
        assert_eq!(values.len(), batch.rows * 11);
        assert_eq!(batch.targets.len(), batch.rows);
        assert!(batch.targets.iter().all(|&c| (0..6).contains(&c)));
    }
    for spans in engine.page_spans(&[train_pages, train_pages + 3], 1, 2, 8) {
        assert!(
            spans
                .iter()
                .all(|s| s.page >= train_pages && s.offset < page_len)
        );
    }

    let mut params = engine.genesis().params.to_vec();
    let start = mean(&engine.losses::<CpuBackend>(&device, &params, &heldout));
    let mut trained = 0;
    for window in 0..4u64 {
        let seed = task::rng::derive_seed(&[window, 5]);
        let deltas: Vec<Vec<f32>> = (0..3u16)
            .map(|uid| {
                let a = engine.assignment(window, seed, uid).unwrap();
                assert!(a.pages.iter().all(|&p| p < train_pages));
                let spans = engine.training_spans(&a, seed);
                // Every row trained on is paired with a held-back row of the same page.
                for (span, partner) in spans[0].iter().zip(engine.held_back_partners(&spans[0])) {
                    assert!(!engine.held_back(seed, span.page, span.offset));
                    assert!(engine.held_back(seed, partner.page, partner.offset));
                }
                let batches = engine.training_batches(&a, seed);
                trained += batches.iter().map(|b| b.rows).sum::<usize>();
                engine
                    .train::<CpuTrainBackend>(&device, &params, window, &batches, |_, _| {})
                    .pseudo_gradient(&params)
            })
            .collect();
        let refs: Vec<&[f32]> = deltas.iter().map(Vec::as_slice).collect();
        let mean_delta = aggregate_median_clipped(&refs).unwrap();
        params = outer_sgd_step(&params, &mean_delta, engine.spec().training.outer_lr);
    }
    assert_eq!(trained, 4 * 3 * 20 * 32);
    let losses = engine.losses::<CpuBackend>(&device, &params, &heldout);
    let end = mean(&losses);
    println!("held-out loss {start:.4} -> {end:.4}, class prior {prior:.4}");
    // Measured: 1.84 -> 0.92 nats against a class prior of 1.16.
    assert!(end < start - 0.5, "held-out loss {start} -> {end}");
    assert!(
        end < prior - 0.1,
        "held-out loss {end} against the class prior {prior}"
    );
    // Evaluation is bit-for-bit reproducible on the CPU backend for this architecture too.
    assert_eq!(
        losses,
        engine.losses::<CpuBackend>(&device, &params, &heldout)
    );
    assert!(engine.loss_floor().is_none());
}

fn problems(text: &str) -> Vec<String> {
    match TaskSpec::from_toml_str(text) {
        Err(SpecError::Invalid(problems)) => problems.iter().map(ToString::to_string).collect(),
        other => panic!("accepted a broken task: {other:?}"),
    }
}

#[test]
fn broken_table_tasks_list_every_problem() {
    let wrong_shape = WINE
        .replace("inputs = 11", "inputs = 10")
        .replace("classes = 6", "classes = 5")
        .replace("hidden = [64, 64]", "hidden = [64, 0]")
        .replace("train_pages = 80", "train_pages = 90");
    assert_eq!(
        problems(&wrong_shape),
        [
            "model.inputs: = 10 but the table has 11 features",
            "model.classes: = 5 but the table has 6 classes",
            "model.hidden: = [64, 0]: every layer needs a positive width",
            "data.train_pages: + data.heldout_pages = 109 pages of 16 rows, but wine-quality has 1599 rows (99 pages)",
        ]
    );

    // A language model on a table, and a classifier on text, are each named.
    let lm = include_str!("../../tasks/localnet-lm.toml");
    let model_of = |text: &str| {
        let start = text.find("[model]").unwrap();
        let end = start + text[start..].find("\n[data]").unwrap();
        text[start..end].to_string()
    };
    let transformer_on_table = WINE.replace(&model_of(WINE), &model_of(lm));
    assert!(
        problems(&transformer_on_table).contains(
            &"model.architecture: = \"transformer\" needs token data ([data.markov] or [data.text]), not a table"
                .to_string()
        )
    );
    let mlp_on_text = lm.replace(&model_of(lm), &model_of(WINE));
    assert!(problems(&mlp_on_text).contains(
        &"model.architecture: = \"mlp\" needs a table ([data.table]), not token data".to_string()
    ));
    // An unknown architecture or data set is a parse error that names the choices.
    let unknown = WINE.replace("architecture = \"mlp\"", "architecture = \"rnn\"");
    let Err(SpecError::Parse(e)) = TaskSpec::from_toml_str(&unknown) else {
        panic!("accepted an unknown architecture")
    };
    assert!(
        e.to_string().contains("expected `transformer` or `mlp`"),
        "{e}"
    );
    let unknown = WINE.replace("source = \"wine-quality\"", "source = \"titanic\"");
    let Err(SpecError::Parse(e)) = TaskSpec::from_toml_str(&unknown) else {
        panic!("accepted an unknown data set")
    };
    assert!(e.to_string().contains("wine-quality"), "{e}");
}
