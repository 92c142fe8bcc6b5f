//! One run, start to finish.
//!
//! 1. Start the proxy and the cluster (one member per zone).
//! 2. Run the workloads for `duration` while the nemesis follows its
//!    schedule.
//! 3. Stop the workloads; the nemesis heals everything; wait for a leader.
//! 4. Final phase: final reads, watchers catch up, the reference watch reads
//!    the whole history.
//! 5. Stop the cluster, check the history, write the verdict and the report.
//!
//! # The results directory (`OUT/<seed>-<time>/`)
//!
//! | file            | what                                                   |
//! |-----------------|--------------------------------------------------------|
//! | `history.jsonl` | every op, watch record and fault window (JSON lines)   |
//! | `verdict.json`  | the overall verdict, each checker's result, the run's  |
//! |                 | parameters (seed, command line)                        |
//! | `report.html`   | the same, with plots; self-contained                   |
//! | `cluster/`      | the members' data directories, keys and logs (`m1.log`)|
//! |                 | and, with TLS, their certificates (`cluster/certs/`)  |

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use cairn_tls::client::ClientTls;
use tokio::sync::watch;

use crate::checker::{self, CheckResult, Validity};
use crate::cluster::{Cluster, ClusterOptions};
use crate::history::{self, Clock, Recorder};
use crate::nemesis::{self, Nemesis, Schedule};
use crate::proxy::{LatencyModel, Proxy};
use crate::report::{self, MemberMeta, RunMeta};
use crate::rng::Rng;
use crate::workload::{self, Env, Workload};

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The `cairn` binary.
    pub binary: PathBuf,
    /// Where result directories go.
    pub out: PathBuf,
    /// Fixes the fault schedule and the workloads' choices.
    pub seed: u64,
    pub workloads: Vec<Workload>,
    pub schedule: Schedule,
    /// How long the workloads run.
    pub duration: Duration,
    /// Clients per workload.
    pub clients: usize,
    /// Members (spread over the zones).
    pub members: usize,
    pub zones: Vec<String>,
    pub latency: LatencyModel,
    /// An op slower than this is recorded as unknown (writes) or failed (reads).
    pub op_timeout: Duration,
    /// Pause between a client's ops.
    pub think: Duration,
    /// Start the members in the deliberately broken stale-read mode.
    pub broken_stale_reads: bool,
    /// Client and peer TLS (certificates of a CA made for the run, in
    /// `cluster/certs`).
    pub tls: bool,
    /// Auth on: root user and role made and auth enabled at the start,
    /// every client authenticated as root.
    pub auth: bool,
    /// For the report: the command line that repeats this run.
    pub command_line: String,
}

impl RunOptions {
    /// Defaults: 3 members in az-a/b/c, register + watch, no faults, 20 s.
    pub fn new(binary: PathBuf, out: PathBuf, seed: u64) -> Self {
        RunOptions {
            binary,
            out,
            seed,
            workloads: vec![Workload::Register, Workload::Watch],
            schedule: Schedule::default(),
            duration: Duration::from_secs(20),
            clients: 3,
            members: 3,
            zones: vec!["az-a".into(), "az-b".into(), "az-c".into()],
            latency: LatencyModel::default(),
            op_timeout: Duration::from_secs(5),
            think: Duration::from_millis(10),
            broken_stale_reads: false,
            tls: false,
            auth: false,
            command_line: String::new(),
        }
    }
}

/// What a run concluded.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    pub dir: PathBuf,
    pub validity: Validity,
    pub results: Vec<CheckResult>,
}

