//! Timelocked weight commits (commit-reveal v4), built and opened exactly as subtensor opens them.
//!
//! A validator SCALE-encodes `WeightsTlockPayload` and encrypts it to a beacon round: Boneh-Franklin
//! identity-based encryption over BLS12-381 (signatures in G1, the beacon key in G2, the identity of
//! round r being SHA-256 of r as 8 big-endian bytes), with the message under AES-GCM, through the
//! `timelock` revision subtensor pins. Once the beacon publishes its signature for the round, anyone
//! holding it can decrypt: subtensor does so with drand quicknet's pulses, the local chain with those
//! of its own beacon (`Beacon`, same curve and identity hashing).

use crate::error::{ChainError, Result};
use crate::types::AccountId;
use ark_ec::Group;
use ark_ff::UniformRand;
use ark_serialize::{CanonicalDeserialize, CanonicalSerialize};
use parity_scale_codec::{Decode, Encode};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use sha2::Digest;
use timelock::curves::drand::TinyBLS381;
use timelock::ibe::fullident::Identity;
use timelock::stream_ciphers::AESGCMStreamCipherProvider;
use timelock::tlock::{EngineBLS, TLECiphertext, tld, tle};

/// drand quicknet, the beacon subtensor's pallet_drand follows.
pub mod quicknet {
    /// Unix time of round 1.
    pub const GENESIS_UNIX: u64 = 1_692_803_367;
    /// Seconds between rounds.
    pub const PERIOD_SECS: u64 = 3;
    /// The beacon's public key (G2, compressed).
    pub const PUBLIC_KEY_HEX: &str = "83cf0f2896adee7eb8b5f01fcad3912212c437e0073e911fb90022d3e760183c8c4b450b6a0a6c3ac6a5776a2d1064510d1fec758c921cc22b0e17e63aaf4bcb5ed66304de9cf809bd274ca73bab4af5a6e9c76a4bc09e76eae8991ef5ece45a";

    pub fn public_key() -> [u8; 96] {
        let mut key = [0u8; 96];
        hex::decode_to_slice(PUBLIC_KEY_HEX, &mut key).expect("a 96-byte hex constant");
        key
    }
}

/// Subtensor's bound on a timelocked commit (`BoundedVec<u8, 5000>`).
pub const MAX_COMMIT_BYTES: usize = 5000;

/// What a timelocked commit carries, SCALE-encoded, as subtensor decodes it. `hotkey` is the
/// committer's 32-byte public key: the chain applies the weights only when it names the account that
/// sent the commit, so a ciphertext replayed by another hotkey reveals nothing for it.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct WeightsTlockPayload {
    pub hotkey: Vec<u8>,
    pub uids: Vec<u16>,
    pub values: Vec<u16>,
    pub version_key: u64,
}

/// The payload of commits made before the hotkey was added; subtensor still accepts it.
#[derive(Encode, Decode)]
struct LegacyWeightsTlockPayload {
    uids: Vec<u16>,
    values: Vec<u16>,
    version_key: u64,
}

/// What a commit made now must target: the beacon's key, the round whose signature will open it, and
/// the commit-reveal version the chain expects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimelockTarget {
    pub beacon_public_key: [u8; 96],
    pub reveal_round: u64,
    pub commit_reveal_version: u16,
}

/// The identity a round's signature opens: SHA-256 of the round number, big-endian.
fn round_identity(round: u64) -> Identity {
    let digest = sha2::Sha256::digest(round.to_be_bytes());
    Identity::new(b"", vec![digest.to_vec()])
}

fn random_seed() -> Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| ChainError::Unsupported(format!("no randomness for a timelock: {e}")))?;
    Ok(seed)
}

/// Encrypts `message` to `round` of the beacon whose public key is `beacon_public_key`; the result
/// is the serialized ciphertext a timelocked commit carries.
pub fn encrypt(beacon_public_key: &[u8; 96], round: u64, message: &[u8]) -> Result<Vec<u8>> {
    let key =
        <TinyBLS381 as EngineBLS>::PublicKeyGroup::deserialize_compressed(&beacon_public_key[..])
            .map_err(|e| {
            ChainError::Unsupported(format!("the beacon's public key does not decode: {e}"))
        })?;
    let ephemeral = random_seed()?;
    let rng = ChaCha20Rng::from_seed(random_seed()?);
    let ciphertext = tle::<TinyBLS381, AESGCMStreamCipherProvider, _>(
        key,
        ephemeral,
        message,
        round_identity(round),
        rng,
    )
    .map_err(|e| ChainError::Unsupported(format!("timelock encryption failed: {e:?}")))?;
    let mut out = Vec::new();
    ciphertext
        .serialize_compressed(&mut out)
        .map_err(|e| ChainError::Unsupported(format!("a ciphertext does not serialize: {e}")))?;
    Ok(out)
}

