//! Subtensor's own epoch tests (`pallets/subtensor/src/tests/epoch.rs`), ported: the same subnets,
//! the same weights block by block, and the values subtensor asserts, to the unit where it asserts
//! them to the unit. Subtensor's tests call `epoch()` directly, so its LastMechansimStepBlock stays 0
//! and bonds toward uids registered at or after `block - tempo` are masked; `Subnet` does the same.

use scoring::yuma::{EpochInput, EpochOutput, YumaParams, YumaState, epoch, max_upscale_to_u16};

const EMISSION: u64 = 1_000_000_000;

struct Subnet {
    params: YumaParams,
    state: YumaState,
    stake: Vec<u64>,
    weights: Vec<Vec<(u16, u16)>>,
    last_update: Vec<u64>,
    registered: Vec<u64>,
    block: u64,
}

impl Subnet {
    /// Every uid registered at `block` with its stake.
    fn new(params: YumaParams, stake: Vec<u64>, block: u64) -> Self {
        let n = stake.len();
        Self {
            params,
            state: YumaState::default(),
            stake,
            weights: vec![Vec::new(); n],
            last_update: vec![0; n],
            registered: vec![block; n],
            block,
        }
    }

    /// set_weights as subtensor stores them: values max-upscaled, the update block recorded.
    fn set_weights(&mut self, uid: usize, dests: &[u16], values: &[u16]) {
        self.weights[uid] = dests
            .iter()
            .copied()
            .zip(max_upscale_to_u16(values))
            .collect();
        self.last_update[uid] = self.block;
    }

    /// A new key takes `uid` at the current block, as replace_neuron does: its own row, bonds,
    /// permit and stake are cleared, and others' weights toward it are zeroed.
    fn replace(&mut self, uid: usize) {
        self.weights[uid].clear();
        for row in self.weights.iter_mut() {
            for (j, w) in row.iter_mut() {
                if *j as usize == uid {
                    *w = 0;
                }
            }
        }
        if let Some(row) = self.state.bonds.get_mut(uid) {
            row.iter_mut().for_each(|b| *b = 0);
        }
        if let Some(permit) = self.state.validator_permit.get_mut(uid) {
            *permit = false;
        }
        self.stake[uid] = 0;
        self.registered[uid] = self.block;
        self.last_update[uid] = self.block;
    }

    fn run_to_block(&mut self, block: u64) {
        self.block = block;
    }

    fn next_block(&mut self) {
        self.block += 1;
    }

    fn epoch(&mut self) -> EpochOutput {
        let out = epoch(
            &self.params,
            &self.state,
            &EpochInput {
                block: self.block,
                emission: EMISSION,
                stake: &self.stake,
                weights: &self.weights,
                last_update: &self.last_update,
                block_at_registration: &self.registered,
                earliest_commit: None,
            },
        );
        self.state.bonds = out.bonds.clone();
        self.state.validator_permit = out.validator_permit.clone();
        out
    }
}

/// test_bonds: four validators (stake 1, 2, 3, 4) weigh four servers 0.1 to 0.4; then one by one
/// they switch to self-weights, and validator 3 moves all its weight to the last server. The stored
/// bonds, epoch after epoch, to the unit.
#[test]
fn test_bonds() {
    let n = 8;
    let mut net = Subnet::new(
        YumaParams {
            tempo: 1,
            max_allowed_validators: n,
            bonds_penalty: u16::MAX,
            ..Default::default()
        },
        vec![1, 2, 3, 4, 0, 0, 0, 0],
        1,
    );
    net.epoch(); // permits
    net.next_block();
    let servers: Vec<u16> = (4..8).collect();
    let values = [u16::MAX / 4, u16::MAX / 2, (u16::MAX / 4) * 3, u16::MAX];
    for uid in 0..4 {
        net.set_weights(uid, &servers, &values);
    }
    let bonds = net.epoch().bonds;
    assert_eq!(
        [bonds[0][4], bonds[1][4], bonds[2][4], bonds[3][4]],
        [16383, 32767, 49151, 65535]
    );

    // Self-weight only on validator 0, then 1, then 2.
    let mut expected = vec![
        (4, [14582, 32767, 49151, 65535]),
        (4, [12603, 28321, 49151, 65535]),
        (7, [12602, 28320, 49150, 65535]),
    ];
    for (uid, (column, want)) in expected.drain(..).enumerate() {
        net.set_weights(uid, &[uid as u16], &[u16::MAX]);
        net.next_block();
        let bonds = net.epoch().bonds;
        let got: Vec<u16> = (0..4).map(|i| bonds[i][column]).collect();
        assert_eq!(got, want, "after validator {uid} turns to a self-weight");
    }

    // Validator 2 puts all its weight on server 7.
    net.set_weights(2, &[7], &[u16::MAX]);
    for want in [
        [10951, 24609, 49150, 65535],
        [9559, 21482, 49150, 65535],
        [8376, 18824, 49150, 65535],
    ] {
        net.next_block();
        let bonds = net.epoch().bonds;
        let got: Vec<u16> = (0..4).map(|i| bonds[i][7]).collect();
        assert_eq!(got, want, "block {}", net.block);
    }
}

