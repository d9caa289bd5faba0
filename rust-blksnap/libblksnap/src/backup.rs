//! The backup engine: full and incremental backups of several devices from
//! one coherent snapshot, restore of a backup chain, and verification.
//!
//! # Which blocks an incremental copies
//!
//! The readable CBT map of a device is frozen when a snapshot is taken, and
//! each byte holds the changes number of the interval in which its block was
//! last written. `changes_number` in the tracker's info is the number of that
//! snapshot. A block written after the snapshot with number `P` was taken
//! carries a number greater than `P`. So, with the previous backup made from
//! the snapshot numbered `P` (recorded in its manifest), the new backup
//! copies the blocks whose byte is greater than `P`; every other block is
//! unchanged since the previous backup's snapshot. This holds only within one
//! tracking generation and for the same block size and capacity; otherwise
//! the backup is full, and the report says why.
//!
//! # Concurrent runs
//!
//! A backup holds the repository's lock exclusively from before it looks at
//! the earlier sets until its set is in place; restore, verify and list hold
//! it shared. A run that finds the lock taken fails at once with
//! [`Error::Locked`], naming the holder.

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::fd::BorrowedFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use uuid::Uuid;

use crate::api::{Attach, Blksnap, CbtInfo, DeviceIdentity, TrackedDevice};
use crate::error::{Error, Result};
use crate::identity::HostRecord;
use crate::manifest::{
    device_stem, digest, set_name, sources, unique_suffix, BackupKind, CbtRecord, DeviceRecord,
    Digest, Manifest, ParentRef, RepoLock, Repository, Segment, Sums, SumsWriter,
    CHECKSUM_ALGORITHM, LOCK_FILE, MANIFEST_FORMAT,
};
use crate::state::{RecordedDevice, SnapshotRecord, StateDir};
use crate::util::{
    drop_cache, errno_text, now_unix, remove_tree, serialize_opt_path_lossy, serialize_path_lossy,
    sync_dir,
};

/// Receives progress of long operations.
pub trait Progress {
    /// A new phase of `total` bytes starts.
    fn start(&self, _label: &str, _total: u64) {}
    /// `bytes` more were processed.
    fn advance(&self, _bytes: u64) {}
    /// The phase ended.
    fn finish(&self) {}
    /// A remark for the user.
    fn note(&self, _msg: &str) {}
}

/// Progress that goes nowhere.
pub struct NoProgress;
impl Progress for NoProgress {}

/// Whether a backup may be incremental.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Incremental when a usable earlier backup exists, full otherwise.
    Auto,
    /// Always full.
    Full,
    /// Incremental, or fail when impossible.
    Incremental,
}

/// What to back up and where.
pub struct BackupRequest<'a> {
    pub devices: Vec<PathBuf>,
    pub repository: PathBuf,
    pub mode: Mode,
    /// Difference storage for the snapshot (file, O_TMPFILE file or device).
    pub diff_storage: BorrowedFd<'a>,
    /// Limit of the difference storage in sectors.
    pub diff_storage_limit_sectors: u64,
    /// Set when the user asked to stop.
    pub interrupt: &'a AtomicBool,
    /// The host recorded in the manifests (None: this machine).
    pub host: Option<HostRecord>,
    /// Where the snapshot's state file is written while it exists, so that
    /// a snapshot of a killed run can be recognised (None: nowhere).
    pub state: Option<&'a StateDir>,
}

impl<'a> BackupRequest<'a> {
    /// A request to back up `devices` into `repository` (a full or an incremental backup, as the
    /// repository allows), with the difference storage `diff_storage` of at most
    /// `diff_storage_limit_sectors`, recorded as made on this machine, with no state file.
    pub fn new(
        devices: Vec<PathBuf>,
        repository: PathBuf,
        diff_storage: BorrowedFd<'a>,
        diff_storage_limit_sectors: u64,
        interrupt: &'a AtomicBool,
    ) -> Self {
        Self {
            devices,
            repository,
            mode: Mode::Auto,
            diff_storage,
            diff_storage_limit_sectors,
            interrupt,
            host: None,
            state: None,
        }
    }
}

/// Outcome for one device.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceReport {
    pub device: String,
    #[serde(serialize_with = "serialize_path_lossy")]
    pub path: PathBuf,
    pub kind: BackupKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_set: Option<String>,
    pub generation_id: Uuid,
    pub changes_number: u8,
    pub block_size: u32,
    pub blocks_total: u32,
    pub blocks_copied: u64,
    pub bytes_copied: u64,
}

/// Outcome of a backup.
#[derive(Clone, Debug, Serialize)]
pub struct BackupReport {
    pub set: String,
    #[serde(serialize_with = "serialize_path_lossy")]
    pub path: PathBuf,
    pub snapshot_id: Uuid,
    pub devices: Vec<DeviceReport>,
}

/// Destroys the snapshot when dropped, unless already destroyed, and
/// removes its state file once it is destroyed.
struct SnapshotGuard<'k, K: Blksnap> {
    kernel: &'k K,
    id: Option<Uuid>,
    state: Option<&'k StateDir>,
}

impl<K: Blksnap> SnapshotGuard<'_, K> {
    fn destroy(&mut self) -> Result<()> {
        match self.id.take() {
            Some(id) => {
                self.kernel.snapshot_destroy(&id)?;
                if let Some(s) = self.state {
                    s.forget(&id);
                }
                Ok(())
            }
            None => Ok(()),
        }
    }
}

impl<K: Blksnap> Drop for SnapshotGuard<'_, K> {
    fn drop(&mut self) {
        let _ = self.destroy();
    }
}

