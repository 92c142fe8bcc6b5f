//! How the raft thread goes idle once it has nothing to do: it sleeps at
//! once, yields the core a few times first, or spins a while first,
//! chosen by how soon arrivals ended its last sleeps.
//!
//! Why not always sleep at once: a sleeping thread's wake-up costs tens of
//! microseconds on a virtual machine (its idle core halted; the wake is an
//! interrupt through the host): ~30 µs between a wake-up and the thread
//! running, measured with `perf sched` on the machine of
//! docs/benchmarks.md. A lone writer's put wakes raft threads three to five
//! times on its way (the request's worker wakes its member's thread, an
//! append wakes each follower's, their answers the leader's, the commit the
//! followers' again), every one of them on the put's critical path.
//!
//! So, two rules (each bound below measured in interleaved A/Bs on
//! three-member clusters, docs/benchmarks.md, "A raft thread that spins
//! before it sleeps"):
//! - **busy**: the last sleep ended within [`SHORT_SLEEP`] of its start.
//!   Inputs come close together (a member under 1,000 clients' reads); the
//!   thread yields [`BUSY_YIELDS`] times first, so that the threads sending
//!   them run instead of waking it. This rule, the only one before the
//!   next existed, wins over it: the rows under 1,000 clients were tuned
//!   with it, and a busy thread's inputs come within a few yields.
//! - **back-to-back**: the last [`SHORT_IN_A_ROW`] sleeps each ended within
//!   [`SPIN_FOR`]. The thread's work comes back soon after each time it
//!   goes idle (a lone writer's puts, one after the other); it spins
//!   (yielding, looking at its inputs after each yield) for up to
//!   [`SPIN_FOR`] before it sleeps, and the next input finds it awake. One
//!   short sleep is not enough: under a slow stream of writes, a follower's
//!   sleep between its answer to an append and the commit is short and the
//!   one after it long; spinning after every apply there took the cores
//!   from the watch streams delivering the events at that moment (the 100
//!   watchers' p99 +15%).
//!
//! A spin ends early once another thread takes the core (a yield that
//! lasted longer than [`CEDED`]): spinning pays only on a core that would
//! otherwise sit idle. And a spin that ends without an input lets the next
//! chance to spin go by, two after the next such spin, and so on up to
//! [`MAX_SKIPS`], until a spin finds one: a leader under 1,000 puts/s gets
//! its followers' answers close together and the next proposal long after,
//! and spinning after each burst cost the 10,000 watchers' row 12–17% more
//! CPU and 15–20% on its p99, and the lease keep-alives 7–14% of their
//! rate (both level with the skips). An idle cluster spins next to never: a
//! follower's sleeps end at its ticks or a heartbeat, far apart; the
//! leader's two heartbeat answers come close together once a tick, and
//! its spins after them find nothing, so it soon lets 64 chances go by
//! for each one it takes (a 300 µs spin every 6.5 s at most, at etcd's
//! 100 ms heartbeat).

use std::time::Duration;

/// A sleep that an arrival cut shorter than this marks the thread busy.
const SHORT_SLEEP: Duration = Duration::from_micros(50);
/// How many times a busy thread yields, looking for inputs after each,
/// before it sleeps.
const BUSY_YIELDS: usize = 4;
/// How long a thread whose inputs come back to back spins before it
/// sleeps; a sleep that an arrival ended within this counts as short.
const SPIN_FOR: Duration = Duration::from_micros(300);
/// How many short sleeps in a row make a thread spin.
const SHORT_IN_A_ROW: u8 = 2;
/// The most chances to spin skipped after spins that found nothing (a
/// power of two: each such spin doubles the skips, up to this).
const MAX_SKIPS: u8 = 64;
/// A yield that took longer than this gave the core to another thread: the
/// core is wanted, and a spinning thread stops and sleeps.
const CEDED: Duration = Duration::from_micros(10);

