//! What planning could not do, typed by where it came from: a watched
//! module not listed, the feed, a project, toolchains, checksum-database
//! lookups. A run with any ends partial (exit 1); its last line counts them
//! by source, and `status` shows them as the run's cause.

use tracing::warn;

/// Something planning could not do. The run goes on with the rest and ends
/// partial (exit 1); the message says what and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PlanError {
    pub source: PlanSource,
    pub message: String,
}

/// Which part of planning a [`PlanError`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanSource {
    /// A watched module that could not be listed upstream.
    Watch,
    /// The index feed.
    Feed,
    /// A project: unreadable, or a go.mod of its graph could not be had.
    Project,
    /// Go toolchains.
    Toolchain,
    /// Checksum-database lookups of published versions (the backfill).
    Sumdb,
    /// Learning from clients' misses: a listing upstream could not answer.
    Clients,
}

impl PlanSource {
    /// How the sync's last line counts errors of this source: `2 {noun}`.
    pub fn noun(self) -> &'static str {
        match self {
            PlanSource::Watch => "watched modules not listed",
            PlanSource::Feed => "feed problems",
            PlanSource::Project => "project problems",
            PlanSource::Toolchain => "toolchain problems",
            PlanSource::Sumdb => "checksum-database lookups failed",
            PlanSource::Clients => "clients' misses not learned",
        }
    }
}

impl PlanError {
    pub(super) fn new(source: PlanSource, message: impl Into<String>) -> PlanError {
        let message = message.into();
        warn!("{message}");
        PlanError { source, message }
    }
}

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A run's plan errors as one cause: `2 planning problems: <the first> (and 1 more)`.
#[derive(Debug)]
pub(super) struct PlanErrors(String);

impl PlanErrors {
    pub(super) fn of(errors: &[PlanError]) -> PlanErrors {
        let n = errors.len();
        let noun = if n == 1 { "problem" } else { "problems" };
        let mut text = format!("{n} planning {noun}");
        if let Some(first) = errors.first() {
            text += &format!(": {first}");
        }
        if n > 1 {
            text += &format!(" (and {} more)", n - 1);
        }
        PlanErrors(text)
    }
}

impl std::fmt::Display for PlanErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PlanErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_cause_names_the_first_and_counts_the_rest() {
        let e = |source, m: &str| PlanError {
            source,
            message: m.into(),
        };
        let cases: &[(&[PlanError], &str)] = &[
            (&[], "0 planning problems"),
            (
                &[e(PlanSource::Watch, "a: not found")],
                "1 planning problem: a: not found",
            ),
            (
                &[
                    e(PlanSource::Project, "p: x"),
                    e(PlanSource::Toolchain, "t"),
                ],
                "2 planning problems: p: x (and 1 more)",
            ),
        ];
        for (errors, want) in cases {
            assert_eq!(PlanErrors::of(errors).to_string(), *want);
        }
    }
}
