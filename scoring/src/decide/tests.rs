use super::*;
use crate::reason::ReasonKind;

const PARAMS: ScoringParams = ScoringParams {
    moving_average: 0.5,
    max_weight: 1.0,
    assignment_p_value: 0.01,
    copy_cosine: 0.95,
    max_norm_ratio: 2.0,
    fraud_ban_windows: 10,
    eval_step: 0.25,
    aggregate_top: 8,
    aggregate_min: 2,
    spot_check_tolerance: 0.05,
    audit_grace: 2,
    leave_one_out: LeaveOneOut::Applied,
    step_with_candidates: false,
    copy_beside_reference: false,
    step_scales: Vec::new(),
    step_with_unhelpful: false,
    score_at_best_scale: false,
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
        base_held_back: control_held_back.iter().map(|c| c + 0.01).collect(),
        control_own,
        control_held_back,
    }
}

/// A candidate-looking miner whose leave-one-out losses are `without`.
fn miner(uid: u16, after: Vec<f32>, own_gain: f32, without: Vec<f32>) -> MinerEvidence {
    MinerEvidence {
        uid,
        hotkey: format!("hotkey{uid}"),
        refused: None,
        norm: 1.0,
        after,
        assignment: Some(learned(own_gain)),
        fraud: None,
        banned_until: None,
        audited_clean: false,
        without,
        group: 0,
        withheld: None,
    }
}

fn window(miners: Vec<MinerEvidence>, similarities: Vec<Similarity>) -> WindowEvidence {
    WindowEvidence {
        window: 5,
        base: vec![2.0; 3],
        reference_norm: 1.0,
        reference_group_norms: Vec::new(),
        reference_group_gains: Vec::new(),
        miners,
        similarities,
        aggregate: vec![1.7; 3],
        scaled: Vec::new(),
    }
}

#[test]
fn useful_work_on_own_pages_earns_and_cheats_do_not() {
    let helps = vec![1.8, 1.82, 1.79];
    let evidence = window(
        vec![
            miner(1, helps.clone(), 0.05, vec![1.8; 3]),
            // Helps, but learned nothing of its own pages.
            miner(2, helps.clone(), 0.0, vec![1.8; 3]),
            // Harmful.
            miner(3, vec![2.1, 2.2, 2.05], 0.05, Vec::new()),
            MinerEvidence {
                refused: Some(Reason::new(ReasonKind::NoAxon, "no axon served on chain")),
                after: Vec::new(),
                assignment: None,
                norm: 0.0,
                ..miner(4, Vec::new(), 0.0, Vec::new())
            },
            MinerEvidence {
                fraud: Some(Reason::new(
                    ReasonKind::Irreproducible,
                    "re-execution differs",
                )),
                ..miner(5, helps.clone(), 0.05, Vec::new())
            },
            // Scaled up far beyond honest work.
            MinerEvidence {
                norm: 2.5,
                ..miner(6, helps.clone(), 0.05, Vec::new())
            },
            MinerEvidence {
                banned_until: Some(5),
                ..miner(7, helps.clone(), 0.05, Vec::new())
            },
            // Failed the assignment check, but an audit reproduced its work.
            MinerEvidence {
                audited_clean: true,
                ..miner(8, helps, 0.0, vec![1.8; 3])
            },
        ],
        Vec::new(),
    );
    assert_eq!(candidates(&evidence, &PARAMS), vec![1, 8]);
    let d = decide(&evidence, &PARAMS, &Averages::new());
    assert_eq!(d[0].verdict, Verdict::Earned);
    assert!(matches!(d[1].verdict, Verdict::WrongPages { .. }));
    assert!(matches!(d[2].verdict, Verdict::Harmful { .. }));
    assert!(matches!(d[3].verdict, Verdict::Refused { .. }));
    assert!(matches!(d[4].verdict, Verdict::Fraud { .. }));
    assert!(matches!(d[5].verdict, Verdict::Oversized { ratio } if ratio == 2.5));
    assert_eq!(d[6].verdict, Verdict::Banned { until: 5 });
    assert_eq!(d[7].verdict, Verdict::Earned);
    // Leave-one-out: (1.8 - 1.7) / 2.0.
    assert!(
        (d[0].score - 0.05).abs() < 1e-6 && d[0].weight == 0.5,
        "{:?}",
        d[0]
    );
    for other in &d[1..7] {
        assert_eq!((other.score, other.weight), (0.0, 0.0), "{other:?}");
    }
}

