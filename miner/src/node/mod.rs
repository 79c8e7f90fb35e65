//! The miner's state and its window: train the assigned pages, compress with error feedback, sign
//! and keep the commitment and what it names for validators. `sync` fetches the checkpoint.

mod spill;
mod sync;

pub use spill::{KeptState, StateDir};

use crate::Metrics;
use crate::residual::{self, Residual};
use chain_client::{AccountId, Chain, ChainError, Membership, Metagraph, NotRegistered};
use pseudo_gradient::codec;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Instant;
use subnet_proto::{commitment, pb};
use subxt_signer::sr25519::Keypair;
use task::assignment::AssignmentError;
use task::checkpoint::CheckpointError;
use task::segment::TrainState;
use task::{Checkpoint, Digest, TaskEngine};

#[derive(Debug, thiserror::Error)]
pub enum MinerError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    NotRegistered(#[from] NotRegistered),
    #[error("no global checkpoint yet: sync from a validator before training")]
    NoCheckpoint,
    #[error("no validator serves a checkpoint: {0}")]
    NoValidator(String),
    #[error("checkpoint from validator {validator} refused: {source}")]
    Checkpoint {
        validator: String,
        source: CheckpointError,
    },
    #[error(transparent)]
    Assignment(#[from] AssignmentError),
    #[error(transparent)]
    Group(#[from] task::groups::NoGroupFits),
    #[error("training task failed: {0}")]
    Training(String),
    #[error("compression residual: {0}")]
    Residual(String),
    #[error("segment state directory {0}")]
    StateDir(String),
}

/// A window's committed artefacts: the commitment, the payload it commits to, and (codec dense form)
/// the dense pseudo-gradient and the incoming residual it names, which validators ask for when they
/// re-execute the window.
pub struct ServedGradient {
    pub commitment: pb::Commitment,
    pub payload: Arc<Vec<u8>>,
    pub dense: Arc<Vec<u8>>,
    pub residual_in: Arc<Vec<u8>>,
    /// The training state at the end of each segment (`task::segment` bytes), in order.
    pub segments: Vec<KeptState>,
}

/// Why a part cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum PartError {
    #[error("the window has {count} segments, there is no segment {asked}")]
    NoSegment { count: usize, asked: u32 },
    #[error("its segment state cannot be read: {0}")]
    Unreadable(#[from] std::io::Error),
}

impl ServedGradient {
    /// The bytes of one part (`segment`: which segment's end state, for that part).
    pub fn part(&self, part: pb::GradientPart, segment: u32) -> Result<Arc<Vec<u8>>, PartError> {
        match part {
            pb::GradientPart::Payload => Ok(self.payload.clone()),
            pb::GradientPart::Dense => Ok(self.dense.clone()),
            pb::GradientPart::Residual => Ok(self.residual_in.clone()),
            pb::GradientPart::Segment => Ok(self
                .segments
                .get(segment as usize)
                .ok_or(PartError::NoSegment {
                    count: self.segments.len(),
                    asked: segment,
                })?
                .bytes()?),
        }
    }
}

/// The segment states a miner that did not train its window claims for `delta`: the straight line
/// from the checkpoint to `checkpoint - delta` over `range`, with no moments. Audits of any
/// segment but a window's only one find they were not trained.
pub fn claimed_segments(
    engine: &TaskEngine,
    checkpoint: &[f32],
    delta: &[f32],
    range: std::ops::Range<usize>,
) -> Vec<TrainState> {
    let segments = engine.spec().training.segments();
    let n = segments.len().max(1);
    segments
        .iter()
        .enumerate()
        .map(|(i, steps)| {
            let share = (i + 1) as f32 / n as f32;
            let params = range
                .clone()
                .map(|p| checkpoint[p] - share * delta[p])
                .collect();
            TrainState {
                step: steps.end,
                range: range.clone(),
                params,
                first_moment: vec![0.0; range.len()],
                second_moment: vec![0.0; range.len()],
            }
        })
        .collect()
}

/// A window's work as `Miner::commit_trained` takes it.
pub struct Trained<'a> {
    /// The pseudo-gradient (whole model).
    pub delta: &'a [f32],
    /// The parameters trained (the window's group).
    pub range: std::ops::Range<usize>,
    /// The training state at the end of each segment.
    pub segments: &'a [TrainState],
    /// The backend that trained it (the `Device` name; `cpu` is audited bit for bit).
    pub backend: String,
}

/// What one window of training did.
#[derive(Clone, Debug)]
pub struct TrainReport {
    pub window: u64,
    pub uid: u16,
    /// The parameter group trained (0 where the task trains the whole model).
    pub group: usize,
    pub pages: usize,
    pub first_loss: f32,
    pub last_loss: f32,
    pub tokens: usize,
    pub seconds: f64,
    pub payload_bytes: usize,
}

impl TrainReport {
    pub fn tokens_per_second(&self) -> f64 {
        self.tokens as f64 / self.seconds.max(1e-9)
    }
}

#[derive(Default)]
struct MinerState {
    checkpoint: Option<Checkpoint>,
    gradients: BTreeMap<u64, Arc<ServedGradient>>,
}

struct Inner<C> {
    member: Membership<C>,
    engine: Arc<TaskEngine>,
    state: RwLock<MinerState>,
    metrics: Arc<Metrics>,
    device: task::Device,
    /// Error feedback: what compression left out of earlier windows' gradients.
    residual: std::sync::Mutex<Option<Residual>>,
    /// Where the residual is kept across restarts, if anywhere.
    residual_file: Option<PathBuf>,
    /// Where committed segment states wait for audits (in memory without one).
    state_dir: Option<StateDir>,
    /// Called after every inner step (a terminal progress bar).
    on_progress: Option<ProgressHook>,
    /// The most parameters of a group this miner holds (0: any).
    group_capacity: u64,
    /// Windows whose audit artefacts it does not answer for (`miner::adversary` only).
    stalled: std::sync::Mutex<std::collections::BTreeSet<u64>>,
}

/// Where a window's training stands, after each inner step.
#[derive(Clone, Debug)]
pub struct Progress {
    pub window: u64,
    pub step: usize,
    pub steps: usize,
    pub loss: f32,
    pub tokens_per_s: f64,
}

pub type ProgressHook = Arc<dyn Fn(&Progress) + Send + Sync>;

/// A miner; cheap to clone (shared state).
#[derive(Clone)]
pub struct Miner<C> {
    inner: Arc<Inner<C>>,
}

/// How many past windows' gradients a miner keeps serving: an audit may ask for a window's
/// artefacts up to the task's audit grace (2 windows by default) after it, while newer windows are
/// trained.
const KEPT_WINDOWS: usize = 5;

/// Reports each inner step: to the progress hook when there is one, else four times a window at
/// info level; every step at debug level.
struct StepLog {
    window: u64,
    uid: u16,
    steps: usize,
    tokens_per_step: usize,
    started: Instant,
    hook: Option<ProgressHook>,
}

impl StepLog {
    fn step(&self, step: usize, loss: f32) {
        let (window, uid, steps) = (self.window, self.uid, self.steps);
        let done = step + 1;
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-9);
        let tokens_per_s = (done * self.tokens_per_step) as f64 / elapsed;
        if let Some(hook) = &self.hook {
            hook(&Progress {
                window,
                step: done,
                steps,
                loss,
                tokens_per_s,
            });
        } else if done.is_multiple_of(steps.div_ceil(4).max(1)) || done == steps {
            tracing::info!(window, step = done, steps, loss, tokens_per_s, "training");
            return;
        }
        tracing::debug!(window, uid, step = done, steps, loss, "inner step");
    }
}

