//! The subtensor backend: the `Chain` trait against a live subtensor node over its websocket RPC,
//! with subxt. Calls and storage reads go through `subtensor` (encoded and decoded with the bundled
//! metadata, which the node's runtime must match: checked at connect).

use crate::error::{ChainError, Result};
use crate::schedule::{EpochPipeline, INGEST_MARGIN_BLOCKS};
use crate::subtensor::{
    AxonInfo, Call, block_secs, bundled_metadata, check_compatible, decode_value, default_value,
    has_storage, storage_key,
};
use crate::tlock::{self, TimelockTarget, quicknet};
use crate::types::{
    AccountId, EpochConsensus, FraudOutcome, Metagraph, Neuron, SubnetParams, WeightsReveal,
};
use std::net::SocketAddr;
use subxt::client::{ClientAtBlock, OnlineClientAtBlockImpl};
use subxt::error::StorageError;
use subxt::ext::frame_decode::storage::IntoEncodableValues;
use subxt::ext::futures::future::try_join_all;
use subxt::ext::scale_decode::DecodeAsType;
use subxt::{OnlineClient, SubstrateConfig};
use subxt_signer::sr25519::Keypair;

type AtBlock = ClientAtBlock<SubstrateConfig, OnlineClientAtBlockImpl<SubstrateConfig>>;

/// A connection to a subtensor node.
#[derive(Clone)]
pub struct SubtensorChain {
    client: OnlineClient<SubstrateConfig>,
    url: String,
    /// The mechanism whose weights this handle sets (0: the subnet's own).
    mecid: u8,
}

impl SubtensorChain {
    /// Connects to `url` (ws:// or wss://) and checks that the node's runtime matches the bundled
    /// metadata for every call and storage entry used.
    pub async fn connect(url: &str) -> Result<Self> {
        let unreachable = |reason: String| ChainError::Unreachable {
            url: url.to_string(),
            reason,
        };
        let client = OnlineClient::<SubstrateConfig>::from_insecure_url(url)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let chain = Self {
            client,
            url: url.to_string(),
            mecid: 0,
        };
        let at = chain.at().await?;
        check_compatible(at.metadata_ref(), &bundled_metadata()?).map_err(|e| {
            ChainError::Unsupported(format!("{url} (spec_version {}): {e}", at.spec_version()))
        })?;
        Ok(chain)
    }

    /// This handle, setting weights for mechanism `mecid` of a subnet.
    pub fn for_mechanism(self, mecid: u8) -> Self {
        Self { mecid, ..self }
    }

    /// The mechanism this handle's weights go to, checked against what the subnet declares.
    async fn mechanism(&self, at: &AtBlock, netuid: u16) -> Result<Option<u8>> {
        if self.mecid == 0 {
            return Ok(None);
        }
        let count: u8 = self.value(at, "MechanismCountCurrent", (netuid,)).await?;
        if self.mecid >= count {
            return Err(ChainError::Unsupported(format!(
                "subnet {netuid} declares {count} mechanism(s) (0 to {}); mechanism {} does not \
                 exist there",
                count.saturating_sub(1),
                self.mecid
            )));
        }
        Ok(Some(self.mecid))
    }

    async fn at(&self) -> Result<AtBlock> {
        self.client
            .at_current_block()
            .await
            .map_err(|e| self.rpc_error(e))
    }

    fn rpc_error(&self, e: impl std::fmt::Display) -> ChainError {
        ChainError::Unreachable {
            url: self.url.clone(),
            reason: e.to_string(),
        }
    }

    /// A storage value, or None when the key holds nothing.
    async fn fetch<T: DecodeAsType, K: IntoEncodableValues>(
        &self,
        at: &AtBlock,
        entry: &str,
        keys: K,
    ) -> Result<Option<T>> {
        let key = storage_key(at.metadata_ref(), entry, keys)?;
        match at.storage().fetch_raw(key).await {
            Ok(bytes) => decode_value(at.metadata_ref(), entry, &bytes).map(Some),
            Err(StorageError::NoValueFound) => Ok(None),
            Err(e) => Err(self.rpc_error(e)),
        }
    }

    /// A storage value, or the entry's default when the key holds nothing (as the runtime reads it).
    async fn value<T: DecodeAsType, K: IntoEncodableValues>(
        &self,
        at: &AtBlock,
        entry: &str,
        keys: K,
    ) -> Result<T> {
        match self.fetch(at, entry, keys).await? {
            Some(v) => Ok(v),
            None => default_value(at.metadata_ref(), entry),
        }
    }

