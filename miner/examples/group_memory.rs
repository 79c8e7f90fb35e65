//! Peak resident memory of one miner window (train, pseudo-gradient, compression with an error
//! feedback residual) when the miner trains the whole model or one parameter group, in a fresh
//! process each (the peak is per process).
//!
//!   cargo run --release -p miner --example group_memory -- tasks/tiny-lm.toml --groups 4 --group 2
//!   cargo run --release -p miner --example group_memory -- tasks/tiny-lm.toml --d-model 512 --whole
//!
//! Flags: --groups G (cut the model into G groups), --group I (train group I) or --whole, --d-model N
//! (a wider transformer), --steps S (inner steps; the peak is reached at the first).

use pseudo_gradient::codec;
use std::time::Instant;
use task::{CpuTrainBackend, TaskEngine, TaskSpec};

/// The allocator the binaries use (see the `miner` binary).
#[global_allocator]
static ALLOCATOR: task::allocator::MiMalloc = task::allocator::MiMalloc;

/// A field of /proc/self/status in KiB (VmHWM: the peak resident set; VmRSS: now).
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() -> anyhow::Result<()> {
    task::allocator::hold_freed_memory();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args
        .first()
        .ok_or_else(|| anyhow::anyhow!("usage: group_memory TASK.toml [--groups G] [--group I | --whole] [--d-model N] [--steps S]"))?;
    let flag = |name: &str| -> anyhow::Result<Option<usize>> {
        match args.iter().position(|a| a == name) {
            Some(i) => Ok(Some(
                args.get(i + 1)
                    .ok_or_else(|| anyhow::anyhow!("{name} needs a value"))?
                    .parse()?,
            )),
            None => Ok(None),
        }
    };
    let mut spec = TaskSpec::from_file(path)?;
    if let Some(d) = flag("--d-model")? {
        spec.model
            .transformer_mut()
            .ok_or_else(|| anyhow::anyhow!("--d-model needs a transformer task"))?
            .d_model = d;
    }
    spec.shards.groups = flag("--groups")?.unwrap_or(1);
    spec.training.set_inner_steps(flag("--steps")?.unwrap_or(3));
    let whole = args.iter().any(|a| a == "--whole");
    let engine = TaskEngine::new(spec);
    let n = engine.num_params();
    let range = if whole {
        0..n
    } else {
        let index = flag("--group")?.unwrap_or(0);
        engine
            .groups()
            .get(index)
            .ok_or_else(|| anyhow::anyhow!("the task has {} groups", engine.groups().len()))?
            .range
            .clone()
    };
    let start = engine.genesis();
    let before = status_kib("VmRSS:");
    let began = Instant::now();
    let outcome = engine
        .train_window::<CpuTrainBackend>(
            &Default::default(),
            &start.params,
            start.inner.as_ref(),
            0,
            7,
            0,
            range.clone(),
            |_, _| {},
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let delta = outcome.into_pseudo_gradient(&start.params);
    let c = &engine.spec().compression;
    let residual = vec![0.0; n];
    let out = codec::compress_range(
        &delta,
        &residual,
        c.layout(),
        c.error_feedback as f32,
        range.clone(),
    );
    let peak = status_kib("VmHWM:");
    println!(
        "{} parameters, training {} ({}): peak resident {:.1} MiB ({:.1} MiB before training), {} payload bytes, {:.1} s",
        n,
        range.len(),
        if whole { "whole model" } else { "one group" },
        mib(peak),
        mib(before),
        out.payload.len(),
        began.elapsed().as_secs_f64()
    );
    println!(
        "{{\"parameters\": {n}, \"trained\": {}, \"peak_mib\": {:.1}, \"before_mib\": {:.1}}}",
        range.len(),
        mib(peak),
        mib(before)
    );
    Ok(())
}
