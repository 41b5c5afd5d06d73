//! How an error is shown: the message and every cause after it, `a: b: c`,
//! the way Go prints wrapped errors (`fmt.Errorf("…: %w", err)`) and anyhow
//! prints `{:#}`.
//!
//! The one formatter for error chains (STYLE.md §2: a variant shows its cause
//! once, the printer shows the chain). Library code uses it for log fields
//! and for reasons recorded in state; main.rs for the final message of a run
//! that could not proceed. Not a stage: every stage may use it. Also the one
//! way to run blocking work that reports a panic as an error ([`blocking`]).

use std::error::Error;
use std::fmt;

/// Displays an error with its whole source chain, `a: b: c`.
#[derive(Clone, Copy)]
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(cause) = next {
            write!(f, ": {cause}")?;
            next = cause.source();
        }
        Ok(())
    }
}

/// [`Chain`] as a `String`, for a reason kept in state or an error message.
pub fn chain(e: &(dyn Error + 'static)) -> String {
    Chain(e).to_string()
}

/// A blocking task panicked: a bug, reported instead of crashing.
#[derive(Debug, thiserror::Error)]
#[error("internal error in {task}")]
pub struct TaskError {
    pub task: &'static str,
    #[source]
    pub source: tokio::task::JoinError,
}

/// Runs `f` on the blocking pool (to its end, even if the caller stops
/// waiting); a panic is a [`TaskError`] naming `task`.
pub async fn blocking<T: Send + 'static>(
    task: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, TaskError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| TaskError { task, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{msg}")]
    struct Wrapped {
        msg: &'static str,
        #[source]
        source: Option<Box<Wrapped>>,
    }

    fn wrapped(msgs: &[&'static str]) -> Wrapped {
        let (first, rest) = msgs.split_first().expect("at least one message");
        Wrapped {
            msg: first,
            source: (!rest.is_empty()).then(|| Box::new(wrapped(rest))),
        }
    }

    #[test]
    fn chain_joins_every_cause_with_colons() {
        let cases: &[(&[&str], &str)] = &[
            (&["a"], "a"),
            (&["a", "b"], "a: b"),
            (
                &["reading u", "connect", "refused"],
                "reading u: connect: refused",
            ),
        ];
        for (msgs, want) in cases {
            let e = wrapped(msgs);
            assert_eq!(chain(&e), *want, "{msgs:?}");
            assert_eq!(Chain(&e).to_string(), *want, "{msgs:?}");
        }
    }
}
