//! `subnet efficacy`: what the subnet's training loses to compression and to training apart, on equal
//! tokens. Runs, from the task's genesis, the same windows of the same miners' pages
//! - as one machine: AdamW with its state kept across windows, each step on the batches the miners
//!   take at that step put together (the synchronous data-parallel reference),
//! - as the subnet with dense f32 gradients, and
//! - as the subnet with each compression layout asked for (the task's first),
//!
//! where a subnet window is what the validator does with honest miners: each miner trains the
//! window from the checkpoint with a fresh optimizer, or with the inner state the checkpoint
//! carries where the task sets `training.carry_moments` (`TaskEngine::train_window`), and sends its
//! pseudo-gradient through the codec with its own error-feedback residual, and the validator's own
//! window steps (`validator::window`: its reference training, measuring, the assignment check,
//! leave-one-out contributions, the decisions, the selection, clipping and outer step) make the
//! next checkpoint. Audits, which honest miners pass, run only where an assignment check asks for
//! one. It prints the held-out loss of every run after every window, a table, and writes both and
//! a plot.

mod subnet;

use anyhow::Context;
use pseudo_gradient::codec::Layout;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;
use subnet::subnet;
use task::{Batch, CpuBackend, CpuTrainBackend, TaskEngine, TaskSpec};

/// What to compare.
#[derive(Clone, Debug)]
pub struct Setup {
    pub miners: u16,
    pub windows: u64,
    /// Compression layouts besides dense f32, the task's own first.
    pub layouts: Vec<Layout>,
    /// Held-out batches the loss is measured on.
    pub heldout_batches: usize,
    /// Run only the compressed layouts (for sweeps: the references do not change with them).
    pub compressed_only: bool,
    /// Which pages and eval batches the runs draw (`drawn_seed`); 0: the reported ones.
    pub draw: u64,
}

/// One run's held-out loss after each window (index 0: genesis) and what its windows did.
#[derive(Clone, Debug)]
pub struct Run {
    pub name: String,
    /// Payload bytes per miner and window (0 for the single machine).
    pub bytes: usize,
    pub losses: Vec<f64>,
    /// Windows in which no gradient scored as helpful, so nothing was aggregated.
    pub idle_windows: Vec<u64>,
    /// Windows whose aggregate raised the held-out loss.
    pub worse_windows: Vec<u64>,
    /// Windows in which the copy check took honest miners for copies of each other (their scores
    /// shared).
    pub copy_windows: Vec<u64>,
    /// Windows that stepped at a fraction of the outer rate below the whole one
    /// (`scoring.step_scales`), with the fraction.
    pub scaled_windows: Vec<(u64, f64)>,
    /// Of the honest miners' windows, how many earned (the verdict `Earned`): how often the
    /// validator pays honest work.
    pub earned: usize,
    /// Seconds the run's windows took (for the subnet: every miner's training and the validator's
    /// steps, one after another on this machine), held-out measurements excluded.
    pub seconds: f64,
}

impl Run {
    pub(crate) fn last(&self) -> f64 {
        *self.losses.last().expect("genesis loss at least")
    }
}

/// Parses `CHUNK:K:BITS` (bits 8 for the byte layout, 1 to 7 for the packed one).
pub fn parse_layout(text: &str) -> Result<Layout, String> {
    let parts: Vec<usize> = text
        .split(':')
        .map(|p| p.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("`{text}` is not CHUNK:K:BITS"))?;
    match parts[..] {
        [chunk, k, bits] if (2..=65536).contains(&chunk) && (1..=chunk).contains(&k) => {
            match bits {
                1..=8 => Ok(Layout::of_task(chunk, k, bits as u32)),
                _ => Err(format!("`{text}`: bits must be in 1..=8")),
            }
        }
        _ => Err(format!(
            "`{text}`: CHUNK in 2..=65536, K in 1..=CHUNK and BITS in 1..=8"
        )),
    }
}

/// The window seed of `window` in these runs (every run sees the same pages): draw 0's.
pub fn window_seed(window: u64) -> u64 {
    drawn_seed(0, window)
}