#[test]
fn a_withheld_miner_earns_nothing_and_keeps_its_average_until_its_audit_resolves() {
    let helps = vec![1.8, 1.82, 1.79];
    let pending = Reason::new(ReasonKind::AuditPending, "audit of window 4 unresolved");
    let evidence = window(
        vec![
            miner(1, helps.clone(), 0.05, vec![1.8; 3]),
            miner(2, helps.clone(), 0.05, vec![1.8; 3]),
            MinerEvidence {
                withheld: Some(pending.clone()),
                ..miner(3, helps.clone(), 0.05, vec![1.8; 3])
            },
            // A fraud found while withheld is a fraud.
            MinerEvidence {
                withheld: Some(pending.clone()),
                fraud: Some(Reason::new(ReasonKind::AuditUnresolved, "unanswered")),
                ..miner(4, helps, 0.05, Vec::new())
            },
        ],
        Vec::new(),
    );
    assert_eq!(candidates(&evidence, &PARAMS), vec![1, 2]);
    let previous: Averages = (1..=4u16)
        .map(|u| (u, (format!("hotkey{u}"), 0.04)))
        .collect();
    let d = decide(&evidence, &PARAMS, &previous);
    assert_eq!(d[2].verdict, Verdict::Withheld { reason: pending });
    // Its average is held as it was, not decayed by a zero score, and pays nothing meanwhile.
    assert_eq!(
        (d[2].score, d[2].moving_average, d[2].weight),
        (0.0, 0.04, 0.0)
    );
    assert!(matches!(d[3].verdict, Verdict::Fraud { .. }));
    assert_eq!(d[3].moving_average, 0.0);
    assert!((d[0].weight - 0.5).abs() < 1e-12 && (d[1].weight - 0.5).abs() < 1e-12);
    // Resolved next window, it earns on from the average it kept.
    let kept = averages_after(&d);
    assert_eq!(kept[&3].1, 0.04);
}

#[test]
fn a_candidate_that_adds_nothing_to_the_others_earns_nothing() {
    let helps = vec![1.8, 1.82, 1.79];
    // Without uid 2 the aggregate is as good as with it (or better).
    let evidence = window(
        vec![
            miner(1, helps.clone(), 0.05, vec![1.8; 3]),
            miner(2, helps, 0.05, vec![1.69; 3]),
        ],
        Vec::new(),
    );
    let d = decide(&evidence, &PARAMS, &Averages::new());
    assert_eq!(d[0].verdict, Verdict::Earned);
    assert!(matches!(d[1].verdict, Verdict::NoContribution { relative } if relative < 0.0));
    assert_eq!(d[1].weight, 0.0);
}

#[test]
fn near_duplicates_share_one_score_whatever_their_order() {
    let helps = vec![1.8, 1.82, 1.79];
    let similarities = vec![
        Similarity {
            a: 1,
            b: 2,
            cosine: 0.999,
        },
        Similarity {
            a: 2,
            b: 3,
            cosine: 0.97,
        },
        Similarity {
            a: 1,
            b: 4,
            cosine: 0.5,
        },
    ];
    let evidence = window(
        (1..=4)
            .map(|uid| miner(uid, helps.clone(), 0.05, vec![1.8; 3]))
            .collect(),
        similarities,
    );
    let d = decide(&evidence, &PARAMS, &Averages::new());
    // Uids 1, 2 and 3 are one training run: together they earn what one of them adds.
    for member in &d[..3] {
        assert!((member.score - 0.05 / 3.0).abs() < 1e-6, "{member:?}");
        assert_eq!(member.duplicates.len(), 2);
    }
    assert!((d[3].score - 0.05).abs() < 1e-6);
    let group: f64 = d[..3].iter().map(|d| d.weight).sum();
    assert!((group - d[3].weight).abs() < 1e-9, "{d:?}");
    // All four are aggregated, in uid order; with a minimum of five, none is.
    assert_eq!(aggregation_order(&d, 8, 2), vec![1, 2, 3, 4]);
    assert_eq!(aggregation_order(&d, 2, 2), vec![1, 4]);
    assert!(aggregation_order(&d, 8, 5).is_empty());
    // With parameter groups, the best of each group.
    let mut grouped = d.clone();
    for x in grouped.iter_mut().filter(|x| x.uid == 2 || x.uid == 3) {
        x.group = 1;
    }
    // Group 0 holds uids 1 and 4 (4 scores more), group 1 uids 2 and 3 (a tie: the lower uid).
    assert_eq!(aggregation_order(&grouped, 1, 2), vec![2, 4]);
    assert_eq!(aggregation_order(&grouped, 2, 2), vec![1, 2, 3, 4]);
}

