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
//! cargo run --release -p subnet-cli --example averaging -- TASK WINDOWS [--miners N] [--outer RATE]
//! [--momentum MU] [--lr-scale X] [--averaged-only]

use subnet_cli::efficacy::window_seed;
use task::{Batch, CpuBackend, CpuTrainBackend, TaskEngine, TaskSpec, Trainer};

struct Bench {
    engine: TaskEngine,
    miners: u16,
    heldout: Vec<Batch>,
    outer: f64,
    momentum: f64,
    lr_scale: f64,
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
        let mut losses = Vec::new();
        for window in 0..windows {
            let lr = self.engine.spec().inner_lr(window) * self.lr_scale;
            let mut sum = vec![0f64; params.len()];
            for (trainer, batches) in trainers.iter_mut().zip(self.batches(window)) {
                if !kept {
                    *trainer = self.trainer();
                }
                let end = trainer.train_from(&params, &batches, lr, |_, _| {}).end;
                sum.iter_mut().zip(end).for_each(|(s, e)| *s += e as f64);
            }
            let n = self.miners as f64;
            for ((p, s), m) in params.iter_mut().zip(sum).zip(buffer.iter_mut()) {
                let g = *p as f64 - s / n;
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
        losses
    }
}

/// A run of the bench over some windows, its optimizer state kept or not.
type Run = fn(&Bench, u64, bool) -> Vec<f64>;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: averaging TASK WINDOWS [--miners N] [--outer RATE] [--momentum MU] [--lr-scale X] [--averaged-only]";
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
        let losses = run(&bench, windows, kept);
        let cells: Vec<String> = losses.iter().map(|l| format!("{l:.4}")).collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
    Ok(())
}
