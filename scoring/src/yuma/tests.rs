use super::*;

#[test]
fn agreeing_validators_split_emission_by_the_book() {
    let params = YumaParams {
        tempo: 10,
        ..Default::default()
    };
    let state = YumaState {
        bonds: vec![],
        validator_permit: vec![true, true, false, false],
        last_epoch_block: Some(10),
    };
    let weights = vec![
        vec![(2, 65535), (3, 21845)],
        vec![(2, 65535), (3, 21845)],
        vec![],
        vec![],
    ];
    let out = epoch(
        &params,
        &state,
        &EpochInput {
            block: 20,
            emission: 1_000_000,
            stake: &[300, 100, 0, 0],
            weights: &weights,
            last_update: &[19, 19, 0, 0],
            block_at_registration: &[0, 0, 0, 0],
            earliest_commit: None,
        },
    );
    assert_eq!(out.incentive[2], proportion_to_u16(0.75));
    assert_eq!(out.incentive[3], proportion_to_u16(0.25));
    assert_eq!(out.dividends[0], proportion_to_u16(0.75));
    assert_eq!(out.dividends[1], proportion_to_u16(0.25));
    // In the chain's fixed point the smaller validator's share of the dividends comes out a hair
    // under a quarter, and truncation to rao takes the unit.
    assert_eq!(out.emission, vec![375_000, 124_999, 375_000, 125_000]);
    assert_eq!(out.validator_trust[0], 65535);
    assert_eq!(out.validator_permit, vec![true, true, false, false]);
}

/// A validator that disagrees with the stake majority is clipped to consensus: its trust falls and
/// its dividends shrink below its stake share.
#[test]
fn a_dissenting_validator_is_clipped() {
    let params = YumaParams {
        tempo: 10,
        ..Default::default()
    };
    let state = YumaState {
        bonds: vec![],
        validator_permit: vec![true, true, false, false],
        last_epoch_block: Some(10),
    };
    let weights = vec![
        vec![(2, 65535), (3, 0)],
        vec![(2, 0), (3, 65535)],
        vec![],
        vec![],
    ];
    let out = epoch(
        &params,
        &state,
        &EpochInput {
            block: 20,
            emission: 1_000_000,
            stake: &[700, 300, 0, 0],
            weights: &weights,
            last_update: &[19, 19, 0, 0],
            block_at_registration: &[0, 0, 0, 0],
            earliest_commit: None,
        },
    );
    assert_eq!(out.consensus[2], 65535);
    assert_eq!(out.consensus[3], 0);
    assert_eq!(out.validator_trust[1], 0);
    assert_eq!(out.incentive[3], 0);
    assert_eq!(out.emission[1], 0);
    assert_eq!(out.emission[3], 0);
    assert_eq!(out.emission[0] + out.emission[2], 1_000_000);
}

/// The compact epoch (rows of permitted uids only) equals the full-matrix reference, bit for bit,
/// over several epochs of random subnets (so bonds and permits carry), in every Yuma variant;
/// some permitted uids fall inactive and some targets register between epochs.
#[test]
fn compact_rows_match_the_full_matrix() {
    for (variant, (yuma3, liquid)) in [(false, false), (true, false), (true, true)]
        .into_iter()
        .enumerate()
    {
        let params = YumaParams {
            tempo: 100,
            max_allowed_validators: 12,
            yuma3_enabled: yuma3,
            liquid_alpha_enabled: liquid,
            ..Default::default()
        };
        let (mut compact, mut full) = (YumaState::default(), YumaState::default());
        for k in 0..4u64 {
            let scenario = Scenario::random(64, 20, 10, 7 * variant as u64 + k);
            let block = 2_000 + 100 * k;
            let input = scenario.input(block, 1_000_000_000);
            let a = epoch_over(&params, &compact, &input, Rows::ThatCanCarryWeight);
            let b = epoch_over(&params, &full, &input, Rows::All);
            assert_eq!(a, b, "variant {variant}, epoch {k}");
            // The first epoch has no permits yet: its emission goes by stake.
            assert!(a.emission.iter().sum::<u64>() > 0);
            compact.advance(block, &a);
            full.advance(block, &b);
        }
    }
}

/// Stake below the threshold counts as zero: such a uid gets no permit however few others
/// compete for one.
#[test]
fn stake_below_the_threshold_earns_no_permit() {
    let params = YumaParams {
        tempo: 10,
        max_allowed_validators: 3,
        stake_threshold: 100,
        ..Default::default()
    };
    let weights = vec![vec![], vec![], vec![]];
    let out = epoch(
        &params,
        &YumaState::default(),
        &EpochInput {
            block: 10,
            emission: 1000,
            stake: &[500, 99, 0],
            weights: &weights,
            last_update: &[9, 9, 9],
            block_at_registration: &[0, 0, 0],
            earliest_commit: None,
        },
    );
    assert_eq!(out.validator_permit, vec![true, false, false]);
}

/// With no permits yet (first epoch), nobody's weights count: both sums are zero and there is no
/// active stake, so the emission goes by stake (as subtensor pays it), and the top-stake uids get
/// permits for the next epoch.
#[test]
fn first_epoch_has_no_permits() {
    let params = YumaParams {
        tempo: 10,
        max_allowed_validators: 1,
        ..Default::default()
    };
    let weights = vec![vec![(1, 65535)], vec![]];
    let out = epoch(
        &params,
        &YumaState::default(),
        &EpochInput {
            block: 10,
            emission: 1000,
            stake: &[5, 5],
            weights: &weights,
            last_update: &[9, 0],
            block_at_registration: &[0, 0],
            earliest_commit: None,
        },
    );
    assert_eq!(
        out.emission,
        vec![500, 500],
        "no weight counts: paid by stake"
    );
    assert_eq!(
        out.validator_permit,
        vec![false, true],
        "ties go to the higher uid"
    );
}
