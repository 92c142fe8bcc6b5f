//! The workloads and what they share: connections, the closed-loop driver,
//! report assembly, watch streams.

mod kube;
mod kv;
mod lease;
mod watch;
mod watch_get;
mod watch_latency;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cli::{Cli, Command, Global};
use crate::conn::{client_tls, error_text, needs_new_token, Chan, Conn};
use crate::limiter::Limiter;
use crate::progress::Progress;
use crate::report::{Clock, Recorder, Report, Stats};
use crate::{lock, Error};
use cairn_proto::etcdserverpb::{
    watch_client::WatchClient, watch_request::RequestUnion, WatchCreateRequest, WatchRequest,
    WatchResponse,
};
use cairn_tls::client::ClientTls;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Runs the command line's workload.
pub(crate) async fn run(cli: &Cli) -> Result<Vec<Report>, Error> {
    let env = Env::connect(&cli.global).await?;
    match &cli.command {
        Command::Put(a) => kv::put(&env, a).await,
        Command::Range(a) => kv::range(&env, a).await,
        Command::TxnPut(a) => kv::txn_put(&env, a).await,
        Command::TxnMixed(a) => kv::txn_mixed(&env, a).await,
        Command::Watch(a) => watch::watch(&env, a).await,
        Command::WatchLatency(a) => watch_latency::watch_latency(&env, a).await,
        Command::WatchGet(a) => watch_get::watch_get(&env, a).await,
        Command::LeaseKeepalive(a) => lease::lease_keepalive(&env, a).await,
        Command::Kube(a) => kube::kube(&env, a).await,
    }
}

/// The connections and settings of a run.
pub(crate) struct Env {
    global: Global,
    /// The connections' TLS (`--cacert`/`--cert`/`--key`), if any.
    tls: Option<ClientTls>,
    conns: Vec<Arc<Conn>>,
    clock: Option<Clock>,
}

impl Env {
    /// Opens `--conns` connections (etcd's `mustCreateClients`).
    async fn connect(global: &Global) -> Result<Env, Error> {
        if global.conns == 0 {
            return Err(Error::new("expected positive --conns, got (0)"));
        }
        if global.clients == 0 {
            return Err(Error::new("expected positive --clients, got (0)"));
        }
        let tls = global.tls_options().as_ref().map(client_tls).transpose()?;
        let mut conns = Vec::with_capacity(global.conns);
        for _ in 0..global.conns {
            conns.push(Arc::new(
                Conn::connect(
                    &global.endpoints,
                    global.dial_timeout,
                    tls.as_ref(),
                    global.user.as_ref(),
                )
                .await?,
            ));
        }
        Ok(Env {
            global: global.clone(),
            tls,
            conns,
            clock: global.sample.then(Clock::now),
        })
    }

    /// How many clients run.
    pub(crate) fn clients(&self) -> usize {
        self.global.clients
    }

    /// Client i's connection: i % conns.
    pub(crate) fn client_conn(&self, client: usize) -> Arc<Conn> {
        Arc::clone(&self.conns[client % self.conns.len()])
    }

    /// One more connection of its own (etcd's `mustCreateConn`, for the
    /// puts of watch-latency and the gets of watch-get).
    pub(crate) async fn extra_conn(&self) -> Result<Arc<Conn>, Error> {
        Ok(Arc::new(
            Conn::connect(
                &self.global.endpoints,
                self.global.dial_timeout,
                self.tls.as_ref(),
                self.global.user.as_ref(),
            )
            .await?,
        ))
    }

    /// An empty recorder (keeping start times with `--sample`).
    pub(crate) fn recorder(&self) -> Recorder {
        Recorder::new(self.clock.is_some())
    }

    /// A finished report.
    pub(crate) fn report(
        &self,
        workload: &str,
        took: Duration,
        recorders: Vec<Recorder>,
        text_prefix: impl Into<String>,
        text_suffix: impl Into<String>,
    ) -> Report {
        Report {
            workload: workload.to_string(),
            endpoints: self.global.endpoints.clone(),
            clients: self.global.clients,
            conns: self.global.conns,
            stats: Stats::build_with_clock(took, recorders, self.clock.as_ref()),
            text_prefix: text_prefix.into(),
            text_suffix: text_suffix.into(),
        }
    }
}

