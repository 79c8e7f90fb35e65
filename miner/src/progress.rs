//! The miner's progress bar (indicatif) and a log writer whose lines pass over it cleanly: the bar
//! is hidden while a line is written and drawn again below it.

use crate::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing_subscriber::fmt::MakeWriter;

/// What the bar says after its steps: loss, throughput and time left in the window.
pub fn bar_message(p: &Progress, time_left: Option<Duration>) -> String {
    let left = match time_left {
        Some(d) => format!("{} s left in the window", d.as_secs()),
        None => "window end not known yet".to_string(),
    };
    format!(
        "loss {:.4} | {} tokens/s | {left}",
        p.loss,
        p.tokens_per_s.round() as u64
    )
}

fn style() -> ProgressStyle {
    ProgressStyle::with_template("window {prefix} [{bar:30}] {pos}/{len} steps | {msg}")
        .expect("a valid template")
        .progress_chars("#-")
}

/// The bar, and the output log lines go to.
#[derive(Clone)]
pub struct TerminalBar {
    bar: ProgressBar,
    log: Arc<Mutex<Box<dyn Write + Send>>>,
}

impl TerminalBar {
    /// A bar drawn on `target`, with log lines written to `log`.
    pub fn new(target: ProgressDrawTarget, log: Box<dyn Write + Send>) -> Self {
        let bar = ProgressBar::with_draw_target(None, target).with_style(style());
        Self {
            bar,
            log: Arc::new(Mutex::new(log)),
        }
    }

    pub fn stderr() -> Self {
        Self::new(ProgressDrawTarget::stderr(), Box::new(io::stderr()))
    }

    /// Shows `p`: the window, steps done of the window's steps, and `bar_message`.
    pub fn show(&self, p: &Progress, time_left: Option<Duration>) {
        if self.bar.is_finished() {
            self.bar.reset();
        }
        self.bar.set_prefix(p.window.to_string());
        self.bar.set_length(p.steps as u64);
        self.bar.set_position(p.step as u64);
        self.bar.set_message(bar_message(p, time_left));
    }

    /// Hides the bar until the next `show`.
    pub fn clear(&self) {
        self.bar.finish_and_clear();
    }

    pub fn bar(&self) -> &ProgressBar {
        &self.bar
    }
}

/// Writes a log line with the bar hidden, then lets the bar draw again.
pub struct BarWriter {
    bar: ProgressBar,
    log: Arc<Mutex<Box<dyn Write + Send>>>,
}

impl Write for BarWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let log = &self.log;
        self.bar.suspend(|| {
            let mut out = log.lock().expect("log lock");
            out.write_all(buf)?;
            out.flush()
        })?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.log.lock().expect("log lock").flush()
    }
}

impl<'a> MakeWriter<'a> for TerminalBar {
    type Writer = BarWriter;

    fn make_writer(&'a self) -> BarWriter {
        BarWriter {
            bar: self.bar.clone(),
            log: self.log.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_bar_follows_the_window_and_log_lines_pass_through() {
        let p = Progress {
            window: 7,
            step: 15,
            steps: 30,
            loss: 1.23456,
            tokens_per_s: 2345.6,
        };
        assert_eq!(
            bar_message(&p, Some(Duration::from_secs(42))),
            "loss 1.2346 | 2346 tokens/s | 42 s left in the window"
        );
        let log = Buffer::default();
        let bar = TerminalBar::new(ProgressDrawTarget::hidden(), Box::new(log.clone()));
        bar.show(&p, None);
        assert_eq!(bar.bar().position(), 15);
        assert_eq!(bar.bar().length(), Some(30));
        assert_eq!(bar.bar().prefix(), "7");
        assert_eq!(
            bar.bar().message(),
            "loss 1.2346 | 2346 tokens/s | window end not known yet"
        );
        bar.make_writer().write_all(b"a log line\n").unwrap();
        bar.clear();
        assert!(bar.bar().is_finished());
        bar.show(&Progress { step: 1, ..p }, None);
        assert!(!bar.bar().is_finished());
        assert_eq!(bar.bar().position(), 1);
        bar.make_writer().write_all(b"another\n").unwrap();
        assert_eq!(log.0.lock().unwrap().as_slice(), b"a log line\nanother\n");
    }
}