/// A validator's weights, encrypted to `target`'s round: the bytes of a timelocked commit.
pub fn commit_weights(
    target: &TimelockTarget,
    hotkey: &AccountId,
    uids: &[u16],
    values: &[u16],
    version_key: u64,
) -> Result<Vec<u8>> {
    let payload = WeightsTlockPayload {
        hotkey: hotkey.0.to_vec(),
        uids: uids.to_vec(),
        values: values.to_vec(),
        version_key,
    };
    let commit = encrypt(
        &target.beacon_public_key,
        target.reveal_round,
        &payload.encode(),
    )?;
    if commit.len() > MAX_COMMIT_BYTES {
        return Err(ChainError::Unsupported(format!(
            "a timelocked commit of {} weights is {} bytes, over the chain's {MAX_COMMIT_BYTES}",
            uids.len(),
            commit.len()
        )));
    }
    Ok(commit)
}

/// Decrypts a commit with the beacon's signature for its round (48 bytes, compressed G1). Errors
/// are the reason the chain would log.
pub fn decrypt(commit: &[u8], signature: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let ciphertext = TLECiphertext::<TinyBLS381>::deserialize_compressed(commit)
        .map_err(|e| format!("the commit does not deserialize: {e}"))?;
    // The IBE header's masked key and message are 32 bytes each as `encrypt` makes them; the
    // `timelock` crate indexes past the end of a 32-byte hash for any other length and panics.
    let (v, w) = (ciphertext.header.v.len(), ciphertext.header.w.len());
    if (v, w) != (32, 32) {
        return Err(format!(
            "the commit's key header is malformed ({v} and {w} bytes where 32 and 32 are expected)"
        ));
    }
    let signature = <TinyBLS381 as EngineBLS>::SignatureGroup::deserialize_compressed(signature)
        .map_err(|e| format!("the beacon signature does not deserialize: {e}"))?;
    tld::<TinyBLS381, AESGCMStreamCipherProvider>(ciphertext, signature)
        .map_err(|e| format!("the commit does not decrypt with its round's signature: {e:?}"))
}

/// Weights a revealed commit sets: (uids, values, version_key).
pub type RevealedWeights = (Vec<u16>, Vec<u16>, u64);

/// Opens a commit as subtensor's reveal does: decrypt, decode the payload, and accept it only if it
/// names `committer` (or is a legacy payload, which names no one).
pub fn open_weights(
    commit: &[u8],
    signature: &[u8],
    committer: &AccountId,
) -> std::result::Result<RevealedWeights, String> {
    let plain = decrypt(commit, signature)?;
    let legacy = || {
        LegacyWeightsTlockPayload::decode(&mut &plain[..])
            .map(|p| (p.uids, p.values, p.version_key))
            .map_err(|e| format!("the decrypted payload does not decode: {e}"))
    };
    match WeightsTlockPayload::decode(&mut &plain[..]) {
        Ok(payload) => {
            match <[u8; 32]>::try_from(&payload.hotkey[..32.min(payload.hotkey.len())]) {
                Ok(hotkey) if hotkey == committer.0 => {
                    Ok((payload.uids, payload.values, payload.version_key))
                }
                Ok(_) => Err("the payload names another hotkey than the committer".into()),
                Err(_) => legacy(),
            }
        }
        Err(_) => legacy(),
    }
}

/// A BLS beacon of the local chain's own: one signature per round over the round's identity, on the
/// curve and with the identity hashing of drand quicknet, so that commits to it open as commits to
/// drand do on subtensor.
pub struct Beacon {
    secret: <TinyBLS381 as EngineBLS>::Scalar,
}

impl Beacon {
    pub fn generate() -> Result<Self> {
        let mut rng = ChaCha20Rng::from_seed(random_seed()?);
        Ok(Self {
            secret: <TinyBLS381 as EngineBLS>::Scalar::rand(&mut rng),
        })
    }

