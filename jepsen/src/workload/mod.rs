//! Workloads: concurrent clients that record every op they do.
//!
//! * [`register`]: read / write / compare-and-set on a few keys (checked for
//!   linearizability).
//! * [`set`]: create-only inserts of unique keys, one final read.
//! * [`watch`]: watchers of the whole keyspace that resume across faults, and
//!   writers so that they have something to see.
//! * [`lease`]: keys attached to leases that are kept alive, revoked or left
//!   to expire, and read.
//! * [`append`]: multi-key transactions appending to lists (Elle's
//!   list-append), checked for strict serializability.
//!
//! Every client lives in a zone (round-robin) and talks to the cluster through
//! the proxy listeners of that zone, its own zone's member first, with
//! cairn-client's failover. Each op goes through [`Process::invoke`], which
//! takes the times, applies the op timeout and classifies the result:
//! a write whose error could mean "applied" (the client's
//! `Error::UnknownOutcome`, or our timeout) is unknown, any other error is a
//! definite failure, and reads that fail are failures (they changed nothing).

use std::future::Future;
use std::time::Duration;

use anyhow::{bail, Result};
use cairn_client::{Client, Error};
use cairn_tls::client::{tonic_url, ClientTls, Connector};

use crate::auth::Credentials;
use tokio::sync::watch::Receiver;

use crate::history::{Call, Op, Outcome, Record, Recorder, Ret};
use crate::rng::Rng;

pub mod append;
pub mod lease;
pub mod register;
pub mod set;
pub mod watch;

/// The workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Register,
    Set,
    Watch,
    Lease,
    Append,
}

impl Workload {
    pub const ALL: [Workload; 5] = [
        Workload::Register,
        Workload::Set,
        Workload::Watch,
        Workload::Lease,
        Workload::Append,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Register => "register",
            Workload::Set => "set",
            Workload::Watch => "watch",
            Workload::Lease => "lease",
            Workload::Append => "append",
        }
    }

    /// Parses a comma-separated list (`all` for every workload).
    pub fn parse_list(text: &str) -> Result<Vec<Workload>> {
        let mut out = Vec::new();
        for name in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if name == "all" {
                out.extend(Workload::ALL);
                continue;
            }
            match Workload::ALL.into_iter().find(|w| w.name() == name) {
                Some(w) => out.push(w),
                None => bail!(
                    "unknown workload {name:?}; known: {}, all",
                    Workload::ALL.map(Workload::name).join(", ")
                ),
            }
        }
        out.dedup();
        if out.is_empty() {
            bail!("no workload given");
        }
        Ok(out)
    }
}

/// What every workload gets.
#[derive(Clone, Debug)]
pub struct Env {
    pub recorder: Recorder,
    /// Per zone: (zone, the endpoints a client there uses).
    pub zones: Vec<(String, Vec<String>)>,
    /// The clients' TLS, for `https://` endpoints (a TLS cluster).
    pub tls: Option<ClientTls>,
    /// Root's credentials, in a run with auth (`--auth`).
    pub credentials: Option<Credentials>,
    /// Clients per workload.
    pub clients: usize,
    /// How long an op may take before it is recorded as unknown.
    pub op_timeout: Duration,
    /// Pause between a client's ops (limits the history's size).
    pub think: Duration,
    /// Turns true when the workload phase ends.
    pub stop: Receiver<bool>,
    /// Turns true once the nemesis has healed everything after the stop:
    /// the final reads wait for it.
    pub healed: Receiver<bool>,
}

