//! The subtensor backend against the real runtime metadata (finney, spec_version 365), offline:
//! every call is built and signed as it would be sent, then decoded back with frame-decode and
//! checked argument by argument; the signature is checked against a signing payload assembled here
//! by hand; storage keys are compared with keys hashed here by hand; storage values encoded with
//! parity-scale-codec (the runtime's own codec) decode through the metadata's types. The
//! hand-built references (payloads, keys, values) are what make the file long; split, each part
//! would repeat them.

use blake2::{Blake2b, Digest, digest::consts::U16};
use chain_client::subtensor::{
    AxonInfo, CALLS, Call, bundled_metadata, check_compatible, decode_value, default_value,
    storage_key,
};
use chain_client::{AccountId, ChainError, open_chain};
use parity_scale_codec::{Compact, Encode};
use subxt::client::OfflineClient;
use subxt::config::substrate::H256;
use subxt::config::substrate::SpecVersionForRange;
use subxt::config::{SubstrateConfig, SubstrateExtrinsicParamsBuilder};
use subxt::ext::frame_decode::extrinsics::decode_extrinsic;
use subxt::ext::scale_decode::DecodeAsType;
use subxt_signer::sr25519::{self, dev};

const SPEC_VERSION: u32 = 365;
const TRANSACTION_VERSION: u32 = 1;
const GENESIS: [u8; 32] = [0x2f; 32];
/// Subtensor's DefaultTempo.
const TEMPO_DEFAULT: u16 = 360;

fn bob() -> AccountId {
    AccountId::from(&dev::bob())
}

fn calls() -> Vec<Call> {
    vec![
        Call::SetWeights {
            netuid: 3,
            dests: vec![0, 1, 7],
            weights: vec![65535, 32767, 1],
            version_key: 42,
        },
        Call::CommitWeights {
            netuid: 3,
            commit_hash: [0xab; 32],
        },
        Call::RevealWeights {
            netuid: 3,
            uids: vec![1, 2],
            values: vec![100, 65535],
            salt: vec![9, 8, 7, 6, 5, 4, 3, 2],
            version_key: 42,
        },
        Call::ServeAxon {
            netuid: 3,
            version: 1,
            addr: "10.1.2.3:8091".parse().unwrap(),
        },
        Call::CommitTimelockedWeights {
            netuid: 3,
            commit: (0..=255u8).cycle().take(700).collect(),
            reveal_round: 23_456_789,
            commit_reveal_version: 4,
        },
        Call::SetMechanismWeights {
            netuid: 3,
            mecid: 1,
            dests: vec![0, 4],
            weights: vec![65535, 2],
            version_key: 42,
        },
        Call::CommitMechanismWeights {
            netuid: 3,
            mecid: 1,
            commit_hash: [0xcd; 32],
        },
        Call::RevealMechanismWeights {
            netuid: 3,
            mecid: 1,
            uids: vec![5],
            values: vec![65535],
            salt: vec![1, 2, 3, 4, 5, 6, 7, 8],
            version_key: 42,
        },
        Call::CommitTimelockedMechanismWeights {
            netuid: 3,
            mecid: 2,
            commit: vec![9; 300],
            reveal_round: 99,
            commit_reveal_version: 4,
        },
        Call::BurnedRegister {
            netuid: 3,
            hotkey: bob(),
        },
        Call::AddStake {
            hotkey: bob(),
            netuid: 3,
            amount_staked: 1_500_000_000,
        },
    ]
}

/// Signs `call` as Alice with `nonce`, offline, and returns the extrinsic bytes.
fn sign_offline(call: &Call, nonce: u64) -> Vec<u8> {
    let metadata = bundled_metadata().unwrap();
    let config = SubstrateConfig::builder()
        .set_genesis_hash(H256(GENESIS))
        .set_spec_version_for_block_ranges([SpecVersionForRange {
            block_range: 0..u64::MAX,
            spec_version: SPEC_VERSION,
            transaction_version: TRANSACTION_VERSION,
        }])
        .set_metadata_for_spec_versions([(SPEC_VERSION, metadata.arc())])
        .build();
    let client = OfflineClient::new_with_config(config);
    let at = client.at_block(1_000u64).unwrap();
    let params = SubstrateExtrinsicParamsBuilder::new().nonce(nonce).build();
    let payload = call.payload();
    let mut signable = at
        .tx()
        .create_v4_signable_offline(&payload, params)
        .unwrap();
    signable.sign(&dev::alice()).unwrap().encoded().to_vec()
}

