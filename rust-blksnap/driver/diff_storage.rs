// SPDX-License-Identifier: GPL-2.0

//! The difference storage of a snapshot: where the old data of the chunks overwritten on the
//! origin devices is kept while the snapshot exists.
//!
//! Two backends sit behind one interface (as the exception stores of device mapper do):
//!
//! - a file: a regular file opened by user space on any file system (written with
//!   `vfs_iter_write`, so ext4, xfs and tmpfs alike), or an unnamed temporary file that the
//!   kernel makes in a directory given by user space and that goes away with the snapshot;
//! - a block device, kept open through the file user space gave (which it may have opened
//!   exclusively) for the life of the snapshot.
//!
//! Space is handed out from the start of the storage, in pieces of the chunk size of the device
//! asking, and never reused while the snapshot exists. Running out of space (the limit given at
//! creation, or the end of a block device) fails the allocation with `ENOSPC`, which breaks the
//! snapshot and never the origin.
//!
//! A file storage grows while the snapshot is held: its capacity starts at the size of the file
//! and, whenever less than half a growth step is left, the storage worker (never a write to the
//! origin) extends the file with `fallocate` by one step (`diff_storage_minimum`), up to the
//! limit. A file system without `fallocate`, and a block device, are used at their size. When
//! the storage cannot grow any more and less than half a step (or half the limit, if smaller) is
//! left, the caller is told once, so that user space can learn about it before the storage
//! overflows.

use crate::{
    blkio,
    chunk::Buffer,
    event::{Event, EventQueue},
    uapi::{self, Uuid},
};
use kernel::{
    block::{
        bdev::{BlockDevice, BlockDeviceFile, DevT},
        bio::{BioSet, Operation},
    },
    fs::{
        file::Offset,
        file_io::{FallocFlags, KernelFile, PageSegment, PageSegmentMut},
    },
    memalloc::NoIoScope,
    new_mutex,
    prelude::*,
    random,
    sync::{
        atomic::{Acquire, Atomic, Full, Release},
        Arc, Mutex,
    },
    time::{Instant, Monotonic},
    transmute::AsBytes,
    workqueue::OwnedQueue,
};

/// Where the data goes.
enum Backend {
    /// A regular file, given by user space or made by the kernel.
    File(KernelFile),
    /// A block device opened exclusively.
    Bdev(Arc<BdevStore>),
}

/// A block device used as difference storage.
struct BdevStore {
    file: BlockDeviceFile,
}

impl blkio::Device for BdevStore {
    fn bdev(&self) -> &BlockDevice {
        self.file.bdev()
    }
}

/// How much of the storage is in use and how much is ready.
///
/// # Invariants
///
/// `used <= capacity <= limit` of the storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Space {
    /// Bytes handed out so far, from the start.
    pub(crate) used: u64,
    /// Bytes that can be handed out without growing.
    pub(crate) capacity: u64,
    /// Whether the capacity can still grow (a file whose file system has `fallocate`).
    pub(crate) growable: bool,
    /// Whether the caller was told that the storage cannot grow any more.
    pub(crate) reported: bool,
}

/// What [`Space::plan`] decides before handing out bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Hand out the bytes at this offset; then grow by this many bytes (0: no growth).
    Take { offset: u64, grow: u64 },
    /// Grow by this many bytes first, then plan again.
    GrowFirst(u64),
    /// The storage is full.
    Full,
}

impl Space {
    /// Decides how to hand out `bytes` bytes of a storage that may grow to `limit` bytes by
    /// steps of `step` bytes.
    pub(crate) fn plan(&self, bytes: u64, limit: u64, step: u64) -> Plan {
        let Some(end) = self.used.checked_add(bytes) else {
            return Plan::Full;
        };
        if end > limit {
            return Plan::Full;
        }
        let room = limit.saturating_sub(self.capacity);
        if end > self.capacity {
            return if self.growable && room > 0 {
                Plan::GrowFirst(step.max(end - self.capacity).min(room))
            } else {
                Plan::Full
            };
        }
        let left = self.capacity - end;
        let grow = if self.growable && left < step / 2 {
            step.min(room)
        } else {
            0
        };
        Plan::Take {
            offset: self.used,
            grow,
        }
    }

