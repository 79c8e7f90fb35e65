//! The economics of cheating under audits: what a miner that does not do its assigned work (a lazy
//! one that skips steps, or any other whose re-executed window does not match) can expect to keep,
//! as a share of what an honest miner earns over the same windows.
//!
//! Each of `validators` validators audits every miner once per run of `audit_period` windows, at a
//! position of the run drawn uniformly from its own secret, independently of the others; an audit of
//! a window in which the miner cheated catches it (re-execution is deterministic on the CPU). When it
//! is caught the miner loses the fraction `slash` of everything it holds (on the local chain, all of
//! it, once the reports reach a quorum), and it earns nothing afterwards (the validator bans the
//! hotkey; the chain burns its emission while the slash is recent). Until then it earns
//! `reward_ratio` times what an honest miner earns per window (1 is the cheater's best case: work
//! that scores as well as honest work).
//!
//! A hotkey is also audited by every validator in the first window it contributes to, so a cheater
//! has to do that window honestly; the figures here count the windows after it.

/// Probability that a given window of a miner is audited by at least one validator.
pub fn audit_chance_per_window(audit_period: u64, validators: u32) -> f64 {
    if audit_period == 0 {
        return 0.0;
    }
    1.0 - (1.0 - 1.0 / audit_period as f64).powi(validators as i32)
}

/// Probability that a miner cheating from the first window of a run is still uncaught after `t`
/// windows: every validator's audit falls later in the run (none within the run's first `t`).
fn uncaught_after(t: u64, audit_period: u64, validators: u32) -> f64 {
    if audit_period == 0 {
        return 1.0;
    }
    let left = audit_period.saturating_sub(t) as f64 / audit_period as f64;
    left.powi(validators as i32)
}

/// What a miner that cheats every window from the start of an audit run keeps after `windows`
/// windows, as a share of an honest miner's earnings over the same windows (expected value).
pub fn cheater_share(
    audit_period: u64,
    validators: u32,
    slash: f64,
    reward_ratio: f64,
    windows: u64,
) -> f64 {
    if windows == 0 {
        return 0.0;
    }
    let mut expected = 0.0;
    // Caught in window k: it earned in the k - 1 windows before and keeps (1 - slash) of that.
    for k in 1..=windows.min(audit_period.max(1)) {
        let caught_at_k = uncaught_after(k - 1, audit_period, validators)
            - uncaught_after(k, audit_period, validators);
        expected += caught_at_k * (1.0 - slash) * (k - 1) as f64;
    }
    expected += uncaught_after(windows, audit_period, validators) * windows as f64;
    reward_ratio * expected / windows as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Enumerates every placement of the validators' audits in the run and averages the cheater's
    /// final holdings: an independent check of `cheater_share`.
    fn enumerated(period: u64, validators: u32, slash: f64, windows: u64) -> f64 {
        let placements = period.pow(validators);
        let mut total = 0.0;
        for p in 0..placements {
            let first_audit = (0..validators)
                .map(|v| (p / period.pow(v)) % period + 1)
                .min()
                .unwrap();
            total += if first_audit <= windows {
                (1.0 - slash) * (first_audit - 1) as f64
            } else {
                windows as f64
            };
        }
        total / placements as f64 / windows as f64
    }

    #[test]
    fn matches_the_enumeration_of_audit_placements() {
        for (period, validators) in [(1, 1), (2, 1), (4, 2), (5, 3)] {
            for slash in [0.0, 0.1, 0.5, 1.0] {
                for windows in 1..=6 {
                    let a = cheater_share(period, validators, slash, 1.0, windows);
                    let b = enumerated(period, validators, slash, windows);
                    assert!(
                        (a - b).abs() < 1e-12,
                        "period {period}, validators {validators}, slash {slash}, windows {windows}: {a} != {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_full_slash_leaves_nothing_once_every_validator_has_audited() {
        assert_eq!(cheater_share(4, 2, 1.0, 1.0, 4), 0.0);
        assert_eq!(cheater_share(4, 2, 1.0, 1.0, 40), 0.0);
        // Without a slash it keeps what it earned before the first audit.
        let kept = cheater_share(4, 2, 0.0, 1.0, 40);
        assert!(kept > 0.0 && kept < 0.1, "{kept}");
        // Per window, two validators auditing once in four windows see 7/16 of the windows.
        assert!((audit_chance_per_window(4, 2) - 7.0 / 16.0).abs() < 1e-12);
        assert_eq!(audit_chance_per_window(0, 2), 0.0);
    }

    /// The figures the README gives.
    #[test]
    fn the_documented_figures() {
        // K = 4, two validators, full slash: 1/16 after three windows.
        assert!((cheater_share(4, 2, 1.0, 1.0, 3) - 1.0 / 16.0).abs() < 1e-12);
        // No slash: 14/16 of a window earned before the first audit, over 40 windows.
        assert!((cheater_share(4, 2, 0.0, 1.0, 40) - 0.875 / 40.0).abs() < 1e-12);
    }
}
