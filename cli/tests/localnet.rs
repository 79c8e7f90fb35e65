//! Two windows of the whole subnet in process: a real local chain in a temp dir, real gRPC on
//! 127.0.0.1, real training of the localnet task's model.

use chain_client::{Chain, LocalChain};
use subnet_cli::localnet::{self, LocalnetConfig};
use task::TaskSpec;

/// The shipped localnet task as it is: smaller models learn too little of their own pages in one
/// window to pass the validator's assignment check.
fn localnet_task() -> TaskSpec {
    TaskSpec::from_toml_str(subnet_cli::LOCALNET_TASK).unwrap()
}

/// With commit-reveal v2 on: each window's weights are committed, revealed in the next window's
/// epoch, and paid out at the epoch after that, so three windows show the whole cycle. The outer
/// step is DiLoCo's Nesterov momentum, whose buffer the validator records and a replay confirms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_windows_lower_the_loss_and_pay_the_miners_through_commit_reveal() {
    let dir = tempfile::tempdir().unwrap();
    let mut task = localnet_task();
    task.training.outer_lr = 0.7;
    task.training.outer_momentum = 0.9;
    let config = LocalnetConfig {
        miners: 3,
        validators: 1,
        windows: 3,
        dir: Some(dir.path().to_path_buf()),
        task,
        commit_reveal: true,
        adversaries: Vec::new(),
        audit_period: None,
        seed: localnet::DEFAULT_SEED,
    };
    let report = localnet::run(config, |_| {}).await.unwrap();

    assert_eq!(report.windows.len(), 3);
    let revealed: Vec<usize> = report.windows.iter().map(|w| w.weights_revealed).collect();
    assert_eq!(
        revealed,
        vec![0, 1, 1],
        "each commit is revealed in the next window"
    );
    let losses: Vec<f64> = report.windows.iter().map(|w| w.heldout_loss).collect();
    assert!(
        losses[0] < report.initial_loss,
        "window 0 did not lower the loss: {} -> {}",
        report.initial_loss,
        losses[0]
    );
    assert!(
        losses[1] < report.initial_loss,
        "loss after two windows {} is not below the start {}",
        losses[1],
        report.initial_loss
    );
    for window in &report.windows {
        assert_eq!(
            window.weights_set, 1,
            "the validator committed weights in window {}",
            window.window
        );
        for miner in &window.miners {
            assert!(
                miner.weight > 0.0,
                "honest miner {} got no weight in window {}: {miner:?}",
                miner.uid,
                window.window
            );
            assert!(
                miner.rejection.is_none(),
                "honest miner {} was refused: {miner:?}",
                miner.uid
            );
        }
    }

    // The chain recorded the validator's weights and paid emissions to the miners.
    let chain = LocalChain::open(&report.chain_path).unwrap();
    let metagraph = chain.metagraph(report.netuid).await.unwrap();
    let validator = metagraph.by_uid(report.validator_uids[0]).unwrap();
    let weighted: Vec<u16> = validator.weights.iter().map(|(uid, _)| *uid).collect();
    assert_eq!(weighted, report.miner_uids);
    assert!(validator.validator_permit);
    for uid in &report.miner_uids {
        let miner = metagraph.by_uid(*uid).unwrap();
        assert!(miner.total_emission > 0, "miner {uid} earned nothing");
        assert!(miner.incentive > 0);
    }
    assert_eq!(
        report.windows[1].miner_emission, 0,
        "nothing is revealed before window 1's epoch"
    );
    assert!(report.windows[2].miner_emission > 0);
    let epochs = chain.epochs(report.netuid).unwrap();
    assert!(
        epochs.len() >= 3,
        "expected an epoch per window plus the first, got {}",
        epochs.len()
    );

    // The validator's replay log confirms every loss, the momentum buffer and each next checkpoint.
    let replayed =
        validator::replay::replay(&dir.path().join("validator-0"), None, |_| {}).unwrap();
    assert_eq!(replayed.windows.len(), 3);
    assert!(replayed.losses_checked > 0);
    let (store, _) = validator::DataDir::open_existing(dir.path().join("validator-0")).unwrap();
    let (records, _) = store.records().unwrap();
    assert!(records[0].momentum_before.is_none());
    assert!(records.iter().all(|r| r.momentum_after.is_some()));
    assert_eq!(records[1].momentum_before, records[0].momentum_after);
}