    /// Returns whether the storage is low on space for good: it cannot grow, and less than half
    /// a step (or half the limit, if that is smaller) is left. True once; later calls return
    /// false.
    pub(crate) fn report_low(&mut self, limit: u64, step: u64) -> bool {
        let fixed = !self.growable || self.capacity >= limit;
        if self.reported || !fixed || self.capacity.saturating_sub(self.used) >= step.min(limit) / 2
        {
            return false;
        }
        self.reported = true;
        true
    }
}

/// The difference storage of one snapshot.
///
/// # Invariants
///
/// `space.capacity <= limit`, and the storage holds at least `space.capacity` bytes.
#[pin_data]
pub(crate) struct DiffStorage {
    backend: Backend,
    /// Size the storage may grow to, in bytes.
    limit: u64,
    /// Bytes by which a file storage grows.
    step: u64,
    #[pin]
    space: Mutex<Space>,
}

/// A piece of the storage, from [`DiffStorage::alloc`].
pub(crate) struct Piece {
    /// Where the piece starts, in bytes.
    pub(crate) offset: u64,
    /// Whether the storage has just become low on space for good (see [`Space::report_low`]).
    pub(crate) low: bool,
}

impl DiffStorage {
    /// Makes the storage from the file descriptor `fd` given to `IOCTL_BLKSNAP_SNAPSHOT_CREATE`,
    /// allowed to grow to `limit_sectors` sectors by steps of `step` bytes.
    ///
    /// `fd` may be a regular file or a block device opened for writing (the kernel keeps its own
    /// reference to the file, and so the exclusive claim user space may hold on the device), or
    /// a directory (an unnamed temporary file is made in it). Fails with `EINVAL` for a limit of
    /// 0, `EBADF` for a bad descriptor or a file not opened for writing, `EINVAL` for any other
    /// kind of file.
    pub(crate) fn from_fd(
        fd: u32,
        limit_sectors: u64,
        step: u64,
    ) -> Result<impl PinInit<Self, Error>> {
        if limit_sectors == 0 {
            return Err(EINVAL);
        }
        let limit = limit_sectors.saturating_mul(512);
        let file = KernelFile::fget(fd)?;
        if file.block_device().is_some() {
            if !file.is_writable() {
                return Err(EBADF);
            }
            let bdev = file.into_block_device()?;
            let size = bdev.bdev().capacity_bytes().min(limit);
            let backend = Backend::Bdev(Arc::new(BdevStore { file: bdev }, GFP_KERNEL)?);
            return Ok(Self::with(backend, size, size, false, step));
        }
        let file = if file.is_dir() {
            file.create_tmpfile()?
        } else if file.is_regular() {
            if !file.is_writable() {
                return Err(EBADF);
            }
            file
        } else {
            return Err(EINVAL);
        };
        let size = u64::try_from(file.size()).unwrap_or(0).min(limit);
        Ok(Self::with(Backend::File(file), limit, size, true, step))
    }

