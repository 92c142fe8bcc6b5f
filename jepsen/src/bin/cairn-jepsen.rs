//! `cairn-jepsen`: fault injection across simulated zones, with checked
//! histories. See jepsen/README.md.
//!
//! ```text
//! cairn-jepsen run   [--workload register,watch] [--nemesis kill,partition] [--time-limit 30] [--seed N] ...
//! cairn-jepsen suite [--quick]     # the matrix CI runs
//! cairn-jepsen check DIR           # check a saved run again
//! ```
//! Exit status: 0 all checks valid, 1 an anomaly was found, 2 a check was
//! inconclusive, 3 the harness itself failed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use cairn_jepsen::checker::Validity;
use cairn_jepsen::nemesis::{Nemesis, Schedule};
use cairn_jepsen::proxy::LatencyModel;
use cairn_jepsen::run::{self, RunOptions, RunOutcome};
use cairn_jepsen::workload::Workload;
use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "cairn-jepsen",
    version,
    about = "Fault injection across simulated zones, with checked histories"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// One run: a cluster, workloads, faults, checks.
    Run(RunArgs),
    /// The short matrix CI runs: register + watch under kill and under
    /// partition, every workload under a zone loss, then the self-test (a
    /// server built with `jepsen-broken` serving stale reads must be caught).
    Suite(SuiteArgs),
    /// Check a saved run directory again; rewrites its verdict and report.
    Check {
        /// A run directory (holding history.jsonl).
        dir: PathBuf,
    },
}

#[derive(Args, Debug, Clone)]
struct Common {
    /// The cairn binary (default: `cairn` next to this program).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Where run directories are written.
    #[arg(long, default_value = "jepsen/results")]
    out: PathBuf,
    /// Seed of the fault schedule and the workloads' choices (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Members (spread over az-a, az-b, az-c).
    #[arg(long, default_value_t = 3)]
    members: usize,
    /// Clients per workload.
    #[arg(long, default_value_t = 3)]
    clients: usize,
    /// One-way latency between zones, ms.
    #[arg(long, default_value_t = 1)]
    cross_zone_ms: u64,
    /// One-way latency inside a zone, ms.
    #[arg(long, default_value_t = 0)]
    same_zone_ms: u64,
    /// Random extra latency per chunk, up to this many ms.
    #[arg(long, default_value_t = 1)]
    jitter_ms: u64,
    /// Op timeout, seconds: a slower write is recorded as unknown.
    #[arg(long, default_value_t = 5)]
    op_timeout: u64,
    /// Pause between a client's ops, ms.
    #[arg(long, default_value_t = 10)]
    think_ms: u64,
    /// Seconds of quiet before each fault: MIN..MAX.
    #[arg(long, default_value = "2..4", value_parser = parse_range)]
    quiet: (Duration, Duration),
    /// Seconds each fault lasts: MIN..MAX.
    #[arg(long, default_value = "3..6", value_parser = parse_range)]
    window: (Duration, Duration),
    /// Client and peer TLS: a CA made for the run, https:// everywhere,
    /// client certificates required by the members from clients and peers.
    #[arg(long)]
    tls: bool,
    /// Auth on: user and role root made and `auth enable` at the start;
    /// every client authenticates as root (user name and password).
    #[arg(long)]
    auth: bool,
}

impl Common {
    /// What the command line that repeats a run adds for these options.
    fn flags(&self) -> String {
        let mut flags = String::new();
        if self.tls {
            flags.push_str(" --tls");
        }
        if self.auth {
            flags.push_str(" --auth");
        }
        flags
    }
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    common: Common,
    /// Workloads: register, set, watch, lease (comma-separated) or all.
    #[arg(long, default_value = "register,watch")]
    workload: String,
    /// Nemeses: kill, pause, partition, zone-loss, slow, membership,
    /// compaction (comma-separated), all, or none.
    #[arg(long, default_value = "kill,partition")]
    nemesis: String,
    /// Seconds the workloads run.
    #[arg(long, default_value_t = 30)]
    time_limit: u64,
    /// TEST ONLY: start the members with linearizable reads that skip
    /// ReadIndex (needs a cairn built with the `jepsen-broken` feature); the
    /// checks are expected to fail.
    #[arg(long)]
    broken_stale_reads: bool,
}

#[derive(Args, Debug)]
struct SuiteArgs {
    #[command(flatten)]
    common: Common,
    /// Shorter runs (CI).
    #[arg(long)]
    quick: bool,
}

fn parse_range(text: &str) -> Result<(Duration, Duration), String> {
    let (lo, hi) = text.split_once("..").unwrap_or((text, text));
    let secs = |s: &str| {
        s.trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| format!("{s:?} is not a number of seconds"))
    };
    let (lo, hi) = (secs(lo)?, secs(hi)?);
    if hi < lo {
        return Err(format!("{text}: MAX is below MIN"));
    }
    Ok((lo, hi))
}

fn options(common: &Common, seed: u64, command_line: String) -> Result<RunOptions> {
    let binary = match &common.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe()
            .context("locating this program")?
            .with_file_name("cairn"),
    };
    if !binary.exists() {
        bail!(
            "no cairn binary at {} (build it: cargo build -p cairn-server --bin cairn, or pass --binary)",
            binary.display()
        );
    }
    let mut o = RunOptions::new(binary, common.out.clone(), seed);
    o.members = common.members;
    o.clients = common.clients;
    o.latency = LatencyModel {
        same_zone: Duration::from_millis(common.same_zone_ms),
        cross_zone: Duration::from_millis(common.cross_zone_ms),
        jitter: Duration::from_millis(common.jitter_ms),
    };
    o.op_timeout = Duration::from_secs(common.op_timeout.max(1));
    o.think = Duration::from_millis(common.think_ms);
    o.schedule = Schedule {
        kinds: Vec::new(),
        quiet: common.quiet,
        window: common.window,
    };
    o.tls = common.tls;
    o.auth = common.auth;
    o.command_line = command_line;
    Ok(o)
}

