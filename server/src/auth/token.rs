//! Tokens: what a client presents after Authenticate (gRPC metadata
//! `token`), behind [`TokenProvider`] so that another kind can be plugged
//! in (`--auth-token jwt,...`: the JWT provider is to be wired here, see
//! [`crate::auth::TokenKind`]).
//!
//! [`SimpleTokens`] are etcd's simple tokens: 16 random letters chosen by
//! the member that proposed the Authenticate entry, `.`, and the entry's
//! raft index. Every member assigns the token to the user when it applies
//! the entry, so it is valid on every member; each member keeps it in
//! memory only (a restart forgets every token, as etcd does), for
//! `--auth-token-ttl` after its last use, on an injectable [`Clock`]
//! (tokio's; tests pause it: tokens are assigned on the raft thread, so a
//! test gives a clock that reads its runtime's paused time from there). Disabling auth voids every token; deleting a user or changing its
//! password voids its tokens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::EtcdError;
use crate::lease::{Clock, TokioClock};

/// Letters of a simple token's random part (etcd's).
const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
/// Length of a simple token's random part.
const SIMPLE_TOKEN_LENGTH: usize = 16;

/// How tokens are made and read. Implementations are member-local state
/// changed by applied entries (assign, invalidate, enable, disable) and read
/// on every request (info).
pub trait TokenProvider: Send + Sync + std::fmt::Debug {
    /// The proposer's part of a new token, chosen before proposing the
    /// Authenticate entry (a simple token's random letters; "" if the
    /// provider needs none).
    fn prefix(&self) -> Result<String, EtcdError>;

    /// The token for `user`, assigned while applying the Authenticate
    /// entry at `index` with the proposer's `prefix`, at auth `revision`.
    fn assign(
        &self,
        user: &str,
        revision: u64,
        prefix: &str,
        index: u64,
    ) -> Result<String, EtcdError>;

    /// The user a token stands for and the auth revision it was checked at
    /// (the store's `revision` now, for simple tokens); None for a token
    /// that is unknown, malformed or expired. Renews a simple token.
    fn info(&self, token: &str, revision: u64) -> Option<(String, u64)>;

    /// The raft index a token needs applied here before it can be known
    /// (a simple token's suffix), if any.
    fn needs_index(&self, token: &str) -> Option<u64>;

    /// Voids the tokens of `user` (deleted, or its password changed).
    fn invalidate_user(&self, user: &str);

    /// Auth was enabled.
    fn enable(&self);

    /// Auth was disabled: every token is void.
    fn disable(&self);
}

/// A simple token's user and when it expires unless used.
#[derive(Debug)]
struct Assigned {
    /// The user the token stands for.
    user: String,
    /// When it expires (renewed by each use).
    deadline: Instant,
}

/// etcd's simple tokens.
#[derive(Debug)]
pub struct SimpleTokens {
    /// `--auth-token-ttl`: how long a token lives after its last use.
    ttl: Duration,
    /// Token -> its user and deadline.
    tokens: Mutex<Tokens>,
    /// Deadlines are read on it (tokens are assigned on the raft thread
    /// and read on the runtime's).
    clock: Arc<dyn Clock>,
}

/// The table and when it is next swept of expired tokens.
#[derive(Debug, Default)]
struct Tokens {
    /// Token -> assignment.
    by_token: HashMap<String, Assigned>,
    /// Sweep expired tokens once the table grows past this (doubling), so
    /// that tokens nobody uses again do not pile up.
    sweep_at: usize,
}

impl SimpleTokens {
    /// Simple tokens living `ttl` after their last use (0: etcd's 300 s),
    /// on tokio's clock.
    pub fn new(ttl: Duration) -> Self {
        Self::with_clock(ttl, Arc::new(TokioClock))
    }

    /// [`SimpleTokens::new`] on `clock`.
    pub fn with_clock(ttl: Duration, clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            ttl: if ttl.is_zero() {
                crate::defaults::AUTH_TOKEN_TTL
            } else {
                ttl
            },
            tokens: Mutex::new(Tokens {
                by_token: HashMap::new(),
                sweep_at: 1024,
            }),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Tokens> {
        // Every critical section is a map operation.
        crate::locks::lock(&self.tokens)
    }

    /// How many tokens are held (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.table().by_token.len()
    }

    /// Whether no token is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl TokenProvider for SimpleTokens {
    fn prefix(&self) -> Result<String, EtcdError> {
        use ring::rand::SecureRandom;
        let random = ring::rand::SystemRandom::new();
        let mut out = String::with_capacity(SIMPLE_TOKEN_LENGTH);
        while out.len() < SIMPLE_TOKEN_LENGTH {
            let mut byte = [0u8; 1];
            random.fill(&mut byte).map_err(|_| EtcdError::Internal)?;
            // Rejection sampling: 52 letters, no modulo bias.
            let b = usize::from(byte[0]);
            if b < LETTERS.len() * 4 {
                out.push(char::from(LETTERS[b % LETTERS.len()]));
            }
        }
        Ok(out)
    }

