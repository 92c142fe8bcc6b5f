//! The user-space fault proxy: every client and peer connection of a run goes
//! through it, so it can apply latency, partitions and slow links per
//! *directed zone link* without root, iptables or `tc`.
//!
//! Each listener ([`Proxy::add_route`]) forwards to one target (a member's
//! client or peer listener) in a known destination zone; the source zone of a
//! connection is either fixed by the listener ([`Source::Zone`], for the
//! harness's clients) or read from the connection's source IP
//! ([`Source::ByAddress`], for members, which bind their outgoing peer
//! connections to their own loopback address).
//!
//! # Faults mimic a network that drops packets
//!
//! Jepsen partitions with iptables `DROP`: packets vanish, TCP retransmits,
//! connections stay open and hang. The proxy does the same at the byte-stream
//! level. A blocked direction neither drops bytes (that would corrupt HTTP/2
//! framing, which no real network does) nor closes the connection: the proxy
//! just stops forwarding that direction and, once its bounded buffer is full,
//! stops reading, so TCP backpressure builds up on the sender. On heal the held
//! bytes flow again, in order. A connection accepted while its direction is
//! blocked is not connected to its target until the block lifts (like SYN
//! retransmits), so the client sees a connection that hangs.
//!
//! # Pipeline
//!
//! Each direction of a connection is a reader and a writer joined by a queue
//! bounded to [`MAX_IN_FLIGHT`] bytes: the reader stamps every chunk with its
//! delivery time, the writer waits for that time and for the link to be open,
//! then writes. Delays therefore never limit throughput, and a direction is
//! never reordered (delivery times never go backwards).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::rng::Rng;

/// The largest chunk read at once from one side.
const CHUNK: usize = 64 * 1024;
/// Bytes a direction may hold (read, not yet written) before it stops reading:
/// enough to keep a delayed link at full speed, small enough to bound memory.
pub const MAX_IN_FLIGHT: usize = 1024 * 1024;
/// The least a chunk counts against [`MAX_IN_FLIGHT`], so that a stream of tiny
/// chunks cannot hold an unbounded number of allocations.
const MIN_CHARGE: usize = 256;

/// Network delay between zones. A chunk is delivered after the base delay of
/// its link (`same_zone` or `cross_zone`, plus any [`Proxy::slow`] extra) plus
/// a jitter drawn uniformly in `[0, jitter]` from the proxy's seeded [`Rng`].
///
/// tokio's timer has a 1 ms resolution, so sub-millisecond delays round up to
/// 1 ms; a total delay of zero forwards at once, without a timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatencyModel {
    /// One-way delay between processes of the same zone (same datacenter).
    pub same_zone: Duration,
    /// One-way delay between different zones of one region.
    pub cross_zone: Duration,
    /// Upper bound of the random extra delay per chunk, so that timing varies
    /// the way a real network's does, reproducibly from the seed.
    pub jitter: Duration,
}

impl Default for LatencyModel {
    /// "One cloud region": nothing within a zone, 1 ms across zones, up to
    /// 1 ms of jitter.
    fn default() -> Self {
        LatencyModel {
            same_zone: Duration::ZERO,
            cross_zone: Duration::from_millis(1),
            jitter: Duration::from_millis(1),
        }
    }
}

/// How a listener attributes the source zone of the connections it accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Every connection comes from this zone: one listener per (client zone,
    /// member) pair, because all the harness's clients share one address.
    Zone(String),
    /// The zone registered for the connection's source IP
    /// ([`Proxy::register_address`]): members bind their outgoing peer
    /// connections to their own loopback address. A connection from an
    /// unregistered address is closed (and counted), since letting it bypass
    /// the faults would silently weaken the test.
    ByAddress,
}

/// Counters, mostly for tests and the run's log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Listeners currently accepting.
    pub listeners: u64,
    /// Connections accepted since the start.
    pub accepted: u64,
    /// Connections currently open, including those waiting to connect.
    pub open: u64,
    /// Accepted connections waiting for their link to unblock before they
    /// connect to their target (the "SYN retransmit" state).
    pub pending: u64,
    /// Connections closed because their target refused the connection.
    pub connect_failures: u64,
    /// Connections closed because their source address has no zone.
    pub unattributed: u64,
    /// Bytes written to either side since the start.
    pub bytes_forwarded: u64,
    /// Bytes read from one side and not yet written to the other: waiting out
    /// their latency or held by a block.
    pub bytes_held: u64,
    /// Tasks still running (listeners and connections): 0 after shutdown
    /// means nothing leaked.
    pub tasks: u64,
}

