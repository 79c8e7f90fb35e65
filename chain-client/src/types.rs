//! What the chain stores about a subnet and its neurons, in the shapes both backends return.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;

/// A 32-byte sr25519 public key (an AccountId32 on subtensor).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AccountId(pub [u8; 32]);

impl AccountId {
    /// SS58 with the generic Substrate prefix 42, as Bittensor shows addresses.
    pub fn to_ss58(&self) -> String {
        subxt_signer::sr25519::PublicKey(self.0)
            .to_account_id()
            .to_string()
    }

    pub fn short(&self) -> String {
        let s = self.to_ss58();
        format!("{}…{}", &s[..6], &s[s.len() - 4..])
    }
}

impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_ss58())
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_ss58())
    }
}

impl From<&subxt_signer::sr25519::Keypair> for AccountId {
    fn from(k: &subxt_signer::sr25519::Keypair) -> Self {
        AccountId(k.public_key().0)
    }
}

/// Subnet hyperparameters, named and in units as on subtensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SubnetParams {
    pub tempo: u64,
    /// Emission per block, in rao (1e-9 of a token), before the owner cut.
    pub emission_per_block: u64,
    /// Owner cut, u16 over 65535 (subtensor's default is 18%).
    pub owner_cut: u16,
    pub kappa: u16,
    pub bonds_moving_average: u64,
    pub bonds_penalty: u16,
    pub max_allowed_validators: u16,
    pub max_allowed_uids: u16,
    pub min_allowed_weights: u16,
    pub max_weights_limit: u16,
    pub weights_rate_limit: u64,
    pub weights_version_key: u64,
    pub immunity_period: u64,
    pub activity_cutoff: u64,
    /// Minimum stake, in rao, to set weights and to hold a validator permit (stake below it counts
    /// as zero in the epoch), so that miners who earn do not become validators by default.
    pub stake_threshold: u64,
    /// Registration cost, in rao, burned from the coldkey.
    pub burn: u64,
    pub commit_reveal_weights_enabled: bool,
    /// Subtensor's `CommitRevealWeightsVersion` (global there): 4 means timelocked commits
    /// (`commit_timelocked_weights`), opened by the chain with its beacon's pulses. Hash commits
    /// (`commit_weights`/`reveal_weights`) are accepted at any version.
    pub commit_reveal_version: u16,
    /// Commit-reveal v2: weights committed in epoch e are revealed in epoch e + this.
    pub reveal_period_epochs: u64,
    /// Local-chain extension (subtensor has no stake slashing): the share of a miner's stake, per
    /// million, burned when validators holding at least `slash_quorum` of the permitted stake have
    /// reported it for fraud within the last `fraud_report_windows` windows.
    pub slash_per_million: u64,
    /// Local-chain extension: the share of the permitted stake (of 65535) whose reports slash a
    /// miner. Two thirds by default, so that no validator holding less than that slashes alone.
    #[serde(default = "default_slash_quorum")]
    pub slash_quorum: u16,
    /// Local-chain extension: fraud can be reported for the last this many closed windows (a
    /// window is `tempo` blocks), and reports within them add up to a quorum.
    #[serde(default = "default_fraud_report_windows")]
    pub fraud_report_windows: u64,
    /// Local-chain extension: the length in blocks of the task's windows, which fraud reports name
    /// (`block / window_blocks`). 0: the tempo, until the owner first changes the tempo, which
    /// fixes it at the old tempo so that windows are not renumbered.
    pub window_blocks: u64,
    /// `SubnetEpochConsensus` of newer runtimes: Yuma, or Null (the top-stake validator's weights
    /// alone decide; `scoring::yuma::null_epoch`). Yuma where the runtime predates it.
    pub epoch_consensus: EpochConsensus,
}

/// How a subnet's epoch turns weights into emission (`SubnetEpochConsensus`, SCALE index 0 and 1).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    subxt::ext::scale_decode::DecodeAsType,
)]
#[decode_as_type(crate_path = "subxt::ext::scale_decode")]
pub enum EpochConsensus {
    #[default]
    Yuma,
    Null,
}

fn default_fraud_report_windows() -> u64 {
    8
}

fn default_slash_quorum() -> u16 {
    43_690
}

impl Default for SubnetParams {
    fn default() -> Self {
        Self {
            tempo: 360,
            emission_per_block: 1_000_000_000,
            owner_cut: 11_796,
            kappa: 32767,
            bonds_moving_average: 900_000,
            bonds_penalty: 65535,
            max_allowed_validators: 128,
            max_allowed_uids: 256,
            min_allowed_weights: 1024,
            max_weights_limit: 65535,
            weights_rate_limit: 100,
            weights_version_key: 0,
            immunity_period: 4096,
            activity_cutoff: 5000,
            stake_threshold: 100_000_000_000,
            burn: 1_000_000_000,
            commit_reveal_weights_enabled: true,
            commit_reveal_version: 4,
            reveal_period_epochs: 1,
            slash_per_million: 1_000_000,
            slash_quorum: default_slash_quorum(),
            fraud_report_windows: default_fraud_report_windows(),
            window_blocks: 0,
            epoch_consensus: EpochConsensus::Yuma,
        }
    }
}

impl Metagraph {
    /// Under Null consensus, the validator whose weights the epoch takes: the permitted one with
    /// the most stake (ties to the lower uid), as the chain picks it. None under Yuma or when no
    /// permitted validator holds stake.
    pub fn null_consensus_winner(&self) -> Option<&Neuron> {
        if self.params.epoch_consensus != EpochConsensus::Null {
            return None;
        }
        let stake: Vec<u64> = self.neurons.iter().map(|n| n.stake).collect();
        let permit = |i: usize| self.neurons[i].validator_permit;
        let counted =
            scoring::yuma::null_validator_stake(&stake, permit, self.params.stake_threshold);
        scoring::yuma::null_winner(&counted).map(|i| &self.neurons[i])
    }
}

