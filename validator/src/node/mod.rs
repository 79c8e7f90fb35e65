//! The live validator: its state and handle. A window's rules are `crate::window`'s steps, which
//! every driver shares; the submodules here move data in and out of them: `commitments`
//! (collected while a window is open), `lead` (the lead's checkpoint), `inputs` (gathering
//! payloads, and the window's inputs over gRPC and the chain: the audit schedule, the residual
//! chain, audited artefacts), `run` (a window in order, the record and what carries over),
//! `context` (what a live window keeps beside its start) and `chain_calls` (weights and fraud
//! reports).

mod chain_calls;
mod commitments;
mod context;
mod inputs;
mod lead;
mod run;

use commitments::load_commitments;
use context::{Fetched, WindowContext};

use crate::Recipe;
use crate::aggregation::{Recomputation, recompute, store_vector};
use crate::audit::{ResidualLedger, audited, zero_residual_digest};
use crate::error::ValidatorError;
use crate::gather::{Gatherer, Rejection};
use crate::outcome::{Adoption, WeightsSet, WindowOutcome};
use crate::record::{GradientRecord, WeightsRecord, WindowRecord};
use crate::store::{DataDir, PendingReveal, SavedState, StoreError};
use crate::{aggregation, weights, window};
use chain_client::{AccountId, Chain, FraudOutcome, Membership, Metagraph, Neuron};
use pseudo_gradient::codec;
use scoring::{Averages, Bans, Reason, ReasonKind, averages_after, bans_after, weights_to_u16};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use subnet_proto::checkpoints::CheckpointClient;
use subnet_proto::commitment::SignedCommitment;
use subnet_proto::pb;
use subxt_signer::sr25519::Keypair;
use task::{Checkpoint, Digest, TaskEngine};

/// What a scored window leaves for recomputing the lead's next checkpoint.
struct LastWindow {
    window: u64,
    checkpoint: Checkpoint,
    momentum: Vec<f32>,
    /// The inner optimizer state the window's step carries (public: the lead's is the same).
    next_inner: Option<task::InnerState>,
    gathered: BTreeMap<u16, (SignedCommitment, pseudo_gradient::Sparse)>,
}

struct ValidatorState {
    /// The global checkpoint at the start of the current window, and that window.
    checkpoint: Checkpoint,
    checkpoint_window: u64,
    /// How `checkpoint` was made, for other validators to recompute (None at genesis or after a
    /// restart).
    recipe: Option<Recipe>,
    /// Recent checkpoints by window, so miners a window behind can still sync.
    recent: BTreeMap<u64, Checkpoint>,
    /// Moving average of scores per uid, with the hotkey it belongs to (reset when a uid changes hands).
    averages: Averages,
    bans: Bans,
    /// Weights committed under commit-reveal and not yet revealed.
    pending_reveals: Vec<PendingReveal>,
    /// The outer Nesterov momentum buffer (empty: zeros, or plain SGD).
    momentum: Vec<f32>,
    /// The error-feedback residual of the validator's own reference training (empty: zero).
    reference_residual: Vec<f32>,
    ledger: ResidualLedger,
    /// The audits of earlier windows that have not resolved, with the commitment each names and,
    /// while this process has them, what it needs to run again (else read from the data directory).
    unresolved: window::Unresolved,
    audit_commitments: BTreeMap<u16, SignedCommitment>,
    audit_subjects: BTreeMap<u16, window::Subject>,
    /// The hotkey on each uid whose audit this validator has completed at least once.
    audited_hotkeys: BTreeMap<u16, String>,
    audit_secret: u64,
    /// Commitments collected while their window was open, by window and uid.
    collected: BTreeMap<u64, BTreeMap<u16, SignedCommitment>>,
    scored: Option<LastWindow>,
}

struct Inner<C> {
    member: Membership<C>,
    engine: Arc<TaskEngine>,
    deadline: Duration,
    /// Bytes streamed from miners (`Gatherer::fetched`).
    fetched: std::sync::atomic::AtomicU64,
    /// Overrides the task's `scoring.audit_period` (a local policy; the record says who was audited).
    audit_period: Mutex<Option<u64>>,
    /// How long a window waits for all its audits' artefacts together.
    audit_budget: Mutex<Duration>,
    state: RwLock<ValidatorState>,
    store: Option<DataDir>,
}

/// A validator; cheap to clone (shared state).
#[derive(Clone)]
pub struct Validator<C> {
    inner: Arc<Inner<C>>,
}

const KEPT_CHECKPOINTS: usize = 4;
const KEPT_COLLECTIONS: usize = 4;
/// Payloads fetched at once: the bytes in flight are bounded by this many payloads, while commitments
/// (a few hundred bytes each) are all asked for at once.
const MAX_CONCURRENT_FETCHES: usize = 32;

impl<C: Chain> Validator<C> {
    /// A validator starting from `checkpoint` as the global model of `window`, keeping nothing on disk.
    pub fn new(
        chain: C,
        netuid: u16,
        hotkey: Keypair,
        engine: Arc<TaskEngine>,
        checkpoint: Checkpoint,
        window: u64,
    ) -> Self {
        let saved = fresh_state(&checkpoint, window);
        Self::build(
            chain,
            netuid,
            hotkey,
            engine,
            checkpoint,
            saved,
            (Vec::new(), Vec::new()),
            None,
        )
    }

