//! What one logged request means: its target as a typed [`Request`], and its
//! method and status as a [`ResultClass`].
//!
//! Input: the raw request target as nginx logged it (`$request_uri`: still
//! percent-encoded, module paths and versions still case-encoded with `!`),
//! the method and the status. Output: [`Request`] and [`ResultClass`].
//!
//! A target is, in this order:
//! - **rejected** ([`Hostile`], with the reason) when it is longer than
//!   [`MAX_TARGET`] bytes, has a bad `%` escape or bytes that are not UTF-8,
//!   a NUL or another control character, a `..` element, a bad `!` case
//!   escape (Go: x/mod/module/module.go unescapeString: `!` must precede a
//!   lower-case letter and an escaped path has no upper-case letter), or a
//!   module path that fails Go's `CheckPath`;
//! - a **checksum-database** request `/sumdb/<name>/{supported,latest,tile/…,lookup/<path>@<version>}`;
//! - a **GOPROXY** request `/<path>/@v/list`, `/<path>/@latest` or
//!   `/<path>/@v/<version>.{info,mod,zip}` (PROTOCOL.md, GOPROXY);
//! - **non-canonical** when its version is not a canonical Go version of
//!   the path (`@v/main.info`, `@v/v1.2.info`: what `go get x@main` asks);
//! - otherwise **not protocol** (`/`, `/favicon.ico`).
//!
//! What a request means for a protocol request (its [`ResultClass`]):
//!
//! | method | status          | class                    | counts as                      |
//! |--------|-----------------|--------------------------|--------------------------------|
//! | HEAD   | any             | `probe`                  | neither use nor miss           |
//! | GET    | 200, 206, 304   | `use`                    | a use (`.info`/`.mod` too)     |
//! | GET    | 404             | `miss`                   | a miss (the shipped block answers 404 for what it lacks) |
//! | GET    | 499             | `client_gone`            | the client closed first        |
//! | GET    | 416             | `range_not_satisfiable`  |                                |
//! | GET    | 403             | `forbidden`              | (a tree file nginx cannot read)|
//! | GET    | 500–599         | `server_error`           |                                |
//! | other  | other           | `other`                  |                                |
//!
//! Hit ratio = uses / (uses + misses). Rejected, non-canonical and
//! not-protocol requests and unparsed lines are counted apart and are in no
//! class.

use std::borrow::Cow;
use std::fmt;

use serde::Serialize;

use crate::module::{ModVer, ModulePath, Version};

/// Longest request target looked at; a longer one is [`Hostile::TooLong`].
/// A module path is at most a few hundred bytes and a version 250.
pub const MAX_TARGET: usize = 2048;

/// Which file of a module version was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModuleFile {
    Info,
    Mod,
    Zip,
}

/// A checksum-database request other than a lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SumdbFile {
    Supported,
    Latest,
    Tile,
}

/// What a request target asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `/<path>/@v/<version>.{info,mod,zip}`.
    File { mv: ModVer, file: ModuleFile },
    /// `/<path>/@v/list`.
    List(ModulePath),
    /// `/<path>/@latest`.
    Latest(ModulePath),
    /// `/sumdb/<name>/lookup/<path>@<version>`.
    Lookup(ModVer),
    /// `/sumdb/<name>/{supported,latest,tile/…}`.
    Sumdb(SumdbFile),
    /// A GOPROXY or lookup shape whose version is not a canonical version
    /// of the path (`main`, `v1.2`, `master`): counted, never learned.
    NonCanonical,
    /// Not a GOPROXY or checksum-database path.
    NotProtocol,
    /// A hostile target, and why.
    Rejected(Hostile),
}

/// Why a request target was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hostile {
    TooLong(usize),
    BadPercentEscape,
    NotUtf8,
    Nul,
    ControlCharacter,
    DotDot,
    BadCaseEscape,
    /// Go's `CheckPath` message.
    InvalidModulePath(String),
}

impl Hostile {
    /// The key figures are kept under.
    pub fn as_str(&self) -> &'static str {
        match self {
            Hostile::TooLong(_) => "too_long",
            Hostile::BadPercentEscape => "bad_percent_escape",
            Hostile::NotUtf8 => "not_utf8",
            Hostile::Nul => "nul",
            Hostile::ControlCharacter => "control_character",
            Hostile::DotDot => "dot_dot",
            Hostile::BadCaseEscape => "bad_case_escape",
            Hostile::InvalidModulePath(_) => "invalid_module_path",
        }
    }
}

