//! Fetching a validator's global checkpoint: its latest announcement, then the bytes by digest,
//! streamed within the announced length. Miners sync with it; validators adopt the lead's
//! checkpoint with it.

use crate::{auth, bytes32, limits, pb};
use std::net::SocketAddr;
use subxt_signer::sr25519::Keypair;
use tonic::transport::{Channel, Endpoint};

/// A signed connection to one validator's checkpoint service.
pub struct CheckpointClient<'a> {
    client: pb::validator_client::ValidatorClient<Channel>,
    keypair: &'a Keypair,
    validator: [u8; 32],
}

impl<'a> CheckpointClient<'a> {
    pub async fn connect(
        addr: SocketAddr,
        keypair: &'a Keypair,
        validator: [u8; 32],
    ) -> Result<Self, String> {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .timeout(limits::REQUEST_TIMEOUT)
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        let client = pb::validator_client::ValidatorClient::new(channel)
            .max_decoding_message_size(limits::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(limits::MAX_MESSAGE_BYTES);
        Ok(Self {
            client,
            keypair,
            validator,
        })
    }

    /// The validator's latest checkpoint: digest, window, length and how it was made.
    pub async fn latest(&mut self) -> Result<pb::LatestCheckpointResponse, String> {
        let request = auth::sign(
            pb::LatestCheckpointRequest { auth: None },
            self.keypair,
            &self.validator,
        );
        let latest = self
            .client
            .latest_checkpoint(request)
            .await
            .map_err(|e| e.message().to_string())?
            .into_inner();
        bytes32("digest", &latest.digest)?;
        Ok(latest)
    }

    /// The bytes of the checkpoint `digest`, at most `len` of them (the caller verifies them).
    pub async fn download(&mut self, digest: &[u8; 32], len: u64) -> Result<Vec<u8>, String> {
        if len as usize > limits::MAX_CHECKPOINT_BYTES {
            return Err(format!("checkpoint of {len} bytes exceeds the limit"));
        }
        let request = auth::sign(
            pb::CheckpointRequest {
                auth: None,
                digest: digest.to_vec(),
            },
            self.keypair,
            &self.validator,
        );
        let mut stream = self
            .client
            .get_checkpoint(request)
            .await
            .map_err(|e| e.message().to_string())?
            .into_inner();
        let mut bytes = Vec::with_capacity(len as usize);
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|e| e.message().to_string())?
        {
            if bytes.len() + chunk.data.len() > len as usize {
                return Err("validator sent more bytes than it announced".into());
            }
            bytes.extend_from_slice(&chunk.data);
        }
        Ok(bytes)
    }
}
