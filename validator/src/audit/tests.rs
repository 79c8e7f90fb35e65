use super::*;

/// An audit checks the last segment and one of the others, each about equally often and
/// independently of the window before; a window of one segment is checked whole.
#[test]
fn an_audit_draws_one_earlier_segment_and_always_the_last() {
    assert_eq!(audited_segments(9, 1, 4, 0), Vec::<usize>::new());
    assert_eq!(audited_segments(9, 1, 4, 1), vec![0]);
    let mut counts = [0u32; 4];
    let mut repeats = 0;
    let mut before = None;
    for window in 0..4000 {
        let drawn = audited_segments(0xC0FFEE, 3, window, 5);
        assert_eq!(drawn.len(), 2);
        assert_eq!(drawn[1], 4, "the last segment is always checked");
        counts[drawn[0]] += 1;
        repeats += u32::from(before == Some(drawn[0]));
        before = Some(drawn[0]);
    }
    // 1000 expected each (standard deviation 27).
    assert!(counts.iter().all(|c| (880..1120).contains(c)), "{counts:?}");
    assert!(
        (880..1120).contains(&repeats),
        "{repeats} repeats of the window before's draw"
    );
    // Another validator's secret draws otherwise.
    assert!((0..20).any(|w| audited_segments(1, 3, w, 5) != audited_segments(2, 3, w, 5)));
}

#[test]
fn a_group_miners_artefacts_fit_only_over_its_group() {
    let spec =
        task::TaskSpec::from_toml_str(include_str!("../../../tasks/localnet-lm-groups.toml"))
            .unwrap();
    let engine = TaskEngine::new(spec);
    let n = engine.num_params();
    let (own, other) = (
        engine.groups().get(1).unwrap().range.clone(),
        engine.groups().get(0).unwrap().range.clone(),
    );
    let mut dense = vec![0.0f32; n];
    for i in own.clone() {
        dense[i] = ((i % 7) as f32 - 3.0) * 1e-3;
    }
    let residual: Vec<f32> = (0..n).map(|i| ((i % 5) as f32 - 2.0) * 1e-4).collect();
    let c = &engine.spec().compression;
    let layout = c.layout();
    let feedback = c.error_feedback as f32;
    let out = codec::compress_range(&dense, &residual, layout, feedback, own.clone());
    let residual_out = Digest(subnet_proto::digest(&codec::encode_dense(
        &out.residual_out,
    )));
    let (dense_bytes, residual_bytes) =
        (codec::encode_dense(&dense), codec::encode_dense(&residual));
    let check = |payload: &[u8], dense: &[u8], range: &std::ops::Range<usize>| {
        verify_artefacts(
            &engine,
            &residual_out,
            payload,
            (dense, &residual_bytes),
            range,
        )
    };
    assert_eq!(check(&out.payload, &dense_bytes, &own), Ok(dense.clone()));
    // It moved a parameter of a group it was not given (the rest of the model is frozen).
    let mut moved = dense.clone();
    moved[other.start] = 1e-3;
    let err = check(&out.payload, &codec::encode_dense(&moved), &own).unwrap_err();
    assert!(err.to_string().contains("outside its group"), "{err}");
    // A payload over another group than the one the window gave it.
    let elsewhere = codec::compress_range(&dense, &residual, layout, feedback, other.clone());
    assert!(check(&elsewhere.payload, &dense_bytes, &own).is_err());
    // The same artefacts read as another group's do not fit either.
    assert!(check(&out.payload, &dense_bytes, &other).is_err());
}

fn commitment(window: u64, residual_in: u8, from: u64, residual_out: u8) -> Claims {
    Claims {
        window,
        task_digest: [0; 32],
        checkpoint_digest: [0; 32],
        payload_digest: [0; 32],
        payload_len: 0,
        dense_digest: [0; 32],
        residual_in_digest: [residual_in; 32],
        residual_window: from,
        residual_out_digest: [residual_out; 32],
        group_capacity: 0,
        segments: Vec::new(),
        backend: String::new(),
    }
}

