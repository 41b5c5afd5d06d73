//! go.mod and go.work files: the syntax of x/mod/modfile and the directives a module graph
//! needs (`module`, `go`, `toolchain`, `require`, `exclude`, `replace`; `use` in go.work).
//!
//! Go: x/mod/modfile/read.go (lexer, lines and `verb ( … )` blocks, `//` comments, quoted
//! strings), rule.go `parseToFile`, `add`, `parseReplace`, `parseVersion`, work.go.
//! - **Strict** parsing ([`Strictness::Main`]) is for the files of the project itself: an
//!   unknown directive is an error, as `modfile.Parse` makes it.
//! - **Lax** parsing ([`Strictness::Dependency`]) is for a dependency's `.mod`: only
//!   `module`, `go` and `require` count, everything else is ignored (`modfile.ParseLax`); a
//!   dependency's `replace` and `exclude` never apply.
//!
//! Versions must be canonical or complete to canonical (`v1.2` → `v1.2.0`), as with
//! `modfile.Parse(…, nil)`: queries like `latest` or a branch name need the go command. Every
//! module path must pass `module.CheckPath` here, at the edge, so that nothing from a project
//! file names a path in the tree unchecked. Errors name `file:line`.

use std::fmt;

use crate::module::gover::GoVersion;
use crate::module::{canonical_version, ModVer, ModulePath, Version};

/// Largest go.mod or go.work we read, as the go command limits a go.mod
/// (PROTOCOL.md, "Module zips": `go.mod` ≤ 16 MiB).
pub const MAX_MOD_FILE: u64 = 16 << 20;

/// Which rules apply: a project's own files, or a dependency's `.mod`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strictness {
    Main,
    Dependency,
}

/// One requirement: `require path version [// indirect]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Require {
    pub mv: ModVer,
    pub indirect: bool,
    pub line: usize,
}

/// What a `replace` points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `=> other/module v1.2.3`
    Module(ModVer),
    /// `=> ../local/dir` (rooted, or starting with `.` or `..`), as written.
    Dir(String),
}

/// `replace old [version] => target`. Without a version it applies to every version of `old`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replace {
    pub old: ModulePath,
    pub old_version: Option<Version>,
    pub new: Target,
    pub line: usize,
}

/// A go.mod, reduced to what the module graph and the toolchain choice read.
#[derive(Clone, Debug, Default)]
pub struct ModFile {
    /// The `module` line as written: a main module's path need not be a valid
    /// dependency path (`module example` is allowed), so it is not checked here.
    pub module: Option<String>,
    pub go: Option<GoVersion>,
    /// `toolchain go1.22.3` or `default`.
    pub toolchain: Option<String>,
    pub require: Vec<Require>,
    pub exclude: Vec<ModVer>,
    pub replace: Vec<Replace>,
}

/// A go.work file.
#[derive(Clone, Debug, Default)]
pub struct WorkFile {
    pub go: Option<GoVersion>,
    pub toolchain: Option<String>,
    /// `use` directories as written, with their line.
    pub uses: Vec<(String, usize)>,
    pub replace: Vec<Replace>,
}

/// One error at `file:line`, in the go command's words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

/// Every error of one file, as modfile's `ErrorList` collects them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    pub file: String,
    pub errors: Vec<LineError>,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}:{}: {}", self.file, e.line, e.message)?;
        }
        Ok(())
    }
}

/// Parses a go.mod. `file` names it in errors.
pub fn parse_mod(file: &str, data: &[u8], strictness: Strictness) -> Result<ModFile, ParseError> {
    let stmts = syntax(file, data)?;
    let mut out = ModFile::default();
    let mut errs = Vec::new();
    for s in &stmts {
        let e = add_mod(&mut out, s, strictness);
        errs.extend(e.map(|message| LineError {
            line: s.line,
            message,
        }));
    }
    finish(file, errs, out)
}

/// Parses a go.work.
pub fn parse_work(file: &str, data: &[u8]) -> Result<WorkFile, ParseError> {
    let stmts = syntax(file, data)?;
    let mut out = WorkFile::default();
    let mut errs = Vec::new();
    for s in &stmts {
        let e = add_work(&mut out, s);
        errs.extend(e.map(|message| LineError {
            line: s.line,
            message,
        }));
    }
    finish(file, errs, out)
}

