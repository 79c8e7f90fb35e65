//! The proof of useful work against its adversaries: every attack is a test-only mode of the miner,
//! run beside four honest miners over real gRPC on a real local chain, with two validators of
//! different stake (the larger leads the model; the other recomputes and adopts it), each auditing
//! every miner in its first window and then each window with probability one half. Three subnets
//! run once each (`first`, `second` and `third`, three windows) and every test reads them: each
//! attacker ends with at most a quarter of the stake of the weakest honest miner (what it was paid,
//! less what was slashed), no honest miner is ever accused, the validators agree on every
//! checkpoint, and a replay confirms the follower's decisions.

use chain_client::LocalChain;
use miner::adversary::Adversary;
use scoring::Verdict;
use std::path::PathBuf;
use std::sync::OnceLock;
use subnet_cli::localnet::{self, LocalnetConfig, LocalnetReport, MinerKind};
use task::TaskSpec;
use validator::Rejection;

struct Run {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    report: LocalnetReport,
}

fn localnet_task() -> TaskSpec {
    TaskSpec::from_toml_str(subnet_cli::LOCALNET_TASK).unwrap()
}

fn run(spec: TaskSpec, adversaries: Vec<Adversary>) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let config = LocalnetConfig {
        dir: Some(dir.path().to_path_buf()),
        adversaries,
        audit_period: Some(2),
        ..LocalnetConfig::honest(spec, 4, 2, 3)
    };
    let report = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(localnet::run(config, |line| {
            println!("{}", localnet::format_line(line))
        }))
        .unwrap();
    Run {
        dir: dir.path().to_path_buf(),
        _dir: dir,
        report,
    }
}

/// Attacks that need no audit to fail, and attacks on the copy and assignment checks. The task
/// steps with `training.outer_agreement` on, under which a parameter that several gradients carry
/// steps further: a copy or a free ride that got into the aggregate would raise the count.
fn first() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| {
        let mut spec = localnet_task();
        spec.training.outer_agreement = 0.16;
        run(
            spec,
            vec![
                Adversary::Random,
                Adversary::Nan,
                Adversary::Copier,
                Adversary::NoisyCopier,
                Adversary::FreeRider,
                Adversary::Stale,
                Adversary::Amplified,
                Adversary::Silent,
            ],
        )
    })
}

/// Attacks on what the payload is: doing less, more or other work than assigned, or serving more
/// than the work gave. Localnet-lm carries the inner optimizer's state across windows
/// (`training.carry_moments`), so every audit re-executes segments from the state the checkpoint
/// carries.
fn second() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| {
        run(
            localnet_task(),
            vec![
                Adversary::Scaled,
                Adversary::Shrunk,
                Adversary::Lazy,
                Adversary::Heldout,
                Adversary::Mixer,
                Adversary::ResidualForger,
                Adversary::Sybil,
                Adversary::Sybil,
                Adversary::Splitter,
                Adversary::Splitter,
                Adversary::PublicTrainer,
            ],
        )
    })
}

/// The lead's checkpoints carry the state of a public training of every window the model moved in
/// (the follower adopted them only after recomputing them, state included:
/// `both_validators_score_the_checkpoint_the_miners_trained_from`).
#[test]
fn the_carried_optimizer_state_is_in_the_checkpoints() {
    let run = second();
    let lead =
        subnet_cli::model::RunModel::load(&localnet::validator_dir(&run.dir, 0), None).unwrap();
    let inner = lead.checkpoint.inner.as_ref().expect("a carried state");
    let steps = lead.engine.spec().training.inner_steps as u64;
    assert!(
        inner.steps > 0 && inner.steps.is_multiple_of(steps),
        "{} steps",
        inner.steps
    );
    assert!(inner.second.iter().all(|v| *v >= 0.0));
    assert!(inner.first.iter().any(|m| *m != 0.0));
}

/// Attacks on the audit itself: a miner that never answers an audit, one that launders a push
/// through the residual of a commitment nobody collected and one that hides a push in the backend
/// tolerance, beside an honest miner that drops off the network for its first window's audits and
/// comes back.
fn third() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| {
        run(
            localnet_task(),
            vec![
                Adversary::Staller,
                Adversary::Dropout,
                Adversary::Launderer,
                Adversary::Pusher,
            ],
        )
    })
}

