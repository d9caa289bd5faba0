//! An in-memory model of the kernel side, for tests.
//!
//! It follows the semantics that the backup engine relies on: the CBT map
//! that can be read is the copy frozen at the last take, its bytes are the
//! changes numbers of the interval in which each block was last written, and
//! the generation changes when the counter would overflow or the filter is
//! attached afresh. A snapshot image is a copy of the device taken at take.

use std::collections::BTreeMap;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::errno::Errno;
use uuid::Uuid;

use crate::api::{
    Attach, Blksnap, CbtInfo, DeviceIdentity, Event, ImageReader, SectorRange, SnapshotInfo,
    TrackedDevice, Version, WaitOutcome, SECTOR_SIZE,
};
use crate::error::{Error, Result};

#[derive(Debug)]
struct Tracker {
    generation: Uuid,
    active: u8,
    previous: u8,
    write_map: Vec<u8>,
    read_map: Vec<u8>,
}

#[derive(Debug)]
struct Disk {
    id: DeviceIdentity,
    data: Vec<u8>,
    tracker: Option<Tracker>,
    snapshot: Option<Uuid>,
    image: Option<Arc<Vec<u8>>>,
    error_code: i32,
    /// Error the next take leaves on the snapshot image.
    fail_take: Option<i32>,
}

#[derive(Debug, Default)]
struct Snapshot {
    devices: Vec<PathBuf>,
    taken: bool,
    events: Vec<Event>,
}

#[derive(Debug)]
struct State {
    block_size: u32,
    disks: BTreeMap<PathBuf, Disk>,
    snapshots: BTreeMap<Uuid, Snapshot>,
}

/// Major number of the fake disks.
pub const FAKE_MAJOR: u32 = 4095;

/// The fake kernel. Clones share the same state.
#[derive(Clone, Debug)]
pub struct FakeKernel {
    state: Arc<Mutex<State>>,
    /// Reads of snapshot images so far.
    image_reads: Arc<std::sync::atomic::AtomicUsize>,
}

impl FakeKernel {
    /// A kernel whose trackers use blocks of `block_size` bytes.
    pub fn new(block_size: u32) -> Self {
        assert!(block_size.is_power_of_two() && u64::from(block_size) >= SECTOR_SIZE);
        Self {
            state: Arc::new(Mutex::new(State {
                block_size,
                disks: BTreeMap::new(),
                snapshots: BTreeMap::new(),
            })),
            image_reads: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a zero-filled disk.
    pub fn add_disk(&self, path: impl Into<PathBuf>, name: &str, minor: u32, size: usize) {
        let path = path.into();
        let id = DeviceIdentity {
            path: path.clone(),
            name: name.into(),
            // A major no real device has, so that a fake disk is never
            // the device a test's files are on.
            major: FAKE_MAJOR,
            minor,
            stable_id: None,
        };
        self.lock().disks.insert(
            path,
            Disk {
                id,
                data: vec![0; size],
                tracker: None,
                snapshot: None,
                image: None,
                error_code: 0,
                fail_take: None,
            },
        );
    }

    /// Gives a disk another device number (e.g. that of a real file
    /// system, to test a repository on the device being backed up).
    pub fn set_device_number(&self, path: &Path, major: u32, minor: u32) {
        let mut st = self.lock();
        let disk = st.disks.get_mut(path).expect("no such fake disk");
        disk.id.major = major;
        disk.id.minor = minor;
    }

    /// Sets the stable name of a disk (`by-id/...`), as udev would.
    pub fn set_stable_id(&self, path: &Path, id: Option<&str>) {
        let mut st = self.lock();
        let disk = st.disks.get_mut(path).expect("no such fake disk");
        disk.id.stable_id = id.map(str::to_string);
    }

    /// Writes to a disk, as a file system would.
    pub fn write(&self, path: &Path, offset: usize, bytes: &[u8]) {
        let mut st = self.lock();
        let bs = st.block_size as usize;
        let disk = st.disks.get_mut(path).expect("no such fake disk");
        disk.data[offset..offset + bytes.len()].copy_from_slice(bytes);
        if let Some(t) = disk.tracker.as_mut() {
            if !bytes.is_empty() {
                for b in offset / bs..=(offset + bytes.len() - 1) / bs {
                    t.write_map[b] = t.active;
                }
            }
        }
    }

    /// Number of reads of snapshot images so far.
    pub fn image_reads(&self) -> usize {
        self.image_reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Current contents of a disk.
    pub fn contents(&self, path: &Path) -> Vec<u8> {
        self.lock().disks[path].data.clone()
    }

    /// Starts a new tracking generation, as after a reboot.
    pub fn reset_tracker(&self, path: &Path) {
        let mut st = self.lock();
        let disk = st.disks.get_mut(path).expect("no such fake disk");
        if let Some(t) = disk.tracker.as_mut() {
            *t = new_tracker(t.write_map.len());
        }
    }

    /// Makes the next snapshot of a device break right after the take, as
    /// when the difference storage overflows.
    pub fn fail_next_take(&self, path: &Path, errno: Errno) {
        let mut st = self.lock();
        st.disks.get_mut(path).expect("no such fake disk").fail_take = Some(-(errno as i32));
    }

    /// Marks the snapshot image of a device as corrupted.
    pub fn corrupt(&self, path: &Path, errno: Errno) {
        let mut st = self.lock();
        let disk = st.disks.get_mut(path).expect("no such fake disk");
        disk.error_code = -(errno as i32);
        let (major, minor) = (disk.id.major, disk.id.minor);
        if let Some(id) = disk.snapshot {
            if let Some(s) = st.snapshots.get_mut(&id) {
                s.events.push(Event::Corrupted {
                    time_label: 0,
                    major,
                    minor,
                    error_code: -(errno as i32),
                });
            }
        }
    }
}

fn new_tracker(blocks: usize) -> Tracker {
    Tracker {
        generation: Uuid::new_v4(),
        active: 1,
        previous: 0,
        write_map: vec![0; blocks],
        read_map: vec![0; blocks],
    }
}

/// Handle on a fake disk.
#[derive(Debug)]
pub struct FakeDevice {
    kernel: FakeKernel,
    id: DeviceIdentity,
}

impl FakeDevice {
    fn with<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut State) -> std::result::Result<T, Errno>,
    ) -> Result<T> {
        f(&mut self.kernel.lock()).map_err(|errno| Error::Ioctl {
            op,
            target: self.id.path.display().to_string(),
            errno,
        })
    }
}

fn tracker<'a>(st: &'a mut State, path: &Path) -> std::result::Result<&'a mut Tracker, Errno> {
    st.disks
        .get_mut(path)
        .ok_or(Errno::ENODEV)?
        .tracker
        .as_mut()
        .ok_or(Errno::ENOENT)
}

