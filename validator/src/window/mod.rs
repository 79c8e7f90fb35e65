//! A validator's window as synchronous steps over plain data, written once. The live validator
//! (`crate::node`), offline replays (`crate::replay`) and `subnet efficacy` run these very steps,
//! each over its own `WindowInputs`: the miners over gRPC and the chain, a data directory, memory.
//!
//! The steps, in order: `start` (the eval batches drawn by the validator's secret, the checkpoint's
//! losses on them and the validator's own training of the window), then `score` over gather's
//! results: measure each gradient on its own (`measure`), audit the miners due an audit
//! (`audit`), run the assignment check on the rest and audit at once those that fail it, score
//! what each candidate adds to the others (`contribution`), decide (`scoring::decide`) and
//! aggregate the earners into the next checkpoint (`aggregate`). Every threshold comes from the
//! window's `ScoringParams`, so a replay can vary any of them.

mod aggregate;
mod audit;
mod blob;
mod contribution;
mod measure;
mod start;

pub use aggregate::{Step, aggregate};
pub use audit::{
    Artefacts, AuditError, AuditFinding, AuditGap, AuditRequest, PendingAudit, ServedSegment,
    Subject, Unresolved, examine, irreproducible,
};
pub use blob::{Blob, Incoming};
pub use contribution::{SKETCH_MARGIN, contributions, similar_pairs};
pub use start::{Reference, Setting, Start, start};

use pseudo_gradient::Sparse;
use scoring::{Averages, MinerDecision, MinerEvidence, Reason, WindowEvidence, decide};
use std::collections::BTreeMap;
use std::time::Instant;
use task::groups::ParamGroup;
use task::{Digest, TaskEngine};

/// A miner's gradient that arrived intact, decoded.
#[derive(Clone, Debug)]
pub struct Gradient {
    /// The payload as committed (kept on disk by a validator with a data directory).
    pub payload: Blob,
    /// The decoded payload as a whole-model vector (zero outside the miner's group), held as its
    /// nonzero entries: a window keeps what miners sent, not a model-sized vector per miner.
    pub values: Sparse,
    /// The parameter group the miner trained this window.
    pub group: ParamGroup,
    /// The outgoing residual its commitment names (an audit checks the payload leaves exactly it).
    pub residual_out: Digest,
    /// The backend its commitment says trained it (see `task::device::cpu_backend`).
    pub backend: String,
}

impl Gradient {
    /// Whether an audit re-executing on `evaluator` must reproduce its training bit for bit: it
    /// was trained on the same CPU arithmetic. Never on a GPU, even the same model of one: its
    /// kernels do not promise the same bits from run to run.
    pub fn bit_exact(&self, evaluator: &str) -> bool {
        self.backend == evaluator && task::device::is_cpu_backend(evaluator)
    }
}

/// Why a miner's gradient is not evaluated this window.
#[derive(Clone, Debug)]
pub struct Refusal {
    pub reason: Reason,
    /// The norm and group of a gradient refused after it was decoded (a replay reads them from the
    /// record, which keeps no payload of such a gradient); 0 for one that never arrived.
    pub norm: f64,
    pub group: usize,
}

impl From<Reason> for Refusal {
    fn from(reason: Reason) -> Self {
        Self {
            reason,
            norm: 0.0,
            group: 0,
        }
    }
}

/// One miner as gathering left it.
#[derive(Clone, Debug)]
pub struct Gathered {
    pub uid: u16,
    pub hotkey: String,
    pub outcome: Result<Gradient, Refusal>,
}

/// How a gathered commitment's incoming residual continues its miner's residual chain.
#[derive(Clone, Debug, PartialEq)]
pub enum ResidualLink {
    /// Zero, or what the previous commitment, which the validator holds, left.
    Continues,
    /// Not what the previous commitment left, or skipping one: fraud.
    Broken(Reason),
    /// It comes from a commitment the validator did not collect, which the miner has now served
    /// (signed): that window is audited (`pending`), and the miner earns nothing from this
    /// validator until the audit passes.
    Unseen(PendingAudit),
    /// It comes from a commitment the miner could not show, or one whose own residual cannot be
    /// traced: the gradient is refused this window.
    Untraced(Reason),
}

/// What a window's steps need from outside the window: the validator's memory of earlier windows
/// and its audit schedule, and what miners serve for an audit.
pub trait WindowInputs {
    /// What stops the window (a data directory that cannot be read or written).
    type Error;
    /// Of the gathered gradients, the uids due an audit before the assignment check.
    fn due_audits(&mut self, gradients: &BTreeMap<u16, Gradient>) -> Vec<u16>;
    /// How `uid`'s commitment continues its residual chain across windows.
    fn residual_chain(&mut self, uid: u16) -> ResidualLink;
    /// For each request, the dense gradient and incoming residual the miner committed to in that
    /// window, served for its audit, or why the audit got none: all of them under one budget, in
    /// the order asked.
    fn artefacts(
        &mut self,
        requests: &[AuditRequest],
    ) -> Result<Vec<Result<Artefacts, AuditGap>>, Self::Error>;
    /// What an unresolved audit of `uid` needs to run again (the window's checkpoint and the
    /// committed gradient), or None when it can no longer be found.
    fn subject(&mut self, uid: u16, pending: &PendingAudit)
    -> Result<Option<Subject>, Self::Error>;
}

/// The window's work as measured and checked so far.
#[derive(Default)]
struct Work {
    evidence: Vec<MinerEvidence>,
    gradients: BTreeMap<u16, Gradient>,
    /// The norm every gradient of each parameter group is clipped to.
    clips: Vec<f64>,
    audits: Vec<AuditFinding>,
    /// Commitments of earlier windows the validator had not collected, which gathered residuals
    /// come from: audited this window.
    unseen: Unresolved,
}