#[test]
fn a_window_whose_candidates_all_add_nothing_steps_with_them_only_where_the_rules_say_and_it_helps()
{
    let helps = vec![1.8, 1.82, 1.79];
    // Three candidates, each helpful alone, each of whose leave-one-out aggregate (1.65) is lower
    // than the aggregate of all (1.7): none earns. A fourth is harmful alone.
    let mut miners: Vec<MinerEvidence> = (1..=3)
        .map(|uid| miner(uid, helps.clone(), 0.05, vec![1.65; 3]))
        .collect();
    miners.push(miner(4, vec![2.1, 2.2, 2.05], 0.05, Vec::new()));
    let evidence = window(miners, Vec::new());
    let d = decide(&evidence, &PARAMS, &Averages::new());
    assert!(
        d.iter()
            .all(|d| d.verdict != Verdict::Earned && d.score == 0.0),
        "{d:?}"
    );
    // Without the rule the window is idle.
    assert!(aggregated(&evidence, &d, &PARAMS).is_empty());
    let stepping = ScoringParams {
        step_with_candidates: true,
        ..PARAMS
    };
    // With it, every candidate (never the harmful one), and still nobody is paid.
    assert_eq!(aggregated(&evidence, &d, &stepping), vec![1, 2, 3]);
    let d_stepping = decide(&evidence, &stepping, &Averages::new());
    assert!(d_stepping.iter().all(|d| d.score == 0.0 && d.weight == 0.0));
    // Not where their aggregate raises the loss, nor with fewer candidates than aggregate_min.
    let worse = WindowEvidence {
        aggregate: vec![2.05; 3],
        ..evidence.clone()
    };
    assert!(aggregated(&worse, &d, &stepping).is_empty());
    let four = ScoringParams {
        aggregate_min: 4,
        aggregate_top: 8,
        ..stepping.clone()
    };
    assert!(aggregated(&evidence, &d, &four).is_empty());
    // Where enough earn, the earners as before.
    let earning = window(
        (1..=3)
            .map(|uid| miner(uid, helps.clone(), 0.05, vec![1.8; 3]))
            .collect(),
        Vec::new(),
    );
    let d = decide(&earning, &stepping, &Averages::new());
    assert_eq!(
        aggregated(&earning, &d, &stepping),
        aggregation_order(&d, 8, 2)
    );
}

