//! Pure scoring math: usefulness and its statistics, the checks that catch cheaters, a window's
//! decisions from its evidence, weights and their u16 form, and Yuma consensus.
//! No IO, no networking, no async: clock and randomness come in as arguments.

pub mod checks;
pub mod decide;
pub mod economics;
pub mod fixed_math;
pub mod params;
pub mod reason;
pub mod simulate;
pub mod usefulness;
pub mod weights;
pub mod yuma;

pub use checks::{AssignmentCheck, AssignmentEvidence, Similarity};
pub use decide::{
    Averages, Bans, DEFAULT_AUDIT_GRACE, LeaveOneOut, MinerDecision, MinerEvidence, ScoringParams,
    Verdict, WindowEvidence, aggregate_step, aggregated, aggregation_order, averages_after,
    bans_after, best_scale, candidates, decide, measured, screen,
};
pub use reason::{Reason, ReasonKind};
pub use usefulness::UsefulnessScore;
pub use weights::{moving_average, normalize_max_weight, weights_to_u16};
pub use yuma::{EpochInput, EpochOutput, YumaParams, YumaState};
