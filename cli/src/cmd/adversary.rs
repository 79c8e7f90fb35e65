//! `subnet adversary` (hidden): a miner in a test-only misbehaving mode, as its own process.

use std::path::PathBuf;

/// A miner in a test-only misbehaving mode, as its own process (what `subnet localnet
/// --processes` starts for its adversaries).
#[derive(clap::Args)]
pub struct Args {
    #[arg(value_parser = parse_adversary)]
    pub mode: miner::adversary::Adversary,
    #[arg(long)]
    pub task: PathBuf,
    #[arg(long)]
    pub chain: String,
    #[arg(long)]
    pub netuid: u16,
    #[arg(long)]
    pub wallet: String,
    #[arg(long, default_value = "default")]
    pub hotkey: String,
    #[arg(long)]
    pub wallet_path: Option<PathBuf>,
    #[arg(long)]
    pub metrics: Option<String>,
    /// The Sybil partner's uid.
    #[arg(long)]
    pub partner: Option<u16>,
}

fn parse_adversary(name: &str) -> Result<miner::adversary::Adversary, String> {
    name.parse()
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        mode,
        task,
        chain,
        netuid,
        wallet,
        hotkey,
        wallet_path,
        metrics,
        partner,
    } = args;
    let root = wallet_path.unwrap_or_else(chain_client::wallet::default_wallet_root);
    subnet_cli::processes::run_adversary(subnet_cli::processes::AdversaryProcess {
        mode,
        task,
        chain,
        netuid,
        hotkey: chain_client::wallet::load_hotkey(&root, &wallet, &hotkey)?,
        metrics,
        partner,
    })
    .await?;
    Ok(())
}