/// Decodes one argument of a decoded extrinsic's call by name.
fn arg<T: DecodeAsType>(
    bytes: &[u8],
    ext: &subxt::ext::frame_decode::extrinsics::Extrinsic<'_, u32>,
    name: &str,
) -> T {
    let metadata = bundled_metadata().unwrap();
    let a = ext
        .call_data()
        .find(|a| a.name() == name)
        .unwrap_or_else(|| panic!("no argument {name}"));
    let mut cursor = &bytes[a.range()];
    let value = T::decode_as_type(&mut cursor, *a.ty(), metadata.types()).unwrap();
    assert!(cursor.is_empty(), "{name} left bytes over");
    value
}

#[test]
fn every_call_signs_offline_and_decodes_back_with_its_arguments() {
    let metadata = bundled_metadata().unwrap();
    for call in calls() {
        let bytes = sign_offline(&call, 5);
        let ext = decode_extrinsic(&mut &bytes[..], &metadata, metadata.types()).unwrap();
        assert_eq!(ext.version(), 4, "{call:?}");
        assert!(ext.is_signed());
        assert_eq!(ext.pallet_name(), "SubtensorModule");
        assert_eq!(ext.pallet_index(), 7);
        assert_eq!(ext.call_name(), call.name());
        let names: Vec<&str> = ext.call_data().map(|a| a.name()).collect();
        match &call {
            Call::SetWeights {
                netuid,
                dests,
                weights,
                version_key,
            } => {
                assert_eq!(names, ["netuid", "dests", "weights", "version_key"]);
                assert_eq!(ext.call_index(), 0);
                assert_eq!(arg::<u16>(&bytes, &ext, "netuid"), *netuid);
                assert_eq!(&arg::<Vec<u16>>(&bytes, &ext, "dests"), dests);
                assert_eq!(&arg::<Vec<u16>>(&bytes, &ext, "weights"), weights);
                assert_eq!(arg::<u64>(&bytes, &ext, "version_key"), *version_key);
            }
            Call::CommitWeights {
                netuid,
                commit_hash,
            } => {
                assert_eq!(names, ["netuid", "commit_hash"]);
                assert_eq!(ext.call_index(), 96);
                assert_eq!(arg::<u16>(&bytes, &ext, "netuid"), *netuid);
                assert_eq!(&arg::<[u8; 32]>(&bytes, &ext, "commit_hash"), commit_hash);
            }
            Call::RevealWeights {
                netuid,
                uids,
                values,
                salt,
                version_key,
            } => {
                assert_eq!(names, ["netuid", "uids", "values", "salt", "version_key"]);
                assert_eq!(ext.call_index(), 97);
                assert_eq!(arg::<u16>(&bytes, &ext, "netuid"), *netuid);
                assert_eq!(&arg::<Vec<u16>>(&bytes, &ext, "uids"), uids);
                assert_eq!(&arg::<Vec<u16>>(&bytes, &ext, "values"), values);
                assert_eq!(&arg::<Vec<u16>>(&bytes, &ext, "salt"), salt);
                assert_eq!(arg::<u64>(&bytes, &ext, "version_key"), *version_key);
            }
            Call::CommitTimelockedWeights {
                netuid,
                commit,
                reveal_round,
                commit_reveal_version,
            } => {
                assert_eq!(
                    names,
                    ["netuid", "commit", "reveal_round", "commit_reveal_version"]
                );
                assert_eq!(ext.call_index(), 113);
                assert_eq!(arg::<u16>(&bytes, &ext, "netuid"), *netuid);
                assert_eq!(&arg::<Vec<u8>>(&bytes, &ext, "commit"), commit);
                assert_eq!(arg::<u64>(&bytes, &ext, "reveal_round"), *reveal_round);
                assert_eq!(
                    arg::<u16>(&bytes, &ext, "commit_reveal_version"),
                    *commit_reveal_version
                );
            }
            Call::SetMechanismWeights {
                netuid,
                mecid,
                dests,
                weights,
                version_key,
            } => {
                assert_eq!(
                    names,
                    ["netuid", "mecid", "dests", "weights", "version_key"]
                );
                assert_eq!(ext.call_index(), 119);
                assert_eq!(arg::<u16>(&bytes, &ext, "netuid"), *netuid);
                assert_eq!(arg::<u8>(&bytes, &ext, "mecid"), *mecid);
                assert_eq!(&arg::<Vec<u16>>(&bytes, &ext, "dests"), dests);
                assert_eq!(&arg::<Vec<u16>>(&bytes, &ext, "weights"), weights);
                assert_eq!(arg::<u64>(&bytes, &ext, "version_key"), *version_key);
            }
            Call::CommitMechanismWeights {
                netuid,
                mecid,
                commit_hash,
            } => {
                assert_eq!(names, ["netuid", "mecid", "commit_hash"]);
                assert_eq!(arg::<u16>(&bytes, &ext, "netuid"), *netuid);
                assert_eq!(arg::<u8>(&bytes, &ext, "mecid"), *mecid);
                assert_eq!(&arg::<[u8; 32]>(&bytes, &ext, "commit_hash"), commit_hash);
            }
            Call::RevealMechanismWeights {
                netuid,
                mecid,
                uids,
                values,
                salt,
                version_key,
            } => {
                assert_eq!(
                    names,
                    ["netuid", "mecid", "uids", "values", "salt", "version_key"]
                );
                assert_eq!(arg::<u16>(&bytes, &ext, "netuid"), *netuid);
                assert_eq!(arg::<u8>(&bytes, &ext, "mecid"), *mecid);
                assert_eq!(&arg::<Vec<u16>>(&bytes, &ext, "uids"), uids);
                assert_eq!(&arg::<Vec<u16>>(&bytes, &ext, "values"), values);
                assert_eq!(&arg::<Vec<u16>>(&bytes, &ext, "salt"), salt);
                assert_eq!(arg::<u64>(&bytes, &ext, "version_key"), *version_key);
            }
            Call::CommitTimelockedMechanismWeights {
                netuid,
                mecid,
                commit,
                reveal_round,
                commit_reveal_version,
            } => {
                assert_eq!(
                    names,
                    [
                        "netuid",
                        "mecid",
                        "commit",
                        "reveal_round",
                        "commit_reveal_version"
                    ]
                );
                assert_eq!(ext.call_index(), 118);
                assert_eq!(arg::<u16>(&bytes, &ext, "netuid"), *netuid);
                assert_eq!(arg::<u8>(&bytes, &ext, "mecid"), *mecid);
                assert_eq!(&arg::<Vec<u8>>(&bytes, &ext, "commit"), commit);
                assert_eq!(arg::<u64>(&bytes, &ext, "reveal_round"), *reveal_round);
                assert_eq!(
                    arg::<u16>(&bytes, &ext, "commit_reveal_version"),
                    *commit_reveal_version
                );
            }
            Call::ServeAxon {
                netuid,
                version,
                addr,
            } => {
                assert_eq!(
                    names,
                    [
                        "netuid",
                        "version",
                        "ip",
                        "port",
                        "ip_type",
                        "protocol",
                        "placeholder1",
                        "placeholder2"
                    ]
                );
                assert_eq!(ext.call_index(), 4);
                assert_eq!(arg::<u16>(&bytes, &ext, "netuid"), *netuid);
                assert_eq!(arg::<u32>(&bytes, &ext, "version"), *version);
                assert_eq!(arg::<u128>(&bytes, &ext, "ip"), 0x0a01_0203);
                assert_eq!(arg::<u16>(&bytes, &ext, "port"), addr.port());
                assert_eq!(arg::<u8>(&bytes, &ext, "ip_type"), 4);
                assert_eq!(arg::<u8>(&bytes, &ext, "protocol"), 0);
            }
            Call::BurnedRegister { netuid, hotkey } => {
                assert_eq!(names, ["netuid", "hotkey"]);
                assert_eq!(ext.call_index(), 7);
                assert_eq!(arg::<u16>(&bytes, &ext, "netuid"), *netuid);
                assert_eq!(arg::<[u8; 32]>(&bytes, &ext, "hotkey"), hotkey.0);
            }
            Call::AddStake {
                hotkey,
                netuid,
                amount_staked,
            } => {
                assert_eq!(names, ["hotkey", "netuid", "amount_staked"]);
                assert_eq!(ext.call_index(), 2);
                assert_eq!(arg::<[u8; 32]>(&bytes, &ext, "hotkey"), hotkey.0);
                assert_eq!(arg::<u16>(&bytes, &ext, "netuid"), *netuid);
                assert_eq!(arg::<u64>(&bytes, &ext, "amount_staked"), *amount_staked);
            }
        }
        // The call data inside the extrinsic is exactly the call's own encoding.
        assert_eq!(
            &bytes[ext.call_data_range()],
            call.call_data(&metadata).unwrap().as_slice()
        );
    }
}

