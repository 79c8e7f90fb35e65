//! `subnet model`: export a window's global model for PyTorch, or generate text from it.

use std::path::PathBuf;
use subnet_cli::model::{self, RunModel};
use task::generate::Sampling;

#[derive(clap::Subcommand)]
pub enum ModelCommand {
    /// Write the global model of a window as safetensors in PyTorch's names and layouts (Linear
    /// weights [out, in]), with its config beside it (OUT with .json).
    Export {
        /// A validator's data directory (its `--data`; a localnet's are `validator-N` in its
        /// `--dir`).
        #[arg(long)]
        run: PathBuf,
        /// The window whose resulting model to export (default: the last recorded).
        #[arg(long)]
        window: Option<u64>,
        /// The file format; safetensors is the one written.
        #[arg(long, value_enum, default_value_t = Format::Safetensors)]
        format: Format,
        /// Also write the held-out batches the config's loss was measured on (OUT with
        /// .heldout.safetensors), for checking the loss in another framework.
        #[arg(long)]
        heldout: bool,
        /// Where to write the model.
        out: PathBuf,
    },
    /// Generate text from a byte-level language-model task's global model.
    Sample {
        /// A validator's data directory.
        #[arg(long)]
        run: PathBuf,
        /// The window whose resulting model to use (default: the last recorded).
        #[arg(long)]
        window: Option<u64>,
        /// The text to continue.
        #[arg(long)]
        prompt: String,
        /// How many bytes to generate.
        #[arg(long, default_value_t = 200)]
        tokens: usize,
        /// Logits are divided by it; 0 always takes the most likely byte.
        #[arg(long, default_value_t = 0.8)]
        temperature: f64,
        /// Only the k most likely bytes can be drawn (0: all).
        #[arg(long, default_value_t = 40)]
        top_k: usize,
        /// The same seed, model and prompt give the same text.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Safetensors,
}

pub fn run(command: ModelCommand) -> anyhow::Result<()> {
    match command {
        ModelCommand::Export {
            run,
            window,
            format: Format::Safetensors,
            heldout,
            out,
        } => export(&run, window, heldout, &out),
        ModelCommand::Sample {
            run,
            window,
            prompt,
            tokens,
            temperature,
            top_k,
            seed,
        } => {
            if !temperature.is_finite() || temperature < 0.0 {
                anyhow::bail!("--temperature must be 0 or more (got {temperature})");
            }
            let model = RunModel::load(&run, window)?;
            let sampling = Sampling {
                temperature,
                top_k,
                seed,
            };
            let text = model::sample(&model, &prompt, tokens, sampling)?;
            eprintln!(
                "window {} of task {} (checkpoint {})",
                model.window,
                model.engine.spec().task.name,
                model.checkpoint.digest
            );
            println!("{prompt}{text}");
            Ok(())
        }
    }
}

/// `subnet model export --format safetensors`.
fn export(
    run: &std::path::Path,
    window: Option<u64>,
    heldout: bool,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    let model = RunModel::load(run, window)?;
    let exported = model::export(&model, out, heldout)?;
    println!(
        "window {} of task {} (checkpoint {}): {} tensors, {} parameters, {} bytes -> {}",
        model.window,
        model.engine.spec().task.name,
        model.checkpoint.digest,
        exported.tensors,
        exported.parameters,
        exported.bytes,
        out.display()
    );
    println!(
        "config -> {}; held-out loss {:.6}",
        exported.config.display(),
        exported.heldout_loss
    );
    if let Some(path) = exported.heldout {
        println!("held-out batches -> {}", path.display());
    }
    Ok(())
}
