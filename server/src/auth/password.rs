//! Passwords: bcrypt at `--bcrypt-cost`, off the async threads.
//!
//! A password is hashed by the member that receives UserAdd or
//! UserChangePassword, before proposing (the raft entry carries only the
//! hash, base64, as etcd 3.5's `hashedPassword`), and checked by the member
//! that receives Authenticate. Both run on tokio's blocking pool. Checks are
//! rate-limited: at most one per core at a time, and a bounded number of
//! callers waiting (the rest are refused with "too many requests"), so a
//! flood of Authenticate calls cannot starve the member. `bcrypt::verify`
//! compares in constant time.

use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use tokio::sync::Semaphore;

use crate::error::EtcdError;

/// bcrypt's lowest cost (Go's `bcrypt.MinCost`).
pub const MIN_COST: u32 = 4;
/// bcrypt's highest cost (Go's `bcrypt.MaxCost`).
pub const MAX_COST: u32 = 31;
/// Callers that may wait for a check, per permit, before more are refused.
const WAITING_PER_PERMIT: usize = 16;

/// Hashes and checks passwords.
#[derive(Debug)]
pub struct Passwords {
    /// `--bcrypt-cost`.
    cost: u32,
    /// One permit per concurrent check (one per core).
    checks: Semaphore,
    /// Callers waiting for a permit now.
    waiting: AtomicUsize,
    /// The most that may wait.
    max_waiting: usize,
}

impl Passwords {
    /// Hashing at `cost` (outside bcrypt's bounds: etcd's default, 10, with
    /// a warning, as etcd's auth store does).
    pub fn new(cost: u32) -> Self {
        let cost = if (MIN_COST..=MAX_COST).contains(&cost) {
            cost
        } else {
            tracing::warn!(
                min_cost = MIN_COST,
                max_cost = MAX_COST,
                default_cost = crate::defaults::BCRYPT_COST,
                given_cost = cost,
                "use default bcrypt cost instead of the invalid given cost"
            );
            crate::defaults::BCRYPT_COST
        };
        let permits = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            cost,
            checks: Semaphore::new(permits),
            waiting: AtomicUsize::new(0),
            max_waiting: permits * WAITING_PER_PERMIT,
        }
    }

    /// The cost new hashes get.
    pub fn cost(&self) -> u32 {
        self.cost
    }

    /// The bcrypt hash of `password`, base64 (what the raft entry carries).
    pub async fn hash(&self, password: String) -> Result<String, EtcdError> {
        let cost = self.cost;
        let hashed = tokio::task::spawn_blocking(move || bcrypt::hash(password, cost))
            .await
            .map_err(|_| EtcdError::Internal)?
            .map_err(|e| {
                tracing::error!(error = %e, "bcrypt failed");
                EtcdError::Internal
            })?;
        Ok(base64::engine::general_purpose::STANDARD.encode(hashed))
    }

    /// Whether `password` matches `hash` (a stored bcrypt hash), rate
    /// limited. A malformed hash never matches.
    pub async fn verify(&self, password: String, hash: Vec<u8>) -> Result<bool, EtcdError> {
        let _permit = match self.checks.try_acquire() {
            Ok(permit) => permit,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                    return Err(EtcdError::TooManyRequests);
                }
                let permit = self.checks.acquire().await;
                self.waiting.fetch_sub(1, Ordering::AcqRel);
                permit.map_err(|_| EtcdError::Stopped)?
            }
        };
        tokio::task::spawn_blocking(move || {
            let Ok(hash) = std::str::from_utf8(&hash) else {
                return false;
            };
            bcrypt::verify(password, hash).unwrap_or(false)
        })
        .await
        .map_err(|_| EtcdError::Internal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_then_verify() {
        let passwords = Passwords::new(MIN_COST);
        let encoded = passwords.hash("s3cret".into()).await.unwrap();
        let hash = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        assert!(hash.starts_with(b"$2"));
        assert!(passwords
            .verify("s3cret".into(), hash.clone())
            .await
            .unwrap());
        assert!(!passwords.verify("wrong".into(), hash).await.unwrap());
        assert!(!passwords
            .verify("s3cret".into(), b"not a hash".to_vec())
            .await
            .unwrap());
    }

    #[test]
    fn a_cost_out_of_bounds_is_etcds_default() {
        assert_eq!(Passwords::new(3).cost(), 10);
        assert_eq!(Passwords::new(32).cost(), 10);
        assert_eq!(Passwords::new(4).cost(), 4);
    }
}
