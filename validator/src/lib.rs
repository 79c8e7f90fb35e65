//! The validator: collects every miner's signed commitment while a window is open, fetches the work
//! those commitments name once the window has closed, scores what each gradient adds on batches the
//! miners could not know, audits miners by re-executing their windows, sets weights on chain,
//! aggregates the earning gradients into the next global checkpoint and serves that checkpoint.
//!
//! A window is scored in the protocol's steps (`Validator::run_window`): follow the lead's
//! checkpoint, gather, measure, audit, decide (a pure function in `scoring`), put weights on chain,
//! report fraud, aggregate, record. The validator and its steps live in `node/`, one module per
//! step; what a window produced is in `outcome`.

pub mod aggregation;
pub mod audit;
pub mod dashboard;
mod error;
pub mod evaluate;
mod gather;
pub mod metrics;
mod node;
mod outcome;
pub mod record;
pub mod replay;
mod service;
pub mod store;
mod weights;
pub mod window;

pub use aggregation::Recipe;
pub use error::ValidatorError;
pub use gather::Rejection;
pub use node::Validator;
pub use outcome::{Adoption, MinerResult, WeightsSet, WindowOutcome};
pub use record::{AuditRecord, GradientRecord, WeightsRecord, WindowRecord};
pub use service::ValidatorService;
pub use store::{DataDir, PendingReveal, SavedState, StoreError};
