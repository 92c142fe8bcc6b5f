//! Test support: a member on a temporary directory and a free port.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure
#![allow(dead_code)]

use std::path::Path;

use cairn_client::Client;
use cairn_server::embed::{self, Config, Handle};

/// A config for `dir`, listening on a free loopback port.
pub fn config(dir: &Path) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        listen_client_urls: vec!["http://127.0.0.1:0".into()],
        listen_peer_urls: vec!["http://127.0.0.1:0".into()],
        ..Config::default()
    }
}

/// Starts a member on `dir`.
pub async fn start(dir: &Path) -> Handle {
    embed::start(config(dir)).await.expect("member starts")
}

/// A client connected to `member`.
pub async fn client(member: &Handle) -> Client {
    Client::connect(member.client_urls()[0].clone())
        .await
        .expect("client connects")
}
pub mod cluster;
