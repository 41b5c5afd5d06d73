//! Log setup: tracing to stderr as human text, JSON, or journal lines.
//! `--log-format auto` picks human on a terminal, journal when stderr is
//! systemd's journal, JSON otherwise. Colour only on a terminal. A log line
//! that cannot be written (stderr closed, `gomirror sync 2>&1 | head`) is
//! dropped, never a panic.

use std::io::{self, IsTerminal, Write};

use super::args::LogFormat;

/// Installs the tracing subscriber on stderr, filtered by `GOMIRROR_LOG`
/// (default `info`), in `format`.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GOMIRROR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let format = match format {
        LogFormat::Auto if std::io::stderr().is_terminal() => LogFormat::Human,
        LogFormat::Auto if stderr_is_journal() => LogFormat::Journal,
        LogFormat::Auto => LogFormat::Json,
        chosen => chosen,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LogWriter(io::stderr()));
    match format {
        LogFormat::Json => builder.json().with_current_span(false).init(),
        LogFormat::Journal => {
            // journald records the time and, from the prefix, the level.
            let plain = tracing_subscriber::fmt::format()
                .without_time()
                .with_level(false)
                .with_target(false)
                .with_ansi(false);
            builder
                .with_ansi(false)
                .event_format(JournalFormat(plain))
                .init()
        }
        // Escape codes are for a terminal; in a pipe or a file they are noise.
        // See: #13
        LogFormat::Human | LogFormat::Auto => builder.with_ansi(io::stderr().is_terminal()).init(),
    }
}

/// stderr for log lines, on which every write error is swallowed. There is
/// nowhere left to report it: tracing-subscriber would `eprint!` it, and
/// `eprint!` panics when stderr itself is what failed, killing whichever
/// thread logged (a closed pipe once killed the state thread mid-run).
/// See: #13
struct LogWriter(io::Stderr);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(self.0.write(buf).unwrap_or(buf.len()))
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = self.0.flush();
        Ok(())
    }
}

/// systemd sets `JOURNAL_STREAM=<dev>:<inode>` to the stream it connects
/// to stderr; a match means our stderr goes to the journal (and not, say,
/// to a file a child process inherited the variable with).
/// See: systemd.exec(5), JOURNAL_STREAM.
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    rustix::fs::fstat(std::io::stderr())
        .is_ok_and(|st| dev.parse() == Ok(st.st_dev) && ino.parse() == Ok(st.st_ino))
}

/// Prefixes each line with its syslog priority (`<3>` error … `<7>`
/// debug), which journald reads as the entry's level and strips.
/// See: sd-daemon(3).
struct JournalFormat<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for JournalFormat<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}
