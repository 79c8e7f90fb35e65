//! Two validator windows against real miners over gRPC on a real local chain, with a data directory:
//! the honest miners earn the weight; a miner serving random noise, one serving NaNs, a copier, a
//! miner that trained on pages it was not assigned and one serving a stale window earn nothing; a
//! lazy miner whose spot-checked training does not reproduce is reported for fraud and slashed.
//! Then `replay` re-runs every recorded evaluation, confirms each loss bit for bit, and a what-if
//! with another max-weight limit changes the weights as that limit says.

use chain_client::{
    AccountId, BlockClock, Chain, FraudOutcome, LocalChain, SubnetParams, keypair_from_uri,
};
use miner::{Miner, MinerService};
use scoring::{ScoringParams, Verdict};
use std::sync::Arc;
use subnet_proto::commitment::CommitmentError;
use subnet_proto::{codec, commitment};
use subxt_signer::sr25519::Keypair;
use task::rng::SeededRng;
use task::{Checkpoint, CpuTrainBackend, TaskEngine, TaskSpec};
use tokio::net::TcpListener;
use validator::{DataDir, Rejection, Validator, WindowOutcome};

const TOKEN: u64 = 1_000_000_000;
const VALIDATOR: u16 = 0;
const HONEST: [u16; 3] = [1, 2, 3];
const NOISE: u16 = 4;
const NAN: u16 = 5;
const COPIER: u16 = 6;
const WRONG_PAGES: u16 = 7;
const STALE: u16 = 8;
const LAZY: u16 = 9;

fn engine() -> Arc<TaskEngine> {
    let spec = TaskSpec::from_toml_str(include_str!("../../tasks/localnet-lm.toml")).unwrap();
    Arc::new(TaskEngine::new(spec))
}

/// Trains `window` from `checkpoint` on the pages assigned to `pages_of` (not necessarily the
/// miner's own) and returns the pseudo-gradient.
fn train_on(
    engine: &TaskEngine,
    checkpoint: &Checkpoint,
    window: u64,
    seed: u64,
    pages_of: u16,
) -> Vec<f32> {
    let assignment = engine.assignment(window, seed, pages_of).unwrap();
    let batches = engine.training_batches(&assignment, seed);
    engine
        .trainer::<CpuTrainBackend>(&Default::default())
        .train_from(
            &checkpoint.params,
            &batches,
            engine.spec().inner_lr(window),
            |_, _| {},
        )
        .pseudo_gradient(&checkpoint.params)
}

/// Publishes `payload` as compressed from the dense pseudo-gradient `dense`.
fn publish(
    miner: &Miner<LocalChain>,
    key: &Keypair,
    window: u64,
    checkpoint: [u8; 32],
    (payload, dense): (Vec<u8>, &[f32]),
    engine: &TaskEngine,
) {
    let dense = codec::encode_dense(dense);
    let digest = subnet_proto::digest(&dense);
    let c = commitment::commit(key, window, engine.digest(), checkpoint, &payload, digest);
    miner.publish(window, c, payload, Some(dense));
}

