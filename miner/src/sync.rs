//! Fetching the global checkpoint from validators: ask for the latest digest, download it by digest
//! if it differs from ours, verify and load.

use crate::{Miner, MinerError};
use chain_client::Chain;
use subnet_proto::{auth, limits, pb};
use task::Checkpoint;
use tonic::transport::Endpoint;

impl<C: Chain> Miner<C> {
    /// Brings the checkpoint up to the newest one served by the highest-stake validator that answers.
    /// Returns the window the checkpoint belongs to.
    pub async fn sync_checkpoint(&self) -> Result<u64, MinerError> {
        let metagraph = self.chain().metagraph(self.netuid()).await?;
        let mut validators: Vec<_> = metagraph
            .neurons
            .iter()
            .filter(|n| n.validator_permit && n.axon.is_some())
            .collect();
        validators.sort_by(|a, b| b.stake.cmp(&a.stake).then(a.uid.cmp(&b.uid)));
        let mut failures = Vec::new();
        for validator in validators {
            let addr = validator.axon.expect("filtered on axon");
            match self.sync_from(addr, &validator.hotkey.0).await {
                Ok(window) => return Ok(window),
                Err(e) => {
                    tracing::warn!(validator = validator.uid, %addr, error = %e, "checkpoint sync failed");
                    failures.push(format!("uid {} at {addr}: {e}", validator.uid));
                }
            }
        }
        Err(MinerError::NoValidator(if failures.is_empty() {
            "no uid with a validator permit has served an axon".into()
        } else {
            failures.join("; ")
        }))
    }

    async fn sync_from(
        &self,
        addr: std::net::SocketAddr,
        validator_hotkey: &[u8; 32],
    ) -> Result<u64, MinerError> {
        let rpc = |e: &dyn std::fmt::Display| MinerError::NoValidator(e.to_string());
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| rpc(&e))?
            .timeout(limits::REQUEST_TIMEOUT)
            .connect()
            .await
            .map_err(|e| rpc(&e))?;
        let mut client = pb::validator_client::ValidatorClient::new(channel)
            .max_decoding_message_size(limits::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(limits::MAX_MESSAGE_BYTES);
        let request = auth::sign(
            pb::LatestCheckpointRequest { auth: None },
            self.keypair(),
            validator_hotkey,
        );
        let latest = client
            .latest_checkpoint(request)
            .await
            .map_err(|e| rpc(&e.message()))?
            .into_inner();
        let digest: [u8; 32] =
            subnet_proto::bytes32("digest", &latest.digest).map_err(|e| rpc(&e))?;
        if self.checkpoint().is_some_and(|c| c.digest == digest) {
            return Ok(latest.window);
        }
        if latest.len as usize > limits::MAX_CHECKPOINT_BYTES {
            return Err(rpc(&format!(
                "checkpoint of {} bytes exceeds the limit",
                latest.len
            )));
        }
        let request = auth::sign(
            pb::CheckpointRequest {
                auth: None,
                digest: digest.to_vec(),
            },
            self.keypair(),
            validator_hotkey,
        );
        let mut stream = client
            .get_checkpoint(request)
            .await
            .map_err(|e| rpc(&e.message()))?
            .into_inner();
        let mut bytes = Vec::with_capacity(latest.len as usize);
        while let Some(chunk) = stream.message().await.map_err(|e| rpc(&e.message()))? {
            if bytes.len() + chunk.data.len() > latest.len as usize {
                return Err(rpc(&"validator sent more bytes than it announced"));
            }
            bytes.extend_from_slice(&chunk.data);
        }
        let engine = self.engine();
        let checkpoint =
            Checkpoint::from_bytes(&bytes, &engine.digest(), engine.num_params(), Some(&digest))
                .map_err(|source| MinerError::Checkpoint {
                    validator: addr.to_string(),
                    source,
                })?;
        tracing::info!(window = latest.window, checkpoint = %checkpoint.short_digest(), "synced checkpoint");
        self.set_checkpoint(checkpoint);
        Ok(latest.window)
    }
}