    /// Makes the storage from a regular file, allowed to grow to `limit` bytes by steps of
    /// `step` bytes. The file's present size is ready for use.
    #[cfg_attr(
        not(CONFIG_BLKSNAP_KUNIT_TEST),
        expect(dead_code, reason = "only the tests make storage without a descriptor")
    )]
    pub(crate) fn from_file(file: KernelFile, limit: u64, step: u64) -> impl PinInit<Self, Error> {
        let size = u64::try_from(file.size()).unwrap_or(0).min(limit);
        Self::with(Backend::File(file), limit, size, true, step)
    }

    fn with(
        backend: Backend,
        limit: u64,
        capacity: u64,
        growable: bool,
        step: u64,
    ) -> impl PinInit<Self, Error> {
        // INVARIANT: `capacity <= limit` (the callers' `min`), and the storage holds its present
        // size.
        try_pin_init!(Self {
            backend,
            limit,
            step,
            space <- new_mutex!(Space {
                used: 0,
                capacity,
                growable,
                reported: false,
            }),
        }? Error)
    }

    /// Returns whether the storage lies on the disk whose whole-disk device is `disk`: such a
    /// device cannot be snapshotted with it, since preserving its data would write to itself.
    pub(crate) fn is_on_disk(&self, disk: DevT) -> bool {
        match &self.backend {
            Backend::File(file) => file.fs_disk() == Some(disk),
            Backend::Bdev(store) => store.file.bdev().whole().dev() == disk,
        }
    }

    /// Returns the smallest unit the storage is written in: the logical block of a block device,
    /// 512 bytes for a file (written through its page cache).
    pub(crate) fn logical_block_size(&self) -> u32 {
        match &self.backend {
            Backend::File(_) => 512,
            Backend::Bdev(store) => store.file.bdev().logical_block_size(),
        }
    }

    /// Returns the number of bytes handed out so far.
    pub(crate) fn used(&self) -> u64 {
        self.space.lock().used
    }

    /// Returns how much is used and ready.
    pub(crate) fn space(&self) -> Space {
        *self.space.lock()
    }

    /// Returns the size the storage may grow to, in bytes.
    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// Hands out `bytes` bytes of the storage, growing a file storage when it runs low. Fails
    /// with `ENOSPC` when the storage is full, or with the error of the file system when the
    /// space needed now cannot be allocated. May sleep: called by the storage worker and by
    /// image writes, never by a write to the origin.
    pub(crate) fn alloc(&self, bytes: u64) -> Result<Piece> {
        let mut space = self.space.lock();
        loop {
            match space.plan(bytes, self.limit, self.step) {
                Plan::Full => return Err(ENOSPC),
                Plan::GrowFirst(by) => {
                    let needed = space.used + bytes - space.capacity;
                    if let Err(err) = self.grow(&mut space, by) {
                        // A file system short of a whole step may still hold this piece.
                        if err != ENOSPC || by <= needed || !space.growable {
                            return Err(err);
                        }
                        self.grow(&mut space, needed)?;
                    }
                }
                Plan::Take { offset, grow } => {
                    space.used = offset + bytes;
                    if grow > 0 {
                        // Space is left for now: a failure only stops further growth.
                        let _ = self.grow(&mut space, grow);
                    }
                    let low = space.report_low(self.limit, self.step);
                    return Ok(Piece { offset, low });
                }
            }
        }
    }

    /// Extends a file storage by `by` bytes after its capacity. A file system without
    /// `fallocate` leaves the storage at its size from then on.
    fn grow(&self, space: &mut Space, by: u64) -> Result {
        let Backend::File(file) = &self.backend else {
            space.growable = false;
            return Err(ENOSPC);
        };
        let offset = Offset::try_from(space.capacity).map_err(|_| EFBIG)?;
        let len = Offset::try_from(by).map_err(|_| EFBIG)?;
        let result = {
            // The file system must not recurse into the origins for memory while allocating.
            let _noio = NoIoScope::new();
            file.fallocate(FallocFlags::empty(), offset, len)
        };
        match result {
            Ok(()) => {
                // INVARIANT: `plan` never grows past the limit, and the file now holds the bytes.
                space.capacity += by;
                Ok(())
            }
            Err(err) => {
                if err == EOPNOTSUPP {
                    space.growable = false;
                }
                Err(if err == EOPNOTSUPP { ENOSPC } else { err })
            }
        }
    }

    /// Writes the first `len` bytes of `buf` at `offset` of the storage. May sleep.
    ///
    /// Every allocation on the way (the page cache of a file, the file system's own) is made
    /// without I/O: reclaim that waited for I/O could wait for writes to the origins that
    /// copy-on-write holds until this store is done.
    pub(crate) fn write(
        &self,
        set: &Arc<BioSet>,
        offset: u64,
        buf: &Arc<Buffer>,
        len: usize,
    ) -> Result {
        let _noio = NoIoScope::new();
        match &self.backend {
            Backend::File(file) => {
                let pos = Offset::try_from(offset).map_err(|_| EFBIG)?;
                let pages = buf.pages();
                let segments = Buffer::ranges(len)
                    .map(|(i, n)| PageSegment::new(&pages[i], 0, n))
                    .collect_result()?;
                file.write_all_pages_at(segments, pos, GFP_NOIO)
            }
            Backend::Bdev(store) => blkio::sync(
                set,
                store.clone(),
                Operation::Write,
                offset >> 9,
                buf.clone(),
                len,
            )
            .map(|_| ()),
        }
    }

    /// Reads `len` bytes at `offset` of the storage into the start of `buf`, and gives it back.
    /// May sleep; allocates without I/O, as [`DiffStorage::write`] does.
    pub(crate) fn read(
        &self,
        set: &Arc<BioSet>,
        offset: u64,
        mut buf: Buffer,
        len: usize,
    ) -> Result<Buffer> {
        let _noio = NoIoScope::new();
        match &self.backend {
            Backend::File(file) => {
                let pos = Offset::try_from(offset).map_err(|_| EFBIG)?;
                let mut segments = KVec::new();
                for (page, (_, n)) in buf.pages_mut().iter_mut().zip(Buffer::ranges(len)) {
                    segments.push(PageSegmentMut::new(page, 0, n)?, GFP_NOIO)?;
                }
                file.read_all_pages_at(segments, pos, GFP_NOIO)?;
                Ok(buf)
            }
            Backend::Bdev(store) => {
                blkio::sync(set, store.clone(), Operation::Read, offset >> 9, buf, len)
            }
        }
    }
}

