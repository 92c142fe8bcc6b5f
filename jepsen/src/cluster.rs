//! The cluster under test: `cairn` processes, one per zone, each on its own
//! loopback address, reachable only through the fault [`Proxy`].
//!
//! # Addresses
//!
//! Member `i` (name `m{i+1}`, zone `zones[i % zones]`) listens on its own
//! loopback IP `127.0.0.{11+i}` (any 127/8 address works without root), on
//! free ports. Nobody talks to those ports directly except the harness's
//! control plane (status, leader lookup, membership):
//!
//! ```text
//!  client in az-b ──► 127.0.0.1:Cb1 ─┐                ┌─► 127.0.0.11:client  m1 (az-a)
//!                                    ├── proxy ───────┤
//!  m2 (from 127.0.0.12) ──► 127.0.0.1:P1 ─┘  (zone of   └─► 127.0.0.11:peer
//!                                          each end known)
//! ```
//!
//! * Peers: every member advertises a proxy address (`P_i`) as its peer URL,
//!   and opens its own peer connections from its own IP
//!   (`--experimental-peer-source-address`), so the proxy knows both zones of
//!   every raft connection.
//! * Clients: for every (client zone, member) pair the proxy has one
//!   listener; a client in zone `z` gets the endpoints of zone `z`.
//!
//! Processes are started with `kill_on_drop`, so a harness that panics does
//! not leave members behind; their output goes to `DIR/m{i}.log` (appended
//! across restarts).
//!
//! # TLS
//!
//! With [`ClusterOptions::tls`] every URL is `https://` and the members
//! require certificates of the run's CA from clients and from each other
//! (`--client-cert-auth`, `--peer-client-cert-auth`). The CA lives only in
//! the harness's memory; `DIR/certs` gets its certificate, one certificate
//! per member (valid for 127.0.0.1, where the proxy listens, and for the
//! member's own address, which the control plane dials) and the client's
//! (Common Name root). The proxy forwards bytes, so TLS passes through it
//! and every fault applies to it as to plain traffic.
//!
//! # Auth
//!
//! With [`ClusterOptions::auth`], [`Cluster::start`] enables auth once a
//! leader is elected (see [`crate::auth`]) and the control plane's clients
//! authenticate as root; they are kept per member, so that a leader lookup
//! every 100 ms does not cost an `Authenticate` (a password hash on the
//! member) each time.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use cairn_client::{Client, TlsOptions};

use crate::auth::Credentials;
use cairn_tls::pki::{write, write_issued, Ca, Leaf};
use tokio::process::{Child, Command};

use crate::proxy::{Proxy, Source};

/// How to build the cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// The `cairn` binary.
    pub binary: PathBuf,
    /// Number of members (default 3), spread round-robin over `zones`.
    pub members: usize,
    /// Zone names (default az-a, az-b, az-c).
    pub zones: Vec<String>,
    /// Where the data directories, keys and logs go.
    pub dir: PathBuf,
    /// Raft heartbeat and election timeout (etcd's defaults: 100 / 1000 ms).
    pub heartbeat: Duration,
    pub election_timeout: Duration,
    /// Start the members in the deliberately broken mode (stale reads); needs
    /// a binary built with the `jepsen-broken` feature.
    pub broken_stale_reads: bool,
    /// Extra flags for every member.
    pub extra_args: Vec<String>,
    /// Client and peer TLS with certificates of a CA made for the run.
    pub tls: bool,
    /// Enable auth (user and role root) once the cluster has a leader.
    pub auth: bool,
}

impl ClusterOptions {
    /// Defaults around `binary`, writing under `dir`.
    pub fn new(binary: PathBuf, dir: PathBuf) -> Self {
        ClusterOptions {
            binary,
            members: 3,
            zones: vec!["az-a".into(), "az-b".into(), "az-c".into()],
            dir,
            heartbeat: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            broken_stale_reads: false,
            extra_args: Vec::new(),
            tls: false,
            auth: false,
        }
    }
}

