//! Task specs: what a subnet trains, read from a TOML file that miners and validators share. The spec's
//! digest (Blake2b-256 of its canonical TOML) is part of every request and commitment, so parties with
//! different task files refuse each other.

use crate::architecture::DataShape;
pub use crate::architecture::mlp::MlpSpec;
pub use crate::architecture::transformer::TransformerSpec;
use crate::corpus::MarkovSpec;
use crate::table::TableSpec;
use crate::text::{TextFormat, TextSpec};
use blake2::{Blake2b, Digest, digest::consts::U32};
use serde::{Deserialize, Serialize};
use std::fmt;

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

/// The `[model]` table: `architecture = "..."` picks one of the registered architectures (see
/// `crate::architecture`), the other keys are that architecture's own.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "architecture", rename_all = "snake_case")]
pub enum ModelSpec {
    Transformer(TransformerSpec),
    Mlp(MlpSpec),
}

impl ModelSpec {
    /// The transformer's table, for tasks that use one (tests shrink it).
    pub fn transformer_mut(&mut self) -> Option<&mut TransformerSpec> {
        match self {
            ModelSpec::Transformer(t) => Some(t),
            _ => None,
        }
    }
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
    /// Inner steps over which each window's learning rate rises linearly to the window's rate (the
    /// optimizer state is fresh every window, and Adam's first steps are the largest); 0: none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub warmup_steps: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
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
    /// Every validator re-executes every miner's window once per this many windows, at a window
    /// drawn from its own secret (0: never).
    pub audit_period: u64,
    /// Windows after a fraud in which the hotkey earns nothing from the validator that caught it.
    pub fraud_ban_windows: u64,
    /// Largest relative L2 difference between a miner's dense pseudo-gradient and the validator's
    /// re-execution that counts as backend noise rather than fraud.
    pub spot_check_tolerance: f64,
}

impl ScoringSpec {
    /// The parameters that turn a window's evidence into decisions.
    pub fn params(&self) -> scoring::ScoringParams {
        scoring::ScoringParams {
            moving_average: self.moving_average,
            max_weight: self.max_weight,
            assignment_p_value: self.assignment_p_value,
            copy_cosine: self.copy_cosine,
            max_norm_ratio: self.max_norm_ratio,
            fraud_ban_windows: self.fraud_ban_windows,
        }
    }
}

/// The problems found so far in a task file.
#[derive(Debug, Default)]
pub struct Problems(Vec<SpecProblem>);

impl Problems {
    /// Records `message` under `key` unless `ok`.
    pub fn check(&mut self, ok: bool, key: &str, message: String) {
        if !ok {
            self.0.push(SpecProblem {
                key: key.to_string(),
                message,
            });
        }
    }
}