fn uids_of(run: &Run, kind: MinerKind) -> Vec<u16> {
    run.report
        .final_stakes()
        .into_iter()
        .filter(|(_, k, _)| *k == kind)
        .map(|(uid, _, _)| uid)
        .collect()
}

fn stake_of(run: &Run, uid: u16) -> u64 {
    run.report
        .final_stakes()
        .into_iter()
        .find(|(u, _, _)| *u == uid)
        .unwrap()
        .2
}

/// Every verdict the validators gave `uid`, window by window.
fn verdicts(run: &Run, uid: u16) -> Vec<Verdict> {
    run.report
        .outcomes
        .iter()
        .flatten()
        .filter_map(|o| o.result(uid))
        .map(|r| r.verdict.clone())
        .collect()
}

/// The adversary ends with at most a quarter of the stake of the weakest honest miner.
fn earns_at_most_a_quarter(run: &Run, adversary: Adversary) {
    let weakest = uids_of(run, MinerKind::Honest)
        .into_iter()
        .map(|uid| stake_of(run, uid))
        .min()
        .unwrap();
    assert!(weakest > 0, "honest miners earned nothing");
    for uid in uids_of(run, MinerKind::Adversary(adversary)) {
        let stake = stake_of(run, uid);
        assert!(
            4 * stake <= weakest,
            "{adversary} (uid {uid}) holds {stake} rao, the weakest honest miner {weakest}; its verdicts: {:?}",
            verdicts(run, uid)
        );
    }
}

fn slashed(run: &Run, uid: u16) -> bool {
    let chain = LocalChain::open(&run.report.chain_path).unwrap();
    let metagraph = chain.metagraph_sync(run.report.netuid).unwrap();
    let hotkey = metagraph.by_uid(uid).unwrap().hotkey;
    chain
        .slashes(run.report.netuid)
        .unwrap()
        .iter()
        .any(|s| s.hotkey == hotkey)
}

fn the_adversary(run: &Run, adversary: Adversary) -> u16 {
    uids_of(run, MinerKind::Adversary(adversary))[0]
}

/// The adversary earns at most a quarter of the weakest honest miner and is slashed: its uid.
fn caught_and_slashed(run: &Run, adversary: Adversary) -> u16 {
    earns_at_most_a_quarter(run, adversary);
    let uid = the_adversary(run, adversary);
    assert!(slashed(run, uid), "{adversary} (uid {uid}) was not slashed");
    uid
}

/// No validator found `uid` earned in any window.
fn never_earned(run: &Run, uid: u16) {
    let all = verdicts(run, uid);
    assert!(all.iter().all(|v| !matches!(v, Verdict::Earned)), "{all:?}");
}

/// The verdicts each validator gave `uid`, window by window.
fn verdicts_by_validator(run: &Run, uid: u16) -> Vec<Vec<Verdict>> {
    run.report
        .outcomes
        .iter()
        .map(|o| {
            o.iter()
                .map(|w| w.result(uid).unwrap().verdict.clone())
                .collect()
        })
        .collect()
}

#[test]
fn random_noise_earns_nothing() {
    let run = first();
    earns_at_most_a_quarter(run, Adversary::Random);
}

#[test]
fn nan_is_refused() {
    let run = first();
    earns_at_most_a_quarter(run, Adversary::Nan);
    let uid = the_adversary(run, Adversary::Nan);
    for o in run.report.outcomes.iter().flatten() {
        assert!(
            matches!(
                o.result(uid).unwrap().rejection,
                Some(Rejection::Codec(_) | Rejection::NonFinite { .. })
            ),
            "{:?}",
            o.result(uid)
        );
    }
}

#[test]
fn a_copy_made_after_the_close_is_refused() {
    let run = first();
    earns_at_most_a_quarter(run, Adversary::Copier);
    let uid = the_adversary(run, Adversary::Copier);
    for o in run.report.outcomes.iter().flatten() {
        assert_eq!(
            o.result(uid).unwrap().rejection,
            Some(Rejection::OtherCommitment),
            "{:?}",
            o.result(uid)
        );
    }
}

