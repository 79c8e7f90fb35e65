use subnet_proto::codec::{self, Layout};
use task::{TaskEngine, TaskSpec};
use validator::evaluate;

fn main() {
    let mut spec = TaskSpec::from_toml_str(include_str!("../../tasks/localnet-lm.toml")).unwrap();
    let args: Vec<String> = std::env::args().collect();
    spec.scoring.assignment_batches = args[1].parse().unwrap();
    let seeds: u64 = args[2].parse().unwrap();
    let engine = TaskEngine::new(spec);
    let layout = Layout::of_task(1024, 128);
    let n = engine.num_params();
    let send = |d: &[f32], r: &mut Vec<f32>| {
        let out = codec::compress(d, r, layout, 1.0);
        *r = out.residual_out;
        codec::decode(&out.payload, n).unwrap()
    };
    for seed in 0..seeds {
        let mut params = engine.genesis().params.to_vec();
        let mut residuals = vec![vec![0.0f32; n]; 6];
        let mut ref_residual = vec![0.0f32; n];
        for window in 1..5u64 {
            let seed_w = task::rng::derive_seed(&[seed, window]);
            let seed = seed_w;
            let reference = evaluate::reference(&engine, &params, window, seed, 8, 999 + window);
            let (plain, _) = evaluate::reference_payload(&engine, &reference, &[]);
            let chained = send(&reference, &mut ref_residual);
            let clip = task::aggregate::l2_norm(&chained);
            let mut grads = Vec::new();
            let mut line = format!("seed {seed} w{window}:");
            for uid in 2..6u16 {
                let g = evaluate::reexecute(&engine, &params, window, seed, uid).unwrap();
                let sent = send(&g, &mut residuals[uid as usize]);
                for control in [&plain, &chained] {
                    let a = evaluate::assignment_evidence(&engine, &params, &sent, control, clip, window, seed, 77 + uid as u64, uid).unwrap();
                    line += &format!(" {:.4}", a.check().p_value);
                }
                line += " |";
                grads.push(sent);
            }
            for control in [&plain, &chained] {
                let a = evaluate::assignment_evidence(&engine, &params, &grads[0], control, clip, window, seed, 5 + window, 7).unwrap();
                line += &format!(" fr {:.4}", a.check().p_value);
            }
            println!("{line}");
            let refs: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
            let mean = task::aggregate::aggregate_clipped(&refs, clip).unwrap();
            params = task::aggregate::outer_sgd_step(&params, &mean, 1.0);
        }
    }
}
