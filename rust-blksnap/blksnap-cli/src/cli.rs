//! Command-line syntax.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use uuid::Uuid;

/// The exit status codes, the same for every command.
pub const EXIT_CODE_TABLE: &[(u8, &str)] = &[
    (0, "success"),
    (
        1,
        "other failure (an ioctl or I/O error, a refused request such as a restore \
         target that exists or is in use; the message names it)",
    ),
    (2, "bad command line"),
    (
        3,
        "the kernel has no blksnap support (no /dev/blksnap-control, unknown ioctl)",
    ),
    (
        4,
        "device problem: missing, not a block device, or permission denied",
    ),
    (
        5,
        "the backup is invalid or does not match (damaged manifest or data, \
         verify mismatch, no backup of the device)",
    ),
    (6, "no space left on the backup target"),
    (
        7,
        "the repository is locked by another blksnap run (try again later)",
    ),
    (
        130,
        "interrupted (Ctrl-C, SIGTERM); no partial result is left behind",
    ),
];

/// The exit status codes as text.
pub fn exit_codes_text() -> String {
    let mut s = String::from("Exit status:");
    for (code, meaning) in EXIT_CODE_TABLE {
        s.push_str(&format!("\n  {code:<4} {meaning}"));
    }
    s
}

#[derive(Parser, Debug)]
#[command(
    name = "blksnap",
    version,
    about = "Snapshots, changed-block tracking and backups of block devices (blksnap)",
    long_about = "Controls the blksnap snapshot and changed-block tracking (CBT) interface \
                  of the kernel, and makes full and incremental backups of block devices \
                  from coherent snapshots.",
    after_help = concat!("Examples:
  blksnap attach /dev/vdb                 start tracking changes of /dev/vdb
  blksnap cbtinfo /dev/vdb                show the tracker's state
  blksnap backup --repo /backup /dev/vdb /dev/vdc
                                          full, then incremental backups of two
                                          devices from one snapshot
  blksnap restore --repo /backup --device vdb /tmp/vdb.img
  blksnap verify --repo /backup --device vdb /dev/vdb
  blksnap list --repo /backup             what the repository holds

", "Exit status: 0 ok, 1 failure, 2 usage, 3 no blksnap in kernel, 4 device problem,
5 invalid backup or mismatch, 6 target full, 7 repository locked, 130 interrupted
(see `blksnap exit-codes`)")
)]
pub struct Cli {
    /// Print results as JSON on standard output.
    #[arg(long, global = true)]
    pub json: bool,

    /// Say more on standard error: -v also what is done step by step, -vv
    /// everything.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Say less on standard error: -q no notes, only warnings and the
    /// error; -qq only the error.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub quiet: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show the version of the kernel interface.
    Version,
    /// Attach the blksnap filter to a device; change tracking starts.
    #[command(after_help = "Example:\n  blksnap attach /dev/vdb")]
    Attach(DeviceArg),
    /// Detach the blksnap filter; the change history is lost.
    #[command(after_help = "Example:\n  blksnap detach /dev/vdb")]
    Detach(DeviceArg),
    /// Show the state of the change tracker of a device.
    #[command(after_help = "Example:\n  blksnap cbtinfo /dev/vdb")]
    Cbtinfo(DeviceArg),
    /// Print the CBT map: for each block, the changes number of its last write.
    #[command(after_help = "\
Output: one line per run of blocks with the same non-zero value,
`FIRST COUNT VALUE` (block indexes); --all includes zero runs.
The map is the copy frozen at the last snapshot take.

Examples:
  blksnap readcbtmap /dev/vdb
  blksnap readcbtmap --newer-than 3 /dev/vdb      blocks changed after snapshot 3
  blksnap readcbtmap --output map.bin /dev/vdb    raw map, one byte per block")]
    Readcbtmap(ReadCbtMapArgs),
    /// Mark sectors of a device, or the blocks of a file (--file), as changed in the CBT map.
    #[command(after_help = "\
Examples:
  blksnap markdirtyblock --sectors 0:8 --sectors 2048:16 /dev/vdb
  blksnap markdirtyblock --file /mnt/data/db.sqlite /dev/vdb")]
    Markdirtyblock(MarkDirtyArgs),
    /// Manage snapshots.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Back up devices from one coherent snapshot (full or incremental).
    #[command(after_help = "\
The repository holds numbered sets (000001, 000002, ...), one per run, each with
<device>.json (manifest), <device>.sums (checksums of the copied blocks) and
<device>.data (the copied blocks). A set is written under a temporary name and
renamed when complete. A backup is incremental when the previous set of the
device was made in the same CBT generation; it then copies the blocks changed
since that set's snapshot. The repository is locked while a run uses it: a
second run fails at once with exit status 7.

Examples:
  blksnap backup --repo /backup /dev/vdb
  blksnap backup --repo /backup --storage /var/tmp --limit 4G /dev/vdb /dev/vdc
  blksnap backup --repo /backup --full /dev/vdb")]
    Backup(BackupArgs),
    /// Restore a device's backup chain (full + incrementals) to a device or image file.
    #[command(after_help = "\
An image file is written under a temporary name and renamed at the end. A block
device is overwritten only with --force, and is opened exclusively: a mounted or
otherwise used device is refused.

Examples:
  blksnap restore --repo /backup --device vdb /tmp/vdb.img
  blksnap restore --repo /backup --device vdb --set 000003 --force /dev/vdd")]
    Restore(RestoreArgs),
    /// Check a backup, alone or against a device or image.
    #[command(after_help = "\
Without TARGET, reads every stored block of every set of the chain (also blocks
that newer sets replace) and checks it against its checksum. With TARGET,
compares each block of TARGET with the backup's state. The repository is read
with its cached pages dropped, so the check reads the disks.

Examples:
  blksnap verify --repo /backup --device vdb
  blksnap verify --repo /backup --device vdb /tmp/vdb.img")]
    Verify(VerifyArgs),
    /// List the sets of a repository and the backups in each.
    #[command(after_help = "\
Examples:
  blksnap list --repo /backup
  blksnap list --repo /backup --device vdb
  blksnap --json list --repo /backup")]
    List(ListArgs),
    /// Explain the exit status codes.
    ExitCodes,
    /// Write the manual pages or shell completions (for packaging).
    #[command(hide = true, subcommand)]
    Generate(GenerateCommand),
}

