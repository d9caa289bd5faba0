//! The snapshots this tool made, and whether the process that owns each is
//! still there.
//!
//! The kernel does not know who made a snapshot: `collect` lists ids only.
//! So each blksnap run that creates a snapshot writes a state file
//! `<id>.json` into a state directory (by default [`DEFAULT_STATE_DIR`], on
//! tmpfs like every `/run`, so it is empty after a reboot, as the kernel's
//! list of snapshots is). The file names the owning process: its pid and
//! its start time (from `/proc/PID/stat`), so that a pid reused by another
//! process does not count as the owner. The file is removed when the tool
//! destroys the snapshot. A snapshot whose file names a process that is
//! gone was left behind by a killed run: it is *stale*, and
//! [`destroy_stale`] destroys it. A snapshot without a state file (made by
//! another program) is never destroyed by it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::api::{Blksnap, TrackedDevice};
use crate::error::{Error, Result};

/// Where the state files are kept by default.
pub const DEFAULT_STATE_DIR: &str = "/run/blksnap";

/// A device of a recorded snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedDevice {
    /// The path the device was given by.
    pub path: String,
    /// Kernel name.
    pub name: String,
}

/// The state file of one snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub id: Uuid,
    /// The process that owns the snapshot: it destroys it when done.
    pub pid: u32,
    /// Start time of that process (clock ticks after boot, field 22 of
    /// `/proc/PID/stat`), to tell it from a later process with its pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start: Option<u64>,
    /// What made it (`backup`, `snapshot create`).
    pub command: String,
    pub devices: Vec<RecordedDevice>,
    pub created_unix: u64,
}

/// The start time of process `pid`, if it exists.
pub fn process_start(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &text[text.rfind(')')? + 1..];
    // Field 3 is the first after the name; the start time is field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl SnapshotRecord {
    /// A record of snapshot `id` owned by process `pid`.
    pub fn new(id: Uuid, pid: u32, command: &str, devices: Vec<RecordedDevice>) -> Self {
        Self {
            id,
            pid,
            pid_start: process_start(pid),
            command: command.into(),
            devices,
            created_unix: crate::util::now_unix(),
        }
    }

    /// True while the owning process runs.
    pub fn owner_alive(&self) -> bool {
        match (process_start(self.pid), self.pid_start) {
            (None, _) => false,
            (Some(now), Some(then)) => now == then,
            (Some(_), None) => true,
        }
    }

    /// "pid 123 (blksnap backup)".
    pub fn owner(&self) -> String {
        format!("pid {} (blksnap {})", self.pid, self.command)
    }

    /// True when the snapshot holds the device with this path or name.
    pub fn holds(&self, path: &Path, name: &str) -> bool {
        self.devices
            .iter()
            .any(|d| d.name == name || Path::new(&d.path) == path)
    }
}

/// A directory of state files.
#[derive(Clone, Debug)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn file(&self, id: &Uuid) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Writes the state file of a snapshot (atomically: a reader sees the
    /// whole file or none).
    pub fn record(&self, rec: &SnapshotRecord) -> Result<()> {
        fs::create_dir_all(&self.dir)
            .map_err(|e| Error::io(format!("create {}", self.dir.display()), e))?;
        let path = self.file(&rec.id);
        let tmp = self.dir.join(format!(".{}.tmp", rec.id));
        let text = serde_json::to_vec(rec)
            .map_err(|e| Error::Invalid(format!("cannot serialise the snapshot state: {e}")))?;
        let ctx = || format!("write {}", tmp.display());
        let mut f = fs::File::create(&tmp).map_err(|e| Error::io(ctx(), e))?;
        f.write_all(&text).map_err(|e| Error::io(ctx(), e))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(|e| Error::io(format!("write {}", path.display()), e))?;
        log::debug!("recorded snapshot {} in {}", rec.id, path.display());
        Ok(())
    }

    /// Removes the state file of a snapshot (a missing one is fine).
    pub fn forget(&self, id: &Uuid) {
        let _ = fs::remove_file(self.file(id));
    }

    /// The state file of a snapshot, if there is a readable one.
    pub fn get(&self, id: &Uuid) -> Option<SnapshotRecord> {
        let text = fs::read(self.file(id)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Every readable state file.
    pub fn all(&self) -> Vec<SnapshotRecord> {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut v: Vec<SnapshotRecord> = rd
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let id = Uuid::parse_str(name.strip_suffix(".json")?).ok()?;
                self.get(&id)
            })
            .collect();
        v.sort_by_key(|r| r.created_unix);
        v
    }
}

/// A device's snapshot state, as `snapshotinfo` tells it.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotDevice {
    pub device: String,
    /// Image disk name (empty until taken).
    pub image: String,
    pub error_code: i32,
}

/// A snapshot with what is known of it.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotDetails {
    pub id: Uuid,
    /// Owner, for snapshots this tool made ("pid 123 (blksnap backup)").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Whether the owner still runs (absent for snapshots of others).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_alive: Option<bool>,
    /// Its devices, as far as they can be told (see [`collect`]).
    pub devices: Vec<SnapshotDevice>,
}

