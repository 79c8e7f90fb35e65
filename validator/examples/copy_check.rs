//! The copy check's cost with N candidates of K entries each, in the same run: every pair's exact
//! cosine (`scoring::checks::pairwise_similarity` over sparse gradients, the check before sketches)
//! against `validator::window::similar_pairs` (sketches, then exact cosines of the
//! pairs near the threshold). A fifth of the candidates are noisy copies of others, some above
//! the threshold and some below; both must find the same copies.
//!
//! `cargo run --release -p validator --example copy_check -- [N] [K] [LEN]`
//! (default: 256 candidates of 17,152 entries in 137,216 parameters, localnet-lm's payload). The
//! last line is the same as one JSON object for `bench/run.sh`.

use pseudo_gradient::Sparse;
use scoring::checks::{Similarity, pairwise_similarity};
use std::time::Instant;
use validator::window::similar_pairs;

/// `nonzeros` entries of a vector of `len`, drawn from `seed`.
fn random(len: usize, nonzeros: usize, seed: u64) -> Vec<f32> {
    let mut v = vec![0f32; len];
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for _ in 0..nonzeros {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        v[(state as usize) % len] = ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5;
    }
    v
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(Ok(256), |a| a.parse())?;
    let k: usize = args.next().map_or(Ok(17_152), |a| a.parse())?;
    let len: usize = args.next().map_or(Ok(137_216), |a| a.parse())?;
    let originals = n - n / 5;
    let mut dense: Vec<Vec<f32>> = (0..originals)
        .map(|i| random(len, k, i as u64 + 1))
        .collect();
    for c in 0..n / 5 {
        let noise = [0.05f32, 0.2, 0.35, 0.5][c % 4];
        let n_vec = random(len, k, 1_000_000 + c as u64);
        let copy = dense[c]
            .iter()
            .zip(&n_vec)
            .map(|(&x, &e)| x + noise * e)
            .collect();
        dense.push(copy);
    }
    let sparse: Vec<Sparse> = dense.iter().map(|v| Sparse::from_dense(v)).collect();
    drop(dense);
    let pairs: Vec<(u16, &Sparse)> = sparse
        .iter()
        .enumerate()
        .map(|(u, s)| (u as u16, s))
        .collect();
    let copy_cosine = 0.95;
    let copies = |list: &[Similarity]| -> Vec<(u16, u16)> {
        list.iter()
            .filter(|s| s.cosine >= copy_cosine)
            .map(|s| (s.a, s.b))
            .collect()
    };
    let started = Instant::now();
    let all = pairwise_similarity(&pairs, |a, b| a.cosine(b));
    let exact_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let sketched = similar_pairs(&pairs, 0x5EED, copy_cosine, None);
    let sketched_s = started.elapsed().as_secs_f64();
    let same = copies(&all) == copies(&sketched);
    println!(
        "{n} candidates of {k} entries in {len} parameters: every pair exactly {exact_s:.3} s \
         ({} pairs); sketched {sketched_s:.3} s ({} pairs compared exactly); {} copies found, \
         the same by both: {same}",
        all.len(),
        sketched.len(),
        copies(&all).len()
    );
    println!(
        "{{\"candidates\": {n}, \"entries\": {k}, \"parameters\": {len}, \"all_pairs_s\": {exact_s:.3}, \"sketched_s\": {sketched_s:.3}, \"exact_pairs\": {}, \"copies\": {}, \"same\": {same}}}",
        sketched.len(),
        copies(&all).len()
    );
    anyhow::ensure!(same, "the sketched check missed or added a copy");
    Ok(())
}
