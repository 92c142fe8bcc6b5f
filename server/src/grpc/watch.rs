//! `etcdserverpb.Watch`: one task per client stream.
//!
//! The task reads the client's requests (create, cancel, progress) and sends
//! responses in one ordered sequence: a watcher's `created` response is sent
//! before the watcher is registered with the hub, so its events can only come
//! after it, and a watch "from now" starts just after the revision that
//! response names, however long the response waits for the client; a cancel
//! removes the watcher from the hub first, and messages for watchers no
//! longer active on this stream are dropped. A slow client only
//! slows its own stream: while this task waits on the client, the hub's buffer
//! for the stream fills and its watchers fall back to catching up from history.

use std::collections::HashMap;
use std::sync::Arc;

use cairn_proto::etcdserverpb::watch_create_request::FilterType;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::watch_server::Watch;
use cairn_proto::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchRequest, WatchResponse};
use cairn_proto::mvccpb::event::EventType;
use cairn_proto::mvccpb::Event;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::Caller;
use crate::member::KvApi;
use crate::mvcc::{KeyRange, StreamKey, WatchMessage, WatchSpec, WatcherKey};

/// Messages the hub may queue for one stream before its watchers fall back to
/// catching up from history.
const HUB_BUFFER: usize = 1024;
/// Responses queued towards the client.
const OUT_BUFFER: usize = 16;
/// The cancel reason of a watch refused by auth: etcd sends the gRPC
/// error's text.
const PERMISSION_DENIED: &str =
    "rpc error: code = PermissionDenied desc = etcdserver: permission denied";

/// etcd's watch id meaning "none" (failed creates, stream-wide progress).
const INVALID_WATCH_ID: i64 = -1;
/// etcd's error for a client-chosen id already in use on the stream.
const DUPLICATE_WATCH_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
/// etcd's error for `range_end <= key`.
const EMPTY_WATCHER_RANGE: &str = "mvcc: watcher range is empty";

/// The Watch service of one member.
#[derive(Debug, Clone)]
pub struct WatchService {
    /// The KV API whose store is watched (and whose limits and write
    /// path's headers and stop signal the streams use).
    kv: Arc<KvApi>,
    /// How often watchers that asked for progress notifications get one.
    progress_interval: std::time::Duration,
}

impl WatchService {
    /// A Watch service over `kv`'s store, notifying progress every
    /// `progress_interval` (etcd's
    /// `--experimental-watch-progress-notify-interval`).
    pub fn new(kv: Arc<KvApi>, progress_interval: std::time::Duration) -> Self {
        Self {
            kv,
            progress_interval,
        }
    }
}

impl WatchService {
    /// Serves one watch stream: its requests (a gRPC stream, or the JSON
    /// gateway's) and the responses, from a task of its own.
    /// `require_leader`: the client asked for `hasleader`.
    pub fn open<S>(
        &self,
        requests: S,
        require_leader: bool,
        caller: Caller,
    ) -> ReceiverStream<Result<WatchResponse, Status>>
    where
        S: Stream<Item = Result<WatchRequest, Status>> + Unpin + Send + 'static,
    {
        let (out_tx, out_rx) = mpsc::channel(OUT_BUFFER);
        let (hub_tx, hub_rx) = mpsc::channel(HUB_BUFFER);
        let store = self.kv.proposer().store();
        let stream = WatchStream {
            key: store.watch_hub().new_stream(),
            kv: Arc::clone(&self.kv),
            progress_interval: self.progress_interval,
            hub_tx,
            out: out_tx,
            active: HashMap::new(),
            ids: HashMap::new(),
            next_id: 0,
            require_leader,
            caller,
        };
        tokio::spawn(stream.run(requests, hub_rx));
        ReceiverStream::new(out_rx)
    }
}

#[tonic::async_trait]
impl Watch for WatchService {
    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<BoxStream<WatchResponse>>, Status> {
        // clientv3's WithRequireLeader: the stream ends with "no leader"
        // once this member has had no leader for a while (etcd's monitorLeader).
        let require_leader = request
            .metadata()
            .get("hasleader")
            .is_some_and(|v| v.as_bytes() == b"true");
        let caller = super::caller::of(&request, self.kv.proposer());
        let responses = self.open(request.into_inner(), require_leader, caller);
        Ok(Response::new(Box::pin(responses)))
    }
}

/// What this stream remembers about one of its watchers.
#[derive(Debug, Clone, Copy)]
struct Active {
    /// The id the client knows it by.
    watch_id: i64,
    /// Fill `prev_kv` on events.
    prev_kv: bool,
    /// Split large responses.
    fragment: bool,
    /// Wants periodic progress notifications.
    progress_notify: bool,
    /// No events were sent since the last progress tick (etcd sends periodic
    /// progress only to watchers that stayed quiet).
    quiet: bool,
}

