//! Backup manifests: what a backup of one device holds, and how to check it.
//!
//! A backup repository is a directory of sets, `000001`, `000002`, ... Each
//! set comes from one snapshot and holds, per device:
//!
//! - `<name>.json`: the manifest (format 3), a small JSON document that
//!   describes the set and seals the two other files;
//! - `<name>.sums`: the BLAKE3 digests of the blocks copied in this set, raw,
//!   32 bytes each, in the order of the data file (see [`SUMS_MAGIC`]);
//! - `<name>.data`: the blocks copied in this set, in block order.
//!
//! So a set costs what it changed, not what the device holds: a one-block
//! incremental of a 1 TiB device has a manifest of about a kilobyte and a
//! 48-byte sums file. Readers stream the sums and data files; nothing loads
//! a per-block table of the whole device.
//!
//! A set is written under a hidden temporary name and renamed into place
//! only when complete, so a listed set is always whole. The repository is
//! locked (`flock` on `.lock`) while a run uses it: exclusively by a backup,
//! shared by restore, verify and list.
//!
//! Format 3 adds the host (name and machine id) and the device's stable
//! name to format 2, which is read as well (without them). Format 1 (every
//! block's checksum as hex in the JSON manifest) is still read. Only format
//! 3 is written.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::api::CbtInfo;
use crate::error::{Error, Result};
use crate::identity::HostRecord;

/// Version of the manifest format written.
pub const MANIFEST_FORMAT: u32 = 3;
/// Format 2: format 3 without the host and the device's stable name.
pub const FORMAT_2: u32 = 2;
/// The previous format, still read.
pub const LEGACY_FORMAT: u32 = 1;
/// Name of the checksum algorithm used for blocks and manifests.
pub const CHECKSUM_ALGORITHM: &str = "blake3";
/// First bytes of a sums file. The header is 16 bytes: this magic, the
/// version of the sums file (u32, little endian, 1) and the length of a
/// digest (u32, little endian, 32); then one digest per stored block.
pub const SUMS_MAGIC: &[u8; 8] = b"BLKSNAPS";
/// Version of the sums file layout.
pub const SUMS_VERSION: u32 = 1;
/// Length of the sums file header.
pub const SUMS_HEADER: u64 = 16;
/// Length of a block digest.
pub const DIGEST_LEN: usize = 32;
/// Name of the lock file in a repository.
pub const LOCK_FILE: &str = ".lock";

/// A BLAKE3 digest of a block.
pub type Digest = [u8; DIGEST_LEN];

/// Full or incremental.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackupKind {
    Full,
    Incremental,
}

/// Identity of the backed-up device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceRecord {
    pub name: String,
    /// Path the device was opened by (bytes that are not UTF-8 replaced).
    pub path: String,
    pub major: u32,
    pub minor: u32,
    /// Size in bytes.
    pub capacity: u64,
    /// Stable name of the device (`by-id/wwn-...`), where it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_id: Option<String>,
}

/// Change-tracking state at the snapshot the backup was read from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CbtRecord {
    pub block_size: u32,
    pub block_count: u32,
    pub generation_id: Uuid,
    /// Changes number of the snapshot. Blocks whose map byte is greater
    /// than this changed after the snapshot.
    pub changes_number: u8,
}

impl CbtRecord {
    /// The parts of a [`CbtInfo`] that a manifest keeps.
    pub fn from_info(info: &CbtInfo) -> Self {
        Self {
            block_size: info.block_size,
            block_count: info.block_count,
            generation_id: info.generation_id,
            changes_number: info.changes_number,
        }
    }
}

/// Link from an incremental to the backup it builds on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParentRef {
    pub set: String,
    /// `manifest_checksum` of the parent's manifest.
    pub manifest_checksum: String,
}

/// What one set holds for one device (format 2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub set: String,
    pub kind: BackupKind,
    /// Why a full backup was made (absent for incrementals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_reason: Option<String>,
    pub created_unix: u64,
    pub snapshot_id: Uuid,
    /// The host the backup was made on (format 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostRecord>,
    pub device: DeviceRecord,
    pub cbt: CbtRecord,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentRef>,
    /// File of the set that holds the copied blocks.
    pub data_file: String,
    /// Blocks held in the data file, as `[first, count]` runs in order.
    pub stored: Vec<[u32; 2]>,
    /// Size of the data file in bytes.
    pub data_size: u64,
    pub checksum_algorithm: String,
    /// File of the set that holds the digests of the stored blocks.
    pub sums_file: String,
    /// Checksum of the whole sums file.
    pub sums_checksum: String,
    /// Digests of the stored blocks of a format 1 manifest, which kept
    /// them in the manifest itself (not serialised).
    #[serde(skip)]
    pub legacy_sums: Option<Arc<Vec<Digest>>>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    manifest: Manifest,
    manifest_checksum: String,
}

