//! The PyTorch export: tensors named and laid out as PyTorch modules hold them, written as
//! safetensors that an independent reader (the `safetensors` crate) parses, and read back into the
//! very same parameters. For the MLP the exported tensors are also used as PyTorch uses them
//! (`y = x W^T + b`), computed here by hand, and give the engine's held-out loss.

use task::export::{TorchTensor, config, from_torch, read_safetensors, safetensors, to_torch};
use task::{CpuBackend, Inputs, TaskEngine, TaskSpec};

/// The genesis parameters moved by a fixed pattern, so that no two tensors (LayerNorm's ones and
/// zeros included) hold the same values and a swapped or misplaced tensor shows.
fn distinct_params(engine: &TaskEngine) -> Vec<f32> {
    let genesis = engine.genesis();
    genesis
        .params
        .iter()
        .enumerate()
        .map(|(i, p)| p + 0.01 * (((i * 7919) % 997) as f32 / 997.0 - 0.5))
        .collect()
}

fn read_back(
    bytes: &[u8],
) -> (
    Vec<TorchTensor>,
    Option<std::collections::HashMap<String, String>>,
) {
    let (_, metadata) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    (
        read_safetensors(bytes).unwrap(),
        metadata.metadata().clone(),
    )
}

#[test]
fn a_transformer_exports_under_pytorch_names_and_reads_back_bit_for_bit() {
    let mut spec = TaskSpec::from_toml_str(include_str!("../../tasks/localnet-lm.toml")).unwrap();
    let model = spec.model.transformer_mut().unwrap();
    (model.d_model, model.n_layers, model.seq_len) = (16, 2, 16);
    let (d, vocab, seq, mlp) = (16, model.vocab, 16, model.mlp_ratio * 16);
    let engine = TaskEngine::new(spec);
    let params = distinct_params(&engine);
    let tensors = to_torch(engine.layout(), &params).unwrap();

    let shapes: Vec<(&str, Vec<usize>)> = tensors
        .iter()
        .map(|t| (t.name.as_str(), t.shape.clone()))
        .collect();
    let mut expected = vec![
        ("token_embedding.weight".to_string(), vec![vocab, d]),
        ("position_embedding.weight".into(), vec![seq, d]),
    ];
    for l in 0..2 {
        let b = format!("blocks.{l}");
        expected.extend([
            (format!("{b}.attn_norm.weight"), vec![d]),
            (format!("{b}.attn_norm.bias"), vec![d]),
            (format!("{b}.qkv.weight"), vec![3 * d, d]),
            (format!("{b}.qkv.bias"), vec![3 * d]),
            (format!("{b}.attn_out.weight"), vec![d, d]),
            (format!("{b}.attn_out.bias"), vec![d]),
            (format!("{b}.mlp_norm.weight"), vec![d]),
            (format!("{b}.mlp_norm.bias"), vec![d]),
            (format!("{b}.mlp_up.weight"), vec![mlp, d]),
            (format!("{b}.mlp_up.bias"), vec![mlp]),
            (format!("{b}.mlp_down.weight"), vec![d, mlp]),
            (format!("{b}.mlp_down.bias"), vec![d]),
        ]);
    }
    expected.extend([
        ("final_norm.weight".into(), vec![d]),
        ("final_norm.bias".into(), vec![d]),
        ("head.weight".into(), vec![vocab, d]),
        ("head.bias".into(), vec![vocab]),
    ]);
    let mut found: Vec<(String, Vec<usize>)> = shapes
        .iter()
        .map(|(n, s)| (n.to_string(), s.clone()))
        .collect();
    found.sort();
    expected.sort();
    assert_eq!(found, expected);

    let metadata = [("format".to_string(), "pt".to_string())].into();
    let bytes = safetensors(&tensors, &metadata);
    let (read, meta) = read_back(&bytes);
    assert_eq!(meta.unwrap()["format"], "pt");
    let back = from_torch(engine.layout(), &read).unwrap();
    assert_eq!(
        back.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        params.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    assert_eq!(config(&engine.spec().model)["n_layers"], 2);

    // A tensor missing, misshapen or unknown is an error, not a silently different model.
    let mut missing = read.clone();
    missing.retain(|t| t.name != "head.bias");
    assert!(from_torch(engine.layout(), &missing).is_err());
    let mut extra = read.clone();
    extra.push(TorchTensor {
        name: "lm_head.weight".into(),
        shape: vec![1],
        values: vec![0.0],
    });
    assert!(from_torch(engine.layout(), &extra).is_err());
}

#[test]
fn an_mlp_export_used_as_pytorch_uses_it_gives_the_engines_loss() {
    let engine = TaskEngine::new(
        TaskSpec::from_toml_str(include_str!("../../tasks/wine-quality.toml")).unwrap(),
    );
    let params = distinct_params(&engine);
    let tensors = to_torch(engine.layout(), &params).unwrap();
    let (read, _) = read_back(&safetensors(&tensors, &Default::default()));
    let by_name = |name: &str| read.iter().find(|t| t.name == name).unwrap();
    let layers = read.iter().filter(|t| t.name.ends_with(".weight")).count();

    let batch = &engine.heldout_batches(7, 1)[0];
    let Inputs::Features(features) = &batch.inputs else {
        panic!("a table task's batches hold features")
    };
    let width = features.len() / batch.rows;
    let mut total = 0.0f64;
    for row in 0..batch.rows {
        let mut x: Vec<f32> = features[row * width..(row + 1) * width].to_vec();
        for l in 0..layers {
            // nn.Linear: weight [out, in], y = x W^T + b.
            let (w, b) = (
                by_name(&format!("layers.{l}.weight")),
                by_name(&format!("layers.{l}.bias")),
            );
            let (out, inp) = (w.shape[0], w.shape[1]);
            assert_eq!(inp, x.len());
            x = (0..out)
                .map(|o| {
                    let dot: f32 = (0..inp).map(|i| w.values[o * inp + i] * x[i]).sum();
                    let y = dot + b.values[o];
                    if l + 1 < layers { y.max(0.0) } else { y }
                })
                .collect();
        }
        let max = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let log_sum = x.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
        total += log_sum - x[batch.targets[row] as usize] as f64;
    }
    let by_hand = total / batch.rows as f64;
    let engine_loss =
        engine.losses::<CpuBackend>(&Default::default(), &params, std::slice::from_ref(batch))[0];
    assert!(
        (by_hand - engine_loss as f64).abs() < 1e-4,
        "by hand {by_hand}, engine {engine_loss}"
    );
}
