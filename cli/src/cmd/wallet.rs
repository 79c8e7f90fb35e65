//! `subnet wallet`: Bittensor wallets.

use chain_client::wallet::WalletKey;
use clap::Subcommand;
use std::path::{Path, PathBuf};
use subxt_signer::bip39::Mnemonic;

#[derive(Subcommand)]
pub enum WalletCommand {
    /// Create hotkey HOTKEY in wallet NAME (and the wallet's coldkey if it has none) in Bittensor's
    /// layout and keyfile format; the hotkey unencrypted, as Bittensor keeps hotkeys.
    New {
        #[arg(long)]
        wallet: String,
        #[arg(long, default_value = "default")]
        hotkey: String,
        /// Encrypt a new coldkey as bittensor-wallet does (`$NACL`, argon2i and secretbox), with
        /// the password in SUBNET_WALLET_PASSWORD or asked twice on the terminal.
        #[arg(long)]
        encrypt_coldkey: bool,
        /// Directory of Bittensor wallets (default ~/.bittensor/wallets).
        #[arg(long, env = "BT_WALLET_PATH")]
        wallet_path: Option<PathBuf>,
    },
    /// List the wallets, their coldkey addresses (and whether the coldkey is encrypted) and their
    /// hotkeys.
    List {
        #[arg(long, env = "BT_WALLET_PATH")]
        wallet_path: Option<PathBuf>,
    },
    /// Write a wallet's coldkey (`--coldkey`) or hotkey HOTKEY again from its mnemonic, typed at
    /// the prompt or given in SUBNET_MNEMONIC; an existing keyfile is never overwritten.
    Regen {
        #[arg(long)]
        wallet: String,
        #[arg(long, default_value = "default", conflicts_with = "coldkey")]
        hotkey: String,
        /// Regenerate the coldkey rather than a hotkey.
        #[arg(long)]
        coldkey: bool,
        /// Encrypt the regenerated coldkey (password as for `new --encrypt-coldkey`).
        #[arg(long, requires = "coldkey")]
        encrypt_coldkey: bool,
        #[arg(long, env = "BT_WALLET_PATH")]
        wallet_path: Option<PathBuf>,
    },
}

pub fn run(command: WalletCommand) -> anyhow::Result<()> {
    match command {
        WalletCommand::New {
            wallet,
            hotkey,
            encrypt_coldkey,
            wallet_path,
        } => new(&root(wallet_path), &wallet, &hotkey, encrypt_coldkey),
        WalletCommand::List { wallet_path } => list(&root(wallet_path)),
        WalletCommand::Regen {
            wallet,
            hotkey,
            coldkey,
            encrypt_coldkey,
            wallet_path,
        } => {
            let key = if coldkey {
                WalletKey::Coldkey {
                    password: encrypt_coldkey.then(new_password).transpose()?,
                }
            } else {
                WalletKey::Hotkey(hotkey)
            };
            regen(&root(wallet_path), &wallet, &key)
        }
    }
}

fn root(wallet_path: Option<PathBuf>) -> PathBuf {
    wallet_path.unwrap_or_else(chain_client::wallet::default_wallet_root)
}

fn list(root: &Path) -> anyhow::Result<()> {
    let wallets = chain_client::wallet::list_wallets(root)?;
    if wallets.is_empty() {
        println!(
            "no wallets under {} (make one with `subnet wallet new --wallet NAME`)",
            root.display()
        );
    }
    let unknown = "(unreadable)".to_string();
    for w in wallets {
        let sealed = if w.coldkey_encrypted {
            ", encrypted"
        } else {
            ""
        };
        println!(
            "{}  coldkey {}{sealed}",
            w.name,
            w.coldkey.as_ref().unwrap_or(&unknown)
        );
        for (name, address) in &w.hotkeys {
            println!("  hotkey {name}  {}", address.as_ref().unwrap_or(&unknown));
        }
    }
    Ok(())
}

fn regen(root: &Path, wallet: &str, key: &WalletKey) -> anyhow::Result<()> {
    let phrase = match std::env::var("SUBNET_MNEMONIC") {
        Ok(phrase) => phrase,
        Err(_) => rpassword::prompt_password("Mnemonic (the words, separated by spaces): ")
            .map_err(|e| {
                anyhow::anyhow!("cannot ask for the mnemonic ({e}): set SUBNET_MNEMONIC instead")
            })?,
    };
    let mnemonic = Mnemonic::parse(phrase.trim())
        .map_err(|e| anyhow::anyhow!("not a BIP-39 mnemonic: {e}"))?;
    let (file, path) = chain_client::wallet::regenerate(root, wallet, key, &mnemonic)?;
    println!(
        "{}  {} -> {}",
        match key {
            WalletKey::Coldkey { .. } => "coldkey",
            WalletKey::Hotkey(_) => "hotkey ",
        },
        file.ss58_address,
        path.display()
    );
    Ok(())
}

fn new(root: &Path, wallet: &str, hotkey: &str, encrypt_coldkey: bool) -> anyhow::Result<()> {
    let password = encrypt_coldkey.then(new_password).transpose()?;
    let created = chain_client::wallet::create_wallet(root, wallet, hotkey, password.as_deref())?;
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
    if password.is_some() && created.coldkey.is_some() {
        println!(
            "The coldkey is encrypted; the hotkey is not (mode 600). Write the mnemonics down: the password cannot bring back a lost key."
        );
    } else {
        println!(
            "The keyfiles are unencrypted (mode 600): write the mnemonics down, and keep real funds on an encrypted coldkey (--encrypt-coldkey)."
        );
    }
    Ok(())
}

/// A password for a new coldkey: SUBNET_WALLET_PASSWORD, else typed twice on the terminal.
fn new_password() -> anyhow::Result<String> {
    use chain_client::wallet::PASSWORD_ENV;
    if let Ok(password) = std::env::var(PASSWORD_ENV) {
        anyhow::ensure!(!password.is_empty(), "{PASSWORD_ENV} is empty");
        return Ok(password);
    }
    let ask = |prompt: &str| {
        rpassword::prompt_password(prompt).map_err(|e| {
            anyhow::anyhow!("cannot ask for a password ({e}): set {PASSWORD_ENV} instead")
        })
    };
    let password = ask("Password for the new coldkey: ")?;
    anyhow::ensure!(!password.is_empty(), "an empty password encrypts nothing");
    anyhow::ensure!(
        ask("The same password again: ")? == password,
        "the two passwords differ: nothing was written"
    );
    Ok(password)
}