/// What the thread's last sleeps were like (see the module doc).
#[derive(Debug, Default)]
pub(super) struct Idle {
    /// An arrival ended the last sleep within [`SHORT_SLEEP`].
    busy: bool,
    /// How many sleeps in a row an arrival ended within [`SPIN_FOR`]
    /// (saturating).
    short_sleeps: u8,
    /// Chances to spin to let go by, after a spin that found nothing.
    skips: u8,
    /// How many to let go by after the next spin that finds nothing:
    /// doubled by each, back to one by a spin that finds an input.
    next_skips: u8,
}

/// How long the thread keeps looking for inputs before it sleeps: while
/// either bound holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BeforeSleep {
    /// Yields, each followed by a look.
    pub yields: usize,
    /// Or for this long since it began, yielding between looks.
    pub spin: Duration,
}

impl BeforeSleep {
    /// Sleep at once.
    const SLEEP: Self = Self {
        yields: 0,
        spin: Duration::ZERO,
    };
    /// Yield a few times first (busy).
    const YIELD: Self = Self {
        yields: BUSY_YIELDS,
        spin: Duration::ZERO,
    };
    /// Spin first (back to back).
    const SPIN: Self = Self {
        yields: 0,
        spin: SPIN_FOR,
    };

    /// Whether to yield and look once more, after `yields` of them,
    /// `spun` since the first, the last of them taking `last_yield`.
    pub fn goes_on(&self, yields: usize, spun: Duration, last_yield: Duration) -> bool {
        yields < self.yields || (spun < self.spin && last_yield <= CEDED)
    }
}

impl Idle {
    /// What the thread does before its next sleep.
    pub fn before_sleep(&mut self) -> BeforeSleep {
        if self.busy {
            BeforeSleep::YIELD
        } else if self.short_sleeps < SHORT_IN_A_ROW {
            BeforeSleep::SLEEP
        } else if self.skips > 0 {
            self.skips -= 1;
            BeforeSleep::SLEEP
        } else {
            BeforeSleep::SPIN
        }
    }

    /// Whether the thread would sleep at once, neither yielding nor
    /// spinning first (what the inbox's tests look at).
    #[cfg(test)]
    pub fn sleeps_at_once(&self) -> bool {
        !self.busy && self.short_sleeps < SHORT_IN_A_ROW
    }

    /// Notes how a spin ended: with an input (`found`), or with nothing
    /// in [`SPIN_FOR`] or another thread taking the core. A spin that finds
    /// nothing was a core's time for nothing, and a thread whose spins keep
    /// finding nothing (its inputs come in short bursts with long gaps
    /// between, as a leader's under 1,000 puts/s: the followers' answers
    /// close together, the next proposal later) lets ever more chances go
    /// by.
    pub fn spun(&mut self, found: bool) {
        if found {
            self.next_skips = 1;
        } else {
            self.skips = self.next_skips.max(1);
            self.next_skips = self.skips.saturating_mul(2).min(MAX_SKIPS);
        }
    }

