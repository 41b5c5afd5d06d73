//! A real S3-compatible server for the object-storage tree tests (see: #17), and the nginx
//! block we ship in front of a bucket.
//!
//! Input: the `s3s-fs` binary ([`crate::tools::find_s3s_fs`]). Output: [`S3Server`], two
//! `s3s-fs` processes over one root directory, in which each bucket is a directory:
//!
//! - the **authenticated** instance ([`S3Server::endpoint`]), with an access key and secret
//!   key: the one gomirror writes through, as it writes to a real bucket. It refuses
//!   unsigned requests (403 AccessDenied).
//! - the **anonymous** instance ([`S3Server::anonymous_endpoint`]), with no credentials
//!   configured: it serves unsigned requests and refuses signed ones (501 NotImplemented), so
//!   it stands for a bucket whose anonymous principal may GetObject and ListBucket, the
//!   arrangement that makes S3 answer 404 instead of 403 for a missing key. It also takes
//!   unsigned writes, so clients reach it only through nginx ([`S3Server::start_nginx`]),
//!   which passes GET and HEAD only.
//!
//! Order matters: `s3s-fs` deletes every `.tmp.*.internal.part` file in the root when it
//! starts, and those are the in-flight writes of the other instance. So the anonymous
//! instance starts first and is never restarted; [`S3Server::stop`] and [`S3Server::start`]
//! restart the authenticated one, for crash and fault tests.
//!
//! `s3s-fs` keeps an object's Content-Type, Cache-Control and metadata in
//! `.bucket-<b64>.object-<b64>.metadata.json` at the root, beside the bucket directories, and
//! the bytes at `<root>/<bucket>/<key>`; [`S3Server::root`] is for tests that look there.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::RetryConfig;

use crate::nginx::Nginx;

/// Two `s3s-fs` processes over one root (see the module doc); dropping it kills both.
pub struct S3Server {
    binary: PathBuf,
    /// The S3 root: one directory per bucket, plus `s3s-fs`'s own dot files.
    root: tempfile::TempDir,
    /// The processes' stderr logs, outside the root so no bucket lists them.
    logs: tempfile::TempDir,
    bucket: String,
    /// Kept across [`S3Server::stop`]/[`S3Server::start`] so the endpoint does not change.
    auth_port: u16,
    anonymous_port: u16,
    /// `None` while stopped.
    auth: Option<Child>,
    anonymous: Child,
}

const ACCESS_KEY: &str = "gomirror-test";
const SECRET_KEY: &str = "gomirror-test-secret";
const BUCKET: &str = "gomirror";

impl S3Server {
    /// Starts both instances on free loopback ports with bucket `gomirror` created, and waits
    /// until both accept connections. Panics with the server's log if one does not start.
    pub fn start(binary: &Path) -> S3Server {
        let root = tempfile::tempdir().expect("temp dir");
        let logs = tempfile::tempdir().expect("temp dir");
        // A bucket is a directory; CreateBucket would only mkdir it.
        std::fs::create_dir(root.path().join(BUCKET)).expect("create the bucket directory");
        let anonymous_port = free_port();
        let anonymous = spawn(binary, root.path(), logs.path(), anonymous_port, false);
        let mut server = S3Server {
            binary: binary.to_path_buf(),
            root,
            logs,
            bucket: BUCKET.to_string(),
            auth_port: free_port(),
            anonymous_port,
            auth: None,
            anonymous,
        };
        server.wait_ready(anonymous_port, false);
        server.restart();
        server
    }

