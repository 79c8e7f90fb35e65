//! A data directory written by the validator before its window became one set of shared steps
//! (`validator::window`) and before the audit tolerance, the evaluation step and the aggregation's
//! bounds joined `ScoringParams`: a two-validator localnet of the wine-quality task with an audit
//! every window and a lazy miner among honest ones (`tests/fixtures/before-window-steps`). Today's
//! replay must confirm every window of it, bit for bit.

use std::path::Path;

fn fixture() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/before-window-steps"
    ))
}

#[test]
fn a_directory_written_before_the_window_steps_replays_bit_for_bit() {
    let report = validator::replay::replay(fixture(), None, |_| {}).unwrap();
    assert!(report.windows.len() >= 3, "{}", report.windows.len());
    assert!(report.losses_checked > 100, "{}", report.losses_checked);
    let (store, _) = validator::DataDir::open_existing(fixture()).unwrap();
    let (records, _) = store.records().unwrap();
    assert!(records.iter().any(|r| !r.audits.is_empty()));
    for (record, replayed) in records.iter().zip(&report.windows) {
        if record.weights.error.is_none() {
            assert_eq!(
                replayed.weights.clone().unwrap(),
                (record.weights.uids.clone(), record.weights.values.clone())
            );
        }
    }
}

#[test]
fn its_records_take_the_later_rules_from_their_task() {
    let (store, task) = validator::DataDir::open_existing(fixture()).unwrap();
    let spec = task::TaskSpec::from_toml_str(&task).unwrap();
    let (records, _) = store.records().unwrap();
    // Leave-one-out at the applied step came after them: they read the uniform step they used.
    let then = scoring::ScoringParams {
        leave_one_out: scoring::LeaveOneOut::Uniform,
        step_with_candidates: false,
        copy_beside_reference: false,
        step_scales: Vec::new(),
        step_with_unhelpful: false,
        score_at_best_scale: false,
        ..spec.scoring.params()
    };
    for record in &records {
        assert_eq!(record.scoring, then);
    }
}

/// The audit tolerance is a scoring rule a what-if varies: the lazy miner (uid 4), caught in the
/// first window by an audit that found its dense gradient 64% away from the re-execution, is not
/// a fraud under a tolerance above that, while honest miners, whose CPU audits reproduce bit for
/// bit, stay clean under a tolerance of zero.
#[test]
fn a_what_if_judges_the_recorded_audits_under_another_tolerance() {
    let (store, _) = validator::DataDir::open_existing(fixture()).unwrap();
    let (records, _) = store.records().unwrap();
    let recorded = records[0].scoring.clone();
    let lazy = 4;
    let audited_lazily = |w: usize| {
        records[w]
            .audits
            .iter()
            .find(|a| a.uid == lazy)
            .and_then(|a| a.relative_difference)
    };
    let difference = audited_lazily(0).expect("the lazy miner is audited in the first window");
    assert!(difference > recorded.spot_check_tolerance, "{difference}");
    let fraud = |d: &scoring::MinerDecision| matches!(d.verdict, scoring::Verdict::Fraud { .. });

    let lenient = scoring::ScoringParams {
        spot_check_tolerance: difference * 2.0,
        ..recorded.clone()
    };
    let report = validator::replay::replay(fixture(), Some(lenient), |_| {}).unwrap();
    let first = &report.windows[0];
    let decision = |ds: &[scoring::MinerDecision]| ds.iter().find(|d| d.uid == lazy).cloned();
    assert!(fraud(&decision(&first.decisions).unwrap()));
    assert!(!fraud(&decision(first.what_if.as_ref().unwrap()).unwrap()));

    let strict = scoring::ScoringParams {
        spot_check_tolerance: 0.0,
        ..recorded
    };
    let report = validator::replay::replay(fixture(), Some(strict), |_| {}).unwrap();
    for w in &report.windows {
        for (d, what_if) in w.decisions.iter().zip(w.what_if.as_ref().unwrap()) {
            if d.uid != lazy {
                assert_eq!(
                    d.verdict, what_if.verdict,
                    "window {} uid {}",
                    w.window, d.uid
                );
            }
        }
    }
}

/// A record names the backend it was measured on, and a replay on another one does not pass its
/// bits off as a fraud: a window measured on a GPU (`validator run --device cuda:0`), whose losses
/// differ from the CPU's in the last bits, fails on the CPU with both backends named.
#[test]
fn a_record_measured_on_a_gpu_is_not_confirmed_on_the_cpu() {
    let copy = tempfile::tempdir().unwrap();
    let (store, task) = validator::DataDir::open_existing(fixture()).unwrap();
    let (mut records, _) = store.records().unwrap();
    records[0].evaluator = "cuda:0".into();
    let loss = &mut records[0].evidence.base[0];
    *loss = f32::from_bits(loss.to_bits() + 1);
    let blobs = fixture().join("blobs");
    let target = copy.path().join("blobs");
    std::fs::create_dir_all(&target).unwrap();
    for entry in std::fs::read_dir(&blobs).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), target.join(entry.file_name())).unwrap();
    }
    let gpu = validator::DataDir::open(copy.path(), &task).unwrap();
    for record in &records {
        gpu.append_record(record).unwrap();
    }
    drop(gpu);
    let error = validator::replay::replay(copy.path(), None, |_| {}).unwrap_err();
    let validator::replay::ReplayError::AcrossHosts { recorded, here, .. } = &error else {
        panic!("{error}");
    };
    assert_eq!(recorded, "cuda:0");
    assert_eq!(here, task::device::cpu_backend());
    assert!(error.to_string().contains("--device"), "{error}");
}