fn finish<T>(file: &str, errors: Vec<LineError>, out: T) -> Result<T, ParseError> {
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ParseError {
            file: file.to_owned(),
            errors,
        })
    }
}

/// One statement, with the verb of its block (if any) put first: `require ( a v1 )` gives
/// the statement `require a v1`.
#[derive(Debug)]
struct Stmt {
    tokens: Vec<String>,
    line: usize,
    /// The `//` comment that ends the statement's line, without the slashes.
    suffix: Option<String>,
    /// Set for a line of an unknown block (`foo ( … )` or `require x ( … )`).
    unknown_block: Option<String>,
    in_block: bool,
}

fn add_mod(f: &mut ModFile, s: &Stmt, strictness: Strictness) -> Option<String> {
    let lax = strictness == Strictness::Dependency;
    if let Some(block) = &s.unknown_block {
        return (!lax).then(|| format!("unknown block type: {block}"));
    }
    let (verb, args) = (s.tokens[0].as_str(), &s.tokens[1..]);
    let block_verbs = [
        "module", "godebug", "require", "exclude", "replace", "retract", "tool", "ignore",
    ];
    if s.in_block && !block_verbs.contains(&verb) {
        return (!lax).then(|| format!("unknown block type: {verb}"));
    }
    if lax && !matches!(verb, "module" | "go" | "require") {
        return None;
    }
    match verb {
        "module" => {
            if f.module.is_some() {
                return Some("repeated module statement".into());
            }
            let [path] = args else {
                return Some("usage: module module/path".into());
            };
            match parse_string(path) {
                Ok(p) => f.module = Some(p),
                Err(e) => return Some(e),
            }
        }
        "go" => match go_line(f.go.is_some(), args, lax) {
            Ok(v) => f.go = Some(v),
            Err(e) => return Some(e),
        },
        "toolchain" => match toolchain(f.toolchain.is_some(), args) {
            Ok(t) => f.toolchain = Some(t),
            Err(e) => return Some(e),
        },
        "require" | "exclude" => {
            let mv = match require_args(verb, args) {
                Ok(mv) => mv,
                Err(e) => return Some(e),
            };
            if verb == "require" {
                let indirect = s.suffix.as_deref().is_some_and(is_indirect);
                f.require.push(Require {
                    mv,
                    indirect,
                    line: s.line,
                });
            } else {
                f.exclude.push(mv);
            }
        }
        "replace" => match parse_replace(args, s.line) {
            Ok(r) => f.replace.push(r),
            Err(e) => return Some(e),
        },
        // Not read for the module graph; their syntax is the go command's to check.
        "godebug" | "retract" | "tool" | "ignore" => {}
        _ => return Some(format!("unknown directive: {verb}")),
    }
    None
}

/// The `go` directive's argument.
fn go_line(repeated: bool, args: &[String], lax: bool) -> Result<GoVersion, String> {
    if repeated {
        return Err("repeated go statement".into());
    }
    let [v] = args else {
        return Err("go directive expects exactly one argument".into());
    };
    go_version(v, lax).ok_or_else(|| format!("invalid go version '{v}': must match format 1.23.0"))
}

/// The `toolchain` directive's argument. Go: modfile ToolchainRE `^default$|^go1($|\.)`.
fn toolchain(repeated: bool, args: &[String]) -> Result<String, String> {
    if repeated {
        return Err("repeated toolchain statement".into());
    }
    match args {
        [name] if name == "default" || name == "go1" || name.starts_with("go1.") => {
            Ok(name.clone())
        }
        [name] => Err(format!(
            "invalid toolchain version '{name}': must match format go1.23.0 or default"
        )),
        _ => Err("toolchain directive expects exactly one argument".into()),
    }
}