/// Removes the temporary set directory when dropped, unless disarmed.
struct TempDirGuard(Option<PathBuf>);
impl Drop for TempDirGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            remove_tree(&p);
        }
    }
}

/// The lock of a backup run. If the run created the repository directory
/// and fails before a set is in place, the directory is removed again (it
/// holds nothing but the lock file then).
struct RunLock {
    lock: Option<RepoLock>,
    created: Option<PathBuf>,
}

impl Drop for RunLock {
    fn drop(&mut self) {
        if let Some(root) = self.created.take() {
            let _ = fs::remove_file(root.join(LOCK_FILE));
            let _ = fs::remove_dir(&root);
        }
        self.lock.take();
    }
}

/// Decides whether a device's backup can build on `prev`; returns the reason
/// it cannot.
pub fn full_reason(prev: Option<&Manifest>, info: &CbtInfo, mode: Mode) -> Option<String> {
    if mode == Mode::Full {
        return Some("full backup requested".into());
    }
    let Some(p) = prev else {
        return Some("no earlier backup of this device in the repository".into());
    };
    if p.device.capacity != info.device_capacity {
        return Some(format!(
            "device size changed from {} to {} bytes",
            p.device.capacity, info.device_capacity
        ));
    }
    if p.cbt.block_size != info.block_size {
        return Some(format!(
            "CBT block size changed from {} to {} bytes",
            p.cbt.block_size, info.block_size
        ));
    }
    if p.cbt.generation_id != info.generation_id {
        return Some(format!(
            "CBT generation changed from {} to {} (tracking was restarted, \
             e.g. the filter was re-attached, the system rebooted or the \
             changes counter wrapped), so the change map cannot tell what \
             changed since set {}",
            p.cbt.generation_id, info.generation_id, p.set
        ));
    }
    if info.changes_number <= p.cbt.changes_number {
        return Some(format!(
            "changes number {} is not newer than {} of set {}",
            info.changes_number, p.cbt.changes_number, p.set
        ));
    }
    None
}

struct Planned<D> {
    dev: D,
    prev: Option<(Manifest, String)>,
    /// Why there is no `prev` though the repository holds backups of the
    /// device's name (from other hosts).
    no_prev: Option<String>,
}

/// Why a backup of `ident` cannot build on `prev` though the CBT would
/// allow it: the device's stable name changed (another disk got its
/// kernel name).
pub fn identity_reason(prev: &Manifest, ident: &DeviceIdentity) -> Option<String> {
    match (&prev.device.stable_id, &ident.stable_id) {
        (Some(a), Some(b)) if a != b => Some(format!(
            "{} is another device than in set {}: {b}, not {a}",
            ident.name, prev.set
        )),
        _ => None,
    }
}

/// Refuses a repository on one of the devices being backed up (or on a
/// partition of one): its own writes would be in the snapshot, grow the
/// difference storage, and be copied by the next incremental.
fn check_repository_placement<D: TrackedDevice>(root: &Path, devices: &[D]) -> Result<()> {
    let Some(fs_dev) = crate::util::fs_device(root) else {
        return Ok(());
    };
    let disk = crate::util::whole_disk_of(fs_dev.0, fs_dev.1);
    for d in devices {
        let id = d.identity();
        let here = (id.major, id.minor);
        if here == fs_dev || Some(here) == disk {
            return Err(Error::Invalid(format!(
                "the repository {} is on {} ({}:{}), which is being backed up: its writes \
                 would be part of the snapshot; put the repository on another device",
                root.display(),
                id.path.display(),
                fs_dev.0,
                fs_dev.1
            )));
        }
    }
    Ok(())
}

fn check_interrupt(flag: &AtomicBool) -> Result<()> {
    if flag.load(Ordering::Relaxed) {
        Err(Error::Interrupted)
    } else {
        Ok(())
    }
}

