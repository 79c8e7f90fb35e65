//! One window's decisions from its evidence: which miners earn, their moving averages and weights.
//! A validator calls this with what it just measured; a replay calls it with what was recorded, under
//! the recorded or other scoring parameters.

use crate::checks::{AssignmentCheck, AssignmentEvidence, Similarity};
use crate::usefulness::UsefulnessScore;
use crate::weights::{moving_average, normalize_max_weight};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The scoring parameters that act on evidence (the task file's `[scoring]` section holds them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoringParams {
    /// Weight of the newest window in the moving average (0..=1).
    pub moving_average: f64,
    /// No miner's weight may exceed this share.
    pub max_weight: f64,
    /// The assignment check passes at or below this one-sided p-value.
    pub assignment_p_value: f64,
    /// Gradients at least this similar (cosine) are one gradient served twice.
    pub copy_cosine: f64,
}

/// What a validator saw of one miner in one window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MinerEvidence {
    pub uid: u16,
    pub hotkey: String,
    /// The commitment's timestamp, when a gradient was fetched.
    pub committed_at_ms: Option<u64>,
    /// Why the gradient was refused before evaluation (absent, late, malformed, ...).
    pub refused: Option<String>,
    /// Losses on the window's held-out batches after the gradient is applied (empty when refused).
    pub after: Vec<f32>,
    /// The assignment check's losses, for gradients that help.
    pub assignment: Option<AssignmentEvidence>,
    /// A spot re-execution that did not reproduce the miner's training, with what differed.
    pub fraud: Option<String>,
}

/// Everything a window's decisions rest on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowEvidence {
    /// Losses of the window's checkpoint on the held-out batches.
    pub base: Vec<f32>,
    pub miners: Vec<MinerEvidence>,
    /// Cosine similarity of every pair of evaluated gradients.
    pub similarities: Vec<Similarity>,
}

/// Why a miner earned nothing this window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Verdict {
    Earned,
    Refused { reason: String },
    Harmful { mean_relative_drop: f64 },
    WrongPages { p_value: f64 },
    Copy { of: u16, cosine: f64 },
    Fraud { reason: String },
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Earned => write!(f, "earned"),
            Verdict::Refused { reason } => write!(f, "refused: {reason}"),
            Verdict::Harmful { mean_relative_drop } => write!(
                f,
                "does not help: held-out loss changes by {:+.4}%",
                -100.0 * mean_relative_drop
            ),
            Verdict::WrongPages { p_value } => write!(
                f,
                "not trained on its assigned pages (assignment check p = {p_value:.3})"
            ),
            Verdict::Copy { of, cosine } => {
                write!(f, "copy of uid {of}'s gradient (cosine {cosine:.4})")
            }
            Verdict::Fraud { reason } => write!(f, "fraud: {reason}"),
        }
    }
}

/// One miner's outcome for one window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MinerDecision {
    pub uid: u16,
    pub hotkey: String,
    pub usefulness: Option<UsefulnessScore>,
    pub assignment: Option<AssignmentCheck>,
    pub verdict: Verdict,
    /// This window's score: the usefulness of an earning gradient, else 0.
    pub score: f64,
    pub moving_average: f64,
    /// Normalized weight (0 for all when nobody has earned yet).
    pub weight: f64,
}

/// Moving averages per uid, with the hotkey each belongs to.
pub type Averages = BTreeMap<u16, (String, f64)>;