fn add_work(f: &mut WorkFile, s: &Stmt) -> Option<String> {
    if let Some(block) = &s.unknown_block {
        return Some(format!("unknown block type: {block}"));
    }
    let (verb, args) = (s.tokens[0].as_str(), &s.tokens[1..]);
    if s.in_block && !["godebug", "use", "replace"].contains(&verb) {
        return Some(format!("unknown block type: {verb}"));
    }
    match verb {
        "go" => match go_line(f.go.is_some(), args, false) {
            Ok(v) => f.go = Some(v),
            Err(e) => return Some(e),
        },
        "toolchain" => match toolchain(f.toolchain.is_some(), args) {
            Ok(t) => f.toolchain = Some(t),
            Err(e) => return Some(e),
        },
        "use" => {
            let [dir] = args else {
                return Some("usage: use local/dir".into());
            };
            match parse_string(dir) {
                Ok(d) => f.uses.push((d, s.line)),
                Err(e) => return Some(e),
            }
        }
        "replace" => match parse_replace(args, s.line) {
            Ok(r) => f.replace.push(r),
            Err(e) => return Some(e),
        },
        "godebug" => {}
        _ => return Some(format!("unknown directive: {verb}")),
    }
    None
}

/// A `go` line's version. Go: modfile GoVersionRE; a dependency's go.mod (lax) may also say
/// `1.21.x-foo`, which the go command truncates to its language version.
fn go_version(v: &str, lax: bool) -> Option<GoVersion> {
    if is_go_version_re(v) {
        return GoVersion::parse(v);
    }
    if lax {
        // Go: modfile laxGoVersionRE `^v?(([1-9][0-9]*)\.(0|[1-9][0-9]*))([^0-9].*)$`.
        let s = v.strip_prefix('v').unwrap_or(v);
        let lang: String = {
            let major = s.bytes().take_while(u8::is_ascii_digit).count();
            let rest = &s[major..];
            let minor = rest
                .strip_prefix('.')
                .map_or(0, |r| r.bytes().take_while(u8::is_ascii_digit).count());
            s[..major + 1 + minor].to_owned()
        };
        if is_go_version_re(&lang) && s.len() > lang.len() {
            return GoVersion::parse(&lang);
        }
    }
    None
}

/// Go: modfile GoVersionRE `^([1-9][0-9]*)\.(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))?([a-z]+[0-9]+)?$`.
fn is_go_version_re(v: &str) -> bool {
    fn num(s: &str) -> Option<&str> {
        let n = s.bytes().take_while(u8::is_ascii_digit).count();
        (n > 0 && !(s.starts_with('0') && n > 1)).then(|| &s[n..])
    }
    let Some(rest) = v.strip_prefix(|c: char| ('1'..='9').contains(&c)) else {
        return false;
    };
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    let Some(rest) = rest.strip_prefix('.').and_then(num) else {
        return false;
    };
    let rest = match rest.strip_prefix('.') {
        Some(r) => match num(r) {
            Some(r) => r,
            None => return false,
        },
        None => rest,
    };
    if rest.is_empty() {
        return true;
    }
    let letters = rest.bytes().take_while(u8::is_ascii_lowercase).count();
    let digits = &rest[letters..];
    letters > 0 && !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit())
}

/// Go: modfile isIndirect: the line's comment is `indirect` or starts `indirect;`.
fn is_indirect(comment: &str) -> bool {
    let mut f = comment.split_whitespace();
    matches!(
        (f.next(), f.next()),
        (Some("indirect"), None) | (Some("indirect;"), Some(_))
    )
}

/// `path version` of a `require` or `exclude`.
fn require_args(verb: &str, args: &[String]) -> Result<ModVer, String> {
    let [path, version] = args else {
        return Err(format!("usage: {verb} module/path v1.2.3"));
    };
    let path = parse_string(path)?;
    module_version(verb, &path, version)
}

/// A checked module path and a version completed to canonical (Go: modfile parseVersion
/// with no fixer, then module.CheckPathMajor; module.CheckPath for the path).
fn module_version(verb: &str, path: &str, version: &str) -> Result<ModVer, String> {
    let p = ModulePath::new(path).map_err(|e| format!("{verb} {path:?}: {e}"))?;
    let v = parse_string(version)?;
    let Some(cv) = canonical_version(&v) else {
        return Err(format!(
            "{verb} {path}: version {v:?} invalid: must be of the form v1.2.3"
        ));
    };
    let version = Version::for_path(&p, &cv).map_err(|e| format!("{verb} {path}: {e}"))?;
    Ok(ModVer { path: p, version })
}

