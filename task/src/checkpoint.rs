//! Content-addressed checkpoints: the canonical bytes are a small header (magic, task digest, length)
//! followed by the parameters as little-endian f32; the digest is Blake2b-256 of those bytes. A
//! checkpoint loads on any backend, since it is only flat vectors.
//!
//! A task that carries the inner optimizer's state across windows (`training.carry_moments`)
//! publishes it with the model: the second magic adds the optimizer steps taken before the window
//! and, after the parameters, AdamW's first and second moments of every parameter. The digest
//! binds them with the parameters, so every miner's window starts from the same state and an
//! audit can rebuild it.

use pseudo_gradient::Digest;
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"SNCKPT01";
const MAGIC_WITH_INNER: &[u8; 8] = b"SNCKPT02";
const HEADER_LEN: usize = 8 + 32 + 8;

/// The inner optimizer's state a window starts from where the task carries it: the AdamW steps
/// taken before the window (its bias correction reads them) and the moments of every parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct InnerState {
    pub steps: u64,
    pub first: Vec<f32>,
    pub second: Vec<f32>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub task_digest: [u8; 32],
    pub params: Arc<Vec<f32>>,
    /// The inner optimizer's state windows start from (None: a fresh AdamW).
    pub inner: Option<Arc<InnerState>>,
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
    #[error(
        "checkpoint's second moment {index} is {value}: an optimizer state holds finite moments and non-negative second ones"
    )]
    BadMoment { index: usize, value: String },
    #[error("checkpoint carries an optimizer state of no steps: moments come from training")]
    NoSteps,
}

impl Checkpoint {
    pub fn new(task_digest: [u8; 32], params: Vec<f32>) -> Self {
        Self::with_inner(task_digest, params, None)
    }

    /// A checkpoint whose windows start from the inner optimizer's state `inner`, which must
    /// cover every parameter.
    pub fn with_inner(task_digest: [u8; 32], params: Vec<f32>, inner: Option<InnerState>) -> Self {
        if let Some(inner) = &inner {
            assert!(
                inner.first.len() == params.len() && inner.second.len() == params.len(),
                "an inner state covers every parameter"
            );
        }
        let digest = Self::digest_of(&encode(&task_digest, &params, inner.as_ref()));
        Self {
            task_digest,
            params: Arc::new(params),
            inner: inner.map(Arc::new),
            digest,
        }
    }

