//! Yuma consensus, one epoch, as subtensor runs it (original Yuma). Plain f64 over ndarray; the chain
//! uses fixed point, and results agree to well below one u16 step before the final conversion.
//! Step numbers refer to the epoch walk-through in REFERENCE.md.

use ndarray::{Array1, Array2, Axis};
use serde::{Deserialize, Serialize};

/// Hyperparameters in the chain's own integer units.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct YumaParams {
    pub tempo: u64,
    /// Consensus majority, u16 over 65535.
    pub kappa: u16,
    /// Bonds EMA keep-fraction per million: a = 1 - bonds_moving_average / 1e6.
    pub bonds_moving_average: u64,
    /// u16 over 65535: how far bond weights move from the raw weight toward the clipped one.
    pub bonds_penalty: u16,
    pub max_allowed_validators: u16,
    pub activity_cutoff: u64,
    /// Yuma3: bonds are per-entry EMAs of bond weights, kept as proportions.
    pub yuma3_enabled: bool,
    /// Yuma3 with liquid alpha: the EMA rate of each bond depends on how far the weight is from
    /// consensus (u16 over 65535 bounds, steepness over 100).
    pub liquid_alpha_enabled: bool,
    pub alpha_low: u16,
    pub alpha_high: u16,
    pub alpha_sigmoid_steepness: i64,
}

impl Default for YumaParams {
    fn default() -> Self {
        Self {
            tempo: 360,
            kappa: 32767,
            bonds_moving_average: 900_000,
            bonds_penalty: 65535,
            max_allowed_validators: 128,
            activity_cutoff: 5000,
            yuma3_enabled: false,
            liquid_alpha_enabled: false,
            alpha_low: 45875,
            alpha_high: 58982,
            alpha_sigmoid_steepness: 1000,
        }
    }
}

/// What carries from one epoch to the next.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct YumaState {
    /// Dense n x n bonds as stored: column max-upscaled u16 (original Yuma) or proportions as u16
    /// (Yuma3).
    pub bonds: Vec<Vec<u16>>,
    pub validator_permit: Vec<bool>,
    pub last_epoch_block: Option<u64>,
}

pub struct EpochInput<'a> {
    pub block: u64,
    pub emission: u64,
    pub stake: &'a [u64],
    /// Sparse rows as stored on chain: (destination uid, u16 weight).
    pub weights: &'a [Vec<(u16, u16)>],
    pub last_update: &'a [u64],
    pub block_at_registration: &'a [u64],
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochOutput {
    #[serde(skip)]
    pub active: Vec<bool>,
    pub consensus: Vec<u16>,
    pub incentive: Vec<u16>,
    pub dividends: Vec<u16>,
    pub validator_trust: Vec<u16>,
    pub validator_permit: Vec<bool>,
    pub bonds: Vec<Vec<u16>>,
    pub emission: Vec<u64>,
}

/// Stored u16 form of a proportion: floor(x * 65535), saturating.
pub fn proportion_to_u16(x: f64) -> u16 {
    (x * 65535.0).clamp(0.0, 65535.0) as u16
}

/// Scales so the largest entry is 65535, rounding to nearest (subtensor's max-upscale).
pub fn max_upscale_to_u16(x: &[f64]) -> Vec<u16> {
    let max = x.iter().cloned().fold(0.0, f64::max);
    if max <= 0.0 {
        return vec![0; x.len()];
    }
    x.iter()
        .map(|&v| (v / max * 65535.0).round().clamp(0.0, 65535.0) as u16)
        .collect()
}

fn normalize(v: &mut Array1<f64>) {
    let sum = v.sum();
    if sum > 0.0 {
        *v /= sum;
    }
}

fn normalize_rows(m: &mut Array2<f64>) {
    for mut row in m.rows_mut() {
        let sum = row.sum();
        if sum > 0.0 {
            row /= sum;
        }
    }
}

fn normalize_columns(m: &mut Array2<f64>) {
    for mut col in m.columns_mut() {
        let sum = col.sum();
        if sum > 0.0 {
            col /= sum;
        }
    }
}