#[derive(Subcommand, Debug)]
pub enum GenerateCommand {
    /// Manual pages blksnap(8), blksnap-COMMAND(8) into DIR.
    Man {
        /// Directory to write to (created if needed).
        dir: PathBuf,
    },
    /// The completion script for SHELL into DIR.
    Completions {
        shell: clap_complete::Shell,
        /// Directory to write to (created if needed).
        dir: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct DeviceArg {
    /// Block device, e.g. /dev/vdb (or its kernel name, vdb).
    pub device: PathBuf,
}

#[derive(Args, Debug)]
pub struct ReadCbtMapArgs {
    /// Block device.
    pub device: PathBuf,
    /// Only blocks whose value is greater than N (changed after snapshot N).
    #[arg(long, value_name = "N")]
    pub newer_than: Option<u8>,
    /// Also list runs of zero (never written since tracking started).
    #[arg(long)]
    pub all: bool,
    /// Write the raw map to FILE instead of listing it.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct MarkDirtyArgs {
    /// Block device.
    pub device: PathBuf,
    /// Sector range OFFSET:COUNT (512-byte sectors); repeatable.
    #[arg(long = "sectors", value_name = "OFFSET:COUNT", value_parser = parse_range,
          required_unless_present = "file", conflicts_with = "file")]
    pub sectors: Vec<(u64, u64)>,
    /// Mark the blocks holding this file's data (found with FIEMAP); the
    /// file must live on DEVICE.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Create an empty snapshot and print its id.
    #[command(after_help = "\
STORAGE is where the snapshot keeps overwritten data (default /var/tmp):
  a directory     an unnamed O_TMPFILE file there, freed with the snapshot
                  (tmpfs such as /dev/shm works, with a warning)
  a block device  used whole (it cannot be part of the snapshot)
  a new file      created (must not exist); remove it after the snapshot

Examples:
  blksnap snapshot create --limit 1G                  storage in /var/tmp
  blksnap snapshot create --storage /dev/vdz /dev/vdb /dev/vdc

The snapshot is recorded in /run/blksnap as owned by the session that ran this
command (the leader of its session: a login shell, a cron job, a service): once
that is gone, `blksnap snapshot destroy --stale` destroys it.")]
    Create(CreateArgs),
    /// Add a device to a created snapshot.
    #[command(after_help = "Example:\n  blksnap snapshot add --id 0f1e... /dev/vdb")]
    Add(IdDeviceArgs),
    /// Take a snapshot: image devices /dev/blksnap-image_MAJ:MIN appear.
    Take(IdArg),
    /// Destroy a snapshot and its images, or (--stale) those left by killed blksnap runs.
    #[command(after_help = "\
blksnap records each snapshot it creates in /run/blksnap/ID.json with the pid of
its owner: the running `blksnap backup`, or for `snapshot create` the leader of
the session that ran it (a login shell, a cron job, a service). --stale destroys the recorded snapshots whose owner
is gone and removes records of snapshots that no longer exist; snapshots that
blksnap did not create are never touched.

Examples:
  blksnap snapshot destroy --id 0f1e...
  blksnap snapshot destroy --stale")]
    Destroy(DestroyArgs),
    /// List existing snapshots, with their owners and devices.
    #[command(after_help = "\
Output: each snapshot id on a line of its own, then indented lines with its owner
(for snapshots blksnap made) and its devices with their images. The kernel tells
the image of each tracked device but not which snapshot it belongs to: the devices
of a snapshot that blksnap did not make are shown when it is the only such one.")]
    Collect,
    /// Show the snapshot state of a device (image name, error).
    Info(DeviceArg),
    /// Wait for one event of a snapshot.
    WaitEvent(WaitArgs),
    /// Print events of a snapshot until it is destroyed.
    Watch(IdArg),
}