/// A task that panicked or was cancelled.
pub(crate) fn join_error(e: tokio::task::JoinError) -> Error {
    Error::new(format!("benchmark task failed: {e}"))
}

/// A key index as Go's `int64`.
pub(crate) fn index(i: usize) -> i64 {
    i64::try_from(i).unwrap_or(i64::MAX)
}

/// etcd's closed loop: `total` requests made in order (`make(i)` -> (report
/// kind, request)) and handed to `--clients` tasks, each taking the next
/// request, waiting for the rate limit, sending it on its connection
/// (`call(client, channel, request)`), recording its latency or error under
/// its kind, and taking the next. A request refused for its auth token is
/// sent again once with a new one (clientv3's retry; the latency recorded
/// covers both). Returns the wall time and, per kind, every client's
/// recorder.
///
/// etcd's tool hands the requests out through a Go channel, which a waiting
/// client takes from at once; here a client makes its next request itself,
/// under a lock held only for that ([`Requests`]), in the same order. A
/// queue behind an async lock held across its `recv` handed requests out
/// one task wake-up at a time: under 1,000 clients only ~150-300 were in
/// flight, the rest waiting inside the tool, where no latency is counted.
pub(crate) async fn closed_loop<Req, Make, Call, Fut>(
    env: &Env,
    total: usize,
    kinds: usize,
    limiter: Limiter,
    progress: &Progress,
    make: Make,
    call: Call,
) -> Result<(Duration, Vec<Vec<Recorder>>), Error>
where
    Req: Clone + Send + 'static,
    Make: FnMut(usize) -> Result<(usize, Req), Error> + Send + 'static,
    Call: Fn(usize, Chan, Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let clients = env.clients();
    let requests = Arc::new(Mutex::new(Requests::new(total, make)));
    let call = Arc::new(call);
    let limiter = Arc::new(limiter);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for client in 0..clients {
        let conn = env.client_conn(client);
        let requests = Arc::clone(&requests);
        let call = Arc::clone(&call);
        let limiter = Arc::clone(&limiter);
        let progress = progress.clone();
        let mut recorders: Vec<Recorder> = (0..kinds).map(|_| env.recorder()).collect();
        tasks.push(tokio::spawn(async move {
            loop {
                let next = lock(&requests).next();
                let Some((kind, request)) = next else {
                    break;
                };
                limiter.wait().await;
                let started = Instant::now();
                let token = conn.token();
                let mut outcome = call(client, conn.pick(), request.clone()).await;
                if let Err(error) = &outcome {
                    let renew = needs_new_token(error)
                        && (conn.has_credentials() || error != "etcdserver: user name is empty");
                    if renew && conn.renew_token(token.as_ref()).await.is_ok() {
                        outcome = call(client, conn.pick(), request).await;
                    }
                }
                let ended = Instant::now();
                if let Some(recorder) = recorders.get_mut(kind) {
                    recorder.record(started, ended, outcome);
                }
                progress.inc();
            }
            recorders
        }));
    }

    let mut by_kind: Vec<Vec<Recorder>> = (0..kinds).map(|_| Vec::new()).collect();
    for task in tasks {
        let recorders = task.await.map_err(join_error)?;
        for (kind, recorder) in recorders.into_iter().enumerate() {
            by_kind[kind].push(recorder);
        }
    }
    let took = start.elapsed();
    if let Some(e) = lock(&requests).failed.take() {
        return Err(e);
    }
    progress.finish();
    Ok((took, by_kind))
}

/// The requests of a closed loop still to be made, in order.
struct Requests<Make> {
    /// The index of the next request.
    next: usize,
    /// How many requests the run makes.
    total: usize,
    /// Makes request `i` (its report kind and the request).
    make: Make,
    /// Why making a request failed: the run stops and returns it.
    failed: Option<Error>,
}

impl<Make> Requests<Make> {
    fn new(total: usize, make: Make) -> Self {
        Requests {
            next: 0,
            total,
            make,
            failed: None,
        }
    }

