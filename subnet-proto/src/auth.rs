//! Request signing. The caller signs Blake2b-256 of
//! `"subnet-request-v1" || method || body digest || timestamp_ms (u64 LE) || nonce (u64 LE) || receiver hotkey`,
//! where the body digest is Blake2b-256 of the request's protobuf encoding with `auth` left out. The
//! receiver checks the signature, the skew and that the nonce is fresh.

use crate::pb::RequestAuth;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use subxt_signer::sr25519::{self, Keypair, PublicKey, Signature};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn signing_payload(
    method: &str,
    body: &[u8],
    timestamp_ms: u64,
    nonce: u64,
    receiver: &[u8; 32],
) -> [u8; 32] {
    let mut bytes = Vec::with_capacity(64 + method.len() + 48);
    bytes.extend_from_slice(b"subnet-request-v1");
    bytes.extend_from_slice(method.as_bytes());
    bytes.extend_from_slice(&crate::digest(body));
    bytes.extend_from_slice(&timestamp_ms.to_le_bytes());
    bytes.extend_from_slice(&nonce.to_le_bytes());
    bytes.extend_from_slice(receiver);
    crate::digest(&bytes)
}

/// Signs a request body (the message encoded with `auth: None`) for `receiver`.
pub fn sign_request(
    keypair: &Keypair,
    method: &str,
    body: &[u8],
    receiver: &[u8; 32],
    nonce: u64,
) -> RequestAuth {
    sign_request_at(keypair, method, body, receiver, nonce, now_ms())
}

/// `sign_request` with the timestamp given (a client whose clock is off, in tests).
pub fn sign_request_at(
    keypair: &Keypair,
    method: &str,
    body: &[u8],
    receiver: &[u8; 32],
    nonce: u64,
    timestamp_ms: u64,
) -> RequestAuth {
    let payload = signing_payload(method, body, timestamp_ms, nonce, receiver);
    RequestAuth {
        hotkey: keypair.public_key().0.to_vec(),
        timestamp_ms,
        nonce,
        signature: keypair.sign(&payload).0.to_vec(),
    }
}

/// Why a request's authentication was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("request is not signed: auth is missing")]
    Missing,
    #[error("malformed auth: {0}")]
    Malformed(String),
    #[error("bad signature: the request was not signed by hotkey {0}")]
    BadSignature(String),
    #[error(
        "stale request: timestamp {timestamp_ms} ms is {skew_ms} ms from this server's clock (limit {limit_ms} ms)"
    )]
    Stale {
        timestamp_ms: u64,
        skew_ms: u64,
        limit_ms: u64,
    },
    #[error("replayed nonce {nonce} from hotkey {hotkey}")]
    Replay { nonce: u64, hotkey: String },
}

/// Verifies a request's signature and timestamp; returns the caller's hotkey.
pub fn verify_request(
    auth: Option<&RequestAuth>,
    method: &str,
    body: &[u8],
    receiver: &[u8; 32],
    now_ms: u64,
    max_skew: Duration,
) -> Result<[u8; 32], AuthError> {
    let auth = auth.ok_or(AuthError::Missing)?;
    let hotkey: [u8; 32] =
        crate::bytes32("auth.hotkey", &auth.hotkey).map_err(AuthError::Malformed)?;
    let signature: [u8; 64] = auth.signature.as_slice().try_into().map_err(|_| {
        AuthError::Malformed(format!(
            "auth.signature must be 64 bytes, got {}",
            auth.signature.len()
        ))
    })?;
    let skew_ms = now_ms.abs_diff(auth.timestamp_ms);
    let limit_ms = max_skew.as_millis() as u64;
    if skew_ms > limit_ms {
        return Err(AuthError::Stale {
            timestamp_ms: auth.timestamp_ms,
            skew_ms,
            limit_ms,
        });
    }
    let payload = signing_payload(method, body, auth.timestamp_ms, auth.nonce, receiver);
    if !sr25519::verify(&Signature(signature), payload, &PublicKey(hotkey)) {
        return Err(AuthError::BadSignature(hex::encode(hotkey)));
    }
    Ok(hotkey)
}

/// Remembers (hotkey, nonce) pairs for twice the skew window, so a captured request cannot be
/// replayed while its timestamp is still acceptable.
#[derive(Default)]
pub struct NonceCache {
    inner: Mutex<NonceState>,
}

#[derive(Default)]
struct NonceState {
    seen: HashMap<([u8; 32], u64), u64>,
    order: VecDeque<(u64, [u8; 32], u64)>,
}

impl NonceCache {
    /// Pairs remembered now.
    pub fn len(&self) -> usize {
        self.inner.lock().expect("nonce cache lock").seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records the nonce; an already-seen one is a replay.
    pub fn check_and_insert(
        &self,
        hotkey: [u8; 32],
        nonce: u64,
        now_ms: u64,
        max_skew: Duration,
    ) -> Result<(), AuthError> {
        let mut state = self.inner.lock().expect("nonce cache lock");
        let horizon = now_ms.saturating_sub(2 * max_skew.as_millis() as u64);
        while state.order.front().is_some_and(|(t, _, _)| *t < horizon) {
            let (_, h, n) = state.order.pop_front().expect("checked non-empty");
            state.seen.remove(&(h, n));
        }
        if state.seen.contains_key(&(hotkey, nonce)) {
            return Err(AuthError::Replay {
                nonce,
                hotkey: hex::encode(hotkey),
            });
        }
        state.seen.insert((hotkey, nonce), now_ms);
        state.order.push_back((now_ms, hotkey, nonce));
        Ok(())
    }
}

/// A nonce that no earlier call of this process used: nanoseconds since the epoch, strictly increasing.
pub fn fresh_nonce() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use subxt_signer::sr25519::dev;