/// The v4 signing payload by hand: call data, then each extension's explicit data (immortal era,
/// compact nonce, compact tip, metadata-hash mode 0), then the implicit data (spec and transaction
/// versions, genesis hash twice: immortal transactions name the genesis block, no metadata hash).
#[test]
fn the_signature_covers_the_payload_subtensor_checks() {
    let metadata = bundled_metadata().unwrap();
    let call = &calls()[0];
    let nonce = 5u64;
    let bytes = sign_offline(call, nonce);
    let ext = decode_extrinsic(&mut &bytes[..], &metadata, metadata.types()).unwrap();

    let mut explicit = vec![0u8]; // Era::Immortal
    Compact(nonce as u32).encode_to(&mut explicit);
    Compact(0u128).encode_to(&mut explicit); // tip
    explicit.push(0); // CheckMetadataHash mode: disabled
    let extensions = ext.transaction_extension_payload().unwrap();
    assert_eq!(&bytes[extensions.range()], explicit.as_slice());

    let mut payload = call.call_data(&metadata).unwrap();
    payload.extend_from_slice(&explicit);
    payload.extend_from_slice(&SPEC_VERSION.to_le_bytes());
    payload.extend_from_slice(&TRANSACTION_VERSION.to_le_bytes());
    payload.extend_from_slice(&GENESIS);
    payload.extend_from_slice(&GENESIS);
    payload.push(0); // Option<[u8; 32]>::None
    assert!(payload.len() <= 256, "longer payloads are signed hashed");

    let signature = ext.signature_payload().unwrap();
    // MultiAddress::Id(alice)
    let address = &bytes[signature.address_range()];
    assert_eq!(address[0], 0);
    assert_eq!(&address[1..], &dev::alice().public_key().0);
    // MultiSignature::Sr25519(64 bytes)
    let sig = &bytes[signature.signature_range()];
    assert_eq!(sig[0], 1);
    let sig = sr25519::Signature(sig[1..].try_into().unwrap());
    assert!(sr25519::verify(&sig, &payload, &dev::alice().public_key()));
    payload[0] ^= 1;
    assert!(!sr25519::verify(&sig, &payload, &dev::alice().public_key()));
}

