//! Bittensor wallets on disk: `ROOT/NAME/hotkeys/HOTKEY` (and `ROOT/NAME/coldkey`,
//! `coldkeypub.txt`) holding the JSON keyfile Bittensor's SDK writes: `accountId`, `publicKey`,
//! `secretPhrase`, `secretSeed`, `ss58Address`. A keyfile may be encrypted as bittensor-wallet
//! encrypts it (`$NACL`, then a 24-byte nonce and the JSON sealed by XSalsa20-Poly1305 under a key
//! that argon2i derives from the password with Bittensor's fixed salt, 8 passes over 512 MiB):
//! the password comes from `SUBNET_WALLET_PASSWORD`, else from a terminal prompt.

use crate::types::AccountId;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use subxt_signer::bip39::Mnemonic;
use subxt_signer::sr25519::Keypair;

#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    #[error(
        "no hotkey file at {path}: create one with `subnet wallet new --wallet {wallet} --hotkey {hotkey}` (or pass --hotkey-uri)"
    )]
    Missing {
        path: PathBuf,
        wallet: String,
        hotkey: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is encrypted in a form this program does not read (only bittensor-wallet's `$NACL` keyfiles): re-encrypt it with a current btcli"
    )]
    Encrypted { path: PathBuf },
    #[error(
        "{path} is encrypted: give its password in {PASSWORD_ENV}, or run where a terminal can ask for it"
    )]
    NoPassword { path: PathBuf },
    #[error("{path}: wrong password (the keyfile does not open with it); the file is unchanged")]
    WrongPassword { path: PathBuf },
    #[error("{path} is not a Bittensor keyfile: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path} already exists: refusing to overwrite a key")]
    Exists { path: PathBuf },
}

/// The JSON of an unencrypted Bittensor keyfile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Keyfile {
    pub account_id: String,
    pub public_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_phrase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_seed: Option<String>,
    pub ss58_address: String,
}

/// Where Bittensor keeps wallets: `$BT_WALLET_PATH`, else `~/.bittensor/wallets`.
pub fn default_wallet_root() -> PathBuf {
    if let Some(path) = std::env::var_os("BT_WALLET_PATH") {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".bittensor").join("wallets")
}

pub fn hotkey_path(root: &Path, wallet: &str, hotkey: &str) -> PathBuf {
    root.join(wallet).join("hotkeys").join(hotkey)
}

/// The 32-byte mini secret of a mnemonic, as substrate derives it (PBKDF2-HMAC-SHA512 over the
/// entropy, salt "mnemonic", 2048 rounds; the first 32 of 64 bytes).
pub fn mini_secret(mnemonic: &Mnemonic) -> [u8; 32] {
    let (entropy, len) = mnemonic.to_entropy_array();
    let mut seed = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<sha2::Sha512>(&entropy[..len], b"mnemonic", 2048, &mut seed);
    seed[..32].try_into().expect("32 bytes")
}

/// The environment variable an unattended node gives its keyfiles' password in.
pub const PASSWORD_ENV: &str = "SUBNET_WALLET_PASSWORD";

/// What bittensor-wallet puts before an encrypted keyfile's nonce.
const NACL_PREFIX: &[u8] = b"$NACL";
const NACL_TOO_SHORT: &str = "an encrypted keyfile too short to hold a nonce and a tag";
/// bittensor-wallet's argon2i salt (the same for every keyfile).
const NACL_SALT: [u8; 16] = *b"\x13q\x83\xdf\xf1Z\t\xbc\x9c\x90\xb5Q\x879\xe9\xb1";

/// The secretbox key of `password`: argon2i (version 0x13) over 512 MiB with 8 passes and one
/// lane, libsodium's "sensitive" limits, as bittensor-wallet derives it.
fn nacl_key(password: &str) -> crypto_secretbox::Key {
    let params = argon2::Params::new(512 * 1024, 8, 1, Some(32)).expect("valid argon2 parameters");
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2i, argon2::Version::V0x13, params);
    let mut key = crypto_secretbox::Key::default();
    argon
        .hash_password_into(password.as_bytes(), &NACL_SALT, &mut key)
        .expect("a 32-byte key from a 16-byte salt");
    key
}

