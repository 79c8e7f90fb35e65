//! The per-section checks of a task spec (`TaskSpec::validate` runs them all).
//!
//! Each `check` is a list of one-line rules over its section, as long as the section has fields
//! (some over 60 lines): read as a list, not as logic.

use super::{
    CompressionSpec, DataSpec, MAX_GROUPS, ScoringSpec, ShardSpec, TrainingSpec, WindowSpec,
};
use crate::architecture::DataShape;
use crate::problems::Problems;
use crate::text::TextFormat;

impl DataSpec {
    /// What the model reads from this data: token pages (bytes or a tokenized file's ids) or table
    /// rows.
    pub(super) fn shape(&self, table: Option<&crate::table::TableCorpus>) -> DataShape {
        match (&self.text, table) {
            (_, Some(table)) => DataShape::Table {
                features: table.features(),
                classes: table.classes(),
                page_len: self.page_len,
            },
            (Some(text), None) if text.format == TextFormat::U16 => DataShape::Tokens {
                bytes: false,
                vocab: text.corpus().ok().map(|c| c.max_token() as usize + 1),
                page_len: self.page_len,
            },
            _ => DataShape::Tokens {
                bytes: true,
                vocab: Some(256),
                page_len: self.page_len,
            },
        }
    }

    pub(super) fn check(
        &self,
        table: Option<&crate::table::TableCorpus>,
        pages_per_miner: usize,
        p: &mut Problems,
    ) {
        let corpora = [
            self.markov.is_some(),
            self.text.is_some(),
            self.table.is_some(),
        ];
        p.check(
            corpora.iter().filter(|&&c| c).count() == 1,
            "data",
            "needs exactly one source: [data.markov] (synthetic), [data.text] (a file) or [data.table] (a data set)".into(),
        );
        // A file or table holds a known number of items: both splits must fit in it.
        let size = match (&self.text, &self.table, table) {
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
            let pages = (len / self.page_len.max(1)) as u64;
            p.check(
                self.train_pages + self.heldout_pages <= pages,
                "data.train_pages",
                format!(
                    "+ data.heldout_pages = {} pages of {} {unit}, but {source} {verb} {len} {unit} ({pages} pages)",
                    self.train_pages + self.heldout_pages,
                    self.page_len,
                ),
            );
        }
        if let Some(mk) = &self.markov {
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
            self.heldout_pages > 0,
            "data.heldout_pages",
            "must be positive".into(),
        );
        p.check(
            self.train_pages >= pages_per_miner as u64,
            "data.train_pages",
            format!(
                "= {} is fewer than shards.pages_per_miner = {}",
                self.train_pages, pages_per_miner
            ),
        );
    }
}

impl ShardSpec {
    pub(super) fn check(&self, p: &mut Problems) {
        p.check(
            self.pages_per_miner > 0,
            "shards.pages_per_miner",
            "must be positive".into(),
        );
        p.check(
            self.groups <= MAX_GROUPS,
            "shards.groups",
            format!("must be at most {MAX_GROUPS}"),
        );
    }
}

impl TrainingSpec {
    pub(super) fn check(&self, p: &mut Problems) {
        let t = self;
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
            (0.0..1.0).contains(&t.outer_agreement),
            "training.outer_agreement",
            format!("= {} must be in [0, 1)", t.outer_agreement),
        );
    }
}

impl WindowSpec {
    pub(super) fn check(&self, p: &mut Problems) {
        p.check(self.blocks > 0, "window.blocks", "must be positive".into());
    }
}

impl CompressionSpec {
    pub(super) fn check(&self, p: &mut Problems) {
        let c = self;
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
    }
}

impl ScoringSpec {
    pub(super) fn check(&self, p: &mut Problems) {
        let s = self;
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
            !s.step_with_unhelpful || s.step_with_candidates,
            "scoring.step_with_unhelpful",
            "applies only where scoring.step_with_candidates is true".into(),
        );
        p.check(
            !s.score_at_best_scale || !s.step_scales.is_empty(),
            "scoring.score_at_best_scale",
            "needs scoring.step_scales, the fractions of the outer rate to choose from".into(),
        );
        let scales = scoring::params::step_scales_problem(&s.step_scales);
        p.check(
            scales.is_none(),
            "scoring.step_scales",
            scales.unwrap_or_default(),
        );
        p.check(
            s.spot_check_tolerance >= 0.0,
            "scoring.spot_check_tolerance",
            format!("= {} must not be negative", s.spot_check_tolerance),
        );
    }
}
