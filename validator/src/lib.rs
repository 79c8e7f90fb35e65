//! The validator: collects every miner's signed commitment while a window is open, fetches the work
//! those commitments name once the window has closed, scores what each gradient adds on batches the
//! miners could not know, audits miners by re-executing their windows, sets weights on chain,
//! aggregates the earning gradients into the next global checkpoint and serves that checkpoint.
//!
//! A window is scored in the protocol's steps (`run_window`): follow the lead's checkpoint, gather,
//! measure, audit, decide (a pure function in `scoring`), put weights on chain, report fraud,
//! aggregate, record. Each step lives in its own module; this file holds the validator's state and
//! the order of the steps.

pub mod aggregation;
pub mod audit;
pub mod evaluate;
mod gather;
pub mod metrics;
pub mod record;
pub mod replay;
mod service;
pub mod store;
mod weights;

pub use aggregation::Recipe;
pub use gather::Rejection;
pub use record::{AuditRecord, GradientRecord, WeightsRecord, WindowRecord};
pub use service::ValidatorService;
pub use store::{DataDir, PendingReveal, SavedState, StoreError};

use aggregation::{Recomputation, next_checkpoint, recompute, store_vector};
use audit::{ResidualLedger, audited, verify_artefacts, zero_residual_digest};
use chain_client::{AccountId, Chain, ChainError, FraudOutcome, Metagraph, Neuron};
use gather::Gatherer;
use scoring::checks::{pairwise_similarity, relative_difference, reproduces};
use scoring::{
    AssignmentCheck, Averages, Bans, MinerDecision, MinerEvidence, UsefulnessScore, Verdict,
    WindowEvidence, aggregation_order, averages_after, bans_after, candidates, decide, screen,
    weights_to_u16,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use subnet_proto::checkpoints::CheckpointClient;
use subnet_proto::{codec, pb};
use subxt_signer::sr25519::Keypair;
use task::aggregate::l2_norm;
use task::{Checkpoint, TaskEngine};

#[derive(Debug, thiserror::Error)]
pub enum ValidatorError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(
        "hotkey {hotkey} is not registered on subnet {netuid}: register first with `subnet chain register`"
    )]
    NotRegistered { hotkey: String, netuid: u16 },
    #[error("evaluation task failed: {0}")]
    Evaluation(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("saved checkpoint in {dir} does not load: {message}")]
    SavedCheckpoint { dir: String, message: String },
}

/// How one miner fared in one window.
#[derive(Clone, Debug)]
pub struct MinerResult {
    pub uid: u16,
    pub hotkey: AccountId,
    /// Usefulness of the gradient alone, when it was evaluated.
    pub usefulness: Option<UsefulnessScore>,
    /// The assignment check, for gradients that help on their own.
    pub assignment: Option<AssignmentCheck>,
    /// What it added to the other candidates, when it was one.
    pub contribution: Option<f64>,
    /// Why the gradient was refused before evaluation.
    pub rejection: Option<Rejection>,
    /// Whether this validator re-executed the miner's window.
    pub audited: bool,
    /// Earned, or why not.
    pub verdict: Verdict,
    /// This window's score (0 unless it earned).
    pub score: f64,
    pub moving_average: f64,
    /// Normalized weight this validator gave the uid this window.
    pub weight: f64,
}

/// Weights set (or committed) on chain as uids and u16 values, or why none were.
pub type WeightsSet = Result<(Vec<u16>, Vec<u16>), String>;

/// A lead validator's checkpoint this validator took as the window's starting point.
#[derive(Clone, Debug, PartialEq)]
pub struct Adoption {
    pub lead: u16,
    pub digest: [u8; 32],
    /// Recomputed here from the lead's recipe (else some gradient of it was not gathered here).
    pub verified: bool,
}

