//! Backup manifests: what a backup of one device holds, and how to check it.
//!
//! A backup repository is a directory of sets, `000001`, `000002`, ... Each
//! set comes from one snapshot and holds, per device, `<name>.json` (the
//! manifest) and `<name>.data` (the blocks copied in that set, in block
//! order). A set is written under a hidden temporary name and renamed into
//! place only when complete, so a listed set is always whole.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::api::CbtInfo;
use crate::error::{Error, Result};

/// Version of the manifest format.
pub const MANIFEST_FORMAT: u32 = 1;
/// Name of the checksum algorithm used for blocks and manifests.
pub const CHECKSUM_ALGORITHM: &str = "blake3";

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
    pub path: PathBuf,
    pub major: u32,
    pub minor: u32,
    /// Size in bytes.
    pub capacity: u64,
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

/// What one set holds for one device.
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
    /// Checksum of every block of the device as of this backup (blocks not
    /// copied in this set keep the parent's checksum).
    pub block_checksums: Vec<String>,
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

fn invalid(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::InvalidBackup(format!("{}: {what}", path.display()))
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
    pub fn checksum(&self) -> String {
        checksum(&serde_json::to_vec(self).expect("manifest serialises"))
    }

    /// Checks that the manifest is consistent in itself.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| {
            Err(Error::InvalidBackup(format!(
                "manifest of {}: {m}",
                self.device.name
            )))
        };
        if self.format != MANIFEST_FORMAT {
            return bad(format!("unsupported format {}", self.format));
        }
        if self.checksum_algorithm != CHECKSUM_ALGORITHM {
            return bad(format!("unsupported checksum {}", self.checksum_algorithm));
        }
        let bs = u64::from(self.cbt.block_size);
        if !self.cbt.block_size.is_power_of_two() || bs < 512 {
            return bad(format!("bad block size {bs}"));
        }
        if self.device.capacity.div_ceil(bs) != u64::from(self.cbt.block_count) {
            return bad("block count does not match capacity".into());
        }
        if self.block_checksums.len() != self.cbt.block_count as usize
            || self
                .block_checksums
                .iter()
                .any(|c| c.len() != 64 || !c.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return bad("block checksum list is malformed".into());
        }
        let mut next = 0u64;
        for r in &self.stored {
            let (first, count) = (u64::from(r[0]), u64::from(r[1]));
            if count == 0 || first < next || first + count > u64::from(self.cbt.block_count) {
                return bad("stored block runs are malformed".into());
            }
            next = first + count;
        }
        let size: u64 = self.stored_iter().map(|(b, _)| self.block_len(b)).sum();
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
        let file = ManifestFile {
            manifest: self.clone(),
            manifest_checksum: self.checksum(),
        };
        let mut text = serde_json::to_vec_pretty(&file).expect("manifest serialises");
        text.push(b'\n');
        crate::util::write_synced(path, &text)
    }

    /// Reads and checks a manifest. Returns it with its checksum.
    pub fn load(path: &Path) -> Result<(Manifest, String)> {
        let text = fs::read(path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        let file: ManifestFile = serde_json::from_slice(&text)
            .map_err(|e| invalid(path, format!("not a manifest: {e}")))?;
        let sum = file.manifest.checksum();
        if sum != file.manifest_checksum {
            return Err(invalid(
                path,
                "manifest checksum mismatch (file damaged or edited)",
            ));
        }
        file.manifest
            .validate()
            .map_err(|e| invalid(path, e.to_string().trim_start_matches("invalid backup: ")))?;
        Ok((file.manifest, sum))
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

impl Repository {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
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

    pub fn set_dir(&self, set: &str) -> PathBuf {
        self.root.join(set)
    }

    pub fn manifest_path(&self, set: &str, device: &str) -> PathBuf {
        self.set_dir(set)
            .join(format!("{}.json", device_stem(device)))
    }

    /// Loads the manifest of `device` in `set`, checking it names that set.
    pub fn load(&self, set: &str, device: &str) -> Result<(Manifest, String)> {
        let path = self.manifest_path(set, device);
        let (m, sum) = Manifest::load(&path)?;
        if m.set != set || m.device.name != device {
            return Err(invalid(&path, "manifest belongs to another set or device"));
        }
        let data = self.set_dir(set).join(&m.data_file);
        let len = fs::metadata(&data)
            .map_err(|e| Error::io(format!("stat {}", data.display()), e))?
            .len();
        if len != m.data_size {
            return Err(invalid(
                &data,
                format!("size {len}, manifest says {}", m.data_size),
            ));
        }
        Ok((m, sum))
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
        let mut chain = Vec::new();
        let (mut m, _) = self.load(&last, device)?;
        loop {
            let parent = m.parent.clone();
            chain.push(m);
            let Some(p) = parent else { break };
            let (pm, sum) = self.load(&p.set, device)?;
            let child = chain.last().expect("chain not empty");
            if sum != p.manifest_checksum {
                return Err(Error::InvalidBackup(format!(
                    "set {} of {device} does not match the parent recorded in set {}",
                    p.set, child.set
                )));
            }
            if pm.cbt.generation_id != child.cbt.generation_id
                || pm.cbt.block_size != child.cbt.block_size
                || pm.device.capacity != child.device.capacity
                || pm.set >= child.set
            {
                return Err(Error::InvalidBackup(format!(
                    "set {} of {device} cannot be the parent of set {}",
                    p.set, child.set
                )));
            }
            m = pm;
        }
        chain.reverse();
        Ok(chain)
    }
}
