//! Training throughput of tiny-lm on burn's CPU backends and the single-precision matmul rate of
//! flex, measured in one run and printed as one JSON object (`bench/run.sh` puts PyTorch's figures
//! beside them): `cargo run --release -p task --example benchmark --features ndarray [STEPS]`.

use burn::prelude::*;
use std::time::Instant;
use task::{TaskEngine, TaskSpec};

/// The allocator the binaries use (see the `miner` binary).
#[global_allocator]
static ALLOCATOR: task::allocator::MiMalloc = task::allocator::MiMalloc;

/// Training tokens/s of the median and of the fastest of `steps` steps after two warm-up steps
/// (the fastest is the least disturbed by other work on a shared machine: levers are compared by it).
fn tokens_per_second<B: burn::tensor::backend::AutodiffBackend>(
    engine: &TaskEngine,
    steps: usize,
) -> (f64, f64) {
    let start = engine.genesis();
    let assignment = engine.assignment(0, 1, 0).expect("uid 0 fits");
    let batches = engine.page_batches(
        &assignment.pages,
        7,
        steps + 2,
        engine.spec().training.batch_size,
    );
    let mut stamps = vec![Instant::now()];
    let device = Default::default();
    engine.train::<B>(&device, &start.params, 0, &batches, |_, _| {
        stamps.push(Instant::now())
    });
    let mut times: Vec<f64> = stamps
        .windows(2)
        .skip(2)
        .map(|w| w[1].duration_since(w[0]).as_secs_f64())
        .collect();
    times.sort_by(f64::total_cmp);
    let tokens = (engine.spec().training.batch_size * engine.spec().targets_per_example()) as f64;
    (tokens / times[times.len() / 2], tokens / times[0])
}

/// GFLOP/s of a 1024 x 1024 f32 matmul on `B`.
fn matmul_gflops<B: Backend>() -> f64 {
    let n: usize = 1024;
    let device = Default::default();
    let a = Tensor::<B, 2>::random([n, n], burn::tensor::Distribution::Default, &device);
    let b = Tensor::<B, 2>::random([n, n], burn::tensor::Distribution::Default, &device);
    let _ = a.clone().matmul(b.clone()).into_data();
    let reps: usize = 20;
    let start = Instant::now();
    for _ in 0..reps {
        let _ = a.clone().matmul(b.clone()).into_data();
    }
    2.0 * (n * n * n * reps) as f64 / start.elapsed().as_secs_f64() / 1e9
}

fn main() {
    task::allocator::hold_freed_memory();
    let steps: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("STEPS is a number"))
        .unwrap_or(20);
    let spec =
        TaskSpec::from_toml_str(include_str!("../../tasks/tiny-lm.toml")).expect("tiny-lm parses");
    let engine = TaskEngine::new(spec);
    let (flex, flex_best) =
        tokens_per_second::<burn::backend::Autodiff<burn::backend::Flex>>(&engine, steps);
    #[cfg(feature = "ndarray")]
    let ndarray = format!(
        "{:.1}",
        tokens_per_second::<burn::backend::Autodiff<burn::backend::NdArray>>(&engine, steps).0
    );
    #[cfg(not(feature = "ndarray"))]
    let ndarray = "null".to_string();
    println!(
        "{{\"parameters\": {}, \"steps\": {steps}, \"flex_tokens_per_s\": {flex:.1}, \"flex_best_tokens_per_s\": {flex_best:.1}, \"ndarray_tokens_per_s\": {ndarray}, \"flex_matmul_gflops\": {:.2}}}",
        engine.num_params(),
        matmul_gflops::<burn::backend::Flex>()
    );
}