/// What the difference areas of one snapshot share.
#[pin_data]
pub(crate) struct Shared {
    pub(crate) id: Uuid,
    #[pin]
    pub(crate) storage: DiffStorage,
    #[pin]
    pub(crate) events: EventQueue,
    pub(crate) bio_set: Arc<BioSet>,
    /// Where the chunks read by copy-on-write are stored.
    pub(crate) queue: &'static OwnedQueue,
    /// Where the image disks serve their bios. Not `queue`: an image write waits for the store
    /// of the chunk it preserves, and under memory pressure only the rescuer of a queue runs, one
    /// work item after another: the store, queued behind the write, would never run.
    pub(crate) image_queue: &'static OwnedQueue,
    /// The bound of the chunks each area keeps in memory for copy-on-write
    /// (`chunk_maximum_in_queue`).
    pub(crate) chunk_limit: usize,
    epoch: Instant<Monotonic>,
    /// The client asked for the `no_space` event ([`Shared::want_events`]). A v6 client never
    /// does, and sees only `corrupted` events, as v6 delivers.
    no_space_wanted: Atomic<bool>,
    /// The `no_space` event was queued (it is queued once).
    no_space_sent: Atomic<bool>,
}

impl Shared {
    /// Reports that the image of `dev` is corrupted by `err`.
    pub(crate) fn corrupted(&self, dev: DevT, err: Error) {
        let data = uapi::EventCorrupted {
            dev_id_mj: dev.major(),
            dev_id_mn: dev.minor(),
            // Positive, as blksnap v6 reports it (`abs()` of the error): clients print it with
            // `strerror()`.
            err_code: err.to_errno().saturating_abs(),
        };
        self.events.push(Event::new(
            &self.epoch,
            uapi::EVENT_CODE_CORRUPTED,
            data.as_bytes(),
        ));
    }

    /// Hands out `bytes` bytes of the difference storage; reports when it gets low for good.
    pub(crate) fn alloc_storage(&self, bytes: u64) -> Result<u64> {
        let piece = self.storage.alloc(bytes)?;
        if piece.low {
            pr_warn!(
                "snapshot {:?}: difference storage low on space for good ({} of {} sectors)\n",
                Id(&self.id),
                self.storage.used() >> 9,
                self.storage.limit() >> 9
            );
            self.send_no_space();
        }
        Ok(piece.offset)
    }