/// Runs one test; errors are failures of the harness (the cluster did not
/// start, ...), not of the checks, which are in the outcome.
pub async fn run(opts: &RunOptions) -> Result<RunOutcome> {
    let started_at = utc_now();
    let dir = opts.out.join(format!(
        "{}-seed-{}",
        started_at.replace([' ', ':'], "-"),
        opts.seed
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    tracing::info!(dir = %dir.display(), seed = opts.seed, "run");

    let mut rng = Rng::new(opts.seed);
    let proxy = Proxy::new(opts.latency, rng.next_u64());
    let mut cluster_options = ClusterOptions::new(opts.binary.clone(), dir.join("cluster"));
    cluster_options.members = opts.members;
    cluster_options.zones = opts.zones.clone();
    cluster_options.broken_stale_reads = opts.broken_stale_reads;
    cluster_options.tls = opts.tls;
    cluster_options.auth = opts.auth;
    let cluster = Cluster::start(cluster_options, proxy, opts.seed).await?;
    let client_tls_options = cluster.certs().map(|c| c.client.clone());
    let client_tls = client_tls_options
        .as_ref()
        .map(|o| ClientTls::new(o, &cairn_tls::Policy::default()))
        .transpose()
        .context("the clients' TLS")?;
    let credentials = cluster.credentials().cloned();

    let members: Vec<MemberMeta> = cluster
        .members()
        .iter()
        .map(|m| MemberMeta {
            name: m.name.clone(),
            zone: m.zone.clone(),
            client_url: m.admin_url(),
            peer_url: m.peer_url(),
        })
        .collect();
    let zones: Vec<(String, Vec<String>)> = cluster
        .zones()
        .iter()
        .map(|z| (z.clone(), cluster.endpoints_from(z)))
        .collect();
    let reference_endpoints = zones.first().map(|(_, e)| e.clone()).unwrap_or_default();

    let clock = Clock::start();
    let (recorder, recorder_task) = Recorder::create(&dir.join("history.jsonl"), clock)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (healed_tx, healed_rx) = watch::channel(false);
    let env = Env {
        recorder: recorder.clone(),
        zones,
        tls: client_tls,
        credentials: credentials.clone(),
        clients: opts.clients,
        op_timeout: opts.op_timeout,
        think: opts.think,
        stop: stop_rx.clone(),
        healed: healed_rx,
    };

    let nemesis_rng = rng.split();
    let mut workload_rng = rng.split();
    let nemesis_task = tokio::spawn(nemesis::run(
        cluster,
        opts.schedule.clone(),
        nemesis_rng,
        recorder.clone(),
        stop_rx,
    ));
    let workloads = opts.workloads.clone();
    let workload_task =
        tokio::spawn(async move { workload::run_all(&workloads, &env, &mut workload_rng).await });

    tokio::time::sleep(opts.duration).await;
    tracing::info!("workload phase over; healing");
    let _ = stop_tx.send(true);
    let (mut cluster, crashes) = nemesis_task.await.context("the nemesis task failed")?;
    if let Err(e) = cluster.wait_for_leader(Duration::from_secs(30)).await {
        tracing::error!(error = %e, "no leader after the heal");
    }
    if let Err(e) = cluster.wait_healthy(Duration::from_secs(30)).await {
        tracing::error!(error = %e, "cluster not healthy after the heal");
    }
    let _ = healed_tx.send(true);
    match tokio::time::timeout(Duration::from_secs(180), workload_task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "a workload failed"),
        Ok(Err(e)) => tracing::error!(error = %e, "a workload task failed"),
        Err(_) => tracing::error!("the workloads did not finish within 180 s"),
    }
    if opts.workloads.contains(&Workload::Watch) {
        let tls = client_tls_options.as_ref();
        let reference = workload::watch::reference(
            recorder.clone(),
            reference_endpoints,
            tls,
            credentials.as_ref(),
        );
        if let Err(e) = reference.await {
            tracing::error!(error = %e, "reference watch failed");
        }
    }
    // A member may also die in the final phase.
    let mut crashes = crashes;
    crashes.extend(cluster.reap().into_iter().map(|(_, what)| what));
    drop(recorder);
    let pids = cluster.pids();
    cluster.stop().await;
    tracing::debug!(?pids, "cluster stopped");
    let records = recorder_task
        .await
        .context("the history writer failed")?
        .context("writing the history")?;

    let meta = RunMeta {
        seed: opts.seed,
        workloads: opts
            .workloads
            .iter()
            .map(|w| w.name().to_string())
            .collect(),
        nemeses: opts
            .schedule
            .kinds
            .iter()
            .map(|n| n.name().to_string())
            .collect(),
        duration_s: opts.duration.as_secs_f64(),
        members,
        cairn_binary: opts.binary.display().to_string(),
        command_line: opts.command_line.clone(),
        started_at,
    };
    let outcome = check_and_report(&dir, &meta, &records, &crashes)?;
    Ok(outcome)
}

/// The members' own verdict: a member that exited without being asked to
/// (a panic, an abort) is an anomaly whatever the histories say.
fn crash_result(crashes: &[String]) -> CheckResult {
    CheckResult {
        checker: "cluster".into(),
        validity: if crashes.is_empty() {
            Validity::Valid
        } else {
            Validity::Invalid
        },
        summary: if crashes.is_empty() {
            "no member exited on its own".into()
        } else {
            format!("{} member exit(s) nobody asked for", crashes.len())
        },
        anomalies: crashes
            .iter()
            .map(|what| checker::Anomaly {
                kind: "member-crashed".into(),
                description: what.clone(),
                ops: Vec::new(),
                window: None,
            })
            .collect(),
    }
}

/// Checks `records` and writes `verdict.json` and `report.html` into `dir`.
pub fn check_and_report(
    dir: &Path,
    meta: &RunMeta,
    records: &[history::Record],
    crashes: &[String],
) -> Result<RunOutcome> {
    let mut results = checker::check_all(records);
    results.push(crash_result(crashes));
    report::write_verdict(dir, meta, &results, records)?;
    report::write_html(dir, meta, &results, records)?;
    let validity = report::overall(&results);
    Ok(RunOutcome {
        dir: dir.to_path_buf(),
        validity,
        results,
    })
}

/// Checks a saved run again (after a checker changed): reads its history and
/// its verdict's parameters, rewrites the verdict and the report.
pub fn recheck(dir: &Path) -> Result<RunOutcome> {
    let records = history::read_history(&dir.join("history.jsonl"))?;
    let meta = std::fs::read_to_string(dir.join("verdict.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|v| serde_json::from_value::<RunMeta>(v.get("meta")?.clone()).ok())
        .unwrap_or_default();
    // Crashes are not in the history's checks; keep the saved verdict's.
    let crashes: Vec<String> = std::fs::read_to_string(dir.join("verdict.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|v| v.get("results").cloned())
        .and_then(|r| serde_json::from_value::<Vec<CheckResult>>(r).ok())
        .into_iter()
        .flatten()
        .filter(|r| r.checker == "cluster")
        .flat_map(|r| r.anomalies.into_iter().map(|a| a.description))
        .collect();
    check_and_report(dir, &meta, &records, &crashes)
}

/// The nemeses of a schedule, by name (for messages).
pub fn nemesis_names(kinds: &[Nemesis]) -> String {
    if kinds.is_empty() {
        return "none".into();
    }
    kinds.iter().map(|n| n.name()).collect::<Vec<_>>().join(",")
}

/// "YYYY-MM-DD HH:MM:SS" in UTC, without a date crate.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    format_utc(secs)
}

fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(format_utc(1_795_660_234), "2026-11-26 02:30:34");
    }
}