/// Hex checksum of a byte string.
pub fn checksum(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// Digest of a block.
pub fn digest(bytes: &[u8]) -> Digest {
    *blake3::hash(bytes).as_bytes()
}

fn invalid(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::InvalidBackup(format!("{}: {what}", path.display()))
}

/// A plain file name (no directory part), as the files of a set must be.
fn plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/')
}

/// Format 1, as written by earlier versions; read only.
mod legacy {
    use super::*;

    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct DeviceRecord {
        pub name: String,
        pub path: PathBuf,
        pub major: u32,
        pub minor: u32,
        pub capacity: u64,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Manifest {
        pub format: u32,
        pub set: String,
        pub kind: BackupKind,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub full_reason: Option<String>,
        pub created_unix: u64,
        pub snapshot_id: Uuid,
        pub device: DeviceRecord,
        pub cbt: CbtRecord,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub parent: Option<ParentRef>,
        pub data_file: String,
        pub stored: Vec<[u32; 2]>,
        pub data_size: u64,
        pub checksum_algorithm: String,
        pub block_checksums: Vec<String>,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ManifestFile {
        pub manifest: Manifest,
        pub manifest_checksum: String,
    }

    /// Reads a format 1 manifest into the current form; the digests of
    /// its stored blocks are kept in memory.
    pub fn load(path: &Path, value: serde_json::Value) -> Result<(super::Manifest, String)> {
        let file: ManifestFile = serde_json::from_value(value)
            .map_err(|e| invalid(path, format!("not a format 1 manifest: {e}")))?;
        let bytes = serde_json::to_vec(&file.manifest)
            .map_err(|e| invalid(path, format!("cannot re-serialise: {e}")))?;
        let sum = checksum(&bytes);
        if sum != file.manifest_checksum {
            return Err(invalid(
                path,
                "manifest checksum mismatch (file damaged or edited)",
            ));
        }
        let m = file.manifest;
        if m.block_checksums.len() != m.cbt.block_count as usize {
            return Err(invalid(path, "block checksum list is malformed"));
        }
        let mut sums = Vec::new();
        for r in &m.stored {
            for b in u64::from(r[0])..u64::from(r[0]) + u64::from(r[1]) {
                let hex = m
                    .block_checksums
                    .get(b as usize)
                    .ok_or_else(|| invalid(path, "stored block runs are malformed"))?;
                let h = blake3::Hash::from_hex(hex)
                    .map_err(|_| invalid(path, "block checksum list is malformed"))?;
                sums.push(*h.as_bytes());
            }
        }
        let manifest = super::Manifest {
            format: LEGACY_FORMAT,
            set: m.set,
            kind: m.kind,
            full_reason: m.full_reason,
            created_unix: m.created_unix,
            snapshot_id: m.snapshot_id,
            host: None,
            device: super::DeviceRecord {
                name: m.device.name,
                path: m.device.path.to_string_lossy().into_owned(),
                major: m.device.major,
                minor: m.device.minor,
                capacity: m.device.capacity,
                stable_id: None,
            },
            cbt: m.cbt,
            parent: m.parent,
            data_file: m.data_file,
            stored: m.stored,
            data_size: m.data_size,
            checksum_algorithm: m.checksum_algorithm,
            sums_file: String::new(),
            sums_checksum: String::new(),
            legacy_sums: Some(Arc::new(sums)),
        };
        Ok((manifest, sum))
    }
}

impl Manifest {
    /// Length in bytes of block `index`.
    pub fn block_len(&self, index: u32) -> u64 {
        let bs = u64::from(self.cbt.block_size);
        bs.min(self.device.capacity.saturating_sub(u64::from(index) * bs))
    }

    /// Number of blocks held in the data file.
    pub fn stored_blocks(&self) -> u64 {
        self.stored.iter().map(|r| u64::from(r[1])).sum()
    }

    /// Iterates over the stored blocks: (block index, offset in data file).
    pub fn stored_iter(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        let mut offset = 0u64;
        self.stored
            .iter()
            .flat_map(|r| r[0]..r[0] + r[1])
            .map(move |b| {
                let here = offset;
                offset += self.block_len(b);
                (b, here)
            })
    }

    /// Checksum of the manifest's canonical serialisation.
    pub fn checksum(&self) -> Result<String> {
        serde_json::to_vec(self)
            .map(|b| checksum(&b))
            .map_err(|e| Error::InvalidBackup(format!("cannot serialise the manifest: {e}")))
    }

    /// Size of the sums file that goes with this manifest.
    pub fn sums_size(&self) -> u64 {
        SUMS_HEADER + self.stored_blocks() * DIGEST_LEN as u64
    }

    /// Checks that the manifest is consistent in itself.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| {
            Err(Error::InvalidBackup(format!(
                "manifest of {}: {m}",
                self.device.name
            )))
        };
        match (self.format, &self.legacy_sums) {
            (FORMAT_2 | MANIFEST_FORMAT, None) => {
                if !plain_name(&self.sums_file) || self.sums_checksum.len() != 64 {
                    return bad("sums file is not named or sealed".into());
                }
            }
            (LEGACY_FORMAT, Some(sums)) if sums.len() as u64 == self.stored_blocks() => {}
            _ => return bad(format!("unsupported format {}", self.format)),
        }
        if self.checksum_algorithm != CHECKSUM_ALGORITHM {
            return bad(format!("unsupported checksum {}", self.checksum_algorithm));
        }
        if !plain_name(&self.data_file) {
            return bad(format!("bad data file name {:?}", self.data_file));
        }
        let bs = u64::from(self.cbt.block_size);
        if !self.cbt.block_size.is_power_of_two() || bs < 512 {
            return bad(format!("bad block size {bs}"));
        }
        if self.device.capacity.div_ceil(bs) != u64::from(self.cbt.block_count) {
            return bad("block count does not match capacity".into());
        }
        let mut next = 0u64;
        for r in &self.stored {
            let (first, count) = (u64::from(r[0]), u64::from(r[1]));
            if count == 0 || first < next || first + count > u64::from(self.cbt.block_count) {
                return bad("stored block runs are malformed".into());
            }
            next = first + count;
        }
        let size: u64 = self
            .stored
            .iter()
            .map(|r| {
                let last = r[0] + r[1] - 1;
                u64::from(r[1] - 1) * bs + self.block_len(last)
            })
            .sum();
        if size != self.data_size {
            return bad("data size does not match the stored blocks".into());
        }
        match (self.kind, &self.parent) {
            (BackupKind::Full, None) => {
                if self.stored_blocks() != u64::from(self.cbt.block_count) {
                    return bad("a full backup must hold every block".into());
                }
            }
            (BackupKind::Incremental, Some(_)) => {}
            _ => return bad("kind and parent link disagree".into()),
        }
        Ok(())
    }

