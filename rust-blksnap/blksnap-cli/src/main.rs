//! `blksnap`: command-line tool for the blksnap kernel interface.

mod cli;

use std::cell::RefCell;
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use libblksnap::api::{Blksnap, SectorRange, TrackedDevice, WaitOutcome, SECTOR_SIZE};
use libblksnap::backup::{self, Mode, Progress};
use libblksnap::state::{self, StateDir, DEFAULT_STATE_DIR};
use libblksnap::sys::Kernel;
use libblksnap::util::{device_name, device_path};
use libblksnap::Error;

use cli::{Cli, Command, GenerateCommand, SnapshotCommand};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Exit status codes (see `cli::EXIT_CODES`).
mod exit {
    pub const FAILURE: u8 = 1;
    pub const NOT_SUPPORTED: u8 = 3;
    pub const DEVICE: u8 = 4;
    pub const INVALID_BACKUP: u8 = 5;
    pub const NO_SPACE: u8 = 6;
    pub const LOCKED: u8 = 7;
    pub const INTERRUPTED: u8 = 130;
}

fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<Error>() {
            if e.is_no_space() {
                return exit::NO_SPACE;
            }
            return match e {
                Error::DeviceNotFound(_)
                | Error::NotBlockDevice(_)
                | Error::PermissionDenied(_) => exit::DEVICE,
                Error::NotSupported { .. } => exit::NOT_SUPPORTED,
                Error::Ioctl { errno, .. } if *errno == nix::errno::Errno::ENOTTY => {
                    exit::NOT_SUPPORTED
                }
                Error::Ioctl {
                    op: "attach",
                    errno,
                    ..
                } if *errno == nix::errno::Errno::ENOENT => exit::NOT_SUPPORTED,
                Error::Ioctl { errno, .. }
                    if matches!(*errno, nix::errno::Errno::EACCES | nix::errno::Errno::EPERM) =>
                {
                    exit::DEVICE
                }
                Error::InvalidBackup(_) | Error::Mismatch(_) => exit::INVALID_BACKUP,
                Error::Locked { .. } => exit::LOCKED,
                Error::Interrupted => exit::INTERRUPTED,
                _ => exit::FAILURE,
            };
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if matches!(
                io.raw_os_error(),
                Some(nix::libc::ENOSPC) | Some(nix::libc::EDQUOT)
            ) {
                return exit::NO_SPACE;
            }
        }
    }
    exit::FAILURE
}

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`blksnap readcbtmap /dev/vdb | head`).
    // SAFETY: restoring the default disposition of SIGPIPE has no
    // preconditions; no handler is involved.
    let _ = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        )
    };
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst));
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let code = exit_code(&err);
            let msg = error_message(&err);
            if cli.json {
                let errno = err
                    .chain()
                    .find_map(|c| c.downcast_ref::<Error>().and_then(Error::errno))
                    .map(|e| format!("{e:?}"));
                let v = json!({ "error": { "message": msg, "exit_code": code, "errno": errno } });
                eprintln!("{v}");
            } else {
                eprintln!("blksnap: error: {msg}");
            }
            ExitCode::from(code)
        }
    }
}

/// Messages on standard error through the `log` crate: notes (info) by
/// default, `-v` adds debug, `-vv` trace, `-q` keeps warnings only, `-qq`
/// errors only. Lines read `blksnap: note: ...`, `blksnap: warning: ...`.
fn init_logging(verbose: u8, quiet: u8) {
    use log::{Level, LevelFilter};
    let level = match (verbose, quiet) {
        (0, 0) => LevelFilter::Info,
        (1, _) => LevelFilter::Debug,
        (v, _) if v > 1 => LevelFilter::Trace,
        (_, 1) => LevelFilter::Warn,
        _ => LevelFilter::Error,
    };
    env_logger::Builder::new()
        .filter_level(LevelFilter::Off)
        .filter_module("blksnap", level)
        .filter_module("libblksnap", level)
        .format(|buf, record| {
            let label = match record.level() {
                Level::Error => "error",
                Level::Warn => "warning",
                Level::Info => "note",
                Level::Debug => "debug",
                Level::Trace => "trace",
            };
            writeln!(buf, "blksnap: {label}: {}", record.args())
        })
        .target(env_logger::Target::Stderr)
        .init();
}

