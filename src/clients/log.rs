//! One access-log line → [`LogLine`]: time, method, request target, status,
//! body bytes.
//!
//! Two formats, told apart by the first byte:
//! - nginx's predefined `combined`:
//!   `$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent"`.
//!   nginx writes `"`, `\` and bytes outside printable ASCII of `$request`
//!   as `\xHH`; they are decoded back, so a hostile byte is seen as itself.
//! - the JSON `log_format gomirror` of the shipped `nginx/gomirror.conf`
//!   (`escape=json`): an object with `msec` (Unix time, or `time` in
//!   ISO 8601), `method`, `uri` (`$request_uri`, raw), `status`, `bytes`.
//!
//! A line that is neither, or whose fields do not parse, is a [`LineError`]:
//! counted and skipped by the reader, never fatal.

use std::borrow::Cow;

use chrono::{DateTime, NaiveDate};
use serde::Deserialize;

/// What the reader needs of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine<'a> {
    /// Unix seconds.
    pub time: i64,
    pub method: Cow<'a, str>,
    /// The raw request target (`$request_uri`).
    pub target: Cow<'a, str>,
    pub status: u16,
    pub bytes: u64,
}

/// Why a line is not a request we can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("not text")]
    NotText,
    #[error("neither the combined nor the gomirror JSON format")]
    Format,
    #[error("bad time")]
    Time,
}

/// Parses one line, without its newline.
pub fn parse_line(line: &[u8]) -> Result<LogLine<'_>, LineError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match line.first() {
        Some(b'{') => json(line),
        Some(_) => combined(std::str::from_utf8(line).map_err(|_| LineError::NotText)?),
        None => Err(LineError::Format),
    }
}

#[derive(Deserialize)]
struct JsonLine<'a> {
    #[serde(default)]
    msec: Option<f64>,
    #[serde(default, borrow)]
    time: Option<Cow<'a, str>>,
    #[serde(borrow)]
    method: Cow<'a, str>,
    #[serde(borrow)]
    uri: Cow<'a, str>,
    status: u16,
    bytes: u64,
}

fn json(line: &[u8]) -> Result<LogLine<'_>, LineError> {
    let j: JsonLine<'_> = serde_json::from_slice(line).map_err(|_| LineError::Format)?;
    let time = match (j.msec, &j.time) {
        (Some(ms), _) if ms.is_finite() && ms >= 0.0 => ms as i64,
        (_, Some(t)) => DateTime::parse_from_rfc3339(t)
            .map_err(|_| LineError::Time)?
            .timestamp(),
        _ => return Err(LineError::Time),
    };
    Ok(LogLine {
        time,
        method: j.method,
        target: j.uri,
        status: j.status,
        bytes: j.bytes,
    })
}

fn combined(line: &str) -> Result<LogLine<'_>, LineError> {
    let (_, rest) = line.split_once(" [").ok_or(LineError::Format)?;
    let (time, rest) = rest.split_once("] \"").ok_or(LineError::Format)?;
    let time = time_local(time)?;
    // `$request` holds no raw `"`: nginx writes it as \x22.
    let (request, rest) = rest.split_once('"').ok_or(LineError::Format)?;
    let mut fields = rest.split_ascii_whitespace();
    let status = fields.next().and_then(|s| s.parse().ok());
    let bytes = fields.next().and_then(|s| s.parse().ok());
    let (Some(status), Some(bytes)) = (status, bytes) else {
        return Err(LineError::Format);
    };
    let mut parts = request.split(' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(LineError::Format);
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(LineError::Format);
    }
    Ok(LogLine {
        time,
        method: Cow::Borrowed(method),
        target: unescape_nginx(target),
        status,
        bytes,
    })
}