    /// Writes the manifest to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        if self.format != MANIFEST_FORMAT {
            return Err(Error::Invalid(format!(
                "only format {MANIFEST_FORMAT} manifests are written"
            )));
        }
        let file = ManifestFile {
            manifest: self.clone(),
            manifest_checksum: self.checksum()?,
        };
        // One line: the runs of an incremental that changed scattered
        // blocks would take four lines each if pretty-printed.
        let mut text = serde_json::to_vec(&file)
            .map_err(|e| Error::Invalid(format!("cannot serialise the manifest: {e}")))?;
        text.push(b'\n');
        crate::util::write_synced(path, &text)
    }

    /// Reads and checks a manifest (format 2, or format 1). Returns it
    /// with its checksum. The format is looked at before anything else, so
    /// that a manifest of a newer format is named as such.
    pub fn load(path: &Path) -> Result<(Manifest, String)> {
        let text = fs::read(path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        let value: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| invalid(path, format!("not a manifest: {e}")))?;
        let format = value
            .get("manifest")
            .and_then(|m| m.get("format"))
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| invalid(path, "not a manifest: no manifest.format"))?;
        let (manifest, sum) = match format {
            f if f == u64::from(LEGACY_FORMAT) => legacy::load(path, value)?,
            f if f == u64::from(MANIFEST_FORMAT) || f == u64::from(FORMAT_2) => {
                let file: ManifestFile = serde_json::from_value(value)
                    .map_err(|e| invalid(path, format!("not a format {f} manifest: {e}")))?;
                if f == u64::from(FORMAT_2) && file.manifest.host.is_some() {
                    return Err(invalid(path, "a format 2 manifest with a host record"));
                }
                let sum = file.manifest.checksum()?;
                if sum != file.manifest_checksum {
                    return Err(invalid(
                        path,
                        "manifest checksum mismatch (file damaged or edited)",
                    ));
                }
                (file.manifest, sum)
            }
            f if f > u64::from(MANIFEST_FORMAT) => {
                return Err(invalid(
                    path,
                    format!(
                        "manifest format {f} is newer than this blksnap reads \
                         (formats {LEGACY_FORMAT} to {MANIFEST_FORMAT}); use a newer blksnap"
                    ),
                ))
            }
            f => return Err(invalid(path, format!("unknown manifest format {f}"))),
        };
        manifest
            .validate()
            .map_err(|e| invalid(path, e.to_string().trim_start_matches("invalid backup: ")))?;
        Ok((manifest, sum))
    }
}

