//! Audits: a miner's committed artefacts checked against its payload and against the validator's
//! re-execution of its window, and what the finding does to its evidence.

use super::{Gradient, Start, WindowInputs, Work};
use crate::audit::{ArtefactError, verify_artefacts};
use crate::evaluate;
use crate::record::AuditRecord;
use scoring::checks::{relative_difference, reproduces};
use scoring::{MinerEvidence, Reason, ReasonKind};
use task::{Digest, TaskEngine};

/// What an audited miner served: its dense pseudo-gradient and the residual that went into its
/// compression, both in the codec's dense form.
#[derive(Clone, Debug)]
pub struct Artefacts {
    pub dense: Vec<u8>,
    pub residual_in: Vec<u8>,
}

/// Why an audit got no artefacts.
#[derive(Clone, Debug)]
pub struct AuditGap {
    pub reason: Reason,
    /// The miner could not be reached (a transport failure): it is audited again next window. Any
    /// other gap is a refusal to serve what it committed to.
    pub unreachable: bool,
}

/// What an audit found.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditFinding {
    pub record: AuditRecord,
    /// The miner could not be reached: audit it again next window.
    pub incomplete: bool,
}

/// The failure an audit's relative difference means under `tolerance`, if any.
pub fn irreproducible(difference: f64, tolerance: f64) -> Option<Reason> {
    (!reproduces(difference, tolerance)).then(|| {
        Reason::new(
            ReasonKind::Irreproducible,
            format!(
                "audit: its dense gradient differs from the re-executed training by {difference:.3e} (relative L2), beyond the backend tolerance {tolerance}"
            ),
        )
    })
}

/// One miner's audit: the artefacts it served (or why there are none) must give its payload byte
/// for byte and the committed outgoing residual, and the dense gradient must match the re-executed
/// window within the audit tolerance.
pub fn examine(
    engine: &TaskEngine,
    start: &Start,
    uid: u16,
    gradient: &Gradient,
    served: Result<Artefacts, AuditGap>,
) -> AuditFinding {
    let mut record = AuditRecord {
        uid,
        dense_digest: None,
        residual_digest: None,
        relative_difference: None,
        failure: None,
    };
    let served = match served {
        Ok(served) => served,
        Err(gap) => {
            record.failure = Some(gap.reason);
            return AuditFinding {
                record,
                incomplete: gap.unreachable,
            };
        }
    };
    record.dense_digest = Some(Digest(subnet_proto::digest(&served.dense)));
    record.residual_digest = Some(Digest(subnet_proto::digest(&served.residual_in)));
    match reexecuted_difference(engine, start, uid, gradient, &served) {
        Ok(difference) => {
            tracing::info!(uid, relative_difference = difference, "audit");
            record.relative_difference = Some(difference);
            record.failure = irreproducible(difference, start.params().spot_check_tolerance);
        }
        Err(reason) => {
            record.failure = Some(Reason::new(
                ReasonKind::Inconsistent,
                format!("audit: {reason}"),
            ))
        }
    }
    AuditFinding {
        record,
        incomplete: false,
    }
}

/// Why an audit's artefacts could not be compared with the re-executed window.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Artefacts(#[from] ArtefactError),
    #[error("uid {0} has no assignment")]
    NoAssignment(u16),
}

/// The relative difference between the served dense gradient and the re-executed window, or why
/// the artefacts do not fit together.
fn reexecuted_difference(
    engine: &TaskEngine,
    start: &Start,
    uid: u16,
    gradient: &Gradient,
    served: &Artefacts,
) -> Result<f64, AuditError> {
    let range = &gradient.group.range;
    let dense = verify_artefacts(
        engine,
        &gradient.residual_out,
        &gradient.payload,
        (&served.dense, &served.residual_in),
        range,
    )?;
    let s = &start.setting;
    let reexecuted = evaluate::reexecute(
        engine,
        &s.checkpoint.params,
        s.window,
        s.window_seed,
        uid,
        range.clone(),
    )
    .ok_or(AuditError::NoAssignment(uid))?;
    Ok(relative_difference(&dense, &reexecuted))
}

impl Work {
    /// Audits `uids` (in uid order), with the artefacts `inputs` serves, and puts the findings into
    /// the evidence.
    pub(super) fn audit<I: WindowInputs>(
        &mut self,
        engine: &TaskEngine,
        start: &Start,
        uids: &[u16],
        inputs: &mut I,
    ) -> Result<(), I::Error> {
        for (&uid, gradient) in self.gradients.iter().filter(|(u, _)| uids.contains(u)) {
            let served = inputs.artefacts(uid)?;
            let finding = examine(engine, start, uid, gradient, served);
            if let Some(m) = self.evidence.iter_mut().find(|m| m.uid == uid) {
                apply(m, &finding);
            }
            self.audits.push(finding);
        }
        Ok(())
    }
}

/// Puts what an audit found into the miner's evidence: a failed audit is fraud, one that could not
/// complete refuses the gradient for this window, one that reproduced the work clears the miner.
fn apply(m: &mut MinerEvidence, finding: &AuditFinding) {
    match (&finding.record.failure, finding.incomplete) {
        (Some(reason), true) => m.refused = Some(reason.clone()),
        (Some(reason), false) => m.fraud = Some(reason.clone()),
        (None, _) => m.audited_clean = true,
    }
}
