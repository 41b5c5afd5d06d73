//! Upstream: one GOPROXY entry we fetch from, and where a relative request path lands on it.
//!
//! Accepted: `https://…` and `http://…` base URLs (trailing slash optional) and
//! `file:///abs/dir`, a directory laid out as a GOPROXY tree such as
//! `$GOMODCACHE/cache/download` (PROTOCOL.md). `direct` and `off` are GOPROXY keywords
//! that make the go command talk to VCS hosts or nothing; a mirror has no use for either.
//! Go: cmd/go/internal/modfetch/proxy.go proxyList: entries are URLs, `direct` or `off`.

use std::fmt;
use std::path::PathBuf;

use url::Url;

use super::FetchError;

/// One upstream GOPROXY. Its base always ends in `/`, so a relative path is appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    kind: Kind,
    /// The base as shown in errors and logs: the URL with any password replaced by `xxxxx`.
    shown: String,
    /// GOPROXY's `|` after this entry: when it fails with any error, the next upstream
    /// is tried; otherwise (`,`) only when it says 404/410. See: #13.
    any_error: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Http(Url),
    Dir(PathBuf),
}

/// Where one request goes: the thing to open and the URL to show for it.
#[derive(Debug)]
pub(crate) enum Location {
    Http { url: Url, shown: String },
    File { path: PathBuf, shown: String },
}

/// A GOPROXY entry that gomirror cannot fetch from.
#[derive(Debug, thiserror::Error)]
#[error("invalid upstream {input:?}: {reason}")]
pub struct UpstreamError {
    input: String,
    reason: String,
}

const ACCEPTED: &str = "want an https://, http:// or file:///absolute/dir URL";

impl Upstream {
    /// Parses one GOPROXY entry; see the module docs for what is accepted.
    pub fn parse(s: &str) -> Result<Upstream, UpstreamError> {
        let fail = |reason: String| UpstreamError {
            input: s.to_string(),
            reason,
        };
        if s == "direct" || s == "off" {
            return Err(fail(format!(
                "{s:?} is a go command keyword, not a proxy; gomirror only fetches from \
                 GOPROXY servers or directories ({ACCEPTED})"
            )));
        }
        let mut url = Url::parse(s).map_err(|e| match s {
            "" => fail(format!("empty; {ACCEPTED}")),
            // See: #13: a bare path is a directory, not a host name.
            _ if s.starts_with('/') => fail(format!("not a URL: {e}; write file://{s}")),
            _ if s.starts_with('.') || s.starts_with('~') => fail(format!(
                "not a URL: {e}; a directory needs an absolute path, as file:///abs/dir"
            )),
            _ if !s.contains("://") => fail(format!("not a URL: {e}; write https://{s}")),
            _ => fail(format!("not a URL: {e}")),
        })?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(fail("a proxy base cannot have a query or fragment".into()));
        }
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        match url.scheme() {
            "https" | "http" if url.host().is_some() => Ok(Upstream::http(url)),
            // `file:rel` parses as `file:///rel`: demand the `//` so a
            // relative path is never read as an absolute one.
            "file" => match url.to_file_path() {
                Ok(dir) if s["file:".len()..].starts_with("//") => Ok(Upstream {
                    kind: Kind::Dir(dir),
                    shown: url.to_string(),
                    any_error: false,
                }),
                _ => Err(fail(
                    "a file:// proxy needs a local absolute directory, as file:///abs/dir".into(),
                )),
            },
            other => Err(fail(format!("unsupported scheme {other:?}; {ACCEPTED}"))),
        }
    }

    fn http(url: Url) -> Upstream {
        // Go: net/url URL.Redacted: the password becomes "xxxxx".
        let mut redacted = url.clone();
        if redacted.password().is_some() {
            let _ = redacted.set_password(Some("xxxxx"));
        }
        Upstream {
            kind: Kind::Http(url),
            shown: redacted.to_string(),
            any_error: false,
        }
    }

    /// This upstream, followed by GOPROXY's `|`: the next one is tried after any
    /// error, not only after 404/410 (Go: cmd/go/internal/modfetch/proxy.go
    /// proxyList, fallBackOnError).
    pub fn falling_through_on_any_error(mut self) -> Upstream {
        self.any_error = true;
        self
    }

    /// Whether the next upstream is tried after any error of this one.
    pub fn falls_through_on_any_error(&self) -> bool {
        self.any_error
    }

    /// `scheme://host:port` of an http(s) upstream, which hold-offs are keyed by:
    /// two bases on one server share one; `None` for a directory.
    pub(crate) fn host_key(&self) -> Option<String> {
        match &self.kind {
            Kind::Http(url) => Some(url.origin().ascii_serialization()),
            Kind::Dir(_) => None,
        }
    }

    /// Where `rel` is on this upstream. `rel` must have passed [`check_rel`].
    pub(crate) fn locate(&self, rel: &str) -> Result<Location, FetchError> {
        let shown = format!("{}{rel}", self.shown);
        match &self.kind {
            // Appending, not Url::join: join would read a `c:` first segment as a scheme.
            Kind::Http(base) => match Url::parse(&format!("{}{rel}", base.as_str())) {
                Ok(url) => Ok(Location::Http { url, shown }),
                Err(_) => Err(invalid(rel, "does not form a URL")),
            },
            Kind::Dir(dir) => Ok(Location::File {
                path: dir.join(rel),
                shown,
            }),
        }
    }
}

impl std::str::FromStr for Upstream {
    type Err = UpstreamError;

    fn from_str(s: &str) -> Result<Upstream, UpstreamError> {
        Upstream::parse(s)
    }
}

