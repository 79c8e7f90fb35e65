//! Times one Yuma epoch on a subnet the size of Bittensor's largest: 4096 uids, 256 validators that
//! each weigh about 2,600 uids (4096 random draws). The compact epoch (rows holding weights or bonds)
//! runs beside the chain's own row-by-row work in the same process, and both must agree. The last
//! line is one JSON object for `bench/run.sh`.
//!
//! `cargo run --release -p scoring --example yuma_bench [UIDS VALIDATORS]`

use scoring::yuma::{Rows, Scenario, YumaParams, YumaState, epoch_over};
use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("UIDS and VALIDATORS are numbers"))
        .collect();
    let (n, validators) = (
        args.first().copied().unwrap_or(4096),
        args.get(1).copied().unwrap_or(256),
    );
    let scenario = Scenario::random(n, validators, n, 1);
    println!(
        "{n} uids, {validators} validators, {} weights set",
        scenario.weights.iter().map(Vec::len).sum::<usize>()
    );
    let mut rows = Vec::new();
    println!(
        "{:<22} {:>14} {:>14} {:>8}",
        "variant", "compact (ms)", "chain (ms)", "speedup"
    );
    for (name, yuma3, liquid) in [
        ("original Yuma", false, false),
        ("Yuma3", true, false),
        ("Yuma3 + liquid alpha", true, true),
    ] {
        let params = YumaParams {
            max_allowed_validators: validators as u16,
            yuma3_enabled: yuma3,
            liquid_alpha_enabled: liquid,
            ..Default::default()
        };
        // One epoch to hand out permits and bonds, so the timed epoch does all the work.
        let mut state = YumaState::default();
        let first = epoch_over(
            &params,
            &state,
            &scenario.input(2_000, 1),
            Rows::ThatCanCarryWeight,
        );
        state.advance(2_000, &first);
        let input = scenario.input(2_360, 1_000_000_000);
        let time = |rows| {
            let start = Instant::now();
            let out = epoch_over(&params, &state, &input, rows);
            (start.elapsed().as_secs_f64() * 1e3, out)
        };
        let (compact_ms, compact) = time(Rows::ThatCanCarryWeight);
        let (full_ms, full) = time(Rows::All);
        assert_eq!(
            compact, full,
            "{name}: the compact epoch differs from the reference"
        );
        println!(
            "{name:<22} {compact_ms:>14.0} {full_ms:>14.0} {:>7.1}x",
            full_ms / compact_ms
        );
        rows.push(format!(
            "{{\"variant\": \"{name}\", \"compact_ms\": {compact_ms:.3}, \"chain_ms\": {full_ms:.3}}}"
        ));
    }
    println!(
        "{{\"uids\": {n}, \"validators\": {validators}, \"variants\": [{}]}}",
        rows.join(", ")
    );
}
