//! A live progress bar on stderr, drawn only when stderr is a terminal (so
//! logs, pipes and tests get none).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the bar is redrawn.
const REDRAW: Duration = Duration::from_millis(200);

/// Counts finished requests; draws them when stderr is a terminal.
#[derive(Debug, Clone)]
pub struct Progress {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    total: u64,
    done: AtomicU64,
    finished: AtomicBool,
    started: Instant,
    draw: bool,
}

impl Progress {
    /// A bar for `total` requests, drawn if stderr is a terminal. Must be
    /// called inside a tokio runtime.
    pub fn start(total: u64) -> Progress {
        Self::with_drawing(total, std::io::stderr().is_terminal())
    }

    /// A counter that never draws.
    pub fn hidden(total: u64) -> Progress {
        Self::with_drawing(total, false)
    }

    fn with_drawing(total: u64, draw: bool) -> Progress {
        let progress = Progress {
            shared: Arc::new(Shared {
                total,
                done: AtomicU64::new(0),
                finished: AtomicBool::new(false),
                started: Instant::now(),
                draw,
            }),
        };
        if draw {
            // A weak reference: the drawing stops when every handle is
            // gone, even if a failed run never calls `finish`.
            let shared = Arc::downgrade(&progress.shared);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(REDRAW);
                loop {
                    tick.tick().await;
                    let Some(shared) = shared.upgrade() else {
                        break;
                    };
                    if shared.finished.load(Ordering::Relaxed) {
                        break;
                    }
                    draw_line(&shared);
                }
            });
        }
        progress
    }

    /// One more request done.
    pub fn inc(&self) {
        self.add(1);
    }

    /// `n` more done.
    pub fn add(&self, n: u64) {
        self.shared.done.fetch_add(n, Ordering::Relaxed);
    }

    /// How many are done.
    pub fn done(&self) -> u64 {
        self.shared.done.load(Ordering::Relaxed)
    }

    /// Draws the final state and ends the line.
    pub fn finish(&self) {
        if !self.shared.finished.swap(true, Ordering::Relaxed) && self.shared.draw {
            draw_line(&self.shared);
            let _ = writeln!(std::io::stderr());
        }
    }
}

fn draw_line(shared: &Shared) {
    const WIDTH: u64 = 40;
    let done = shared.done.load(Ordering::Relaxed);
    let total = shared.total.max(1);
    let filled = (done.min(total) * WIDTH / total) as usize;
    let percent = done as f64 * 100.0 / total as f64;
    let bar = format!(
        "{}{}",
        "=".repeat(filled),
        " ".repeat(WIDTH as usize - filled)
    );
    let _ = write!(
        std::io::stderr(),
        "\r {done} / {} [{bar}] {percent:.2}% {}s",
        shared.total,
        shared.started.elapsed().as_secs()
    );
    let _ = std::io::stderr().flush();
}
