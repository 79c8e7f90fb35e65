//! Three windows of the whole subnet in process, honest miners only: a real local chain in a temp
//! dir, real gRPC on 127.0.0.1, real training of the localnet task's model, two validators of
//! different stake that agree, and the run's report.

use chain_client::{Chain, LocalChain};
use subnet_cli::localnet::{self, LocalnetConfig};
use task::TaskSpec;

/// Spearman's rank correlation of two equally long vectors (ties ranked by position).
fn rank_correlation(a: &[f64], b: &[f64]) -> f64 {
    let ranks = |v: &[f64]| {
        let mut order: Vec<usize> = (0..v.len()).collect();
        order.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
        let mut r = vec![0.0; v.len()];
        for (rank, i) in order.into_iter().enumerate() {
            r[i] = rank as f64;
        }
        r
    };
    let (ra, rb) = (ranks(a), ranks(b));
    let n = a.len() as f64;
    let d2: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - y).powi(2)).sum();
    1.0 - 6.0 * d2 / (n * (n * n - 1.0))
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

/// With commit-reveal on (timelocked, version 4): each window's weights are committed encrypted to
/// the chain's beacon, opened by the chain in the next window's epoch, and paid out at the epoch
/// after that, so three windows show the whole cycle. The outer
/// step is DiLoCo's Nesterov momentum, whose buffer the follower recomputes with the lead's
/// checkpoint and a replay confirms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_honest_windows_learn_pay_through_commit_reveal_and_both_validators_agree() {
    let dir = tempfile::tempdir().unwrap();
    let mut task = TaskSpec::from_toml_str(subnet_cli::LOCALNET_TASK).unwrap();
    task.training.outer_lr = 0.7;
    task.training.outer_momentum = 0.9;
    let config = LocalnetConfig {
        dir: Some(dir.path().to_path_buf()),
        commit_reveal: true,
        ..LocalnetConfig::honest(task, 3, 2, 3)
    };
    let report = localnet::run(config, |line| println!("{}", localnet::format_line(line)))
        .await
        .unwrap();

    assert_eq!(report.windows.len(), 3);
    let revealed: Vec<usize> = report.windows.iter().map(|w| w.weights_revealed).collect();
    assert_eq!(
        revealed,
        vec![0, 2, 2],
        "the chain opens each validator's commit in the next window"
    );
    let losses: Vec<f64> = report.windows.iter().map(|w| w.heldout_loss).collect();
    assert!(
        losses[0] < report.initial_loss && losses[2] < losses[0],
        "the loss did not fall: {} then {losses:?}",
        report.initial_loss
    );
    for window in &report.windows {
        assert_eq!(window.weights_set, 2, "window {}", window.window);
        for miner in &window.miners {
            assert!(
                miner.weight > 0.0 && miner.rejection.is_none(),
                "honest miner {} in window {}: {miner:?}",
                miner.uid,
                window.window
            );
        }
    }
    // Both validators scored the checkpoint the miners trained from, window after window.
    let (lead, follower) = (&report.outcomes[0], &report.outcomes[1]);
    for (l, f) in lead.iter().zip(follower) {
        assert_eq!(
            l.checkpoint_before, f.checkpoint_before,
            "window {}",
            l.window
        );
    }

    // The chain recorded both validators' weights, which agree, and paid the miners.
    let chain = LocalChain::open(&report.chain_path).unwrap();
    let metagraph = chain.metagraph(report.netuid).await.unwrap();
    let rows: Vec<Vec<f64>> = report
        .validator_uids
        .iter()
        .map(|&v| {
            let validator = metagraph.by_uid(v).unwrap();
            assert!(validator.validator_permit);
            report
                .miner_uids
                .iter()
                .map(|m| {
                    validator
                        .weights
                        .iter()
                        .find(|(uid, _)| uid == m)
                        .map_or(0.0, |(_, w)| *w as f64)
                })
                .collect()
        })
        .collect();
    let (agreement, ranks) = (
        cosine(&rows[0], &rows[1]),
        rank_correlation(&rows[0], &rows[1]),
    );
    println!("the validators' weights: cosine {agreement:.4}, rank correlation {ranks:.2}");
    assert!(agreement > 0.95, "{rows:?}");
    for uid in &report.miner_uids {
        let miner = metagraph.by_uid(*uid).unwrap();
        assert!(miner.total_emission > 0, "miner {uid} earned nothing");
        assert!(miner.incentive > 0);
    }
    assert_eq!(
        report.windows[1].miner_emission, 0,
        "nothing is revealed before the second window's epoch"
    );
    assert!(report.windows[2].miner_emission > 0);

    // Each validator's replay log confirms every loss, the momentum buffer and each checkpoint.
    let mut records = Vec::new();
    for i in 0..2 {
        let data = localnet::validator_dir(dir.path(), i);
        let replayed = validator::replay::replay(&data, None, |_| {}).unwrap();
        assert_eq!(replayed.windows.len(), 3);
        assert!(replayed.losses_checked > 0);
        let (store, _) = validator::DataDir::open_existing(&data).unwrap();
        records.push(store.records().unwrap().0);
    }
    // Each window starts from the checkpoint and momentum buffer that a validator's previous window
    // left: its own, or the lead's when it adopted the lead's (their clip norms, floored at each
    // one's own reference training, can differ).
    for (i, own) in records.iter().enumerate() {
        assert!(own[0].momentum_before.is_none());
        assert!(own.iter().all(|r| r.momentum_after.is_some()));
        for (w, r) in own.iter().enumerate().skip(1) {
            assert!(
                records.iter().any(|other| {
                    other[w - 1].checkpoint_after == r.checkpoint_before
                        && other[w - 1].momentum_after == r.momentum_before
                }),
                "validator {i}, window {}: {:?} {:?}",
                r.window,
                r.checkpoint_before,
                r.momentum_before
            );
        }
    }

    // The model of window 1 and of the last window, taken home: the export reads back into the
    // recorded checkpoint bit for bit, with the localnet's own held-out loss, and generates text.
    let data = localnet::validator_dir(dir.path(), 0);
    for window in [Some(report.windows[1].window), None] {
        let model = subnet_cli::model::RunModel::load(&data, window).unwrap();
        let out = dir.path().join("model.safetensors");
        let exported = subnet_cli::model::export(&model, &out, true).unwrap();
        let line = report
            .windows
            .iter()
            .find(|w| w.window == model.window)
            .unwrap();
        assert!((exported.heldout_loss - line.heldout_loss).abs() < 1e-9);
        let tensors = task::export::read_safetensors(&std::fs::read(&out).unwrap()).unwrap();
        let back = task::export::from_torch(model.engine.layout(), &tensors).unwrap();
        assert_eq!(back, *model.checkpoint.params);
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&exported.config).unwrap()).unwrap();
        assert_eq!(config["architecture"], "transformer");
        assert_eq!(config["window"], model.window);
    }
    let model = subnet_cli::model::RunModel::load(&data, None).unwrap();
    let sampling = task::generate::Sampling::default();
    let text = subnet_cli::model::sample(&model, "ab", 16, sampling).unwrap();
    assert!(!text.is_empty());
    assert_eq!(
        text,
        subnet_cli::model::sample(&model, "ab", 16, sampling).unwrap()
    );
    assert!(subnet_cli::model::RunModel::load(&data, Some(999)).is_err());
    assert!(subnet_cli::model::RunModel::load(dir.path(), None).is_err());

    // The report: every field a reader looks for, and all emission to honest miners.
    let run = subnet_cli::report::build("localnet-lm", &report).unwrap();
    subnet_cli::report::write(&run, &report, dir.path()).unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    assert!(json["entropy_rate"].as_f64().unwrap() > 0.8);
    assert_eq!(json["windows"].as_array().unwrap().len(), 3);
    assert_eq!(json["honest_emission_share"].as_f64(), Some(1.0));
    for miner in json["miners"].as_array().unwrap() {
        assert_eq!(miner["kind"], "honest");
        assert_eq!(miner["slashed"], false);
        assert!(miner["zero_weight_since"].is_null(), "{miner}");
    }
    assert_eq!(json["validators"].as_array().unwrap().len(), 2);
    assert!(
        std::fs::metadata(dir.path().join("report.png"))
            .unwrap()
            .len()
            > 1000
    );
}

