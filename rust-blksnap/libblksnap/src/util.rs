//! Small helpers: durable writes, error texts, page cache hints and size
//! parsing.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use nix::errno::Errno;

use crate::error::{Error, Result};

/// The C library's message for an errno ("Inappropriate ioctl for device").
pub fn errno_text(errno: Errno) -> String {
    io_text(&io::Error::from_raw_os_error(errno as i32))
}

/// The message of an I/O error without Rust's " (os error N)" suffix.
pub fn io_text(e: &io::Error) -> String {
    let text = e.to_string();
    match (e.raw_os_error(), text.rfind(" (os error ")) {
        (Some(_), Some(at)) => text[..at].to_string(),
        _ => text,
    }
}

/// Serialises a path as a string, replacing bytes that are not UTF-8, so
/// that no path a user gives can make serialisation fail.
pub fn serialize_path_lossy<S: serde::Serializer>(
    path: &Path,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

/// As [`serialize_path_lossy`], for an optional path.
pub fn serialize_opt_path_lossy<S: serde::Serializer>(
    path: &Option<std::path::PathBuf>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match path {
        Some(p) => s.serialize_some(&p.to_string_lossy()),
        None => s.serialize_none(),
    }
}

/// Drops the cached pages of a file (best effort), so that what is read
/// next comes from the medium, and reading a large file does not push
/// everything else out of the page cache.
pub fn drop_cache(file: &File) {
    let _ = nix::fcntl::posix_fadvise(
        file,
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
}

/// Writes `bytes` to a new file at `path` and flushes it to stable storage.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let ctx = || format!("write {}", path.display());
    let mut f = File::create(path).map_err(|e| Error::io(ctx(), e))?;
    f.write_all(bytes).map_err(|e| Error::io(ctx(), e))?;
    f.sync_all().map_err(|e| Error::io(ctx(), e))
}

/// Flushes a directory's entries to stable storage.
pub fn sync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("sync {}", path.display()), e))
}

/// Removes a directory tree, ignoring a missing one.
pub fn remove_tree(path: &Path) {
    let _ = fs::remove_dir_all(path);
}

/// Seconds since the epoch.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The path of a device given as a path or as a kernel name: a word
/// without a slash (`vdb`, `sda1`) is the node of that name under `/dev`.
pub fn device_path(word: &Path) -> std::path::PathBuf {
    let bytes = word.as_os_str().as_encoded_bytes();
    if !bytes.is_empty()
        && !bytes.contains(&b'/')
        && word != Path::new(".")
        && word != Path::new("..")
    {
        Path::new("/dev").join(word)
    } else {
        word.to_path_buf()
    }
}

/// The kernel name of a device given as a kernel name or as a path: a
/// block device's name from sysfs (`/dev/mapper/vg-lv` is `dm-0`), else
/// the last part of the path (`/dev/vdb` on a machine without it is `vdb`).
pub fn device_name(word: &str) -> String {
    if !word.contains('/') {
        return word.to_string();
    }
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    if let Ok(m) = fs::metadata(word) {
        if m.file_type().is_block_device() {
            let (major, minor) = (
                nix::sys::stat::major(m.rdev()),
                nix::sys::stat::minor(m.rdev()),
            );
            if let Some(n) = fs::read_link(format!("/sys/dev/block/{major}:{minor}"))
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            {
                return n;
            }
        }
    }
    Path::new(word)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| word.to_string())
}

/// The device (major, minor) whose file system holds `path`, or would hold
/// it (the nearest existing ancestor is looked at).
pub fn fs_device(path: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut p = Some(path);
    while let Some(here) = p {
        let probe = if here.as_os_str().is_empty() {
            Path::new(".")
        } else {
            here
        };
        if let Ok(m) = fs::metadata(probe) {
            let d = m.dev();
            return Some((
                nix::sys::stat::major(d) as u32,
                nix::sys::stat::minor(d) as u32,
            ));
        }
        p = here.parent();
    }
    None
}

/// The whole disk a partition `major:minor` belongs to, from sysfs.
pub fn whole_disk_of(major: u32, minor: u32) -> Option<(u32, u32)> {
    let base = std::path::PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    if !base.join("partition").exists() {
        return None;
    }
    let text = fs::read_to_string(base.join("../dev")).ok()?;
    let (a, b) = text.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Parses a size such as `4096`, `512K`, `100M`, `2G`, `1T` (powers of 1024;
/// an optional `B`, `iB` or `KiB`-style suffix is accepted).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (expected a number with optional K/M/G/T)"))?;
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(format!("'{s}': unknown unit '{unit}' (use K, M, G or T)")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("'{s}' is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_named_by_path_or_kernel_name() {
        assert_eq!(device_path(Path::new("vdb")), Path::new("/dev/vdb"));
        assert_eq!(device_path(Path::new("/dev/vdb")), Path::new("/dev/vdb"));
        assert_eq!(device_path(Path::new("./img")), Path::new("./img"));
        assert_eq!(device_name("vdb"), "vdb");
        assert_eq!(device_name("/dev/no-such-disk-here"), "no-such-disk-here");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("100m"), Ok(100 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert!(parse_size("").is_err());
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999T").is_err());
    }
}
