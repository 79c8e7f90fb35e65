//! The `subnet` command's library side: the in-process localnet, local-chain administration and
//! offline replays. The binary only parses arguments.

pub mod chain_admin;
pub mod efficacy;
pub mod localnet;
pub mod model;
pub mod plot;
pub mod processes;
pub mod replay;
pub mod report;

/// The task the localnet trains by default.
pub const LOCALNET_TASK: &str = include_str!("../../tasks/localnet-lm.toml");
