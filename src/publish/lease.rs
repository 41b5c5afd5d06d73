//! The writer's lease on a bucket tree (see: #17): the run lock of a local
//! tree guards one host, so a tree in object storage also gets an object
//! that says who writes it, until when.
//!
//! - Taken with a conditional put (`If-None-Match: *`) of
//!   `<prefix>.gomirror-lease` (beside the served prefix, so clients never
//!   see it; `.gomirror-lease` at the bucket's root when there is no
//!   prefix): a JSON body naming the host, the process and the expiry.
//! - Renewed every [`RENEW_EVERY`] while the run lasts, each time with a
//!   conditional put on the ETag it last wrote (`If-Match`): a lease that
//!   someone else took over is noticed, and the run is stopped.
//! - Another host's lease is refused with a message naming it, until it
//!   expires ([`TTL`] after its last renewal); an expired one is taken over
//!   with `If-Match` on the ETag read, so two hosts cannot both take it.
//! - A lease of this host and this local run lock (the staging
//!   directory's), unexpired, belongs to a run that died: the caller holds
//!   that lock now, so no live run has it. It is taken over at once. (Two
//!   configurations on one host with different staging directories are two
//!   writers, like two hosts.)
//! - Released (deleted) when the run ends; a killed run's lease expires.
//! - Once taken, the multipart uploads a killed run left open from this
//!   staging directory are aborted (`bucket/uploads.rs`): every writing
//!   command (sync, import, prune) takes the lease, so this is the one place.

use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::bucket::{Bucket, StoreError};

/// How long a lease holds without renewal.
pub const TTL: Duration = Duration::from_secs(120);
/// How often a held lease is renewed.
pub const RENEW_EVERY: Duration = Duration::from_secs(30);

/// What the lease object holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub host: String,
    /// The local run lock the holder took first.
    pub lock: String,
    pub pid: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub until: OffsetDateTime,
}

/// Why the lease could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(
        "{url} is being written by {} (pid {}, lock {}) since {}; its lease holds until {} \
         unless renewed (two writers must not publish into one prefix)",
        holder.host, holder.pid, holder.lock, fmt_time(holder.since), fmt_time(holder.until)
    )]
    Held { url: String, holder: Holder },
    #[error("{url}: lease {key}")]
    Store {
        url: String,
        key: String,
        #[source]
        source: StoreError,
    },
    #[error("{url}: lease {key} holds no lease: {reason}")]
    Unreadable {
        url: String,
        key: String,
        reason: String,
    },
}

