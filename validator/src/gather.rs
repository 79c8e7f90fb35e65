//! Gathering a window's work from the miners: their signed commitments while the window is open, and
//! after it has closed the artefacts those commitments name. Every check that needs no evaluation
//! happens here, before anything is decoded: the signature and claims of the commitment, that a
//! streamed artefact comes under the very commitment collected before the close, its exact length
//! while streaming, its digest, and the task's one gradient layout.

use crate::store::DataDir;
use crate::window::{Blob, Incoming};
use chain_client::Neuron;
use pseudo_gradient::Sparse;
use pseudo_gradient::codec::{self, CodecError, Layout};
use scoring::{Reason, ReasonKind};
use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use subnet_proto::commitment::{self, CommitmentError, Expected, SignedCommitment};
use subnet_proto::{auth, limits, pb};
use subxt_signer::sr25519::Keypair;
use task::TaskEngine;

/// Why a miner's gradient earned nothing this window.
#[derive(Clone, Debug, PartialEq)]
pub enum Rejection {
    NoAxon,
    Unreachable(String),
    Refused {
        code: tonic::Code,
        message: String,
    },
    /// No commitment was collected from the miner before the window closed.
    NotCommitted,
    /// The artefact came under another commitment than the one collected before the close.
    OtherCommitment,
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
    /// The validator could neither keep nor hold what the miner sent (its own fault: the miner is
    /// asked again).
    NotKept(String),
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::NoAxon => write!(f, "no axon served on chain"),
            Rejection::Unreachable(e) => write!(f, "unreachable: {e}"),
            Rejection::Refused { code, message } => write!(f, "refused ({code:?}): {message}"),
            Rejection::NotCommitted => {
                write!(f, "no commitment collected before the window closed")
            }
            Rejection::OtherCommitment => write!(
                f,
                "served under another commitment than the one collected before the window closed"
            ),
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
            Rejection::NotKept(e) => {
                write!(f, "the validator could not keep what it was sent: {e}")
            }
        }
    }
}

impl Rejection {
    /// The rejection as a refusal reason in a window's evidence.
    pub fn reason(&self) -> Reason {
        let kind = match self {
            Rejection::NoAxon => ReasonKind::NoAxon,
            Rejection::Unreachable(_) => ReasonKind::Unreachable,
            Rejection::Refused { .. } => ReasonKind::RefusedByMiner,
            Rejection::NotCommitted => ReasonKind::NotCommitted,
            Rejection::OtherCommitment => ReasonKind::OtherCommitment,
            Rejection::NoCommitment => ReasonKind::NoCommitment,
            Rejection::Commitment(_) => ReasonKind::BadCommitment,
            Rejection::Oversized { .. } => ReasonKind::Oversized,
            Rejection::Codec(_) => ReasonKind::Malformed,
            Rejection::NonFinite { .. } => ReasonKind::NonFinite,
            Rejection::Timeout { .. } => ReasonKind::Timeout,
            Rejection::NonFiniteLoss => ReasonKind::NonFiniteLoss,
            Rejection::NotKept(_) => ReasonKind::Unreachable,
        };
        Reason::new(kind, self.to_string())
    }
}

/// Signed requests from one validator to the miners of its task.
pub(crate) struct Gatherer<'a> {
    pub keypair: &'a Keypair,
    pub engine: &'a TaskEngine,
    pub deadline: Duration,
    /// Bytes of artefacts streamed from miners so far, all windows together.
    pub fetched: &'a AtomicU64,
}