/// Backs up the devices of `req` from one snapshot into a new set.
pub fn backup<K: Blksnap>(
    kernel: &K,
    req: &BackupRequest<'_>,
    progress: &dyn Progress,
) -> Result<BackupReport> {
    if req.devices.is_empty() {
        return Err(Error::Invalid("no device to back up".into()));
    }
    let repo = Repository::new(&req.repository);

    // Open every device before touching the repository or the kernel's
    // state.
    let mut devices: Vec<K::Device> = Vec::new();
    for path in &req.devices {
        let dev = kernel.open_device(path)?;
        let id = dev.identity().clone();
        if let Some(other) = devices.iter().find(|o| {
            let o = o.identity();
            (o.major, o.minor) == (id.major, id.minor)
                || device_stem(&o.name) == device_stem(&id.name)
        }) {
            return Err(Error::Invalid(format!(
                "{} and {} are the same device",
                other.identity().path.display(),
                path.display()
            )));
        }
        devices.push(dev);
    }
    check_repository_placement(repo.root(), &devices)?;
    check_interrupt(req.interrupt)?;
    let host = req.host.clone().unwrap_or_else(HostRecord::current);

    // The repository, locked for the rest of the run.
    let existed = repo.root().is_dir();
    fs::create_dir_all(repo.root())
        .map_err(|e| Error::io(format!("create {}", repo.root().display()), e))?;
    let mut run_lock = RunLock {
        lock: None,
        created: (!existed).then(|| repo.root().to_path_buf()),
    };
    run_lock.lock = Some(repo.lock(true, "backup")?);
    repo.remove_stale_partials()?;

    // What each device builds on.
    let mut planned: Vec<Planned<K::Device>> = Vec::new();
    for dev in devices {
        let name = dev.identity().name.clone();
        let (prev, no_prev) = match req.mode {
            Mode::Full => (None, None),
            _ => match repo.latest_of_host(&name, &host)? {
                (Some(set), _) => (Some(repo.load(&set, &name)?), None),
                (None, others) if !others.is_empty() => (
                    None,
                    Some(format!(
                        "no earlier backup of {name} from this host ({}); the repository \
                         holds backups of {name} from {}",
                        host.hostname,
                        others.join(", ")
                    )),
                ),
                (None, _) => (None, None),
            },
        };
        if req.mode == Mode::Incremental && prev.is_none() {
            return Err(Error::Invalid(format!(
                "{}: cannot make an incremental backup: {}",
                dev.identity().path.display(),
                no_prev
                    .as_deref()
                    .unwrap_or("no earlier backup of this device in the repository")
            )));
        }
        planned.push(Planned { dev, prev, no_prev });
    }
    check_interrupt(req.interrupt)?;

    for p in &planned {
        if p.dev.attach()? == Attach::Attached {
            progress.note(&format!(
                "attached the blksnap filter to {}; change tracking starts now",
                p.dev.identity().path.display()
            ));
        }
    }

    let set = set_name(repo.next_set()?);
    let final_dir = repo.set_dir(&set);
    let tmp_dir = repo.partial_dir(&set);
    fs::create_dir(&tmp_dir).map_err(|e| Error::io(format!("create {}", tmp_dir.display()), e))?;
    let mut tmp_guard = TempDirGuard(Some(tmp_dir.clone()));

    let id = kernel.snapshot_create(req.diff_storage, req.diff_storage_limit_sectors)?;
    let mut snap = SnapshotGuard {
        kernel,
        id: Some(id),
        state: req.state,
    };
    if let Some(state) = req.state {
        let devices = planned
            .iter()
            .map(|p| RecordedDevice {
                path: p.dev.identity().path.to_string_lossy().into_owned(),
                name: p.dev.identity().name.clone(),
            })
            .collect();
        let rec = SnapshotRecord::new(id, std::process::id(), "backup", devices);
        if let Err(e) = state.record(&rec) {
            log::warn!("the snapshot is not recorded ({e}); if this run is killed, destroy it with `blksnap snapshot destroy --id {id}`");
        }
    }
    for p in &planned {
        if let Err(e) = p.dev.snapshot_add(&id) {
            if e.errno() == Some(nix::errno::Errno::EBUSY) {
                let ident = p.dev.identity();
                return Err(Error::Invalid(format!(
                    "snapshotadd on {}: {}: {}",
                    ident.path.display(),
                    errno_text(nix::errno::Errno::EBUSY),
                    crate::state::busy_message(req.state, &id, &ident.path, &ident.name)
                )));
            }
            return Err(e);
        }
    }
    kernel.snapshot_take(&id)?;

    let mut manifests = Vec::new();
    let mut reports = Vec::new();
    for p in &planned {
        let (m, r) = backup_one(kernel, p, &host, &set, id, &tmp_dir, req, progress)?;
        manifests.push(m);
        reports.push(r);
    }
    snap.destroy()?;

    for m in &manifests {
        m.save(&tmp_dir.join(format!("{}.json", device_stem(&m.device.name))))?;
    }
    check_interrupt(req.interrupt)?;
    sync_dir(&tmp_dir)?;
    fs::rename(&tmp_dir, &final_dir).map_err(|e| {
        Error::io(
            format!("rename {} to {}", tmp_dir.display(), final_dir.display()),
            e,
        )
    })?;
    tmp_guard.0 = None;
    run_lock.created = None;
    sync_dir(repo.root())?;
    Ok(BackupReport {
        set,
        path: final_dir,
        snapshot_id: id,
        devices: reports,
    })
}

/// Largest read of a snapshot image: adjacent blocks to copy are read
/// together, up to this many bytes (at least one block).
pub const READ_CHUNK: u64 = 1 << 20;
/// Alignment of the read buffer, for images opened with O_DIRECT.
const READ_ALIGN: usize = 4096;

/// The reads of a backup: runs of adjacent blocks for which `to_copy` is
/// true, each cut into pieces of at most `max` blocks, as `(first, count)`.
pub fn reads<F: Fn(u32) -> bool>(
    block_count: u32,
    max: u32,
    to_copy: F,
) -> impl Iterator<Item = (u32, u32)> {
    let max = max.max(1);
    let mut next = 0u32;
    std::iter::from_fn(move || {
        while next < block_count && !to_copy(next) {
            next += 1;
        }
        if next >= block_count {
            return None;
        }
        let first = next;
        while next < block_count && next - first < max && to_copy(next) {
            next += 1;
        }
        Some((first, next - first))
    })
}

/// The digests of the blocks of `buf` (blocks of `bs` bytes, the last may
/// be short) into `out`, on up to `threads` threads.
fn hash_blocks(buf: &[u8], bs: usize, out: &mut [Digest], threads: usize) {
    let per = out.len().div_ceil(threads.max(1)).max(1);
    if threads <= 1 || out.len() < 4 {
        for (d, b) in out.iter_mut().zip(buf.chunks(bs)) {
            *d = digest(b);
        }
        return;
    }
    std::thread::scope(|s| {
        for (outs, bytes) in out.chunks_mut(per).zip(buf.chunks(per * bs)) {
            s.spawn(move || {
                for (d, b) in outs.iter_mut().zip(bytes.chunks(bs)) {
                    *d = digest(b);
                }
            });
        }
    });
}