/// Go: modfile parseReplace.
fn parse_replace(args: &[String], line: usize) -> Result<Replace, String> {
    let usage = || {
        "usage: replace module/path [v1.2.3] => other/module v1.4\n\
         \t or replace module/path [v1.2.3] => ../local/directory"
            .to_owned()
    };
    let arrow = if args.len() >= 2 && args[1] == "=>" {
        1
    } else {
        2
    };
    if args.len() < arrow + 2 || args.len() > arrow + 3 || args[arrow] != "=>" {
        return Err(usage());
    }
    let old_text = parse_string(&args[0])?;
    let old = ModulePath::new(&old_text).map_err(|e| format!("replace {old_text:?}: {e}"))?;
    let old_version = if arrow == 2 {
        Some(module_version("replace", &old_text, &args[1])?.version)
    } else {
        None
    };
    let new_text = parse_string(&args[arrow + 1])?;
    let new = if args.len() == arrow + 2 {
        if !is_directory_path(&new_text) {
            if new_text.contains('@') {
                return Err(
                    "replacement module must match format 'path version', not 'path@version'"
                        .into(),
                );
            }
            return Err("replacement module without version must be directory path (rooted or starting with . or ..)".into());
        }
        if new_text.contains('\\') {
            return Err(
                "replacement directory appears to be Windows path (on a non-windows system)".into(),
            );
        }
        Target::Dir(new_text)
    } else {
        if is_directory_path(&new_text) {
            return Err(format!(
                "replacement module directory path {new_text:?} cannot have version"
            ));
        }
        Target::Module(module_version("replace", &new_text, &args[arrow + 2])?)
    };
    Ok(Replace {
        old,
        old_version,
        new,
        line,
    })
}

/// Go: modfile IsDirectoryPath (every syntax a go.mod may carry between systems).
pub fn is_directory_path(ns: &str) -> bool {
    let b = ns.as_bytes();
    ns == "."
        || ns.starts_with("./")
        || ns.starts_with(".\\")
        || ns == ".."
        || ns.starts_with("../")
        || ns.starts_with("..\\")
        || ns.starts_with('/')
        || ns.starts_with('\\')
        || (b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':')
}

/// Go: modfile parseString: a `"`-quoted token is unquoted as Go's strconv.Unquote does;
/// an unquoted one may not contain a quote.
fn parse_string(t: &str) -> Result<String, String> {
    if let Some(body) = t.strip_prefix('"') {
        return unquote(body).ok_or_else(|| format!("invalid quoted string: {t}"));
    }
    if t.contains(['"', '\'', '`']) {
        return Err("invalid quoted string: unquoted string cannot contain quote".into());
    }
    Ok(t.to_owned())
}

/// The body of a Go double-quoted string literal (after the opening quote).
fn unquote(body: &str) -> Option<String> {
    let body = body.strip_suffix('"')?;
    let mut out = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\n' => return None,
            '\\' => {
                let e = chars.next()?;
                let simple = match e {
                    'a' => Some('\x07'),
                    'b' => Some('\x08'),
                    'f' => Some('\x0c'),
                    'n' => Some('\n'),
                    'r' => Some('\r'),
                    't' => Some('\t'),
                    'v' => Some('\x0b'),
                    '\\' => Some('\\'),
                    '"' => Some('"'),
                    _ => None,
                };
                if let Some(s) = simple {
                    out.push(s);
                    continue;
                }
                let (digits, radix) = match e {
                    'x' => (2, 16),
                    'u' => (4, 16),
                    'U' => (8, 16),
                    '0'..='7' => (2, 8),
                    _ => return None,
                };
                let mut s: String = (e != 'x' && e != 'u' && e != 'U')
                    .then_some(e)
                    .into_iter()
                    .collect();
                for _ in 0..digits {
                    s.push(chars.next()?);
                }
                let n = u32::from_str_radix(&s, radix).ok()?;
                // \x and octal escapes are bytes; only ASCII ones make valid UTF-8 alone.
                out.push(char::from_u32(n).filter(|_| radix == 16 && e != 'x' || n < 0x80)?);
            }
            c => out.push(c),
        }
    }
    Some(out)
}

