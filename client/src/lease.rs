//! Leases: grant, revoke, inspect, and keep alive.
//!
//! [`Client::lease_keep_alive`] returns a [`KeepAlive`]: a handle owning a
//! background task that renews the lease every TTL/3 over one keep-alive
//! stream (what etcd's clientv3 does). Dropping the handle, or
//! [`KeepAlive::stop`], ends the task and closes the stream; the lease then
//! expires after its TTL unless something else renews it.
//!
//! The stream is opened on the client's current endpoint, failing over like
//! a read. If it breaks (the member went away, "etcdserver: no leader"), the
//! task moves the client past that member and reopens it on the next one
//! before its next renewal is due; only if no member answers does it end
//! with the error.
//!
//! ```no_run
//! # async fn demo(client: cairn_client::Client) -> Result<(), cairn_client::Error> {
//! use cairn_client::Put;
//!
//! let lease = client.lease_grant(10, 0).await?; // 10 s, server-chosen id
//! client.put(Put::new("service/me", "10.0.0.1").lease(lease.id)).await?;
//! let keep_alive = client.lease_keep_alive(lease.id).await?;
//! // ... the key lives as long as `keep_alive` does (plus up to one TTL).
//! keep_alive.stop().await?;
//! client.lease_revoke(lease.id).await?; // deletes service/me now
//! # Ok(()) }
//! ```

use std::time::Duration;

use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;

use crate::retry::{self, Kind};
use crate::{Client, Error};

/// The error clientv3 reports for a keep-alive of a lease that is gone (the
/// server answers such a keep-alive with TTL 0).
fn lease_not_found() -> Error {
    Error::Status(tonic::Status::not_found(
        "etcdserver: requested lease not found",
    ))
}

/// One open keep-alive stream.
struct Stream {
    /// Requests to send (dropping it closes our side of the stream).
    requests: mpsc::Sender<LeaseKeepAliveRequest>,
    /// The server's answers, one per request.
    responses: Streaming<LeaseKeepAliveResponse>,
    /// The endpoint (index into the client's list) the stream is on, so a
    /// break moves the client past that member and not past another one.
    endpoint: usize,
}

impl Stream {
    async fn open(client: &Client, endpoint: usize, channel: Channel) -> Result<Self, Error> {
        let (requests, rx) = mpsc::channel(1);
        let responses = LeaseClient::new(channel)
            .lease_keep_alive(client.request(ReceiverStream::new(rx)))
            .await?
            .into_inner();
        Ok(Self {
            requests,
            responses,
            endpoint,
        })
    }

    /// Opens a stream on the client's current endpoint and renews `id` once
    /// on it, failing over like a read (a renewal only extends a lease, so
    /// repeating it elsewhere is harmless).
    async fn open_and_renew(
        client: &Client,
        id: i64,
    ) -> Result<(Stream, LeaseKeepAliveResponse), Error> {
        client
            .run(Kind::Read, |endpoint, channel| async move {
                let mut stream = Stream::open(client, endpoint, channel).await?;
                let resp = stream.renew(id).await?;
                Ok((stream, resp))
            })
            .await
    }

    /// Renews `id`; if the stream has broken in a way that says "try another
    /// member", reopens it through failover and renews there.
    async fn renew_or_reopen(
        &mut self,
        client: &Client,
        id: i64,
    ) -> Result<LeaseKeepAliveResponse, Error> {
        match self.renew(id).await {
            Err(err) if retry::read_should_fail_over(&err) => {
                client.fail_over(self.endpoint);
                let (fresh, resp) = Stream::open_and_renew(client, id).await?;
                *self = fresh;
                Ok(resp)
            }
            other => other,
        }
    }

    /// Sends one keep-alive for `id` and waits for its answer.
    async fn renew(&mut self, id: i64) -> Result<LeaseKeepAliveResponse, Error> {
        if self
            .requests
            .send(LeaseKeepAliveRequest { id })
            .await
            .is_err()
        {
            return Err(closed());
        }
        match self.responses.message().await? {
            Some(resp) => Ok(resp),
            None => Err(closed()),
        }
    }
}

fn closed() -> Error {
    Error::Status(tonic::Status::unavailable(
        "lease keep-alive stream closed by the server",
    ))
}

/// What a [`KeepAlive`] has seen so far.
#[derive(Debug, Clone, Default)]
struct Progress {
    /// Number of keep-alive responses received.
    renewals: u64,
    /// The latest response.
    latest: Option<LeaseKeepAliveResponse>,
}

/// Keeps one lease alive from a background task until dropped or stopped.
#[derive(Debug)]
pub struct KeepAlive {
    /// The lease kept alive.
    id: i64,
    /// Updated by the task after every response.
    progress: watch::Receiver<Progress>,
    /// Dropping or firing it tells the task to stop.
    stop: Option<oneshot::Sender<()>>,
    /// The renewing task; its result is the reason it ended.
    task: Option<JoinHandle<Result<(), Error>>>,
}

impl KeepAlive {
    /// The lease id.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The latest keep-alive response (TTL 0 means the lease is gone and the
    /// task has ended).
    pub fn latest(&self) -> Option<LeaseKeepAliveResponse> {
        self.progress.borrow().latest
    }

    /// How many keep-alive responses have been received.
    pub fn renewals(&self) -> u64 {
        self.progress.borrow().renewals
    }

    /// True while the task is renewing (false once the lease is gone, the
    /// stream failed, or after a stop).
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Waits for the next keep-alive response; `None` once the task has ended.
    pub async fn next(&mut self) -> Option<LeaseKeepAliveResponse> {
        match self.progress.changed().await {
            Ok(()) => self.progress.borrow_and_update().latest,
            Err(_) => None,
        }
    }

