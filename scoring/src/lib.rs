//! Pure scoring math: usefulness and its statistics, weights and their u16 form, and Yuma consensus.
//! No IO, no networking, no async: clock and randomness come in as arguments.

pub mod simulate;
pub mod usefulness;
pub mod weights;
pub mod yuma;

pub use usefulness::UsefulnessScore;
pub use weights::{moving_average, normalize_max_weight, weights_to_u16};
pub use yuma::{EpochInput, EpochOutput, YumaParams, YumaState};