    /// Queues the `no_space` event once, if the client asked for it and the storage is low on
    /// space for good.
    fn send_no_space(&self) {
        if !self.no_space_wanted.load(Acquire) || !self.storage.space().reported {
            return;
        }
        if self.no_space_sent.xchg(true, Full) {
            return;
        }
        let data = uapi::EventNoSpace {
            used_sect: self.storage.used() >> 9,
            limit_sect: self.storage.limit() >> 9,
        };
        self.events.push(Event::new(
            &self.epoch,
            uapi::EVENT_CODE_NO_SPACE,
            data.as_bytes(),
        ));
    }

    /// Sets the event codes the client wants beyond `corrupted` (`IOCTL_BLKSNAP_SNAPSHOT_EVENTS`,
    /// one bit per code). Fails with `EINVAL` for a code this driver does not know. A `no_space`
    /// condition met before the call is reported then.
    pub(crate) fn want_events(&self, mask: u64) -> Result {
        if mask & !uapi::EVENT_MASK_KNOWN != 0 {
            return Err(EINVAL);
        }
        self.no_space_wanted
            .store(mask & (1 << uapi::EVENT_CODE_NO_SPACE) != 0, Release);
        self.send_no_space();
        Ok(())
    }
}

impl Shared {
    /// Makes what the areas of a new snapshot share, with the difference storage `storage`:
    /// `bio_set` for their I/O, chunks stored on `queue`, image bios served on `image_queue`,
    /// at most `chunk_limit` chunks of an area in memory, event times counted from `epoch`.
    pub(crate) fn new(
        storage: impl PinInit<DiffStorage, Error>,
        bio_set: Arc<BioSet>,
        queue: &'static OwnedQueue,
        image_queue: &'static OwnedQueue,
        chunk_limit: usize,
        epoch: Instant<Monotonic>,
    ) -> Result<Arc<Self>> {
        Arc::pin_init(
            try_pin_init!(Shared {
                id: random::uuid_v4(),
                storage <- storage,
                events <- EventQueue::new(),
                bio_set,
                queue,
                image_queue,
                chunk_limit,
                epoch,
                no_space_wanted: Atomic::new(false),
                no_space_sent: Atomic::new(false),
            }),
            GFP_KERNEL,
        )
    }
}

/// A snapshot id, printed as a UUID.
pub(crate) struct Id<'a>(pub(crate) &'a Uuid);

impl core::fmt::Debug for Id<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{:02x}", b)?;
        }
        Ok(())
    }
}

/// Collects an iterator of results into a vector, or the first error.
trait CollectResult<T> {
    fn collect_result(self) -> Result<KVec<T>>;
}

impl<T, I: Iterator<Item = Result<T>>> CollectResult<T> for I {
    fn collect_result(self) -> Result<KVec<T>> {
        let mut v = KVec::new();
        for item in self {
            v.push(item?, GFP_NOIO)?;
        }
        Ok(v)
    }
}

#[cfg(CONFIG_BLKSNAP_KUNIT_TEST)]
#[kunit_tests(blksnap_diff_storage)]
mod tests {
    use super::*;
    use kernel::fs::file::File;

    const MIB: u64 = 1 << 20;

    fn space(used: u64, capacity: u64, growable: bool) -> Space {
        Space {
            used,
            capacity,
            growable,
            reported: false,
        }
    }

    #[test]
    fn plenty_of_room_takes_without_growing() {
        let s = space(0, 8 * MIB, true);
        assert_eq!(
            s.plan(MIB, 64 * MIB, 4 * MIB),
            Plan::Take { offset: 0, grow: 0 }
        );
    }

    #[test]
    fn grows_by_a_step_when_under_half_a_step_is_left() {
        // 8 MiB ready, 6.5 MiB used: 1 MiB left after this piece, under 2 MiB.
        let s = space(6 * MIB + MIB / 2, 8 * MIB, true);
        assert_eq!(
            s.plan(MIB / 2, 64 * MIB, 4 * MIB),
            Plan::Take {
                offset: 6 * MIB + MIB / 2,
                grow: 4 * MIB
            }
        );
        // Exactly half a step left: no growth yet.
        let s = space(5 * MIB, 8 * MIB, true);
        assert_eq!(
            s.plan(MIB, 64 * MIB, 4 * MIB),
            Plan::Take {
                offset: 5 * MIB,
                grow: 0
            }
        );
    }