impl Upstream {
    /// The base URL, ending in `/`, password redacted.
    pub fn as_str(&self) -> &str {
        &self.shown
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

/// Checks that `rel` is a plain relative path that stays under the base: segments
/// are non-empty, not `.` or `..`, printable ASCII without `?`, `#`, `%` or `\`.
/// Escaped module paths and versions always pass; this guards the `file://` tree
/// and URL building against a caller bug, it is not module path validation.
pub(crate) fn check_rel(rel: &str) -> Result<(), FetchError> {
    if rel.is_empty() {
        return Err(invalid(rel, "empty"));
    }
    if rel
        .chars()
        .any(|c| !c.is_ascii_graphic() || matches!(c, '?' | '#' | '%' | '\\'))
    {
        return Err(invalid(
            rel,
            "contains a character not allowed in a proxy path",
        ));
    }
    for seg in rel.split('/') {
        match seg {
            "" => return Err(invalid(rel, "empty path element")),
            "." | ".." => return Err(invalid(rel, "dot path element")),
            _ => {}
        }
    }
    Ok(())
}

fn invalid(rel: &str, reason: &'static str) -> FetchError {
    FetchError::InvalidPath {
        rel: rel.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_proxy_urls_and_dirs() {
        // (input, Display of the parsed upstream)
        let cases = [
            ("https://proxy.golang.org", "https://proxy.golang.org/"),
            ("https://proxy.golang.org/", "https://proxy.golang.org/"),
            (
                "https://proxy.golang.org/cached-only",
                "https://proxy.golang.org/cached-only/",
            ),
            (
                "http://127.0.0.1:8080/goproxy/",
                "http://127.0.0.1:8080/goproxy/",
            ),
            (
                "https://u:secret@corp.example/p",
                "https://u:xxxxx@corp.example/p/",
            ),
            ("https://u@corp.example", "https://u@corp.example/"),
            ("file:///var/cache/download", "file:///var/cache/download/"),
            ("file:///var/cache/download/", "file:///var/cache/download/"),
            ("file://localhost/srv/mod", "file:///srv/mod/"),
        ];
        for (input, shown) in cases {
            let up = Upstream::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(up.to_string(), shown, "{input}");
        }
    }

    #[test]
    fn parse_rejects_everything_else() {
        // (input, part of the message)
        let cases = [
            ("direct", "go command keyword"),
            ("off", "go command keyword"),
            ("", "empty"),
            ("proxy.golang.org", "relative URL without a base"),
            ("./mirror", "relative URL without a base"),
            (
                "./mirror",
                "a directory needs an absolute path, as file:///abs/dir",
            ),
            ("/srv/mirror", "relative URL without a base"),
            ("proxy.golang.org", "; write https://proxy.golang.org"),
            (
                "ftp://example.com/",
                "unsupported scheme \"ftp\"; want an https://",
            ),
            ("git+ssh://example.com/", "unsupported scheme"),
            ("https://example.com/?x=1", "query or fragment"),
            ("https://example.com/#top", "query or fragment"),
            (
                "file://otherhost/srv/mod",
                "needs a local absolute directory",
            ),
            ("file:cache", "needs a local absolute directory"),
        ];
        for (input, want) in cases {
            let err = Upstream::parse(input).expect_err(input).to_string();
            assert!(err.contains(want), "{input}: {err}");
            assert!(
                err.starts_with(&format!("invalid upstream {input:?}: ")),
                "{err}"
            );
        }
    }

    // See: #13
    #[test]
    fn issue_13_bare_path_suggests_file_url() {
        let err = Upstream::parse("/srv/cache").expect_err("a bare path");
        assert_eq!(
            err.to_string(),
            "invalid upstream \"/srv/cache\": not a URL: relative URL without a base; \
             write file:///srv/cache"
        );
    }

    #[test]
    fn locate_appends_rel_to_base() {
        let up = Upstream::parse("https://u:pw@proxy.example/base").expect("parses");
        let Ok(Location::Http { url, shown }) =
            up.locate("github.com/!azure/x/@v/v1.0.0+incompatible.zip")
        else {
            panic!("http location");
        };
        assert_eq!(
            url.as_str(),
            "https://u:pw@proxy.example/base/github.com/!azure/x/@v/v1.0.0+incompatible.zip"
        );
        assert_eq!(
            shown,
            "https://u:xxxxx@proxy.example/base/github.com/!azure/x/@v/v1.0.0+incompatible.zip"
        );

        let up = Upstream::parse("file:///srv/mod").expect("parses");
        let Ok(Location::File { path, shown }) = up.locate("rsc.io/quote/@v/list") else {
            panic!("file location");
        };
        assert_eq!(path, PathBuf::from("/srv/mod/rsc.io/quote/@v/list"));
        assert_eq!(shown, "file:///srv/mod/rsc.io/quote/@v/list");
    }

    #[test]
    fn check_rel_table() {
        let cases = [
            ("golang.org/x/text/@v/v0.3.7.zip", true),
            ("github.com/!azure/x/@v/list", true),
            ("gopkg.in/yaml.v2/@latest", true),
            ("example.com/m/@v/v2.0.0+incompatible.info", true),
            ("example.com/~user/m/@v/list", true),
            ("", false),
            ("/etc/passwd", false),
            ("a//b", false),
            ("a/b/", false),
            ("a/../b", false),
            ("../b", false),
            ("./b", false),
            ("a/b?x=1", false),
            ("a/b#f", false),
            ("a/%2e%2e/b", false),
            ("a\\b", false),
            ("a b", false),
            ("a/\u{e9}", false),
        ];
        for (rel, ok) in cases {
            assert_eq!(check_rel(rel).is_ok(), ok, "{rel:?}");
        }
    }
}
