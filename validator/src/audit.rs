//! Binding what is scored to what is verified.
//!
//! A commitment names the payload, the dense pseudo-gradient it was compressed from and the
//! error-feedback residuals around the compression. Three checks tie them together:
//! - the residual chain, for every miner every window and from commitments alone: the residual that
//!   went into a window is zero or the one that came out of the window the commitment names, and a
//!   miner cannot skip over a window of its own that this validator saw (`ResidualLedger`);
//! - an audit, of each (miner, window) with probability `1 / scoring.audit_period` drawn from the
//!   validator's secret (`audited`): the miner serves its dense gradient and incoming residual, the
//!   payload must be, byte for byte, the task's codec applied to them and must leave exactly the
//!   committed outgoing residual (`verify_artefacts`), and the dense gradient must match the
//!   validator's re-execution of the window within the backend tolerance;
//! - a miner that does not serve, under an audit, what it committed to is treated as one whose
//!   artefacts do not check out.

use crate::store::{DataDir, StoreError};
use crate::window::{Gradient, PendingAudit, Subject};
use pseudo_gradient::codec::{self, Layout};
use scoring::{Reason, ReasonKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use subnet_proto::commitment::Claims;
use task::{Checkpoint, Digest, TaskEngine};

/// Windows of residual history kept per miner.
const KEPT_WINDOWS: usize = 16;

/// The outgoing residual digests of the commitments this validator collected, per uid and hotkey.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResidualLedger {
    miners: BTreeMap<u16, LedgerEntry>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct LedgerEntry {
    hotkey: String,
    /// Window -> hex digest of the residual its compression left.
    residual_out: BTreeMap<u64, String>,
    /// The group capacity its latest commitment declared: the one in effect for its next window.
    #[serde(default)]
    group_capacity: Option<u64>,
}

/// How a commitment's incoming residual continues its miner's residual chain.
#[derive(Clone, Debug, PartialEq)]
pub enum Link {
    /// Zero, or exactly what the miner's previous commitment, which this validator holds, left.
    Continues,
    /// Not what the previous commitment left, or skipping one this validator holds: fraud.
    Broken(Reason),
    /// It names a commitment this validator never collected (window `from`): the miner must serve
    /// that commitment, and that window is audited, before the claim is accepted.
    Unseen { from: u64 },
}

impl ResidualLedger {
    /// Whether `c`'s incoming residual continues what this validator saw `hotkey` commit before.
    /// A zero residual (a restart without the residual file) always continues it.
    pub fn check(&self, uid: u16, hotkey: &str, c: &Claims, zero_digest: &[u8; 32]) -> Link {
        if &c.residual_in_digest == zero_digest {
            return Link::Continues;
        }
        if c.residual_window >= c.window {
            return Link::Broken(Reason::new(
                ReasonKind::ResidualChain,
                format!(
                    "its window {} residual is said to come from window {}, which is not before it",
                    c.window, c.residual_window
                ),
            ));
        }
        let Some(entry) = self.miners.get(&uid).filter(|e| e.hotkey == hotkey) else {
            return Link::Unseen {
                from: c.residual_window,
            };
        };
        if let Some((skipped, _)) = entry
            .residual_out
            .range(c.residual_window + 1..c.window)
            .next()
        {
            return Link::Broken(Reason::new(
                ReasonKind::ResidualChain,
                format!(
                    "its window {} residual skips the one its own window {skipped} commitment left",
                    c.window
                ),
            ));
        }
        match entry.residual_out.get(&c.residual_window) {
            Some(out) if out != &hex::encode(c.residual_in_digest) => Link::Broken(Reason::new(
                ReasonKind::ResidualChain,
                format!(
                    "its window {} residual {} is not the residual {out} its window {} commitment left",
                    c.window,
                    hex::encode(c.residual_in_digest),
                    c.residual_window
                ),
            )),
            Some(_) => Link::Continues,
            None => Link::Unseen {
                from: c.residual_window,
            },
        }
    }

    /// The group capacity in effect for `hotkey`'s next window: the one its latest commitment this
    /// validator holds declared (None: none held, as for a new miner).
    pub fn group_capacity(&self, uid: u16, hotkey: &str) -> Option<u64> {
        self.miners
            .get(&uid)
            .filter(|e| e.hotkey == hotkey)
            .and_then(|e| e.group_capacity)
    }

    /// Records a commitment collected before its window closed.
    pub fn record(&mut self, uid: u16, hotkey: &str, c: &Claims) {
        let entry = self.miners.entry(uid).or_insert_with(|| LedgerEntry {
            hotkey: hotkey.to_string(),
            residual_out: BTreeMap::new(),
            group_capacity: None,
        });
        if entry.hotkey != hotkey {
            entry.hotkey = hotkey.to_string();
            entry.residual_out.clear();
        }
        if entry
            .residual_out
            .last_key_value()
            .is_none_or(|(w, _)| *w < c.window)
        {
            entry.group_capacity = Some(c.group_capacity);
        }
        entry
            .residual_out
            .insert(c.window, hex::encode(c.residual_out_digest));
        while entry.residual_out.len() > KEPT_WINDOWS {
            entry.residual_out.pop_first();
        }
    }
}

/// What an unresolved audit needs to run again, from the blobs of a data directory (the window's
/// checkpoint and the committed payload): None when either is gone or does not read as what the
/// audit names.
pub fn stored_subject(
    store: &DataDir,
    engine: &TaskEngine,
    pending: &PendingAudit,
) -> Result<Option<Subject>, StoreError> {
    let blob = |digest: &Digest| match store.blob(&digest.0) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(StoreError::MissingBlob { .. }) => Ok(None),
        Err(e) => Err(e),
    };
    let (Some(checkpoint), Some(payload)) = (blob(&pending.checkpoint)?, blob(&pending.payload)?)
    else {
        return Ok(None);
    };
    let Ok(checkpoint) = Checkpoint::from_bytes(
        &checkpoint,
        &engine.digest(),
        engine.num_params(),
        Some(&pending.checkpoint),
    ) else {
        return Ok(None);
    };
    let Some(group) = engine.groups().get(pending.group).cloned() else {
        return Ok(None);
    };
    let Ok(values) = codec::decode_as(&payload, group.len(), engine.spec().compression.layout())
    else {
        return Ok(None);
    };
    Ok(Some(Subject {
        window: pending.window,
        window_seed: pending.window_seed,
        checkpoint: std::sync::Arc::new(checkpoint),
        gradient: Gradient {
            values: pseudo_gradient::Sparse::scattered(
                &values,
                engine.num_params(),
                group.range.start,
            ),
            payload: payload.into(),
            group,
            residual_out: pending.residual_out,
            backend: pending.backend.clone(),
        },
    }))
}

