//! The miner's gRPC surface on 127.0.0.1:0 with a real local chain: who may fetch a gradient and
//! when (its commitment while the window is open, the artefacts once it has closed), and the
//! distinct error each refused caller gets.

use chain_client::{AccountId, BlockClock, Chain, LocalChain, SubnetParams};
use miner::{Miner, MinerService, ServedGradient};
use std::sync::Arc;
use subnet_proto::{auth, commitment, pb};
use subxt_signer::sr25519::{Keypair, dev};
use task::{TaskEngine, TaskSpec};
use tokio::net::TcpListener;
use tonic::Code;

const TOKEN: u64 = 1_000_000_000;

fn engine() -> Arc<TaskEngine> {
    let mut spec = TaskSpec::from_toml_str(include_str!("../../tasks/localnet-lm.toml")).unwrap();
    let model = spec.model.transformer_mut().unwrap();
    model.d_model = 16;
    model.n_layers = 1;
    model.seq_len = 16;
    spec.training.set_inner_steps(2);
    spec.training.batch_size = 2;
    Arc::new(TaskEngine::new(spec))
}

struct Setup {
    _dir: tempfile::TempDir,
    chain: LocalChain,
    miner: Miner<LocalChain>,
    client: pb::miner_client::MinerClient<tonic::transport::Channel>,
    addr: std::net::SocketAddr,
    connections: Arc<subnet_proto::server::ConnectionLimits>,
    stop: tokio::sync::oneshot::Sender<()>,
}

/// Subnet 1: Alice validates (staked, permit after the first epoch), Bob mines. Subnet 2: Charlie
/// validates there only.
async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let chain =
        LocalChain::open_or_create(dir.path().join("chain.sqlite"), BlockClock::Manual, 9).unwrap();
    let params = SubnetParams {
        tempo: 5,
        commit_reveal_weights_enabled: false,
        ..SubnetParams::default()
    };
    let owner = AccountId::from(&dev::ferdie());
    let net1 = chain.create_subnet(owner, params.clone()).unwrap();
    let net2 = chain.create_subnet(owner, params).unwrap();
    for (k, net, stake) in [
        (dev::alice(), net1, 200),
        (dev::bob(), net1, 0),
        (dev::charlie(), net2, 200),
    ] {
        let id = AccountId::from(&k);
        chain.fund(id, 1000 * TOKEN).unwrap();
        chain.burned_register(id, net, id).unwrap();
        if stake > 0 {
            chain.add_stake(id, id, net, stake * TOKEN).unwrap();
        }
    }
    chain.advance_blocks(5).unwrap();
    let engine = engine();
    // Segment states kept in files, as `miner run --data` keeps them.
    let miner = Miner::new(chain.clone(), net1, dev::bob(), engine.clone())
        .with_state_dir(&dir.path().join("segments"))
        .unwrap();
    // A published gradient for window 3 (blocks 30..40 of the task's 10-block windows).
    let served = miner.commit_work(3, engine.genesis().digest, &vec![0.5; engine.num_params()]);
    miner.publish(3, served);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    chain.serve_axon(&dev::bob(), net1, addr).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // Each group of callers below connects from its own loopback address, limited as remote ones.
    let service = MinerService::new(miner.clone())
        .with_connections_per_address(subnet_proto::server::MAX_CONNECTIONS_PER_ADDRESS);
    let connections = service.connections();
    tokio::spawn(service.serve(listener, async move {
        let _ = stopped.await;
    }));
    let client = pb::miner_client::MinerClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    Setup {
        _dir: dir,
        chain,
        miner,
        client,
        addr,
        connections,
        stop,
    }
}

fn request(caller: &Keypair, window: u64, engine: &TaskEngine) -> pb::GradientRequest {
    auth::sign(
        pb::GradientRequest {
            auth: None,
            part: pb::GradientPart::Payload as i32,
            window,
            task_digest: engine.digest().to_vec(),
            segment: 0,
        },
        caller,
        &dev::bob().public_key().0,
    )
}

fn commitment_request(caller: &Keypair, window: u64, engine: &TaskEngine) -> pb::CommitmentRequest {
    auth::sign(
        pb::CommitmentRequest {
            auth: None,
            window,
            task_digest: engine.digest().to_vec(),
        },
        caller,
        &dev::bob().public_key().0,
    )
}

async fn fetch(
    client: &mut pb::miner_client::MinerClient<tonic::transport::Channel>,
    r: pb::GradientRequest,
) -> Result<Vec<pb::GradientChunk>, tonic::Status> {
    let mut stream = client.get_gradient(r).await?.into_inner();
    let mut chunks = Vec::new();
    while let Some(c) = stream.message().await? {
        chunks.push(c);
    }
    Ok(chunks)
}