/// Decides a window. `previous` holds the moving averages before it; a uid whose hotkey changed
/// starts over, and a miner that was absent or refused scores 0, so its average decays.
pub fn decide(
    evidence: &WindowEvidence,
    params: &ScoringParams,
    previous: &Averages,
) -> Vec<MinerDecision> {
    let mut decisions: Vec<MinerDecision> = evidence
        .miners
        .iter()
        .map(|m| {
            let usefulness = m
                .refused
                .is_none()
                .then(|| UsefulnessScore::from_losses(&evidence.base, &m.after));
            let assignment = m.assignment.as_ref().map(AssignmentEvidence::check);
            let verdict = if let Some(reason) = &m.refused {
                Verdict::Refused {
                    reason: reason.clone(),
                }
            } else if let Some(reason) = &m.fraud {
                Verdict::Fraud {
                    reason: reason.clone(),
                }
            } else {
                let u = usefulness.as_ref().expect("evaluated when not refused");
                if u.score() <= 0.0 {
                    Verdict::Harmful {
                        mean_relative_drop: u.mean_relative_drop,
                    }
                } else {
                    match &assignment {
                        Some(a) if a.passed(params.assignment_p_value) => Verdict::Earned,
                        Some(a) => Verdict::WrongPages { p_value: a.p_value },
                        None => Verdict::WrongPages { p_value: 1.0 },
                    }
                }
            };
            MinerDecision {
                uid: m.uid,
                hotkey: m.hotkey.clone(),
                usefulness,
                assignment,
                verdict,
                score: 0.0,
                moving_average: 0.0,
                weight: 0.0,
            }
        })
        .collect();

    // Copies: of a near-duplicate pair, the one that did not learn its own pages is the copy; when
    // that does not tell them apart, the later commitment (then the higher uid) is.
    let index: BTreeMap<u16, usize> = decisions
        .iter()
        .enumerate()
        .map(|(i, d)| (d.uid, i))
        .collect();
    let learned = |d: &MinerDecision| {
        d.assignment
            .as_ref()
            .is_some_and(|a| a.passed(params.assignment_p_value))
    };
    let mut copies: Vec<(usize, u16, f64)> = Vec::new();
    for s in &evidence.similarities {
        if s.cosine < params.copy_cosine {
            continue;
        }
        let (Some(&ia), Some(&ib)) = (index.get(&s.a), index.get(&s.b)) else {
            continue;
        };
        let (a, b) = (&decisions[ia], &decisions[ib]);
        let later_is_b = {
            let time = |i: usize| evidence.miners[i].committed_at_ms.unwrap_or(u64::MAX);
            (time(ib), b.uid) > (time(ia), a.uid)
        };
        let b_is_copy = match (learned(a), learned(b)) {
            (true, false) => true,
            (false, true) => false,
            _ => later_is_b,
        };
        if b_is_copy {
            copies.push((ib, a.uid, s.cosine));
        } else {
            copies.push((ia, b.uid, s.cosine));
        }
    }
    for (i, of, cosine) in copies {
        if matches!(
            decisions[i].verdict,
            Verdict::Earned | Verdict::WrongPages { .. }
        ) {
            decisions[i].verdict = Verdict::Copy { of, cosine };
        }
    }

    for d in &mut decisions {
        if d.verdict == Verdict::Earned {
            d.score = d.usefulness.as_ref().map_or(0.0, UsefulnessScore::score);
        }
        let before = previous
            .get(&d.uid)
            .filter(|(hotkey, _)| *hotkey == d.hotkey)
            .map(|(_, a)| *a);
        d.moving_average = moving_average(before, d.score, params.moving_average);
    }
    let averages: Vec<f64> = decisions.iter().map(|d| d.moving_average).collect();
    if averages.iter().any(|&a| a > 0.0) {
        let weights = normalize_max_weight(&averages, params.max_weight);
        for (d, w) in decisions.iter_mut().zip(weights) {
            d.weight = w;
        }
    }
    decisions
}

