//! `subnet replay DIR`: confirm a validator's recorded losses bit for bit, print its per-window
//! scores and weights, and (with `--scoring FILE`) how the weights would change under other scoring
//! parameters.

use anyhow::Context;
use scoring::{MinerDecision, ScoringParams};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use validator::dashboard::{Dashboard, decision_rows};
use validator::replay::{ReplayReport, ReplayedWindow, replay_on};

/// Reads what-if scoring parameters: a TOML file with a `[scoring]` section (a whole task file
/// works), whose keys override the recorded ones. Every rule a window applies can change (the
/// audit tolerance and the evaluation step included); the section's other keys (how many batches
/// a validator draws, its audit period) fix what was measured and recorded, and are ignored.
pub fn load_scoring(file: &Path, recorded: &ScoringParams) -> anyhow::Result<ScoringParams> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let value: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not TOML", file.display()))?;
    let section = value
        .get("scoring")
        .and_then(|s| s.as_table())
        .with_context(|| format!("{} has no [scoring] section", file.display()))?;
    let params = merged(recorded, section)
        .with_context(|| format!("{}: the [scoring] section", file.display()))?;
    let problems = out_of_range(&params);
    if !problems.is_empty() {
        anyhow::bail!("{}:\n  {}", file.display(), problems.join("\n  "));
    }
    Ok(params)
}

/// `recorded` with every key of `section` that names one of its rules set to the section's value.
fn merged(recorded: &ScoringParams, section: &toml::Table) -> anyhow::Result<ScoringParams> {
    let mut merged = toml::Table::try_from(recorded).context("the recorded scoring parameters")?;
    // A rule left out of the record where it is empty is still one a what-if may set.
    merged
        .entry("step_scales")
        .or_insert_with(|| toml::Value::Array(Vec::new()));
    let mut problems = Vec::new();
    for (key, v) in section {
        if let Some(slot) = merged.get_mut(key) {
            let v = match (&slot, v) {
                // An integer where a float is recorded is that number.
                (toml::Value::Float(_), toml::Value::Integer(i)) => toml::Value::Float(*i as f64),
                _ => v.clone(),
            };
            if std::mem::discriminant(slot) != std::mem::discriminant(&v) {
                problems.push(format!("scoring.{key} = {v} is not a {}", slot.type_str()));
                continue;
            }
            *slot = v;
        }
    }
    anyhow::ensure!(problems.is_empty(), "{}", problems.join("; "));
    Ok(merged.try_into()?)
}

/// What is wrong with `params`, one line a rule.
fn out_of_range(params: &ScoringParams) -> Vec<String> {
    let mut problems = Vec::new();
    let in_range = |x: f64, lo_open: bool| {
        if lo_open {
            x > 0.0 && x <= 1.0
        } else {
            (0.0..=1.0).contains(&x)
        }
    };
    if !in_range(params.moving_average, true) {
        problems.push(format!(
            "scoring.moving_average = {} must be in (0, 1]",
            params.moving_average
        ));
    }
    if !in_range(params.max_weight, true) {
        problems.push(format!(
            "scoring.max_weight = {} must be in (0, 1]",
            params.max_weight
        ));
    }
    if !(params.assignment_p_value > 0.0 && params.assignment_p_value < 1.0) {
        problems.push(format!(
            "scoring.assignment_p_value = {} must be in (0, 1)",
            params.assignment_p_value
        ));
    }
    if !in_range(params.copy_cosine, true) {
        problems.push(format!(
            "scoring.copy_cosine = {} must be in (0, 1]",
            params.copy_cosine
        ));
    }
    if params.max_norm_ratio.is_nan() || params.max_norm_ratio < 1.0 {
        problems.push(format!(
            "scoring.max_norm_ratio = {} must be at least 1",
            params.max_norm_ratio
        ));
    }
    if !(params.eval_step.is_finite() && params.eval_step > 0.0) {
        problems.push(format!(
            "scoring.eval_step = {} must be a positive number",
            params.eval_step
        ));
    }
    if params.aggregate_top == 0 {
        problems.push("scoring.aggregate_top = 0 must be at least 1".into());
    }
    if let Some(problem) = scoring::params::step_scales_problem(&params.step_scales) {
        problems.push(format!("scoring.step_scales {problem}"));
    }
    if params.spot_check_tolerance.is_nan() || params.spot_check_tolerance < 0.0 {
        problems.push(format!(
            "scoring.spot_check_tolerance = {} must not be negative",
            params.spot_check_tolerance
        ));
    }
    problems
}

/// The scoring parameters of the first recorded window (what-if overrides start from them).
pub fn recorded_scoring(dir: &Path) -> anyhow::Result<ScoringParams> {
    let (store, _) = validator::DataDir::open_existing(dir)?;
    let (records, _) = store.records()?;
    records
        .first()
        .map(|r| r.scoring.clone())
        .with_context(|| format!("{} has no recorded window yet", dir.display()))
}

/// What a replay prints: the whole report as JSON instead of a line per window, and a figure.
#[derive(Clone, Debug, Default)]
pub struct Output {
    pub json: bool,
    pub plot: Option<PathBuf>,
}