/// What carries into a window from the ones before it.
#[derive(Clone, Copy, Debug)]
pub struct Carried<'a> {
    pub averages: &'a Averages,
    /// The outer momentum buffer (empty: zero, or plain SGD).
    pub momentum: &'a [f32],
    /// The audits of earlier windows that have not resolved.
    pub unresolved: &'a Unresolved,
}

/// A scored window: its evidence, audits, decisions and outer step.
#[derive(Debug)]
pub struct Scored {
    pub evidence: WindowEvidence,
    pub audits: Vec<AuditFinding>,
    /// The audits unresolved after the window.
    pub unresolved: Unresolved,
    /// The earlier commitments, not collected by the validator, that gathered residuals came from
    /// (each audited this window).
    pub unseen: Unresolved,
    pub decisions: Vec<MinerDecision>,
    pub step: Step,
    /// The gradients that were evaluated, by uid.
    pub gradients: BTreeMap<u16, Gradient>,
    /// The clip norm of each parameter group.
    pub clips: Vec<f64>,
    /// Seconds spent per step.
    pub timings: Vec<(&'static str, f64)>,
}

/// Scores a started window from gather's results, in the protocol's steps.
pub fn score<I: WindowInputs>(
    engine: &TaskEngine,
    start: &Start,
    gathered: Vec<Gathered>,
    inputs: &mut I,
    carried: Carried,
) -> Result<Scored, I::Error> {
    let mut laps = Laps::new();
    let mut work = measure::measure(engine, start, gathered, inputs);
    laps.lap("usefulness");
    let unresolved = audit_and_check(engine, start, &mut work, inputs, carried.unresolved)?;
    laps.lap("audits and assignment");
    let mut evidence = WindowEvidence {
        window: start.setting.window,
        base: start.base.clone(),
        reference_norm: start.reference.norm(),
        reference_group_norms: start.reference.group_norms.clone(),
        reference_group_gains: start.reference.group_gains.clone(),
        miners: work.evidence,
        similarities: Vec::new(),
        aggregate: Vec::new(),
        scaled: Vec::new(),
    };
    let checkpoint = start.checkpoint();
    contributions(
        engine,
        (&checkpoint.params, carried.momentum, &start.batches),
        (
            &mut evidence,
            start.setting.eval_seed,
            &start.reference.dense,
        ),
        &work.gradients,
        start.params(),
    );
    laps.lap("contribution");
    let decisions = decide(&evidence, start.params(), carried.averages);
    let step = aggregate(
        engine,
        (checkpoint, carried.momentum),
        (&evidence, &decisions),
        (&work.gradients, &work.clips),
        (start.params(), start.next_inner.clone()),
    );
    laps.lap("aggregate");
    Ok(Scored {
        evidence,
        audits: work.audits,
        unresolved,
        unseen: std::mem::take(&mut work.unseen),
        decisions,
        step,
        gradients: work.gradients,
        clips: work.clips,
        timings: laps.0,
    })
}

/// The window's audits (those due, the unresolved ones of earlier windows and those of miners
/// that fail the assignment check) and assignment checks: the audits left unresolved.
fn audit_and_check<I: WindowInputs>(
    engine: &TaskEngine,
    start: &Start,
    work: &mut Work,
    inputs: &mut I,
    carried: &Unresolved,
) -> Result<Unresolved, I::Error> {
    let due = inputs.due_audits(&work.gradients);
    let mut pending = carried.clone();
    for (uid, p) in &work.unseen {
        pending.entry(*uid).or_insert_with(|| p.clone());
    }
    let earlier = subjects(work, &pending, inputs)?;
    work.audit(engine, start, (&due, &earlier), inputs)?;
    let suspects = measure::assignment_checks(engine, start, work);
    if !suspects.is_empty() {
        tracing::info!(
            window = start.setting.window,
            ?suspects,
            "auditing the miners that failed the assignment check"
        );
        work.audit(engine, start, (&suspects, &[]), inputs)?;
    }
    let retried: Unresolved = earlier
        .iter()
        .map(|(uid, _)| (*uid, pending[uid].clone()))
        .collect();
    Ok(work.settle(start, &retried))
}

/// The unresolved audits of miners still on their uid with the same hotkey, ready to run again;
/// one whose subject can no longer be found is dropped (with a warning).
fn subjects<I: WindowInputs>(
    work: &Work,
    unresolved: &Unresolved,
    inputs: &mut I,
) -> Result<Vec<(u16, Subject)>, I::Error> {
    let mut out = Vec::new();
    for m in &work.evidence {
        let Some(pending) = unresolved.get(&m.uid).filter(|p| p.hotkey == m.hotkey) else {
            continue;
        };
        match inputs.subject(m.uid, pending)? {
            Some(subject) => out.push((m.uid, subject)),
            None => tracing::warn!(
                uid = m.uid,
                window = pending.window,
                "the checkpoint or payload of an unresolved audit is gone; the audit is dropped"
            ),
        }
    }
    Ok(out)
}

/// Seconds spent per step.
pub(crate) struct Laps(pub(crate) Vec<(&'static str, f64)>, Instant);

impl Laps {
    pub(crate) fn new() -> Self {
        Self(Vec::new(), Instant::now())
    }

    /// Closes the step `name` (it ran since the previous step closed).
    pub(crate) fn lap(&mut self, name: &'static str) {
        self.0.push((name, self.1.elapsed().as_secs_f64()));
        self.1 = Instant::now();
    }

    /// Takes the steps timed elsewhere since the previous step closed as steps of its own: the
    /// next step starts now.
    pub(crate) fn include(&mut self, steps: &[(&'static str, f64)]) {
        self.0.extend_from_slice(steps);
        self.1 = Instant::now();
    }
}