/// Fails if the snapshot of `dev` broke (the kernel queued a `corrupted` event for it).
fn broken_while_read<D: TrackedDevice>(dev: &D, ident: &DeviceIdentity) -> Result<()> {
    let info = dev.snapshot_info()?;
    if info.error_code != 0 {
        return Err(Error::Invalid(format!(
            "snapshot of {} became corrupted while it was read (event \"corrupted\", {}); \
             the backup is incomplete and was not recorded",
            ident.path.display(),
            errno_text(nix::errno::Errno::from_raw(-info.error_code))
        )));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn backup_one<K: Blksnap>(
    kernel: &K,
    plan: &Planned<K::Device>,
    host: &HostRecord,
    set: &str,
    snapshot_id: Uuid,
    dir: &Path,
    req: &BackupRequest<'_>,
    progress: &dyn Progress,
) -> Result<(Manifest, DeviceReport)> {
    let dev = &plan.dev;
    let prev = plan.prev.as_ref();
    let ident = dev.identity().clone();
    let info = dev.cbt_info()?;
    info.validate()?;
    let snap_info = dev.snapshot_info()?;
    if snap_info.error_code != 0 {
        return Err(Error::Invalid(format!(
            "snapshot of {} is corrupted: {}",
            ident.path.display(),
            errno_text(nix::errno::Errno::from_raw(-snap_info.error_code))
        )));
    }
    let reason = match (prev, &plan.no_prev) {
        (None, Some(why)) if req.mode != Mode::Full => Some(why.clone()),
        (Some((pm, _)), _) => {
            identity_reason(pm, &ident).or_else(|| full_reason(Some(pm), &info, req.mode))
        }
        _ => full_reason(None, &info, req.mode),
    };
    if req.mode == Mode::Incremental {
        if let Some(r) = &reason {
            return Err(Error::Invalid(format!(
                "{}: cannot make an incremental backup: {r}",
                ident.path.display()
            )));
        }
    }
    // Which blocks to copy: for an incremental, those whose map byte is
    // newer than the parent's snapshot (one byte a block, read once).
    let (kind, changed_map, parent) = match (&reason, prev) {
        (None, Some((pm, psum))) => (
            BackupKind::Incremental,
            Some((dev.cbt_map(&info)?, pm.cbt.changes_number)),
            Some(ParentRef {
                set: pm.set.clone(),
                manifest_checksum: psum.clone(),
            }),
        ),
        _ => (BackupKind::Full, None, None),
    };
    let to_copy = |b: u32| match &changed_map {
        Some((map, p)) => map.get(b as usize).is_some_and(|&v| v > *p),
        None => true,
    };
    if let Some(r) = &reason {
        progress.note(&format!("{}: full backup: {r}", ident.name));
    }

    let image = kernel.open_image(&snap_info)?;
    let stem = device_stem(&ident.name);
    let data_name = format!("{stem}.data");
    let data_path = dir.join(&data_name);
    let sums_name = format!("{stem}.sums");
    let mut sums = SumsWriter::create(&dir.join(&sums_name))?;
    let file = File::create(&data_path)
        .map_err(|e| Error::io(format!("create {}", data_path.display()), e))?;

    let mut stored: Vec<[u32; 2]> = Vec::new();
    let mut bytes = 0u64;
    let total: u64 = (0..info.block_count)
        .filter(|&b| to_copy(b))
        .map(|b| info.block_len(b))
        .sum();
    progress.start(&ident.name, total);
    let bs = info.block_size as usize;
    let per_read = (READ_CHUNK / bs as u64).clamp(1, u64::from(u32::MAX)) as u32;
    // One buffer for the largest read, aligned for O_DIRECT.
    let mut raw = vec![0u8; per_read as usize * bs + READ_ALIGN];
    let at = raw.as_ptr().align_offset(READ_ALIGN).min(READ_ALIGN);
    let mut digests = vec![[0u8; 32]; per_read as usize];
    let zero = digest(&vec![0u8; bs]);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8);
    let write_err = |e| Error::io(format!("write {}", data_path.display()), e);
    for (first, n) in reads(info.block_count, per_read, &to_copy) {
        check_interrupt(req.interrupt)?;
        let last = first + n - 1;
        let len = (n as usize - 1) * bs + info.block_len(last) as usize;
        let off = u64::from(first) * bs as u64;
        let buf = &mut raw[at..at + len];
        if let Err(e) = image.read_exact_at(buf, off) {
            // A read fails once the snapshot broke: say so rather than only "I/O error".
            broken_while_read(dev, &ident)?;
            return Err(Error::io(format!("read {} at {off}", snap_info.image), e));
        }
        let digests = &mut digests[..n as usize];
        hash_blocks(buf, bs, digests, threads);
        // Blocks of zeroes are left as holes in the data file (they read
        // back as zeroes); the others are written in runs.
        let mut i = 0usize;
        while i < digests.len() {
            let is_zero = |i: usize| digests[i] == zero && i * bs + bs <= len;
            if is_zero(i) {
                i += 1;
                continue;
            }
            let j = (i..digests.len())
                .find(|&j| is_zero(j))
                .unwrap_or(digests.len());
            let span = &buf[i * bs..(j * bs).min(len)];
            file.write_all_at(span, bytes + (i * bs) as u64)
                .map_err(write_err)?;
            i = j;
        }
        for d in digests.iter() {
            sums.push(d)?;
        }
        match stored.last_mut() {
            Some(r) if r[0] + r[1] == first => r[1] += n,
            _ => stored.push([first, n]),
        }
        bytes += len as u64;
        progress.advance(len as u64);
    }
    progress.finish();
    file.set_len(bytes).map_err(write_err)?;
    file.sync_all()
        .map_err(|e| Error::io(format!("sync {}", data_path.display()), e))?;
    let sums_checksum = sums.finish()?;

    // A snapshot that broke while it was read gives no backup.
    broken_while_read(dev, &ident)?;

    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        set: set.to_string(),
        kind,
        full_reason: reason.clone(),
        created_unix: now_unix(),
        snapshot_id,
        host: Some(host.clone()),
        device: DeviceRecord {
            name: ident.name.clone(),
            path: ident.path.to_string_lossy().into_owned(),
            major: ident.major,
            minor: ident.minor,
            capacity: info.device_capacity,
            stable_id: ident.stable_id.clone(),
        },
        cbt: CbtRecord::from_info(&info),
        parent: parent.clone(),
        data_file: data_name,
        stored,
        data_size: bytes,
        checksum_algorithm: CHECKSUM_ALGORITHM.into(),
        sums_file: sums_name,
        sums_checksum,
        legacy_sums: None,
    };
    manifest.validate()?;
    let report = DeviceReport {
        device: ident.name,
        path: ident.path,
        kind,
        full_reason: reason,
        parent_set: parent.map(|p| p.set),
        generation_id: info.generation_id,
        changes_number: info.changes_number,
        block_size: info.block_size,
        blocks_total: info.block_count,
        blocks_copied: manifest.stored_blocks(),
        bytes_copied: bytes,
    };
    Ok((manifest, report))
}

