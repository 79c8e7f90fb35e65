//! Subtensor calls encoded with subxt against the real runtime metadata shipped in
//! `chain-client/metadata/`. The dynamic API reads argument types from the metadata, so a runtime
//! upgrade that keeps a call's shape keeps working, and one that changes it fails loudly here.
//!
//! `Call::fields` is one match arm per call, as long as the calls are many.

use crate::error::{ChainError, Result};
use crate::types::AccountId;
use std::net::{IpAddr, SocketAddr};
use subxt::dynamic::Value;
use subxt::ext::frame_decode;
use subxt::ext::frame_decode::extrinsics::encode_call_data;
use subxt::ext::frame_decode::storage::{IntoEncodableValues, StorageTypeInfo};
use subxt::ext::scale_decode::DecodeAsType;
use subxt::tx::DynamicPayload;

/// Finney's runtime metadata (V16), as shipped with this crate.
pub const BUNDLED_METADATA: &[u8] = include_bytes!("../metadata/subtensor-finney.scale");

pub const PALLET: &str = "SubtensorModule";

pub fn bundled_metadata() -> Result<subxt::Metadata> {
    subxt::Metadata::decode_from(BUNDLED_METADATA).map_err(|e| {
        ChainError::Unsupported(format!(
            "the bundled subtensor metadata does not decode: {e}"
        ))
    })
}

fn u16s(values: &[u16]) -> Value {
    Value::unnamed_composite(values.iter().map(|&v| Value::u128(v as u128)))
}

/// The SubtensorModule calls this project sends, with their arguments as subtensor names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    SetWeights {
        netuid: u16,
        dests: Vec<u16>,
        weights: Vec<u16>,
        version_key: u64,
    },
    CommitWeights {
        netuid: u16,
        commit_hash: [u8; 32],
    },
    /// Commit-reveal v4: weights encrypted to a drand round (`tlock::commit_weights`).
    CommitTimelockedWeights {
        netuid: u16,
        commit: Vec<u8>,
        reveal_round: u64,
        commit_reveal_version: u16,
    },
    /// The `*_mechanism_*` variants address mechanism `mecid` of a subnet (0 is the subnet's own).
    SetMechanismWeights {
        netuid: u16,
        mecid: u8,
        dests: Vec<u16>,
        weights: Vec<u16>,
        version_key: u64,
    },
    CommitMechanismWeights {
        netuid: u16,
        mecid: u8,
        commit_hash: [u8; 32],
    },
    RevealMechanismWeights {
        netuid: u16,
        mecid: u8,
        uids: Vec<u16>,
        values: Vec<u16>,
        salt: Vec<u16>,
        version_key: u64,
    },
    CommitTimelockedMechanismWeights {
        netuid: u16,
        mecid: u8,
        commit: Vec<u8>,
        reveal_round: u64,
        commit_reveal_version: u16,
    },
    RevealWeights {
        netuid: u16,
        uids: Vec<u16>,
        values: Vec<u16>,
        salt: Vec<u16>,
        version_key: u64,
    },
    ServeAxon {
        netuid: u16,
        version: u32,
        addr: SocketAddr,
    },
    BurnedRegister {
        netuid: u16,
        hotkey: AccountId,
    },
    AddStake {
        hotkey: AccountId,
        netuid: u16,
        amount_staked: u64,
    },
}

/// An axon address in subtensor's encoding: (ip as u128, ip_type 4 or 6).
fn axon_ip(addr: &SocketAddr) -> (u128, u8) {
    match addr.ip() {
        IpAddr::V4(v4) => (u32::from(v4) as u128, 4),
        IpAddr::V6(v6) => (u128::from(v6), 6),
    }
}

