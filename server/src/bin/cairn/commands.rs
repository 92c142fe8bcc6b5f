//! `cairn`'s subcommands: the offline tools (etcdutl's) and admin calls.

use std::path::PathBuf;

use anyhow::Context;
use cairn_server::defaults;
use cairn_server::embed::{self, Config};
use cairn_server::offline;
use cairn_server::storage::crypto::MasterKey;
use clap::Subcommand;

/// `cairn snapshot ...`: etcdutl's snapshot tools, on Cairn's snapshot files.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Restores a snapshot file into a new data directory, bootstrapping a
    /// new cluster with the given membership. Run once per member, with the
    /// same file and cluster flags; then start each member with `cairn` and
    /// the same flags.
    Restore {
        /// The file written by `etcdctl snapshot save` against Cairn.
        file: PathBuf,
        /// Human-readable name for this member.
        #[arg(long, default_value = defaults::NAME)]
        name: String,
        /// Path to the new data directory (default: ${name}.cairn); must not exist.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The new cluster: name=url,name=url,...
        #[arg(long, default_value = "")]
        initial_cluster: String,
        /// The new cluster's token.
        #[arg(long, default_value = defaults::INITIAL_CLUSTER_TOKEN)]
        initial_cluster_token: String,
        /// This member's peer URLs.
        #[arg(long, default_value = defaults::PEER_URL, value_delimiter = ',')]
        initial_advertise_peer_urls: Vec<String>,
        /// The master key file: the saving member's (a sealed snapshot
        /// opens only with it); the restored member keeps using it.
        #[arg(long)]
        encryption_key_file: Option<PathBuf>,
    },
    /// Prints a snapshot file's hash, revision, total keys and total size
    /// (etcdutl snapshot status). The hash is the CRC-32C of the file's
    /// plain state records; total keys counts MVCC key records (every
    /// revision of every key, deletions included).
    Status(StatusArgs),
}

/// `cairn defrag`: etcdutl's offline defragmentation.
#[derive(Debug, clap::Args)]
pub struct DefragArgs {
    /// Required. Defragments a data directory not in use by a member.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The member's master key file (default: <data-dir>.key, as the member
    /// uses); checked before anything is changed.
    #[arg(long)]
    pub encryption_key_file: Option<PathBuf>,
}

/// `cairn snapshot status`: the hash, revision, key count and size of a
/// snapshot file. The hash is the CRC-32C (Castagnoli, as etcdutl's) of the
/// file's plain state records, after unsealing; the revision is the one a
/// member restored from the file starts at; total keys counts the MVCC key
/// records (every revision of every key, deletions included); total size is
/// the file's size.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The file written by `etcdctl snapshot save` against Cairn.
    pub file: PathBuf,
    /// The saving member's master key file (a sealed snapshot opens only
    /// with it).
    #[arg(long)]
    pub encryption_key_file: Option<PathBuf>,
    /// Output format: simple, table, json or fields (etcdutl's).
    #[arg(short = 'w', long, default_value = "simple")]
    pub write_out: String,
}

/// `cairn admin ...`: Cairn's administration calls.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Rotates the data key on every member: new writes use the new key at
    /// once, older records are re-sealed in the background, and the old key
    /// is dropped once nothing needs it.
    RotateDataKey {
        /// A client URL of any member.
        #[arg(long, default_value = defaults::CLIENT_URL)]
        endpoint: String,
    },
}

/// Runs `cairn admin ...`.
pub async fn admin(command: AdminCommand) -> anyhow::Result<()> {
    let AdminCommand::RotateDataKey { endpoint } = command;
    let mut admin = cairn_proto::cairnpb::admin_client::AdminClient::connect(endpoint.clone())
        .await
        .with_context(|| format!("connecting to {endpoint}"))?;
    let resp = admin
        .rotate_data_key(cairn_proto::cairnpb::RotateDataKeyRequest {})
        .await
        .context("rotating the data key")?
        .into_inner();
    println!("data key {} is active", resp.key_id);
    Ok(())
}

/// Runs `cairn snapshot ...`.
pub fn snapshot(command: SnapshotCommand) -> anyhow::Result<()> {
    match command {
        SnapshotCommand::Status(args) => status(args),
        SnapshotCommand::Restore {
            file,
            name,
            data_dir,
            initial_cluster,
            initial_cluster_token,
            initial_advertise_peer_urls,
            encryption_key_file,
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let config = Config {
                data_dir: data_dir.unwrap_or_else(|| defaults::data_dir(&name)),
                name,
                initial_cluster,
                initial_cluster_token,
                initial_advertise_peer_urls,
                encryption_key_file,
                ..Config::default()
            };
            let revision =
                embed::restore_snapshot(&bytes, &config).context("restoring the snapshot")?;
            println!(
                "restored {} into {} at revision {revision}",
                file.display(),
                config.data_dir.display()
            );
            Ok(())
        }
    }
}

/// Runs `cairn snapshot status`: everything is checked before anything is
/// printed, so a bad file prints nothing on stdout.
fn status(args: StatusArgs) -> anyhow::Result<()> {
    let format: offline::WriteOut = args.write_out.parse().map_err(anyhow::Error::msg)?;
    let master = args
        .encryption_key_file
        .as_ref()
        .map(MasterKey::load)
        .transpose()?;
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let status = offline::snapshot_status(&bytes, master.as_ref())?;
    print!("{}", status.render(format));
    Ok(())
}

/// Runs `cairn defrag`: etcdutl prints nothing on stdout; its log lines
/// (on stderr) report the sizes before and after.
pub fn defrag(args: DefragArgs) -> anyhow::Result<()> {
    offline::defrag(&args.data_dir, args.encryption_key_file.as_deref()).with_context(|| {
        format!(
            "failed to defragment the data directory {}",
            args.data_dir.display()
        )
    })?;
    Ok(())
}
