//! `subnet`: run a whole local subnet, and (as the project grows) administer the local chain.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use subnet_cli::chain_admin as admin;
use subnet_cli::localnet::{self, LocalnetConfig};
use task::TaskSpec;

#[derive(Parser)]
#[command(
    name = "subnet",
    version,
    about = "A Bittensor-style subnet that trains a model together"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a whole subnet on this machine: a local chain, miners and validators over gRPC, for a
    /// number of windows, printing one line per window.
    Localnet {
        /// Number of honest miners.
        #[arg(long, env = "SUBNET_MINERS", default_value_t = 4)]
        miners: usize,
        /// Number of validators (of different stake; the one with the most leads the model).
        #[arg(long, env = "SUBNET_VALIDATORS", default_value_t = 2)]
        validators: usize,
        /// Windows to run before exiting.
        #[arg(long, env = "SUBNET_WINDOWS", default_value_t = 20)]
        windows: u64,
        /// Directory for the chain file (a fresh temporary one if not given).
        #[arg(long, env = "SUBNET_DIR")]
        dir: Option<PathBuf>,
        /// Task file (the built-in localnet task if not given).
        #[arg(long, env = "SUBNET_TASK")]
        task: Option<PathBuf>,
        /// Run the subnet with commit-reveal, as subtensor does today (version 4): validators commit
        /// each window's weights encrypted to a round of the chain's randomness beacon, and the
        /// chain opens and applies them in the next epoch.
        #[arg(long, env = "SUBNET_COMMIT_REVEAL")]
        commit_reveal: bool,
        /// Misbehaving miners to add beside the honest ones, comma-separated (`none` for an
        /// honest-only run): random, nan, copier, noisy-copier, free-rider, stale, amplified,
        /// scaled, lazy, silent, heldout, mixer, residual-forger, sybil (test-only modes of the
        /// miner; `miner run` has none of them). Default: lazy,copier (lazy,random with
        /// --processes).
        #[arg(long, env = "SUBNET_ADVERSARIES", value_parser = parse_adversaries)]
        adversaries: Option<Adversaries>,
        /// Keep the temporary run directory (chain, validators' records, report) when no --dir is
        /// given.
        #[arg(long)]
        keep: bool,
        /// Audit every miner once per this many windows (the task's scoring.audit_period if not
        /// given; 1 audits every miner every window).
        #[arg(long, env = "SUBNET_AUDIT_PERIOD")]
        audit_period: Option<u64>,
        /// Seed of the local chain (its block hashes seed every window's assignment).
        #[arg(long, env = "SUBNET_SEED", default_value_t = localnet::DEFAULT_SEED)]
        seed: u64,
        /// Run every validator and miner as a separate process of the real `validator` and `miner`
        /// programs (found beside this one) on the shared chain file, with wallets in the run
        /// directory and each process's log in its `logs/`. The copier, noisy-copier and mixer
        /// modes read other miners' work inside one process and are not available here.
        #[arg(long)]
        processes: bool,
        /// The most parameters of a group each honest miner holds, comma-separated in miner order
        /// (0: any; miners past the list hold any). Only matters for a task with parameter groups.
        #[arg(long, value_delimiter = ',')]
        group_capacities: Vec<u64>,
    },
    /// A miner in a test-only misbehaving mode, as its own process (what `subnet localnet
    /// --processes` starts for its adversaries).
    #[command(hide = true)]
    Adversary {
        #[arg(value_parser = parse_adversary)]
        mode: miner::adversary::Adversary,
        #[arg(long)]
        task: PathBuf,
        #[arg(long)]
        chain: String,
        #[arg(long)]
        netuid: u16,
        #[arg(long)]
        wallet: String,
        #[arg(long, default_value = "default")]
        hotkey: String,
        #[arg(long)]
        wallet_path: Option<PathBuf>,
        #[arg(long)]
        metrics: Option<String>,
        /// The Sybil partner's uid.
        #[arg(long)]
        partner: Option<u16>,
    },
    /// Run Yuma consensus epochs from a JSON file (or - for stdin) and print the results.
    Yuma {
        /// Input: {"hyperparameters": {...}, "stake": [...], "block_at_registration": [...],
        /// "epochs": [{"block", "emission", "weights": [[[uid, u16], ...], ...], "last_update"}]}.
        file: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Replay a validator's data directory offline: re-run every recorded evaluation on the CPU,
    /// confirm each loss bit for bit, and print per-window scores and weights.
    Replay {
        /// The validator's data directory (its --data).
        dir: PathBuf,
        /// What-if: re-decide the same evidence with the [scoring] parameters of this TOML file
        /// (moving_average, max_weight, assignment_p_value, copy_cosine) and show the weights.
        #[arg(long)]
        scoring: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Also draw the held-out loss and the weight shares over windows to this PNG file.
        #[arg(long)]
        plot: Option<PathBuf>,
    },
    /// Training efficacy on equal tokens: one machine with AdamW against the subnet with dense
    /// gradients and with compressed ones (the task's layout and any given), from genesis. Prints the
    /// held-out loss per window and a table; writes efficacy.md, efficacy.csv and efficacy.png.
    Efficacy {
        /// Task file.
        #[arg(long, default_value = "tasks/tiny-lm.toml")]
        task: PathBuf,
        /// Honest miners.
        #[arg(long, default_value_t = 4)]
        miners: u16,
        /// Windows to train.
        #[arg(long, default_value_t = 10)]
        windows: u64,
        /// More compression layouts to compare, CHUNK:K:BITS (bits 8: byte values with 16-bit
        /// positions; 1 to 7: packed), comma-separated.
        #[arg(long, value_delimiter = ',', value_parser = subnet_cli::efficacy::parse_layout)]
        layouts: Vec<subnet_proto::codec::Layout>,
        /// Override the task's inner steps per window.
        #[arg(long)]
        inner_steps: Option<usize>,
        /// Held-out batches the loss is measured on.
        #[arg(long, default_value_t = 16)]
        heldout_batches: usize,
        /// Where to write the table, the CSV and the plot.
        #[arg(long, default_value = "efficacy")]
        out: PathBuf,
        /// Run only the compressed layouts, not the two references (for sweeps).
        #[arg(long)]
        compressed_only: bool,
    },
    /// Bittensor wallets: create one.
    Wallet {
        #[command(subcommand)]
        command: WalletCommand,
    },
    /// Task files: check one.
    Task {
        #[command(subcommand)]
        command: TaskCommand,
    },
    /// Create and administer a local chain, to run miners and validators as separate programs.
    Chain {
        /// Directory holding the chain file (chain.sqlite).
        #[arg(
            long,
            env = "SUBNET_DIR",
            global = true,
            default_value = "subnet-chain"
        )]
        dir: PathBuf,
        #[command(subcommand)]
        command: ChainCommand,
    },
}