/// Where no gradient helps alone, the rules may still step, unpaid, with every gradient that
/// failed nothing else (never a refused, oversized, fraudulent or banned one) if their aggregate
/// lowers the loss.
#[test]
fn a_window_in_which_no_gradient_helps_alone_steps_with_the_unhelpful_only_where_the_rules_say() {
    let hurts = vec![2.1, 2.2, 2.05];
    let mut miners: Vec<MinerEvidence> = (1..=3)
        .map(|uid| miner(uid, hurts.clone(), 0.05, Vec::new()))
        .collect();
    miners.push(MinerEvidence {
        norm: 2.5,
        ..miner(4, hurts.clone(), 0.05, Vec::new())
    });
    miners.push(MinerEvidence {
        fraud: Some(Reason::new(ReasonKind::Irreproducible, "differs")),
        ..miner(5, hurts.clone(), 0.05, Vec::new())
    });
    miners.push(MinerEvidence {
        banned_until: Some(9),
        ..miner(6, hurts.clone(), 0.05, Vec::new())
    });
    miners.push(MinerEvidence {
        refused: Some(Reason::new(ReasonKind::NoAxon, "no axon")),
        after: Vec::new(),
        ..miner(7, Vec::new(), 0.0, Vec::new())
    });
    // Their aggregate (1.7) lowers the loss from 2.0.
    let evidence = window(miners, Vec::new());
    let stepping = ScoringParams {
        step_with_candidates: true,
        ..PARAMS
    };
    let unhelpful = ScoringParams {
        step_with_unhelpful: true,
        ..stepping.clone()
    };
    assert!(candidates(&evidence, &unhelpful).is_empty());
    assert!(measured(&evidence, &stepping).is_empty());
    assert_eq!(measured(&evidence, &unhelpful), vec![1, 2, 3]);
    let d = decide(&evidence, &unhelpful, &Averages::new());
    assert!(d.iter().all(|d| d.score == 0.0 && d.weight == 0.0), "{d:?}");
    assert!(aggregated(&evidence, &d, &stepping).is_empty());
    assert_eq!(aggregated(&evidence, &d, &unhelpful), vec![1, 2, 3]);
    // Not where their aggregate raises the loss, nor without step_with_candidates.
    let worse = WindowEvidence {
        aggregate: vec![2.05; 3],
        ..evidence.clone()
    };
    assert!(aggregated(&worse, &d, &unhelpful).is_empty());
    let alone = ScoringParams {
        step_with_candidates: false,
        ..unhelpful.clone()
    };
    assert!(measured(&evidence, &alone).is_empty());
    // Where one candidate helps, the candidates as before.
    let mut one = evidence.clone();
    one.miners[0].after = vec![1.8, 1.82, 1.79];
    assert_eq!(measured(&one, &unhelpful), vec![1]);
}

#[test]
fn averages_decay_for_absent_miners_and_restart_for_new_hotkeys_and_fraud() {
    let previous = Averages::from([
        (1, ("hotkey1".to_string(), 0.2)),
        (2, ("someone else".to_string(), 0.4)),
        (3, ("hotkey3".to_string(), 0.4)),
    ]);
    let evidence = window(
        vec![
            MinerEvidence {
                refused: Some(Reason::new(ReasonKind::Unreachable, "unreachable")),
                after: Vec::new(),
                ..miner(1, Vec::new(), 0.0, Vec::new())
            },
            miner(2, vec![1.9, 1.9, 1.9], 0.05, vec![1.75; 3]),
            MinerEvidence {
                fraud: Some(Reason::new(
                    ReasonKind::Inconsistent,
                    "payload is not the codec of its dense gradient",
                )),
                ..miner(3, vec![1.9; 3], 0.05, Vec::new())
            },
        ],
        Vec::new(),
    );
    let d = decide(&evidence, &PARAMS, &previous);
    assert!((d[0].moving_average - 0.1).abs() < 1e-12, "{:?}", d[0]);
    // uid 2 changed hands: the old hotkey's 0.4 is not inherited.
    assert!((d[1].moving_average - 0.0125).abs() < 1e-7, "{:?}", d[1]);
    // The fraud's 0.4 is gone at once.
    assert_eq!(d[2].moving_average, 0.0);
    assert!((d[0].weight + d[1].weight - 1.0).abs() < 1e-12);
    let bans = bans_after(&Bans::new(), &d, 5, &PARAMS);
    assert_eq!(bans, Bans::from([(3, ("hotkey3".to_string(), 15))]));
    // The ban ends after its last window; a new hotkey on the uid is not banned.
    assert!(bans_after(&bans, &[], 15, &PARAMS).is_empty());
    assert_eq!(bans_after(&bans, &[], 14, &PARAMS), bans);
}

#[test]
fn the_clip_norm_follows_the_majority_and_never_falls_below_the_reference() {
    let with_norms = |norms: &[f64]| -> Vec<MinerEvidence> {
        norms
            .iter()
            .enumerate()
            .map(|(i, &norm)| MinerEvidence {
                norm,
                ..miner(i as u16, vec![1.8; 3], 0.05, Vec::new())
            })
            .collect()
    };
    // Honest payloads carry error feedback (1.8 here); one amplified gradient does not move it.
    assert_eq!(clip_norm(&with_norms(&[1.8, 1.8, 1.9, 4.5]), 1.0), 1.8);
    // Tiny gradients cannot pull it under the reference.
    assert_eq!(clip_norm(&with_norms(&[0.1, 0.1, 0.1, 1.8]), 1.0), 1.0);
    assert_eq!(clip_norm(&[], 1.0), 1.0);
}