/// Window 3 closes at block 40.
fn close_window_3(chain: &LocalChain) {
    let now = chain.transact(|_, block| Ok(block)).unwrap();
    chain.advance_blocks(40 - now).unwrap();
}

#[tokio::test]
async fn the_commitment_is_served_at_once_and_the_gradient_after_the_close() {
    let mut s = setup().await;
    let engine = s.miner.engine().clone();
    let committed: pb::Commitment = s
        .client
        .get_commitment(commitment_request(&dev::alice(), 3, &engine))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(committed, s.miner.gradient(3).unwrap().commitment);
    let e = fetch(&mut s.client, request(&dev::alice(), 3, &engine))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("closes at block 40"), "{e:?}");

    close_window_3(&s.chain);
    let chunks = fetch(&mut s.client, request(&dev::alice(), 3, &engine))
        .await
        .unwrap();
    let Some(pb::gradient_chunk::Part::Commitment(c)) = &chunks[0].part else {
        panic!("no commitment first")
    };
    let payload: Vec<u8> = chunks[1..]
        .iter()
        .flat_map(|c| match &c.part {
            Some(pb::gradient_chunk::Part::Data(d)) => d.clone(),
            _ => panic!("data expected"),
        })
        .collect();
    let bob = dev::bob().public_key().0;
    let expected = commitment::Expected {
        hotkey: &bob,
        window: 3,
        task_digest: &engine.digest(),
        checkpoint_digest: &engine.genesis().digest.0,
        payload_len: payload.len() as u64,
        segments: engine.spec().training.segments().len(),
    };
    commitment::verify_commitment(c, &expected).unwrap();
    commitment::verify_payload(c, &payload).unwrap();
    assert!(commitment::same_claims(c, &committed));
    let served: &ServedGradient = &s.miner.gradient(3).unwrap();
    assert_eq!(&payload, served.payload.as_ref());
    assert!(
        served
            .segments
            .iter()
            .all(|s| matches!(s, miner::KeptState::File(_))),
        "segment states are in files"
    );
    // The dense gradient, the residual and every segment's end state come under the same
    // commitment; a segment the window does not have is refused.
    let segments = served.segments.len() as u32;
    assert_eq!(segments as usize, engine.spec().training.segments().len());
    let parts = [pb::GradientPart::Dense, pb::GradientPart::Residual]
        .map(|p| (p, 0))
        .into_iter()
        .chain((0..segments).map(|i| (pb::GradientPart::Segment, i)));
    for (part, segment) in parts {
        let mut r = request(&dev::alice(), 3, &engine);
        r.part = part as i32;
        r.segment = segment;
        let r = auth::sign(r, &dev::alice(), &dev::bob().public_key().0);
        let chunks = fetch(&mut s.client, r).await.unwrap();
        let bytes: Vec<u8> = chunks[1..]
            .iter()
            .flat_map(|c| match &c.part {
                Some(pb::gradient_chunk::Part::Data(d)) => d.clone(),
                _ => panic!("data expected"),
            })
            .collect();
        assert_eq!(&bytes, served.part(part, segment).unwrap().as_ref());
        if part == pb::GradientPart::Segment {
            assert_eq!(
                subnet_proto::digest(&bytes),
                c.segment_digests[segment as usize][..]
            );
        }
    }
    let mut beyond = request(&dev::alice(), 3, &engine);
    beyond.part = pb::GradientPart::Segment as i32;
    beyond.segment = segments;
    let beyond = auth::sign(beyond, &dev::alice(), &dev::bob().public_key().0);
    let refused = fetch(&mut s.client, beyond).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused}");
    let _ = s.stop.send(());
    drop(s.chain);
}