/// Stake-weighted median with majority `kappa` (step 6): the largest w such that the stake of
/// entries >= w is at least kappa. Only entries with positive stake take part; stake is renormalized
/// over them.
pub fn weighted_median(stake: &[f64], scores: &[f64], kappa: f64) -> f64 {
    let mut pairs: Vec<(f64, f64)> = stake
        .iter()
        .zip(scores)
        .filter(|(s, _)| **s > 0.0)
        .map(|(&s, &w)| (s, w))
        .collect();
    let total: f64 = pairs.iter().map(|p| p.0).sum();
    if total <= 0.0 {
        return 0.0;
    }
    pairs.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut cumulative = 0.0;
    let mut i = 0;
    while i < pairs.len() {
        let value = pairs[i].1;
        while i < pairs.len() && pairs[i].1 == value {
            cumulative += pairs[i].0 / total;
            i += 1;
        }
        // Tolerance for the f64 sum of stakes that are exactly kappa in fixed point.
        if cumulative >= kappa - 1e-12 {
            return value;
        }
    }
    0.0
}

/// Column-wise weighted median (step 6) over a dense matrix.
pub fn weighted_median_columns(stake: &[f64], weights: &Array2<f64>, kappa: f64) -> Vec<f64> {
    weights
        .columns()
        .into_iter()
        .map(|col| weighted_median(stake, &col.to_vec(), kappa))
        .collect()
}

/// Clips each column to its consensus (step 7).
pub fn clip_columns(weights: &Array2<f64>, consensus: &[f64]) -> Array2<f64> {
    let mut clipped = weights.clone();
    for (mut col, &c) in clipped.columns_mut().into_iter().zip(consensus) {
        col.mapv_inplace(|w| w.min(c));
    }
    clipped
}

