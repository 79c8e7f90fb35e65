//! `subnet chain`: create and administer a local chain (and register, stake and read a
//! metagraph on a subtensor node).

use super::load_task;
use chain_client::Chain;
use clap::Subcommand;
use std::path::PathBuf;
use subnet_cli::chain_admin as admin;

/// Create and administer a local chain, to run miners and validators as separate programs.
#[derive(clap::Args)]
pub struct Args {
    /// Directory holding the chain file (chain.sqlite).
    #[arg(
        long,
        env = "SUBNET_DIR",
        global = true,
        default_value = "subnet-chain"
    )]
    pub dir: PathBuf,
    #[command(subcommand)]
    pub command: ChainCommand,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    run_chain(&args.dir, args.command).await
}

/// Which keys a chain command uses: secret URIs, or a Bittensor wallet's coldkey and hotkey.
#[derive(clap::Args)]
pub struct KeyArgs {
    /// Coldkey as a secret URI (dev keys such as `//miner-1` on local chains); or use --wallet.
    #[arg(long, conflicts_with = "wallet")]
    coldkey_uri: Option<String>,
    /// Hotkey as a secret URI; or use --wallet and --hotkey.
    #[arg(long, conflicts_with = "wallet")]
    hotkey_uri: Option<String>,
    /// Bittensor wallet: its `coldkey` file and `hotkeys/HOTKEY` (unencrypted).
    #[arg(long)]
    wallet: Option<String>,
    #[arg(long, default_value = "default")]
    hotkey: String,
    /// Directory of Bittensor wallets (default ~/.bittensor/wallets).
    #[arg(long, env = "BT_WALLET_PATH")]
    wallet_path: Option<PathBuf>,
}

impl KeyArgs {
    fn root(&self) -> PathBuf {
        self.wallet_path
            .clone()
            .unwrap_or_else(chain_client::wallet::default_wallet_root)
    }

    fn coldkey(&self) -> anyhow::Result<subxt_signer::sr25519::Keypair> {
        match (&self.coldkey_uri, &self.wallet) {
            (Some(uri), _) => admin::keypair(uri),
            (None, Some(wallet)) => Ok(chain_client::wallet::read_keyfile(
                &self.root().join(wallet).join("coldkey"),
            )?),
            (None, None) => {
                anyhow::bail!("no coldkey given: pass --coldkey-uri URI or --wallet NAME")
            }
        }
    }

    fn hotkey(&self) -> anyhow::Result<subxt_signer::sr25519::Keypair> {
        Ok(chain_client::wallet::choose_hotkey(
            self.hotkey_uri.as_deref(),
            self.wallet.as_deref(),
            &self.hotkey,
            self.wallet_path.as_deref(),
        )?)
    }
}

