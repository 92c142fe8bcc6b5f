//! `cairn migrate verify`: the cut-over check. Compares two live stores
//! through the etcd API (any two: etcd and Cairn, or etcd and the etcd
//! restored from an export) at one revision: every key's value, create and
//! mod revision, version and lease (read in pages of 1,000 keys from both,
//! merged in key order), the compacted revision (HashKV's), and every
//! lease's granted TTL and keys. Prints a SHA-256 of each side's key-values
//! in order (the same on both when they agree: a hash both can compute,
//! unlike HashKV's, which differs between etcd and Cairn) and the first
//! differences; exits non-zero if there is any.

use std::collections::VecDeque;

use std::path::PathBuf;

use anyhow::{bail, Context};
use cairn_proto::etcdserverpb::auth_client::AuthClient;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::{
    AuthenticateRequest, HashKvRequest, LeaseLeasesRequest, LeaseTimeToLiveRequest, RangeRequest,
};
use cairn_proto::mvccpb::KeyValue;
use cairn_tls::client::{ClientOptions, ClientTls, Connector};
use prost::Message;
use tonic::transport::Channel;

/// Keys read per range request.
const PAGE: i64 = 1000;
/// Differences printed (all are counted).
const SHOWN: usize = 20;

/// `cairn migrate verify` flags.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The etcd cluster's client URLs (host:port or http://host:port).
    #[arg(long, value_delimiter = ',', required = true)]
    etcd_endpoints: Vec<String>,
    /// The Cairn cluster's client URLs.
    #[arg(long, value_delimiter = ',', required = true)]
    cairn_endpoints: Vec<String>,
    /// name:password of a user who may read everything (both stores), when
    /// auth is on.
    #[arg(long)]
    user: Option<String>,
    /// The revision to compare at (default: etcd's current; Cairn must be
    /// at the same revision: stop the writers first).
    #[arg(long)]
    rev: Option<i64>,
    /// For https:// etcd endpoints: the CA that signs etcd's certificates
    /// (etcdctl's --cacert).
    #[arg(long)]
    etcd_cacert: Option<PathBuf>,
    /// A client certificate for etcd (--client-cert-auth).
    #[arg(long)]
    etcd_cert: Option<PathBuf>,
    /// Its key.
    #[arg(long)]
    etcd_key: Option<PathBuf>,
    /// For https:// Cairn endpoints: the CA that signs Cairn's certificates.
    #[arg(long)]
    cairn_cacert: Option<PathBuf>,
    /// A client certificate for Cairn.
    #[arg(long)]
    cairn_cert: Option<PathBuf>,
    /// Its key.
    #[arg(long)]
    cairn_key: Option<PathBuf>,
}

/// One store: its channel and the caller's token.
struct Store {
    /// "etcd" or "cairn", in messages.
    name: &'static str,
    /// A connection to one of its endpoints.
    channel: Channel,
    /// The caller's token, when `--user` was given (auth on).
    token: Option<String>,
}

