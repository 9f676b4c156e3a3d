//! Logging for the workspace's binaries that a broken log sink cannot take down.
//!
//! tracing-subscriber's fmt layer `eprintln!`s when a write fails, and `eprintln!` panics
//! when stderr is a closed pipe: the task that logged dies (a health monitor goes quiet, a
//! signal handler stops listening). Here a failed write is swallowed and counted instead; the
//! next write that works first says how many lines were lost. `println!` has the same
//! panic, so one-line messages on stdout/stderr go through [`stdout_line`]/[`stderr_line`].
//!
//! # Layout
//! - [`LossySink`]: the `MakeWriter` that counts and reports lost lines.
//! - [`init`]: the global subscriber both binaries install (env filter, text or JSON).
//! - [`stdout_line`], [`stderr_line`]: a line that is dropped, not panicked on, if it cannot
//!   be written.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// How the "lines were lost" notice is written: as the rest of the log is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Default)]
struct Counts {
    /// Lost since the last notice that got through.
    pending: AtomicU64,
    /// Lost since start.
    total: AtomicU64,
}

/// A `MakeWriter` over `open()` (e.g. `std::io::stderr`) whose writers never fail: a write
/// error drops the line and counts it, and the next write that works is preceded by a notice
/// "N log lines were lost".
#[derive(Clone, Debug)]
pub struct LossySink<F> {
    open: F,
    format: Format,
    counts: Arc<Counts>,
}

impl<F> LossySink<F> {
    /// A sink writing to what `open` returns, notices in `format`.
    pub fn new(open: F, format: Format) -> Self {
        Self {
            open,
            format,
            counts: Arc::default(),
        }
    }

    /// Lines lost since start.
    pub fn lost(&self) -> u64 {
        self.counts.total.load(Ordering::Relaxed)
    }

    fn notice(&self, lost: u64) -> String {
        let ts = humantime::format_rfc3339_micros(SystemTime::now());
        let message = format!("{lost} log lines were lost: the log sink failed");
        match self.format {
            Format::Text => format!("{ts}  WARN safe_log: {message}\n"),
            Format::Json => {
                let line = serde_json::json!({
                    "timestamp": ts.to_string(),
                    "level": "WARN",
                    "fields": {"message": message, "lost_lines": lost},
                    "target": "safe_log",
                });
                format!("{line}\n")
            }
        }
    }
}

/// One log line's writer from a [`LossySink`].
#[derive(Debug)]
pub struct LossyWriter<'a, F, W> {
    sink: &'a LossySink<F>,
    inner: W,
}

impl<F, W: Write> Write for LossyWriter<'_, F, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let counts = &self.sink.counts;
        let pending = counts.pending.swap(0, Ordering::AcqRel);
        let is_reported = pending == 0
            || self
                .inner
                .write_all(self.sink.notice(pending).as_bytes())
                .is_ok();
        if !is_reported {
            counts.pending.fetch_add(pending, Ordering::AcqRel);
        }
        if !is_reported || self.inner.write_all(buf).is_err() {
            counts.pending.fetch_add(1, Ordering::AcqRel);
            counts.total.fetch_add(1, Ordering::Relaxed);
        }
        // The fmt layer hands over one whole line per `write_all`: claim it all, so it never
        // sees an error (and never `eprintln!`s about it).
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // A failed flush is a lost line the next write will find.
        let _ = self.inner.flush();
        Ok(())
    }
}

impl<'a, F, W> MakeWriter<'a> for LossySink<F>
where
    F: Fn() -> W + 'a,
    W: Write,
{
    type Writer = LossyWriter<'a, F, W>;

    fn make_writer(&'a self) -> Self::Writer {
        LossyWriter {
            sink: self,
            inner: (self.open)(),
        }
    }
}

type StderrSink = LossySink<fn() -> io::Stderr>;

static GLOBAL: OnceLock<StderrSink> = OnceLock::new();

