//! What gomirror serves besides the tree: the downstream index feed,
//! `GET /index?since=&limit=`, so another site can follow this one the way
//! mirrors follow index.golang.org (see: #16).
//!
//! Input: the state database ([`Store::index_page`]). Output: pages in
//! index.golang.org's format (PROTOCOL.md "index.golang.org"):
//! newline-delimited JSON `{"Path","Version","Timestamp"}`, oldest first,
//! one entry per version published with its zip.
//!
//! - `since` is inclusive and RFC 3339 (any precision, any offset); absent,
//!   the feed starts at its first entry. `limit` is a positive integer,
//!   2000 when absent, and capped at 2000. Anything else is 400 with the
//!   reason in the body.
//! - `Timestamp` is Go's time.RFC3339Nano in UTC, trailing zeros dropped,
//!   as index.golang.org writes it. Timestamps strictly increase (stamped
//!   by `state::index`), so a page never ends inside a run of equal ones.
//! - Every other path is 404. The listener is meant for localhost, behind
//!   the nginx that serves the tree (`nginx/gomirror.conf`, `location =
//!   /index`), so the feed has the tree's host and TLS.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::error::chain;
use crate::plan::feed::{format_timestamp, parse_timestamp};
use crate::state::{IndexEntry, Store, MAX_INDEX_PAGE};

/// The Content-Type of a page (newline-delimited JSON, as index.golang.org).
pub const INDEX_CONTENT_TYPE: &str = "application/json; charset=utf-8";

/// One line of a page, with index.golang.org's field names and order.
#[derive(Serialize)]
struct Line<'a> {
    #[serde(rename = "Path")]
    path: &'a str,
    #[serde(rename = "Version")]
    version: &'a str,
    #[serde(rename = "Timestamp")]
    timestamp: String,
}

/// A page's query, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexQuery {
    pub since: OffsetDateTime,
    pub limit: usize,
}

/// Why a query is refused (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("invalid since {value:?}: want an RFC 3339 time, as 2019-04-10T19:08:52.997264Z")]
    Since { value: String },
    #[error("invalid limit {value:?}: want a positive integer")]
    Limit { value: String },
}

impl IndexQuery {
    /// Checks `since` and `limit` of a request's query; other keys are ignored.
    pub fn parse(params: &HashMap<String, String>) -> Result<IndexQuery, QueryError> {
        let since = match params.get("since").map(String::as_str) {
            None | Some("") => OffsetDateTime::UNIX_EPOCH,
            Some(s) => parse_timestamp(s).map_err(|_| QueryError::Since { value: s.into() })?,
        };
        let limit = match params.get("limit").map(String::as_str) {
            None | Some("") => MAX_INDEX_PAGE,
            Some(s) => match s.parse::<u64>() {
                Ok(n) if n > 0 => {
                    usize::try_from(n).map_or(MAX_INDEX_PAGE, |n| n.min(MAX_INDEX_PAGE))
                }
                _ => return Err(QueryError::Limit { value: s.into() }),
            },
        };
        Ok(IndexQuery { since, limit })
    }
}

/// A page's body: one JSON line per entry, each ending in a newline.
pub fn render_page(entries: &[IndexEntry]) -> String {
    let mut out = String::with_capacity(entries.len() * 96);
    for e in entries {
        let line = Line {
            path: e.mv.path.as_str(),
            version: e.mv.version.as_str(),
            timestamp: format_timestamp(e.timestamp),
        };
        out.push_str(&serde_json::to_string(&line).expect("strings always serialize"));
        out.push('\n');
    }
    out
}

/// The `/index` route over `store`, for [`serve_index`] and tests.
pub fn index_router(store: Store) -> axum::Router {
    axum::Router::new()
        .route("/index", axum::routing::get(index))
        .with_state(store)
}

