//! The global model as a PyTorch user expects it: tensors named as the modules' fields, in
//! PyTorch's layouts (a `Linear` weight is `[out, in]`, burn keeps `[in, out]`; a `LayerNorm`'s
//! `gamma` and `beta` are `weight` and `bias`), written as safetensors with a config that says which
//! architecture they fill. `bench/export_check.py` loads an export into a plain PyTorch module.

use crate::architecture::ModelSpec;
use crate::params::{ParamEntry, ParamLayout};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// One tensor as PyTorch names and lays it out.
#[derive(Clone, Debug, PartialEq)]
pub struct TorchTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Why tensors could not be read back into a model.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ExportError {
    #[error("the export has no tensor {0}")]
    Missing(String),
    #[error("tensor {name} has shape {found:?}, the model's is {expected:?}")]
    Shape {
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("the export holds tensors the model does not have: {0}")]
    Extra(String),
    #[error("{0} values for a model of {1} parameters")]
    Length(usize, usize),
    #[error("not a safetensors file of f32 tensors: {0}")]
    Format(String),
}

/// The PyTorch name of a parameter: its path inside the model (the layout's names start with the
/// task model's variant, `Transformer.` or `Mlp.`), with `LayerNorm`'s `gamma`/`beta` as
/// `weight`/`bias`.
fn torch_name(entry: &ParamEntry) -> String {
    let name = entry
        .name
        .split_once('.')
        .map_or(entry.name.as_str(), |(_, rest)| rest);
    match (entry.owner.as_str(), name.rsplit_once('.')) {
        ("LayerNorm", Some((module, "gamma"))) => format!("{module}.weight"),
        ("LayerNorm", Some((module, "beta"))) => format!("{module}.bias"),
        _ => name.to_string(),
    }
}

/// Whether PyTorch keeps this parameter transposed: a `Linear`'s weight.
fn transposed(entry: &ParamEntry) -> bool {
    entry.owner == "Linear" && entry.shape.len() == 2 && entry.name.ends_with(".weight")
}

fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// The model's parameters (a flat vector in `layout`'s order) as PyTorch tensors, in that order.
pub fn to_torch(layout: &ParamLayout, params: &[f32]) -> Result<Vec<TorchTensor>, ExportError> {
    if params.len() != layout.total {
        return Err(ExportError::Length(params.len(), layout.total));
    }
    Ok(layout
        .entries
        .iter()
        .map(|e| {
            let values = &params[e.offset..e.offset + e.len];
            let (shape, values) = if transposed(e) {
                let (rows, cols) = (e.shape[0], e.shape[1]);
                (vec![cols, rows], transpose(values, rows, cols))
            } else {
                (e.shape.clone(), values.to_vec())
            };
            TorchTensor {
                name: torch_name(e),
                shape,
                values,
            }
        })
        .collect())
}

/// The flat parameter vector back from PyTorch tensors: every tensor of the model, by name, with
/// its shape, and nothing else.
pub fn from_torch(layout: &ParamLayout, tensors: &[TorchTensor]) -> Result<Vec<f32>, ExportError> {
    let mut by_name: BTreeMap<&str, &TorchTensor> =
        tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut params = vec![0.0f32; layout.total];
    for e in &layout.entries {
        let name = torch_name(e);
        let t = by_name
            .remove(name.as_str())
            .ok_or_else(|| ExportError::Missing(name.clone()))?;
        let expected = if transposed(e) {
            vec![e.shape[1], e.shape[0]]
        } else {
            e.shape.clone()
        };
        if t.shape != expected || t.values.len() != e.len {
            return Err(ExportError::Shape {
                name,
                found: t.shape.clone(),
                expected,
            });
        }
        let values = if transposed(e) {
            transpose(&t.values, e.shape[1], e.shape[0])
        } else {
            t.values.clone()
        };
        params[e.offset..e.offset + e.len].copy_from_slice(&values);
    }
    if !by_name.is_empty() {
        let extra: Vec<&str> = by_name.keys().copied().collect();
        return Err(ExportError::Extra(extra.join(", ")));
    }
    Ok(params)
}

/// The safetensors file of `tensors` (f32, little-endian, in the given order) with string
/// `metadata`: an 8-byte little-endian header length, the JSON header (padded with spaces to a
/// multiple of 8 bytes), then the data.
pub fn safetensors(tensors: &[TorchTensor], metadata: &BTreeMap<String, String>) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), json!(metadata));
    }
    let mut offset = 0usize;
    for t in tensors {
        let end = offset + 4 * t.values.len();
        header.insert(
            t.name.clone(),
            json!({"dtype": "F32", "shape": t.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut text = Value::Object(header).to_string().into_bytes();
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + text.len() + offset);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    for t in tensors {
        for v in &t.values {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

/// The architecture's config for a PyTorch module: its kind and every size the tensors need.
pub fn config(model: &ModelSpec) -> Value {
    match model {
        ModelSpec::Transformer(t) => json!({
            "architecture": "transformer",
            "vocab": t.vocab,
            "d_model": t.d_model,
            "n_layers": t.n_layers,
            "n_heads": t.n_heads,
            "mlp_ratio": t.mlp_ratio,
            "seq_len": t.seq_len,
            "layer_norm_eps": 1e-5,
            "activation": "gelu",
            "norm": "pre",
            "positions": "learned",
            "qkv": "fused [q; k; v] rows of one Linear",
            "tied_head": false,
        }),
        ModelSpec::Mlp(m) => json!({
            "architecture": "mlp",
            "inputs": m.inputs,
            "hidden": m.hidden,
            "classes": m.classes,
            "activation": "relu",
        }),
    }
}

/// The f32 tensors of a safetensors file (in no set order), read by the `safetensors` crate (a
/// reader independent of the writer above).
pub fn read_safetensors(bytes: &[u8]) -> Result<Vec<TorchTensor>, ExportError> {
    let file = ::safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| ExportError::Format(e.to_string()))?;
    let mut tensors = Vec::new();
    for name in file.names() {
        let view = file
            .tensor(name)
            .map_err(|e| ExportError::Format(e.to_string()))?;
        if view.dtype() != ::safetensors::Dtype::F32 {
            return Err(ExportError::Format(format!(
                "{name} is {:?}, not F32",
                view.dtype()
            )));
        }
        tensors.push(TorchTensor {
            name: name.to_string(),
            shape: view.shape().to_vec(),
            values: view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        });
    }
    Ok(tensors)
}
