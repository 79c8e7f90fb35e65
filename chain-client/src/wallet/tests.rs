use super::*;

#[test]
fn a_keyfile_reads_back_as_the_phrase_says() {
    // The Substrate dev phrase: its root key is //Alice's parent, with a known public key.
    let mnemonic = Mnemonic::parse(subxt_signer::DEV_PHRASE).unwrap();
    let file = keyfile(&mnemonic);
    let from_phrase = Keypair::from_phrase(&mnemonic, None).unwrap();
    assert_eq!(
        file.public_key,
        format!("0x{}", hex::encode(from_phrase.public_key().0))
    );
    // The dev phrase's root sr25519 public key, as `subkey inspect` prints it.
    assert_eq!(
        file.ss58_address,
        "5DfhGyQdFobKM8NsWvEeAKk5EQQgYe9AydgJ7rMB6E1EqRzV"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hot");
    write_keyfile(&path, &file).unwrap();
    assert!(matches!(
        write_keyfile(&path, &file),
        Err(WalletError::Exists { .. })
    ));
    let read = read_keyfile(&path).unwrap();
    assert_eq!(read.public_key().0, from_phrase.public_key().0);

    // Phrase only (no seed) reads too; a seed that does not match the public key is refused.
    let phrase_only = Keyfile {
        secret_seed: None,
        ..file.clone()
    };
    std::fs::write(
        dir.path().join("p"),
        serde_json::to_string(&phrase_only).unwrap(),
    )
    .unwrap();
    assert_eq!(
        read_keyfile(&dir.path().join("p")).unwrap().public_key().0,
        from_phrase.public_key().0
    );
    let wrong = Keyfile {
        secret_seed: Some(format!("0x{}", "11".repeat(32))),
        ..file
    };
    std::fs::write(dir.path().join("w"), serde_json::to_string(&wrong).unwrap()).unwrap();
    assert!(matches!(
        read_keyfile(&dir.path().join("w")),
        Err(WalletError::Invalid { .. })
    ));
    std::fs::write(dir.path().join("e"), "$NACL...").unwrap();
    assert!(matches!(
        read_keyfile(&dir.path().join("e")),
        Err(WalletError::Invalid { .. })
    ));
    std::fs::write(dir.path().join("v"), "$ANSIBLE_VAULT;1.1;AES256").unwrap();
    assert!(matches!(
        read_keyfile(&dir.path().join("v")),
        Err(WalletError::Encrypted { .. })
    ));
}

#[test]
fn a_new_wallet_has_a_coldkey_and_its_hotkey_loads() {
    let dir = tempfile::tempdir().unwrap();
    let created = create_wallet(dir.path(), "miner", "default", None).unwrap();
    assert!(created.coldkey.is_some());
    assert!(dir.path().join("miner/coldkeypub.txt").exists());
    let hot = load_hotkey(dir.path(), "miner", "default").unwrap();
    assert_eq!(
        AccountId::from(&hot).to_string(),
        created.hotkey.ss58_address
    );
    // A second hotkey reuses the coldkey.
    let second = create_wallet(dir.path(), "miner", "second", None).unwrap();
    assert!(second.coldkey.is_none());
    assert!(matches!(
        load_hotkey(dir.path(), "miner", "absent"),
        Err(WalletError::Missing { .. })
    ));
    // An encrypted coldkey opens with its password only; its public file stays readable.
    let sealed = create_wallet(dir.path(), "owner", "default", Some("pw")).unwrap();
    let (cold, path) = sealed.coldkey.unwrap();
    assert!(std::fs::read(&path).unwrap().starts_with(b"$NACL"));
    let opened = read_keyfile_with(&path, || Ok("pw".into())).unwrap();
    assert_eq!(AccountId::from(&opened).to_string(), cold.ss58_address);
    assert!(matches!(
        read_keyfile_with(&path, || Ok("wrong".into())),
        Err(WalletError::WrongPassword { .. })
    ));
    let public = std::fs::read_to_string(dir.path().join("owner/coldkeypub.txt")).unwrap();
    assert!(public.contains(&cold.ss58_address));

    // Listed with their addresses; regenerated from a mnemonic, the same keys.
    let listed = list_wallets(dir.path()).unwrap();
    let names: Vec<&str> = listed.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["miner", "owner"]);
    assert!(listed[1].coldkey_encrypted && !listed[0].coldkey_encrypted);
    assert_eq!(
        listed[1].coldkey.as_deref(),
        Some(cold.ss58_address.as_str())
    );
    assert_eq!(listed[0].hotkeys.len(), 2);
    let phrase = Mnemonic::parse(created.hotkey.secret_phrase.as_deref().unwrap()).unwrap();
    let again = tempfile::tempdir().unwrap();
    let (file, _) = regenerate(
        again.path(),
        "miner",
        &WalletKey::Hotkey("default".into()),
        &phrase,
    )
    .unwrap();
    assert_eq!(file.ss58_address, created.hotkey.ss58_address);
    assert!(matches!(
        regenerate(
            again.path(),
            "miner",
            &WalletKey::Hotkey("default".into()),
            &phrase
        ),
        Err(WalletError::Exists { .. })
    ));
    let cold_phrase = Mnemonic::parse(cold.secret_phrase.as_deref().unwrap()).unwrap();
    let key = WalletKey::Coldkey { password: None };
    let (file, path) = regenerate(again.path(), "owner", &key, &cold_phrase).unwrap();
    assert_eq!(file.ss58_address, cold.ss58_address);
    assert_eq!(
        AccountId::from(&read_keyfile(&path).unwrap()).to_string(),
        cold.ss58_address
    );
}