/// Replays `dir` on `device`, printing each window (or the whole report as JSON) and showing each
/// window on `dashboard` as it is confirmed.
pub fn run(
    dir: &Path,
    scoring: Option<&Path>,
    device: task::Device,
    Output { json, plot }: Output,
    dashboard: Option<Arc<Dashboard>>,
) -> anyhow::Result<()> {
    let what_if = match scoring {
        Some(file) => Some(load_scoring(file, &recorded_scoring(dir)?)?),
        None => None,
    };
    let report = replay_on(dir, device, what_if, |w| {
        if !json {
            print_window(w);
        }
        if let Some(dashboard) = &dashboard {
            let rows = decision_rows(&w.decisions);
            dashboard.update(|view| view.add_window(w.window, w.base_loss, rows));
        }
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_summary(&report);
    }
    if let Some(path) = plot.as_deref() {
        crate::plot::plot(&report, path)?;
        if !json {
            println!("plot written to {}", path.display());
        }
    }
    Ok(())
}

fn print_window(w: &ReplayedWindow) {
    println!(
        "window {}: checkpoint loss {:.4}, {} losses confirmed bit for bit (measured on {})",
        w.window, w.base_loss, w.losses_checked, w.evaluator
    );
    let what_if = w.what_if.as_deref();
    print!(
        "  {:>5} {:>9} {:>9} {:>9} {:>8}",
        "uid", "score", "+-", "average", "weight"
    );
    if what_if.is_some() {
        print!(" {:>8}", "what-if");
    }
    println!("  verdict");
    for d in &w.decisions {
        let se = d
            .usefulness
            .as_ref()
            .map(|u| format!("{:.5}", u.standard_error))
            .unwrap_or_else(|| "-".into());
        print!(
            "  {:>5} {:>9.5} {:>9} {:>9.5} {:>8.4}",
            d.uid, d.score, se, d.moving_average, d.weight
        );
        if let Some(other) = what_if {
            let w = other
                .iter()
                .find(|o| o.uid == d.uid)
                .map_or(0.0, |o| o.weight);
            print!(" {w:>8.4}");
        }
        println!("  {}", verdict_line(d, what_if));
    }
    match &w.weights {
        Ok((uids, values)) => println!("  set on chain: uids {uids:?} values {values:?}"),
        Err(e) => println!("  no weights set: {e}"),
    }
}

fn verdict_line(d: &MinerDecision, what_if: Option<&[MinerDecision]>) -> String {
    let mut line = d.verdict.to_string();
    if let Some(other) = what_if.and_then(|o| o.iter().find(|o| o.uid == d.uid))
        && other.verdict != d.verdict
    {
        line.push_str(&format!(" (what-if: {})", other.verdict));
    }
    line
}

fn print_summary(report: &ReplayReport) {
    println!(
        "{}: {} windows replayed on {}, {} losses confirmed bit for bit",
        report.task,
        report.windows.len(),
        report.backend,
        report.losses_checked
    );
    if report.torn_bytes > 0 {
        println!(
            "skipped a torn record of {} bytes at the end of the log (a crash mid-append, or an append in progress)",
            report.torn_bytes
        );
    }
    if let Some(params) = &report.what_if {
        println!(
            "what-if: moving_average {}, max_weight {}, assignment_p_value {}, copy_cosine {}",
            params.moving_average, params.max_weight, params.assignment_p_value, params.copy_cosine
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded() -> ScoringParams {
        task::TaskSpec::from_toml_str(include_str!("../../tasks/wine-quality.toml"))
            .unwrap()
            .scoring
            .params()
    }

    fn what_if(text: &str) -> anyhow::Result<ScoringParams> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("what-if.toml");
        std::fs::write(&file, text).unwrap();
        load_scoring(&file, &recorded())
    }

    #[test]
    fn a_what_if_may_change_every_window_rule_and_nothing_else() {
        let params = what_if(
            "[scoring]\nspot_check_tolerance = 1\naggregate_top = 2\neval_step = 0.5\neval_batches = 99\nstep_with_candidates = true\nstep_scales = [1, 0.5]\n",
        )
        .unwrap();
        assert_eq!(
            params,
            ScoringParams {
                spot_check_tolerance: 1.0,
                aggregate_top: 2,
                eval_step: 0.5,
                step_with_candidates: true,
                step_scales: vec![1.0, 0.5],
                ..recorded()
            }
        );
    }

    #[test]
    fn a_what_if_of_the_wrong_type_or_out_of_range_says_which_rule() {
        let wrong = what_if("[scoring]\naggregate_min = \"two\"\n").unwrap_err();
        assert!(
            format!("{wrong:#}").contains("scoring.aggregate_min"),
            "{wrong:#}"
        );
        let rising = what_if("[scoring]\nstep_scales = [0.5, 1.0]\n").unwrap_err();
        assert!(rising.to_string().contains("step_scales"), "{rising:#}");
        let negative = what_if("[scoring]\nspot_check_tolerance = -0.1\n").unwrap_err();
        assert!(
            negative.to_string().contains("spot_check_tolerance"),
            "{negative:#}"
        );
    }
}
