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
mod tests {
    use super::*;

    /// An audit checks the last segment and one of the others, each about equally often and
    /// independently of the window before; a window of one segment is checked whole.
    #[test]
    fn an_audit_draws_one_earlier_segment_and_always_the_last() {
        assert_eq!(audited_segments(9, 1, 4, 0), Vec::<usize>::new());
        assert_eq!(audited_segments(9, 1, 4, 1), vec![0]);
        let mut counts = [0u32; 4];
        let mut repeats = 0;
        let mut before = None;
        for window in 0..4000 {
            let drawn = audited_segments(0xC0FFEE, 3, window, 5);
            assert_eq!(drawn.len(), 2);
            assert_eq!(drawn[1], 4, "the last segment is always checked");
            counts[drawn[0]] += 1;
            repeats += u32::from(before == Some(drawn[0]));
            before = Some(drawn[0]);
        }
        // 1000 expected each (standard deviation 27).
        assert!(counts.iter().all(|c| (880..1120).contains(c)), "{counts:?}");
        assert!(
            (880..1120).contains(&repeats),
            "{repeats} repeats of the window before's draw"
        );
        // Another validator's secret draws otherwise.
        assert!((0..20).any(|w| audited_segments(1, 3, w, 5) != audited_segments(2, 3, w, 5)));
    }

    #[test]
    fn a_group_miners_artefacts_fit_only_over_its_group() {
        let spec =
            task::TaskSpec::from_toml_str(include_str!("../../tasks/localnet-lm-groups.toml"))
                .unwrap();
        let engine = TaskEngine::new(spec);
        let n = engine.num_params();
        let (own, other) = (
            engine.groups().get(1).unwrap().range.clone(),
            engine.groups().get(0).unwrap().range.clone(),
        );
        let mut dense = vec![0.0f32; n];
        for i in own.clone() {
            dense[i] = ((i % 7) as f32 - 3.0) * 1e-3;
        }
        let residual: Vec<f32> = (0..n).map(|i| ((i % 5) as f32 - 2.0) * 1e-4).collect();
        let c = &engine.spec().compression;
        let layout = c.layout();
        let feedback = c.error_feedback as f32;
        let out = codec::compress_range(&dense, &residual, layout, feedback, own.clone());
        let residual_out = Digest(subnet_proto::digest(&codec::encode_dense(
            &out.residual_out,
        )));
        let (dense_bytes, residual_bytes) =
            (codec::encode_dense(&dense), codec::encode_dense(&residual));
        let check = |payload: &[u8], dense: &[u8], range: &std::ops::Range<usize>| {
            verify_artefacts(
                &engine,
                &residual_out,
                payload,
                (dense, &residual_bytes),
                range,
            )
        };
        assert_eq!(check(&out.payload, &dense_bytes, &own), Ok(dense.clone()));
        // It moved a parameter of a group it was not given (the rest of the model is frozen).
        let mut moved = dense.clone();
        moved[other.start] = 1e-3;
        let err = check(&out.payload, &codec::encode_dense(&moved), &own).unwrap_err();
        assert!(err.to_string().contains("outside its group"), "{err}");
        // A payload over another group than the one the window gave it.
        let elsewhere = codec::compress_range(&dense, &residual, layout, feedback, other.clone());
        assert!(check(&elsewhere.payload, &dense_bytes, &own).is_err());
        // The same artefacts read as another group's do not fit either.
        assert!(check(&out.payload, &dense_bytes, &other).is_err());
    }

    fn commitment(window: u64, residual_in: u8, from: u64, residual_out: u8) -> Claims {
        Claims {
            window,
            task_digest: [0; 32],
            checkpoint_digest: [0; 32],
            payload_digest: [0; 32],
            payload_len: 0,
            dense_digest: [0; 32],
            residual_in_digest: [residual_in; 32],
            residual_window: from,
            residual_out_digest: [residual_out; 32],
            group_capacity: 0,
            segments: Vec::new(),
            backend: String::new(),
        }
    }

