//! Where the subnet's training loses to one machine's, without the protocol: the held-out loss after
//! each window of
//! - one machine on the miners' batches of each step put together, its AdamW kept across windows
//!   (`subnet efficacy`'s reference) or fresh every window, and
//! - the miners' windows averaged (DiLoCo's model averaging at outer rate 1, every miner, dense, no
//!   scoring), each miner with a fresh AdamW every window (what the subnet does, so that any window
//!   can be re-executed) or with its own AdamW kept across windows (DiLoCo's workers).
//!
//! The same pages, batches and held-out batches as `subnet efficacy`. Settings of the averaging
//! (the miners' rows only with `--averaged-only`): `--outer RATE` (1), `--momentum MU` (0: plain
//! SGD; else Nesterov, PyTorch's form), `--lr-scale X` (the task's inner rate times X). Inner
//! settings (steps, warm-up, betas) come from the task file.
//!
//! `--compress BASIS` sends each miner's window compressed, with its own error feedback (and runs
//! only the fresh-AdamW averaging), to compare bases at equal bytes without the protocol:
//! - `topk:CHUNK:K:BITS`: the codec's top-k in the parameter basis (what the subnet sends), each
//!   parameter averaged over the miners that send it;
//! - `dct:CHUNK:K:BITS`: the same codec on each chunk's orthonormal DCT-II coefficients (DeMo's
//!   basis), decoded by the inverse transform;
//! - `rank:R:BITS`: rank R of each matrix by subspace iteration (PowerSGD's form, without its
//!   warm start), both factors and every vector parameter quantized to BITS with one scale per
//!   factor or vector.
//!
//! `--shares` prints, for the averaged runs' last window, each tensor's share of the first miner's
//! squared norm and the cosine of every pair of miners' pseudo-gradients.
//!
//! cargo run --release -p subnet-cli --example averaging -- TASK WINDOWS [--miners N] [--outer RATE]
//! [--momentum MU] [--lr-scale X] [--averaged-only] [--compress BASIS] [--shares]

use pseudo_gradient::codec::Layout;
use subnet_cli::efficacy::window_seed;
use task::{Batch, CpuBackend, CpuTrainBackend, TaskEngine, TaskSpec, Trainer};

struct Bench {
    engine: TaskEngine,
    miners: u16,
    heldout: Vec<Batch>,
    outer: f64,
    momentum: f64,
    lr_scale: f64,
    compress: Compress,
    /// Print where the last window's pseudo-gradients put their squared norm, and their cosines.
    shares: bool,
}

/// How the averaged runs send each miner's window (with error feedback).
#[derive(Clone, Copy)]
enum Compress {
    Dense,
    TopK(Layout),
    /// The codec's top-k of each chunk's DCT-II coefficients (DeMo's basis), with the codec's chunks.
    Dct(Layout),
    /// Rank r of each matrix, factors and vectors at b bits.
    Rank(usize, u32),
}

/// Gram-Schmidt on the `r` columns of the row-major `len` x `r` matrix `v` (a zero column stays zero).
fn orthonormalize(v: &mut [f64], len: usize, r: usize) {
    for j in 0..r {
        for i in 0..j {
            let dot: f64 = (0..len).map(|t| v[t * r + j] * v[t * r + i]).sum();
            for t in 0..len {
                v[t * r + j] -= dot * v[t * r + i];
            }
        }
        let norm = (0..len).map(|t| v[t * r + j].powi(2)).sum::<f64>().sqrt();
        for t in 0..len {
            v[t * r + j] = if norm > 1e-30 {
                v[t * r + j] / norm
            } else {
                0.0
            };
        }
    }
}

/// Rounds `v` to `bits`-bit symmetric levels of its largest magnitude.
fn quantize(v: &mut [f64], bits: u32) {
    let qmax = ((1u32 << (bits - 1)) - 1) as f64;
    let s = v.iter().fold(0f64, |a, x| a.max(x.abs()));
    if s > 0.0 {
        v.iter_mut()
            .for_each(|x| *x = (*x / s * qmax).round() / qmax * s);
    }
}

