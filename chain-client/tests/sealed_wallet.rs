//! Keyfiles encrypted by bittensor-wallet 4.1.1 itself (`tests/data/make_wallets.py` wrote them):
//! opened with the right password they give the keys the package reported; a wrong password is a
//! clear error that changes nothing; what `encrypt_keyfile` seals opens the same way.

use chain_client::wallet::{self, WalletError};
use std::path::{Path, PathBuf};

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/wallets")
}

fn expected() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(data().join("expected.json")).unwrap()).unwrap()
}

fn public(keypair: &subxt_signer::sr25519::Keypair) -> String {
    format!("0x{}", hex::encode(keypair.public_key().0))
}

#[test]
fn bittensor_wallets_encrypted_keyfiles_open_with_their_password() {
    let expected = expected();
    let password = expected["password"].as_str().unwrap().to_string();
    let coldkey = data().join("sealed/coldkey");
    let before = std::fs::read(&coldkey).unwrap();

    let wrong = wallet::read_keyfile_with(&coldkey, || Ok("not the password".into()));
    match wrong {
        Err(e @ WalletError::WrongPassword { .. }) => {
            assert!(e.to_string().contains("wrong password"), "{e}");
            assert!(e.to_string().contains("coldkey"), "{e}");
        }
        other => panic!("expected a wrong-password error, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(&coldkey).unwrap(),
        before,
        "nothing is changed"
    );

    let cold = wallet::read_keyfile_with(&coldkey, || Ok(password.clone())).unwrap();
    assert_eq!(
        public(&cold),
        expected["coldkey"]["public"].as_str().unwrap()
    );
    let hot = wallet::read_keyfile_with(&data().join("sealed/hotkeys/default"), || {
        Ok(password.clone())
    })
    .unwrap();
    assert_eq!(public(&hot), expected["hotkey"]["public"].as_str().unwrap());

    // What this program seals opens with the same password, and only with it.
    let json = wallet::decrypt_keyfile(&coldkey, &before, &password).unwrap();
    let sealed = wallet::encrypt_keyfile(&json, "another");
    assert!(sealed.starts_with(b"$NACL"));
    assert_ne!(sealed, before, "a fresh nonce");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("coldkey");
    std::fs::write(&path, &sealed).unwrap();
    let reopened = wallet::read_keyfile_with(&path, || Ok("another".into())).unwrap();
    assert_eq!(public(&reopened), public(&cold));
    assert!(matches!(
        wallet::read_keyfile_with(&path, || Ok(password.clone())),
        Err(WalletError::WrongPassword { .. })
    ));
    // No password to be had: the error says how to give one.
    let e = wallet::read_keyfile_with(&path, || {
        Err(WalletError::NoPassword { path: path.clone() })
    })
    .unwrap_err();
    assert!(e.to_string().contains(wallet::PASSWORD_ENV), "{e}");
}
