//! Training throughput of tiny-lm on burn's CPU backends, measured in one run:
//! `cargo run --release -p task --example backends --features ndarray`.

use std::time::Instant;
use task::{TaskEngine, TaskSpec};

fn tokens_per_second<B: burn::tensor::backend::AutodiffBackend>(
    engine: &TaskEngine,
    steps: usize,
) -> f64 {
    let start = engine.genesis();
    let assignment = engine.assignment(0, 1, 0).expect("uid 0 fits");
    let batches = engine.page_batches(
        &assignment.pages,
        7,
        steps + 2,
        engine.spec().training.batch_size,
    );
    let mut stamps = Vec::new();
    let device = Default::default();
    engine.train::<B>(&device, &start.params, &batches, |_, _| {
        stamps.push(Instant::now())
    });
    // The first two steps warm caches and allocators; time the rest.
    let timed = stamps[stamps.len() - 1]
        .duration_since(stamps[1])
        .as_secs_f64();
    let tokens = steps * engine.spec().training.batch_size * engine.spec().model.seq_len;
    tokens as f64 / timed
}

fn main() {
    let spec =
        TaskSpec::from_toml_str(include_str!("../../tasks/tiny-lm.toml")).expect("tiny-lm parses");
    let engine = TaskEngine::new(spec);
    let steps = 10;
    println!(
        "tiny-lm, {} parameters, {steps} timed training steps",
        engine.num_params()
    );
    let flex = tokens_per_second::<burn::backend::Autodiff<burn::backend::Flex>>(&engine, steps);
    println!("flex     {flex:>10.0} tokens/s");
    #[cfg(feature = "ndarray")]
    {
        let nd =
            tokens_per_second::<burn::backend::Autodiff<burn::backend::NdArray>>(&engine, steps);
        println!(
            "ndarray  {nd:>10.0} tokens/s  (flex is {:.2}x ndarray)",
            flex / nd
        );
    }
}
