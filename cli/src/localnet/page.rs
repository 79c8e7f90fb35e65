//! The localnet on its dashboard: after each window, the neurons as the chain holds them with the
//! lead validator's results, the checkpoint's held-out loss, and the chain events since the last.

use super::*;
use std::collections::BTreeMap;
use validator::dashboard::{Dashboard, EventRow, neuron_rows};

/// Events read per window at most (the page keeps the latest hundred).
const EVENTS_PER_WINDOW: usize = 500;

pub(crate) struct Watch {
    dashboard: Arc<Dashboard>,
    kinds: BTreeMap<u16, String>,
    last_event: i64,
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
            last_event: 0,
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
        let slashed: Vec<AccountId> = chain
            .slashes(netuid)?
            .into_iter()
            .map(|s| s.hotkey)
            .collect();
        let events = chain.events_after(netuid, self.last_event, EVENTS_PER_WINDOW)?;
        if let Some(last) = events.last() {
            self.last_event = last.id;
        }
        let rows = neuron_rows(&metagraph, Some(lead), &self.kinds, &slashed);
        self.dashboard.update(|view| {
            view.add_window(window, loss, rows);
            view.add_events(events.into_iter().map(|e| EventRow {
                block: e.block,
                kind: e.kind,
                detail: e.detail,
            }));
        });
        Ok(())
    }
}