#[test]
fn the_residual_chain_follows_what_was_seen() {
    let zero = [0u8; 32];
    let mut ledger = ResidualLedger::default();
    ledger.record(3, "a", &commitment(10, 0, 0, 1));
    ledger.record(3, "a", &commitment(11, 1, 10, 2));
    let check = |c: &Claims, hotkey: &str| ledger.check(3, hotkey, c, &zero);
    let broken = |link: Link, needle: &str| match link {
        Link::Broken(reason) => assert!(reason.contains(needle), "{reason}"),
        other => panic!("{other:?}"),
    };
    // Continues window 11.
    assert_eq!(check(&commitment(12, 2, 11, 3), "a"), Link::Continues);
    // A zero residual always continues.
    assert_eq!(check(&commitment(12, 0, 0, 3), "a"), Link::Continues);
    // Another residual than window 11 left.
    broken(check(&commitment(12, 9, 11, 3), "a"), "is not the residual");
    // Skips window 11, which this validator saw.
    broken(check(&commitment(12, 1, 10, 3), "a"), "skips");
    // A source window this validator did not see must be shown to it, and audited.
    assert_eq!(
        check(&commitment(14, 7, 13, 3), "a"),
        Link::Unseen { from: 13 }
    );
    // Not from an earlier window.
    broken(check(&commitment(12, 7, 12, 3), "a"), "not before it");
    // Another hotkey on the uid starts a new chain: its source is unseen.
    assert_eq!(
        check(&commitment(12, 9, 11, 3), "b"),
        Link::Unseen { from: 11 }
    );
}

#[test]
fn a_group_capacity_takes_effect_in_the_window_after_it_is_declared() {
    let mut ledger = ResidualLedger::default();
    assert_eq!(ledger.group_capacity(3, "a"), None);
    let declaring = |window, capacity| Claims {
        group_capacity: capacity,
        ..commitment(window, 0, 0, 1)
    };
    ledger.record(3, "a", &declaring(10, 5000));
    assert_eq!(ledger.group_capacity(3, "a"), Some(5000));
    ledger.record(3, "a", &declaring(11, 9000));
    assert_eq!(ledger.group_capacity(3, "a"), Some(9000));
    // An older commitment recorded late does not change what is in effect.
    ledger.record(3, "a", &declaring(9, 1000));
    assert_eq!(ledger.group_capacity(3, "a"), Some(9000));
    // Another hotkey on the uid has none in effect yet.
    assert_eq!(ledger.group_capacity(3, "b"), None);
}

#[test]
fn audits_are_drawn_independently_at_one_in_a_period() {
    for period in [1u64, 2, 4, 7] {
        let draws: Vec<Vec<bool>> = (0..200u16)
            .map(|uid| (0..200u64).map(|w| audited(99, uid, w, period)).collect())
            .collect();
        let total = (200 * 200) as f64;
        let rate = draws.iter().flatten().filter(|a| **a).count() as f64 / total;
        let expected = 1.0 / period as f64;
        // Four standard errors of a binomial proportion.
        let bound = 4.0 * (expected * (1.0 - expected) / total).sqrt();
        assert!((rate - expected).abs() <= bound, "period {period}: {rate}");
        // A window right after an audited one is audited just as often: the schedule cannot
        // be read from the audits a miner has seen.
        let (mut after, mut audited_after) = (0usize, 0usize);
        for d in &draws {
            for w in 1..d.len() {
                if d[w - 1] {
                    after += 1;
                    audited_after += d[w] as usize;
                }
            }
        }
        let rate_after = audited_after as f64 / after as f64;
        let bound = 4.0 * (expected * (1.0 - expected) / after as f64).sqrt();
        assert!(
            (rate_after - expected).abs() <= bound,
            "period {period}: {rate_after} after an audit"
        );
    }
    assert!(!(0..10).any(|w| audited(99, 1, w, 0)));
    // Another secret draws other windows.
    let a: Vec<bool> = (0..64).map(|w| audited(1, 3, w, 4)).collect();
    let b: Vec<bool> = (0..64).map(|w| audited(2, 3, w, 4)).collect();
    assert_ne!(a, b);
}

/// A miner that bets on the schedule (honest in a window after one of its windows was
/// audited, lazy otherwise) is caught in its lazy windows as often as one lazy in every window:
/// each audit is drawn afresh.
#[test]
fn betting_on_the_audit_schedule_does_not_lower_the_chance_of_being_caught() {
    let (period, secrets) = (4u64, [11u64, 12]);
    let audited_by_any = |uid: u16, w: u64| secrets.iter().any(|&s| audited(s, uid, w, period));
    let (mut lazy, mut caught) = (0usize, 0usize);
    for uid in 0..300u16 {
        for w in 1..100u64 {
            if !audited_by_any(uid, w - 1) {
                lazy += 1;
                caught += audited_by_any(uid, w) as usize;
            }
        }
    }
    let rate = caught as f64 / lazy as f64;
    let q = scoring::economics::audit_chance_per_window(period, secrets.len() as u32);
    let bound = 4.0 * (q * (1.0 - q) / lazy as f64).sqrt();
    assert!((rate - q).abs() <= bound, "{rate} against {q}");
}
