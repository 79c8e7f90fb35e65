//! Null consensus, the other epoch of newer subtensor runtimes (`SubnetEpochConsensus::Null`): no
//! stake-weighted median. The permitted validator with the most stake (ties to the lower uid)
//! decides alone: its weight row, as stored, splits the miners' half of the emission; the
//! validators' half goes to the permitted validators in proportion to their stake, active or not.
//! A winner with no row, or with a row set before one of its targets registered, shares the
//! miners' half equally among every uid; with no validator stake at all, miners take the whole
//! emission. Bonds are left as they were, so that a subnet can switch back to Yuma.

use super::*;

/// One Null-consensus epoch (`params`' activity cutoff, stake threshold and validator count apply
/// as in Yuma).
pub fn null_epoch(params: &YumaParams, state: &YumaState, input: &EpochInput<'_>) -> EpochOutput {
    let n = input.uids();
    let active = activity(params, input);
    let permitted = validator_stake(
        input.stake,
        |i| state.validator_permit.get(i) == Some(&true),
        params.stake_threshold,
    );
    let winner = winner(&permitted);
    let miner_shares = winner
        .and_then(|w| winner_row(input, w))
        .unwrap_or_else(|| vec![1; n]);

    let validator_total: u128 = permitted.iter().sum();
    let to_validators = if validator_total == 0 {
        0
    } else {
        input.emission / 2
    };
    let miner_pay = apportion(&miner_shares, input.emission - to_validators);
    let validator_pay = apportion(&permitted, to_validators);
    let incentive = proportions(&miner_shares);
    let stake = normalized_stake(params, input.stake);
    EpochOutput {
        active,
        consensus: incentive.clone(),
        incentive,
        dividends: proportions(&permitted),
        validator_trust: (0..n)
            .map(|i| if Some(i) == winner { u16::MAX } else { 0 })
            .collect(),
        validator_permit: fm::is_topk_nonzero(&stake, params.max_allowed_validators as usize),
        bonds: (0..n)
            .map(|i| {
                let mut row = state.bonds.get(i).cloned().unwrap_or_default();
                row.resize(n, 0);
                row
            })
            .collect(),
        emission: miner_pay
            .iter()
            .zip(&validator_pay)
            .map(|(m, v)| m + v)
            .collect(),
    }
}

/// The stake each uid counts with for Null consensus: its stake where it held a permit (`permit`)
/// and reaches `threshold`, else nothing.
pub fn validator_stake(stake: &[u64], permit: impl Fn(usize) -> bool, threshold: u64) -> Vec<u128> {
    stake
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            if permit(i) && s >= threshold {
                u128::from(s)
            } else {
                0
            }
        })
        .collect()
}

/// The validator whose row decides a Null epoch: the most counted stake (`validator_stake`), ties
/// to the lower uid; None when no validator counts any.
pub fn winner(counted: &[u128]) -> Option<usize> {
    (0..counted.len())
        .filter(|&i| counted[i] > 0)
        .max_by(|&a, &b| counted[a].cmp(&counted[b]).then(b.cmp(&a)))
}

/// The winner's row as shares per uid, or None when it is empty or stale (set, or committed, no
/// later than a target registered: the target is someone else now). Its own entry counts for
/// nothing.
fn winner_row(input: &EpochInput<'_>, winner: usize) -> Option<Vec<u128>> {
    let n = input.uids();
    let set_at = input
        .earliest_commit
        .map_or(input.last_update[winner], |c| {
            c[winner].min(input.last_update[winner])
        });
    let mut shares = vec![0u128; n];
    for &(j, w) in &input.weights[winner] {
        let j = j as usize;
        if j >= n || j == winner || w == 0 {
            continue;
        }
        if set_at <= input.block_at_registration[j] {
            return None;
        }
        shares[j] += u128::from(w);
    }
    shares.iter().any(|&s| s > 0).then_some(shares)
}

/// `budget` split in proportion to `shares`, to the unit: floors first, then one more unit to each
/// of the largest remainders (ties to the lower uid), so that the parts add up to `budget`.
fn apportion(shares: &[u128], budget: u64) -> Vec<u64> {
    let total: u128 = shares.iter().sum();
    if total == 0 {
        return vec![0; shares.len()];
    }
    let exact: Vec<(u128, u128)> = shares
        .iter()
        .map(|&s| {
            let product = s * u128::from(budget);
            (product / total, product % total)
        })
        .collect();
    let mut paid: Vec<u64> = exact.iter().map(|&(floor, _)| floor as u64).collect();
    let left = budget - paid.iter().sum::<u64>();
    let mut order: Vec<usize> = (0..shares.len()).filter(|&i| shares[i] > 0).collect();
    order.sort_by(|&a, &b| exact[b].1.cmp(&exact[a].1).then(a.cmp(&b)));
    for &i in order.iter().take(left as usize) {
        paid[i] += 1;
    }
    paid
}

