//! `subnet chain ...`: create and administer a local chain so miners and validators can run as
//! separate programs against it.

use anyhow::{Context, bail};
use chain_client::{AccountId, BlockClock, LocalChain, LocalPipeline, Metagraph, SubnetParams};
use std::path::{Path, PathBuf};
use subxt_signer::sr25519::Keypair;

/// One token is 1e9 rao.
pub const RAO_PER_TOKEN: u64 = 1_000_000_000;

/// The chain file inside a chain directory.
pub fn chain_file(dir: &Path) -> PathBuf {
    dir.join("chain.sqlite")
}

/// A keypair from a secret URI: a dev path (`//Alice`, `//miner-1`) or a mnemonic.
pub fn keypair(uri: &str) -> anyhow::Result<Keypair> {
    Ok(chain_client::keypair_from_uri(uri)?)
}

pub fn tokens_to_rao(tokens: f64) -> anyhow::Result<u64> {
    if !(tokens.is_finite() && tokens >= 0.0) {
        bail!("amount must be a non-negative number of tokens, got {tokens}");
    }
    Ok((tokens * RAO_PER_TOKEN as f64).round() as u64)
}

/// Creates a chain whose blocks follow wall time.
pub fn init(dir: &Path, block_time_ms: u64, seed: u64) -> anyhow::Result<LocalChain> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = chain_file(dir);
    if path.exists() {
        bail!("{} already holds a chain", path.display());
    }
    let clock = if block_time_ms == 0 {
        BlockClock::Manual
    } else {
        BlockClock::WallTime { block_time_ms }
    };
    Ok(LocalChain::open_or_create(path, clock, seed)?)
}

pub fn open(dir: &Path) -> anyhow::Result<LocalChain> {
    Ok(LocalChain::open(chain_file(dir))?)
}

/// Subnet parameters for a task: one epoch per window, weights at most twice a window (a validator's
/// timing jitters from window to window), commit-reveal (timelocked, version 4) when asked.
pub fn params_for_window(blocks: u64, version_key: u64, commit_reveal: bool) -> SubnetParams {
    SubnetParams {
        tempo: blocks,
        weights_rate_limit: (blocks / 2).max(1),
        min_allowed_weights: 1,
        commit_reveal_weights_enabled: commit_reveal,
        weights_version_key: version_key,
        ..SubnetParams::default()
    }
}

/// Where a local subnet's epochs stand.
pub fn format_pipeline(p: &LocalPipeline) -> String {
    format!(
        "epoch {} began at block {}, the next begins at block {}",
        p.epoch_index,
        p.last_epoch_block,
        p.next_epoch_block()
    )
}

fn tokens(rao: u64) -> String {
    format!("{:.3}", rao as f64 / RAO_PER_TOKEN as f64)
}

/// The metagraph as a table.
pub fn format_metagraph(m: &Metagraph) -> String {
    let mut out = format!(
        "subnet {} at block {} (tempo {}, {} uids)\n{:>4}  {:<14} {:>12} {:>6} {:>9} {:>9} {:>12} {:>12}  {}\n",
        m.netuid,
        m.block,
        m.params.tempo,
        m.neurons.len(),
        "uid",
        "hotkey",
        "stake τ",
        "permit",
        "incentive",
        "dividends",
        "emission τ",
        "total τ",
        "axon"
    );
    for n in &m.neurons {
        out.push_str(&format!(
            "{:>4}  {:<14} {:>12} {:>6} {:>9.4} {:>9.4} {:>12} {:>12}  {}\n",
            n.uid,
            n.hotkey.short(),
            tokens(n.stake),
            if n.validator_permit { "yes" } else { "no" },
            n.incentive as f64 / 65535.0,
            n.dividends as f64 / 65535.0,
            tokens(n.emission),
            tokens(n.total_emission),
            n.axon.map(|a| a.to_string()).unwrap_or_else(|| "-".into())
        ));
    }
    out
}

pub fn account(k: &Keypair) -> AccountId {
    AccountId::from(k)
}