/// Takes the shared lock of a repository that should hold backups of
/// `device`; a missing repository is reported as having none.
fn lock_for_reading(repo: &Repository, device: &str, what: &str) -> Result<RepoLock> {
    if !repo.root().is_dir() {
        return Err(Error::InvalidBackup(format!(
            "{}: no backup of device {device} (there is no repository)",
            repo.root().display()
        )));
    }
    repo.lock(false, what)
}

/// Outcome of a restore.
#[derive(Clone, Debug, Serialize)]
pub struct RestoreReport {
    pub device: String,
    #[serde(serialize_with = "serialize_path_lossy")]
    pub target: PathBuf,
    pub sets: Vec<String>,
    pub capacity: u64,
    pub bytes_written: u64,
}

/// Largest read of the repository's files at once.
const CHUNK_BYTES: u64 = 1 << 20;

/// Bytes of blocks `first..first + count` of a set (the device's last
/// block may be short).
fn span_len(m: &Manifest, first: u64, count: u64) -> u64 {
    let last = first + count - 1;
    (count - 1) * u64::from(m.cbt.block_size) + m.block_len(last as u32)
}

/// The data files of a chain, opened with their cached pages dropped.
fn open_data(repo: &Repository, chain: &[Manifest]) -> Result<Vec<(File, PathBuf)>> {
    chain
        .iter()
        .map(|m| {
            let path = repo.set_dir(&m.set).join(&m.data_file);
            let f =
                File::open(&path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
            drop_cache(&f);
            Ok((f, path))
        })
        .collect()
}

/// What [`read_segment`] hands each block to: (block, bytes, stored digest).
type BlockFn<'a> = dyn FnMut(u64, &[u8], &Digest) -> Result<()> + 'a;

/// Calls `f(block, bytes, digest)` for each block of `seg`, read from its
/// set's data and sums files in chunks.
fn read_segment(
    chain: &[Manifest],
    data: &[(File, PathBuf)],
    sums: &[Sums],
    seg: &Segment,
    interrupt: &AtomicBool,
    f: &mut BlockFn<'_>,
) -> Result<()> {
    let m = &chain[seg.set];
    let bs = u64::from(m.cbt.block_size);
    let per_chunk = (CHUNK_BYTES / bs).max(1);
    let (file, path) = &data[seg.set];
    let mut buf = Vec::new();
    let mut digests = Vec::new();
    let mut done = 0u64;
    while done < seg.count {
        check_interrupt(interrupt)?;
        let n = per_chunk.min(seg.count - done);
        let first = seg.first + done;
        buf.resize(span_len(m, first, n) as usize, 0);
        file.read_exact_at(&mut buf, seg.data_offset + done * bs)
            .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        digests.resize(n as usize, [0u8; 32]);
        sums[seg.set].read_at(seg.sum_index + done, &mut digests)?;
        for (i, d) in digests.iter().enumerate() {
            let start = i * bs as usize;
            let end = (start + bs as usize).min(buf.len());
            f(first + i as u64, &buf[start..end], d)?;
        }
        done += n;
    }
    Ok(())
}

/// Writes the chain's final state to `out`: each block once, from the newest
/// set that holds it, checked against the digest stored with it. Each set's
/// files are read in order. With `sparse`, blocks of zeroes are not written
/// (the target reads as zeroes there already).
fn replay(
    repo: &Repository,
    chain: &[Manifest],
    out: &File,
    sparse: bool,
    interrupt: &AtomicBool,
    progress: &dyn Progress,
) -> Result<u64> {
    let Some(last) = chain.last() else {
        return Ok(0);
    };
    let mut segments = sources(chain)?;
    let sums = chain
        .iter()
        .map(|m| repo.sums(m))
        .collect::<Result<Vec<_>>>()?;
    let data = open_data(repo, chain)?;
    segments.sort_by_key(|s| (s.set, s.first));
    progress.start(&last.device.name, last.device.capacity);
    let bs = u64::from(last.cbt.block_size);
    let mut written = 0u64;
    for seg in &segments {
        let m = &chain[seg.set];
        let path = &data[seg.set].1;
        read_segment(chain, &data, &sums, seg, interrupt, &mut |b, bytes, d| {
            if digest(bytes) != *d {
                return Err(Error::InvalidBackup(format!(
                    "set {} of {}: block {b} does not match its checksum ({})",
                    m.set,
                    m.device.name,
                    path.display()
                )));
            }
            if !(sparse && bytes.iter().all(|&x| x == 0)) {
                out.write_all_at(bytes, b * bs)
                    .map_err(|e| Error::io("write restored data", e))?;
            }
            written += bytes.len() as u64;
            progress.advance(bytes.len() as u64);
            Ok(())
        })?;
    }
    for (f, _) in &data {
        drop_cache(f);
    }
    progress.finish();
    Ok(written)
}

fn capacity_of(file: &File, path: &Path) -> Result<u64> {
    let mut f = file;
    f.seek(SeekFrom::End(0))
        .map_err(|e| Error::io(format!("size of {}", path.display()), e))
}

/// Where a restore writes.
enum Target {
    /// A block device, opened exclusively.
    Device,
    /// An image file at this path (symbolic links resolved), written under
    /// a temporary name and renamed.
    Image(PathBuf),
}

/// Decides what `target` is and whether it may be written, before anything
/// is read or written.
fn plan_target(target: &Path, overwrite: bool) -> Result<Target> {
    let shown = target.display();
    match fs::metadata(target) {
        Ok(m) if m.file_type().is_block_device() => {
            if overwrite {
                Ok(Target::Device)
            } else {
                Err(Error::Invalid(format!(
                    "{shown} is a block device: the restore would overwrite it \
                     (use --force to do so)"
                )))
            }
        }
        Ok(m) if m.is_dir() => Err(Error::Invalid(format!(
            "{shown} is a directory: give the name of an image file or a block device"
        ))),
        Ok(m) if m.is_file() => {
            if !overwrite {
                return Err(Error::Invalid(format!(
                    "{shown} exists (use --force to replace it)"
                )));
            }
            let real =
                fs::canonicalize(target).map_err(|e| Error::io(format!("resolve {shown}"), e))?;
            Ok(Target::Image(real))
        }
        Ok(_) => Err(Error::Invalid(format!(
            "{shown} is not a regular file or a block device"
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if target.file_name().is_none() {
                return Err(Error::Invalid(format!("{shown}: not a file name")));
            }
            Ok(Target::Image(target.to_path_buf()))
        }
        Err(e) => Err(Error::io(format!("stat {shown}"), e)),
    }
}

/// Restores `device` as of `set` (default: newest) to `target`, a block
/// device or an image file. A block device is written only with `overwrite`,
/// and is opened exclusively (`O_EXCL`), which fails while it is mounted or
/// held. An image file is written under a temporary name and renamed at the
/// end; an existing one is replaced only with `overwrite`. The target is
/// checked before anything is written.
pub fn restore(
    repository: &Path,
    device: &str,
    set: Option<&str>,
    target: &Path,
    overwrite: bool,
    interrupt: &AtomicBool,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let choice = Choice {
        device,
        host: None,
        set,
    };
    restore_from(repository, &choice, target, overwrite, interrupt, progress)
}

/// Which backup of a repository to restore or verify.
#[derive(Clone, Copy, Debug)]
pub struct Choice<'a> {
    /// Kernel name of the device.
    pub device: &'a str,
    /// The host (host name or machine id) whose backup to take; needed
    /// when the repository holds backups of `device` from several hosts.
    pub host: Option<&'a str>,
    /// The set whose state to take (default: the newest of the host).
    pub set: Option<&'a str>,
}

/// The chain of manifests of a choice.
fn chosen_chain(repo: &Repository, c: &Choice<'_>) -> Result<Vec<Manifest>> {
    let set = repo.choose_set(c.device, c.host, c.set)?;
    log::debug!(
        "{}: chain of {} ending with set {set}",
        repo.root().display(),
        c.device
    );
    repo.chain(c.device, Some(&set))
}

/// As [`restore`], for a backup chosen by device, host and set.
pub fn restore_from(
    repository: &Path,
    choice: &Choice<'_>,
    target: &Path,
    overwrite: bool,
    interrupt: &AtomicBool,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let device = choice.device;
    let plan = plan_target(target, overwrite)?;
    let repo = Repository::new(repository);
    let _lock = lock_for_reading(&repo, device, "restore")?;
    let chain = chosen_chain(&repo, choice)?;
    let Some(last) = chain.last() else {
        return Err(Error::InvalidBackup(format!(
            "no backup of device {device}"
        )));
    };
    let capacity = last.device.capacity;
    let sets = chain.iter().map(|m| m.set.clone()).collect();

    let written = match plan {
        Target::Device => {
            let file = OpenOptions::new()
                .write(true)
                .custom_flags(nix::libc::O_EXCL)
                .open(target)
                .map_err(|e| {
                    if e.raw_os_error() == Some(nix::libc::EBUSY) {
                        Error::Invalid(format!(
                            "{} is in use (mounted, or held by another program or device); \
                             it is not overwritten",
                            target.display()
                        ))
                    } else {
                        Error::io(format!("open {}", target.display()), e)
                    }
                })?;
            let size = capacity_of(&file, target)?;
            if size < capacity {
                return Err(Error::Invalid(format!(
                    "{} holds {size} bytes, the backup needs {capacity}",
                    target.display()
                )));
            }
            let n = replay(&repo, &chain, &file, false, interrupt, progress)?;
            file.sync_all()
                .map_err(|e| Error::io(format!("sync {}", target.display()), e))?;
            n
        }
        Target::Image(path) => {
            let name = path
                .file_name()
                .ok_or_else(|| Error::Invalid(format!("{}: not a file name", path.display())))?;
            let tmp = path.with_file_name(format!(
                ".{}.{}.partial",
                name.to_string_lossy(),
                unique_suffix()
            ));
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(|e| Error::io(format!("create {}", tmp.display()), e))?;
            let guard = TempFileGuard(Some(tmp.clone()));
            file.set_len(capacity)
                .map_err(|e| Error::io(format!("size {}", tmp.display()), e))?;
            let n = replay(&repo, &chain, &file, true, interrupt, progress)?;
            file.sync_all()
                .map_err(|e| Error::io(format!("sync {}", tmp.display()), e))?;
            fs::rename(&tmp, &path)
                .map_err(|e| Error::io(format!("rename to {}", path.display()), e))?;
            std::mem::forget(guard);
            n
        }
    };
    Ok(RestoreReport {
        device: device.to_string(),
        target: target.to_path_buf(),
        sets,
        capacity,
        bytes_written: written,
    })
}

struct TempFileGuard(Option<PathBuf>);
impl Drop for TempFileGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// A stored block that does not match its digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DamagedBlock {
    pub set: String,
    pub block: u64,
}

/// Outcome of a verification.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    pub device: String,
    pub set: String,
    /// The sets of the chain, oldest first.
    pub sets: Vec<String>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_opt_path_lossy"
    )]
    pub against: Option<PathBuf>,
    pub blocks: u32,
    /// Blocks read and compared.
    pub blocks_checked: u64,
    /// Blocks of the target whose contents differ (at most the first 100).
    pub mismatched: Vec<u32>,
    /// Stored blocks that do not match their digests (at most the first
    /// 100), when the backup alone is checked.
    pub damaged: Vec<DamagedBlock>,
    /// Number of differing or damaged blocks.
    pub mismatch_count: u64,
}