/// Opens a `$NACL` keyfile with `password`: its JSON text.
pub fn decrypt_keyfile(path: &Path, data: &[u8], password: &str) -> Result<String, WalletError> {
    use crypto_secretbox::aead::{Aead, KeyInit};
    let sealed = data
        .strip_prefix(NACL_PREFIX)
        .filter(|s| s.len() > 24 + 16)
        .ok_or_else(|| invalid(path, NACL_TOO_SHORT))?;
    let (nonce, sealed) = sealed.split_at(24);
    let cipher = crypto_secretbox::XSalsa20Poly1305::new(&nacl_key(password));
    let opened = cipher
        .decrypt(crypto_secretbox::Nonce::from_slice(nonce), sealed)
        .map_err(|_| WalletError::WrongPassword {
            path: path.to_path_buf(),
        })?;
    String::from_utf8(opened).map_err(|_| invalid(path, "it opens to text that is not UTF-8"))
}

/// Seals a keyfile's JSON as bittensor-wallet does, with a fresh random nonce.
pub fn encrypt_keyfile(json: &str, password: &str) -> Vec<u8> {
    use crypto_secretbox::aead::{Aead, AeadCore, KeyInit};
    let cipher = crypto_secretbox::XSalsa20Poly1305::new(&nacl_key(password));
    let nonce =
        crypto_secretbox::XSalsa20Poly1305::generate_nonce(&mut crypto_secretbox::aead::OsRng);
    let sealed = cipher
        .encrypt(&nonce, json.as_bytes())
        .expect("sealing a keyfile in memory");
    [NACL_PREFIX, nonce.as_slice(), &sealed].concat()
}

/// The password for the encrypted keyfile at `path`: `SUBNET_WALLET_PASSWORD`, else asked on the
/// terminal.
pub fn password_for(path: &Path) -> Result<String, WalletError> {
    if let Ok(password) = std::env::var(PASSWORD_ENV) {
        return Ok(password);
    }
    rpassword::prompt_password(format!("Password for {}: ", path.display())).map_err(|_| {
        WalletError::NoPassword {
            path: path.to_path_buf(),
        }
    })
}