/// Each share over the total, as a u16 proportion (floor).
fn proportions(shares: &[u128]) -> Vec<u16> {
    let total: u128 = shares.iter().sum();
    shares
        .iter()
        .map(|&s| (s * 65535).checked_div(total).unwrap_or(0) as u16)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two permitted validators (uids 0 and 1) with `stakes`, two miners (2 and 3), every weight
    /// set at block 10 after registering at 0.
    fn epoch(stakes: [u64; 2], weights: Vec<Vec<(u16, u16)>>, emission: u64) -> EpochOutput {
        let params = YumaParams {
            stake_threshold: 0,
            ..YumaParams::default()
        };
        let state = YumaState {
            bonds: vec![vec![0, 0, 7, 0]; 2],
            validator_permit: vec![true, true, false, false],
            last_epoch_block: Some(0),
        };
        let stake = [stakes[0], stakes[1], 0, 0];
        null_epoch(
            &params,
            &state,
            &EpochInput {
                // Long after every uid's last update: activity does not matter.
                block: 1_000_000,
                emission,
                stake: &stake,
                weights: &weights,
                last_update: &[10; 4],
                block_at_registration: &[0; 4],
                earliest_commit: None,
            },
        )
    }

    #[test]
    fn the_top_stake_row_pays_miners_and_stake_pays_validators() {
        let weights = vec![vec![(2, 3), (3, 1)], vec![(3, 65535)], vec![], vec![]];
        let out = epoch([300, 100], weights, 1_000_000);
        assert_eq!(out.emission, vec![375_000, 125_000, 375_000, 125_000]);
        assert!(!out.active[0]);
        assert_eq!(out.validator_trust, vec![u16::MAX, 0, 0, 0]);
        assert_eq!(out.bonds[0], vec![0, 0, 7, 0]);
    }

    #[test]
    fn a_tie_goes_to_the_lower_uid() {
        let weights = vec![vec![(2, 1)], vec![(3, 1)], vec![], vec![]];
        let out = epoch([100, 100], weights, 1_000_000);
        assert_eq!(out.emission[2], 500_000);
        assert_eq!(out.emission[3], 0);
    }

    #[test]
    fn an_empty_winner_row_shares_the_miner_half_equally() {
        // The other validator's row does not stand in for the winner's.
        let weights = vec![vec![], vec![(3, 65535)], vec![], vec![]];
        let out = epoch([300, 100], weights, 1_000_000);
        assert_eq!(
            out.emission,
            vec![125_000 + 375_000, 125_000 + 125_000, 125_000, 125_000]
        );
    }

    #[test]
    fn a_row_set_before_its_target_registered_shares_equally() {
        // Subtensor's rule, and an exposure: a uid that (re)registers after the winner's last
        // weights makes the epoch pay every uid alike, idle ones included, until the winner sets
        // weights again.
        let weights = vec![vec![(2, 65535)], vec![], vec![], vec![]];
        let params = YumaParams {
            stake_threshold: 0,
            ..YumaParams::default()
        };
        let state = YumaState {
            bonds: Vec::new(),
            validator_permit: vec![true, true, false, false],
            last_epoch_block: Some(0),
        };
        let out = null_epoch(
            &params,
            &state,
            &EpochInput {
                block: 100,
                emission: 1_000_000,
                stake: &[300, 100, 0, 0],
                weights: &weights,
                last_update: &[10; 4],
                block_at_registration: &[0, 0, 20, 0],
                earliest_commit: None,
            },
        );
        assert_eq!(out.emission[2], 125_000);
        assert_eq!(out.emission[3], 125_000);
    }

    #[test]
    fn without_stake_miners_take_everything_equally() {
        let out = epoch(
            [0, 0],
            vec![vec![(2, 1)], vec![], vec![], vec![]],
            1_000_000,
        );
        assert_eq!(out.emission, vec![250_000; 4]);
    }

    #[test]
    fn the_parts_add_up_to_the_emission() {
        let weights = vec![vec![(2, 65534), (3, 1)], vec![], vec![], vec![]];
        for budget in [0, 1, 3, 131_071, 1_000_003, u64::MAX / 4] {
            let out = epoch([300, 101], weights.clone(), budget);
            let paid: u128 = out.emission.iter().map(|&e| u128::from(e)).sum();
            assert_eq!(paid, u128::from(budget));
            assert_eq!(out.emission[0] + out.emission[1], budget / 2);
        }
    }
}