/// Writes a sums file: the header, then one digest per stored block.
pub struct SumsWriter {
    out: std::io::BufWriter<File>,
    hasher: blake3::Hasher,
    path: PathBuf,
}

impl SumsWriter {
    /// Creates the sums file at `path`.
    pub fn create(path: &Path) -> Result<Self> {
        let file =
            File::create(path).map_err(|e| Error::io(format!("create {}", path.display()), e))?;
        let mut w = Self {
            out: std::io::BufWriter::with_capacity(1 << 16, file),
            hasher: blake3::Hasher::new(),
            path: path.to_path_buf(),
        };
        let mut header = Vec::with_capacity(SUMS_HEADER as usize);
        header.extend_from_slice(SUMS_MAGIC);
        header.extend_from_slice(&SUMS_VERSION.to_le_bytes());
        header.extend_from_slice(&(DIGEST_LEN as u32).to_le_bytes());
        w.put(&header)?;
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.hasher.update(bytes);
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io(format!("write {}", self.path.display()), e))
    }

    /// Appends the digest of the next stored block.
    pub fn push(&mut self, d: &Digest) -> Result<()> {
        self.put(d)
    }

    /// Flushes and syncs the file; returns its checksum.
    pub fn finish(self) -> Result<String> {
        let ctx = format!("write {}", self.path.display());
        let file = self
            .out
            .into_inner()
            .map_err(|e| Error::io(ctx.clone(), e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(ctx, e))?;
        Ok(self.hasher.finalize().to_hex().to_string())
    }
}

/// The digests of one set's stored blocks, read from its sums file (or,
/// for format 1, from memory).
pub enum Sums {
    File { file: File, path: PathBuf },
    Memory(Arc<Vec<Digest>>),
}

impl Sums {
    /// Fills `out` with the digests of stored blocks `index..`.
    pub fn read_at(&self, index: u64, out: &mut [Digest]) -> Result<()> {
        match self {
            Sums::File { file, path } => {
                let mut buf = vec![0u8; out.len() * DIGEST_LEN];
                file.read_exact_at(&mut buf, SUMS_HEADER + index * DIGEST_LEN as u64)
                    .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
                for (d, chunk) in out.iter_mut().zip(buf.chunks_exact(DIGEST_LEN)) {
                    d.copy_from_slice(chunk);
                }
                Ok(())
            }
            Sums::Memory(v) => {
                let start = usize::try_from(index).unwrap_or(usize::MAX);
                let src = start
                    .checked_add(out.len())
                    .and_then(|end| v.get(start..end))
                    .ok_or_else(|| Error::InvalidBackup("sums index out of range".into()))?;
                out.copy_from_slice(src);
                Ok(())
            }
        }
    }
}

/// Holds a repository's lock; released when dropped.
pub struct RepoLock {
    file: Option<Flock<File>>,
    exclusive: bool,
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        if let (Some(f), true) = (&self.file, self.exclusive) {
            // Forget the holder's pid before the lock is released.
            let _ = f.set_len(0);
        }
    }
}

/// A backup repository directory.
#[derive(Clone, Debug)]
pub struct Repository {
    root: PathBuf,
}

/// Name of a set from its number.
pub fn set_name(n: u32) -> String {
    format!("{n:06}")
}

/// File name stem used for a device in a set.
pub fn device_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-:!".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// One piece of the final state of a chain: blocks `first..first + count`
/// come from set `set` (an index in the chain), whose sums file holds their
/// digests from entry `sum_index` and whose data file holds them from
/// byte `data_offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub first: u64,
    pub count: u64,
    pub set: usize,
    pub sum_index: u64,
    pub data_offset: u64,
}

