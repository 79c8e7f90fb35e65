//! The `subnet` command's library side: the in-process localnet and local-chain administration. The
//! binary only parses arguments.

pub mod chain_admin;
pub mod localnet;

/// The task the localnet trains by default.
pub const LOCALNET_TASK: &str = include_str!("../../tasks/localnet-lm.toml");