/// Writes the manual pages (section 8) of the command and its
/// subcommands, or a completion script, into `dir`.
fn generate(what: &GenerateCommand, j: bool) -> anyhow::Result<()> {
    use clap::CommandFactory;
    let dir = match what {
        GenerateCommand::Man { dir } | GenerateCommand::Completions { dir, .. } => dir,
    };
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut written = Vec::new();
    match what {
        GenerateCommand::Man { .. } => {
            fn pages(
                cmd: clap::Command,
                dir: &Path,
                out: &mut Vec<std::path::PathBuf>,
            ) -> std::io::Result<()> {
                for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
                    pages(sub.clone(), dir, out)?;
                }
                out.push(clap_mangen::Man::new(cmd).section("8").generate_to(dir)?);
                Ok(())
            }
            let mut cmd = cli::Cli::command().disable_help_subcommand(true);
            cmd.build();
            pages(cmd, dir, &mut written)
                .with_context(|| format!("write manual pages to {}", dir.display()))?;
        }
        GenerateCommand::Completions { shell, .. } => {
            let mut cmd = cli::Cli::command();
            written.push(
                clap_complete::generate_to(*shell, &mut cmd, "blksnap", dir)
                    .with_context(|| format!("write completions to {}", dir.display()))?,
            );
        }
    }
    written.sort();
    let names: Vec<String> = written.iter().map(|p| lossy(p)).collect();
    emit(j, json!({ "written": names }), || names.join("\n"));
    Ok(())
}

/// The error and its causes on one line, each said once (a cause whose
/// text the message already ends with is not repeated).
fn error_message(err: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if msg.ends_with(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg
}

/// Prints a result: JSON when asked, text otherwise.
fn emit(json_mode: bool, value: serde_json::Value, text: impl FnOnce() -> String) {
    let out = if json_mode {
        serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string())
    } else {
        text()
    };
    if !out.is_empty() {
        println!("{out}");
    }
}

