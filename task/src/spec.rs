//! Task specs: what a subnet trains, read from a TOML file that miners and validators share. The spec's
//! digest (Blake2b-256 of its canonical TOML) is part of every request and commitment, so parties with
//! different task files refuse each other.

use crate::architecture::ModelSpec;
use crate::corpus::MarkovSpec;
use crate::problems::{Problems, SpecError, SpecProblem};
use crate::table::TableSpec;
use crate::text::TextSpec;
use pseudo_gradient::codec::{self, Compressed, Layout};
use serde::{Deserialize, Serialize};

/// The most parameter groups a task may declare.
pub const MAX_GROUPS: usize = 256;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    pub task: Identity,
    pub model: ModelSpec,
    pub data: DataSpec,
    pub shards: ShardSpec,
    pub training: TrainingSpec,
    pub window: WindowSpec,
    pub compression: CompressionSpec,
    pub scoring: ScoringSpec,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    pub name: String,
    /// Becomes the chain's weights version key.
    pub version: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// The synthetic Markov corpus (known entropy rate) ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub markov: Option<MarkovSpec>,
    /// ... or a real corpus file ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextSpec>,
    /// ... or a table of features and classes. Exactly one of the three.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<TableSpec>,
    /// Tokens (or table rows) per page, the unit of assignment.
    pub page_len: usize,
    /// Pages [0, train_pages) form the training split.
    pub train_pages: u64,
    /// Pages [train_pages, train_pages + heldout_pages) are held out: never assigned, only evaluated.
    pub heldout_pages: u64,
}