    /// Signs `call` with `signer`, submits it and waits until it is finalized; a dispatch error
    /// comes back with the runtime's error name.
    pub async fn submit(&self, signer: &Keypair, call: Call) -> Result<()> {
        let at = self.at().await?;
        let rejected = |reason: String| ChainError::Rejected {
            call: call.name(),
            reason,
        };
        at.transactions()
            .sign_and_submit_then_watch_default(&call.payload(), signer)
            .await
            .map_err(|e| rejected(e.to_string()))?
            .wait_for_finalized_success()
            .await
            .map_err(|e| rejected(e.to_string()))?;
        Ok(())
    }

    async fn params(&self, at: &AtBlock, netuid: u16) -> Result<SubnetParams> {
        let k = (netuid,);
        let u16_of = |entry: &'static str| self.value::<u16, _>(at, entry, k);
        let u64_of = |entry: &'static str| self.value::<u64, _>(at, entry, k);
        Ok(SubnetParams {
            tempo: u16_of("Tempo").await? as u64,
            // Emission per subnet follows the chain's dynamic pricing; it is no subnet constant.
            emission_per_block: 0,
            owner_cut: self.value(at, "SubnetOwnerCut", ()).await?,
            kappa: u16_of("Kappa").await?,
            bonds_moving_average: u64_of("BondsMovingAverage").await?,
            bonds_penalty: u16_of("BondsPenalty").await?,
            max_allowed_validators: u16_of("MaxAllowedValidators").await?,
            max_allowed_uids: u16_of("MaxAllowedUids").await?,
            min_allowed_weights: u16_of("MinAllowedWeights").await?,
            max_weights_limit: u16_of("MaxWeightsLimit").await?,
            weights_rate_limit: u64_of("WeightsSetRateLimit").await?,
            weights_version_key: u64_of("WeightsVersionKey").await?,
            immunity_period: u16_of("ImmunityPeriod").await? as u64,
            activity_cutoff: u16_of("ActivityCutoff").await? as u64,
            stake_threshold: self.value(at, "StakeThreshold", ()).await?,
            burn: u64_of("Burn").await?,
            commit_reveal_weights_enabled: self.value(at, "CommitRevealWeightsEnabled", k).await?,
            commit_reveal_version: self.value(at, "CommitRevealWeightsVersion", ()).await?,
            reveal_period_epochs: u64_of("RevealPeriodEpochs").await?,
            // Subtensor has no stake slashing.
            slash_per_million: 0,
            slash_quorum: u16::MAX,
            fraud_report_windows: 0,
            window_blocks: 0,
            epoch_consensus: if has_storage(at.metadata_ref(), "SubnetEpochConsensus") {
                self.value(at, "SubnetEpochConsensus", k).await?
            } else {
                EpochConsensus::Yuma
            },
        })
    }

    async fn neuron(&self, at: &AtBlock, netuid: u16, uid: u16, rows: &Rows) -> Result<Neuron> {
        let hotkey: [u8; 32] = self.value(at, "Keys", (netuid, uid)).await?;
        let coldkey: [u8; 32] = self.value(at, "Owner", (hotkey,)).await?;
        let stake: u64 = self.value(at, "TotalHotkeyAlpha", (hotkey, netuid)).await?;
        let axon: Option<AxonInfo> = self.fetch(at, "Axons", (netuid, hotkey)).await?;
        let registered_at: u64 = self.value(at, "BlockAtRegistration", (netuid, uid)).await?;
        let weights: Vec<(u16, u16)> = self.value(at, "Weights", (netuid, uid)).await?;
        let i = uid as usize;
        Ok(Neuron {
            uid,
            hotkey: AccountId(hotkey),
            coldkey: AccountId(coldkey),
            stake,
            axon: axon.and_then(|a| a.addr()),
            validator_permit: nth(&rows.permit, i),
            active: nth(&rows.active, i),
            last_update: nth(&rows.last_update, i),
            registered_at,
            consensus: nth(&rows.consensus, i),
            incentive: nth(&rows.incentive, i),
            dividends: nth(&rows.dividends, i),
            validator_trust: nth(&rows.validator_trust, i),
            emission: nth(&rows.emission, i),
            // Not kept by subtensor per uid.
            total_emission: 0,
            weights,
        })
    }
}

/// Entry `i` of a per-uid vector; a uid past its end reads as the default, as on chain.
fn nth<T: Copy + Default>(v: &[T], i: usize) -> T {
    v.get(i).copied().unwrap_or_default()
}

