//! The localnet's report: what the run showed, as `report.json` and `report.png` in the run
//! directory and as the summary `subnet localnet` prints at the end. The loss curve against the
//! corpus's entropy floor, every miner's kind, earnings, slashes and the window it was caught in and
//! from which every validator gave it zero weight, the validators' stake and dividends, and the
//! share of miner emission that went to honest miners once the first two windows are past.

use crate::chain_admin::RAO_PER_TOKEN;
use crate::localnet::{LocalnetReport, MinerKind};
use crate::plot::{Chart, band_color, draw};
use anyhow::Context;
use chain_client::LocalChain;
use scoring::Verdict;
use serde::Serialize;
use std::path::Path;

#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub task: String,
    pub entropy_rate: Option<f64>,
    /// The lowest mean loss reachable on the task's sequences, where known.
    pub loss_floor: Option<f64>,
    pub initial_loss: f64,
    pub windows: Vec<WindowPoint>,
    pub miners: Vec<MinerSummary>,
    pub validators: Vec<ValidatorSummary>,
    /// Honest miners' share of the emission paid to miners after the first two windows (None for
    /// runs of two windows or fewer, or when no miner was paid then).
    pub honest_emission_share: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct WindowPoint {
    pub window: u64,
    pub heldout_loss: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct MinerSummary {
    pub uid: u16,
    pub hotkey: String,
    /// "honest" or the adversary's mode.
    pub kind: String,
    /// Everything emitted to it, in rao (slashes not deducted).
    pub emission: u64,
    /// What it holds at the end, in rao (emission less slashes).
    pub stake: u64,
    pub slashed: bool,
    /// The first window from which every validator gave it zero weight in every window, if any.
    pub zero_weight_since: Option<u64>,
    /// The first window a validator refused it or found fraud, and the verdict.
    pub caught: Option<Caught>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Caught {
    pub window: u64,
    pub verdict: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct ValidatorSummary {
    pub uid: u16,
    pub hotkey: String,
    /// Stake in rao at the end.
    pub stake: u64,
    /// Dividends of the last epoch (u16 over 65535).
    pub dividends: u16,
    pub validator_permit: bool,
}

/// Whether a verdict accuses the miner (rather than finding its work unhelpful this window).
fn accuses(verdict: &Verdict) -> bool {
    matches!(
        verdict,
        Verdict::Refused { .. }
            | Verdict::Fraud { .. }
            | Verdict::Banned { .. }
            | Verdict::Oversized { .. }
            | Verdict::WrongPages { .. }
    )
}

/// Builds the report of a finished localnet from its windows, outcomes and chain.
pub fn build(task: &str, report: &LocalnetReport) -> anyhow::Result<RunReport> {
    let chain = LocalChain::open(&report.chain_path)?;
    let metagraph = chain.metagraph_sync(report.netuid)?;
    let slashed: Vec<_> = chain
        .slashes(report.netuid)?
        .into_iter()
        .map(|s| s.hotkey)
        .collect();
    let miners = report
        .miner_uids
        .iter()
        .zip(&report.miner_kinds)
        .map(|(&uid, kind)| {
            let neuron = metagraph
                .by_uid(uid)
                .with_context(|| format!("uid {uid} is not on the chain"))?;
            Ok(miner_summary(report, neuron, kind, &slashed))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let validators = report
        .validator_uids
        .iter()
        .filter_map(|&uid| metagraph.by_uid(uid))
        .map(|n| ValidatorSummary {
            uid: n.uid,
            hotkey: n.hotkey.to_string(),
            stake: n.stake,
            dividends: n.dividends,
            validator_permit: n.validator_permit,
        })
        .collect();
    Ok(RunReport {
        task: task.to_string(),
        entropy_rate: report.entropy_rate,
        loss_floor: report.loss_floor,
        initial_loss: report.initial_loss,
        windows: report
            .windows
            .iter()
            .map(|w| WindowPoint {
                window: w.window,
                heldout_loss: w.heldout_loss,
            })
            .collect(),
        miners,
        validators,
        honest_emission_share: honest_emission_share(report),
    })
}

/// What became of one miner over the run: its pay, when it stopped earning and whether a
/// validator caught it.
fn miner_summary(
    report: &LocalnetReport,
    neuron: &chain_client::Neuron,
    kind: &MinerKind,
    slashed: &[chain_client::AccountId],
) -> MinerSummary {
    let uid = neuron.uid;
    let windows: Vec<u64> = report.windows.iter().map(|w| w.window).collect();
    let weight_in = |window: u64| {
        report
            .results(uid, window)
            .map(|r| r.weight)
            .fold(0.0, f64::max)
    };
    let zero_weight_since = windows
        .iter()
        .rposition(|&w| weight_in(w) > 0.0)
        .map_or(windows.first().copied(), |last| {
            windows.get(last + 1).copied()
        });
    let caught = windows.iter().find_map(|&w| {
        let r = report.results(uid, w).find(|r| accuses(&r.verdict))?;
        Some(Caught {
            window: w,
            verdict: r.verdict.to_string(),
        })
    });
    MinerSummary {
        uid,
        hotkey: neuron.hotkey.to_string(),
        kind: kind.to_string(),
        emission: neuron.total_emission,
        stake: neuron.stake,
        slashed: slashed.contains(&neuron.hotkey),
        zero_weight_since,
        caught,
    }
}

/// Honest miners' share of the miner emission paid after the first two windows.
fn honest_emission_share(report: &LocalnetReport) -> Option<f64> {
    let (after_warm_up, last) = (report.windows.get(1)?, report.windows.last()?);
    if report.windows.len() < 3 {
        return None;
    }
    let paid = |honest: Option<bool>| -> u64 {
        last.miners
            .iter()
            .filter(|m| honest.is_none_or(|h| (m.kind == MinerKind::Honest) == h))
            .map(|m| {
                let before = after_warm_up
                    .miners
                    .iter()
                    .find(|b| b.uid == m.uid)
                    .map_or(0, |b| b.emission);
                m.emission.saturating_sub(before)
            })
            .sum()
    };
    let all = paid(None);
    (all > 0).then(|| paid(Some(true)) as f64 / all as f64)
}

/// The summary lines `subnet localnet` prints at the end.
pub fn summary(run: &RunReport) -> Vec<String> {
    let tau = |rao: u64| rao as f64 / RAO_PER_TOKEN as f64;
    let mut lines = Vec::new();
    let curve: Vec<String> = run
        .windows
        .iter()
        .map(|w| format!("{:.3}", w.heldout_loss))
        .collect();
    lines.push(format!(
        "held-out loss by window: {:.3} -> {}{}",
        run.initial_loss,
        curve.join(" "),
        run.loss_floor
            .map(|f| format!(" (floor {f:.4})"))
            .unwrap_or_default()
    ));
    if let Some(share) = run.honest_emission_share {
        lines.push(format!(
            "honest miners received {:.1}% of the miner emission after the first two windows",
            100.0 * share
        ));
    }
    lines.push("miners:".into());
    for m in &run.miners {
        let caught = match &m.caught {
            Some(c) => format!("caught in window {}: {}", c.window, c.verdict),
            None => String::new(),
        };
        lines.push(format!(
            "  uid {:>3} {:<16} paid {:>8.4} τ  holds {:>8.4} τ{}  {caught}",
            m.uid,
            m.kind,
            tau(m.emission),
            tau(m.stake),
            if m.slashed { "  slashed" } else { "" },
        ));
    }
    lines.push("validators:".into());
    for v in &run.validators {
        lines.push(format!(
            "  uid {:>3} stake {:>10.4} τ  dividends {:.3}  permit {}",
            v.uid,
            tau(v.stake),
            v.dividends as f64 / 65535.0,
            v.validator_permit
        ));
    }
    lines
}

/// Writes `report.json` and `report.png` (the loss curve with the entropy floor, and each miner's
/// share of every window's miner emission, honest miners in blues and greens, the others in reds).
pub fn write(run: &RunReport, report: &LocalnetReport, dir: &Path) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(run).context("the report serializes")?;
    std::fs::write(dir.join("report.json"), json)
        .with_context(|| format!("cannot write {}", dir.join("report.json").display()))?;
    let (mut honest, mut other) = (0, 0);
    let bands = report
        .miner_uids
        .iter()
        .zip(&report.miner_kinds)
        .map(|(&uid, kind)| {
            let color = if *kind == MinerKind::Honest {
                honest += 1;
                band_color(honest - 1, true)
            } else {
                other += 1;
                band_color(other - 1, false)
            };
            let mut previous = 0u64;
            let paid: Vec<u64> = report
                .windows
                .iter()
                .map(|w| {
                    let total = w
                        .miners
                        .iter()
                        .find(|m| m.uid == uid)
                        .map_or(0, |m| m.emission);
                    let paid = total.saturating_sub(previous);
                    previous = total;
                    paid
                })
                .collect();
            (format!("{uid} {kind}"), color, paid)
        })
        .collect::<Vec<_>>();
    let totals: Vec<u64> = (0..report.windows.len())
        .map(|i| bands.iter().map(|(_, _, paid)| paid[i]).sum())
        .collect();
    let bands = bands
        .into_iter()
        .map(|(label, color, paid)| {
            let shares = paid
                .iter()
                .zip(&totals)
                .map(|(&p, &t)| if t > 0 { p as f64 / t as f64 } else { 0.0 })
                .collect();
            (label, color, shares)
        })
        .collect();
    draw(
        &Chart {
            first_window: report.windows.first().map_or(0, |w| w.window),
            losses: run.windows.iter().map(|w| w.heldout_loss).collect(),
            floor: run.loss_floor,
            shares_title: "emission share".into(),
            bands,
        },
        &dir.join("report.png"),
    )
}
