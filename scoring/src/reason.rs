//! Why a miner's work was set aside, typed: a kind that programs match on (metrics labels, tables,
//! dashboards) and the sentence a person reads. The sentence is part of what a fraud report's
//! evidence digest covers, so it is kept exactly as written; records written before reasons had
//! kinds hold the sentence alone and read back as `Unclassified`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What kind of failure a reason reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonKind {
    // Refusals: the gradient is not evaluated this window.
    /// The miner serves no axon on chain.
    NoAxon,
    /// The miner could not be reached.
    Unreachable,
    /// The miner answered the request with an error.
    RefusedByMiner,
    /// No commitment was collected before the window closed.
    NotCommitted,
    /// An artefact came under another commitment than the one collected.
    OtherCommitment,
    /// A stream did not start with a commitment.
    NoCommitment,
    /// The commitment's signature or claims are wrong.
    BadCommitment,
    /// More bytes than committed.
    Oversized,
    /// The payload is not a gradient in the task's layout.
    Malformed,
    /// The gradient holds NaN or infinite values.
    NonFinite,
    /// No complete gradient within the deadline.
    Timeout,
    /// Applying the gradient makes a held-out loss NaN or infinite.
    NonFiniteLoss,
    /// An audit could not fetch the committed artefacts; the miner is audited again.
    AuditUnreachable,
    // Withheld: the miner earns nothing from this validator until an audit resolves.
    /// An audit of this or an earlier window has not completed.
    AuditPending,
    // Frauds: the miner did not do, or did not serve, the work it committed to.
    /// The residual chain across windows is broken.
    ResidualChain,
    /// An audited miner did not serve the artefacts it committed to.
    Unserved,
    /// The committed artefacts do not fit together (the payload is not their compression, the
    /// residual is not what is left, ...).
    Inconsistent,
    /// The re-executed training differs from the committed dense gradient.
    Irreproducible,
    /// An audit stayed unanswered for longer than the task's grace.
    AuditUnresolved,
    /// Written before reasons had kinds.
    Unclassified,
}

/// A reason: its kind and the sentence a person reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Stored", into = "Stored")]
pub struct Reason {
    pub kind: ReasonKind,
    pub text: String,
}

impl Reason {
    pub fn new(kind: ReasonKind, text: impl Into<String>) -> Self {
        Self {
            kind,
            text: text.into(),
        }
    }

    /// Whether the text says `needle` (a convenience for tests and filters).
    pub fn contains(&self, needle: &str) -> bool {
        self.text.contains(needle)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// How a reason is written: kind and text, or (before kinds) the text alone.
#[derive(Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum Stored {
    Typed { kind: ReasonKind, text: String },
    Text(String),
}

impl From<Stored> for Reason {
    fn from(stored: Stored) -> Self {
        match stored {
            Stored::Typed { kind, text } => Reason { kind, text },
            Stored::Text(text) => Reason::new(ReasonKind::Unclassified, text),
        }
    }
}

impl From<Reason> for Stored {
    fn from(reason: Reason) -> Self {
        Stored::Typed {
            kind: reason.kind,
            text: reason.text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_round_trips_with_its_kind() {
        let reason = Reason::new(ReasonKind::Timeout, "no complete gradient within 30 s");
        let json = serde_json::to_string(&reason).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"timeout","text":"no complete gradient within 30 s"}"#
        );
        assert_eq!(serde_json::from_str::<Reason>(&json).unwrap(), reason);
        assert_eq!(reason.to_string(), "no complete gradient within 30 s");
    }

    #[test]
    fn a_reason_written_as_text_alone_reads_back_unclassified() {
        let reason: Reason = serde_json::from_str(r#""unreachable: connection refused""#).unwrap();
        assert_eq!(reason.kind, ReasonKind::Unclassified);
        assert_eq!(reason.text, "unreachable: connection refused");
    }

    #[test]
    fn an_unknown_kind_is_an_error_not_a_silent_text() {
        assert!(serde_json::from_str::<Reason>(r#"{"kind":"gremlins","text":"x"}"#).is_err());
    }
}
