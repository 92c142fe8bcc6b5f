//! Watching: [`Watch`] describes what to watch, [`Watcher`] delivers it and
//! survives disconnects.
//!
//! A `Watcher` remembers the next revision it needs. When the stream breaks
//! (server restart, network) it opens a new one from exactly that revision, so
//! the caller sees every revision once, in order, with no gap. If the server
//! compacted the history the watcher needs, `next` returns
//! [`Error::Compacted`] instead of silently skipping ahead.
//!
//! Streams are opened on the client's current endpoint and fail over like a
//! read: a stream that breaks with an error meaning "try another member"
//! (`Unavailable`, such as "etcdserver: no leader" on a client
//! [`with_require_leader`](crate::Client::with_require_leader), or a
//! connection failure) moves the client past that member, and every reopen
//! that fails that way moves it again.

use std::time::Duration;

use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_create_request::FilterType;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{
    WatchCancelRequest, WatchCreateRequest, WatchRequest, WatchResponse,
};
use cairn_proto::mvccpb::Event;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;

use crate::retry::{self, Kind};
use crate::{Client, Error};

/// Reconnection attempts before `next` gives up with the last error.
const MAX_RECONNECTS: u32 = 20;
/// First backoff between reconnection attempts (doubles up to `MAX_BACKOFF`).
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest backoff between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What to watch (`WatchCreateRequest`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Watch {
    req: WatchCreateRequest,
}

impl Watch {
    /// Watch the single key `key`.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        Watch {
            req: WatchCreateRequest {
                key: key.into(),
                ..WatchCreateRequest::default()
            },
        }
    }

    crate::kv::key_range_setters!("Watch");

    /// Start at `revision` (past revisions are replayed); 0 = from now on.
    pub fn start_revision(mut self, revision: i64) -> Self {
        self.req.start_revision = revision;
        self
    }

    /// Include each event's previous key-value.
    pub fn prev_kv(mut self) -> Self {
        self.req.prev_kv = true;
        self
    }

    /// Ask for periodic progress notifications.
    pub fn progress_notify(mut self) -> Self {
        self.req.progress_notify = true;
        self
    }

    /// Skip put events.
    pub fn no_put(mut self) -> Self {
        self.req.filters.push(FilterType::Noput as i32);
        self
    }

    /// Skip delete events.
    pub fn no_delete(mut self) -> Self {
        self.req.filters.push(FilterType::Nodelete as i32);
        self
    }

    /// Let the server split large responses (the watcher reassembles them).
    pub fn fragment(mut self) -> Self {
        self.req.fragment = true;
        self
    }

    /// The raw request.
    pub fn into_request(self) -> WatchCreateRequest {
        self.req
    }
}

/// What a [`Watcher`] yields.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent {
    /// Events of one or more whole revisions, in order.
    Events {
        /// The server's revision when it sent them.
        revision: i64,
        /// The events.
        events: Vec<Event>,
    },
    /// Every event up to `revision` has been delivered.
    Progress {
        /// The progress point.
        revision: i64,
    },
}

/// A live watch that resumes after disconnects.
#[derive(Debug)]
pub struct Watcher {
    /// For reopening the stream on the current endpoint, with failover (and
    /// the require-leader setting the watch was started with).
    client: Client,
    /// The endpoint (index into the client's list) the stream is on, so a
    /// break moves the client past that member and not past another one.
    endpoint: usize,
    /// The original request; `start_revision` is replaced on reconnects.
    spec: WatchCreateRequest,
    /// The next revision this watcher needs (0 until the server says where "now" is).
    next_rev: i64,
    /// Keeps the request side of the stream open; used to cancel.
    requests: mpsc::Sender<WatchRequest>,
    /// The response side.
    responses: Streaming<WatchResponse>,
    /// The server's id for this watch on the current stream.
    watch_id: i64,
    /// Events of a fragmented response received so far.
    partial: Vec<Event>,
}

/// Opens a stream on `channel` and waits for the created response.
async fn open(
    client: &Client,
    channel: Channel,
    spec: &WatchCreateRequest,
) -> Result<
    (
        mpsc::Sender<WatchRequest>,
        Streaming<WatchResponse>,
        WatchResponse,
    ),
    Error,
> {
    let (tx, rx) = mpsc::channel(4);
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(spec.clone())),
    };
    // The receiver is alive (just created), so this cannot fail.
    tx.send(create)
        .await
        .map_err(|_| Error::WatchCanceled("request stream closed".into()))?;
    let mut responses = WatchClient::new(channel)
        .watch(client.request(ReceiverStream::new(rx)))
        .await?
        .into_inner();
    loop {
        let Some(resp) = responses.message().await? else {
            return Err(Error::WatchCanceled(
                "stream ended before the watch was created".into(),
            ));
        };
        if resp.created {
            if resp.canceled {
                return Err(canceled(&resp));
            }
            return Ok((tx, responses, resp));
        }
    }
}

fn canceled(resp: &WatchResponse) -> Error {
    if resp.compact_revision > 0 {
        Error::Compacted {
            compact_revision: resp.compact_revision,
        }
    } else {
        Error::WatchCanceled(resp.cancel_reason.clone())
    }
}

