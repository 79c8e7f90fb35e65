//! A miner's signed commitment to one window's gradient: the validator checks it before it reads or
//! decodes anything. The signature binds the payload, the dense pseudo-gradient it was compressed
//! from and the error-feedback residuals around the compression to (hotkey, window, task,
//! checkpoint); no field is a time the miner chooses.

use crate::pb::Commitment;
use subxt_signer::sr25519::{Keypair, PublicKey, Signature, verify};

fn signing_payload(c: &Commitment) -> [u8; 32] {
    let mut bytes = Vec::with_capacity(300);
    bytes.extend_from_slice(b"subnet-commitment-v5");
    bytes.extend_from_slice(&c.hotkey);
    bytes.extend_from_slice(&c.window.to_le_bytes());
    bytes.extend_from_slice(&c.task_digest);
    bytes.extend_from_slice(&c.checkpoint_digest);
    bytes.extend_from_slice(&c.payload_digest);
    bytes.extend_from_slice(&c.payload_len.to_le_bytes());
    bytes.extend_from_slice(&c.dense_digest);
    bytes.extend_from_slice(&c.residual_in_digest);
    bytes.extend_from_slice(&c.residual_window.to_le_bytes());
    bytes.extend_from_slice(&c.residual_out_digest);
    bytes.extend_from_slice(&c.group_capacity.to_le_bytes());
    bytes.extend_from_slice(&(c.segment_digests.len() as u64).to_le_bytes());
    for d in &c.segment_digests {
        bytes.extend_from_slice(&(d.len() as u64).to_le_bytes());
        bytes.extend_from_slice(d);
    }
    bytes.extend_from_slice(&(c.backend.len() as u64).to_le_bytes());
    bytes.extend_from_slice(c.backend.as_bytes());
    crate::digest(&bytes)
}

/// What a commitment names (digests of codec bytes: the payload, and the dense forms of the
/// pseudo-gradient and residuals).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    pub window: u64,
    pub task_digest: [u8; 32],
    pub checkpoint_digest: [u8; 32],
    pub payload_digest: [u8; 32],
    pub payload_len: u64,
    pub dense_digest: [u8; 32],
    pub residual_in_digest: [u8; 32],
    /// The window whose residual_out is residual_in (0 for a zero residual).
    pub residual_window: u64,
    pub residual_out_digest: [u8; 32],
    /// The most parameters of a group the miner holds (0: any; see `task::groups`).
    pub group_capacity: u64,
    /// The digest of the training state at the end of each segment of the window, in order.
    pub segments: Vec<[u8; 32]>,
    /// The backend that trained the window: `cuda:0`, `wgpu`, or a CPU named by its arithmetic
    /// (`task::device::cpu_backend`); an audit compares bits with a window trained on the
    /// validator's own.
    pub backend: String,
}

/// The longest backend name a commitment may carry.
pub const MAX_BACKEND_LEN: usize = 32;

/// Signs `claims` with the miner's hotkey.
pub fn commit(keypair: &Keypair, claims: &Claims) -> Commitment {
    let mut c = Commitment {
        hotkey: keypair.public_key().0.to_vec(),
        window: claims.window,
        task_digest: claims.task_digest.to_vec(),
        checkpoint_digest: claims.checkpoint_digest.to_vec(),
        payload_digest: claims.payload_digest.to_vec(),
        payload_len: claims.payload_len,
        signature: Vec::new(),
        dense_digest: claims.dense_digest.to_vec(),
        residual_in_digest: claims.residual_in_digest.to_vec(),
        residual_out_digest: claims.residual_out_digest.to_vec(),
        residual_window: claims.residual_window,
        group_capacity: claims.group_capacity,
        segment_digests: claims.segments.iter().map(|d| d.to_vec()).collect(),
        backend: claims.backend.clone(),
    };
    c.signature = keypair.sign(&signing_payload(&c)).0.to_vec();
    c
}

/// Whether two commitments make the same claims under the same hotkey (sr25519 signatures are
/// randomized, so a miner that signs the same claims twice gives two signatures).
pub fn same_claims(a: &Commitment, b: &Commitment) -> bool {
    signing_payload(a) == signing_payload(b)
}