    /// `http://127.0.0.1:PORT` of the authenticated instance, for gomirror's `[tree]`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.auth_port)
    }

    /// The address of the authenticated instance, for a [`crate::faultproxy::FaultProxy`].
    pub fn addr(&self) -> SocketAddr {
        (Ipv4Addr::LOCALHOST, self.auth_port).into()
    }

    /// `http://127.0.0.1:PORT` of the anonymous instance (unsigned requests only).
    pub fn anonymous_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.anonymous_port)
    }

    pub fn access_key(&self) -> &str {
        ACCESS_KEY
    }

    pub fn secret_key(&self) -> &str {
        SECRET_KEY
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The S3 root directory; the bucket's objects are under `root()/bucket()`.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// An `object_store` builder for the bucket through the authenticated instance:
    /// path-style, plain HTTP, the test credentials, and no retries (a test that wants them
    /// sets its own), so a refused request fails at once.
    pub fn builder(&self) -> AmazonS3Builder {
        builder_for(&self.endpoint(), self.bucket())
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
    }

    /// [`S3Server::builder`], built.
    pub fn store(&self) -> AmazonS3 {
        self.builder().build().expect("build the S3 store")
    }

    /// Kills the authenticated instance (SIGKILL, as a crash would) and waits for it; the
    /// anonymous one keeps serving. A no-op when it is stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.auth.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the authenticated instance again on the same port after [`S3Server::stop`]; it
    /// deletes the temp files of writes that the stop cut off, as a restarted server would.
    pub fn restart(&mut self) {
        if self.auth.is_some() {
            return;
        }
        let child = spawn(
            &self.binary,
            self.root.path(),
            self.logs.path(),
            self.auth_port,
            true,
        );
        self.auth = Some(child);
        self.wait_ready(self.auth_port, true);
    }

    /// A real nginx with `nginx/gomirror-s3.conf`, proxying to the anonymous instance for the
    /// tree under `prefix` in the bucket (no leading or trailing slash).
    pub fn start_nginx(&self, nginx: &Path, prefix: &str) -> Nginx {
        let upstream = (Ipv4Addr::LOCALHOST, self.anonymous_port).into();
        Nginx::start_config(nginx, |port| {
            s3_server_block(port, upstream, self.bucket(), prefix)
        })
    }

    /// Both instances' stderr, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for name in ["anonymous.log", "auth.log"] {
            let text = std::fs::read_to_string(self.logs.path().join(name)).unwrap_or_default();
            out.push_str(&format!("--- {name}\n{text}"));
        }
        out
    }

    fn wait_ready(&mut self, port: u16, auth: bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let child = if auth {
                self.auth.as_mut().expect("started")
            } else {
                &mut self.anonymous
            };
            if let Ok(Some(status)) = child.try_wait() {
                panic!("s3s-fs exited with {status}:\n{}", self.logs());
            }
            // s3s-fs binds its port after it has cleaned the root, so a connection means
            // the cleanup is over.
            if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "s3s-fs not answering on port {port} after 10s:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
        let _ = self.anonymous.kill();
        let _ = self.anonymous.wait();
    }
}

/// An `object_store` builder for `bucket` at `endpoint` without credentials: path-style,
/// plain HTTP, no retries.
pub fn builder_for(endpoint: &str, bucket: &str) -> AmazonS3Builder {
    AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_bucket_name(bucket)
        .with_virtual_hosted_style_request(false)
        .with_retry(RetryConfig {
            max_retries: 0,
            ..RetryConfig::default()
        })
}

fn spawn(binary: &Path, root: &Path, logs: &Path, port: u16, auth: bool) -> Child {
    let name = if auth { "auth.log" } else { "anonymous.log" };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(logs.join(name))
        .expect("s3s-fs log file");
    let mut cmd = Command::new(binary);
    cmd.arg("--host")
        .arg("127.0.0.1")
        .arg("--port")
        .arg(port.to_string());
    if auth {
        cmd.arg("--access-key")
            .arg(ACCESS_KEY)
            .arg("--secret-key")
            .arg(SECRET_KEY);
    }
    cmd.arg(root)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()))
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// The `proxy_pass` path of the shipped block, `/<bucket>/<prefix>/`.
const SHIPPED_OBJECT_PATH: &str = "http://gomirror_bucket/gomirror/tree/";

/// `nginx/gomirror-s3.conf` with `listen` on `port`, the endpoint (the `upstream` server and
/// the Host header) replaced by `upstream` and the bucket path by `/<bucket>/<prefix>/`.
pub fn s3_server_block(port: u16, upstream: SocketAddr, bucket: &str, prefix: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("nginx/gomirror-s3.conf");
    let text = std::fs::read_to_string(&path).expect("read nginx/gomirror-s3.conf");
    let (mut listens, mut servers, mut hosts, mut passes) = (0, 0, 0, 0);
    let out: Vec<String> = text
        .lines()
        .map(|line| {
            let indent = &line[..line.len() - line.trim_start().len()];
            match line.split_whitespace().next().unwrap_or("") {
                "listen" => {
                    listens += 1;
                    format!("{indent}listen 127.0.0.1:{port};")
                }
                "server" if line.trim_end().ends_with(';') => {
                    servers += 1;
                    format!("{indent}server {upstream};")
                }
                "proxy_set_header" if line.split_whitespace().nth(1) == Some("Host") => {
                    hosts += 1;
                    format!("{indent}proxy_set_header Host {upstream};")
                }
                "proxy_pass" => {
                    passes += 1;
                    let to = format!("http://gomirror_bucket/{bucket}/{prefix}/");
                    line.replace(SHIPPED_OBJECT_PATH, &to)
                }
                _ => line.to_string(),
            }
        })
        .collect();
    // A proxy_pass to somewhere else, or a second listen, would be served unreplaced and
    // make the tests pass against the wrong thing: refuse instead.
    assert_eq!(
        (listens, servers, hosts),
        (1, 1, 1),
        "{} must have exactly one listen, one upstream server and one Host line",
        path.display()
    );
    assert!(passes > 0, "{} has no proxy_pass", path.display());
    for line in &out {
        if line.trim_start().starts_with("proxy_pass") {
            assert!(
                line.contains(&format!("/{bucket}/{prefix}/")),
                "{}: proxy_pass not to {SHIPPED_OBJECT_PATH}: {line}",
                path.display()
            );
        }
    }
    out.join("\n")
}
