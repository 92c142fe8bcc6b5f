//! The standard `process_*` metrics (client_golang's process collector,
//! which etcd registers) and etcd's `os_fd_used` / `os_fd_limit`, read from
//! `/proc/self` at each scrape.
//!
//! Not the prometheus crate's own collector: it counts CPU time in whole
//! seconds (an integer counter), where Go's is a float, and it lacks
//! `process_virtual_memory_max_bytes`.

use prometheus::{Counter, Gauge, IntGauge, Registry};

use super::{gauge, int_gauge};

/// `process_*` and `os_fd_*`.
#[derive(Debug)]
pub struct ProcessMetrics {
    cpu: Counter,
    open_fds: IntGauge,
    max_fds: IntGauge,
    virtual_memory: Gauge,
    virtual_memory_max: Gauge,
    resident_memory: Gauge,
    start_time: Gauge,
    fd_used: IntGauge,
    fd_limit: IntGauge,
}

impl ProcessMetrics {
    pub(super) fn new(r: &Registry) -> Result<Self, prometheus::Error> {
        let cpu = Counter::with_opts(prometheus::Opts::new(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
        ))?;
        r.register(Box::new(cpu.clone()))?;
        Ok(Self {
            cpu,
            open_fds: int_gauge(r, "process_open_fds", "Number of open file descriptors.")?,
            max_fds: int_gauge(
                r,
                "process_max_fds",
                "Maximum number of open file descriptors.",
            )?,
            virtual_memory: gauge(
                r,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
            )?,
            virtual_memory_max: gauge(
                r,
                "process_virtual_memory_max_bytes",
                "Maximum amount of virtual memory available in bytes.",
            )?,
            resident_memory: gauge(
                r,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
            )?,
            start_time: gauge(
                r,
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
            )?,
            fd_used: int_gauge(r, "os_fd_used", "The number of used file descriptors.")?,
            fd_limit: int_gauge(r, "os_fd_limit", "The file descriptor limit.")?,
        })
    }

    /// Reads the current values (what cannot be read keeps its last value).
    pub(super) fn refresh(&self) {
        let Ok(me) = procfs::process::Process::myself() else {
            return;
        };
        if let Ok(stat) = me.stat() {
            let ticks = procfs::ticks_per_second() as f64;
            let total = (stat.utime + stat.stime) as f64 / ticks;
            // A counter only goes up: add what was spent since last time.
            let spent = total - self.cpu.get();
            if spent > 0.0 {
                self.cpu.inc_by(spent);
            }
            self.virtual_memory.set(stat.vsize as f64);
            self.resident_memory
                .set(stat.rss as f64 * procfs::page_size() as f64);
            if let Ok(boot) = procfs::boot_time_secs() {
                self.start_time
                    .set(boot as f64 + stat.starttime as f64 / ticks);
            }
        }
        if let Ok(count) = me.fd_count() {
            let count = i64::try_from(count).unwrap_or(i64::MAX);
            self.open_fds.set(count);
            self.fd_used.set(count);
        }
        if let Ok(limits) = me.limits() {
            let files = soft_limit(&limits.max_open_files.soft_limit);
            self.max_fds.set(i64::try_from(files).unwrap_or(i64::MAX));
            self.fd_limit.set(i64::try_from(files).unwrap_or(i64::MAX));
            self.virtual_memory_max
                .set(soft_limit(&limits.max_address_space.soft_limit) as f64);
        }
    }
}

/// A limit as Go reports it: "unlimited" is the largest value.
fn soft_limit(limit: &procfs::process::LimitValue) -> u64 {
    match limit {
        procfs::process::LimitValue::Value(v) => *v,
        procfs::process::LimitValue::Unlimited => u64::MAX,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    #[test]
    fn the_process_is_read() {
        let r = prometheus::Registry::new();
        let m = super::ProcessMetrics::new(&r).unwrap();
        m.refresh();
        assert!(m.resident_memory.get() > 0.0);
        assert!(m.open_fds.get() > 0);
        assert!(m.start_time.get() > 1.6e9);
    }
}
