//! Content-addressed checkpoints: the canonical bytes are a small header (magic, task digest, length)
//! followed by the parameters as little-endian f32; the digest is Blake2b-256 of those bytes. A
//! checkpoint loads on any backend, since it is only the flat parameter vector.

use pseudo_gradient::Digest;
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"SNCKPT01";
const HEADER_LEN: usize = 8 + 32 + 8;

#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub task_digest: [u8; 32],
    pub params: Arc<Vec<f32>>,
    /// The digest of the canonical bytes: the checkpoint's name.
    pub digest: Digest,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckpointError {
    #[error("not a checkpoint (bad magic or {0} bytes is too short)")]
    NotACheckpoint(usize),
    #[error("checkpoint is for task {found}, this node runs task {expected}")]
    WrongTask { expected: String, found: String },
    #[error("checkpoint declares {declared} parameters but the task's model has {expected}")]
    WrongLength { declared: u64, expected: usize },
    #[error(
        "checkpoint digest is {found}, expected {expected}: the bytes were corrupted or substituted"
    )]
    DigestMismatch { expected: String, found: String },
    #[error("checkpoint parameter {index} is {value}: a model holds finite numbers only")]
    NonFinite { index: usize, value: String },
}

impl Checkpoint {
    pub fn new(task_digest: [u8; 32], params: Vec<f32>) -> Self {
        let digest = Self::digest_of(&encode(&task_digest, &params));
        Self {
            task_digest,
            params: Arc::new(params),
            digest,
        }
    }

    /// Length of the canonical bytes, without building them.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + 4 * self.params.len()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        encode(&self.task_digest, &self.params)
    }

    pub fn digest_of(bytes: &[u8]) -> Digest {
        Digest::of(bytes)
    }

    /// Decodes and verifies bytes received for `expected_digest` (when given).
    pub fn from_bytes(
        bytes: &[u8],
        task_digest: &[u8; 32],
        expected_params: usize,
        expected_digest: Option<&Digest>,
    ) -> Result<Self, CheckpointError> {
        if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
            return Err(CheckpointError::NotACheckpoint(bytes.len()));
        }
        let found_task: [u8; 32] = bytes[8..40].try_into().expect("32 bytes");
        if &found_task != task_digest {
            return Err(CheckpointError::WrongTask {
                expected: hex::encode(task_digest),
                found: hex::encode(found_task),
            });
        }
        let declared = u64::from_le_bytes(bytes[40..48].try_into().expect("8 bytes"));
        if declared != expected_params as u64 || bytes.len() != HEADER_LEN + 4 * expected_params {
            return Err(CheckpointError::WrongLength {
                declared,
                expected: expected_params,
            });
        }
        let digest = Self::digest_of(bytes);
        if let Some(expected) = expected_digest
            && expected != &digest
        {
            return Err(CheckpointError::DigestMismatch {
                expected: expected.to_string(),
                found: digest.to_string(),
            });
        }
        let params: Vec<f32> = bytes[HEADER_LEN..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        if let Some((index, &value)) = params.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(CheckpointError::NonFinite {
                index,
                value: value.to_string(),
            });
        }
        Ok(Self {
            task_digest: found_task,
            params: Arc::new(params),
            digest,
        })
    }

    pub fn short_digest(&self) -> String {
        hex::encode(&self.digest.0[..6])
    }
}

fn encode(task_digest: &[u8; 32], params: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + 4 * params.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(task_digest);
    out.extend_from_slice(&(params.len() as u64).to_le_bytes());
    for p in params {
        out.extend_from_slice(&p.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_corruption() {
        let task = [7u8; 32];
        let ck = Checkpoint::new(task, vec![1.0, -2.5, 3.25]);
        let bytes = ck.to_bytes();
        assert_eq!(bytes.len(), ck.encoded_len());
        assert_eq!(
            Checkpoint::from_bytes(&bytes, &task, 3, Some(&ck.digest)).unwrap(),
            ck
        );
        let mut corrupt = bytes.clone();
        *corrupt.last_mut().unwrap() ^= 1;
        assert!(matches!(
            Checkpoint::from_bytes(&corrupt, &task, 3, Some(&ck.digest)),
            Err(CheckpointError::DigestMismatch { .. })
        ));
        assert!(matches!(
            Checkpoint::from_bytes(&bytes, &[0; 32], 3, None),
            Err(CheckpointError::WrongTask { .. })
        ));
        assert!(matches!(
            Checkpoint::from_bytes(&bytes, &task, 4, None),
            Err(CheckpointError::WrongLength { .. })
        ));
    }

    /// Bytes that hash to the digest a validator signed but hold a NaN or an infinity are still no
    /// model: the digest only proves who sent them.
    #[test]
    fn non_finite_parameters_are_refused_even_under_the_right_digest() {
        let task = [7u8; 32];
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let ck = Checkpoint::new(task, vec![1.0, bad, 3.0]);
            let refused = Checkpoint::from_bytes(&ck.to_bytes(), &task, 3, Some(&ck.digest));
            assert!(
                matches!(refused, Err(CheckpointError::NonFinite { index: 1, .. })),
                "{refused:?}"
            );
        }
    }
}
