//! `cairn`: run one Cairn member. Flags follow etcd's names and defaults; with
//! no flags it serves a single member on localhost:2379 with data in
//! `./default.cairn`, as `etcd` does.

use std::path::PathBuf;

use anyhow::Context;
use cairn_server::embed::{self, Config};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "cairn",
    version,
    about = "An etcd v3-compatible key-value store"
)]
struct Flags {
    /// Human-readable name for this member.
    #[arg(long, default_value = "default")]
    name: String,
    /// Path to the data directory (default: ${name}.cairn).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Comma-separated URLs to listen on for client traffic.
    #[arg(long, default_value = "http://localhost:2379", value_delimiter = ',')]
    listen_client_urls: Vec<String>,
    /// Comma-separated client URLs to advertise to clients.
    #[arg(long, default_value = "http://localhost:2379", value_delimiter = ',')]
    advertise_client_urls: Vec<String>,
    /// Comma-separated peer URLs to advertise to the cluster (they determine the member id).
    #[arg(long, default_value = "http://localhost:2380", value_delimiter = ',')]
    initial_advertise_peer_urls: Vec<String>,
    /// Initial cluster token (it determines the member and cluster ids).
    #[arg(long, default_value = "etcd-cluster")]
    initial_cluster_token: String,
    /// Maximum client request size in bytes the server will accept.
    #[arg(long, default_value_t = 1536 * 1024)]
    max_request_bytes: usize,
    /// Maximum number of operations permitted in a transaction.
    #[arg(long, default_value_t = 128)]
    max_txn_ops: usize,
    /// Log level: debug, info, warn, error, panic or fatal.
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn init_logging(level: &str) -> anyhow::Result<()> {
    let filter = match level {
        "debug" | "info" | "warn" | "error" => level,
        "panic" | "fatal" => "error",
        other => anyhow::bail!(
            "invalid --log-level {other:?}: expected debug, info, warn, error, panic or fatal"
        ),
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<&'static str> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => { r.context("waiting for SIGINT")?; Ok("SIGINT") }
        _ = term.recv() => Ok("SIGTERM"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    init_logging(&flags.log_level)?;
    let config = Config {
        data_dir: flags
            .data_dir
            .unwrap_or_else(|| PathBuf::from(format!("{}.cairn", flags.name))),
        name: flags.name,
        listen_client_urls: flags.listen_client_urls,
        advertise_client_urls: flags.advertise_client_urls,
        initial_advertise_peer_urls: flags.initial_advertise_peer_urls,
        initial_cluster_token: flags.initial_cluster_token,
        max_request_bytes: flags.max_request_bytes,
        max_txn_ops: flags.max_txn_ops,
    };
    let member = embed::start(config).await.context("starting cairn")?;
    tracing::info!(urls = ?member.client_urls(), "ready to serve client requests");
    let signal = shutdown_signal().await?;
    tracing::info!(signal, "shutting down");
    member.stop().await.context("stopping cairn")?;
    tracing::info!("stopped");
    Ok(())
}