/// The existing snapshots, each with its owner and devices.
///
/// The kernel's `snapshotinfo` of a tracked device gives the image and
/// error of its snapshot but not the snapshot's id, so devices are
/// attributed from the state files (snapshots of this tool), and the
/// remaining tracked devices that have an image go to the one snapshot
/// without a state file, when there is exactly one; otherwise they are
/// returned apart (the second value), unattributed.
pub fn collect<K: Blksnap>(
    kernel: &K,
    state: &StateDir,
) -> Result<(Vec<SnapshotDetails>, Vec<SnapshotDevice>)> {
    let ids = kernel.snapshot_collect()?;
    let mut tracked: Vec<(PathBuf, String, crate::api::SnapshotInfo)> = Vec::new();
    for path in kernel.tracked_devices()? {
        let Ok(dev) = kernel.open_device(&path) else {
            continue;
        };
        if let Ok(info) = dev.snapshot_info() {
            tracked.push((path, dev.identity().name.clone(), info));
        }
    }
    let mut used = vec![false; tracked.len()];
    let mut out = Vec::new();
    for id in &ids {
        let rec = state.get(id);
        let mut devices = Vec::new();
        if let Some(r) = &rec {
            for d in &r.devices {
                let found = tracked
                    .iter()
                    .position(|(p, n, _)| *n == d.name || p == Path::new(&d.path));
                let (image, error_code) = match found {
                    Some(i) => {
                        used[i] = true;
                        (tracked[i].2.image.clone(), tracked[i].2.error_code)
                    }
                    None => (String::new(), 0),
                };
                devices.push(SnapshotDevice {
                    device: d.path.clone(),
                    image,
                    error_code,
                });
            }
        }
        out.push(SnapshotDetails {
            id: *id,
            owner: rec.as_ref().map(SnapshotRecord::owner),
            owner_alive: rec.as_ref().map(SnapshotRecord::owner_alive),
            devices,
        });
    }
    let rest: Vec<SnapshotDevice> = tracked
        .iter()
        .zip(&used)
        .filter(|((_, _, info), used)| !**used && !info.image.is_empty())
        .map(|((p, _, info), _)| SnapshotDevice {
            device: p.to_string_lossy().into_owned(),
            image: info.image.clone(),
            error_code: info.error_code,
        })
        .collect();
    let mut unowned = out.iter_mut().filter(|s| s.owner.is_none());
    match (unowned.next(), unowned.next()) {
        (Some(only), None) => {
            only.devices = rest;
            Ok((out, Vec::new()))
        }
        _ => Ok((out, rest)),
    }
}

/// What [`destroy_stale`] did with one state file.
#[derive(Clone, Debug, Serialize)]
pub struct StaleOutcome {
    pub id: Uuid,
    pub owner: String,
    /// `destroyed`, `already-gone` (the file was removed), `owner-running`
    /// (left alone) or `failed`.
    pub result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Destroys the snapshots this tool made whose owner is gone, and removes
/// state files of snapshots that no longer exist. Snapshots without a
/// state file are not touched.
pub fn destroy_stale<K: Blksnap>(kernel: &K, state: &StateDir) -> Result<Vec<StaleOutcome>> {
    let existing = kernel.snapshot_collect()?;
    let mut out = Vec::new();
    for rec in state.all() {
        let mut o = StaleOutcome {
            id: rec.id,
            owner: rec.owner(),
            result: String::new(),
            error: None,
        };
        if !existing.contains(&rec.id) {
            state.forget(&rec.id);
            o.result = "already-gone".into();
        } else if rec.owner_alive() {
            o.result = "owner-running".into();
        } else {
            match kernel.snapshot_destroy(&rec.id) {
                Ok(()) => {
                    state.forget(&rec.id);
                    o.result = "destroyed".into();
                }
                Err(e) => {
                    o.result = "failed".into();
                    o.error = Some(e.to_string());
                }
            }
        }
        log::debug!("stale snapshot {}: {}", rec.id, o.result);
        out.push(o);
    }
    Ok(out)
}

/// The message for a device that cannot be added to a new snapshot
/// because it is in another one (EBUSY): who holds it and what to do.
/// `new` is the snapshot the device was to be added to (not a holder).
pub fn busy_message(state: Option<&StateDir>, new: &Uuid, path: &Path, name: &str) -> String {
    let holder = state.and_then(|s| {
        s.all()
            .into_iter()
            .find(|r| r.id != *new && r.holds(path, name))
    });
    let shown = path.display();
    match holder {
        Some(r) if !r.owner_alive() => format!(
            "{shown} is in snapshot {} left behind by {}, which is gone: run \
             `blksnap snapshot destroy --stale` and try again",
            r.id,
            r.owner()
        ),
        Some(r) => format!(
            "{shown} is in snapshot {} of a running {}; try again when it has finished",
            r.id,
            r.owner()
        ),
        None => format!(
            "{shown} is already in another snapshot: `blksnap snapshot collect` lists them; \
             `blksnap snapshot destroy --stale` destroys those left by killed blksnap runs, \
             `blksnap snapshot destroy --id ID` any other"
        ),
    }
}
