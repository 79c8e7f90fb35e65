//! Fetching the global checkpoint from validators: ask for the latest digest, download it by digest
//! if it differs from ours, verify and load.

use super::{Miner, MinerError};
use chain_client::Chain;
use subnet_proto::checkpoints::CheckpointClient;
use task::Checkpoint;

impl<C: Chain> Miner<C> {
    /// Brings the checkpoint up to the newest one served by the highest-stake validator that answers.
    /// Returns the window the checkpoint belongs to.
    pub async fn sync_checkpoint(&self) -> Result<u64, MinerError> {
        let metagraph = self.chain().metagraph(self.netuid()).await?;
        let validators = metagraph.validators_by_stake();
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
        let rpc = |e: String| MinerError::NoValidator(e);
        let mut client = CheckpointClient::connect(addr, self.keypair(), *validator_hotkey)
            .await
            .map_err(rpc)?;
        let latest = client.latest().await.map_err(rpc)?;
        let digest = task::Digest(subnet_proto::bytes32("digest", &latest.digest).map_err(rpc)?);
        if self.checkpoint().is_some_and(|c| c.digest == digest) {
            return Ok(latest.window);
        }
        let bytes = client.download(&digest.0, latest.len).await.map_err(rpc)?;
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
