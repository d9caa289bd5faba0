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

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::os::fd::BorrowedFd;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use uuid::Uuid;

use crate::api::{Attach, Blksnap, CbtInfo, DeviceIdentity, TrackedDevice};
use crate::error::{Error, Result};
use crate::manifest::{
    checksum, device_stem, set_name, BackupKind, CbtRecord, DeviceRecord, Manifest, ParentRef,
    Repository, CHECKSUM_ALGORITHM, MANIFEST_FORMAT,
};
use crate::util::{remove_tree, sync_dir};

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
}

/// Outcome for one device.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceReport {
    pub device: String,
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
    pub path: PathBuf,
    pub snapshot_id: Uuid,
    pub devices: Vec<DeviceReport>,
}

/// Destroys the snapshot when dropped, unless already destroyed.
struct SnapshotGuard<'k, K: Blksnap> {
    kernel: &'k K,
    id: Option<Uuid>,
}

impl<K: Blksnap> SnapshotGuard<'_, K> {
    fn destroy(&mut self) -> Result<()> {
        match self.id.take() {
            Some(id) => self.kernel.snapshot_destroy(&id),
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

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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
    fs::create_dir_all(repo.root())
        .map_err(|e| Error::io(format!("create {}", repo.root().display()), e))?;

    // Open every device and find what each builds on, before touching the
    // kernel's state.
    let mut planned: Vec<Planned<K::Device>> = Vec::new();
    for path in &req.devices {
        let dev = kernel.open_device(path)?;
        let id = dev.identity().clone();
        if let Some(other) = planned.iter().find(|p| {
            let o = p.dev.identity();
            (o.major, o.minor) == (id.major, id.minor)
                || device_stem(&o.name) == device_stem(&id.name)
        }) {
            return Err(Error::Invalid(format!(
                "{} and {} are the same device",
                other.dev.identity().path.display(),
                path.display()
            )));
        }
        let prev = match req.mode {
            Mode::Full => None,
            _ => match repo.latest_with(&id.name, None)? {
                Some(set) => Some(repo.load(&set, &id.name)?),
                None => None,
            },
        };
        planned.push(Planned { dev, prev });
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
    let tmp_dir = repo.root().join(format!(".{set}.partial"));
    remove_tree(&tmp_dir);
    fs::create_dir(&tmp_dir).map_err(|e| Error::io(format!("create {}", tmp_dir.display()), e))?;
    let mut tmp_guard = TempDirGuard(Some(tmp_dir.clone()));

    let id = kernel.snapshot_create(req.diff_storage, req.diff_storage_limit_sectors)?;
    let mut snap = SnapshotGuard {
        kernel,
        id: Some(id),
    };
    for p in &planned {
        p.dev.snapshot_add(&id)?;
    }
    kernel.snapshot_take(&id)?;

    let mut manifests = Vec::new();
    let mut reports = Vec::new();
    for p in &planned {
        let (m, r) = backup_one(
            kernel,
            &p.dev,
            p.prev.as_ref(),
            &set,
            id,
            &tmp_dir,
            req,
            progress,
        )?;
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
    sync_dir(repo.root())?;
    Ok(BackupReport {
        set,
        path: final_dir,
        snapshot_id: id,
        devices: reports,
    })
}

/// Fails if the snapshot of `dev` broke (the kernel queued a `corrupted` event for it).
fn broken_while_read<D: TrackedDevice>(dev: &D, ident: &DeviceIdentity) -> Result<()> {
    let info = dev.snapshot_info()?;
    if info.error_code != 0 {
        return Err(Error::Invalid(format!(
            "snapshot of {} became corrupted while it was read (event \"corrupted\", {}); \
             the backup is incomplete and was not recorded",
            ident.path.display(),
            nix::errno::Errno::from_raw(-info.error_code).desc()
        )));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn backup_one<K: Blksnap>(
    kernel: &K,
    dev: &K::Device,
    prev: Option<&(Manifest, String)>,
    set: &str,
    snapshot_id: Uuid,
    dir: &Path,
    req: &BackupRequest<'_>,
    progress: &dyn Progress,
) -> Result<(Manifest, DeviceReport)> {
    let ident = dev.identity().clone();
    let info = dev.cbt_info()?;
    info.validate()?;
    let snap_info = dev.snapshot_info()?;
    if snap_info.error_code != 0 {
        return Err(Error::Invalid(format!(
            "snapshot of {} is corrupted: {}",
            ident.path.display(),
            nix::errno::Errno::from_raw(-snap_info.error_code).desc()
        )));
    }
    let reason = full_reason(prev.map(|p| &p.0), &info, req.mode);
    if req.mode == Mode::Incremental {
        if let Some(r) = &reason {
            return Err(Error::Invalid(format!(
                "{}: cannot make an incremental backup: {r}",
                ident.path.display()
            )));
        }
    }
    // Which blocks to copy, and the checksums carried over.
    let (kind, to_copy, mut sums, parent) = match (&reason, prev) {
        (None, Some((pm, psum))) => {
            let map = dev.cbt_map(&info)?;
            let changed: Vec<bool> = map.iter().map(|&v| v > pm.cbt.changes_number).collect();
            (
                BackupKind::Incremental,
                changed,
                pm.block_checksums.clone(),
                Some(ParentRef {
                    set: pm.set.clone(),
                    manifest_checksum: psum.clone(),
                }),
            )
        }
        _ => (
            BackupKind::Full,
            vec![true; info.block_count as usize],
            vec![String::new(); info.block_count as usize],
            None,
        ),
    };
    if let Some(r) = &reason {
        progress.note(&format!("{}: full backup: {r}", ident.name));
    }

    let image = kernel.open_image(&snap_info)?;
    let stem = device_stem(&ident.name);
    let data_name = format!("{stem}.data");
    let data_path = dir.join(&data_name);
    let file = File::create(&data_path)
        .map_err(|e| Error::io(format!("create {}", data_path.display()), e))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);

    let mut stored: Vec<[u32; 2]> = Vec::new();
    let mut bytes = 0u64;
    let total: u64 = (0..info.block_count)
        .filter(|&b| to_copy[b as usize])
        .map(|b| info.block_len(b))
        .sum();
    progress.start(&ident.name, total);
    let mut buf = vec![0u8; info.block_size as usize];
    for b in 0..info.block_count {
        if !to_copy[b as usize] {
            continue;
        }
        check_interrupt(req.interrupt)?;
        let len = info.block_len(b) as usize;
        let off = u64::from(b) * u64::from(info.block_size);
        if let Err(e) = image.read_exact_at(&mut buf[..len], off) {
            // A read fails once the snapshot broke: say so rather than only "I/O error".
            broken_while_read(dev, &ident)?;
            return Err(Error::io(format!("read {} at {off}", snap_info.image), e));
        }
        out.write_all(&buf[..len])
            .map_err(|e| Error::io(format!("write {}", data_path.display()), e))?;
        sums[b as usize] = checksum(&buf[..len]);
        match stored.last_mut() {
            Some(r) if r[0] + r[1] == b => r[1] += 1,
            _ => stored.push([b, 1]),
        }
        bytes += len as u64;
        progress.advance(len as u64);
    }
    progress.finish();
    let file = out
        .into_inner()
        .map_err(|e| Error::io(format!("write {}", data_path.display()), e.into_error()))?;
    file.sync_all()
        .map_err(|e| Error::io(format!("sync {}", data_path.display()), e))?;

    // A snapshot that broke while it was read gives no backup.
    broken_while_read(dev, &ident)?;

    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        set: set.to_string(),
        kind,
        full_reason: reason.clone(),
        created_unix: now_unix(),
        snapshot_id,
        device: DeviceRecord {
            name: ident.name.clone(),
            path: ident.path.clone(),
            major: ident.major,
            minor: ident.minor,
            capacity: info.device_capacity,
        },
        cbt: CbtRecord::from_info(&info),
        parent: parent.clone(),
        data_file: data_name,
        stored,
        data_size: bytes,
        checksum_algorithm: CHECKSUM_ALGORITHM.into(),
        block_checksums: sums,
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

/// Outcome of a restore.
#[derive(Clone, Debug, Serialize)]
pub struct RestoreReport {
    pub device: String,
    pub target: PathBuf,
    pub sets: Vec<String>,
    pub capacity: u64,
    pub bytes_written: u64,
}

/// Where restored blocks go.
trait Sink {
    fn put(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()>;
}

struct FileSink<'a>(&'a File);
impl Sink for FileSink<'_> {
    fn put(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.0.write_all_at(data, offset)
    }
}

struct NullSink;
impl Sink for NullSink {
    fn put(&mut self, _: u64, _: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads every block of the chain's final state from the newest set that
/// holds it, checks it against the final manifest and hands it to `sink`.
fn replay(
    repo: &Repository,
    chain: &[Manifest],
    sink: &mut dyn Sink,
    interrupt: &AtomicBool,
    progress: &dyn Progress,
) -> Result<u64> {
    let last = chain.last().expect("chain not empty");
    let n = last.cbt.block_count as usize;
    // source[b] = index in `chain` of the newest set holding block b.
    let mut source = vec![usize::MAX; n];
    for (i, m) in chain.iter().enumerate() {
        for (b, _) in m.stored_iter() {
            source[b as usize] = i;
        }
    }
    if let Some(b) = source.iter().position(|&s| s == usize::MAX) {
        return Err(Error::InvalidBackup(format!(
            "block {b} is in no set of the chain"
        )));
    }
    progress.start(&last.device.name, last.device.capacity);
    let mut written = 0u64;
    let mut buf = vec![0u8; last.cbt.block_size as usize];
    for (i, m) in chain.iter().enumerate() {
        let path = repo.set_dir(&m.set).join(&m.data_file);
        let data =
            File::open(&path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        for (b, off) in m.stored_iter() {
            if source[b as usize] != i {
                continue;
            }
            check_interrupt(interrupt)?;
            let len = m.block_len(b) as usize;
            data.read_exact_at(&mut buf[..len], off)
                .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
            if checksum(&buf[..len]) != last.block_checksums[b as usize] {
                return Err(Error::InvalidBackup(format!(
                    "{}: block {b} does not match its checksum",
                    path.display()
                )));
            }
            sink.put(u64::from(b) * u64::from(m.cbt.block_size), &buf[..len])
                .map_err(|e| Error::io("write restored data", e))?;
            written += len as u64;
            progress.advance(len as u64);
        }
    }
    progress.finish();
    Ok(written)
}

fn capacity_of(file: &File, path: &Path) -> Result<u64> {
    let mut f = file;
    f.seek(SeekFrom::End(0))
        .map_err(|e| Error::io(format!("size of {}", path.display()), e))
}

/// Restores `device` as of `set` (default: newest) to `target`, a block
/// device or an image file. An image file is written under a temporary name
/// and renamed at the end; an existing one is replaced only with `overwrite`.
pub fn restore(
    repository: &Path,
    device: &str,
    set: Option<&str>,
    target: &Path,
    overwrite: bool,
    interrupt: &AtomicBool,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let repo = Repository::new(repository);
    let chain = repo.chain(device, set)?;
    let last = chain.last().expect("chain not empty");
    let capacity = last.device.capacity;
    let sets = chain.iter().map(|m| m.set.clone()).collect();

    let is_blockdev = fs::metadata(target)
        .map(|m| m.file_type().is_block_device())
        .unwrap_or(false);
    let written = if is_blockdev {
        let file = OpenOptions::new()
            .write(true)
            .open(target)
            .map_err(|e| Error::io(format!("open {}", target.display()), e))?;
        let size = capacity_of(&file, target)?;
        if size < capacity {
            return Err(Error::Invalid(format!(
                "{} holds {size} bytes, the backup needs {capacity}",
                target.display()
            )));
        }
        let n = replay(&repo, &chain, &mut FileSink(&file), interrupt, progress)?;
        file.sync_all()
            .map_err(|e| Error::io(format!("sync {}", target.display()), e))?;
        n
    } else {
        if target.exists() && !overwrite {
            return Err(Error::Invalid(format!(
                "{} exists (use --force to replace it)",
                target.display()
            )));
        }
        let name = target
            .file_name()
            .ok_or_else(|| Error::Invalid(format!("{}: not a file name", target.display())))?;
        let tmp = target.with_file_name(format!(".{}.partial", name.to_string_lossy()));
        let file =
            File::create(&tmp).map_err(|e| Error::io(format!("create {}", tmp.display()), e))?;
        let guard = TempFileGuard(Some(tmp.clone()));
        file.set_len(capacity)
            .map_err(|e| Error::io(format!("size {}", tmp.display()), e))?;
        let n = replay(&repo, &chain, &mut FileSink(&file), interrupt, progress)?;
        file.sync_all()
            .map_err(|e| Error::io(format!("sync {}", tmp.display()), e))?;
        fs::rename(&tmp, target)
            .map_err(|e| Error::io(format!("rename to {}", target.display()), e))?;
        std::mem::forget(guard);
        n
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

/// Outcome of a verification.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    pub device: String,
    pub set: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub against: Option<PathBuf>,
    pub blocks: u32,
    /// Blocks whose contents differ (at most the first 100).
    pub mismatched: Vec<u32>,
    pub mismatch_count: u64,
}

/// Checks a backup. With `against`, compares a device or image with the
/// backup's final state block by block; without it, checks that every block
/// the chain holds matches its checksum.
pub fn verify(
    repository: &Path,
    device: &str,
    set: Option<&str>,
    against: Option<&Path>,
    interrupt: &AtomicBool,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let repo = Repository::new(repository);
    let chain = repo.chain(device, set)?;
    let last = chain.last().expect("chain not empty");
    let mut report = VerifyReport {
        device: device.to_string(),
        set: last.set.clone(),
        against: against.map(Path::to_path_buf),
        blocks: last.cbt.block_count,
        mismatched: Vec::new(),
        mismatch_count: 0,
    };
    let Some(path) = against else {
        replay(&repo, &chain, &mut NullSink, interrupt, progress)?;
        return Ok(report);
    };
    let file = File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::DeviceNotFound(path.to_path_buf()),
        std::io::ErrorKind::PermissionDenied => Error::PermissionDenied(path.to_path_buf()),
        _ => Error::io(format!("open {}", path.display()), e),
    })?;
    let size = capacity_of(&file, path)?;
    if size < last.device.capacity {
        return Err(Error::Mismatch(format!(
            "{} holds {size} bytes, the backup {}",
            path.display(),
            last.device.capacity
        )));
    }
    progress.start(device, last.device.capacity);
    let mut buf = vec![0u8; last.cbt.block_size as usize];
    for b in 0..last.cbt.block_count {
        check_interrupt(interrupt)?;
        let len = last.block_len(b) as usize;
        file.read_exact_at(
            &mut buf[..len],
            u64::from(b) * u64::from(last.cbt.block_size),
        )
        .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        if checksum(&buf[..len]) != last.block_checksums[b as usize] {
            report.mismatch_count += 1;
            if report.mismatched.len() < 100 {
                report.mismatched.push(b);
            }
        }
        progress.advance(len as u64);
    }
    progress.finish();
    Ok(report)
}