/// A commitment read off the wire once: its hotkey, claims and signature as typed values. A node
/// keeps this, never the protobuf message, and writes it back (`to_wire`) only to send or store it.
/// Reading checks lengths alone; `verify_commitment` checks the signature and the claims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCommitment {
    pub hotkey: [u8; 32],
    pub claims: Claims,
    pub signature: [u8; 64],
}

impl SignedCommitment {
    /// Reads a wire commitment whose hotkey, digests and signature have their lengths.
    pub fn from_wire(c: &Commitment) -> Result<Self, CommitmentError> {
        fn bytes<const N: usize>(
            field: &'static str,
            v: &[u8],
        ) -> Result<[u8; N], CommitmentError> {
            v.try_into().map_err(|_| CommitmentError::Malformed {
                field,
                len: v.len(),
            })
        }
        Ok(Self {
            hotkey: bytes("hotkey", &c.hotkey)?,
            claims: Claims {
                window: c.window,
                task_digest: bytes("task_digest", &c.task_digest)?,
                checkpoint_digest: bytes("checkpoint_digest", &c.checkpoint_digest)?,
                payload_digest: bytes("payload_digest", &c.payload_digest)?,
                payload_len: c.payload_len,
                dense_digest: bytes("dense_digest", &c.dense_digest)?,
                residual_in_digest: bytes("residual_in_digest", &c.residual_in_digest)?,
                residual_window: c.residual_window,
                residual_out_digest: bytes("residual_out_digest", &c.residual_out_digest)?,
                group_capacity: c.group_capacity,
                segments: c
                    .segment_digests
                    .iter()
                    .map(|d| bytes("segment_digests", d))
                    .collect::<Result<_, _>>()?,
                backend: backend(&c.backend)?,
            },
            signature: bytes("signature", &c.signature)?,
        })
    }

    /// The commitment as the wire carries it.
    pub fn to_wire(&self) -> Commitment {
        let c = &self.claims;
        Commitment {
            hotkey: self.hotkey.to_vec(),
            window: c.window,
            task_digest: c.task_digest.to_vec(),
            checkpoint_digest: c.checkpoint_digest.to_vec(),
            payload_digest: c.payload_digest.to_vec(),
            payload_len: c.payload_len,
            signature: self.signature.to_vec(),
            dense_digest: c.dense_digest.to_vec(),
            residual_in_digest: c.residual_in_digest.to_vec(),
            residual_out_digest: c.residual_out_digest.to_vec(),
            residual_window: c.residual_window,
            group_capacity: c.group_capacity,
            segment_digests: c.segments.iter().map(|d| d.to_vec()).collect(),
            backend: c.backend.clone(),
        }
    }

    /// The same claims under the same hotkey, whatever the (randomized) signature.
    pub fn same_claims(&self, other: &Self) -> bool {
        self.hotkey == other.hotkey && self.claims == other.claims
    }
}

/// A backend name that fits in a commitment.
fn backend(name: &str) -> Result<String, CommitmentError> {
    if name.len() > MAX_BACKEND_LEN || name.chars().any(|c| c.is_control()) {
        return Err(CommitmentError::Malformed {
            field: "backend",
            len: name.len(),
        });
    }
    Ok(name.to_string())
}

/// Why a commitment or its payload was refused.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommitmentError {
    #[error("commitment is signed by {found}, but the miner's hotkey is {expected}")]
    WrongHotkey { expected: String, found: String },
    #[error("commitment signature does not verify")]
    BadSignature,
    #[error("commitment is for window {found}, expected window {expected}")]
    WrongWindow { expected: u64, found: u64 },
    #[error("commitment is for task {found}, this validator runs task {expected}")]
    WrongTask { expected: String, found: String },
    #[error("gradient was trained from checkpoint {found}, the window's checkpoint is {expected}")]
    WrongCheckpoint { expected: String, found: String },
    #[error("commits to a payload of {len} bytes; the task's encoding is exactly {expected} bytes")]
    PayloadLength { len: u64, expected: u64 },
    #[error(
        "declares it holds parameter groups of at most {capacity} parameters, and no group of the task is that small"
    )]
    NoGroupFits { capacity: u64 },
    #[error(
        "declares a group capacity of {declared} parameters, not the {in_effect} its previous commitment declared: a capacity takes effect from the window after the one that declares it (before that window's seed is known)"
    )]
    CapacityChanged { in_effect: u64, declared: u64 },
    #[error("payload is {found} bytes, the commitment says {expected}")]
    WrongLength { expected: u64, found: u64 },
    #[error("payload digest {found} does not match the committed digest {expected}")]
    DigestMismatch { expected: String, found: String },
    #[error("commits to {declared} segment states; the task's window has {expected} segments")]
    SegmentCount { declared: usize, expected: usize },
    #[error("commitment's {field} is {len} bytes long")]
    Malformed { field: &'static str, len: usize },
}