/// test_active_stake: two validators, two servers; once validator 1's weights fall out of the
/// activity cutoff, validator 0 takes the dividends; when it updates again, bonds recover. Dividends,
/// Emission and bonds to the unit.
#[test]
fn test_active_stake() {
    let n = 4;
    let mut net = Subnet::new(
        YumaParams {
            tempo: 1,
            max_allowed_validators: n,
            ..Default::default()
        },
        vec![1; 4],
        0,
    );
    net.epoch();
    net.next_block();
    let half = vec![u16::MAX / 2; 2];
    for uid in 0..2 {
        net.set_weights(uid, &[2, 3], &half);
    }
    let out = net.epoch();
    for uid in 0..4 {
        if uid < 2 {
            assert_eq!(out.dividends[uid], 32767);
        }
        assert_eq!(out.emission[uid], 250_000_000);
    }
    for row in &out.bonds[..2] {
        assert_eq!(row[..2], [0, 0]);
        assert_eq!(row[2..], [65535, 65535]);
    }

    let cutoff = net.params.activity_cutoff;
    net.run_to_block(cutoff + 2);
    net.set_weights(0, &[2, 3], &half);
    let out = net.epoch();
    assert_eq!(out.dividends[0], 36044);
    assert_eq!(out.emission[0], 274_999_999);
    assert_eq!(out.bonds[0][2..], [65535, 65535]);
    assert_eq!(out.dividends[1], 29490);
    assert_eq!(out.emission[1], 224_999_999);
    assert_eq!(out.bonds[1][2..], [53619, 53619]);

    net.set_weights(1, &[2, 3], &half);
    net.run_to_block(cutoff + 3);
    let out = net.epoch();
    assert_eq!(out.emission[0], 272_501_132);
    assert_eq!(out.bonds[0][2..], [65535, 65535]);
    assert_eq!(out.emission[1], 227_498_866);
    assert_eq!(out.bonds[1][2..], [54712, 54712]);
}

/// test_outdated_weights: a server is replaced by a new key; weights set before its registration no
/// longer count toward it, and only the validator that updated its weights bonds to the newcomer.
#[test]
fn test_outdated_weights() {
    let n = 4;
    let mut net = Subnet::new(
        YumaParams {
            tempo: 0,
            max_allowed_validators: n,
            bonds_penalty: u16::MAX,
            ..Default::default()
        },
        vec![1; 4],
        1,
    );
    net.epoch();
    net.next_block();
    for uid in 0..2 {
        net.set_weights(uid, &[2, 3], &[2 * (u16::MAX / 3), u16::MAX / 3]);
    }
    for uid in 2..4 {
        net.set_weights(uid, &[uid as u16], &[u16::MAX]);
    }
    net.epoch();
    net.replace(3); // the server with the least emission
    net.next_block();
    net.set_weights(0, &[2, 3], &[2 * (u16::MAX / 3), u16::MAX / 3]);
    let out = net.epoch();
    assert_eq!(out.dividends[0], 32767);
    assert_eq!(out.emission[0], 250_000_000);
    assert_eq!(out.bonds[0][2], 65535);
    assert_eq!(out.bonds[0][3], 65535);
}