// ---- syntax: tokens, lines and blocks (Go: x/mod/modfile/read.go) ----

#[derive(Debug, PartialEq)]
enum Tok {
    Word(String),
    LParen,
    RParen,
    /// End of line, with the `//` comment that ended it, if any text preceded the comment.
    Eol(Option<String>),
    /// A line that holds only a comment.
    Comment,
}

/// The file's statements, blocks flattened. Syntax errors stop at the first, as Go's do.
fn syntax(file: &str, data: &[u8]) -> Result<Vec<Stmt>, ParseError> {
    let err = |line: usize, message: String| ParseError {
        file: file.to_owned(),
        errors: vec![LineError { line, message }],
    };
    let text = std::str::from_utf8(data).map_err(|e| {
        let line = 1 + data[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        err(line, "invalid UTF-8".into())
    })?;
    let toks = lex(text).map_err(|(line, m)| err(line, m))?;
    let mut stmts = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let (ref tok, line) = toks[i];
        match tok {
            Tok::Eol(_) | Tok::Comment => {
                i += 1;
                continue;
            }
            Tok::LParen | Tok::RParen => {
                return Err(err(line, "syntax error (unexpected parenthesis)".into()))
            }
            Tok::Word(_) => {}
        }
        let mut words = Vec::new();
        loop {
            match &toks[i].0 {
                Tok::Word(w) => words.push(w.clone()),
                Tok::LParen if matches!(toks.get(i + 1), Some((Tok::Eol(_), _))) => {
                    i = block(&toks, i + 2, line, &words, &mut stmts).map_err(|m| err(line, m))?;
                    break;
                }
                Tok::LParen
                    if matches!(toks.get(i + 1), Some((Tok::RParen, _)))
                        && matches!(toks.get(i + 2), Some((Tok::Eol(_), _))) =>
                {
                    i += 3;
                    break;
                }
                Tok::LParen => words.push("(".into()),
                Tok::RParen => words.push(")".into()),
                Tok::Eol(suffix) => {
                    stmts.push(Stmt {
                        tokens: std::mem::take(&mut words),
                        line,
                        suffix: suffix.clone(),
                        unknown_block: None,
                        in_block: false,
                    });
                    i += 1;
                    break;
                }
                Tok::Comment => unreachable!("a whole-line comment starts a line"),
            }
            i += 1;
        }
    }
    Ok(stmts)
}

/// The lines of a block from `toks[i]`, up to its `)`; returns the index after it.
fn block(
    toks: &[(Tok, usize)],
    mut i: usize,
    start: usize,
    head: &[String],
    out: &mut Vec<Stmt>,
) -> Result<usize, String> {
    let known = head.len() == 1;
    loop {
        let Some((tok, line)) = toks.get(i) else {
            return Err(format!(
                "syntax error (unterminated block started at line {start})"
            ));
        };
        match tok {
            Tok::Eol(_) | Tok::Comment => i += 1,
            Tok::RParen => {
                return match toks.get(i + 1) {
                    Some((Tok::Eol(_), _)) | None => Ok(i + 2),
                    Some(_) => Err("syntax error (expected newline after closing paren)".into()),
                };
            }
            Tok::LParen | Tok::Word(_) => {
                let mut words = head[..1].to_vec();
                let suffix = loop {
                    match toks.get(i) {
                        Some((Tok::Word(w), _)) => words.push(w.clone()),
                        Some((Tok::LParen, _)) => words.push("(".into()),
                        Some((Tok::RParen, _)) => words.push(")".into()),
                        Some((Tok::Eol(s), _)) => break s.clone(),
                        Some((Tok::Comment, _)) | None => break None,
                    }
                    i += 1;
                };
                i += 1;
                out.push(Stmt {
                    tokens: words,
                    line: *line,
                    suffix,
                    unknown_block: (!known).then(|| head.join(" ")),
                    in_block: true,
                });
            }
        }
    }
}

