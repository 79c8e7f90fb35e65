//! One module per `subnet` command: its arguments and what it runs.

pub mod adversary;
pub mod chain;
pub mod efficacy;
pub mod localnet;
pub mod model;
pub mod replay;
pub mod task;
pub mod wallet;
pub mod yuma;

use ::task::TaskSpec;
use std::path::PathBuf;

/// The task file at `path`, or the built-in localnet task.
pub fn load_task(path: Option<&PathBuf>) -> anyhow::Result<TaskSpec> {
    match path {
        Some(p) => Ok(TaskSpec::from_file(p)?),
        None => Ok(TaskSpec::from_toml_str(subnet_cli::LOCALNET_TASK)?),
    }
}

/// A digest as lowercase hex.
pub fn hex_digest(d: &[u8; 32]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}