/// Serves `GET /index` on `listener` until `shutdown` fires.
pub async fn serve_index(
    listener: tokio::net::TcpListener,
    store: Store,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, index_router(store))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn index(
    State(store): State<Store>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let query = match IndexQuery::parse(&params) {
        Ok(q) => q,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    match store.index_page(query.since, query.limit).await {
        Ok(entries) => (
            [(header::CONTENT_TYPE, INDEX_CONTENT_TYPE)],
            render_page(&entries),
        )
            .into_response(),
        Err(e) => {
            let msg = chain(&e);
            tracing::error!("index page: {msg}");
            (StatusCode::SERVICE_UNAVAILABLE, format!("{msg}\n")).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> Result<IndexQuery, QueryError> {
        let params = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        IndexQuery::parse(&params)
    }

    // See: #16 (index.golang.org's parameters: limit ≤ 2000, bad ones refused).
    #[test]
    fn issue_16_query_parameters() {
        let t = |s| parse_timestamp(s).expect("valid");
        let ok = |since, limit| Ok(IndexQuery { since, limit });
        let epoch = OffsetDateTime::UNIX_EPOCH;
        type Case<'a> = (&'a [(&'a str, &'a str)], Result<IndexQuery, QueryError>);
        let cases: &[Case] = &[
            (&[], ok(epoch, 2000)),
            (&[("limit", "5")], ok(epoch, 5)),
            (&[("limit", "2001")], ok(epoch, 2000)),
            (
                &[("limit", "99999999999999999999")],
                Err(QueryError::Limit {
                    value: "99999999999999999999".into(),
                }),
            ),
            (
                &[("limit", "0")],
                Err(QueryError::Limit { value: "0".into() }),
            ),
            (
                &[("limit", "-1")],
                Err(QueryError::Limit { value: "-1".into() }),
            ),
            (
                &[("limit", "x")],
                Err(QueryError::Limit { value: "x".into() }),
            ),
            (
                &[("since", "2019-04-10T19:08:52.997264Z")],
                ok(t("2019-04-10T19:08:52.997264Z"), 2000),
            ),
            (
                &[("since", "2019-04-10T21:08:52+02:00")],
                ok(t("2019-04-10T19:08:52Z"), 2000),
            ),
            (
                &[("since", "2019-04-10")],
                Err(QueryError::Since {
                    value: "2019-04-10".into(),
                }),
            ),
            (
                &[("since", "yesterday"), ("limit", "1")],
                Err(QueryError::Since {
                    value: "yesterday".into(),
                }),
            ),
        ];
        for (pairs, want) in cases {
            assert_eq!(&query(pairs), want, "{pairs:?}");
        }
        assert_eq!(
            query(&[("limit", "0")]).unwrap_err().to_string(),
            "invalid limit \"0\": want a positive integer"
        );
    }

    // See: #16 (each line exactly as index.golang.org writes it).
    #[test]
    fn issue_16_lines_are_index_golang_org_json() {
        let entry = |path: &str, version: &str, ts: &str| IndexEntry {
            mv: crate::module::ModVer::parse(path, version).expect("valid"),
            timestamp: parse_timestamp(ts).expect("valid"),
        };
        let body = render_page(&[
            entry("golang.org/x/text", "v0.3.0", "2019-04-10T19:08:52.997264Z"),
            entry("github.com/Azure/x", "v1.0.0", "2019-04-10T19:08:53.100Z"),
            entry(
                "example.com/q",
                "v2.0.0+incompatible",
                "2019-04-10T19:08:54Z",
            ),
        ]);
        assert_eq!(
            body,
            "{\"Path\":\"golang.org/x/text\",\"Version\":\"v0.3.0\",\"Timestamp\":\"2019-04-10T19:08:52.997264Z\"}\n\
             {\"Path\":\"github.com/Azure/x\",\"Version\":\"v1.0.0\",\"Timestamp\":\"2019-04-10T19:08:53.1Z\"}\n\
             {\"Path\":\"example.com/q\",\"Version\":\"v2.0.0+incompatible\",\"Timestamp\":\"2019-04-10T19:08:54Z\"}\n"
        );
    }
}