/// Go: modfile read.go readToken, with each token's line.
fn lex(text: &str) -> Result<Vec<(Tok, usize)>, (usize, String)> {
    let mut toks = Vec::new();
    for (n, raw) in text.split('\n').enumerate() {
        let line = n + 1;
        let mut rest = raw;
        let mut any = false;
        loop {
            rest = rest.trim_start_matches([' ', '\t', '\r']);
            if rest.is_empty() {
                toks.push((Tok::Eol(None), line));
                break;
            }
            if let Some(c) = rest.strip_prefix("//") {
                toks.push((
                    if any {
                        Tok::Eol(Some(c.trim().to_owned()))
                    } else {
                        Tok::Comment
                    },
                    line,
                ));
                break;
            }
            if rest.starts_with("/*") {
                return Err((
                    line,
                    "mod files must use // comments (not /* */ comments)".into(),
                ));
            }
            any = true;
            let c = rest.chars().next().expect("rest is not empty");
            match c {
                '(' | ')' => {
                    toks.push((if c == '(' { Tok::LParen } else { Tok::RParen }, line));
                    rest = &rest[1..];
                }
                '[' | ']' | '{' | '}' | ',' => {
                    toks.push((Tok::Word(c.to_string()), line));
                    rest = &rest[1..];
                }
                '"' | '`' => {
                    let body = &rest[1..];
                    let mut end = None;
                    let mut escaped = false;
                    for (j, d) in body.char_indices() {
                        if escaped {
                            escaped = false;
                        } else if d == '\\' && c == '"' {
                            escaped = true;
                        } else if d == c {
                            end = Some(j);
                            break;
                        }
                    }
                    let Some(j) = end else {
                        return Err((line, "unexpected newline in string".into()));
                    };
                    toks.push((Tok::Word(rest[..j + 2].to_owned()), line));
                    rest = &body[j + 1..];
                }
                c if !is_ident(c) => {
                    return Err((line, format!("unexpected input character {c:?}")));
                }
                _ => {
                    let mut end = rest.len();
                    for (j, d) in rest.char_indices() {
                        if !is_ident(d) || rest[j..].starts_with("//") {
                            end = j;
                            break;
                        }
                        if rest[j..].starts_with("/*") {
                            return Err((
                                line,
                                "mod files must use // comments (not /* */ comments)".into(),
                            ));
                        }
                    }
                    toks.push((Tok::Word(rest[..end].to_owned()), line));
                    rest = &rest[end..];
                }
            }
        }
    }
    Ok(toks)
}

