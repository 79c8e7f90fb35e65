//! Every fuzz target on stable: its seeds (generated and under `fuzz/seeds/`), every input a fuzzer
//! crashed on (`fuzz/regressions/<target>/`, kept once fixed), and a fixed sweep of mutations of the
//! seeds (bit flips, boundary bytes, cuts, splices, repeats), so that CI checks each decoder against
//! hostile bytes even where the coverage-guided fuzzers cannot run.

use std::path::Path;

/// Mutations tried per seed, per target (the slow targets decrypt or touch the disk).
fn sweep(target: &str) -> usize {
    match target {
        "timelock_commit" => 40,
        "data_dir" | "keyfile" | "yuma_input" => 150,
        _ => 600,
    }
}

fn files(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<_> = entries
        .map(|e| e.expect("a directory entry").path())
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read(p).expect("a seed reads"))
        .collect()
}

/// A small deterministic generator (xorshift64*), so every run tries the same inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(seed: &[u8], other: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(7) {
            0 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] = [0, 1, 0x7F, 0x80, 0xFF][rng.below(5)];
            }
            2 => out.truncate(at),
            3 => {
                let i = at.min(out.len().saturating_sub(4));
                let value =
                    [0u32, 1, u32::MAX, 0x7FFF_FFFF, 0x7FC0_0000, 0x7F80_0000][rng.below(6)];
                let end = (i + 4).min(out.len());
                let bytes = value.to_le_bytes();
                out[i..end].copy_from_slice(&bytes[..end - i]);
            }
            4 => {
                let from = rng.below(other.len() + 1);
                out.splice(at..at, other[from..].iter().take(64).copied());
            }
            5 => {
                let len = rng.below(16).min(out.len() - at.min(out.len()));
                let piece = out[at.min(out.len())..at.min(out.len()) + len].to_vec();
                out.splice(at.min(out.len())..at.min(out.len()), piece);
            }
            _ => {
                let i = at.min(out.len());
                out.insert(i, rng.next() as u8);
            }
        }
    }
    out
}

#[test]
fn every_target_survives_its_seeds_regressions_and_a_mutation_sweep() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let generated = fuzz_targets::seeds::generated();
    let mut report = Vec::new();
    for &(name, target) in fuzz_targets::TARGETS {
        let mut seeds: Vec<Vec<u8>> = generated
            .iter()
            .filter(|(t, _)| *t == name)
            .map(|(_, bytes)| bytes.clone())
            .collect();
        seeds.extend(files(&root.join("seeds").join(name)));
        assert!(!seeds.is_empty(), "target {name} has no seed");
        let regressions = files(&root.join("regressions").join(name));
        for (k, seed) in seeds.iter().enumerate() {
            assert!(
                target(seed),
                "seed {k} of {name} is refused: the seeds are out of date"
            );
        }
        for input in &regressions {
            target(input);
        }
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ name.len() as u64);
        let (mut runs, mut accepted) = (0, 0);
        for (i, seed) in seeds.iter().enumerate() {
            let other = &seeds[(i + 1) % seeds.len()];
            for _ in 0..sweep(name) {
                accepted += usize::from(target(&mutate(seed, other, &mut rng)));
                runs += 1;
            }
        }
        report.push(format!(
            "{name}: {} seeds, {} regressions, {runs} mutations ({accepted} accepted)",
            seeds.len(),
            regressions.len()
        ));
    }
    println!("{}", report.join("\n"));
}
