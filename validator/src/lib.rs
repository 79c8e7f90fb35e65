//! The validator: probes every miner for its window gradient, scores usefulness on held-out batches
//! the miners could not know, sets weights on chain, aggregates the best gradients into the next
//! global checkpoint and serves that checkpoint to miners.

pub mod evaluate;
pub mod metrics;
mod probe;
pub mod record;
pub mod replay;
mod service;
pub mod store;

pub use probe::Rejection;
pub use record::{GradientRecord, SpotCheckRecord, WeightsRecord, WindowRecord};
pub use service::ValidatorService;
pub use store::{DataDir, PendingReveal, SavedState, StoreError};

use chain_client::{AccountId, Chain, ChainError, FraudOutcome, WeightsReveal};
use scoring::checks::{pairwise_similarity, relative_difference, reproduces};
use scoring::decide::averages_after;
use scoring::{
    AssignmentCheck, Averages, MinerDecision, MinerEvidence, UsefulnessScore, Verdict,
    WindowEvidence, decide, weights_to_u16,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use subnet_proto::{codec, pb};
use subxt_signer::sr25519::Keypair;
use task::aggregate::{aggregate_median_clipped, outer_nesterov_step, outer_sgd_step};
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
    /// Usefulness on the held-out batches, when the gradient was evaluated.
    pub usefulness: Option<UsefulnessScore>,
    /// The assignment check, for gradients that help.
    pub assignment: Option<AssignmentCheck>,
    /// Why the gradient was refused before evaluation.
    pub rejection: Option<Rejection>,
    /// Earned, or why not.
    pub verdict: Verdict,
    /// This window's score (0 for refused, harmful, copied or wrongly trained gradients).
    pub score: f64,
    pub moving_average: f64,
    /// Normalized weight this validator gave the uid this window.
    pub weight: f64,
}

/// What a validator did in one window.
#[derive(Clone, Debug)]
pub struct WindowOutcome {
    pub window: u64,
    pub eval_seed: u64,
    /// Mean held-out loss of the window's starting checkpoint on the eval batches.
    pub base_loss: f64,
    pub checkpoint_before: [u8; 32],
    pub checkpoint_after: [u8; 32],
    pub results: Vec<MinerResult>,
    pub aggregated: Vec<u16>,
    /// Set on chain (uids, u16 values), or why not.
    pub weights_set: Result<(Vec<u16>, Vec<u16>), String>,
    /// The subnet runs commit-reveal: `weights_set` was committed, to be revealed an epoch later.
    pub weights_committed: bool,
    /// Earlier windows' commits revealed in this window, by the window that committed them, with
    /// what the chain said.
    pub reveals: Vec<(u64, Result<(), String>)>,
    /// Miners reported to the chain for fraud, with what the chain did.
    pub fraud_reports: Vec<(u16, Result<FraudOutcome, String>)>,
}

impl WindowOutcome {
    pub fn result(&self, uid: u16) -> Option<&MinerResult> {
        self.results.iter().find(|r| r.uid == uid)
    }
}

struct ValidatorState {
    /// The global checkpoint at the start of the current window, and that window.
    checkpoint: Checkpoint,
    checkpoint_window: u64,
    /// Recent checkpoints by digest, so miners a window behind can still sync.
    recent: BTreeMap<u64, Checkpoint>,
    /// Moving average of scores per uid, with the hotkey it belongs to (reset when a uid changes hands).
    averages: Averages,
    /// Weights committed under commit-reveal and not yet revealed.
    pending_reveals: Vec<PendingReveal>,
    /// The outer Nesterov momentum buffer (empty: zeros, or plain SGD).
    momentum: Vec<f32>,
}

struct Inner<C> {
    chain: C,
    netuid: u16,
    hotkey: Keypair,
    engine: Arc<TaskEngine>,
    probe_deadline: Duration,
    /// Chance per miner and window of a spot check (f64 bits); the task's value unless overridden.
    spot_check_probability: std::sync::atomic::AtomicU64,
    state: RwLock<ValidatorState>,
    store: Option<DataDir>,
}

/// A validator; cheap to clone (shared state).
#[derive(Clone)]
pub struct Validator<C> {
    inner: Arc<Inner<C>>,
}

