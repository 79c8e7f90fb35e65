//! Two validator windows against real miners over gRPC on a real local chain, with a data directory:
//! the honest miners earn; a payload in another layout than the task's, a commitment that comes
//! only after the window closed, and a stream longer than the committed payload earn nothing; then `replay` re-runs every recorded evaluation and
//! confirms each loss bit for bit, a restarted validator resumes from the directory, and a record
//! torn by a crash is dropped without losing the ones before it.

use chain_client::{AccountId, BlockClock, Chain, LocalChain, SubnetParams, keypair_from_uri};
use miner::{Miner, MinerService, ServedGradient};
use pseudo_gradient::codec;
use std::sync::Arc;
use subnet_proto::commitment;
use subxt_signer::sr25519::Keypair;
use task::{TaskEngine, TaskSpec};
use tokio::net::TcpListener;
use validator::{DataDir, Rejection, Validator};

const TOKEN: u64 = 1_000_000_000;
const VALIDATOR: u16 = 0;
const HONEST: [u16; 3] = [1, 2, 3];
const DENSE: u16 = 4;
const LATE: u16 = 5;
/// Trains honestly, then streams its payload with bytes past the length its commitment names.
const OVERSIZED: u16 = 6;

fn engine() -> Arc<TaskEngine> {
    let spec = TaskSpec::from_toml_str(include_str!("../../tasks/localnet-lm.toml")).unwrap();
    Arc::new(TaskEngine::new(spec))
}

/// Publishes `values` as a dense f32 payload, with claims that fit it, on a task that sends top-k.
fn publish_dense(miner: &Miner<LocalChain>, key: &Keypair, window: u64, checkpoint: task::Digest) {
    let engine = miner.engine();
    let values = vec![0.001; engine.num_params()];
    let payload = codec::encode_dense(&values);
    let zero = codec::encode_dense(&vec![0.0; values.len()]);
    let c = commitment::commit(
        key,
        &commitment::Claims {
            window,
            task_digest: engine.digest(),
            checkpoint_digest: checkpoint.0,
            payload_digest: subnet_proto::digest(&payload),
            payload_len: payload.len() as u64,
            dense_digest: subnet_proto::digest(&payload),
            residual_in_digest: subnet_proto::digest(&zero),
            residual_window: 0,
            residual_out_digest: subnet_proto::digest(&zero),
            group_capacity: 0,
            segments: vec![[0; 32]; engine.spec().training.segments().len()],
            backend: task::device::cpu_backend().into(),
        },
    );
    miner.publish(
        window,
        ServedGradient {
            commitment: c,
            dense: Arc::new(payload.clone()),
            payload: Arc::new(payload),
            residual_in: Arc::new(zero),
            segments: Vec::new(),
        },
    );
}

