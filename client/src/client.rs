//! The [`Client`] handle: its endpoints, failover between them, and the KV
//! calls.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::etcdserverpb::{
    kv_client::KvClient, CompactionRequest, CompactionResponse, DeleteRangeResponse, PutResponse,
    RangeResponse, TxnResponse,
};
use cairn_tls::client::{ClientTls, Connector};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

pub use cairn_tls::client::ClientOptions as TlsOptions;

use crate::kv::{Delete, Get, Put, Txn};
use crate::retry::{self, Action, Failure, Kind};
use crate::Error;

/// How long connecting to one endpoint may take before the client counts it
/// as down and moves on (etcdctl's default `--dial-timeout`). Without it a
/// member whose host is unreachable (packets dropped, not refused) would hold
/// a call for the OS's TCP connect timeout, minutes, instead of failing over.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The gRPC metadata key and value of etcd's `WithRequireLeader`: a member
/// that has no leader answers such a request at once with
/// "etcdserver: no leader" instead of serving it (and cancels such a watch
/// stream when it loses its leader), so the client moves to another member.
const REQUIRE_LEADER_KEY: &str = "hasleader";
/// See [`REQUIRE_LEADER_KEY`].
const REQUIRE_LEADER_VALUE: &str = "true";

/// The name [`Client::from_channel`] gives its one endpoint, which has no URI
/// the client knows of.
const CUSTOM_CHANNEL: &str = "(channel)";

/// An async client for the etcd v3 KV, Lease, Watch, Cluster and Maintenance
/// services, over one or more endpoints (cluster members).
///
/// Cheap to clone: clones share the connections and the failover position.
/// Every method takes `&self`, so a client can be used from many tasks at
/// once.
///
/// Calls go to the *current* endpoint. When it fails in a way that says
/// "try another member" (`Unavailable`, or a connection failure), the client
/// moves the current endpoint to the next one and, when that is safe, sends
/// the request again there; see the crate docs for exactly when a request
/// is repeated.
#[derive(Debug, Clone)]
pub struct Client {
    /// The endpoints and the current position, shared by every clone so a
    /// failover seen by one call steers all the others away from a dead
    /// member too.
    shared: Arc<Shared>,
    /// Whether requests carry etcd's require-leader metadata. Per handle
    /// rather than shared, so one view of a client can require a leader
    /// (say, for a watch) while the rest of the program uses it plainly.
    require_leader: bool,
    /// The user's credentials and token ([`Client::with_credentials`]),
    /// shared by the clones made after they were given, so one renewal of
    /// the token serves them all.
    pub(crate) auth: Option<Arc<crate::auth::Credentials>>,
}

/// The state all clones of a [`Client`] share.
#[derive(Debug)]
struct Shared {
    /// Every endpoint, in the order given; never empty, so the current
    /// index always names one.
    endpoints: Vec<Member>,
    /// Index into `endpoints` of the member calls go to. Only a failing call
    /// moves it (from the index it used to the next one), so concurrent
    /// failures on one member move it once, not once per call.
    current: AtomicUsize,
}

/// One endpoint.
#[derive(Debug)]
struct Member {
    /// The URI as given (with `http://` added when it had no scheme), for
    /// [`Client::endpoints`] and error messages.
    uri: String,
    /// A lazily connected channel: no I/O until the first call, so an
    /// unreachable member does not fail `connect_all`, and after a failure
    /// it reconnects by itself on the next call.
    channel: Channel,
}

/// One endpoint's answer to [`Client::endpoint_status_all`].
#[derive(Debug)]
pub struct EndpointStatus {
    /// The endpoint asked, as listed by [`Client::endpoints`].
    pub endpoint: String,
    /// Its `Maintenance.Status` answer, or why there was none.
    pub status: Result<cairn_proto::etcdserverpb::StatusResponse, Error>,
}

