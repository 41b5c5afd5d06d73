//! `RunLock`: at most one gomirror run per tree at a time.
//!
//! The lock is an exclusive, non-blocking OS lock (`flock` on Unix,
//! `LockFileEx` on Windows) on a file in the tree, e.g.
//! `/srv/tree/.gomirror.lock`. The kernel releases it when the process dies,
//! so a killed run never leaves a stale lock; the file itself is never
//! deleted, because deleting it lets two processes lock two different files
//! under one name. The holder writes its pid into the file so that a second
//! run can name it.
//!
//! `flock` locks belong to an open file description, so two opens in one
//! process conflict like two processes do (tested below). The file is opened
//! close-on-exec, but a child forked while the lock is held shares it until
//! it execs: a lock dropped in that instant is released a moment later.
//!
//! This file uses `std::fs` rather than `fs-err`: `fs_err::File::try_lock`
//! returns the bare std error, so every operation carries the path and its
//! name in [`LockError::Io`] instead, giving one message shape
//! (`run lock /srv/tree/.gomirror.lock: open: permission denied`).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The run lock of a state database, beside it (`state.db.lock`): a sync or
/// an import holds it with the tree's, so that two trees never share one
/// database.
pub fn db_lock_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Held for as long as this value lives; dropping it (or the process dying)
/// releases the lock.
#[derive(Debug)]
pub struct RunLock {
    /// The open file whose OS lock we hold. Closing it releases the lock.
    _file: File,
    path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process (or another `RunLock` in this one) holds the lock.
    /// `pid` is None if the holder has not written it yet.
    #[error("another gomirror run holds {}{}", .path.display(), pid_note(*.pid))]
    Held { path: PathBuf, pid: Option<u32> },

    /// `--wait` gave up: the holder kept the lock for longer than the timeout.
    #[error("another gomirror run holds {}{}; gave up waiting after {}", .path.display(), pid_note(*.pid), humantime::format_duration(*.waited))]
    Timeout {
        path: PathBuf,
        pid: Option<u32>,
        waited: std::time::Duration,
    },

    #[error("run lock {}: {op}", .path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

fn pid_note(pid: Option<u32>) -> String {
    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
}

impl RunLock {
    /// Takes the lock at `lock_path`, creating the file (and its directory)
    /// if needed, and writes our pid into it. Never waits: if another run
    /// holds it, returns [`LockError::Held`] at once.
    pub fn acquire(lock_path: &Path) -> Result<RunLock, LockError> {
        let io_err = |op| {
            move |source| LockError::Io {
                path: lock_path.to_path_buf(),
                op,
                source,
            }
        };
        if let Some(dir) = lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_err("create directory"))?;
        }
        // No truncate here: until we hold the lock, the pid in the file is
        // the holder's, and it is how we name them.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(lock_path)
            .map_err(io_err("open"))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::Held {
                    path: lock_path.to_path_buf(),
                    pid: read_pid(&mut file),
                })
            }
            Err(TryLockError::Error(source)) => return Err(io_err("lock")(source)),
        }
        write_pid(&mut file).map_err(io_err("write pid"))?;
        Ok(RunLock {
            _file: file,
            path: lock_path.to_path_buf(),
        })
    }

    /// Takes the lock shared, for a reader that must not see a run halfway (`verify`):
    /// readers go together, none while a run holds it, and a run cannot start meanwhile.
    /// The file is opened read-only, so this works on a read-only tree. If it does not
    /// exist and cannot be created (a read-only tree), no run holds it: a run creates it
    /// before anything else. Then this returns `None` and the reader goes on unlocked.
    /// See: #13
    pub fn acquire_shared(lock_path: &Path) -> Result<Option<RunLock>, LockError> {
        let io_err = |op| {
            move |source| LockError::Io {
                path: lock_path.to_path_buf(),
                op,
                source,
            }
        };
        let mut file = match File::open(lock_path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(lock_path)
                {
                    Ok(f) => f,
                    Err(e) if is_unwritable(&e) => return Ok(None),
                    Err(e) => return Err(io_err("open")(e)),
                }
            }
            Err(e) => return Err(io_err("open")(e)),
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(Some(RunLock {
                _file: file,
                path: lock_path.to_path_buf(),
            })),
            Err(TryLockError::WouldBlock) => Err(LockError::Held {
                path: lock_path.to_path_buf(),
                pid: read_pid(&mut file),
            }),
            Err(TryLockError::Error(source)) => Err(io_err("lock")(source)),
        }
    }

    /// [`RunLock::acquire`], waiting while another run holds the lock: for `timeout` at
    /// most ([`LockError::Timeout`] then) or until `token` fires ([`LockError::Held`] then).
    /// `waiting` is called once, with the holder's pid, when the lock is found held.
    ///
    /// It polls rather than blocking in `flock`: a blocking `flock` can be neither timed
    /// out nor cancelled without a signal, and a run lasts seconds to minutes, so a
    /// 100 ms poll costs nothing. Waiters are not queued in order; each takes its turn.
    /// See: #12
    pub async fn acquire_waiting(
        lock_path: &Path,
        timeout: std::time::Duration,
        token: &tokio_util::sync::CancellationToken,
        waiting: &mut dyn FnMut(Option<u32>),
    ) -> Result<RunLock, LockError> {
        const POLL: std::time::Duration = std::time::Duration::from_millis(100);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut told = false;
        loop {
            let pid = match RunLock::acquire(lock_path) {
                Err(LockError::Held { pid, .. }) => pid,
                done => return done,
            };
            if !told {
                waiting(pid);
                told = true;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(LockError::Timeout {
                    path: lock_path.to_path_buf(),
                    pid,
                    waited: timeout,
                });
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL.min(deadline - now)) => {}
                _ = token.cancelled() => {
                    return Err(LockError::Held { path: lock_path.to_path_buf(), pid });
                }
            }
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Whether some process holds the run lock at `lock_path`, as the kernel lists it in
/// `/proc/locks`; `None` where that cannot be told (no `/proc/locks`, the file unreadable).
/// A missing lock file is not held.
///
/// This only looks: taking the lock, even shared and for an instant, would make a sync
/// starting in that instant fail with "another gomirror run holds …". `status` uses it to
/// show a run whose process died as interrupted. See: #13
pub fn is_held(lock_path: &Path) -> Option<bool> {
    use std::os::unix::fs::MetadataExt;
    let meta = match std::fs::metadata(lock_path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Some(false),
        Err(_) => return None,
    };
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let dev = meta.dev();
    let want = format!(
        "{:02x}:{:02x}:{}",
        rustix::fs::major(dev),
        rustix::fs::minor(dev),
        meta.ino()
    );
    // `1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF` (fs/locks.c lock_get_status);
    // a waiter's line has `->` after the number and names the same file.
    Some(locks.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1) == Some(&"FLOCK") && fields.contains(&want.as_str())
    }))
}

