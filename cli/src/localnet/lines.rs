//! A window's line: what the run prints and reports for each window.

use super::*;

/// One miner's line item in a window.
#[derive(Clone, Debug)]
pub struct MinerLine {
    pub uid: u16,
    pub kind: MinerKind,
    /// The lead validator's verdict.
    pub verdict: String,
    /// Mean over validators of this window's usefulness score.
    pub score: f64,
    /// Mean over validators of the weight given this window.
    pub weight: f64,
    pub rejection: Option<String>,
    /// Its stake now, in rao (what it earned, less what was slashed).
    pub stake: u64,
    /// Everything emitted to it so far, in rao.
    pub emission: u64,
    pub slashed: bool,
    /// The parameter group it trained this window (honest miners that trained).
    pub group: Option<usize>,
}

#[derive(Clone, Debug)]
pub struct WindowLine {
    pub window: u64,
    /// Held-out loss of the global checkpoint after the window, on a fixed held-out set.
    pub heldout_loss: f64,
    pub miners: Vec<MinerLine>,
    /// Emissions paid so far, in rao.
    pub miner_emission: u64,
    pub validator_emission: u64,
    /// Validators that set (or, under commit-reveal, committed) weights this window.
    pub weights_set: usize,
    /// Earlier commits revealed on chain this window (commit-reveal only): hash commits revealed by
    /// their validators, timelocked ones opened by the chain.
    pub weights_revealed: usize,
    pub train_tokens_per_s: f64,
    /// The chain's block when the line was taken.
    pub block: u64,
}

impl WindowLine {
    /// The line with the miners' training rate and each miner's group of the round.
    pub(crate) fn with_training(mut self, tokens_per_s: f64, groups: &[(u16, usize)]) -> Self {
        self.train_tokens_per_s = tokens_per_s;
        for m in &mut self.miners {
            m.group = groups.iter().find(|(uid, _)| *uid == m.uid).map(|g| g.1);
        }
        self
    }
}

/// One miner's part of a window's line: its results averaged over the validators, and what the
/// chain holds for it.
fn miner_line(
    uid: u16,
    kind: MinerKind,
    outcomes: &[WindowOutcome],
    metagraph: &chain_client::Metagraph,
    slashed: &[AccountId],
) -> MinerLine {
    let results: Vec<_> = outcomes
        .iter()
        .filter_map(|o| o.results.iter().find(|r| r.uid == uid))
        .collect();
    let n = results.len().max(1) as f64;
    MinerLine {
        uid,
        kind,
        verdict: results
            .first()
            .map(|r| r.verdict.to_string())
            .unwrap_or_default(),
        score: results.iter().map(|r| r.score).sum::<f64>() / n,
        weight: results.iter().map(|r| r.weight).sum::<f64>() / n,
        rejection: results
            .iter()
            .find_map(|r| r.rejection.as_ref().map(|x| x.to_string())),
        stake: metagraph.by_uid(uid).map_or(0, |n| n.stake),
        emission: metagraph.by_uid(uid).map_or(0, |n| n.total_emission),
        slashed: metagraph
            .by_uid(uid)
            .is_some_and(|n| slashed.contains(&n.hotkey)),
        group: None,
    }
}