#[tokio::test]
async fn refused_callers_get_distinct_codes() {
    let mut s = setup().await;
    let engine = s.miner.engine().clone();
    close_window_3(&s.chain);

    // Not registered anywhere.
    let e = fetch(&mut s.client, request(&dev::dave(), 3, &engine))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("not registered on subnet 1"));

    // A validator of another subnet.
    let e = fetch(&mut s.client, request(&dev::charlie(), 3, &engine))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // Registered on this subnet but without a permit (the miner asking itself).
    let e = fetch(&mut s.client, request(&dev::bob(), 3, &engine))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("no validator permit"));

    // A forged signature: Dave's signature presented as Alice's hotkey.
    let mut forged = request(&dev::dave(), 3, &engine);
    forged.auth.as_mut().unwrap().hotkey = dev::alice().public_key().0.to_vec();
    let e = fetch(&mut s.client, forged).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    // A replayed request.
    let r = request(&dev::alice(), 3, &engine);
    fetch(&mut s.client, r.clone()).await.unwrap();
    let e = fetch(&mut s.client, r).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");

    // An unknown window.
    let e = fetch(&mut s.client, request(&dev::alice(), 4, &engine))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // Another task.
    let other = auth::sign(
        pb::GradientRequest {
            auth: None,
            part: pb::GradientPart::Payload as i32,
            segment: 0,
            window: 3,
            task_digest: vec![0; 32],
        },
        &dev::alice(),
        &dev::bob().public_key().0,
    );
    let e = fetch(&mut s.client, other).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);

    // Signed by a permit holder whose clock is 31 s behind, or 31 s ahead.
    for skew in [-31_000i64, 31_000] {
        let body = pb::GradientRequest {
            auth: None,
            part: pb::GradientPart::Payload as i32,
            segment: 0,
            window: 3,
            task_digest: engine.digest().to_vec(),
        };
        let at = auth::now_ms().saturating_add_signed(skew);
        let signed = pb::GradientRequest {
            auth: Some(auth::sign_request_at(
                &dev::alice(),
                <pb::GradientRequest as auth::Authenticated>::METHOD,
                &prost::Message::encode_to_vec(&body),
                &dev::bob().public_key().0,
                auth::fresh_nonce(),
                at,
            )),
            ..body
        };
        let e = fetch(&mut s.client, signed).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("stale request"), "{e:?}");
    }

    // A request over the size cap is refused before it is decoded.
    let mut big = request(&dev::alice(), 3, &engine);
    big.task_digest = vec![0; subnet_proto::limits::MAX_REQUEST_BYTES + 1];
    let e = fetch(&mut s.client, big).await.unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");

    // Every refusal is counted by reason in the miner's metrics.
    let metrics = s.miner.metrics().render();
    for line in [
        "miner_requests_rejected_total{reason=\"bad_signature\"} 1",
        "miner_requests_rejected_total{reason=\"replayed_nonce\"} 1",
        "miner_requests_rejected_total{reason=\"stale\"} 2",
        "miner_requests_rejected_total{reason=\"unregistered\"} 2",
        "miner_requests_rejected_total{reason=\"no_validator_permit\"} 1",
        "miner_requests_rejected_total{reason=\"unknown_window\"} 1",
        "miner_requests_rejected_total{reason=\"other_task\"} 1",
        "miner_gradients_served_total 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
    let _ = s.stop.send(());
}

#[tokio::test]
async fn one_caller_over_its_rate_limit_does_not_starve_another() {
    let mut s = setup().await;
    let engine = s.miner.engine().clone();
    close_window_3(&s.chain);
    let mut limited = None;
    for i in 0..=subnet_proto::limits::REQUESTS_PER_WINDOW {
        // Bob is registered without a permit: each request is signed, checked and counted against
        // his own limit (an unregistered caller is refused before it has one).
        match fetch(&mut s.client, request(&dev::bob(), 3, &engine)).await {
            Err(e) if e.code() == Code::ResourceExhausted => {
                limited = Some((i, e));
                break;
            }
            Err(e) => assert_eq!(e.code(), Code::PermissionDenied),
            Ok(_) => panic!("Bob has no permit"),
        }
    }
    let (i, e) = limited.expect("the rate limit applies");
    assert_eq!(i, subnet_proto::limits::REQUESTS_PER_WINDOW);
    assert!(e.message().contains("retry in"), "{e:?}");
    // Alice, a permit holder, is served meanwhile.
    fetch(&mut s.client, request(&dev::alice(), 3, &engine))
        .await
        .unwrap();
    assert!(
        s.miner
            .metrics()
            .render()
            .contains("miner_requests_rejected_total{reason=\"rate_limited\"} 1")
    );
    let _ = s.stop.send(());
}