/// One problem in a task file, with the key path it concerns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecProblem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for SpecProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read task file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot parse the task file: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("the task file has {} problem(s):\n{}", .0.len(), .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<SpecProblem>),
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

    pub fn validate(&self) -> Vec<SpecProblem> {
        let mut problems = Problems::default();
        let p = &mut problems;
        p.check(
            !self.task.name.trim().is_empty(),
            "task.name",
            "must not be empty".into(),
        );
        let d = &self.data;
        let table = d
            .table
            .as_ref()
            .map(|t| crate::table::TableCorpus::load(t, d.training_items()));
        let shape = match (&d.text, &table) {
            (_, Some(table)) => DataShape::Table {
                features: table.features(),
                classes: table.classes(),
                page_len: d.page_len,
            },
            (Some(text), None) if text.format == TextFormat::U16 => DataShape::Tokens {
                bytes: false,
                vocab: text.corpus().ok().map(|c| c.max_token() as usize + 1),
                page_len: d.page_len,
            },
            _ => DataShape::Tokens {
                bytes: true,
                vocab: Some(256),
                page_len: d.page_len,
            },
        };
        self.model.check(&shape, p);
        let corpora = [d.markov.is_some(), d.text.is_some(), d.table.is_some()];
        p.check(
            corpora.iter().filter(|&&c| c).count() == 1,
            "data",
            "needs exactly one source: [data.markov] (synthetic), [data.text] (a file) or [data.table] (a data set)".into(),
        );
        // A file or table holds a known number of items: both splits must fit in it.
        let size = match (&d.text, &d.table, &table) {
            (Some(text), _, _) => match text.corpus() {
                Err(e) => {
                    p.check(false, "data.text", e);
                    None
                }
                Ok(corpus) => Some((text.path.as_str(), "tokens", "holds", corpus.len())),
            },
            (None, Some(t), Some(table)) => Some((t.source.name(), "rows", "has", table.rows())),
            _ => None,
        };
        if let Some((source, unit, verb, len)) = size {
            let pages = (len / d.page_len.max(1)) as u64;
            p.check(
                d.train_pages + d.heldout_pages <= pages,
                "data.train_pages",
                format!(
                    "+ data.heldout_pages = {} pages of {} {unit}, but {source} {verb} {len} {unit} ({pages} pages)",
                    d.train_pages + d.heldout_pages,
                    d.page_len,
                ),
            );
        }
        if let Some(mk) = &d.markov {
            p.check(
                (2..=64).contains(&mk.alphabet),
                "data.markov.alphabet",
                format!("= {} must be in 2..=64", mk.alphabet),
            );
            p.check(
                (1..=mk.alphabet).contains(&mk.successors),
                "data.markov.successors",
                format!(
                    "= {} must be in 1..=data.markov.alphabet ({})",
                    mk.successors, mk.alphabet
                ),
            );
            p.check(
                mk.skew.is_finite() && mk.skew >= 0.0,
                "data.markov.skew",
                "must be finite and >= 0".into(),
            );
            p.check(
                mk.context_skew.is_finite() && mk.context_skew >= 0.0,
                "data.markov.context_skew",
                "must be finite and >= 0".into(),
            );
        }
        p.check(
            d.heldout_pages > 0,
            "data.heldout_pages",
            "must be positive".into(),
        );
        p.check(
            d.train_pages >= self.shards.pages_per_miner as u64,
            "data.train_pages",
            format!(
                "= {} is fewer than shards.pages_per_miner = {}",
                d.train_pages, self.shards.pages_per_miner
            ),
        );
        p.check(
            self.shards.pages_per_miner > 0,
            "shards.pages_per_miner",
            "must be positive".into(),
        );
        p.check(
            self.shards.groups <= MAX_GROUPS,
            "shards.groups",
            format!("must be at most {MAX_GROUPS}"),
        );
        let t = &self.training;
        p.check(
            t.inner_steps > 0,
            "training.inner_steps",
            "must be positive".into(),
        );
        p.check(
            t.batch_size > 0,
            "training.batch_size",
            "must be positive".into(),
        );
        p.check(
            t.lr > 0.0 && t.lr.is_finite(),
            "training.lr",
            format!("= {} must be positive", t.lr),
        );
        p.check(
            t.min_lr >= 0.0 && t.min_lr <= t.lr,
            "training.min_lr",
            format!("= {} must be in [0, training.lr = {}]", t.min_lr, t.lr),
        );
        p.check(
            (0.0..1.0).contains(&t.beta1),
            "training.beta1",
            format!("= {} must be in [0, 1)", t.beta1),
        );
        p.check(
            (0.0..1.0).contains(&t.beta2),
            "training.beta2",
            format!("= {} must be in [0, 1)", t.beta2),
        );
        p.check(
            t.epsilon > 0.0,
            "training.epsilon",
            "must be positive".into(),
        );
        p.check(
            t.weight_decay >= 0.0,
            "training.weight_decay",
            "must be >= 0".into(),
        );
        p.check(
            t.grad_clip >= 0.0,
            "training.grad_clip",
            "must be >= 0 (0 disables)".into(),
        );
        p.check(
            t.outer_lr > 0.0 && t.outer_lr.is_finite(),
            "training.outer_lr",
            "must be positive".into(),
        );
        p.check(
            t.warmup_steps <= t.inner_steps,
            "training.warmup_steps",
            format!(
                "= {} exceeds training.inner_steps = {}",
                t.warmup_steps, t.inner_steps
            ),
        );
        p.check(
            (0.0..1.0).contains(&t.outer_momentum),
            "training.outer_momentum",
            format!("= {} must be in [0, 1)", t.outer_momentum),
        );
        p.check(
            self.window.blocks > 0,
            "window.blocks",
            "must be positive".into(),
        );
        let c = &self.compression;
        p.check(
            (1..=65536).contains(&c.chunk),
            "compression.chunk",
            format!("= {} must be in 1..=65536 (positions are 16-bit)", c.chunk),
        );
        p.check(
            c.top_k <= c.chunk,
            "compression.top_k",
            format!("= {} exceeds compression.chunk = {}", c.top_k, c.chunk),
        );
        p.check(
            (1..=8).contains(&c.value_bits),
            "compression.value_bits",
            format!(
                "= {} is not supported: values take 1 to 8 bits",
                c.value_bits
            ),
        );
        p.check(
            c.value_bits == 8 || c.top_k == 0 || c.chunk >= 2,
            "compression.chunk",
            format!("= {} must be at least 2 for packed values", c.chunk),
        );
        p.check(
            (0.0..=1.0).contains(&c.error_feedback),
            "compression.error_feedback",
            format!("= {} must be in [0, 1]", c.error_feedback),
        );
        let s = &self.scoring;
        p.check(
            s.eval_batches >= 2,
            "scoring.eval_batches",
            format!(
                "= {} must be at least 2 (a standard error needs two)",
                s.eval_batches
            ),
        );
        p.check(
            s.eval_batch_size > 0,
            "scoring.eval_batch_size",
            "must be positive".into(),
        );
        p.check(
            s.moving_average > 0.0 && s.moving_average <= 1.0,
            "scoring.moving_average",
            format!("= {} must be in (0, 1]", s.moving_average),
        );
        p.check(
            s.aggregate_top > 0,
            "scoring.aggregate_top",
            "must be positive".into(),
        );
        p.check(
            s.max_weight > 0.0 && s.max_weight <= 1.0,
            "scoring.max_weight",
            format!("= {} must be in (0, 1]", s.max_weight),
        );
        p.check(
            s.assignment_batches >= 2,
            "scoring.assignment_batches",
            format!(
                "= {} must be at least 2 (a standard error needs two)",
                s.assignment_batches
            ),
        );
        p.check(
            s.assignment_p_value > 0.0 && s.assignment_p_value < 1.0,
            "scoring.assignment_p_value",
            format!("= {} must be in (0, 1)", s.assignment_p_value),
        );
        p.check(
            s.copy_cosine > 0.0 && s.copy_cosine <= 1.0,
            "scoring.copy_cosine",
            format!("= {} must be in (0, 1]", s.copy_cosine),
        );
        p.check(
            s.aggregate_min >= 1 && s.aggregate_min <= s.aggregate_top,
            "scoring.aggregate_min",
            format!(
                "= {} must be at least 1 and at most scoring.aggregate_top = {}",
                s.aggregate_min, s.aggregate_top
            ),
        );
        p.check(
            s.max_norm_ratio >= 1.0,
            "scoring.max_norm_ratio",
            format!(
                "= {} must be at least 1 (honest work has the reference's norm)",
                s.max_norm_ratio
            ),
        );
        p.check(
            s.eval_step > 0.0 && s.eval_step <= 1.0,
            "scoring.eval_step",
            format!(
                "= {} must be in (0, 1] (the fraction of a full step a gradient is scored at)",
                s.eval_step
            ),
        );
        p.check(
            s.spot_check_tolerance >= 0.0,
            "scoring.spot_check_tolerance",
            format!("= {} must not be negative", s.spot_check_tolerance),
        );
        problems.0
    }

    /// Canonical bytes: the spec re-serialized, so formatting and comments in the file do not matter.
    pub fn canonical_toml(&self) -> String {
        toml::to_string(self).expect("a task spec always serializes")
    }

    pub fn digest(&self) -> [u8; 32] {
        Blake2b::<U32>::digest(self.canonical_toml().as_bytes()).into()
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

#[cfg(test)]
mod tests {
    use super::*;

    const LOCALNET: &str = include_str!("../../tasks/localnet-lm.toml");

    #[test]
    fn shipped_task_parses_and_digest_ignores_formatting() {
        let spec = TaskSpec::from_toml_str(LOCALNET).unwrap();
        let reformatted = TaskSpec::from_toml_str(&spec.canonical_toml()).unwrap();
        assert_eq!(spec.digest(), reformatted.digest());
        let mut other = spec.clone();
        other.training.lr *= 2.0;
        assert_ne!(spec.digest(), other.digest());
    }

    #[test]
    fn every_shipped_task_is_valid() {
        for text in [
            LOCALNET,
            include_str!("../../tasks/tiny-lm.toml"),
            include_str!("../../tasks/wine-quality.toml"),
        ] {
            let spec = TaskSpec::from_toml_str(text).unwrap();
            assert!(spec.validate().is_empty());
        }
    }

    #[test]
    fn a_page_holds_a_trained_and_a_held_back_example() {
        let mut spec = TaskSpec::from_toml_str(LOCALNET).unwrap();
        let seq_len = spec.model.transformer_mut().unwrap().seq_len;
        spec.data.page_len = 2 * (seq_len + 1) - 1;
        let Err(SpecError::Invalid(problems)) =
            TaskSpec::from_toml_str(&toml::to_string(&spec).unwrap())
        else {
            panic!("accepted a page of one sequence")
        };
        assert_eq!(problems[0].key, "data.page_len", "{problems:?}");
        // The smallest page the check allows gives every miner training batches.
        spec.data.page_len = 2 * (seq_len + 1);
        let spec = TaskSpec::from_toml_str(&toml::to_string(&spec).unwrap()).unwrap();
        let engine = crate::TaskEngine::new(spec);
        let assignment = engine.assignment(1, 7, 3).unwrap();
        let batches = engine.training_batches(&assignment, 7);
        assert_eq!(batches.len(), engine.spec().training.inner_steps);
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let mut spec = TaskSpec::from_toml_str(LOCALNET).unwrap();
        let model = spec.model.transformer_mut().unwrap();
        model.n_heads = 5;
        model.d_model = 64;
        spec.training.lr = -1.0;
        spec.scoring.eval_batches = 1;
        spec.scoring.eval_step = f64::NAN;
        let text = toml::to_string(&spec).unwrap();
        let Err(SpecError::Invalid(problems)) = TaskSpec::from_toml_str(&text) else {
            panic!("accepted a broken spec")
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "model.n_heads",
                "training.lr",
                "training.min_lr",
                "scoring.eval_batches",
                "scoring.eval_step"
            ]
        );
        assert_eq!(
            problems[0].to_string(),
            "model.n_heads: = 5 does not divide model.d_model = 64"
        );
    }
}