impl Store {
    async fn connect(
        name: &'static str,
        endpoints: &[String],
        user: Option<&str>,
        tls: &ClientOptions,
    ) -> anyhow::Result<Self> {
        let mut last = None;
        for ep in endpoints {
            let url = if ep.contains("://") {
                ep.clone()
            } else {
                format!("http://{ep}")
            };
            // tonic gets the http:// form of an https:// URL; the connector
            // does the TLS (cairn-tls, as every Cairn client).
            let (plain, secure) = cairn_tls::client::tonic_url(&url);
            let endpoint = Channel::from_shared(plain)?;
            let connected = if secure {
                let tls = ClientTls::new(tls, &cairn_tls::Policy::default())
                    .with_context(|| format!("TLS for {name} (give --{name}-cacert)"))?;
                endpoint
                    .connect_with_connector(Connector::new(None, Some(tls)))
                    .await
            } else {
                endpoint.connect().await
            };
            match connected {
                Ok(channel) => {
                    let mut store = Store {
                        name,
                        channel,
                        token: None,
                    };
                    if let Some(user) = user {
                        let (name, password) = user
                            .split_once(':')
                            .context("--user must be name:password")?;
                        let resp = AuthClient::new(store.channel.clone())
                            .authenticate(AuthenticateRequest {
                                name: name.into(),
                                password: password.into(),
                            })
                            .await
                            .with_context(|| format!("authenticating at {url}"))?;
                        store.token = Some(resp.into_inner().token);
                    }
                    return Ok(store);
                }
                Err(e) => last = Some(anyhow::Error::new(e).context(url)),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no endpoint")))
            .with_context(|| format!("connecting to {name}"))
    }

    /// `message` with this store's token.
    fn request<T>(&self, message: T) -> anyhow::Result<tonic::Request<T>> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token {
            request.metadata_mut().insert("token", token.parse()?);
        }
        Ok(request)
    }

    async fn range(&self, range: RangeRequest) -> anyhow::Result<(i64, Vec<KeyValue>, bool)> {
        let resp = KvClient::new(self.channel.clone())
            .range(self.request(range)?)
            .await
            .with_context(|| format!("reading {}", self.name))?
            .into_inner();
        let rev = resp.header.map_or(0, |h| h.revision);
        Ok((rev, resp.kvs, resp.more))
    }

    /// The store's current revision (a header's).
    async fn current(&self) -> anyhow::Result<i64> {
        let range = RangeRequest {
            key: vec![0],
            count_only: true,
            ..RangeRequest::default()
        };
        Ok(self.range(range).await?.0)
    }

    /// The compacted revision, from HashKV at `rev`.
    async fn compacted(&self, rev: i64) -> anyhow::Result<i64> {
        let resp = MaintenanceClient::new(self.channel.clone())
            .hash_kv(self.request(HashKvRequest { revision: rev })?)
            .await
            .with_context(|| format!("HashKV of {}", self.name))?;
        Ok(resp.into_inner().compact_revision)
    }

    /// Every lease: (id, granted TTL, sorted keys).
    async fn leases(&self) -> anyhow::Result<Vec<(i64, i64, Vec<Vec<u8>>)>> {
        let mut client = LeaseClient::new(self.channel.clone());
        let list = client
            .lease_leases(self.request(LeaseLeasesRequest {})?)
            .await
            .with_context(|| format!("listing {}'s leases", self.name))?
            .into_inner();
        let mut out = Vec::new();
        for lease in list.leases {
            let ttl = client
                .lease_time_to_live(self.request(LeaseTimeToLiveRequest {
                    id: lease.id,
                    keys: true,
                })?)
                .await?
                .into_inner();
            let mut keys = ttl.keys;
            keys.sort();
            out.push((lease.id, ttl.granted_ttl, keys));
        }
        out.sort();
        Ok(out)
    }
}

/// One side's keys at a revision, read page by page.
struct Cursor<'s> {
    /// The store read.
    store: &'s Store,
    /// The revision every page is read at (one snapshot of the store).
    rev: i64,
    /// The current page's keys not compared yet.
    buffer: VecDeque<KeyValue>,
    /// The next page's first key; None once the last page was read.
    next: Option<Vec<u8>>,
    /// Keys compared.
    count: u64,
    /// The SHA-256 of their encodings, in key order.
    digest: ring::digest::Context,
}

impl<'s> Cursor<'s> {
    fn new(store: &'s Store, rev: i64) -> Self {
        Cursor {
            store,
            rev,
            buffer: VecDeque::new(),
            next: Some(vec![0]),
            count: 0,
            digest: ring::digest::Context::new(&ring::digest::SHA256),
        }
    }

    async fn peek(&mut self) -> anyhow::Result<Option<&KeyValue>> {
        if self.buffer.is_empty() {
            if let Some(start) = self.next.take() {
                let (_, kvs, more) = self
                    .store
                    .range(RangeRequest {
                        key: start,
                        range_end: vec![0],
                        revision: self.rev,
                        limit: PAGE,
                        ..RangeRequest::default()
                    })
                    .await?;
                if more {
                    if let Some(last) = kvs.last() {
                        self.next = Some([&last.key[..], &[0]].concat());
                    }
                }
                self.buffer.extend(kvs);
            }
        }
        Ok(self.buffer.front())
    }

