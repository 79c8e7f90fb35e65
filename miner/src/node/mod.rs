//! The miner's state and handle. `window` trains the assigned pages, compresses with error
//! feedback, signs and keeps the commitment and what it names for validators; `sync` fetches the
//! checkpoint; `spill` keeps segment states on disk.

mod spill;
mod sync;
mod window;

pub use spill::{KeptState, StateDir};

use crate::Metrics;
use crate::residual::{self, Residual};
use chain_client::{AccountId, Chain, ChainError, Membership, Metagraph, NotRegistered};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use subnet_proto::pb;
use subxt_signer::sr25519::Keypair;
use task::assignment::AssignmentError;
use task::checkpoint::CheckpointError;
use task::segment::TrainState;
use task::{Checkpoint, TaskEngine};

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

    /// Makes a window's committed artefacts servable (the commitment at once, the rest once the
    /// window has closed), forgetting the oldest beyond the kept ones.
    pub fn publish(&self, window: u64, served: ServedGradient) {
        let mut state = self.inner.state.write().expect("miner state lock");
        state.gradients.insert(window, Arc::new(served));
        while state.gradients.len() > KEPT_WINDOWS {
            state.gradients.pop_first();
        }
    }
}