impl Env {
    /// A client for client number `n` (its zone is `n % zones`).
    ///
    /// Its connections send HTTP/2 keep-alive pings every second and give
    /// up on a connection after a second without an answer, as a
    /// production client configures keep-alive (Kubernetes' apiserver does):
    /// a member behind a cut link then shows up as a broken connection
    /// within ~2 s and the client fails over, instead of every request on
    /// it hanging until the op timeout.
    pub async fn client(&self, n: usize) -> Result<(String, Client)> {
        let Some((zone, endpoints)) = self.zones.get(n % self.zones.len().max(1)) else {
            bail!("no zones");
        };
        let mut channels = Vec::new();
        for url in endpoints {
            // tonic gets the http:// form of an https:// URL; the connector
            // does the TLS.
            let (plain, over_tls) = tonic_url(url);
            let endpoint = tonic::transport::Endpoint::from_shared(plain)?
                .connect_timeout(Duration::from_secs(1))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(1))
                .keep_alive_timeout(Duration::from_secs(1))
                .keep_alive_while_idle(true);
            let Some(connector) = Connector::for_url(None, over_tls, self.tls.as_ref()) else {
                bail!("{url}: an https:// endpoint without the clients' TLS");
            };
            let channel = endpoint.connect_with_connector_lazy(connector);
            channels.push((url.clone(), channel));
        }
        let client = Client::from_channels(channels)?.with_require_leader(true);
        let Some(credentials) = &self.credentials else {
            return Ok((zone.clone(), client));
        };
        // Authenticating needs a member that answers; under faults that
        // may take a while (until the workloads stop).
        loop {
            match credentials.apply(client.clone()).await {
                Ok(client) => return Ok((zone.clone(), client)),
                Err(e) if self.stopped() => return Err(e.into()),
                Err(e) => {
                    tracing::debug!(error = %e, "authenticating a client; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Runs `client(env, rng, n)` for each of the `clients` clients at once,
    /// each with its own generator split from `rng`, and waits for them all
    /// (the first error wins).
    pub async fn run_clients<F, Fut>(&self, rng: &mut Rng, client: F) -> Result<()>
    where
        F: Fn(Env, Rng, usize) -> Fut,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..self.clients {
            tasks.spawn(client(self.clone(), rng.split(), n));
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        Ok(())
    }

    /// Whether the workload phase is over.
    pub fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Waits `think` (or until stop).
    pub async fn pause(&mut self) {
        if self.think.is_zero() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(self.think) => {}
            _ = self.stop.wait_for(|s| *s) => {}
        }
    }
}

/// Runs `workloads` until `env.stop`; each returns when it has finished its
/// final reads.
pub async fn run_all(workloads: &[Workload], env: &Env, rng: &mut Rng) -> Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, w) in workloads.iter().enumerate() {
        let env = env.clone();
        let rng = rng.split();
        // Process numbers are disjoint per workload: workload i uses
        // i * 1_000_000 + ..., so a history's processes say whose they are.
        let base = (i as u32) * 1_000_000;
        match w {
            Workload::Register => tasks.spawn(register::run(env, rng, base)),
            Workload::Set => tasks.spawn(set::run(env, rng, base)),
            Workload::Watch => tasks.spawn(self::watch::run(env, rng, base)),
            Workload::Lease => tasks.spawn(lease::run(env, rng, base)),
            Workload::Append => tasks.spawn(append::run(env, rng, base)),
        };
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

/// A logical client: one op in flight at a time; after an unknown outcome it
/// continues under a new process number, as in Jepsen.
#[derive(Debug)]
pub struct Process {
    /// Current process number.
    pub id: u32,
    /// Added to `id` after an unknown outcome (the number of clients of the
    /// workload, so that numbers never collide).
    stride: u32,
    workload: &'static str,
    recorder: Recorder,
    timeout: Duration,
}

/// Whether a call changes state (a write's failure may be unknown).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    Read,
    Write,
}

impl Process {
    pub fn new(id: u32, stride: u32, workload: &'static str, env: &Env) -> Self {
        Process {
            id,
            stride: stride.max(1),
            workload,
            recorder: env.recorder.clone(),
            timeout: env.op_timeout,
        }
    }

    /// Does `f`, records it as `call`, returns what it returned if ok.
    pub async fn invoke<F, Fut>(&mut self, call: Call, effect: Effect, f: F) -> Option<Ret>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Ret, Error>>,
    {
        let id = self.recorder.next_op_id();
        let invoke = self.recorder.now();
        let result = tokio::time::timeout(self.timeout, f()).await;
        let complete = self.recorder.now();
        let (outcome, ret, error) = match result {
            Ok(Ok(ret)) => (Outcome::Ok, Some(ret), None),
            Ok(Err(e)) => (classify(&e, effect), None, Some(e.to_string())),
            Err(_) => (
                match effect {
                    Effect::Read => Outcome::Fail,
                    Effect::Write => Outcome::Unknown,
                },
                None,
                Some(format!("timed out after {:?}", self.timeout)),
            ),
        };
        self.recorder.record(Record::Op(Op {
            id,
            process: self.id,
            workload: self.workload.to_string(),
            invoke,
            complete: (outcome != Outcome::Unknown).then_some(complete),
            outcome,
            call,
            ret: ret.clone(),
            error,
        }));
        if outcome == Outcome::Unknown {
            self.id += self.stride;
        }
        ret
    }
}

/// Fail or unknown, for an error of a call with `effect`.
pub fn classify(e: &Error, effect: Effect) -> Outcome {
    match (effect, e) {
        (Effect::Read, _) => Outcome::Fail,
        (Effect::Write, Error::UnknownOutcome { .. }) => Outcome::Unknown,
        (Effect::Write, _) => Outcome::Fail,
    }
}

/// The header revision of a response (0 if absent).
pub fn header_revision(header: &Option<cairn_client::proto::etcdserverpb::ResponseHeader>) -> i64 {
    header.as_ref().map_or(0, |h| h.revision)
}

/// A linearizable read of every key under `prefix`, as a [`Ret::ReadAll`].
pub async fn read_all(client: &Client, prefix: &str) -> Result<Ret, Error> {
    let resp = client.get(cairn_client::Get::key(prefix).prefix()).await?;
    Ok(Ret::ReadAll {
        keys: resp
            .kvs
            .iter()
            .map(|kv| crate::history::KeyState {
                key: String::from_utf8_lossy(&kv.key).into_owned(),
                version: kv.version,
                mod_revision: kv.mod_revision,
                lease: kv.lease,
            })
            .collect(),
        revision: header_revision(&resp.header),
    })
}

/// A value written by the workloads: a decimal u64.
pub fn parse_value(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_lists_parse() -> Result<()> {
        assert_eq!(
            Workload::parse_list("register,watch")?,
            vec![Workload::Register, Workload::Watch]
        );
        assert_eq!(Workload::parse_list("all")?.len(), 5);
        assert!(Workload::parse_list("").is_err());
        assert!(Workload::parse_list("bank").is_err());
        Ok(())
    }

    #[test]
    fn write_errors_that_may_have_applied_are_unknown() {
        let unknown = Error::UnknownOutcome {
            source: tonic::Status::unavailable("etcdserver: request timed out"),
        };
        let refused = Error::Status(tonic::Status::unavailable("etcdserver: no leader"));
        assert_eq!(classify(&unknown, Effect::Write), Outcome::Unknown);
        assert_eq!(classify(&refused, Effect::Write), Outcome::Fail);
        assert_eq!(classify(&unknown, Effect::Read), Outcome::Fail);
    }
}
