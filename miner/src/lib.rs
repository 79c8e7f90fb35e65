//! The miner: syncs the global checkpoint from a validator, trains its assigned pages for a window,
//! and serves the signed pseudo-gradient over gRPC to validators that hold a permit. The miner
//! itself (its state, training and publishing, and `sync`: fetching the checkpoint) lives in
//! `node/`.

pub mod adversary;
pub mod metrics;
mod node;
pub mod progress;
pub mod residual;
mod service;

pub use metrics::Metrics;
pub use node::{
    KeptState, Miner, MinerError, PartError, Progress, ProgressHook, ServedGradient, StateDir,
    TrainReport, Trained, claimed_segments,
};
pub use service::MinerService;