#[derive(Args, Debug)]
pub struct StorageArgs {
    /// Difference storage: directory (O_TMPFILE), block device, or new file.
    /// The default is on disk; tmpfs (e.g. /dev/shm) is taken with a warning.
    #[arg(long, value_name = "PATH", default_value = libblksnap::storage::DEFAULT_STORAGE)]
    pub storage: PathBuf,
    /// No warning for a difference storage on tmpfs or ramfs (in memory: a
    /// snapshot left behind by a killed run holds that memory until destroyed).
    #[arg(long)]
    pub allow_tmpfs: bool,
    /// Largest size of the difference storage (K, M, G, T suffixes).
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = parse_size)]
    pub limit: u64,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Devices to add to the new snapshot.
    pub devices: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct IdArg {
    /// Snapshot id (UUID).
    #[arg(long)]
    pub id: Uuid,
}

#[derive(Args, Debug)]
pub struct DestroyArgs {
    /// Snapshot id (UUID).
    #[arg(long, required_unless_present = "stale", conflicts_with = "stale")]
    pub id: Option<Uuid>,
    /// Destroy the snapshots blksnap made whose owning process is gone.
    #[arg(long)]
    pub stale: bool,
}

#[derive(Args, Debug)]
pub struct IdDeviceArgs {
    /// Snapshot id (UUID).
    #[arg(long)]
    pub id: Uuid,
    /// Block device.
    pub device: PathBuf,
}

#[derive(Args, Debug)]
pub struct WaitArgs {
    /// Snapshot id (UUID).
    #[arg(long)]
    pub id: Uuid,
    /// Timeout in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub timeout: u32,
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Backup repository directory (created if needed).
    #[arg(long, value_name = "DIR")]
    pub repo: PathBuf,
    /// Always make a full backup.
    #[arg(long, conflicts_with = "incremental")]
    pub full: bool,
    /// Fail instead of falling back to a full backup.
    #[arg(long)]
    pub incremental: bool,
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Block devices to back up together: paths, or kernel names (vdb is /dev/vdb).
    #[arg(required = true)]
    pub devices: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Backup repository directory.
    #[arg(long, value_name = "DIR")]
    pub repo: PathBuf,
    /// Device: its kernel name as recorded in the backup (vdb), or its path (/dev/vdb).
    #[arg(long, value_name = "NAME")]
    pub device: String,
    /// The host whose backup to restore (host name or machine id); needed
    /// when the repository holds backups of the device from several hosts.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Restore the state of this set (default: the newest).
    #[arg(long)]
    pub set: Option<String>,
    /// Replace an existing image file, or overwrite a block device.
    #[arg(long)]
    pub force: bool,
    /// Block device or image file to write.
    pub target: PathBuf,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Backup repository directory.
    #[arg(long, value_name = "DIR")]
    pub repo: PathBuf,
    /// Device: its kernel name as recorded in the backup (vdb), or its path (/dev/vdb).
    #[arg(long, value_name = "NAME")]
    pub device: String,
    /// The host whose backup to check (host name or machine id); needed
    /// when the repository holds backups of the device from several hosts.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Check the state of this set (default: the newest).
    #[arg(long)]
    pub set: Option<String>,
    /// Device or image to compare with the backup.
    pub target: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Backup repository directory.
    #[arg(long, value_name = "DIR")]
    pub repo: PathBuf,
    /// Only the backups of this device (kernel name vdb, or path /dev/vdb).
    #[arg(long, value_name = "NAME")]
    pub device: Option<String>,
    /// Only the backups made on this host (host name or machine id).
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
}

fn parse_size(s: &str) -> Result<u64, String> {
    libblksnap::util::parse_size(s)
}

fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s
        .split_once(':')
        .ok_or_else(|| format!("'{s}': expected OFFSET:COUNT"))?;
    let off = a
        .parse()
        .map_err(|_| format!("'{a}' is not a sector number"))?;
    let count: u64 = b
        .parse()
        .map_err(|_| format!("'{b}' is not a sector count"))?;
    if count == 0 {
        return Err("sector count must not be zero".into());
    }
    Ok((off, count))
}