impl<C: Chain> Miner<C> {
    /// A miner that trains on the CPU.
    pub fn new(chain: C, netuid: u16, hotkey: Keypair, engine: Arc<TaskEngine>) -> Self {
        Self::on_device(chain, netuid, hotkey, engine, task::Device::Cpu)
    }

    /// A miner that trains on `device`.
    pub fn on_device(
        chain: C,
        netuid: u16,
        hotkey: Keypair,
        engine: Arc<TaskEngine>,
        device: task::Device,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                member: Membership::new(chain, netuid, hotkey),
                engine,
                state: RwLock::default(),
                metrics: Arc::default(),
                device,
                residual: std::sync::Mutex::new(None),
                residual_file: None,
                state_dir: None,
                on_progress: None,
                group_capacity: 0,
                stalled: Default::default(),
            }),
        }
    }

    fn configure(mut self, f: impl FnOnce(&mut Inner<C>)) -> Self {
        f(Arc::get_mut(&mut self.inner).expect("configure a miner before cloning it"));
        self
    }

    /// Keeps the error-feedback residual in `path` (written after every window, read now), so a
    /// restarted miner carries on with it. A file for another task or model size is an error.
    pub fn with_residual_file(self, path: PathBuf) -> Result<Self, MinerError> {
        let loaded = residual::load(&path, &self.engine().digest(), self.engine().num_params())
            .map_err(MinerError::Residual)?;
        if let Some(r) = &loaded {
            tracing::info!(window = r.window, path = %path.display(), "resuming the compression residual");
        }
        Ok(self.configure(|inner| {
            inner.residual = std::sync::Mutex::new(loaded);
            inner.residual_file = Some(path);
        }))
    }

    /// Keeps committed segment states in files under `dir` rather than in memory (emptied now: the
    /// states of an earlier run are no longer served).
    pub fn with_state_dir(self, dir: &std::path::Path) -> Result<Self, MinerError> {
        let states = StateDir::open(dir)
            .map_err(|e| MinerError::StateDir(format!("{}: {e}", dir.display())))?;
        Ok(self.configure(|inner| inner.state_dir = Some(states)))
    }

    /// Calls `hook` after every inner step instead of logging progress lines.
    pub fn with_progress(self, hook: ProgressHook) -> Self {
        self.configure(|inner| inner.on_progress = Some(hook))
    }

    /// Declares that this miner holds groups of at most `params` parameters (0: any): where the task
    /// cuts the model into groups, it is only given groups that fit. Its commitments carry the figure.
    pub fn with_group_capacity(self, params: u64) -> Self {
        self.configure(|inner| inner.group_capacity = params)
    }

    pub fn group_capacity(&self) -> u64 {
        self.inner.group_capacity
    }

    pub fn device(&self) -> task::Device {
        self.inner.device
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
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

    pub fn checkpoint(&self) -> Option<Checkpoint> {
        self.inner
            .state
            .read()
            .expect("miner state lock")
            .checkpoint
            .clone()
    }

    pub(crate) fn set_checkpoint(&self, checkpoint: Checkpoint) {
        self.inner
            .state
            .write()
            .expect("miner state lock")
            .checkpoint = Some(checkpoint);
    }

    pub fn gradient(&self, window: u64) -> Option<Arc<ServedGradient>> {
        self.inner
            .state
            .read()
            .expect("miner state lock")
            .gradients
            .get(&window)
            .cloned()
    }

    pub fn latest_window(&self) -> Option<u64> {
        self.inner
            .state
            .read()
            .expect("miner state lock")
            .gradients
            .keys()
            .next_back()
            .copied()
    }

    /// This miner's uid on the subnet.
    pub async fn uid(&self) -> Result<u16, MinerError> {
        let metagraph = self.chain().metagraph(self.netuid()).await?;
        self.own_uid(&metagraph)
    }

    fn own_uid(&self, metagraph: &Metagraph) -> Result<u16, MinerError> {
        Ok(self.inner.member.uid_in(metagraph)?)
    }

    /// Trains the window on this miner's assigned pages from the current checkpoint and makes the
    /// signed pseudo-gradient available to validators.
    #[tracing::instrument(skip(self), fields(hotkey = %self.hotkey().short()))]
    pub async fn train_window(
        &self,
        window: u64,
        window_seed: u64,
    ) -> Result<TrainReport, MinerError> {
        let checkpoint = self.checkpoint().ok_or(MinerError::NoCheckpoint)?;
        let metagraph = self.chain().metagraph(self.netuid()).await?;
        let uid = self.own_uid(&metagraph)?;
        let engine = self.engine().clone();
        let group = engine
            .group(window_seed, uid, self.group_capacity())?
            .clone();
        let trainable = group.range.clone();
        let pages = engine.spec().shards.pages_per_miner;
        let started = Instant::now();
        let start = checkpoint.params.clone();
        let device = self.inner.device;
        let steps = StepLog {
            window,
            uid,
            steps: engine.spec().training.inner_steps,
            tokens_per_step: engine.spec().training.batch_size
                * engine.spec().targets_per_example(),
            started,
            hook: self.inner.on_progress.clone(),
        };
        let (outcome, segments) = tokio::task::spawn_blocking(move || {
            let mut segments = Vec::new();
            device
                .train_window_in_segments(
                    &engine,
                    &start,
                    (window, window_seed, uid),
                    trainable,
                    |step, loss| steps.step(step, loss),
                    |state| segments.push(state),
                )
                .map(|outcome| (outcome, segments))
        })
        .await
        .map_err(|e| MinerError::Training(e.to_string()))??;
        let seconds = started.elapsed().as_secs_f64();
        let (first_loss, last_loss) = (
            outcome.losses.first().copied().unwrap_or(f32::NAN),
            outcome.losses.last().copied().unwrap_or(f32::NAN),
        );
        let delta = outcome.into_pseudo_gradient(&checkpoint.params);
        let trained = Trained {
            delta: &delta,
            range: group.range.clone(),
            segments: &segments,
            backend: self.inner.device.backend(),
        };
        let served = self.commit_trained(window, checkpoint.digest, trained);
        let report = TrainReport {
            window,
            uid,
            group: group.index,
            pages,
            first_loss,
            last_loss,
            tokens: self.engine().spec().tokens_per_miner_window(),
            seconds,
            payload_bytes: served.payload.len(),
        };
        self.publish(window, served);
        self.inner
            .metrics
            .window_trained(window, report.tokens_per_second());
        tracing::info!(
            window,
            uid,
            loss = report.last_loss,
            first_loss = report.first_loss,
            tokens_per_s = report.tokens_per_second() as u64,
            "trained window"
        );
        Ok(report)
    }

    /// Compresses `window`'s pseudo-gradient `delta` (trained from the checkpoint `checkpoint`) with
    /// the error-feedback residual carried into the window, signs the commitment to all of it and
    /// keeps the residual that comes out for the next window (and on disk, with a residual file).
    /// For work not trained here: the segment states it commits to are `claimed_segments`.
    pub fn commit_work(&self, window: u64, checkpoint: Digest, delta: &[f32]) -> ServedGradient {
        let segments = self.claimed_segments(checkpoint, delta);
        let trained = Trained {
            delta,
            range: 0..delta.len(),
            segments: &segments,
            backend: task::device::cpu_backend().into(),
        };
        self.commit_trained(window, checkpoint, trained)
    }

    /// `claimed_segments` of `delta` from `checkpoint` (from zeros when the miner does not hold it).
    pub fn claimed_segments(&self, checkpoint: Digest, delta: &[f32]) -> Vec<TrainState> {
        let start = self
            .checkpoint()
            .filter(|c| c.digest == checkpoint)
            .map_or_else(|| vec![0.0; delta.len()], |c| c.params.to_vec());
        claimed_segments(self.engine(), &start, delta, 0..delta.len())
    }

    /// `commit_work` for a window trained here: the payload encodes only the trained parameter
    /// group (`codec::compress_range`), the residual keeps what the other groups carry for later
    /// windows, and the commitment names the segment states the training went through.
    pub fn commit_trained(
        &self,
        window: u64,
        checkpoint: Digest,
        trained: Trained,
    ) -> ServedGradient {
        let Trained {
            delta,
            range,
            segments,
            backend,
        } = trained;
        let engine = self.engine();
        let spec = &engine.spec().compression;
        let mut residual = self.inner.residual.lock().expect("residual lock");
        // When the global model did not move since the window the residual came from, nothing that
        // window sent was applied: carrying the residual on would only pile up mass that the next
        // payloads then send too large. The error feedback starts over from zero instead.
        let stalled = |source: u64| {
            source != window
                && self
                    .gradient(source)
                    .is_some_and(|g| g.commitment.checkpoint_digest == checkpoint.0)
        };
        let (residual_in, source_window) = residual
            .as_ref()
            .and_then(|r| r.carried_into(window))
            .filter(|(r, source)| r.len() == delta.len() && !stalled(*source))
            .map(|(r, source)| (r.to_vec(), source))
            .unwrap_or_else(|| (vec![0.0; delta.len()], 0));
        let compressed = spec.compress(delta, &residual_in, range);
        let segment_bytes: Vec<Vec<u8>> = segments.iter().map(TrainState::to_bytes).collect();
        let dense = codec::encode_dense(delta);
        let residual_in_bytes = codec::encode_dense(&residual_in);
        let commitment = commitment::commit(
            self.inner.member.keypair(),
            &commitment::Claims {
                window,
                task_digest: engine.digest(),
                checkpoint_digest: checkpoint.0,
                payload_digest: subnet_proto::digest(&compressed.payload),
                payload_len: compressed.payload.len() as u64,
                dense_digest: subnet_proto::digest(&dense),
                residual_in_digest: subnet_proto::digest(&residual_in_bytes),
                residual_window: source_window,
                residual_out_digest: subnet_proto::digest(&codec::encode_dense(
                    &compressed.residual_out,
                )),
                group_capacity: self.group_capacity(),
                segments: segment_bytes
                    .iter()
                    .map(|b| subnet_proto::digest(b))
                    .collect(),
                backend,
            },
        );
        let next = Residual {
            window,
            source_window,
            before: residual_in,
            after: compressed.residual_out,
        };
        if let Some(path) = &self.inner.residual_file
            && let Err(e) = residual::save(path, &engine.digest(), &next)
        {
            // A stale file would restart this miner from a residual its commitments no longer
            // continue, which validators treat as fraud; an empty residual is always accepted.
            let removed = std::fs::remove_file(path);
            tracing::warn!(window, path = %path.display(), error = %e, removed = removed.is_ok(), "cannot save the compression residual; the file is removed so that a restart starts from an empty residual");
        }
        *residual = Some(next);
        ServedGradient {
            commitment,
            payload: Arc::new(compressed.payload),
            dense: Arc::new(dense),
            residual_in: Arc::new(residual_in_bytes),
            segments: segment_bytes
                .into_iter()
                .enumerate()
                .map(|(i, b)| StateDir::keep(self.inner.state_dir.as_ref(), window, i, b))
                .collect(),
        }
    }

    /// Makes a window's committed artefacts servable (the commitment at once, the rest once the
    /// window has closed), forgetting the oldest beyond the kept ones.
    /// Stops answering audits of `window` (`Some`): a request for its dense gradient or residual
    /// gets the commitment and then nothing. `None` answers every window again. Only
    /// `miner::adversary` calls it.
    pub fn stall_artefacts(&self, window: Option<u64>) {
        let mut stalled = self.inner.stalled.lock().expect("stall lock");
        match window {
            Some(w) => {
                stalled.insert(w);
            }
            None => stalled.clear(),
        }
    }

    /// Whether audits of `window` go unanswered.
    pub fn stalls(&self, window: u64) -> bool {
        self.inner
            .stalled
            .lock()
            .expect("stall lock")
            .contains(&window)
    }

    pub fn publish(&self, window: u64, served: ServedGradient) {
        let mut state = self.inner.state.write().expect("miner state lock");
        state.gradients.insert(window, Arc::new(served));
        while state.gradients.len() > KEPT_WINDOWS {
            state.gradients.pop_first();
        }
    }
}