fn invalid(path: &Path, message: impl Into<String>) -> WalletError {
    WalletError::Invalid {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Reads the keypair of a keyfile (its secret seed, else its phrase) and checks it against the
/// public key the file states; an encrypted one is opened with `password_for` its path.
pub fn read_keyfile(path: &Path) -> Result<Keypair, WalletError> {
    read_keyfile_with(path, || password_for(path))
}

/// `read_keyfile`, with the password (asked only for an encrypted keyfile) from `password`.
pub fn read_keyfile_with(
    path: &Path,
    password: impl FnOnce() -> Result<String, WalletError>,
) -> Result<Keypair, WalletError> {
    let data = std::fs::read(path).map_err(|source| WalletError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if data.starts_with(NACL_PREFIX) {
        if data.len() <= NACL_PREFIX.len() + 24 + 16 {
            return Err(invalid(path, NACL_TOO_SHORT));
        }
        let text = decrypt_keyfile(path, &data, &password()?)?;
        return parse_keyfile(path, &text);
    }
    let text = String::from_utf8(data).map_err(|_| WalletError::Encrypted {
        path: path.to_path_buf(),
    })?;
    parse_keyfile(path, &text)
}

/// The keypair of a keyfile's text (read from `path`, which errors name), checked against the
/// public key the file states.
pub fn parse_keyfile(path: &Path, text: &str) -> Result<Keypair, WalletError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with("$NACL")
        || trimmed.starts_with("$ANSIBLE_VAULT")
        || !trimmed.starts_with('{')
    {
        return Err(WalletError::Encrypted {
            path: path.to_path_buf(),
        });
    }
    let file: Keyfile = serde_json::from_str(text).map_err(|e| invalid(path, e.to_string()))?;
    let keypair = if let Some(seed) = &file.secret_seed {
        let bytes = hex::decode(seed.trim_start_matches("0x"))
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| invalid(path, "secretSeed is not 32 bytes of hex"))?;
        Keypair::from_secret_key(bytes).map_err(|e| invalid(path, e.to_string()))?
    } else if let Some(phrase) = &file.secret_phrase {
        let mnemonic = Mnemonic::parse(phrase).map_err(|e| invalid(path, e.to_string()))?;
        Keypair::from_phrase(&mnemonic, None).map_err(|e| invalid(path, e.to_string()))?
    } else {
        return Err(invalid(
            path,
            "it has no secretSeed or secretPhrase (a public key only)",
        ));
    };
    let public = format!("0x{}", hex::encode(keypair.public_key().0));
    if !file.public_key.eq_ignore_ascii_case(&public) {
        return Err(invalid(
            path,
            format!(
                "its secret gives public key {public}, the file says {}",
                file.public_key
            ),
        ));
    }
    Ok(keypair)
}

/// Loads hotkey `hotkey` of wallet `wallet` under `root`.
pub fn load_hotkey(root: &Path, wallet: &str, hotkey: &str) -> Result<Keypair, WalletError> {
    let path = hotkey_path(root, wallet, hotkey);
    if !path.exists() {
        return Err(WalletError::Missing {
            path,
            wallet: wallet.into(),
            hotkey: hotkey.into(),
        });
    }
    read_keyfile(&path)
}

/// The keyfile of `mnemonic`.
pub fn keyfile(mnemonic: &Mnemonic) -> Keyfile {
    let seed = mini_secret(mnemonic);
    let keypair = Keypair::from_secret_key(seed).expect("any 32 bytes are a mini secret");
    let public = format!("0x{}", hex::encode(keypair.public_key().0));
    Keyfile {
        account_id: public.clone(),
        public_key: public,
        secret_phrase: Some(mnemonic.to_string()),
        secret_seed: Some(format!("0x{}", hex::encode(seed))),
        ss58_address: AccountId::from(&keypair).to_string(),
    }
}

/// A fresh 12-word mnemonic from the operating system's randomness.
pub fn new_mnemonic() -> Mnemonic {
    let mut entropy = [0u8; 16];
    getrandom::fill(&mut entropy).expect("the operating system provides randomness");
    Mnemonic::from_entropy(&entropy).expect("16 bytes are valid entropy")
}

/// Writes a keyfile readable only by its owner; never overwrites.
pub fn write_keyfile(path: &Path, keyfile: &Keyfile) -> Result<(), WalletError> {
    let json = serde_json::to_string(keyfile).expect("keyfiles serialize");
    write_new(path, json.as_bytes())
}

/// Writes a keyfile encrypted with `password` as bittensor-wallet encrypts it; never overwrites.
pub fn write_sealed_keyfile(
    path: &Path,
    keyfile: &Keyfile,
    password: &str,
) -> Result<(), WalletError> {
    let json = serde_json::to_string(keyfile).expect("keyfiles serialize");
    write_new(path, &encrypt_keyfile(&json, password))
}

/// Writes a new file readable only by its owner; never overwrites.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), WalletError> {
    if path.exists() {
        return Err(WalletError::Exists {
            path: path.to_path_buf(),
        });
    }
    let io = |source| WalletError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io)?;
    std::io::Write::write_all(&mut file, bytes).map_err(io)
}

/// What `create_wallet` wrote.
pub struct CreatedWallet {
    pub hotkey: Keyfile,
    pub hotkey_path: PathBuf,
    /// A coldkey, when the wallet had none.
    pub coldkey: Option<(Keyfile, PathBuf)>,
}

/// Creates hotkey `hotkey` in wallet `wallet` (and the wallet's coldkey and `coldkeypub.txt` if it
/// has none, encrypted with `coldkey_password` when one is given); the hotkey is unencrypted, as
/// Bittensor keeps hotkeys.
pub fn create_wallet(
    root: &Path,
    wallet: &str,
    hotkey: &str,
    coldkey_password: Option<&str>,
) -> Result<CreatedWallet, WalletError> {
    let hotkey_path = hotkey_path(root, wallet, hotkey);
    if hotkey_path.exists() {
        return Err(WalletError::Exists { path: hotkey_path });
    }
    let coldkey_path = root.join(wallet).join("coldkey");
    let coldkey = if coldkey_path.exists() {
        None
    } else {
        let file = keyfile(&new_mnemonic());
        match coldkey_password {
            Some(password) => write_sealed_keyfile(&coldkey_path, &file, password)?,
            None => write_keyfile(&coldkey_path, &file)?,
        }
        let public = Keyfile {
            secret_phrase: None,
            secret_seed: None,
            ..file.clone()
        };
        write_keyfile(&root.join(wallet).join("coldkeypub.txt"), &public)?;
        Some((file, coldkey_path))
    };
    let file = keyfile(&new_mnemonic());
    write_keyfile(&hotkey_path, &file)?;
    Ok(CreatedWallet {
        hotkey: file,
        hotkey_path,
        coldkey,
    })
}

