//! Chain errors. Rule violations carry subtensor's error names and say what was wrong.

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("CanNotSetRootNetworkWeights: netuid 0 is the root network")]
    CanNotSetRootNetworkWeights,
    #[error(
        "CommitRevealEnabled: subnet {netuid} requires commit_weights/reveal_weights, not set_weights"
    )]
    CommitRevealEnabled { netuid: u16 },
    #[error("CommitRevealDisabled: subnet {netuid} takes set_weights; commit-reveal is off")]
    CommitRevealDisabled { netuid: u16 },
    #[error("NoWeightsCommitFound: this hotkey has no weight commit on subnet {netuid}")]
    NoWeightsCommitFound { netuid: u16 },
    #[error(
        "InvalidRevealCommitHashNotMatch: the revealed weights, salt and version key hash to none of this hotkey's commits"
    )]
    InvalidRevealCommitHashNotMatch,
    #[error("RevealTooEarly: the commit can be revealed in epoch {epoch}, now is epoch {now}")]
    RevealTooEarly { epoch: u64, now: u64 },
    #[error(
        "ExpiredWeightCommit: the commit had to be revealed in epoch {epoch}, now is epoch {now}"
    )]
    ExpiredWeightCommit { epoch: u64, now: u64 },
    #[error("TooManyUnrevealedCommits: {pending} commits wait to be revealed (at most 10)")]
    TooManyUnrevealedCommits { pending: usize },
    #[error(
        "IncorrectCommitRevealVersion: the commit says version {given}, the chain runs version {required}"
    )]
    IncorrectCommitRevealVersion { given: u16, required: u16 },
    #[error(
        "InvalidRevealRound: round {round} is already public (the beacon is at round {latest}); target a later one"
    )]
    InvalidRevealRound { round: u64, latest: u64 },
    #[error("CommitTooLong: a timelocked commit of {len} bytes exceeds the chain's bound of {max}")]
    CommitTooLong { len: usize, max: usize },
    #[error("WeightVecNotEqualSize: {uids} uids but {weights} weights")]
    WeightVecNotEqualSize { uids: usize, weights: usize },
    #[error("UidsLengthExceedUidsInSubNet: {len} weights for a subnet of {n} uids")]
    UidsLengthExceedUidsInSubNet { len: usize, n: usize },
    #[error("HotKeyNotRegisteredInSubNet: hotkey {hotkey} is not registered on subnet {netuid}")]
    HotKeyNotRegisteredInSubNet { hotkey: String, netuid: u16 },
    #[error(
        "NotEnoughStakeToSetWeights: stake {stake} rao is below the threshold of {threshold} rao"
    )]
    NotEnoughStakeToSetWeights { stake: u64, threshold: u64 },
    #[error("IncorrectWeightVersionKey: given {given}, the subnet requires at least {required}")]
    IncorrectWeightVersionKey { given: u64, required: u64 },
    #[error(
        "SettingWeightsTooFast: last update at block {last_update}, rate limit {rate_limit}, now {now}"
    )]
    SettingWeightsTooFast {
        last_update: u64,
        rate_limit: u64,
        now: u64,
    },
    #[error("NeuronNoValidatorPermit: uid {uid} has no validator permit on subnet {netuid}")]
    NeuronNoValidatorPermit { uid: u16, netuid: u16 },
    #[error("DuplicateUids: uid {uid} appears more than once")]
    DuplicateUids { uid: u16 },
    #[error("UidVecContainInvalidOne: uid {uid} does not exist on subnet {netuid}")]
    UidVecContainInvalidOne { uid: u16, netuid: u16 },
    #[error("WeightVecLengthIsLow: {len} weights, the subnet requires at least {min}")]
    WeightVecLengthIsLow { len: usize, min: usize },
    #[error("MaxWeightExceeded: weight {max} exceeds the subnet's limit {limit}")]
    MaxWeightExceeded { max: u16, limit: u16 },
    #[error(
        "FraudReportOutOfRange: window {window} is not a recently closed window (closed windows {first}..={last} can be reported)"
    )]
    FraudReportOutOfRange { window: u64, first: u64, last: u64 },
    #[error("NotSubnetOwner: coldkey {coldkey} does not own subnet {netuid}")]
    NotSubnetOwner { coldkey: String, netuid: u16 },
    #[error("TempoOutOfRange: an owner may set a tempo of {min} to {max} blocks, not {tempo}")]
    TempoOutOfRange { tempo: u64, min: u64, max: u64 },
    #[error("SubnetNotExists: subnet {netuid} does not exist")]
    SubnetNotExists { netuid: u16 },
    #[error("SubnetAlreadyExists: subnet {netuid} already exists")]
    SubnetAlreadyExists { netuid: u16 },
    #[error(
        "HotKeyAlreadyRegisteredInSubNet: hotkey {hotkey} is already uid {uid} on subnet {netuid}"
    )]
    HotKeyAlreadyRegisteredInSubNet {
        hotkey: String,
        uid: u16,
        netuid: u16,
    },
    #[error(
        "Overflow: coldkey {coldkey} holds {balance} rao; {amount} more would pass the chain's limit of {limit} rao"
    )]
    BalanceOverflow {
        coldkey: String,
        balance: u64,
        amount: u64,
        limit: u64,
    },
    #[error("NotEnoughBalanceToStake: coldkey {coldkey} has {balance} rao, {needed} rao needed")]
    NotEnoughBalanceToStake {
        coldkey: String,
        balance: u64,
        needed: u64,
    },
    #[error(
        "NoNeuronIdAvailable: subnet {netuid} is full and every uid is inside its immunity period"
    )]
    NoNeuronIdAvailable { netuid: u16 },
    #[error("NonAssociatedColdKey: hotkey {hotkey} belongs to another coldkey")]
    NonAssociatedColdKey { hotkey: String },
    #[error("cannot reach the subtensor node at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the node refused {call}: {reason}")]
    Rejected { call: &'static str, reason: String },
    #[error("the local chain's database failed: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("no local chain at {path}: create one with `subnet chain init --dir {dir}`")]
    NoChainFile { path: String, dir: String },
    #[error("the local chain's handle is unusable: a call on it panicked in this process")]
    Poisoned,
    #[error("the local chain's stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("the chain's background task failed: {0}")]
    Task(String),
}

impl ChainError {
    /// Whether this is subtensor's error `name`: a local-chain rule violation carries the name
    /// first in its message, a subtensor node's dispatch error names it in the reason.
    pub fn is_named(&self, name: &str) -> bool {
        match self {
            ChainError::Rejected { reason, .. } => reason.contains(name),
            ChainError::Unreachable { .. }
            | ChainError::Database(_)
            | ChainError::Corrupt(_)
            | ChainError::NoChainFile { .. }
            | ChainError::Poisoned
            | ChainError::Unsupported(_)
            | ChainError::Task(_) => false,
            rule => rule.to_string().starts_with(&format!("{name}:")),
        }
    }
}

pub type Result<T> = std::result::Result<T, ChainError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_is_known_by_its_subtensor_name_from_either_backend() {
        let local = ChainError::RevealTooEarly { epoch: 3, now: 2 };
        assert!(local.is_named("RevealTooEarly"));
        assert!(!local.is_named("Reveal"));
        let node = ChainError::Rejected {
            call: "reveal_weights",
            reason: "Module error: SubtensorModule::RevealTooEarly".into(),
        };
        assert!(node.is_named("RevealTooEarly"));
        assert!(!node.is_named("ExpiredWeightCommit"));
        assert!(!ChainError::Corrupt("RevealTooEarly: no".into()).is_named("RevealTooEarly"));
    }
}