/// Checks a backup. Without `against`, reads every stored block of every
/// set of the chain (also those that newer sets supersede) and compares it
/// with the digest stored with it. With `against`, compares each block of a
/// device or image with the backup's final state. The repository's files
/// (and the target) are read with their cached pages dropped first, so that
/// the check reads the media.
pub fn verify(
    repository: &Path,
    device: &str,
    set: Option<&str>,
    against: Option<&Path>,
    interrupt: &AtomicBool,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let choice = Choice {
        device,
        host: None,
        set,
    };
    verify_from(repository, &choice, against, interrupt, progress)
}

/// As [`verify`], for a backup chosen by device, host and set.
pub fn verify_from(
    repository: &Path,
    choice: &Choice<'_>,
    against: Option<&Path>,
    interrupt: &AtomicBool,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let device = choice.device;
    let repo = Repository::new(repository);
    let _lock = lock_for_reading(&repo, device, "verify")?;
    let chain = chosen_chain(&repo, choice)?;
    let Some(last) = chain.last() else {
        return Err(Error::InvalidBackup(format!(
            "no backup of device {device}"
        )));
    };
    let mut report = VerifyReport {
        device: device.to_string(),
        set: last.set.clone(),
        sets: chain.iter().map(|m| m.set.clone()).collect(),
        against: against.map(Path::to_path_buf),
        blocks: last.cbt.block_count,
        blocks_checked: 0,
        mismatched: Vec::new(),
        damaged: Vec::new(),
        mismatch_count: 0,
    };
    let sums = chain
        .iter()
        .map(|m| repo.sums(m))
        .collect::<Result<Vec<_>>>()?;

    let Some(path) = against else {
        let data = open_data(&repo, &chain)?;
        let total: u64 = chain.iter().map(|m| m.data_size).sum();
        progress.start(device, total);
        for (i, m) in chain.iter().enumerate() {
            let mut sum_index = 0u64;
            for r in &m.stored {
                let seg = Segment {
                    first: u64::from(r[0]),
                    count: u64::from(r[1]),
                    set: i,
                    sum_index,
                    data_offset: sum_index * u64::from(m.cbt.block_size),
                };
                read_segment(&chain, &data, &sums, &seg, interrupt, &mut |b, bytes, d| {
                    if digest(bytes) != *d {
                        report.mismatch_count += 1;
                        if report.damaged.len() < 100 {
                            report.damaged.push(DamagedBlock {
                                set: m.set.clone(),
                                block: b,
                            });
                        }
                    }
                    report.blocks_checked += 1;
                    progress.advance(bytes.len() as u64);
                    Ok(())
                })?;
                sum_index += u64::from(r[1]);
            }
            drop_cache(&data[i].0);
        }
        progress.finish();
        return Ok(report);
    };

    let file = File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::DeviceNotFound(path.to_path_buf()),
        std::io::ErrorKind::PermissionDenied => Error::PermissionDenied(path.to_path_buf()),
        _ => Error::io(format!("open {}", path.display()), e),
    })?;
    drop_cache(&file);
    let size = capacity_of(&file, path)?;
    if size < last.device.capacity {
        return Err(Error::Mismatch(format!(
            "{} holds {size} bytes, the backup {}",
            path.display(),
            last.device.capacity
        )));
    }
    let segments = sources(&chain)?;
    progress.start(device, last.device.capacity);
    let bs = u64::from(last.cbt.block_size);
    let per_chunk = (CHUNK_BYTES / bs).max(1);
    let mut buf = Vec::new();
    let mut digests = Vec::new();
    for seg in &segments {
        let mut done = 0u64;
        while done < seg.count {
            check_interrupt(interrupt)?;
            let n = per_chunk.min(seg.count - done);
            let first = seg.first + done;
            buf.resize(span_len(last, first, n) as usize, 0);
            file.read_exact_at(&mut buf, first * bs)
                .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
            digests.resize(n as usize, [0u8; 32]);
            sums[seg.set].read_at(seg.sum_index + done, &mut digests)?;
            for (i, d) in digests.iter().enumerate() {
                let start = i * bs as usize;
                let end = (start + bs as usize).min(buf.len());
                if digest(&buf[start..end]) != *d {
                    report.mismatch_count += 1;
                    if report.mismatched.len() < 100 {
                        report.mismatched.push((first + i as u64) as u32);
                    }
                }
                report.blocks_checked += 1;
            }
            progress.advance(buf.len() as u64);
            done += n;
        }
    }
    drop_cache(&file);
    progress.finish();
    Ok(report)
}