impl fmt::Display for Hostile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hostile::TooLong(n) => write!(f, "target of {n} bytes is longer than {MAX_TARGET}"),
            Hostile::BadPercentEscape => f.write_str("bad percent escape"),
            Hostile::NotUtf8 => f.write_str("target is not UTF-8"),
            Hostile::Nul => f.write_str("target contains NUL"),
            Hostile::ControlCharacter => f.write_str("target contains a control character"),
            Hostile::DotDot => f.write_str("target has a \"..\" element"),
            Hostile::BadCaseEscape => f.write_str("bad case escape (\"!\")"),
            Hostile::InvalidModulePath(m) => f.write_str(m),
        }
    }
}

/// What a protocol request's method and status say. See the table above.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultClass {
    Use,
    Probe,
    Miss,
    ClientGone,
    RangeNotSatisfiable,
    Forbidden,
    ServerError,
    Other,
}

impl ResultClass {
    pub const ALL: [ResultClass; 8] = [
        ResultClass::Use,
        ResultClass::Probe,
        ResultClass::Miss,
        ResultClass::ClientGone,
        ResultClass::RangeNotSatisfiable,
        ResultClass::Forbidden,
        ResultClass::ServerError,
        ResultClass::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ResultClass::Use => "use",
            ResultClass::Probe => "probe",
            ResultClass::Miss => "miss",
            ResultClass::ClientGone => "client_gone",
            ResultClass::RangeNotSatisfiable => "range_not_satisfiable",
            ResultClass::Forbidden => "forbidden",
            ResultClass::ServerError => "server_error",
            ResultClass::Other => "other",
        }
    }

    /// The class of a request by its method and status (the table above).
    pub fn of(method: &str, status: u16) -> ResultClass {
        if method == "HEAD" {
            return ResultClass::Probe;
        }
        if method != "GET" {
            return ResultClass::Other;
        }
        match status {
            200 | 206 | 304 => ResultClass::Use,
            404 => ResultClass::Miss,
            499 => ResultClass::ClientGone,
            416 => ResultClass::RangeNotSatisfiable,
            403 => ResultClass::Forbidden,
            500..=599 => ResultClass::ServerError,
            _ => ResultClass::Other,
        }
    }
}

/// Lines and requests that are in no [`ResultClass`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Skip {
    /// Neither the combined nor the JSON format, too long, or not text.
    Unparsed,
    NotProtocol,
    Rejected,
    NonCanonical,
}

impl Skip {
    pub const ALL: [Skip; 4] = [
        Skip::Unparsed,
        Skip::NotProtocol,
        Skip::Rejected,
        Skip::NonCanonical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Skip::Unparsed => "unparsed",
            Skip::NotProtocol => "not_protocol",
            Skip::Rejected => "rejected",
            Skip::NonCanonical => "non_canonical",
        }
    }
}

impl Request {
    /// Parses a raw request target (see the module doc for the order).
    pub fn parse(target: &str) -> Request {
        match decode(target) {
            Ok(path) => classify(&path),
            Err(h) => Request::Rejected(h),
        }
    }
}

/// Percent-decodes the target's path (a query is dropped: the protocol has
/// none) and refuses what no client of a module proxy sends.
fn decode(target: &str) -> Result<Cow<'_, str>, Hostile> {
    if target.len() > MAX_TARGET {
        return Err(Hostile::TooLong(target.len()));
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let bytes = path.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3);
            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return Err(Hostile::BadPercentEscape);
            }
        }
    }
    let decoded: Cow<'_, [u8]> = percent_encoding::percent_decode(bytes).into();
    let text = match decoded {
        Cow::Borrowed(_) => Cow::Borrowed(path),
        Cow::Owned(v) => Cow::Owned(String::from_utf8(v).map_err(|_| Hostile::NotUtf8)?),
    };
    if text.contains('\0') {
        return Err(Hostile::Nul);
    }
    if text.chars().any(char::is_control) {
        return Err(Hostile::ControlCharacter);
    }
    if text.split('/').any(|e| e == "..") {
        return Err(Hostile::DotDot);
    }
    Ok(text)
}

fn classify(path: &str) -> Request {
    let Some(path) = path.strip_prefix('/') else {
        return Request::NotProtocol;
    };
    if let Some(rest) = path.strip_prefix("sumdb/") {
        return sumdb(rest);
    }
    if let Some((module, file)) = path.split_once("/@v/") {
        if file == "list" {
            return with_path(module, Request::List);
        }
        let (version, kind) = match file.rsplit_once('.') {
            Some((v, "info")) => (v, ModuleFile::Info),
            Some((v, "mod")) => (v, ModuleFile::Mod),
            Some((v, "zip")) => (v, ModuleFile::Zip),
            _ => return Request::NotProtocol,
        };
        if version.contains('/') {
            return Request::NotProtocol;
        }
        return match mod_ver(module, version) {
            Ok(mv) => Request::File { mv, file: kind },
            Err(r) => r,
        };
    }
    if let Some(module) = path.strip_suffix("/@latest") {
        return with_path(module, Request::Latest);
    }
    Request::NotProtocol
}

