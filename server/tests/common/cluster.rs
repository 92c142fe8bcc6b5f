//! Test support: a cluster of members in this process, on loopback ports
//! bound before the members start (so the peer URLs are known up front).

use std::path::PathBuf;
use std::time::Duration;

use cairn_client::Client;
use cairn_server::embed::{self, ClusterState, Config, Handle, Listeners};
use tokio::net::TcpListener;

/// One member slot: its config (fixed ports) and, while running, its handle.
pub struct Slot {
    /// The member's config (ports fixed at creation).
    pub config: Config,
    /// The running member, if any.
    pub handle: Option<Handle>,
}

/// An in-process cluster.
pub struct Cluster {
    /// Holds the data directories.
    pub dir: tempfile::TempDir,
    /// Members by index.
    pub slots: Vec<Slot>,
}

/// A free loopback port below Linux's ephemeral range (32768 and up),
/// reserved for this test process until it exits.
///
/// Members are stopped and restarted on the same ports. A port the kernel
/// handed out (bind to :0) lies in the ephemeral range, where another
/// member's outgoing connection may take it as its local port while the
/// member is down, and the restart then fails with "Address already in
/// use". Ports 12000..23000 are never handed out that way; the range stays
/// clear of the etcdctl comparisons' 23790+ and the dev cluster's 26000+.
///
/// A bind alone does not keep the port: nextest runs tests in parallel
/// processes, and another test could pick the same port between this check
/// and the member's bind, or while this test's member is stopped for a
/// restart (a CI run lost `parity` that way). So each port is also claimed
/// by an exclusive lock on a file named after it, held until the process
/// ends (the kernel drops the lock then, even on a crash).
async fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let seed = std::collections::hash_map::RandomState::new();
    for attempt in 0u64..1000 {
        let mut h = seed.build_hasher();
        h.write_u64(attempt);
        let port = 12000 + (h.finish() % 11000) as u16;
        if claim_port(port) && TcpListener::bind(("127.0.0.1", port)).await.is_ok() {
            return port;
        }
    }
    panic!("no free port in 12000..23000");
}

/// Claims `port` for this process: true when no other test process holds
/// its lock file (see [`free_port`]).
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

/// Configs for `n` members named m0.. in zones az-a, az-b, az-c, ...
pub async fn configs(dir: &std::path::Path, n: usize, tweak: impl Fn(&mut Config)) -> Vec<Config> {
    let mut ports = Vec::new();
    for _ in 0..n {
        ports.push((free_port().await, free_port().await));
    }
    let initial_cluster = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
        .collect::<Vec<_>>()
        .join(",");
    ports
        .iter()
        .enumerate()
        .map(|(i, (client, peer))| {
            let mut c = Config {
                name: format!("m{i}"),
                data_dir: dir.join(format!("m{i}")),
                listen_client_urls: vec![format!("http://127.0.0.1:{client}")],
                advertise_client_urls: vec![format!("http://127.0.0.1:{client}")],
                listen_peer_urls: vec![format!("http://127.0.0.1:{peer}")],
                initial_advertise_peer_urls: vec![format!("http://127.0.0.1:{peer}")],
                initial_cluster: initial_cluster.clone(),
                zone: format!("az-{}", (b'a' + i as u8) as char),
                // Fast elections keep the tests short; the ratio is etcd's.
                heartbeat_interval: Duration::from_millis(50),
                election_timeout: Duration::from_millis(500),
                ..Config::default()
            };
            tweak(&mut c);
            c
        })
        .collect()
}

/// Starts a member from `config`, retrying while its ports are still held
/// by a member that just stopped.
pub async fn start_member(config: Config) -> Handle {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match embed::start_with(config.clone(), Listeners::default()).await {
            Ok(h) => return h,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("start {}: {e}; retrying", config.name);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("member {} does not start: {e}", config.name),
        }
    }
}

