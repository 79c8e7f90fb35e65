//! A miner serving TLS (`--tls-cert`/`--tls-key`): a client that trusts its authority
//! (`--tls-cert`'s issuer, `--tls-ca`) is served; a plain client and one that trusts another
//! authority are not. The certificates in tests/tls/ are for this test only (a CA, and a server
//! certificate for 127.0.0.1 it issued, valid until 2046).

use chain_client::{AccountId, BlockClock, Chain, LocalChain, SubnetParams};
use miner::{Miner, MinerService};
use std::sync::Arc;
use subnet_proto::{auth, pb};
use subxt_signer::sr25519::dev;
use task::{TaskEngine, TaskSpec};
use tokio::net::TcpListener;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

const TOKEN: u64 = 1_000_000_000;

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tls")
        .join(name)
}

async fn info(endpoint: Endpoint) -> Result<pb::InfoResponse, String> {
    let channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
    let request = auth::sign(
        pb::InfoRequest::default(),
        &dev::alice(),
        &dev::bob().public_key().0,
    );
    pb::miner_client::MinerClient::new(channel)
        .info(request)
        .await
        .map(|r| r.into_inner())
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test]
async fn a_tls_miner_serves_clients_that_trust_its_authority_only() {
    subnet_proto::tls::configure(
        subnet_proto::tls::TlsFiles::read(
            Some(&fixture("server.pem")),
            Some(&fixture("server.key")),
            Some(&fixture("ca.pem")),
        )
        .unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let chain =
        LocalChain::open_or_create(dir.path().join("chain.sqlite"), BlockClock::Manual, 2).unwrap();
    let netuid = chain
        .create_subnet(AccountId::from(&dev::ferdie()), SubnetParams::default())
        .unwrap();
    for key in [dev::alice(), dev::bob()] {
        let id = AccountId::from(&key);
        chain.fund(id, 1000 * TOKEN).unwrap();
        chain.burned_register(id, netuid, id).unwrap();
    }
    let mut spec = TaskSpec::from_toml_str(include_str!("../../tasks/localnet-lm.toml")).unwrap();
    spec.model.transformer_mut().unwrap().n_layers = 1;
    let miner = Miner::new(
        chain.clone(),
        netuid,
        dev::bob(),
        Arc::new(TaskEngine::new(spec)),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    chain.serve_axon(&dev::bob(), netuid, addr).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(MinerService::new(miner).serve(listener, async move {
        let _ = stopped.await;
    }));

    // Trusting the miner's authority: served, over TLS.
    let served = info(subnet_proto::tls::endpoint(&addr.to_string()).unwrap())
        .await
        .unwrap();
    assert_eq!(served.hotkey, dev::bob().public_key().0.to_vec());

    // Plain HTTP/2 to a TLS server: no answer.
    let plain = Endpoint::from_shared(format!("http://{addr}")).unwrap();
    assert!(info(plain).await.is_err());

    // Trusting another authority: the handshake fails.
    let other = std::fs::read(fixture("other-ca.pem")).unwrap();
    let distrustful = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(other)))
        .unwrap();
    let refused = info(distrustful).await.unwrap_err();
    assert!(refused.to_lowercase().contains("certificate"), "{refused}");
    let _ = stop.send(());
}