    fn take(&mut self) -> Option<KeyValue> {
        let kv = self.buffer.pop_front()?;
        self.count += 1;
        self.digest.update(&kv.encode_to_vec());
        Some(kv)
    }
}

/// Runs `cairn migrate verify`.
pub async fn run(args: VerifyArgs) -> anyhow::Result<()> {
    let user = args.user.as_deref();
    let etcd_tls = ClientOptions {
        ca_file: args.etcd_cacert.clone(),
        cert_file: args.etcd_cert.clone(),
        key_file: args.etcd_key.clone(),
        insecure_skip_verify: false,
    };
    let cairn_tls = ClientOptions {
        ca_file: args.cairn_cacert.clone(),
        cert_file: args.cairn_cert.clone(),
        key_file: args.cairn_key.clone(),
        insecure_skip_verify: false,
    };
    let etcd = Store::connect("etcd", &args.etcd_endpoints, user, &etcd_tls).await?;
    let cairn = Store::connect("cairn", &args.cairn_endpoints, user, &cairn_tls).await?;
    let (etcd_rev, cairn_rev) = (etcd.current().await?, cairn.current().await?);
    println!("etcd at revision {etcd_rev}, cairn at revision {cairn_rev}");
    let rev = args.rev.unwrap_or(etcd_rev);
    if args.rev.is_none() && etcd_rev != cairn_rev {
        bail!("the stores are at different revisions (stop the writers, or give --rev)");
    }
    let mut differences = Vec::new();
    let (etcd_compacted, cairn_compacted) =
        (etcd.compacted(rev).await?, cairn.compacted(rev).await?);
    if etcd_compacted != cairn_compacted {
        differences.push(format!(
            "compacted revision: etcd {etcd_compacted}, cairn {cairn_compacted}"
        ));
    }
    let (mut a, mut b) = (Cursor::new(&etcd, rev), Cursor::new(&cairn, rev));
    loop {
        let order = match (a.peek().await?, b.peek().await?) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => x.key.cmp(&y.key),
        };
        match order {
            std::cmp::Ordering::Less => {
                if let Some(kv) = a.take() {
                    differences.push(format!("{}: only in etcd", kv.key.escape_ascii()));
                }
            }
            std::cmp::Ordering::Greater => {
                if let Some(kv) = b.take() {
                    differences.push(format!("{}: only in cairn", kv.key.escape_ascii()));
                }
            }
            std::cmp::Ordering::Equal => {
                if let (Some(x), Some(y)) = (a.take(), b.take()) {
                    if x != y {
                        differences.push(format!(
                            "{}: etcd (create {}, mod {}, version {}, lease {:x}, {} bytes), \
                             cairn (create {}, mod {}, version {}, lease {:x}, {} bytes){}",
                            x.key.escape_ascii(),
                            x.create_revision,
                            x.mod_revision,
                            x.version,
                            x.lease,
                            x.value.len(),
                            y.create_revision,
                            y.mod_revision,
                            y.version,
                            y.lease,
                            y.value.len(),
                            if x.value == y.value {
                                ""
                            } else {
                                ", values differ"
                            },
                        ));
                    }
                }
            }
        }
    }
    let (etcd_leases, cairn_leases) = (etcd.leases().await?, cairn.leases().await?);
    if etcd_leases != cairn_leases {
        differences.push(format!(
            "leases (id, granted TTL, keys): etcd {etcd_leases:x?}, cairn {cairn_leases:x?}"
        ));
    }
    for (name, cursor, compacted, leases) in [
        ("etcd", a, etcd_compacted, etcd_leases.len()),
        ("cairn", b, cairn_compacted, cairn_leases.len()),
    ] {
        let digest = cursor.digest.finish();
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        println!(
            "{name}: {} keys at revision {rev} (compacted {compacted}), {leases} leases, key-values sha256 {hex}",
            cursor.count
        );
    }
    if differences.is_empty() {
        println!("identical");
        return Ok(());
    }
    for d in differences.iter().take(SHOWN) {
        println!("DIFFERENT {d}");
    }
    bail!("{} differences", differences.len())
}
