//! `subnet wallet`: Bittensor wallets.

use clap::Subcommand;
use std::path::PathBuf;

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
}

pub fn run(command: WalletCommand) -> anyhow::Result<()> {
    let WalletCommand::New {
        wallet,
        hotkey,
        encrypt_coldkey,
        wallet_path,
    } = command;
    let root = wallet_path.unwrap_or_else(chain_client::wallet::default_wallet_root);
    let password = encrypt_coldkey.then(new_password).transpose()?;
    let created =
        chain_client::wallet::create_wallet(&root, &wallet, &hotkey, password.as_deref())?;
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
