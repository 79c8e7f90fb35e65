use super::*;

const LOCALNET: &str = include_str!("../../../tasks/localnet-lm.toml");

#[test]
fn shipped_task_parses_and_digest_ignores_formatting() {
    let spec = TaskSpec::from_toml_str(LOCALNET).unwrap();
    let reformatted = TaskSpec::from_toml_str(&spec.canonical_toml()).unwrap();
    assert_eq!(spec.digest(), reformatted.digest());
    let mut other = spec.clone();
    other.training.lr *= 2.0;
    assert_ne!(spec.digest(), other.digest());
}

#[test]
fn every_shipped_task_is_valid() {
    for text in [
        LOCALNET,
        include_str!("../../../tasks/tiny-lm.toml"),
        include_str!("../../../tasks/wine-quality.toml"),
    ] {
        let spec = TaskSpec::from_toml_str(text).unwrap();
        assert!(spec.validate().is_empty());
    }
}

#[test]
fn a_page_holds_a_trained_and_a_held_back_example() {
    let mut spec = TaskSpec::from_toml_str(LOCALNET).unwrap();
    let seq_len = spec.model.transformer_mut().unwrap().seq_len;
    spec.data.page_len = 2 * (seq_len + 1) - 1;
    let Err(SpecError::Invalid(problems)) =
        TaskSpec::from_toml_str(&toml::to_string(&spec).unwrap())
    else {
        panic!("accepted a page of one sequence")
    };
    assert_eq!(problems[0].key, "data.page_len", "{problems:?}");
    // The smallest page the check allows gives every miner training batches.
    spec.data.page_len = 2 * (seq_len + 1);
    let spec = TaskSpec::from_toml_str(&toml::to_string(&spec).unwrap()).unwrap();
    let engine = crate::TaskEngine::new(spec);
    let assignment = engine.assignment(1, 7, 3).unwrap();
    let batches = engine.training_batches(&assignment, 7);
    assert_eq!(batches.len(), engine.spec().training.inner_steps);
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let mut spec = TaskSpec::from_toml_str(LOCALNET).unwrap();
    let model = spec.model.transformer_mut().unwrap();
    model.n_heads = 5;
    model.d_model = 64;
    spec.training.lr = -1.0;
    spec.scoring.eval_batches = 1;
    spec.scoring.eval_step = f64::NAN;
    let text = toml::to_string(&spec).unwrap();
    let Err(SpecError::Invalid(problems)) = TaskSpec::from_toml_str(&text) else {
        panic!("accepted a broken spec")
    };
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "model.n_heads",
            "training.lr",
            "training.min_lr",
            "scoring.eval_batches",
            "scoring.eval_step"
        ]
    );
    assert_eq!(
        problems[0].to_string(),
        "model.n_heads: = 5 does not divide model.d_model = 64"
    );
}
