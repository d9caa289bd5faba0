//! The real kernel: ioctls on `/dev/blksnap-control` and on block devices.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use nix::errno::Errno;
use uuid::Uuid;

use crate::api::{
    Attach, Blksnap, CbtInfo, DeviceIdentity, Event, ImageReader, SectorRange, SnapshotInfo,
    TrackedDevice, Version, WaitOutcome,
};
use crate::error::{Error, Result};
use crate::uapi::{self, *};

mod ioctls {
    use crate::uapi::*;
    nix::ioctl_read_bad!(version, IOCTL_BLKSNAP_VERSION, blksnap_version);
    nix::ioctl_readwrite_bad!(
        snapshot_create,
        IOCTL_BLKSNAP_SNAPSHOT_CREATE,
        blksnap_snapshot_create
    );
    nix::ioctl_write_ptr_bad!(
        snapshot_destroy,
        IOCTL_BLKSNAP_SNAPSHOT_DESTROY,
        blksnap_uuid
    );
    nix::ioctl_write_ptr_bad!(snapshot_take, IOCTL_BLKSNAP_SNAPSHOT_TAKE, blksnap_uuid);
    nix::ioctl_read_bad!(
        snapshot_collect,
        IOCTL_BLKSNAP_SNAPSHOT_COLLECT,
        blksnap_snapshot_collect
    );
    nix::ioctl_read_bad!(
        snapshot_wait_event,
        IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT,
        blksnap_snapshot_event
    );
    nix::ioctl_write_ptr_bad!(
        snapshot_events,
        IOCTL_BLKSNAP_SNAPSHOT_EVENTS,
        blksnap_snapshot_events
    );
    nix::ioctl_readwrite_bad!(filter_attach, BLKFILTER_ATTACH, blkfilter_name);
    nix::ioctl_readwrite_bad!(filter_detach, BLKFILTER_DETACH, blkfilter_name);
    nix::ioctl_readwrite_bad!(filter_ctl, BLKFILTER_CTL, blkfilter_ctl);
}

/// The running kernel. The control device is opened on first use, so that
/// device-only commands work without it.
#[derive(Debug, Default)]
pub struct Kernel {
    control: OnceLock<File>,
    control_path: Option<PathBuf>,
}

impl Kernel {
    /// A handle on the running kernel.
    pub fn new() -> Self {
        Self::default()
    }

    /// A handle using another control device path (for tests).
    pub fn with_control_path(path: impl Into<PathBuf>) -> Self {
        Self {
            control: OnceLock::new(),
            control_path: Some(path.into()),
        }
    }

    fn control(&self) -> Result<&File> {
        if let Some(f) = self.control.get() {
            return Ok(f);
        }
        let path = self
            .control_path
            .clone()
            .unwrap_or_else(|| PathBuf::from(CONTROL_PATH));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => Error::NotSupported {
                    reason: "not found: the running kernel has no blksnap support \
                             (it is built without CONFIG_BLKSNAP)"
                        .into(),
                },
                io::ErrorKind::PermissionDenied => Error::PermissionDenied(path.clone()),
                _ => Error::io(format!("open {}", path.display()), e),
            })?;
        Ok(self.control.get_or_init(|| file))
    }

    fn ctl_fd(&self, op: &'static str) -> Result<(i32, String)> {
        Ok((self.control()?.as_raw_fd(), op.to_string()))
    }
}

fn ioctl_err(op: &'static str, target: impl Into<String>) -> impl FnOnce(Errno) -> Error {
    let target = target.into();
    move |errno| Error::Ioctl { op, target, errno }
}

/// Error of a filter ioctl on a block device. A kernel without the filter
/// interface answers ENOTTY or EINVAL (depending on the driver); when the
/// blksnap control device is missing too, say so rather than quoting errno.
fn filter_err(op: &'static str, target: String) -> impl FnOnce(Errno) -> Error {
    move |errno| {
        if matches!(errno, Errno::ENOTTY | Errno::EINVAL) && !Path::new(CONTROL_PATH).exists() {
            Error::NotSupported {
                reason: format!(
                    "not found, and {op} on {target} failed ({}): the running kernel \
                     has no blksnap support",
                    crate::util::errno_text(errno)
                ),
            }
        } else {
            Error::Ioctl { op, target, errno }
        }
    }
}

