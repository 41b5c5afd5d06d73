//! Where reports go: [`Stdout`] for what a command answers (the status
//! text, JSON, paths, a key), [`note!`] for the `gomirror: …` line on stderr
//! that says how it went.
//!
//! Every output is independent (STYLE.md §8). A reader that stops reading
//! (`gomirror status | head -3`) closes the pipe; Rust ignores SIGPIPE, so the
//! next write fails with `BrokenPipe`, and `println!` would panic. Here the
//! rest of the output is dropped instead and the command carries on: its
//! stderr line and exit code still say how the run went. That differs from
//! ripgrep, which exits 0 at once, because ripgrep's whole answer is its
//! stdout, while `verify` or `export` have a verdict beyond it.

use std::fmt;
use std::io::{self, Write};

/// Locked stdout on which a closed pipe is not an error; any other write
/// error (a full disk behind `> file`) is.
pub struct Stdout(io::StdoutLock<'static>);

impl Stdout {
    pub fn lock() -> Stdout {
        Stdout(io::stdout().lock())
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        unless_closed(self.0.write(buf), buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        unless_closed(self.0.flush(), ())
    }
}

/// `done` in place of a `BrokenPipe` error: nobody reads any more.
fn unless_closed<T>(result: io::Result<T>, done: T) -> io::Result<T> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(done),
        other => other,
    }
}

/// Writes `gomirror: <args>` and a newline to stderr. A write error is
/// ignored: stderr is where it would be reported, and the exit code still
/// carries the outcome.
pub fn note_args(args: fmt::Arguments<'_>) {
    let _ = writeln!(io::stderr().lock(), "gomirror: {args}");
}

/// `note!("sync {}: …", outcome)`: a `gomirror: …` line on stderr, see
/// [`note_args`].
macro_rules! note {
    ($($arg:tt)*) => {
        $crate::cli::output::note_args(format_args!($($arg)*))
    };
}
pub(crate) use note;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_closed_pipe_is_swallowed() {
        let closed = io::Error::from(io::ErrorKind::BrokenPipe);
        assert_eq!(unless_closed(Err(closed), 7).expect("swallowed"), 7);
        let full = io::Error::from(io::ErrorKind::StorageFull);
        let err = unless_closed(Err::<usize, _>(full), 7).expect_err("kept");
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert_eq!(unless_closed(Ok(3), 7).expect("ok"), 3);
    }
}
