//! The validator: probes every miner for its window gradient, scores usefulness on held-out batches
//! the miners could not know, sets weights on chain, aggregates the best gradients into the next
//! global checkpoint and serves that checkpoint to miners.

mod probe;
mod service;

pub use probe::Rejection;
pub use service::ValidatorService;

use chain_client::{AccountId, Chain, ChainError};
use scoring::{UsefulnessScore, moving_average, normalize_max_weight, weights_to_u16};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use subxt_signer::sr25519::Keypair;
use task::aggregate::{aggregate_median_clipped, outer_sgd_step};
use task::{Checkpoint, CpuBackend, TaskEngine};

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
}

/// How one miner fared in one window.
#[derive(Clone, Debug)]
pub struct MinerResult {
    pub uid: u16,
    pub hotkey: AccountId,
    /// Usefulness on the held-out batches, when the gradient was accepted.
    pub usefulness: Option<UsefulnessScore>,
    /// Why the gradient earned nothing, when it was refused.
    pub rejection: Option<Rejection>,
    /// This window's score (0 for refused or harmful gradients).
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
}

struct ValidatorState {
    /// The global checkpoint at the start of the current window, and that window.
    checkpoint: Checkpoint,
    checkpoint_window: u64,
    /// Recent checkpoints by digest, so miners a window behind can still sync.
    recent: BTreeMap<u64, Checkpoint>,
    /// Moving average of scores per uid, with the hotkey it belongs to (reset when a uid changes hands).
    averages: HashMap<u16, (AccountId, f64)>,
}

struct Inner<C> {
    chain: C,
    netuid: u16,
    hotkey: Keypair,
    engine: Arc<TaskEngine>,
    probe_deadline: Duration,
    state: RwLock<ValidatorState>,
}

/// A validator; cheap to clone (shared state).
#[derive(Clone)]
pub struct Validator<C> {
    inner: Arc<Inner<C>>,
}

const KEPT_CHECKPOINTS: usize = 4;

impl<C: Chain> Validator<C> {
    /// A validator starting from `checkpoint` as the global model of `window`.
    pub fn new(
        chain: C,
        netuid: u16,
        hotkey: Keypair,
        engine: Arc<TaskEngine>,
        checkpoint: Checkpoint,
        window: u64,
    ) -> Self {
        let recent = BTreeMap::from([(window, checkpoint.clone())]);
        let state = ValidatorState {
            checkpoint,
            checkpoint_window: window,
            recent,
            averages: HashMap::new(),
        };
        Self {
            inner: Arc::new(Inner {
                chain,
                netuid,
                hotkey,
                engine,
                probe_deadline: Duration::from_secs(60),
                state: RwLock::new(state),
            }),
        }
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

    /// Probes every miner for `window`, scores, sets weights and advances the global checkpoint.
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
            tokio::task::spawn_blocking(move || {
                engine.losses::<CpuBackend>(&Default::default(), &params, &batches)
            })
            .await
            .map_err(|e| ValidatorError::Evaluation(e.to_string()))?
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
                    self.fetch_gradient(&neuron, window, &digest),
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

        // Evaluate the accepted gradients on the CPU backend, one after another.
        let mut results = Vec::with_capacity(fetched.len());
        let mut accepted: Vec<(u16, f64, Vec<f32>)> = Vec::new();
        for (neuron, fetched) in fetched {
            let (usefulness, rejection, delta) = match fetched {
                Ok(delta) => {
                    let eval_step = spec.scoring.eval_step;
                    let (engine, params, batches, base) = (
                        engine.clone(),
                        checkpoint.params.clone(),
                        batches.clone(),
                        base.clone(),
                    );
                    let (usefulness, delta) = tokio::task::spawn_blocking(move || {
                        let moved = outer_sgd_step(&params, &delta, eval_step);
                        let after =
                            engine.losses::<CpuBackend>(&Default::default(), &moved, &batches);
                        (UsefulnessScore::from_losses(&base, &after), delta)
                    })
                    .await
                    .map_err(|e| ValidatorError::Evaluation(e.to_string()))?;
                    (Some(usefulness), None, Some(delta))
                }
                Err(rejection) => {
                    tracing::info!(uid = neuron.uid, reason = %rejection, "gradient refused");
                    (None, Some(rejection), None)
                }
            };
            let score = usefulness
                .as_ref()
                .map(UsefulnessScore::score)
                .unwrap_or(0.0);
            if let Some(delta) = delta
                && score > 0.0
            {
                accepted.push((neuron.uid, score, delta));
            }
            results.push(MinerResult {
                uid: neuron.uid,
                hotkey: neuron.hotkey,
                usefulness,
                rejection,
                score,
                moving_average: 0.0,
                weight: 0.0,
            });
        }

        // Moving averages; a uid whose hotkey changed starts over, absent miners decay toward 0.
        {
            let mut state = self.inner.state.write().expect("validator state lock");
            state.averages.retain(|uid, (hotkey, _)| {
                metagraph.by_uid(*uid).is_some_and(|n| &n.hotkey == hotkey)
            });
            for r in &mut results {
                let previous = state.averages.get(&r.uid).map(|(_, a)| *a);
                r.moving_average = moving_average(previous, r.score, spec.scoring.moving_average);
                state.averages.insert(r.uid, (r.hotkey, r.moving_average));
            }
        }

        // Weights: normalized moving averages under the max-weight limit, in the SDK's u16 form.
        let uids: Vec<u16> = results.iter().map(|r| r.uid).collect();
        let averages: Vec<f64> = results.iter().map(|r| r.moving_average).collect();
        let weights_set = if averages.iter().any(|&a| a > 0.0) {
            let normalized = normalize_max_weight(&averages, spec.scoring.max_weight);
            for (r, w) in results.iter_mut().zip(&normalized) {
                r.weight = *w;
            }
            match weights_to_u16(&uids, &normalized) {
                Ok((set_uids, values)) => self
                    .chain()
                    .set_weights(
                        &self.inner.hotkey,
                        self.netuid(),
                        set_uids.clone(),
                        values.clone(),
                        spec.task.version,
                    )
                    .await
                    .map(|()| (set_uids, values))
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        } else {
            Err("no miner has earned weight yet".to_string())
        };
        if let Err(e) = &weights_set {
            tracing::warn!(window, error = %e, "weights not set");
        }

        // Aggregate the best gradients into the next global checkpoint.
        accepted.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        accepted.truncate(spec.scoring.aggregate_top);
        let aggregated: Vec<u16> = accepted.iter().map(|a| a.0).collect();
        let deltas: Vec<&[f32]> = accepted.iter().map(|a| a.2.as_slice()).collect();
        let next = match aggregate_median_clipped(&deltas) {
            Some(mean) => Checkpoint::new(
                engine.digest(),
                outer_sgd_step(&checkpoint.params, &mean, spec.training.outer_lr),
            ),
            None => checkpoint.clone(),
        };
        let outcome = WindowOutcome {
            window,
            eval_seed,
            base_loss,
            checkpoint_before: checkpoint.digest,
            checkpoint_after: next.digest,
            results,
            aggregated,
            weights_set,
        };
        self.advance(window + 1, next);
        Ok(outcome)
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