    /// A validator that keeps its state, checkpoints and replay log in `store`: it resumes from the
    /// saved checkpoint, window, moving averages, bans and residual ledger when there are any, else
    /// starts from `checkpoint` at `window`.
    pub fn with_store(
        chain: C,
        netuid: u16,
        hotkey: Keypair,
        engine: Arc<TaskEngine>,
        checkpoint: Checkpoint,
        window: u64,
        store: DataDir,
    ) -> Result<Self, ValidatorError> {
        let (checkpoint, saved, momentum, reference_residual) = match store.load_state()? {
            Some(saved) => resume(&store, &engine, saved)?,
            None => {
                let saved = fresh_state(&checkpoint, window);
                (checkpoint, saved, Vec::new(), Vec::new())
            }
        };
        // The commits still to reveal are kept apart as soon as they are made: they may be newer
        // than the state.
        let saved = match store.load_reveals()? {
            Some(pending_reveals) => SavedState {
                pending_reveals,
                ..saved
            },
            None => saved,
        };
        let collected = load_commitments(&store, saved.window)?;
        let validator = Self::build(
            chain,
            netuid,
            hotkey,
            engine,
            checkpoint,
            saved,
            (momentum, reference_residual),
            Some(store),
        );
        validator.state_mut().collected = collected;
        validator.save_state()?;
        Ok(validator)
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        chain: C,
        netuid: u16,
        hotkey: Keypair,
        engine: Arc<TaskEngine>,
        checkpoint: Checkpoint,
        saved: SavedState,
        (momentum, reference_residual): (Vec<f32>, Vec<f32>),
        store: Option<DataDir>,
    ) -> Self {
        let window = saved.window;
        let audit_commitments = saved
            .audit_commitments
            .iter()
            .filter_map(|(uid, hex)| match commitments::decode(hex) {
                Ok(c) => Some((*uid, c)),
                Err(e) => {
                    tracing::warn!(uid, error = %e, "an unresolved audit's commitment does not read; the audit is dropped");
                    None
                }
            })
            .collect();
        let state = ValidatorState {
            recent: BTreeMap::from([(window, checkpoint.clone())]),
            checkpoint,
            checkpoint_window: window,
            recipe: None,
            averages: saved.averages,
            bans: saved.bans,
            pending_reveals: saved.pending_reveals,
            momentum,
            reference_residual,
            ledger: saved.ledger,
            unresolved: saved.unresolved,
            audit_commitments,
            audit_subjects: BTreeMap::new(),
            audited_hotkeys: saved.audited_hotkeys,
            audit_secret: saved.audit_secret.unwrap_or_else(random_u64),
            collected: BTreeMap::new(),
            scored: None,
        };
        Self {
            inner: Arc::new(Inner {
                member: Membership::new(chain, netuid, hotkey),
                engine,
                deadline: Duration::from_secs(60),
                fetched: Default::default(),
                audit_period: Mutex::new(None),
                audit_budget: Mutex::new(Duration::from_secs(60)),
                state: RwLock::new(state),
                store,
            }),
        }
    }