fn verdict(outcome: &WindowOutcome, uid: u16) -> Verdict {
    outcome.result(uid).unwrap().verdict.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_work_earns_cheats_earn_nothing_and_replay_confirms_every_loss() {
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
    let owner = keypair_from_uri("//Owner").unwrap();
    let netuid = chain
        .create_subnet(AccountId::from(&owner), params)
        .unwrap();
    let keys: Vec<Keypair> = (0..=LAZY)
        .map(|uid| keypair_from_uri(&format!("//Node{uid}")).unwrap())
        .collect();
    for k in &keys {
        let id = AccountId::from(k);
        chain.fund(id, 100 * TOKEN).unwrap();
        chain.burned_register(id, netuid, id).unwrap();
    }
    let validator_id = AccountId::from(&keys[VALIDATOR as usize]);
    chain
        .add_stake(validator_id, validator_id, netuid, 10 * TOKEN)
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
    let miner = |uid: u16| &miners[uid as usize - 1];
    let key = |uid: u16| &keys[uid as usize];
    let data = dir.path().join("validator");
    let validator = Validator::with_store(
        chain.clone(),
        netuid,
        keys[0].clone(),
        engine.clone(),
        genesis.clone(),
        0,
        DataDir::open(&data, &engine.spec().canonical_toml()).unwrap(),
    )
    .unwrap();
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

    // Window 0. The honest miners sync the genesis checkpoint over gRPC and train their pages.
    let seed0 = 77;
    for uid in HONEST.into_iter().chain([LAZY]) {
        miner(uid).sync_checkpoint().await.unwrap();
        miner(uid).train_window(0, seed0).await.unwrap();
    }
    let n = engine.num_params();
    let mut rng = SeededRng::new(5);
    let noise: Vec<f32> = (0..n).map(|_| rng.normal() as f32 * 0.05).collect();
    publish(
        miner(NOISE),
        key(NOISE),
        0,
        genesis.digest,
        (codec::encode_dense(&noise), &noise),
        &engine,
    );
    publish(
        miner(NAN),
        key(NAN),
        0,
        genesis.digest,
        (codec::encode_dense(&vec![f32::NAN; n]), &vec![f32::NAN; n]),
        &engine,
    );
    // The copier serves honest uid 1's payload under its own, later, commitment.
    let original = miner(HONEST[0]).gradient(0).unwrap();
    publish(
        miner(COPIER),
        key(COPIER),
        0,
        genesis.digest,
        (original.payload.to_vec(), &[0.0; 0][..]),
        &engine,
    );
    // This miner trains real work, but on another uid's pages than its own.
    let wrong_dense = train_on(&engine, &genesis, 0, seed0, 200);
    let wrong = miner(WRONG_PAGES).compress(0, wrong_dense.clone());
    publish(
        miner(WRONG_PAGES),
        key(WRONG_PAGES),
        0,
        genesis.digest,
        (wrong, &wrong_dense),
        &engine,
    );
    // The stale miner trains window 0 honestly but serves nothing until window 1.
    let stale_dense = train_on(&engine, &genesis, 0, seed0, STALE);
    let stale = miner(STALE).compress(0, stale_dense.clone());

    // Window 0 is scored without spot checks, so that each other check shows on its own.
    validator.set_spot_check_probability(0.0);
    chain.advance_blocks(10).unwrap();
    let w0 = validator.run_window(0, seed0).await.unwrap();
    for uid in HONEST.into_iter().chain([LAZY]) {
        let r = w0.result(uid).unwrap();
        assert_eq!(r.verdict, Verdict::Earned, "{r:?}");
        assert!(r.weight > 0.0, "{r:?}");
        let u = r.usefulness.clone().unwrap();
        assert!(u.standard_error < u.mean_relative_drop, "{u:?}");
        assert!(r.assignment.as_ref().unwrap().p_value < 0.01, "{r:?}");
    }
    assert!(
        matches!(verdict(&w0, NOISE), Verdict::Harmful { .. }),
        "{:?}",
        w0.result(NOISE)
    );
    assert!(matches!(
        w0.result(NAN).unwrap().rejection,
        Some(Rejection::NonFinite { .. })
    ));
    assert!(
        matches!(verdict(&w0, COPIER), Verdict::Copy { of: 1, .. }),
        "{:?}",
        w0.result(COPIER)
    );
    assert!(
        matches!(verdict(&w0, WRONG_PAGES), Verdict::WrongPages { .. }),
        "{:?}",
        w0.result(WRONG_PAGES)
    );
    assert!(matches!(
        w0.result(STALE).unwrap().rejection,
        Some(Rejection::Refused {
            code: tonic::Code::NotFound,
            ..
        })
    ));
    for uid in [NOISE, NAN, COPIER, WRONG_PAGES, STALE] {
        assert_eq!(w0.result(uid).unwrap().weight, 0.0, "uid {uid}");
    }
    let earners = vec![1, 2, 3, LAZY];
    // The best `aggregate_top` of them make the next checkpoint.
    assert_eq!(w0.aggregated.len(), engine.spec().scoring.aggregate_top);
    assert!(w0.aggregated.iter().all(|u| earners.contains(u)));
    let (uids, _) = w0.weights_set.clone().unwrap();
    assert_eq!(uids, earners);

    // Window 1, every miner spot-checked: the stale miner re-commits its window-0 gradient, trained
    // from the old checkpoint; the lazy miner trains 10 of its 30 steps and says it trained them all.
    let seed1 = 78;
    let (checkpoint1, window) = validator.checkpoint();
    assert_eq!((window, checkpoint1.digest), (1, w0.checkpoint_after));
    for uid in &HONEST[..2] {
        miner(*uid).sync_checkpoint().await.unwrap();
        miner(*uid).train_window(1, seed1).await.unwrap();
    }
    publish(
        miner(STALE),
        key(STALE),
        1,
        genesis.digest,
        (stale, &stale_dense),
        &engine,
    );
    let lazy_dense = {
        let assignment = engine.assignment(1, seed1, LAZY).unwrap();
        let batches = engine.training_batches(&assignment, seed1);
        engine
            .trainer::<CpuTrainBackend>(&Default::default())
            .train_from(
                &checkpoint1.params,
                &batches[..10],
                engine.spec().inner_lr(1),
                |_, _| {},
            )
            .pseudo_gradient(&checkpoint1.params)
    };
    let lazy = miner(LAZY).compress(1, lazy_dense.clone());
    publish(
        miner(LAZY),
        key(LAZY),
        1,
        checkpoint1.digest,
        (lazy, &lazy_dense),
        &engine,
    );
    validator.set_spot_check_probability(1.0);
    chain.advance_blocks(10).unwrap();
    let lazy_stake = chain
        .metagraph(netuid)
        .await
        .unwrap()
        .by_uid(LAZY)
        .unwrap()
        .stake;
    assert!(lazy_stake > 0, "the lazy miner earned in window 0");
    let w1 = validator.run_window(1, seed1).await.unwrap();
    assert!(
        matches!(verdict(&w1, LAZY), Verdict::Fraud { .. }),
        "{:?}",
        w1.result(LAZY)
    );
    assert_eq!(w1.result(LAZY).unwrap().score, 0.0);
    let (reported, outcome) = w1.fraud_reports[0].clone();
    assert_eq!(reported, LAZY);
    let Ok(FraudOutcome::Slashed { amount }) = outcome else {
        panic!("the only validator's report slashes: {outcome:?}");
    };
    // 10% of its stake at the time of the report (emission may have accrued since the read above).
    assert!(amount >= lazy_stake / 10, "{amount} of {lazy_stake}");
    let slashes = chain.slashes(netuid).unwrap();
    assert_eq!(slashes.len(), 1);
    assert_eq!(
        (slashes[0].hotkey, slashes[0].window),
        (AccountId::from(key(LAZY)), 1)
    );
    assert_eq!(w1.fraud_reports.len(), 1, "honest miners reproduce exactly");
    assert!(
        matches!(
            w1.result(STALE).unwrap().rejection,
            Some(Rejection::Commitment(
                CommitmentError::WrongCheckpoint { .. }
            ))
        ),
        "{:?}",
        w1.result(STALE)
    );
    assert_eq!(w1.result(STALE).unwrap().weight, 0.0);
    for uid in &HONEST[..2] {
        assert!(w1.result(*uid).unwrap().weight > 0.0);
    }
    // Uid 3 was absent this window: its average decays but it keeps some weight from window 0.
    let absent = w1.result(HONEST[2]).unwrap();
    assert!(
        absent.score == 0.0
            && absent.weight > 0.0
            && absent.moving_average < w0.result(3).unwrap().moving_average
    );
    let _ = stop.send(true);

    // A restarted validator resumes from the data directory.
    let resumed = Validator::with_store(
        chain.clone(),
        netuid,
        keys[0].clone(),
        engine.clone(),
        genesis.clone(),
        0,
        DataDir::open(&data, &engine.spec().canonical_toml()).unwrap(),
    )
    .unwrap();
    assert_eq!(resumed.checkpoint().0.digest, w1.checkpoint_after);
    assert_eq!(resumed.checkpoint().1, 2);
    assert_eq!(resumed.averages(), validator.averages());

    // Replay: every loss recomputed bit for bit, the same weights and checkpoints.
    let report = validator::replay::replay(&data, None, |_| {}).unwrap();
    assert_eq!(report.windows.len(), 2);
    assert!(report.losses_checked > 100, "{}", report.losses_checked);
    let recorded = report.windows[0].weights.clone().unwrap();
    assert_eq!(recorded, w0.weights_set.clone().unwrap());

    // What if the moving average had no memory? Uid 3, absent in window 1, would lose its weight
    // at once; the miners that earned in window 1 share all of it.
    let what_if = ScoringParams {
        moving_average: 1.0,
        ..engine.spec().scoring.params()
    };
    let report = validator::replay::replay(&data, Some(what_if), |_| {}).unwrap();
    let recorded = &report.windows[1].decisions;
    let what_if = report.windows[1].what_if.as_ref().unwrap();
    let weight =
        |d: &[scoring::MinerDecision], uid: u16| d.iter().find(|d| d.uid == uid).unwrap().weight;
    assert!(weight(recorded, HONEST[2]) > 0.0);
    assert_eq!(weight(what_if, HONEST[2]), 0.0);
    assert!((weight(what_if, HONEST[0]) + weight(what_if, HONEST[1]) - 1.0).abs() < 1e-9);
    assert!(report.losses_checked > 100);

    // A record torn by a crash mid-append is dropped; the windows before it survive.
    let log = data.join("replay.log");
    let len = std::fs::metadata(&log).unwrap().len();
    let bytes = std::fs::read(&log).unwrap();
    std::fs::write(&log, [&bytes[..], &bytes[..100]].concat()).unwrap();
    let (records, torn) = DataDir::open_existing(&data).unwrap().0.records().unwrap();
    assert_eq!((records.len(), torn), (2, 100));
    assert_eq!(std::fs::metadata(&log).unwrap().len(), len);
}