fn twox64(data: &[u8]) -> [u8; 8] {
    twox_hash::XxHash64::oneshot(0, data).to_le_bytes()
}

fn twox128(data: &[u8]) -> Vec<u8> {
    let mut out = twox64(data).to_vec();
    out.extend_from_slice(&twox_hash::XxHash64::oneshot(1, data).to_le_bytes());
    out
}

fn blake2_128_concat(data: &[u8]) -> Vec<u8> {
    let mut out = Blake2b::<U16>::digest(data).to_vec();
    out.extend_from_slice(data);
    out
}

#[test]
fn storage_keys_match_keys_hashed_by_hand() {
    let metadata = bundled_metadata().unwrap();
    let hotkey = bob().0;
    let prefix = |entry: &str| {
        let mut k = twox128(b"SubtensorModule");
        k.extend_from_slice(&twox128(entry.as_bytes()));
        k
    };
    // The well-known prefix of System.Account, as a check of the hashing itself.
    assert_eq!(
        hex::encode(twox128(b"System")),
        "26aa394eea5630e07c48ae0c9558cef7"
    );

    let mut axons = prefix("Axons");
    axons.extend_from_slice(&3u16.to_le_bytes()); // Identity(netuid)
    axons.extend_from_slice(&blake2_128_concat(&hotkey));
    assert_eq!(
        storage_key(&metadata, "Axons", (3u16, hotkey)).unwrap(),
        axons
    );

    let mut alpha = prefix("TotalHotkeyAlpha");
    alpha.extend_from_slice(&blake2_128_concat(&hotkey));
    alpha.extend_from_slice(&3u16.to_le_bytes());
    assert_eq!(
        storage_key(&metadata, "TotalHotkeyAlpha", (hotkey, 3u16)).unwrap(),
        alpha
    );

    let mut keys = prefix("Keys");
    keys.extend_from_slice(&3u16.to_le_bytes());
    keys.extend_from_slice(&17u16.to_le_bytes());
    assert_eq!(storage_key(&metadata, "Keys", (3u16, 17u16)).unwrap(), keys);

    let mut reveal = prefix("RevealPeriodEpochs");
    reveal.extend_from_slice(&twox64(&3u16.to_le_bytes()));
    reveal.extend_from_slice(&3u16.to_le_bytes());
    assert_eq!(
        storage_key(&metadata, "RevealPeriodEpochs", (3u16,)).unwrap(),
        reveal
    );

    let mut owner = prefix("Owner");
    owner.extend_from_slice(&blake2_128_concat(&hotkey));
    assert_eq!(storage_key(&metadata, "Owner", (hotkey,)).unwrap(), owner);
}