/// `<name>/supported`, `<name>/latest`, `<name>/tile/…`, `<name>/lookup/<path>@<version>`.
fn sumdb(rest: &str) -> Request {
    let Some((_name, what)) = rest.split_once('/') else {
        return Request::NotProtocol;
    };
    match what {
        "supported" => Request::Sumdb(SumdbFile::Supported),
        "latest" => Request::Sumdb(SumdbFile::Latest),
        _ if what.starts_with("tile/") => Request::Sumdb(SumdbFile::Tile),
        _ => match what
            .strip_prefix("lookup/")
            .and_then(|l| l.rsplit_once('@'))
        {
            Some((module, version)) => match mod_ver(module, version) {
                Ok(mv) => Request::Lookup(mv),
                Err(r) => r,
            },
            None => Request::NotProtocol,
        },
    }
}

fn module_path(escaped: &str) -> Result<ModulePath, Request> {
    let path = unescape_string(escaped).ok_or(Request::Rejected(Hostile::BadCaseEscape))?;
    ModulePath::new(&path).map_err(|e| Request::Rejected(Hostile::InvalidModulePath(e.to_string())))
}

fn with_path(escaped: &str, make: fn(ModulePath) -> Request) -> Request {
    module_path(escaped).map_or_else(|r| r, make)
}

fn mod_ver(escaped_path: &str, escaped_version: &str) -> Result<ModVer, Request> {
    let path = module_path(escaped_path)?;
    let version =
        unescape_string(escaped_version).ok_or(Request::Rejected(Hostile::BadCaseEscape))?;
    let version = Version::new(&version).map_err(|_| Request::NonCanonical)?;
    ModVer::new(path, version).map_err(|_| Request::NonCanonical)
}