/// One epoch. `state` holds the previous epoch's permits and bonds (shorter vectors are padded, as
/// when the subnet grew).
pub fn epoch(params: &YumaParams, state: &YumaState, input: &EpochInput<'_>) -> EpochOutput {
    let n = input.stake.len();
    assert!(
        input.weights.len() == n
            && input.last_update.len() == n
            && input.block_at_registration.len() == n,
        "epoch input vectors must all have one entry per uid"
    );
    let kappa = params.kappa as f64 / 65535.0;

    // Step 1: activity.
    let active: Vec<bool> = (0..n)
        .map(|i| input.last_update[i] + params.activity_cutoff >= input.block)
        .collect();

    // Step 2: stake, normalized.
    let mut stake = Array1::from_iter(input.stake.iter().map(|&s| s as f64));
    normalize(&mut stake);

    // Step 3: new permits are the top-k nonzero stakes (ties to the higher uid); this epoch uses the
    // previous epoch's permits.
    let mut by_stake: Vec<usize> = (0..n).filter(|&i| input.stake[i] > 0).collect();
    by_stake.sort_by(|&a, &b| input.stake[b].cmp(&input.stake[a]).then(b.cmp(&a)));
    let mut new_permit = vec![false; n];
    for &i in by_stake.iter().take(params.max_allowed_validators as usize) {
        new_permit[i] = true;
    }
    let permit: Vec<bool> = (0..n)
        .map(|i| state.validator_permit.get(i).copied().unwrap_or(false))
        .collect();

    // Step 4: active stake.
    let mut active_stake = Array1::from_iter((0..n).map(|i| {
        if active[i] && permit[i] {
            stake[i]
        } else {
            0.0
        }
    }));
    normalize(&mut active_stake);

    // Step 5: weights; non-permitted rows, the diagonal and weights set before the target registered
    // are removed; rows normalized.
    // Entries are tracked as present (explicit zeros included), which sparse Yuma3 bonds depend on.
    let mut w = Array2::<f64>::zeros((n, n));
    let mut present = Array2::<bool>::from_elem((n, n), false);
    for (i, row) in input.weights.iter().enumerate() {
        if !permit[i] {
            continue;
        }
        for &(j, v) in row {
            let j = j as usize;
            if j < n && j != i && input.last_update[i] > input.block_at_registration[j] {
                w[[i, j]] = v as f64 / 65535.0;
                present[[i, j]] = true;
            }
        }
    }
    normalize_rows(&mut w);

    // Steps 6-9: consensus, clipping, validator trust, rank and incentive.
    let consensus =
        weighted_median_columns(active_stake.as_slice().expect("contiguous"), &w, kappa);
    let clipped = clip_columns(&w, &consensus);
    let validator_trust = clipped.sum_axis(Axis(1));
    let mut incentive = clipped.t().dot(&active_stake);
    normalize(&mut incentive);

    // Step 10: bond weights.
    let beta = params.bonds_penalty as f64 / 65535.0;
    let bond_weights = &w + &((&clipped - &w) * beta);

    // Old bonds toward targets registered since the last epoch belong to the uid's previous
    // occupant and are dropped.
    let since = state
        .last_epoch_block
        .map(|b| b + 1)
        .unwrap_or(input.block.saturating_sub(params.tempo));
    let mut old = Array2::<f64>::zeros((n, n));
    for (i, row) in state.bonds.iter().enumerate().take(n) {
        for (j, &b) in row.iter().enumerate().take(n) {
            if input.block_at_registration[j] < since {
                old[[i, j]] = b as f64 / 65535.0;
            }
        }
    }
    let (bonds, mut dividends) = if params.yuma3_enabled {
        yuma3_bonds(
            params,
            &old,
            &w,
            &bond_weights,
            &present,
            &consensus,
            &active_stake,
            &incentive,
        )
    } else {
        // Step 11 (original): column-normalized EMA of stake-scaled bond weights.
        normalize_columns(&mut old);
        let mut delta = &bond_weights * &active_stake.clone().insert_axis(Axis(1));
        normalize_columns(&mut delta);
        let a = 1.0 - params.bonds_moving_average as f64 / 1_000_000.0;
        let mut bonds = &delta * a + &old * (1.0 - a);
        normalize_columns(&mut bonds);
        let dividends = bonds.dot(&incentive);
        (bonds, dividends)
    };
    normalize(&mut dividends);

    // Step 13: emission split between incentive and dividends; both zero falls back to active stake.
    let (sum_i, sum_d) = (incentive.sum(), dividends.sum());
    let shares: Vec<f64> = if sum_i + sum_d > 0.0 {
        (0..n)
            .map(|i| (incentive[i] + dividends[i]) / (sum_i + sum_d))
            .collect()
    } else {
        active_stake.to_vec()
    };
    let emission = shares
        .iter()
        .map(|s| (s * input.emission as f64).floor() as u64)
        .collect();

    // Original bonds are stored column max-upscaled, Yuma3 bonds as proportions; rows of uids
    // without a new permit are cleared.
    let mut stored = vec![vec![0u16; n]; n];
    for (j, col) in bonds.columns().into_iter().enumerate() {
        let column = if params.yuma3_enabled {
            col.iter().map(|&b| proportion_to_u16(b)).collect()
        } else {
            max_upscale_to_u16(&col.to_vec())
        };
        for (i, v) in column.into_iter().enumerate() {
            stored[i][j] = if new_permit[i] { v } else { 0 };
        }
    }

    let to_u16 = |v: &[f64]| {
        v.iter()
            .map(|&x| proportion_to_u16(x))
            .collect::<Vec<u16>>()
    };
    EpochOutput {
        active,
        consensus: to_u16(&consensus),
        incentive: to_u16(incentive.as_slice().expect("contiguous")),
        dividends: to_u16(dividends.as_slice().expect("contiguous")),
        validator_trust: to_u16(validator_trust.as_slice().expect("contiguous")),
        validator_permit: new_permit,
        bonds: stored,
        emission,
    }
}

/// Step 12 (Yuma3): each present entry's bond moves toward its bond weight at rate alpha, capped at 1;
/// entries absent from the weight row lose their bond. Dividends are proportional to active stake
/// times column-normalized bonds times incentive.
#[allow(clippy::too_many_arguments)]
fn yuma3_bonds(
    params: &YumaParams,
    old: &Array2<f64>,
    weights: &Array2<f64>,
    bond_weights: &Array2<f64>,
    present: &Array2<bool>,
    consensus: &[f64],
    active_stake: &Array1<f64>,
    incentive: &Array1<f64>,
) -> (Array2<f64>, Array1<f64>) {
    let n = weights.nrows();
    let fixed_alpha = 1.0 - params.bonds_moving_average as f64 / 1_000_000.0;
    let (low, high) = (
        params.alpha_low as f64 / 65535.0,
        params.alpha_high as f64 / 65535.0,
    );
    let steepness = params.alpha_sigmoid_steepness as f64 / 100.0;
    let mut bonds = Array2::<f64>::zeros((n, n));
    for i in 0..n {
        for j in 0..n {
            if !present[[i, j]] {
                continue;
            }
            let (w, b) = (weights[[i, j]], old[[i, j]]);
            let alpha = if params.liquid_alpha_enabled {
                let diff = if w >= b {
                    (w - consensus[j]).clamp(0.0, 1.0)
                } else {
                    (b - w).clamp(0.0, 1.0)
                };
                low + (high - low) / (1.0 + (-steepness * (diff - 0.5)).exp())
            } else {
                fixed_alpha
            };
            bonds[[i, j]] = ((1.0 - alpha) * b + alpha * bond_weights[[i, j]].max(0.0)).min(1.0);
        }
    }
    let mut normalized = bonds.clone();
    normalize_columns(&mut normalized);
    let dividends =
        Array1::from_iter((0..n).map(|i| active_stake[i] * normalized.row(i).dot(incentive)));
    (bonds, dividends)
}

