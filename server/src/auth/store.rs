//! [`AuthStore`]: the auth state of one member's state machine, in memory
//! and on disk, and its token provider.
//!
//! On disk the whole state is ONE record, `cairnpb.AuthState` under the key
//! [`RECORD_KEY`] of column family `auth`, whose values are sealed at rest
//! like user data: no user name, role name or password hash is ever on
//! disk in plain text, not even in a record key. A change is staged into a
//! store write transaction committed with its entry's index (so it lands
//! atomically with the applied index) and swapped into memory only once
//! that write succeeded. The record travels in snapshots with the rest of
//! the replicated state.
//!
//! Reads are lock-light: the state is an `Arc` replaced whole by each
//! change (changes are rare), and whether auth is enabled is an atomic, the
//! one check every request makes while auth is off.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use cairn_proto::cairnpb::auth_request::Request;

use super::state::{AuthState, Effect};
use super::token::{SimpleTokens, TokenProvider};
use crate::error::EtcdError;
use crate::mvcc::Store;
use crate::storage::{BatchOp, Cf, Engine};

/// The key of the one auth record (column family `auth`).
pub const RECORD_KEY: &[u8] = b"state";

/// A record that does not decode: the member cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The auth record is corrupt.
    #[error("corrupt auth record: {0}")]
    Corrupt(String),
    /// The engine failed.
    #[error(transparent)]
    Storage(#[from] crate::storage::Error),
    /// The store failed to commit.
    #[error(transparent)]
    Mvcc(#[from] crate::mvcc::Error),
}

/// The auth state of one member's state machine.
#[derive(Debug)]
pub struct AuthStore {
    /// Mirrors `state.enabled()`: the one check of the hot path while auth
    /// is off.
    enabled: AtomicBool,
    /// The current state, replaced whole by each applied change.
    state: RwLock<Arc<AuthState>>,
    /// Hands out and reads tokens; member-local (changed by applied
    /// entries, never persisted). Set once at start-up (`--auth-token`).
    tokens: RwLock<Arc<dyn TokenProvider>>,
}

impl Default for AuthStore {
    fn default() -> Self {
        Self::new()
    }
}

impl AuthStore {
    /// An empty store (auth off, revision 1) with simple tokens of etcd's
    /// default TTL.
    pub fn new() -> Self {
        Self {
            enabled: AtomicBool::new(false),
            state: RwLock::new(Arc::new(AuthState::default())),
            tokens: RwLock::new(Arc::new(SimpleTokens::new(std::time::Duration::ZERO))),
        }
    }

    /// Uses `tokens` from now on (at start-up, before serving).
    pub fn set_tokens(&self, tokens: Arc<dyn TokenProvider>) {
        if self.enabled() {
            tokens.enable();
        }
        *crate::locks::write(&self.tokens) = tokens;
    }

    /// The token provider.
    pub fn tokens(&self) -> Arc<dyn TokenProvider> {
        Arc::clone(&crate::locks::read(&self.tokens))
    }

    /// Whether auth is enabled (one atomic load).
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// The current state.
    pub fn state(&self) -> Arc<AuthState> {
        Arc::clone(&crate::locks::read(&self.state))
    }

    fn install(&self, state: AuthState) {
        let enabled = state.enabled();
        *crate::locks::write(&self.state) = Arc::new(state);
        self.enabled.store(enabled, Ordering::Release);
    }

    /// Replaces the state with what `engine` holds (start-up, and after a
    /// snapshot was installed).
    pub fn load(&self, engine: &dyn Engine) -> Result<(), Error> {
        let state = match engine.get(Cf::Auth, RECORD_KEY)? {
            Some(record) => AuthState::decode(&record).map_err(Error::Corrupt)?,
            None => AuthState::default(),
        };
        let tokens = self.tokens();
        if state.enabled() {
            tokens.enable();
        } else {
            tokens.disable();
        }
        self.install(state);
        Ok(())
    }

    /// Applies the auth change `request` of the entry at `index`: the new
    /// record and the index in one write, then the new state in memory.
    /// Returns the token for an authentication. `Err` only when the member
    /// cannot go on (the disk failed).
    pub fn apply(
        &self,
        store: &Store,
        index: u64,
        request: Request,
    ) -> Result<Result<Option<String>, EtcdError>, Error> {
        let current = self.state();
        let mut next = (*current).clone();
        let effect = match next.apply(request) {
            Ok(effect) => effect,
            Err(e) => {
                store.write().commit(Some(index))?;
                return Ok(Err(e));
            }
        };
        if let Effect::Authenticated { user, simple_token } = effect {
            store.write().commit(Some(index))?;
            let assigned = self
                .tokens()
                .assign(&user, current.revision(), &simple_token, index);
            if assigned.is_ok() {
                tracing::debug!(user = %user, "authenticated a user");
            }
            return Ok(assigned.map(Some));
        }
        let mut txn = store.write();
        txn.stage(BatchOp::Put {
            cf: Cf::Auth,
            key: RECORD_KEY.to_vec(),
            value: next.encode(),
        });
        txn.commit(Some(index))?;
        tracing::info!(
            revision = next.revision(),
            enabled = next.enabled(),
            "auth store changed"
        );
        self.install(next);
        let tokens = self.tokens();
        match effect {
            Effect::Enabled => tokens.enable(),
            Effect::Disabled => tokens.disable(),
            Effect::InvalidateUser(user) => tokens.invalidate_user(&user),
            Effect::None | Effect::Authenticated { .. } => {}
        }
        Ok(Ok(None))
    }
}
