//! Runs a sequence of Yuma epochs from a JSON description, carrying bonds and permits between epochs
//! as the chain does. This is what `subnet yuma` runs. The simulator has no subnet owner uid, a zero
//! stake threshold and no commit-reveal masking.

use crate::yuma::{EpochInput, EpochOutput, YumaParams, YumaState, epoch};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulationInput {
    /// In the chain's own integer units and names; omitted ones take subtensor's defaults.
    #[serde(default)]
    pub hyperparameters: YumaParams,
    pub stake: Vec<u64>,
    /// Defaults to 0 for every uid.
    #[serde(default)]
    pub block_at_registration: Option<Vec<u64>>,
    pub epochs: Vec<EpochSpec>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochSpec {
    pub block: u64,
    pub emission: u64,
    /// One sparse row per uid: [[destination uid, u16 weight], ...].
    pub weights: Vec<Vec<(u16, u16)>>,
    pub last_update: Vec<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SimulationOutput {
    pub epochs: Vec<EpochOutput>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct SimulationError(pub String);

/// Checks the input's shapes, then runs its epochs in order.
pub fn simulate(input: &SimulationInput) -> Result<SimulationOutput, SimulationError> {
    let registration = input
        .block_at_registration
        .clone()
        .unwrap_or_else(|| vec![0; input.stake.len()]);
    let problems = shape_problems(input, &registration);
    if !problems.is_empty() {
        return Err(SimulationError(problems.join("\n")));
    }
    let mut state = YumaState::default();
    let mut epochs = Vec::with_capacity(input.epochs.len());
    for e in &input.epochs {
        let weights: Vec<Vec<(u16, u16)>> = e
            .weights
            .iter()
            .map(|row| {
                let mut row = row.clone();
                row.sort_by_key(|(d, _)| *d);
                row
            })
            .collect();
        let out = epoch(
            &input.hyperparameters,
            &state,
            &EpochInput {
                block: e.block,
                emission: e.emission,
                stake: &input.stake,
                weights: &weights,
                last_update: &e.last_update,
                block_at_registration: &registration,
                earliest_commit: None,
            },
        );
        state.advance(e.block, &out);
        epochs.push(out);
    }
    Ok(SimulationOutput { epochs })
}

/// What does not fit together in `input`: vectors of another length than the stake's, weights to
/// uids that do not exist, epochs out of order.
fn shape_problems(input: &SimulationInput, registration: &[u64]) -> Vec<String> {
    let n = input.stake.len();
    let mut problems = Vec::new();
    if registration.len() != n {
        problems.push(format!(
            "block_at_registration has {} entries, stake has {n}",
            registration.len()
        ));
    }
    for (k, e) in input.epochs.iter().enumerate() {
        if e.weights.len() != n {
            problems.push(format!(
                "epochs[{k}].weights has {} rows, stake has {n} uids",
                e.weights.len()
            ));
        }
        if e.last_update.len() != n {
            problems.push(format!(
                "epochs[{k}].last_update has {} entries, stake has {n} uids",
                e.last_update.len()
            ));
        }
        for (i, row) in e.weights.iter().enumerate() {
            if let Some((dest, _)) = row.iter().find(|(d, _)| *d as usize >= n) {
                problems.push(format!(
                    "epochs[{k}].weights[{i}] names uid {dest}, but there are only {n} uids"
                ));
            }
        }
        if k > 0 && e.block <= input.epochs[k - 1].block {
            problems.push(format!(
                "epochs[{k}].block = {} does not come after the previous epoch's block",
                e.block
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(json: &str) -> SimulationInput {
        serde_json::from_str(json).unwrap()
    }

    /// Scenario from REFERENCE.md's rules: before the first epoch nobody has a permit, so no weight
    /// counts in epoch 1 and, as on subtensor, its emission goes to the staked uids by stake; it
    /// grants them permits; epoch 2 uses them: both validators agree, so the miner (uid 2) takes the
    /// incentive half and the validators split the dividend half by stake (3:1).
    #[test]
    fn permits_apply_from_the_next_epoch() {
        let out = simulate(&input(
            r#"{"hyperparameters": {"tempo": 10}, "stake": [300, 100, 0],
                "epochs": [
                  {"block": 10, "emission": 1000, "weights": [[[2, 65535]], [[2, 65535]], []], "last_update": [9, 9, 0]},
                  {"block": 20, "emission": 1000, "weights": [[[2, 65535]], [[2, 65535]], []], "last_update": [19, 19, 0]}
                ]}"#,
        ))
        .unwrap();
        assert_eq!(out.epochs[0].emission, vec![750, 250, 0]);
        assert_eq!(out.epochs[0].validator_permit, vec![true, true, false]);
        assert_eq!(
            out.epochs[1].emission,
            vec![375, 124, 500],
            "fixed point truncates a unit"
        );
        assert_eq!(out.epochs[1].incentive[2], 65535);
    }

    /// Yuma3 keeps bonds as proportions: with a fixed rate a = 0.1 a validator's bond toward a miner it
    /// fully weights grows 0.1, 0.19, 0.271 (1 - 0.9^k), stored as floor(x * 65535).
    #[test]
    fn yuma3_bonds_are_emas_of_bond_weights() {
        let epoch = |b: u64| {
            format!(
                r#"{{"block": {b}, "emission": 1000, "weights": [[[1, 65535]], []], "last_update": [{}, 0]}}"#,
                b - 1
            )
        };
        let json = format!(
            r#"{{"hyperparameters": {{"tempo": 10, "yuma3_enabled": true}}, "stake": [100, 0], "epochs": [{}, {}, {}, {}]}}"#,
            epoch(10),
            epoch(20),
            epoch(30),
            epoch(40)
        );
        let out = simulate(&input(&json)).unwrap();
        // Epoch 1 has no permits (no bonds); epochs 2-4 build the bond.
        let bonds: Vec<u16> = out.epochs.iter().map(|e| e.bonds[0][1]).collect();
        assert_eq!(bonds[0], 0);
        for (k, &b) in bonds[1..].iter().enumerate() {
            let expected = 1.0 - 0.9f64.powi(k as i32 + 1);
            assert!(
                (b as f64 - (expected * 65535.0).floor()).abs() <= 1.0,
                "epoch {} bond {b} vs {expected}",
                k + 2
            );
        }
    }

    /// Yuma3 with liquid alpha: an explicit zero weight keeps a decaying bond; dropping the entry
    /// clears it (only entries of the bond weights survive the per-entry EMA). Without liquid alpha
    /// the plain EMA decays both.
    #[test]
    fn yuma3_explicit_zeros_decay_while_absent_entries_clear_under_liquid_alpha() {
        let json = |liquid: bool| {
            format!(
                r#"{{"hyperparameters": {{"tempo": 10, "yuma3_enabled": true, "liquid_alpha_enabled": {liquid}}}, "stake": [100, 0, 0],
          "epochs": [
            {{"block": 10, "emission": 0, "weights": [[[1, 65535], [2, 65535]], [], []], "last_update": [9, 0, 0]}},
            {{"block": 20, "emission": 0, "weights": [[[1, 65535], [2, 65535]], [], []], "last_update": [19, 0, 0]}},
            {{"block": 30, "emission": 0, "weights": [[[1, 0], [2, 65535]], [], []], "last_update": [29, 0, 0]}},
            {{"block": 40, "emission": 0, "weights": [[[2, 65535]], [], []], "last_update": [39, 0, 0]}}
          ]}}"#
            )
        };
        let bonds = |liquid| -> Vec<u16> {
            let out = simulate(&input(&json(liquid))).unwrap();
            out.epochs.iter().map(|e| e.bonds[0][1]).collect()
        };
        let b1 = bonds(true);
        assert!(b1[1] > 0);
        assert!(b1[2] > 0 && b1[2] < b1[1], "explicit zero decays: {b1:?}");
        assert_eq!(b1[3], 0, "absent entry clears: {b1:?}");
        let b1 = bonds(false);
        assert!(
            b1[3] > 0 && b1[3] < b1[2] && b1[2] < b1[1],
            "both decay: {b1:?}"
        );
    }

    #[test]
    fn shape_errors_are_all_reported() {
        let e = simulate(&input(
            r#"{"stake": [1, 2], "epochs": [{"block": 5, "emission": 1, "weights": [[[7, 1]]], "last_update": [0]}]}"#,
        ))
        .unwrap_err();
        assert_eq!(e.0.lines().count(), 3, "{e}");
    }
}
