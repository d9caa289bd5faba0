//! The difference storage of a snapshot: where the data that writes
//! overwrite is kept while the snapshot exists.
//!
//! The default is an unnamed `O_TMPFILE` file in [`DEFAULT_STORAGE`], a
//! directory on a disk-backed file system on common systems (unlike `/tmp`,
//! which is often tmpfs). Memory-backed file systems (tmpfs, ramfs) are
//! refused unless asked for: a snapshot left behind by a killed run keeps
//! its storage until it is destroyed, and on tmpfs that is memory (and the
//! kernel reserves a whole growth step at the first copy).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use crate::error::{Error, Result};

/// The default difference storage directory.
pub const DEFAULT_STORAGE: &str = "/var/tmp";

/// `f_type` of ramfs (linux/magic.h).
const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// The memory-backed file system `path` lies on ("tmpfs", "ramfs"), if so.
pub fn memory_fs(path: &Path) -> Option<&'static str> {
    let st = nix::sys::statfs::statfs(path).ok()?;
    let t = st.filesystem_type();
    if t == nix::sys::statfs::TMPFS_MAGIC {
        Some("tmpfs")
    } else if t.0 as i64 == RAMFS_MAGIC {
        Some("ramfs")
    } else {
        None
    }
}

/// Opens the difference storage as the kernel wants it:
///
/// - a directory: an unnamed `O_TMPFILE` file there, freed with the snapshot;
/// - a block device: opened exclusively, used whole;
/// - a name that does not exist: a new file (`O_EXCL`).
///
/// A directory or new file on tmpfs or ramfs is taken with a warning unless
/// `allow_memory`.
pub fn open_storage(path: &Path, allow_memory: bool) -> Result<File> {
    let meta = std::fs::metadata(path);
    let mut opts = OpenOptions::new();
    opts.read(true).write(true);
    let (what, fs_of) = match &meta {
        Ok(m) if m.is_dir() => {
            opts.custom_flags(nix::libc::O_TMPFILE | nix::libc::O_EXCL);
            ("an unnamed temporary file in", Some(path.to_path_buf()))
        }
        Ok(m) if m.file_type().is_block_device() => {
            opts.custom_flags(nix::libc::O_EXCL);
            ("block device", None)
        }
        Ok(_) => {
            return Err(Error::Invalid(format!(
                "difference storage {} exists; give a directory, a block device or a new file name",
                path.display()
            )))
        }
        Err(_) => {
            opts.create_new(true);
            let parent = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => Path::new(".").to_path_buf(),
            };
            ("new file", Some(parent))
        }
    };
    if let Some(dir) = &fs_of {
        // Named explicitly, a storage in memory is what the user chose (the kernel supports
        // it, and existing scripts use it): a warning, not a refusal.
        if let (Some(kind), false) = (memory_fs(dir), allow_memory) {
            log::warn!(
                "difference storage {} is on {kind}, in memory: a snapshot left behind by a \
                 killed run holds that memory until it is destroyed (blksnap snapshot destroy \
                 --stale); a directory on a disk (the default is {DEFAULT_STORAGE}) or a block \
                 device does not (--allow-tmpfs silences this)",
                path.display()
            );
        }
    }
    log::debug!("difference storage: {what} {}", path.display());
    opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            Error::PermissionDenied(path.to_path_buf())
        } else {
            Error::io(
                format!("open difference storage ({what} {})", path.display()),
                e,
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_storage_is_not_in_memory() {
        // A host whose /var/tmp is tmpfs would make the default unusable:
        // say so rather than pass silently.
        assert_eq!(memory_fs(Path::new(DEFAULT_STORAGE)), None);
    }

    #[test]
    fn tmpfs_is_taken_with_a_warning() {
        let shm = Path::new("/dev/shm");
        if memory_fs(shm).is_none() {
            eprintln!("skipped: /dev/shm is not tmpfs here");
            return;
        }
        open_storage(shm, false).unwrap();
        open_storage(shm, true).unwrap();
        // A disk-backed directory is taken.
        open_storage(Path::new(DEFAULT_STORAGE), false).unwrap();
    }
}
