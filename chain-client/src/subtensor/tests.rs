use super::*;

/// The golden vector of REFERENCE.md: set_weights(1, [0, 1], [65535, 32767], 0).
#[test]
fn set_weights_matches_the_golden_call_data() {
    let metadata = bundled_metadata().unwrap();
    let bytes = Call::SetWeights {
        netuid: 1,
        dests: vec![0, 1],
        weights: vec![65535, 32767],
        version_key: 0,
    }
    .call_data(&metadata)
    .unwrap();
    assert_eq!(
        hex::encode(bytes),
        "07000100080000010008ffffff7f0000000000000000"
    );
}

#[test]
fn finney_makes_a_block_every_twelve_seconds() {
    assert_eq!(block_secs(&bundled_metadata().unwrap()), 12.0);
}

#[test]
fn serve_axon_encodes_pallet_call_and_arguments() {
    let metadata = bundled_metadata().unwrap();
    let bytes = Call::ServeAxon {
        netuid: 3,
        version: 1,
        addr: "127.0.0.1:8091".parse().unwrap(),
    }
    .call_data(&metadata)
    .unwrap();
    // pallet 7, call 4, netuid u16 LE, version u32 LE, ip u128 LE, port u16 LE, ip_type, protocol,
    // two placeholders.
    let mut expected = vec![7u8, 4, 3, 0, 1, 0, 0, 0];
    expected.extend_from_slice(&(0x7f00_0001u128).to_le_bytes());
    expected.extend_from_slice(&8091u16.to_le_bytes());
    expected.extend_from_slice(&[4, 0, 0, 0]);
    assert_eq!(bytes, expected);
}
