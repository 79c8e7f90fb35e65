//! What is wrong with a task file: every problem found, each under the key it concerns.

use std::fmt;

/// The problems found so far in a task file.
#[derive(Debug, Default)]
pub struct Problems(Vec<SpecProblem>);

impl Problems {
    /// The problems recorded, in order.
    pub fn into_problems(self) -> Vec<SpecProblem> {
        self.0
    }

    /// Records `message` under `key` unless `ok`.
    pub fn check(&mut self, ok: bool, key: &str, message: String) {
        if !ok {
            self.0.push(SpecProblem {
                key: key.to_string(),
                message,
            });
        }
    }
}

/// One problem in a task file, with the key path it concerns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecProblem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for SpecProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read task file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot parse the task file: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("the task file has {} problem(s):\n{}", .0.len(), .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<SpecProblem>),
}