#[test]
fn storage_values_decode_through_the_metadata_types() {
    let metadata = bundled_metadata().unwrap();
    let axon = (
        812_345u64,
        1u32,
        0x0a01_0203u128,
        8091u16,
        4u8,
        0u8,
        0u8,
        0u8,
    )
        .encode();
    let decoded: AxonInfo = decode_value(&metadata, "Axons", &axon).unwrap();
    assert_eq!(decoded.block, 812_345);
    assert_eq!(decoded.addr(), Some("10.1.2.3:8091".parse().unwrap()));
    let v6 = (1u64, 1u32, 1u128, 9944u16, 6u8, 0u8, 0u8, 0u8).encode();
    let decoded: AxonInfo = decode_value(&metadata, "Axons", &v6).unwrap();
    assert_eq!(decoded.addr(), Some("[::1]:9944".parse().unwrap()));
    let unserved = (0u64, 0u32, 0u128, 0u16, 0u8, 0u8, 0u8, 0u8).encode();
    let decoded: AxonInfo = decode_value(&metadata, "Axons", &unserved).unwrap();
    assert_eq!(decoded.addr(), None);
    // Missing keys read as the entry's default, as the runtime reads them.
    let tempo: u16 = default_value(&metadata, "Tempo").unwrap();
    assert_eq!(tempo, TEMPO_DEFAULT);
    // The commit-reveal version a validator checks before committing, against its raw default.
    let raw = metadata
        .pallet_by_name("SubtensorModule")
        .and_then(|p| p.storage())
        .and_then(|s| s.entry_by_name("CommitRevealWeightsVersion"))
        .and_then(|e| e.default_value())
        .unwrap()
        .to_vec();
    let version: u16 = default_value(&metadata, "CommitRevealWeightsVersion").unwrap();
    assert_eq!(version, u16::from_le_bytes([raw[0], raw[1]]));

    let weights = vec![(0u16, 65535u16), (4, 12)];
    let decoded: Vec<(u16, u16)> = decode_value(&metadata, "Weights", &weights.encode()).unwrap();
    assert_eq!(decoded, weights);
    let permits = vec![true, false, true];
    let decoded: Vec<bool> = decode_value(&metadata, "ValidatorPermit", &permits.encode()).unwrap();
    assert_eq!(decoded, permits);
    let emission = vec![0u64, 1 << 40];
    let decoded: Vec<u64> = decode_value(&metadata, "Emission", &emission.encode()).unwrap();
    assert_eq!(decoded, emission);
    let incentive = vec![65535u16, 0, 7];
    let decoded: Vec<u16> = decode_value(&metadata, "Incentive", &incentive.encode()).unwrap();
    assert_eq!(decoded, incentive);
    let owner: [u8; 32] = decode_value(&metadata, "Owner", &bob().0.encode()).unwrap();
    assert_eq!(owner, bob().0);
    let stake: u64 = decode_value(&metadata, "TotalHotkeyAlpha", &7u64.encode()).unwrap();
    assert_eq!(stake, 7);
    let enabled: bool =
        decode_value(&metadata, "CommitRevealWeightsEnabled", &true.encode()).unwrap();
    assert!(enabled);

    // Bytes left over, or too few, are an error rather than a silent misread.
    let mut long = 7u64.encode();
    long.push(0);
    assert!(matches!(
        decode_value::<u64>(&metadata, "TotalHotkeyAlpha", &long),
        Err(ChainError::Corrupt(_))
    ));
    assert!(decode_value::<u64>(&metadata, "TotalHotkeyAlpha", &[1, 2]).is_err());
}