impl Call {
    /// The call's name in the pallet.
    pub fn name(&self) -> &'static str {
        match self {
            Call::SetWeights { .. } => "set_weights",
            Call::CommitWeights { .. } => "commit_weights",
            Call::CommitTimelockedWeights { .. } => "commit_timelocked_weights",
            Call::SetMechanismWeights { .. } => "set_mechanism_weights",
            Call::CommitMechanismWeights { .. } => "commit_mechanism_weights",
            Call::RevealMechanismWeights { .. } => "reveal_mechanism_weights",
            Call::CommitTimelockedMechanismWeights { .. } => "commit_timelocked_mechanism_weights",
            Call::RevealWeights { .. } => "reveal_weights",
            Call::ServeAxon { .. } => "serve_axon",
            Call::BurnedRegister { .. } => "burned_register",
            Call::AddStake { .. } => "add_stake",
        }
    }

    /// The call's arguments in the metadata's order: one arm per call, as long as the calls are
    /// many.
    fn fields(&self) -> Vec<Value> {
        let n = |v: u128| Value::u128(v);
        match self {
            Call::SetWeights {
                netuid,
                dests,
                weights,
                version_key,
            } => vec![
                n(*netuid as u128),
                u16s(dests),
                u16s(weights),
                n(*version_key as u128),
            ],
            Call::CommitWeights {
                netuid,
                commit_hash,
            } => vec![n(*netuid as u128), Value::from_bytes(commit_hash)],
            Call::CommitTimelockedWeights {
                netuid,
                commit,
                reveal_round,
                commit_reveal_version,
            } => vec![
                n(*netuid as u128),
                Value::from_bytes(commit),
                n(*reveal_round as u128),
                n(*commit_reveal_version as u128),
            ],
            Call::SetMechanismWeights {
                netuid,
                mecid,
                dests,
                weights,
                version_key,
            } => vec![
                n(*netuid as u128),
                n(*mecid as u128),
                u16s(dests),
                u16s(weights),
                n(*version_key as u128),
            ],
            Call::CommitMechanismWeights {
                netuid,
                mecid,
                commit_hash,
            } => vec![
                n(*netuid as u128),
                n(*mecid as u128),
                Value::from_bytes(commit_hash),
            ],
            Call::RevealMechanismWeights {
                netuid,
                mecid,
                uids,
                values,
                salt,
                version_key,
            } => vec![
                n(*netuid as u128),
                n(*mecid as u128),
                u16s(uids),
                u16s(values),
                u16s(salt),
                n(*version_key as u128),
            ],
            Call::CommitTimelockedMechanismWeights {
                netuid,
                mecid,
                commit,
                reveal_round,
                commit_reveal_version,
            } => vec![
                n(*netuid as u128),
                n(*mecid as u128),
                Value::from_bytes(commit),
                n(*reveal_round as u128),
                n(*commit_reveal_version as u128),
            ],
            Call::RevealWeights {
                netuid,
                uids,
                values,
                salt,
                version_key,
            } => vec![
                n(*netuid as u128),
                u16s(uids),
                u16s(values),
                u16s(salt),
                n(*version_key as u128),
            ],
            Call::ServeAxon {
                netuid,
                version,
                addr,
            } => {
                let (ip, ip_type) = axon_ip(addr);
                vec![
                    n(*netuid as u128),
                    n(*version as u128),
                    n(ip),
                    n(addr.port() as u128),
                    n(ip_type as u128),
                    n(0),
                    n(0),
                    n(0),
                ]
            }
            Call::BurnedRegister { netuid, hotkey } => {
                vec![n(*netuid as u128), Value::from_bytes(hotkey.0)]
            }
            Call::AddStake {
                hotkey,
                netuid,
                amount_staked,
            } => vec![
                Value::from_bytes(hotkey.0),
                n(*netuid as u128),
                n(*amount_staked as u128),
            ],
        }
    }

    /// A dynamic transaction payload, encoded against whichever metadata signs it.
    pub fn payload(&self) -> DynamicPayload<Vec<Value>> {
        subxt::tx::dynamic(PALLET, self.name(), self.fields())
    }

    /// The SCALE call data (pallet index, call index, arguments) for `metadata`.
    pub fn call_data(&self, metadata: &subxt::Metadata) -> Result<Vec<u8>> {
        let payload = self.payload();
        encode_call_data(
            payload.pallet_name(),
            payload.call_name(),
            payload.call_data(),
            metadata,
            metadata.types(),
        )
        .map_err(|e| {
            ChainError::Unsupported(format!(
                "{PALLET}.{} does not encode against this runtime's metadata: {e}",
                self.name()
            ))
        })
    }
}

