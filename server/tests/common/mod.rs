//! Test support: a member on a temporary directory and a free port.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure
#![allow(dead_code)]

use std::path::Path;

use cairn_client::Client;
use cairn_server::embed::{self, Config, Handle};

/// A config for a member in `dir` (data in `dir/member`, its generated key
/// file `dir/member.key` beside it), listening on free loopback ports.
pub fn config(dir: &Path) -> Config {
    Config {
        data_dir: dir.join("member"),
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