#[test]
fn each_parameter_group_has_its_own_clip_norm_and_scale_does_not_pay_across_groups() {
    // Group 1 is small: its honest gradients have small norms. A miner of group 1 that scales
    // its gradient up to group 0's norms is oversized against its own group's clip norm.
    let in_group = |uid: u16, group: usize, norm: f64| MinerEvidence {
        norm,
        group,
        ..miner(uid, vec![1.8; 3], 0.05, vec![1.9; 3])
    };
    let evidence = WindowEvidence {
        reference_group_norms: vec![1.0, 0.1],
        ..window(
            vec![
                in_group(1, 0, 2.0),
                in_group(2, 0, 2.1),
                in_group(3, 1, 0.2),
                in_group(4, 1, 0.21),
                in_group(5, 1, 2.0),
            ],
            Vec::new(),
        )
    };
    assert_eq!(evidence.clip_norms(), vec![2.0, 0.21]);
    let decisions = decide(&evidence, &PARAMS, &Averages::new());
    let verdict = |uid: u16| &decisions.iter().find(|d| d.uid == uid).unwrap().verdict;
    assert!(
        matches!(verdict(5), Verdict::Oversized { .. }),
        "{:?}",
        verdict(5)
    );
    assert!(!matches!(verdict(1), Verdict::Oversized { .. }));
    assert!(!matches!(verdict(3), Verdict::Oversized { .. }));
    // A group the task does not have clips to zero: the gradient cannot earn.
    let stray = WindowEvidence {
        reference_group_norms: vec![1.0, 0.1],
        ..window(vec![in_group(6, 7, 0.1)], Vec::new())
    };
    assert_eq!(stray.clip_of(&stray.miners[0]), 0.0);
    assert!(scoring_candidates_are_empty(&stray));
}

#[test]
fn groups_are_priced_by_the_reference_so_the_same_work_pays_the_same_in_any_group() {
    assert_eq!(group_values(&[]), Vec::<f64>::new());
    assert_eq!(group_values(&[0.02, 0.04]), vec![1.5, 0.75]);
    // A group the reference barely moved is worth at most 1 / MIN_GROUP_GAIN_FRACTION.
    assert_eq!(group_values(&[0.0, 0.08]), vec![4.0, 0.5]);
    assert_eq!(group_values(&[-0.01, -0.02]), vec![1.0, 1.0]);
    assert_eq!(group_values(&[f64::NAN, 0.02]), vec![1.0, 1.0]);
    // Two miners whose contributions are in proportion to their groups' gains score the same.
    let in_group = |uid: u16, group: usize, without: f32| MinerEvidence {
        group,
        ..miner(uid, vec![1.8; 3], 0.05, vec![without; 3])
    };
    let evidence = WindowEvidence {
        reference_group_norms: vec![1.0, 1.0],
        reference_group_gains: vec![0.02, 0.04],
        ..window(vec![in_group(1, 0, 1.72), in_group(2, 1, 1.74)], Vec::new())
    };
    let decisions = decide(&evidence, &PARAMS, &Averages::new());
    let (a, b) = (decisions[0].score, decisions[1].score);
    assert!(a > 0.0 && (a - b).abs() < 1e-12, "{a} {b}");
}

fn scoring_candidates_are_empty(evidence: &WindowEvidence) -> bool {
    candidates(evidence, &PARAMS).is_empty()
}

#[test]
fn lower_median_ignores_one_outlier() {
    assert_eq!(lower_median(&[1.0, 100.0]), Some(1.0));
    assert_eq!(lower_median(&[3.0, 1.0, 2.0]), Some(2.0));
    assert_eq!(lower_median(&[]), None);
}