    pub fn from_bytes(bytes: &[u8]) -> std::result::Result<Self, String> {
        <TinyBLS381 as EngineBLS>::Scalar::deserialize_compressed(bytes)
            .map(|secret| Self { secret })
            .map_err(|e| format!("the beacon's secret key does not decode: {e}"))
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.secret
            .serialize_compressed(&mut out)
            .expect("a scalar serializes");
        out
    }

    pub fn public_key(&self) -> [u8; 96] {
        let key = <TinyBLS381 as EngineBLS>::PublicKeyGroup::generator() * self.secret;
        let mut out = [0u8; 96];
        key.serialize_compressed(&mut out[..])
            .expect("a G2 point is 96 bytes compressed");
        out
    }

    /// The round's signature (the pulse): the secret times the hash of the round's identity in G1.
    pub fn sign(&self, round: u64) -> [u8; 48] {
        let signature = round_identity(round).extract::<TinyBLS381>(self.secret).0;
        let mut out = [0u8; 48];
        signature
            .serialize_compressed(&mut out[..])
            .expect("a G1 point is 48 bytes compressed");
        out
    }
}

/// The drand round a commit made at `block` must target on a runtime that numbers epochs as
/// `(block + netuid + 1) / (tempo + 1)` (subtensor up to spec 422), as the Python SDK computes it:
/// the round published three blocks into the reveal epoch, from the wall clock and a 12 s block.
pub fn sdk_reveal_round(
    now_unix: u64,
    block: u64,
    netuid: u16,
    tempo: u64,
    reveal_period_epochs: u64,
) -> u64 {
    let netuid_plus_one = netuid as u64 + 1;
    let epoch = (block + netuid_plus_one) / (tempo + 1);
    let first_reveal_block = (epoch + reveal_period_epochs) * (tempo + 1) - netuid_plus_one;
    reveal_round_at(
        now_unix,
        block,
        first_reveal_block + crate::schedule::INGEST_MARGIN_BLOCKS,
    )
}

/// The drand round published when `target_block` is produced, seen from `block` at `now_unix`
/// (12 s blocks).
pub fn reveal_round_at(now_unix: u64, block: u64, target_block: u64) -> u64 {
    const BLOCK_SECS: u64 = 12;
    let when = now_unix + target_block.saturating_sub(block) * BLOCK_SECS;
    when.saturating_sub(quicknet::GENESIS_UNIX) / quicknet::PERIOD_SECS
}

#[cfg(test)]
mod tests {
    use super::*;

    /// drand quicknet's round 1000, as published by the beacon
    /// (api.drand.sh/52db9ba7.../public/1000).
    const QUICKNET_ROUND_1000: &str = "b44679b9a59af2ec876b1a6b1ad52ea9b1615fc3982b19576350f93447cb1125e342b73a8dd2bacbe47e4b6b63ed5e39";

    fn signature_1000() -> Vec<u8> {
        hex::decode(QUICKNET_ROUND_1000).unwrap()
    }

    #[test]
    fn a_commit_opens_with_drand_quicknets_published_signature_into_the_committed_weights() {
        let hotkey = AccountId([7; 32]);
        let target = TimelockTarget {
            beacon_public_key: quicknet::public_key(),
            reveal_round: 1000,
            commit_reveal_version: 4,
        };
        let (uids, values) = (vec![0, 3, 9], vec![65535, 12, 40000]);
        let commit = commit_weights(&target, &hotkey, &uids, &values, 7).unwrap();
        let plain = decrypt(&commit, &signature_1000()).unwrap();
        assert_eq!(
            WeightsTlockPayload::decode(&mut &plain[..]).unwrap(),
            WeightsTlockPayload {
                hotkey: hotkey.0.to_vec(),
                uids: uids.clone(),
                values: values.clone(),
                version_key: 7
            }
        );
        assert_eq!(
            open_weights(&commit, &signature_1000(), &hotkey).unwrap(),
            (uids, values, 7)
        );
    }

