//! A miner's signed commitment to one gradient payload: the validator checks it before it reads or
//! decodes anything, and the signature binds the payload to (hotkey, window, task, checkpoint).

use crate::pb::Commitment;
use subxt_signer::sr25519::{Keypair, PublicKey, Signature, verify};

fn signing_payload(c: &Commitment) -> [u8; 32] {
    let mut bytes = Vec::with_capacity(200);
    bytes.extend_from_slice(b"subnet-commitment-v2");
    bytes.extend_from_slice(&c.hotkey);
    bytes.extend_from_slice(&c.window.to_le_bytes());
    bytes.extend_from_slice(&c.task_digest);
    bytes.extend_from_slice(&c.checkpoint_digest);
    bytes.extend_from_slice(&c.payload_digest);
    bytes.extend_from_slice(&c.payload_len.to_le_bytes());
    bytes.extend_from_slice(&c.committed_at_ms.to_le_bytes());
    bytes.extend_from_slice(&c.dense_digest);
    crate::digest(&bytes)
}

/// Commits to `payload` for `window`, trained from `checkpoint_digest`, under `task_digest`, and
/// compressed from the dense pseudo-gradient whose codec bytes have digest `dense_digest`.
pub fn commit(
    keypair: &Keypair,
    window: u64,
    task_digest: [u8; 32],
    checkpoint_digest: [u8; 32],
    payload: &[u8],
    dense_digest: [u8; 32],
) -> Commitment {
    let mut c = Commitment {
        hotkey: keypair.public_key().0.to_vec(),
        window,
        task_digest: task_digest.to_vec(),
        checkpoint_digest: checkpoint_digest.to_vec(),
        payload_digest: crate::digest(payload).to_vec(),
        payload_len: payload.len() as u64,
        signature: Vec::new(),
        committed_at_ms: crate::auth::now_ms(),
        dense_digest: dense_digest.to_vec(),
    };
    c.signature = keypair.sign(&signing_payload(&c)).0.to_vec();
    c
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
    #[error("payload of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: u64, limit: u64 },
    #[error("payload is {found} bytes, the commitment says {expected}")]
    WrongLength { expected: u64, found: u64 },
    #[error("payload digest {found} does not match the committed digest {expected}")]
    DigestMismatch { expected: String, found: String },
}

/// What a validator expects of a commitment.
pub struct Expected<'a> {
    pub hotkey: &'a [u8; 32],
    pub window: u64,
    pub task_digest: &'a [u8; 32],
    pub checkpoint_digest: &'a [u8; 32],
    pub max_len: u64,
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
    if c.payload_len > expected.max_len {
        return Err(CommitmentError::TooLarge {
            len: c.payload_len,
            limit: expected.max_len,
        });
    }
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
        let c = commit(&miner, 7, [1; 32], [2; 32], b"gradient", [3; 32]);
        let ok = Expected {
            hotkey: &hotkey,
            window: 7,
            task_digest: &[1; 32],
            checkpoint_digest: &[2; 32],
            max_len: 100,
        };
        verify_commitment(&c, &ok).unwrap();
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
            verify_commitment(&c, &Expected { max_len: 3, ..ok }),
            Err(CommitmentError::TooLarge { .. })
        ));
        let mut forged = c.clone();
        forged.payload_len += 1;
        assert_eq!(
            verify_commitment(&forged, &ok),
            Err(CommitmentError::BadSignature)
        );
        let bob = dev::bob().public_key().0;
        assert!(matches!(
            verify_commitment(&c, &Expected { hotkey: &bob, ..ok }),
            Err(CommitmentError::WrongHotkey { .. })
        ));
    }
}
