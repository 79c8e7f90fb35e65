//! A live web page of the subnet: the metagraph with each miner's score and verdict, the global
//! held-out loss over windows against the floor, each miner's weight share over windows, recent
//! rejections with their reasons and chain events. Whoever runs the subnet (a validator, the
//! localnet, a replay) fills one `View`; the page reads it at `/view` and is told of every change
//! through server-sent events at `/events` (served by axum). Everything the page uses is served
//! from this binary (no CDN), and an idle page costs nothing: the server wakes only when the view
//! changes, or every `HEARTBEAT` per open page to notice a closed one.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// The page: HTML, style and script in one file.
const PAGE: &str = include_str!("dashboard.html");
/// Event streams open at once; more are refused (the dashboard is for people, not crawlers).
const MAX_STREAMS: usize = 32;
/// An open event stream writes a comment this often, so a page that went away is noticed.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// How much history the view keeps.
const KEPT_WINDOWS: usize = 500;
const KEPT_REJECTIONS: usize = 50;
const KEPT_EVENTS: usize = 100;

/// What the page shows.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct View {
    pub title: String,
    /// The lowest reachable loss, where the task knows it (the synthetic corpus).
    pub loss_floor: Option<f64>,
    pub losses: Vec<LossPoint>,
    pub neurons: Vec<NeuronRow>,
    /// Each miner's share of the window's weights, window by window.
    pub shares: Vec<SharePoint>,
    /// Newest last.
    pub rejections: Vec<RejectionRow>,
    /// Newest last.
    pub events: Vec<EventRow>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LossPoint {
    pub window: u64,
    pub loss: f64,
}

/// One uid of the metagraph, with this window's score where the uid is a miner.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct NeuronRow {
    pub uid: u16,
    pub hotkey: String,
    /// What the operator knows it to be (the localnet's honest miners and adversaries).
    pub kind: Option<String>,
    pub validator: bool,
    /// Rao. The chain's columns are None where only a validator's records are known (a replay).
    pub stake: Option<u64>,
    pub score: Option<f64>,
    pub standard_error: Option<f64>,
    pub verdict: Option<String>,
    pub weight: Option<f64>,
    /// u16 proportions of the last epoch, as the chain stores them.
    pub incentive: Option<u16>,
    pub dividends: Option<u16>,
    /// Rao, everything emitted to it so far.
    pub emission: Option<u64>,
    pub slashed: bool,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SharePoint {
    pub window: u64,
    pub uid: u16,
    pub share: f64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RejectionRow {
    pub window: u64,
    pub uid: u16,
    pub verdict: String,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct EventRow {
    pub block: u64,
    pub kind: String,
    pub detail: String,
}

impl From<chain_client::ChainEvent> for EventRow {
    fn from(e: chain_client::ChainEvent) -> Self {
        EventRow {
            block: e.block,
            kind: e.kind,
            detail: e.detail,
        }
    }
}

/// What a local chain adds to each window on the page: the events recorded since the last read and
/// the hotkeys slashed so far.
#[derive(Debug, Default)]
pub struct LocalFeed {
    last_event: i64,
}

impl LocalFeed {
    /// Events read at most per window (the page keeps the latest `KEPT_EVENTS`).
    const EVENTS_PER_READ: usize = 500;

    /// The events of `netuid` since the last call, oldest first, and the slashed hotkeys.
    pub fn read(
        &mut self,
        chain: &chain_client::LocalChain,
        netuid: u16,
    ) -> chain_client::Result<(Vec<EventRow>, Vec<chain_client::AccountId>)> {
        let events = chain.events_after(netuid, self.last_event, Self::EVENTS_PER_READ)?;
        let slashed = chain
            .slashes(netuid)?
            .into_iter()
            .map(|s| s.hotkey)
            .collect();
        if let Some(last) = events.last() {
            self.last_event = last.id;
        }
        Ok((events.into_iter().map(EventRow::from).collect(), slashed))
    }
}

impl View {
    /// Adds a window: its loss, the neurons as they stand after it, each miner's weight share, and
    /// the miners that earned nothing with why.
    pub fn add_window(&mut self, window: u64, loss: f64, neurons: Vec<NeuronRow>) {
        self.losses.retain(|p| p.window != window);
        self.losses.push(LossPoint { window, loss });
        let total: f64 = neurons.iter().filter_map(|n| n.weight).sum();
        self.shares.retain(|p| p.window != window);
        for n in &neurons {
            if let Some(weight) = n.weight {
                let share = if total > 0.0 { weight / total } else { 0.0 };
                self.shares.push(SharePoint {
                    window,
                    uid: n.uid,
                    share,
                });
            }
            if let Some(verdict) = n.verdict.as_ref().filter(|v| v.as_str() != "earned") {
                self.rejections.push(RejectionRow {
                    window,
                    uid: n.uid,
                    verdict: verdict.clone(),
                });
            }
        }
        self.neurons = neurons;
        keep_last(&mut self.losses, KEPT_WINDOWS);
        let first_kept = self.losses.first().map_or(0, |p| p.window);
        self.shares.retain(|p| p.window >= first_kept);
        keep_last(&mut self.rejections, KEPT_REJECTIONS);
    }

    /// Adds chain events (oldest first).
    pub fn add_events(&mut self, events: impl IntoIterator<Item = EventRow>) {
        self.events.extend(events);
        keep_last(&mut self.events, KEPT_EVENTS);
    }
}

fn keep_last<T>(v: &mut Vec<T>, n: usize) {
    if v.len() > n {
        v.drain(..v.len() - n);
    }
}

/// A view and the pages watching it.
pub struct Dashboard {
    view: Mutex<View>,
    version: watch::Sender<u64>,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard").finish_non_exhaustive()
    }
}

impl Dashboard {
    pub fn new(view: View) -> Arc<Self> {
        Arc::new(Self {
            view: Mutex::new(view),
            version: watch::Sender::new(0),
        })
    }

    /// Changes the view and tells every open page.
    pub fn update(&self, change: impl FnOnce(&mut View)) {
        change(&mut self.view.lock().expect("dashboard lock"));
        self.version.send_modify(|v| *v += 1);
    }

    pub fn view(&self) -> View {
        self.view.lock().expect("dashboard lock").clone()
    }

    fn json(&self) -> String {
        serde_json::to_string(&*self.view.lock().expect("dashboard lock"))
            .expect("a view serializes")
    }

    /// Serves the page on `listener` until `shutdown` completes; open event streams end then.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop_tx, stop) = watch::channel(false);
        let pages = Pages {
            dashboard: self,
            open: Arc::new(Semaphore::new(MAX_STREAMS)),
            stop,
        };
        let app = Router::new()
            .route("/", get(page))
            .route("/index.html", get(page))
            .route("/view", get(view))
            .route("/events", get(events))
            .with_state(pages);
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                let _ = stop_tx.send(true);
            })
            .await
    }
}