/// The orthonormal DCT-II of each `chunk` of `x` (inverse: the DCT-III), by definition.
fn dct_chunks(x: &[f32], chunk: usize, inverse: bool) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    let mut table: (usize, Vec<f64>) = (0, Vec::new());
    for (c, o) in x.chunks(chunk).zip(out.chunks_mut(chunk)) {
        let n = c.len();
        if table.0 != n {
            let basis = |k: usize, t: usize| {
                let w = if k == 0 {
                    1.0 / n as f64
                } else {
                    2.0 / n as f64
                };
                w.sqrt() * (std::f64::consts::PI * (t as f64 + 0.5) * k as f64 / n as f64).cos()
            };
            table = (n, (0..n * n).map(|i| basis(i / n, i % n)).collect());
        }
        for (i, slot) in o.iter_mut().enumerate() {
            *slot = (0..n)
                .map(|j| {
                    let b = if inverse {
                        table.1[j * n + i]
                    } else {
                        table.1[i * n + j]
                    };
                    b * c[j] as f64
                })
                .sum::<f64>() as f32;
        }
    }
    out
}

/// The rank-r approximation of a rows x cols matrix, factors quantized: (decoded, bits sent).
fn low_rank(m: &[f32], rows: usize, cols: usize, r: usize, bits: u32) -> (Vec<f32>, usize) {
    let at = |i: usize, j: usize| m[i * cols + j] as f64;
    let mut p: Vec<f64> = (0..cols * r)
        .map(|i| {
            ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f64 / (1u64 << 24) as f64
                - 0.5
        })
        .collect();
    let mut q = vec![0f64; rows * r];
    for it in 0..4 {
        for i in 0..rows {
            for j in 0..r {
                q[i * r + j] = (0..cols).map(|t| at(i, t) * p[t * r + j]).sum();
            }
        }
        orthonormalize(&mut q, rows, r);
        if it == 3 {
            break;
        }
        for t in 0..cols {
            for j in 0..r {
                p[t * r + j] = (0..rows).map(|i| at(i, t) * q[i * r + j]).sum();
            }
        }
        orthonormalize(&mut p, cols, r);
    }
    // b = q^T m, r x cols
    let mut b = vec![0f64; r * cols];
    for j in 0..r {
        for t in 0..cols {
            b[j * cols + t] = (0..rows).map(|i| q[i * r + j] * at(i, t)).sum();
        }
    }
    for j in 0..r {
        let mut col: Vec<f64> = (0..rows).map(|i| q[i * r + j]).collect();
        quantize(&mut col, bits);
        (0..rows).for_each(|i| q[i * r + j] = col[i]);
        quantize(&mut b[j * cols..(j + 1) * cols], bits);
    }
    let mut out = vec![0f32; rows * cols];
    for i in 0..rows {
        for t in 0..cols {
            out[i * cols + t] = (0..r).map(|j| q[i * r + j] * b[j * cols + t]).sum::<f64>() as f32;
        }
    }
    (out, r * (rows + cols) * bits as usize + 2 * r * 16)
}

impl Bench {
    fn loss(&self, params: &[f32]) -> f64 {
        let losses = self
            .engine
            .losses::<CpuBackend>(&Default::default(), params, &self.heldout);
        losses.iter().map(|&l| l as f64).sum::<f64>() / losses.len() as f64
    }

    /// Each miner's batches of `window`.
    fn batches(&self, window: u64) -> Vec<Vec<Batch>> {
        let seed = window_seed(window);
        (0..self.miners)
            .map(|uid| {
                let assignment = self
                    .engine
                    .assignment(window, seed, uid)
                    .expect("uid fits the window");
                self.engine.training_batches(&assignment, seed)
            })
            .collect()
    }

    fn trainer(&self) -> Trainer<CpuTrainBackend> {
        self.engine.trainer::<CpuTrainBackend>(&Default::default())
    }

    /// One machine over `windows`, its optimizer kept or fresh each window.
    fn one_machine(&self, windows: u64, kept: bool) -> Vec<f64> {
        let mut params = self.engine.genesis().params.to_vec();
        let mut trainer = self.trainer();
        let mut losses = Vec::new();
        for window in 0..windows {
            let per_miner = self.batches(window);
            let steps: Vec<Batch> = (0..per_miner[0].len())
                .map(|s| Batch::concat(&per_miner.iter().map(|b| b[s].clone()).collect::<Vec<_>>()))
                .collect();
            if !kept {
                trainer = self.trainer();
            }
            let lr = self.engine.spec().inner_lr(window);
            params = trainer.train_from(&params, &steps, lr, |_, _| {}).end;
            losses.push(self.loss(&params));
        }
        losses
    }

