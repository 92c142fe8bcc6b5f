//! The request rate limit (`--rate`, `--put-rate`): a token bucket shared by
//! every client, like etcd's `rate.NewLimiter(rate, burst)`. Implemented as
//! a virtual schedule (GCRA): each request reserves the next slot, `burst`
//! requests may start back to back, and after that one per `1/rate`.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A shared rate limit; `rate` 0 means none.
#[derive(Debug)]
pub struct Limiter {
    /// `1/rate`, or `None` for no limit.
    interval: Option<Duration>,
    /// How far ahead of now the schedule may run: `(burst-1) * interval`.
    tolerance: Duration,
    /// The theoretical arrival time of the next request.
    next: Mutex<Option<Instant>>,
}

impl Limiter {
    /// At most `rate` requests a second with bursts of `burst` (at least 1);
    /// `rate` 0 is unlimited.
    pub fn new(rate: u64, burst: u64) -> Limiter {
        let interval = (rate > 0).then(|| Duration::from_secs_f64(1.0 / rate as f64));
        let extra = u32::try_from(burst.max(1) - 1).unwrap_or(u32::MAX);
        Limiter {
            interval,
            tolerance: interval
                .map(|i| i.saturating_mul(extra))
                .unwrap_or_default(),
            next: Mutex::new(None),
        }
    }

    /// No limit.
    pub fn unlimited() -> Limiter {
        Limiter::new(0, 1)
    }

    /// When a request asked for at `now` may start; reserves that slot.
    fn reserve(&self, now: Instant) -> Instant {
        let Some(interval) = self.interval else {
            return now;
        };
        let mut next = crate::lock(&self.next);
        let tat = next.map_or(now, |t| t.max(now));
        let start = now.max(tat.checked_sub(self.tolerance).unwrap_or(now));
        *next = Some(tat.max(start) + interval);
        start
    }

    /// Waits for this request's turn.
    pub async fn wait(&self) {
        if self.interval.is_none() {
            return;
        }
        let at = self.reserve(Instant::now());
        tokio::time::sleep_until(at).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        // 10/s, burst 1: 0, 100, 200 ms.
        let l = Limiter::new(10, 1);
        assert_eq!(l.reserve(now), now);
        assert_eq!(l.reserve(now), now + ms(100));
        assert_eq!(l.reserve(now), now + ms(200));
        // Idle time is not banked beyond the burst.
        assert_eq!(l.reserve(now + ms(1000)), now + ms(1000));
        assert_eq!(l.reserve(now + ms(1000)), now + ms(1100));
        // 10/s, burst 3: three at once, then every 100 ms.
        let l = Limiter::new(10, 3);
        assert_eq!(l.reserve(now), now);
        assert_eq!(l.reserve(now), now);
        assert_eq!(l.reserve(now), now);
        assert_eq!(l.reserve(now), now + ms(100));
        assert_eq!(l.reserve(now), now + ms(200));
        // Unlimited.
        let l = Limiter::unlimited();
        for _ in 0..3 {
            assert_eq!(l.reserve(now), now);
        }
    }
}
