//! The miner's gRPC service: `Info`, `GetCommitment` and `GetGradient`, served only to signed
//! requests from hotkeys that the metagraph shows with a validator permit. A window's commitment is
//! served as soon as it is signed; its payload, dense gradient and residual only once the window has
//! closed on chain, so that no one can build on another miner's work of the same window.

use crate::Miner;
use crate::node::PartError;
use chain_client::membership::MetagraphCache;
use chain_client::{AccountId, Chain, Metagraph};
use futures::Stream;
use std::pin::Pin;
use std::sync::Arc;
use subnet_proto::auth::{self, NonceCache};
use subnet_proto::{limits, pb, server, stream};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

/// The gRPC face of a miner.
pub struct MinerService<C> {
    miner: Miner<C>,
    members: MetagraphCache<C>,
    nonces: NonceCache,
    limiter: limits::RateLimiter,
    connections: Arc<server::ConnectionLimits>,
}

impl<C: Chain> MinerService<C> {
    /// Refuses while `window` is open: its gradient is served once it has closed on chain.
    async fn require_closed(&self, window: u64) -> Result<(), Status> {
        let close = self.miner.engine().spec().window.close_block(window);
        let now = self
            .miner
            .chain()
            .current_block()
            .await
            .map_err(|e| Status::unavailable(format!("cannot read the chain: {e}")))?;
        if now < close {
            self.reject("window_open");
            return Err(Status::failed_precondition(format!(
                "window {window} closes at block {close} (now {now}): its gradient is served once it has closed"
            )));
        }
        Ok(())
    }