/// Go: x/mod/module/module.go unescapeString: `!x` → `X`; an upper-case
/// letter, a `!` before anything but a lower-case letter, or a non-ASCII
/// character is not an escaped path.
pub fn unescape_string(escaped: &str) -> Option<String> {
    let mut out = String::with_capacity(escaped.len());
    let mut bang = false;
    for c in escaped.chars() {
        if !c.is_ascii() {
            return None;
        }
        if bang {
            bang = false;
            if !c.is_ascii_lowercase() {
                return None;
            }
            out.push(c.to_ascii_uppercase());
            continue;
        }
        match c {
            '!' => bang = true,
            'A'..='Z' => return None,
            _ => out.push(c),
        }
    }
    (!bang).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mv(p: &str, v: &str) -> ModVer {
        ModVer::parse(p, v).unwrap()
    }

    fn path(p: &str) -> ModulePath {
        ModulePath::new(p).unwrap()
    }

    // See: #14
    #[test]
    fn issue_14_targets_mean_what_the_protocol_says() {
        use ModuleFile::*;
        let cases: Vec<(&str, Request)> = vec![
            ("/rsc.io/quote/@v/list", Request::List(path("rsc.io/quote"))),
            (
                "/rsc.io/quote/@latest",
                Request::Latest(path("rsc.io/quote")),
            ),
            (
                "/rsc.io/quote/@v/v1.5.2.info",
                Request::File {
                    mv: mv("rsc.io/quote", "v1.5.2"),
                    file: Info,
                },
            ),
            (
                "/rsc.io/quote/@v/v1.5.2.mod",
                Request::File {
                    mv: mv("rsc.io/quote", "v1.5.2"),
                    file: Mod,
                },
            ),
            (
                "/rsc.io/quote/@v/v1.5.2.zip",
                Request::File {
                    mv: mv("rsc.io/quote", "v1.5.2"),
                    file: Zip,
                },
            ),
            (
                "/github.com/!azure/go-sdk/@v/v1.0.0-!r!c1.zip",
                Request::File {
                    mv: mv("github.com/Azure/go-sdk", "v1.0.0-RC1"),
                    file: Zip,
                },
            ),
            (
                "/rsc.io/quote/@v/v1.5.2.info?x=1",
                Request::File {
                    mv: mv("rsc.io/quote", "v1.5.2"),
                    file: Info,
                },
            ),
            (
                "/sumdb/sum.golang.org/lookup/rsc.io/quote@v1.5.2",
                Request::Lookup(mv("rsc.io/quote", "v1.5.2")),
            ),
            (
                "/sumdb/sum.golang.org/supported",
                Request::Sumdb(SumdbFile::Supported),
            ),
            (
                "/sumdb/sum.golang.org/latest",
                Request::Sumdb(SumdbFile::Latest),
            ),
            (
                "/sumdb/sum.golang.org/tile/8/0/x001/234.p/5",
                Request::Sumdb(SumdbFile::Tile),
            ),
            ("/rsc.io/quote/@v/main.info", Request::NonCanonical),
            ("/rsc.io/quote/@v/master.info", Request::NonCanonical),
            ("/rsc.io/quote/@v/v1.2.info", Request::NonCanonical),
            ("/rsc.io/quote/v2/@v/v1.0.0.info", Request::NonCanonical),
            (
                "/sumdb/sum.golang.org/lookup/rsc.io/quote@latest",
                Request::NonCanonical,
            ),
            ("/", Request::NotProtocol),
            ("/favicon.ico", Request::NotProtocol),
            ("/rsc.io/quote/@v/v1.0.0.txt", Request::NotProtocol),
            ("/sumdb/sum.golang.org/other", Request::NotProtocol),
            ("*", Request::NotProtocol),
            ("/rsc.io/%2e%2e/@v/list", Request::Rejected(Hostile::DotDot)),
            ("/../etc/passwd", Request::Rejected(Hostile::DotDot)),
            ("/rsc.io/q%00/@v/list", Request::Rejected(Hostile::Nul)),
            (
                "/rsc.io/q%0a/@v/list",
                Request::Rejected(Hostile::ControlCharacter),
            ),
            (
                "/rsc.io/q%zz/@v/list",
                Request::Rejected(Hostile::BadPercentEscape),
            ),
            (
                "/rsc.io/q%4/@v/list",
                Request::Rejected(Hostile::BadPercentEscape),
            ),
            ("/rsc.io/q%ff/@v/list", Request::Rejected(Hostile::NotUtf8)),
            (
                "/github.com/Azure/x/@v/list",
                Request::Rejected(Hostile::BadCaseEscape),
            ),
            (
                "/github.com/!1/x/@v/list",
                Request::Rejected(Hostile::BadCaseEscape),
            ),
            (
                "/rsc.io/quote/@v/v1.0.0-!!.info",
                Request::Rejected(Hostile::BadCaseEscape),
            ),
        ];
        for (target, want) in cases {
            assert_eq!(Request::parse(target), want, "{target}");
        }
    }

    // See: #14
    #[test]
    fn issue_14_hostile_targets_carry_their_reason() {
        let huge = format!("/{}/@v/list", "a".repeat(MAX_TARGET));
        let cases: &[(&str, &str, &str)] = &[
            (
                &huge,
                "too_long",
                "target of 2057 bytes is longer than 2048",
            ),
            (
                "/noslash/@v/list",
                "invalid_module_path",
                "malformed module path \"noslash\": missing dot in first path element",
            ),
            ("/rsc.io/q%00/@v/list", "nul", "target contains NUL"),
            ("/a.b/../@v/list", "dot_dot", "target has a \"..\" element"),
        ];
        for (target, key, message) in cases {
            let Request::Rejected(h) = Request::parse(target) else {
                panic!("{target}: not rejected");
            };
            assert_eq!(
                (h.as_str(), h.to_string().as_str()),
                (*key, *message),
                "{target}"
            );
        }
    }

    // See: #14
    #[test]
    fn issue_14_method_and_status_make_the_class() {
        use ResultClass::*;
        let cases: &[(&str, u16, ResultClass)] = &[
            ("GET", 200, Use),
            ("GET", 206, Use),
            ("GET", 304, Use),
            ("HEAD", 200, Probe),
            ("HEAD", 404, Probe),
            ("GET", 404, Miss),
            ("GET", 499, ClientGone),
            ("GET", 416, RangeNotSatisfiable),
            ("GET", 403, Forbidden),
            ("GET", 500, ServerError),
            ("GET", 503, ServerError),
            ("GET", 410, Other),
            ("GET", 301, Other),
            ("POST", 200, Other),
        ];
        for (method, status, want) in cases {
            assert_eq!(ResultClass::of(method, *status), *want, "{method} {status}");
        }
    }

    /// Go: x/mod/module/module_test.go TestUnescapePath's cases, in part.
    #[test]
    fn unescape_string_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("github.com/!azure/x", Some("github.com/Azure/x")),
            ("abc", Some("abc")),
            ("!a!b", Some("AB")),
            ("Abc", None),
            ("a!", None),
            ("a!1", None),
            ("é", None),
        ];
        for (input, want) in cases {
            assert_eq!(unescape_string(input).as_deref(), *want, "{input}");
        }
    }
}