    /// Stops renewing, closes the stream, and returns why the task had ended
    /// if it ended on its own with an error.
    pub async fn stop(mut self) -> Result<(), Error> {
        self.stop.take();
        match self.task.take() {
            Some(task) => match task.await {
                Ok(result) => result,
                // The task never panics; if it was cancelled there is nothing to report.
                Err(_) => Ok(()),
            },
            None => Ok(()),
        }
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        // Dropping the sender wakes the task, which closes the stream and ends.
        self.stop.take();
    }
}

/// How soon a failed renewal is tried again.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Renews `id` every TTL/3 until stopped or the lease is gone. A renewal
/// that fails in a way another member (or a moment) may fix is retried
/// every [`RETRY_PAUSE`] until a TTL has passed since the last success.
async fn renew_loop(
    client: Client,
    id: i64,
    mut stream: Stream,
    first_ttl: i64,
    progress: watch::Sender<Progress>,
    mut stop: oneshot::Receiver<()>,
) -> Result<(), Error> {
    let mut ttl = first_ttl;
    let mut renewed_at = tokio::time::Instant::now();
    let mut pause = Duration::from_secs(u64::try_from(ttl).unwrap_or(1)) / 3;
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tokio::time::sleep(pause) => {}
        }
        let result = tokio::select! {
            _ = &mut stop => return Ok(()),
            resp = stream.renew_or_reopen(&client, id) => resp,
        };
        let resp = match result {
            Ok(resp) => resp,
            // A cluster between leaders answers "no leader" for a moment:
            // keep trying (as clientv3 does) while the lease may still be
            // alive, rather than let it expire.
            Err(e)
                if retry::read_should_fail_over(&e)
                    && renewed_at.elapsed()
                        < Duration::from_secs(u64::try_from(ttl).unwrap_or(0)) =>
            {
                pause = RETRY_PAUSE;
                continue;
            }
            Err(e) => return Err(e),
        };
        renewed_at = tokio::time::Instant::now();
        pause = Duration::from_secs(u64::try_from(resp.ttl).unwrap_or(1)) / 3;
        ttl = resp.ttl;
        progress.send_modify(|p| {
            p.renewals += 1;
            p.latest = Some(resp);
        });
        if ttl <= 0 {
            return Ok(());
        }
    }
}

impl Client {
    /// Grant a lease of `ttl` seconds (`Lease.LeaseGrant`). `id` 0 lets the
    /// server choose the id. The server may raise a short TTL to its minimum;
    /// the response has the TTL granted. A write (repeating it could grant
    /// two leases).
    pub async fn lease_grant(&self, ttl: i64, id: i64) -> Result<LeaseGrantResponse, Error> {
        let message = LeaseGrantRequest { ttl, id };
        self.unary(Kind::Write, message, |ch, req| async move {
            LeaseClient::new(ch).lease_grant(req).await
        })
        .await
    }

    /// Revoke a lease, deleting every key attached to it (`Lease.LeaseRevoke`).
    /// A write.
    pub async fn lease_revoke(&self, id: i64) -> Result<LeaseRevokeResponse, Error> {
        self.unary(
            Kind::Write,
            LeaseRevokeRequest { id },
            |ch, req| async move { LeaseClient::new(ch).lease_revoke(req).await },
        )
        .await
    }

    /// Remaining and granted TTL of a lease, with its keys if `keys`
    /// (`Lease.LeaseTimeToLive`). An unknown lease answers TTL -1. A read.
    pub async fn lease_time_to_live(
        &self,
        id: i64,
        keys: bool,
    ) -> Result<LeaseTimeToLiveResponse, Error> {
        let message = LeaseTimeToLiveRequest { id, keys };
        self.unary(Kind::Read, message, |ch, req| async move {
            LeaseClient::new(ch).lease_time_to_live(req).await
        })
        .await
    }

    /// Every lease (`Lease.LeaseLeases`). A read.
    pub async fn lease_leases(&self) -> Result<LeaseLeasesResponse, Error> {
        self.unary(Kind::Read, LeaseLeasesRequest {}, |ch, req| async move {
            LeaseClient::new(ch).lease_leases(req).await
        })
        .await
    }

    /// Renew a lease once (`Lease.LeaseKeepAlive`, one request on a fresh
    /// stream). As clientv3's `KeepAliveOnce`, a lease that is gone (the
    /// server answers TTL 0) is the error "etcdserver: requested lease not
    /// found" (gRPC `NotFound`).
    pub async fn keep_alive_once(&self, id: i64) -> Result<LeaseKeepAliveResponse, Error> {
        let (_stream, resp) = Stream::open_and_renew(self, id).await?;
        if resp.ttl <= 0 {
            return Err(lease_not_found());
        }
        Ok(resp)
    }

    /// Keep a lease alive until the returned handle is dropped or stopped.
    /// Renews once before returning (so a lease that is gone is the error
    /// "etcdserver: requested lease not found"), then every TTL/3.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<KeepAlive, Error> {
        let (stream, first) = Stream::open_and_renew(self, id).await?;
        if first.ttl <= 0 {
            return Err(lease_not_found());
        }
        let ttl = first.ttl;
        let (progress_tx, progress) = watch::channel(Progress {
            renewals: 1,
            latest: Some(first),
        });
        let (stop, stop_rx) = oneshot::channel();
        let task = tokio::spawn(renew_loop(
            self.clone(),
            id,
            stream,
            ttl,
            progress_tx,
            stop_rx,
        ));
        Ok(KeepAlive {
            id,
            progress,
            stop: Some(stop),
            task: Some(task),
        })
    }
}
