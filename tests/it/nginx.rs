//! A real nginx serving a directory through the server block we ship, for the e2e tests.
//!
//! Input: `nginx/gomirror.conf` from the repository and a tree directory. Output: a running
//! nginx on `http://127.0.0.1:PORT` that is stopped when [`Nginx`] drops.
//!
//! The server block is used as shipped except for two lines: `listen` becomes a free loopback
//! port and `root` becomes the tree; [`Nginx::start_with_index`] also points the `/index`
//! location's `proxy_pass` at a test's index listener (as shipped it is `127.0.0.1:9151`,
//! where nothing listens in tests, so `/index` is 502). It sits inside the `http {}` of a minimal main config that
//! includes `/etc/nginx/mime.types` when present, as Debian's stock `nginx.conf` does, so the
//! content types we assert are the ones a default install serves. Every path nginx writes (pid,
//! error log, temp dirs) is under the harness's own temp dir, so it runs as any user.
//!
//! [`Workers::SameUser`] runs one process (`master_process off`) as the current user. It is
//! the default for tests about what nginx serves. [`Workers::Unprivileged`] needs root: a master
//! as root with its worker as `nobody`, the way a packaged nginx runs (`user www-data`), so
//! the worker can read only what other users may read.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The nginx binary: `/usr/sbin/nginx` (Debian), else the first `nginx` on PATH.
pub fn find_nginx() -> Option<PathBuf> {
    let sbin = PathBuf::from("/usr/sbin/nginx");
    if sbin.is_file() {
        return Some(sbin);
    }
    find_on_path("nginx")
}

/// The first executable file called `name` in a PATH directory.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Whether this process runs as root: `/proc/self` belongs to the effective uid.
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Which user nginx's worker runs as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workers {
    /// One process as the current user (`master_process off`).
    SameUser,
    /// Master as root, worker as `nobody` (needs root).
    Unprivileged,
}