/// Where each block of the chain's final state comes from: the newest set
/// that holds it. Segments are sorted by block. Memory is in the number of
/// runs of the chain, not in the number of blocks of the device.
pub fn sources(chain: &[Manifest]) -> Result<Vec<Segment>> {
    use std::collections::BTreeMap;
    let Some(last) = chain.last() else {
        return Ok(Vec::new());
    };
    // Intervals [start, end) already taken by newer sets, merged.
    let mut covered: BTreeMap<u64, u64> = BTreeMap::new();
    let mut segments = Vec::new();
    for (set, m) in chain.iter().enumerate().rev() {
        let bs = u64::from(m.cbt.block_size);
        let mut sum_index = 0u64;
        for r in &m.stored {
            let (a, b) = (u64::from(r[0]), u64::from(r[0]) + u64::from(r[1]));
            let base = sum_index;
            let mut emit = |x: u64, y: u64| {
                segments.push(Segment {
                    first: x,
                    count: y - x,
                    set,
                    sum_index: base + (x - a),
                    data_offset: (base + (x - a)) * bs,
                })
            };
            let mut keys: Vec<u64> = covered
                .range(..a)
                .next_back()
                .filter(|(_, &e)| e >= a)
                .map(|(&s, _)| s)
                .into_iter()
                .collect();
            keys.extend(covered.range(a..=b).map(|(&s, _)| s));
            let (mut cur, mut lo, mut hi) = (a, a, b);
            for s in keys {
                let Some(e) = covered.remove(&s) else {
                    continue;
                };
                if s > cur {
                    emit(cur, s);
                }
                cur = cur.max(e);
                lo = lo.min(s);
                hi = hi.max(e);
            }
            if cur < b {
                emit(cur, b);
            }
            covered.insert(lo, hi);
            sum_index += u64::from(r[1]);
        }
    }
    let n = u64::from(last.cbt.block_count);
    if covered.len() != 1 || covered.get(&0) != Some(&n) {
        return Err(Error::InvalidBackup(format!(
            "the chain of {} ending with set {} does not hold every block",
            last.device.name, last.set
        )));
    }
    segments.sort_by_key(|s| s.first);
    Ok(segments)
}

