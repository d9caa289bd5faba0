//! Who made a backup and of which disk: the host (its name and
//! `/etc/machine-id`) and a stable name of the device (from `/dev/disk`).
//!
//! A kernel name such as `vdb` says only in which order a disk was found,
//! and two hosts sharing a repository both have a `vdb`. So a manifest
//! records both, an incremental builds only on a set of the same host and
//! device, and restore, verify and list can choose a host.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The host a backup was made on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    pub hostname: String,
    /// Contents of `/etc/machine-id`, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
}

impl HostRecord {
    /// This machine.
    pub fn current() -> Self {
        let hostname = nix::unistd::gethostname()
            .ok()
            .map(|h| h.to_string_lossy().into_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        let machine_id = fs::read_to_string("/etc/machine-id")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        Self {
            hostname,
            machine_id,
        }
    }

    /// True when both records are the same machine: by machine id when
    /// both have one, by host name otherwise.
    pub fn same_as(&self, other: &HostRecord) -> bool {
        match (&self.machine_id, &other.machine_id) {
            (Some(a), Some(b)) => a == b,
            _ => self.hostname == other.hostname,
        }
    }

    /// True when `word` (given with `--host`) names this host: its host
    /// name or its machine id.
    pub fn answers_to(&self, word: &str) -> bool {
        self.hostname == word || self.machine_id.as_deref() == Some(word)
    }
}

/// The stable name of block device `major:minor`: the first of
/// `/dev/disk/by-id/wwn-*`, other `/dev/disk/by-id/*` and
/// `/dev/disk/by-partuuid/*` that leads to it, as `by-id/NAME` or
/// `by-partuuid/UUID`. None when udev made none (e.g. a virtio disk
/// without a serial number).
pub fn stable_id(major: u32, minor: u32) -> Option<String> {
    stable_id_in(Path::new("/dev/disk"), major, minor)
}

/// [`stable_id`] with another directory than `/dev/disk` (for tests).
pub fn stable_id_in(root: &Path, major: u32, minor: u32) -> Option<String> {
    let want = nix::sys::stat::makedev(major.into(), minor.into());
    let names = |dir: &str| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(root.join(dir))
            .map(|rd| {
                rd.flatten()
                    .filter(|e| {
                        fs::metadata(e.path())
                            .is_ok_and(|m| m.file_type().is_block_device() && m.rdev() == want)
                    })
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let by_id = names("by-id");
    if let Some(w) = by_id.iter().find(|n| n.starts_with("wwn-")) {
        return Some(format!("by-id/{w}"));
    }
    if let Some(n) = by_id.first() {
        return Some(format!("by-id/{n}"));
    }
    names("by-partuuid")
        .first()
        .map(|n| format!("by-partuuid/{n}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_told_apart_by_machine_id_then_name() {
        let a = HostRecord {
            hostname: "a".into(),
            machine_id: Some("1".into()),
        };
        let a_renamed = HostRecord {
            hostname: "b".into(),
            machine_id: Some("1".into()),
        };
        let b = HostRecord {
            hostname: "a".into(),
            machine_id: Some("2".into()),
        };
        let a_no_id = HostRecord {
            hostname: "a".into(),
            machine_id: None,
        };
        assert!(a.same_as(&a_renamed));
        assert!(!a.same_as(&b));
        assert!(a.same_as(&a_no_id));
        assert!(a.answers_to("a") && a.answers_to("1") && !a.answers_to("2"));
        assert!(!HostRecord::current().hostname.is_empty());
    }

    #[test]
    fn the_stable_id_prefers_a_wwn() {
        // Links to a device node that exists everywhere: /dev/null is a
        // character device, so none counts; a block device is needed.
        let Some(dev) = ["/dev/loop0", "/dev/vda", "/dev/sda", "/dev/nvme0n1"]
            .into_iter()
            .find(|p| fs::metadata(p).is_ok_and(|m| m.file_type().is_block_device()))
        else {
            eprintln!("skipped: no block device node");
            return;
        };
        let rdev = fs::metadata(dev).unwrap().rdev();
        let (ma, mi) = (
            nix::sys::stat::major(rdev) as u32,
            nix::sys::stat::minor(rdev) as u32,
        );
        let root = tempfile::tempdir().unwrap();
        assert_eq!(stable_id_in(root.path(), ma, mi), None);
        fs::create_dir_all(root.path().join("by-id")).unwrap();
        fs::create_dir_all(root.path().join("by-partuuid")).unwrap();
        std::os::unix::fs::symlink(dev, root.path().join("by-partuuid/1234-5678")).unwrap();
        assert_eq!(
            stable_id_in(root.path(), ma, mi).as_deref(),
            Some("by-partuuid/1234-5678")
        );
        std::os::unix::fs::symlink(dev, root.path().join("by-id/ata-DISK_SERIAL")).unwrap();
        std::os::unix::fs::symlink(dev, root.path().join("by-id/wwn-0x5000c500a1b2c3d4")).unwrap();
        std::os::unix::fs::symlink("/dev/null", root.path().join("by-id/aaa-not-it")).unwrap();
        assert_eq!(
            stable_id_in(root.path(), ma, mi).as_deref(),
            Some("by-id/wwn-0x5000c500a1b2c3d4")
        );
    }
}