/// The window seed of `window` in the runs of `draw` (`--draw`): each draw gives other pages and
/// other eval batches, the same in each of its runs. Draw 0 is the one BENCHMARKS.md reports.
pub fn drawn_seed(draw: u64, window: u64) -> u64 {
    salted(0xEFF1CAC7, draw, window)
}

/// The validator's eval seed of `window` in the runs of `draw`.
pub(crate) fn eval_seed(draw: u64, window: u64) -> u64 {
    salted(0x5EED, draw, window)
}

/// The seed of `window` under `salt`; draw 0 adds nothing, so that its seeds are those reported.
fn salted(salt: u64, draw: u64, window: u64) -> u64 {
    match draw {
        0 => task::rng::derive_seed(&[window, salt]),
        draw => task::rng::derive_seed(&[window, salt, draw]),
    }
}

pub(crate) struct Measure<'a> {
    engine: &'a TaskEngine,
    heldout: Vec<Batch>,
}

impl Measure<'_> {
    pub(crate) fn loss(&self, params: &[f32]) -> f64 {
        mean(
            &self
                .engine
                .losses::<CpuBackend>(&Default::default(), params, &self.heldout),
        )
    }
}

fn mean(xs: &[f32]) -> f64 {
    xs.iter().map(|&x| x as f64).sum::<f64>() / xs.len().max(1) as f64
}

/// The single machine: the miners' batches of each step put together, AdamW state kept.
fn single_machine(engine: &TaskEngine, setup: &Setup, measure: &Measure) -> Run {
    let device = Default::default();
    let mut params = engine.genesis().params.to_vec();
    let mut trainer = engine.trainer::<CpuTrainBackend>(&device);
    let mut losses = vec![measure.loss(&params)];
    let mut seconds = 0.0;
    for window in 0..setup.windows {
        let started = Instant::now();
        let seed = drawn_seed(setup.draw, window);
        let per_miner: Vec<Vec<Batch>> = (0..setup.miners)
            .map(|uid| {
                let a = engine
                    .assignment(window, seed, uid)
                    .expect("uid fits the window");
                engine.training_batches(&a, seed)
            })
            .collect();
        let steps = per_miner[0].len();
        let batches: Vec<Batch> = (0..steps)
            .map(|s| Batch::concat(&per_miner.iter().map(|b| b[s].clone()).collect::<Vec<_>>()))
            .collect();
        params = trainer
            .train_from(&params, &batches, engine.spec().inner_lr(window), |_, _| {})
            .end;
        seconds += started.elapsed().as_secs_f64();
        losses.push(measure.loss(&params));
        progress("single machine", window, &losses);
    }
    Run {
        name: "one machine, AdamW (same tokens)".into(),
        bytes: 0,
        losses,
        idle_windows: Vec::new(),
        copy_windows: Vec::new(),
        scaled_windows: Vec::new(),
        earned: 0,
        worse_windows: Vec::new(),
        seconds,
    }
}

pub(crate) fn progress(name: &str, window: u64, losses: &[f64]) {
    eprintln!(
        "  {name}: window {window} held-out loss {:.4}",
        losses.last().copied().unwrap_or(f64::NAN)
    );
}

/// Everything `subnet efficacy` measured.
pub struct Comparison {
    pub task: String,
    pub params: usize,
    pub setup: Setup,
    pub floor: Option<f64>,
    pub tokens_per_window: usize,
    pub runs: Vec<Run>,
    pub seconds: f64,
}

