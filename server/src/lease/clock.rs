//! Where the lessor's notion of "now" comes from.
//!
//! Only the leader-only half of the lessor (expiries, checkpoint schedule)
//! reads a clock; the replicated half never does. Production uses tokio's
//! clock, so tests pause it (`#[tokio::test(start_paused = true)]`) and move
//! it with `tokio::time::advance`: no sleeps, no wall clock.

use std::fmt::Debug;

use tokio::time::Instant;

/// A monotonic clock.
pub trait Clock: Send + Sync + Debug {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// tokio's clock: real monotonic time, or the paused test clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}