/// The fault proxy. Cloning gives another handle to the same proxy; dropping
/// the last handle shuts it down.
#[derive(Clone)]
pub struct Proxy {
    /// Shared with clones; its `Drop` stops everything.
    inner: Arc<Handle>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("zones", &self.zones())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Owned by the [`Proxy`] handles only (the tasks hold [`Shared`]), so that
/// dropping the last handle can stop the tasks.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.stop.send_replace(true);
    }
}

/// State shared by the handles and every task.
struct Shared {
    /// The faults and latency; every change notifies the directions waiting
    /// for a link to open.
    faults: watch::Sender<Faults>,
    /// Set once, by [`Proxy::shutdown`]; every task selects on it.
    stop: watch::Sender<bool>,
    /// Address -> zone, and the zones known for [`Proxy::isolate`].
    directory: Mutex<Directory>,
    /// Split once per connection, so jitter is reproducible from the seed.
    rng: Mutex<Rng>,
    counters: Counters,
}

#[derive(Default)]
struct Faults {
    latency: LatencyModel,
    /// Directed links (from, to) whose bytes stop flowing.
    blocked: HashSet<(String, String)>,
    /// Extra one-way delay per directed link.
    slow: HashMap<(String, String), Duration>,
}

impl Faults {
    fn is_blocked(&self, from: &str, to: &str) -> bool {
        self.blocked.iter().any(|(f, t)| f == from && t == to)
    }

    /// The delay of a link without jitter.
    fn base_delay(&self, from: &str, to: &str) -> Duration {
        let base = if from == to {
            self.latency.same_zone
        } else {
            self.latency.cross_zone
        };
        let extra = self
            .slow
            .iter()
            .find(|((f, t), _)| f == from && t == to)
            .map(|(_, d)| *d);
        base + extra.unwrap_or_default()
    }
}

#[derive(Default)]
struct Directory {
    addresses: HashMap<IpAddr, String>,
    zones: BTreeSet<String>,
}

#[derive(Default)]
struct Counters {
    listeners: AtomicU64,
    accepted: AtomicU64,
    open: AtomicU64,
    pending: AtomicU64,
    connect_failures: AtomicU64,
    unattributed: AtomicU64,
    bytes_forwarded: AtomicU64,
    bytes_held: AtomicU64,
    tasks: AtomicU64,
}

/// Adds `n` to a counter for as long as it lives, so a gauge stays right
/// however a task ends (including being dropped at shutdown).
struct Gauge {
    shared: Arc<Shared>,
    which: fn(&Counters) -> &AtomicU64,
    n: u64,
}

impl Gauge {
    fn new(shared: &Arc<Shared>, which: fn(&Counters) -> &AtomicU64, n: u64) -> Gauge {
        which(&shared.counters).fetch_add(n, Ordering::Relaxed);
        Gauge {
            shared: shared.clone(),
            which,
            n,
        }
    }
}

