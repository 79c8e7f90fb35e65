//! `subnet wallet`: Bittensor wallets.

use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum WalletCommand {
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

pub fn run(command: WalletCommand) -> anyhow::Result<()> {
    let WalletCommand::New {
        wallet,
        hotkey,
        wallet_path,
    } = command;
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
    Ok(())
}