/// Go: modfile read.go isIdent.
fn is_ident(c: char) -> bool {
    !matches!(c, ' ' | '(' | ')' | '[' | ']' | '{' | '}' | ',')
        && !c.is_whitespace()
        && !c.is_control()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn main(text: &str) -> Result<ModFile, String> {
        parse_mod("go.mod", text.as_bytes(), Strictness::Main).map_err(|e| e.to_string())
    }

    #[test]
    fn directives_and_blocks() {
        let f = main(
            "// leading comment\nmodule example.com/m // the main module\n\ngo 1.21\n\
             toolchain go1.22.3\n\nrequire (\n\trsc.io/quote v1.5.2\n\
             \tgolang.org/x/text v0.3.0 // indirect\n\n\t\"rsc.io/sampler\" v1.3\n)\n\
             require rsc.io/breaker v2.0.0+incompatible // indirect; for tests\n\
             exclude rsc.io/quote v1.5.1\n\
             replace (\n\trsc.io/sampler v1.3.0 => ../sampler\n\
             \tgolang.org/x/text => golang.org/x/text v0.3.7\n)\n\
             retract [v1.0.0, v1.0.5] // broken\ngodebug default=go1.21\n",
        )
        .unwrap();
        assert_eq!(f.module.as_deref(), Some("example.com/m"));
        assert_eq!(f.go.as_ref().map(GoVersion::as_str), Some("1.21"));
        assert_eq!(f.toolchain.as_deref(), Some("go1.22.3"));
        let reqs: Vec<String> = f
            .require
            .iter()
            .map(|r| format!("{} {} {}", r.mv, r.indirect, r.line))
            .collect();
        assert_eq!(
            reqs,
            [
                "rsc.io/quote@v1.5.2 false 8",
                "golang.org/x/text@v0.3.0 true 9",
                "rsc.io/sampler@v1.3.0 false 11",
                "rsc.io/breaker@v2.0.0+incompatible true 13",
            ]
        );
        assert_eq!(f.exclude.len(), 1);
        assert_eq!(f.replace[0].new, Target::Dir("../sampler".into()));
        assert_eq!(f.replace[1].old_version, None);
        assert!(
            matches!(&f.replace[1].new, Target::Module(mv) if mv.to_string() == "golang.org/x/text@v0.3.7")
        );
    }

    #[test]
    fn errors_name_file_and_line() {
        // One line per case: the go.mod text and the error wanted.
        let cases = [
            ("module m\nfrobnicate x\n", "go.mod:2: unknown directive: frobnicate"),
            ("module m\ngo 1.21\ngo 1.22\n", "go.mod:3: repeated go statement"),
            ("go 1.21x\n", ""),
            ("require rsc.io/quote\n", "go.mod:1: usage: require module/path v1.2.3"),
            ("require rsc.io/quote latest\n", "go.mod:1: require rsc.io/quote: version \"latest\" invalid: must be of the form v1.2.3"),
            ("require ../../etc/passwd v1.0.0\n", "go.mod:1: require \"../../etc/passwd\": malformed module path"),
            ("require rsc.io/quote/v2 v1.0.0\n", "go.mod:1: require rsc.io/quote/v2: invalid version"),
            ("require (\n\trsc.io/quote v1.5.2\n", "go.mod:1: syntax error (unterminated block started at line 1)"),
            ("/* c */\n", "go.mod:1: mod files must use // comments (not /* */ comments)"),
            ("module m\nrequire \"rsc.io/quote v1.5.2\n", "go.mod:2: unexpected newline in string"),
            ("replace a.com/x => b.com/y\n", "go.mod:1: replacement module without version must be directory path (rooted or starting with . or ..)"),
            ("replace a.com/x => ./y v1.0.0\n", "go.mod:1: replacement module directory path \"./y\" cannot have version"),
            ("foo (\n\tbar\n)\n", "go.mod:2: unknown block type: foo"),
        ];
        for (text, want) in cases {
            let got = main(text).err().unwrap_or_default();
            if want.is_empty() {
                assert!(got.starts_with("go.mod:1:"), "{text:?}: {got}");
            } else {
                assert!(got.starts_with(want), "{text:?}:\n got {got}\nwant {want}");
            }
        }
    }

    #[test]
    fn dependency_go_mod_is_lax() {
        // Go: modfile ParseLax ignores what a dependency's replace, exclude or unknown
        // directives say, and truncates a go version it cannot parse.
        let f = parse_mod(
            "x.mod",
            b"module a.com/x\ngo 1.21.0-foo\nreplace b.com/y => ../y\nexclude b.com/y v1.0.0\n\
              unknown stuff\nrequire b.com/y v1.2.0\n",
            Strictness::Dependency,
        )
        .unwrap();
        assert!(f.replace.is_empty() && f.exclude.is_empty());
        assert_eq!(f.go.unwrap().as_str(), "1.21");
        assert_eq!(f.require.len(), 1);
    }

    #[test]
    fn go_version_syntax() {
        for (v, ok) in [
            ("1.21", true),
            ("1.21.0", true),
            ("1.21rc1", true),
            ("1.999testmod", false),
            ("1.21.0rc1", true),
            ("01.21", false),
            ("1.021", false),
            ("v1.21", false),
            ("1", false),
        ] {
            assert_eq!(is_go_version_re(v), ok, "{v}");
        }
    }

    #[test]
    fn work_file() {
        let w = parse_work(
            "go.work",
            b"go 1.22\n\nuse (\n\t./a\n\t\"./b c\"\n)\nuse ../shared\nreplace x.com/y v1.0.0 => x.com/z v1.1.0\n",
        )
        .unwrap();
        let uses: Vec<&str> = w.uses.iter().map(|(d, _)| d.as_str()).collect();
        assert_eq!(uses, ["./a", "./b c", "../shared"]);
        assert_eq!(w.replace.len(), 1);
        let e = parse_work("go.work", b"go 1.22\nrequire x.com/y v1.0.0\n").unwrap_err();
        assert_eq!(e.to_string(), "go.work:2: unknown directive: require");
    }
}