impl Gatherer<'_> {
    fn layout(&self) -> Layout {
        let c = &self.engine.spec().compression;
        c.layout()
    }

    async fn client(
        &self,
        neuron: &Neuron,
    ) -> Result<pb::miner_client::MinerClient<tonic::transport::Channel>, Rejection> {
        let addr = neuron.axon.ok_or(Rejection::NoAxon)?;
        let channel = subnet_proto::tls::endpoint(&addr.to_string())
            .map_err(|e| Rejection::Unreachable(e.to_string()))?
            .timeout(limits::REQUEST_TIMEOUT)
            .connect()
            .await
            .map_err(|e| Rejection::Unreachable(e.to_string()))?;
        Ok(pb::miner_client::MinerClient::new(channel)
            .max_decoding_message_size(limits::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(limits::MAX_MESSAGE_BYTES))
    }

    /// Everything about a commitment that holds whatever the checkpoint: signed by the miner's
    /// hotkey, for this window and task, committing to exactly the task's payload length.
    pub(crate) fn verify(
        &self,
        c: &pb::Commitment,
        neuron: &Neuron,
        window: u64,
        checkpoint: &[u8; 32],
    ) -> Result<(), CommitmentError> {
        // The payload encodes the miner's parameter group, which the window seed picks among the
        // groups that fit its declared capacity: any of their lengths is accepted here, and the
        // exact one once the window is scored (`Gatherer::group_of`).
        let lengths: Vec<u64> = self
            .engine
            .groups()
            .groups()
            .iter()
            .filter(|g| c.group_capacity == 0 || g.len() as u64 <= c.group_capacity)
            .map(|g| self.layout().payload_len(g.len()) as u64)
            .collect();
        let payload_len = if lengths.contains(&c.payload_len) {
            c.payload_len
        } else {
            *lengths.first().ok_or(CommitmentError::NoGroupFits {
                capacity: c.group_capacity,
            })?
        };
        commitment::verify_commitment(
            c,
            &Expected {
                hotkey: &neuron.hotkey.0,
                window,
                task_digest: &self.engine.digest(),
                checkpoint_digest: checkpoint,
                payload_len,
                segments: self.engine.spec().training.segments().len(),
            },
        )
    }

    /// The parameter group `uid` trained in the window with `window_seed` under commitment `c`,
    /// with the payload length the task's layout gives it exactly.
    pub fn group_of(
        &self,
        window_seed: u64,
        uid: u16,
        c: &SignedCommitment,
    ) -> Result<task::groups::ParamGroup, Rejection> {
        let c = &c.claims;
        let group = self
            .engine
            .group(window_seed, uid, c.group_capacity)
            .map_err(|_| {
                Rejection::Commitment(CommitmentError::NoGroupFits {
                    capacity: c.group_capacity,
                })
            })?;
        let expected = self.layout().payload_len(group.len()) as u64;
        if c.payload_len != expected {
            return Err(Rejection::Commitment(CommitmentError::PayloadLength {
                len: c.payload_len,
                expected,
            }));
        }
        Ok(group.clone())
    }

    /// A miner's commitment for `window`, checked (its checkpoint is checked once the window is
    /// scored, against the checkpoint the window started from).
    pub async fn commitment(
        &self,
        neuron: &Neuron,
        window: u64,
    ) -> Result<SignedCommitment, Rejection> {
        let fetch = async {
            let mut client = self.client(neuron).await?;
            let request = auth::sign(
                pb::CommitmentRequest {
                    auth: None,
                    window,
                    task_digest: self.engine.digest().to_vec(),
                },
                self.keypair,
                &neuron.hotkey.0,
            );
            let c = client
                .get_commitment(request)
                .await
                .map_err(refused)?
                .into_inner();
            let claimed: [u8; 32] = c.checkpoint_digest.as_slice().try_into().map_err(|_| {
                Rejection::Commitment(CommitmentError::WrongCheckpoint {
                    expected: "32 bytes".into(),
                    found: hex::encode(&c.checkpoint_digest),
                })
            })?;
            self.verify(&c, neuron, window, &claimed)
                .map_err(Rejection::Commitment)?;
            SignedCommitment::from_wire(&c).map_err(Rejection::Commitment)
        };
        self.within_deadline(fetch).await
    }

    /// One artefact of `window` that `collected` (the commitment collected before the close) names:
    /// streamed under a commitment with the same claims, exactly as long as the task's form of it,
    /// and matching its committed digest; held in memory (a payload, a few per cent of the model).
    pub async fn part(
        &self,
        neuron: &Neuron,
        window: u64,
        part: pb::GradientPart,
        collected: &SignedCommitment,
    ) -> Result<Vec<u8>, Rejection> {
        let incoming = self
            .part_into(neuron, (window, part), collected, Incoming::new(None))
            .await?;
        Ok(incoming
            .into_held()
            .expect("an artefact with no data directory is held"))
    }

    /// An audited artefact (see `part`), written to `store` as it arrives where there is one: a
    /// window's audits hold a chunk of each in memory, not the artefacts.
    pub async fn kept_part(
        &self,
        neuron: &Neuron,
        (window, part): (u64, pb::GradientPart),
        collected: &SignedCommitment,
        store: Option<&DataDir>,
    ) -> Result<Blob, Rejection> {
        let incoming = self
            .part_into(neuron, (window, part), collected, Incoming::new(store))
            .await?;
        finish(incoming).await
    }

    async fn part_into(
        &self,
        neuron: &Neuron,
        (window, part): (u64, pb::GradientPart),
        collected: &SignedCommitment,
        sink: Incoming,
    ) -> Result<Incoming, Rejection> {
        let (n, claims) = (self.engine.num_params(), &collected.claims);
        let dense_len = Layout::DenseF32.payload_len(n) as u64;
        let (limit, digest) = match part {
            pb::GradientPart::Payload => (claims.payload_len, claims.payload_digest),
            pb::GradientPart::Dense => (dense_len, claims.dense_digest),
            pb::GradientPart::Residual => (dense_len, claims.residual_in_digest),
            pb::GradientPart::Segment => return Err(Rejection::NoCommitment),
        };
        self.stream(neuron, (window, part, 0), collected, (limit, digest), sink)
            .await
    }

    /// The training state at the end of segment `segment` of `window`, over the parameters
    /// `range` the miner trained, as `collected` names it (see `kept_part`).
    pub async fn segment_state(
        &self,
        neuron: &Neuron,
        (window, segment): (u64, usize),
        range: &Range<usize>,
        collected: &SignedCommitment,
        store: Option<&DataDir>,
    ) -> Result<Blob, Rejection> {
        let steps = self.engine.spec().training.segments();
        let (Some(at), Some(digest)) = (steps.get(segment), collected.claims.segments.get(segment))
        else {
            return Err(Rejection::NoCommitment);
        };
        let limit = task::segment::TrainState::encoded_len(at.end, range.len()) as u64;
        let part = (window, pb::GradientPart::Segment, segment as u32);
        let sink = Incoming::new(store);
        let incoming = self
            .stream(neuron, part, collected, (limit, *digest), sink)
            .await?;
        finish(incoming).await
    }

    /// Streams one artefact into `sink` chunk by chunk: its first chunk must be a commitment with
    /// `collected`'s claims, the rest exactly `limit` bytes whose digest is `digest`.
    async fn stream(
        &self,
        neuron: &Neuron,
        (window, part, segment): (u64, pb::GradientPart, u32),
        collected: &SignedCommitment,
        (limit, digest): (u64, [u8; 32]),
        mut sink: Incoming,
    ) -> Result<Incoming, Rejection> {
        let fetch = async {
            let mut client = self.client(neuron).await?;
            let request = auth::sign(
                pb::GradientRequest {
                    auth: None,
                    window,
                    task_digest: self.engine.digest().to_vec(),
                    part: part as i32,
                    segment,
                },
                self.keypair,
                &neuron.hotkey.0,
            );
            let mut stream = client
                .get_gradient(request)
                .await
                .map_err(refused)?
                .into_inner();
            let Some(pb::GradientChunk {
                part: Some(pb::gradient_chunk::Part::Commitment(c)),
            }) = stream.message().await.map_err(refused)?
            else {
                return Err(Rejection::NoCommitment);
            };
            if !SignedCommitment::from_wire(&c).is_ok_and(|c| c.same_claims(collected)) {
                return Err(Rejection::OtherCommitment);
            }
            while let Some(chunk) = stream.message().await.map_err(refused)? {
                let Some(pb::gradient_chunk::Part::Data(data)) = chunk.part else {
                    return Err(Rejection::NoCommitment);
                };
                if sink.len() + data.len() as u64 > limit {
                    return Err(Rejection::Oversized { limit });
                }
                sink.push(&data)
                    .map_err(|e| Rejection::NotKept(e.to_string()))?;
                self.fetched.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
            let found = sink.digest();
            if sink.len() != limit || found != digest {
                return Err(Rejection::Commitment(CommitmentError::DigestMismatch {
                    expected: hex::encode(digest),
                    found: hex::encode(found),
                }));
            }
            Ok(sink)
        };
        self.within_deadline(fetch).await
    }

    /// Decodes a payload of the parameters `range` in the task's layout, refuses non-finite values,
    /// and places it in a whole-model vector (zero outside `range`).
    pub fn decode(&self, payload: &[u8], range: &Range<usize>) -> Result<Sparse, Rejection> {
        let values =
            codec::decode_as(payload, range.len(), self.layout()).map_err(Rejection::Codec)?;
        let non_finite = values.iter().filter(|v| !v.is_finite()).count();
        if non_finite > 0 {
            return Err(Rejection::NonFinite { count: non_finite });
        }
        Ok(Sparse::scattered(
            &values,
            self.engine.num_params(),
            range.start,
        ))
    }

    async fn within_deadline<T>(
        &self,
        fetch: impl Future<Output = Result<T, Rejection>>,
    ) -> Result<T, Rejection> {
        tokio::time::timeout(self.deadline, fetch)
            .await
            .unwrap_or(Err(Rejection::Timeout {
                seconds: self.deadline.as_secs(),
            }))
    }
}

/// A streamed artefact, complete: synced to disk on a blocking thread, so that the other streams
/// of the window's audits go on arriving meanwhile.
async fn finish(incoming: Incoming) -> Result<Blob, Rejection> {
    tokio::task::spawn_blocking(move || incoming.finish())
        .await
        .map_err(|e| Rejection::NotKept(e.to_string()))?
        .map_err(|e| Rejection::NotKept(e.to_string()))
}

fn refused(s: tonic::Status) -> Rejection {
    Rejection::Refused {
        code: s.code(),
        message: s.message().to_string(),
    }
}
