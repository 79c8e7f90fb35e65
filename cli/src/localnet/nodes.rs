//! The localnet's nodes in one process: validators and miners started on loopback, and a
//! window's training by every miner at once (adversaries reading what they may of each other).

use super::*;

/// What adversaries may read of each other: copying modes take the first honest miner's work,
/// Sybils pair up in order, a stale miner keeps last window's work.
pub(super) struct Crowd<'a> {
    miner_uids: &'a [u16],
    victim: u16,
    sybils: Vec<u16>,
    stashes: Vec<std::sync::Mutex<Option<Vec<f32>>>>,
}

impl<'a> Crowd<'a> {
    pub(super) fn new(miner_uids: &'a [u16], kinds: &[MinerKind]) -> Self {
        let victim = kinds
            .iter()
            .position(|k| *k == MinerKind::Honest)
            .map_or(miner_uids[0], |i| miner_uids[i]);
        let sybils = kinds
            .iter()
            .zip(miner_uids)
            .filter(|(k, _)| matches!(k, MinerKind::Adversary(a) if a.pairs()))
            .map(|(_, u)| *u)
            .collect();
        Self {
            miner_uids,
            victim,
            sybils,
            stashes: kinds.iter().map(|_| std::sync::Mutex::new(None)).collect(),
        }
    }

    /// What the `i`th miner sees of the others.
    pub(super) fn peers_of<'m>(
        &'m self,
        miners: &'m [Miner<LocalChain>],
        i: usize,
    ) -> Peers<'m, LocalChain> {
        Peers {
            miners: self
                .miner_uids
                .iter()
                .copied()
                .zip(miners)
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, m)| m)
                .collect(),
            victim: self.victim,
            partner: self
                .sybils
                .iter()
                .position(|u| *u == self.miner_uids[i])
                .and_then(|p| self.sybils.get(p ^ 1).copied()),
            stash: &self.stashes[i],
        }
    }
}

/// What the localnet's nodes share: the chain, the subnet, the task, and the signal that stops
/// their servers.
pub(super) struct Net<'a, S> {
    pub(super) chain: &'a LocalChain,
    pub(super) netuid: u16,
    pub(super) engine: &'a Arc<TaskEngine>,
    pub(super) shutdown: &'a S,
}

pub(super) type Servers = Vec<tokio::task::JoinHandle<anyhow::Result<()>>>;

/// The validators, each with its data directory and serving on loopback.
pub(super) async fn start_validators<S, F>(
    net: &Net<'_, S>,
    keys: &[(Keypair, u16)],
    dir: &std::path::Path,
    genesis: &task::Checkpoint,
    first_window: u64,
    config: &LocalnetConfig,
) -> anyhow::Result<(Vec<Validator<LocalChain>>, Servers)>
where
    S: Fn() -> F,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let spec = net.engine.spec();
    let (mut validators, mut servers) = (Vec::new(), Vec::new());
    for (i, (hotkey, _)) in keys.iter().enumerate() {
        // Each validator keeps its replay log in the directory: `subnet replay DIR/validator-I`.
        let data = validator::DataDir::open(validator_dir(dir, i), &spec.canonical_toml())?;
        let v = Validator::with_store(
            net.chain.clone(),
            net.netuid,
            hotkey.clone(),
            net.engine.clone(),
            genesis.clone(),
            first_window,
            data,
        )?;
        v.set_audit_period(config.audit_period);
        v.set_audit_budget(LOCAL_AUDIT_BUDGET);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        net.chain
            .serve_axon(hotkey, net.netuid, listener.local_addr()?)
            .await?;
        let serving = ValidatorService::new(v.clone()).serve(listener, (net.shutdown)());
        servers.push(tokio::spawn(async move { Ok(serving.await?) }));
        validators.push(v);
    }
    Ok((validators, servers))
}

/// The miners, honest ones with their group capacities, each serving on loopback but the silent.
pub(super) async fn start_miners<S, F>(
    net: &Net<'_, S>,
    keys: &[(Keypair, u16)],
    kinds: &[MinerKind],
    config: &LocalnetConfig,
) -> anyhow::Result<(Vec<Miner<LocalChain>>, Servers)>
where
    S: Fn() -> F,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let (mut miners, mut servers) = (Vec::new(), Vec::new());
    let mut honest = 0;
    for ((hotkey, _), kind) in keys.iter().zip(kinds) {
        let mut m = Miner::new(
            net.chain.clone(),
            net.netuid,
            hotkey.clone(),
            net.engine.clone(),
        );
        if *kind == MinerKind::Honest {
            let capacity = config.group_capacities.get(honest).copied().unwrap_or(0);
            m = m.with_group_capacity(capacity);
            honest += 1;
        }
        if *kind != MinerKind::Adversary(Adversary::Silent) {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            net.chain
                .serve_axon(hotkey, net.netuid, listener.local_addr()?)
                .await?;
            let serving = MinerService::new(m.clone()).serve(listener, (net.shutdown)());
            servers.push(tokio::spawn(async move { Ok(serving.await?) }));
        }
        miners.push(m);
    }
    Ok((miners, servers))
}

/// How long a local validator waits for a window's audits: every miner is on this machine.
pub(crate) const LOCAL_AUDIT_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);

/// Every miner's window at once: honest ones train and commit, adversaries act. Returns the
/// honest miners' summed tokens per second and the group each trained.
pub(super) async fn train_round<'p>(
    miners: &[Miner<LocalChain>],
    kinds: &[MinerKind],
    peers_of: &impl Fn(usize) -> Peers<'p, LocalChain>,
    window: u64,
    seed: u64,
) -> (f64, Vec<(u16, usize)>) {
    let training = miners.iter().zip(kinds).enumerate().map(|(i, (m, kind))| {
        let peers = peers_of(i);
        async move {
            m.sync_checkpoint().await?;
            match kind {
                MinerKind::Honest => m.train_window(window, seed).await.map(Some),
                MinerKind::Adversary(a) => adversary::act(m, *a, &peers, window, seed)
                    .await
                    .map(|()| None),
            }
        }
    });
    let reports = futures::future::join_all(training).await;
    let mut tokens_per_s = 0.0;
    let mut groups = Vec::new();
    for report in reports {
        match report {
            Ok(Some(r)) => {
                tokens_per_s += r.tokens_per_second();
                groups.push((r.uid, r.group));
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(window, error = %e, "a miner did not train this window"),
        }
    }
    (tokens_per_s, groups)
}
