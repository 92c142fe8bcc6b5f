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
                variable_name = env,
                "recognized environment variable, but unused: shadowed by corresponding flag"
            );
        } else {
            // etcd adds the value; Cairn does not (see above).
            tracing::info!(
                variable_name = env,
                "recognized and used environment variable"
            );
        }
    }
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("ETCD_") && !known.contains(name) {
            tracing::warn!(
                environment_variable = name,
                "unrecognized environment variable"
            );
        }
    }
}

/// Tells a `Type=notify` systemd unit that the member serves, with etcd's
/// lines (logged with or without a service manager, as etcd's are).
fn notify_ready() {
    tracing::info!("notifying init daemon");
    match cairn_server::notify::notify("READY=1") {
        Ok(_) => tracing::info!("successfully notified init daemon"),
        Err(e) => tracing::error!(error = %e, "failed to notify systemd for readiness"),
    }
}

/// Tells a `Type=notify` systemd unit that the member is stopping.
fn notify_stopping() {
    if let Err(e) = cairn_server::notify::notify("STOPPING=1") {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

async fn shutdown_signal() -> anyhow::Result<&'static str> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        // Go's names for the signals, as etcd logs them.
        r = tokio::signal::ctrl_c() => { r.context("waiting for SIGINT")?; Ok("interrupt") }
        _ = term.recv() => Ok("terminated"),
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
        None => {}
    }
    let flags = cli.flags;
    cairn_server::logging::init(&flags.logger, &flags.log_outputs, &flags.log_level)?;
    log_environment(&matches);
    let config = flags.into_config()?;
    let lifecycle = cairn_server::logging::lifecycle::Closing::of(&config);
    let member = embed::start(config).await.context("starting cairn")?;
    notify_ready();
    let failed = tokio::select! {
        signal = shutdown_signal() => {
            tracing::info!(signal = signal?, "received signal; shutting down");
            false
        }
        () = member.removed() => {
            // etcd exits too: a removed member must not serve stale data.
            tracing::warn!("the member has been permanently removed from the cluster; exiting");
            false
        }
        () = member.failed() => true,
    };
    notify_stopping();
    lifecycle.closing();
    member.stop().await.context("stopping cairn")?;
    if failed {
        // etcd exits on a failed disk write too: never alive and broken.
        // The error is logged above; a supervisor restarts the member, which
        // resumes from its last synced state.
        anyhow::bail!(
            "the member stopped replicating after a storage failure (see the error above); exiting so that it can be restarted"
        );
    }
    lifecycle.closed();
    Ok(())
}
