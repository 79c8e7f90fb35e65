//! Fetching one miner's gradient: connect, send a signed request, check the commitment before reading
//! the payload, enforce the size limit while streaming, verify the digest, decode and check values.

use crate::{Fetched, Validator};
use chain_client::{Chain, Neuron};
use std::fmt;
use subnet_proto::codec::{self, CodecError};
use subnet_proto::commitment::{self, CommitmentError, Expected};
use subnet_proto::{auth, limits, pb};
use tonic::transport::Endpoint;

/// Why a miner's gradient earned nothing this window.
#[derive(Clone, Debug, PartialEq)]
pub enum Rejection {
    NoAxon,
    Unreachable(String),
    Refused {
        code: tonic::Code,
        message: String,
    },
    NoCommitment,
    Commitment(CommitmentError),
    Oversized {
        limit: u64,
    },
    Codec(CodecError),
    NonFinite {
        count: usize,
    },
    Timeout {
        seconds: u64,
    },
    /// Applying the gradient made a held-out loss NaN or infinite.
    NonFiniteLoss,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::NoAxon => write!(f, "no axon served on chain"),
            Rejection::Unreachable(e) => write!(f, "unreachable: {e}"),
            Rejection::Refused { code, message } => write!(f, "refused ({code:?}): {message}"),
            Rejection::NoCommitment => write!(f, "stream did not start with a commitment"),
            Rejection::Commitment(e) => write!(f, "{e}"),
            Rejection::Oversized { limit } => write!(
                f,
                "sent more than its committed length (limit {limit} bytes)"
            ),
            Rejection::Codec(e) => write!(f, "malformed gradient: {e}"),
            Rejection::NonFinite { count } => {
                write!(f, "{count} non-finite values (NaN or infinity)")
            }
            Rejection::Timeout { seconds } => write!(f, "no complete gradient within {seconds} s"),
            Rejection::NonFiniteLoss => write!(f, "applying it makes the held-out loss non-finite"),
        }
    }
}

impl<C: Chain> Validator<C> {
    /// Fetches a miner's compressed gradient for `window` or, with `dense`, the dense
    /// pseudo-gradient it says it compressed it from (for a spot check).
    pub(crate) async fn fetch_gradient(
        &self,
        neuron: &Neuron,
        window: u64,
        checkpoint_digest: &[u8; 32],
        dense: bool,
    ) -> Result<Fetched, Rejection> {
        let addr = neuron.axon.ok_or(Rejection::NoAxon)?;
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Rejection::Unreachable(e.to_string()))?
            .timeout(limits::REQUEST_TIMEOUT)
            .connect()
            .await
            .map_err(|e| Rejection::Unreachable(e.to_string()))?;
        let mut client = pb::miner_client::MinerClient::new(channel)
            .max_decoding_message_size(limits::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(limits::MAX_MESSAGE_BYTES);
        let task_digest = self.engine().digest();
        let request = auth::sign(
            pb::GradientRequest {
                auth: None,
                window,
                task_digest: task_digest.to_vec(),
                dense,
            },
            self.keypair(),
            &neuron.hotkey.0,
        );
        let refused = |s: tonic::Status| Rejection::Refused {
            code: s.code(),
            message: s.message().to_string(),
        };
        let mut stream = client
            .get_gradient(request)
            .await
            .map_err(refused)?
            .into_inner();
        let first = stream.message().await.map_err(refused)?;
        let Some(pb::GradientChunk {
            part: Some(pb::gradient_chunk::Part::Commitment(commitment)),
        }) = first
        else {
            return Err(Rejection::NoCommitment);
        };
        let expected_len = self.engine().num_params();
        let max_len = (16 + 4 * expected_len).min(limits::MAX_GRADIENT_BYTES) as u64;
        commitment::verify_commitment(
            &commitment,
            &Expected {
                hotkey: &neuron.hotkey.0,
                window,
                task_digest: &task_digest,
                checkpoint_digest,
                max_len,
            },
        )
        .map_err(Rejection::Commitment)?;
        let limit = if dense {
            codec::encode_dense(&[]).len() as u64 + 4 * expected_len as u64
        } else {
            commitment.payload_len
        };
        let mut payload = Vec::with_capacity(limit as usize);
        while let Some(chunk) = stream.message().await.map_err(refused)? {
            let Some(pb::gradient_chunk::Part::Data(data)) = chunk.part else {
                return Err(Rejection::NoCommitment);
            };
            if (payload.len() + data.len()) as u64 > limit {
                return Err(Rejection::Oversized { limit });
            }
            payload.extend_from_slice(&data);
        }
        if dense {
            let found = subnet_proto::digest(&payload);
            if commitment.dense_digest.as_slice() != found {
                return Err(Rejection::Commitment(CommitmentError::DigestMismatch {
                    expected: hex::encode(&commitment.dense_digest),
                    found: hex::encode(found),
                }));
            }
        } else {
            commitment::verify_payload(&commitment, &payload).map_err(Rejection::Commitment)?;
        }
        let values = codec::decode(&payload, expected_len).map_err(Rejection::Codec)?;
        let non_finite = values.iter().filter(|v| !v.is_finite()).count();
        if non_finite > 0 {
            return Err(Rejection::NonFinite { count: non_finite });
        }
        Ok(Fetched {
            commitment,
            payload,
            values,
        })
    }
}