impl TrackedDevice for FakeDevice {
    fn identity(&self) -> &DeviceIdentity {
        &self.id
    }

    fn attach(&self) -> Result<Attach> {
        let path = self.id.path.clone();
        self.with("attach", |st| {
            let bs = st.block_size as usize;
            let disk = st.disks.get_mut(&path).ok_or(Errno::ENODEV)?;
            if disk.tracker.is_some() {
                return Ok(Attach::AlreadyAttached);
            }
            disk.tracker = Some(new_tracker(disk.data.len().div_ceil(bs)));
            Ok(Attach::Attached)
        })
    }

    fn detach(&self) -> Result<()> {
        let path = self.id.path.clone();
        self.with("detach", |st| {
            let disk = st.disks.get_mut(&path).ok_or(Errno::ENODEV)?;
            if disk.snapshot.is_some() {
                return Err(Errno::EBUSY);
            }
            disk.tracker.take().map(drop).ok_or(Errno::ENOENT)
        })
    }

    fn cbt_info(&self) -> Result<CbtInfo> {
        let path = self.id.path.clone();
        self.with("cbtinfo", |st| {
            let bs = st.block_size;
            let capacity = st.disks[&path].data.len() as u64;
            let t = tracker(st, &path)?;
            Ok(CbtInfo {
                device_capacity: capacity,
                block_size: bs,
                block_count: t.read_map.len() as u32,
                generation_id: t.generation,
                changes_number: t.previous,
            })
        })
    }

    fn cbt_map_chunk(&self, offset: u32, buf: &mut [u8]) -> Result<()> {
        let path = self.id.path.clone();
        self.with("cbtmap", |st| {
            let t = tracker(st, &path)?;
            let start = offset as usize;
            if start > t.read_map.len() {
                return Err(Errno::EINVAL);
            }
            let n = buf.len().min(t.read_map.len() - start);
            buf[..n].copy_from_slice(&t.read_map[start..start + n]);
            Ok(())
        })
    }

    fn mark_dirty(&self, ranges: &[SectorRange]) -> Result<()> {
        let path = self.id.path.clone();
        self.with("cbtdirty", |st| {
            let bs = u64::from(st.block_size);
            let capacity = st.disks[&path].data.len() as u64;
            let t = tracker(st, &path)?;
            // As the kernel does: an empty range, or one that starts at or
            // past the end, fails with EINVAL; one that runs past the end
            // is cut there.
            for r in ranges {
                let start = r.offset.saturating_mul(SECTOR_SIZE);
                if r.count == 0 || start >= capacity {
                    return Err(Errno::EINVAL);
                }
                let end = r
                    .offset
                    .saturating_add(r.count)
                    .saturating_mul(SECTOR_SIZE)
                    .min(capacity);
                for b in start / bs..=(end - 1) / bs {
                    t.write_map[b as usize] = t.active;
                    t.read_map[b as usize] = t.previous;
                }
            }
            Ok(())
        })
    }

    fn snapshot_add(&self, id: &Uuid) -> Result<()> {
        let path = self.id.path.clone();
        let id = *id;
        self.with("snapshotadd", |st| {
            tracker(st, &path)?;
            let snap = st.snapshots.get_mut(&id).ok_or(Errno::ENOENT)?;
            if snap.taken {
                return Err(Errno::EPERM);
            }
            let disk = st.disks.get_mut(&path).ok_or(Errno::ENODEV)?;
            if disk.snapshot.is_some() {
                return Err(Errno::EBUSY);
            }
            disk.snapshot = Some(id);
            disk.error_code = 0;
            snap.devices.push(path.clone());
            Ok(())
        })
    }

