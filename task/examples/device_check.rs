//! Trains one miner window of a task on the CPU and on another device, and prints each one's
//! training throughput and how far the device's pseudo-gradient is from the CPU's (relative L2):
//! the backend noise a validator's spot-check tolerance must allow for.
//!
//! `cargo run --release -p task --features cuda --example device_check -- tasks/tiny-lm.toml cuda:0`

use scoring::checks::relative_difference;
use std::time::Instant;
use task::{Device, TaskEngine, TaskSpec};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_else(|| "tasks/tiny-lm.toml".into());
    let device: Device = args
        .next()
        .unwrap_or_else(|| "cpu".into())
        .parse()
        .map_err(anyhow::Error::msg)?;
    let windows: u64 = args.next().map_or(Ok(2), |w| w.parse())?;
    let engine = TaskEngine::new(TaskSpec::from_file(&task)?);
    let spec = engine.spec();
    let tokens = spec.tokens_per_miner_window() as f64;
    let start = engine.genesis().params;
    println!(
        "{}: {} parameters, {} tokens per window",
        spec.task.name,
        engine.num_params(),
        tokens
    );
    let run = |device: Device| -> anyhow::Result<Vec<f32>> {
        let mut delta = Vec::new();
        for window in 0..windows {
            let began = Instant::now();
            let outcome = device.train_window(
                &engine,
                &start,
                None,
                window,
                7,
                1,
                0..start.len(),
                |_, _| {},
            )?;
            let seconds = began.elapsed().as_secs_f64();
            println!(
                "  {device}: window {window} in {seconds:.2} s, {:.0} tokens/s, last loss {:.4}",
                tokens / seconds,
                outcome.losses.last().copied().unwrap_or(f32::NAN)
            );
            delta = outcome.pseudo_gradient(&start);
        }
        Ok(delta)
    };
    let on_device = run(device)?;
    let on_cpu = run(Device::Cpu)?;
    println!(
        "relative L2 difference of the last window's pseudo-gradient, {device} vs cpu: {:.3e}",
        relative_difference(&on_device, &on_cpu)
    );
    Ok(())
}
