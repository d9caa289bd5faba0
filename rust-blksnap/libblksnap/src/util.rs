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
    use super::parse_size;

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
