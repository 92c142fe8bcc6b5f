//! `cairn`: run one Cairn member. Flags follow etcd's names and defaults; with
//! no flags it serves a single member on localhost:2379 with data in
//! `./default.cairn`, as `etcd` does. Subcommands are the offline tools
//! (etcdutl's) and Cairn's admin calls.

mod commands;
mod config_file;
mod flags;
mod migrate;
mod tls_flags;
mod unsupported;
mod verify;

use anyhow::Context;
use cairn_server::embed;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use flags::Flags;

/// jemalloc for the Rust side with sized deallocation; the C++ side (RocksDB)
/// reaches the same jemalloc through `malloc`, which the unprefixed build
/// provides for the whole process.
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    /// Path to the server configuration file (etcd's YAML keys: the flags'
    /// names). With it, other flags and ETCD_* variables are ignored, as
    /// in etcd.
    #[arg(long, env = "ETCD_CONFIG_FILE")]
    config_file: Option<std::path::PathBuf>,
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
    /// From etcd to Cairn and back, keeping every revision.
    #[command(subcommand)]
    Migrate(migrate::MigrateCommand),
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

/// The command line. With a configuration file (`--config-file` or
/// `ETCD_CONFIG_FILE`), no other `ETCD_*` variable is read, not even to
/// check it (etcd 3.5: the file is the whole configuration).
fn command_line() -> clap::ArgMatches {
    let without_env = Cli::command().mut_args(|arg| {
        if arg.get_id() == "config_file" {
            arg
        } else {
            arg.env(None)
        }
    });
    let matches = parse_or_exit(without_env);
    if matches.contains_id("config_file") {
        return matches;
    }
    let refused = unsupported::refused_variables();
    if !refused.is_empty() {
        eprintln!("error: {}", refused.join("\nerror: "));
        std::process::exit(2);
    }
    parse_or_exit(Cli::command())
}

/// Parses the command line; on an error, exits as clap does, but names the
/// reason when the unknown argument is an etcd flag Cairn does not take.
fn parse_or_exit(command: clap::Command) -> clap::ArgMatches {
    match command.try_get_matches() {
        Ok(matches) => matches,
        Err(e) => {
            if e.kind() == clap::error::ErrorKind::UnknownArgument {
                if let Some(clap::error::ContextValue::String(arg)) =
                    e.get(clap::error::ContextKind::InvalidArg)
                {
                    if let Some(why) = unsupported::refusal(arg) {
                        eprintln!("error: {why}");
                        std::process::exit(2);
                    }
                }
            }
            e.exit()
        }
    }
}

/// With a configuration file, the file is the whole configuration (etcd
/// 3.5): etcd's note, and a warning for each flag given anyway.
fn log_ignored_flags(path: &std::path::Path, matches: &clap::ArgMatches) {
    tracing::info!(
        path = %path.display(),
        "loaded server configuration, other configuration command line flags and environment variables will be ignored if provided"
    );
    for arg in Cli::command().get_arguments() {
        let id = arg.get_id().as_str();
        if id != "config_file"
            && matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
        {
            if let Some(long) = arg.get_long() {
                tracing::warn!("--{long} is ignored: the configuration file is used");
            }
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

/// SIGINT and SIGTERM, caught from before the member serves: a signal that
/// follows READY=1 at once must stop it gracefully, not kill it.
struct ShutdownSignals {
    /// Ctrl-C.
    interrupt: tokio::signal::unix::Signal,
    /// A service manager's stop.
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }

    /// The name of the first signal that arrives.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            // Go's names for the signals, as etcd logs them.
            _ = self.interrupt.recv() => "interrupt",
            _ = self.terminate.recv() => "terminated",
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let matches = command_line();
    let cli = Cli::from_arg_matches(&matches)?;
    if cli.version {
        print!("{}", version_text());
        return Ok(());
    }
    match cli.command {
        Some(Command::Snapshot(command)) => return commands::snapshot(command),
        Some(Command::Admin(command)) => return commands::admin(command).await,
        Some(Command::Migrate(command)) => return migrate::run(command).await,
        Some(Command::Defrag(args)) => {
            // etcdutl reports the sizes in its log lines.
            cairn_server::logging::init("zap", &["default".to_string()], "info")?;
            return commands::defrag(args);
        }
        None => {}
    }
    let flags = match &cli.config_file {
        Some(path) => config_file::flags_from_file(path)?,
        None => cli.flags,
    };
    cairn_server::logging::init(&flags.logger, &flags.log_outputs, &flags.log_level)?;
    match &cli.config_file {
        Some(path) => log_ignored_flags(path, &matches),
        None => log_environment(&matches),
    }
    let config = flags.into_config()?;
    let lifecycle = cairn_server::logging::lifecycle::Closing::of(&config);
    let mut signals = ShutdownSignals::install()?;
    let member = tokio::select! {
        member = embed::start(config) => member.context("starting cairn")?,
        // Starting can wait on peers: a signal still ends it.
        signal = signals.recv() => {
            tracing::info!(signal, "received signal before the member started; shutting down");
            return Ok(());
        }
    };
    notify_ready();
    let failed = tokio::select! {
        signal = signals.recv() => {
            tracing::info!(signal, "received signal; shutting down");
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