/// A path as text for JSON output (bytes that are not UTF-8 replaced).
fn lossy(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Progress bars on standard error, shown only on a terminal.
struct Bars {
    visible: bool,
    bar: RefCell<Option<ProgressBar>>,
}

impl Bars {
    fn new(json_mode: bool) -> Self {
        Self {
            visible: !json_mode && std::io::stderr().is_terminal(),
            bar: RefCell::new(None),
        }
    }
}

impl Progress for Bars {
    fn start(&self, label: &str, total: u64) {
        let bar = if self.visible {
            ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>8} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("template")
            .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        *self.bar.borrow_mut() = Some(bar);
    }
    fn advance(&self, bytes: u64) {
        if let Some(b) = self.bar.borrow().as_ref() {
            b.inc(bytes);
        }
    }
    fn finish(&self) {
        if let Some(b) = self.bar.borrow_mut().take() {
            b.finish_and_clear();
        }
    }
    fn note(&self, msg: &str) {
        log::info!("{msg}");
    }
}

/// Opens the difference storage (see `libblksnap::storage`).
fn open_storage(a: &cli::StorageArgs) -> anyhow::Result<File> {
    Ok(libblksnap::storage::open_storage(
        &a.storage,
        a.allow_tmpfs,
    )?)
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let kernel = Kernel::new();
    let j = cli.json;
    match &cli.command {
        Command::ExitCodes => emit(
            j,
            json!({ "exit_codes": cli::EXIT_CODE_TABLE
                .iter()
                .map(|(code, meaning)| json!({ "code": code, "meaning": meaning }))
                .collect::<Vec<_>>() }),
            cli::exit_codes_text,
        ),
        Command::Generate(what) => generate(what, j)?,
        Command::Version => {
            let v = kernel.version()?;
            emit(
                j,
                json!({ "version": v, "tool": env!("CARGO_PKG_VERSION") }),
                || format!("blksnap interface {v}, tool {}", env!("CARGO_PKG_VERSION")),
            );
        }
        Command::Attach(a) => {
            let dev = kernel.open_device(&device_path(&a.device))?;
            let outcome = dev.attach()?;
            emit(
                j,
                json!({ "device": lossy(&a.device), "result": outcome }),
                || {
                    format!("{}: {:?}", a.device.display(), outcome)
                        .replace("AlreadyAttached", "already attached")
                        .replace("Attached", "attached")
                },
            );
        }
        Command::Detach(a) => {
            kernel.open_device(&device_path(&a.device))?.detach()?;
            emit(
                j,
                json!({ "device": lossy(&a.device), "result": "detached" }),
                || format!("{}: detached", a.device.display()),
            );
        }
        Command::Cbtinfo(a) => {
            let info = kernel.open_device(&device_path(&a.device))?.cbt_info()?;
            emit(j, json!(info), || {
                format!(
                    "device_capacity: {}\nblock_size: {}\nblock_count: {}\ngeneration_id: {}\nchanges_number: {}",
                    info.device_capacity, info.block_size, info.block_count, info.generation_id, info.changes_number
                )
            });
        }
        Command::Readcbtmap(a) => {
            let dev = kernel.open_device(&device_path(&a.device))?;
            let info = dev.cbt_info()?;
            let map = dev.cbt_map(&info)?;
            if let Some(out) = &a.output {
                libblksnap::util::write_synced(out, &map)?;
                emit(
                    j,
                    json!({ "output": lossy(out), "blocks": map.len() }),
                    String::new,
                );
                return Ok(());
            }
            let keep = |v: u8| match a.newer_than {
                Some(n) => v > n,
                None => a.all || v != 0,
            };
            let mut runs: Vec<(usize, usize, u8)> = Vec::new();
            for (i, &v) in map.iter().enumerate() {
                if !keep(v) {
                    continue;
                }
                match runs.last_mut() {
                    Some(r) if r.0 + r.1 == i && r.2 == v => r.1 += 1,
                    _ => runs.push((i, 1, v)),
                }
            }
            emit(
                j,
                json!({
                    "block_size": info.block_size,
                    "block_count": info.block_count,
                    "changes_number": info.changes_number,
                    "generation_id": info.generation_id,
                    "runs": runs.iter().map(|r| json!({"first": r.0, "count": r.1, "value": r.2})).collect::<Vec<_>>(),
                }),
                || {
                    runs.iter()
                        .map(|r| format!("{} {} {}", r.0, r.1, r.2))
                        .collect::<Vec<_>>()
                        .join("\n")
                },
            );
        }
        Command::Markdirtyblock(a) => {
            let dev = kernel.open_device(&device_path(&a.device))?;
            let ranges: Vec<SectorRange> = if let Some(file) = &a.file {
                let ext = libblksnap::fiemap::file_extents(file)?;
                let rdev = std::fs::metadata(device_path(&a.device))
                    .with_context(|| format!("stat {}", a.device.display()))?
                    .rdev();
                if ext.dev != rdev {
                    bail!(
                        "{} is not on {} (its file system is on device {}:{})",
                        file.display(),
                        a.device.display(),
                        nix::sys::stat::major(ext.dev),
                        nix::sys::stat::minor(ext.dev)
                    );
                }
                ext.ranges
            } else {
                a.sectors
                    .iter()
                    .map(|&(offset, count)| SectorRange { offset, count })
                    .collect()
            };
            if !ranges.is_empty() {
                dev.mark_dirty(&ranges)?;
            }
            let sectors: u64 = ranges.iter().map(|r| r.count).sum();
            emit(
                j,
                json!({ "device": lossy(&a.device), "ranges": ranges, "sectors": sectors }),
                || {
                    format!(
                        "{}: marked {} range(s), {} bytes",
                        a.device.display(),
                        ranges.len(),
                        sectors * SECTOR_SIZE
                    )
                },
            );
        }
        Command::Snapshot(s) => snapshot(&kernel, s, j)?,
        Command::Backup(a) => {
            let storage = open_storage(&a.storage)?;
            let state_dir = StateDir::new(DEFAULT_STATE_DIR);
            let mode = if a.full {
                Mode::Full
            } else if a.incremental {
                Mode::Incremental
            } else {
                Mode::Auto
            };
            let req = backup::BackupRequest {
                mode,
                state: Some(&state_dir),
                ..backup::BackupRequest::new(
                    a.devices.iter().map(|d| device_path(d)).collect(),
                    a.repo.clone(),
                    storage.as_fd(),
                    a.storage.limit / SECTOR_SIZE,
                    &INTERRUPTED,
                )
            };
            let report = backup::backup(&kernel, &req, &Bars::new(j))?;
            emit(j, json!(report), || {
                let mut s = format!("set {} written to {}", report.set, report.path.display());
                for d in &report.devices {
                    s.push_str(&format!(
                        "\n{}: {:?}, {} of {} blocks ({} bytes), changes number {}{}",
                        d.device,
                        d.kind,
                        d.blocks_copied,
                        d.blocks_total,
                        d.bytes_copied,
                        d.changes_number,
                        d.full_reason
                            .as_ref()
                            .map(|r| format!(" [{r}]"))
                            .unwrap_or_default()
                    ));
                }
                s
            });
        }
        Command::Restore(a) => {
            let name = device_name(&a.device);
            let choice = backup::Choice {
                device: &name,
                host: a.host.as_deref(),
                set: a.set.as_deref(),
            };
            let r = backup::restore_from(
                &a.repo,
                &choice,
                &a.target,
                a.force,
                &INTERRUPTED,
                &Bars::new(j),
            )?;
            emit(j, json!(r), || {
                format!(
                    "restored {} (sets {}) to {}: {} bytes",
                    r.device,
                    r.sets.join(", "),
                    r.target.display(),
                    r.capacity
                )
            });
        }
        Command::Verify(a) => {
            let name = device_name(&a.device);
            let choice = backup::Choice {
                device: &name,
                host: a.host.as_deref(),
                set: a.set.as_deref(),
            };
            let r = backup::verify_from(
                &a.repo,
                &choice,
                a.target.as_deref(),
                &INTERRUPTED,
                &Bars::new(j),
            )?;
            emit(j, json!(r), || match &r.against {
                Some(t) if r.mismatch_count == 0 => {
                    format!("{} matches set {} of {}", t.display(), r.set, r.device)
                }
                Some(t) => format!(
                    "{} differs from set {} of {} in {} block(s), first: {:?}",
                    t.display(),
                    r.set,
                    r.device,
                    r.mismatch_count,
                    &r.mismatched[..r.mismatched.len().min(10)]
                ),
                None if r.mismatch_count == 0 => format!(
                    "sets {} of {}: all {} stored blocks are intact",
                    r.sets.join(", "),
                    r.device,
                    r.blocks_checked
                ),
                None => format!(
                    "sets {} of {}: {} of {} stored blocks are damaged",
                    r.sets.join(", "),
                    r.device,
                    r.mismatch_count,
                    r.blocks_checked
                ),
            });
            if !r.damaged.is_empty() {
                let first: Vec<String> = r
                    .damaged
                    .iter()
                    .take(10)
                    .map(|d| format!("set {} block {}", d.set, d.block))
                    .collect();
                return Err(Error::Mismatch(format!(
                    "{} stored block(s) of {} do not match their checksums: {}{}",
                    r.mismatch_count,
                    r.device,
                    first.join(", "),
                    if r.mismatch_count > 10 { ", ..." } else { "" }
                ))
                .into());
            }
            if r.mismatch_count > 0 {
                return Err(
                    Error::Mismatch(format!("{} block(s) differ", r.mismatch_count)).into(),
                );
            }
        }
        Command::List(a) => {
            let name = a.device.as_deref().map(device_name);
            let l = backup::list_of(&a.repo, name.as_deref(), a.host.as_deref())?;
            emit(j, json!(l), || list_text(&l));
            // A damaged backup is the same cause, and status, as for
            // restore and verify; the listing is complete all the same.
            let damaged: Vec<String> = l
                .sets
                .iter()
                .flat_map(|s| {
                    s.devices
                        .iter()
                        .filter(|d| d.error.is_some())
                        .map(move |d| format!("set {} of {}", s.set, d.device))
                })
                .collect();
            if !damaged.is_empty() {
                return Err(Error::InvalidBackup(format!(
                    "{} cannot be used: {}",
                    if damaged.len() == 1 {
                        "a backup"
                    } else {
                        "backups"
                    },
                    damaged.join(", ")
                ))
                .into());
            }
        }
    }
    Ok(())
}

/// `blksnap list` as a table.
fn list_text(l: &backup::Listing) -> String {
    let mut rows = vec![[
        "SET".to_string(),
        "DEVICE".into(),
        "HOST".into(),
        "KIND".into(),
        "PARENT".into(),
        "CAPACITY".into(),
        "BLOCKS".into(),
        "DATA".into(),
        "MANIFEST".into(),
        "CREATED".into(),
    ]];
    let mut notes = Vec::new();
    for s in &l.sets {
        for d in &s.devices {
            if let Some(e) = &d.error {
                notes.push(format!("{} {}: {e}", s.set, d.device));
            }
            rows.push([
                s.set.clone(),
                d.device.clone(),
                d.host.clone().unwrap_or_else(|| "-".into()),
                match (d.kind, &d.error) {
                    (_, Some(_)) => "damaged".into(),
                    (Some(libblksnap::manifest::BackupKind::Full), _) => "full".into(),
                    (Some(_), _) => "incremental".into(),
                    (None, _) => "?".into(),
                },
                d.parent_set.clone().unwrap_or_else(|| "-".into()),
                human(d.capacity),
                format!("{}/{}", d.blocks_stored, d.blocks_total),
                human(d.data_bytes),
                human(d.manifest_bytes),
                d.created_unix
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
    }
    if rows.len() == 1 {
        return format!("{}: no backups", l.repository.display());
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out: Vec<String> = rows
        .iter()
        .map(|r| {
            r.iter()
                .zip(&widths)
                .map(|(v, w)| format!("{v:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect();
    out.extend(notes);
    out.join("\n")
}

/// A size in bytes with a binary unit.
fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn snapshot(kernel: &Kernel, cmd: &SnapshotCommand, j: bool) -> anyhow::Result<()> {
    match cmd {
        SnapshotCommand::Create(a) => {
            let devices = a
                .devices
                .iter()
                .map(|p| kernel.open_device(p))
                .collect::<Result<Vec<_>, _>>()?;
            let storage = open_storage(&a.storage)?;
            let id = kernel.snapshot_create(storage.as_fd(), a.storage.limit / SECTOR_SIZE)?;
            drop(storage);
            let state_dir = StateDir::new(DEFAULT_STATE_DIR);
            // The snapshot outlives this command: its owner is the leader
            // of the session that ran it (the login shell, the cron job,
            // the service), which subshells and pipelines do not change.
            let owner = nix::unistd::getsid(None)
                .unwrap_or_else(|_| nix::unistd::getppid())
                .as_raw() as u32;
            let recorded = devices
                .iter()
                .map(|d| state::RecordedDevice {
                    path: lossy(&d.identity().path),
                    name: d.identity().name.clone(),
                })
                .collect();
            let rec = state::SnapshotRecord::new(id, owner, "snapshot create", recorded);
            if let Err(e) = state_dir.record(&rec) {
                log::warn!("snapshot {id} is not recorded ({e}); `snapshot destroy --stale` will not know it");
            }
            for d in &devices {
                if let Err(e) = d.snapshot_add(&id) {
                    let _ = kernel.snapshot_destroy(&id);
                    state_dir.forget(&id);
                    if e.errno() == Some(nix::errno::Errno::EBUSY) {
                        let ident = d.identity();
                        bail!(
                            "{e}: {}",
                            state::busy_message(Some(&state_dir), &id, &ident.path, &ident.name)
                        );
                    }
                    return Err(e.into());
                }
            }
            let names: Vec<String> = a.devices.iter().map(|p| lossy(p)).collect();
            emit(j, json!({ "id": id, "devices": names }), || id.to_string());
        }
        SnapshotCommand::Add(a) => {
            kernel
                .open_device(&device_path(&a.device))?
                .snapshot_add(&a.id)?;
            emit(
                j,
                json!({ "id": a.id, "device": lossy(&a.device) }),
                String::new,
            );
        }
        SnapshotCommand::Take(a) => {
            kernel.snapshot_take(&a.id)?;
            emit(j, json!({ "id": a.id, "result": "taken" }), String::new);
        }
        SnapshotCommand::Destroy(a) => {
            let state_dir = StateDir::new(DEFAULT_STATE_DIR);
            match a.id {
                Some(id) => {
                    kernel.snapshot_destroy(&id)?;
                    state_dir.forget(&id);
                    emit(j, json!({ "id": id, "result": "destroyed" }), String::new);
                }
                None => {
                    let done = state::destroy_stale(kernel, &state_dir)?;
                    emit(j, json!({ "stale": done }), || {
                        done.iter()
                            .filter(|o| o.result != "owner-running")
                            .map(|o| match &o.error {
                                Some(e) => format!("{} ({}): failed: {e}", o.id, o.owner),
                                None => format!("{} ({}): {}", o.id, o.owner, o.result),
                            })
                            .collect::<Vec<_>>()
                            .join("\n")
                    });
                    if let Some(e) = done.iter().find_map(|o| o.error.as_ref()) {
                        bail!("a stale snapshot could not be destroyed: {e}");
                    }
                }
            }
        }
        SnapshotCommand::Collect => {
            let (snaps, unattributed) = state::collect(kernel, &StateDir::new(DEFAULT_STATE_DIR))?;
            emit(
                j,
                json!({ "snapshots": snaps, "unattributed_devices": unattributed }),
                || {
                    let mut lines = Vec::new();
                    for s in &snaps {
                        lines.push(s.id.to_string());
                        if let (Some(o), Some(alive)) = (&s.owner, s.owner_alive) {
                            lines.push(format!(
                                "  owner: {o}{}",
                                if alive {
                                    ""
                                } else {
                                    ", gone (stale: `blksnap snapshot destroy --stale`)"
                                }
                            ));
                        }
                        for d in &s.devices {
                            lines.push(format!("  device: {}{}", d.device, device_state(d)));
                        }
                    }
                    for d in &unattributed {
                        lines.push(format!(
                            "device in one of the snapshots above: {}{}",
                            d.device,
                            device_state(d)
                        ));
                    }
                    lines.join("\n")
                },
            );
        }
        SnapshotCommand::Info(a) => {
            let info = kernel
                .open_device(&device_path(&a.device))?
                .snapshot_info()?;
            emit(
                j,
                json!({ "error_code": info.error_code, "image": info.image, "image_path": info.image_path() }),
                || {
                    format!(
                        "error_code: {}\nimage: {}",
                        info.error_code,
                        info.image_path()
                            .map(|p| p.display().to_string())
                            .unwrap_or_else(|| "(not taken)".into())
                    )
                },
            );
        }
        SnapshotCommand::WaitEvent(a) => {
            let outcome =
                kernel.snapshot_wait_event(&a.id, Duration::from_millis(a.timeout.into()))?;
            print_outcome(j, &outcome);
            if outcome == WaitOutcome::Gone {
                bail!("snapshot {} does not exist", a.id);
            }
        }
        SnapshotCommand::Watch(a) => loop {
            if INTERRUPTED.load(Ordering::SeqCst) {
                return Err(Error::Interrupted.into());
            }
            match kernel.snapshot_wait_event(&a.id, Duration::from_millis(500)) {
                Ok(WaitOutcome::Timeout) => continue,
                Ok(WaitOutcome::Gone) => {
                    print_outcome(j, &WaitOutcome::Gone);
                    break;
                }
                Ok(o) => print_outcome(j, &o),
                Err(e) if e.errno() == Some(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
            let _ = std::io::stdout().flush();
        },
    }
    Ok(())
}

/// ", image /dev/blksnap-image_252:16" and the error of a snapshot's device.
fn device_state(d: &state::SnapshotDevice) -> String {
    let mut s = String::new();
    if !d.image.is_empty() {
        s.push_str(&format!(", image /dev/{}", d.image));
    }
    if d.error_code != 0 {
        s.push_str(&format!(
            ", corrupted: {}",
            libblksnap::util::errno_text(nix::errno::Errno::from_raw(-d.error_code))
        ));
    }
    s
}

fn print_outcome(j: bool, o: &WaitOutcome) {
    let (v, t) = match o {
        WaitOutcome::Event(e) => (json!(e), format!("{e:?}")),
        WaitOutcome::Timeout => (json!({ "event": "timeout" }), "timeout".into()),
        WaitOutcome::Gone => (json!({ "event": "destroyed" }), "snapshot destroyed".into()),
    };
    if j {
        println!("{v}");
    } else {
        println!("{t}");
    }
}
