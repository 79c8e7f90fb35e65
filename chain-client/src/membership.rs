//! Who is on a subnet, read at most once per block: servers check every request's caller against
//! it, and a full metagraph read per request (on subtensor several storage reads per uid, on the
//! local chain a transaction) would let anyone who can send requests make a server read the chain.

use crate::{AccountId, Chain, ChainError, Metagraph, Result};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use subxt_signer::sr25519::Keypair;

/// Who a miner or validator acts as: its hotkey on one subnet of one chain.
#[derive(Clone)]
pub struct Membership<C> {
    chain: C,
    netuid: u16,
    hotkey: Keypair,
}

/// A hotkey that is not (or no longer) on the subnet.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "hotkey {hotkey} is not registered on subnet {netuid}: register first with `subnet chain register`"
)]
pub struct NotRegistered {
    pub hotkey: String,
    pub netuid: u16,
}

/// Why a member's uid could not be told: the chain did not answer, or the hotkey is not on the
/// subnet.
#[derive(Debug, thiserror::Error)]
pub enum UidError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    NotRegistered(#[from] NotRegistered),
}

impl<C: Chain> Membership<C> {
    pub fn new(chain: C, netuid: u16, hotkey: Keypair) -> Self {
        Self {
            chain,
            netuid,
            hotkey,
        }
    }

    pub fn chain(&self) -> &C {
        &self.chain
    }

    pub fn netuid(&self) -> u16 {
        self.netuid
    }

    /// The hotkey's keypair, to sign with.
    pub fn keypair(&self) -> &Keypair {
        &self.hotkey
    }

    pub fn hotkey(&self) -> AccountId {
        AccountId::from(&self.hotkey)
    }

    /// The member's uid in `metagraph`.
    pub fn uid_in(&self, metagraph: &Metagraph) -> std::result::Result<u16, NotRegistered> {
        let hotkey = self.hotkey();
        metagraph
            .by_hotkey(&hotkey)
            .map(|n| n.uid)
            .ok_or_else(|| NotRegistered {
                hotkey: hotkey.to_string(),
                netuid: self.netuid,
            })
    }

    /// The member's uid now, read from the chain.
    pub async fn uid(&self) -> std::result::Result<u16, UidError> {
        let metagraph = self.chain.metagraph(self.netuid).await?;
        Ok(self.uid_in(&metagraph)?)
    }
}

/// The metagraph of one subnet, cached for the block it was read at.
pub struct MetagraphCache<C> {
    chain: C,
    netuid: u16,
    /// Within this long of a look at the chain, the cached metagraph is used without asking for
    /// the block again; an unknown caller makes it read again at most this often.
    fresh_for: Duration,
    cached: std::sync::Mutex<Option<Cached>>,
    /// Held by the one task reading the chain; the others use the cached metagraph meanwhile.
    refreshing: tokio::sync::Mutex<()>,
    reads: AtomicU64,
}

#[derive(Clone)]
struct Cached {
    block: u64,
    /// When the block was last asked for, and when the metagraph was read.
    checked_at: Instant,
    read_at: Instant,
    metagraph: Arc<Metagraph>,
}

impl<C: Chain> MetagraphCache<C> {
    pub fn new(chain: C, netuid: u16) -> Self {
        Self::with_freshness(chain, netuid, Duration::from_millis(250))
    }

    pub fn with_freshness(chain: C, netuid: u16, fresh_for: Duration) -> Self {
        Self {
            chain,
            netuid,
            fresh_for,
            cached: std::sync::Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
            reads: AtomicU64::new(0),
        }
    }

    pub fn netuid(&self) -> u16 {
        self.netuid
    }

