//! The gradient codec's speed and size: for a pseudo-gradient of N parameters (default tiny-lm's
//! 3,323,648; values from a fixed pseudo-random heavy-tailed draw), each layout's payload size
//! against dense f32, and the median rate of `compress` (with an error-feedback residual) and of
//! `decode_as`, in GB/s of the dense f32 vector. The last line is one JSON object for
//! `bench/run.sh`.
//!
//! `cargo run --release -p subnet-proto --example codec_bench -- [PARAMETERS] [REPEATS]`

use pseudo_gradient::codec::{self, Layout};
use std::time::Instant;

/// A fixed draw of `n` values whose magnitudes spread over several orders, as gradients do.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = ((state >> 40) as f32 + 0.5) / (1u64 << 24) as f32;
            let sign = if state & 1 == 0 { 1.0 } else { -1.0 };
            sign * 1e-3 * (-u.ln()).powi(3)
        })
        .collect()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map_or(3_323_648, |a| a.parse().expect("PARAMETERS"));
    let repeats: usize = args.next().map_or(7, |a| a.parse().expect("REPEATS"));
    let dense = values(n, 1);
    let residual = values(n, 2);
    let gb = (4 * n) as f64 / 1e9;
    let layouts = [
        Layout::DenseF32,
        Layout::TopK {
            chunk: 1024,
            k: 128,
        },
        Layout::PackedTopK {
            chunk: 1024,
            k: 64,
            bits: 2,
        },
        Layout::PackedTopK {
            chunk: 4096,
            k: 8,
            bits: 2,
        },
    ];
    let mut rows = Vec::new();
    for layout in layouts {
        let mut encode = Vec::new();
        let mut decode = Vec::new();
        let mut payload = Vec::new();
        for _ in 0..repeats {
            let start = Instant::now();
            let out = codec::compress(&dense, &residual, layout, 1.0);
            encode.push(start.elapsed().as_secs_f64());
            let start = Instant::now();
            let back = codec::decode_as(&out.payload, n, layout).expect("own payload decodes");
            decode.push(start.elapsed().as_secs_f64());
            assert_eq!(back.len(), n);
            payload = out.payload;
        }
        let (encode, decode) = (gb / median(encode), gb / median(decode));
        println!(
            "{layout:<24} {:>12} bytes {:>8.1}x  compress {encode:>6.2} GB/s  decode {decode:>6.2} GB/s",
            payload.len(),
            layout.ratio(n)
        );
        rows.push(format!(
            "{{\"layout\": \"{layout}\", \"bytes\": {}, \"ratio\": {:.2}, \"encode_gbps\": {encode:.3}, \"decode_gbps\": {decode:.3}}}",
            payload.len(),
            layout.ratio(n)
        ));
    }
    println!(
        "{{\"parameters\": {n}, \"repeats\": {repeats}, \"layouts\": [{}]}}",
        rows.join(", ")
    );
}