#[derive(Subcommand)]
pub enum ChainCommand {
    /// Create a new chain whose block height follows wall time.
    Init {
        /// Milliseconds per block (0: blocks only move with `subnet chain advance`).
        #[arg(long, default_value_t = 1000)]
        block_time_ms: u64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Create a subnet for a task: one epoch per window, weights at most twice a window (the
    /// parameters `subnet localnet` gives its subnet).
    CreateSubnet {
        #[arg(long)]
        task: PathBuf,
        /// The owner's coldkey (receives the owner cut).
        #[arg(long, default_value = "//owner")]
        owner_uri: String,
        /// Validators must commit weights, to be revealed an epoch later: timelocked to the chain's
        /// beacon and opened by the chain (`--commit-reveal-version 4`, subtensor's default), or
        /// hashed and revealed by each validator (version 2).
        #[arg(long)]
        commit_reveal: bool,
        /// The commit-reveal version the subnet runs (subtensor's CommitRevealWeightsVersion).
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(2..=4))]
        commit_reveal_version: u16,
    },
    /// Credit tokens to a coldkey (a local-chain faucet).
    Fund {
        #[command(flatten)]
        keys: KeyArgs,
        #[arg(long)]
        tokens: f64,
    },
    /// burned_register a hotkey, paid by its coldkey.
    Register {
        #[arg(long)]
        netuid: u16,
        #[command(flatten)]
        keys: KeyArgs,
        /// Register on a subtensor node (ws://HOST:PORT) instead of the local chain.
        #[arg(long, env = "SUBNET_NODE")]
        node: Option<String>,
    },
    /// add_stake from a coldkey to its hotkey.
    Stake {
        #[arg(long)]
        netuid: u16,
        #[command(flatten)]
        keys: KeyArgs,
        #[arg(long)]
        tokens: f64,
        /// Stake on a subtensor node (ws://HOST:PORT) instead of the local chain.
        #[arg(long, env = "SUBNET_NODE")]
        node: Option<String>,
    },
    /// Fraud slashes on a subnet (a local-chain extension).
    Slashes {
        #[arg(long)]
        netuid: u16,
        #[arg(long)]
        json: bool,
    },
    /// The subnet owner sets the tempo (360 to 50,400 blocks), as on runtimes with dynamic tempo:
    /// the next epoch runs that many blocks after the last one (at the next block if that has
    /// passed). Fraud reports keep numbering the task's windows.
    SetTempo {
        #[arg(long)]
        netuid: u16,
        #[arg(long)]
        tempo: u64,
        /// The owner's coldkey.
        #[arg(long, default_value = "//owner")]
        owner_uri: String,
    },
    /// The subnet owner triggers an epoch: it runs at the next block, and the tempo counts from it.
    TriggerEpoch {
        #[arg(long)]
        netuid: u16,
        /// The owner's coldkey.
        #[arg(long, default_value = "//owner")]
        owner_uri: String,
    },
    /// Move a manual clock forward.
    Advance {
        #[arg(long)]
        blocks: u64,
    },
    /// Show a subnet's metagraph.
    Metagraph {
        #[arg(long)]
        netuid: u16,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Read it from a subtensor node (ws://HOST:PORT or wss://...) instead of the local chain.
        #[arg(long, env = "SUBNET_NODE")]
        node: Option<String>,
    },
    /// Emissions paid at each epoch.
    Emissions {
        #[arg(long)]
        netuid: u16,
        #[arg(long)]
        json: bool,
    },
}

/// The subtensor node a `--node` flag names, connected.
async fn node(url: &str) -> anyhow::Result<chain_client::SubtensorChain> {
    Ok(chain_client::SubtensorChain::connect(url).await?)
}

/// `subnet chain ...`: the local chain in `dir`, or for register, stake and metagraph with `--node`,
/// a subtensor node.
async fn run_chain(dir: &std::path::Path, command: ChainCommand) -> anyhow::Result<()> {
    match command {
        ChainCommand::Init {
            block_time_ms,
            seed,
        } => {
            admin::init(dir, block_time_ms, seed)?;
            println!(
                "created {} ({} ms per block)",
                admin::chain_file(dir).display(),
                block_time_ms
            );
        }
        ChainCommand::CreateSubnet {
            task,
            owner_uri,
            commit_reveal,
            commit_reveal_version,
        } => create_subnet(dir, &task, &owner_uri, commit_reveal, commit_reveal_version)?,
        ChainCommand::Fund { keys, tokens } => {
            let coldkey = admin::account(&keys.coldkey()?);
            let balance = admin::open(dir)?.fund(coldkey, admin::tokens_to_rao(tokens)?)?;
            println!(
                "{coldkey} balance {:.3} τ",
                balance as f64 / admin::RAO_PER_TOKEN as f64
            );
        }
        ChainCommand::Register {
            netuid,
            keys,
            node: url,
        } => register(dir, netuid, &keys, url.as_deref()).await?,
        ChainCommand::Stake {
            netuid,
            keys,
            tokens,
            node: url,
        } => stake(dir, netuid, &keys, tokens, url.as_deref()).await?,
        ChainCommand::Slashes { netuid, json } => print_slashes(dir, netuid, json)?,
        ChainCommand::SetTempo {
            netuid,
            tempo,
            owner_uri,
        } => {
            let owner = admin::account(&admin::keypair(&owner_uri)?);
            let pipeline = admin::open(dir)?.set_tempo_sync(owner, netuid, tempo)?;
            println!(
                "subnet {netuid}: tempo {tempo}, {}",
                admin::format_pipeline(&pipeline)
            );
        }
        ChainCommand::TriggerEpoch { netuid, owner_uri } => {
            let owner = admin::account(&admin::keypair(&owner_uri)?);
            let pipeline = admin::open(dir)?.trigger_epoch_sync(owner, netuid)?;
            println!(
                "subnet {netuid}: epoch triggered, {}",
                admin::format_pipeline(&pipeline)
            );
        }
        ChainCommand::Advance { blocks } => {
            let block = admin::open(dir)?.advance_blocks(blocks)?;
            println!("block {block}");
        }
        ChainCommand::Metagraph {
            netuid,
            json,
            node: url,
        } => print_metagraph(dir, netuid, json, url.as_deref()).await?,
        ChainCommand::Emissions { netuid, json } => print_emissions(dir, netuid, json)?,
    }
    Ok(())
}

/// `subnet chain create-subnet`: a subnet whose tempo is the task's window.
fn create_subnet(
    dir: &std::path::Path,
    task: &PathBuf,
    owner_uri: &str,
    commit_reveal: bool,
    commit_reveal_version: u16,
) -> anyhow::Result<()> {
    let spec = load_task(Some(task))?;
    let chain = admin::open(dir)?;
    let owner = admin::keypair(owner_uri)?;
    let params = chain_client::SubnetParams {
        commit_reveal_version,
        ..admin::params_for_window(spec.window.blocks, spec.task.version, commit_reveal)
    };
    let netuid = chain.create_subnet(admin::account(&owner), params)?;
    println!(
        "created subnet {netuid} for task {} (tempo {} blocks)",
        spec.task.name, spec.window.blocks
    );
    Ok(())
}

/// `subnet chain register`, on the local chain or at a node.
async fn register(
    dir: &std::path::Path,
    netuid: u16,
    keys: &KeyArgs,
    url: Option<&str>,
) -> anyhow::Result<()> {
    let coldkey = keys.coldkey()?;
    let hotkey = admin::account(&keys.hotkey()?);
    let uid = match url {
        Some(url) => {
            node(url)
                .await?
                .burned_register(&coldkey, netuid, hotkey)
                .await?
        }
        None => admin::open(dir)?.burned_register(admin::account(&coldkey), netuid, hotkey)?,
    };
    println!("registered {hotkey} as uid {uid} on subnet {netuid}");
    Ok(())
}

/// `subnet chain stake`, on the local chain or at a node.
async fn stake(
    dir: &std::path::Path,
    netuid: u16,
    keys: &KeyArgs,
    tokens: f64,
    url: Option<&str>,
) -> anyhow::Result<()> {
    let coldkey = keys.coldkey()?;
    let hotkey = admin::account(&keys.hotkey()?);
    let rao = admin::tokens_to_rao(tokens)?;
    match url {
        Some(url) => {
            node(url)
                .await?
                .add_stake(&coldkey, hotkey, netuid, rao)
                .await?;
            println!("staked {tokens} τ to {hotkey} on subnet {netuid} at {url}");
        }
        None => {
            let chain = admin::open(dir)?;
            let stake = chain.add_stake(admin::account(&coldkey), hotkey, netuid, rao)?;
            println!(
                "{hotkey} stake {:.3} τ on subnet {netuid}",
                stake as f64 / admin::RAO_PER_TOKEN as f64
            );
        }
    }
    Ok(())
}

/// `subnet chain metagraph`, from the local chain or a node.
async fn print_metagraph(
    dir: &std::path::Path,
    netuid: u16,
    json: bool,
    url: Option<&str>,
) -> anyhow::Result<()> {
    let (metagraph, pipeline) = match url {
        Some(url) => (node(url).await?.metagraph(netuid).await?, None),
        None => {
            let chain = admin::open(dir)?;
            (
                chain.metagraph_sync(netuid)?,
                Some(chain.epoch_pipeline(netuid)?),
            )
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&metagraph)?);
    } else {
        print!("{}", admin::format_metagraph(&metagraph));
        if let Some(p) = pipeline {
            println!("{}", admin::format_pipeline(&p));
        }
    }
    Ok(())
}

