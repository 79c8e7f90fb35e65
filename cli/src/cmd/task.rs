//! `subnet task`: task files.

use super::hex_digest;
use ::task::TaskSpec;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum TaskCommand {
    /// Validate a task file: print every problem with its key (exit 1), or a summary.
    Check { file: PathBuf },
}

pub fn run(command: TaskCommand) -> anyhow::Result<()> {
    let TaskCommand::Check { file } = command;
    if !check_task(&file)? {
        std::process::exit(1);
    }
    Ok(())
}

/// Prints the problems of a task file, or its summary; returns whether it is valid.
fn check_task(file: &std::path::Path) -> anyhow::Result<bool> {
    let spec = match TaskSpec::from_file(file) {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            return Ok(false);
        }
    };
    let engine = ::task::TaskEngine::new(spec.clone());
    let n = engine.num_params();
    if engine.groups().len() < spec.shards.groups {
        eprintln!(
            "{}: shards.groups = {} but the model has only {} parameter tensors to group",
            file.display(),
            spec.shards.groups,
            engine.groups().len()
        );
        return Ok(false);
    }
    println!("{}: ok", file.display());
    println!(
        "  task            {} version {}",
        spec.task.name, spec.task.version
    );
    println!("  digest          {}", hex_digest(&spec.digest()));
    println!(
        "  model           {n} parameters ({})",
        spec.model.summary()
    );
    let unit = if spec.data.table.is_some() {
        "rows"
    } else {
        "tokens"
    };
    println!(
        "  {:<16}{} per miner ({} steps x {} x {})",
        format!("{unit}/window"),
        spec.tokens_per_miner_window(),
        spec.training.inner_steps,
        spec.training.batch_size,
        spec.targets_per_example(),
    );
    let dense = pseudo_gradient::codec::encode_dense(&vec![0.0; n]).len();
    let c = &spec.compression;
    if c.top_k == 0 {
        println!("  gradient        {dense} bytes (dense f32)");
    } else {
        let layout = c.layout();
        println!(
            "  gradient        {} bytes ({layout}), {:.1}x smaller than dense f32 ({dense} bytes)",
            layout.payload_len(n),
            layout.ratio(n)
        );
    }
    print_memory(&spec, &engine);
    print_corpus(&spec, &engine);
    Ok(true)
}

/// What a miner holds in memory: the whole model's training state, or each group's.
fn print_memory(spec: &TaskSpec, engine: &::task::TaskEngine) {
    let n = engine.num_params();
    let c = &spec.compression;
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let groups = engine.groups();
    if groups.is_whole() {
        println!(
            "  memory          {:.1} MiB of parameters, gradients and AdamW moments (16 B a parameter), before activations",
            mib(16 * n as u64)
        );
    } else {
        println!(
            "  groups          {} parameter groups; a miner holds every parameter (4 B) and its group's gradients and AdamW moments (12 B a parameter), before activations:",
            groups.len()
        );
        let layout = c.layout();
        for g in groups.groups() {
            println!(
                "    {:>3}  {:>11} parameters  {:>7.1} MiB  payload {:>9} bytes  {} .. {}",
                g.index,
                g.len(),
                mib(g.state_bytes(n)),
                layout.payload_len(g.len()),
                g.first,
                g.last
            );
        }
        println!(
            "                  (training the whole model: {:.1} MiB; `miner run --max-group-params N` takes only groups of at most N parameters)",
            mib(16 * n as u64)
        );
    }
}

/// The corpus or data set, with its known floor or baseline.
fn print_corpus(spec: &TaskSpec, engine: &::task::TaskEngine) {
    match engine.corpus() {
        ::task::engine::Corpus::Markov(markov) => println!(
            "  corpus          synthetic: entropy rate {:.4} nats/token, lowest loss on a sequence {:.4}",
            markov.entropy_rate(),
            markov.min_sequence_loss(spec.targets_per_example()),
        ),
        ::task::engine::Corpus::Table(table) => {
            let train = spec.data.training_items();
            println!(
                "  data            {}: {} rows of {} features, {} classes (labels {:?}); {} training rows",
                spec.data
                    .table
                    .as_ref()
                    .map(|t| t.source.name())
                    .unwrap_or(""),
                table.rows(),
                table.features(),
                table.classes(),
                table.labels(),
                train,
            );
            println!(
                "  baseline        {:.4} nats: the loss of predicting the training rows' class frequencies",
                table.prior_entropy(0..train)
            );
        }
        ::task::engine::Corpus::Text(text) => println!(
            "  corpus          {} tokens from {} ({} pages of {})",
            text.len(),
            spec.data
                .text
                .as_ref()
                .map(|t| t.path.as_str())
                .unwrap_or(""),
            text.len() / spec.data.page_len,
            spec.data.page_len
        ),
    }
}