    fn snapshot_info(&self) -> Result<SnapshotInfo> {
        let path = self.id.path.clone();
        let image_name = self.id.image_name();
        self.with("snapshotinfo", |st| {
            tracker(st, &path)?;
            let disk = &st.disks[&path];
            Ok(SnapshotInfo {
                error_code: disk.error_code,
                image: if disk.image.is_some() {
                    image_name
                } else {
                    String::new()
                },
            })
        })
    }
}

struct FakeImage(Arc<Vec<u8>>, Arc<std::sync::atomic::AtomicUsize>);

impl ImageReader for FakeImage {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let start = usize::try_from(offset).map_err(|_| Errno::EINVAL)?;
        let src = self
            .0
            .get(start..start + buf.len())
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl Blksnap for FakeKernel {
    type Device = FakeDevice;

    fn open_device(&self, path: &Path) -> Result<FakeDevice> {
        let st = self.lock();
        let disk = st
            .disks
            .get(path)
            .ok_or_else(|| Error::DeviceNotFound(path.to_path_buf()))?;
        Ok(FakeDevice {
            kernel: self.clone(),
            id: disk.id.clone(),
        })
    }

    fn version(&self) -> Result<Version> {
        Ok(Version {
            major: 6,
            minor: 0,
            revision: 0,
            build: 0,
        })
    }

    fn snapshot_create(&self, _storage: BorrowedFd<'_>, limit_sectors: u64) -> Result<Uuid> {
        if limit_sectors == 0 {
            return Err(Error::Ioctl {
                op: "create",
                target: crate::uapi::CONTROL_PATH.into(),
                errno: Errno::EINVAL,
            });
        }
        let id = Uuid::new_v4();
        self.lock().snapshots.insert(id, Snapshot::default());
        Ok(id)
    }

    fn snapshot_destroy(&self, id: &Uuid) -> Result<()> {
        let mut st = self.lock();
        let snap = st.snapshots.remove(id).ok_or_else(|| Error::Ioctl {
            op: "destroy",
            target: format!("snapshot {id}"),
            errno: Errno::ENOENT,
        })?;
        for p in snap.devices {
            if let Some(d) = st.disks.get_mut(&p) {
                d.snapshot = None;
                d.image = None;
            }
        }
        Ok(())
    }

    fn snapshot_take(&self, id: &Uuid) -> Result<()> {
        let mut st = self.lock();
        let err = |errno| Error::Ioctl {
            op: "take",
            target: format!("snapshot {id}"),
            errno,
        };
        let snap = st.snapshots.get_mut(id).ok_or_else(|| err(Errno::ENOENT))?;
        if snap.taken || snap.devices.is_empty() {
            return Err(err(Errno::EINVAL));
        }
        snap.taken = true;
        let devices = snap.devices.clone();
        for p in devices {
            let disk = st.disks.get_mut(&p).expect("device of a snapshot");
            let t = disk.tracker.as_mut().expect("tracked device");
            if t.active == u8::MAX {
                *t = new_tracker(t.write_map.len());
            }
            t.read_map.clone_from(&t.write_map);
            t.previous = t.active;
            t.active += 1;
            disk.image = Some(Arc::new(disk.data.clone()));
            if let Some(code) = disk.fail_take.take() {
                disk.error_code = code;
            }
        }
        Ok(())
    }

    fn snapshot_collect(&self) -> Result<Vec<Uuid>> {
        Ok(self.lock().snapshots.keys().copied().collect())
    }

    fn snapshot_wait_event(&self, id: &Uuid, _timeout: Duration) -> Result<WaitOutcome> {
        let mut st = self.lock();
        match st.snapshots.get_mut(id) {
            None => Ok(WaitOutcome::Gone),
            Some(s) if s.events.is_empty() => Ok(WaitOutcome::Timeout),
            Some(s) => Ok(WaitOutcome::Event(s.events.remove(0))),
        }
    }

    fn open_image(&self, info: &SnapshotInfo) -> Result<Box<dyn ImageReader>> {
        let st = self.lock();
        let disk = st
            .disks
            .values()
            .find(|d| !info.image.is_empty() && d.id.image_name() == info.image)
            .ok_or_else(|| Error::DeviceNotFound(PathBuf::from("/dev").join(&info.image)))?;
        if disk.error_code != 0 {
            return Err(Error::io(
                format!("read {}", info.image),
                std::io::Error::from_raw_os_error(-disk.error_code),
            ));
        }
        let image = disk.image.clone().expect("taken snapshot has an image");
        Ok(Box::new(FakeImage(image, self.image_reads.clone())))
    }

    fn tracked_devices(&self) -> Result<Vec<PathBuf>> {
        Ok(self
            .lock()
            .disks
            .iter()
            .filter(|(_, d)| d.tracker.is_some())
            .map(|(p, _)| p.clone())
            .collect())
    }
}
