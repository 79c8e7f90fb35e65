//! The `subnet` command's library side: the in-process localnet. The binary only parses arguments.

pub mod localnet;

/// The task the localnet trains by default.
pub const LOCALNET_TASK: &str = include_str!("../../tasks/localnet-lm.toml");