/// One member's fixed facts.
#[derive(Clone, Debug)]
pub struct MemberSpec {
    /// `m1`, `m2`, ...
    pub name: String,
    pub zone: String,
    /// Its own loopback address (also the source of its peer connections).
    pub ip: IpAddr,
    /// Where it really listens.
    pub client_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    /// The proxy listener that stands for its peer URL.
    pub proxied_peer: SocketAddr,
    /// Client zone -> the proxy listener clients of that zone use.
    pub proxied_client: BTreeMap<String, SocketAddr>,
    pub data_dir: PathBuf,
    pub key_file: PathBuf,
    pub log_file: PathBuf,
    /// Its certificate and key, in a TLS cluster.
    pub cert: Option<(PathBuf, PathBuf)>,
}

impl MemberSpec {
    /// `https` in a TLS cluster, else `http`.
    fn scheme(&self) -> &'static str {
        if self.cert.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The URL of its peer listener as the cluster knows it (via the proxy).
    pub fn peer_url(&self) -> String {
        format!("{}://{}", self.scheme(), self.proxied_peer)
    }

    /// The direct client URL (control plane only: no faults apply).
    pub fn admin_url(&self) -> String {
        format!("{}://{}", self.scheme(), self.client_addr)
    }

    /// The URL of `addr` (one of its listeners or proxy routes).
    fn url(&self, addr: SocketAddr) -> String {
        format!("{}://{addr}", self.scheme())
    }
}

/// The certificates of a TLS cluster (see the module's docs).
#[derive(Clone, Debug)]
pub struct Certs {
    /// The CA certificate (`--trusted-ca-file`, `--peer-trusted-ca-file`).
    pub ca_file: PathBuf,
    /// What the harness's clients trust and present.
    pub client: TlsOptions,
}

/// Makes a CA, writes its certificate, a certificate per member (of
/// `members`: name and own address) and the client's into `dir`.
fn make_certs(
    dir: &Path,
    members: &[(String, IpAddr)],
) -> Result<(Certs, Vec<(PathBuf, PathBuf)>)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca = Ca::new("cairn-jepsen-ca")?;
    let ca_file = dir.join("ca.pem");
    write(&ca_file, ca.cert_pem(), false)?;
    let mut member_certs = Vec::new();
    for (serial, (name, ip)) in (2u64..).zip(members) {
        let ip = ip.to_string();
        let leaf = Leaf::new(name, &["127.0.0.1", &ip, "localhost"], serial);
        member_certs.push(write_issued(dir, name, &ca.issue(&leaf)?)?);
    }
    let serial = 2 + members.len() as u64;
    let (cert, key) = write_issued(dir, "client", &ca.issue(&Leaf::new("root", &[], serial))?)?;
    let client = TlsOptions {
        ca_file: Some(ca_file.clone()),
        cert_file: Some(cert),
        key_file: Some(key),
        insecure_skip_verify: false,
    };
    Ok((Certs { ca_file, client }, member_certs))
}

/// A process and what state it is in.
#[derive(Debug)]
struct Process {
    child: Option<Child>,
    paused: bool,
    /// Removed from the cluster and wiped, not yet added back: must not be
    /// restarted.
    removed: bool,
}

/// The running cluster.
#[derive(Debug)]
pub struct Cluster {
    options: ClusterOptions,
    members: Vec<MemberSpec>,
    processes: Vec<Process>,
    proxy: Proxy,
    /// In a TLS cluster.
    certs: Option<Certs>,
    /// Root's credentials, once auth is enabled.
    credentials: Option<Credentials>,
    /// With auth: the control plane's authenticated client of each member
    /// (see the module's docs), made on first use.
    admins: std::sync::Mutex<BTreeMap<usize, Client>>,
}