impl Cluster {
    /// Starts `n` members.
    pub async fn start(n: usize, tweak: impl Fn(&mut Config)) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let configs = configs(dir.path(), n, tweak).await;
        let mut slots = Vec::new();
        let starts = configs.iter().cloned().map(start_member);
        let handles = futures_join_all(starts).await;
        for (config, handle) in configs.into_iter().zip(handles) {
            slots.push(Slot {
                config,
                handle: Some(handle),
            });
        }
        Cluster { dir, slots }
    }

    /// The client URL of member `i`.
    pub fn url(&self, i: usize) -> String {
        self.slots[i].config.listen_client_urls[0].clone()
    }

    /// A client of member `i` only.
    pub async fn client(&self, i: usize) -> Client {
        Client::connect(self.url(i)).await.unwrap()
    }

    /// A client of every running member, with failover.
    pub async fn client_all(&self) -> Client {
        let urls: Vec<String> = self.running().map(|i| self.url(i)).collect();
        Client::connect_all(urls).await.unwrap()
    }

    /// Indexes of the running members.
    pub fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.slots.len()).filter(|i| self.slots[*i].handle.is_some())
    }

    /// The member handle of slot `i`.
    pub fn handle(&self, i: usize) -> &Handle {
        self.slots[i].handle.as_ref().unwrap()
    }

    /// Waits until every running member agrees on one leader; returns its slot.
    pub async fn leader(&self) -> usize {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let leaders: Vec<u64> = self
                .running()
                .map(|i| self.handle(i).member().raft_status().leader)
                .collect();
            if let Some(&first) = leaders.first() {
                if first != 0 && leaders.iter().all(|l| *l == first) {
                    if let Some(i) = self
                        .running()
                        .find(|i| self.handle(*i).member().identity().member_id == first)
                    {
                        return i;
                    }
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no agreed leader: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops member `i` (its data stays).
    pub async fn stop(&mut self, i: usize) {
        if let Some(h) = self.slots[i].handle.take() {
            h.stop().await.unwrap();
        }
    }

    /// Kills member `i` at once (no grace period for its clients).
    pub async fn kill(&mut self, i: usize) {
        if let Some(h) = self.slots[i].handle.take() {
            h.kill().await;
        }
    }

    /// Restarts member `i` from its data directory.
    pub async fn restart(&mut self, i: usize) {
        let handle = start_member(self.slots[i].config.clone()).await;
        self.slots[i].handle = Some(handle);
    }

    /// Waits until every running member has applied what the leader has.
    pub async fn converge(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let leader = self.leader().await;
            let target = self.handle(leader).member().raft_status().commit;
            if self
                .running()
                .all(|i| self.handle(i).member().raft_status().applied >= target)
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "members do not converge"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops every running member (at once: the tests' clients stay
    /// connected, and waiting out their grace period proves nothing here).
    pub async fn stop_all(&mut self) {
        for i in 0..self.slots.len() {
            self.kill(i).await;
        }
    }

    /// A config for a new member joining this cluster (slot `slots.len()`).
    pub async fn joiner_config(&self, initial_cluster: String) -> Config {
        let i = self.slots.len();
        let (client, peer) = (free_port().await, free_port().await);
        let template = &self.slots[0].config;
        Config {
            name: format!("m{i}"),
            data_dir: self.dir.path().join(format!("m{i}")),
            listen_client_urls: vec![format!("http://127.0.0.1:{client}")],
            advertise_client_urls: vec![format!("http://127.0.0.1:{client}")],
            listen_peer_urls: vec![format!("http://127.0.0.1:{peer}")],
            initial_advertise_peer_urls: vec![format!("http://127.0.0.1:{peer}")],
            initial_cluster,
            initial_cluster_state: ClusterState::Existing,
            zone: "az-d".into(),
            ..template.clone()
        }
    }

    /// Waits until every running member has published its name: etcd's
    /// `--strict-reconfig-check` counts only such "started" members, so a
    /// membership change right after start may be refused before then.
    pub async fn wait_started(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let running: Vec<u64> = self
            .running()
            .map(|i| self.handle(i).member().identity().member_id)
            .collect();
        loop {
            let leader = self.leader().await;
            let members = self.handle(leader).member().cluster().member_list();
            if running
                .iter()
                .all(|id| members.iter().any(|m| m.id == *id && !m.name.is_empty()))
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "members never published their names: {members:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The member id of slot `i` (from its peer URLs and cluster token).
    pub fn member_id(&self, i: usize) -> u64 {
        let config = &self.slots[i].config;
        embed::member_id(
            &config.initial_advertise_peer_urls,
            &config.initial_cluster_token,
        )
    }

    /// Data directory of slot `i`.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.slots[i].config.data_dir.clone()
    }
}

/// Runs a membership change, again while `--strict-reconfig-check`
/// refuses it for a view that catches up by itself: the leader has not
/// heard from every member within an election timeout (under load on a
/// small machine it may not have, and etcd refuses then too), or a member
/// has not published its name yet. Clients retry these; any other answer
/// is returned. Fails after 30 s.
pub async fn reconfig<T, F>(mut change: impl FnMut() -> F) -> Result<T, cairn_client::Error>
where
    F: std::future::Future<Output = Result<T, cairn_client::Error>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match change().await {
            Err(e)
                if e.to_string().contains("unhealthy cluster")
                    || e.to_string().contains("not enough started members") =>
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "membership change refused for 30 s: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            answer => return answer,
        }
    }
}

/// Runs futures concurrently (no extra dependency for join_all).
pub async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