/// What a validator expects of a commitment.
pub struct Expected<'a> {
    pub hotkey: &'a [u8; 32],
    pub window: u64,
    pub task_digest: &'a [u8; 32],
    pub checkpoint_digest: &'a [u8; 32],
    /// The exact payload length of the task's encoding.
    pub payload_len: u64,
    /// The task's segments in a window.
    pub segments: usize,
}

/// Checks everything about a commitment that can be checked before the payload arrives.
pub fn verify_commitment(c: &Commitment, expected: &Expected<'_>) -> Result<(), CommitmentError> {
    if c.hotkey.as_slice() != expected.hotkey {
        return Err(CommitmentError::WrongHotkey {
            expected: hex::encode(expected.hotkey),
            found: hex::encode(&c.hotkey),
        });
    }
    let signature: [u8; 64] = c
        .signature
        .as_slice()
        .try_into()
        .map_err(|_| CommitmentError::BadSignature)?;
    if !verify(
        &Signature(signature),
        signing_payload(c),
        &PublicKey(*expected.hotkey),
    ) {
        return Err(CommitmentError::BadSignature);
    }
    if c.window != expected.window {
        return Err(CommitmentError::WrongWindow {
            expected: expected.window,
            found: c.window,
        });
    }
    if c.task_digest.as_slice() != expected.task_digest {
        return Err(CommitmentError::WrongTask {
            expected: hex::encode(expected.task_digest),
            found: hex::encode(&c.task_digest),
        });
    }
    if c.checkpoint_digest.as_slice() != expected.checkpoint_digest {
        return Err(CommitmentError::WrongCheckpoint {
            expected: hex::encode(expected.checkpoint_digest),
            found: hex::encode(&c.checkpoint_digest),
        });
    }
    if c.payload_len != expected.payload_len {
        return Err(CommitmentError::PayloadLength {
            len: c.payload_len,
            expected: expected.payload_len,
        });
    }
    if c.segment_digests.len() != expected.segments {
        return Err(CommitmentError::SegmentCount {
            declared: c.segment_digests.len(),
            expected: expected.segments,
        });
    }
    SignedCommitment::from_wire(c)?;
    Ok(())
}