/// The per-subnet vectors indexed by uid.
struct Rows {
    permit: Vec<bool>,
    active: Vec<bool>,
    last_update: Vec<u64>,
    consensus: Vec<u16>,
    incentive: Vec<u16>,
    dividends: Vec<u16>,
    validator_trust: Vec<u16>,
    emission: Vec<u64>,
}

impl crate::Chain for SubtensorChain {
    async fn current_block(&self) -> Result<u64> {
        Ok(self.at().await?.block_number())
    }

    async fn block_hash(&self, block: u64) -> Result<[u8; 32]> {
        let at = self
            .client
            .at_block(block)
            .await
            .map_err(|e| self.rpc_error(e))?;
        Ok(at.block_hash().0)
    }

    async fn metagraph(&self, netuid: u16) -> Result<Metagraph> {
        let at = self.at().await?;
        let k = (netuid,);
        if !self.value::<bool, _>(&at, "NetworksAdded", k).await? {
            return Err(ChainError::SubnetNotExists { netuid });
        }
        let n: u16 = self.value(&at, "SubnetworkN", k).await?;
        let rows = Rows {
            permit: self.value(&at, "ValidatorPermit", k).await?,
            active: self.value(&at, "Active", k).await?,
            last_update: self.value(&at, "LastUpdate", k).await?,
            consensus: self.value(&at, "Consensus", k).await?,
            incentive: self.value(&at, "Incentive", k).await?,
            dividends: self.value(&at, "Dividends", k).await?,
            validator_trust: self.value(&at, "ValidatorTrust", k).await?,
            emission: self.value(&at, "Emission", k).await?,
        };
        let neurons = try_join_all((0..n).map(|uid| self.neuron(&at, netuid, uid, &rows))).await?;
        Ok(Metagraph {
            netuid,
            block: at.block_number(),
            params: self.params(&at, netuid).await?,
            neurons,
        })
    }

    async fn burned_register(
        &self,
        coldkey: &Keypair,
        netuid: u16,
        hotkey: AccountId,
    ) -> Result<u16> {
        self.submit(coldkey, Call::BurnedRegister { netuid, hotkey })
            .await?;
        let at = self.at().await?;
        self.fetch(&at, "Uids", (netuid, hotkey.0))
            .await?
            .ok_or_else(|| ChainError::HotKeyNotRegisteredInSubNet {
                hotkey: hotkey.to_string(),
                netuid,
            })
    }

    async fn add_stake(
        &self,
        coldkey: &Keypair,
        hotkey: AccountId,
        netuid: u16,
        amount: u64,
    ) -> Result<()> {
        let call = Call::AddStake {
            hotkey,
            netuid,
            amount_staked: amount,
        };
        self.submit(coldkey, call).await
    }

    async fn serve_axon(&self, hotkey: &Keypair, netuid: u16, addr: SocketAddr) -> Result<()> {
        let call = Call::ServeAxon {
            netuid,
            version: 1,
            addr,
        };
        self.submit(hotkey, call).await
    }

    async fn set_weights(
        &self,
        hotkey: &Keypair,
        netuid: u16,
        uids: Vec<u16>,
        values: Vec<u16>,
        version_key: u64,
    ) -> Result<()> {
        // The runtime would refuse it with CommitRevealEnabled; answering here lets the validator
        // commit instead without spending a transaction.
        let at = self.at().await?;
        if self
            .value::<bool, _>(&at, "CommitRevealWeightsEnabled", (netuid,))
            .await?
        {
            return Err(ChainError::CommitRevealEnabled { netuid });
        }
        let call = match self.mechanism(&at, netuid).await? {
            None => Call::SetWeights {
                netuid,
                dests: uids,
                weights: values,
                version_key,
            },
            Some(mecid) => Call::SetMechanismWeights {
                netuid,
                mecid,
                dests: uids,
                weights: values,
                version_key,
            },
        };
        self.submit(hotkey, call).await
    }

    async fn commit_weights(&self, hotkey: &Keypair, netuid: u16, hash: [u8; 32]) -> Result<()> {
        // Hash commits are accepted at every commit-reveal version.
        let at = self.at().await?;
        let call = match self.mechanism(&at, netuid).await? {
            None => Call::CommitWeights {
                netuid,
                commit_hash: hash,
            },
            Some(mecid) => Call::CommitMechanismWeights {
                netuid,
                mecid,
                commit_hash: hash,
            },
        };
        self.submit(hotkey, call).await
    }

