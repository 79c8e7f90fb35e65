//! `subnet replay`: a validator's data directory re-run offline.

use anyhow::Context;
use std::path::PathBuf;

/// Replay a validator's data directory offline: re-run every recorded evaluation (on the CPU unless
/// --device says otherwise), confirm each loss bit for bit, and print per-window scores and weights.
#[derive(clap::Args)]
pub struct Args {
    /// The validator's data directory (its --data).
    pub dir: PathBuf,
    /// What-if: run each window's steps again under the [scoring] parameters of this TOML file
    /// (any rule a window applies: moving_average, max_weight, assignment_p_value, copy_cosine,
    /// max_norm_ratio, fraud_ban_windows, eval_step, aggregate_top, aggregate_min,
    /// step_with_candidates, step_scales, spot_check_tolerance) and show the weights.
    #[arg(long)]
    pub scoring: Option<PathBuf>,
    /// Where to re-run the evaluations: the backend the record was measured on (`cpu`, or the
    /// validator's --device). Bits are compared only there; a record measured elsewhere fails
    /// with both backends named.
    #[arg(long, default_value = "cpu")]
    pub device: task::Device,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Also draw the held-out loss and the weight shares over windows to this PNG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Serve a live page of the replay at this address (for example 127.0.0.1:8080): each
    /// window's scores, verdicts and weights as it is confirmed, the loss and the weight shares by
    /// window. It keeps serving after the last window, until Ctrl-C.
    #[arg(long)]
    pub dashboard: Option<String>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let dashboard = match &args.dashboard {
        Some(addr) => {
            let view = validator::dashboard::View {
                title: format!("replay of {}", args.dir.display()),
                ..Default::default()
            };
            let (dashboard, at) = validator::dashboard::spawn(addr, view)
                .await
                .with_context(|| format!("cannot serve the dashboard at {addr}"))?;
            eprintln!("dashboard: http://{at}/");
            Some((dashboard, at))
        }
        None => None,
    };
    let page = dashboard.as_ref().map(|d| d.0.clone());
    let Args {
        dir,
        scoring,
        device,
        json,
        plot,
        ..
    } = args;
    tokio::task::spawn_blocking(move || {
        let output = subnet_cli::replay::Output { json, plot };
        subnet_cli::replay::run(&dir, scoring.as_deref(), device, output, page)
    })
    .await??;
    if let Some((_, at)) = dashboard {
        eprintln!("the dashboard stays at http://{at}/ until Ctrl-C");
        tokio::signal::ctrl_c().await?;
    }
    Ok(())
}