/// The moving averages after a window's decisions.
pub fn averages_after(decisions: &[MinerDecision]) -> Averages {
    decisions
        .iter()
        .map(|d| (d.uid, (d.hotkey.clone(), d.moving_average)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARAMS: ScoringParams = ScoringParams {
        moving_average: 0.5,
        max_weight: 1.0,
        assignment_p_value: 0.01,
        copy_cosine: 0.95,
    };

    fn learned(own_gain: f32) -> AssignmentEvidence {
        let control_own = vec![3.0, 3.1, 2.9, 3.0, 3.05];
        let control_held_back = vec![3.0, 2.9, 3.1, 3.0, 2.95];
        let jitter = [0.001, -0.001, 0.0, 0.002, -0.002];
        AssignmentEvidence {
            after_own: control_own
                .iter()
                .zip(jitter)
                .map(|(c, j)| c - own_gain - j)
                .collect(),
            after_held_back: control_held_back
                .iter()
                .zip(jitter)
                .map(|(c, j)| c + j)
                .collect(),
            control_own,
            control_held_back,
        }
    }

    fn miner(uid: u16, after: Vec<f32>, own_gain: f32, at: u64) -> MinerEvidence {
        MinerEvidence {
            uid,
            hotkey: format!("hotkey{uid}"),
            committed_at_ms: Some(at),
            refused: None,
            after,
            assignment: Some(learned(own_gain)),
            fraud: None,
        }
    }

    #[test]
    fn useful_work_on_own_pages_earns_and_cheats_do_not() {
        let base = vec![2.0, 2.0, 2.0];
        let evidence = WindowEvidence {
            base: base.clone(),
            miners: vec![
                miner(1, vec![1.8, 1.82, 1.79], 0.05, 10),
                // Helps, but learned nothing of its own pages.
                miner(2, vec![1.8, 1.81, 1.8], 0.0, 10),
                // Harmful.
                miner(3, vec![2.1, 2.2, 2.05], 0.05, 10),
                MinerEvidence {
                    refused: Some("no axon served on chain".into()),
                    after: Vec::new(),
                    assignment: None,
                    ..miner(4, Vec::new(), 0.0, 0)
                },
                MinerEvidence {
                    fraud: Some("re-execution differs".into()),
                    ..miner(5, vec![1.8, 1.8, 1.8], 0.05, 10)
                },
            ],
            similarities: Vec::new(),
        };
        let d = decide(&evidence, &PARAMS, &Averages::new());
        assert_eq!(d[0].verdict, Verdict::Earned);
        assert!(matches!(d[1].verdict, Verdict::WrongPages { .. }));
        assert!(matches!(d[2].verdict, Verdict::Harmful { .. }));
        assert!(matches!(d[3].verdict, Verdict::Refused { .. }));
        assert!(matches!(d[4].verdict, Verdict::Fraud { .. }));
        assert!(d[0].score > 0.09 && d[0].weight == 1.0, "{:?}", d[0]);
        for other in &d[1..] {
            assert_eq!((other.score, other.weight), (0.0, 0.0), "{other:?}");
        }
    }

    #[test]
    fn the_later_or_unlearned_duplicate_is_the_copy() {
        let after = vec![1.8, 1.82, 1.79];
        let similarities = vec![Similarity {
            a: 1,
            b: 2,
            cosine: 0.999,
        }];
        // Both learned (the copy's pages are the original's): the later commitment is the copy.
        let evidence = WindowEvidence {
            base: vec![2.0; 3],
            miners: vec![
                miner(1, after.clone(), 0.05, 20),
                miner(2, after.clone(), 0.05, 10),
            ],
            similarities: similarities.clone(),
        };
        let d = decide(&evidence, &PARAMS, &Averages::new());
        assert_eq!(d[1].verdict, Verdict::Earned);
        assert_eq!(
            d[0].verdict,
            Verdict::Copy {
                of: 2,
                cosine: 0.999
            }
        );

        // A backdated copy that did not learn its own pages is still the copy.
        let evidence = WindowEvidence {
            miners: vec![miner(1, after.clone(), 0.05, 20), miner(2, after, 0.0, 1)],
            ..evidence
        };
        let d = decide(&evidence, &PARAMS, &Averages::new());
        assert_eq!(d[0].verdict, Verdict::Earned);
        assert_eq!(
            d[1].verdict,
            Verdict::Copy {
                of: 1,
                cosine: 0.999
            }
        );
        assert_eq!(d[0].weight, 1.0);
    }

    #[test]
    fn averages_decay_for_absent_miners_and_restart_for_new_hotkeys() {
        let previous = Averages::from([
            (1, ("hotkey1".to_string(), 0.2)),
            (2, ("someone else".to_string(), 0.4)),
        ]);
        let evidence = WindowEvidence {
            base: vec![2.0; 3],
            miners: vec![
                MinerEvidence {
                    refused: Some("unreachable".into()),
                    after: Vec::new(),
                    ..miner(1, Vec::new(), 0.0, 0)
                },
                miner(2, vec![1.9, 1.9, 1.9], 0.05, 1),
            ],
            similarities: Vec::new(),
        };
        let d = decide(&evidence, &PARAMS, &previous);
        assert!((d[0].moving_average - 0.1).abs() < 1e-12, "{:?}", d[0]);
        // uid 2 changed hands: the old hotkey's 0.4 is not inherited.
        assert!((d[1].moving_average - 0.025).abs() < 1e-7, "{:?}", d[1]);
        assert!((d[0].weight + d[1].weight - 1.0).abs() < 1e-12);
    }
}