    async fn reveal_weights(
        &self,
        hotkey: &Keypair,
        netuid: u16,
        reveal: WeightsReveal,
    ) -> Result<()> {
        let at = self.at().await?;
        let call = match self.mechanism(&at, netuid).await? {
            None => Call::RevealWeights {
                netuid,
                uids: reveal.uids,
                values: reveal.values,
                salt: reveal.salt,
                version_key: reveal.version_key,
            },
            Some(mecid) => Call::RevealMechanismWeights {
                netuid,
                mecid,
                uids: reveal.uids,
                values: reveal.values,
                salt: reveal.salt,
                version_key: reveal.version_key,
            },
        };
        self.submit(hotkey, call).await
    }

    /// The round follows the Python SDK for the runtime the node runs (read from its own
    /// metadata): with a stored epoch pipeline (`LastEpochBlock`, dynamic tempo) the pipeline is
    /// stepped block by block to the reveal epoch as `get_encrypted_commit_v2` does, at the
    /// runtime's own block time; with only a stored epoch counter (`SubnetEpochIndex`, specs 423 to
    /// 425) the reveal epoch starts `reveal_period * (tempo + 1)` blocks after the subnet's last
    /// step; before that, the SDK's `(block + netuid + 1) / (tempo + 1)` formula. Each targets three
    /// blocks into the reveal epoch (the chain retries a commit every block of it).
    async fn timelock_target(&self, netuid: u16) -> Result<TimelockTarget> {
        let at = self.at().await?;
        let k = (netuid,);
        if !self
            .value::<bool, _>(&at, "CommitRevealWeightsEnabled", k)
            .await?
        {
            return Err(ChainError::CommitRevealDisabled { netuid });
        }
        let version: u16 = self.value(&at, "CommitRevealWeightsVersion", ()).await?;
        let tempo = self.value::<u16, _>(&at, "Tempo", k).await? as u64;
        let period: u64 = self.value(&at, "RevealPeriodEpochs", k).await?;
        let block = at.block_number();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let reveal_round = if has_storage(at.metadata_ref(), "LastEpochBlock") {
            let pipeline = EpochPipeline {
                last_epoch_block: self.value(&at, "LastEpochBlock", k).await?,
                pending_epoch_at: self.value(&at, "PendingEpochAt", k).await?,
                epoch_index: self.value(&at, "SubnetEpochIndex", k).await?,
                tempo: tempo as u16,
                blocks_since_last_step: self.value(&at, "BlocksSinceLastStep", k).await?,
                head: block,
            };
            let block_secs = block_secs(at.metadata_ref());
            pipeline
                .reveal_round(period, block_secs, now.as_secs_f64())
                .map_err(|e| ChainError::Unsupported(format!("subnet {netuid}: {e}")))?
        } else if has_storage(at.metadata_ref(), "SubnetEpochIndex") {
            let now = now.as_secs();
            let last: u64 = self.value(&at, "LastMechansimStepBlock", k).await?;
            tlock::reveal_round_at(
                now,
                block,
                last + period * (tempo + 1) + INGEST_MARGIN_BLOCKS,
            )
        } else {
            tlock::sdk_reveal_round(now.as_secs(), block, netuid, tempo, period)
        };
        Ok(TimelockTarget {
            beacon_public_key: quicknet::public_key(),
            reveal_round,
            commit_reveal_version: version,
        })
    }

    async fn commit_timelocked_weights(
        &self,
        hotkey: &Keypair,
        netuid: u16,
        commit: Vec<u8>,
        reveal_round: u64,
        commit_reveal_version: u16,
    ) -> Result<()> {
        let at = self.at().await?;
        let call = match self.mechanism(&at, netuid).await? {
            None => Call::CommitTimelockedWeights {
                netuid,
                commit,
                reveal_round,
                commit_reveal_version,
            },
            Some(mecid) => Call::CommitTimelockedMechanismWeights {
                netuid,
                mecid,
                commit,
                reveal_round,
                commit_reveal_version,
            },
        };
        self.submit(hotkey, call).await
    }

    async fn report_fraud(
        &self,
        _reporter: &Keypair,
        _netuid: u16,
        _offender: AccountId,
        _window: u64,
        _evidence: [u8; 32],
    ) -> Result<FraudOutcome> {
        Err(ChainError::Unsupported(
            "subtensor has no stake slashing: a fraudulent miner scores 0 and loses emission, \
             and is pruned when the subnet fills; the evidence stays in the validator's replay log"
                .into(),
        ))
    }
}