    pub fn new(miner: Miner<C>) -> Self {
        Self {
            members: MetagraphCache::new(miner.chain().clone(), miner.netuid()),
            miner,
            nonces: NonceCache::default(),
            limiter: limits::RateLimiter::default(),
            connections: server::ConnectionLimits::remote(server::MAX_CONNECTIONS_PER_ADDRESS),
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
        let service = pb::miner_server::MinerServer::new(self)
            .max_decoding_message_size(limits::MAX_REQUEST_BYTES)
            .max_encoding_message_size(limits::MAX_MESSAGE_BYTES);
        server::serve(service, listener, connections, shutdown).await
    }

    /// Checks the signature, that the caller is registered on the subnet, its nonce and its rate
    /// limit, in that order: a caller that does not belong leaves no state behind, and the
    /// metagraph is read at most once per block whoever asks.
    async fn authenticate<M: auth::Authenticated>(
        &self,
        request: &M,
    ) -> Result<(AccountId, Arc<Metagraph>), Status> {
        let receiver = self.miner.hotkey().0;
        let signed =
            auth::verify_signature(request, &receiver).map_err(|e| self.refuse_auth(&e))?;
        let caller = AccountId(signed.hotkey);
        let metagraph = self
            .members
            .for_caller(&caller)
            .await
            .map_err(|e| Status::unavailable(format!("cannot read the metagraph: {e}")))?;
        if metagraph.by_hotkey(&caller).is_none() {
            self.reject("unregistered");
            return Err(Status::permission_denied(format!(
                "hotkey {caller} is not registered on subnet {}",
                self.miner.netuid()
            )));
        }
        signed
            .fresh(&self.nonces)
            .map_err(|e| self.refuse_auth(&e))?;
        self.limiter
            .admit(&caller.0)
            .inspect_err(|_| self.reject("rate_limited"))?;
        Ok((caller, metagraph))
    }

    fn refuse_auth(&self, e: &auth::AuthError) -> Status {
        self.reject(match e {
            auth::AuthError::Missing | auth::AuthError::BadSignature(_) => "bad_signature",
            auth::AuthError::Malformed(_) => "malformed",
            auth::AuthError::Stale { .. } => "stale",
            auth::AuthError::Replay { .. } => "replayed_nonce",
        });
        e.to_status()
    }

    fn reject(&self, reason: &'static str) {
        self.miner.metrics().rejected(reason);
    }

    fn check_task(&self, task_digest: &[u8]) -> Result<(), Status> {
        let ours = self.miner.engine().digest();
        if task_digest == ours.as_slice() {
            return Ok(());
        }
        self.reject("other_task");
        Err(Status::failed_precondition(format!(
            "task digest {} differs from this miner's task {}: both sides must load the same task file",
            hex::encode(task_digest),
            hex::encode(ours)
        )))
    }

    fn window_gradient(
        &self,
        window: u64,
    ) -> Result<std::sync::Arc<crate::ServedGradient>, Status> {
        self.miner.gradient(window).ok_or_else(|| {
            self.reject("unknown_window");
            Status::not_found(format!(
                "no gradient for window {window} (latest: {})",
                self.miner
                    .latest_window()
                    .map(|w| w.to_string())
                    .unwrap_or_else(|| "none".into())
            ))
        })
    }

    /// Only hotkeys with a validator permit on this subnet may fetch gradients.
    fn require_validator(&self, caller: &AccountId, metagraph: &Metagraph) -> Result<(), Status> {
        let outcome = match metagraph.by_hotkey(caller) {
            None => Err(Status::permission_denied(format!(
                "hotkey {caller} is not registered on subnet {}",
                self.miner.netuid()
            ))),
            Some(n) if !n.validator_permit => Err(Status::permission_denied(format!(
                "uid {} ({caller}) has no validator permit on subnet {}",
                n.uid,
                self.miner.netuid()
            ))),
            Some(_) => Ok(()),
        };
        outcome.inspect_err(|_| self.reject("no_validator_permit"))
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::GradientChunk, Status>> + Send>>;

#[tonic::async_trait]
impl<C: Chain> pb::miner_server::Miner for MinerService<C> {
    async fn info(
        &self,
        request: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::InfoResponse>, Status> {
        self.authenticate(request.get_ref()).await?;
        let checkpoint = self.miner.checkpoint();
        Ok(Response::new(pb::InfoResponse {
            hotkey: self.miner.hotkey().0.to_vec(),
            task_digest: self.miner.engine().digest().to_vec(),
            checkpoint_digest: checkpoint.map(|c| c.digest.0.to_vec()).unwrap_or_default(),
            window: self.miner.latest_window().unwrap_or_default(),
            backend: format!("burn on {}", self.miner.device()),
            software_version: env!("CARGO_PKG_VERSION").into(),
        }))
    }

    #[tracing::instrument(skip_all, fields(window = request.get_ref().window))]
    async fn get_commitment(
        &self,
        request: Request<pb::CommitmentRequest>,
    ) -> Result<Response<pb::Commitment>, Status> {
        let request = request.into_inner();
        let (caller, metagraph) = self.authenticate(&request).await?;
        self.check_task(&request.task_digest)?;
        self.require_validator(&caller, &metagraph)?;
        let gradient = self.window_gradient(request.window)?;
        Ok(Response::new(gradient.commitment.clone()))
    }

    type GetGradientStream = ChunkStream;

    #[tracing::instrument(skip_all, fields(window = request.get_ref().window))]
    async fn get_gradient(
        &self,
        request: Request<pb::GradientRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let request = request.into_inner();
        let (caller, metagraph) = self.authenticate(&request).await?;
        self.check_task(&request.task_digest)?;
        self.require_validator(&caller, &metagraph)?;
        let part = pb::GradientPart::try_from(request.part).map_err(|_| {
            self.reject("malformed");
            Status::invalid_argument(format!("unknown gradient part {}", request.part))
        })?;
        let gradient = self.window_gradient(request.window)?;
        self.require_closed(request.window).await?;
        let part_bytes = gradient.part(part, request.segment).map_err(|e| match e {
            PartError::NoSegment { .. } => {
                self.reject("malformed");
                Status::invalid_argument(format!("window {}: {e}", request.window))
            }
            PartError::Unreadable(_) => {
                tracing::error!(window = request.window, segment = request.segment, error = %e, "cannot serve a committed segment state");
                Status::internal(format!("window {}: {e}", request.window))
            }
        })?;
        let bytes = stream::shared(part_bytes);
        tracing::debug!(caller = %caller.short(), bytes = bytes.len(), ?part, "serving gradient");
        let commitment = pb::GradientChunk {
            part: Some(pb::gradient_chunk::Part::Commitment(
                gradient.commitment.clone(),
            )),
        };
        let data = stream::slices(bytes, limits::CHUNK_BYTES).map(|data| pb::GradientChunk {
            part: Some(pb::gradient_chunk::Part::Data(data)),
        });
        if part != pb::GradientPart::Payload && self.miner.stalls(request.window) {
            // The commitment, then nothing until the stream's deadline.
            let stalled = tokio_stream::StreamExt::chain(
                tokio_stream::iter([Ok(commitment)]),
                tokio_stream::pending(),
            );
            return Ok(Response::new(Box::pin(stream::Deadline::new(
                stalled,
                stream::STREAM_DEADLINE,
            ))));
        }
        let chunks = tokio_stream::iter(std::iter::once(commitment).chain(data).map(Ok));
        self.miner.metrics().gradient_served();
        Ok(Response::new(Box::pin(stream::Deadline::new(
            chunks,
            stream::STREAM_DEADLINE,
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chain_client::{BlockClock, LocalChain, SubnetParams};
    use pb::miner_server::Miner as _;
    use task::{TaskEngine, TaskSpec};

    #[tokio::test]
    async fn strangers_leave_no_state_and_cost_no_chain_reads() {
        let dir = tempfile::tempdir().unwrap();
        let chain =
            LocalChain::open_or_create(dir.path().join("c.sqlite"), BlockClock::Manual, 1).unwrap();
        let key = |uri: &str| chain_client::keypair_from_uri(uri).unwrap();
        let (owner, miner_key, validator_key) =
            (key("//owner"), key("//miner"), key("//validator"));
        let params = SubnetParams {
            tempo: 10,
            ..SubnetParams::default()
        };
        let netuid = chain
            .create_subnet(AccountId::from(&owner), params)
            .unwrap();
        for k in [&miner_key, &validator_key] {
            chain.fund(AccountId::from(k), 1 << 50).unwrap();
            chain
                .burned_register(AccountId::from(k), netuid, AccountId::from(k))
                .unwrap();
        }
        let id = AccountId::from(&validator_key);
        chain.add_stake(id, id, netuid, 1 << 48).unwrap();
        chain.advance_blocks(10).unwrap();
        let engine = std::sync::Arc::new(TaskEngine::new(
            TaskSpec::from_toml_str(include_str!("../../tasks/localnet-lm.toml")).unwrap(),
        ));
        let miner = Miner::new(chain.clone(), netuid, miner_key.clone(), engine.clone());
        let service = MinerService::new(miner.clone());
        let receiver = miner_key.public_key().0;
        let request = |signer: &subxt_signer::sr25519::Keypair| {
            Request::new(auth::sign(
                pb::CommitmentRequest {
                    auth: None,
                    window: 1,
                    task_digest: engine.digest().to_vec(),
                },
                signer,
                &receiver,
            ))
        };

        let start = std::time::Instant::now();
        for i in 0..300 {
            let stranger = key(&format!("//stranger-{i}"));
            let refused = service
                .get_commitment(request(&stranger))
                .await
                .unwrap_err();
            assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
        }
        assert!(service.nonces.is_empty());
        assert_eq!(service.limiter.callers(), 0);
        // One read for the block, and at most one more per 250 ms that unknown callers ask.
        let bound = 2 + start.elapsed().as_millis() as u64 / 250;
        let reads = service.members.reads();
        assert!(reads <= bound, "{reads} reads, bound {bound}");
        assert!(
            miner
                .metrics()
                .render()
                .contains("miner_requests_rejected_total{reason=\"unregistered\"} 300")
        );

        // The validator gets through to the request itself (no gradient for the window yet).
        let answer = service
            .get_commitment(request(&validator_key))
            .await
            .unwrap_err();
        assert_eq!(answer.code(), tonic::Code::NotFound, "{answer:?}");
        assert_eq!(service.nonces.len(), 1);
        assert_eq!(service.limiter.callers(), 1);
        assert_eq!(service.members.reads(), reads);
    }
}