/// A free port on `ip`, below Linux's ephemeral range (32768 and up).
///
/// Members are killed and restarted on their ports. A port the kernel hands
/// out for `:0` lies in the ephemeral range, where another member's outgoing
/// connection can take it as its local port while the member is down, and
/// the restart then fails with "Address already in use". Ports 12000..23000
/// are never handed out that way (and stay clear of the etcdctl
/// comparisons' 23790+ and the dev cluster's 26000+).
fn free_port(ip: IpAddr) -> Result<u16> {
    use std::hash::{BuildHasher, Hasher};
    let seed = std::collections::hash_map::RandomState::new();
    for attempt in 0u64..1000 {
        let mut h = seed.build_hasher();
        h.write_u64(attempt);
        let port = 12000 + (h.finish() % 11000) as u16;
        if claim_port(port) && std::net::TcpListener::bind(SocketAddr::new(ip, port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port on {ip} in 12000..23000")
}

/// Claims `port` for this process until it exits: an exclusive lock on a
/// file named after it, the same claim cairn-server's test clusters make.
/// A bind check alone does not keep a port while a member is killed for a
/// fault and restarted on it: a test cluster running beside this one could
/// take it in between.
fn claim_port(port: u16) -> bool {
    use std::sync::{Mutex, OnceLock};
    static CLAIMED: OnceLock<Mutex<Vec<std::fs::File>>> = OnceLock::new();
    let dir = std::env::temp_dir().join("cairn-test-ports");
    let Ok(file) = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::File::create(dir.join(port.to_string())))
    else {
        return false;
    };
    if file.try_lock().is_err() {
        return false;
    }
    let mut files = CLAIMED
        .get_or_init(|| Mutex::new(Vec::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    files.push(file);
    true
}

/// A fresh 32-byte master key file, mode 0600.
fn write_key(path: &Path, seed: u64) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut rng = crate::rng::Rng::new(seed);
    let key: Vec<u8> = (0..32).map(|_| rng.next_u64() as u8).collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(&key)?;
    Ok(())
}

impl Cluster {
    /// Lays out the members, sets up the proxy routes and starts every member;
    /// returns once every member answers Status and one leads.
    pub async fn start(options: ClusterOptions, proxy: Proxy, seed: u64) -> Result<Cluster> {
        if options.members == 0 || options.zones.is_empty() {
            bail!("a cluster needs at least one member and one zone");
        }
        if options.members > 200 {
            bail!("at most 200 members");
        }
        std::fs::create_dir_all(&options.dir)
            .with_context(|| format!("creating {}", options.dir.display()))?;
        let front = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let ip_of = |i: usize| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11 + i as u8));
        let (certs, member_certs) = if options.tls {
            let names: Vec<(String, IpAddr)> = (0..options.members)
                .map(|i| (format!("m{}", i + 1), ip_of(i)))
                .collect();
            let (certs, member_certs) = make_certs(&options.dir.join("certs"), &names)?;
            (Some(certs), member_certs.into_iter().map(Some).collect())
        } else {
            (None, vec![None; options.members])
        };
        let mut members = Vec::new();
        for (i, cert) in member_certs.into_iter().enumerate() {
            let zone = options.zones[i % options.zones.len()].clone();
            let ip = ip_of(i);
            let client_addr = SocketAddr::new(ip, free_port(ip)?);
            let peer_addr = SocketAddr::new(ip, free_port(ip)?);
            proxy.register_address(ip, &zone);
            let proxied_peer = proxy
                .add_route(
                    SocketAddr::new(front, 0),
                    peer_addr,
                    &zone,
                    Source::ByAddress,
                )
                .await?;
            let mut proxied_client = BTreeMap::new();
            for from in &options.zones {
                let addr = proxy
                    .add_route(
                        SocketAddr::new(front, 0),
                        client_addr,
                        &zone,
                        Source::Zone(from.clone()),
                    )
                    .await?;
                proxied_client.insert(from.clone(), addr);
            }
            let name = format!("m{}", i + 1);
            let key_file = options.dir.join(format!("{name}.key"));
            write_key(&key_file, seed.wrapping_add(i as u64))?;
            members.push(MemberSpec {
                data_dir: options.dir.join(&name),
                log_file: options.dir.join(format!("{name}.log")),
                name,
                zone,
                ip,
                client_addr,
                peer_addr,
                proxied_peer,
                proxied_client,
                key_file,
                cert,
            });
        }
        let processes = members
            .iter()
            .map(|_| Process {
                child: None,
                paused: false,
                removed: false,
            })
            .collect();
        let mut cluster = Cluster {
            options,
            members,
            processes,
            proxy,
            certs,
            credentials: None,
            admins: std::sync::Mutex::new(BTreeMap::new()),
        };
        for i in 0..cluster.members.len() {
            cluster.spawn(i, false)?;
        }
        let leader = cluster
            .wait_for_leader(Duration::from_secs(30))
            .await
            .context("the cluster did not elect a leader")?;
        if cluster.options.auth {
            let admin = cluster.admin(leader).await?;
            let credentials = crate::auth::enable(&admin).await.context("enabling auth")?;
            cluster.credentials = Some(credentials);
        }
        Ok(cluster)
    }

    /// The members' facts.
    pub fn members(&self) -> &[MemberSpec] {
        &self.members
    }

    /// The proxy.
    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    /// The zones, in order.
    pub fn zones(&self) -> &[String] {
        &self.options.zones
    }

    /// The certificates, in a TLS cluster.
    pub fn certs(&self) -> Option<&Certs> {
        self.certs.as_ref()
    }

    /// Root's credentials, in a cluster with auth.
    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    /// Client endpoints for a client living in `zone`: every member through
    /// the proxy, the member of `zone` first.
    pub fn endpoints_from(&self, zone: &str) -> Vec<String> {
        let mut endpoints: Vec<(bool, String)> = self
            .members
            .iter()
            .filter_map(|m| {
                m.proxied_client
                    .get(zone)
                    .map(|a| (m.zone != zone, m.url(*a)))
            })
            .collect();
        endpoints.sort_by_key(|(other, _)| *other);
        endpoints.into_iter().map(|(_, e)| e).collect()
    }

    /// The command line of member `i` (`existing`: join, not bootstrap).
    fn args(&self, i: usize, existing: bool) -> Vec<String> {
        let m = &self.members[i];
        let initial_cluster = self
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let advertise_client = m
            .proxied_client
            .get(&m.zone)
            .map(|a| m.url(*a))
            .unwrap_or_else(|| m.admin_url());
        let mut args = vec![
            "--name".to_string(),
            m.name.clone(),
            "--data-dir".into(),
            m.data_dir.display().to_string(),
            "--listen-client-urls".into(),
            m.admin_url(),
            "--advertise-client-urls".into(),
            advertise_client,
            "--listen-peer-urls".into(),
            m.url(m.peer_addr),
            "--initial-advertise-peer-urls".into(),
            m.peer_url(),
            "--initial-cluster".into(),
            initial_cluster,
            "--initial-cluster-token".into(),
            "cairn-jepsen".into(),
            "--initial-cluster-state".into(),
            if existing { "existing" } else { "new" }.into(),
            "--zone".into(),
            m.zone.clone(),
            "--experimental-peer-source-address".into(),
            m.ip.to_string(),
            "--encryption-key-file".into(),
            m.key_file.display().to_string(),
            "--heartbeat-interval".into(),
            self.options.heartbeat.as_millis().to_string(),
            "--election-timeout".into(),
            self.options.election_timeout.as_millis().to_string(),
            "--experimental-watch-progress-notify-interval".into(),
            "1s".into(),
        ];
        if let (Some((cert, key)), Some(certs)) = (&m.cert, &self.certs) {
            let (cert, key) = (cert.display().to_string(), key.display().to_string());
            let ca = certs.ca_file.display().to_string();
            for (flag, value) in [
                ("--cert-file", &cert),
                ("--key-file", &key),
                ("--trusted-ca-file", &ca),
                ("--peer-cert-file", &cert),
                ("--peer-key-file", &key),
                ("--peer-trusted-ca-file", &ca),
            ] {
                args.extend([flag.to_string(), value.clone()]);
            }
            args.extend([
                "--client-cert-auth".into(),
                "--peer-client-cert-auth".into(),
            ]);
        }
        if self.options.broken_stale_reads {
            args.push("--experimental-jepsen-broken-stale-reads".into());
        }
        args.extend(self.options.extra_args.iter().cloned());
        args
    }

    fn spawn(&mut self, i: usize, existing: bool) -> Result<()> {
        let args = self.args(i, existing);
        let m = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log_file)
            .with_context(|| format!("opening {}", m.log_file.display()))?;
        let err = log.try_clone()?;
        let child = Command::new(&self.options.binary)
            .args(&args)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.options.binary.display()))?;
        tracing::info!(member = %m.name, pid = child.id(), "started");
        self.processes[i].child = Some(child);
        self.processes[i].paused = false;
        Ok(())
    }

    /// Whether member `i` runs (started and not killed).
    pub fn is_running(&self, i: usize) -> bool {
        self.processes.get(i).is_some_and(|p| p.child.is_some())
    }

    /// Whether member `i` is paused.
    pub fn is_paused(&self, i: usize) -> bool {
        self.processes.get(i).is_some_and(|p| p.paused)
    }

    /// kill -9 member `i` (no-op if it is not running).
    pub async fn kill(&mut self, i: usize) -> Result<()> {
        let p = self
            .processes
            .get_mut(i)
            .ok_or_else(|| anyhow!("no member {i}"))?;
        if let Some(mut child) = p.child.take() {
            child.kill().await.context("kill -9")?;
            tracing::info!(member = %self.members[i].name, "killed");
        }
        p.paused = false;
        Ok(())
    }

    /// Marks member `i` as removed from the cluster (not restarted until it
    /// is added back) or not.
    pub fn set_removed(&mut self, i: usize, removed: bool) {
        if let Some(p) = self.processes.get_mut(i) {
            p.removed = removed;
        }
    }

    /// Members that exited on their own since the last call (crashed, or
    /// stopped because they were removed), with how they exited and the
    /// last lines of their log. The harness reports crashes as anomalies.
    pub fn reap(&mut self) -> Vec<(usize, String)> {
        let mut exited = Vec::new();
        for i in 0..self.processes.len() {
            let status = match self.processes[i].child.as_mut().map(Child::try_wait) {
                Some(Ok(Some(status))) => status,
                _ => continue,
            };
            self.processes[i].child = None;
            self.processes[i].paused = false;
            let tail = std::fs::read_to_string(&self.members[i].log_file)
                .map(|log| {
                    let lines: Vec<&str> = log.lines().collect();
                    lines[lines.len().saturating_sub(15)..].join("\n")
                })
                .unwrap_or_default();
            exited.push((
                i,
                format!(
                    "{} exited ({status}); log tail:\n{tail}",
                    self.members[i].name
                ),
            ));
        }
        exited
    }

    /// Restarts a killed member from its data directory (no-op if running
    /// or removed).
    pub fn restart(&mut self, i: usize) -> Result<()> {
        if self.is_running(i) || self.processes.get(i).is_some_and(|p| p.removed) {
            return Ok(());
        }
        self.spawn(i, false)
    }

    fn signal(&self, i: usize, signal: &str) -> Result<()> {
        let pid = self
            .processes
            .get(i)
            .and_then(|p| p.child.as_ref())
            .and_then(|c| c.id())
            .ok_or_else(|| anyhow!("member {i} is not running"))?;
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .context("running kill")?;
        if !status.success() {
            bail!("kill {signal} {pid} failed");
        }
        Ok(())
    }

    /// SIGSTOP member `i`.
    pub fn pause(&mut self, i: usize) -> Result<()> {
        self.signal(i, "-STOP")?;
        self.processes[i].paused = true;
        Ok(())
    }

    /// SIGCONT member `i`.
    pub fn resume(&mut self, i: usize) -> Result<()> {
        if self.is_paused(i) {
            self.signal(i, "-CONT")?;
            self.processes[i].paused = false;
        }
        Ok(())
    }

    /// Deletes member `i`'s data (it must be stopped).
    pub fn wipe(&mut self, i: usize) -> Result<()> {
        if self.is_running(i) {
            bail!("wipe of a running member");
        }
        let dir = &self.members[i].data_dir;
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        Ok(())
    }

    /// Starts a wiped member as a new member joining the cluster (after a
    /// MemberAdd of its peer URL).
    pub fn join(&mut self, i: usize) -> Result<()> {
        self.spawn(i, true)
    }

    /// A control-plane client of member `i` alone (direct, no faults);
    /// with auth, authenticated as root (and kept for the next call).
    pub async fn admin(&self, i: usize) -> Result<Client> {
        let url = self
            .members
            .get(i)
            .map(MemberSpec::admin_url)
            .ok_or_else(|| anyhow!("no member {i}"))?;
        let tls = self.certs.as_ref().map(|c| &c.client);
        let client = Client::connect_all_tls([url], tls).await?;
        let Some(credentials) = &self.credentials else {
            return Ok(client);
        };
        let admins = || {
            self.admins
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some(kept) = admins().get(&i) {
            return Ok(kept.clone());
        }
        let client = credentials.apply(client).await?;
        admins().insert(i, client.clone());
        Ok(client)
    }

    /// The member that leads, asked directly of the running, unpaused
    /// members (the first that names a leader it knows).
    pub async fn leader(&self) -> Option<usize> {
        for i in 0..self.members.len() {
            if !self.is_running(i) || self.is_paused(i) {
                continue;
            }
            let Ok(client) = self.admin(i).await else {
                continue;
            };
            let status =
                match tokio::time::timeout(Duration::from_millis(500), client.status()).await {
                    Ok(Ok(s)) => s,
                    _ => continue,
                };
            if status.leader == 0 {
                continue;
            }
            if let Some(leader) = self.member_index(status.leader).await {
                return Some(leader);
            }
        }
        None
    }

    /// The index of the member with raft id `id` (asked of any member).
    pub async fn member_index(&self, id: u64) -> Option<usize> {
        for i in 0..self.members.len() {
            if !self.is_running(i) || self.is_paused(i) {
                continue;
            }
            let Ok(client) = self.admin(i).await else {
                continue;
            };
            let Ok(Ok(list)) =
                tokio::time::timeout(Duration::from_millis(500), client.member_list()).await
            else {
                continue;
            };
            let member = list.members.iter().find(|m| m.id == id)?;
            return self.members.iter().position(|m| m.name == member.name);
        }
        None
    }

    /// Waits until some member reports a leader.
    pub async fn wait_for_leader(&self, within: Duration) -> Result<usize> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(leader) = self.leader().await {
                return Ok(leader);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("no leader within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every running member answers a linearizable read directly.
    pub async fn wait_healthy(&self, within: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        for i in 0..self.members.len() {
            if !self.is_running(i) {
                continue;
            }
            loop {
                let last = match self.admin(i).await {
                    Ok(client) => match tokio::time::timeout(
                        Duration::from_secs(1),
                        client.get(cairn_client::Get::key("health")),
                    )
                    .await
                    {
                        Ok(Ok(_)) => break,
                        Ok(Err(e)) => e.to_string(),
                        Err(_) => "timed out".to_string(),
                    },
                    Err(e) => e.to_string(),
                };
                if tokio::time::Instant::now() >= deadline {
                    bail!(
                        "{} is not healthy after {within:?}: {last}",
                        self.members[i].name
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// The process ids of the running members, for the report.
    pub fn pids(&self) -> Vec<Option<u32>> {
        self.processes
            .iter()
            .map(|p| p.child.as_ref().and_then(|c| c.id()))
            .collect()
    }

    /// Resumes paused members and kills every member.
    pub async fn stop(&mut self) {
        for i in 0..self.members.len() {
            let _ = self.resume(i);
            let _ = self.kill(i).await;
        }
        self.proxy.shutdown();
    }
}