/// Whether creating a file failed because the directory takes no writes.
fn is_unwritable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ReadOnlyFilesystem | io::ErrorKind::PermissionDenied
    )
}

/// Replaces the file's content with `pid\n`, in one write.
fn write_pid(file: &mut File) -> io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(format!("{}\n", std::process::id()).as_bytes())?;
    file.flush()
}

/// The holder's pid, if it has written one (it may be between truncate and
/// write).
fn read_pid(file: &mut File) -> Option<u32> {
    let mut s = String::new();
    file.read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    const CHILD_ENV: &str = "GOMIRROR_TEST_LOCK_CHILD";
    const CHILD_READY: &str = "gomirror-test-lock-held";

    /// Tests that drop a lock and take it again run one at a time: a child
    /// spawned by a parallel test shares our lock between fork and exec.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn serial() -> std::sync::MutexGuard<'static, ()> {
        SERIAL
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[test]
    fn second_acquire_in_process_is_refused_with_pid() {
        let _serial = serial();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".gomirror.lock");
        let held = RunLock::acquire(&path).unwrap();
        let err = RunLock::acquire(&path).unwrap_err();
        let pid = std::process::id();
        assert!(
            matches!(&err, LockError::Held { pid: Some(p), .. } if *p == pid),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("another gomirror run holds {} (pid {pid})", path.display())
        );
        drop(held);
        let again = RunLock::acquire(&path).unwrap();
        assert_eq!(again.path(), path);
        assert!(path.exists(), "the lock file is never deleted");
    }

    #[test]
    fn stale_pid_without_lock_does_not_block() {
        let _serial = serial();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tree/.gomirror.lock");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "4000000000 and some junk\n").unwrap();
        let _held = RunLock::acquire(&path).unwrap();
        let content = std::fs::read_to_string(&path).unwrap();
        assert_eq!(content, format!("{}\n", std::process::id()));
    }

    // See: #13
    #[test]
    fn issue_13_shared_lock_excludes_runs_not_readers() {
        let _serial = serial();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".gomirror.lock");
        let reader = RunLock::acquire_shared(&path).unwrap().expect("created");
        let other = RunLock::acquire_shared(&path)
            .unwrap()
            .expect("readers share");
        let run = RunLock::acquire(&path).expect_err("a run waits for readers");
        assert!(matches!(run, LockError::Held { .. }), "{run}");
        drop((reader, other));
        let run = RunLock::acquire(&path).unwrap();
        let reader = RunLock::acquire_shared(&path).expect_err("a reader waits for a run");
        assert_eq!(
            reader.to_string(),
            format!(
                "another gomirror run holds {} (pid {})",
                path.display(),
                std::process::id()
            )
        );
        drop(run);
    }

    // See: #13
    #[test]
    fn issue_13_is_held_sees_the_lock_without_taking_it() {
        let _serial = serial();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db.lock");
        assert_eq!(is_held(&path), Some(false), "no file");
        let held = RunLock::acquire(&path).unwrap();
        if !Path::new("/proc/locks").exists() {
            assert_eq!(is_held(&path), None);
            return;
        }
        assert_eq!(is_held(&path), Some(true));
        // Looking did not take it: the holder still has it, nobody else can.
        assert!(matches!(
            RunLock::acquire(&path),
            Err(LockError::Held { .. })
        ));
        drop(held);
        assert_eq!(is_held(&path), Some(false), "released");
    }

    // See: #12
    #[test]
    fn issue_12_waiting_acquire_takes_the_lock_when_released_or_times_out() {
        let _serial = serial();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(waiting_acquire());
    }

    async fn waiting_acquire() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".gomirror.lock");
        let token = tokio_util::sync::CancellationToken::new();
        let held = RunLock::acquire(&path).unwrap();
        let mut told = Vec::new();
        let err = RunLock::acquire_waiting(
            &path,
            std::time::Duration::from_millis(250),
            &token,
            &mut |pid| told.push(pid),
        )
        .await
        .unwrap_err();
        let pid = std::process::id();
        assert_eq!(told, vec![Some(pid)], "told once, with the holder");
        assert_eq!(
            err.to_string(),
            format!(
                "another gomirror run holds {} (pid {pid}); gave up waiting after 250ms",
                path.display()
            )
        );
        let release = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            drop(held);
        });
        let got = RunLock::acquire_waiting(
            &path,
            std::time::Duration::from_secs(10),
            &token,
            &mut |_| {},
        )
        .await
        .unwrap();
        assert_eq!(got.path(), path);
        release.await.unwrap();
    }

    #[test]
    fn held_without_pid_says_so() {
        let err = LockError::Held {
            path: "/srv/tree/.gomirror.lock".into(),
            pid: None,
        };
        assert_eq!(
            err.to_string(),
            "another gomirror run holds /srv/tree/.gomirror.lock"
        );
    }

    #[test]
    fn io_errors_name_path_and_operation() {
        let dir = tempfile::tempdir().unwrap();
        // The "directory" is a file, so the lock file cannot be created.
        let blocker = dir.path().join("tree");
        std::fs::write(&blocker, "").unwrap();
        let path = blocker.join(".gomirror.lock");
        let err = RunLock::acquire(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("run lock {}: create directory", path.display())
        );
    }

    /// The holder in `lock_held_by_another_process`: only acts when spawned
    /// by it, otherwise passes at once.
    #[test]
    fn child_holds_lock() {
        let Some(path) = std::env::var_os(CHILD_ENV) else {
            return;
        };
        let _held = RunLock::acquire(Path::new(&path)).unwrap();
        println!("{CHILD_READY}");
        io::stdout().flush().unwrap();
        // Hold until the parent kills us.
        let _ = io::stdin().read_to_end(&mut Vec::new());
    }

    #[test]
    fn lock_held_by_another_process() {
        let _serial = serial();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".gomirror.lock");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["lock::tests::child_holds_lock", "--exact", "--nocapture"])
            .env(CHILD_ENV, &path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = io::BufReader::new(child.stdout.take().unwrap());
        let ready = stdout
            .lines()
            .map(|l| l.unwrap())
            .any(|l| l.contains(CHILD_READY));
        assert!(ready, "child exited without taking the lock");

        let err = RunLock::acquire(&path).unwrap_err();
        assert!(
            matches!(&err, LockError::Held { pid: Some(p), .. } if *p == child.id()),
            "{err:?}"
        );

        // SIGKILL: no destructor runs, the kernel releases the lock.
        child.kill().unwrap();
        child.wait().unwrap();
        RunLock::acquire(&path).unwrap();
    }
}