#[test]
fn a_noisy_copy_of_the_last_window_earns_nothing() {
    earns_at_most_a_quarter(first(), Adversary::NoisyCopier);
}

#[test]
fn training_pages_it_was_not_assigned_earns_nothing() {
    let run = first();
    earns_at_most_a_quarter(run, Adversary::FreeRider);
    assert!(slashed(run, the_adversary(run, Adversary::FreeRider)));
}

/// The window's public training (the one whose end state the next checkpoint carries, which
/// anyone can run from the window seed) sent as a miner's own work: trained on pages it was not
/// assigned, from the right state.
#[test]
fn the_public_training_of_the_window_sent_as_work_earns_nothing() {
    let run = second();
    let uid = caught_and_slashed(run, Adversary::PublicTrainer);
    never_earned(run, uid);
}

#[test]
fn a_window_late_earns_nothing() {
    earns_at_most_a_quarter(first(), Adversary::Stale);
}

#[test]
fn an_amplified_gradient_is_refused_every_window() {
    let run = first();
    earns_at_most_a_quarter(run, Adversary::Amplified);
    let uid = the_adversary(run, Adversary::Amplified);
    // Too large for the clip norm wherever it is not caught by an audit or banned already.
    assert!(
        verdicts(run, uid).iter().all(|v| matches!(
            v,
            Verdict::Oversized { .. } | Verdict::Fraud { .. } | Verdict::Banned { .. }
        )),
        "{:?}",
        verdicts(run, uid)
    );
    never_earned(run, uid);
}

#[test]
fn a_silent_miner_earns_nothing() {
    let run = first();
    earns_at_most_a_quarter(run, Adversary::Silent);
    let uid = the_adversary(run, Adversary::Silent);
    assert!(
        run.report
            .outcomes
            .iter()
            .flatten()
            .all(|o| o.result(uid).unwrap().rejection == Some(Rejection::NotCommitted))
    );
}

#[test]
fn scale_under_the_norm_bound_is_caught_by_the_audit() {
    let run = second();
    earns_at_most_a_quarter(run, Adversary::Scaled);
    assert!(slashed(run, the_adversary(run, Adversary::Scaled)));
}

/// Sent shorter than the work gave, which leave-one-out scores higher wherever its direction
/// overshoots (`evaluate::tests::a_shrunk_gradient_scores_higher_in_leave_one_out`): the payload is
/// not the codec's of the re-executed window.
#[test]
fn a_shrunk_gradient_is_caught_by_the_audit() {
    let run = second();
    caught_and_slashed(run, Adversary::Shrunk);
}

#[test]
fn skipping_steps_is_caught_by_the_audit() {
    let run = second();
    earns_at_most_a_quarter(run, Adversary::Lazy);
    assert!(slashed(run, the_adversary(run, Adversary::Lazy)));
}

#[test]
fn training_on_the_heldout_split_is_caught_by_the_audit() {
    let run = second();
    earns_at_most_a_quarter(run, Adversary::Heldout);
    assert!(slashed(run, the_adversary(run, Adversary::Heldout)));
}

#[test]
fn mixing_in_other_miners_work_is_caught_by_the_audit() {
    let run = second();
    earns_at_most_a_quarter(run, Adversary::Mixer);
    assert!(slashed(run, the_adversary(run, Adversary::Mixer)));
}

#[test]
fn a_forged_residual_breaks_the_chain() {
    let run = second();
    earns_at_most_a_quarter(run, Adversary::ResidualForger);
    let uid = the_adversary(run, Adversary::ResidualForger);
    // Refused for its size where no earlier commitment was seen; from the second window on the
    // residual it claims contradicts what its own last commitment left.
    let later: Vec<Verdict> = run
        .report
        .outcomes
        .iter()
        .flat_map(|o| {
            o[1..]
                .iter()
                .map(|w| w.result(uid).unwrap().verdict.clone())
        })
        .collect();
    assert!(
        later.iter().all(
            |v| matches!(v, Verdict::Fraud { reason } if reason.contains("residual"))
                || matches!(v, Verdict::Banned { .. })
        ),
        "{later:?}"
    );
    assert!(slashed(run, uid));
}

#[test]
fn two_identities_sharing_one_training_run_earn_nothing() {
    let run = second();
    earns_at_most_a_quarter(run, Adversary::Sybil);
}

