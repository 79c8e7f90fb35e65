//! One validator window against real miners over gRPC on a real local chain: the honest miner earns
//! the weight; a miner serving NaNs and one serving random noise earn nothing.

use chain_client::{AccountId, BlockClock, Chain, LocalChain, SubnetParams};
use miner::{Miner, MinerService};
use std::sync::Arc;
use subnet_proto::{codec, commitment};
use subxt_signer::sr25519::dev;
use task::rng::SeededRng;
use task::{TaskEngine, TaskSpec};
use tokio::net::TcpListener;
use validator::{Rejection, Validator};

const TOKEN: u64 = 1_000_000_000;

fn engine() -> Arc<TaskEngine> {
    let mut spec = TaskSpec::from_toml_str(include_str!("../../tasks/localnet-lm.toml")).unwrap();
    spec.model.d_model = 32;
    spec.model.n_layers = 1;
    spec.model.seq_len = 32;
    spec.training.inner_steps = 10;
    spec.training.batch_size = 8;
    spec.scoring.eval_batch_size = 8;
    spec.scoring.eval_batches = 4;
    Arc::new(TaskEngine::new(spec))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_work_earns_and_nan_or_noise_earn_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let chain =
        LocalChain::open_or_create(dir.path().join("chain.sqlite"), BlockClock::Manual, 4).unwrap();
    let params = SubnetParams {
        tempo: 5,
        weights_rate_limit: 1,
        min_allowed_weights: 1,
        commit_reveal_weights_enabled: false,
        ..SubnetParams::default()
    };
    let netuid = chain
        .create_subnet(AccountId::from(&dev::ferdie()), params)
        .unwrap();
    let keys = [dev::alice(), dev::bob(), dev::charlie(), dev::dave()];
    for k in &keys {
        let id = AccountId::from(k);
        chain.fund(id, 100 * TOKEN).unwrap();
        chain.burned_register(id, netuid, id).unwrap();
    }
    chain
        .add_stake(
            AccountId::from(&keys[0]),
            AccountId::from(&keys[0]),
            netuid,
            10 * TOKEN,
        )
        .unwrap();
    chain.advance_blocks(5).unwrap();

    let engine = engine();
    let genesis = engine.genesis();
    let (stop, _) = tokio::sync::watch::channel(false);
    let mut miners = Vec::new();
    for k in &keys[1..] {
        let m = Miner::new(chain.clone(), netuid, k.clone(), engine.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        chain
            .serve_axon(k, netuid, listener.local_addr().unwrap())
            .await
            .unwrap();
        let mut rx = stop.subscribe();
        tokio::spawn(MinerService::new(m.clone()).serve(listener, async move {
            let _ = rx.wait_for(|s| *s).await;
        }));
        miners.push(m);
    }
    let validator = Validator::new(
        chain.clone(),
        netuid,
        keys[0].clone(),
        engine.clone(),
        genesis.clone(),
        0,
    );
    let validator_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    chain
        .serve_axon(&keys[0], netuid, validator_listener.local_addr().unwrap())
        .await
        .unwrap();
    let mut rx = stop.subscribe();
    tokio::spawn(validator::ValidatorService::new(validator.clone()).serve(
        validator_listener,
        async move {
            let _ = rx.wait_for(|s| *s).await;
        },
    ));

    // Bob trains honestly (syncing the checkpoint over gRPC); Charlie serves NaNs; Dave serves noise.
    miners[0].sync_checkpoint().await.unwrap();
    miners[0].train_window(0, 77).await.unwrap();
    let n = engine.num_params();
    let nan = codec::encode_dense(&vec![f32::NAN; n]);
    miners[1].publish(
        0,
        commitment::commit(&keys[2], 0, engine.digest(), genesis.digest, &nan),
        nan,
    );
    let mut rng = SeededRng::new(5);
    let noise: Vec<f32> = (0..n).map(|_| rng.normal() as f32 * 0.05).collect();
    let noise = codec::encode_dense(&noise);
    miners[2].publish(
        0,
        commitment::commit(&keys[3], 0, engine.digest(), genesis.digest, &noise),
        noise,
    );

    chain.advance_blocks(5).unwrap();
    let outcome = validator.run_window(0, 77).await.unwrap();
    let result = |uid: u16| {
        outcome
            .results
            .iter()
            .find(|r| r.uid == uid)
            .unwrap()
            .clone()
    };
    let (honest, nan, noise) = (result(1), result(2), result(3));
    assert!(honest.score > 0.0 && honest.weight > 0.0, "{honest:?}");
    let usefulness = honest.usefulness.unwrap();
    assert!(
        usefulness.standard_error < usefulness.mean_relative_drop,
        "{usefulness:?}"
    );
    assert!(
        matches!(nan.rejection, Some(Rejection::NonFinite { .. })),
        "{nan:?}"
    );
    assert_eq!(nan.weight, 0.0);
    assert_eq!(noise.score, 0.0, "random noise must not score: {noise:?}");
    assert!(noise.usefulness.unwrap().mean_relative_drop < 0.0);
    assert_eq!(noise.weight, 0.0);
    assert_eq!(outcome.aggregated, vec![1]);
    assert_ne!(outcome.checkpoint_after, outcome.checkpoint_before);
    let (uids, values) = outcome.weights_set.clone().unwrap();
    assert_eq!((uids, values), (vec![1], vec![65535]));
    let metagraph = chain.metagraph(netuid).await.unwrap();
    assert_eq!(metagraph.by_uid(0).unwrap().weights, vec![(1, 65535)]);
    let _ = stop.send(true);
}