/// Which keys a chain command uses: secret URIs, or a Bittensor wallet's coldkey and hotkey.
#[derive(clap::Args)]
struct KeyArgs {
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
enum WalletCommand {
    /// Create hotkey HOTKEY in wallet NAME (and the wallet's coldkey if it has none), unencrypted,
    /// in Bittensor's layout and keyfile format.
    New {
        #[arg(long)]
        wallet: String,
        #[arg(long, default_value = "default")]
        hotkey: String,
        /// Directory of Bittensor wallets (default ~/.bittensor/wallets).
        #[arg(long, env = "BT_WALLET_PATH")]
        wallet_path: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TaskCommand {
    /// Validate a task file: print every problem with its key (exit 1), or a summary.
    Check { file: PathBuf },
}

/// Prints the problems of a task file, or its summary; returns whether it is valid.
fn check_task(file: &std::path::Path) -> anyhow::Result<bool> {
    let spec = match TaskSpec::from_file(file) {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            return Ok(false);
        }
    };
    let engine = task::TaskEngine::new(spec.clone());
    let n = engine.num_params();
    if engine.groups().len() < spec.shards.groups {
        eprintln!(
            "{}: shards.groups = {} but the model has only {} parameter tensors to group",
            file.display(),
            spec.shards.groups,
            engine.groups().len()
        );
        return Ok(false);
    }
    println!("{}: ok", file.display());
    println!(
        "  task            {} version {}",
        spec.task.name, spec.task.version
    );
    println!("  digest          {}", hex_digest(&spec.digest()));
    println!(
        "  model           {n} parameters ({})",
        spec.model.summary()
    );
    let unit = if spec.data.table.is_some() {
        "rows"
    } else {
        "tokens"
    };
    println!(
        "  {:<16}{} per miner ({} steps x {} x {})",
        format!("{unit}/window"),
        spec.tokens_per_miner_window(),
        spec.training.inner_steps,
        spec.training.batch_size,
        spec.targets_per_example(),
    );
    let dense = subnet_proto::codec::encode_dense(&vec![0.0; n]).len();
    let c = &spec.compression;
    if c.top_k == 0 {
        println!("  gradient        {dense} bytes (dense f32)");
    } else {
        let layout = subnet_proto::codec::Layout::of_task(c.chunk, c.top_k, c.value_bits);
        println!(
            "  gradient        {} bytes ({layout}), {:.1}x smaller than dense f32 ({dense} bytes)",
            layout.payload_len(n),
            layout.ratio(n)
        );
    }
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let groups = engine.groups();
    if groups.is_whole() {
        println!(
            "  memory          {:.1} MiB of parameters, gradients and AdamW moments (16 B a parameter), before activations",
            mib(16 * n as u64)
        );
    } else {
        println!(
            "  groups          {} parameter groups; a miner holds every parameter (4 B) and its group's gradients and AdamW moments (12 B a parameter), before activations:",
            groups.len()
        );
        let layout = subnet_proto::codec::Layout::of_task(c.chunk, c.top_k, c.value_bits);
        for g in groups.groups() {
            println!(
                "    {:>3}  {:>11} parameters  {:>7.1} MiB  payload {:>9} bytes  {} .. {}",
                g.index,
                g.len(),
                mib(g.state_bytes(n)),
                layout.payload_len(g.len()),
                g.first,
                g.last
            );
        }
        println!(
            "                  (training the whole model: {:.1} MiB; `miner run --max-group-params N` takes only groups of at most N parameters)",
            mib(16 * n as u64)
        );
    }
    match engine.corpus() {
        task::engine::Corpus::Markov(markov) => println!(
            "  corpus          synthetic: entropy rate {:.4} nats/token, lowest loss on a sequence {:.4}",
            markov.entropy_rate(),
            markov.min_sequence_loss(spec.targets_per_example()),
        ),
        task::engine::Corpus::Table(table) => {
            let train = spec.data.training_items();
            println!(
                "  data            {}: {} rows of {} features, {} classes (labels {:?}); {} training rows",
                spec.data
                    .table
                    .as_ref()
                    .map(|t| t.source.name())
                    .unwrap_or(""),
                table.rows(),
                table.features(),
                table.classes(),
                table.labels(),
                train,
            );
            println!(
                "  baseline        {:.4} nats: the loss of predicting the training rows' class frequencies",
                table.prior_entropy(0..train)
            );
        }
        task::engine::Corpus::Text(text) => println!(
            "  corpus          {} tokens from {} ({} pages of {})",
            text.len(),
            spec.data
                .text
                .as_ref()
                .map(|t| t.path.as_str())
                .unwrap_or(""),
            text.len() / spec.data.page_len,
            spec.data.page_len
        ),
    }
    Ok(true)
}

fn run_yuma(file: &std::path::Path, json: bool) -> anyhow::Result<()> {
    use std::io::Read;
    let mut text = String::new();
    if file.as_os_str() == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read stdin")?;
    } else {
        text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
    }
    let input: scoring::simulate::SimulationInput = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid yuma input", file.display()))?;
    let output = scoring::simulate::simulate(&input)
        .map_err(|e| anyhow::anyhow!("{}:\n{e}", file.display()))?;
    if json {
        println!("{}", serde_json::to_string(&output)?);
        return Ok(());
    }
    let p = |x: u16| x as f64 / 65535.0;
    for (k, (spec, e)) in input.epochs.iter().zip(&output.epochs).enumerate() {
        println!(
            "epoch {k} at block {} (emission {})",
            spec.block, spec.emission
        );
        println!(
            "{:>5} {:>14} {:>6} {:>9} {:>9} {:>9} {:>9} {:>14}",
            "uid", "stake", "permit", "consensus", "incentive", "dividends", "trust", "emission"
        );
        for uid in 0..input.stake.len() {
            println!(
                "{uid:>5} {:>14} {:>6} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>14}",
                input.stake[uid],
                if e.validator_permit[uid] { "yes" } else { "no" },
                p(e.consensus[uid]),
                p(e.incentive[uid]),
                p(e.dividends[uid]),
                p(e.validator_trust[uid]),
                e.emission[uid]
            );
        }
    }
    Ok(())
}

fn hex_digest(d: &[u8; 32]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Subcommand)]
enum ChainCommand {
    /// Create a new chain whose block height follows wall time.
    Init {
        /// Milliseconds per block (0: blocks only move with `subnet chain advance`).
        #[arg(long, default_value_t = 1000)]
        block_time_ms: u64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Create a subnet for a task: tempo and weight rate limit equal the task's window length.
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
    use chain_client::Chain;
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
        } => {
            let spec = load_task(Some(&task))?;
            let chain = admin::open(dir)?;
            let owner = admin::keypair(&owner_uri)?;
            let params = chain_client::SubnetParams {
                commit_reveal_version,
                ..admin::params_for_window(spec.window.blocks, spec.task.version, commit_reveal)
            };
            let netuid = chain.create_subnet(admin::account(&owner), params)?;
            println!(
                "created subnet {netuid} for task {} (tempo {} blocks)",
                spec.task.name, spec.window.blocks
            );
        }
        ChainCommand::Fund { keys, tokens } => {
            let coldkey = admin::account(&keys.coldkey()?);
            let balance = admin::open(dir)?.fund(coldkey, admin::tokens_to_rao(tokens)?)?;
            println!(
                "{coldkey} balance {:.3} τ",
                balance as f64 / localnet::RAO_PER_TOKEN as f64
            );
        }
        ChainCommand::Register {
            netuid,
            keys,
            node: url,
        } => {
            let coldkey = keys.coldkey()?;
            let hotkey = admin::account(&keys.hotkey()?);
            let uid = match &url {
                Some(url) => {
                    node(url)
                        .await?
                        .burned_register(&coldkey, netuid, hotkey)
                        .await?
                }
                None => {
                    admin::open(dir)?.burned_register(admin::account(&coldkey), netuid, hotkey)?
                }
            };
            println!("registered {hotkey} as uid {uid} on subnet {netuid}");
        }
        ChainCommand::Stake {
            netuid,
            keys,
            tokens,
            node: url,
        } => {
            let coldkey = keys.coldkey()?;
            let hotkey = admin::account(&keys.hotkey()?);
            let rao = admin::tokens_to_rao(tokens)?;
            match &url {
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
                        stake as f64 / localnet::RAO_PER_TOKEN as f64
                    );
                }
            }
        }
        ChainCommand::Slashes { netuid, json } => {
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
                        s.amount as f64 / localnet::RAO_PER_TOKEN as f64,
                        s.evidence,
                        s.reporters.len()
                    );
                }
            }
        }
        ChainCommand::Advance { blocks } => {
            let block = admin::open(dir)?.advance_blocks(blocks)?;
            println!("block {block}");
        }
        ChainCommand::Metagraph {
            netuid,
            json,
            node: url,
        } => {
            let metagraph = match &url {
                Some(url) => node(url).await?.metagraph(netuid).await?,
                None => admin::open(dir)?.metagraph_sync(netuid)?,
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&metagraph)?);
            } else {
                print!("{}", admin::format_metagraph(&metagraph));
            }
        }
        ChainCommand::Emissions { netuid, json } => {
            let epochs = admin::open(dir)?.epochs(netuid)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&epochs)?);
            } else {
                for (block, emission, owner_cut) in epochs {
                    let shown: Vec<String> = emission
                        .iter()
                        .map(|e| format!("{:.3}", *e as f64 / localnet::RAO_PER_TOKEN as f64))
                        .collect();
                    println!(
                        "block {block:>8}  owner {:.3} τ  per uid [{}]",
                        owner_cut as f64 / localnet::RAO_PER_TOKEN as f64,
                        shown.join(", ")
                    );
                }
            }
        }
    }
    Ok(())
}

