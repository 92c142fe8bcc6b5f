//! cairn-jepsen: runs a Cairn cluster across simulated zones, injects faults,
//! records what clients saw, and checks it.
//!
//! # Layout
//!
//! * [`history`]: the records of a run (ops, watch events, fault windows) and
//!   their JSON-lines form. Everything downstream reads only this.
//! * [`rng`]: the seeded generator behind `--seed`.
//! * [`auth`]: `--auth`: root user and role, `auth enable`, the clients'
//!   credentials.
//! * [`proxy`]: the user-space fault proxy every client and peer connection
//!   goes through; it knows each connection's source and destination zone and
//!   applies latency, partitions and slow links per link.
//! * [`cluster`]: launches `cairn` processes, one per zone, each on its own
//!   loopback address behind the proxy; kill, pause, restart, wipe.
//! * [`nemesis`]: the faults and their seeded schedule.
//! * [`workload`]: the clients (`register`, `set`, `watch`, `lease`), each
//!   recording its ops.
//! * [`checker`]: one checker per workload, pure functions of the history.
//! * [`report`]: the verdict file and the HTML report.
//! * [`run`]: one run, start to finish: the directory layout of its results.

pub mod auth;
pub mod checker;
pub mod cluster;
pub mod history;
pub mod nemesis;
pub mod proxy;
pub mod report;
pub mod rng;
pub mod run;
pub mod workload;
