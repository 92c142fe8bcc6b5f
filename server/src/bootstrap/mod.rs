//! Everything a member does before it serves: bind its listeners
//! ([`listen`]), learn its id when joining an existing cluster ([`join`]),
//! open its data directory and bootstrap a new cluster's first state
//! ([`open`]), check or repair its data ([`recovery`]). `cairn snapshot
//! restore` writes a new data directory ([`restore`]). Member and cluster
//! ids are etcd's ([`ids`]). The TLS of each side, and etcd's checks of the
//! TLS flags, come first ([`tls`]).
//!
//! `embed` calls [`prepare`] and then starts raft and the servers;
//! nothing here knows of `embed`, gRPC or the running member.

pub mod ids;
pub mod join;
pub mod listen;
pub mod open;
pub mod recovery;
pub mod released;
pub mod restore;
pub mod tls;

pub use ids::{cluster_id, member_id};
pub use join::Joined;
pub use listen::{bind, Listeners, LISTEN_BACKLOG};
pub use open::{key_file_path, new_cluster, Opened};
pub use released::Released;
pub use restore::{restore_snapshot, restore_state};

use crate::config::Config;
use crate::raft::Dialer;

/// Why a member could not be prepared (or a snapshot restored).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration does not describe a cluster this member is in.
    #[error(transparent)]
    Config(#[from] crate::config::Error),
    /// A listener could not be opened.
    #[error("cannot listen on {url}: {source}")]
    Listen {
        /// The URL being bound.
        url: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The member's own TLS files or flags cannot be used.
    #[error(transparent)]
    Tls(#[from] cairn_tls::TlsError),
    /// The data directory could not be opened.
    #[error(transparent)]
    Storage(#[from] crate::storage::Error),
    /// The stored data could not be loaded.
    #[error(transparent)]
    Mvcc(#[from] crate::mvcc::Error),
    /// The raft log could not be read or written.
    #[error(transparent)]
    Raft(#[from] crate::raft::Error),
    /// The state machine could not be loaded.
    #[error(transparent)]
    Machine(#[from] crate::machine::Error),
    /// The master key file cannot be used.
    #[error(transparent)]
    KeyFile(#[from] crate::storage::crypto::KeyFileError),
    /// A snapshot could not be restored.
    #[error("snapshot restore: {0}")]
    Restore(String),
    /// A start-up check refused this member's data.
    #[error(transparent)]
    Recovery(#[from] recovery::Error),
    /// The blocking task opening the data directory panicked.
    #[error("server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Learns this member's id when it joins an existing cluster, opens its
/// data directory (bootstrapping a new cluster, or forcing a new one), and
/// runs `--experimental-initial-corrupt-check`: everything before raft.
/// Also returns what joining taught about the cluster's members.
pub async fn prepare(config: &Config, dialer: &Dialer) -> Result<(Opened, Joined), Error> {
    let joined = join::join(config, dialer).await?;
    let open_config = config.clone();
    let joined_id = joined.id;
    let opened = tokio::task::spawn_blocking(move || open::open(&open_config, joined_id)).await??;
    if config.initial_corrupt_check {
        recovery::initial_corrupt_check(
            &opened.machine,
            opened.member_id,
            dialer,
            config.request_timeout(),
        )
        .await?;
    }
    Ok((opened, joined))
}