    #[test]
    fn signed_requests_verify_and_tampering_is_caught() {
        let alice = dev::alice();
        let receiver = dev::bob().public_key().0;
        let auth = sign_request(&alice, "GetGradient", b"body", &receiver, 1);
        let now = auth.timestamp_ms;
        let skew = Duration::from_secs(30);
        assert_eq!(
            verify_request(Some(&auth), "GetGradient", b"body", &receiver, now, skew),
            Ok(alice.public_key().0)
        );
        assert!(matches!(
            verify_request(Some(&auth), "GetGradient", b"other", &receiver, now, skew),
            Err(AuthError::BadSignature(_))
        ));
        assert!(matches!(
            verify_request(Some(&auth), "Info", b"body", &receiver, now, skew),
            Err(AuthError::BadSignature(_))
        ));
        let charlie = dev::charlie().public_key().0;
        assert!(matches!(
            verify_request(Some(&auth), "GetGradient", b"body", &charlie, now, skew),
            Err(AuthError::BadSignature(_))
        ));
        assert!(matches!(
            verify_request(
                Some(&auth),
                "GetGradient",
                b"body",
                &receiver,
                now + 31_000,
                skew
            ),
            Err(AuthError::Stale { .. })
        ));
        assert_eq!(
            verify_request(None, "GetGradient", b"body", &receiver, now, skew),
            Err(AuthError::Missing)
        );
    }

    #[test]
    fn nonces_are_single_use() {
        let cache = NonceCache::default();
        let skew = Duration::from_secs(30);
        cache.check_and_insert([1; 32], 5, 1_000_000, skew).unwrap();
        assert!(matches!(
            cache.check_and_insert([1; 32], 5, 1_000_001, skew),
            Err(AuthError::Replay { .. })
        ));
        cache.check_and_insert([2; 32], 5, 1_000_001, skew).unwrap();
        // Forgotten only after twice the skew window, when the timestamp check already refuses it.
        cache
            .check_and_insert([1; 32], 5, 1_000_000 + 60_001, skew)
            .unwrap();
        assert!(fresh_nonce() < fresh_nonce());
    }
}

/// Requests that carry a `RequestAuth`.
pub trait Authenticated: prost::Message + Clone {
    /// The method name that the signature covers.
    const METHOD: &'static str;
    fn auth_mut(&mut self) -> &mut Option<RequestAuth>;
}

macro_rules! authenticated {
    ($($ty:ident => $method:literal),* $(,)?) => {
        $(impl Authenticated for crate::pb::$ty {
            const METHOD: &'static str = $method;
            fn auth_mut(&mut self) -> &mut Option<RequestAuth> {
                &mut self.auth
            }
        })*
    };
}

authenticated! {
    InfoRequest => "subnet.v1.Miner/Info",
    CommitmentRequest => "subnet.v1.Miner/GetCommitment",
    GradientRequest => "subnet.v1.Miner/GetGradient",
    LatestCheckpointRequest => "subnet.v1.Validator/LatestCheckpoint",
    CheckpointRequest => "subnet.v1.Validator/GetCheckpoint",
}

/// Signs `request` for the server whose hotkey is `receiver`.
pub fn sign<M: Authenticated>(mut request: M, keypair: &Keypair, receiver: &[u8; 32]) -> M {
    *request.auth_mut() = None;
    let body = request.encode_to_vec();
    *request.auth_mut() = Some(sign_request(
        keypair,
        M::METHOD,
        &body,
        receiver,
        fresh_nonce(),
    ));
    request
}

/// A request whose signature and timestamp hold, its nonce not yet checked.
#[derive(Clone, Copy, Debug)]
pub struct Signed {
    pub hotkey: [u8; 32],
    nonce: u64,
    at_ms: u64,
}

impl Signed {
    /// Records the nonce; one seen before is a replay. Servers call it once they know the caller
    /// belongs (an unknown caller leaves no state behind).
    pub fn fresh(&self, nonces: &NonceCache) -> Result<[u8; 32], AuthError> {
        nonces.check_and_insert(self.hotkey, self.nonce, self.at_ms, crate::limits::MAX_SKEW)?;
        Ok(self.hotkey)
    }
}

/// Verifies the signature and skew of `request` received by `receiver`, keeping no state.
pub fn verify_signature<M: Authenticated>(
    request: &M,
    receiver: &[u8; 32],
) -> Result<Signed, AuthError> {
    let mut body = request.clone();
    let auth = body.auth_mut().take();
    let now = now_ms();
    let hotkey = verify_request(
        auth.as_ref(),
        M::METHOD,
        &body.encode_to_vec(),
        receiver,
        now,
        crate::limits::MAX_SKEW,
    )?;
    Ok(Signed {
        hotkey,
        nonce: auth.map(|a| a.nonce).unwrap_or_default(),
        at_ms: now,
    })
}

/// Verifies signature, skew and nonce freshness of `request` received by `receiver`; returns the
/// caller's hotkey.
pub fn verify<M: Authenticated>(
    request: &M,
    receiver: &[u8; 32],
    nonces: &NonceCache,
) -> Result<[u8; 32], AuthError> {
    verify_signature(request, receiver)?.fresh(nonces)
}

impl AuthError {
    /// The gRPC status for this refusal.
    pub fn to_status(&self) -> tonic::Status {
        match self {
            AuthError::Missing | AuthError::BadSignature(_) => {
                tonic::Status::unauthenticated(self.to_string())
            }
            AuthError::Malformed(_) => tonic::Status::invalid_argument(self.to_string()),
            AuthError::Stale { .. } => tonic::Status::failed_precondition(self.to_string()),
            AuthError::Replay { .. } => tonic::Status::already_exists(self.to_string()),
        }
    }
}