impl DataSpec {
    /// Tokens (or table rows) in the training split.
    pub fn training_items(&self) -> usize {
        (self.train_pages as usize).saturating_mul(self.page_len)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardSpec {
    pub pages_per_miner: usize,
    /// How many balanced parameter groups the model is cut into (`task::groups`): each window a
    /// miner trains one group that fits what it declared it can hold. 0 or 1: the whole model.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub groups: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingSpec {
    pub inner_steps: usize,
    pub batch_size: usize,
    /// Inner AdamW learning rate at window 0.
    pub lr: f64,
    /// The inner learning rate follows a cosine from `lr` down to `min_lr` over `decay_windows`
    /// windows, then stays at `min_lr` (0 windows: constant `lr`).
    pub min_lr: f64,
    pub decay_windows: u64,
    pub beta1: f64,
    pub beta2: f64,
    pub epsilon: f64,
    pub weight_decay: f64,
    /// Clip the norm of each parameter tensor's gradient at every inner step (0 disables).
    pub grad_clip: f64,
    /// Outer learning rate applied to the aggregated pseudo-gradient.
    pub outer_lr: f64,
    /// Outer Nesterov momentum (DiLoCo uses 0.9 with outer_lr 0.7); 0 is plain SGD.
    #[serde(default)]
    pub outer_momentum: f64,
    /// How much the outer step grows where several gradients carry a parameter: each parameter
    /// steps by its clipped sum over `count^(1 - outer_agreement)`, `count` the gradients that
    /// carry it. 0 (the default) is the per-parameter mean; with dense gradients every parameter
    /// steps `count^outer_agreement` times the mean, while a parameter only one sparse gradient
    /// carries steps by its value as before.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub outer_agreement: f64,
    /// Inner steps over which the learning rate rises linearly to the window's rate, counted in
    /// the optimizer's steps (a fresh optimizer's first steps are its largest): every window warms
    /// up when its optimizer starts fresh, only the first when `carry_moments`; 0: none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub warmup_steps: usize,
    /// Inner steps per segment: a miner commits its training state after each, and an audit
    /// re-executes segments rather than the whole window (0, or at least `inner_steps`: the whole
    /// window is one segment).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub segment_steps: usize,
    /// Windows start from the inner AdamW's state carried over from the window before instead of a
    /// fresh optimizer: each checkpoint publishes the moments a public training of its window ends
    /// with (a miner's share of training pages drawn from the window's seed, from the same state,
    /// `TaskEngine::inner_state_batches`), bound by its digest, so that every window stays a pure
    /// function of public inputs. The warm-up counts the optimizer's steps, so only the first
    /// window warms up.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub carry_moments: bool,
}

impl TrainingSpec {
    /// The inner steps of each segment of a window, in order.
    pub fn segments(&self) -> Vec<std::ops::Range<usize>> {
        crate::segment::segments(self.inner_steps, self.segment_steps)
    }

    /// Sets the inner steps of a window (for shorter runs than the task's), the warm-up cut to
    /// them so that the task stays valid.
    pub fn set_inner_steps(&mut self, steps: usize) {
        self.inner_steps = steps;
        self.warmup_steps = self.warmup_steps.min(steps);
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn is_zero_f64(x: &f64) -> bool {
    *x == 0.0
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// Chain blocks per window.
    pub blocks: u64,
}

impl WindowSpec {
    /// The window that `block` falls in: window w is blocks [w * blocks, (w + 1) * blocks).
    pub fn of_block(&self, block: u64) -> u64 {
        block / self.blocks.max(1)
    }

    /// The first block of `window`, whose hash seeds it.
    pub fn first_block(&self, window: u64) -> u64 {
        window * self.blocks.max(1)
    }

    /// The block at which `window` has closed: from here on its gradients may be served, and a
    /// commitment arriving now is late.
    pub fn close_block(&self, window: u64) -> u64 {
        self.first_block(window + 1)
    }
}

/// How a miner compresses its pseudo-gradient: the `top_k` largest-magnitude values of every
/// `chunk` consecutive parameters, quantized to `value_bits` (8: a signed byte against the chunk's
/// largest value; 1 to 7: a sign and magnitude bits, positions packed), with error feedback (what was not sent
/// is kept, scaled by `error_feedback`, and added to the next window's gradient). `top_k = 0` sends
/// the dense f32 gradient.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionSpec {
    pub chunk: usize,
    pub top_k: usize,
    pub value_bits: u32,
    pub error_feedback: f64,
}

impl CompressionSpec {
    /// The task's payload layout.
    pub fn layout(&self) -> Layout {
        Layout::of_task(self.chunk, self.top_k, self.value_bits)
    }

    /// The task's codec over the parameters `range` of `dense` plus the error-feedback share of
    /// `residual_in`: the payload, and the residual it leaves (whole-model sized).
    pub fn compress(
        &self,
        dense: &[f32],
        residual_in: &[f32],
        range: std::ops::Range<usize>,
    ) -> Compressed {
        let feedback = self.error_feedback as f32;
        codec::compress_range(dense, residual_in, self.layout(), feedback, range)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoringSpec {
    /// Held-out batches per window on which every gradient is evaluated.
    pub eval_batches: usize,
    pub eval_batch_size: usize,
    /// Usefulness is the relative loss drop after stepping `eval_step * delta` from the checkpoint: a
    /// fraction of a full step measures whether the direction helps rather than whether one miner's
    /// whole step overshoots (each delta is only a share of the aggregate).
    pub eval_step: f64,
    /// Weight of the newest window in the moving average of scores (0..=1).
    pub moving_average: f64,
    /// How many of the best gradients the validator aggregates.
    pub aggregate_top: usize,
    /// Fewer earning gradients than this are not aggregated (the checkpoint stays): the model never
    /// moves by one miner's say alone.
    pub aggregate_min: usize,
    /// No miner's weight may exceed this share (0..=1).
    pub max_weight: f64,
    /// How many batches of sequences a miner trained on the assignment check draws (by the
    /// validator's secret seed), each paired with a batch of their held-back neighbours.
    pub assignment_batches: usize,
    /// The assignment check passes at or below this one-sided p-value.
    pub assignment_p_value: f64,
    /// Gradients at least this similar (cosine) are one training run: they share one score.
    pub copy_cosine: f64,
    /// A gradient whose norm exceeds this multiple of the norm of the validator's own training of
    /// the window is refused (scale alone never pays).
    pub max_norm_ratio: f64,
    /// Every validator re-executes each miner's window with probability one in this many, drawn
    /// independently for each (miner, window) from its own secret (0: never).
    pub audit_period: u64,
    /// Windows after a fraud in which the hotkey earns nothing from the validator that caught it.
    pub fraud_ban_windows: u64,
    /// Largest relative L2 difference between an audited segment's end and the validator's
    /// re-execution of it (relative to the segment's movement) that counts as backend noise rather
    /// than fraud, for windows trained elsewhere than on the CPU; CPU training must reproduce bit
    /// for bit.
    pub spot_check_tolerance: f64,
    /// Windows after an audited window in which a miner may still serve that window's artefacts
    /// (its pay is withheld until it does); unresolved after them, the audit is fraud. Unset:
    /// `scoring::DEFAULT_AUDIT_GRACE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_grace: Option<u64>,
    /// Where fewer than `aggregate_min` gradients earn, the window still steps with every
    /// candidate (each helpful alone, on its pages, no fraud) if there are at least
    /// `aggregate_min` and their aggregate lowers the validator's eval loss. Leave-one-out between
    /// honest gradients of equal worth is mostly noise, so without this a window in which most
    /// honest gradients score a little below zero leaves the model where it was. Nobody is paid
    /// for such a step that did not earn. Unset: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub step_with_candidates: bool,
    /// The copy check compares candidates beside the direction of the validator's own training of
    /// the window (`scoring::ScoringParams::copy_beside_reference`): the part of a window every
    /// honest miner shares does not make two of them look like copies. Unset: false, whole
    /// gradients.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub copy_beside_reference: bool,
    /// The fractions of `training.outer_lr` the candidates' aggregate is tried at, largest first
    /// (`scoring::ScoringParams::step_scales`): the window steps at the first whose aggregate lowers
    /// the eval loss, so that a window whose whole step overshoots still moves the model, and
    /// leave-one-out scores each candidate at that step. Unset: the whole outer rate alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub step_scales: Vec<f64>,
    /// Under `step_with_candidates`, a window in which no gradient helps alone (so none is a
    /// candidate) still steps, paying nobody, with every gradient that failed nothing else, if
    /// their aggregate lowers the eval loss: one miner's window, even at `eval_step`, may overshoot
    /// where the mean of several helps. Unset: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub step_with_unhelpful: bool,
    /// Leave-one-out scores each candidate at the fraction of `step_scales` whose aggregate of
    /// every candidate lowers the eval loss most, rather than at the whole rate
    /// (`scoring::ScoringParams::score_at_best_scale`): where the whole step overshoots, leaving
    /// an honest gradient out shrinks it and looks like a gain. The window's step is unchanged.
    /// Needs `step_scales`. Unset: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub score_at_best_scale: bool,
}

impl ScoringSpec {
    /// Every rule a window applies, as the window's steps read them.
    pub fn params(&self) -> scoring::ScoringParams {
        scoring::ScoringParams {
            moving_average: self.moving_average,
            max_weight: self.max_weight,
            assignment_p_value: self.assignment_p_value,
            copy_cosine: self.copy_cosine,
            max_norm_ratio: self.max_norm_ratio,
            fraud_ban_windows: self.fraud_ban_windows,
            eval_step: self.eval_step,
            aggregate_top: self.aggregate_top,
            aggregate_min: self.aggregate_min,
            spot_check_tolerance: self.spot_check_tolerance,
            audit_grace: self.audit_grace.unwrap_or(scoring::DEFAULT_AUDIT_GRACE),
            leave_one_out: scoring::LeaveOneOut::Applied,
            step_with_candidates: self.step_with_candidates,
            copy_beside_reference: self.copy_beside_reference,
            step_scales: self.step_scales.clone(),
            step_with_unhelpful: self.step_with_unhelpful,
            score_at_best_scale: self.score_at_best_scale,
        }
    }
}

impl TaskSpec {
    /// Parses and validates; every problem is reported at once.
    pub fn from_toml_str(text: &str) -> Result<Self, SpecError> {
        Self::parse(text, None)
    }

    /// Parses with relative corpus paths resolved against `base` (the task file's directory).
    fn parse(text: &str, base: Option<&std::path::Path>) -> Result<Self, SpecError> {
        let mut spec: TaskSpec = toml::from_str(text)?;
        if let (Some(t), Some(base)) = (&mut spec.data.text, base) {
            t.base_dir = Some(base.to_path_buf());
        }
        let problems = spec.validate();
        if problems.is_empty() {
            Ok(spec)
        } else {
            Err(SpecError::Invalid(problems))
        }
    }

    /// Reads, parses and validates a task file.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self, SpecError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, path.parent())
    }

    /// Every problem of the spec, section by section.
    pub fn validate(&self) -> Vec<SpecProblem> {
        let mut problems = Problems::default();
        let p = &mut problems;
        p.check(
            !self.task.name.trim().is_empty(),
            "task.name",
            "must not be empty".into(),
        );
        let d = &self.data;
        let table = d.table.as_ref().map(|t| t.corpus(d.training_items()));
        self.model.check(&d.shape(table.as_ref()), p);
        d.check(table.as_ref(), self.shards.pages_per_miner, p);
        self.shards.check(p);
        self.training.check(p);
        self.window.check(p);
        self.compression.check(p);
        self.scoring.check(p);
        problems.into_problems()
    }

    /// Canonical bytes: the spec re-serialized, so formatting and comments in the file do not matter.
    pub fn canonical_toml(&self) -> String {
        toml::to_string(self).expect("a task spec always serializes")
    }

    pub fn digest(&self) -> [u8; 32] {
        pseudo_gradient::digest::blake2b(self.canonical_toml().as_bytes())
    }

    /// The inner learning rate of `window` (cosine decay, see `TrainingSpec`).
    pub fn inner_lr(&self, window: u64) -> f64 {
        let t = &self.training;
        if t.decay_windows == 0 {
            return t.lr;
        }
        let progress = window.min(t.decay_windows) as f64 / t.decay_windows as f64;
        t.min_lr + (t.lr - t.min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }

    /// How many predictions one training example holds: `seq_len` next tokens of a sequence, one
    /// class of a table row.
    pub fn targets_per_example(&self) -> usize {
        if self.data.table.is_some() {
            1
        } else {
            self.model.example_len() - 1
        }
    }

    /// Tokens (table rows) one miner trains on per window.
    pub fn tokens_per_miner_window(&self) -> usize {
        self.training.inner_steps * self.training.batch_size * self.targets_per_example()
    }
}

mod checks;
#[cfg(test)]
mod tests;