/// Connecting checks the node's runtime against the bundled metadata; a runtime that changed one of
/// the calls used is refused with a message naming it and saying what to update.
#[test]
fn a_runtime_that_changed_a_call_is_refused_by_name() {
    let bundled = bundled_metadata().unwrap();
    check_compatible(&bundled, &bundled).unwrap();

    // Change set_weights' version_key from u64 to u32 in a copy of the metadata.
    let mut changed = bundled_metadata().unwrap();
    let pallet = changed.pallet_by_name("SubtensorModule").unwrap();
    let call_ty = pallet.call_ty_id().unwrap();
    let u32_ty = {
        let variant = pallet.call_variant_by_name("serve_axon").unwrap();
        variant.fields[1].ty.id // version: u32
    };
    let ty = &mut changed.types_mut().types[call_ty as usize].ty;
    let scale_info::TypeDef::Variant(calls) = &mut ty.type_def else {
        panic!("the call type is an enum");
    };
    let set_weights = calls
        .variants
        .iter_mut()
        .find(|v| v.name == "set_weights")
        .unwrap();
    set_weights.fields[3].ty = u32_ty.into();
    let e = check_compatible(&changed, &bundled)
        .unwrap_err()
        .to_string();
    assert!(e.contains("call set_weights"), "{e}");
    assert!(!e.contains("serve_axon"), "{e}");
    assert!(
        e.contains("chain-client/metadata/subtensor-finney.scale"),
        "{e}"
    );
    assert_eq!(CALLS.len(), 11);
}

#[tokio::test]
async fn chain_flags_are_checked_and_an_unreachable_node_is_named() {
    // Nothing listens on port 1.
    let e = open_chain("ws://127.0.0.1:1").await.err().unwrap();
    assert!(
        matches!(&e, ChainError::Unreachable { url, .. } if url == "ws://127.0.0.1:1"),
        "{e}"
    );
    let e = open_chain("http://127.0.0.1:9944").await.err().unwrap();
    assert!(e.to_string().contains("ws://HOST:PORT"), "{e}");
}
