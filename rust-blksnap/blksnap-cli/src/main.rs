//! `blksnap`: command-line tool for the blksnap kernel interface.

mod cli;

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
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
use libblksnap::sys::Kernel;
use libblksnap::Error;

use cli::{Cli, Command, SnapshotCommand};

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
        eprintln!("blksnap: note: {msg}");
    }
}

/// Opens the difference storage as the kernel wants it.
fn open_storage(path: &Path) -> anyhow::Result<File> {
    let meta = std::fs::metadata(path);
    let mut opts = OpenOptions::new();
    opts.read(true).write(true);
    let what = match &meta {
        Ok(m) if m.is_dir() => {
            opts.custom_flags(nix::libc::O_TMPFILE | nix::libc::O_EXCL);
            "an unnamed temporary file in"
        }
        Ok(m) if m.file_type().is_block_device() => {
            opts.custom_flags(nix::libc::O_EXCL);
            "block device"
        }
        Ok(_) => bail!(
            "difference storage {} exists; give a directory, a block device or a new file name",
            path.display()
        ),
        Err(_) => {
            opts.create_new(true);
            "new file"
        }
    };
    opts.open(path).map_err(|e| {
        let kind = if e.kind() == std::io::ErrorKind::PermissionDenied {
            Error::PermissionDenied(path.to_path_buf())
        } else {
            Error::io(
                format!("open difference storage ({what} {})", path.display()),
                e,
            )
        };
        anyhow::Error::new(kind)
    })
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
        Command::Version => {
            let v = kernel.version()?;
            emit(
                j,
                json!({ "version": v, "tool": env!("CARGO_PKG_VERSION") }),
                || format!("blksnap interface {v}, tool {}", env!("CARGO_PKG_VERSION")),
            );
        }
        Command::Attach(a) => {
            let dev = kernel.open_device(&a.device)?;
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
            kernel.open_device(&a.device)?.detach()?;
            emit(
                j,
                json!({ "device": lossy(&a.device), "result": "detached" }),
                || format!("{}: detached", a.device.display()),
            );
        }
        Command::Cbtinfo(a) => {
            let info = kernel.open_device(&a.device)?.cbt_info()?;
            emit(j, json!(info), || {
                format!(
                    "device_capacity: {}\nblock_size: {}\nblock_count: {}\ngeneration_id: {}\nchanges_number: {}",
                    info.device_capacity, info.block_size, info.block_count, info.generation_id, info.changes_number
                )
            });
        }
        Command::Readcbtmap(a) => {
            let dev = kernel.open_device(&a.device)?;
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
            let dev = kernel.open_device(&a.device)?;
            let ranges: Vec<SectorRange> = if let Some(file) = &a.file {
                let ext = libblksnap::fiemap::file_extents(file)?;
                let rdev = std::fs::metadata(&a.device)
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
            let storage = open_storage(&a.storage.storage)?;
            let mode = if a.full {
                Mode::Full
            } else if a.incremental {
                Mode::Incremental
            } else {
                Mode::Auto
            };
            let req = backup::BackupRequest {
                devices: a.devices.clone(),
                repository: a.repo.clone(),
                mode,
                diff_storage: storage.as_fd(),
                diff_storage_limit_sectors: a.storage.limit / SECTOR_SIZE,
                interrupt: &INTERRUPTED,
                host: None,
                state: None,
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
            let r = backup::restore(
                &a.repo,
                &a.device,
                a.set.as_deref(),
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
            let r = backup::verify(
                &a.repo,
                &a.device,
                a.set.as_deref(),
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
            let l = backup::list(&a.repo, a.device.as_deref())?;
            emit(j, json!(l), || list_text(&l));
        }
    }
    Ok(())
}

/// `blksnap list` as a table.
fn list_text(l: &backup::Listing) -> String {
    let mut rows = vec![[
        "SET".to_string(),
        "DEVICE".into(),
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
            let storage = open_storage(&a.storage.storage)?;
            let id = kernel.snapshot_create(storage.as_fd(), a.storage.limit / SECTOR_SIZE)?;
            drop(storage);
            for d in &devices {
                if let Err(e) = d.snapshot_add(&id) {
                    let _ = kernel.snapshot_destroy(&id);
                    return Err(e.into());
                }
            }
            let names: Vec<String> = a.devices.iter().map(|p| lossy(p)).collect();
            emit(j, json!({ "id": id, "devices": names }), || id.to_string());
        }
        SnapshotCommand::Add(a) => {
            kernel.open_device(&a.device)?.snapshot_add(&a.id)?;
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
            kernel.snapshot_destroy(&a.id)?;
            emit(j, json!({ "id": a.id, "result": "destroyed" }), String::new);
        }
        SnapshotCommand::Collect => {
            let ids = kernel.snapshot_collect()?;
            emit(j, json!({ "snapshots": ids }), || {
                ids.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        SnapshotCommand::Info(a) => {
            let info = kernel.open_device(&a.device)?.snapshot_info()?;
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