/// Checks that `path` is a block device and explains what it is otherwise.
pub fn check_block_device(path: &Path) -> Result<std::fs::Metadata> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::DeviceNotFound(path.to_path_buf()),
        io::ErrorKind::PermissionDenied => Error::PermissionDenied(path.to_path_buf()),
        _ => Error::io(format!("stat {}", path.display()), e),
    })?;
    if !meta.file_type().is_block_device() {
        return Err(Error::NotBlockDevice(path.to_path_buf()));
    }
    Ok(meta)
}

/// Kernel name of the block device `major:minor`, from sysfs.
fn kernel_name(major: u32, minor: u32, path: &Path) -> String {
    std::fs::read_link(format!("/sys/dev/block/{major}:{minor}"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .or_else(|| path.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| format!("{major}:{minor}"))
}

/// A block device opened for the filter ioctls (read-only, O_DIRECT).
#[derive(Debug)]
pub struct Device {
    file: File,
    id: DeviceIdentity,
}

impl Device {
    /// Opens `path`, which must be a block device.
    pub fn open(path: &Path) -> Result<Self> {
        check_block_device(path)?;
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_DIRECT)
            .open(path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => Error::DeviceNotFound(path.to_path_buf()),
                io::ErrorKind::PermissionDenied => Error::PermissionDenied(path.to_path_buf()),
                _ => Error::io(format!("open {}", path.display()), e),
            })?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
        if !meta.file_type().is_block_device() {
            return Err(Error::NotBlockDevice(path.to_path_buf()));
        }
        let rdev = meta.rdev();
        let (major, minor) = (
            nix::sys::stat::major(rdev) as u32,
            nix::sys::stat::minor(rdev) as u32,
        );
        Ok(Self {
            file,
            id: DeviceIdentity {
                path: path.to_path_buf(),
                name: kernel_name(major, minor, path),
                major,
                minor,
                stable_id: crate::identity::stable_id(major, minor),
            },
        })
    }

    fn target(&self) -> String {
        self.id.path.display().to_string()
    }

    fn filter_name() -> blkfilter_name {
        blkfilter_name {
            name: filter_name_bytes(FILTER_NAME),
        }
    }

    /// Sends a blksnap command; returns the ioctl's return value.
    fn ctl<T>(&self, op: &'static str, cmd: u32, arg: &mut T) -> Result<i32> {
        let mut ctl = blkfilter_ctl {
            name: filter_name_bytes(FILTER_NAME),
            cmd,
            optlen: std::mem::size_of::<T>() as u32,
            opt: arg as *mut T as u64,
        };
        // SAFETY: `ctl` points to `arg`, which is a live, writable value of
        // the size announced in `optlen`, for the whole call.
        unsafe { ioctls::filter_ctl(self.file.as_raw_fd(), &mut ctl) }
            .map_err(filter_err(op, self.target()))
    }
}

impl TrackedDevice for Device {
    fn identity(&self) -> &DeviceIdentity {
        &self.id
    }

    fn attach(&self) -> Result<Attach> {
        let mut name = Self::filter_name();
        // SAFETY: `name` is a valid blkfilter_name for the duration of the call.
        match unsafe { ioctls::filter_attach(self.file.as_raw_fd(), &mut name) } {
            Ok(_) => Ok(Attach::Attached),
            Err(Errno::EALREADY) => Ok(Attach::AlreadyAttached),
            Err(e) => Err(filter_err("attach", self.target())(e)),
        }
    }

    fn detach(&self) -> Result<()> {
        let mut name = Self::filter_name();
        // SAFETY: as for attach.
        unsafe { ioctls::filter_detach(self.file.as_raw_fd(), &mut name) }
            .map(drop)
            .map_err(filter_err("detach", self.target()))
    }

    fn cbt_info(&self) -> Result<CbtInfo> {
        let mut raw = blksnap_cbtinfo::default();
        self.ctl("cbtinfo", ctl::CBTINFO, &mut raw)?;
        Ok(CbtInfo {
            device_capacity: raw.device_capacity,
            block_size: raw.block_size,
            block_count: raw.block_count,
            generation_id: Uuid::from_bytes(raw.generation_id.b),
            changes_number: raw.changes_number,
        })
    }

    fn cbt_map_chunk(&self, offset: u32, buf: &mut [u8]) -> Result<()> {
        let mut arg = blksnap_cbtmap {
            offset,
            length: u32::try_from(buf.len()).unwrap_or(u32::MAX),
            buffer: buf.as_mut_ptr() as u64,
        };
        // Success is 0 (v6); the bytes copied are not reported.
        self.ctl("cbtmap", ctl::CBTMAP, &mut arg).map(drop)
    }

