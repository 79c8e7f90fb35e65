//! The subnet's wire protocol: generated gRPC code for proto/subnet.proto, request signing and
//! verification, signed gradient commitments and the size limits. The payload codec itself is
//! `pseudo_gradient::codec`: the wire carries its bytes.

pub mod auth;
pub mod backoff;
pub mod checkpoints;
pub mod commitment;
pub mod limits;
pub mod metrics_http;
pub mod server;
pub mod stream;
pub mod tls;

/// Generated from proto/subnet.proto.
pub mod pb {
    tonic::include_proto!("subnet.v1");
}

/// Blake2b-256, the digest used for payloads, checkpoints and signing payloads
/// (`pseudo_gradient::digest`, its one implementation).
pub use pseudo_gradient::digest::blake2b as digest;

/// Reads a 32-byte field, naming it in the error.
pub fn bytes32(field: &str, bytes: &[u8]) -> Result<[u8; 32], String> {
    bytes
        .try_into()
        .map_err(|_| format!("{field} must be 32 bytes, got {}", bytes.len()))
}
