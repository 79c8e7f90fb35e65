//! The next global checkpoint: the earning gradients, clipped to the norm of the validator's own
//! training of the window and summed in uid order, applied with the outer optimizer. With several
//! validators the lead's checkpoint (most stake, see `Metagraph::validators_by_stake`) is the
//! subnet's model: it publishes how it made it (`Recipe`), and the others recompute it from the
//! gradients they gathered themselves before adopting it.

use crate::store::{DataDir, StoreError};
use pseudo_gradient::Sparse;
use pseudo_gradient::aggregate::{outer_nesterov_step, outer_sgd_step};
use pseudo_gradient::codec;
use pseudo_gradient::sparse::per_parameter;
use subnet_proto::commitment::SignedCommitment;
use task::Digest;
use task::{Checkpoint, InnerState, TaskEngine};

/// How a checkpoint was made from the one before it.
#[derive(Clone, Debug, PartialEq)]
pub struct Recipe {
    pub previous: Digest,
    /// The aggregated gradients in uid order, each named by its miner's signed commitment.
    pub aggregated: Vec<(u16, SignedCommitment)>,
    pub clip_norm: f64,
    /// The norm each aggregated gradient was clipped to (its parameter group's); empty: `clip_norm`
    /// for every one.
    pub clip_norms: Vec<f64>,
    /// The fraction of the outer rate the step took.
    pub scale: f64,
}

impl Recipe {
    /// The clip norm of each aggregated gradient, in order.
    pub fn caps(&self) -> Vec<f64> {
        if self.clip_norms.len() == self.aggregated.len() {
            self.clip_norms.clone()
        } else {
            vec![self.clip_norm; self.aggregated.len()]
        }
    }
}

/// The next global checkpoint and outer momentum: the per-parameter mean of `deltas` (in the order
/// given) after clipping each to its entry of `caps` (grown where several carry a parameter, as
/// `training.outer_agreement` says), applied with the outer step at `scale` times the outer
/// rate (Nesterov momentum when the task sets `training.outer_momentum`; `momentum` is the buffer
/// before, empty for zeros), carrying the inner optimizer state `inner` (`TaskEngine::next_inner`);
/// or both unchanged when nothing is aggregated.
pub fn next_checkpoint(
    engine: &TaskEngine,
    (checkpoint, momentum): (&Checkpoint, &[f32]),
    deltas: &[&Sparse],
    (caps, scale): (&[f64], f64),
    inner: Option<InnerState>,
) -> (Checkpoint, Vec<f32>) {
    let t = &engine.spec().training;
    let rate = t.outer_lr * scale;
    let aggregate = pseudo_gradient::sparse::clipped_sums(deltas, caps)
        .map(|(sum, carriers)| per_parameter(sum, &carriers, t.outer_agreement));
    match aggregate {
        Some(mean) if t.outer_momentum > 0.0 => {
            let (params, buffer) =
                outer_nesterov_step(&checkpoint.params, &mean, momentum, rate, t.outer_momentum);
            (
                Checkpoint::with_inner(engine.digest(), params, inner),
                buffer,
            )
        }
        Some(mean) => (
            Checkpoint::with_inner(
                engine.digest(),
                outer_sgd_step(&checkpoint.params, &mean, rate),
                inner,
            ),
            Vec::new(),
        ),
        None => (checkpoint.clone(), momentum.to_vec()),
    }
}

/// Why a lead's checkpoint was not adopted as recomputed.
#[derive(Debug, PartialEq)]
pub enum Recomputation {
    /// The recipe gives the lead's checkpoint: adopt it, with this momentum.
    Confirmed(Checkpoint, Vec<f32>),
    /// A gradient of the recipe was not gathered here (or under other claims): it cannot be checked.
    Missing(u16),
    /// The recipe does not give the checkpoint the lead serves.
    Differs { recomputed: Digest },
}

/// Recomputes the checkpoint `digest` from `recipe`, with `previous` and `momentum` the checkpoint
/// and buffer the recipe starts from, `inner` the inner optimizer state the window's step carries
/// (this validator derived the same from public inputs) and `gathered` this validator's decoded
/// gradients of that window with their commitments.
pub fn recompute(
    engine: &TaskEngine,
    (previous, momentum): (&Checkpoint, &[f32]),
    inner: Option<InnerState>,
    recipe: &Recipe,
    gathered: &std::collections::BTreeMap<u16, (SignedCommitment, Sparse)>,
    digest: &Digest,
) -> Recomputation {
    let mut deltas = Vec::with_capacity(recipe.aggregated.len());
    for (uid, claimed) in &recipe.aggregated {
        match gathered.get(uid) {
            Some((c, values)) if c.same_claims(claimed) => deltas.push(values),
            _ => return Recomputation::Missing(*uid),
        }
    }
    let (next, momentum) = next_checkpoint(
        engine,
        (previous, momentum),
        &deltas,
        (&recipe.caps(), recipe.scale),
        inner,
    );
    if next.digest == *digest {
        Recomputation::Confirmed(next, momentum)
    } else {
        Recomputation::Differs {
            recomputed: next.digest,
        }
    }
}

/// The blob bytes of a parameter-sized vector (an outer momentum buffer, a residual: the dense codec
/// form), None for an empty one (zero).
pub fn vector_blob(values: &[f32]) -> Option<Vec<u8>> {
    (!values.is_empty()).then(|| codec::encode_dense(values))
}

/// Stores a parameter-sized vector as a blob; its hex digest, or None for an empty one.
pub fn store_vector(store: &DataDir, values: &[f32]) -> Result<Option<Digest>, StoreError> {
    vector_blob(values)
        .map(|bytes| store.put_blob(&bytes).map(Digest))
        .transpose()
}

/// Why a stored parameter-sized vector could not be read.
#[derive(Debug, thiserror::Error)]
pub enum VectorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("blob {digest}: {source}")]
    Codec {
        digest: Digest,
        source: codec::CodecError,
    },
}

/// Reads the vector stored as the blob `digest`.
pub fn load_vector(
    store: &DataDir,
    digest: &Digest,
    params: usize,
) -> Result<Vec<f32>, VectorError> {
    let bytes = store.blob(digest.bytes())?;
    codec::decode(&bytes, params).map_err(|source| VectorError::Codec {
        digest: *digest,
        source,
    })
}