    /// The miners' windows averaged, each miner's optimizer kept or fresh each window, and applied
    /// at the outer rate (with Nesterov momentum where set).
    fn averaged(&self, windows: u64, kept: bool) -> Vec<f64> {
        let mut params = self.engine.genesis().params.to_vec();
        let mut buffer = vec![0f64; params.len()];
        let mut trainers: Vec<_> = (0..self.miners).map(|_| self.trainer()).collect();
        let mut residuals = vec![vec![0f32; params.len()]; self.miners as usize];
        let mut losses = Vec::new();
        let mut sent_bits = 0usize;
        for window in 0..windows {
            let lr = self.engine.spec().inner_lr(window) * self.lr_scale;
            let mut sum = vec![0f64; params.len()];
            let mut carriers = vec![0u32; params.len()];
            let mut deltas: Vec<Vec<f32>> = Vec::new();
            for ((trainer, batches), residual) in trainers
                .iter_mut()
                .zip(self.batches(window))
                .zip(residuals.iter_mut())
            {
                if !kept {
                    *trainer = self.trainer();
                }
                let end = trainer.train_from(&params, &batches, lr, |_, _| {}).end;
                let delta: Vec<f32> = params.iter().zip(&end).map(|(p, e)| p - e).collect();
                let acc: Vec<f32> = delta
                    .iter()
                    .zip(residual.iter())
                    .map(|(d, r)| d + r)
                    .collect();
                if self.shares && window + 1 == windows {
                    deltas.push(delta);
                }
                let (sent, bits) = self.send(&acc);
                sent_bits = bits;
                for (i, (r, (a, x))) in residual.iter_mut().zip(acc.iter().zip(&sent)).enumerate() {
                    *r = a - x;
                    if *x != 0.0 {
                        carriers[i] += 1;
                    }
                    sum[i] += *x as f64;
                }
            }
            if !deltas.is_empty() {
                self.print_shares(&deltas);
            }
            let n = self.miners as f64;
            for (((p, s), m), c) in params
                .iter_mut()
                .zip(sum)
                .zip(buffer.iter_mut())
                .zip(&carriers)
            {
                let g = match self.compress {
                    Compress::TopK(_) => s / (*c).max(1) as f64,
                    _ => s / n,
                };
                *m = self.momentum * *m + g;
                let step = if self.momentum > 0.0 {
                    g + self.momentum * *m
                } else {
                    g
                };
                *p = (*p as f64 - self.outer * step) as f32;
            }
            losses.push(self.loss(&params));
        }
        if !matches!(self.compress, Compress::Dense) {
            eprintln!(
                "{} bits a window, {:.1}x",
                sent_bits,
                (params.len() * 32) as f64 / sent_bits as f64
            );
        }
        losses
    }

    /// Each tensor's share of the first miner's squared norm (largest first, down to 0.5%), and the
    /// cosine of every pair of miners' pseudo-gradients.
    fn print_shares(&self, deltas: &[Vec<f32>]) {
        let sq = |v: &[f32]| v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>();
        let total = sq(&deltas[0]);
        let mut shares: Vec<(f64, &str)> = self
            .engine
            .layout()
            .entries
            .iter()
            .map(|e| {
                (
                    sq(&deltas[0][e.offset..e.offset + e.len]) / total,
                    e.name.as_str(),
                )
            })
            .collect();
        shares.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (share, name) in shares.iter().filter(|(s, _)| *s >= 0.005) {
            eprintln!("{:5.1}% {name}", 100.0 * share);
        }
        for i in 0..deltas.len() {
            for j in i + 1..deltas.len() {
                let dot: f64 = deltas[i]
                    .iter()
                    .zip(&deltas[j])
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum();
                let cos = dot / (sq(&deltas[i]) * sq(&deltas[j])).sqrt();
                eprintln!("cosine of miners {i} and {j}: {cos:.4}");
            }
        }
    }

    /// What a miner sends of `acc`, decoded, and its size in bits.
    fn send(&self, acc: &[f32]) -> (Vec<f32>, usize) {
        match self.compress {
            Compress::Dense => (acc.to_vec(), acc.len() * 32),
            Compress::TopK(layout) => {
                let (payload, sent) = layout.encode(acc);
                (sent, payload.len() * 8)
            }
            Compress::Dct(layout) => {
                let chunk = match layout {
                    Layout::TopK { chunk, .. } | Layout::PackedTopK { chunk, .. } => chunk,
                    Layout::DenseF32 => acc.len(),
                };
                let (payload, sent) = layout.encode(&dct_chunks(acc, chunk, false));
                (dct_chunks(&sent, chunk, true), payload.len() * 8)
            }
            Compress::Rank(r, bits) => {
                let mut out = acc.to_vec();
                let mut total = 0;
                for e in &self.engine.layout().entries {
                    let part = &acc[e.offset..e.offset + e.len];
                    if e.shape.len() == 2 {
                        let (dec, b) = low_rank(part, e.shape[0], e.shape[1], r, bits);
                        out[e.offset..e.offset + e.len].copy_from_slice(&dec);
                        total += b;
                    } else {
                        let mut v: Vec<f64> = part.iter().map(|&x| x as f64).collect();
                        quantize(&mut v, bits);
                        for (o, x) in out[e.offset..e.offset + e.len].iter_mut().zip(v) {
                            *o = x as f32;
                        }
                        total += e.len * bits as usize + 16;
                    }
                }
                (out, total)
            }
        }
    }
}