/// One client stream's state.
struct WatchStream {
    /// The KV API (store, header fields, limits).
    kv: Arc<KvApi>,
    /// How often watchers that asked for progress notifications get one.
    progress_interval: std::time::Duration,
    /// This stream's key in the hub.
    key: StreamKey,
    /// Where the hub sends this stream's messages (cloned into each watcher).
    hub_tx: mpsc::Sender<WatchMessage>,
    /// Towards the client; an error ends the stream.
    out: mpsc::Sender<Result<WatchResponse, Status>>,
    /// Watchers of this stream, by hub key.
    active: HashMap<WatcherKey, Active>,
    /// Hub keys by client watch id.
    ids: HashMap<i64, WatcherKey>,
    /// Next automatically assigned watch id (etcd starts at 0).
    next_id: i64,
    /// The client asked for `hasleader`: end the stream when the member
    /// stays without a leader.
    require_leader: bool,
    /// Who opened the stream: each create is checked (read on its range)
    /// against the auth state of that moment. Watchers already created are
    /// not checked again (etcd 3.5's rule; see `crate::auth`).
    caller: Caller,
}

/// How long a `hasleader` watch stream survives without a leader (etcd
/// waits a few election timeouts; its default election timeout is 1 s).
const NO_LEADER_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Why the stream task stops.
struct ClientGone;