impl Drop for Gauge {
    fn drop(&mut self) {
        (self.which)(&self.shared.counters).fetch_sub(self.n, Ordering::Relaxed);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Proxy {
    /// A proxy with no listener yet. `seed` drives the jitter.
    pub fn new(latency: LatencyModel, seed: u64) -> Proxy {
        let shared = Shared {
            faults: watch::Sender::new(Faults {
                latency,
                ..Faults::default()
            }),
            stop: watch::Sender::new(false),
            directory: Mutex::new(Directory::default()),
            rng: Mutex::new(Rng::new(seed)),
            counters: Counters::default(),
        };
        Proxy {
            inner: Arc::new(Handle {
                shared: Arc::new(shared),
            }),
        }
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// Connections from `ip` come from `zone` (for [`Source::ByAddress`]).
    /// IPv4-mapped IPv6 addresses are the same as their IPv4 address.
    pub fn register_address(&self, ip: IpAddr, zone: &str) {
        let mut dir = lock(&self.shared().directory);
        dir.addresses.insert(ip.to_canonical(), zone.to_owned());
        dir.zones.insert(zone.to_owned());
    }

    /// Binds `listen` (port 0 picks one) and forwards every connection it
    /// accepts to `target`, a process in zone `to_zone`, attributing its source
    /// zone per `from`. Returns the bound address. The listener runs until
    /// [`Proxy::shutdown`].
    pub async fn add_route(
        &self,
        listen: SocketAddr,
        target: SocketAddr,
        to_zone: &str,
        from: Source,
    ) -> io::Result<SocketAddr> {
        let shared = self.shared();
        if *shared.stop.borrow() {
            return Err(io::Error::other("the proxy is shut down"));
        }
        let listener = TcpListener::bind(listen).await?;
        let bound = listener.local_addr()?;
        {
            let mut dir = lock(&shared.directory);
            dir.zones.insert(to_zone.to_owned());
            if let Source::Zone(z) = &from {
                dir.zones.insert(z.clone());
            }
        }
        let route = Route {
            target,
            to_zone: to_zone.into(),
            from,
        };
        tracing::debug!(%bound, %target, to_zone, "proxy: route added");
        spawn(shared, accept_loop(shared.clone(), listener, route));
        Ok(bound)
    }

    /// One-way block: bytes from `from_zone` to `to_zone` stop flowing (held,
    /// not dropped), and new connections on that link hang.
    pub fn block(&self, from_zone: &str, to_zone: &str) {
        self.modify(|f| {
            f.blocked.insert((from_zone.to_owned(), to_zone.to_owned()));
        });
    }

    /// Blocks both ways between every zone of `a` and every zone of `b`.
    pub fn partition(&self, a: &[&str], b: &[&str]) {
        self.modify(|f| {
            for x in a {
                for y in b.iter().filter(|y| *y != x) {
                    f.blocked.insert((x.to_string(), y.to_string()));
                    f.blocked.insert((y.to_string(), x.to_string()));
                }
            }
        });
    }

    /// Blocks both ways between `zone` and every other zone the proxy knows
    /// (registered addresses, fixed sources and route destinations).
    pub fn isolate(&self, zone: &str) {
        let others: Vec<String> = self.zones().into_iter().filter(|z| z != zone).collect();
        let others: Vec<&str> = others.iter().map(String::as_str).collect();
        self.partition(&[zone], &others);
    }

    /// Adds `extra` one-way delay to the link `from_zone` -> `to_zone`
    /// (replacing any earlier extra for that link).
    pub fn slow(&self, from_zone: &str, to_zone: &str, extra: Duration) {
        self.modify(|f| {
            f.slow
                .insert((from_zone.to_owned(), to_zone.to_owned()), extra);
        });
    }

    /// Removes every block and every slow link; held bytes and pending
    /// connections proceed, in order. The latency model stays.
    pub fn heal(&self) {
        self.modify(|f| {
            f.blocked.clear();
            f.slow.clear();
        });
    }

    /// Replaces the latency model, for chunks read from now on.
    pub fn set_latency(&self, latency: LatencyModel) {
        self.modify(|f| f.latency = latency);
    }

    /// The zones the proxy knows, sorted.
    pub fn zones(&self) -> Vec<String> {
        lock(&self.shared().directory)
            .zones
            .iter()
            .cloned()
            .collect()
    }

    /// Stops every listener and closes every connection (their tasks end).
    /// [`Proxy::add_route`] fails afterwards.
    pub fn shutdown(&self) {
        self.shared().stop.send_replace(true);
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.shared().counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ProxyStats {
            listeners: get(&c.listeners),
            accepted: get(&c.accepted),
            open: get(&c.open),
            pending: get(&c.pending),
            connect_failures: get(&c.connect_failures),
            unattributed: get(&c.unattributed),
            bytes_forwarded: get(&c.bytes_forwarded),
            bytes_held: get(&c.bytes_held),
            tasks: get(&c.tasks),
        }
    }

    fn modify(&self, change: impl FnOnce(&mut Faults)) {
        self.shared().faults.send_modify(change);
    }
}

impl Shared {
    /// The delay of the next chunk on a link: base + slow extra + jitter.
    fn delay(&self, from: &str, to: &str, rng: &mut Rng) -> Duration {
        let (base, jitter) = {
            let f = self.faults.borrow();
            (f.base_delay(from, to), f.latency.jitter)
        };
        if jitter.is_zero() {
            return base;
        }
        let max = u64::try_from(jitter.as_nanos()).unwrap_or(u64::MAX);
        base + Duration::from_nanos(rng.between(0, max))
    }

    /// Waits until the link `from` -> `to` is not blocked.
    async fn wait_open(&self, from: &str, to: &str) -> io::Result<()> {
        let mut rx = self.faults.subscribe();
        rx.wait_for(|f| !f.is_blocked(from, to))
            .await
            .map(drop)
            .map_err(|_| io::Error::other("the proxy is gone"))
    }
}

/// Runs `task` until it ends or the proxy shuts down (then drops it, closing
/// its sockets), counted in [`ProxyStats::tasks`].
fn spawn(shared: &Arc<Shared>, task: impl Future<Output = ()> + Send + 'static) {
    let mut stop = shared.stop.subscribe();
    let gauge = Gauge::new(shared, |c| &c.tasks, 1);
    tokio::spawn(async move {
        let _gauge = gauge;
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => {}
            () = task => {}
        }
    });
}

/// What a listener forwards to.
struct Route {
    target: SocketAddr,
    to_zone: Arc<str>,
    from: Source,
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, route: Route) {
    let _listening = Gauge::new(&shared, |c| &c.listeners, 1);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // ECONNABORTED and the like are transient; EMFILE is not, and
                // must not spin.
                tracing::debug!(error = %e, "proxy: accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        shared.counters.accepted.fetch_add(1, Ordering::Relaxed);
        let from = match &route.from {
            Source::Zone(z) => Some(z.clone()),
            Source::ByAddress => lock(&shared.directory)
                .addresses
                .get(&peer.ip().to_canonical())
                .cloned(),
        };
        let Some(from) = from else {
            tracing::warn!(%peer, target = %route.target, "proxy: connection from an unregistered address, closed");
            shared.counters.unattributed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let rng = lock(&shared.rng).split();
        let conn = connection(
            shared.clone(),
            stream,
            from.into(),
            route.to_zone.clone(),
            route.target,
            rng,
        );
        spawn(&shared, conn);
    }
}

async fn connection(
    shared: Arc<Shared>,
    client: TcpStream,
    from: Arc<str>,
    to: Arc<str>,
    target: SocketAddr,
    mut rng: Rng,
) {
    let _open = Gauge::new(&shared, |c| &c.open, 1);
    let peer = client.peer_addr().ok();
    {
        // Like SYN retransmits: do not connect while the way there is blocked.
        let _pending = Gauge::new(&shared, |c| &c.pending, 1);
        if shared.wait_open(&from, &to).await.is_err() {
            return;
        }
    }
    let server = match TcpStream::connect(target).await {
        Ok(server) => server,
        Err(e) => {
            shared
                .counters
                .connect_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(?peer, %target, error = %e, "proxy: target refused, closing");
            return; // dropping `client` closes it
        }
    };
    // Nagle would add its own delays on top of the model's.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    tracing::debug!(?peer, %target, %from, %to, "proxy: connection open");
    let (client_rd, client_wr) = client.into_split();
    let (server_rd, server_wr) = server.into_split();
    let there = direction(
        &shared,
        client_rd,
        server_wr,
        from.clone(),
        to.clone(),
        rng.split(),
    );
    let back = direction(
        &shared,
        server_rd,
        client_wr,
        to.clone(),
        from.clone(),
        rng.split(),
    );
    let result = tokio::try_join!(there, back);
    tracing::debug!(?peer, %target, %from, %to, ?result, "proxy: connection closed");
}

/// What a direction's reader hands its writer.
enum Item {
    Data {
        bytes: Vec<u8>,
        at: Instant,
        /// Returns the chunk's share of [`MAX_IN_FLIGHT`] when dropped.
        _budget: OwnedSemaphorePermit,
        /// Counts the chunk in [`ProxyStats::bytes_held`] while it lives.
        _held: Gauge,
    },
    /// The reader saw EOF (`None`) or an error: propagated in order, after the
    /// data before it.
    End {
        at: Instant,
        error: Option<io::Error>,
    },
}

/// Forwards `rd` to `wr` on the link `from` -> `to` until EOF (then shuts
/// down `wr`'s write half) or an error (then fails, closing the connection).
async fn direction(
    shared: &Arc<Shared>,
    mut rd: OwnedReadHalf,
    mut wr: OwnedWriteHalf,
    from: Arc<str>,
    to: Arc<str>,
    mut rng: Rng,
) -> io::Result<()> {
    let budget = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let (tx, mut rx) = mpsc::unbounded_channel::<Item>();
    let reader = async {
        let tx = tx; // dropped when the reader ends
        let mut buf = vec![0u8; CHUNK];
        let mut last = Instant::now();
        loop {
            let mut permit = budget
                .clone()
                .acquire_many_owned(CHUNK as u32)
                .await
                .map_err(io::Error::other)?;
            let read = rd.read(&mut buf).await;
            // Never earlier than the chunk before: no reordering in time.
            let at = (Instant::now() + shared.delay(&from, &to, &mut rng)).max(last);
            last = at;
            let item = match read {
                Ok(0) => Item::End { at, error: None },
                Ok(n) => {
                    // Keep only this chunk's charge; the rest returns on drop.
                    let kept = permit.split(n.clamp(MIN_CHARGE, CHUNK));
                    Item::Data {
                        bytes: buf[..n].to_vec(),
                        at,
                        _budget: kept.unwrap_or(permit),
                        _held: Gauge::new(shared, |c| &c.bytes_held, n as u64),
                    }
                }
                Err(e) => Item::End { at, error: Some(e) },
            };
            let end = matches!(item, Item::End { .. });
            if tx.send(item).is_err() || end {
                return Ok::<(), io::Error>(());
            }
        }
    };
    let writer = async {
        while let Some(item) = rx.recv().await {
            let at = match &item {
                Item::Data { at, .. } | Item::End { at, .. } => *at,
            };
            if at > Instant::now() {
                tokio::time::sleep_until(at).await;
            }
            shared.wait_open(&from, &to).await?;
            match item {
                Item::Data {
                    bytes,
                    _budget,
                    _held,
                    ..
                } => {
                    wr.write_all(&bytes).await?;
                    shared
                        .counters
                        .bytes_forwarded
                        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                }
                Item::End { error: None, .. } => return wr.shutdown().await,
                Item::End { error: Some(e), .. } => return Err(e),
            }
        }
        Ok(())
    };
    tokio::try_join!(reader, writer).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::{bail, ensure, Context, Result};
    use tokio::net::TcpSocket;
    use tokio::time::timeout;

    const MS: Duration = Duration::from_millis(1);
    /// How long "nothing arrives" is watched for.
    const QUIET: Duration = Duration::from_millis(200);
    /// The deadline of anything that should happen.
    const DEADLINE: Duration = Duration::from_secs(10);

    fn latency(same_zone: u64, cross_zone: u64, jitter: u64) -> LatencyModel {
        LatencyModel {
            same_zone: MS * same_zone as u32,
            cross_zone: MS * cross_zone as u32,
            jitter: MS * jitter as u32,
        }
    }

    fn any_port(ip: &str) -> Result<SocketAddr> {
        Ok(SocketAddr::new(ip.parse()?, 0))
    }

    async fn within<T>(what: &str, fut: impl Future<Output = io::Result<T>>) -> Result<T> {
        timeout(DEADLINE, fut)
            .await
            .with_context(|| format!("{what}: timed out"))?
            .with_context(|| what.to_owned())
    }

    /// An echo server; counts the connections it accepted.
    async fn echo_server() -> Result<(SocketAddr, Arc<AtomicU64>)> {
        let listener = TcpListener::bind(any_port("127.0.0.1")?).await?;
        let addr = listener.local_addr()?;
        let accepted = Arc::new(AtomicU64::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let (mut rd, mut wr) = stream.split();
                    let _ = tokio::io::copy(&mut rd, &mut wr).await;
                });
            }
        });
        Ok((addr, accepted))
    }

    async fn connect_from(ip: &str, to: SocketAddr) -> Result<TcpStream> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(any_port(ip)?)?;
        within("connect", socket.connect(to)).await
    }

    /// Sends `msg`, reads it back, returns how long that took.
    async fn round_trip(stream: &mut TcpStream, msg: &[u8]) -> Result<Duration> {
        let start = Instant::now();
        within("write", stream.write_all(msg)).await?;
        let mut back = vec![0; msg.len()];
        within("read", stream.read_exact(&mut back)).await?;
        ensure!(back == msg, "echo differs");
        Ok(start.elapsed())
    }

    /// Nothing arrives on `stream` for [`QUIET`].
    async fn assert_silent(stream: &mut TcpStream) -> Result<()> {
        match timeout(QUIET, stream.read(&mut [0u8; 64])).await {
            Err(_elapsed) => Ok(()),
            Ok(r) => bail!("expected silence, got {r:?}"),
        }
    }

    /// `stream` is closed by the other side (EOF or reset) before the deadline.
    async fn assert_closed(stream: &mut TcpStream) -> Result<()> {
        let mut buf = [0u8; 4096];
        loop {
            match timeout(DEADLINE, stream.read(&mut buf)).await {
                Err(_) => bail!("connection still open"),
                Ok(Ok(0) | Err(_)) => return Ok(()),
                Ok(Ok(_)) => {}
            }
        }
    }

    async fn eventually(what: &str, mut cond: impl FnMut() -> bool) -> Result<()> {
        let deadline = Instant::now() + DEADLINE;
        while !cond() {
            ensure!(Instant::now() < deadline, "never happened: {what}");
            tokio::time::sleep(5 * MS).await;
        }
        Ok(())
    }

    #[tokio::test]
    async fn forwards_a_large_payload_both_ways_intact_with_jitter() -> Result<()> {
        let proxy = Proxy::new(latency(0, 1, 2), 7);
        let (echo, _) = echo_server().await?;
        let listen = proxy
            .add_route(
                any_port("127.0.0.1")?,
                echo,
                "az-b",
                Source::Zone("az-a".into()),
            )
            .await?;
        let mut client = within("connect", TcpStream::connect(listen)).await?;
        let payload: Vec<u8> = (0..4 << 20)
            .map(|i: u32| (i.wrapping_mul(31) % 251) as u8)
            .collect();
        let (mut rd, mut wr) = client.split();
        let mut back = vec![0u8; payload.len()];
        let (sent, received) = tokio::join!(
            within("write", wr.write_all(&payload)),
            within("read", rd.read_exact(&mut back))
        );
        sent?;
        received?;
        ensure!(back == payload, "payload corrupted or reordered");
        let total = 2 * payload.len() as u64;
        eventually("all bytes counted", || {
            proxy.stats().bytes_forwarded == total
        })
        .await?;
        ensure!(proxy.stats().bytes_held == 0);
        drop(client);
        eventually("connection closed", || proxy.stats().open == 0).await
    }

    #[tokio::test]
    async fn attributes_the_source_zone_by_address() -> Result<()> {
        let proxy = Proxy::new(latency(0, 30, 0), 1);
        proxy.register_address("127.0.0.21".parse()?, "az-b");
        proxy.register_address("127.0.0.22".parse()?, "az-a");
        let (echo, _) = echo_server().await?;
        let listen = proxy
            .add_route(any_port("127.0.0.1")?, echo, "az-a", Source::ByAddress)
            .await?;
        // az-b -> az-a is cross-zone: 30 ms each way.
        let mut from_b = connect_from("127.0.0.21", listen).await?;
        let rtt = round_trip(&mut from_b, b"ping").await?;
        ensure!(rtt >= 60 * MS, "cross-zone round trip took only {rtt:?}");
        ensure!(proxy
            .shared()
            .faults
            .borrow()
            .base_delay("az-a", "az-a")
            .is_zero());
        // Blocking az-b -> az-a hangs new connections from .21 only.
        proxy.block("az-b", "az-a");
        let mut from_a = connect_from("127.0.0.22", listen).await?;
        round_trip(&mut from_a, b"same zone").await?;
        let mut from_b2 = connect_from("127.0.0.21", listen).await?;
        from_b2.write_all(b"held").await?;
        assert_silent(&mut from_b2).await?;
        ensure!(proxy.stats().pending == 1, "{:?}", proxy.stats());
        // An unregistered address is refused.
        let mut stranger = connect_from("127.0.0.23", listen).await?;
        assert_closed(&mut stranger).await?;
        ensure!(proxy.stats().unattributed == 1);
        Ok(())
    }

    #[tokio::test]
    async fn a_one_way_block_holds_bytes_until_heal() -> Result<()> {
        let proxy = Proxy::new(latency(0, 0, 0), 2);
        let target = TcpListener::bind(any_port("127.0.0.1")?).await?;
        let listen = proxy
            .add_route(
                any_port("127.0.0.1")?,
                target.local_addr()?,
                "az-b",
                Source::Zone("az-a".into()),
            )
            .await?;
        let mut client = within("connect", TcpStream::connect(listen)).await?;
        let (mut server, _) = within("accept", target.accept()).await?;
        proxy.block("az-a", "az-b");
        let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        within("write", client.write_all(&payload)).await?;
        assert_silent(&mut server).await?;
        eventually("bytes held", || {
            proxy.stats().bytes_held == payload.len() as u64
        })
        .await?;
        // The other direction still flows.
        within("reply", server.write_all(b"pong")).await?;
        let mut pong = [0u8; 4];
        within("read reply", client.read_exact(&mut pong)).await?;
        ensure!(&pong == b"pong");
        proxy.heal();
        let mut got = vec![0u8; payload.len()];
        within("read held", server.read_exact(&mut got)).await?;
        ensure!(got == payload, "held bytes corrupted");
        eventually("nothing held", || proxy.stats().bytes_held == 0).await?;
        // EOF propagates.
        drop(client);
        assert_closed(&mut server).await
    }

    #[tokio::test]
    async fn a_new_connection_during_a_partition_hangs_until_heal() -> Result<()> {
        let proxy = Proxy::new(LatencyModel::default(), 3);
        let (echo, accepted) = echo_server().await?;
        let listen = proxy
            .add_route(
                any_port("127.0.0.1")?,
                echo,
                "az-b",
                Source::Zone("az-a".into()),
            )
            .await?;
        proxy.partition(&["az-a"], &["az-b", "az-c"]);
        let mut client = within("connect", TcpStream::connect(listen)).await?;
        within("write", client.write_all(b"hello")).await?;
        assert_silent(&mut client).await?;
        ensure!(
            accepted.load(Ordering::SeqCst) == 0,
            "connected through a partition"
        );
        ensure!(proxy.stats().pending == 1);
        proxy.heal();
        let mut back = [0u8; 5];
        within("read", client.read_exact(&mut back)).await?;
        ensure!(&back == b"hello");
        ensure!(accepted.load(Ordering::SeqCst) == 1 && proxy.stats().pending == 0);
        Ok(())
    }

    #[tokio::test]
    async fn isolate_blocks_only_the_links_of_that_zone() -> Result<()> {
        let proxy = Proxy::new(latency(0, 0, 0), 4);
        let (echo, _) = echo_server().await?;
        let mut listen = HashMap::new();
        for (from, to) in [
            ("az-a", "az-b"),
            ("az-b", "az-a"),
            ("az-b", "az-c"),
            ("az-c", "az-b"),
        ] {
            let addr = proxy
                .add_route(any_port("127.0.0.1")?, echo, to, Source::Zone(from.into()))
                .await?;
            listen.insert((from, to), addr);
        }
        ensure!(proxy.zones() == ["az-a", "az-b", "az-c"]);
        let mut before = within("connect", TcpStream::connect(listen[&("az-a", "az-b")])).await?;
        round_trip(&mut before, b"up").await?;
        proxy.isolate("az-a");
        for link in [("az-b", "az-c"), ("az-c", "az-b")] {
            let mut s = within("connect", TcpStream::connect(listen[&link])).await?;
            round_trip(&mut s, b"still up").await?;
        }
        let mut a_to_b = within("connect", TcpStream::connect(listen[&("az-a", "az-b")])).await?;
        let mut b_to_a = within("connect", TcpStream::connect(listen[&("az-b", "az-a")])).await?;
        for s in [&mut before, &mut a_to_b, &mut b_to_a] {
            within("write", s.write_all(b"cut")).await?;
        }
        let (x, y, z) = tokio::join!(
            assert_silent(&mut before),
            assert_silent(&mut a_to_b),
            assert_silent(&mut b_to_a)
        );
        x?;
        y?;
        z?;
        proxy.heal();
        for s in [&mut before, &mut a_to_b, &mut b_to_a] {
            let mut back = [0u8; 3];
            within("read", s.read_exact(&mut back)).await?;
            ensure!(&back == b"cut");
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_slow_link_adds_latency_only_on_that_link() -> Result<()> {
        let proxy = Proxy::new(latency(0, 0, 0), 5);
        let (echo, _) = echo_server().await?;
        let listen = proxy
            .add_route(
                any_port("127.0.0.1")?,
                echo,
                "az-b",
                Source::Zone("az-a".into()),
            )
            .await?;
        proxy.slow("az-a", "az-b", 50 * MS);
        {
            let faults = proxy.shared().faults.borrow();
            ensure!(faults.base_delay("az-a", "az-b") == 50 * MS);
            for (from, to) in [
                ("az-b", "az-a"),
                ("az-c", "az-b"),
                ("az-a", "az-c"),
                ("az-a", "az-a"),
            ] {
                ensure!(
                    faults.base_delay(from, to).is_zero(),
                    "{from} -> {to} slowed"
                );
            }
        }
        let mut client = within("connect", TcpStream::connect(listen)).await?;
        for _ in 0..2 {
            let rtt = round_trip(&mut client, b"slow").await?;
            ensure!(rtt >= 50 * MS, "slow link round trip took only {rtt:?}");
        }
        proxy.heal();
        ensure!(proxy
            .shared()
            .faults
            .borrow()
            .base_delay("az-a", "az-b")
            .is_zero());
        round_trip(&mut client, b"fast again").await?;
        Ok(())
    }

    #[test]
    fn jitter_is_reproducible_from_the_seed_and_bounded() {
        let draw = |seed| {
            let proxy = Proxy::new(latency(0, 10, 5), seed);
            let mut rng = lock(&proxy.shared().rng).split();
            (0..50)
                .map(|_| proxy.shared().delay("az-a", "az-b", &mut rng))
                .collect::<Vec<_>>()
        };
        let (a, b) = (draw(9), draw(9));
        assert_eq!(a, b);
        assert!(a.iter().all(|d| (10 * MS..=15 * MS).contains(d)));
        assert_ne!(a, draw(10));
    }

    #[tokio::test]
    async fn shutdown_closes_everything() -> Result<()> {
        let proxy = Proxy::new(latency(0, 1, 1), 6);
        let (echo, _) = echo_server().await?;
        let open_route = proxy
            .add_route(
                any_port("127.0.0.1")?,
                echo,
                "az-b",
                Source::Zone("az-a".into()),
            )
            .await?;
        let cut_route = proxy
            .add_route(
                any_port("127.0.0.1")?,
                echo,
                "az-b",
                Source::Zone("az-c".into()),
            )
            .await?;
        let mut active = within("connect", TcpStream::connect(open_route)).await?;
        round_trip(&mut active, b"hi").await?;
        proxy.block("az-c", "az-b");
        let mut pending = within("connect", TcpStream::connect(cut_route)).await?;
        eventually("pending", || proxy.stats().pending == 1).await?;
        proxy.shutdown();
        assert_closed(&mut active).await?;
        assert_closed(&mut pending).await?;
        eventually("all tasks ended", || proxy.stats().tasks == 0).await?;
        let stats = proxy.stats();
        ensure!(
            stats.listeners == 0 && stats.open == 0 && stats.pending == 0,
            "{stats:?}"
        );
        ensure!(
            TcpStream::connect(open_route).await.is_err(),
            "listener still accepting"
        );
        ensure!(proxy
            .add_route(any_port("127.0.0.1")?, echo, "az-b", Source::ByAddress)
            .await
            .is_err());
        Ok(())
    }

    #[tokio::test]
    async fn a_refused_target_closes_the_client_connection() -> Result<()> {
        let proxy = Proxy::new(LatencyModel::default(), 8);
        let dead = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?; // closed at once
        let listen = proxy
            .add_route(
                any_port("127.0.0.1")?,
                dead,
                "az-b",
                Source::Zone("az-a".into()),
            )
            .await?;
        let mut client = within("connect", TcpStream::connect(listen)).await?;
        assert_closed(&mut client).await?;
        eventually("failure counted", || proxy.stats().connect_failures == 1).await?;
        eventually("connection gone", || proxy.stats().open == 0).await
    }
}