    /// The next request, or `None` when all are made (or making one failed).
    fn next<Req>(&mut self) -> Option<(usize, Req)>
    where
        Make: FnMut(usize) -> Result<(usize, Req), Error>,
    {
        if self.next >= self.total {
            return None;
        }
        let i = self.next;
        self.next += 1;
        match (self.make)(i) {
            Ok(item) => Some(item),
            Err(e) => {
                self.failed = Some(e);
                self.next = self.total;
                None
            }
        }
    }
}

/// A unary call's outcome as the report wants it.
pub(crate) fn outcome<T>(result: Result<T, tonic::Status>) -> Result<(), String> {
    result.map(|_| ()).map_err(|s| error_text(&s))
}

/// A watch create request.
pub(crate) fn create_request(key: Vec<u8>, start_revision: i64, prev_kv: bool) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key,
            start_revision,
            prev_kv,
            ..WatchCreateRequest::default()
        })),
    }
}

/// One raw gRPC watch stream.
pub(crate) struct WatchStream {
    requests: mpsc::Sender<WatchRequest>,
    responses: tonic::Streaming<WatchResponse>,
}

impl WatchStream {
    /// Opens a stream on `channel` with `first` as its first request (etcd
    /// sends a stream's response headers with its first message, so the
    /// request must be on its way before the call can return). `depth` is
    /// how many requests may wait to be sent.
    pub(crate) async fn open(
        channel: Chan,
        first: WatchRequest,
        depth: usize,
    ) -> Result<WatchStream, Error> {
        let (requests, queue) = mpsc::channel(depth.max(1));
        requests
            .send(first)
            .await
            .map_err(|_| Error::new("watch request queue closed"))?;
        let responses = WatchClient::new(channel)
            .watch(ReceiverStream::new(queue))
            .await
            .map_err(|s| Error::new(format!("opening a watch stream: {}", error_text(&s))))?
            .into_inner();
        Ok(WatchStream {
            requests,
            responses,
        })
    }

    /// Sends a request on the stream.
    pub(crate) async fn send(&self, request: WatchRequest) -> Result<(), Error> {
        self.requests
            .send(request)
            .await
            .map_err(|_| Error::new("watch stream closed"))
    }

    /// The next response; a canceled watch or the end of the stream is an
    /// error.
    pub(crate) async fn next(&mut self) -> Result<WatchResponse, Error> {
        match self.responses.message().await {
            Ok(Some(response)) if response.canceled => Err(Error::new(format!(
                "watch canceled: {}",
                if response.cancel_reason.is_empty() {
                    format!("compacted at {}", response.compact_revision)
                } else {
                    response.cancel_reason
                }
            ))),
            Ok(Some(response)) => Ok(response),
            Ok(None) => Err(Error::new("watch stream ended")),
            Err(s) => Err(Error::new(format!("watch stream: {}", error_text(&s)))),
        }
    }

    /// Waits for the response that says a watch was created and returns its
    /// id (nothing else can arrive first in the workloads that use it: no
    /// key they watch changes before every watch is created).
    pub(crate) async fn created(&mut self) -> Result<i64, Error> {
        loop {
            let response = self.next().await?;
            if response.created {
                return Ok(response.watch_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_made_in_order_up_to_the_total() {
        let mut made = Vec::new();
        let mut requests = Requests::new(3, |i| Ok::<_, Error>((i % 2, i * 10)));
        while let Some(item) = requests.next() {
            made.push(item);
        }
        assert_eq!(made, vec![(0, 0), (1, 10), (0, 20)]);
        assert!(requests.next::<usize>().is_none());
        assert!(requests.failed.is_none());
    }

    #[test]
    fn a_request_that_cannot_be_made_ends_the_run_with_its_error() {
        let mut requests = Requests::new(5, |i| {
            if i == 1 {
                Err(Error::new("no key"))
            } else {
                Ok((0, i))
            }
        });
        assert_eq!(requests.next(), Some((0, 0)));
        assert_eq!(requests.next::<usize>(), None);
        assert_eq!(requests.next::<usize>(), None);
        assert_eq!(
            requests.failed.map(|e| e.to_string()),
            Some("no key".to_string())
        );
    }
}
