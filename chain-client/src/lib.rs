//! The chain side of the subnet: the `Chain` trait that miners and validators use, the embedded local
//! chain on SQLite, and calls encoded for subtensor with subxt against its real metadata.

pub mod error;
pub mod local;
pub mod membership;
pub mod node;
pub mod schedule;
pub mod subtensor;
pub mod tlock;
pub mod types;
pub mod wallet;

pub use error::{ChainError, Result};
pub use local::{BlockClock, ChainEvent, LocalChain, LocalPipeline, MAX_UNREVEALED_COMMITS};
pub use membership::{Membership, NotRegistered, UidError};
pub use node::SubtensorChain;
pub use tlock::TimelockTarget;
pub use types::{
    AccountId, EpochConsensus, FraudOutcome, Metagraph, Neuron, Slash, SubnetParams,
    TimelockReveal, WeightsReveal, weights_commit_hash,
};

use std::future::Future;
use std::net::SocketAddr;
use subxt_signer::sr25519::Keypair;

/// What miners and validators need from a chain.
///
/// # Cancel safety
/// Every method is cancel safe: dropping the future either leaves the chain untouched or lets the
/// call complete as one atomic transaction; it never applies half a call.
pub trait Chain: Clone + Send + Sync + 'static {
    fn current_block(&self) -> impl Future<Output = Result<u64>> + Send;
    /// The hash of `block`; window seeds are derived from the hash at a window's first block.
    fn block_hash(&self, block: u64) -> impl Future<Output = Result<[u8; 32]>> + Send;
    fn metagraph(&self, netuid: u16) -> impl Future<Output = Result<Metagraph>> + Send;
    /// burned_register: the coldkey pays the subnet's burn and `hotkey` gets a uid (returned).
    fn burned_register(
        &self,
        coldkey: &Keypair,
        netuid: u16,
        hotkey: AccountId,
    ) -> impl Future<Output = Result<u16>> + Send;
    /// add_stake: moves `amount` rao from the coldkey's balance to its hotkey's stake.
    fn add_stake(
        &self,
        coldkey: &Keypair,
        hotkey: AccountId,
        netuid: u16,
        amount: u64,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Announces where the hotkey's gRPC server listens.
    fn serve_axon(
        &self,
        hotkey: &Keypair,
        netuid: u16,
        addr: SocketAddr,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Sets the hotkey's weight row (u16 values; the chain max-upscales them).
    fn set_weights(
        &self,
        hotkey: &Keypair,
        netuid: u16,
        uids: Vec<u16>,
        values: Vec<u16>,
        version_key: u64,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Commit-reveal v2: commits the hash (`weights_commit_hash`) of weights revealed later.
    fn commit_weights(
        &self,
        hotkey: &Keypair,
        netuid: u16,
        hash: [u8; 32],
    ) -> impl Future<Output = Result<()>> + Send;
    /// Commit-reveal v2: reveals committed weights with their salt; the chain checks the hash and the
    /// reveal epoch, then applies set_weights' rules.
    fn reveal_weights(
        &self,
        hotkey: &Keypair,
        netuid: u16,
        reveal: WeightsReveal,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Commit-reveal v4: what a timelocked commit made now must target (the beacon's key, the round
    /// whose pulse opens it in the reveal epoch, the chain's commit-reveal version).
    fn timelock_target(&self, netuid: u16) -> impl Future<Output = Result<TimelockTarget>> + Send;
    /// Commit-reveal v4: weights encrypted to a beacon round (`tlock::commit_weights`); the chain
    /// opens the commit with the round's pulse in the reveal epoch and applies it as set_weights.
    fn commit_timelocked_weights(
        &self,
        hotkey: &Keypair,
        netuid: u16,
        commit: Vec<u8>,
        reveal_round: u64,
        commit_reveal_version: u16,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Reports a miner for fraud in `window`, naming the evidence by digest. The local chain slashes
    /// once enough validator stake agrees; subtensor has no stake slashing, so a subtensor backend
    /// answers with an `Unsupported` error.
    fn report_fraud(
        &self,
        reporter: &Keypair,
        netuid: u16,
        offender: AccountId,
        window: u64,
        evidence: [u8; 32],
    ) -> impl Future<Output = Result<FraudOutcome>> + Send;
}

/// A keypair from a secret URI: a dev path (`//Alice`, `//miner-1`) or a mnemonic with optional
/// derivation path.
pub fn keypair_from_uri(uri: &str) -> Result<Keypair> {
    let parsed = <subxt_signer::SecretUri as std::str::FromStr>::from_str(uri).map_err(|e| {
        ChainError::Unsupported(format!("`{uri}` is not a secret URI (try //Alice): {e}"))
    })?;
    Keypair::from_uri(&parsed)
        .map_err(|e| ChainError::Unsupported(format!("cannot derive a key from `{uri}`: {e}")))
}

/// Either backend, chosen at run time by a `--chain` flag.
#[derive(Clone)]
pub enum AnyChain {
    Local(LocalChain),
    Subtensor(SubtensorChain),
}

/// Opens the chain a `--chain` flag names: `local:PATH` for a local chain file, `ws://HOST:PORT` or
/// `wss://...` for a subtensor node.
pub async fn open_chain(spec: &str) -> Result<AnyChain> {
    if let Some(path) = spec.strip_prefix("local:") {
        return Ok(AnyChain::Local(LocalChain::open(path)?));
    }
    if spec.starts_with("ws://") || spec.starts_with("wss://") {
        return Ok(AnyChain::Subtensor(SubtensorChain::connect(spec).await?));
    }
    Err(ChainError::Unsupported(format!(
        "unsupported chain `{spec}`: use local:PATH for a local chain file, or ws://HOST:PORT \
         (wss:// for TLS) for a subtensor node"
    )))
}

impl AnyChain {
    /// The chain handle that sets weights for mechanism `mecid` of a subnet (0, the default, is the
    /// subnet itself). Subtensor checks at each weights call that the subnet declares it; the local
    /// chain runs one mechanism per subnet.
    pub fn for_mechanism(self, mecid: u8) -> Result<Self> {
        match self {
            AnyChain::Local(_) if mecid != 0 => Err(ChainError::Unsupported(format!(
                "the local chain runs one mechanism per subnet (mechanism 0); mechanism {mecid} \
                 needs a subtensor node"
            ))),
            AnyChain::Subtensor(c) => Ok(AnyChain::Subtensor(c.for_mechanism(mecid))),
            local => Ok(local),
        }
    }
}

/// Runs `$call` on whichever backend `$chain` holds.
macro_rules! on_backend {
    ($chain:expr, $c:ident => $call:expr) => {
        match $chain {
            AnyChain::Local($c) => $call.await,
            AnyChain::Subtensor($c) => $call.await,
        }
    };
}

impl Chain for AnyChain {
    async fn current_block(&self) -> Result<u64> {
        on_backend!(self, c => c.current_block())
    }

    async fn block_hash(&self, block: u64) -> Result<[u8; 32]> {
        on_backend!(self, c => c.block_hash(block))
    }

    async fn metagraph(&self, netuid: u16) -> Result<Metagraph> {
        on_backend!(self, c => c.metagraph(netuid))
    }

    async fn burned_register(
        &self,
        coldkey: &Keypair,
        netuid: u16,
        hotkey: AccountId,
    ) -> Result<u16> {
        on_backend!(self, c => Chain::burned_register(c, coldkey, netuid, hotkey))
    }

    async fn add_stake(
        &self,
        coldkey: &Keypair,
        hotkey: AccountId,
        netuid: u16,
        amount: u64,
    ) -> Result<()> {
        on_backend!(self, c => Chain::add_stake(c, coldkey, hotkey, netuid, amount))
    }

    async fn serve_axon(&self, hotkey: &Keypair, netuid: u16, addr: SocketAddr) -> Result<()> {
        on_backend!(self, c => c.serve_axon(hotkey, netuid, addr))
    }

    async fn set_weights(
        &self,
        hotkey: &Keypair,
        netuid: u16,
        uids: Vec<u16>,
        values: Vec<u16>,
        version_key: u64,
    ) -> Result<()> {
        on_backend!(self, c => c.set_weights(hotkey, netuid, uids, values, version_key))
    }

    async fn commit_weights(&self, hotkey: &Keypair, netuid: u16, hash: [u8; 32]) -> Result<()> {
        on_backend!(self, c => c.commit_weights(hotkey, netuid, hash))
    }

    async fn reveal_weights(
        &self,
        hotkey: &Keypair,
        netuid: u16,
        reveal: WeightsReveal,
    ) -> Result<()> {
        on_backend!(self, c => c.reveal_weights(hotkey, netuid, reveal))
    }

    async fn timelock_target(&self, netuid: u16) -> Result<TimelockTarget> {
        on_backend!(self, c => c.timelock_target(netuid))
    }

    async fn commit_timelocked_weights(
        &self,
        hotkey: &Keypair,
        netuid: u16,
        commit: Vec<u8>,
        reveal_round: u64,
        commit_reveal_version: u16,
    ) -> Result<()> {
        on_backend!(self, c => c.commit_timelocked_weights(hotkey, netuid, commit, reveal_round, commit_reveal_version))
    }

    async fn report_fraud(
        &self,
        reporter: &Keypair,
        netuid: u16,
        offender: AccountId,
        window: u64,
        evidence: [u8; 32],
    ) -> Result<FraudOutcome> {
        on_backend!(self, c => c.report_fraud(reporter, netuid, offender, window, evidence))
    }
}

/// The window seed: the first 8 bytes of the block hash at the window's first block.
pub fn window_seed(block_hash: &[u8; 32]) -> u64 {
    u64::from_le_bytes(block_hash[..8].try_into().expect("8 bytes"))
}