/// Earners step at the whole outer rate. A step with candidates takes the first of the rules'
/// fractions at which their aggregate lowers the eval loss, never one whose loss is not finite;
/// where none does, the window stays.
#[test]
fn a_step_with_candidates_takes_the_first_fraction_of_the_rate_that_lowers_the_loss() {
    let helps = vec![1.8, 1.82, 1.79];
    // Three candidates that each add nothing (as in the test above), whose whole-rate aggregate
    // (2.05) raises the loss from 2.0.
    let miners: Vec<MinerEvidence> = (1..=3)
        .map(|uid| miner(uid, helps.clone(), 0.05, vec![1.65; 3]))
        .collect();
    let overshoots = WindowEvidence {
        aggregate: vec![2.05; 3],
        ..window(miners, Vec::new())
    };
    let scaled = ScoringParams {
        step_with_candidates: true,
        step_scales: vec![1.0, 0.5, 0.25],
        ..PARAMS
    };
    let d = decide(&overshoots, &scaled, &Averages::new());
    assert!(d.iter().all(|d| d.score == 0.0), "{d:?}");
    let at = |scaled_losses: Vec<Vec<f32>>| {
        let evidence = WindowEvidence {
            scaled: scaled_losses,
            ..overshoots.clone()
        };
        aggregate_step(&evidence, &d, &scaled)
    };
    let l = |x: f32| vec![x; 3];
    assert_eq!(at(vec![l(2.05), l(1.9), l(1.8)]), (vec![1, 2, 3], 0.5));
    assert_eq!(
        at(vec![l(2.05), l(f32::NAN), l(1.99)]),
        (vec![1, 2, 3], 0.25)
    );
    assert_eq!(at(vec![l(2.05), l(2.01), l(2.0)]), (Vec::new(), 1.0));
    // Without scales, the whole rate only, as before.
    let whole = ScoringParams {
        step_scales: Vec::new(),
        ..scaled.clone()
    };
    assert_eq!(aggregate_step(&overshoots, &d, &whole), (Vec::new(), 1.0));
    // Earners step at the whole rate, whatever the fractions measured.
    let earning = WindowEvidence {
        miners: (1..=3)
            .map(|uid| miner(uid, helps.clone(), 0.05, vec![1.8; 3]))
            .collect(),
        aggregate: vec![1.7; 3],
        scaled: vec![l(1.7), l(1.6), l(1.65)],
        ..overshoots.clone()
    };
    let d = decide(&earning, &scaled, &Averages::new());
    assert_eq!(aggregate_step(&earning, &d, &scaled), (vec![1, 2, 3], 1.0));
}

/// The fraction of the outer rate whose aggregate lowers the loss most: ties to the larger, never
/// one with a loss that is not finite. Leave-one-out scored there changes no step: earners still
/// step at the whole rate.
#[test]
fn the_fraction_of_the_rate_that_lowers_the_loss_most() {
    let base = vec![2.0; 3];
    let l = |x: f32| vec![x; 3];
    assert_eq!(best_scale(&base, &[l(2.05), l(1.9), l(1.8)]), Some(2));
    assert_eq!(best_scale(&base, &[l(1.7), l(1.7), l(1.8)]), Some(0));
    assert_eq!(best_scale(&base, &[l(2.1), l(f32::NAN), l(2.2)]), Some(0));
    assert_eq!(best_scale(&base, &[l(f32::INFINITY)]), None);
    assert_eq!(best_scale(&base, &[]), None);
    assert_eq!(best_scale(&base, &[vec![1.0; 2]]), None);
    let helps = vec![1.8, 1.82, 1.79];
    let earning = WindowEvidence {
        miners: (1..=3)
            .map(|uid| miner(uid, helps.clone(), 0.05, vec![1.8; 3]))
            .collect(),
        aggregate: l(1.6),
        scaled: vec![l(1.9), l(1.6), l(1.7)],
        ..window(Vec::new(), Vec::new())
    };
    let best = ScoringParams {
        step_with_candidates: true,
        step_scales: vec![1.0, 0.5, 0.25],
        score_at_best_scale: true,
        ..PARAMS
    };
    let d = decide(&earning, &best, &Averages::new());
    assert!(d.iter().all(|d| d.verdict == Verdict::Earned), "{d:?}");
    assert_eq!(aggregate_step(&earning, &d, &best), (vec![1, 2, 3], 1.0));
}
