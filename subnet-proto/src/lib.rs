//! The subnet's wire protocol: generated gRPC code for proto/subnet.proto, request signing and
//! verification, signed gradient commitments, the gradient payload codec and the size limits.

pub mod auth;
pub mod backoff;
pub mod checkpoints;
pub mod codec;
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

use blake2::{Blake2b, Digest, digest::consts::U32};

/// Blake2b-256, the digest used for payloads, checkpoints and signing payloads.
pub fn digest(bytes: &[u8]) -> [u8; 32] {
    Blake2b::<U32>::digest(bytes).into()
}

/// Reads a 32-byte field, naming it in the error.
pub fn bytes32(field: &str, bytes: &[u8]) -> Result<[u8; 32], String> {
    bytes
        .try_into()
        .map_err(|_| format!("{field} must be 32 bytes, got {}", bytes.len()))
}
