//! The economics of cheating under audits: what a miner that does not do its assigned work (a lazy
//! one that skips steps, or any other whose re-executed window does not match) can expect to keep,
//! as a share of what an honest miner earns over the same windows.
//!
//! Each of `validators` validators audits each (miner, window) with probability `1 / audit_period`,
//! drawn from its own secret, independently of every other draw; an audit of a window in which the
//! miner cheated catches it (re-execution is deterministic on the CPU), and an audit the miner does
//! not answer withholds its pay until it does and is fraud after the grace windows. When it is
//! caught the miner loses the fraction `slash` of everything it holds (on the local chain, all of
//! it, once the reports reach a quorum), and it earns nothing afterwards (the validator bans the
//! hotkey; the chain burns its emission while the slash is recent). Until then it earns
//! `reward_ratio` times what an honest miner earns per window (1 is the cheater's best case: work
//! that scores as well as honest work).
//!
//! Because the draws are independent, the audits a miner has seen say nothing about the next
//! window: every window it cheats in is caught with the same probability, whenever it cheats.
//! A hotkey is also audited by every validator in the first window it contributes to, so a cheater
//! has to do that window honestly; the figures here count the windows after it.

/// Probability that a given window of a miner is audited by at least one validator.
pub fn audit_chance_per_window(audit_period: u64, validators: u32) -> f64 {
    if audit_period == 0 {
        return 0.0;
    }
    1.0 - (1.0 - 1.0 / audit_period as f64).powi(validators as i32)
}

/// What a miner that cheats every window keeps after `windows` windows, as a share of an honest
/// miner's earnings over the same windows (expected value).
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
    let caught = audit_chance_per_window(audit_period, validators);
    let mut expected = 0.0;
    let mut uncaught = 1.0;
    // Caught in window k: it earned in the k - 1 windows before and keeps (1 - slash) of that.
    for k in 1..=windows {
        expected += uncaught * caught * (1.0 - slash) * (k - 1) as f64;
        uncaught *= 1.0 - caught;
    }
    expected += uncaught * windows as f64;
    reward_ratio * expected / windows as f64
}

/// How many windows a miner that cheats in every window it can expect to cheat in before it is
/// caught, counting the window it is caught in (the mean of a geometric distribution).
pub fn expected_windows_until_caught(audit_period: u64, validators: u32) -> f64 {
    1.0 / audit_chance_per_window(audit_period, validators)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Enumerates every pattern of audits (each validator, each window, audited or not, with its
    /// probability) and averages the cheater's final holdings: an independent check of
    /// `cheater_share`.
    fn enumerated(period: u64, validators: u32, slash: f64, windows: u64) -> f64 {
        let p = 1.0 / period as f64;
        let draws = validators as u64 * windows;
        let mut total = 0.0;
        for pattern in 0..(1u64 << draws) {
            let audits = pattern.count_ones() as i32;
            let probability = p.powi(audits) * (1.0 - p).powi(draws as i32 - audits);
            let first = (0..windows).find(|w| {
                (0..validators as u64).any(|v| pattern >> (w * validators as u64 + v) & 1 == 1)
            });
            let kept = match first {
                Some(w) => (1.0 - slash) * w as f64,
                None => windows as f64,
            };
            total += probability * kept;
        }
        total / windows as f64
    }

    #[test]
    fn matches_the_enumeration_of_audit_patterns() {
        for (period, validators) in [(1, 1), (2, 1), (4, 2), (5, 3)] {
            for slash in [0.0, 0.1, 0.5, 1.0] {
                for windows in 1..=4 {
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
    fn a_full_slash_leaves_ever_less() {
        let mut before = 1.0;
        for windows in 1..40 {
            let kept = cheater_share(4, 2, 1.0, 1.0, windows);
            assert!(kept < before, "{windows}: {kept}");
            before = kept;
        }
        assert!(before < 1e-9, "{before}");
        // Per window, two validators auditing with probability 1/4 see 7/16 of the windows.
        assert!((audit_chance_per_window(4, 2) - 7.0 / 16.0).abs() < 1e-12);
        assert_eq!(audit_chance_per_window(0, 2), 0.0);
    }

    /// The figures the README gives.
    #[test]
    fn the_documented_figures() {
        // K = 4, two validators, full slash: (9/16)^3 after three windows.
        let three = cheater_share(4, 2, 1.0, 1.0, 3);
        assert!((three - (9.0f64 / 16.0).powi(3)).abs() < 1e-12);
        assert!((three - 0.178).abs() < 5e-4, "{three}");
        // Over ten windows, 0.3%.
        assert!((cheater_share(4, 2, 1.0, 1.0, 10) - 0.00316).abs() < 5e-5);
        // No slash: it keeps the windows before its first audit, 9/7 on average, over 40 windows.
        let kept = cheater_share(4, 2, 0.0, 1.0, 40);
        assert!((kept - 9.0 / 7.0 / 40.0).abs() < 1e-6, "{kept}");
        // It cheats 16/7 windows on average before it is caught.
        assert!((expected_windows_until_caught(4, 2) - 16.0 / 7.0).abs() < 1e-12);
    }
}