/// A gradient that arrived intact, with what the replay log keeps of it.
struct Fetched {
    commitment: pb::Commitment,
    payload: Vec<u8>,
    values: Vec<f32>,
}

const KEPT_CHECKPOINTS: usize = 4;

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
        Self::build(
            chain,
            netuid,
            hotkey,
            engine,
            checkpoint,
            window,
            Averages::new(),
            Vec::new(),
            Vec::new(),
            None,
        )
    }

    /// A validator that keeps its state, checkpoints and replay log in `store`: it resumes from the
    /// saved checkpoint, window and moving averages when there are any, else starts from
    /// `checkpoint` at `window`.
    pub fn with_store(
        chain: C,
        netuid: u16,
        hotkey: Keypair,
        engine: Arc<TaskEngine>,
        checkpoint: Checkpoint,
        window: u64,
        store: DataDir,
    ) -> Result<Self, ValidatorError> {
        let (checkpoint, window, averages, pending, momentum) = match store.load_state()? {
            Some(saved) => {
                let digest = subnet_proto::bytes32(
                    "checkpoint",
                    &hex::decode(&saved.checkpoint).unwrap_or_default(),
                )
                .map_err(|message| ValidatorError::SavedCheckpoint {
                    dir: store.root().display().to_string(),
                    message,
                })?;
                let bytes = store.blob(&digest)?;
                let checkpoint = Checkpoint::from_bytes(
                    &bytes,
                    &engine.digest(),
                    engine.num_params(),
                    Some(&digest),
                )
                .map_err(|e| ValidatorError::SavedCheckpoint {
                    dir: store.root().display().to_string(),
                    message: e.to_string(),
                })?;
                tracing::info!(window = saved.window, checkpoint = %checkpoint.short_digest(), miners = saved.averages.len(), "resumed from the data directory");
                let momentum = match &saved.momentum {
                    Some(hex_digest) => load_momentum(&store, hex_digest, engine.num_params())
                        .map_err(|message| ValidatorError::SavedCheckpoint {
                            dir: store.root().display().to_string(),
                            message,
                        })?,
                    None => Vec::new(),
                };
                (
                    checkpoint,
                    saved.window,
                    saved.averages,
                    saved.pending_reveals,
                    momentum,
                )
            }
            None => (checkpoint, window, Averages::new(), Vec::new(), Vec::new()),
        };
        let validator = Self::build(
            chain,
            netuid,
            hotkey,
            engine,
            checkpoint,
            window,
            averages,
            pending,
            momentum,
            Some(store),
        );
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
        window: u64,
        averages: Averages,
        pending_reveals: Vec<PendingReveal>,
        momentum: Vec<f32>,
        store: Option<DataDir>,
    ) -> Self {
        let recent = BTreeMap::from([(window, checkpoint.clone())]);
        let spot_check_probability = engine.spec().scoring.spot_check_probability;
        let state = ValidatorState {
            checkpoint,
            checkpoint_window: window,
            recent,
            averages,
            pending_reveals,
            momentum,
        };
        Self {
            inner: Arc::new(Inner {
                chain,
                netuid,
                hotkey,
                engine,
                probe_deadline: Duration::from_secs(60),
                spot_check_probability: std::sync::atomic::AtomicU64::new(
                    spot_check_probability.to_bits(),
                ),
                state: RwLock::new(state),
                store,
            }),
        }
    }

    /// Writes the current checkpoint, window and moving averages to the data directory, if any.
    fn save_state(&self) -> Result<(), ValidatorError> {
        let Some(store) = &self.inner.store else {
            return Ok(());
        };
        let (checkpoint, window, averages, pending_reveals, momentum) = {
            let state = self.inner.state.read().expect("validator state lock");
            (
                state.checkpoint.clone(),
                state.checkpoint_window,
                state.averages.clone(),
                state.pending_reveals.clone(),
                state.momentum.clone(),
            )
        };
        store.put_blob(&checkpoint.to_bytes())?;
        store.save_state(&SavedState {
            checkpoint: hex::encode(checkpoint.digest),
            window,
            averages,
            pending_reveals,
            momentum: store_momentum(store, &momentum)?,
        })?;
        Ok(())
    }

    /// Overrides the task's spot-check probability for this validator (a local policy: replays do
    /// not depend on it, the record says which miners were checked).
    pub fn set_spot_check_probability(&self, probability: f64) {
        self.inner.spot_check_probability.store(
            probability.clamp(0.0, 1.0).to_bits(),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    fn spot_check_probability(&self) -> f64 {
        f64::from_bits(
            self.inner
                .spot_check_probability
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// The moving averages per uid (with the hotkey each belongs to).
    pub fn averages(&self) -> Averages {
        self.inner
            .state
            .read()
            .expect("validator state lock")
            .averages
            .clone()
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
        let state = self.inner.state.read().expect("validator state lock");
        (state.checkpoint.clone(), state.checkpoint_window)
    }

    pub(crate) fn checkpoint_by_digest(&self, digest: &[u8]) -> Option<Checkpoint> {
        let state = self.inner.state.read().expect("validator state lock");
        state
            .recent
            .values()
            .find(|c| c.digest.as_slice() == digest)
            .cloned()
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

    /// Probes every miner for `window`, gathers the evidence (usefulness, similarity, assignment
    /// checks), decides scores and weights, sets them on chain, advances the global checkpoint and
    /// appends the window to the replay log.
    #[tracing::instrument(skip(self), fields(hotkey = %self.hotkey().short()))]
    pub async fn run_window(
        &self,
        window: u64,
        window_seed: u64,
    ) -> Result<WindowOutcome, ValidatorError> {
        let engine = self.engine().clone();
        let spec = engine.spec().clone();
        let metagraph = self.chain().metagraph(self.netuid()).await?;
        let me = metagraph
            .by_hotkey(&self.hotkey())
            .ok_or_else(|| ValidatorError::NotRegistered {
                hotkey: self.hotkey().to_string(),
                netuid: self.netuid(),
            })?
            .uid;
        let (checkpoint, _) = self.checkpoint();
        let eval_seed = self.eval_seed(window, window_seed);
        let batches = Arc::new(engine.heldout_batches(eval_seed, spec.scoring.eval_batches));
        let base = {
            let (engine, params, batches) =
                (engine.clone(), checkpoint.params.clone(), batches.clone());
            blocking(move || evaluate::losses(&engine, &params, &batches)).await?
        };
        let base_loss = base.iter().map(|&l| l as f64).sum::<f64>() / base.len().max(1) as f64;

        // Fetch every miner's gradient concurrently, each under its own deadline.
        let miners: Vec<_> = metagraph
            .neurons
            .iter()
            .filter(|n| n.uid != me)
            .cloned()
            .collect();
        let fetches = miners.iter().map(|n| {
            let neuron = n.clone();
            let digest = checkpoint.digest;
            async move {
                let fetched = match tokio::time::timeout(
                    self.inner.probe_deadline,
                    self.fetch_gradient(&neuron, window, &digest, false),
                )
                .await
                {
                    Ok(result) => result,
                    Err(_) => Err(Rejection::Timeout {
                        seconds: self.inner.probe_deadline.as_secs(),
                    }),
                };
                (neuron, fetched)
            }
        });
        let fetched = futures::future::join_all(fetches).await;

        // Usefulness on the held-out batches, on the CPU backend, one gradient after another.
        let mut evidence = Vec::with_capacity(fetched.len());
        let mut gradients: BTreeMap<u16, Fetched> = BTreeMap::new();
        let mut rejections: HashMap<u16, Rejection> = HashMap::new();
        for (neuron, fetched) in fetched {
            let mut miner = MinerEvidence {
                uid: neuron.uid,
                hotkey: neuron.hotkey.to_string(),
                committed_at_ms: None,
                refused: None,
                after: Vec::new(),
                assignment: None,
                fraud: None,
            };
            match fetched {
                Ok(f) => {
                    miner.committed_at_ms = Some(f.commitment.committed_at_ms);
                    let (engine, params, batches, values) = (
                        engine.clone(),
                        checkpoint.params.clone(),
                        batches.clone(),
                        Arc::new(f.values),
                    );
                    let v = values.clone();
                    let after =
                        blocking(move || evaluate::losses_after(&engine, &params, &v, &batches))
                            .await?;
                    if after.iter().all(|l| l.is_finite()) {
                        miner.after = after;
                        let values = Arc::try_unwrap(values).unwrap_or_else(|v| (*v).clone());
                        gradients.insert(neuron.uid, Fetched { values, ..f });
                    } else {
                        let rejection = Rejection::NonFiniteLoss;
                        miner.refused = Some(rejection.to_string());
                        rejections.insert(neuron.uid, rejection);
                    }
                }
                Err(rejection) => {
                    tracing::info!(uid = neuron.uid, reason = %rejection, "gradient refused");
                    miner.refused = Some(rejection.to_string());
                    rejections.insert(neuron.uid, rejection);
                }
            }
            evidence.push(miner);
        }

        // Near-duplicates among the evaluated gradients.
        let similarities = {
            let pairs: Vec<(u16, &[f32])> = gradients
                .iter()
                .map(|(uid, g)| (*uid, g.values.as_slice()))
                .collect();
            pairwise_similarity(&pairs)
        };

        // Spot checks: re-execute some miners' windows and compare with the dense pseudo-gradient
        // they committed to.
        let mut spot_checks = Vec::new();
        let mut dense_blobs = Vec::new();
        let mut frauds: Vec<(u16, AccountId, [u8; 32])> = Vec::new();
        for m in evidence.iter_mut() {
            let Some(fetched) = gradients.get(&m.uid) else {
                continue;
            };
            if !spot_checked(eval_seed, m.uid, self.spot_check_probability()) {
                continue;
            }
            let neuron = miners
                .iter()
                .find(|n| n.uid == m.uid)
                .expect("evidence comes from the metagraph")
                .clone();
            let dense = match tokio::time::timeout(
                self.inner.probe_deadline,
                self.fetch_gradient(&neuron, window, &checkpoint.digest, true),
            )
            .await
            {
                Ok(Ok(dense)) if dense.commitment.signature == fetched.commitment.signature => {
                    dense
                }
                Ok(Ok(_)) => {
                    m.refused =
                        Some("spot check: the dense gradient came with another commitment".into());
                    continue;
                }
                Ok(Err(rejection)) => {
                    m.refused = Some(format!(
                        "spot check: dense gradient not served: {rejection}"
                    ));
                    continue;
                }
                Err(_) => {
                    m.refused = Some("spot check: dense gradient not served in time".into());
                    continue;
                }
            };
            let uid = m.uid;
            let (engine, params) = (engine.clone(), checkpoint.params.clone());
            let reexecuted =
                blocking(move || evaluate::reexecute(&engine, &params, window, window_seed, uid))
                    .await?;
            let Some(reexecuted) = reexecuted else {
                continue;
            };
            let difference = relative_difference(&dense.values, &reexecuted);
            tracing::info!(uid, relative_difference = difference, "spot check");
            if !reproduces(difference, spec.scoring.spot_check_tolerance) {
                m.fraud = Some(format!(
                    "its dense gradient differs from the re-executed training by {difference:.3e} (relative L2), beyond the backend tolerance {}",
                    spec.scoring.spot_check_tolerance
                ));
                let mut bytes = fetched.commitment.signature.clone();
                bytes.extend_from_slice(&fetched.commitment.dense_digest);
                bytes.extend_from_slice(&subnet_proto::digest(&codec::encode_dense(&reexecuted)));
                frauds.push((uid, neuron.hotkey, subnet_proto::digest(&bytes)));
            }
            spot_checks.push(SpotCheckRecord {
                uid,
                dense_digest: hex::encode(&dense.commitment.dense_digest),
                relative_difference: difference,
            });
            dense_blobs.push(dense.payload);
        }

        // Assignment checks for the gradients that help, each against the mean of the other helpful
        // gradients that are not its near-duplicates.
        let helpful: Vec<u16> = evidence
            .iter()
            .filter(|m| {
                m.refused.is_none() && UsefulnessScore::from_losses(&base, &m.after).score() > 0.0
            })
            .map(|m| m.uid)
            .collect();
        let mut controls: HashMap<u16, Vec<u16>> = HashMap::new();
        for m in evidence.iter_mut() {
            if !helpful.contains(&m.uid) {
                continue;
            }
            let uid = m.uid;
            let control_uids: Vec<u16> = helpful
                .iter()
                .copied()
                .filter(|&other| {
                    other != uid
                        && !similarities.iter().any(|s| {
                            s.cosine >= spec.scoring.copy_cosine
                                && ((s.a, s.b) == (uid, other) || (s.a, s.b) == (other, uid))
                        })
                })
                .collect();
            let control = {
                let refs: Vec<&[f32]> = control_uids
                    .iter()
                    .map(|u| gradients[u].values.as_slice())
                    .collect();
                evaluate::control_gradient(&refs, engine.num_params())
            };
            controls.insert(uid, control_uids);
            let gradient = gradients[&uid].values.clone();
            let (engine, params) = (engine.clone(), checkpoint.params.clone());
            let assignment = blocking(move || {
                let (own, held_back) =
                    evaluate::assignment_batches(&engine, window, window_seed, uid)?;
                Some(evaluate::assignment_evidence(
                    &engine, &params, &gradient, &control, &own, &held_back,
                ))
            })
            .await?;
            m.assignment = assignment.filter(|a| {
                [
                    &a.control_own,
                    &a.after_own,
                    &a.control_held_back,
                    &a.after_held_back,
                ]
                .iter()
                .all(|v| v.iter().all(|l| l.is_finite()))
            });
        }

        let evidence = WindowEvidence {
            base,
            miners: evidence,
            similarities,
        };
        let params = spec.scoring.params();
        let averages_before = {
            let state = self.inner.state.read().expect("validator state lock");
            state.averages.clone()
        };
        let decisions = decide(&evidence, &params, &averages_before);
        {
            let mut state = self.inner.state.write().expect("validator state lock");
            state.averages = averages_after(&decisions);
        }

        // Weights: normalized moving averages under the max-weight limit, in the SDK's u16 form.
        // Under commit-reveal, earlier commits due now are revealed first.
        let reveals = self.reveal_due_weights().await;
        let mut weights_committed = false;
        let weights_set = if decisions.iter().any(|d| d.weight > 0.0) {
            let uids: Vec<u16> = decisions.iter().map(|d| d.uid).collect();
            let weights: Vec<f64> = decisions.iter().map(|d| d.weight).collect();
            match weights_to_u16(&uids, &weights) {
                Ok((set_uids, values)) => self
                    .submit_weights(window, set_uids.clone(), values.clone(), spec.task.version)
                    .await
                    .map(|committed| {
                        weights_committed = committed;
                        (set_uids, values)
                    }),
                Err(e) => Err(e.to_string()),
            }
        } else {
            Err("no miner has earned weight yet".to_string())
        };
        if let Err(e) = &weights_set {
            tracing::warn!(window, error = %e, "weights not set");
        }

        // Fraud goes to the chain (on the local chain, enough reports slash the miner's stake).
        let mut fraud_reports = Vec::new();
        for (uid, offender, evidence_digest) in frauds {
            let outcome = self
                .chain()
                .report_fraud(
                    &self.inner.hotkey,
                    self.netuid(),
                    offender,
                    window,
                    evidence_digest,
                )
                .await
                .map_err(|e| e.to_string());
            tracing::warn!(window, uid, outcome = ?outcome, "reported fraud");
            fraud_reports.push((uid, outcome));
        }

        // Aggregate the best earning gradients into the next global checkpoint.
        let aggregated = aggregation_order(&decisions, spec.scoring.aggregate_top);
        let momentum_before = {
            let state = self.inner.state.read().expect("validator state lock");
            state.momentum.clone()
        };
        let (next, momentum_after) = {
            let deltas: Vec<&[f32]> = aggregated
                .iter()
                .map(|u| gradients[u].values.as_slice())
                .collect();
            next_checkpoint(&engine, &checkpoint, &momentum_before, &deltas)
        };

        if let Some(store) = &self.inner.store {
            let mut records = Vec::new();
            for (uid, g) in &gradients {
                store.put_blob(&g.payload)?;
                records.push(GradientRecord {
                    uid: *uid,
                    payload_digest: hex::encode(&g.commitment.payload_digest),
                    commitment_signature: hex::encode(&g.commitment.signature),
                    control: controls.get(uid).cloned(),
                });
            }
            for dense in &dense_blobs {
                store.put_blob(dense)?;
            }
            store.put_blob(&checkpoint.to_bytes())?;
            store.put_blob(&next.to_bytes())?;
            let (uids, values, error) = match &weights_set {
                Ok((u, v)) => (u.clone(), v.clone(), None),
                Err(e) => (Vec::new(), Vec::new(), Some(e.clone())),
            };
            store.append_record(&WindowRecord {
                window,
                window_seed,
                eval_seed,
                task_digest: hex::encode(engine.digest()),
                checkpoint_before: hex::encode(checkpoint.digest),
                checkpoint_after: hex::encode(next.digest),
                momentum_before: store_momentum(store, &momentum_before)?,
                momentum_after: store_momentum(store, &momentum_after)?,
                scoring: params,
                evidence,
                gradients: records,
                spot_checks,
                averages_before,
                aggregated: aggregated.clone(),
                weights: WeightsRecord {
                    uids,
                    values,
                    error,
                    committed: weights_committed,
                },
            })?;
        }

        let results = decisions
            .into_iter()
            .zip(&miners)
            .map(|(d, n)| MinerResult {
                uid: d.uid,
                hotkey: n.hotkey,
                usefulness: d.usefulness,
                assignment: d.assignment,
                rejection: rejections.remove(&d.uid),
                verdict: d.verdict,
                score: d.score,
                moving_average: d.moving_average,
                weight: d.weight,
            })
            .collect();
        let outcome = WindowOutcome {
            window,
            eval_seed,
            base_loss,
            checkpoint_before: checkpoint.digest,
            checkpoint_after: next.digest,
            results,
            aggregated,
            weights_set,
            weights_committed,
            reveals,
            fraud_reports,
        };
        self.advance(window + 1, next);
        {
            let mut state = self.inner.state.write().expect("validator state lock");
            state.momentum = momentum_after;
        }
        self.save_state()?;
        Ok(outcome)
    }

    /// Sets weights, or commits them when the subnet runs commit-reveal (they are revealed by a later
    /// window's `reveal_due_weights`). Ok(true) means committed.
    async fn submit_weights(
        &self,
        window: u64,
        uids: Vec<u16>,
        values: Vec<u16>,
        version_key: u64,
    ) -> Result<bool, String> {
        let (hotkey, netuid) = (&self.inner.hotkey, self.netuid());
        match self
            .chain()
            .set_weights(hotkey, netuid, uids.clone(), values.clone(), version_key)
            .await
        {
            Ok(()) => Ok(false),
            Err(ChainError::CommitRevealEnabled { .. }) => {
                let mut salt = [0u8; 16];
                getrandom::fill(&mut salt).map_err(|e| format!("no randomness for a salt: {e}"))?;
                let reveal = WeightsReveal {
                    uids,
                    values,
                    salt: salt
                        .chunks(2)
                        .map(|c| u16::from_le_bytes([c[0], c[1]]))
                        .collect(),
                    version_key,
                };
                let hash = reveal.hash(&AccountId::from(hotkey), netuid);
                self.chain()
                    .commit_weights(hotkey, netuid, hash)
                    .await
                    .map_err(|e| e.to_string())?;
                tracing::info!(window, hash = %hex::encode(hash), "weights committed");
                let mut state = self.inner.state.write().expect("validator state lock");
                state.pending_reveals.push(PendingReveal { window, reveal });
                Ok(true)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Reveals committed weights whose reveal epoch has come, oldest first. A commit the chain says
    /// is too early stays for a later window; any other answer ends it.
    async fn reveal_due_weights(&self) -> Vec<(u64, Result<(), String>)> {
        let pending = {
            let state = self.inner.state.read().expect("validator state lock");
            state.pending_reveals.clone()
        };
        let mut done = Vec::new();
        let mut keep = Vec::new();
        for p in pending {
            match self
                .chain()
                .reveal_weights(&self.inner.hotkey, self.netuid(), p.reveal.clone())
                .await
            {
                Err(ChainError::RevealTooEarly { .. }) => keep.push(p),
                outcome => {
                    match &outcome {
                        Ok(()) => tracing::info!(committed_in = p.window, "weights revealed"),
                        Err(e) => {
                            tracing::warn!(committed_in = p.window, error = %e, "reveal failed")
                        }
                    }
                    done.push((p.window, outcome.map_err(|e| e.to_string())));
                }
            }
        }
        let mut state = self.inner.state.write().expect("validator state lock");
        state.pending_reveals = keep;
        done
    }

    /// Makes `checkpoint` the global model from `window` on.
    pub fn advance(&self, window: u64, checkpoint: Checkpoint) {
        let mut state = self.inner.state.write().expect("validator state lock");
        state.recent.insert(window, checkpoint.clone());
        while state.recent.len() > KEPT_CHECKPOINTS {
            state.recent.pop_first();
        }
        state.checkpoint = checkpoint;
        state.checkpoint_window = window;
    }
}

/// The earning uids, best score first (ties by uid), at most `top` of them.
pub fn aggregation_order(decisions: &[MinerDecision], top: usize) -> Vec<u16> {
    let mut earning: Vec<(u16, f64)> = decisions
        .iter()
        .filter(|d| d.verdict == Verdict::Earned && d.score > 0.0)
        .map(|d| (d.uid, d.score))
        .collect();
    earning.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    earning.truncate(top);
    earning.into_iter().map(|(uid, _)| uid).collect()
}

/// The next global checkpoint and outer momentum: the median-clipped mean of `deltas` applied with
/// the outer step (Nesterov momentum when the task sets `training.outer_momentum`; `momentum` is
/// the buffer before, empty for zeros), or both unchanged when nothing earned.
pub fn next_checkpoint(
    engine: &TaskEngine,
    checkpoint: &Checkpoint,
    momentum: &[f32],
    deltas: &[&[f32]],
) -> (Checkpoint, Vec<f32>) {
    let t = &engine.spec().training;
    match aggregate_median_clipped(deltas) {
        Some(mean) if t.outer_momentum > 0.0 => {
            let (params, buffer) = outer_nesterov_step(
                &checkpoint.params,
                &mean,
                momentum,
                t.outer_lr,
                t.outer_momentum,
            );
            (Checkpoint::new(engine.digest(), params), buffer)
        }
        Some(mean) => (
            Checkpoint::new(
                engine.digest(),
                outer_sgd_step(&checkpoint.params, &mean, t.outer_lr),
            ),
            Vec::new(),
        ),
        None => (checkpoint.clone(), momentum.to_vec()),
    }
}

/// The blob bytes of an outer momentum buffer (the dense codec form), None for an empty buffer.
pub fn momentum_blob(momentum: &[f32]) -> Option<Vec<u8>> {
    (!momentum.is_empty()).then(|| codec::encode_dense(momentum))
}

/// Stores a momentum buffer as a blob; its hex digest, or None for an empty buffer.
fn store_momentum(store: &DataDir, momentum: &[f32]) -> Result<Option<String>, StoreError> {
    momentum_blob(momentum)
        .map(|bytes| store.put_blob(&bytes).map(hex::encode))
        .transpose()
}

/// Reads the momentum buffer stored as the blob `hex_digest`.
pub fn load_momentum(store: &DataDir, hex_digest: &str, params: usize) -> Result<Vec<f32>, String> {
    let digest = subnet_proto::bytes32("momentum", &hex::decode(hex_digest).unwrap_or_default())?;
    let bytes = store.blob(&digest).map_err(|e| e.to_string())?;
    codec::decode(&bytes, params).map_err(|e| format!("momentum {hex_digest}: {e}"))
}

/// Runs CPU-bound work off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ValidatorError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ValidatorError::Evaluation(e.to_string()))
}

/// Whether the validator re-executes `uid`'s window: a draw with `probability` from its secret seed.
pub fn spot_checked(eval_seed: u64, uid: u16, probability: f64) -> bool {
    let draw = task::rng::derive_seed(&[eval_seed, SPOT_CHECK, uid as u64]);
    (draw as f64 / 2f64.powi(64)) < probability
}

const SPOT_CHECK: u64 = 0x7370_6f74;
