//! The rules' parameters: every threshold a window applies, as the task file's `[scoring]` section
//! sets them and as `subnet replay --scoring` varies them.

use serde::{Deserialize, Serialize};

/// Every rule a window applies, from measuring a gradient to aggregating the earners (the task
/// file's `[scoring]` section holds them). A replay varies any of them (`subnet replay --scoring`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoringParams {
    /// Weight of the newest window in the moving average (0..=1).
    pub moving_average: f64,
    /// No miner's weight may exceed this share.
    pub max_weight: f64,
    /// The assignment check passes at or below this one-sided p-value.
    pub assignment_p_value: f64,
    /// Candidates at least this similar (cosine) are one training run: they share one score.
    pub copy_cosine: f64,
    /// A gradient whose norm exceeds this multiple of the window's clip norm is refused.
    pub max_norm_ratio: f64,
    /// Windows after a fraud in which the miner's hotkey earns nothing.
    pub fraud_ban_windows: u64,
    /// A gradient is measured on its own at this fraction of a full outer step.
    pub eval_step: f64,
    /// How many of the best earners of each parameter group are aggregated.
    pub aggregate_top: usize,
    /// Fewer earners than this are not aggregated: the model never moves by one miner's say.
    pub aggregate_min: usize,
    /// Largest relative L2 difference between an audited segment's end and its re-execution (the
    /// parameters relative to the segment's movement, and each AdamW moment relative to its size;
    /// in records from before segments, the whole window's dense gradient) that counts as backend
    /// noise rather than fraud, for work trained on another backend than the CPU (CPU training
    /// must reproduce bit for bit).
    pub spot_check_tolerance: f64,
    /// Windows after an audited window in which the miner may still serve that window's
    /// artefacts: its pay from this validator is withheld until it does, and an audit still
    /// unresolved when this many windows have passed is fraud.
    #[serde(default = "default_audit_grace")]
    pub audit_grace: u64,
    /// The step leave-one-out evaluates each candidate at (records written before it was a rule
    /// read `uniform`).
    #[serde(default)]
    pub leave_one_out: LeaveOneOut,
    /// A window in which fewer than `aggregate_min` gradients earn still steps with every
    /// candidate, if there are at least `aggregate_min` and their aggregate lowers the eval loss
    /// (records written before it was a rule read false: such windows kept the checkpoint).
    #[serde(default)]
    pub step_with_candidates: bool,
    /// The copy check compares what is left of each candidate beside the direction of the
    /// validator's own training of the window, rather than the whole gradients: honest miners'
    /// windows share that common direction (dense ones so much that two honest miners' cosine may
    /// pass `copy_cosine`), a copy shares everything else too (records written before it was a
    /// rule read false: whole gradients).
    #[serde(default)]
    pub copy_beside_reference: bool,
    /// The fractions of the outer rate the candidates' aggregate is tried at, largest first: the
    /// window steps at the first whose aggregate lowers the eval loss, and leave-one-out scores
    /// each candidate at that step. Empty: the whole outer rate, as records
    /// written before it was a rule read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub step_scales: Vec<f64>,
    /// Under `step_with_candidates`, a window without candidates because no gradient helped alone
    /// (at `eval_step`) steps, paying nobody, with every gradient that failed nothing else, if
    /// their aggregate lowers the eval loss (records written before it was a rule read false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub step_with_unhelpful: bool,
    /// Leave-one-out scores each candidate at the fraction of `step_scales` at which the aggregate
    /// of every candidate lowers the eval loss most (`best_scale`) rather than at the whole rate:
    /// where the whole step overshoots, leaving a gradient out shrinks it and so looks like a
    /// gain, and honest candidates score below zero. The window still steps as
    /// `aggregate_step` says. Records written before it was a rule read false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub score_at_best_scale: bool,
}

/// The most fractions of the outer rate a window tries (each costs one pass over the eval batches).
pub const MAX_STEP_SCALES: usize = 8;

/// Why `scales` cannot be a window's `step_scales` (at most `MAX_STEP_SCALES` fractions of the
/// outer rate, each in (0, 4], largest first, none twice), or None.
pub fn step_scales_problem(scales: &[f64]) -> Option<String> {
    let fine = scales.len() <= MAX_STEP_SCALES
        && scales.iter().all(|x| *x > 0.0 && *x <= 4.0)
        && scales.windows(2).all(|w| w[0] > w[1]);
    (!fine).then(|| {
        format!(
            "= {scales:?} must be at most {MAX_STEP_SCALES} fractions of the outer rate, each in \
             (0, 4], largest first and none twice"
        )
    })
}

/// The grace of a task that names none.
pub const DEFAULT_AUDIT_GRACE: u64 = 2;

fn default_audit_grace() -> u64 {
    DEFAULT_AUDIT_GRACE
}

/// The step at which leave-one-out evaluates the candidates' aggregate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveOneOut {
    /// `outer_lr / n` times the sum of the n candidates, for every parameter alike.
    #[default]
    Uniform,
    /// The outer step aggregation applies: each parameter averaged over the candidates that carry
    /// it, with the outer momentum; a candidate left out takes its share of each parameter's move
    /// with it (the whole move of a parameter only it sends), so it is scored at the step it
    /// really makes.
    Applied,
}

impl ScoringParams {
    /// The names of the rules that joined the record after its first version: a record written
    /// before them takes them from its directory's task file, which set them then.
    pub const LATER_RULES: [&'static str; 4] = [
        "eval_step",
        "aggregate_top",
        "aggregate_min",
        "spot_check_tolerance",
    ];
}