impl Repository {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Locks the repository for a run: exclusively (a backup) or shared
    /// (restore, verify, list). Fails at once, naming the holder, when
    /// another run holds a conflicting lock. `what` names the run for the
    /// message others see. The directory must exist.
    pub fn lock(&self, exclusive: bool, what: &str) -> Result<RepoLock> {
        let path = self.root.join(LOCK_FILE);
        let opened = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&path);
        let file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !self.root.is_dir() => {
                return Err(Error::InvalidBackup(format!(
                    "{}: no backup repository here",
                    self.root.display()
                )))
            }
            // A reader may use a repository it cannot write (read-only
            // media, another user's backups): lock if the file is there;
            // on read-only media no run can write anyway.
            Err(e)
                if !exclusive
                    && matches!(e.raw_os_error(), Some(nix::libc::EROFS | nix::libc::EACCES)) =>
            {
                match File::open(&path) {
                    Ok(f) => f,
                    Err(_) if e.raw_os_error() == Some(nix::libc::EROFS) => {
                        return Ok(RepoLock {
                            file: None,
                            exclusive,
                        })
                    }
                    Err(_) => return Err(Error::io(format!("open {}", path.display()), e)),
                }
            }
            Err(e) => return Err(Error::io(format!("open {}", path.display()), e)),
        };
        let arg = if exclusive {
            FlockArg::LockExclusiveNonblock
        } else {
            FlockArg::LockSharedNonblock
        };
        match Flock::lock(file, arg) {
            Ok(f) => {
                if exclusive {
                    let line = format!("{} {what}\n", std::process::id());
                    f.set_len(0)
                        .and_then(|_| f.write_all_at(line.as_bytes(), 0))
                        .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
                }
                Ok(RepoLock {
                    file: Some(f),
                    exclusive,
                })
            }
            Err((mut f, Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let _ = f.read_to_string(&mut text);
                Err(Error::Locked {
                    repository: self.root.clone(),
                    holder: describe_holder(&text),
                })
            }
            Err((_, e)) => Err(Error::io(format!("lock {}", path.display()), e.into())),
        }
    }

    /// Complete sets, oldest first.
    pub fn sets(&self) -> Result<Vec<String>> {
        let rd = match fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format!("read {}", self.root.display()), e)),
        };
        let mut sets = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| Error::io(format!("read {}", self.root.display()), e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.len() == 6 && name.bytes().all(|b| b.is_ascii_digit()) && entry.path().is_dir()
            {
                sets.push(name);
            }
        }
        sets.sort();
        Ok(sets)
    }

    /// Number for the next set.
    pub fn next_set(&self) -> Result<u32> {
        Ok(self
            .sets()?
            .last()
            .map(|s| s.parse::<u32>().unwrap_or(0) + 1)
            .unwrap_or(1))
    }

    /// Removes the temporary directories of runs that did not finish. Call
    /// only with the exclusive lock held.
    pub fn remove_stale_partials(&self) -> Result<()> {
        let rd = match fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(format!("read {}", self.root.display()), e)),
        };
        for entry in rd.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.ends_with(".partial") {
                crate::util::remove_tree(&entry.path());
            }
        }
        Ok(())
    }

    /// A fresh name for the temporary directory of set `set`, unique to
    /// this run.
    pub fn partial_dir(&self, set: &str) -> PathBuf {
        self.root
            .join(format!(".{set}.{}.partial", unique_suffix()))
    }

    pub fn set_dir(&self, set: &str) -> PathBuf {
        self.root.join(set)
    }

    pub fn manifest_path(&self, set: &str, device: &str) -> PathBuf {
        self.set_dir(set)
            .join(format!("{}.json", device_stem(device)))
    }

    /// Loads the manifest of `device` in `set`, checking it names that set
    /// and that its files have the sizes it records.
    pub fn load(&self, set: &str, device: &str) -> Result<(Manifest, String)> {
        let path = self.manifest_path(set, device);
        let (m, sum) = Manifest::load(&path)?;
        if m.set != set || m.device.name != device {
            return Err(invalid(&path, "manifest belongs to another set or device"));
        }
        let data = self.set_dir(set).join(&m.data_file);
        let len = file_len(&data)?;
        if len != m.data_size {
            return Err(invalid(
                &data,
                format!("size {len}, manifest says {}", m.data_size),
            ));
        }
        if m.legacy_sums.is_none() {
            let sums = self.set_dir(set).join(&m.sums_file);
            let len = file_len(&sums)?;
            if len != m.sums_size() {
                return Err(invalid(
                    &sums,
                    format!("size {len}, manifest says {}", m.sums_size()),
                ));
            }
        }
        Ok((m, sum))
    }

    /// Opens the digests of a loaded manifest's stored blocks. A sums file
    /// is checked whole against the manifest (header and checksum) first,
    /// streamed, with its cached pages dropped so that the medium is read.
    pub fn sums(&self, m: &Manifest) -> Result<Sums> {
        if let Some(v) = &m.legacy_sums {
            return Ok(Sums::Memory(v.clone()));
        }
        let path = self.set_dir(&m.set).join(&m.sums_file);
        let mut file =
            File::open(&path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        crate::util::drop_cache(&file);
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        let mut header = Vec::new();
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
            if n == 0 {
                break;
            }
            if header.len() < SUMS_HEADER as usize {
                let want = SUMS_HEADER as usize - header.len();
                header.extend_from_slice(&buf[..n.min(want)]);
            }
            hasher.update(&buf[..n]);
            total += n as u64;
        }
        let mut expect = Vec::new();
        expect.extend_from_slice(SUMS_MAGIC);
        expect.extend_from_slice(&SUMS_VERSION.to_le_bytes());
        expect.extend_from_slice(&(DIGEST_LEN as u32).to_le_bytes());
        if header != expect {
            return Err(invalid(&path, "not a sums file of this format"));
        }
        if total != m.sums_size() || hasher.finalize().to_hex().as_str() != m.sums_checksum {
            return Err(invalid(
                &path,
                "sums file checksum mismatch (file damaged or edited)",
            ));
        }
        Ok(Sums::File { file, path })
    }

    /// The host recorded in the manifest of `device` in `set`: `Ok(None)`
    /// for a manifest of format 1 or 2, `Err` for one that cannot be read
    /// (only the host is looked at; [`Repository::load`] checks the rest).
    pub fn host_of(&self, set: &str, device: &str) -> Result<Option<HostRecord>> {
        let path = self.manifest_path(set, device);
        let text = fs::read(&path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        let value: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| invalid(&path, format!("not a manifest: {e}")))?;
        match value.get("manifest").and_then(|m| m.get("host")) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(h) => serde_json::from_value(h.clone())
                .map(Some)
                .map_err(|e| invalid(&path, format!("bad host record: {e}"))),
        }
    }

    /// The sets holding a backup of `device`, newest first, each with its
    /// recorded host (None for a set of format 1 or 2, or one whose
    /// manifest cannot be read: [`Repository::load`] reports that).
    pub fn sets_of(&self, device: &str) -> Result<Vec<(String, Option<HostRecord>)>> {
        Ok(self
            .sets()?
            .into_iter()
            .rev()
            .filter(|s| self.manifest_path(s, device).exists())
            .map(|s| {
                let h = self.host_of(&s, device).ok().flatten();
                (s, h)
            })
            .collect())
    }

    /// The newest set of `device` that host `host` made, or that records
    /// no host (an older format, which was written by one host only unless
    /// its CBT generation says otherwise). Also returns the other hosts
    /// whose backups of `device` were passed over.
    pub fn latest_of_host(
        &self,
        device: &str,
        host: &HostRecord,
    ) -> Result<(Option<String>, Vec<String>)> {
        let mut others: Vec<String> = Vec::new();
        for (set, h) in self.sets_of(device)? {
            match h {
                Some(h) if !h.same_as(host) => {
                    if !others.contains(&h.hostname) {
                        others.push(h.hostname);
                    }
                }
                _ => return Ok((Some(set), others)),
            }
        }
        Ok((None, others))
    }

    /// The set whose chain `restore`, `verify` choose for `device`: `set`
    /// if given (checked against `host`), else the newest set of the host
    /// named `host` (host name or machine id). Without `host`, the
    /// repository must hold backups of `device` from one host only: a
    /// choice between hosts is refused, naming them.
    pub fn choose_set(
        &self,
        device: &str,
        host: Option<&str>,
        set: Option<&str>,
    ) -> Result<String> {
        let root = self.root.display();
        if let Some(s) = set {
            if let (Some(want), Ok(Some(h))) = (host, self.host_of(s, device)) {
                if !h.answers_to(want) {
                    return Err(Error::InvalidBackup(format!(
                        "{root}: set {s} of {device} was made on host {}, not {want}",
                        h.hostname
                    )));
                }
            }
            return Ok(s.to_string());
        }
        let sets = self.sets_of(device)?;
        if sets.is_empty() {
            return Err(Error::InvalidBackup(format!(
                "{root}: no backup of device {device}"
            )));
        }
        let mut hosts: Vec<HostRecord> = Vec::new();
        for h in sets.iter().filter_map(|(_, h)| h.as_ref()) {
            if !hosts.iter().any(|k| k.same_as(h)) {
                hosts.push(h.clone());
            }
        }
        match host {
            Some(want) => sets
                .iter()
                .find(|(_, h)| h.as_ref().is_some_and(|h| h.answers_to(want)))
                .map(|(s, _)| s.clone())
                .ok_or_else(|| {
                    let names: Vec<&str> = hosts.iter().map(|h| h.hostname.as_str()).collect();
                    Error::InvalidBackup(format!(
                        "{root}: no backup of device {device} from host {want} (hosts: {})",
                        if names.is_empty() {
                            "none recorded".to_string()
                        } else {
                            names.join(", ")
                        }
                    ))
                }),
            None if hosts.len() > 1 => {
                let names: Vec<String> = hosts
                    .iter()
                    .map(|h| match &h.machine_id {
                        Some(id)
                            if hosts.iter().filter(|k| k.hostname == h.hostname).count() > 1 =>
                        {
                            format!("{} (machine id {id})", h.hostname)
                        }
                        _ => h.hostname.clone(),
                    })
                    .collect();
                Err(Error::Invalid(format!(
                    "{root} holds backups of device {device} from several hosts: {}; choose \
                     one with --host NAME",
                    names.join(", ")
                )))
            }
            None => Ok(sets[0].0.clone()),
        }
    }

    /// The newest set (up to `upto`, if given) holding a backup of `device`.
    pub fn latest_with(&self, device: &str, upto: Option<&str>) -> Result<Option<String>> {
        Ok(self
            .sets()?
            .into_iter()
            .rev()
            .filter(|s| upto.is_none_or(|u| s.as_str() <= u))
            .find(|s| self.manifest_path(s, device).exists()))
    }

    /// The chain of manifests ending with `device` in `set` (default: the
    /// newest), from the full backup to that set, with every link checked.
    pub fn chain(&self, device: &str, set: Option<&str>) -> Result<Vec<Manifest>> {
        let last = match set {
            Some(s) => s.to_string(),
            None => self.latest_with(device, None)?.ok_or_else(|| {
                Error::InvalidBackup(format!(
                    "{}: no backup of device {device}",
                    self.root.display()
                ))
            })?,
        };
        let mut chain: Vec<Manifest> = Vec::new();
        let (mut m, _) = self.load(&last, device)?;
        loop {
            let parent = m.parent.clone();
            chain.push(m);
            let Some(p) = parent else { break };
            let child_set = chain.last().map(|c| c.set.clone()).unwrap_or_default();
            let (pm, sum) = self.load(&p.set, device)?;
            if sum != p.manifest_checksum {
                return Err(Error::InvalidBackup(format!(
                    "set {} of {device} does not match the parent recorded in set {child_set}",
                    p.set
                )));
            }
            let fits = chain.last().is_some_and(|child| {
                pm.cbt.generation_id == child.cbt.generation_id
                    && pm.cbt.block_size == child.cbt.block_size
                    && pm.device.capacity == child.device.capacity
                    && pm.set < child.set
            });
            if !fits {
                return Err(Error::InvalidBackup(format!(
                    "set {} of {device} cannot be the parent of set {child_set}",
                    p.set
                )));
            }
            m = pm;
        }
        chain.reverse();
        Ok(chain)
    }
}

