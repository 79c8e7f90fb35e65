//! Subtensor calls encoded with subxt against the real runtime metadata shipped in
//! `chain-client/metadata/`. The dynamic API reads argument types from the metadata, so a runtime
//! upgrade that keeps a call's shape keeps working, and one that changes it fails loudly here.

use crate::error::{ChainError, Result};
use subxt::dynamic::Value;
use subxt::ext::frame_decode::extrinsics::encode_call_data;

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

fn call_data(metadata: &subxt::Metadata, call: &str, fields: Vec<Value>) -> Result<Vec<u8>> {
    let payload = subxt::tx::dynamic(PALLET, call, fields);
    encode_call_data(
        payload.pallet_name(),
        payload.call_name(),
        payload.call_data(),
        metadata,
        metadata.types(),
    )
    .map_err(|e| {
        ChainError::Unsupported(format!(
            "{PALLET}.{call} does not encode against this runtime's metadata: {e}"
        ))
    })
}

/// SubtensorModule.set_weights(netuid, dests, weights, version_key), SCALE-encoded with its pallet
/// and call indices.
pub fn set_weights_call_data(
    metadata: &subxt::Metadata,
    netuid: u16,
    dests: &[u16],
    weights: &[u16],
    version_key: u64,
) -> Result<Vec<u8>> {
    call_data(
        metadata,
        "set_weights",
        vec![
            Value::u128(netuid as u128),
            u16s(dests),
            u16s(weights),
            Value::u128(version_key as u128),
        ],
    )
}

/// SubtensorModule.serve_axon(netuid, version, ip, port, ip_type, protocol, placeholder1, placeholder2).
pub fn serve_axon_call_data(
    metadata: &subxt::Metadata,
    netuid: u16,
    version: u32,
    addr: std::net::SocketAddr,
) -> Result<Vec<u8>> {
    let (ip, ip_type) = match addr.ip() {
        std::net::IpAddr::V4(v4) => (u32::from(v4) as u128, 4u8),
        std::net::IpAddr::V6(v6) => (u128::from(v6), 6u8),
    };
    call_data(
        metadata,
        "serve_axon",
        vec![
            Value::u128(netuid as u128),
            Value::u128(version as u128),
            Value::u128(ip),
            Value::u128(addr.port() as u128),
            Value::u128(ip_type as u128),
            Value::u128(0),
            Value::u128(0),
            Value::u128(0),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The golden vector of REFERENCE.md: set_weights(1, [0, 1], [65535, 32767], 0).
    #[test]
    fn set_weights_matches_the_golden_call_data() {
        let metadata = bundled_metadata().unwrap();
        let bytes = set_weights_call_data(&metadata, 1, &[0, 1], &[65535, 32767], 0).unwrap();
        assert_eq!(
            hex::encode(bytes),
            "07000100080000010008ffffff7f0000000000000000"
        );
    }

    #[test]
    fn serve_axon_encodes_pallet_call_and_arguments() {
        let metadata = bundled_metadata().unwrap();
        let bytes =
            serve_axon_call_data(&metadata, 3, 1, "127.0.0.1:8091".parse().unwrap()).unwrap();
        // pallet 7, call 4, netuid u16 LE, version u32 LE, ip u128 LE, port u16 LE, ip_type, protocol,
        // two placeholders.
        let mut expected = vec![7u8, 4, 3, 0, 1, 0, 0, 0];
        expected.extend_from_slice(&(0x7f00_0001u128).to_le_bytes());
        expected.extend_from_slice(&8091u16.to_le_bytes());
        expected.extend_from_slice(&[4, 0, 0, 0]);
        assert_eq!(bytes, expected);
    }
}
