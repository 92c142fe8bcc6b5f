//! `cairn migrate ...`: from etcd to Cairn and back (see
//! `cairn_server::migrate`).

use std::path::PathBuf;

use anyhow::Context;
use cairn_server::migrate;
use clap::Subcommand;

use crate::commands::MemberFlags;

/// `cairn migrate ...`.
#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// Builds a new Cairn data directory from an etcd database file (written
    /// by `etcdctl snapshot save` or `etcdutl`, or a stopped member's
    /// member/snap/db), keeping every revision, tombstone, the compacted
    /// revision, leases and auth. Run once per member of the new cluster
    /// with the same file and cluster flags (as `cairn snapshot restore`);
    /// then start each member with `cairn` and the same flags.
    FromEtcd {
        /// The etcd database file.
        #[arg(long)]
        snapshot: PathBuf,
        #[command(flatten)]
        member: MemberFlags,
    },
    /// Writes a stopped member's data directory as an etcd snapshot file
    /// for `etcdutl snapshot restore`. etcd has no encryption at rest: the
    /// file is plain text, and --plaintext must say that this is intended.
    ToEtcd {
        /// The stopped member's data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// The file to write (must not exist).
        #[arg(long)]
        out: PathBuf,
        /// The member's master key file (default: <data-dir>.key).
        #[arg(long)]
        encryption_key_file: Option<PathBuf>,
        /// Required: write the store's data in plain text, as etcd keeps it.
        #[arg(long)]
        plaintext: bool,
    },
    /// Compares two live stores (etcd and Cairn) at one revision: every
    /// key's value, create/mod revision, version and lease, the compacted
    /// revision and the leases. Exits non-zero on any difference.
    Verify(crate::verify::VerifyArgs),
}

/// Runs `cairn migrate ...`.
pub async fn run(command: MigrateCommand) -> anyhow::Result<()> {
    match command {
        MigrateCommand::Verify(args) => crate::verify::run(args).await,
        MigrateCommand::FromEtcd { snapshot, member } => {
            let bytes = std::fs::read(&snapshot)
                .with_context(|| format!("reading {}", snapshot.display()))?;
            let config = member.config();
            let started = std::time::Instant::now();
            let report = migrate::from_etcd(&bytes, &config)
                .with_context(|| format!("importing {}", snapshot.display()))?;
            let read = &report.imported;
            if !read.had_digest {
                println!(
                    "note: {} has no snapshot digest (a member's member/snap/db): its pages were checked, its bytes could not be",
                    snapshot.display()
                );
            }
            println!(
                "imported {} into {} at revision {} (compacted {}): {} key records, {} leases, {} users, {} roles, in {:.1?}",
                snapshot.display(),
                config.data_dir.display(),
                report.revision,
                read.compacted,
                read.key_records,
                read.leases,
                read.users,
                read.roles,
                started.elapsed()
            );
            Ok(())
        }
        MigrateCommand::ToEtcd {
            data_dir,
            out,
            encryption_key_file,
            plaintext,
        } => {
            let started = std::time::Instant::now();
            let report =
                migrate::to_etcd(&data_dir, encryption_key_file.as_deref(), &out, plaintext)
                    .with_context(|| format!("exporting {}", data_dir.display()))?;
            println!(
                "wrote {} ({} bytes, PLAIN TEXT) at revision {} (compacted {}): {} key records, {} leases, {} users, {} roles, in {:.1?}",
                out.display(),
                report.bytes,
                report.revision,
                report.compacted,
                report.key_records,
                report.leases,
                report.users,
                report.roles,
                started.elapsed()
            );
            Ok(())
        }
    }
}
