//! Fetching a validator's global checkpoint: its latest announcement, then the bytes by digest,
//! streamed within the announced length. Miners sync with it; validators adopt the lead's
//! checkpoint with it.

use crate::{auth, bytes32, limits, pb};
use prost::Message;
use std::net::SocketAddr;
use subxt_signer::sr25519::{self, Keypair, PublicKey, Signature};
use tonic::transport::Channel;

/// What a validator signs when it announces its checkpoint: Blake2b-256 of "subnet-checkpoint-v1"
/// and of the announcement encoded without its signature.
fn announcement_payload(latest: &pb::LatestCheckpointResponse) -> [u8; 32] {
    let unsigned = pb::LatestCheckpointResponse {
        signature: Vec::new(),
        ..latest.clone()
    };
    let mut bytes = b"subnet-checkpoint-v1".to_vec();
    bytes.extend_from_slice(&crate::digest(&unsigned.encode_to_vec()));
    crate::digest(&bytes)
}

/// Signs a checkpoint announcement with the validator's hotkey.
pub fn sign_announcement(
    latest: pb::LatestCheckpointResponse,
    keypair: &Keypair,
) -> pb::LatestCheckpointResponse {
    let signature = keypair.sign(&announcement_payload(&latest)).0.to_vec();
    pb::LatestCheckpointResponse {
        signature,
        ..latest
    }
}

/// Checks that `validator` signed the announcement (digest, window, length and recipe alike).
pub fn verify_announcement(
    latest: &pb::LatestCheckpointResponse,
    validator: &[u8; 32],
) -> Result<(), String> {
    let signature: [u8; 64] = latest.signature.as_slice().try_into().map_err(|_| {
        format!(
            "the checkpoint announcement is not signed ({} signature bytes)",
            latest.signature.len()
        )
    })?;
    if !sr25519::verify(
        &Signature(signature),
        announcement_payload(latest),
        &PublicKey(*validator),
    ) {
        return Err(format!(
            "the checkpoint announcement is not signed by validator {}: refusing its digest",
            hex::encode(validator)
        ));
    }
    Ok(())
}

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
        let channel = crate::tls::endpoint(&addr.to_string())
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

    /// The validator's latest checkpoint: digest, window, length and how it was made, as the
    /// validator signed them (an announcement it did not sign is refused).
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
        verify_announcement(&latest, &self.validator)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use subxt_signer::sr25519::dev;

    fn announcement() -> pb::LatestCheckpointResponse {
        pb::LatestCheckpointResponse {
            digest: vec![5; 32],
            window: 7,
            len: 1234,
            previous_digest: vec![4; 32],
            aggregated: Vec::new(),
            clip_norm: 0.5,
            step_scale: 0.5,
            signature: Vec::new(),
        }
    }

    #[test]
    fn only_the_validators_own_signature_over_the_whole_announcement_is_accepted() {
        let (validator, other) = (dev::alice(), dev::bob());
        let signed = sign_announcement(announcement(), &validator);
        verify_announcement(&signed, &validator.public_key().0).unwrap();
        // Unsigned, signed by someone else, or altered in any field after signing.
        assert!(verify_announcement(&announcement(), &validator.public_key().0).is_err());
        let forged = sign_announcement(announcement(), &other);
        assert!(verify_announcement(&forged, &validator.public_key().0).is_err());
        let substituted = pb::LatestCheckpointResponse {
            digest: vec![6; 32],
            ..signed.clone()
        };
        assert!(verify_announcement(&substituted, &validator.public_key().0).is_err());
        let recipe = pb::LatestCheckpointResponse {
            clip_norm: 50.0,
            ..signed
        };
        assert!(verify_announcement(&recipe, &validator.public_key().0).is_err());
        let rescaled = pb::LatestCheckpointResponse {
            step_scale: 1.0,
            ..recipe
        };
        assert!(verify_announcement(&rescaled, &validator.public_key().0).is_err());
    }
}