    fn mark_dirty(&self, ranges: &[SectorRange]) -> Result<()> {
        let raw: Vec<blksnap_sectors> = ranges
            .iter()
            .map(|r| blksnap_sectors {
                offset: r.offset,
                count: r.count,
            })
            .collect();
        let mut arg = blksnap_cbtdirty {
            count: u32::try_from(raw.len())
                .map_err(|_| Error::Invalid("too many sector ranges".into()))?,
            dirty_sectors: raw.as_ptr() as u64,
        };
        self.ctl("cbtdirty", ctl::CBTDIRTY, &mut arg).map(drop)
    }

    fn snapshot_add(&self, id: &Uuid) -> Result<()> {
        let mut arg = blksnap_snapshotadd {
            id: blksnap_uuid { b: *id.as_bytes() },
        };
        self.ctl("snapshotadd", ctl::SNAPSHOTADD, &mut arg)
            .map(drop)
    }

    fn snapshot_info(&self) -> Result<SnapshotInfo> {
        let mut raw = blksnap_snapshotinfo::default();
        self.ctl("snapshotinfo", ctl::SNAPSHOTINFO, &mut raw)?;
        let len = raw
            .image
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(raw.image.len());
        Ok(SnapshotInfo {
            error_code: raw.error_code,
            image: String::from_utf8_lossy(&raw.image[..len]).into_owned(),
        })
    }
}

/// A snapshot image, read with O_DIRECT where the request is aligned as
/// the device needs (EINVAL otherwise: then through the page cache).
struct Image {
    direct: Option<File>,
    buffered: File,
}

impl ImageReader for Image {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        if let Some(d) = &self.direct {
            match FileExt::read_exact_at(d, buf, offset) {
                Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {}
                other => return other,
            }
        }
        FileExt::read_exact_at(&self.buffered, buf, offset)
    }
}

fn raw_uuid(id: &Uuid) -> blksnap_uuid {
    blksnap_uuid { b: *id.as_bytes() }
}

/// Decodes the event structure returned by WAIT_EVENT.
pub fn decode_event(raw: &blksnap_snapshot_event) -> Event {
    match raw.code {
        uapi::EVENT_CODE_CORRUPTED => {
            let word = |i: usize| {
                [
                    raw.data[i],
                    raw.data[i + 1],
                    raw.data[i + 2],
                    raw.data[i + 3],
                ]
            };
            Event::Corrupted {
                time_label: raw.time_label,
                major: u32::from_ne_bytes(word(0)),
                minor: u32::from_ne_bytes(word(4)),
                error_code: i32::from_ne_bytes(word(8)),
            }
        }
        uapi::EVENT_CODE_NO_SPACE => {
            let quad = |i: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&raw.data[i..i + 8]);
                u64::from_ne_bytes(b)
            };
            Event::NoSpace {
                time_label: raw.time_label,
                used_sectors: quad(0),
                limit_sectors: quad(8),
            }
        }
        code => Event::Unknown {
            time_label: raw.time_label,
            code,
        },
    }
}

impl Blksnap for Kernel {
    type Device = Device;

    fn open_device(&self, path: &Path) -> Result<Device> {
        Device::open(path)
    }

    fn version(&self) -> Result<Version> {
        let (fd, _) = self.ctl_fd("version")?;
        let mut v = blksnap_version::default();
        // SAFETY: `v` is a valid, writable blksnap_version.
        unsafe { ioctls::version(fd, &mut v) }.map_err(ioctl_err("version", CONTROL_PATH))?;
        Ok(Version {
            major: v.major,
            minor: v.minor,
            revision: v.revision,
            build: v.build,
        })
    }

    fn snapshot_create(&self, storage: BorrowedFd<'_>, limit_sectors: u64) -> Result<Uuid> {
        let (fd, _) = self.ctl_fd("create")?;
        let mut arg = blksnap_snapshot_create {
            diff_storage_limit_sect: limit_sectors,
            diff_storage_fd: storage.as_raw_fd() as u32,
            id: blksnap_uuid::default(),
        };
        // SAFETY: `arg` is a valid, writable blksnap_snapshot_create.
        unsafe { ioctls::snapshot_create(fd, &mut arg) }
            .map_err(ioctl_err("create", CONTROL_PATH))?;
        // The tool understands the no-space event (an extension of v6): ask for it. A kernel
        // without the extension (ENOTTY, EINVAL) delivers v6's events only, which is fine.
        let events = blksnap_snapshot_events {
            id: arg.id,
            mask: (1 << uapi::EVENT_CODE_CORRUPTED) | (1 << uapi::EVENT_CODE_NO_SPACE),
        };
        // SAFETY: `events` is a valid blksnap_snapshot_events.
        let _ = unsafe { ioctls::snapshot_events(fd, &events) };
        Ok(Uuid::from_bytes(arg.id.b))
    }