/// A client of the miner whose connection comes from `ip` (any of 127.0.0.0/8 reaches the
/// loopback interface, so each group of callers below has an address of its own).
async fn client_from(
    addr: std::net::SocketAddr,
    ip: &str,
) -> pb::miner_client::MinerClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .local_address(Some(ip.parse().unwrap()))
        .connect()
        .await
        .unwrap();
    pb::miner_client::MinerClient::new(channel)
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A bounded load test. While 200 connections that never speak try to hold the miner open from one
/// address, a thousand keys that are not on the subnet ask for commitments, a registered key without
/// a permit floods it, and a permit holder opens gradient streams it never reads, the honest
/// validator (from an address of its own) fetches the commitment, payload and dense gradient six
/// times, every time served, and within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_honest_validator_is_served_through_a_flood() {
    let s = setup().await;
    let engine = s.miner.engine().clone();
    let receiver = dev::bob().public_key().0;
    // Eve holds a permit too: she is the one who opens streams and never reads them.
    let eve = AccountId::from(&dev::eve());
    s.chain.fund(eve, 1000 * TOKEN).unwrap();
    s.chain.burned_register(eve, 1, eve).unwrap();
    s.chain.add_stake(eve, eve, 1, 100 * TOKEN).unwrap();
    close_window_3(&s.chain);
    let rss_before = peak_rss_kib();

    // Idle connections from 127.0.0.2: only MAX_CONNECTIONS_PER_ADDRESS of them are kept.
    let mut idle = Vec::new();
    for _ in 0..200 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        idle.push(socket.connect(s.addr).await.unwrap());
    }

    let strangers = async {
        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(client_from(s.addr, "127.0.0.3").await);
        }
        let calls = (0..1000u32).map(|k| {
            let mut client = clients[k as usize % clients.len()].clone();
            let mut seed = [7u8; 32];
            seed[..4].copy_from_slice(&k.to_le_bytes());
            let key = Keypair::from_secret_key(seed).unwrap();
            let request = commitment_request(&key, 3, &engine);
            async move { client.get_commitment(request).await.map(|_| ()) }
        });
        futures::future::join_all(calls).await
    };
    let no_permit = async {
        let client = client_from(s.addr, "127.0.0.4").await;
        let calls = (0..500).map(|_| {
            let mut client = client.clone();
            let request = request(&dev::bob(), 3, &engine);
            async move { fetch(&mut client, request).await.map(|_| ()) }
        });
        futures::future::join_all(calls).await
    };
    let unread_streams = async {
        let mut client = client_from(s.addr, "127.0.0.5").await;
        let mut held = Vec::new();
        for _ in 0..10 {
            let response = client.get_gradient(request(&dev::eve(), 3, &engine)).await;
            held.push(response.map(|r| r.into_inner()));
        }
        held
    };
    let honest = async {
        let mut client = client_from(s.addr, "127.0.0.1").await;
        let mut latencies = Vec::new();
        for _ in 0..6 {
            for part in [pb::GradientPart::Payload, pb::GradientPart::Dense] {
                let started = std::time::Instant::now();
                let mut r = request(&dev::alice(), 3, &engine);
                r.part = part as i32;
                r = auth::sign(r, &dev::alice(), &receiver);
                let chunks = fetch(&mut client, r)
                    .await
                    .expect("the honest fetch is served");
                assert!(chunks.len() >= 2, "a commitment and the data");
                latencies.push(started.elapsed());
            }
            let started = std::time::Instant::now();
            client
                .get_commitment(commitment_request(&dev::alice(), 3, &engine))
                .await
                .expect("the honest commitment request is served");
            latencies.push(started.elapsed());
        }
        latencies
    };
    let (strangers, no_permit, held, mut latencies) =
        tokio::join!(strangers, no_permit, unread_streams, honest);

    let denied = |results: &[Result<(), tonic::Status>], code: Code| {
        results
            .iter()
            .filter(|r| matches!(r, Err(e) if e.code() == code))
            .count()
    };
    assert_eq!(denied(&strangers, Code::PermissionDenied), 1000);
    let limited = denied(&no_permit, Code::ResourceExhausted);
    let refused = denied(&no_permit, Code::PermissionDenied);
    assert_eq!(
        limited + refused,
        500,
        "every request of the key without a permit is refused"
    );
    assert!(
        held.iter().all(|r| r.is_ok()),
        "the permit holder's streams were opened"
    );
    latencies.sort();
    let worst = *latencies.last().unwrap();
    assert!(
        worst < std::time::Duration::from_secs(1),
        "the honest validator waited {worst:?}"
    );
    let connections = s.connections.refused();
    assert_eq!(
        connections,
        200 - subnet_proto::server::MAX_CONNECTIONS_PER_ADDRESS as u64
    );
    println!(
        "load: 200 idle connections ({connections} closed on arrival), 1000 stranger requests \
         (1000 PermissionDenied), 500 requests without a permit ({refused} PermissionDenied, \
         {limited} ResourceExhausted), 10 unread gradient streams held; honest validator: {} \
         requests served, median {:?}, worst {worst:?}; peak RSS {} -> {} KiB",
        latencies.len(),
        latencies[latencies.len() / 2],
        rss_before,
        peak_rss_kib()
    );
    drop((idle, held));
    let _ = s.stop.send(());
}