/// Adversary modes from `--adversaries` (`none`: no adversary).
#[derive(Clone, Debug)]
struct Adversaries(Vec<miner::adversary::Adversary>);

fn parse_adversaries(list: &str) -> Result<Adversaries, String> {
    if list.trim().is_empty() || list == "none" {
        return Ok(Adversaries(Vec::new()));
    }
    list.split(',')
        .map(|a| a.trim().parse())
        .collect::<Result<_, _>>()
        .map(Adversaries)
}

fn parse_adversary(name: &str) -> Result<miner::adversary::Adversary, String> {
    name.parse()
}

fn load_task(path: Option<&PathBuf>) -> anyhow::Result<TaskSpec> {
    match path {
        Some(p) => Ok(TaskSpec::from_file(p)?),
        None => Ok(TaskSpec::from_toml_str(subnet_cli::LOCALNET_TASK)?),
    }
}

/// mimalloc: training allocates and frees a tensor per operation, and the system allocator's
/// returns to the kernel cost a measured 18-34% of tiny-lm's CPU training throughput (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Localnet {
            miners,
            validators,
            windows,
            dir,
            task,
            commit_reveal,
            adversaries,
            audit_period,
            seed,
            keep,
            processes,
            group_capacities,
        } => {
            let Adversaries(adversaries) = match adversaries {
                Some(list) => list,
                None if processes => parse_adversaries("lazy,random").expect("known modes"),
                None => parse_adversaries("lazy,copier").expect("known modes"),
            };
            let task = load_task(task.as_ref())?;
            let engine = task::TaskEngine::new(task.clone());
            println!(
                "localnet: task {} ({} parameters), {miners} honest miners{}, {validators} validator(s), {windows} windows",
                task.task.name,
                engine.num_params(),
                if adversaries.is_empty() {
                    String::new()
                } else {
                    let names: Vec<String> = adversaries.iter().map(|a| a.to_string()).collect();
                    format!(
                        " and {} adversaries ({})",
                        adversaries.len(),
                        names.join(", ")
                    )
                }
            );
            if let (Some(markov), Some(floor)) = (engine.markov(), engine.loss_floor()) {
                println!(
                    "corpus entropy rate {:.4} nats/byte; lowest reachable loss on {}-byte sequences {floor:.4}",
                    markov.entropy_rate(),
                    task.targets_per_example(),
                );
            }
            // The run directory: --dir, or a temporary one (kept with --keep).
            let temp = match &dir {
                Some(_) => None,
                None => Some(tempfile::tempdir().context("cannot create a temporary directory")?),
            };
            let run_dir = dir
                .clone()
                .unwrap_or_else(|| temp.as_ref().expect("made above").path().to_path_buf());
            let task_name = task.task.name.clone();
            let config = LocalnetConfig {
                miners,
                validators,
                windows,
                dir: Some(run_dir.clone()),
                task,
                commit_reveal,
                adversaries,
                audit_period,
                seed,
                group_capacities,
            };
            let floor = engine.loss_floor();
            let print = |line: &localnet::WindowLine| {
                for row in localnet::format_table(line, floor) {
                    println!("{row}");
                }
            };
            let report = if processes {
                let bins = subnet_cli::processes::Binaries::beside_this_program()?;
                subnet_cli::processes::run(config, &bins, print).await?
            } else {
                localnet::run(config, print).await?
            };
            let run = subnet_cli::report::build(&task_name, &report)?;
            subnet_cli::report::write(&run, &report, &run_dir)?;
            for line in subnet_cli::report::summary(&run) {
                println!("{line}");
            }
            let kept = match (dir, temp) {
                (None, Some(temp)) if !keep => {
                    drop(temp);
                    "the temporary run directory is removed (--keep or --dir DIR keeps the chain, the validators' records and report.json/report.png)".to_string()
                }
                (_, temp) => {
                    let kept = temp.map(|t| t.keep()).unwrap_or(run_dir);
                    format!(
                        "run directory {}: report.json, report.png, the chain, and each validator's records (`subnet replay {}`)",
                        kept.display(),
                        localnet::validator_dir(&kept, 0).display()
                    )
                }
            };
            println!("done; {kept}");
        }
        Command::Adversary {
            mode,
            task,
            chain,
            netuid,
            wallet,
            hotkey,
            wallet_path,
            metrics,
            partner,
        } => {
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
            .await?
        }
        Command::Chain { dir, command } => run_chain(&dir, command).await?,
        Command::Yuma { file, json } => run_yuma(&file, json)?,
        Command::Wallet {
            command:
                WalletCommand::New {
                    wallet,
                    hotkey,
                    wallet_path,
                },
        } => {
            let root = wallet_path.unwrap_or_else(chain_client::wallet::default_wallet_root);
            let created = chain_client::wallet::create_wallet(&root, &wallet, &hotkey)?;
            if let Some((coldkey, path)) = &created.coldkey {
                println!("coldkey  {} -> {}", coldkey.ss58_address, path.display());
                println!(
                    "         mnemonic: {}",
                    coldkey.secret_phrase.as_deref().unwrap_or_default()
                );
            }
            println!(
                "hotkey   {} -> {}",
                created.hotkey.ss58_address,
                created.hotkey_path.display()
            );
            println!(
                "         mnemonic: {}",
                created.hotkey.secret_phrase.as_deref().unwrap_or_default()
            );
            println!(
                "The keyfiles are unencrypted (mode 600): write the mnemonics down, and keep real funds on an encrypted coldkey."
            );
        }
        Command::Efficacy {
            task,
            miners,
            windows,
            layouts,
            inner_steps,
            heldout_batches,
            out,
            compressed_only,
        } => {
            let mut spec =
                TaskSpec::from_file(&task).with_context(|| format!("task {}", task.display()))?;
            if let Some(steps) = inner_steps {
                spec.training.inner_steps = steps;
            }
            let c = &spec.compression;
            let own = subnet_proto::codec::Layout::of_task(c.chunk, c.top_k, c.value_bits);
            let layouts = std::iter::once(own)
                .filter(|l| *l != subnet_proto::codec::Layout::DenseF32)
                .chain(layouts.into_iter().filter(|l| *l != own))
                .collect();
            let comparison = subnet_cli::efficacy::compare(
                spec,
                subnet_cli::efficacy::Setup {
                    miners,
                    windows,
                    layouts,
                    heldout_batches,
                    compressed_only,
                },
            )?;
            comparison.write(&out)?;
            println!("{}", comparison.table());
            println!("written to {}/efficacy.{{md,csv,png}}", out.display());
        }
        Command::Replay {
            dir,
            scoring,
            json,
            plot,
        } => subnet_cli::replay::run(&dir, scoring.as_deref(), json, plot.as_deref())?,
        Command::Task {
            command: TaskCommand::Check { file },
        } => {
            if !check_task(&file)? {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}