    /// Notes a sleep that lasted `slept` and was ended by an arrival
    /// (`woken`) or by its timeout.
    pub fn slept(&mut self, woken: bool, slept: Duration) {
        self.busy = woken && slept < SHORT_SLEEP;
        self.short_sleeps = if woken && slept < SPIN_FOR {
            self.short_sleeps.saturating_add(1)
        } else {
            0
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLEEP: BeforeSleep = BeforeSleep::SLEEP;
    const YIELD: BeforeSleep = BeforeSleep::YIELD;
    const SPIN: BeforeSleep = BeforeSleep::SPIN;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    /// A case's name, its sleeps (ended by an arrival?, how long), and what
    /// the thread does next.
    type Case<'a> = (&'a str, &'a [(bool, Duration)], BeforeSleep);

    /// Each case: the sleeps so far (ended by an arrival?, how long), and
    /// what the thread does before the next.
    #[test]
    fn the_last_sleeps_choose_what_comes_before_the_next() {
        let cases: &[Case] = &[
            ("a new thread sleeps at once", &[], SLEEP),
            ("one short sleep is not enough", &[(true, us(100))], SLEEP),
            (
                "two in a row spin",
                &[(true, us(100)), (true, us(250))],
                SPIN,
            ),
            (
                "and go on spinning",
                &[(true, us(100)), (true, us(100)), (true, us(60))],
                SPIN,
            ),
            (
                "a long sleep between breaks the row (a slow stream of writes)",
                &[(true, us(100)), (true, us(5_000)), (true, us(100))],
                SLEEP,
            ),
            (
                "a sleep to its timeout breaks the row (an idle member's ticks)",
                &[(true, us(100)), (false, us(100))],
                SLEEP,
            ),
            ("a very short sleep yields", &[(true, us(20))], YIELD),
            (
                "a busy thread yields rather than spins",
                &[(true, us(100)), (true, us(20))],
                YIELD,
            ),
            (
                "and spins once its inputs are no longer that close",
                &[(true, us(20)), (true, us(20)), (true, us(100))],
                SPIN,
            ),
            ("a timeout is never busy", &[(false, us(1))], SLEEP),
            ("the row saturates", &[(true, us(100)); 300], SPIN),
        ];
        for (name, sleeps, want) in cases {
            let mut idle = Idle::default();
            for &(woken, slept) in *sleeps {
                idle.slept(woken, slept);
            }
            assert_eq!(idle.before_sleep(), *want, "{name}");
        }
    }

    #[test]
    fn spins_that_find_nothing_let_ever_more_chances_go_by() {
        let mut idle = Idle::default();
        idle.slept(true, us(100));
        idle.slept(true, us(100));
        let chances = |idle: &mut Idle, n: usize, found: bool| {
            let mut spun = Vec::new();
            for _ in 0..n {
                let before = idle.before_sleep();
                spun.push(before == SPIN);
                if before == SPIN {
                    idle.spun(found);
                }
                idle.slept(true, us(100));
            }
            spun
        };
        let (t, f) = (true, false);
        // Spin, let one go by, spin, two, spin, four, spin, eight...
        assert_eq!(
            chances(&mut idle, 12, false),
            [t, f, t, f, f, t, f, f, f, f, t, f]
        );
        // ... up to MAX_SKIPS.
        let spins = chances(&mut idle, 1_000, false);
        let gaps: Vec<usize> = spins
            .split(|&spun| spun)
            .skip(1)
            .map(|gap| gap.len())
            .collect();
        assert!(
            gaps.iter().all(|&g| g <= usize::from(MAX_SKIPS)),
            "{gaps:?}"
        );
        assert!(gaps.contains(&usize::from(MAX_SKIPS)), "{gaps:?}");
        // A spin that finds an input: every chance is taken again, and the
        // next that finds nothing lets one go by.
        while !chances(&mut idle, 1, true)[0] {}
        assert_eq!(chances(&mut idle, 3, true), [t, t, t]);
        assert_eq!(chances(&mut idle, 4, false), [t, f, t, f]);
    }

    #[test]
    fn a_spin_is_bounded_by_time_and_by_other_threads_yields_by_count() {
        let zero = Duration::ZERO;
        assert!(!SLEEP.goes_on(0, zero, zero));
        assert!(YIELD.goes_on(BUSY_YIELDS - 1, Duration::from_secs(1), CEDED * 2));
        assert!(!YIELD.goes_on(BUSY_YIELDS, zero, zero));
        assert!(SPIN.goes_on(1_000, SPIN_FOR - us(1), CEDED));
        assert!(!SPIN.goes_on(0, SPIN_FOR, zero));
        // Another thread took the core during the last yield: it is wanted.
        assert!(!SPIN.goes_on(3, us(20), CEDED + us(1)));
    }
}
