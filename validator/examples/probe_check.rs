use task::{TaskEngine, TaskSpec};
use validator::evaluate;
use task::aggregate::l2_norm;

fn main() {
    let mut spec = TaskSpec::from_toml_str(include_str!("../../tasks/localnet-lm.toml")).unwrap();
    let args: Vec<String> = std::env::args().collect();
    spec.scoring.eval_step = args[1].parse().unwrap();
    spec.scoring.assignment_batches = args[2].parse().unwrap();
    let engine = TaskEngine::new(spec);
    let genesis = engine.genesis();
    let mut params = genesis.params.to_vec();
    let seed = 12345u64;
    for window in 1..4u64 {
        let reference = evaluate::reference(&engine, &params, window, seed, 8, 999 + window);
        let rn = l2_norm(&reference);
        let mut grads = Vec::new();
        for uid in 2..6u16 {
            let g = evaluate::reexecute(&engine, &params, window, seed, uid).unwrap();
            let c = &engine.spec().compression;
            let out = subnet_proto::codec::compress(&g, &vec![0.0; g.len()], subnet_proto::codec::Layout::of_task(c.chunk, c.top_k), 1.0);
            let sent = subnet_proto::codec::decode(&out.payload, g.len()).unwrap();
            let cref = {
                let out = subnet_proto::codec::compress(&reference, &vec![0.0; g.len()], subnet_proto::codec::Layout::of_task(c.chunk, c.top_k), 1.0);
                subnet_proto::codec::decode(&out.payload, g.len()).unwrap()
            };
            for (name, control) in [("cref", cref)] {
                for (gname, grad) in [("sent", &sent)] {
                    let a = evaluate::assignment_evidence(&engine, &params, grad, &control, rn, window, seed, 77 + uid as u64, uid).unwrap();
                    let check = a.check();
                    println!("w{window} uid{uid} control={name} {gname}: norm {:.3} ref {:.3} mean {:.5} se {:.5} p {:.4} hb_gain {:.4} harm_p {:.3}", l2_norm(grad), rn, check.mean, check.standard_error, check.p_value, check.held_back_gain, check.held_back_harm_p);
                }
            }
            grads.push(sent);
        }
        let refs: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
        let mean = task::aggregate::aggregate_clipped(&refs, rn).unwrap();
        params = task::aggregate::outer_sgd_step(&params, &mean, 1.0);
    }
}