/// Turns an endpoint string into a URI, taking one without a scheme
/// (`"127.0.0.1:2379"`) as `http://`; with the endpoint tonic dials (the
/// `http://` form: the connector does any TLS) and whether it is `https://`.
fn parse_endpoint(endpoint: String) -> Result<(String, Endpoint, bool), Error> {
    let uri = if endpoint.contains("://") {
        endpoint.clone()
    } else {
        format!("http://{endpoint}")
    };
    let (plain, https) = cairn_tls::client::tonic_url(&uri);
    let parsed = Endpoint::from_shared(plain)
        .map_err(|e| Error::InvalidEndpoint(format!("{endpoint:?}: {e}")))?;
    Ok((uri, parsed.connect_timeout(CONNECT_TIMEOUT), https))
}

impl Client {
    /// Connect to one endpoint, e.g. `"http://127.0.0.1:2379"`: the
    /// one-endpoint case of [`Client::connect_all`] (same rules, including
    /// that nothing is dialled until the first call).
    pub async fn connect(endpoint: impl Into<String>) -> Result<Client, Error> {
        Self::connect_all([endpoint]).await
    }

    /// Connect to a cluster through several endpoints, e.g. every member's
    /// client URL. An endpoint without a scheme (`"127.0.0.1:2379"`) is taken
    /// as `http://`.
    ///
    /// Connections are made lazily, on each endpoint's first call, so a
    /// member that is down does not make this fail: calls simply fail over
    /// past it. What does fail, with [`Error::InvalidEndpoint`], is an empty
    /// list or any string that is not a usable URI: a typo in one of three
    /// endpoints would otherwise silently leave the client with two. The
    /// first endpoint is the initial current one.
    pub async fn connect_all(
        endpoints: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<Client, Error> {
        Self::connect_all_tls(endpoints, None).await
    }

    /// [`Client::connect_all`] with TLS for `https://` endpoints: the CA
    /// that signs the members' certificates and, for members that require
    /// one (`--client-cert-auth`), this client's certificate and key (as
    /// etcdctl's `--cacert`, `--cert`, `--key`). Certificate files are read
    /// again when they change, so a renewed client certificate is used by
    /// the next connection. An `https://` endpoint without `tls` is an
    /// [`Error::InvalidEndpoint`]; unusable files are an [`Error::Tls`].
    pub async fn connect_all_tls(
        endpoints: impl IntoIterator<Item = impl Into<String>>,
        tls: Option<&TlsOptions>,
    ) -> Result<Client, Error> {
        let tls = tls
            .map(|options| ClientTls::new(options, &cairn_tls::Policy::default()))
            .transpose()
            .map_err(|e| Error::Tls(e.to_string()))?;
        let mut members = Vec::new();
        for endpoint in endpoints {
            let endpoint = endpoint.into();
            let (uri, parsed, https) = parse_endpoint(endpoint.clone())?;
            // The connector does the TLS, and gathers a connection's small
            // writes either way (`cairn_tls::coalesce`).
            let Some(connector) = Connector::for_url(None, https, tls.as_ref()) else {
                return Err(Error::InvalidEndpoint(format!(
                    "{endpoint:?}: an https:// endpoint needs TLS options (a CA file)"
                )));
            };
            let channel = parsed.connect_with_connector_lazy(connector);
            members.push(Member { uri, channel });
        }
        Self::from_members(members)
    }

    /// A client over existing channels (for custom TLS, timeouts, ...), one
    /// per endpoint, each with the name [`Client::endpoints`] reports. Fails
    /// with [`Error::InvalidEndpoint`] if there is none.
    pub fn from_channels(
        channels: impl IntoIterator<Item = (impl Into<String>, Channel)>,
    ) -> Result<Client, Error> {
        let members = channels
            .into_iter()
            .map(|(uri, channel)| Member {
                uri: uri.into(),
                channel,
            })
            .collect();
        Self::from_members(members)
    }

    /// A one-endpoint client over an existing channel (for custom TLS,
    /// timeouts, lazy connections...). Its endpoint is listed as `"(channel)"`.
    pub fn from_channel(channel: Channel) -> Client {
        let member = Member {
            uri: CUSTOM_CHANNEL.to_string(),
            channel,
        };
        Self::build(vec![member], false, None)
    }

    fn from_members(endpoints: Vec<Member>) -> Result<Client, Error> {
        if endpoints.is_empty() {
            return Err(Error::InvalidEndpoint("no endpoint given".into()));
        }
        Ok(Self::build(endpoints, false, None))
    }

    /// A client over `endpoints`, which the caller has made sure is not
    /// empty, starting at the first.
    fn build(
        endpoints: Vec<Member>,
        require_leader: bool,
        auth: Option<Arc<crate::auth::Credentials>>,
    ) -> Client {
        Client {
            shared: Arc::new(Shared {
                endpoints,
                current: AtomicUsize::new(0),
            }),
            require_leader,
            auth,
        }
    }

    /// This client with etcd's `WithRequireLeader` on or off: with it, every
    /// request (and watch stream) carries the gRPC metadata
    /// `hasleader: true`, so a member cut off from its leader answers
    /// "etcdserver: no leader" (and ends such a watch) rather than serving
    /// possibly stale data or leaving a watch silently stalled; the client
    /// then fails over. The returned client shares this one's connections
    /// and failover position.
    pub fn with_require_leader(mut self, require: bool) -> Client {
        self.require_leader = require;
        self
    }

    /// The endpoints, in the order given.
    pub fn endpoints(&self) -> Vec<String> {
        self.shared
            .endpoints
            .iter()
            .map(|m| m.uri.clone())
            .collect()
    }

    /// Index (into [`Client::endpoints`]) of the endpoint calls go to now.
    pub fn current_endpoint(&self) -> usize {
        self.shared.current.load(Ordering::Relaxed)
    }

    /// A client that talks to endpoint `index` only, without failover, for
    /// the operations that are about one member (`status`, `hash_kv`,
    /// `defragment`, `snapshot`, `move_leader` on the leader). It shares this
    /// client's connection to that member, its require-leader setting and
    /// its credentials.
    pub fn endpoint(&self, index: usize) -> Result<Client, Error> {
        let member = self
            .shared
            .endpoints
            .get(index)
            .ok_or(Error::NoSuchEndpoint {
                index,
                count: self.shared.endpoints.len(),
            })?;
        let pinned = Member {
            uri: member.uri.clone(),
            channel: member.channel.clone(),
        };
        Ok(Self::build(
            vec![pinned],
            self.require_leader,
            self.auth.clone(),
        ))
    }

    /// The current endpoint's channel, to build raw tonic clients for other
    /// services (Auth, ...) from `cairn_client::proto::etcdserverpb`. Calls
    /// made on it do not fail over.
    pub fn channel(&self) -> Channel {
        self.current().1
    }

    /// The current endpoint's index and channel.
    pub(crate) fn current(&self) -> (usize, Channel) {
        let endpoints = &self.shared.endpoints;
        // Every constructor refuses an empty list, and `current` only ever
        // holds indexes below the length, so this cannot go out of bounds.
        let index = self.current_endpoint() % endpoints.len();
        (index, endpoints[index].channel.clone())
    }

    /// Moves the current endpoint past `from`, the one that just failed,
    /// unless another call already moved it.
    pub(crate) fn fail_over(&self, from: usize) {
        let next = (from + 1) % self.shared.endpoints.len();
        // Failure means someone else moved it already: keep their choice.
        let _ =
            self.shared
                .current
                .compare_exchange(from, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Wraps a message into a request, with the require-leader metadata if
    /// this client asks for it, and the auth token if it has one.
    pub(crate) fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        crate::auth::add_token(&mut request, self.token());
        if self.require_leader {
            request.metadata_mut().insert(
                REQUIRE_LEADER_KEY,
                MetadataValue::from_static(REQUIRE_LEADER_VALUE),
            );
        }
        request
    }

    /// Runs `attempt` (given the endpoint's index and channel) on the current
    /// endpoint, failing over per the retry policy (`retry::decide`): up to
    /// `retry::ROUNDS` rounds over all endpoints, with a backoff between
    /// rounds. Returns the first success, the first error that must not be
    /// retried, or the last error once every attempt is used up. A refused
    /// auth token is renewed and the attempt made again, once per call
    /// (see `auth.rs`), on the same endpoint.
    pub(crate) async fn run<T, F, Fut>(&self, kind: Kind, mut attempt: F) -> Result<T, Error>
    where
        F: FnMut(usize, Channel) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let count = self.shared.endpoints.len();
        let total = count.saturating_mul(retry::ROUNDS as usize);
        let mut tried = 0usize;
        let mut renewed = false;
        loop {
            if tried > 0 && tried.is_multiple_of(count) {
                let round = u32::try_from(tried / count).unwrap_or(u32::MAX);
                tokio::time::sleep(retry::backoff(round)).await;
            }
            let (index, channel) = self.current();
            let token = self.token();
            let err = match attempt(index, channel).await {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            if !renewed && crate::auth::should_refresh(&err, self.auth.is_some()) {
                renewed = true;
                self.refresh_token(token.as_ref()).await?;
                continue;
            }
            let failure = retry::classify(&err);
            match retry::decide(kind, failure) {
                Action::Return => return Err(err),
                Action::ReturnUnknownOutcome => {
                    if failure == Failure::MaybeSent {
                        self.fail_over(index);
                    }
                    return Err(match err {
                        Error::Status(source) => Error::UnknownOutcome { source },
                        other => other,
                    });
                }
                Action::TryNext => {
                    self.fail_over(index);
                    tried += 1;
                    if tried >= total {
                        return Err(err);
                    }
                }
            }
        }
    }

    /// [`Client::run`] for a unary rpc: `call` gets the channel and the
    /// request (a fresh copy of `message` per attempt).
    pub(crate) async fn unary<Req, Resp, F, Fut>(
        &self,
        kind: Kind,
        message: Req,
        call: F,
    ) -> Result<Resp, Error>
    where
        Req: Clone,
        F: Fn(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        self.run(kind, |_, channel| {
            let response = call(channel, self.request(message.clone()));
            async move { Ok(response.await?.into_inner()) }
        })
        .await
    }

    /// Starts watching (`Watch.Watch`); returns once the server created the
    /// watch. The stream is opened, and reopened after a break, on the
    /// current endpoint with failover like a read.
    pub async fn watch(&self, watch: crate::Watch) -> Result<crate::Watcher, Error> {
        crate::Watcher::start(self.clone(), watch).await
    }

    /// Read a key or range (`KV.Range`). A read: fails over.
    pub async fn get(&self, get: Get) -> Result<RangeResponse, Error> {
        self.unary(Kind::Read, get.into_request(), |ch, req| async move {
            KvClient::new(ch).range(req).await
        })
        .await
    }

    /// Write a key (`KV.Put`). A write: see the crate docs on failover.
    pub async fn put(&self, put: Put) -> Result<PutResponse, Error> {
        self.unary(Kind::Write, put.into_request(), |ch, req| async move {
            KvClient::new(ch).put(req).await
        })
        .await
    }

    /// Delete a key or range (`KV.DeleteRange`). A write.
    pub async fn delete(&self, delete: Delete) -> Result<DeleteRangeResponse, Error> {
        self.unary(Kind::Write, delete.into_request(), |ch, req| async move {
            KvClient::new(ch).delete_range(req).await
        })
        .await
    }

    /// Run a transaction (`KV.Txn`). A write, even when it only reads (as in
    /// clientv3: the client does not look inside).
    pub async fn txn(&self, txn: Txn) -> Result<TxnResponse, Error> {
        self.unary(Kind::Write, txn.into_request(), |ch, req| async move {
            KvClient::new(ch).txn(req).await
        })
        .await
    }

    /// Drop history before `revision` (`KV.Compact`). With `physical`, the
    /// call returns only once the compaction has reached the backend. A write.
    pub async fn compact(
        &self,
        revision: i64,
        physical: bool,
    ) -> Result<CompactionResponse, Error> {
        let message = CompactionRequest { revision, physical };
        self.unary(Kind::Write, message, |ch, req| async move {
            KvClient::new(ch).compact(req).await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Mutex;

    use super::*;
    use crate::retry::NO_LEADER;

    #[tokio::test]
    async fn bad_endpoint_is_invalid_endpoint() {
        match Client::connect("http://[::1").await {
            Err(Error::InvalidEndpoint(msg)) => assert!(msg.contains("[::1")),
            other => panic!("expected InvalidEndpoint, got {other:?}"),
        }
        // One bad endpoint among good ones is still an error.
        match Client::connect_all(["127.0.0.1:2379", "http://[::1"]).await {
            Err(Error::InvalidEndpoint(msg)) => assert!(msg.contains("[::1")),
            other => panic!("expected InvalidEndpoint, got {other:?}"),
        }
        match Client::connect_all(Vec::<String>::new()).await {
            Err(Error::InvalidEndpoint(msg)) => assert_eq!(msg, "no endpoint given"),
            other => panic!("expected InvalidEndpoint, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn unreachable_endpoints_connect_lazily() {
        let client = Client::connect_all(["127.0.0.1:1", "http://127.0.0.1:2"])
            .await
            .unwrap();
        assert_eq!(
            client.endpoints(),
            vec!["http://127.0.0.1:1", "http://127.0.0.1:2"]
        );
        assert_eq!(client.current_endpoint(), 0);
        let pinned = client.endpoint(1).unwrap();
        assert_eq!(pinned.endpoints(), vec!["http://127.0.0.1:2"]);
        match client.endpoint(2) {
            Err(Error::NoSuchEndpoint { index, count }) => assert_eq!((index, count), (2, 2)),
            other => panic!("expected NoSuchEndpoint, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn from_lazy_channel_is_clone() {
        // connect_lazy does no I/O until the first call.
        let channel = Endpoint::from_static("http://127.0.0.1:2379").connect_lazy();
        let client = Client::from_channel(channel);
        let _other = client.clone();
        let _raw = client.channel();
        assert_eq!(client.endpoints(), vec!["(channel)"]);
        let channel = Endpoint::from_static("http://127.0.0.1:2379").connect_lazy();
        let two = Client::from_channels([("a", channel.clone()), ("b", channel)]).unwrap();
        assert_eq!(two.endpoints(), vec!["a", "b"]);
        assert!(Client::from_channels(Vec::<(String, Channel)>::new()).is_err());
    }

    /// Callers spawn these futures onto tokio's multi-threaded runtime.
    #[tokio::test]
    async fn call_futures_are_send() {
        fn send<T: Send>(_: T) {}
        let c = Client::connect("127.0.0.1:1").await.unwrap();
        send(c.get(Get::key("k")));
        send(c.put(Put::new("k", "v")));
        send(c.txn(Txn::new()));
        send(c.watch(crate::Watch::key("k")));
        send(c.lease_keep_alive(1));
        send(c.member_add(vec![], false));
        send(c.snapshot_to_vec());
        send(c.endpoint_status_all());
    }

    #[tokio::test]
    async fn require_leader_adds_metadata() {
        let client = Client::connect("127.0.0.1:1").await.unwrap();
        assert!(client.request(()).metadata().get("hasleader").is_none());
        let leader = client.clone().with_require_leader(true);
        let req = leader.request(());
        assert_eq!(req.metadata().get("hasleader").unwrap(), "true");
        // The flag is per handle; the failover position is shared.
        leader.fail_over(0);
        assert_eq!(client.current_endpoint(), 0, "one endpoint: stays");
    }

    /// A three-endpoint client whose attempts never touch the network: the
    /// closure answers from a script by endpoint index.
    async fn three() -> Client {
        Client::connect_all(["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"])
            .await
            .unwrap()
    }

    async fn run_script(
        client: &Client,
        kind: Kind,
        answer: impl Fn(usize) -> Result<u32, Error>,
    ) -> (Result<u32, Error>, Vec<usize>) {
        let tried = Mutex::new(Vec::new());
        let result = client
            .run(kind, |index, _channel| {
                tried.lock().unwrap().push(index);
                let answer = answer(index);
                async move { answer }
            })
            .await;
        (result, tried.into_inner().unwrap())
    }

    fn unavailable(msg: &str) -> Error {
        Error::Status(tonic::Status::unavailable(msg))
    }

    #[tokio::test(start_paused = true)]
    async fn read_goes_round_every_endpoint_with_backoff_then_fails() {
        let client = three().await;
        let start = tokio::time::Instant::now();
        let (result, tried) = run_script(&client, Kind::Read, |_| {
            Err(unavailable("etcdserver: leader changed"))
        })
        .await;
        assert_eq!(tried, vec![0, 1, 2, 0, 1, 2, 0, 1, 2]);
        assert_eq!(start.elapsed(), Duration::from_millis(150), "50 + 100 ms");
        match result {
            Err(Error::Status(s)) => assert_eq!(s.message(), "etcdserver: leader changed"),
            other => panic!("expected the last status, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn read_fails_over_to_the_first_member_that_answers() {
        let client = three().await;
        let start = tokio::time::Instant::now();
        let (result, tried) = run_script(&client, Kind::Read, |i| {
            if i == 2 {
                Ok(7)
            } else {
                Err(unavailable("etcdserver: request timed out"))
            }
        })
        .await;
        assert_eq!((result.unwrap(), tried), (7, vec![0, 1, 2]));
        assert_eq!(start.elapsed(), Duration::ZERO, "no backoff within a round");
        assert_eq!(client.current_endpoint(), 2, "the next call starts there");
        // The next call starts at the member that answered.
        let (result, tried) = run_script(&client, Kind::Read, |_| Ok(1)).await;
        assert_eq!((result.unwrap(), tried), (1, vec![2]));
    }

    #[tokio::test(start_paused = true)]
    async fn write_fails_over_only_when_not_sent() {
        let client = three().await;
        let (result, tried) = run_script(&client, Kind::Write, |i| match i {
            0 => Err(unavailable(NO_LEADER)),
            _ => Ok(9),
        })
        .await;
        assert_eq!((result.unwrap(), tried), (9, vec![0, 1]));

        let client = three().await;
        let (result, tried) = run_script(&client, Kind::Write, |_| {
            Err(unavailable("etcdserver: request timed out"))
        })
        .await;
        assert_eq!(tried, vec![0], "an unknown outcome is never repeated");
        match result {
            Err(Error::UnknownOutcome { source }) => {
                assert_eq!(source.message(), "etcdserver: request timed out")
            }
            other => panic!("expected UnknownOutcome, got {other:?}"),
        }
        assert_eq!(
            client.current_endpoint(),
            1,
            "but the next call goes elsewhere"
        );

        // A deadline is the caller's business, not the member's: no move.
        let (result, tried) = run_script(&client, Kind::Write, |_| {
            Err(Error::Status(tonic::Status::deadline_exceeded("late")))
        })
        .await;
        assert!(matches!(result, Err(Error::UnknownOutcome { .. })));
        assert_eq!((tried, client.current_endpoint()), (vec![1], 1));

        // Never sent anywhere: all rounds, then the plain status (not applied).
        let (result, tried) =
            run_script(&client, Kind::Write, |_| Err(unavailable(NO_LEADER))).await;
        assert_eq!(tried.len(), 9);
        assert!(matches!(result, Err(Error::Status(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn answers_are_not_retried() {
        let client = three().await;
        for kind in [Kind::Read, Kind::Write] {
            let (result, tried) = run_script(&client, kind, |_| {
                Err(Error::Status(tonic::Status::invalid_argument("bad")))
            })
            .await;
            assert_eq!(tried, vec![0], "{kind:?}");
            assert_eq!(
                result.unwrap_err().status().map(tonic::Status::code),
                Some(tonic::Code::InvalidArgument)
            );
        }
        assert_eq!(client.current_endpoint(), 0);
    }
}
