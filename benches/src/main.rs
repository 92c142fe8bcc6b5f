//! `cairn-bench`: etcd's benchmark workloads against any etcd v3 endpoints.
//! See the library docs (`cairn_bench`) and `cairn-bench --help`.

use std::io::Write;
use std::process::ExitCode;

use cairn_bench::Cli;
use clap::Parser;

/// jemalloc, as the `cairn` binary has: the tool runs beside the servers
/// it measures, and what its allocations cost is taken from them.
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.global.json;
    if !json {
        if let Some(line) = cli.command.preamble() {
            println!("{line}");
        }
    }
    let reports = match cairn_bench::run(&cli).await {
        Ok(reports) => reports,
        Err(e) => {
            eprintln!("cairn-bench {}: {e}", cli.command.name());
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    for report in &reports {
        let written = if json {
            writeln!(out, "{}", report.to_json())
        } else {
            write!(out, "{}", report.to_text(cli.global.precise))
        };
        if written.is_err() {
            return ExitCode::FAILURE;
        }
    }
    if out.flush().is_err() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