    fn state(&self) -> std::sync::RwLockReadGuard<'_, ValidatorState> {
        self.inner.state.read().expect("validator state lock")
    }

    fn state_mut(&self) -> std::sync::RwLockWriteGuard<'_, ValidatorState> {
        self.inner.state.write().expect("validator state lock")
    }

    /// Writes what a restart resumes from to the data directory, if any.
    fn save_state(&self) -> Result<(), ValidatorError> {
        let Some(store) = &self.inner.store else {
            return Ok(());
        };
        let (checkpoint, momentum, reference_residual, mut saved) = {
            let state = self.state();
            (
                state.checkpoint.clone(),
                state.momentum.clone(),
                state.reference_residual.clone(),
                SavedState {
                    checkpoint: state.checkpoint.digest,
                    window: state.checkpoint_window,
                    averages: state.averages.clone(),
                    pending_reveals: state.pending_reveals.clone(),
                    momentum: None,
                    bans: state.bans.clone(),
                    ledger: state.ledger.clone(),
                    unresolved: state.unresolved.clone(),
                    audit_commitments: state
                        .audit_commitments
                        .iter()
                        .map(|(uid, c)| (*uid, commitments::encode(c)))
                        .collect(),
                    audited_hotkeys: state.audited_hotkeys.clone(),
                    audit_secret: Some(state.audit_secret),
                    reference_residual: None,
                },
            )
        };
        store.put_blob(&checkpoint.to_bytes())?;
        saved.momentum = store_vector(store, &momentum)?;
        saved.reference_residual = store_vector(store, &reference_residual)?;
        store.save_state(&saved)?;
        Ok(())
    }

    /// Overrides the task's audit period for this validator: `Some(0)` never audits, `Some(1)`
    /// audits every miner every window, `None` goes back to the task's `scoring.audit_period`.
    pub fn set_audit_period(&self, period: Option<u64>) {
        *self.inner.audit_period.lock().expect("audit period lock") = period;
    }

    /// How long a window waits, all together, for the artefacts of the audits it runs (default 60
    /// s): a miner that has not served them by then stays unresolved, its pay withheld.
    pub fn set_audit_budget(&self, budget: Duration) {
        *self.inner.audit_budget.lock().expect("audit budget lock") = budget;
    }

    fn audit_budget(&self) -> Duration {
        *self.inner.audit_budget.lock().expect("audit budget lock")
    }

    /// Weights committed under commit-reveal and not yet revealed.
    pub fn pending_reveals(&self) -> Vec<PendingReveal> {
        self.state().pending_reveals.clone()
    }

    fn audit_period(&self) -> u64 {
        self.inner
            .audit_period
            .lock()
            .expect("audit period lock")
            .unwrap_or(self.engine().spec().scoring.audit_period)
    }

    /// The moving averages per uid (with the hotkey each belongs to).
    pub fn averages(&self) -> Averages {
        self.state().averages.clone()
    }

    /// Hotkeys banned after a fraud, through a window.
    pub fn bans(&self) -> Bans {
        self.state().bans.clone()
    }

    pub fn hotkey(&self) -> AccountId {
        self.inner.member.hotkey()
    }

    pub fn engine(&self) -> &Arc<TaskEngine> {
        &self.inner.engine
    }

    pub fn chain(&self) -> &C {
        self.inner.member.chain()
    }

    pub fn netuid(&self) -> u16 {
        self.inner.member.netuid()
    }

    pub(crate) fn keypair(&self) -> &Keypair {
        self.inner.member.keypair()
    }

    /// The current global checkpoint and the window it starts.
    pub fn checkpoint(&self) -> (Checkpoint, u64) {
        let state = self.state();
        (state.checkpoint.clone(), state.checkpoint_window)
    }

    /// How the current checkpoint was made, when this validator made it.
    pub fn recipe(&self) -> Option<Recipe> {
        self.state().recipe.clone()
    }

    pub(crate) fn checkpoint_by_digest(&self, digest: &[u8]) -> Option<Checkpoint> {
        self.state()
            .recent
            .values()
            .find(|c| c.digest.0.as_slice() == digest)
            .cloned()
    }

    fn gatherer(&self) -> Gatherer<'_> {
        Gatherer {
            keypair: self.inner.member.keypair(),
            engine: &self.inner.engine,
            deadline: self.inner.deadline,
            fetched: &self.inner.fetched,
        }
    }

    /// A per-window eval seed that miners cannot predict: derived from a (randomized) sr25519
    /// signature of this validator over the window.
    fn eval_seed(&self, window: u64, window_seed: u64) -> u64 {
        let mut message = b"subnet-eval-seed".to_vec();
        message.extend_from_slice(&window.to_le_bytes());
        message.extend_from_slice(&window_seed.to_le_bytes());
        let digest = subnet_proto::digest(&self.inner.member.keypair().sign(&message).0);
        u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
    }
}

/// What a data directory's saved state resumes: its checkpoint, the state, and the outer momentum
/// and the reference's residual it names.
fn resume(
    store: &DataDir,
    engine: &TaskEngine,
    saved: SavedState,
) -> Result<(Checkpoint, SavedState, Vec<f32>, Vec<f32>), ValidatorError> {
    let saved_error = |message: String| ValidatorError::SavedCheckpoint {
        dir: store.root().display().to_string(),
        message,
    };
    let digest = saved.checkpoint;
    let bytes = store.blob(&digest.0)?;
    let checkpoint =
        Checkpoint::from_bytes(&bytes, &engine.digest(), engine.num_params(), Some(&digest))
            .map_err(|e| saved_error(e.to_string()))?;
    tracing::info!(window = saved.window, checkpoint = %checkpoint.short_digest(), miners = saved.averages.len(), "resumed from the data directory");
    let vector = |digest: &Option<Digest>| match digest {
        Some(digest) => aggregation::load_vector(store, digest, engine.num_params())
            .map_err(|e| saved_error(e.to_string())),
        None => Ok(Vec::new()),
    };
    let momentum = vector(&saved.momentum)?;
    let reference_residual = vector(&saved.reference_residual)?;
    Ok((checkpoint, saved, momentum, reference_residual))
}

fn fresh_state(checkpoint: &Checkpoint, window: u64) -> SavedState {
    SavedState {
        checkpoint: checkpoint.digest,
        window,
        averages: Averages::new(),
        pending_reveals: Vec::new(),
        momentum: None,
        bans: Bans::new(),
        ledger: ResidualLedger::default(),
        unresolved: BTreeMap::new(),
        audit_commitments: BTreeMap::new(),
        audited_hotkeys: BTreeMap::new(),
        audit_secret: None,
        reference_residual: None,
    }
}

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the operating system gives randomness");
    u64::from_le_bytes(bytes)
}

/// Runs CPU-bound work off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ValidatorError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ValidatorError::Evaluation(e.to_string()))
}