/// `subnet chain slashes`.
fn print_slashes(dir: &std::path::Path, netuid: u16, json: bool) -> anyhow::Result<()> {
    let slashes = admin::open(dir)?.slashes(netuid)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&slashes)?);
    } else if slashes.is_empty() {
        println!("no slashes on subnet {netuid}");
    } else {
        for s in slashes {
            println!(
                "block {} window {}: {} lost {:.3} τ (evidence {}, reported by {} validator(s))",
                s.block,
                s.window,
                s.hotkey,
                s.amount as f64 / admin::RAO_PER_TOKEN as f64,
                s.evidence,
                s.reporters.len()
            );
        }
    }
    Ok(())
}

/// `subnet chain emissions`.
fn print_emissions(dir: &std::path::Path, netuid: u16, json: bool) -> anyhow::Result<()> {
    let epochs = admin::open(dir)?.epochs(netuid)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&epochs)?);
    } else {
        for (block, emission, owner_cut) in epochs {
            let shown: Vec<String> = emission
                .iter()
                .map(|e| format!("{:.3}", *e as f64 / admin::RAO_PER_TOKEN as f64))
                .collect();
            println!(
                "block {block:>8}  owner {:.3} τ  per uid [{}]",
                owner_cut as f64 / admin::RAO_PER_TOKEN as f64,
                shown.join(", ")
            );
        }
    }
    Ok(())
}