/// `$time_local`: `10/Oct/2000:13:55:36 -0700` → Unix seconds.
fn time_local(t: &str) -> Result<i64, LineError> {
    let b = t.as_bytes();
    if b.len() != 26 || b[2] != b'/' || b[6] != b'/' || b[11] != b':' || b[20] != b' ' {
        return Err(LineError::Time);
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, LineError> {
        t.get(r)
            .filter(|s| s.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or(LineError::Time)
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS
        .iter()
        .position(|m| t.get(3..6) == Some(*m))
        .ok_or(LineError::Time)?;
    let date = NaiveDate::from_ymd_opt(num(7..11)? as i32, month as u32 + 1, num(0..2)? as u32)
        .ok_or(LineError::Time)?;
    let (h, m, s) = (num(12..14)?, num(15..17)?, num(18..20)?);
    if h > 23 || m > 59 || s > 60 {
        return Err(LineError::Time);
    }
    let sign = match b[21] {
        b'+' => 1,
        b'-' => -1,
        _ => return Err(LineError::Time),
    };
    let offset = sign * (num(22..24)? * 3600 + num(24..26)? * 60);
    let midnight = date.and_hms_opt(0, 0, 0).ok_or(LineError::Time)?;
    Ok(midnight.and_utc().timestamp() + h * 3600 + m * 60 + s - offset)
}

/// nginx's `\xHH` escapes of `$request` back to bytes; a result that is not
/// UTF-8 is kept escaped as `%HH`, which the request parser refuses.
fn unescape_nginx(s: &str) -> Cow<'_, str> {
    if !s.contains("\\x") {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 2..i + 4)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (
            b[i],
            b.get(i + 1),
            hex.and_then(|h| u8::from_str_radix(h, 16).ok()),
        ) {
            (b'\\', Some(b'x'), Some(v)) => {
                out.push(v);
                i += 4;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    match String::from_utf8(out) {
        Ok(text) => Cow::Owned(text),
        Err(e) => Cow::Owned(
            e.into_bytes()
                .iter()
                .map(|&c| {
                    if c.is_ascii() {
                        (c as char).to_string()
                    } else {
                        format!("%{c:02X}")
                    }
                })
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(time: i64, method: &str, target: &str, status: u16, bytes: u64) -> LogLine<'static> {
        LogLine {
            time,
            method: Cow::Owned(method.into()),
            target: Cow::Owned(target.into()),
            status,
            bytes,
        }
    }

    // See: #14
    #[test]
    fn issue_14_combined_and_json_lines_parse() {
        let cases: &[(&str, Result<LogLine<'_>, LineError>)] = &[
            (
                r#"127.0.0.1 - - [04/Dec/2026:15:59:31 +0000] "GET /rsc.io/quote/@v/list HTTP/1.1" 200 42 "-" "Go-http-client/1.1""#,
                Ok(line(1796399971, "GET", "/rsc.io/quote/@v/list", 200, 42)),
            ),
            (
                r#"::1 - bob [04/Dec/2026:16:59:31 +0100] "HEAD /x.io/@latest HTTP/2.0" 404 0 "-" "-""#,
                Ok(line(1796399971, "HEAD", "/x.io/@latest", 404, 0)),
            ),
            (
                r#"1.2.3.4 - - [04/Dec/2026:15:59:31 +0000] "GET /a.io/q\x00/@v/list HTTP/1.1" 404 0 "-" "-""#,
                Ok(line(1796399971, "GET", "/a.io/q\0/@v/list", 404, 0)),
            ),
            (
                r#"{"time":"2026-12-04T15:59:31+00:00","msec":1796399971.123,"method":"GET","uri":"/rsc.io/quote/@v/v1.5.2.zip","status":200,"bytes":1234,"request_time":0.001}"#,
                Ok(line(
                    1796399971,
                    "GET",
                    "/rsc.io/quote/@v/v1.5.2.zip",
                    200,
                    1234,
                )),
            ),
            (
                r#"{"time":"2026-12-04T16:59:31+01:00","method":"GET","uri":"/a\"b","status":404,"bytes":0}"#,
                Ok(line(1796399971, "GET", "/a\"b", 404, 0)),
            ),
            (
                r#"1.2.3.4 - - [04/Dec/2026:15:59:31 +0000] "\x16\x03\x01" 400 150 "-" "-""#,
                Err(LineError::Format),
            ),
            ("garbage", Err(LineError::Format)),
            ("", Err(LineError::Format)),
            (r#"{"method":"GET"}"#, Err(LineError::Format)),
            (
                r#"1.2.3.4 - - [04/Foo/2026:15:59:31 +0000] "GET / HTTP/1.1" 200 1 "-" "-""#,
                Err(LineError::Time),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(&parse_line(text.as_bytes()), want, "{text}");
        }
        assert_eq!(parse_line(b"\xff\xfe binary"), Err(LineError::NotText));
    }
}