/// One device's backup in a set, as listed.
#[derive(Clone, Debug, Serialize)]
pub struct ListedBackup {
    pub device: String,
    /// The manifest file.
    pub manifest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<BackupKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_set: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_unix: Option<u64>,
    /// Host name of the machine the backup was made on (format 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
    /// Stable name of the device (format 3, where it had one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stable_id: Option<String>,
    pub capacity: u64,
    pub block_size: u32,
    pub blocks_total: u32,
    pub blocks_stored: u64,
    pub data_bytes: u64,
    /// Bytes of the manifest and the sums file.
    pub manifest_bytes: u64,
    /// Why the backup cannot be used, if it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One set, as listed.
#[derive(Clone, Debug, Serialize)]
pub struct ListedSet {
    pub set: String,
    pub devices: Vec<ListedBackup>,
}

/// What a repository holds.
#[derive(Clone, Debug, Serialize)]
pub struct Listing {
    #[serde(serialize_with = "serialize_path_lossy")]
    pub repository: PathBuf,
    pub sets: Vec<ListedSet>,
}

/// Lists the sets of a repository and the backups in each (of `device`
/// only, if given). A backup whose manifest or files are damaged is listed
/// with the reason.
pub fn list(repository: &Path, device: Option<&str>) -> Result<Listing> {
    list_of(repository, device, None)
}

/// As [`list`], of the backups of host `host` (host name or machine id)
/// only, if given; backups that record no host are listed with any.
pub fn list_of(repository: &Path, device: Option<&str>, host: Option<&str>) -> Result<Listing> {
    let repo = Repository::new(repository);
    let _lock = repo.lock(false, "list")?;
    let mut sets = Vec::new();
    for set in repo.sets()? {
        let dir = repo.set_dir(&set);
        let rd = fs::read_dir(&dir).map_err(|e| Error::io(format!("read {}", dir.display()), e))?;
        let mut files: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        let mut devices = Vec::new();
        for file in files {
            let stem = file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let json_len = fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            let mut entry = ListedBackup {
                device: stem,
                manifest: file.to_string_lossy().into_owned(),
                kind: None,
                parent_set: None,
                full_reason: None,
                format: None,
                path: None,
                created_unix: None,
                host: None,
                machine_id: None,
                stable_id: None,
                capacity: 0,
                block_size: 0,
                blocks_total: 0,
                blocks_stored: 0,
                data_bytes: 0,
                manifest_bytes: json_len,
                error: None,
            };
            match Manifest::load(&file).map(|(m, _)| {
                let checked = repo.load(&set, &m.device.name).map(drop);
                (m, checked)
            }) {
                Ok((m, checked)) => {
                    entry.device = m.device.name.clone();
                    entry.kind = Some(m.kind);
                    entry.parent_set = m.parent.as_ref().map(|p| p.set.clone());
                    entry.full_reason = m.full_reason.clone();
                    entry.format = Some(m.format);
                    entry.path = Some(m.device.path.clone());
                    entry.created_unix = Some(m.created_unix);
                    entry.host = m.host.as_ref().map(|h| h.hostname.clone());
                    entry.machine_id = m.host.as_ref().and_then(|h| h.machine_id.clone());
                    entry.stable_id = m.device.stable_id.clone();
                    if let (Some(want), Some(h)) = (host, &m.host) {
                        if !h.answers_to(want) {
                            continue;
                        }
                    }
                    entry.capacity = m.device.capacity;
                    entry.block_size = m.cbt.block_size;
                    entry.blocks_total = m.cbt.block_count;
                    entry.blocks_stored = m.stored_blocks();
                    entry.data_bytes = m.data_size;
                    if m.legacy_sums.is_none() {
                        entry.manifest_bytes += fs::metadata(dir.join(&m.sums_file))
                            .map(|x| x.len())
                            .unwrap_or(0);
                    }
                    entry.error = checked.err().map(|e| e.to_string());
                }
                Err(e) => entry.error = Some(e.to_string()),
            }
            if device.is_none_or(|d| d == entry.device) {
                devices.push(entry);
            }
        }
        if !devices.is_empty() || (device.is_none() && host.is_none()) {
            sets.push(ListedSet { set, devices });
        }
    }
    Ok(Listing {
        repository: repository.to_path_buf(),
        sets,
    })
}

#[cfg(test)]
mod read_tests {
    use super::*;

    #[test]
    fn adjacent_blocks_are_merged_into_reads_of_at_most_max() {
        let changed = |b: u32| matches!(b, 0..=2 | 5 | 7..=12 | 15);
        let got: Vec<_> = reads(16, 4, changed).collect();
        assert_eq!(got, [(0, 3), (5, 1), (7, 4), (11, 2), (15, 1)]);
        assert_eq!(reads(16, 100, |_| true).collect::<Vec<_>>(), [(0, 16)]);
        assert_eq!(reads(16, 0, |b| b == 3).collect::<Vec<_>>(), [(3, 1)]);
        assert_eq!(reads(0, 4, |_| true).count(), 0);
    }

    #[test]
    fn parallel_hashes_are_the_blocks_hashes() {
        let buf: Vec<u8> = (0..(37 * 512 + 100)).map(|i| (i % 251) as u8).collect();
        let mut one = vec![[0u8; 32]; 38];
        let mut many = vec![[0u8; 32]; 38];
        hash_blocks(&buf, 512, &mut one, 1);
        hash_blocks(&buf, 512, &mut many, 5);
        assert_eq!(one, many);
        assert_eq!(many[37], digest(&buf[37 * 512..]));
    }
}
