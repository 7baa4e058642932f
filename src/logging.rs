//! Logs: tracing events go to stderr at `-v` (warnings and errors always), and, once a run
//! knows its state dir, to `<state-dir>/log.jsonl` as JSON lines, at info level, so a night's
//! run can be read back by machine whatever the terminal showed.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The log file; `None` until the run opens its state dir.
static LOG_FILE: Mutex<Option<File>> = Mutex::new(None);

/// Appends every later event to `path`.
pub fn set_log_file(path: &Path) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    *LOG_FILE.lock().unwrap_or_else(|p| p.into_inner()) = Some(file);
    Ok(())
}

struct LogFile;

struct LogFileWriter;

impl Write for LogFileWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(file) = LOG_FILE.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            // A log line that cannot be written must not stop the run.
            let _ = file.write_all(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogFile {
    type Writer = LogFileWriter;
    fn make_writer(&'a self) -> Self::Writer {
        LogFileWriter
    }
}

/// `-q` shows errors only, the default warnings, `-v` info, `-vv` debug; `IMPROVE_LOG`
/// (an EnvFilter) overrides the stderr level.
pub fn init(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        _ => "debug",
    };
    let stderr_filter = EnvFilter::try_from_env("IMPROVE_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("improve={level}")));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .without_time()
        .with_filter(stderr_filter);
    let file = tracing_subscriber::fmt::layer()
        .json()
        .with_writer(LogFile)
        .with_filter(EnvFilter::new("improve=info"));
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(file)
        .try_init();
}
