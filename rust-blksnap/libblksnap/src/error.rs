//! Errors of the library. Each keeps the errno or I/O error it came from.

use std::io;
use std::path::PathBuf;

use nix::errno::Errno;

/// Result type of the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error of the blksnap interface or of the backup engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The path does not exist.
    #[error("{}: no such device", .0.display())]
    DeviceNotFound(PathBuf),

    /// The path exists but is not a block device.
    #[error("{}: not a block device", .0.display())]
    NotBlockDevice(PathBuf),

    /// Opening the device or the control device was refused.
    #[error("{}: permission denied (blksnap needs root, CAP_SYS_ADMIN)", .0.display())]
    PermissionDenied(PathBuf),

    /// The running kernel has no blksnap support.
    #[error("{}: {reason}", crate::uapi::CONTROL_PATH)]
    NotSupported {
        /// What was observed.
        reason: String,
    },

    /// An ioctl failed.
    #[error("{op} on {target}: {}", describe(op, *errno))]
    Ioctl {
        /// Name of the operation.
        op: &'static str,
        /// Device or snapshot the operation was applied to.
        target: String,
        /// The errno the kernel returned.
        errno: Errno,
    },

    /// An I/O operation other than an ioctl failed. The message includes
    /// the I/O error's, so the error has no separate source (printing the
    /// chain would repeat it).
    #[error("{context}: {}", crate::util::io_text(.error))]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        error: io::Error,
    },

    /// Another run holds the backup repository.
    #[error("{}: repository locked by {holder}; try again when it has finished", .repository.display())]
    Locked {
        /// The repository directory.
        repository: PathBuf,
        /// Who holds it, as far as known ("pid 1234 (backup)").
        holder: String,
    },

    /// The kernel reported something that does not fit the interface.
    #[error("unexpected answer from the kernel: {0}")]
    Protocol(String),

    /// A backup manifest or data file is damaged or inconsistent.
    #[error("invalid backup: {0}")]
    InvalidBackup(String),

    /// Data read back does not match the backup.
    #[error("verification failed: {0}")]
    Mismatch(String),

    /// The operation was stopped by a signal.
    #[error("interrupted")]
    Interrupted,

    /// A request that cannot be carried out as asked.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// Builds an [`Error::Io`] with a context.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            error: source,
        }
    }

    /// The errno behind the error, when there is one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Ioctl { errno, .. } => Some(*errno),
            Error::Io { error, .. } => error.raw_os_error().map(Errno::from_raw),
            Error::DeviceNotFound(_) => Some(Errno::ENOENT),
            Error::NotBlockDevice(_) => Some(Errno::ENOTBLK),
            Error::PermissionDenied(_) => Some(Errno::EACCES),
            _ => None,
        }
    }

    /// True when the error means "no space left" on the backup target.
    pub fn is_no_space(&self) -> bool {
        matches!(self.errno(), Some(Errno::ENOSPC) | Some(Errno::EDQUOT))
    }
}

/// Explains the errnos whose meaning is specific to blksnap.
fn describe(op: &str, errno: Errno) -> String {
    let hint = match (op, errno) {
        (_, Errno::ENOTTY) => "the kernel does not know this ioctl: no blksnap support",
        ("attach", Errno::EALREADY) => "the blksnap filter is already attached",
        ("attach", Errno::EBUSY) => "another filter is attached to the device",
        ("attach", Errno::ENOENT) => "no filter named \"blksnap\" is registered in the kernel",
        ("detach", Errno::ENOENT) => "the blksnap filter is not attached",
        ("cbtinfo" | "cbtmap" | "cbtdirty" | "snapshotadd" | "snapshotinfo", Errno::ENOENT) => {
            "the blksnap filter is not attached to the device (run `blksnap attach` first)"
        }
        ("snapshotadd", Errno::EPERM) => {
            "the kernel refuses to snapshot this device: it has an integrity or inline \
             encryption profile, whose data a copy cannot keep (see the kernel log)"
        }
        ("snapshotadd", Errno::EINVAL) => {
            "the difference storage lies on this disk, or the request is malformed"
        }
        ("wait-event", Errno::ESRCH) | ("destroy" | "take", Errno::ENOENT) => "no such snapshot",
        ("collect", Errno::ENODATA) => "the snapshot list changed while reading it",
        _ => "",
    };
    let text = crate::util::errno_text(errno);
    if hint.is_empty() {
        text
    } else {
        format!("{text} ({hint})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_messages_come_from_the_c_library() {
        let e = Error::Ioctl {
            op: "cbtinfo",
            target: "/dev/vdb".into(),
            errno: Errno::ENOTTY,
        };
        let text = e.to_string();
        assert!(text.contains("Inappropriate ioctl for device"), "{text}");
        assert!(!text.contains("typewriter"), "{text}");
    }

    #[test]
    fn an_io_error_is_said_once() {
        use std::error::Error as _;
        let e = Error::io("open /x", io::Error::from_raw_os_error(2));
        assert_eq!(e.to_string(), "open /x: No such file or directory");
        assert!(e.source().is_none());
    }
}