/// Runs the comparison for `spec`.
pub fn compare(spec: TaskSpec, setup: Setup) -> anyhow::Result<Comparison> {
    anyhow::ensure!(setup.miners >= 1, "at least one miner");
    anyhow::ensure!(setup.windows >= 1, "at least one window");
    anyhow::ensure!(
        spec.shards.groups <= 1,
        "task {} cuts its model into {} parameter groups; the comparison trains whole models (set shards.groups = 0 in a copy of the file)",
        spec.task.name,
        spec.shards.groups
    );
    let engine = TaskEngine::new(spec.clone());
    let started = Instant::now();
    let measure = Measure {
        engine: &engine,
        heldout: engine.heldout_batches(0x0004_E1D0_u64, setup.heldout_batches),
    };
    eprintln!(
        "{}: {} parameters, {} miners, {} windows",
        engine.spec().task.name,
        engine.num_params(),
        setup.miners,
        setup.windows
    );
    let mut runs = Vec::new();
    if !setup.compressed_only {
        runs.push(single_machine(&engine, &setup, &measure));
        runs.push(subnet(&spec, &setup, &measure, Layout::DenseF32));
    }
    for &layout in &setup.layouts {
        runs.push(subnet(&spec, &setup, &measure, layout));
    }
    Ok(Comparison {
        task: engine.spec().task.name.clone(),
        params: engine.num_params(),
        floor: engine.loss_floor(),
        tokens_per_window: engine.spec().tokens_per_miner_window() * setup.miners as usize,
        setup,
        runs,
        seconds: started.elapsed().as_secs_f64(),
    })
}

impl Comparison {
    /// The table: one row per run, gaps against the dense subnet and the single machine.
    pub fn table(&self) -> String {
        let (single, dense) = if self.setup.compressed_only {
            (f64::NAN, f64::NAN)
        } else {
            (self.runs[0].last(), self.runs[1].last())
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}, {} parameters, {} miners, {} windows ({} training tokens), held-out loss after the last window{}:\n",
            self.task,
            self.params,
            self.setup.miners,
            self.setup.windows,
            self.tokens_per_window as u64 * self.setup.windows,
            self.floor
                .map_or(String::new(), |f| format!(" (lowest reachable {f:.4})"))
        );
        out.push_str("| run | bytes per gradient | vs dense f32 | held-out loss | vs dense subnet | vs one machine | idle windows | windows the aggregate made worse | stepped below the whole rate | honest taken for copies | miner-windows that earned | s per window |\n");
        out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        let dense_bytes = Layout::DenseF32.payload_len(self.params) as f64;
        for run in &self.runs {
            let last = run.last();
            let ratio = if run.bytes == 0 {
                "-".to_string()
            } else {
                format!("{:.1}x smaller", dense_bytes / run.bytes as f64)
            };
            let _ = writeln!(
                out,
                "| {} | {} | {ratio} | {last:.4} | {} | {} | {} | {} | {} | {} | {} | {:.2} |",
                run.name,
                if run.bytes == 0 {
                    "-".to_string()
                } else {
                    run.bytes.to_string()
                },
                gap(last, dense),
                gap(last, single),
                list(&run.idle_windows),
                list(&run.worse_windows),
                if run.scaled_windows.is_empty() {
                    "none".to_string()
                } else {
                    run.scaled_windows
                        .iter()
                        .map(|(w, f)| format!("{w} ({f})"))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
                if run.bytes == 0 {
                    "-".to_string()
                } else {
                    list(&run.copy_windows)
                },
                if run.bytes == 0 {
                    "-".to_string()
                } else {
                    format!(
                        "{} of {}",
                        run.earned,
                        self.setup.miners as u64 * self.setup.windows
                    )
                },
                run.seconds / self.setup.windows as f64,
            );
        }
        let _ = writeln!(out, "\n({:.0} s on this machine.)", self.seconds);
        out
    }

    /// The held-out loss of every run after every window, as CSV.
    pub fn csv(&self) -> String {
        let mut out = String::from("window");
        for run in &self.runs {
            let _ = write!(out, ",\"{}\"", run.name);
        }
        out.push('\n');
        for w in 0..=self.setup.windows as usize {
            let _ = write!(out, "{w}");
            for run in &self.runs {
                let _ = write!(out, ",{:.6}", run.losses[w]);
            }
            out.push('\n');
        }
        out
    }

