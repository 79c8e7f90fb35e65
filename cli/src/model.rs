//! `subnet model`: the global model of any window of a validator's data directory, checked
//! against the digest the window's record names, exported for PyTorch or sampled from.

use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use task::architecture::ModelSpec;
use task::export::{config, safetensors, to_torch};
use task::generate::Sampling;
use task::{Checkpoint, CpuBackend, Inputs, TaskEngine, TaskSpec};
use validator::DataDir;

/// The held-out set an export's loss is measured on: the localnet's report set.
pub const HELDOUT_SEED: u64 = 0xC0FFEE;
pub const HELDOUT_BATCHES: usize = 8;

/// A window's global model, read from a validator's data directory.
pub struct RunModel {
    pub engine: TaskEngine,
    pub window: u64,
    pub checkpoint: Checkpoint,
}

impl RunModel {
    /// The model after `window` (the last recorded window when None), its bytes checked against
    /// the digest the window's record names and against the directory's task.
    pub fn load(dir: &Path, window: Option<u64>) -> anyhow::Result<Self> {
        if !dir.join("task.toml").is_file() && dir.join("validator-0").is_dir() {
            bail!(
                "{} is a localnet run directory; give one validator's data directory, such as {}",
                dir.display(),
                dir.join("validator-0").display()
            );
        }
        let (store, task_toml) = DataDir::open_existing(dir)
            .with_context(|| format!("{} is not a validator's data directory", dir.display()))?;
        let engine = TaskEngine::new(TaskSpec::from_toml_str(&task_toml)?);
        let (records, _) = store.records()?;
        let record = match window {
            Some(w) => records.iter().find(|r| r.window == w).with_context(|| {
                let have: Vec<String> = records.iter().map(|r| r.window.to_string()).collect();
                format!(
                    "window {w} is not recorded in {} (recorded: {})",
                    dir.display(),
                    if have.is_empty() {
                        "none".into()
                    } else {
                        have.join(", ")
                    }
                )
            })?,
            None => records
                .last()
                .with_context(|| format!("{} holds no recorded window yet", dir.display()))?,
        };
        let digest = record.checkpoint_after;
        let bytes = store.blob(&digest.0)?;
        let checkpoint =
            Checkpoint::from_bytes(&bytes, &engine.digest(), engine.num_params(), Some(&digest))
                .map_err(|e| anyhow::anyhow!("the checkpoint of window {}: {e}", record.window))?;
        Ok(Self {
            engine,
            window: record.window,
            checkpoint,
        })
    }

    /// Mean loss on the held-out set the localnet reports.
    pub fn heldout_loss(&self) -> f64 {
        let batches = self.engine.heldout_batches(HELDOUT_SEED, HELDOUT_BATCHES);
        let losses = self.engine.losses::<CpuBackend>(
            &Default::default(),
            &self.checkpoint.params,
            &batches,
        );
        losses.iter().map(|&l| l as f64).sum::<f64>() / losses.len() as f64
    }
}

/// What an export wrote.
pub struct Exported {
    pub tensors: usize,
    pub parameters: usize,
    pub bytes: usize,
    pub config: PathBuf,
    pub heldout: Option<PathBuf>,
    pub heldout_loss: f64,
}

/// Writes the model as safetensors at `out`, its config beside it (`out` with `.json`), and with
/// `heldout` the held-out batches its loss was measured on (`out` with `.heldout.safetensors`:
/// `inputs` and `targets` per batch), for a reader to check the loss on the same examples.
pub fn export(model: &RunModel, out: &Path, heldout: bool) -> anyhow::Result<Exported> {
    let engine = &model.engine;
    let tensors = to_torch(engine.layout(), &model.checkpoint.params)?;
    let heldout_loss = model.heldout_loss();
    let metadata: BTreeMap<String, String> = [
        ("format", "pt".to_string()),
        ("task", engine.spec().task.name.clone()),
        ("window", model.window.to_string()),
        ("checkpoint", model.checkpoint.digest.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let bytes = safetensors(&tensors, &metadata);
    std::fs::write(out, &bytes).with_context(|| format!("cannot write {}", out.display()))?;

    let mut cfg = config(&engine.spec().model);
    cfg["task"] = engine.spec().task.name.clone().into();
    cfg["window"] = model.window.into();
    cfg["checkpoint"] = model.checkpoint.digest.to_string().into();
    cfg["heldout_loss"] = heldout_loss.into();
    cfg["heldout"] = serde_json::json!({"seed": HELDOUT_SEED, "batches": HELDOUT_BATCHES});
    let config_path = out.with_extension("json");
    std::fs::write(&config_path, serde_json::to_string_pretty(&cfg)? + "\n")
        .with_context(|| format!("cannot write {}", config_path.display()))?;

    let heldout = heldout
        .then(|| write_heldout(engine, &out.with_extension("heldout.safetensors")))
        .transpose()?;
    Ok(Exported {
        tensors: tensors.len(),
        parameters: model.checkpoint.params.len(),
        bytes: bytes.len(),
        config: config_path,
        heldout,
        heldout_loss,
    })
}

/// The held-out batches as f32 tensors (`batch.{i}.inputs`, `batch.{i}.targets`; token ids and
/// classes are exact in f32 below 2^24).
fn write_heldout(engine: &TaskEngine, path: &Path) -> anyhow::Result<PathBuf> {
    let batches = engine.heldout_batches(HELDOUT_SEED, HELDOUT_BATCHES);
    let mut tensors = Vec::new();
    for (i, b) in batches.iter().enumerate() {
        let inputs: Vec<f32> = match &b.inputs {
            Inputs::Tokens(t) => t.iter().map(|&x| x as f32).collect(),
            Inputs::Features(f) => f.clone(),
        };
        let width = inputs.len() / b.rows;
        tensors.push(task::export::TorchTensor {
            name: format!("batch.{i}.inputs"),
            shape: vec![b.rows, width],
            values: inputs,
        });
        tensors.push(task::export::TorchTensor {
            name: format!("batch.{i}.targets"),
            shape: vec![b.rows, b.targets.len() / b.rows],
            values: b.targets.iter().map(|&x| x as f32).collect(),
        });
    }
    std::fs::write(path, safetensors(&tensors, &BTreeMap::new()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path.to_path_buf())
}

/// `count` bytes generated after `prompt` by a byte-level language-model task's model.
pub fn sample(
    model: &RunModel,
    prompt: &str,
    count: usize,
    sampling: Sampling,
) -> anyhow::Result<String> {
    let engine = &model.engine;
    let Some(generator) = engine.generator(&model.checkpoint.params) else {
        bail!(
            "task {} does not model text (its model is not a transformer)",
            engine.spec().task.name
        );
    };
    if !matches!(&engine.spec().model, ModelSpec::Transformer(t) if t.vocab == 256) {
        bail!(
            "task {} models token ids, not bytes: a text prompt needs a byte-level task",
            engine.spec().task.name
        );
    }
    if prompt.is_empty() {
        bail!("the prompt is empty: give at least one character");
    }
    let tokens: Vec<i32> = prompt.bytes().map(i32::from).collect();
    let generated = generator.generate(&tokens, count, sampling);
    let bytes: Vec<u8> = generated.iter().map(|&t| t as u8).collect();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