/// The calls and storage entries this backend uses: a runtime must agree with the bundled metadata on
/// every one of them.
pub const CALLS: [&str; 11] = [
    "set_weights",
    "commit_weights",
    "reveal_weights",
    "commit_timelocked_weights",
    "set_mechanism_weights",
    "commit_mechanism_weights",
    "reveal_mechanism_weights",
    "commit_timelocked_mechanism_weights",
    "serve_axon",
    "burned_register",
    "add_stake",
];
pub const STORAGE: [&str; 37] = [
    "MechanismCountCurrent",
    "LastMechansimStepBlock",
    "SubnetworkN",
    "Uids",
    "NetworksAdded",
    "Keys",
    "Owner",
    "Axons",
    "TotalHotkeyAlpha",
    "Weights",
    "BlockAtRegistration",
    "Incentive",
    "Dividends",
    "Consensus",
    "ValidatorTrust",
    "Emission",
    "ValidatorPermit",
    "Active",
    "LastUpdate",
    "Tempo",
    "Kappa",
    "WeightsVersionKey",
    "WeightsSetRateLimit",
    "CommitRevealWeightsEnabled",
    "MinAllowedWeights",
    "MaxWeightsLimit",
    "ImmunityPeriod",
    "CommitRevealWeightsVersion",
    "ActivityCutoff",
    "MaxAllowedUids",
    "MaxAllowedValidators",
    "RevealPeriodEpochs",
    "Burn",
    "BondsMovingAverage",
    "BondsPenalty",
    "StakeThreshold",
    "SubnetOwnerCut",
];

/// Checks that `node`'s SubtensorModule agrees with `bundled` on every call and storage entry this
/// backend uses (subxt's per-item hashes cover names, argument and value types). The error names
/// what differs and what to do.
pub fn check_compatible(node: &subxt::Metadata, bundled: &subxt::Metadata) -> Result<()> {
    let theirs = node.pallet_by_name(PALLET).ok_or_else(|| {
        ChainError::Unsupported(format!(
            "the node's runtime has no {PALLET} pallet: is it a subtensor node?"
        ))
    })?;
    let ours = bundled.pallet_by_name(PALLET).ok_or_else(|| {
        ChainError::Unsupported(format!("the bundled metadata has no {PALLET} pallet"))
    })?;
    // A missing item hashes to None on the node's side: it differs too.
    let calls = CALLS
        .iter()
        .filter(|c| theirs.call_hash(c).is_none() || theirs.call_hash(c) != ours.call_hash(c))
        .map(|c| format!("call {c}"));
    let storage = STORAGE
        .iter()
        .filter(|e| {
            theirs.storage_hash(e).is_none() || theirs.storage_hash(e) != ours.storage_hash(e)
        })
        .map(|e| format!("storage {e}"));
    let differs: Vec<String> = calls.chain(storage).collect();
    if differs.is_empty() {
        return Ok(());
    }
    Err(ChainError::Unsupported(format!(
        "the node's runtime differs from the bundled subtensor metadata in {PALLET} ({}): update \
         chain-client/metadata/subtensor-finney.scale from the node (for example `subxt metadata \
         --url <node> > chain-client/metadata/subtensor-finney.scale`), check the calls and storage \
         reads in chain-client/src/subtensor.rs against it, and rebuild",
        differs.join(", ")
    )))
}