/// test_zero_weights: with no weights, self-weights only, or weights outdated by re-registration,
/// the whole emission still goes out, by stake; fresh weights split it again.
#[test]
fn test_zero_weights() {
    let mut net = Subnet::new(
        YumaParams {
            tempo: u16::MAX as u64 - 1,
            ..Default::default()
        },
        vec![1, 0],
        0,
    );
    let paid = |out: &EpochOutput| (out.emission[0], out.emission[1]);
    assert_eq!(paid(&net.epoch()), (EMISSION, 0), "no weights");
    net.run_to_block(1);
    net.set_weights(1, &[1], &[u16::MAX]);
    assert_eq!(paid(&net.epoch()), (EMISSION, 0), "self-weights only");
    net.run_to_block(2);
    net.set_weights(0, &[1], &[u16::MAX]);
    net.replace(1);
    assert_eq!(paid(&net.epoch()), (EMISSION, 0), "outdated weights");
    net.run_to_block(3);
    net.set_weights(0, &[1], &[u16::MAX]);
    assert_eq!(paid(&net.epoch()), (EMISSION / 2, EMISSION / 2));
}

/// test_yuma_3_kappa_moves_first: Yuma3 with liquid alpha; the big validator moves to the second
/// server first, the small ones follow. Dividends per epoch within 1e-3, as subtensor asserts them.
#[test]
fn test_yuma_3_kappa_moves_first() {
    let mut net = Subnet::new(
        YumaParams {
            tempo: 1,
            kappa: u16::MAX / 2,
            bonds_penalty: 0,
            bonds_moving_average: 975_000,
            max_allowed_validators: 3,
            yuma3_enabled: true,
            liquid_alpha_enabled: true,
            alpha_low: (0.1 * 65535.0) as u16,
            alpha_high: (0.3 * 65535.0) as u16,
            alpha_sigmoid_steepness: 1000,
            ..Default::default()
        },
        vec![8, 1, 1, 0, 0],
        1,
    );
    net.next_block();
    net.epoch();
    let (to_first, to_second) = ([u16::MAX, 0], [0, u16::MAX]);
    let dividends = [
        [0.8000, 0.1000, 0.1000],
        [1.0000, 0.0000, 0.0000],
        [0.9382, 0.0618, 0.0000],
        [0.8819, 0.0773, 0.0407],
        [0.8564, 0.0844, 0.0592],
        [0.8418, 0.0884, 0.0697],
    ];
    for (k, want) in dividends.iter().enumerate() {
        let choices = match k {
            0 => Some([to_first; 3]),
            1 => Some([to_second, to_first, to_first]),
            2 => Some([to_second, to_second, to_first]),
            3 => Some([to_second; 3]),
            _ => None,
        };
        for (uid, values) in choices.iter().flatten().enumerate() {
            net.set_weights(uid, &[3, 4], values);
        }
        net.next_block();
        let out = net.epoch();
        for (uid, &w) in want.iter().enumerate() {
            let got = out.dividends[uid] as f64 / 65535.0;
            assert!(
                (got - w).abs() <= 1e-3,
                "epoch {k}, validator {uid}: {got} against {w}"
            );
        }
    }
}

/// Every epoch pays out its emission, less at most one rao per uid lost to truncation: with weights,
/// with none, and when every weight is a self-weight.
#[test]
fn every_epoch_conserves_its_emission() {
    let conserved = |out: &EpochOutput| {
        let paid: u64 = out.emission.iter().sum();
        paid <= EMISSION && paid + out.emission.len() as u64 >= EMISSION
    };
    for seed in 0..4 {
        let scenario = scoring::yuma::Scenario::random(48, 12, 8, seed);
        let mut net = Subnet::new(
            YumaParams {
                tempo: 10,
                max_allowed_validators: 16,
                yuma3_enabled: seed % 2 == 1,
                liquid_alpha_enabled: seed == 3,
                ..Default::default()
            },
            scenario.stake.clone(),
            0,
        );
        net.run_to_block(10);
        assert!(conserved(&net.epoch()), "seed {seed}: no weights");
        net.run_to_block(20);
        for (uid, row) in scenario.weights.iter().enumerate() {
            let (dests, values): (Vec<u16>, Vec<u16>) = row.iter().copied().unzip();
            if !dests.is_empty() {
                net.set_weights(uid, &dests, &values);
            }
        }
        net.run_to_block(30);
        assert!(conserved(&net.epoch()), "seed {seed}: weights");
        for uid in 0..48 {
            net.set_weights(uid, &[uid as u16], &[u16::MAX]);
        }
        net.run_to_block(40);
        let out = net.epoch();
        assert!(conserved(&out), "seed {seed}: self-weights only");
        assert_eq!(out.incentive.iter().map(|&i| i as u64).sum::<u64>(), 0);
    }
}