impl YumaState {
    /// The state after `output`, for the next epoch.
    pub fn advance(&mut self, block: u64, output: &EpochOutput) {
        self.bonds = output.bonds.clone();
        self.validator_permit = output.validator_permit.clone();
        self.last_epoch_block = Some(block);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    // Public vectors from subtensor's math tests (REFERENCE.md).
    #[test]
    fn weighted_median_vectors() {
        assert_eq!(
            weighted_median(&[0.49, 0.01, 0.5], &[0.5, 0.7, 1.0], 0.51),
            0.7
        );
        assert_eq!(
            weighted_median(&[0.2; 5], &[0.8, 0.2, 1.0, 0.6, 0.4], 0.51),
            0.6
        );
        assert_eq!(weighted_median(&[0.51, 0.49], &[0.5, 1.0], 0.51), 0.5);
        assert_eq!(weighted_median(&[0.49, 0.51], &[0.5, 1.0], 0.51), 1.0);
    }

    #[test]
    fn column_median_vectors() {
        let stake = [0.0, 0.75, 0.25, 0.0];
        let w = array![
            [0.0, 0.1, 0.0],
            [0.0, 0.2, 0.4],
            [0.0, 0.3, 0.1],
            [0.0, 0.4, 0.5]
        ];
        assert_eq!(
            weighted_median_columns(&stake, &w, 0.24),
            vec![0.0, 0.3, 0.4]
        );
        assert_eq!(
            weighted_median_columns(&stake, &w, 0.26),
            vec![0.0, 0.2, 0.4]
        );
        assert_eq!(
            weighted_median_columns(&stake, &w, 0.76),
            vec![0.0, 0.2, 0.1]
        );
    }

    #[test]
    fn column_clip_vector() {
        let w = array![
            [0.0, 2.0, 3.0],
            [4.0, 5.0, 6.0],
            [7.0, 8.0, 9.0],
            [10.0, 11.0, 12.0]
        ];
        let clipped = clip_columns(&w, &[0.0, 5.0, 12.0]);
        assert_eq!(
            clipped,
            array![
                [0.0, 2.0, 3.0],
                [0.0, 5.0, 6.0],
                [0.0, 5.0, 9.0],
                [0.0, 5.0, 12.0]
            ]
        );
    }

    #[test]
    fn max_upscale_vector() {
        let x = [
            0.000001, 0.000006, 0.000007, 0.0001, 0.001, 0.01, 0.1, 0.2, 0.3, 0.4,
        ];
        assert_eq!(
            max_upscale_to_u16(&x),
            vec![0, 1, 1, 16, 164, 1638, 16384, 32768, 49151, 65535]
        );
    }

    /// Two validators (uids 0, 1) with permits from a previous epoch and two miners (2, 3). Both
    /// validators weight the miners 3:1, so consensus equals the weights, nothing is clipped, and the
    /// miners' incentive is 0.75 / 0.25; each validator's bonds are proportional to its stake, so its
    /// dividends are too; emission splits 50/50 between miners and validators.
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
            },
        );
        assert_eq!(out.incentive[2], proportion_to_u16(0.75));
        assert_eq!(out.incentive[3], proportion_to_u16(0.25));
        assert_eq!(out.dividends[0], proportion_to_u16(0.75));
        assert_eq!(out.dividends[1], proportion_to_u16(0.25));
        assert_eq!(out.emission, vec![375_000, 125_000, 375_000, 125_000]);
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

    /// With no permits yet (first epoch), nobody's weights count: both sums are zero and there is no
    /// active stake, so nothing is emitted, and the top-stake uids get permits for the next epoch.
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
            },
        );
        assert_eq!(out.emission, vec![0, 0]);
        assert_eq!(
            out.validator_permit,
            vec![false, true],
            "ties go to the higher uid"
        );
    }
}
