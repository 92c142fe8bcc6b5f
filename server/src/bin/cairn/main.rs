//! `cairn`: run one Cairn member. Flags follow etcd's names and defaults; with
//! no flags it serves a single member on localhost:2379 with data in
//! `./default.cairn`, as `etcd` does. Subcommands are the offline tools
//! (etcdutl's) and Cairn's admin calls.

mod commands;
mod flags;

use anyhow::Context;
use cairn_server::embed;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use flags::Flags;

#[derive(Debug, Parser)]
#[command(
    name = "cairn",
    about = "An etcd v3-compatible key-value store",
    disable_version_flag = true,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Print the version (etcd's lines, then Cairn's) and exit.
    #[arg(long)]
    version: bool,
    #[command(flatten)]
    flags: Flags,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Snapshot files offline (etcdutl snapshot ...).
    #[command(subcommand)]
    Snapshot(commands::SnapshotCommand),
    /// Defragments a stopped member's data directory (etcdutl defrag).
    Defrag(commands::DefragArgs),
    /// Cairn's administration calls against a running cluster.
    #[command(subcommand)]
    Admin(commands::AdminCommand),
}

/// What `cairn --version` prints: the lines tools parse from `etcd
/// --version` (the etcd API version Cairn speaks), then Cairn's own.
fn version_text() -> String {
    format!(
        "etcd Version: {}\nGit SHA: {}\nCairn Version: {}\nOS/Arch: {}/{}\n",
        cairn_server::member::ETCD_VERSION,
        env!("CAIRN_GIT_SHA"),
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        go_arch(),
    )
}

/// The architecture as Go names it (etcd prints `linux/amd64`).
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn init_logging(level: &str) -> anyhow::Result<()> {
    let filter = match level {
        "debug" | "info" | "warn" | "error" => level,
        "panic" | "fatal" => "error",
        other => anyhow::bail!(
            "invalid --log-level {other:?}: expected debug, info, warn, error, panic or fatal"
        ),
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        // Colours only on a terminal: log files and pipes get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    Ok(())
}

/// etcd's notes on its environment: every flag can come from `ETCD_` + its
/// name upper-cased with `-` as `_`; a flag given on the command line wins
/// (the variable is "shadowed"); an `ETCD_*` variable that names no flag is
/// reported. Values are not logged (a variable may hold anything).
fn log_environment(matches: &clap::ArgMatches) {
    let command = Cli::command();
    let mut known = std::collections::HashSet::new();
    for arg in command.get_arguments() {
        let Some(env) = arg.get_env().and_then(|e| e.to_str()) else {
            continue;
        };
        known.insert(env.to_string());
        if std::env::var_os(env).is_none() {
            continue;
        }
        if matches.value_source(arg.get_id().as_str())
            == Some(clap::parser::ValueSource::CommandLine)
        {
            tracing::warn!(
                "recognized environment variable {env}, but unused: shadowed by corresponding flag"
            );
        } else {
            tracing::info!("recognized and used environment variable {env}");
        }
    }
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("ETCD_") && !known.contains(name) {
            tracing::warn!("unrecognized environment variable {name}");
        }
    }
}

/// Tells a `Type=notify` systemd unit how the member is (etcd does too).
fn sd_notify(state: &str) {
    match cairn_server::notify::notify(state) {
        Ok(true) => tracing::info!(state, "notified the service manager"),
        Ok(false) => {}
        Err(e) => tracing::warn!(state, error = %e, "cannot notify the service manager"),
    }
}

/// SIGINT and SIGTERM, caught from before the member starts: a signal that
/// arrives right after READY=1 (a service manager stopping a member that
/// just became ready) must stop it gracefully, not kill it with the default
/// action before the handlers exist.
struct ShutdownSignals {
    /// SIGINT (Ctrl-C).
    int: tokio::signal::unix::Signal,
    /// SIGTERM.
    term: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }

    /// The first signal to arrive.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    if cli.version {
        print!("{}", version_text());
        return Ok(());
    }
    match cli.command {
        Some(Command::Snapshot(command)) => return commands::snapshot(command),
        Some(Command::Admin(command)) => return commands::admin(command).await,
        Some(Command::Defrag(args)) => {
            // etcdutl reports the sizes in its log lines.
            init_logging("info")?;
            return commands::defrag(args);
        }
        None => {}
    }
    let flags = cli.flags;
    init_logging(&flags.log_level)?;
    log_environment(&matches);
    let config = flags.into_config()?;
    let mut signals = ShutdownSignals::install()?;
    let member = tokio::select! {
        member = embed::start(config) => member.context("starting cairn")?,
        // Starting can wait on peers: a signal still ends it.
        signal = signals.recv() => {
            tracing::info!(signal, "shutting down before the member started");
            return Ok(());
        }
    };
    tracing::info!(urls = ?member.client_urls(), "ready to serve client requests");
    sd_notify("READY=1");
    let failed = tokio::select! {
        signal = signals.recv() => { tracing::info!(signal, "shutting down"); false }
        () = member.removed() => {
            // etcd exits too: a removed member must not serve stale data.
            tracing::warn!("the member has been permanently removed from the cluster; exiting");
            false
        }
        () = member.failed() => true,
    };
    sd_notify("STOPPING=1");
    member.stop().await.context("stopping cairn")?;
    if failed {
        // etcd exits on a failed disk write too: never alive and broken.
        // The error is logged above; a supervisor restarts the member, which
        // resumes from its last synced state.
        anyhow::bail!(
            "the member stopped replicating after a storage failure (see the error above); exiting so that it can be restarted"
        );
    }
    tracing::info!("stopped");
    Ok(())
}