    fn assign(
        &self,
        user: &str,
        _revision: u64,
        prefix: &str,
        index: u64,
    ) -> Result<String, EtcdError> {
        let token = format!("{prefix}.{index}");
        let now = self.clock.now();
        let mut table = self.table();
        if table.by_token.len() >= table.sweep_at {
            table.by_token.retain(|_, a| a.deadline > now);
            table.sweep_at = (table.by_token.len() * 2).max(1024);
        }
        table.by_token.insert(
            token.clone(),
            Assigned {
                user: user.to_string(),
                deadline: now + self.ttl,
            },
        );
        Ok(token)
    }

    fn info(&self, token: &str, revision: u64) -> Option<(String, u64)> {
        let now = self.clock.now();
        let mut table = self.table();
        let assigned = table.by_token.get_mut(token)?;
        if assigned.deadline <= now {
            table.by_token.remove(token);
            return None;
        }
        assigned.deadline = now + self.ttl;
        Some((assigned.user.clone(), revision))
    }

    fn needs_index(&self, token: &str) -> Option<u64> {
        let (_, index) = token.split_once('.')?;
        index.parse().ok()
    }

    fn invalidate_user(&self, user: &str) {
        self.table().by_token.retain(|_, a| a.user != user);
    }

    fn enable(&self) {}

    fn disable(&self) {
        self.table().by_token.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_token_lives_its_ttl_after_its_last_use() {
        let tokens = SimpleTokens::new(Duration::from_secs(300));
        let prefix = tokens.prefix().unwrap();
        assert_eq!(prefix.len(), 16);
        assert!(prefix.bytes().all(|b| b.is_ascii_alphabetic()));
        let token = tokens.assign("alice", 1, &prefix, 42).unwrap();
        assert_eq!(token, format!("{prefix}.42"));
        assert_eq!(tokens.needs_index(&token), Some(42));
        assert_eq!(tokens.info(&token, 7), Some(("alice".into(), 7)));
        // Used at 299 s: renewed for another 300 s.
        tokio::time::advance(Duration::from_secs(299)).await;
        assert!(tokens.info(&token, 7).is_some());
        tokio::time::advance(Duration::from_secs(299)).await;
        assert!(tokens.info(&token, 7).is_some());
        // Unused for 300 s: gone.
        tokio::time::advance(Duration::from_secs(300)).await;
        assert_eq!(tokens.info(&token, 7), None);
        assert!(tokens.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn disable_and_invalidate_void_tokens() {
        let tokens = SimpleTokens::new(Duration::ZERO);
        let a = tokens.assign("alice", 1, "abc", 1).unwrap();
        let b = tokens.assign("bob", 1, "def", 2).unwrap();
        tokens.invalidate_user("alice");
        assert_eq!(tokens.info(&a, 1), None);
        assert!(tokens.info(&b, 1).is_some());
        tokens.disable();
        assert_eq!(tokens.info(&b, 1), None);
        // A malformed or unknown token is simply unknown.
        assert_eq!(tokens.info("nonsense", 1), None);
        assert_eq!(tokens.needs_index("nonsense"), None);
        // The default TTL is etcd's 300 s.
        let c = tokens.assign("carol", 1, "ghi", 3).unwrap();
        tokio::time::advance(Duration::from_secs(299)).await;
        assert!(tokens.info(&c, 1).is_some());
        tokio::time::advance(Duration::from_secs(301)).await;
        assert_eq!(tokens.info(&c, 1), None);
    }
}

/// The token provider `--auth-token` asks for: etcd's simple tokens (valid
/// `ttl` after their last use) or JWT (whose key files are read now).
pub fn provider(
    kind: &crate::auth::TokenKind,
    ttl: Duration,
) -> Result<Arc<dyn TokenProvider>, crate::auth::jwt::JwtError> {
    Ok(match kind {
        crate::auth::TokenKind::Simple => Arc::new(SimpleTokens::new(ttl)),
        crate::auth::TokenKind::Jwt(options) => {
            Arc::new(JwtTokens(crate::auth::jwt::Jwt::new(options)?))
        }
    })
}

/// etcd's JWT tokens as a [`TokenProvider`]: signed when the Authenticate
/// entry applies (each member signs its own; the proposer's reaches the
/// client), verified on every request with no state, carrying the auth
/// revision they were made at (so a token from before a change is "old").
#[derive(Debug)]
pub struct JwtTokens(crate::auth::jwt::Jwt);

impl TokenProvider for JwtTokens {
    fn prefix(&self) -> Result<String, EtcdError> {
        Ok(String::new())
    }

    fn assign(
        &self,
        user: &str,
        revision: u64,
        _prefix: &str,
        _index: u64,
    ) -> Result<String, EtcdError> {
        self.0.assign(user, revision).map_err(|e| {
            tracing::warn!(error = %e, "cannot sign a JWT token");
            EtcdError::Internal
        })
    }

    fn info(&self, token: &str, _revision: u64) -> Option<(String, u64)> {
        self.0.info(token)
    }

    fn needs_index(&self, _token: &str) -> Option<u64> {
        None
    }

    // A JWT token lives until it expires, as etcd's: nothing to void.
    fn invalidate_user(&self, _user: &str) {}

    fn enable(&self) {}

    fn disable(&self) {}
}