/// A wallet as `list_wallets` finds it: its coldkey's address (from `coldkeypub.txt`, which is
/// never encrypted), whether the coldkey is encrypted, and its hotkeys with their addresses.
#[derive(Clone, Debug, PartialEq)]
pub struct WalletListing {
    pub name: String,
    pub coldkey: Option<String>,
    pub coldkey_encrypted: bool,
    pub hotkeys: Vec<(String, Option<String>)>,
}

/// Every wallet under `root`, by name (an address that cannot be read is None).
pub fn list_wallets(root: &Path) -> Result<Vec<WalletListing>, WalletError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WalletError::Io { path, source }
    };
    let names = |dir: &Path| -> Result<Vec<String>, WalletError> {
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            out.push(
                entry
                    .map_err(io(dir))?
                    .file_name()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        out.sort();
        Ok(out)
    };
    let address = |path: &Path| -> Option<String> {
        let text = std::fs::read_to_string(path).ok()?;
        let file: serde_json::Value = serde_json::from_str(&text).ok()?;
        Some(file["ss58Address"].as_str()?.to_string())
    };
    let mut out = Vec::new();
    for name in names(root)? {
        let dir = root.join(&name);
        if !dir.is_dir() {
            continue;
        }
        let coldkey = dir.join("coldkey");
        out.push(WalletListing {
            coldkey: address(&dir.join("coldkeypub.txt")),
            coldkey_encrypted: std::fs::read(&coldkey).is_ok_and(|b| b.starts_with(NACL_PREFIX)),
            hotkeys: names(&dir.join("hotkeys"))?
                .into_iter()
                .map(|h| {
                    let a = address(&dir.join("hotkeys").join(&h));
                    (h, a)
                })
                .collect(),
            name,
        });
    }
    Ok(out)
}

/// Which key of a wallet `regenerate` writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalletKey {
    /// The coldkey (and `coldkeypub.txt`), encrypted with the password when one is given.
    Coldkey { password: Option<String> },
    /// Hotkey NAME, unencrypted.
    Hotkey(String),
}

/// Writes a wallet's key again from its mnemonic (never over an existing file): the keyfile it
/// wrote.
pub fn regenerate(
    root: &Path,
    wallet: &str,
    key: &WalletKey,
    mnemonic: &Mnemonic,
) -> Result<(Keyfile, PathBuf), WalletError> {
    let file = keyfile(mnemonic);
    match key {
        WalletKey::Hotkey(name) => {
            let path = hotkey_path(root, wallet, name);
            write_keyfile(&path, &file)?;
            Ok((file, path))
        }
        WalletKey::Coldkey { password } => {
            let path = root.join(wallet).join("coldkey");
            let public_path = root.join(wallet).join("coldkeypub.txt");
            if public_path.exists() {
                return Err(WalletError::Exists { path: public_path });
            }
            match password {
                Some(p) => write_sealed_keyfile(&path, &file, p)?,
                None => write_keyfile(&path, &file)?,
            }
            let public = Keyfile {
                secret_phrase: None,
                secret_seed: None,
                ..file.clone()
            };
            write_keyfile(&public_path, &public)?;
            Ok((file, path))
        }
    }
}

/// Why no key could be chosen from a program's flags.
#[derive(Debug, thiserror::Error)]
pub enum KeyChoiceError {
    #[error(transparent)]
    Wallet(#[from] WalletError),
    #[error(transparent)]
    Uri(#[from] crate::ChainError),
    #[error(
        "no key given: pass --wallet NAME [--hotkey NAME] (a Bittensor wallet) or --hotkey-uri URI"
    )]
    None,
}

/// The hotkey a program's flags name: a secret URI (dev keys such as `//miner-1`, for local chains),
/// or hotkey `hotkey` of Bittensor wallet `wallet` under `root` (default: `default_wallet_root`).
pub fn choose_hotkey(
    uri: Option<&str>,
    wallet: Option<&str>,
    hotkey: &str,
    root: Option<&Path>,
) -> Result<Keypair, KeyChoiceError> {
    match (uri, wallet) {
        (Some(uri), _) => Ok(crate::keypair_from_uri(uri)?),
        (None, Some(wallet)) => {
            let root = root.map_or_else(default_wallet_root, Path::to_path_buf);
            Ok(load_hotkey(&root, wallet, hotkey)?)
        }
        (None, None) => Err(KeyChoiceError::None),
    }
}

#[cfg(test)]
mod tests;