    /// Metagraph reads so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    fn cached(&self) -> Option<Cached> {
        self.cached.lock().expect("metagraph cache lock").clone()
    }

    /// The metagraph at the current block: read once per block, however many ask. While one task
    /// reads it, the others get the one of the block before.
    pub async fn get(&self) -> Result<Arc<Metagraph>> {
        let fresh = |c: &Cached| c.checked_at.elapsed() < self.fresh_for;
        if let Some(c) = self.cached().filter(fresh) {
            return Ok(c.metagraph);
        }
        let _refreshing = match (self.refreshing.try_lock(), self.cached()) {
            (Ok(guard), _) => guard,
            (Err(_), Some(c)) => return Ok(c.metagraph),
            (Err(_), None) => self.refreshing.lock().await,
        };
        if let Some(c) = self.cached().filter(fresh) {
            return Ok(c.metagraph);
        }
        let block = self.chain.current_block().await?;
        {
            let mut cached = self.cached.lock().expect("metagraph cache lock");
            if let Some(c) = cached.as_mut()
                && c.block == block
            {
                c.checked_at = Instant::now();
                return Ok(c.metagraph.clone());
            }
        }
        self.read(block).await
    }

    /// The metagraph, for a request from `hotkey`. A hotkey the cached one does not hold may have
    /// registered within the block (a local chain's blocks need not move with registrations): the
    /// metagraph is read again for it, at most once per `fresh_for` and never while another read
    /// is under way, so that unknown callers can neither make the server read the chain at their
    /// pace nor keep known callers waiting.
    pub async fn for_caller(&self, hotkey: &AccountId) -> Result<Arc<Metagraph>> {
        let metagraph = self.get().await?;
        if metagraph.by_hotkey(hotkey).is_some() {
            return Ok(metagraph);
        }
        let recent = |c: &Cached| c.read_at.elapsed() < self.fresh_for;
        if self.cached().is_some_and(|c| recent(&c)) {
            return Ok(metagraph);
        }
        let Ok(_refreshing) = self.refreshing.try_lock() else {
            return Ok(metagraph);
        };
        if let Some(c) = self.cached().filter(recent) {
            return Ok(c.metagraph);
        }
        let block = self.chain.current_block().await?;
        self.read(block).await
    }

    async fn read(&self, block: u64) -> Result<Arc<Metagraph>> {
        let metagraph = Arc::new(self.chain.metagraph(self.netuid).await?);
        self.reads.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        *self.cached.lock().expect("metagraph cache lock") = Some(Cached {
            block,
            checked_at: now,
            read_at: now,
            metagraph: metagraph.clone(),
        });
        Ok(metagraph)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BlockClock, LocalChain, SubnetParams};

    #[tokio::test]
    async fn one_read_per_block_whoever_asks() {
        let dir = tempfile::tempdir().unwrap();
        let chain =
            LocalChain::open_or_create(dir.path().join("c.sqlite"), BlockClock::Manual, 1).unwrap();
        let owner = crate::keypair_from_uri("//owner").unwrap();
        let netuid = chain
            .create_subnet(AccountId::from(&owner), SubnetParams::default())
            .unwrap();
        let cache = MetagraphCache::with_freshness(chain.clone(), netuid, Duration::from_secs(60));
        let first = cache.get().await.unwrap();
        // A thousand unknown callers within the block cost no read.
        for i in 0..1000u32 {
            let stranger = AccountId([i as u8; 32]);
            let m = cache.for_caller(&stranger).await.unwrap();
            assert!(m.by_hotkey(&stranger).is_none());
        }
        assert_eq!(cache.reads(), 1);
        assert!(Arc::ptr_eq(&first, &cache.get().await.unwrap()));

        // Without the time bound: one read per block, and a caller that registered within the
        // block is found by the read its first request makes.
        let cache = MetagraphCache::with_freshness(chain.clone(), netuid, Duration::ZERO);
        let first = cache.get().await.unwrap();
        for _ in 0..10 {
            assert!(Arc::ptr_eq(&first, &cache.get().await.unwrap()));
        }
        assert_eq!(cache.reads(), 1);
        chain.fund(AccountId::from(&owner), 1 << 40).unwrap();
        chain
            .burned_register(AccountId::from(&owner), netuid, AccountId::from(&owner))
            .unwrap();
        let m = cache.for_caller(&AccountId::from(&owner)).await.unwrap();
        assert!(m.by_hotkey(&AccountId::from(&owner)).is_some());
        assert_eq!(cache.reads(), 2);
        chain.advance_blocks(1).unwrap();
        cache.get().await.unwrap();
        assert_eq!(cache.reads(), 3);
    }
}