    /// Writes `efficacy.md`, `efficacy.csv` and `efficacy.png` to `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::write(dir.join("efficacy.md"), self.table())?;
        std::fs::write(dir.join("efficacy.csv"), self.csv())?;
        let series: Vec<(String, Vec<f64>)> = self
            .runs
            .iter()
            .map(|r| (r.name.clone(), r.losses.clone()))
            .collect();
        crate::plot::curves(
            "held-out loss by window",
            &series,
            self.floor,
            &dir.join("efficacy.png"),
        )
    }
}

/// `loss` against `reference` in percent, or "-" where the reference did not run.
fn gap(loss: f64, reference: f64) -> String {
    if reference.is_finite() {
        format!("{:+.1}%", 100.0 * (loss / reference - 1.0))
    } else {
        "-".into()
    }
}

fn list(windows: &[u64]) -> String {
    if windows.is_empty() {
        "none".into()
    } else {
        windows
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_parse_from_chunk_k_and_bits() {
        assert_eq!(
            parse_layout("4096:8:2"),
            Ok(Layout::PackedTopK {
                chunk: 4096,
                k: 8,
                bits: 2
            })
        );
        assert_eq!(
            parse_layout("1024:128:8"),
            Ok(Layout::TopK {
                chunk: 1024,
                k: 128
            })
        );
        for bad in ["4096:8", "4096:0:2", "4096:8:9", "1:1:2", "a:b:c"] {
            assert!(parse_layout(bad).is_err(), "{bad}");
        }
    }

    /// Draw 0 keeps the seeds the reported figures were measured with; every other draw gives
    /// other pages and eval batches in every window.
    #[test]
    fn each_draw_gives_other_pages_and_draw_zero_the_reported_ones() {
        for window in 0..4 {
            assert_eq!(
                drawn_seed(0, window),
                task::rng::derive_seed(&[window, 0xEFF1CAC7])
            );
            assert_eq!(
                eval_seed(0, window),
                task::rng::derive_seed(&[window, 0x5EED])
            );
            for draw in 1..4 {
                assert_ne!(drawn_seed(draw, window), drawn_seed(0, window));
                assert_ne!(eval_seed(draw, window), eval_seed(0, window));
                assert_ne!(drawn_seed(draw, window), drawn_seed(draw + 1, window));
            }
        }
    }

    /// The whole comparison on a small table task: every run learns from genesis, the compressed
    /// one sends what its layout says, and the table, CSV and plot are written.
    #[test]
    fn the_comparison_trains_every_run_and_writes_its_figures() {
        let spec =
            TaskSpec::from_toml_str(include_str!("../../../tasks/wine-quality.toml")).unwrap();
        let packed = Layout::PackedTopK {
            chunk: 512,
            k: 32,
            bits: 2,
        };
        let setup = Setup {
            miners: 2,
            windows: 2,
            layouts: vec![packed],
            heldout_batches: 4,
            compressed_only: false,
            draw: 0,
        };
        let c = compare(spec, setup).unwrap();
        assert_eq!(c.runs.len(), 3);
        for run in &c.runs {
            assert_eq!(run.losses.len(), 3, "{}", run.name);
            assert!(run.losses.iter().all(|l| l.is_finite()), "{}", run.name);
        }
        let (single, dense) = (&c.runs[0], &c.runs[1]);
        assert!(single.last() < single.losses[0], "{:?}", single.losses);
        assert!(dense.last() < dense.losses[0], "{:?}", dense.losses);
        assert_eq!(c.runs[2].bytes, packed.payload_len(c.params));
        assert!(c.runs.iter().all(|r| r.seconds > 0.0));
        let dir = tempfile::tempdir().unwrap();
        c.write(dir.path()).unwrap();
        let table = std::fs::read_to_string(dir.path().join("efficacy.md")).unwrap();
        assert!(table.contains("top-32 of 512, 2 bits"), "{table}");
        let csv = std::fs::read_to_string(dir.path().join("efficacy.csv")).unwrap();
        assert_eq!(csv.lines().count(), 4, "{csv}");
        assert!(
            std::fs::metadata(dir.path().join("efficacy.png"))
                .unwrap()
                .len()
                > 1000
        );
    }
}