/// Checks a received payload against its (already verified) commitment.
pub fn verify_payload(c: &Commitment, payload: &[u8]) -> Result<(), CommitmentError> {
    if payload.len() as u64 != c.payload_len {
        return Err(CommitmentError::WrongLength {
            expected: c.payload_len,
            found: payload.len() as u64,
        });
    }
    let found = crate::digest(payload);
    if found.as_slice() != c.payload_digest.as_slice() {
        return Err(CommitmentError::DigestMismatch {
            expected: hex::encode(&c.payload_digest),
            found: hex::encode(found),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use subxt_signer::sr25519::dev;

    #[test]
    fn commitments_bind_payload_window_task_and_checkpoint() {
        let miner = dev::alice();
        let hotkey = miner.public_key().0;
        let claims = Claims {
            window: 7,
            task_digest: [1; 32],
            checkpoint_digest: [2; 32],
            payload_digest: crate::digest(b"gradient"),
            payload_len: 8,
            dense_digest: [3; 32],
            residual_in_digest: [4; 32],
            residual_window: 6,
            residual_out_digest: [5; 32],
            group_capacity: 0,
            segments: vec![[6; 32], [7; 32]],
            backend: "cpu:x86_64/0123abcd".into(),
        };
        let c = commit(&miner, &claims);
        let again = commit(&miner, &claims);
        assert_ne!(c.signature, again.signature);
        assert!(same_claims(&c, &again));
        assert!(!same_claims(
            &c,
            &commit(
                &miner,
                &Claims {
                    residual_window: 5,
                    ..claims.clone()
                }
            )
        ));
        let ok = Expected {
            hotkey: &hotkey,
            window: 7,
            task_digest: &[1; 32],
            checkpoint_digest: &[2; 32],
            payload_len: 8,
            segments: 2,
        };
        verify_commitment(&c, &ok).unwrap();
        assert_eq!(
            verify_commitment(&c, &Expected { segments: 3, ..ok }),
            Err(CommitmentError::SegmentCount {
                declared: 2,
                expected: 3
            })
        );
        for (field, change) in [
            (
                "segments",
                Claims {
                    segments: vec![[6; 32], [8; 32]],
                    ..claims.clone()
                },
            ),
            (
                "backend",
                Claims {
                    backend: "cuda:0".into(),
                    ..claims.clone()
                },
            ),
        ] {
            let mut forged = commit(&miner, &change);
            forged.signature = c.signature.clone();
            assert_eq!(
                verify_commitment(&forged, &ok),
                Err(CommitmentError::BadSignature),
                "{field} is signed"
            );
        }
        verify_payload(&c, b"gradient").unwrap();
        assert!(matches!(
            verify_payload(&c, b"gradienT"),
            Err(CommitmentError::DigestMismatch { .. })
        ));
        assert!(matches!(
            verify_commitment(&c, &Expected { window: 8, ..ok }),
            Err(CommitmentError::WrongWindow { .. })
        ));
        assert!(matches!(
            verify_commitment(
                &c,
                &Expected {
                    checkpoint_digest: &[3; 32],
                    ..ok
                }
            ),
            Err(CommitmentError::WrongCheckpoint { .. })
        ));
        assert!(matches!(
            verify_commitment(
                &c,
                &Expected {
                    payload_len: 3,
                    ..ok
                }
            ),
            Err(CommitmentError::PayloadLength { .. })
        ));
        for forge in [
            |c: &mut Commitment| c.payload_len += 1,
            |c: &mut Commitment| c.residual_in_digest[0] ^= 1,
            |c: &mut Commitment| c.residual_out_digest[0] ^= 1,
            |c: &mut Commitment| c.residual_window += 1,
            |c: &mut Commitment| c.dense_digest[0] ^= 1,
        ] {
            let mut forged = c.clone();
            forge(&mut forged);
            assert_eq!(
                verify_commitment(&forged, &ok),
                Err(CommitmentError::BadSignature)
            );
        }
        let bob = dev::bob().public_key().0;
        assert!(matches!(
            verify_commitment(&c, &Expected { hotkey: &bob, ..ok }),
            Err(CommitmentError::WrongHotkey { .. })
        ));
    }

    #[test]
    fn a_commitment_reads_off_the_wire_once_and_writes_back_the_same() {
        let miner = dev::alice();
        let claims = Claims {
            window: 3,
            task_digest: [1; 32],
            checkpoint_digest: [2; 32],
            payload_digest: [3; 32],
            payload_len: 9,
            dense_digest: [4; 32],
            residual_in_digest: [5; 32],
            residual_window: 2,
            residual_out_digest: [6; 32],
            group_capacity: 7,
            segments: vec![[8; 32]],
            backend: "wgpu".into(),
        };
        let wire = commit(&miner, &claims);
        let read = SignedCommitment::from_wire(&wire).unwrap();
        assert_eq!(read.claims, claims);
        assert_eq!(read.hotkey, miner.public_key().0);
        assert_eq!(read.to_wire(), wire);
        let again = SignedCommitment::from_wire(&commit(&miner, &claims)).unwrap();
        assert!(read.same_claims(&again));
        assert_ne!(read.signature, again.signature);
        let mut short = wire.clone();
        short.dense_digest.pop();
        assert_eq!(
            SignedCommitment::from_wire(&short),
            Err(CommitmentError::Malformed {
                field: "dense_digest",
                len: 31
            })
        );
    }
}