/// What the routes share: the view, the event streams still allowed, and the stop signal.
#[derive(Clone)]
struct Pages {
    dashboard: Arc<Dashboard>,
    open: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
}

/// Every answer is of now: nothing is cached.
const NO_STORE: [(header::HeaderName, &str); 1] = [(header::CACHE_CONTROL, "no-store")];

async fn page() -> impl IntoResponse {
    (NO_STORE, Html(PAGE))
}

async fn view(State(pages): State<Pages>) -> impl IntoResponse {
    let json = pages.dashboard.json();
    (NO_STORE, [(header::CONTENT_TYPE, "application/json")], json)
}

/// The view now and again on every change, as server-sent events, with a comment every
/// `HEARTBEAT` so that a page that went away is noticed.
async fn events(State(pages): State<Pages>) -> Response {
    let Ok(permit) = pages.open.clone().try_acquire_owned() else {
        let busy = "too many pages are open; try again later";
        return (StatusCode::SERVICE_UNAVAILABLE, NO_STORE, busy).into_response();
    };
    let changes = pages.dashboard.version.subscribe();
    let start = (pages.dashboard, changes, pages.stop, permit, true);
    let stream = futures::stream::unfold(
        start,
        |(dashboard, mut changes, mut stop, permit, first)| async move {
            if !first {
                tokio::select! {
                    changed = changes.changed() => changed.ok()?,
                    _ = stop.wait_for(|s| *s) => return None,
                }
            }
            let event = Event::default().data(dashboard.json());
            Some((
                Ok::<_, Infallible>(event),
                (dashboard, changes, stop, permit, false),
            ))
        },
    );
    let keep_alive = KeepAlive::new().interval(HEARTBEAT).text("heartbeat");
    (NO_STORE, Sse::new(stream).keep_alive(keep_alive)).into_response()
}

/// A dashboard with `view`, served at `addr` (port 0: any free port) for as long as the process
/// runs; returns it and the address it listens on.
pub async fn spawn(addr: &str, view: View) -> std::io::Result<(Arc<Dashboard>, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let dashboard = Dashboard::new(view);
    let serving = dashboard.clone();
    tokio::spawn(async move {
        if let Err(e) = serving.serve(listener, std::future::pending()).await {
            tracing::warn!(error = %e, "dashboard stopped");
        }
    });
    Ok((dashboard, local))
}

/// Neuron rows from a metagraph, with each miner's result from a validator's window where it has
/// one (not for uids holding a validator permit), the kinds the operator knows and the slashed
/// hotkeys.
pub fn neuron_rows(
    metagraph: &chain_client::Metagraph,
    outcome: Option<&crate::WindowOutcome>,
    kinds: &BTreeMap<u16, String>,
    slashed: &[chain_client::AccountId],
) -> Vec<NeuronRow> {
    metagraph
        .neurons
        .iter()
        .map(|n| {
            // Validators do not mine here: the window's results speak of miners.
            let result = outcome
                .filter(|_| !n.validator_permit)
                .and_then(|o| o.result(n.uid));
            NeuronRow {
                uid: n.uid,
                hotkey: n.hotkey.to_string(),
                kind: kinds.get(&n.uid).cloned(),
                validator: n.validator_permit,
                stake: Some(n.stake),
                score: result.map(|r| r.score),
                standard_error: result
                    .and_then(|r| r.usefulness.as_ref())
                    .map(|u| u.standard_error),
                verdict: result.map(|r| r.verdict.to_string()),
                weight: result.map(|r| r.weight),
                incentive: Some(n.incentive),
                dividends: Some(n.dividends),
                emission: Some(n.total_emission),
                slashed: slashed.contains(&n.hotkey),
            }
        })
        .collect()
}

/// Rows from a window's decisions alone (a replay of a validator's records): each miner's score,
/// verdict and weight, without the chain's columns.
pub fn decision_rows(decisions: &[scoring::MinerDecision]) -> Vec<NeuronRow> {
    decisions
        .iter()
        .map(|d| NeuronRow {
            uid: d.uid,
            hotkey: d.hotkey.clone(),
            score: Some(d.score),
            standard_error: d.usefulness.as_ref().map(|u| u.standard_error),
            verdict: Some(d.verdict.to_string()),
            weight: Some(d.weight),
            ..NeuronRow::default()
        })
        .collect()
}