impl WatchStream {
    async fn run(
        mut self,
        mut requests: impl Stream<Item = Result<WatchRequest, Status>> + Unpin,
        mut hub_rx: mpsc::Receiver<WatchMessage>,
    ) {
        let interval = self.progress_interval;
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        let mut reading = true;
        let mut stopping = self.kv.proposer().stopping();
        let mut leadership = self
            .require_leader
            .then(|| self.kv.proposer().replication().raft.leadership());
        let mut leaderless_since: Option<tokio::time::Instant> = None;
        loop {
            let leaderless_deadline = leaderless_since.map(|t| t + NO_LEADER_GRACE);
            let step = tokio::select! {
                changed = async {
                    match leadership.as_mut() {
                        Some(l) => l.changed().await.map(|()| l.borrow_and_update().0),
                        None => std::future::pending().await,
                    }
                } => {
                    match changed {
                        Ok(0) => { leaderless_since.get_or_insert_with(tokio::time::Instant::now); }
                        Ok(_) => leaderless_since = None,
                        Err(_) => leadership = None,
                    }
                    Ok(())
                }
                _ = async {
                    match leaderless_deadline {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {
                    let _ = self.out.send(Err(crate::error::EtcdError::NoLeader.into())).await;
                    Err(ClientGone)
                }
                _ = async { drop(stopping.wait_for(|s| *s).await) } => Err(ClientGone),
                req = requests.next(), if reading => match req {
                    Some(Ok(req)) => self.handle(req).await,
                    // The client closed its side: keep delivering, as etcd does,
                    // until it goes away.
                    None => { reading = false; Ok(()) }
                    // A message that does not decode (or is too large) ends
                    // the stream with that error, as etcd's does, never OK.
                    Some(Err(status)) => {
                        let _ = self.out.send(Err(super::status::from_transport(status))).await;
                        Err(ClientGone)
                    }
                },
                Some(msg) = hub_rx.recv() => self.deliver(msg).await,
                _ = ticker.tick() => { self.progress_tick(); Ok(()) }
                _ = self.out.closed() => Err(ClientGone),
            };
            if step.is_err() {
                break;
            }
        }
        self.kv
            .proposer()
            .store()
            .watch_hub()
            .remove_stream(self.key);
    }

    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(self.kv.proposer().header(revision))
    }

    async fn send(&self, resp: WatchResponse) -> Result<(), ClientGone> {
        self.out.send(Ok(resp)).await.map_err(|_| ClientGone)
    }

    async fn handle(&mut self, req: WatchRequest) -> Result<(), ClientGone> {
        match req.request_union {
            Some(RequestUnion::CreateRequest(create)) => self.create(create).await,
            Some(RequestUnion::CancelRequest(cancel)) => {
                let Some(key) = self.ids.remove(&cancel.watch_id) else {
                    // etcd answers nothing for an unknown id.
                    return Ok(());
                };
                self.active.remove(&key);
                self.kv.proposer().store().watch_hub().remove(key);
                self.send(WatchResponse {
                    header: self.header(0),
                    watch_id: cancel.watch_id,
                    canceled: true,
                    ..WatchResponse::default()
                })
                .await
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                self.kv
                    .proposer()
                    .store()
                    .request_progress_all(self.key, self.hub_tx.clone());
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// The cancel of a watch that needs compacted history (etcd's carries
    /// no revision in its header).
    fn compacted(&self, watch_id: i64, compact_revision: i64) -> WatchResponse {
        WatchResponse {
            header: self.header(0).map(|h| ResponseHeader { revision: 0, ..h }),
            watch_id,
            canceled: true,
            compact_revision,
            ..WatchResponse::default()
        }
    }

    fn refuse(&self, reason: &str) -> WatchResponse {
        WatchResponse {
            header: self.header(0),
            watch_id: INVALID_WATCH_ID,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..WatchResponse::default()
        }
    }

    /// etcd's `isWatchPermitted`: while auth is on, the stream's caller
    /// must be allowed to read the watched range (a bad token is refused).
    async fn permitted(&self, req: &WatchCreateRequest) -> bool {
        let proposer = self.kv.proposer();
        match proposer.identify(&self.caller).await {
            Ok(who) if who.is_checked() => who
                .checker(&proposer.machine().auth().state())
                .watch(req)
                .is_ok(),
            Ok(_) => true,
            Err(_) => false,
        }
    }

    async fn create(&mut self, mut req: WatchCreateRequest) -> Result<(), ClientGone> {
        // etcd's conventions: no key = the smallest key; "\0" end = from key.
        if req.key.is_empty() {
            req.key = vec![0];
        }
        if !self.permitted(&req).await {
            return self
                .send(WatchResponse {
                    header: self.header(0),
                    watch_id: req.watch_id,
                    created: true,
                    canceled: true,
                    cancel_reason: PERMISSION_DENIED.to_string(),
                    ..WatchResponse::default()
                })
                .await;
        }
        // A negative start revision, as etcd's arithmetic treats it: below
        // the compacted revision C (-1 while nothing was ever compacted), the
        // watch is created and then cancelled with `compact_revision` = C;
        // otherwise (-1 on a store never compacted) it watches from now.
        let mut compacted_at = None;
        if req.start_revision < 0 {
            let compacted = self.kv.proposer().store().compact_revision();
            if req.start_revision < compacted {
                compacted_at = Some(compacted);
            } else {
                req.start_revision = 0;
            }
        }
        let range = KeyRange::new(&req.key, &req.range_end);
        if let KeyRange::Range {
            start,
            end: Some(end),
        } = &range
        {
            if end <= start {
                return self.send(self.refuse(EMPTY_WATCHER_RANGE)).await;
            }
        }
        let watch_id = if req.watch_id == 0 {
            while self.ids.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id += 1;
            self.next_id - 1
        } else if self.ids.contains_key(&req.watch_id) {
            return self.send(self.refuse(DUPLICATE_WATCH_ID)).await;
        } else {
            req.watch_id
        };
        // The created response's revision R is read once, and a watch "from
        // now" starts at R + 1, as etcd pins it: a commit that lands while
        // the response waits for room towards the client comes after R, so
        // the watcher, registered later, is due it and catches up from
        // history. Had the start been read at registration, such a commit
        // would fall between what the header promised and where the watcher
        // started (jepsen's watch checker saw that gap).
        let current = self.kv.proposer().store().current_revision();
        if req.start_revision == 0 {
            req.start_revision = current + 1;
        }
        // Created first, then registered: its events can only follow it.
        self.send(WatchResponse {
            header: self.header(current),
            watch_id,
            created: true,
            ..WatchResponse::default()
        })
        .await?;
        if let Some(compact_revision) = compacted_at {
            return self.send(self.compacted(watch_id, compact_revision)).await;
        }
        let spec = WatchSpec {
            range,
            start_revision: req.start_revision,
            no_put: req.filters.contains(&(FilterType::Noput as i32)),
            no_delete: req.filters.contains(&(FilterType::Nodelete as i32)),
        };
        let key = self
            .kv
            .proposer()
            .store()
            .watch(spec, self.key, self.hub_tx.clone());
        self.ids.insert(watch_id, key);
        self.active.insert(
            key,
            Active {
                watch_id,
                prev_kv: req.prev_kv,
                fragment: req.fragment,
                progress_notify: req.progress_notify,
                quiet: true,
            },
        );
        Ok(())
    }

    async fn deliver(&mut self, msg: WatchMessage) -> Result<(), ClientGone> {
        match msg {
            WatchMessage::Events {
                watcher,
                revision,
                mut events,
            } => {
                self.kv
                    .proposer()
                    .store()
                    .watch_hub()
                    .events_taken(events.len());
                let Some(active) = self.active.get_mut(&watcher) else {
                    return Ok(());
                };
                active.quiet = false;
                let active = *active;
                if active.prev_kv {
                    events = self.with_prev_kvs(events).await;
                }
                let resp = WatchResponse {
                    header: self.header(revision),
                    watch_id: active.watch_id,
                    events,
                    ..WatchResponse::default()
                };
                if active.fragment {
                    for part in fragments(resp, self.kv.limits().max_request_bytes) {
                        self.send(part).await?;
                    }
                    Ok(())
                } else {
                    self.send(resp).await
                }
            }
            WatchMessage::Compacted {
                watcher,
                compact_revision,
            } => {
                let Some(active) = self.active.remove(&watcher) else {
                    return Ok(());
                };
                self.ids.remove(&active.watch_id);
                self.send(self.compacted(active.watch_id, compact_revision))
                    .await
            }
            WatchMessage::Progress { watcher, revision } => {
                let watch_id = match watcher {
                    None => INVALID_WATCH_ID,
                    Some(key) => match self.active.get(&key) {
                        Some(active) => active.watch_id,
                        None => return Ok(()),
                    },
                };
                self.send(WatchResponse {
                    header: self.header(revision),
                    watch_id,
                    ..WatchResponse::default()
                })
                .await
            }
        }
    }

    /// Periodic progress: to each quiet watcher that asked for it.
    fn progress_tick(&mut self) {
        let store = self.kv.proposer().store();
        for (key, active) in self.active.iter_mut() {
            if active.progress_notify && active.quiet {
                store.request_progress(*key);
            }
            active.quiet = true;
        }
    }

    /// Fills each event's `prev_kv`: the key as it was just before the event,
    /// unless the event created the key (or that revision was compacted).
    async fn with_prev_kvs(&self, events: Vec<Event>) -> Vec<Event> {
        let store = Arc::clone(self.kv.proposer().store());
        let filled = tokio::task::spawn_blocking(move || {
            let mut events = events;
            for ev in &mut events {
                let Some(kv) = &ev.kv else { continue };
                let created =
                    ev.r#type == EventType::Put as i32 && kv.create_revision == kv.mod_revision;
                if created {
                    continue;
                }
                let opts = crate::mvcc::RangeOptions {
                    rev: kv.mod_revision - 1,
                    ..Default::default()
                };
                if let Ok(rr) = store.range(&KeyRange::new(&kv.key, b""), opts) {
                    ev.prev_kv = rr.kvs.into_iter().next();
                }
            }
            events
        })
        .await;
        filled.unwrap_or_default()
    }
}

/// Splits a response whose encoding reaches `limit` bytes into fragments of
/// whole events, each below the limit where possible; all but the last are
/// marked `fragment` (etcd's rule: a single event is never split).
fn fragments(resp: WatchResponse, limit: usize) -> Vec<WatchResponse> {
    if resp.encoded_len() < limit || resp.events.len() < 2 {
        return vec![resp];
    }
    let template = WatchResponse {
        events: Vec::new(),
        fragment: true,
        ..resp.clone()
    };
    let mut parts = Vec::new();
    let mut current = template.clone();
    for ev in resp.events {
        current.events.push(ev);
        if current.events.len() > 1 && current.encoded_len() >= limit {
            let overflow = current.events.pop();
            parts.push(std::mem::replace(&mut current, template.clone()));
            current.events.extend(overflow);
        }
    }
    current.fragment = false;
    parts.push(current);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::mvccpb::KeyValue;

    fn event(key: usize, size: usize) -> Event {
        Event {
            r#type: EventType::Put as i32,
            kv: Some(KeyValue {
                key: format!("k{key}").into_bytes(),
                value: vec![b'x'; size],
                ..KeyValue::default()
            }),
            prev_kv: None,
        }
    }

    #[test]
    fn fragments_keep_every_event_in_order() {
        let resp = WatchResponse {
            watch_id: 7,
            events: (0..10).map(|i| event(i, 300)).collect(),
            ..WatchResponse::default()
        };
        let parts = fragments(resp.clone(), 1000);
        assert!(parts.len() > 1);
        assert!(parts[..parts.len() - 1].iter().all(|p| p.fragment));
        assert!(!parts[parts.len() - 1].fragment);
        assert!(parts
            .iter()
            .all(|p| p.watch_id == 7 && p.encoded_len() < 1000));
        let joined: Vec<Event> = parts.into_iter().flat_map(|p| p.events).collect();
        assert_eq!(joined, resp.events);
        // Small responses and single events are never split.
        assert_eq!(fragments(resp.clone(), 1 << 20).len(), 1);
        let single = WatchResponse {
            events: vec![event(0, 5000)],
            ..WatchResponse::default()
        };
        assert_eq!(fragments(single, 1000).len(), 1);
    }
}
