//! A one-line progress bar for terminals that log lines pass cleanly over: the tracing writer
//! erases the bar, writes the log line and draws the bar again below it.

use crate::Progress;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing_subscriber::fmt::MakeWriter;

/// The bar's text for `p`: window, steps done, loss, throughput and time left in the window.
pub fn format_bar(p: &Progress, time_left: Option<Duration>, width: usize) -> String {
    let filled = (width * p.step / p.steps.max(1)).min(width);
    let left = match time_left {
        Some(d) => format!("{} s left in the window", d.as_secs()),
        None => "window end not known yet".to_string(),
    };
    format!(
        "window {} [{}{}] {}/{} steps | loss {:.4} | {} tokens/s | {left}",
        p.window,
        "#".repeat(filled),
        "-".repeat(width - filled),
        p.step,
        p.steps,
        p.loss,
        p.tokens_per_s.round() as u64,
    )
}

const ERASE: &[u8] = b"\r\x1b[2K";

struct Shared {
    out: Box<dyn Write + Send>,
    line: String,
}

/// The bar and the output it draws on.
#[derive(Clone)]
pub struct TerminalBar {
    shared: Arc<Mutex<Shared>>,
}

impl TerminalBar {
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            shared: Arc::new(Mutex::new(Shared {
                out,
                line: String::new(),
            })),
        }
    }

    pub fn stderr() -> Self {
        Self::new(Box::new(io::stderr()))
    }

    /// Replaces the bar with `line`.
    pub fn draw(&self, line: String) {
        let mut s = self.shared.lock().expect("bar lock");
        let _ = s.out.write_all(ERASE);
        let _ = s.out.write_all(line.as_bytes());
        let _ = s.out.flush();
        s.line = line;
    }

    /// Removes the bar.
    pub fn clear(&self) {
        let mut s = self.shared.lock().expect("bar lock");
        if !s.line.is_empty() {
            let _ = s.out.write_all(ERASE);
            let _ = s.out.flush();
            s.line.clear();
        }
    }
}

/// Writes log output over the bar, then draws the bar again.
pub struct BarWriter {
    shared: Arc<Mutex<Shared>>,
}

impl Write for BarWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut guard = self.shared.lock().expect("bar lock");
        let s = &mut *guard;
        let drawn = !s.line.is_empty();
        if drawn {
            s.out.write_all(ERASE)?;
        }
        s.out.write_all(buf)?;
        if drawn && buf.ends_with(b"\n") {
            s.out.write_all(s.line.as_bytes())?;
        }
        s.out.flush()?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.shared.lock().expect("bar lock").out.flush()
    }
}

impl<'a> MakeWriter<'a> for TerminalBar {
    type Writer = BarWriter;

    fn make_writer(&'a self) -> BarWriter {
        BarWriter {
            shared: self.shared.clone(),
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
    fn the_bar_shows_the_window_and_log_lines_pass_over_it() {
        let p = Progress {
            window: 7,
            step: 15,
            steps: 30,
            loss: 1.23456,
            tokens_per_s: 2345.6,
        };
        let text = format_bar(&p, Some(Duration::from_secs(42)), 10);
        assert_eq!(
            text,
            "window 7 [#####-----] 15/30 steps | loss 1.2346 | 2346 tokens/s | 42 s left in the window"
        );

        let buffer = Buffer::default();
        let bar = TerminalBar::new(Box::new(buffer.clone()));
        bar.draw("bar 1".into());
        bar.make_writer().write_all(b"a log line\n").unwrap();
        bar.clear();
        bar.make_writer().write_all(b"another\n").unwrap();
        let out = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            out,
            "\r\x1b[2Kbar 1\r\x1b[2Ka log line\nbar 1\r\x1b[2Kanother\n"
        );
    }
}