/// What the server block does with a path the tree lacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misses<'a> {
    /// As shipped: 404.
    NotFound,
    /// The block's optional fall-through enabled (its `#~ ` lines
    /// uncommented), proxying to this `http://host:port` instead of
    /// proxy.golang.org.
    FallThrough(&'a str),
    /// The block's checksum-database fall-through enabled (its `#sumdb~ `
    /// lines uncommented), answering lookups and tiles the tree lacks from
    /// this database base, `http://host:port/path` (the test database is
    /// served under the upstream's `/sumdb/<name>`, where the real one is at
    /// the root of its host).
    SumdbFallThrough(&'a str),
}

/// A running nginx; dropping it stops nginx and waits for it.
pub struct Nginx {
    child: Child,
    port: u16,
    /// Holds the config, pid file, logs and temp dirs.
    dir: tempfile::TempDir,
}

/// The shipped block's commented `access_log` line, enabled by [`Nginx::start_logging`].
const ACCESS_LOG: &str = "# access_log ";

impl Nginx {
    /// Starts `nginx` serving `root` with the shipped server block and waits until it accepts
    /// connections. Panics with nginx's error log if it does not start.
    pub fn start(nginx: &Path, root: &Path, workers: Workers) -> Nginx {
        Nginx::start_with(nginx, root, workers, Misses::NotFound)
    }

    /// [`Nginx::start`], with `/index` proxied to `index` (a gomirror index listener).
    pub fn start_with_index(nginx: &Path, root: &Path, index: SocketAddr) -> Nginx {
        Nginx::start_full(
            nginx,
            root,
            Workers::SameUser,
            Misses::NotFound,
            Some(index),
            None,
        )
    }

    /// [`Nginx::start`], choosing what happens to misses.
    pub fn start_with(nginx: &Path, root: &Path, workers: Workers, misses: Misses) -> Nginx {
        Nginx::start_full(nginx, root, workers, misses, None, None)
    }

    /// [`Nginx::start`], with the shipped block's `access_log` line enabled (the `gomirror`
    /// JSON format) and writing to `log`. See: #14
    pub fn start_logging(nginx: &Path, root: &Path, log: &Path) -> Nginx {
        Nginx::start_full(
            nginx,
            root,
            Workers::SameUser,
            Misses::NotFound,
            None,
            Some(log),
        )
    }

    fn start_full(
        nginx: &Path,
        root: &Path,
        workers: Workers,
        misses: Misses,
        index: Option<SocketAddr>,
        log: Option<&Path>,
    ) -> Nginx {
        // The free port is found by binding and closing it, so another process may take it
        // before nginx binds; a failed start is retried on a new port.
        let mut last_error = String::new();
        for _ in 0..5 {
            match Nginx::try_start(nginx, root, workers, misses, index, log) {
                Ok(n) => return n,
                Err(e) => last_error = e,
            }
        }
        panic!("nginx did not start: {last_error}");
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn try_start(
        nginx: &Path,
        root: &Path,
        workers: Workers,
        misses: Misses,
        index: Option<SocketAddr>,
        log: Option<&Path>,
    ) -> Result<Nginx, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let mut text = main_config(dir.path(), root, port, workers, misses, index);
        if let Some(log) = log {
            let (before, after) = text
                .split_once(ACCESS_LOG)
                .expect("nginx/gomirror.conf has a commented access_log line");
            let (_, rest) = after.split_once(' ').expect("access_log <path> <format>;");
            text = format!("{before}access_log \"{}\" {rest}", log.display());
        }
        Nginx::launch(nginx, dir, port, &text)
    }

    /// Starts `nginx` (one process, as the current user) with the `http {}` contents that
    /// `config` returns for a free loopback port, which they must `listen` on; for blocks other
    /// than `nginx/gomirror.conf`, such as `nginx/gomirror-s3.conf` (see `s3.rs`).
    pub fn start_config(nginx: &Path, config: impl Fn(u16) -> String) -> Nginx {
        let mut last_error = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("temp dir");
            let port = free_port();
            let text = http_config(dir.path(), "master_process off;", &config(port));
            match Nginx::launch(nginx, dir, port, &text) {
                Ok(n) => return n,
                Err(e) => last_error = e,
            }
        }
        panic!("nginx did not start: {last_error}");
    }

    /// Writes `text` as the main config in `dir`, runs nginx with it and waits until `port`
    /// accepts connections.
    fn launch(
        nginx: &Path,
        dir: tempfile::TempDir,
        port: u16,
        text: &str,
    ) -> Result<Nginx, String> {
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, text).expect("write conf");
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("stderr log");
        let child = Command::new(nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", nginx.display()))?;
        let mut n = Nginx { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = n.child.try_wait() {
                return Err(format!("nginx exited with {status}: {}", n.logs()));
            }
            if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
                return Ok(n);
            }
            if Instant::now() > deadline {
                return Err(format!("port {port} not answering after 10s: {}", n.logs()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// nginx's stderr and error log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for name in ["stderr.log", "error.log"] {
            if let Ok(mut f) = std::fs::File::open(self.dir.path().join(name)) {
                let _ = f.read_to_string(&mut out);
            }
        }
        out
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM is nginx's fast shutdown: the master stops its workers before exiting.
        // SIGKILL (Child::kill) would leave a worker behind holding the port.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An enabled checksum-database fall-through line, with the database replaced by the
/// test's `http://host:port/path`: `path` goes before what the shipped `rewrite` keeps.
fn sumdb_fall_through_line(line: &str, db: &str) -> String {
    let indent = &line[..line.len() - line.trim_start().len()];
    let rest = db.trim_start_matches("http://").trim_end_matches('/');
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    match line.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["proxy_pass", _] => format!("{indent}proxy_pass http://{host};"),
        ["proxy_set_header", "Host", _] => format!("{indent}proxy_set_header Host {host};"),
        ["rewrite", from, "/$1", "break;"] => format!("{indent}rewrite {from} /{path}/$1 break;"),
        ["rewrite", ..] => panic!("unexpected rewrite in the shipped block: {line}"),
        _ => line.to_string(),
    }
}

/// An enabled fall-through line, with the upstream replaced by the test's.
fn fall_through_line(line: &str, upstream: &str) -> String {
    let indent = &line[..line.len() - line.trim_start().len()];
    let host = upstream.trim_start_matches("http://").trim_end_matches('/');
    match line.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["proxy_pass", _] => format!("{indent}proxy_pass {};", upstream.trim_end_matches('/')),
        ["proxy_set_header", "Host", _] => format!("{indent}proxy_set_header Host {host};"),
        _ => line.to_string(),
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

fn main_config(
    dir: &Path,
    root: &Path,
    port: u16,
    workers: Workers,
    misses: Misses,
    index: Option<SocketAddr>,
) -> String {
    let process = match workers {
        Workers::SameUser => "master_process off;".to_string(),
        Workers::Unprivileged => {
            assert!(is_root(), "Workers::Unprivileged needs root");
            // Debian names nobody's group `nogroup`; other systems `nobody`.
            let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
            let group = if groups.lines().any(|l| l.starts_with("nogroup:")) {
                "nogroup"
            } else {
                "nobody"
            };
            format!("master_process on;\nworker_processes 1;\nuser nobody {group};")
        }
    };
    http_config(dir, &process, &server_block(root, port, misses, index))
}

/// A main config around `server` (the contents of `http {}`), with every path nginx writes
/// under `dir`.
fn http_config(dir: &Path, process: &str, server: &str) -> String {
    let d = dir.display();
    let mime = if Path::new("/etc/nginx/mime.types").is_file() {
        "include /etc/nginx/mime.types;"
    } else {
        ""
    };
    format!(
        "daemon off;\n{process}\npid {d}/nginx.pid;\nerror_log {d}/error.log notice;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n{mime}\ndefault_type application/octet-stream;\naccess_log off;\n\
         client_body_temp_path {d}/client_body;\nproxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\nuwsgi_temp_path {d}/uwsgi;\nscgi_temp_path {d}/scgi;\n\
         {server}\n}}\n"
    )
}

/// The fall-through lines of the shipped block, commented out with this prefix.
const OPTIONAL: &str = "#~ ";
/// The checksum-database fall-through lines, commented out with this prefix.
const OPTIONAL_SUMDB: &str = "#sumdb~ ";

/// The shipped `/index` location's `proxy_pass` line, trimmed.
const INDEX_PROXY_PASS: &str = "proxy_pass http://127.0.0.1:9151;";

/// `nginx/gomirror.conf` with its `listen` and `root` lines replaced,
/// `/index` proxied to `index` when given and, for [`Misses::FallThrough`],
/// its optional lines enabled and pointed at the given upstream.
pub fn server_block(root: &Path, port: u16, misses: Misses, index: Option<SocketAddr>) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("nginx/gomirror.conf");
    let text = std::fs::read_to_string(&path).expect("read nginx/gomirror.conf");
    let (mut listens, mut roots, mut optional, mut indexes) = (0, 0, 0, 0);
    let out: Vec<String> = text
        .lines()
        .map(|line| {
            let indent = &line[..line.len() - line.trim_start().len()];
            let trimmed = line.trim_start();
            let line = match (misses, trimmed.strip_prefix(OPTIONAL)) {
                (Misses::FallThrough(upstream), Some(enabled)) => {
                    optional += 1;
                    fall_through_line(&format!("{indent}{enabled}"), upstream)
                }
                _ => match (misses, trimmed.strip_prefix(OPTIONAL_SUMDB)) {
                    (Misses::SumdbFallThrough(db), Some(enabled)) => {
                        optional += 1;
                        sumdb_fall_through_line(&format!("{indent}{enabled}"), db)
                    }
                    _ => line.to_string(),
                },
            };
            let first = line.split_whitespace().next().unwrap_or("");
            match first {
                "listen" => {
                    listens += 1;
                    format!("{indent}listen 127.0.0.1:{port};")
                }
                "root" => {
                    roots += 1;
                    format!("{indent}root \"{}\";", root.display())
                }
                "proxy_pass" if line.trim() == INDEX_PROXY_PASS => {
                    indexes += 1;
                    match index {
                        Some(addr) => format!("{indent}proxy_pass http://{addr};"),
                        None => line,
                    }
                }
                _ => line,
            }
        })
        .collect();
    if misses != Misses::NotFound {
        assert!(
            optional > 0,
            "{} has no {misses:?} lines to enable",
            path.display()
        );
    }
    // A second listen (say, TLS) or a root inside a location would be served unreplaced and
    // make the tests pass against the wrong thing: refuse instead.
    assert_eq!(
        (listens, roots, indexes),
        (1, 1, 1),
        "{} must have exactly one listen, one root and one /index proxy_pass line",
        path.display()
    );
    out.join("\n")
}