/// A task cut into two parameter groups: each miner trains the half of the model the window seed
/// gives it, one miner declares it holds only the smaller half and is never given the larger, both
/// halves are trained every window, the validator audits (first windows) and aggregates them, the
/// model learns, and the replay log confirms every window. Beside them a miner that picks its
/// group after seeing each window's seed (by the capacity it declares) is refused whenever its
/// capacity is not the one its previous commitment declared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_in_parameter_groups_learns_and_a_small_miner_gets_only_groups_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let task = TaskSpec::from_file(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tasks/localnet-lm-groups.toml"),
    )
    .unwrap();
    let engine = task::TaskEngine::new(task.clone());
    let groups = engine.groups().clone();
    assert_eq!(groups.len(), 2);
    let capacity = groups.groups().iter().map(|g| g.len()).min().unwrap() as u64;
    let config = LocalnetConfig {
        dir: Some(dir.path().to_path_buf()),
        group_capacities: vec![0, 0, 0, capacity],
        adversaries: vec![miner::adversary::Adversary::GroupPicker],
        ..LocalnetConfig::honest(task, 4, 1, 3)
    };
    let report = localnet::run(config, |line| println!("{}", localnet::format_line(line)))
        .await
        .unwrap();
    let small = report.miner_uids[3];
    let honest = |m: &&localnet::MinerLine| m.kind == localnet::MinerKind::Honest;
    for window in &report.windows {
        let trained: Vec<(u16, usize)> = window
            .miners
            .iter()
            .filter(honest)
            .map(|m| (m.uid, m.group.expect("every honest miner trained")))
            .collect();
        println!("window {}: groups {trained:?}", window.window);
        for (uid, group) in &trained {
            let size = groups.get(*group).unwrap().len() as u64;
            assert!(
                *uid != small || size <= capacity,
                "window {}: the small miner got group {group} of {size} parameters",
                window.window
            );
        }
        for g in 0..2 {
            assert!(
                trained.iter().any(|(_, group)| *group == g),
                "window {}: nobody trained group {g}",
                window.window
            );
        }
        for m in window.miners.iter().filter(honest) {
            assert!(
                m.rejection.is_none(),
                "window {}: uid {} refused: {m:?}",
                window.window,
                m.uid
            );
        }
    }
    // The rotation gives the picker the other group every window, so it changes its capacity
    // every window: accepted in its first window (nothing was in effect), refused after.
    let picker = |w: &localnet::WindowLine| {
        w.miners
            .iter()
            .find(|m| m.kind != localnet::MinerKind::Honest)
            .unwrap()
            .rejection
            .clone()
    };
    assert_eq!(picker(&report.windows[0]), None);
    for w in &report.windows[1..] {
        let rejection = picker(w).unwrap_or_default();
        assert!(
            rejection.contains("group capacity"),
            "window {}: {rejection}",
            w.window
        );
    }
    let losses: Vec<f64> = report.windows.iter().map(|w| w.heldout_loss).collect();
    assert!(
        losses[0] < report.initial_loss && losses[2] < losses[0],
        "the loss did not fall: {} then {losses:?}",
        report.initial_loss
    );
    let data = localnet::validator_dir(dir.path(), 0);
    let replayed = validator::replay::replay(&data, None, |_| {}).unwrap();
    assert_eq!(replayed.windows.len(), 3);
    let (store, _) = validator::DataDir::open_existing(&data).unwrap();
    let records = store.records().unwrap().0;
    assert!(
        records[0].audits.iter().all(|a| a.failure.is_none()) && !records[0].audits.is_empty(),
        "{:?}",
        records[0].audits
    );
    assert!(
        records
            .iter()
            .flat_map(|r| &r.evidence.miners)
            .any(|m| m.group == 1)
            && records
                .iter()
                .all(|r| r.evidence.reference_group_norms.len() == 2)
    );
}