    #[test]
    fn growth_stops_at_the_limit() {
        let s = space(7 * MIB, 8 * MIB, true);
        assert_eq!(
            s.plan(MIB / 2, 10 * MIB, 4 * MIB),
            Plan::Take {
                offset: 7 * MIB,
                grow: 2 * MIB
            }
        );
        let s = space(9 * MIB, 10 * MIB, true);
        assert_eq!(
            s.plan(MIB / 2, 10 * MIB, 4 * MIB),
            Plan::Take {
                offset: 9 * MIB,
                grow: 0
            }
        );
        assert_eq!(s.plan(2 * MIB, 10 * MIB, 4 * MIB), Plan::Full);
    }

    #[test]
    fn an_empty_file_grows_before_the_first_piece() {
        let s = space(0, 0, true);
        assert_eq!(s.plan(MIB, 64 * MIB, 4 * MIB), Plan::GrowFirst(4 * MIB));
        // A piece larger than a step grows by what it needs.
        assert_eq!(s.plan(6 * MIB, 64 * MIB, 4 * MIB), Plan::GrowFirst(6 * MIB));
    }

    #[test]
    fn no_growth_without_fallocate() {
        let s = space(0, 2 * MIB, false);
        assert_eq!(
            s.plan(MIB, 64 * MIB, 4 * MIB),
            Plan::Take { offset: 0, grow: 0 }
        );
        let s = space(2 * MIB, 2 * MIB, false);
        assert_eq!(s.plan(MIB, 64 * MIB, 4 * MIB), Plan::Full);
        assert_eq!(s.plan(u64::MAX, u64::MAX, 4 * MIB), Plan::Full);
    }

    #[test]
    fn low_space_is_reported_once_when_growth_is_over() {
        let mut s = space(9 * MIB, 10 * MIB, true);
        // Still growable below the limit: nothing to report.
        s.capacity = 9 * MIB + MIB / 2;
        assert!(!s.report_low(10 * MIB, 4 * MIB));
        s.capacity = 10 * MIB;
        assert!(s.report_low(10 * MIB, 4 * MIB));
        assert!(!s.report_low(10 * MIB, 4 * MIB));
        // A storage that cannot grow, with plenty left: nothing to report.
        let mut s = space(0, 10 * MIB, false);
        assert!(!s.report_low(64 * MIB, 4 * MIB));
        // A limit under the step: reported once half the limit is used, not at once.
        let mut s = space(MIB, 4 * MIB, true);
        assert!(!s.report_low(4 * MIB, 8 * MIB));
        s.used = 2 * MIB + MIB / 4;
        assert!(s.report_low(4 * MIB, 8 * MIB));
    }

    #[test]
    fn a_shmem_file_grows_in_steps_up_to_the_limit() -> Result {
        let file = KernelFile::from_file(File::new_shmem(c"blksnap-kunit", 0)?);
        let storage = KBox::pin_init(DiffStorage::from_file(file, 3 * MIB, MIB), GFP_KERNEL)?;
        assert_eq!(storage.space().capacity, 0);
        let mut low = 0;
        let mut offsets = KVec::new();
        for _ in 0..12 {
            let piece = storage.alloc(MIB / 4)?;
            offsets.push(piece.offset, GFP_KERNEL)?;
            low += usize::from(piece.low);
            let space = storage.space();
            // Always more than half a step ahead until the limit.
            assert!(space.capacity - space.used >= MIB / 2 || space.capacity == 3 * MIB);
        }
        assert_eq!(storage.space().capacity, 3 * MIB);
        assert_eq!(offsets[11], 11 * MIB / 4);
        // Reported once, when the storage reached the limit with under half a step left.
        assert_eq!(low, 1);
        assert_eq!(storage.alloc(MIB / 4).map(|p| p.offset), Err(ENOSPC));
        Ok(())
    }
}