fn fmt_time(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A held lease; renewed in the background until [`Lease::release`].
pub struct Lease {
    renewer: tokio::task::JoinHandle<()>,
    stop: CancellationToken,
    state: Arc<tokio::sync::Mutex<Held>>,
    bucket: Bucket,
    key: Key,
}

struct Held {
    e_tag: Option<String>,
    lost: bool,
}

impl Lease {
    /// Takes the lease of `bucket`'s prefix for this process, which holds
    /// the local run lock `lock`. If the lease is lost later (taken over, or
    /// not renewed in time), `run` is cancelled.
    pub async fn take(
        bucket: &Bucket,
        lock: &std::path::Path,
        run: CancellationToken,
    ) -> Result<Lease, LeaseError> {
        let key = bucket.lease_key();
        let store = bucket.store();
        let me = holder(lock, OffsetDateTime::now_utc());
        let err = |source: object_store::Error| LeaseError::Store {
            url: bucket.url().to_owned(),
            key: key.to_string(),
            source: source.into(),
        };
        let body = |h: &Holder| PutPayload::from(serde_json::to_vec(h).expect("serialisable"));
        let create = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let e_tag = match store.put_opts(&key, body(&me), create).await {
            Ok(put) => put.e_tag,
            Err(object_store::Error::AlreadyExists { .. }) => {
                let got = store.get(&key).await.map_err(err)?;
                let found = UpdateVersion {
                    e_tag: got.meta.e_tag.clone(),
                    version: got.meta.version.clone(),
                };
                let bytes = got.bytes().await.map_err(err)?;
                let other: Holder =
                    serde_json::from_slice(&bytes).map_err(|e| LeaseError::Unreadable {
                        url: bucket.url().to_owned(),
                        key: key.to_string(),
                        reason: e.to_string(),
                    })?;
                let expired = other.until <= OffsetDateTime::now_utc();
                let mine = other.host == me.host && other.lock == me.lock;
                if !(expired || mine) {
                    return Err(LeaseError::Held {
                        url: bucket.url().to_owned(),
                        holder: other,
                    });
                }
                tracing::warn!(
                    host = %other.host,
                    pid = other.pid,
                    "taking over the lease of {}: {}",
                    bucket.url(),
                    if expired { "it expired" } else { "this host's run that held it is gone" }
                );
                let update = PutOptions {
                    mode: PutMode::Update(found),
                    ..PutOptions::default()
                };
                match store.put_opts(&key, body(&me), update).await {
                    Ok(put) => put.e_tag,
                    // Someone else took it over first.
                    Err(object_store::Error::Precondition { .. }) => {
                        let now = store.get(&key).await.map_err(err)?;
                        let bytes = now.bytes().await.map_err(err)?;
                        let holder = serde_json::from_slice(&bytes).unwrap_or(other);
                        return Err(LeaseError::Held {
                            url: bucket.url().to_owned(),
                            holder,
                        });
                    }
                    Err(e) => return Err(err(e)),
                }
            }
            Err(e) => return Err(err(e)),
        };
        let state = Arc::new(tokio::sync::Mutex::new(Held { e_tag, lost: false }));
        let stop = CancellationToken::new();
        let renewer = tokio::spawn(renew(
            bucket.clone(),
            key.clone(),
            me,
            state.clone(),
            stop.clone(),
            run,
        ));
        // The only writer of the prefix now, holding the staging
        // directory's run lock: no upload in its journal is in flight.
        bucket.abort_interrupted_uploads().await;
        Ok(Lease {
            renewer,
            stop,
            state,
            bucket: bucket.clone(),
            key,
        })
    }

    /// Stops renewing and deletes the lease, unless it was lost.
    pub async fn release(self) {
        self.stop.cancel();
        let _ = self.renewer.await;
        let held = self.state.lock().await;
        if held.lost {
            return;
        }
        let store = self.bucket.store();
        // Only our own: a lease someone took over since stays theirs.
        let ours = match store.head(&self.key).await {
            Ok(meta) => meta.e_tag == held.e_tag,
            Err(_) => false,
        };
        if ours {
            if let Err(e) = store.delete(&self.key).await {
                tracing::warn!("releasing the lease {}: {}", self.key, StoreError::from(e));
            }
        }
    }
}

/// Renews the lease every [`RENEW_EVERY`] until `stop`; a renewal refused
/// (taken over) or failing until the lease would expire cancels `run`.
async fn renew(
    bucket: Bucket,
    key: Key,
    mut me: Holder,
    state: Arc<tokio::sync::Mutex<Held>>,
    stop: CancellationToken,
    run: CancellationToken,
) {
    let store = bucket.store();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RENEW_EVERY) => {}
        }
        let mut held = state.lock().await;
        let now = OffsetDateTime::now_utc();
        let renewed = Holder {
            until: now + TTL,
            ..me.clone()
        };
        let update = PutOptions {
            mode: PutMode::Update(UpdateVersion {
                e_tag: held.e_tag.clone(),
                version: None,
            }),
            ..PutOptions::default()
        };
        let body = PutPayload::from(serde_json::to_vec(&renewed).expect("serialisable"));
        match store.put_opts(&key, body, update).await {
            Ok(put) => {
                held.e_tag = put.e_tag;
                me = renewed;
            }
            Err(e) => {
                let taken = matches!(e, object_store::Error::Precondition { .. });
                if taken || now >= me.until {
                    tracing::error!(
                        "lost the lease of {}: {}; stopping the run",
                        bucket.url(),
                        if taken {
                            "another writer took it over".to_owned()
                        } else {
                            StoreError::from(e).to_string()
                        }
                    );
                    held.lost = true;
                    run.cancel();
                    return;
                }
                tracing::warn!(
                    "renewing the lease of {}: {}",
                    bucket.url(),
                    StoreError::from(e)
                );
            }
        }
    }
}

/// This process, holding `lock` and a lease from `now` for [`TTL`].
fn holder(lock: &std::path::Path, now: OffsetDateTime) -> Holder {
    Holder {
        host: host_name(),
        lock: lock.display().to_string(),
        pid: std::process::id(),
        since: now,
        until: now + TTL,
    }
}

fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}