impl Watcher {
    pub(crate) async fn start(client: Client, watch: Watch) -> Result<Watcher, Error> {
        let spec = watch.into_request();
        let (endpoint, (requests, responses, created)) = client
            .run(Kind::Read, |endpoint, channel| {
                let (client, spec) = (&client, &spec);
                async move { Ok((endpoint, open(client, channel, spec).await?)) }
            })
            .await?;
        let next_rev = if spec.start_revision > 0 {
            spec.start_revision
        } else {
            created.header.map_or(0, |h| h.revision) + 1
        };
        Ok(Watcher {
            client,
            endpoint,
            spec,
            next_rev,
            requests,
            responses,
            watch_id: created.watch_id,
            partial: Vec::new(),
        })
    }

    /// The next revision this watcher will deliver.
    pub fn next_revision(&self) -> i64 {
        self.next_rev
    }

    /// Waits for the next events or progress notification. Reconnects (from
    /// the next revision) when the stream breaks; fails with
    /// [`Error::Compacted`] when that history is gone.
    pub async fn next(&mut self) -> Result<WatchEvent, Error> {
        let mut failures = 0;
        loop {
            match self.responses.message().await {
                Ok(Some(resp)) => {
                    if let Some(event) = self.accept(resp)? {
                        return Ok(event);
                    }
                }
                Ok(None) => {
                    failures += 1;
                    self.reconnect(&mut failures).await?;
                }
                Err(status) => {
                    if retry::read_should_fail_over(&Error::Status(status)) {
                        self.client.fail_over(self.endpoint);
                    }
                    failures += 1;
                    self.reconnect(&mut failures).await?;
                }
            }
        }
    }

    /// Handles one response; `None` when it carries nothing for the caller.
    fn accept(&mut self, resp: WatchResponse) -> Result<Option<WatchEvent>, Error> {
        if resp.canceled && resp.watch_id == self.watch_id {
            return Err(canceled(&resp));
        }
        let revision = resp.header.as_ref().map_or(0, |h| h.revision);
        if resp.watch_id != self.watch_id {
            // Stream-wide progress (id -1) also tells us where we are.
            if resp.watch_id == -1 && resp.events.is_empty() && revision > 0 {
                self.next_rev = self.next_rev.max(revision + 1);
                return Ok(Some(WatchEvent::Progress { revision }));
            }
            return Ok(None);
        }
        if resp.fragment {
            self.partial.extend(resp.events);
            return Ok(None);
        }
        let mut events = std::mem::take(&mut self.partial);
        events.extend(resp.events);
        if events.is_empty() {
            if revision > 0 {
                self.next_rev = self.next_rev.max(revision + 1);
                return Ok(Some(WatchEvent::Progress { revision }));
            }
            return Ok(None);
        }
        // Drop anything already delivered (a resumed stream never repeats,
        // but a caller-chosen start revision below a previous one might).
        events.retain(|e| {
            e.kv.as_ref()
                .is_some_and(|kv| kv.mod_revision >= self.next_rev)
        });
        if let Some(last) = events.last().and_then(|e| e.kv.as_ref()) {
            self.next_rev = last.mod_revision + 1;
        }
        if events.is_empty() {
            return Ok(None);
        }
        Ok(Some(WatchEvent::Events { revision, events }))
    }

    /// Reopens the stream from the next revision on the current endpoint,
    /// with backoff; a failure that means "try another member" moves the
    /// client on first. Gives up after `MAX_RECONNECTS` failures in a row,
    /// or at once on an error another member would repeat (a compaction, a
    /// refusal).
    async fn reconnect(&mut self, failures: &mut u32) -> Result<(), Error> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            let mut spec = self.spec.clone();
            spec.start_revision = self.next_rev;
            self.partial.clear();
            let (endpoint, channel) = self.client.current();
            match open(&self.client, channel, &spec).await {
                Ok((requests, responses, created)) => {
                    self.endpoint = endpoint;
                    self.requests = requests;
                    self.responses = responses;
                    self.watch_id = created.watch_id;
                    return Ok(());
                }
                Err(e) if !retry::read_should_fail_over(&e) => return Err(e),
                Err(e) => {
                    self.client.fail_over(endpoint);
                    *failures += 1;
                    if *failures > MAX_RECONNECTS {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Asks the server for a stream-wide progress notification.
    pub async fn request_progress(&self) -> Result<(), Error> {
        let req = WatchRequest {
            request_union: Some(RequestUnion::ProgressRequest(Default::default())),
        };
        self.requests
            .send(req)
            .await
            .map_err(|_| Error::WatchCanceled("stream closed".into()))
    }

    /// Cancels the watch and closes the stream.
    pub async fn cancel(self) {
        let req = WatchRequest {
            request_union: Some(RequestUnion::CancelRequest(WatchCancelRequest {
                watch_id: self.watch_id,
            })),
        };
        // If the stream is already gone there is nothing left to cancel.
        let _ = self.requests.send(req).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_table() {
        let r = Watch::key("a/")
            .prefix()
            .start_revision(5)
            .prev_kv()
            .no_delete()
            .into_request();
        assert_eq!(
            (r.key.as_slice(), r.range_end.as_slice()),
            (&b"a/"[..], &b"a0"[..])
        );
        assert_eq!(r.start_revision, 5);
        assert!(r.prev_kv);
        assert_eq!(r.filters, vec![FilterType::Nodelete as i32]);
        let all = Watch::key("").prefix().into_request();
        assert_eq!((all.key, all.range_end), (vec![0], vec![0]));
        let from = Watch::key("k")
            .from_key()
            .progress_notify()
            .fragment()
            .no_put()
            .into_request();
        assert_eq!(from.range_end, vec![0]);
        assert!(from.progress_notify && from.fragment);
        assert_eq!(from.filters, vec![FilterType::Noput as i32]);
    }
}