    #[test]
    fn the_residual_chain_follows_what_was_seen() {
        let zero = [0u8; 32];
        let mut ledger = ResidualLedger::default();
        ledger.record(3, "a", &commitment(10, 0, 0, 1));
        ledger.record(3, "a", &commitment(11, 1, 10, 2));
        let check = |c: &Claims, hotkey: &str| ledger.check(3, hotkey, c, &zero);
        let broken = |link: Link, needle: &str| match link {
            Link::Broken(reason) => assert!(reason.contains(needle), "{reason}"),
            other => panic!("{other:?}"),
        };
        // Continues window 11.
        assert_eq!(check(&commitment(12, 2, 11, 3), "a"), Link::Continues);
        // A zero residual always continues.
        assert_eq!(check(&commitment(12, 0, 0, 3), "a"), Link::Continues);
        // Another residual than window 11 left.
        broken(check(&commitment(12, 9, 11, 3), "a"), "is not the residual");
        // Skips window 11, which this validator saw.
        broken(check(&commitment(12, 1, 10, 3), "a"), "skips");
        // A source window this validator did not see must be shown to it, and audited.
        assert_eq!(
            check(&commitment(14, 7, 13, 3), "a"),
            Link::Unseen { from: 13 }
        );
        // Not from an earlier window.
        broken(check(&commitment(12, 7, 12, 3), "a"), "not before it");
        // Another hotkey on the uid starts a new chain: its source is unseen.
        assert_eq!(
            check(&commitment(12, 9, 11, 3), "b"),
            Link::Unseen { from: 11 }
        );
    }

    #[test]
    fn a_group_capacity_takes_effect_in_the_window_after_it_is_declared() {
        let mut ledger = ResidualLedger::default();
        assert_eq!(ledger.group_capacity(3, "a"), None);
        let declaring = |window, capacity| Claims {
            group_capacity: capacity,
            ..commitment(window, 0, 0, 1)
        };
        ledger.record(3, "a", &declaring(10, 5000));
        assert_eq!(ledger.group_capacity(3, "a"), Some(5000));
        ledger.record(3, "a", &declaring(11, 9000));
        assert_eq!(ledger.group_capacity(3, "a"), Some(9000));
        // An older commitment recorded late does not change what is in effect.
        ledger.record(3, "a", &declaring(9, 1000));
        assert_eq!(ledger.group_capacity(3, "a"), Some(9000));
        // Another hotkey on the uid has none in effect yet.
        assert_eq!(ledger.group_capacity(3, "b"), None);
    }

    #[test]
    fn audits_are_drawn_independently_at_one_in_a_period() {
        for period in [1u64, 2, 4, 7] {
            let draws: Vec<Vec<bool>> = (0..200u16)
                .map(|uid| (0..200u64).map(|w| audited(99, uid, w, period)).collect())
                .collect();
            let total = (200 * 200) as f64;
            let rate = draws.iter().flatten().filter(|a| **a).count() as f64 / total;
            let expected = 1.0 / period as f64;
            // Four standard errors of a binomial proportion.
            let bound = 4.0 * (expected * (1.0 - expected) / total).sqrt();
            assert!((rate - expected).abs() <= bound, "period {period}: {rate}");
            // A window right after an audited one is audited just as often: the schedule cannot
            // be read from the audits a miner has seen.
            let (mut after, mut audited_after) = (0usize, 0usize);
            for d in &draws {
                for w in 1..d.len() {
                    if d[w - 1] {
                        after += 1;
                        audited_after += d[w] as usize;
                    }
                }
            }
            let rate_after = audited_after as f64 / after as f64;
            let bound = 4.0 * (expected * (1.0 - expected) / after as f64).sqrt();
            assert!(
                (rate_after - expected).abs() <= bound,
                "period {period}: {rate_after} after an audit"
            );
        }
        assert!(!(0..10).any(|w| audited(99, 1, w, 0)));
        // Another secret draws other windows.
        let a: Vec<bool> = (0..64).map(|w| audited(1, 3, w, 4)).collect();
        let b: Vec<bool> = (0..64).map(|w| audited(2, 3, w, 4)).collect();
        assert_ne!(a, b);
    }

    /// A miner that bets on the schedule (honest in a window after one of its windows was
    /// audited, lazy otherwise) is caught in its lazy windows as often as one lazy in every window:
    /// each audit is drawn afresh.
    #[test]
    fn betting_on_the_audit_schedule_does_not_lower_the_chance_of_being_caught() {
        let (period, secrets) = (4u64, [11u64, 12]);
        let audited_by_any = |uid: u16, w: u64| secrets.iter().any(|&s| audited(s, uid, w, period));
        let (mut lazy, mut caught) = (0usize, 0usize);
        for uid in 0..300u16 {
            for w in 1..100u64 {
                if !audited_by_any(uid, w - 1) {
                    lazy += 1;
                    caught += audited_by_any(uid, w) as usize;
                }
            }
        }
        let rate = caught as f64 / lazy as f64;
        let q = scoring::economics::audit_chance_per_window(period, secrets.len() as u32);
        let bound = 4.0 * (q * (1.0 - q) / lazy as f64).sqrt();
        assert!((rate - q).abs() <= bound, "{rate} against {q}");
    }
}
