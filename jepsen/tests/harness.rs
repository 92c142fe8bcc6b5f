//! The harness end to end against real `cairn` processes: a short run under
//! kills must be valid and leave its results; a server that serves stale
//! "linearizable" reads must be caught.
//!
//! Both need the `cairn` binary of this target directory built with the
//! test-only `jepsen-broken` feature (`scripts/dev.sh test` builds the
//! workspace with `--features cairn-server/jepsen-broken`).

use std::path::PathBuf;
use std::time::Duration;

use cairn_jepsen::checker::Validity;
use cairn_jepsen::nemesis::{Nemesis, Schedule};
use cairn_jepsen::run::{run, RunOptions};
use cairn_jepsen::workload::Workload;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// `cairn` of the target directory this test was built in.
fn cairn_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // target/<profile>/deps/harness-<hash> -> target/<profile>/cairn
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("cairn"))
        .ok_or("no target directory")?;
    if !bin.exists() {
        return Err(format!(
            "{} is missing: cargo build -p cairn-server --bin cairn --features jepsen-broken",
            bin.display()
        ));
    }
    Ok(bin)
}

fn options(seed: u64) -> Result<(RunOptions, tempfile::TempDir), Box<dyn std::error::Error>> {
    let out = tempfile::tempdir()?;
    let mut o = RunOptions::new(cairn_binary()?, out.path().to_path_buf(), seed);
    o.schedule = Schedule {
        kinds: vec![],
        quiet: (Duration::from_millis(1000), Duration::from_millis(1500)),
        window: (Duration::from_millis(2000), Duration::from_millis(3000)),
    };
    o.duration = Duration::from_secs(10);
    Ok((o, out))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_under_kills_is_valid_and_leaves_its_results() -> TestResult {
    let (mut o, _out) = options(11)?;
    o.workloads = Workload::ALL.to_vec();
    o.schedule.kinds = vec![Nemesis::Kill];
    let outcome = run(&o).await?;
    for r in &outcome.results {
        println!("{} {:?}: {}", r.checker, r.validity, r.summary);
        for a in &r.anomalies {
            println!("  {}: {}", a.kind, a.description);
        }
    }
    assert_eq!(outcome.validity, Validity::Valid, "{:#?}", outcome.results);
    let checkers: Vec<&str> = outcome.results.iter().map(|r| r.checker.as_str()).collect();
    for name in ["register", "set", "watch", "lease"] {
        assert!(
            checkers.contains(&name),
            "{name} was not checked: {checkers:?}"
        );
    }
    let history = std::fs::read_to_string(outcome.dir.join("history.jsonl"))?;
    assert!(
        history.contains(r#""type":"fault","name":"kill""#),
        "no kill recorded"
    );
    let verdict: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(outcome.dir.join("verdict.json"))?)?;
    assert_eq!(verdict["valid"], "valid");
    let html = std::fs::read_to_string(outcome.dir.join("report.html"))?;
    assert!(html.contains("VALID"));
    assert!(outcome.dir.join("cluster/m1.log").exists());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_reads_of_a_broken_server_are_caught() -> TestResult {
    let (mut o, _out) = options(12)?;
    o.workloads = vec![Workload::Register];
    // Slow links make a follower apply writes well after the leader has
    // acknowledged them: reads it serves without ReadIndex are then stale.
    o.schedule.kinds = vec![Nemesis::Slow];
    o.schedule.quiet = (Duration::from_millis(200), Duration::from_millis(300));
    o.schedule.window = (Duration::from_secs(4), Duration::from_secs(5));
    o.broken_stale_reads = true;
    let outcome = run(&o).await?;
    assert_eq!(
        outcome.validity,
        Validity::Invalid,
        "{:#?}",
        outcome.results
    );
    let register = outcome
        .results
        .iter()
        .find(|r| r.checker == "register")
        .ok_or("no register result")?;
    assert!(register
        .anomalies
        .iter()
        .any(|a| a.kind == "nonlinearizable"));
    // The report shows the failing window's ops.
    let html = std::fs::read_to_string(outcome.dir.join("report.html"))?;
    assert!(html.contains("nonlinearizable"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_tls_run_under_kills_and_membership_changes_is_valid() -> TestResult {
    // Client and peer TLS through the proxy: members restarted and re-added
    // (an https:// peer URL in MemberAdd) while clients keep working.
    let (mut o, _out) = options(13)?;
    o.tls = true;
    o.workloads = vec![Workload::Register, Workload::Watch];
    o.schedule.kinds = vec![Nemesis::Kill, Nemesis::Membership];
    let outcome = run(&o).await?;
    for r in &outcome.results {
        println!("{} {:?}: {}", r.checker, r.validity, r.summary);
        for a in &r.anomalies {
            println!("  {}: {}", a.kind, a.description);
        }
    }
    assert_eq!(outcome.validity, Validity::Valid, "{:#?}", outcome.results);
    let verdict: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(outcome.dir.join("verdict.json"))?)?;
    let members = verdict["meta"]["members"]
        .as_array()
        .ok_or("no members in the verdict")?;
    for m in members {
        for url in ["client_url", "peer_url"] {
            let url = m[url].as_str().unwrap_or_default();
            assert!(url.starts_with("https://"), "{url}");
        }
    }
    let history = std::fs::read_to_string(outcome.dir.join("history.jsonl"))?;
    assert!(
        history.contains(r#""outcome":"ok""#),
        "no op succeeded over TLS"
    );
    let faults: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split(r#""type":"fault","name":""#).nth(1))
        .filter_map(|rest| rest.split('"').next())
        .collect();
    println!("faults: {faults:?}");
    assert!(faults.contains(&"kill"), "no kill: {faults:?}");
    assert!(
        faults.contains(&"membership"),
        "no membership change: {faults:?}"
    );
    // m1 listened for clients on https (its log names its listeners).
    let m1 = std::fs::read_to_string(outcome.dir.join("cluster/m1.log"))?;
    assert!(m1.contains("https://127.0.0.11:"), "m1 did not serve TLS");
    assert!(outcome.dir.join("cluster/certs/ca.pem").exists());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_auth_run_under_kills_is_valid() -> TestResult {
    // Auth enabled at the start through the Auth API (it fails if a
    // member refuses any step); every client authenticates as root, and a
    // restarted member's forgotten tokens are renewed by the clients.
    let (mut o, _out) = options(17)?;
    o.auth = true;
    o.workloads = vec![Workload::Register, Workload::Watch];
    o.schedule.kinds = vec![Nemesis::Kill];
    let outcome = run(&o).await?;
    for r in &outcome.results {
        println!("{} {:?}: {}", r.checker, r.validity, r.summary);
    }
    assert_eq!(outcome.validity, Validity::Valid, "{:#?}", outcome.results);
    let history = std::fs::read_to_string(outcome.dir.join("history.jsonl"))?;
    assert!(
        history.contains(r#""outcome":"ok""#),
        "no op succeeded with auth on"
    );
    Ok(())
}