/// What a validator did in one window.
#[derive(Clone, Debug)]
pub struct WindowOutcome {
    pub window: u64,
    pub eval_seed: u64,
    /// Mean loss of the window's starting checkpoint on the eval batches.
    pub base_loss: f64,
    /// Norm of the validator's own training of the window.
    pub reference_norm: f64,
    pub checkpoint_before: [u8; 32],
    pub checkpoint_after: [u8; 32],
    pub results: Vec<MinerResult>,
    pub aggregated: Vec<u16>,
    /// Set on chain (uids, u16 values), or why not.
    pub weights_set: WeightsSet,
    /// The subnet runs commit-reveal: `weights_set` was committed, to be revealed an epoch later.
    pub weights_committed: bool,
    /// Earlier windows' commits revealed in this window, by the window that committed them, with
    /// what the chain said.
    pub reveals: Vec<(u64, Result<(), String>)>,
    /// Miners reported to the chain for fraud, with what the chain did.
    pub fraud_reports: Vec<(u16, Result<FraudOutcome, String>)>,
    /// The lead's checkpoint, when this validator adopted it for the window.
    pub adopted: Option<Adoption>,
    /// Seconds each step of the window took.
    pub timings: Vec<(&'static str, f64)>,
}

/// Seconds spent per step of a window.
#[derive(Debug)]
struct Timings(Vec<(&'static str, f64)>, std::time::Instant);

impl Default for Timings {
    fn default() -> Self {
        Self(Vec::new(), std::time::Instant::now())
    }
}

impl Timings {
    /// Closes the step `name` (it ran since the previous step closed).
    fn lap(&mut self, name: &'static str) {
        self.0.push((name, self.1.elapsed().as_secs_f64()));
        self.1 = std::time::Instant::now();
    }
}

impl WindowOutcome {
    pub fn result(&self, uid: u16) -> Option<&MinerResult> {
        self.results.iter().find(|r| r.uid == uid)
    }

    /// The outcome of a window as its record in a validator's replay log tells it (what another
    /// process can learn of a validator's window): the decisions are re-derived from the recorded
    /// evidence, hotkeys come from `metagraph`. What the record does not keep (refusals as typed
    /// rejections, reveals, fraud reports, adoption, timings) is left empty.
    pub fn from_record(record: &WindowRecord, metagraph: &Metagraph) -> Result<Self, String> {
        let digest = |what: &str, hex_digest: &str| {
            let bytes = hex::decode(hex_digest).map_err(|e| format!("{what}: {e}"))?;
            subnet_proto::bytes32(what, &bytes)
        };
        let decisions = decide(&record.evidence, &record.scoring, &record.averages_before);
        let base = &record.evidence.base;
        Ok(Self {
            window: record.window,
            eval_seed: record.eval_seed,
            base_loss: base.iter().map(|&l| l as f64).sum::<f64>() / base.len().max(1) as f64,
            reference_norm: record.evidence.reference_norm,
            checkpoint_before: digest("checkpoint before", &record.checkpoint_before)?,
            checkpoint_after: digest("checkpoint after", &record.checkpoint_after)?,
            results: decisions
                .into_iter()
                .map(|d| MinerResult {
                    uid: d.uid,
                    hotkey: metagraph
                        .by_uid(d.uid)
                        .map_or(AccountId([0; 32]), |n| n.hotkey),
                    usefulness: d.usefulness,
                    assignment: d.assignment,
                    contribution: d.contribution,
                    rejection: None,
                    audited: record.audits.iter().any(|a| a.uid == d.uid),
                    verdict: d.verdict,
                    score: d.score,
                    moving_average: d.moving_average,
                    weight: d.weight,
                })
                .collect(),
            aggregated: record.aggregated.clone(),
            weights_set: match &record.weights.error {
                Some(e) => Err(e.clone()),
                None => Ok((record.weights.uids.clone(), record.weights.values.clone())),
            },
            weights_committed: false,
            reveals: Vec::new(),
            fraud_reports: Vec::new(),
            adopted: None,
            timings: Vec::new(),
        })
    }
}

/// What a scored window leaves for recomputing the lead's next checkpoint.
struct Scored {
    window: u64,
    checkpoint: Checkpoint,
    momentum: Vec<f32>,
    gathered: BTreeMap<u16, (pb::Commitment, Vec<f32>)>,
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
    pending_audits: BTreeMap<u16, String>,
    /// The hotkey on each uid whose audit this validator has completed at least once.
    audited_hotkeys: BTreeMap<u16, String>,
    audit_secret: u64,
    /// Commitments collected while their window was open, by window and uid.
    collected: BTreeMap<u64, BTreeMap<u16, pb::Commitment>>,
    scored: Option<Scored>,
}

struct Inner<C> {
    chain: C,
    netuid: u16,
    hotkey: Keypair,
    engine: Arc<TaskEngine>,
    deadline: Duration,
    /// Overrides the task's `scoring.audit_period` (a local policy; the record says who was audited).
    audit_period: Mutex<Option<u64>>,
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

/// What every step of a window's scoring reads.
struct WindowContext {
    window: u64,
    window_seed: u64,
    eval_seed: u64,
    /// The uids whose page ranges the window's assignment covers.
    assigned_uids: u64,
    params: scoring::ScoringParams,
    checkpoint: Checkpoint,
    /// Every registered uid but this validator's.
    miners: Vec<Neuron>,
    /// The commitments collected before the window closed.
    collected: BTreeMap<u16, pb::Commitment>,
    bans: Bans,
    ledger: ResidualLedger,
    batches: Arc<Vec<task::Batch>>,
    /// The checkpoint's losses on `batches`.
    base: Vec<f32>,
    reference: Reference,
}

/// The validator's own training of the window.
struct Reference {
    dense: Vec<f32>,
    /// As a miner sends it: compressed with the validator's own error-feedback residual.
    sent: Arc<Vec<f32>>,
    residual_in: Vec<f32>,
    residual_out: Vec<f32>,
    /// The norm of `sent` over each parameter group (empty for a whole-model task).
    group_norms: Vec<f64>,
    /// What `sent` over each parameter group gains alone on the eval batches (empty for a
    /// whole-model task).
    group_gains: Vec<f64>,
}

/// The window's work as measured and checked so far.
#[derive(Default)]
struct Work {
    evidence: Vec<MinerEvidence>,
    gradients: BTreeMap<u16, Fetched>,
    rejections: BTreeMap<u16, Rejection>,
    /// The norm every gradient of each parameter group is clipped to
    /// (`scoring::decide::group_clip_norms`).
    clips: Vec<f64>,
    audits: Vec<AuditFinding>,
}

impl Work {
    /// The frauds to report: uid, hotkey and the digest of (commitment signature, reason).
    fn frauds(&self, ctx: &WindowContext) -> Vec<(u16, AccountId, [u8; 32])> {
        self.evidence
            .iter()
            .filter_map(|m| {
                let (reason, g) = (m.fraud.as_ref()?, self.gradients.get(&m.uid)?);
                let mut bytes = g.commitment.signature.clone();
                bytes.extend_from_slice(reason.as_bytes());
                let offender = ctx.miners.iter().find(|n| n.uid == m.uid)?.hotkey;
                Some((m.uid, offender, subnet_proto::digest(&bytes)))
            })
            .collect()
    }

    /// Each miner's result, from its decision.
    fn results(&mut self, ctx: &WindowContext, decisions: Vec<MinerDecision>) -> Vec<MinerResult> {
        decisions
            .into_iter()
            .zip(&ctx.miners)
            .map(|(d, n)| MinerResult {
                uid: d.uid,
                hotkey: n.hotkey,
                usefulness: d.usefulness,
                assignment: d.assignment,
                contribution: d.contribution,
                rejection: self.rejections.remove(&d.uid),
                audited: self.audits.iter().any(|f| f.record.uid == d.uid),
                verdict: d.verdict,
                score: d.score,
                moving_average: d.moving_average,
                weight: d.weight,
            })
            .collect()
    }
}

/// The window's outer step.
struct Step {
    aggregated: Vec<u16>,
    /// The clip norm of each aggregated gradient (its group's).
    caps: Vec<f64>,
    next: Checkpoint,
    momentum_before: Vec<f32>,
    momentum_after: Vec<f32>,
}

/// A gradient that arrived intact.
struct Fetched {
    commitment: pb::Commitment,
    payload: Vec<u8>,
    /// The decoded payload as a whole-model vector (zero outside the miner's group).
    values: Vec<f32>,
    /// The parameter group the miner trained this window.
    group: task::groups::ParamGroup,
}

/// What an audit found.
struct AuditFinding {
    record: AuditRecord,
    /// The miner could not be reached: audit it again next window.
    incomplete: bool,
}

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
        let saved_error = |message: String| ValidatorError::SavedCheckpoint {
            dir: store.root().display().to_string(),
            message,
        };
        let (checkpoint, saved, momentum, reference_residual) = match store.load_state()? {
            Some(saved) => {
                let digest = subnet_proto::bytes32(
                    "checkpoint",
                    &hex::decode(&saved.checkpoint).unwrap_or_default(),
                )
                .map_err(saved_error)?;
                let bytes = store.blob(&digest)?;
                let checkpoint = Checkpoint::from_bytes(
                    &bytes,
                    &engine.digest(),
                    engine.num_params(),
                    Some(&digest),
                )
                .map_err(|e| saved_error(e.to_string()))?;
                tracing::info!(window = saved.window, checkpoint = %checkpoint.short_digest(), miners = saved.averages.len(), "resumed from the data directory");
                let momentum = match &saved.momentum {
                    Some(hex_digest) => {
                        aggregation::load_vector(&store, hex_digest, engine.num_params())
                            .map_err(saved_error)?
                    }
                    None => Vec::new(),
                };
                let reference_residual = match &saved.reference_residual {
                    Some(hex_digest) => {
                        aggregation::load_vector(&store, hex_digest, engine.num_params())
                            .map_err(saved_error)?
                    }
                    None => Vec::new(),
                };
                (checkpoint, saved, momentum, reference_residual)
            }
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
            pending_audits: saved.pending_audits,
            audited_hotkeys: saved.audited_hotkeys,
            audit_secret: saved.audit_secret.unwrap_or_else(random_u64),
            collected: BTreeMap::new(),
            scored: None,
        };
        Self {
            inner: Arc::new(Inner {
                chain,
                netuid,
                hotkey,
                engine,
                deadline: Duration::from_secs(60),
                audit_period: Mutex::new(None),
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
                    checkpoint: hex::encode(state.checkpoint.digest),
                    window: state.checkpoint_window,
                    averages: state.averages.clone(),
                    pending_reveals: state.pending_reveals.clone(),
                    momentum: None,
                    bans: state.bans.clone(),
                    ledger: state.ledger.clone(),
                    pending_audits: state.pending_audits.clone(),
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
        AccountId::from(&self.inner.hotkey)
    }

    pub fn engine(&self) -> &Arc<TaskEngine> {
        &self.inner.engine
    }

    pub fn chain(&self) -> &C {
        &self.inner.chain
    }

    pub fn netuid(&self) -> u16 {
        self.inner.netuid
    }

    pub(crate) fn keypair(&self) -> &Keypair {
        &self.inner.hotkey
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
            .find(|c| c.digest.as_slice() == digest)
            .cloned()
    }

    fn gatherer(&self) -> Gatherer<'_> {
        Gatherer {
            keypair: &self.inner.hotkey,
            engine: &self.inner.engine,
            deadline: self.inner.deadline,
        }
    }

    /// A per-window eval seed that miners cannot predict: derived from a (randomized) sr25519
    /// signature of this validator over the window.
    fn eval_seed(&self, window: u64, window_seed: u64) -> u64 {
        let mut message = b"subnet-eval-seed".to_vec();
        message.extend_from_slice(&window.to_le_bytes());
        message.extend_from_slice(&window_seed.to_le_bytes());
        let digest = subnet_proto::digest(&self.inner.hotkey.sign(&message).0);
        u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
    }

    /// Collects the commitments of `window` from every miner that has not given one yet; call it
    /// while the window is open (again and again: miners commit when they finish training). A
    /// commitment that arrives once the window has closed on chain is dropped. Returns how many
    /// commitments are held for the window.
    pub async fn collect_commitments(&self, window: u64) -> Result<usize, ValidatorError> {
        let metagraph = self.chain().metagraph(self.netuid()).await?;
        let me = self.own_uid(&metagraph)?;
        let held: Vec<u16> = self
            .state()
            .collected
            .get(&window)
            .map(|c| c.keys().copied().collect())
            .unwrap_or_default();
        let missing: Vec<&Neuron> = metagraph
            .neurons
            .iter()
            .filter(|n| n.uid != me && n.axon.is_some() && !held.contains(&n.uid))
            .collect();
        let gatherer = Gatherer {
            deadline: Duration::from_secs(5),
            ..self.gatherer()
        };
        let fetched = futures::future::join_all(
            missing
                .iter()
                .map(|n| async { (n.uid, gatherer.commitment(n, window).await) }),
        )
        .await;
        let close = self.engine().spec().window.close_block(window);
        if self.chain().current_block().await? >= close {
            tracing::debug!(window, "commitments arrived after the window closed");
            return Ok(held.len());
        }
        let mut state = self.state_mut();
        let collected = state.collected.entry(window).or_default();
        for (uid, outcome) in fetched {
            match outcome {
                Ok(c) => {
                    collected.entry(uid).or_insert(c);
                }
                Err(e) => tracing::debug!(window, uid, reason = %e, "no commitment yet"),
            }
        }
        let count = collected.len();
        while state.collected.len() > KEPT_COLLECTIONS {
            state.collected.pop_first();
        }
        if count > held.len()
            && let Some(store) = &self.inner.store
        {
            let kept = state
                .collected
                .iter()
                .map(|(w, c)| {
                    let c = c
                        .iter()
                        .map(|(uid, c)| (*uid, hex::encode(prost::Message::encode_to_vec(c))))
                        .collect();
                    (*w, c)
                })
                .collect();
            drop(state);
            store.save_commitments(&kept)?;
        }
        Ok(count)
    }

    /// Whether commitments for `window` were collected (in this run, or kept in the data directory
    /// by an earlier one).
    pub fn holds_commitments(&self, window: u64) -> bool {
        self.state()
            .collected
            .get(&window)
            .is_some_and(|c| !c.is_empty())
    }

    fn own_uid(&self, metagraph: &Metagraph) -> Result<u16, ValidatorError> {
        metagraph
            .by_hotkey(&self.hotkey())
            .map(|n| n.uid)
            .ok_or_else(|| ValidatorError::NotRegistered {
                hotkey: self.hotkey().to_string(),
                netuid: self.netuid(),
            })
    }

    /// Scores `window` (closed on chain), in the protocol's steps: follow the lead's checkpoint,
    /// measure the window's start and train the reference, gather the committed work, measure each
    /// gradient, check the work (audits, residual chains, assignment), score what each adds,
    /// decide, put weights and fraud reports on chain, aggregate, record.
    #[tracing::instrument(skip(self), fields(hotkey = %self.hotkey().short()))]
    pub async fn run_window(
        &self,
        window: u64,
        window_seed: u64,
    ) -> Result<WindowOutcome, ValidatorError> {
        let mut timings = Timings::default();
        let metagraph = self.chain().metagraph(self.netuid()).await?;
        let adopted = self.follow_lead(window, &metagraph).await;
        let ctx = self.start_window(window, window_seed, &metagraph).await?;
        timings.lap("reference");
        let fetched = self.gather(&ctx).await;
        timings.lap("gather");
        let mut work = self.measure(&ctx, fetched).await?;
        timings.lap("usefulness");
        self.check_work(&ctx, &mut work).await?;
        timings.lap("audits and assignment");
        let evidence = self.contributions(&ctx, &work).await?;
        timings.lap("contribution");
        let averages_before = self.averages();
        let decisions = decide(&evidence, &ctx.params, &averages_before);
        self.carry_over(&ctx, &work, &decisions);
        let version = self.engine().spec().task.version;
        let (reveals, weights_set, weights_committed) =
            self.put_weights(window, &decisions, version).await;
        let fraud_reports = self.report_frauds(window, work.frauds(&ctx)).await;
        timings.lap("chain");
        let step = self.aggregate(&ctx, &work, &decisions);
        self.record(
            &ctx,
            &work,
            &evidence,
            &step,
            averages_before,
            (&weights_set, weights_committed),
        )?;
        timings.lap("aggregate and record");
        tracing::info!(window, seconds = ?timings.0, "window scored");

        let outcome = WindowOutcome {
            window,
            eval_seed: ctx.eval_seed,
            base_loss: ctx.base.iter().map(|&l| l as f64).sum::<f64>()
                / ctx.base.len().max(1) as f64,
            reference_norm: evidence.reference_norm,
            checkpoint_before: ctx.checkpoint.digest,
            checkpoint_after: step.next.digest,
            results: work.results(&ctx, decisions),
            aggregated: step.aggregated.clone(),
            weights_set,
            weights_committed,
            reveals,
            fraud_reports,
            adopted,
            timings: timings.0,
        };
        self.close_window(ctx, work, step)?;
        Ok(outcome)
    }

    /// The window's starting point: its checkpoint, the miners, the eval batches drawn by the
    /// validator's secret seed and the checkpoint's losses on them, and the validator's own
    /// training of the window.
    async fn start_window(
        &self,
        window: u64,
        window_seed: u64,
        metagraph: &Metagraph,
    ) -> Result<WindowContext, ValidatorError> {
        let me = self.own_uid(metagraph)?;
        let engine = self.engine().clone();
        let (checkpoint, _) = self.checkpoint();
        let eval_seed = self.eval_seed(window, window_seed);
        let assigned_uids = metagraph.uid_slots();
        let residual_in = self.state().reference_residual.clone();
        let (batches, base, reference) = {
            let (engine, params, residual) = (
                engine.clone(),
                checkpoint.params.clone(),
                residual_in.clone(),
            );
            blocking(move || {
                let batches =
                    evaluate::eval_batches(&engine, window_seed, assigned_uids, eval_seed);
                let base = evaluate::losses(&engine, &params, &batches);
                let dense = evaluate::reference(
                    &engine,
                    &params,
                    window,
                    window_seed,
                    assigned_uids,
                    eval_seed,
                );
                let (sent, residual_out) = evaluate::reference_payload(&engine, &dense, &residual);
                let group_norms = evaluate::group_norms(&engine, &sent);
                let group_gains = evaluate::group_gains(&engine, &params, &sent, &base, &batches);
                (
                    Arc::new(batches),
                    base,
                    Reference {
                        dense,
                        sent: Arc::new(sent),
                        residual_in: residual,
                        residual_out,
                        group_norms,
                        group_gains,
                    },
                )
            })
            .await?
        };
        let (collected, bans, ledger) = {
            let state = self.state();
            (
                state.collected.get(&window).cloned().unwrap_or_default(),
                state.bans.clone(),
                state.ledger.clone(),
            )
        };
        Ok(WindowContext {
            window,
            window_seed,
            eval_seed,
            assigned_uids,
            params: engine.spec().scoring.params(),
            checkpoint,
            miners: metagraph
                .neurons
                .iter()
                .filter(|n| n.uid != me)
                .cloned()
                .collect(),
            collected,
            bans,
            ledger,
            batches,
            base,
            reference,
        })
    }

    /// Each gathered gradient's norm, residual chain and loss on its own (clipped to the window's
    /// clip norm, at the evaluation step).
    async fn measure(
        &self,
        ctx: &WindowContext,
        fetched: Vec<(Neuron, Result<Fetched, Rejection>)>,
    ) -> Result<Work, ValidatorError> {
        let engine = self.engine();
        let zero = zero_residual_digest(engine.num_params());
        let mut work = Work::default();
        for (neuron, outcome) in fetched {
            let hotkey = neuron.hotkey.to_string();
            let mut miner = MinerEvidence {
                uid: neuron.uid,
                hotkey: hotkey.clone(),
                refused: None,
                norm: 0.0,
                after: Vec::new(),
                assignment: None,
                fraud: None,
                banned_until: ctx
                    .bans
                    .get(&neuron.uid)
                    .filter(|(h, _)| *h == hotkey)
                    .map(|(_, until)| *until),
                audited_clean: false,
                without: Vec::new(),
                group: 0,
            };
            match outcome {
                Ok(f) => {
                    miner.fraud = ctx.ledger.check(neuron.uid, &hotkey, &f.commitment, &zero);
                    miner.norm = l2_norm(&f.values);
                    miner.group = f.group.index;
                    work.gradients.insert(neuron.uid, f);
                }
                Err(rejection) => {
                    tracing::info!(uid = neuron.uid, reason = %rejection, "gradient refused");
                    miner.refused = Some(rejection.to_string());
                    work.rejections.insert(neuron.uid, rejection);
                }
            }
            work.evidence.push(miner);
        }
        work.clips = scoring::decide::group_clip_norms(
            &work.evidence,
            l2_norm(&ctx.reference.sent),
            &ctx.reference.group_norms,
        );
        for m in work.evidence.iter_mut() {
            let Some(g) = work.gradients.get(&m.uid) else {
                continue;
            };
            let clip = work.clips[m.group];
            tracing::info!(uid = m.uid, norm_ratio = m.norm / clip, "gradient measured");
            let (engine, params, batches, values) = (
                engine.clone(),
                ctx.checkpoint.params.clone(),
                ctx.batches.clone(),
                g.values.clone(),
            );
            let after =
                blocking(move || evaluate::losses_after(&engine, &params, &values, clip, &batches))
                    .await?;
            if after.iter().all(|l| l.is_finite()) {
                m.after = after;
            } else {
                work.gradients.remove(&m.uid);
                m.refused = Some(Rejection::NonFiniteLoss.to_string());
                work.rejections.insert(m.uid, Rejection::NonFiniteLoss);
            }
        }
        Ok(work)
    }

    /// Audits the miners due this window, runs the assignment check on the rest that pass every
    /// earlier gate (against the validator's own training as the control), and audits at once any
    /// miner that fails it: only the audit decides.
    async fn check_work(&self, ctx: &WindowContext, work: &mut Work) -> Result<(), ValidatorError> {
        let due = self.due_audits(ctx.window, &ctx.miners, &work.gradients);
        let found = self.audit(ctx, &work.gradients, &due).await?;
        apply_audits(&mut work.evidence, &found);
        work.audits.extend(found);

        let (window, params) = (ctx.window, &ctx.params);
        let mut suspects = Vec::new();
        for m in work.evidence.iter_mut() {
            let clip = work.clips.get(m.group).copied().unwrap_or(0.0);
            let gate = screen(m, window, &ctx.base, clip, params);
            if !matches!(gate, Some(Verdict::WrongPages { .. })) {
                continue;
            }
            let uid = m.uid;
            let fetched = &work.gradients[&uid];
            // The control is the validator's training over the same group as the miner's.
            let control = if self.engine().groups().is_whole() {
                ctx.reference.sent.clone()
            } else {
                Arc::new(task::groups::masked(
                    &ctx.reference.sent,
                    &fetched.group.range,
                ))
            };
            let (engine, start, gradient) = (
                self.engine().clone(),
                ctx.checkpoint.params.clone(),
                fetched.values.clone(),
            );
            let (window_seed, eval_seed) = (ctx.window_seed, ctx.eval_seed);
            let assignment = blocking(move || {
                evaluate::assignment_evidence(
                    &engine,
                    &start,
                    &gradient,
                    &control,
                    clip,
                    window,
                    window_seed,
                    eval_seed,
                    uid,
                )
            })
            .await?;
            m.assignment = assignment.filter(|a| {
                [
                    &a.control_own,
                    &a.after_own,
                    &a.control_held_back,
                    &a.after_held_back,
                    &a.base_held_back,
                ]
                .iter()
                .all(|v| v.iter().all(|l| l.is_finite()))
            });
            if matches!(
                screen(m, window, &ctx.base, clip, params),
                Some(Verdict::WrongPages { .. })
            ) {
                suspects.push(uid);
            }
        }
        if !suspects.is_empty() {
            tracing::info!(
                window,
                ?suspects,
                "auditing the miners that failed the assignment check"
            );
            let found = self.audit(ctx, &work.gradients, &suspects).await?;
            apply_audits(&mut work.evidence, &found);
            work.audits.extend(found);
        }
        Ok(())
    }

    /// The window's evidence, with what each candidate adds to the aggregate of all of them at the
    /// aggregate's own step, and the candidates' similarities.
    async fn contributions(
        &self,
        ctx: &WindowContext,
        work: &Work,
    ) -> Result<WindowEvidence, ValidatorError> {
        let mut evidence = WindowEvidence {
            window: ctx.window,
            base: ctx.base.clone(),
            reference_norm: l2_norm(&ctx.reference.sent),
            reference_group_norms: ctx.reference.group_norms.clone(),
            reference_group_gains: ctx.reference.group_gains.clone(),
            miners: work.evidence.clone(),
            similarities: Vec::new(),
            aggregate: Vec::new(),
        };
        let uids = candidates(&evidence, &ctx.params);
        let values: Vec<Vec<f32>> = uids
            .iter()
            .map(|u| work.gradients[u].values.clone())
            .collect();
        evidence.similarities = pairwise_similarity(
            &uids
                .iter()
                .zip(&values)
                .map(|(u, v)| (*u, v.as_slice()))
                .collect::<Vec<_>>(),
        );
        let caps: Vec<f64> = uids
            .iter()
            .map(|u| work.clips[work.gradients[u].group.index])
            .collect();
        let (engine, params, batches) = (
            self.engine().clone(),
            ctx.checkpoint.params.clone(),
            ctx.batches.clone(),
        );
        let (aggregate, without) = blocking(move || {
            let refs: Vec<&[f32]> = values.iter().map(Vec::as_slice).collect();
            evaluate::leave_one_out(&engine, &params, &refs, &caps, &batches)
        })
        .await?;
        evidence.aggregate = aggregate;
        for (uid, losses) in uids.iter().zip(without) {
            if let Some(m) = evidence.miners.iter_mut().find(|m| m.uid == *uid) {
                m.without = losses;
            }
        }
        Ok(evidence)
    }

    /// What carries over to the next window: moving averages, bans, the residual ledger and the
    /// audits still to complete.
    fn carry_over(&self, ctx: &WindowContext, work: &Work, decisions: &[MinerDecision]) {
        let mut state = self.state_mut();
        state.averages = averages_after(decisions);
        state.bans = bans_after(&ctx.bans, decisions, ctx.window, &ctx.params);
        for (uid, c) in &ctx.collected {
            if let Some(n) = ctx.miners.iter().find(|n| n.uid == *uid) {
                state.ledger.record(*uid, &n.hotkey.to_string(), c);
            }
        }
        for finding in &work.audits {
            let uid = finding.record.uid;
            match ctx.miners.iter().find(|n| n.uid == uid) {
                Some(n) if finding.incomplete => {
                    state.pending_audits.insert(uid, n.hotkey.to_string());
                }
                Some(n) => {
                    state.pending_audits.remove(&uid);
                    state.audited_hotkeys.insert(uid, n.hotkey.to_string());
                }
                None => {
                    state.pending_audits.remove(&uid);
                }
            }
        }
    }

    /// The next checkpoint: the earners (at most `aggregate_top`, none if fewer than
    /// `aggregate_min`) clipped to the clip norm and summed in uid order, with the outer step.
    fn aggregate(&self, ctx: &WindowContext, work: &Work, decisions: &[MinerDecision]) -> Step {
        let scoring = &self.engine().spec().scoring;
        let aggregated = aggregation_order(decisions, scoring.aggregate_top, scoring.aggregate_min);
        let momentum_before = self.state().momentum.clone();
        let deltas: Vec<&[f32]> = aggregated
            .iter()
            .map(|u| work.gradients[u].values.as_slice())
            .collect();
        let caps: Vec<f64> = aggregated
            .iter()
            .map(|u| work.clips[work.gradients[u].group.index])
            .collect();
        let (next, momentum_after) = next_checkpoint(
            self.engine(),
            &ctx.checkpoint,
            &momentum_before,
            &deltas,
            &caps,
        );
        Step {
            aggregated,
            caps,
            next,
            momentum_before,
            momentum_after,
        }
    }

    /// Appends the window to the replay log, after the blobs it names.
    fn record(
        &self,
        ctx: &WindowContext,
        work: &Work,
        evidence: &WindowEvidence,
        step: &Step,
        averages_before: Averages,
        (weights_set, committed): (&WeightsSet, bool),
    ) -> Result<(), ValidatorError> {
        let Some(store) = &self.inner.store else {
            return Ok(());
        };
        let mut gradients = Vec::new();
        for (uid, g) in &work.gradients {
            store.put_blob(&g.payload)?;
            gradients.push(GradientRecord {
                uid: *uid,
                payload_digest: hex::encode(&g.commitment.payload_digest),
                commitment_signature: hex::encode(&g.commitment.signature),
                residual_out_digest: hex::encode(&g.commitment.residual_out_digest),
                group_capacity: g.commitment.group_capacity,
            });
        }
        let reference = store.put_blob(&codec::encode_dense(&ctx.reference.dense))?;
        store.put_blob(&ctx.checkpoint.to_bytes())?;
        store.put_blob(&step.next.to_bytes())?;
        let (uids, values, error) = match weights_set {
            Ok((u, v)) => (u.clone(), v.clone(), None),
            Err(e) => (Vec::new(), Vec::new(), Some(e.clone())),
        };
        store.append_record(&WindowRecord {
            window: ctx.window,
            window_seed: ctx.window_seed,
            eval_seed: ctx.eval_seed,
            assigned_uids: ctx.assigned_uids,
            reference: hex::encode(reference),
            reference_residual: store_vector(store, &ctx.reference.residual_in)?,
            task_digest: hex::encode(self.engine().digest()),
            checkpoint_before: hex::encode(ctx.checkpoint.digest),
            checkpoint_after: hex::encode(step.next.digest),
            momentum_before: store_vector(store, &step.momentum_before)?,
            momentum_after: store_vector(store, &step.momentum_after)?,
            scoring: ctx.params.clone(),
            evidence: evidence.clone(),
            gradients,
            averages_before,
            bans_before: ctx.bans.clone(),
            audits: work.audits.iter().map(|f| f.record.clone()).collect(),
            aggregated: step.aggregated.clone(),
            weights: WeightsRecord {
                uids,
                values,
                error,
                committed,
            },
        })?;
        Ok(())
    }

    /// Makes the window's next checkpoint current, keeps what the next window's lead check needs,
    /// and saves the state.
    fn close_window(
        &self,
        ctx: WindowContext,
        work: Work,
        step: Step,
    ) -> Result<(), ValidatorError> {
        let recipe = Recipe {
            previous: ctx.checkpoint.digest,
            aggregated: step
                .aggregated
                .iter()
                .map(|u| (*u, work.gradients[u].commitment.clone()))
                .collect(),
            clip_norm: work.clips[0],
            clip_norms: step.caps.clone(),
        };
        {
            let mut state = self.state_mut();
            // As a miner does, the reference's error feedback starts over when the model did not
            // move.
            state.reference_residual = if step.next.digest == ctx.checkpoint.digest {
                Vec::new()
            } else {
                ctx.reference.residual_out
            };
            state.momentum = step.momentum_after;
            state.collected.remove(&ctx.window);
            state.scored = Some(Scored {
                window: ctx.window,
                checkpoint: ctx.checkpoint,
                momentum: step.momentum_before,
                gathered: work
                    .gradients
                    .into_iter()
                    .map(|(u, f)| (u, (f.commitment, f.values)))
                    .collect(),
            });
        }
        self.advance(ctx.window + 1, step.next, Some(recipe));
        self.save_state()
    }

    /// Fetches the payload of every miner's collected commitment, `MAX_CONCURRENT_FETCHES` at a time
    /// (results in the miners' order).
    async fn gather(&self, ctx: &WindowContext) -> Vec<(Neuron, Result<Fetched, Rejection>)> {
        let gatherer = self.gatherer();
        let (window, checkpoint, collected) = (ctx.window, &ctx.checkpoint.digest, &ctx.collected);
        let window_seed = ctx.window_seed;
        let fetches = ctx.miners.iter().map(|neuron| {
            let gatherer = &gatherer;
            async move {
                let fetched = async {
                    let commitment = collected.get(&neuron.uid).ok_or(Rejection::NotCommitted)?;
                    if commitment.checkpoint_digest.as_slice() != checkpoint {
                        return Err(Rejection::Commitment(
                            subnet_proto::commitment::CommitmentError::WrongCheckpoint {
                                expected: hex::encode(checkpoint),
                                found: hex::encode(&commitment.checkpoint_digest),
                            },
                        ));
                    }
                    let group = gatherer.group_of(window_seed, neuron.uid, commitment)?;
                    let payload = gatherer
                        .part(neuron, window, pb::GradientPart::Payload, commitment)
                        .await?;
                    let values = gatherer.decode(&payload, &group.range)?;
                    Ok(Fetched {
                        commitment: commitment.clone(),
                        payload,
                        values,
                        group,
                    })
                }
                .await;
                (neuron.clone(), fetched)
            }
        });
        futures::StreamExt::collect(futures::StreamExt::buffered(
            futures::stream::iter(fetches),
            MAX_CONCURRENT_FETCHES,
        ))
        .await
    }

    /// The miners with a gradient this window that are due an audit: a hotkey in the first window
    /// it contributes to, then once per audit period at a window drawn from the validator's secret,
    /// and every window while an earlier audit could not complete.
    fn due_audits(
        &self,
        window: u64,
        miners: &[Neuron],
        gradients: &BTreeMap<u16, Fetched>,
    ) -> Vec<u16> {
        let (secret, pending, audited_before) = {
            let state = self.state();
            (
                state.audit_secret,
                state.pending_audits.clone(),
                state.audited_hotkeys.clone(),
            )
        };
        let period = self.audit_period();
        if period == 0 {
            return Vec::new();
        }
        gradients
            .keys()
            .filter(|uid| {
                let hotkey = miners
                    .iter()
                    .find(|n| n.uid == **uid)
                    .map(|n| n.hotkey.to_string());
                // A hotkey is audited in the first window it contributes to, then at a random
                // window of each period, and again every window while an audit could not complete.
                audited(secret, **uid, window, period)
                    || audited_before.get(uid) != hotkey.as_ref()
                    || pending.get(uid).is_some_and(|h| Some(h) == hotkey.as_ref())
            })
            .copied()
            .collect()
    }

    /// Audits `uids`: each serves its dense gradient and incoming residual, which must give its
    /// payload byte for byte, and the dense gradient must match the re-executed window.
    async fn audit(
        &self,
        ctx: &WindowContext,
        gradients: &BTreeMap<u16, Fetched>,
        uids: &[u16],
    ) -> Result<Vec<AuditFinding>, ValidatorError> {
        let (miners, window, window_seed, checkpoint) =
            (&ctx.miners, ctx.window, ctx.window_seed, &ctx.checkpoint);
        let tolerance = self.engine().spec().scoring.spot_check_tolerance;
        let mut findings = Vec::new();
        for (uid, fetched) in gradients.iter().filter(|(uid, _)| uids.contains(uid)) {
            let neuron = miners
                .iter()
                .find(|n| n.uid == *uid)
                .expect("gradients come from the metagraph");
            let gatherer = self.gatherer();
            let c = &fetched.commitment;
            let served = async {
                let dense = gatherer
                    .part(neuron, window, pb::GradientPart::Dense, c)
                    .await?;
                let residual = gatherer
                    .part(neuron, window, pb::GradientPart::Residual, c)
                    .await?;
                Ok::<_, Rejection>((dense, residual))
            }
            .await;
            let mut record = AuditRecord {
                uid: *uid,
                dense_digest: None,
                residual_digest: None,
                relative_difference: None,
                failure: None,
            };
            let (dense_bytes, residual_bytes) = match served {
                Ok(parts) => parts,
                Err(e @ (Rejection::Unreachable(_) | Rejection::Timeout { .. })) => {
                    record.failure = Some(format!(
                        "audit: its dense gradient and residual could not be fetched ({e}); audited again next window"
                    ));
                    findings.push(AuditFinding {
                        record,
                        incomplete: true,
                    });
                    continue;
                }
                Err(e) => {
                    record.failure = Some(format!(
                        "audit: it did not serve the dense gradient and residual it committed to ({e})"
                    ));
                    findings.push(AuditFinding {
                        record,
                        incomplete: false,
                    });
                    continue;
                }
            };
            record.dense_digest = Some(hex::encode(subnet_proto::digest(&dense_bytes)));
            record.residual_digest = Some(hex::encode(subnet_proto::digest(&residual_bytes)));
            // Kept as blobs now (the record that names them is appended later), so that a window
            // holds one miner's audit artefacts at a time.
            if let Some(store) = &self.inner.store {
                store.put_blob(&dense_bytes)?;
                store.put_blob(&residual_bytes)?;
            }
            let (engine, params, c, payload, range) = (
                self.engine().clone(),
                checkpoint.params.clone(),
                c.clone(),
                fetched.payload.clone(),
                fetched.group.range.clone(),
            );
            let uid = *uid;
            let checked = blocking(move || {
                let dense =
                    verify_artefacts(&engine, &c, &payload, &dense_bytes, &residual_bytes, &range)?;
                let reexecuted =
                    evaluate::reexecute(&engine, &params, window, window_seed, uid, range)
                        .ok_or_else(|| format!("uid {uid} has no assignment"))?;
                Ok::<f64, String>(relative_difference(&dense, &reexecuted))
            })
            .await?;
            match checked {
                Ok(difference) => {
                    record.relative_difference = Some(difference);
                    tracing::info!(uid, relative_difference = difference, "audit");
                    if !reproduces(difference, tolerance) {
                        record.failure = Some(format!(
                            "audit: its dense gradient differs from the re-executed training by {difference:.3e} (relative L2), beyond the backend tolerance {tolerance}"
                        ));
                    }
                }
                Err(reason) => record.failure = Some(format!("audit: {reason}")),
            }
            findings.push(AuditFinding {
                record,
                incomplete: false,
            });
        }
        Ok(findings)
    }

    /// Sets (or commits) the window's weights after revealing earlier commits that are due.
    async fn put_weights(
        &self,
        window: u64,
        decisions: &[scoring::MinerDecision],
        version_key: u64,
    ) -> (Vec<(u64, Result<(), String>)>, WeightsSet, bool) {
        let (hotkey, netuid) = (&self.inner.hotkey, self.netuid());
        let pending = std::mem::take(&mut self.state_mut().pending_reveals);
        let (reveals, mut keep) = weights::reveal_due(self.chain(), hotkey, netuid, pending).await;
        let mut committed = false;
        let weights_set = if decisions.iter().any(|d| d.weight > 0.0) {
            let uids: Vec<u16> = decisions.iter().map(|d| d.uid).collect();
            let weights: Vec<f64> = decisions.iter().map(|d| d.weight).collect();
            match weights_to_u16(&uids, &weights) {
                Ok(row) => {
                    let persist = |commit: &PendingReveal| {
                        let all: Vec<PendingReveal> =
                            keep.iter().cloned().chain([commit.clone()]).collect();
                        self.save_reveals(&all)
                    };
                    match weights::submit(
                        self.chain(),
                        hotkey,
                        netuid,
                        window,
                        row.clone(),
                        version_key,
                        persist,
                    )
                    .await
                    {
                        Ok(submitted) => {
                            committed = submitted != weights::Submitted::Set;
                            if let weights::Submitted::Committed(commit) = submitted {
                                keep.push(commit);
                            }
                            Ok(row)
                        }
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e.to_string()),
            }
        } else {
            Err("no miner has earned weight yet".to_string())
        };
        if let Err(e) = &weights_set {
            tracing::warn!(window, error = %e, "weights not set");
        }
        if let Err(e) = self.save_reveals(&keep) {
            tracing::warn!(window, error = %e, "cannot save the pending reveals");
        }
        self.state_mut().pending_reveals = keep;
        (reveals, weights_set, committed)
    }

    /// Keeps the commits still to reveal in the data directory (when there is one).
    fn save_reveals(&self, reveals: &[PendingReveal]) -> Result<(), String> {
        match &self.inner.store {
            Some(store) => store.save_reveals(reveals).map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    /// Reports each fraud to the chain (on the local chain, enough reports slash the miner's stake).
    async fn report_frauds(
        &self,
        window: u64,
        frauds: Vec<(u16, AccountId, [u8; 32])>,
    ) -> Vec<(u16, Result<FraudOutcome, String>)> {
        let mut reports = Vec::new();
        for (uid, offender, evidence) in frauds {
            let outcome = self
                .chain()
                .report_fraud(
                    &self.inner.hotkey,
                    self.netuid(),
                    offender,
                    window,
                    evidence,
                )
                .await
                .map_err(|e| e.to_string());
            match &outcome {
                Ok(outcome) => tracing::info!(window, uid, ?outcome, "reported fraud"),
                Err(e) => tracing::warn!(window, uid, error = %e, "fraud report refused"),
            }
            reports.push((uid, outcome));
        }
        reports
    }

    /// With several validators, the lead's checkpoint (most stake) is the one miners trained
    /// `window` from. A validator that is not the lead takes it, after recomputing it from the
    /// gradients it gathered itself in the window before; it refuses a checkpoint whose recipe gives
    /// another one, and takes it unverified (logged) when it did not gather every gradient the recipe
    /// names.
    async fn follow_lead(&self, window: u64, metagraph: &Metagraph) -> Option<Adoption> {
        let lead = *metagraph.validators_by_stake().first()?;
        if lead.hotkey == self.hotkey() {
            return None;
        }
        let addr = lead.axon?;
        let adopt = async {
            let mut client = CheckpointClient::connect(addr, self.keypair(), lead.hotkey.0).await?;
            let latest = client.latest().await?;
            let digest = subnet_proto::bytes32("digest", &latest.digest)?;
            if latest.window != window {
                return Err(format!(
                    "the lead's checkpoint is for window {}, not {window}",
                    latest.window
                ));
            }
            let (own, own_window) = self.checkpoint();
            if own.digest == digest && own_window == window {
                return Ok(None);
            }
            let recipe = recipe_of(&latest)?;
            let recomputed = {
                let state = self.state();
                match (&state.scored, &recipe) {
                    (Some(s), Some(r))
                        if s.window + 1 == window && s.checkpoint.digest == r.previous =>
                    {
                        Some(recompute(
                            self.engine(),
                            &s.checkpoint,
                            &s.momentum,
                            r,
                            &s.gathered,
                            &digest,
                        ))
                    }
                    _ => None,
                }
            };
            let engine = self.engine();
            let (checkpoint, momentum, verified) = match recomputed {
                Some(Recomputation::Confirmed(checkpoint, momentum)) => {
                    (checkpoint, Some(momentum), true)
                }
                Some(Recomputation::Differs { recomputed }) => {
                    return Err(format!(
                        "its recipe gives checkpoint {}, not the {} it serves: not adopted",
                        hex::encode(recomputed),
                        hex::encode(digest)
                    ));
                }
                Some(Recomputation::Missing(_)) | None => {
                    let bytes = client.download(&digest, latest.len).await?;
                    let checkpoint = Checkpoint::from_bytes(
                        &bytes,
                        &engine.digest(),
                        engine.num_params(),
                        Some(&digest),
                    )
                    .map_err(|e| e.to_string())?;
                    (checkpoint, None, false)
                }
            };
            {
                let mut state = self.state_mut();
                if let Some(momentum) = momentum {
                    state.momentum = momentum;
                }
            }
            self.advance(window, checkpoint, None);
            Ok(Some(Adoption {
                lead: lead.uid,
                digest,
                verified,
            }))
        };
        match adopt.await {
            Ok(adoption) => {
                if let Some(a) = &adoption {
                    tracing::info!(window, lead = a.lead, checkpoint = %hex::encode(&a.digest[..4]), verified = a.verified, "adopted the lead's checkpoint");
                }
                adoption
            }
            Err(e) => {
                tracing::warn!(window, lead = lead.uid, error = %e, "keeping this validator's own checkpoint");
                None
            }
        }
    }

    /// Makes `checkpoint` the global model from `window` on; `recipe` says how it was made here.
    pub fn advance(&self, window: u64, checkpoint: Checkpoint, recipe: Option<Recipe>) {
        let mut state = self.state_mut();
        state.recent.insert(window, checkpoint.clone());
        while state.recent.len() > KEPT_CHECKPOINTS {
            state.recent.pop_first();
        }
        state.checkpoint = checkpoint;
        state.checkpoint_window = window;
        state.recipe = recipe;
    }
}

/// Puts what audits found into the evidence: a failed audit is fraud, one that could not complete
/// refuses the gradient for this window, one that reproduced the work clears the miner.
fn apply_audits(evidence: &mut [MinerEvidence], findings: &[AuditFinding]) {
    for finding in findings {
        let Some(m) = evidence.iter_mut().find(|m| m.uid == finding.record.uid) else {
            continue;
        };
        match (&finding.record.failure, finding.incomplete) {
            (Some(reason), true) => m.refused = Some(reason.clone()),
            (Some(reason), false) => m.fraud = Some(reason.clone()),
            (None, _) => m.audited_clean = true,
        }
    }
}

/// The recipe a lead announced with its checkpoint, if it announced one.
fn recipe_of(latest: &pb::LatestCheckpointResponse) -> Result<Option<Recipe>, String> {
    if latest.previous_digest.is_empty() {
        return Ok(None);
    }
    let mut aggregated = Vec::with_capacity(latest.aggregated.len());
    let mut clip_norms = Vec::with_capacity(latest.aggregated.len());
    for a in &latest.aggregated {
        let uid = u16::try_from(a.uid).map_err(|_| format!("uid {} in the recipe", a.uid))?;
        let c = a
            .commitment
            .clone()
            .ok_or_else(|| format!("uid {uid} in the recipe has no commitment"))?;
        aggregated.push((uid, c));
        clip_norms.push(if a.clip_norm > 0.0 {
            a.clip_norm
        } else {
            latest.clip_norm
        });
    }
    Ok(Some(Recipe {
        previous: subnet_proto::bytes32("previous digest", &latest.previous_digest)?,
        aggregated,
        clip_norm: latest.clip_norm,
        clip_norms,
    }))
}

/// The state of a validator that has never run: `checkpoint` at `window`.
/// The commitments a data directory kept for `from` and later windows.
fn load_commitments(
    store: &DataDir,
    from: u64,
) -> Result<BTreeMap<u64, BTreeMap<u16, pb::Commitment>>, ValidatorError> {
    let Some(kept) = store.load_commitments()? else {
        return Ok(BTreeMap::new());
    };
    let corrupt = |message: String| {
        ValidatorError::Store(StoreError::Corrupt {
            path: store.root().join("commitments.json"),
            message,
        })
    };
    let mut collected = BTreeMap::new();
    for (window, by_uid) in kept.into_iter().filter(|(w, _)| *w >= from) {
        let mut commitments = BTreeMap::new();
        for (uid, encoded) in by_uid {
            let bytes = hex::decode(&encoded).map_err(|e| corrupt(e.to_string()))?;
            let c = <pb::Commitment as prost::Message>::decode(&bytes[..])
                .map_err(|e| corrupt(format!("window {window}, uid {uid}: {e}")))?;
            commitments.insert(uid, c);
        }
        collected.insert(window, commitments);
    }
    Ok(collected)
}

fn fresh_state(checkpoint: &Checkpoint, window: u64) -> SavedState {
    SavedState {
        checkpoint: hex::encode(checkpoint.digest),
        window,
        averages: Averages::new(),
        pending_reveals: Vec::new(),
        momentum: None,
        bans: Bans::new(),
        ledger: ResidualLedger::default(),
        pending_audits: BTreeMap::new(),
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