fn file_len(path: &Path) -> Result<u64> {
    fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| Error::io(format!("stat {}", path.display()), e))
}

/// A suffix for temporary names that no other run uses: the pid and the
/// time in nanoseconds.
pub fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{nanos}", std::process::id())
}

/// Who holds a lock, from the lock file's "PID WHAT" line.
fn describe_holder(text: &str) -> String {
    let mut words = text.split_whitespace();
    match (
        words.next().and_then(|p| p.parse::<u32>().ok()),
        words.next(),
    ) {
        (Some(pid), what) if Path::new(&format!("/proc/{pid}")).exists() => match what {
            Some(w) => format!("pid {pid} (blksnap {w})"),
            None => format!("pid {pid}"),
        },
        _ => "another blksnap run (a restore, verify or list)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(set: &str, stored: Vec<[u32; 2]>, n: u32) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            set: set.into(),
            kind: if set == "1" {
                BackupKind::Full
            } else {
                BackupKind::Incremental
            },
            full_reason: None,
            created_unix: 0,
            snapshot_id: Uuid::nil(),
            host: None,
            device: DeviceRecord {
                name: "d".into(),
                path: "/dev/d".into(),
                major: 1,
                minor: 1,
                capacity: u64::from(n) * 512,
                stable_id: None,
            },
            cbt: CbtRecord {
                block_size: 512,
                block_count: n,
                generation_id: Uuid::nil(),
                changes_number: 1,
            },
            parent: None,
            data_file: "d.data".into(),
            stored,
            data_size: 0,
            checksum_algorithm: CHECKSUM_ALGORITHM.into(),
            sums_file: "d.sums".into(),
            sums_checksum: String::new(),
            legacy_sums: None,
        }
    }

    #[test]
    fn sources_pick_the_newest_set_of_each_block() {
        let chain = vec![
            manifest("1", vec![[0, 20]], 20),
            manifest("2", vec![[2, 3], [10, 1]], 20),
            manifest("3", vec![[3, 4], [19, 1]], 20),
        ];
        let segs = sources(&chain).unwrap();
        let mut owner = vec![usize::MAX; 20];
        for s in &segs {
            for b in s.first..s.first + s.count {
                assert_eq!(owner[b as usize], usize::MAX, "block {b} twice");
                owner[b as usize] = s.set;
            }
            // The sum index counts the set's stored blocks before `first`.
            let m = &chain[s.set];
            let before = m
                .stored_iter()
                .position(|(b, _)| u64::from(b) == s.first)
                .unwrap();
            assert_eq!(s.sum_index, before as u64);
            assert_eq!(s.data_offset, before as u64 * 512);
        }
        let want: Vec<usize> = (0..20)
            .map(|b| match b {
                3..=6 | 19 => 2,
                2 | 10 => 1,
                _ => 0,
            })
            .collect();
        assert_eq!(owner, want);
        assert!(sources(&chain[1..]).is_err());
    }
}
