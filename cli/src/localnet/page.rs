//! The localnet on its dashboard: after each window, the neurons as the chain holds them with the
//! lead validator's results, the checkpoint's held-out loss, and the chain events since the last.

use super::*;
use std::collections::BTreeMap;
use validator::dashboard::{Dashboard, LocalFeed, neuron_rows};

pub(crate) struct Watch {
    dashboard: Arc<Dashboard>,
    kinds: BTreeMap<u16, String>,
    feed: LocalFeed,
}

impl Watch {
    /// Watches a run of `engine`'s task on `dashboard`, whose miners are `miner_uids` of `kinds`.
    pub fn new(
        dashboard: Arc<Dashboard>,
        engine: &TaskEngine,
        miner_uids: &[u16],
        kinds: &[MinerKind],
    ) -> Self {
        dashboard.update(|view| {
            view.title = format!("{}: localnet", engine.spec().task.name);
            view.loss_floor = engine.loss_floor();
        });
        let kinds = miner_uids
            .iter()
            .zip(kinds)
            .map(|(&uid, kind)| (uid, kind.to_string()))
            .collect();
        Self {
            dashboard,
            kinds,
            feed: LocalFeed::default(),
        }
    }

    /// Puts window `window` on the page: `lead` is the lead validator's outcome.
    pub fn show(
        &mut self,
        chain: &LocalChain,
        netuid: u16,
        (window, loss): (u64, f64),
        lead: &WindowOutcome,
    ) -> anyhow::Result<()> {
        let metagraph = chain.metagraph_sync(netuid)?;
        let (events, slashed) = self.feed.read(chain, netuid)?;
        let rows = neuron_rows(&metagraph, Some(lead), &self.kinds, &slashed);
        self.dashboard.update(|view| {
            view.add_window(window, loss, rows);
            view.add_events(events);
        });
        Ok(())
    }
}
