//! The validator's gRPC service: the latest global checkpoint and checkpoints by digest, for hotkeys
//! registered on the subnet.

use crate::Validator;
use bytes::Bytes;
use chain_client::membership::MetagraphCache;
use chain_client::{AccountId, Chain};
use futures::Stream;
use std::pin::Pin;
use std::sync::Arc;
use subnet_proto::auth::{self, NonceCache};
use subnet_proto::{limits, pb, server, stream};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

pub struct ValidatorService<C> {
    validator: Validator<C>,
    members: MetagraphCache<C>,
    nonces: NonceCache,
    /// Miners poll for the next checkpoint: a generous per-caller budget.
    limiter: limits::RateLimiter,
    connections: Arc<server::ConnectionLimits>,
    /// The last checkpoint served, encoded once: every download streams slices of it.
    encoded: std::sync::Mutex<Option<(task::Digest, Bytes)>>,
}

impl<C: Chain> ValidatorService<C> {
    pub fn new(validator: Validator<C>) -> Self {
        Self {
            members: MetagraphCache::new(validator.chain().clone(), validator.netuid()),
            validator,
            nonces: NonceCache::default(),
            limiter: limits::RateLimiter::new(100, std::time::Duration::from_secs(10)),
            connections: server::ConnectionLimits::remote(server::MAX_CONNECTIONS_PER_ADDRESS),
            encoded: Default::default(),
        }
    }

    /// The encoding of `checkpoint`, made once while it is the one being downloaded.
    fn encoded(&self, checkpoint: &task::Checkpoint) -> Bytes {
        let mut memo = self.encoded.lock().expect("checkpoint memo lock");
        match &*memo {
            Some((digest, bytes)) if *digest == checkpoint.digest => bytes.clone(),
            _ => {
                let bytes = Bytes::from(checkpoint.to_bytes());
                *memo = Some((checkpoint.digest, bytes.clone()));
                bytes
            }
        }
    }

    /// Limits every address to `limit` open connections, loopback ones included (by default
    /// `server::MAX_CONNECTIONS_PER_ADDRESS` for every address but loopback).
    pub fn with_connections_per_address(mut self, limit: usize) -> Self {
        self.connections = server::ConnectionLimits::new(limit);
        self
    }

    pub fn connections(&self) -> Arc<server::ConnectionLimits> {
        self.connections.clone()
    }

    /// Serves on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), tonic::transport::Error> {
        let connections = self.connections.clone();
        let service = pb::validator_server::ValidatorServer::new(self)
            .max_decoding_message_size(limits::MAX_REQUEST_BYTES)
            .max_encoding_message_size(limits::MAX_MESSAGE_BYTES);
        server::serve(service, listener, connections, shutdown).await
    }

    /// Checks the signature, that the caller is registered on the subnet, its nonce and its rate
    /// limit, in that order: a caller that does not belong leaves no state behind, and the
    /// metagraph is read at most once per block whoever asks.
    async fn authenticate<M: auth::Authenticated>(&self, request: &M) -> Result<AccountId, Status> {
        let signed = auth::verify_signature(request, &self.validator.hotkey().0)
            .map_err(|e| e.to_status())?;
        let caller = AccountId(signed.hotkey);
        let metagraph = self
            .members
            .for_caller(&caller)
            .await
            .map_err(|e| Status::unavailable(format!("cannot read the metagraph: {e}")))?;
        if metagraph.by_hotkey(&caller).is_none() {
            return Err(Status::permission_denied(format!(
                "hotkey {caller} is not registered on subnet {}",
                self.validator.netuid()
            )));
        }
        signed.fresh(&self.nonces).map_err(|e| e.to_status())?;
        self.limiter.admit(&caller.0)?;
        Ok(caller)
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::CheckpointChunk, Status>> + Send>>;

#[tonic::async_trait]
impl<C: Chain> pb::validator_server::Validator for ValidatorService<C> {
    async fn latest_checkpoint(
        &self,
        request: Request<pb::LatestCheckpointRequest>,
    ) -> Result<Response<pb::LatestCheckpointResponse>, Status> {
        self.authenticate(request.get_ref()).await?;
        let (checkpoint, window) = self.validator.checkpoint();
        let recipe = self.validator.recipe();
        let announcement = pb::LatestCheckpointResponse {
            digest: checkpoint.digest.0.to_vec(),
            window,
            len: checkpoint.encoded_len() as u64,
            previous_digest: recipe
                .as_ref()
                .map(|r| r.previous.0.to_vec())
                .unwrap_or_default(),
            aggregated: recipe
                .as_ref()
                .map(|r| {
                    r.aggregated
                        .iter()
                        .zip(r.caps())
                        .map(|((uid, c), clip_norm)| pb::AggregatedGradient {
                            uid: *uid as u32,
                            commitment: Some(c.to_wire()),
                            clip_norm,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            clip_norm: recipe.as_ref().map_or(0.0, |r| r.clip_norm),
            step_scale: recipe.as_ref().map_or(0.0, |r| r.scale),
            signature: Vec::new(),
        };
        Ok(Response::new(subnet_proto::checkpoints::sign_announcement(
            announcement,
            self.validator.keypair(),
        )))
    }

    type GetCheckpointStream = ChunkStream;

    async fn get_checkpoint(
        &self,
        request: Request<pb::CheckpointRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let request = request.into_inner();
        self.authenticate(&request).await?;
        let checkpoint = self
            .validator
            .checkpoint_by_digest(&request.digest)
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no checkpoint with digest {}",
                    hex::encode(&request.digest)
                ))
            })?;
        let bytes = self.encoded(&checkpoint);
        let chunks = tokio_stream::iter(
            stream::slices(bytes, limits::CHUNK_BYTES).map(|data| Ok(pb::CheckpointChunk { data })),
        );
        Ok(Response::new(Box::pin(stream::Deadline::new(
            chunks,
            stream::STREAM_DEADLINE,
        ))))
    }
}