    fn snapshot_destroy(&self, id: &Uuid) -> Result<()> {
        let (fd, _) = self.ctl_fd("destroy")?;
        let raw = raw_uuid(id);
        // SAFETY: `raw` is a valid blksnap_uuid.
        unsafe { ioctls::snapshot_destroy(fd, &raw) }
            .map(drop)
            .map_err(ioctl_err("destroy", format!("snapshot {id}")))
    }

    fn snapshot_take(&self, id: &Uuid) -> Result<()> {
        let (fd, _) = self.ctl_fd("take")?;
        let raw = raw_uuid(id);
        // SAFETY: `raw` is a valid blksnap_uuid.
        unsafe { ioctls::snapshot_take(fd, &raw) }
            .map(drop)
            .map_err(ioctl_err("take", format!("snapshot {id}")))
    }

    fn snapshot_collect(&self) -> Result<Vec<Uuid>> {
        let (fd, _) = self.ctl_fd("collect")?;
        // The list may grow between the two calls: retry a few times.
        for _ in 0..8 {
            let mut arg = blksnap_snapshot_collect { count: 0, ids: 0 };
            // SAFETY: a zero count with a null array only reports the count.
            unsafe { ioctls::snapshot_collect(fd, &mut arg) }
                .map_err(ioctl_err("collect", CONTROL_PATH))?;
            if arg.count == 0 {
                return Ok(Vec::new());
            }
            let mut ids = vec![blksnap_uuid::default(); arg.count as usize];
            arg.ids = ids.as_mut_ptr() as u64;
            // SAFETY: `ids` holds `count` writable elements during the call.
            match unsafe { ioctls::snapshot_collect(fd, &mut arg) } {
                Ok(_) => {
                    ids.truncate(arg.count as usize);
                    return Ok(ids.iter().map(|u| Uuid::from_bytes(u.b)).collect());
                }
                Err(Errno::ENODATA) => continue,
                Err(e) => return Err(ioctl_err("collect", CONTROL_PATH)(e)),
            }
        }
        Err(ioctl_err("collect", CONTROL_PATH)(Errno::ENODATA))
    }

    fn snapshot_wait_event(&self, id: &Uuid, timeout: Duration) -> Result<WaitOutcome> {
        let (fd, _) = self.ctl_fd("wait-event")?;
        let mut ev = Box::<blksnap_snapshot_event>::default();
        ev.id = raw_uuid(id);
        ev.timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        // SAFETY: `ev` is a valid, writable 4096-byte event structure.
        match unsafe { ioctls::snapshot_wait_event(fd, &mut *ev) } {
            Ok(_) => Ok(WaitOutcome::Event(decode_event(&ev))),
            Err(Errno::ENOENT) => Ok(WaitOutcome::Timeout),
            Err(Errno::ESRCH) => Ok(WaitOutcome::Gone),
            Err(e) => Err(ioctl_err("wait-event", format!("snapshot {id}"))(e)),
        }
    }

    fn open_image(&self, info: &SnapshotInfo) -> Result<Box<dyn ImageReader>> {
        let path = info
            .image_path()
            .ok_or_else(|| Error::Protocol("snapshot has no image disk".into()))?;
        check_block_device(&path)?;
        let file =
            File::open(&path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        // Read past the page cache where the image allows it: a backup
        // reads each block once, and should not push everything else out.
        let direct = OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_DIRECT)
            .open(&path)
            .ok();
        Ok(Box::new(Image {
            direct,
            buffered: file,
        }))
    }

    /// The block devices whose sysfs `filter` attribute names blksnap.
    fn tracked_devices(&self) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir("/sys/class/block") else {
            return Ok(out);
        };
        for e in rd.flatten() {
            let filter = std::fs::read_to_string(e.path().join("filter")).unwrap_or_default();
            if filter.trim() == FILTER_NAME {
                out.push(Path::new("/dev").join(e.file_name()));
            }
        }
        out.sort();
        Ok(out)
    }
}