/// Digest of the zero residual of a model with `n` parameters (codec dense form).
pub fn zero_residual_digest(n: usize) -> [u8; 32] {
    subnet_proto::digest(&codec::encode_dense(&vec![0.0; n]))
}

/// Whether a validator whose secret is `secret` audits `uid`'s `window`: with probability
/// `1 / period`, drawn for each (miner, window) from the secret alone, independently of every other
/// draw (period 0: never). Knowing which of its windows were audited tells a miner nothing about
/// the next one.
pub fn audited(secret: u64, uid: u16, window: u64, period: u64) -> bool {
    period != 0
        && task::rng::derive_seed(&[secret, AUDIT, uid as u64, window]).is_multiple_of(period)
}

const AUDIT: u64 = 0x4155_4449;

/// The segments of `uid`'s `window` an audit by the validator with `secret` re-executes, in order:
/// one drawn from the secret among all but the last, and always the last (whose end the dense
/// gradient was read from). A window of one segment is re-executed whole.
pub fn audited_segments(secret: u64, uid: u16, window: u64, segments: usize) -> Vec<usize> {
    let Some(last) = segments.checked_sub(1) else {
        return Vec::new();
    };
    if last == 0 {
        return vec![0];
    }
    let drawn = task::rng::derive_seed(&[secret, SEGMENT, uid as u64, window]) % last as u64;
    vec![drawn as usize, last]
}

const SEGMENT: u64 = 0x5345_474D;

/// Why an audited miner's artefacts do not fit together.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ArtefactError {
    #[error("its {what}: {source}")]
    Unreadable {
        what: &'static str,
        source: codec::CodecError,
    },
    #[error("its dense gradient or residual holds a non-finite value at {0}")]
    NonFinite(usize),
    #[error("its dense gradient moves parameter {index}, outside its group {range:?}")]
    OutsideGroup {
        index: usize,
        range: std::ops::Range<usize>,
    },
    #[error(
        "its payload is not the codec of its committed dense gradient and residual (first difference at byte {0})"
    )]
    NotTheCodec(usize),
    #[error("its committed outgoing residual {claimed} is not the {left} its compression leaves")]
    OtherResidual { claimed: Digest, left: Digest },
}

/// Checks an audited miner's artefacts against each other: the payload must be the task's codec of
/// the dense gradient and incoming residual over the miner's parameter group `range`, byte for
/// byte, and must leave exactly the committed outgoing residual; the dense gradient must be zero
/// outside the group (the rest of the model was frozen). Returns the dense gradient, or why the
/// artefacts do not fit together.
pub fn verify_artefacts(
    engine: &TaskEngine,
    residual_out_claim: &Digest,
    payload: &[u8],
    (dense, residual_in): (&[u8], &[u8]),
    range: &std::ops::Range<usize>,
) -> Result<Vec<f32>, ArtefactError> {
    let n = engine.num_params();
    let read = |bytes: &[u8], what: &'static str| {
        codec::decode_as(bytes, n, Layout::DenseF32)
            .map_err(|source| ArtefactError::Unreadable { what, source })
    };
    let dense = read(dense, "dense gradient")?;
    let residual = read(residual_in, "residual")?;
    if let Some(i) = dense.iter().chain(&residual).position(|v| !v.is_finite()) {
        return Err(ArtefactError::NonFinite(i));
    }
    if let Some(index) = dense
        .iter()
        .enumerate()
        .position(|(i, v)| *v != 0.0 && !range.contains(&i))
    {
        let range = range.clone();
        return Err(ArtefactError::OutsideGroup { index, range });
    }
    let recomputed = engine
        .spec()
        .compression
        .compress(&dense, &residual, range.clone());
    if recomputed.payload != payload {
        let first = recomputed
            .payload
            .iter()
            .zip(payload)
            .position(|(a, b)| a != b)
            .unwrap_or(payload.len().min(recomputed.payload.len()));
        return Err(ArtefactError::NotTheCodec(first));
    }
    let left = Digest(subnet_proto::digest(&codec::encode_dense(
        &recomputed.residual_out,
    )));
    if &left != residual_out_claim {
        let claimed = *residual_out_claim;
        return Err(ArtefactError::OtherResidual { claimed, left });
    }
    Ok(dense)
}

#[cfg(test)]
mod tests;