/// Installs the process-wide subscriber: stderr through a [`LossySink`], `RUST_LOG` if set
/// and valid, else `default_filter`. Later calls (and a subscriber already set) are ignored.
pub fn init(default_filter: &str, format: Format) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let sink = GLOBAL
        .get_or_init(|| LossySink::new(io::stderr as fn() -> io::Stderr, format))
        .clone();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(sink)
        // Belt and braces: the sink never reports an error, but if it did, no `eprintln!`.
        .log_internal_errors(false);
    let _ = match format {
        Format::Text => builder.try_init(),
        Format::Json => builder.json().try_init(),
    };
}

/// Log lines the global subscriber lost since start (0 before [`init`]).
pub fn lost_lines() -> u64 {
    GLOBAL.get().map_or(0, LossySink::lost)
}

/// Writes `line` and a newline to stdout; false (and no panic) if stdout is gone.
pub fn stdout_line(line: &str) -> bool {
    write_line(&mut io::stdout().lock(), line)
}

/// Writes `line` and a newline to stderr; false (and no panic) if stderr is gone.
pub fn stderr_line(line: &str) -> bool {
    write_line(&mut io::stderr().lock(), line)
}

fn write_line(out: &mut impl Write, line: &str) -> bool {
    writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A sink that fails while `broken` is set and keeps what it was given otherwise.
    #[derive(Clone, Default)]
    struct Flaky {
        broken: Arc<Mutex<bool>>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Flaky {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if *self.broken.lock().unwrap() {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            self.written.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn text(flaky: &Flaky) -> String {
        String::from_utf8(flaky.written.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn counts_lost_lines_and_reports_them_on_the_next_working_write() {
        let flaky = Flaky::default();
        let open = flaky.clone();
        let sink = LossySink::new(move || open.clone(), Format::Text);
        sink.make_writer().write_all(b"first\n").unwrap();
        *flaky.broken.lock().unwrap() = true;
        for _ in 0..3 {
            // Never an error, or the fmt layer would complain on the broken stderr.
            sink.make_writer().write_all(b"dropped\n").unwrap();
        }
        assert_eq!(sink.lost(), 3);
        *flaky.broken.lock().unwrap() = false;
        sink.make_writer().write_all(b"back\n").unwrap();
        sink.make_writer().write_all(b"again\n").unwrap();
        let out = text(&flaky);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert_eq!(lines[0], "first");
        assert!(
            lines[1].ends_with("WARN safe_log: 3 log lines were lost: the log sink failed"),
            "{out}"
        );
        assert_eq!(&lines[2..], ["back", "again"]);
        assert_eq!(sink.lost(), 3, "the total stays after the report");
    }

    #[test]
    fn json_notice_is_one_json_line() {
        let flaky = Flaky::default();
        let open = flaky.clone();
        let sink = LossySink::new(move || open.clone(), Format::Json);
        *flaky.broken.lock().unwrap() = true;
        sink.make_writer().write_all(b"{}\n").unwrap();
        *flaky.broken.lock().unwrap() = false;
        sink.make_writer().write_all(b"{}\n").unwrap();
        let out = text(&flaky);
        let notice: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
        assert_eq!(notice["level"], "WARN");
        assert_eq!(notice["fields"]["lost_lines"], 1);
    }

    #[test]
    fn a_subscriber_on_a_broken_sink_does_not_panic() {
        let flaky = Flaky::default();
        *flaky.broken.lock().unwrap() = true;
        let open = flaky.clone();
        let sink = LossySink::new(move || open.clone(), Format::Text);
        let subscriber = tracing_subscriber::fmt()
            .with_writer(sink.clone())
            .log_internal_errors(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!("nobody reads this");
            tracing::warn!("nor this");
        });
        assert_eq!(sink.lost(), 2);
    }

    #[test]
    fn a_line_to_a_broken_writer_is_false_not_a_panic() {
        let flaky = Flaky::default();
        *flaky.broken.lock().unwrap() = true;
        assert!(!write_line(&mut flaky.clone(), "x"));
        *flaky.broken.lock().unwrap() = false;
        assert!(write_line(&mut flaky.clone(), "x"));
        assert_eq!(text(&flaky), "x\n");
    }
}