/// The payload length `miner`'s commitment for `window` names.
fn trained_len(miner: &Miner<LocalChain>, window: u64) -> u64 {
    let served = miner.gradient(window).unwrap();
    subnet_proto::commitment::SignedCommitment::from_wire(&served.commitment)
        .unwrap()
        .claims
        .payload_len
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_work_earns_late_or_misshapen_work_does_not_and_the_record_replays() {
    let dir = tempfile::tempdir().unwrap();
    let chain =
        LocalChain::open_or_create(dir.path().join("chain.sqlite"), BlockClock::Manual, 4).unwrap();
    let engine = engine();
    let blocks = engine.spec().window.blocks;
    let params = SubnetParams {
        tempo: blocks,
        weights_rate_limit: 1,
        min_allowed_weights: 1,
        commit_reveal_weights_enabled: false,
        ..SubnetParams::default()
    };
    let owner = keypair_from_uri("//Owner").unwrap();
    let netuid = chain
        .create_subnet(AccountId::from(&owner), params)
        .unwrap();
    let keys: Vec<Keypair> = (0..=OVERSIZED)
        .map(|uid| keypair_from_uri(&format!("//Node{uid}")).unwrap())
        .collect();
    for k in &keys {
        let id = AccountId::from(k);
        chain.fund(id, 1000 * TOKEN).unwrap();
        chain.burned_register(id, netuid, id).unwrap();
    }
    let validator_id = AccountId::from(&keys[VALIDATOR as usize]);
    chain
        .add_stake(validator_id, validator_id, netuid, 200 * TOKEN)
        .unwrap();
    chain.advance_blocks(blocks).unwrap(); // window 1; the epoch grants the permit

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
    let miner = |uid: u16| &miners[uid as usize - 1];
    let data = dir.path().join("validator");
    let validator = Validator::with_store(
        chain.clone(),
        netuid,
        keys[0].clone(),
        engine.clone(),
        genesis.clone(),
        1,
        DataDir::open(&data, &engine.spec().canonical_toml()).unwrap(),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    chain
        .serve_axon(&keys[0], netuid, listener.local_addr().unwrap())
        .await
        .unwrap();
    let mut rx = stop.subscribe();
    let server = tokio::spawn(validator::ValidatorService::new(validator.clone()).serve(
        listener,
        async move {
            let _ = rx.wait_for(|s| *s).await;
        },
    ));
    // One writer per data directory.
    assert!(matches!(
        DataDir::open(&data, &engine.spec().canonical_toml()),
        Err(validator::StoreError::InUse { .. })
    ));

    let mut outcomes = Vec::new();
    for window in 1..=2u64 {
        let seed = chain_client::window_seed(
            &chain
                .block_hash(engine.spec().window.first_block(window))
                .await
                .unwrap(),
        );
        let (checkpoint, _) = validator.checkpoint();
        for uid in HONEST.into_iter().chain([LATE, OVERSIZED]) {
            miner(uid).sync_checkpoint().await.unwrap();
        }
        for uid in HONEST.into_iter().chain([OVERSIZED]) {
            miner(uid).train_window(window, seed).await.unwrap();
        }
        let trained = miner(OVERSIZED).gradient(window).unwrap();
        let longer = [&trained.payload[..], &[0u8; 100][..]].concat();
        miner(OVERSIZED).publish(
            window,
            ServedGradient {
                commitment: trained.commitment.clone(),
                payload: Arc::new(longer),
                dense: trained.dense.clone(),
                residual_in: trained.residual_in.clone(),
                segments: trained.segments.clone(),
            },
        );
        publish_dense(
            miner(DENSE),
            &keys[DENSE as usize],
            window,
            checkpoint.digest,
        );
        assert_eq!(validator.collect_commitments(window).await.unwrap(), 4);
        chain.advance_blocks(blocks).unwrap();
        // Trained and committed only once the window has closed.
        miner(LATE).train_window(window, seed).await.unwrap();
        assert_eq!(validator.collect_commitments(window).await.unwrap(), 4);
        outcomes.push(validator.run_window(window, seed).await.unwrap());
    }
    for o in &outcomes {
        for uid in HONEST {
            let r = o.result(uid).unwrap();
            assert!(r.rejection.is_none() && r.weight > 0.0, "{r:?}");
        }
        assert_eq!(
            o.result(LATE).unwrap().rejection,
            Some(Rejection::NotCommitted)
        );
        assert_eq!(o.result(LATE).unwrap().weight, 0.0);
        // Its commitment names a payload length that is not the task's: never collected.
        assert_eq!(
            o.result(DENSE).unwrap().rejection,
            Some(Rejection::NotCommitted)
        );
        assert_eq!(o.result(DENSE).unwrap().weight, 0.0);
        // Stopped at the chunk that passes the committed length.
        let r = o.result(OVERSIZED).unwrap();
        let committed = trained_len(&miners[OVERSIZED as usize - 1], o.window);
        assert_eq!(
            r.rejection,
            Some(Rejection::Oversized { limit: committed }),
            "{r:?}"
        );
        assert_eq!(r.weight, 0.0);
    }
    assert_eq!(outcomes[1].checkpoint_before, outcomes[0].checkpoint_after);
    assert_ne!(outcomes[0].checkpoint_after, outcomes[0].checkpoint_before);
    let _ = stop.send(true);
    server.await.unwrap().unwrap();
    let averages = validator.averages();
    drop(validator);
    // A weight commit kept after the state was last saved (its salt is written before the commit is
    // sent) is still revealed after a restart.
    let kept = validator::PendingReveal {
        window: 2,
        reveal: chain_client::WeightsReveal {
            uids: vec![1],
            values: vec![u16::MAX],
            salt: vec![7; 8],
            version_key: 0,
        },
    };
    {
        let dir = DataDir::open(&data, &engine.spec().canonical_toml()).unwrap();
        dir.save_reveals(std::slice::from_ref(&kept)).unwrap();
    }

    // A restarted validator resumes from the data directory.
    let resumed = Validator::with_store(
        chain.clone(),
        netuid,
        keys[0].clone(),
        engine.clone(),
        genesis.clone(),
        1,
        DataDir::open(&data, &engine.spec().canonical_toml()).unwrap(),
    )
    .unwrap();
    assert_eq!(resumed.checkpoint().0.digest, outcomes[1].checkpoint_after);
    assert_eq!(resumed.checkpoint().1, 3);
    assert_eq!(resumed.averages(), averages);
    assert_eq!(resumed.pending_reveals(), [kept]);
    drop(resumed);

    // Replay: every loss recomputed bit for bit, the same weights and checkpoints.
    let report = validator::replay::replay(&data, None, |_| {}).unwrap();
    assert_eq!(report.windows.len(), 2);
    assert!(report.losses_checked > 100, "{}", report.losses_checked);
    assert_eq!(
        report.windows[0].weights.clone().unwrap(),
        outcomes[0].weights_set.clone().unwrap()
    );

    // A record torn by a crash mid-append is dropped; the windows before it survive.
    let log = data.join("replay.log");
    let len = std::fs::metadata(&log).unwrap().len();
    let bytes = std::fs::read(&log).unwrap();
    std::fs::write(&log, [&bytes[..], &bytes[..100]].concat()).unwrap();
    let (records, torn) = DataDir::open_existing(&data).unwrap().0.records().unwrap();
    assert_eq!((records.len(), torn), (2, 100));
    // Reading leaves the file alone (a validator may be appending); its writer cuts the tail.
    assert_eq!(std::fs::metadata(&log).unwrap().len(), len + 100);
    let (dir, task) = DataDir::open_existing(&data).unwrap();
    drop(dir);
    DataDir::open(&data, &task).unwrap();
    assert_eq!(std::fs::metadata(&log).unwrap().len(), len);
}