    /// Found by the `timelock_commit` fuzz target (kept in fuzz/regressions/): a committer could
    /// stop the chain's reveal with a header of another length.
    #[test]
    fn a_commit_with_a_malformed_key_header_is_refused_not_a_panic() {
        let target = TimelockTarget {
            beacon_public_key: quicknet::public_key(),
            reveal_round: 1000,
            commit_reveal_version: 4,
        };
        let hotkey = AccountId([7; 32]);
        let commit = commit_weights(&target, &hotkey, &[1], &[2], 3).unwrap();
        for (v, w) in [(99, 32), (32, 99), (31, 32), (32, 0)] {
            let mut ciphertext =
                TLECiphertext::<TinyBLS381>::deserialize_compressed(&commit[..]).unwrap();
            ciphertext.header.v.resize(v, 1);
            ciphertext.header.w.resize(w, 1);
            let mut bytes = Vec::new();
            ciphertext.serialize_compressed(&mut bytes).unwrap();
            let refused = open_weights(&bytes, &signature_1000(), &hotkey).unwrap_err();
            assert!(refused.contains("malformed"), "{refused}");
        }
    }

    #[test]
    fn a_commit_to_another_round_or_replayed_by_another_hotkey_reveals_nothing() {
        let hotkey = AccountId([7; 32]);
        let target = TimelockTarget {
            beacon_public_key: quicknet::public_key(),
            reveal_round: 1001,
            commit_reveal_version: 4,
        };
        let commit = commit_weights(&target, &hotkey, &[1], &[65535], 0).unwrap();
        assert!(open_weights(&commit, &signature_1000(), &hotkey).is_err());

        let target = TimelockTarget {
            reveal_round: 1000,
            ..target
        };
        let commit = commit_weights(&target, &hotkey, &[1], &[65535], 0).unwrap();
        let copier = AccountId([8; 32]);
        let refused = open_weights(&commit, &signature_1000(), &copier).unwrap_err();
        assert!(refused.contains("another hotkey"), "{refused}");
        // Bytes that are no ciphertext at all.
        assert!(open_weights(&[1, 2, 3], &signature_1000(), &hotkey).is_err());
    }

    #[test]
    fn a_legacy_payload_is_accepted_as_subtensor_accepts_it() {
        let legacy = LegacyWeightsTlockPayload {
            uids: vec![2],
            values: vec![5],
            version_key: 1,
        };
        let commit = encrypt(&quicknet::public_key(), 1000, &legacy.encode()).unwrap();
        assert_eq!(
            open_weights(&commit, &signature_1000(), &AccountId([1; 32])).unwrap(),
            (vec![2], vec![5], 1)
        );
    }

    #[test]
    fn the_local_beacon_signs_rounds_that_open_commits_to_its_key_and_no_others() {
        let beacon = Beacon::generate().unwrap();
        let again = Beacon::from_bytes(&beacon.to_bytes()).unwrap();
        assert_eq!(beacon.public_key(), again.public_key());
        assert_eq!(beacon.sign(42), again.sign(42));
        let hotkey = AccountId([3; 32]);
        let target = TimelockTarget {
            beacon_public_key: beacon.public_key(),
            reveal_round: 42,
            commit_reveal_version: 4,
        };
        let commit = commit_weights(&target, &hotkey, &[0, 1], &[1, 2], 0).unwrap();
        assert_eq!(
            open_weights(&commit, &beacon.sign(42), &hotkey).unwrap(),
            (vec![0, 1], vec![1, 2], 0)
        );
        assert!(open_weights(&commit, &beacon.sign(41), &hotkey).is_err());
        let other = Beacon::generate().unwrap();
        assert!(open_weights(&commit, &other.sign(42), &hotkey).is_err());
    }

    #[test]
    fn the_sdk_reveal_round_targets_three_blocks_into_the_reveal_epoch() {
        // netuid 1, tempo 360: block 1000 is in epoch (1000 + 2) / 361 = 2; the reveal epoch 3
        // starts at block 3 * 361 - 2 = 1081, so the target is block 1084, 84 blocks (1008 s) on.
        let now = quicknet::GENESIS_UNIX + 3_000;
        assert_eq!(sdk_reveal_round(now, 1000, 1, 360, 1), (3_000 + 1008) / 3);
        // Two epochs of reveal period move it one epoch (361 blocks) further.
        assert_eq!(
            sdk_reveal_round(now, 1000, 1, 360, 2),
            (3_000 + (1084 + 361 - 1000) * 12) / 3
        );
    }
}