    /// Length of the canonical bytes, without building them.
    pub fn encoded_len(&self) -> usize {
        let vectors = if self.inner.is_some() { 3 } else { 1 };
        HEADER_LEN + self.inner.as_ref().map_or(0, |_| 8) + 4 * vectors * self.params.len()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        encode(&self.task_digest, &self.params, self.inner.as_deref())
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
        let carries = &bytes[..8.min(bytes.len())] == MAGIC_WITH_INNER;
        let extra = if carries { 8 } else { 0 };
        if bytes.len() < HEADER_LEN + extra || !(carries || &bytes[..8] == MAGIC) {
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
        let vectors = if carries { 3 } else { 1 };
        if declared != expected_params as u64
            || bytes.len() != HEADER_LEN + extra + 4 * vectors * expected_params
        {
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
        let mut params: Vec<f32> = bytes[HEADER_LEN + extra..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        let inner = if carries {
            let mut first = params.split_off(expected_params);
            let second = first.split_off(expected_params);
            let steps = u64::from_le_bytes(bytes[48..56].try_into().expect("8 bytes"));
            Some(InnerState {
                steps,
                first,
                second,
            })
        } else {
            None
        };
        if let Some((index, &value)) = params.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(CheckpointError::NonFinite {
                index,
                value: value.to_string(),
            });
        }
        if let Some(inner) = &inner {
            if inner.steps == 0 {
                return Err(CheckpointError::NoSteps);
            }
            let bad_first = inner.first.iter().position(|v| !v.is_finite());
            let bad_second = inner
                .second
                .iter()
                .position(|v| !(v.is_finite() && *v >= 0.0));
            if let Some(index) = bad_first {
                return Err(CheckpointError::NonFinite {
                    index: expected_params + index,
                    value: inner.first[index].to_string(),
                });
            }
            if let Some(index) = bad_second {
                return Err(CheckpointError::BadMoment {
                    index,
                    value: inner.second[index].to_string(),
                });
            }
        }
        Ok(Self {
            task_digest: found_task,
            params: Arc::new(params),
            inner: inner.map(Arc::new),
            digest,
        })
    }

    pub fn short_digest(&self) -> String {
        hex::encode(&self.digest.0[..6])
    }
}

fn encode(task_digest: &[u8; 32], params: &[f32], inner: Option<&InnerState>) -> Vec<u8> {
    let vectors = if inner.is_some() { 3 } else { 1 };
    let mut out = Vec::with_capacity(HEADER_LEN + 8 + 4 * vectors * params.len());
    out.extend_from_slice(if inner.is_some() {
        MAGIC_WITH_INNER
    } else {
        MAGIC
    });
    out.extend_from_slice(task_digest);
    out.extend_from_slice(&(params.len() as u64).to_le_bytes());
    let moments: [&[f32]; 2] = match inner {
        Some(inner) => {
            out.extend_from_slice(&inner.steps.to_le_bytes());
            [&inner.first, &inner.second]
        }
        None => [&[], &[]],
    };
    for v in [params, moments[0], moments[1]] {
        out.extend(v.iter().flat_map(|x| x.to_le_bytes()));
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

    #[test]
    fn an_inner_state_round_trips_under_the_digest_and_bad_moments_are_refused() {
        let task = [7u8; 32];
        let inner = InnerState {
            steps: 30,
            first: vec![0.5, -0.25, 0.0],
            second: vec![1e-4, 0.0, 2.0],
        };
        let ck = Checkpoint::with_inner(task, vec![1.0, -2.5, 3.25], Some(inner.clone()));
        let bytes = ck.to_bytes();
        assert_eq!(bytes.len(), ck.encoded_len());
        let back = Checkpoint::from_bytes(&bytes, &task, 3, Some(&ck.digest)).unwrap();
        assert_eq!(back, ck);
        assert_eq!(back.inner.as_deref(), Some(&inner));
        // The state is part of the checkpoint's name: the same parameters without it, or with
        // other moments, are another checkpoint.
        assert_ne!(
            ck.digest,
            Checkpoint::new(task, vec![1.0, -2.5, 3.25]).digest
        );
        let mut steps = inner.clone();
        steps.steps = 31;
        let other = Checkpoint::with_inner(task, vec![1.0, -2.5, 3.25], Some(steps));
        assert_ne!(ck.digest, other.digest);
        assert!(matches!(
            Checkpoint::from_bytes(&bytes[..bytes.len() - 4], &task, 3, None),
            Err(CheckpointError::WrongLength { .. })
        ));
        for bad in [-1e-6, f32::NAN, f32::INFINITY] {
            let mut second = inner.clone();
            second.second[1] = bad;
            let ck = Checkpoint::with_inner(task, vec![1.0, -2.5, 3.25], Some(second));
            let refused = Checkpoint::from_bytes(&ck.to_bytes(), &task, 3, Some(&ck.digest));
            assert!(
                matches!(refused, Err(CheckpointError::BadMoment { index: 1, .. })),
                "{refused:?}"
            );
        }
        let mut first = inner;
        first.first[2] = f32::NAN;
        let ck = Checkpoint::with_inner(task, vec![1.0, -2.5, 3.25], Some(first));
        assert!(matches!(
            Checkpoint::from_bytes(&ck.to_bytes(), &task, 3, None),
            Err(CheckpointError::NonFinite { index: 5, .. })
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