/// Splitting one run's gradient into halves with disjoint supports escapes the near-duplicate check
/// (and under the per-parameter mean each half would move its parameters fully), but each half must
/// be its identity's own assigned training: the audit re-executes it and slashes both.
#[test]
fn two_identities_splitting_one_training_run_earn_nothing_and_are_slashed() {
    let run = second();
    earns_at_most_a_quarter(run, Adversary::Splitter);
    for uid in uids_of(run, MinerKind::Adversary(Adversary::Splitter)) {
        assert!(
            verdicts(run, uid)
                .iter()
                .any(|v| matches!(v, Verdict::Fraud { .. } | Verdict::Banned { .. })),
            "uid {uid}: {:?}",
            verdicts(run, uid)
        );
        assert!(slashed(run, uid), "uid {uid}");
    }
}

#[test]
fn a_miner_that_stalls_its_audits_earns_nothing_and_is_slashed_after_the_grace() {
    let run = third();
    let uid = caught_and_slashed(run, Adversary::Staller);
    // Every validator audits its first window; it answers with the commitment and then nothing:
    // withheld while the grace (two windows) runs, fraud when it has run out.
    for verdicts in verdicts_by_validator(run, uid) {
        assert!(
            matches!(&verdicts[..], [Verdict::Withheld { .. }, Verdict::Withheld { .. }, Verdict::Fraud { reason }] if reason.kind == scoring::ReasonKind::AuditUnresolved),
            "{verdicts:?}"
        );
    }
}

#[test]
fn a_push_laundered_through_an_uncollected_commitment_is_caught_and_slashed() {
    let run = third();
    let uid = caught_and_slashed(run, Adversary::Launderer);
    // Its last window claims the residual of a commitment no validator collected: each asks for
    // it, audits its window, and finds the dense gradient it names is not that window's training.
    for verdicts in verdicts_by_validator(run, uid) {
        let last = verdicts.last().unwrap();
        assert!(
            matches!(last, Verdict::Fraud { reason } if reason.text.starts_with("window ") && reason.contains("re-executed")),
            "{last:?}"
        );
    }
}

#[test]
fn a_push_hidden_in_the_backend_tolerance_is_caught_and_slashed() {
    let run = third();
    let uid = caught_and_slashed(run, Adversary::Pusher);
    // Every validator audits its first window, whose last segment it pushed by 2% of the
    // segment's movement: twice what the tolerance of a GPU's training allows for.
    for verdicts in verdicts_by_validator(run, uid) {
        let first = verdicts.first().unwrap();
        assert!(
            matches!(first, Verdict::Fraud { reason } if reason.kind == scoring::ReasonKind::Irreproducible && reason.contains("segment 4")),
            "{first:?}"
        );
    }
}

/// The replay runs the same window steps on the record: the audits of earlier windows (unresolved
/// ones asked again, uncollected commitments a residual came from) are re-run from the recorded
/// artefacts, and the withheld pay and the frauds come out as recorded.
#[test]
fn a_replay_confirms_the_audits_of_earlier_windows() {
    let run = third();
    for i in 0..2 {
        let dir = localnet::validator_dir(&run.dir, i);
        let report = validator::replay::replay(&dir, None, |_| {}).unwrap();
        assert_eq!(report.windows.len(), 3, "validator {i}");
        let (store, _) = validator::DataDir::open_existing(&dir).unwrap();
        let (records, _) = store.records().unwrap();
        assert!(
            records
                .iter()
                .any(|r| r.audits.iter().any(|a| a.window.is_some())),
            "validator {i} recorded no audit of an earlier window"
        );
        assert!(
            records.iter().any(|r| !r.unseen_sources.is_empty()),
            "validator {i} recorded no uncollected commitment"
        );
    }
}