/// `--compress`: `topk:CHUNK:K:BITS`, `dct:CHUNK:K:BITS` or `rank:R:BITS`.
fn parse_compress(text: &str) -> anyhow::Result<Compress> {
    let layout = |rest: &str| {
        subnet_cli::efficacy::parse_layout(rest).map_err(|e| anyhow::anyhow!("--compress {e}"))
    };
    match text.split_once(':') {
        Some(("topk", rest)) => Ok(Compress::TopK(layout(rest)?)),
        Some(("dct", rest)) => Ok(Compress::Dct(layout(rest)?)),
        Some(("rank", rest)) => {
            let parsed = rest
                .split_once(':')
                .and_then(|(r, b)| Some((r.parse::<usize>().ok()?, b.parse::<u32>().ok()?)));
            match parsed {
                Some((r, bits)) if r >= 1 && (2..=16).contains(&bits) => {
                    Ok(Compress::Rank(r, bits))
                }
                _ => anyhow::bail!(
                    "--compress rank:R:BITS needs R >= 1 and BITS in 2..=16, not `{text}`"
                ),
            }
        }
        _ => anyhow::bail!(
            "--compress takes topk:CHUNK:K:BITS, dct:CHUNK:K:BITS or rank:R:BITS, not `{text}`"
        ),
    }
}

/// A run of the bench over some windows, its optimizer state kept or not.
type Run = fn(&Bench, u64, bool) -> Vec<f64>;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: averaging TASK WINDOWS [--miners N] [--outer RATE] [--momentum MU] [--lr-scale X] [--averaged-only] [--compress topk:CHUNK:K:BITS|dct:CHUNK:K:BITS|rank:R:BITS] [--shares]";
    let (Some(task), Some(windows)) = (args.first(), args.get(1)) else {
        anyhow::bail!(usage);
    };
    let windows: u64 = windows.parse()?;
    let option = |name: &str, default: f64| -> anyhow::Result<f64> {
        match args.iter().position(|a| a == name) {
            Some(i) => {
                let v = args
                    .get(i + 1)
                    .ok_or_else(|| anyhow::anyhow!("{name} needs a value"))?;
                Ok(v.parse()?)
            }
            None => Ok(default),
        }
    };
    let miners = option("--miners", 4.0)? as u16;
    anyhow::ensure!(miners >= 1, "at least one miner");
    let engine = TaskEngine::new(TaskSpec::from_file(std::path::Path::new(task))?);
    let heldout = engine.heldout_batches(0x0004_E1D0_u64, 16);
    let bench = Bench {
        engine,
        miners,
        heldout,
        outer: option("--outer", 1.0)?,
        momentum: option("--momentum", 0.0)?,
        lr_scale: option("--lr-scale", 1.0)?,
        compress: match args.iter().position(|a| a == "--compress") {
            None => Compress::Dense,
            Some(i) => parse_compress(args.get(i + 1).map_or("", |a| a.as_str()))?,
        },
        shares: args.iter().any(|a| a == "--shares"),
    };
    let averaged_only = args.iter().any(|a| a == "--averaged-only");
    let runs: [(&str, Run, bool); 4] = [
        ("one machine, AdamW kept", Bench::one_machine, true),
        (
            "one machine, fresh AdamW every window",
            Bench::one_machine,
            false,
        ),
        (
            "miners averaged, AdamW kept per miner",
            Bench::averaged,
            true,
        ),
        (
            "miners averaged, fresh AdamW (the subnet)",
            Bench::averaged,
            false,
        ),
    ];
    println!(
        "| run | {} |",
        (1..=windows)
            .map(|w| w.to_string())
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|{}", "---|".repeat(windows as usize));
    for (name, run, kept) in runs {
        if averaged_only && name.starts_with("one machine") {
            continue;
        }
        if kept && !matches!(bench.compress, Compress::Dense) {
            continue;
        }
        let losses = run(&bench, windows, kept);
        let cells: Vec<String> = losses.iter().map(|l| format!("{l:.4}")).collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
    Ok(())
}
