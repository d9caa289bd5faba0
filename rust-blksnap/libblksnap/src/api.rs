//! The kernel interface as traits, so that code built on it can run against
//! the real kernel ([`crate::sys`]) or an in-memory model (`crate::fake`, feature `fake`).

use std::fmt;
use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::Result;

/// Size of a sector, the unit of sector ranges and of the storage limit.
pub const SECTOR_SIZE: u64 = 512;

/// Version of the kernel interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub major: u16,
    pub minor: u16,
    pub revision: u16,
    pub build: u16,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.{}.{}",
            self.major, self.minor, self.revision, self.build
        )
    }
}

/// State of the change tracker of a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CbtInfo {
    /// Size of the device in bytes.
    pub device_capacity: u64,
    /// Size of one tracking block in bytes.
    pub block_size: u32,
    /// Number of tracking blocks (bytes of the map).
    pub block_count: u32,
    /// Identifier of the tracking generation.
    pub generation_id: Uuid,
    /// Changes number of the last snapshot taken in this generation.
    pub changes_number: u8,
}

impl CbtInfo {
    /// Checks that the values are consistent with each other.
    pub fn validate(&self) -> Result<()> {
        let bs = u64::from(self.block_size);
        if !self.block_size.is_power_of_two() || bs < SECTOR_SIZE {
            return Err(crate::Error::Protocol(format!(
                "CBT block size {} is not a power of two of at least one sector",
                self.block_size
            )));
        }
        let needed = self.device_capacity.div_ceil(bs);
        if needed != u64::from(self.block_count) {
            return Err(crate::Error::Protocol(format!(
                "CBT has {} blocks of {} bytes for a capacity of {} bytes (expected {needed})",
                self.block_count, self.block_size, self.device_capacity
            )));
        }
        Ok(())
    }

    /// Length in bytes of block `index` (the last one may be short).
    pub fn block_len(&self, index: u32) -> u64 {
        let bs = u64::from(self.block_size);
        let start = u64::from(index) * bs;
        bs.min(self.device_capacity.saturating_sub(start))
    }
}

/// A range of 512-byte sectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SectorRange {
    pub offset: u64,
    pub count: u64,
}

/// Snapshot state of one device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// Zero, or the negative errno that made the snapshot unusable.
    pub error_code: i32,
    /// Name of the image disk, empty until the snapshot is taken.
    pub image: String,
}

impl SnapshotInfo {
    /// Path of the image device node, once the snapshot is taken.
    pub fn image_path(&self) -> Option<PathBuf> {
        (!self.image.is_empty()).then(|| PathBuf::from("/dev").join(&self.image))
    }
}

/// An event of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// The image of a device became unusable.
    Corrupted {
        time_label: i64,
        major: u32,
        minor: u32,
        error_code: i32,
    },
    /// The difference storage cannot grow any more and is low on space (an extension of the
    /// v6 interface): the snapshot breaks if it overflows.
    NoSpace {
        time_label: i64,
        used_sectors: u64,
        limit_sectors: u64,
    },
    /// An event this tool does not know.
    Unknown { time_label: i64, code: u32 },
}

/// Outcome of waiting for an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WaitOutcome {
    Event(Event),
    /// Nothing happened within the timeout.
    Timeout,
    /// The snapshot does not exist (any more).
    Gone,
}

/// Outcome of attaching the filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attach {
    Attached,
    AlreadyAttached,
}

/// Who a block device is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceIdentity {
    /// Path the device was opened by.
    pub path: PathBuf,
    /// Kernel name of the device (`vdb`, `sda1`).
    pub name: String,
    pub major: u32,
    pub minor: u32,
    /// A name of the device that does not depend on the order in which
    /// disks were found, where the system has one: `by-id/wwn-...`,
    /// `by-id/...`, `by-partuuid/...` (from `/dev/disk`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_id: Option<String>,
}

impl DeviceIdentity {
    /// Name of the snapshot image disk of this device.
    pub fn image_name(&self) -> String {
        format!(
            "{}_{}:{}",
            crate::uapi::IMAGE_NAME_PREFIX,
            self.major,
            self.minor
        )
    }
}

/// Random-access reader of a snapshot image.
pub trait ImageReader {
    /// Fills `buf` from `offset`; short reads are errors.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

impl ImageReader for std::fs::File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

/// A block device with the blksnap filter interface.
pub trait TrackedDevice {
    /// Who the device is.
    fn identity(&self) -> &DeviceIdentity;
    /// Attaches the blksnap filter.
    fn attach(&self) -> Result<Attach>;
    /// Detaches the blksnap filter.
    fn detach(&self) -> Result<()>;
    /// State of the change tracker.
    fn cbt_info(&self) -> Result<CbtInfo>;
    /// Copies the map bytes from `offset` into `buf`, which must not reach
    /// past the end of the map: the kernel copies what is left of the map
    /// and returns 0 (the v6 interface), not the number of bytes copied.
    fn cbt_map_chunk(&self, offset: u32, buf: &mut [u8]) -> Result<()>;
    /// Marks sector ranges as changed.
    fn mark_dirty(&self, ranges: &[SectorRange]) -> Result<()>;
    /// Adds the device to a created snapshot.
    fn snapshot_add(&self, id: &Uuid) -> Result<()>;
    /// Snapshot state of the device.
    fn snapshot_info(&self) -> Result<SnapshotInfo>;

    /// Reads the whole readable CBT map.
    fn cbt_map(&self, info: &CbtInfo) -> Result<Vec<u8>> {
        const CHUNK: usize = 1 << 20;
        let total = info.block_count as usize;
        let mut map = vec![0u8; total];
        let mut done = 0;
        while done < total {
            let end = total.min(done + CHUNK);
            self.cbt_map_chunk(done as u32, &mut map[done..end])?;
            done = end;
        }
        Ok(map)
    }
}

/// The snapshot half of the interface (the control device) and the way to
/// reach devices and images.
pub trait Blksnap {
    /// Device handle type.
    type Device: TrackedDevice;

    /// Opens a block device for the filter ioctls.
    fn open_device(&self, path: &std::path::Path) -> Result<Self::Device>;
    /// Interface version.
    fn version(&self) -> Result<Version>;
    /// Creates an empty snapshot with the given difference storage.
    fn snapshot_create(&self, storage: BorrowedFd<'_>, limit_sectors: u64) -> Result<Uuid>;
    /// Destroys a snapshot.
    fn snapshot_destroy(&self, id: &Uuid) -> Result<()>;
    /// Takes a snapshot.
    fn snapshot_take(&self, id: &Uuid) -> Result<()>;
    /// Lists existing snapshots.
    fn snapshot_collect(&self) -> Result<Vec<Uuid>>;
    /// Waits for the next event of a snapshot.
    fn snapshot_wait_event(&self, id: &Uuid, timeout: Duration) -> Result<WaitOutcome>;
    /// Opens the image disk of a taken snapshot for reading.
    fn open_image(&self, info: &SnapshotInfo) -> Result<Box<dyn ImageReader>>;
    /// Paths of the devices the blksnap filter is attached to.
    fn tracked_devices(&self) -> Result<Vec<PathBuf>>;
}