#[test]
fn an_honest_miner_that_drops_off_for_a_window_loses_that_windows_pay_not_its_stake() {
    let run = third();
    let uid = the_adversary(run, Adversary::Dropout);
    assert!(!slashed(run, uid));
    for verdicts in verdicts_by_validator(run, uid) {
        // Its first window's audit could not complete: withheld. Back the next window, it serves
        // that window's artefacts, the audit passes and it earns as before.
        assert!(
            matches!(verdicts[0], Verdict::Withheld { .. }),
            "{verdicts:?}"
        );
        assert!(
            verdicts[1..]
                .iter()
                .all(|v| matches!(v, Verdict::Earned | Verdict::NoContribution { .. })),
            "{verdicts:?}"
        );
        assert!(
            verdicts[1..].iter().any(|v| matches!(v, Verdict::Earned)),
            "{verdicts:?}"
        );
    }
    assert!(stake_of(run, uid) > 0);
}

#[test]
fn no_honest_miner_is_ever_accused() {
    for run in [first(), second(), third()] {
        for uid in uids_of(run, MinerKind::Honest) {
            for v in verdicts(run, uid) {
                assert!(
                    matches!(
                        v,
                        Verdict::Earned | Verdict::NoContribution { .. } | Verdict::Harmful { .. }
                    ),
                    "honest uid {uid}: {v:?}"
                );
            }
            assert!(stake_of(run, uid) > 0);
            assert!(!slashed(run, uid));
        }
    }
}

#[test]
fn both_validators_score_the_checkpoint_the_miners_trained_from() {
    for run in [first(), second()] {
        let (lead, follower) = (&run.report.outcomes[0], &run.report.outcomes[1]);
        for (l, f) in lead.iter().zip(follower) {
            assert_eq!(
                l.checkpoint_before, f.checkpoint_before,
                "window {}",
                l.window
            );
            if l.window > run.report.windows[0].window {
                let adopted = f.adopted.as_ref();
                // The follower adopts the lead's checkpoint after recomputing it, unless its own
                // aggregate already was the same.
                assert!(
                    adopted.is_none_or(|a| a.verified && a.digest == l.checkpoint_before),
                    "window {}: {adopted:?}",
                    l.window
                );
            }
        }
        let losses: Vec<f64> = run.report.windows.iter().map(|w| w.heldout_loss).collect();
        assert!(
            losses.windows(2).all(|w| w[1] < w[0]) && losses[0] < run.report.initial_loss,
            "the model did not learn: {} then {losses:?}",
            run.report.initial_loss
        );
    }
}

#[test]
fn a_replay_confirms_the_followers_decisions() {
    let run = first();
    let dir = localnet::validator_dir(&run.dir, 1);
    let report = validator::replay::replay(&dir, None, |_| {}).unwrap();
    assert_eq!(report.windows.len(), 3);
    assert!(report.losses_checked > 500, "{}", report.losses_checked);
    // What if the moving average had no memory: the weights follow the last window alone.
    let what_if = scoring::ScoringParams {
        moving_average: 1.0,
        ..localnet_task().scoring.params()
    };
    let report = validator::replay::replay(&dir, Some(what_if), |_| {}).unwrap();
    let last = report.windows.last().unwrap();
    for (d, w) in last.decisions.iter().zip(last.what_if.as_ref().unwrap()) {
        assert_eq!(d.score, w.score, "uid {}", d.uid);
        assert_eq!(w.moving_average, w.score, "uid {}", d.uid);
    }
}

#[test]
fn honest_miners_receive_the_emission_and_every_adversary_reaches_zero_weight() {
    for run in [first(), second()] {
        let report = subnet_cli::report::build("localnet-lm", &run.report).unwrap();
        let share = report.honest_emission_share.unwrap();
        assert!(share >= 0.9, "honest miners received {share}");
        for m in report.miners.iter().filter(|m| m.kind != "honest") {
            assert!(
                m.zero_weight_since.is_some() && m.caught.is_some(),
                "{} (uid {}): {m:?}",
                m.kind,
                m.uid
            );
        }
    }
    // Every validator audits a hotkey in the first window it contributes to, so a miner that
    // cheats from the start is caught there, whatever the validators' audit secrets drew.
    let run = second();
    let report = subnet_cli::report::build("localnet-lm", &run.report).unwrap();
    let first_window = run.report.windows[0].window;
    for m in report.miners.iter().filter(|m| m.kind != "honest") {
        assert_eq!(
            m.caught.as_ref().map(|c| c.window),
            Some(first_window),
            "{} (uid {}): {m:?}",
            m.kind,
            m.uid
        );
    }
}