impl SubnetParams {
    /// The window (of `window_blocks`, or the tempo where that is 0) that `block` falls in, as
    /// fraud reports number windows.
    pub fn window_of(&self, block: u64) -> u64 {
        let blocks = match self.window_blocks {
            0 => self.tempo,
            n => n,
        };
        block / blocks.max(1)
    }

    pub fn yuma(&self) -> scoring::YumaParams {
        scoring::YumaParams {
            tempo: self.tempo,
            kappa: self.kappa,
            bonds_moving_average: self.bonds_moving_average,
            bonds_penalty: self.bonds_penalty,
            max_allowed_validators: self.max_allowed_validators,
            activity_cutoff: self.activity_cutoff,
            stake_threshold: self.stake_threshold,
            ..scoring::YumaParams::default()
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Neuron {
    pub uid: u16,
    pub hotkey: AccountId,
    pub coldkey: AccountId,
    /// Stake in rao.
    pub stake: u64,
    pub axon: Option<SocketAddr>,
    pub validator_permit: bool,
    pub active: bool,
    pub last_update: u64,
    pub registered_at: u64,
    pub consensus: u16,
    pub incentive: u16,
    pub dividends: u16,
    pub validator_trust: u16,
    /// Emission of the last epoch, in rao.
    pub emission: u64,
    /// Everything this uid has earned since it registered, in rao.
    pub total_emission: u64,
    /// The neuron's weight row as stored: (uid, u16).
    pub weights: Vec<(u16, u16)>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metagraph {
    pub netuid: u16,
    pub block: u64,
    pub params: SubnetParams,
    pub neurons: Vec<Neuron>,
}

impl Metagraph {
    pub fn by_hotkey(&self, hotkey: &AccountId) -> Option<&Neuron> {
        self.neurons.iter().find(|n| &n.hotkey == hotkey)
    }

    pub fn by_uid(&self, uid: u16) -> Option<&Neuron> {
        self.neurons.iter().find(|n| n.uid == uid)
    }

    /// The validators that serve an axon, most stake first (ties to the lower uid). The first is the
    /// lead: its checkpoint is the subnet's model, which miners train from and the other validators
    /// adopt once they have recomputed it.
    pub fn validators_by_stake(&self) -> Vec<&Neuron> {
        let mut validators: Vec<&Neuron> = self
            .neurons
            .iter()
            .filter(|n| n.validator_permit && n.axon.is_some())
            .collect();
        validators.sort_by(|a, b| b.stake.cmp(&a.stake).then(a.uid.cmp(&b.uid)));
        validators
    }

    /// One more than the highest uid: the uids whose page ranges the window assignment covers.
    pub fn uid_slots(&self) -> u64 {
        self.neurons
            .iter()
            .map(|n| n.uid as u64 + 1)
            .max()
            .unwrap_or(0)
    }
}

/// A miner's stake burned for fraud on the local chain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Slash {
    pub netuid: u16,
    pub hotkey: AccountId,
    pub window: u64,
    pub block: u64,
    /// Rao burned.
    pub amount: u64,
    /// Digest of the evidence the first report named.
    pub evidence: String,
    /// Validators whose reports made the quorum.
    pub reporters: Vec<AccountId>,
}

/// What one fraud report did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FraudOutcome {
    /// Recorded; the reporters so far hold this share of the permitted stake (u16 over 65535), short
    /// of kappa.
    Recorded { reported_share: u16 },
    /// This report completed the quorum: `amount` rao of the miner's stake were burned.
    Slashed { amount: u64 },
    /// The miner was already slashed for this window (or the reporter had already reported it).
    AlreadyHandled,
}

/// Weights committed under commit-reveal v2 and what it takes to reveal them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightsReveal {
    pub uids: Vec<u16>,
    pub values: Vec<u16>,
    pub salt: Vec<u16>,
    pub version_key: u64,
}

/// The commit-reveal v2 hash: BlakeTwo256 of the SCALE encoding of
/// `(hotkey, netuid, uids, values, salt, version_key)`, as subtensor computes it.
pub fn weights_commit_hash(
    hotkey: &AccountId,
    netuid: u16,
    uids: &[u16],
    values: &[u16],
    salt: &[u16],
    version_key: u64,
) -> [u8; 32] {
    use blake2::{Blake2b, Digest, digest::consts::U32};
    use subxt::ext::codec::Encode;
    let encoded = (&hotkey.0, netuid, uids, values, salt, version_key).encode();
    Blake2b::<U32>::digest(&encoded).into()
}

impl WeightsReveal {
    /// The hash to commit for `hotkey` on `netuid`.
    pub fn hash(&self, hotkey: &AccountId, netuid: u16) -> [u8; 32] {
        weights_commit_hash(
            hotkey,
            netuid,
            &self.uids,
            &self.values,
            &self.salt,
            self.version_key,
        )
    }
}

/// What the chain did with one timelocked commit when its reveal came: applied it as the committer's
/// weights, or dropped it and why (subtensor only logs the reason; the local chain keeps it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelockReveal {
    pub block: u64,
    pub hotkey: AccountId,
    pub commit_block: u64,
    pub reveal_round: u64,
    pub outcome: std::result::Result<(), String>,
}
