//! The miner's gRPC service: `Info`, `GetCommitment` and `GetGradient`, served only to signed
//! requests from hotkeys that the metagraph shows with a validator permit. A window's commitment is
//! served as soon as it is signed; its payload, dense gradient and residual only once the window has
//! closed on chain, so that no one can build on another miner's work of the same window.

use crate::Miner;
use chain_client::{AccountId, Chain};
use futures::Stream;
use std::pin::Pin;
use subnet_proto::auth::{self, NonceCache};
use subnet_proto::{limits, pb};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

/// The gRPC face of a miner.
pub struct MinerService<C> {
    miner: Miner<C>,
    nonces: NonceCache,
    limiter: limits::RateLimiter,
}

impl<C: Chain> MinerService<C> {
    pub fn new(miner: Miner<C>) -> Self {
        Self {
            miner,
            nonces: NonceCache::default(),
            limiter: limits::RateLimiter::default(),
        }
    }

    /// Serves on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), tonic::transport::Error> {
        let server = pb::miner_server::MinerServer::new(self)
            .max_decoding_message_size(limits::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(limits::MAX_MESSAGE_BYTES);
        tonic::transport::Server::builder()
            .timeout(limits::REQUEST_TIMEOUT)
            .concurrency_limit_per_connection(16)
            .add_service(server)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
            .await
    }

    /// Checks the signature, then the caller's rate limit.
    fn authenticate<M: auth::Authenticated>(&self, request: &M) -> Result<AccountId, Status> {
        let receiver = self.miner.hotkey().0;
        let caller = auth::verify(request, &receiver, &self.nonces)
            .map(AccountId)
            .map_err(|e| {
                self.reject(match e {
                    auth::AuthError::Missing | auth::AuthError::BadSignature(_) => "bad_signature",
                    auth::AuthError::Malformed(_) => "malformed",
                    auth::AuthError::Stale { .. } => "stale",
                    auth::AuthError::Replay { .. } => "replayed_nonce",
                });
                e.to_status()
            })?;
        self.limiter
            .admit(&caller.0)
            .inspect_err(|_| self.reject("rate_limited"))?;
        Ok(caller)
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
    async fn require_validator(&self, caller: &AccountId) -> Result<(), Status> {
        let metagraph = self
            .miner
            .chain()
            .metagraph(self.miner.netuid())
            .await
            .map_err(|e| Status::unavailable(format!("cannot read the metagraph: {e}")))?;
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
        self.authenticate(request.get_ref())?;
        let checkpoint = self.miner.checkpoint();
        Ok(Response::new(pb::InfoResponse {
            hotkey: self.miner.hotkey().0.to_vec(),
            task_digest: self.miner.engine().digest().to_vec(),
            checkpoint_digest: checkpoint.map(|c| c.digest.to_vec()).unwrap_or_default(),
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
        let caller = self.authenticate(&request)?;
        self.check_task(&request.task_digest)?;
        self.require_validator(&caller).await?;
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
        let caller = self.authenticate(&request)?;
        self.check_task(&request.task_digest)?;
        self.require_validator(&caller).await?;
        let part = pb::GradientPart::try_from(request.part).map_err(|_| {
            self.reject("malformed");
            Status::invalid_argument(format!("unknown gradient part {}", request.part))
        })?;
        let gradient = self.window_gradient(request.window)?;
        let close = self
            .miner
            .engine()
            .spec()
            .window
            .close_block(request.window);
        let now = self
            .miner
            .chain()
            .current_block()
            .await
            .map_err(|e| Status::unavailable(format!("cannot read the chain: {e}")))?;
        if now < close {
            self.reject("window_open");
            return Err(Status::failed_precondition(format!(
                "window {} closes at block {close} (now {now}): its gradient is served once it has closed",
                request.window
            )));
        }
        let bytes = gradient.part(part).clone();
        let mut chunks = vec![Ok(pb::GradientChunk {
            part: Some(pb::gradient_chunk::Part::Commitment(
                gradient.commitment.clone(),
            )),
        })];
        chunks.extend(bytes.chunks(limits::CHUNK_BYTES).map(|c| {
            Ok(pb::GradientChunk {
                part: Some(pb::gradient_chunk::Part::Data(c.to_vec())),
            })
        }));
        tracing::debug!(caller = %caller.short(), bytes = bytes.len(), ?part, "serving gradient");
        self.miner.metrics().gradient_served();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
}