/// A window's line: the checkpoint's held-out loss, each miner's verdict, score and weight from the
/// validators' `outcomes`, and what the chain holds now (stake, emission, slashes).
pub(crate) async fn window_line(
    chain: &LocalChain,
    (netuid, since_block): (u16, u64),
    (window, loss): (u64, f64),
    outcomes: &[WindowOutcome],
    (miner_uids, kinds): (&[u16], &[MinerKind]),
    validator_uids: &[u16],
) -> anyhow::Result<WindowLine> {
    let metagraph = chain.metagraph(netuid).await?;
    let slashed: Vec<AccountId> = chain
        .slashes(netuid)?
        .into_iter()
        .map(|s| s.hotkey)
        .collect();
    let emission_of = |uids: &[u16]| {
        uids.iter()
            .filter_map(|u| metagraph.by_uid(*u))
            .map(|n| n.total_emission)
            .sum::<u64>()
    };
    let per_miner = miner_uids
        .iter()
        .zip(kinds)
        .map(|(&uid, &kind)| miner_line(uid, kind, outcomes, &metagraph, &slashed))
        .collect();
    Ok(WindowLine {
        window,
        heldout_loss: loss,
        miners: per_miner,
        miner_emission: emission_of(miner_uids),
        validator_emission: emission_of(validator_uids),
        weights_set: outcomes.iter().filter(|o| o.weights_set.is_ok()).count(),
        weights_revealed: outcomes
            .iter()
            .flat_map(|o| &o.reveals)
            .filter(|r| r.1.is_ok())
            .count()
            + chain
                .timelock_reveals(netuid)?
                .iter()
                .filter(|r| {
                    r.block > since_block && r.block <= metagraph.block && r.outcome.is_ok()
                })
                .count(),
        train_tokens_per_s: 0.0,
        block: metagraph.block,
    })
}

/// The table `subnet localnet` prints for a window: the loss and its distance to the floor, then
/// per miner its kind, score, weight, what it has been paid and the lead validator's verdict.
pub fn format_table(line: &WindowLine, floor: Option<f64>) -> Vec<String> {
    let tau = |rao: u64| rao as f64 / RAO_PER_TOKEN as f64;
    let gap = floor
        .map(|f| format!(" ({:+.4} over the floor {f:.4})", line.heldout_loss - f))
        .unwrap_or_default();
    let mut out = vec![format!(
        "window {:>3} | held-out loss {:.4}{gap} | paid so far: miners {:.3} τ, validators {:.3} τ{}",
        line.window,
        line.heldout_loss,
        tau(line.miner_emission),
        tau(line.validator_emission),
        if line.weights_revealed > 0 {
            format!(" | {} earlier commit(s) revealed", line.weights_revealed)
        } else {
            String::new()
        }
    )];
    let grouped = line.miners.iter().any(|m| m.group.is_some_and(|g| g > 0));
    out.push(format!(
        "  {:>4} {:<16}{} {:>7} {:>7} {:>10}  verdict",
        "uid",
        "kind",
        if grouped { " group" } else { "" },
        "score",
        "weight",
        "paid τ"
    ));
    for m in &line.miners {
        let group = match (grouped, m.group) {
            (false, _) => String::new(),
            (true, Some(g)) => format!(" {g:>5}"),
            (true, None) => format!(" {:>5}", "-"),
        };
        out.push(format!(
            "  {:>4} {:<16}{group} {:>7.4} {:>7.3} {:>10.4}  {}{}",
            m.uid,
            m.kind.to_string(),
            m.score,
            m.weight,
            tau(m.emission),
            m.verdict,
            if m.slashed { " (slashed)" } else { "" }
        ));
    }
    out
}

/// The line `subnet localnet` prints for a window.
pub fn format_line(line: &WindowLine) -> String {
    let miners: Vec<String> = line
        .miners
        .iter()
        .map(|m| {
            let kind = match m.kind {
                MinerKind::Honest => String::new(),
                MinerKind::Adversary(a) => format!(" [{a}]"),
            };
            if m.score > 0.0 {
                format!(
                    "uid {}{kind} score {:.4} weight {:.3}",
                    m.uid, m.score, m.weight
                )
            } else {
                format!("uid {}{kind} weight {:.3} ({})", m.uid, m.weight, m.verdict)
            }
        })
        .collect();
    let reveals = if line.weights_revealed > 0 {
        format!(" | {} earlier commit(s) revealed", line.weights_revealed)
    } else {
        String::new()
    };
    format!(
        "window {:>3} | held-out loss {:.4} | {}{reveals} | emissions: miners {:.3} τ, validators {:.3} τ",
        line.window,
        line.heldout_loss,
        miners.join(", "),
        line.miner_emission as f64 / RAO_PER_TOKEN as f64,
        line.validator_emission as f64 / RAO_PER_TOKEN as f64,
    )
}