fn seed_of(common: &Common) -> u64 {
    common.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64 % 1_000_000_000)
            .unwrap_or(1)
    })
}

fn print_outcome(name: &str, outcome: &RunOutcome) {
    let verdict = match outcome.validity {
        Validity::Valid => "VALID",
        Validity::Invalid => "INVALID",
        Validity::Unknown => "UNKNOWN",
    };
    println!(
        "{name}: {verdict}  ({})",
        outcome.dir.join("report.html").display()
    );
    for r in &outcome.results {
        println!("  {:<9} {:?}: {}", r.checker, r.validity, r.summary);
        for a in r.anomalies.iter().take(5) {
            println!(
                "    {}: {}",
                a.kind,
                a.description.lines().next().unwrap_or("")
            );
        }
    }
}

fn exit_code(validities: &[Validity]) -> ExitCode {
    if validities.contains(&Validity::Invalid) {
        ExitCode::from(1)
    } else if validities.contains(&Validity::Unknown) {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

async fn main_inner(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Check { dir } => {
            let outcome = run::recheck(&dir)?;
            print_outcome("check", &outcome);
            Ok(exit_code(&[outcome.validity]))
        }
        Command::Run(args) => {
            let seed = seed_of(&args.common);
            let workloads = Workload::parse_list(&args.workload)?;
            let kinds = Nemesis::parse_list(&args.nemesis)?;
            let command_line = format!(
                "cairn-jepsen run --workload {} --nemesis {} --time-limit {} --seed {seed}{}{}",
                args.workload,
                run::nemesis_names(&kinds),
                args.time_limit,
                if args.broken_stale_reads {
                    " --broken-stale-reads"
                } else {
                    ""
                },
                args.common.flags(),
            );
            println!("seed {seed}: {command_line}");
            let mut o = options(&args.common, seed, command_line)?;
            o.workloads = workloads;
            o.schedule.kinds = kinds;
            o.duration = Duration::from_secs(args.time_limit);
            o.broken_stale_reads = args.broken_stale_reads;
            let outcome = run::run(&o).await?;
            print_outcome("run", &outcome);
            Ok(exit_code(&[outcome.validity]))
        }
        Command::Suite(args) => {
            let seed = seed_of(&args.common);
            let secs = if args.quick { 20 } else { 60 };
            let matrix: Vec<(&str, Vec<Workload>, Vec<Nemesis>)> = vec![
                (
                    "register+watch / kill",
                    vec![Workload::Register, Workload::Watch],
                    vec![Nemesis::Kill],
                ),
                (
                    "register+watch / partition",
                    vec![Workload::Register, Workload::Watch],
                    vec![Nemesis::Partition],
                ),
                (
                    "all workloads / zone-loss",
                    Workload::ALL.to_vec(),
                    vec![Nemesis::ZoneLoss],
                ),
            ];
            let mut validities = Vec::new();
            for (i, (name, workloads, kinds)) in matrix.into_iter().enumerate() {
                let run_seed = seed.wrapping_add(i as u64);
                let command_line = format!(
                    "cairn-jepsen run --workload {} --nemesis {} --time-limit {secs} --seed {run_seed}{}",
                    workloads.iter().map(|w| w.name()).collect::<Vec<_>>().join(","),
                    run::nemesis_names(&kinds),
                    args.common.flags(),
                );
                println!("seed {run_seed}: {command_line}");
                let mut o = options(&args.common, run_seed, command_line)?;
                o.workloads = workloads;
                o.schedule.kinds = kinds;
                o.duration = Duration::from_secs(secs);
                let outcome = run::run(&o).await?;
                print_outcome(name, &outcome);
                validities.push(outcome.validity);
            }
            // The self-test: a server serving stale reads must be caught.
            let run_seed = seed.wrapping_add(100);
            let command_line = format!(
                "cairn-jepsen run --workload register --nemesis slow --quiet 0.2..0.3 --window 4..5 --time-limit 15 --broken-stale-reads --seed {run_seed}{}",
                args.common.flags(),
            );
            println!("seed {run_seed}: {command_line}");
            let mut o = options(&args.common, run_seed, command_line)?;
            o.workloads = vec![Workload::Register];
            o.schedule.kinds = vec![Nemesis::Slow];
            o.schedule.quiet = (Duration::from_millis(200), Duration::from_millis(300));
            o.schedule.window = (Duration::from_secs(4), Duration::from_secs(5));
            o.duration = Duration::from_secs(15);
            o.broken_stale_reads = true;
            let outcome = run::run(&o).await?;
            print_outcome("self-test: stale reads (must be INVALID)", &outcome);
            if outcome.validity == Validity::Invalid {
                println!("self-test: the stale reads were caught");
            } else {
                println!("self-test FAILED: the stale reads of a broken server went unnoticed");
                validities.push(Validity::Invalid);
            }
            Ok(exit_code(&validities))
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("cairn_jepsen=info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match main_inner(Cli::parse()).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cairn-jepsen: {e:#}");
            ExitCode::from(3)
        }
    }
}