/// The full storage key of `entry` in SubtensorModule for `keys`, hashed as the metadata says.
pub fn storage_key<K: IntoEncodableValues>(
    metadata: &subxt::Metadata,
    entry: &str,
    keys: K,
) -> Result<Vec<u8>> {
    frame_decode::storage::encode_storage_key(PALLET, entry, keys, metadata, metadata.types())
        .map_err(|e| {
            ChainError::Unsupported(format!(
                "{PALLET}.{entry}: cannot encode its storage key: {e}"
            ))
        })
}

/// Decodes a value of `entry` as the metadata types it; the whole input must be used.
pub fn decode_value<T: DecodeAsType>(
    metadata: &subxt::Metadata,
    entry: &str,
    bytes: &[u8],
) -> Result<T> {
    let bad = |e: String| ChainError::Corrupt(format!("{PALLET}.{entry}: {e}"));
    let info = metadata
        .storage_info(PALLET, entry)
        .map_err(|e| bad(e.to_string()))?;
    let mut cursor = bytes;
    let value = T::decode_as_type(&mut cursor, info.value_id, metadata.types())
        .map_err(|e| bad(e.to_string()))?;
    if !cursor.is_empty() {
        return Err(bad(format!("{} bytes left over", cursor.len())));
    }
    Ok(value)
}

/// Whether the runtime described by `metadata` has storage `entry` in SubtensorModule.
pub fn has_storage(metadata: &subxt::Metadata, entry: &str) -> bool {
    metadata
        .pallet_by_name(PALLET)
        .and_then(|p| p.storage())
        .and_then(|s| s.entry_by_name(entry))
        .is_some()
}

/// Seconds a block of the runtime described by `metadata` takes: aura's slot, twice
/// `Timestamp.MinimumPeriod` (12 s on finney, 0.25 s on a fast-block localnet); 12 s where the
/// runtime does not say.
pub fn block_secs(metadata: &subxt::Metadata) -> f64 {
    metadata
        .pallet_by_name("Timestamp")
        .and_then(|p| p.constant_by_name("MinimumPeriod"))
        .and_then(|c| <[u8; 8]>::try_from(c.value()).ok())
        .map(u64::from_le_bytes)
        .filter(|&ms| ms > 0)
        .map_or(12.0, |ms| (2 * ms) as f64 / 1000.0)
}

/// The default value of `entry` (what the chain returns for a missing key), decoded.
pub fn default_value<T: DecodeAsType>(metadata: &subxt::Metadata, entry: &str) -> Result<T> {
    let bytes = metadata
        .pallet_by_name(PALLET)
        .and_then(|p| p.storage())
        .and_then(|s| s.entry_by_name(entry))
        .and_then(|e| e.default_value())
        .ok_or_else(|| ChainError::Unsupported(format!("{PALLET}.{entry} has no default value")))?;
    decode_value(metadata, entry, bytes)
}

pub use axon::AxonInfo;

// In a module of its own: the derive expects the prelude's Result.
mod axon {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    use subxt::ext::scale_decode::DecodeAsType;

    /// AxonInfo as subtensor stores it.
    #[derive(Clone, Debug, PartialEq, Eq, DecodeAsType)]
    #[decode_as_type(crate_path = "subxt::ext::scale_decode")]
    pub struct AxonInfo {
        pub block: u64,
        pub version: u32,
        pub ip: u128,
        pub port: u16,
        pub ip_type: u8,
        pub protocol: u8,
        pub placeholder1: u8,
        pub placeholder2: u8,
    }

    impl AxonInfo {
        /// The socket address, or None when the axon was never served (ip 0) or the ip type is unknown.
        pub fn addr(&self) -> Option<SocketAddr> {
            if self.ip == 0 || self.port == 0 {
                return None;
            }
            let ip = match self.ip_type {
                4 => IpAddr::V4(Ipv4Addr::from(u32::try_from(self.ip).ok()?)),
                6 => IpAddr::V6(Ipv6Addr::from(self.ip)),
                _ => return None,
            };
            Some(SocketAddr::new(ip, self.port))
        }
    }
}

#[cfg(test)]
mod tests;
