// SPDX-License-Identifier: GPL-2.0

//! The "blksnap" block device filter: the change tracker of a device and its `BLKFILTER_CTL`
//! commands.

use crate::{
    cbt::{Cbt, Geometry},
    uapi::{self, ctl, Uuid},
};
use core::mem::size_of;
use kernel::{
    block::{
        bdev::{BlockDevice, DevT},
        bio::Operation,
        filter::{CtlBuffer, Filter, FilterBio},
    },
    new_mutex, new_spinlock,
    prelude::*,
    sync::{
        atomic::{Acquire, Atomic, Release},
        Arc, Mutex, SetOnce, SpinLock,
    },
    uaccess::UserSlice,
};

/// Copy-on-write of a device in a taken snapshot, as the filter sees it: handed to the device's
/// [`Link`] by the take, so that the filter knows nothing of snapshots.
pub(crate) trait CopyOnWrite: Send + Sync {
    /// Copy-on-write for a write-like `bio` that the change tracker counted after the take.
    fn cow(&self, bio: FilterBio<'_>);

    /// The filter of the device is going away: the snapshot of it cannot be kept.
    fn detached(&self);

    /// Returns the error that broke the snapshot of the device, if one did.
    fn error(&self) -> Option<Error>;
}

/// Adds the device of a link to snapshot `id` (`snapshotadd`).
pub(crate) type AddToSnapshot = fn(id: &Uuid, link: &Arc<Link>) -> Result;

/// What `snapshotadd` calls, set at initialization by the module ([`set_add_to_snapshot`]):
/// the filter does not call up into the registry of snapshots.
static ADD_TO_SNAPSHOT: SetOnce<AddToSnapshot> = SetOnce::new();

/// Sets what `snapshotadd` calls; once, at module initialization.
pub(crate) fn set_add_to_snapshot(add: AddToSnapshot) -> Result {
    if ADD_TO_SNAPSHOT.populate(add) {
        Ok(())
    } else {
        Err(EBUSY)
    }
}

/// The snapshot a device belongs to.
struct Membership {
    snapshot: Option<Uuid>,
    /// Set once the snapshot is taken and the image disk exists.
    image: bool,
}

/// What a tracked device shares with the snapshot it belongs to: its change tracker, and its
/// copy-on-write while a snapshot of it is taken.
#[pin_data]
pub(crate) struct Link {
    dev: DevT,
    /// The whole disk of the device.
    disk: DevT,
    /// The logical block size of the device when the filter was attached.
    block_size: u32,
    /// Why the device cannot be snapshotted, and the error `snapshotadd` fails with.
    refuse: Option<(Error, &'static str)>,
    /// Shared with the image disk of the device, whose writes it marks.
    cbt: Arc<Cbt>,
    /// The area that copy-on-write uses once the change tracker turns it on ([`Cbt::take`]); the
    /// I/O path looks at the lock only then.
    #[pin]
    cow: SpinLock<Option<Arc<dyn CopyOnWrite>>>,
    detached: Atomic<bool>,
    #[pin]
    member: Mutex<Membership>,
}

impl Link {
    /// Returns the device number.
    pub(crate) fn dev(&self) -> DevT {
        self.dev
    }

    /// Returns the logical block size of the device, in bytes.
    pub(crate) fn logical_block_size(&self) -> u32 {
        self.block_size
    }

    /// Returns the device number of the device's whole disk.
    pub(crate) fn disk(&self) -> DevT {
        self.disk
    }

    /// Returns why the device cannot be snapshotted, if it cannot, with the error to fail with.
    pub(crate) fn refusal(&self) -> Option<(Error, &'static str)> {
        self.refuse
    }

    /// Returns the change tracker.
    pub(crate) fn cbt(&self) -> &Cbt {
        &self.cbt
    }

    /// Returns the change tracker, for the image disk of the device to mark its writes.
    pub(crate) fn cbt_shared(&self) -> Arc<Cbt> {
        self.cbt.clone()
    }

    /// Returns whether the tracker was detached from the device.
    pub(crate) fn is_detached(&self) -> bool {
        self.detached.load(Acquire)
    }

    /// Sets the area that copy-on-write uses. Copy-on-write itself is turned on by the take of
    /// the change tracker ([`Cbt::take`]): set the area before.
    ///
    /// Fails with `ENODEV` once the filter is being detached ([`Link::stop`]): whichever comes
    /// first under the lock, a take of a device whose filter goes away gets an area that is
    /// marked corrupted, never one whose writes would bypass copy-on-write unnoticed.
    pub(crate) fn set_cow(&self, area: Arc<dyn CopyOnWrite>) -> Result {
        let mut cow = self.cow.lock();
        if self.detached.load(Acquire) {
            return Err(ENODEV);
        }
        *cow = Some(area);
        Ok(())
    }

    /// Clears the area that copy-on-write uses, once copy-on-write is turned off
    /// ([`Cbt::end_cow`]).
    pub(crate) fn clear_cow(&self) {
        let old = self.cow.lock().take();
        // Not the last reference: the snapshot holds the area too.
        drop(old);
    }

    /// The filter is going away: no area can be set from now on, and the one set is marked
    /// corrupted, before a write can pass the device without copy-on-write.
    fn stop(&self) {
        let area = {
            let mut cow = self.cow.lock();
            self.detached.store(true, Release);
            cow.take()
        };
        self.cbt.end_cow();
        if let Some(area) = area {
            // A snapshot that holds the device cannot be kept without its filter.
            area.detached();
        }
    }

    /// Makes the device a member of snapshot `id`; fails with `EBUSY` if it is one already.
    pub(crate) fn join(&self, id: Uuid) -> Result {
        let mut member = self.member.lock();
        if member.snapshot.is_some() {
            return Err(EBUSY);
        }
        member.snapshot = Some(id);
        member.image = false;
        Ok(())
    }

    /// The image disk of the device exists.
    pub(crate) fn set_image(&self) {
        self.member.lock().image = true;
    }

    /// The device leaves snapshot `id`.
    pub(crate) fn leave(&self, id: Uuid) {
        let mut member = self.member.lock();
        if member.snapshot == Some(id) {
            member.snapshot = None;
            member.image = false;
        }
    }

    /// Describes the snapshot of the device, for `snapshotinfo`.
    fn info(&self) -> Result<uapi::SnapshotInfo> {
        let member = self.member.lock();
        if member.snapshot.is_none() {
            return Err(ENOENT);
        }
        let mut info = uapi::SnapshotInfo {
            error_code: 0,
            image: [0; uapi::IMAGE_DISK_NAME_LEN],
        };
        if let Some(area) = self.cow.lock().as_ref() {
            if let Some(err) = area.error() {
                info.error_code = err.to_errno();
            }
        }
        if member.image {
            let name = kernel::str::CString::try_from_fmt(fmt!(
                "blksnap-image_{}:{}",
                self.dev.major(),
                self.dev.minor()
            ))?;
            let bytes = name.to_bytes();
            let n = bytes.len().min(uapi::IMAGE_DISK_NAME_LEN - 1);
            info.image[..n].copy_from_slice(&bytes[..n]);
        }
        Ok(info)
    }
}

/// The state of the filter on one block device.
#[pin_data(PinnedDrop)]
pub(crate) struct Tracker {
    link: Arc<Link>,
}

/// What [`changed_sectors`] needs to know of a device.
pub(crate) trait DeviceSize {
    /// Returns the current capacity in sectors.
    fn nr_sectors(&self) -> u64;

    /// Returns the size of a zone in sectors, 0 if the device is not zoned.
    fn zone_sectors(&self) -> u64;
}

impl DeviceSize for BlockDevice {
    fn nr_sectors(&self) -> u64 {
        BlockDevice::nr_sectors(self)
    }

    fn zone_sectors(&self) -> u64 {
        BlockDevice::zone_sectors(self)
    }
}

/// Returns the zone of `zone_sectors` sectors that holds `sector`, as a first sector and a count,
/// or `None` if the device has no zones (the block layer fails zone operations then).
fn zone_of(sector: u64, zone_sectors: u64) -> Option<(u64, u64)> {
    if zone_sectors == 0 {
        return None;
    }
    // The block layer only takes zones of a power-of-two size; for any other the safe answer is
    // the whole device.
    if !zone_sectors.is_power_of_two() {
        return Some((0, u64::MAX));
    }
    Some((sector & !(zone_sectors - 1), zone_sectors))
}

/// Returns the sectors of `dev` whose data a bio of `op` for the `sectors` sectors from `sector`
/// may change, as a first sector and a count, or `None` if it changes none.
///
/// Every operation that writes in the sense of the C `op_is_write()` changes data, except
/// opening and closing a zone, which change the state of the zone only. The range is cut at the
/// current end of the device: the block layer fails the part of a bio beyond it.
pub(crate) fn changed_sectors(
    op: Operation,
    sector: u64,
    sectors: u32,
    dev: &impl DeviceSize,
) -> Option<(u64, u64)> {
    let (start, count) = match op {
        Operation::Read | Operation::Flush => return None,
        // They change the state of a zone, not its data.
        Operation::ZoneOpen | Operation::ZoneClose => return None,
        Operation::Write | Operation::Discard | Operation::SecureErase | Operation::WriteZeroes => {
            (sector, u64::from(sectors))
        }
        // A zone append names the start of its zone: the device writes at the write pointer,
        // which is known only when the bio completes. The whole zone may change.
        Operation::ZoneAppend => zone_of(sector, dev.zone_sectors())?,
        // Resetting or finishing a zone changes what reads of it return; the bio has no size.
        Operation::ZoneReset | Operation::ZoneFinish => zone_of(sector, dev.zone_sectors())?,
        Operation::ZoneResetAll => {
            if dev.zone_sectors() == 0 {
                return None;
            }
            (0, u64::MAX)
        }
        // Driver-private operations that write: their own range.
        Operation::Other(_) if op.is_write() => (sector, u64::from(sectors)),
        Operation::Other(_) => return None,
    };
    let end = dev.nr_sectors();
    if count == 0 || sector >= end {
        return None;
    }
    Some((start, count.min(end - start)))
}

/// Converts a user-space address passed in a 64-bit field.
fn user_addr(addr: u64) -> Result<UserPtr> {
    Ok(UserPtr::from_addr(
        usize::try_from(addr).map_err(|_| EFAULT)?,
    ))
}

impl Tracker {
    /// Returns the change tracker.
    pub(crate) fn cbt(&self) -> &Cbt {
        &self.link.cbt
    }

    fn cbtinfo(&self, buf: &mut CtlBuffer<'_>) -> Result<u32> {
        let info = self.cbt().info();
        buf.write(&uapi::CbtInfo {
            device_capacity: info.geometry.capacity_bytes(),
            block_size: info.geometry.block_size(),
            block_count: info.geometry.block_count(),
            generation_id: info.generation,
            changes_number: info.changes_number,
            padding: [0; 7],
        })?;
        Ok(0)
    }

    /// Copies a part of the frozen map to user space; returns 0, as blksnap v6 does, whatever the
    /// number of bytes copied (the length is cut at the end of the map).
    fn cbtmap(&self, buf: &mut CtlBuffer<'_>) -> Result<u32> {
        let arg: uapi::CbtMap = buf.read()?;
        let out = UserSlice::new(user_addr(arg.buffer)?, arg.length as usize);
        let mut out = out.writer();
        self.cbt()
            .read_map(arg.offset, arg.length, &mut |piece| out.write_slice(piece))?;
        Ok(0)
    }

    /// Marks ranges of sectors as changed, in order. Fails with `EINVAL` at the first range that
    /// is empty or starts past the end of the device, as blksnap v6 does; the ranges before it
    /// are marked.
    fn cbtdirty(&self, buf: &mut CtlBuffer<'_>) -> Result<u32> {
        let arg: uapi::CbtDirty = buf.read()?;
        let len = (arg.count as usize)
            .checked_mul(size_of::<uapi::Sectors>())
            .ok_or(EINVAL)?;
        let mut ranges = UserSlice::new(user_addr(arg.dirty_sectors)?, len).reader();
        for _ in 0..arg.count {
            let range: uapi::Sectors = ranges.read()?;
            self.cbt().mark_dirty(range.offset, range.count)?;
        }
        Ok(0)
    }

    fn snapshotadd(&self, buf: &mut CtlBuffer<'_>) -> Result<u32> {
        let arg: uapi::SnapshotAdd = buf.read()?;
        let add = ADD_TO_SNAPSHOT.as_ref().ok_or(ENODEV)?;
        add(&arg.id, &self.link)?;
        Ok(0)
    }

    fn snapshotinfo(&self, buf: &mut CtlBuffer<'_>) -> Result<u32> {
        let info = self.link.info()?;
        buf.write(&info)?;
        Ok(0)
    }
}

#[vtable]
impl Filter for Tracker {
    const NAME: &'static CStr = uapi::FILTER_NAME;

    fn attach(bdev: &BlockDevice) -> impl PinInit<Self, Error> {
        let dev = bdev.dev();
        let params = crate::tracking_params();
        // A copy of the data of such a device would be wrong (v6 refuses them with `EPERM`).
        let refuse = if bdev.has_integrity() {
            Some((EPERM, "the device has an integrity profile"))
        } else if bdev.has_crypto_profile() {
            Some((EPERM, "the device has an inline encryption profile"))
        } else if bdev.zone_sectors() != 0 {
            // Resetting or finishing a zone destroys its data without a write that copy-on-write
            // could hold, and an append writes where only its completion tells: an image of a
            // zoned device could not be kept right. Change tracking works on it.
            Some((EOPNOTSUPP, "the device is zoned"))
        } else {
            None
        };
        let link = Geometry::new(bdev.nr_sectors(), &params).and_then(|geometry| {
            pr_info!(
                "{}: {} tracking blocks of {} bytes, change maps of {} bytes\n",
                dev,
                geometry.block_count(),
                geometry.block_size(),
                Cbt::start_memory(&geometry)
            );
            let cbt = Arc::pin_init(Cbt::new(dev, geometry, params)?, GFP_KERNEL)?;
            Arc::pin_init(
                try_pin_init!(Link {
                    dev,
                    disk: bdev.whole().dev(),
                    block_size: bdev.logical_block_size(),
                    refuse,
                    cbt,
                    cow <- new_spinlock!(None),
                    detached: Atomic::new(false),
                    member <- new_mutex!(Membership {
                        snapshot: None,
                        image: false,
                    }),
                }),
                GFP_KERNEL,
            )
        });
        try_pin_init!(Self { link: link? })
    }

    fn detaching(&self) {
        self.link.stop();
    }

    fn ctl(&self, cmd: u32, buf: &mut CtlBuffer<'_>) -> Result<u32> {
        match cmd {
            ctl::CBTINFO => self.cbtinfo(buf),
            ctl::CBTMAP => self.cbtmap(buf),
            ctl::CBTDIRTY => self.cbtdirty(buf),
            ctl::SNAPSHOTADD => self.snapshotadd(buf),
            ctl::SNAPSHOTINFO => self.snapshotinfo(buf),
            _ => Err(ENOTTY),
        }
    }

    fn submit_bio(&self, bio: FilterBio<'_>) {
        let link = &*self.link;
        // The filter of a whole disk also sees the bios of its partitions, remapped to sectors of
        // the disk.
        let changed = {
            let bdev = bio.bdev();
            let bdev = if bdev.dev() == link.dev {
                bdev
            } else {
                bdev.whole()
            };
            changed_sectors(bio.op(), bio.sector(), bio.sectors(), bdev)
        };
        let Some((sector, count)) = changed else {
            return;
        };
        if link.cbt.mark(sector, count) {
            let area = link.cow.lock().clone();
            if let Some(area) = area {
                area.cow(bio);
            }
        }
    }
}

#[pinned_drop]
impl PinnedDrop for Tracker {
    fn drop(self: Pin<&mut Self>) {
        let link = &self.link;
        // Done already by `detaching`, unless the filter was never published.
        link.stop();
        pr_info!("{}: tracking stopped\n", link.dev);
    }
}

#[cfg(CONFIG_BLKSNAP_KUNIT_TEST)]
#[kunit_tests(blksnap_tracker)]
mod tests {
    use super::*;
    use crate::cbt::Info;
    use kernel::{
        block::{
            bio::{BioSet, EndIo, NewBio, PendingBio, Status},
            bio_disk::{BioDisk, BioDiskBuilder, Operations},
            filter, SECTOR_SHIFT,
        },
        page::Page,
        sync::{
            atomic::{Atomic, Relaxed},
            Arc, ArcBorrow, Completion,
        },
    };

    /// The size of a device: `nr` sectors, in zones of `zone` sectors (0: not zoned).
    struct Size {
        nr: u64,
        zone: u64,
    }

    impl DeviceSize for Size {
        fn nr_sectors(&self) -> u64 {
            self.nr
        }

        fn zone_sectors(&self) -> u64 {
            self.zone
        }
    }

    const DISK: Size = Size { nr: 1000, zone: 0 };
    /// Zones of 256 sectors, the last one partial (232 sectors).
    const ZONED: Size = Size {
        nr: 1000,
        zone: 256,
    };

    /// `REQ_OP_DRV_IN`: a driver-private operation that reads.
    const DRV_IN: u32 = 34;
    /// `REQ_OP_DRV_OUT`: a driver-private operation that writes.
    const DRV_OUT: u32 = 35;

    #[test]
    fn data_operations_change_their_range() {
        for op in [
            Operation::Write,
            Operation::Discard,
            Operation::SecureErase,
            Operation::WriteZeroes,
            Operation::from_raw(DRV_OUT),
        ] {
            assert_eq!(changed_sectors(op, 8, 16, &DISK), Some((8, 16)));
            assert_eq!(changed_sectors(op, 300, 16, &ZONED), Some((300, 16)));
            // Cut at the end of the device, where the block layer fails the rest.
            assert_eq!(changed_sectors(op, 996, 8, &DISK), Some((996, 4)));
            assert_eq!(changed_sectors(op, 1000, 8, &DISK), None);
            assert_eq!(changed_sectors(op, u64::MAX, 8, &DISK), None);
            // A bio without data: an empty write with a flush, say.
            assert_eq!(changed_sectors(op, 8, 0, &DISK), None);
        }
    }

    #[test]
    fn zone_operations_change_their_zone() {
        // An append names the start of its zone, and lands anywhere in it.
        let op = Operation::ZoneAppend;
        assert_eq!(changed_sectors(op, 256, 8, &ZONED), Some((256, 256)));
        assert_eq!(changed_sectors(op, 768, 8, &ZONED), Some((768, 232)));
        // Reset and finish have no size: their zone is that of their sector.
        for op in [Operation::ZoneReset, Operation::ZoneFinish] {
            assert_eq!(changed_sectors(op, 0, 0, &ZONED), Some((0, 256)));
            assert_eq!(changed_sectors(op, 300, 0, &ZONED), Some((256, 256)));
            assert_eq!(changed_sectors(op, 999, 0, &ZONED), Some((768, 232)));
            assert_eq!(changed_sectors(op, 1000, 0, &ZONED), None);
        }
        // Resetting all zones changes the whole device.
        let op = Operation::ZoneResetAll;
        assert_eq!(changed_sectors(op, 0, 0, &ZONED), Some((0, 1000)));
        // Zone operations fail on a device without zones.
        for op in [
            Operation::ZoneAppend,
            Operation::ZoneReset,
            Operation::ZoneFinish,
            Operation::ZoneResetAll,
        ] {
            assert_eq!(changed_sectors(op, 0, 8, &DISK), None);
        }
        // A zone size that is not a power of two, which the block layer refuses: the whole
        // device.
        let odd = Size {
            nr: 1000,
            zone: 100,
        };
        assert_eq!(
            changed_sectors(Operation::ZoneReset, 150, 0, &odd),
            Some((0, 1000))
        );
    }

    #[test]
    fn operations_that_change_no_data_change_nothing() {
        for op in [
            Operation::Read,
            Operation::Flush,
            Operation::ZoneOpen,
            Operation::ZoneClose,
            Operation::from_raw(DRV_IN),
        ] {
            assert_eq!(changed_sectors(op, 256, 8, &ZONED), None);
            assert_eq!(changed_sectors(op, 8, 8, &DISK), None);
        }
    }

    /// A disk that ends every bio at once without keeping data, and counts the bios that write.
    struct NullDisk {
        writes: Atomic<u32>,
    }

    impl Operations for NullDisk {
        type QueueData = Arc<NullDisk>;

        fn submit_bio(disk: ArcBorrow<'_, NullDisk>, bio: PendingBio) {
            if bio.op().is_write() {
                disk.writes.add(1, Relaxed);
            }
            bio.end(Status::OK);
        }
    }

    /// Makes a null disk of `capacity` sectors, `/dev/blksnap_NAME`.
    fn null_disk(name: &str, capacity: u64) -> Result<(Arc<NullDisk>, Arc<BioDisk<NullDisk>>)> {
        let null = Arc::new(
            NullDisk {
                writes: Atomic::new(0),
            },
            GFP_KERNEL,
        )?;
        let disk = BioDiskBuilder::new()
            .capacity_sectors(capacity)
            .build::<NullDisk>(fmt!("blksnap_{name}"), null.clone())?;
        Ok((null, Arc::new(disk, GFP_KERNEL)?))
    }

    /// Where a test bio reports its end.
    #[pin_data]
    struct Done {
        #[pin]
        done: Completion,
        ok: Atomic<bool>,
    }

    /// The data of a test bio: the disk it goes to, kept alive, and its page.
    struct Io {
        disk: Arc<BioDisk<NullDisk>>,
        page: Page,
        done: Arc<Done>,
    }

    impl EndIo for Io {
        fn end_io(self, status: Status) {
            let Io { disk, page, done } = self;
            // The test holds its own reference to the disk: this is not the last one, so nothing
            // that sleeps is dropped here, where sleeping may not be allowed.
            drop(disk);
            drop(page);
            done.ok.store(status.is_ok(), Relaxed);
            done.done.complete_all();
        }
    }

    /// Submits a bio of `op` for `sectors` sectors (at most a page) from `sector` of `disk`, and
    /// waits for its end; returns whether it succeeded.
    fn io(
        set: &Arc<BioSet>,
        disk: &Arc<BioDisk<NullDisk>>,
        op: Operation,
        sector: u64,
        sectors: u32,
    ) -> Result<bool> {
        let done = Arc::pin_init(
            pin_init!(Done {
                done <- Completion::new(),
                ok: Atomic::new(false),
            }),
            GFP_KERNEL,
        )?;
        let data = Io {
            disk: disk.clone(),
            page: Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?,
            done: done.clone(),
        };
        let mut bio = NewBio::new(set, data, |io| io.disk.bdev(), op, 1, GFP_KERNEL)?;
        bio.set_sector(sector);
        bio.add_page(|io| &io.page, sectors << SECTOR_SHIFT, 0)?;
        bio.submit();
        done.done.wait_for_completion();
        Ok(done.ok.load(Relaxed))
    }

    /// The tracker under a name of its own, registered by the tests, so that they can reach the
    /// state of the filter attached to their disk. Its callbacks are those of the tracker.
    #[pin_data]
    struct TestTracker {
        #[pin]
        inner: Tracker,
    }

    #[vtable]
    impl Filter for TestTracker {
        const NAME: &'static CStr = c"blksnap-kunit";

        fn attach(bdev: &BlockDevice) -> impl PinInit<Self, Error> {
            try_pin_init!(Self {
                inner <- <Tracker as Filter>::attach(bdev),
            })
        }

        fn detaching(&self) {
            self.inner.detaching()
        }

        fn submit_bio(&self, bio: FilterBio<'_>) {
            self.inner.submit_bio(bio)
        }
    }

    type Reg = Pin<KBox<filter::Registration<TestTracker>>>;

    fn register() -> Result<Reg> {
        KBox::pin_init(
            filter::Registration::register(
                &<crate::Blksnap as kernel::ModuleMetadata>::THIS_MODULE,
            ),
            GFP_KERNEL,
        )
    }

    /// Takes a snapshot of the map of the tracker attached to `bdev`, as the snapshot code does;
    /// returns what user space then reads.
    fn take(reg: &Reg, bdev: &BlockDevice) -> Result<(Info, KVec<u8>)> {
        let tracker = reg.lock(bdev).ok_or(ENOENT)?;
        let cbt = tracker.inner.cbt();
        let prepared = cbt.prepare_take(bdev.nr_sectors())?;
        cbt.take(prepared, false);
        let info = cbt.info();
        let mut map = KVec::new();
        cbt.read_map(0, u32::MAX, &mut |piece| {
            map.extend_from_slice(piece, GFP_KERNEL)?;
            Ok(())
        })?;
        Ok((info, map))
    }

    /// Returns the number of sectors in a block of `info`.
    fn block_sectors(info: &Info) -> u64 {
        u64::from(info.geometry.block_size()) >> SECTOR_SHIFT
    }

    /// Returns the map of `info` in which the blocks that the `(sector, count)` ranges touch hold
    /// `number`, and the others 0.
    fn expected(info: &Info, ranges: &[(u64, u32)], number: u8) -> Result<KVec<u8>> {
        let count = info.geometry.block_count() as usize;
        let shift = block_sectors(info).trailing_zeros();
        let mut map = KVec::from_elem(0u8, count, GFP_KERNEL)?;
        for &(sector, sectors) in ranges {
            let last = sector + u64::from(sectors) - 1;
            for block in (sector >> shift)..=(last >> shift) {
                if let Some(byte) = map.get_mut(block as usize) {
                    *byte = number;
                }
            }
        }
        Ok(map)
    }

    /// Returns the number of sectors of the smallest tracking block.
    fn smallest_block() -> Result<u64> {
        let geometry = Geometry::new(1, &crate::tracking_params())?;
        Ok(u64::from(geometry.block_size()) >> SECTOR_SHIFT)
    }

    /// A write that the hook marks before a take is counted in the take's map and not copied on
    /// write; one marked after it is copied. The take as `snapshot.rs` does it: the area set,
    /// then the map switched with copy-on-write turned on. (Before, the hook marked the write,
    /// then looked at a flag that the take set after the switch: a take between the two copied a
    /// write counted in its own map, whose image then kept the old data while the map said that
    /// the take had the new.)
    #[test]
    fn a_write_counted_in_the_take_is_not_copied_on_write() -> Result {
        let block = smallest_block()?;
        let (_null, disk) = null_disk("kunit_cbt_race", 16 * block)?;
        let reg = register()?;
        filter::attach(disk.bdev(), TestTracker::NAME)?;
        let result = (|| -> Result<(bool, bool, u8, u8)> {
            let tracker = reg.lock(disk.bdev()).ok_or(ENOENT)?;
            let link = &tracker.inner.link;
            let before = link.cbt.mark(0, 1);
            let prepared = link.cbt.prepare_take(disk.bdev().nr_sectors())?;
            link.cbt.take(prepared, true);
            let after = link.cbt.mark(block, 1);
            link.cbt.end_cow();
            let number = link.cbt.info().changes_number;
            let mut byte = None;
            link.cbt.read_map(0, 1, &mut |piece| {
                byte = piece.first().copied();
                Ok(())
            })?;
            Ok((before, after, byte.ok_or(EIO)?, number))
        })();
        filter::detach(disk.bdev(), TestTracker::NAME)?;
        let (before, after, byte, number) = result?;
        assert_eq!(byte, number);
        assert!(!before);
        assert!(after);
        Ok(())
    }

    /// Makes a difference area of `disk`, as a take does, with a storage in memory.
    fn area_of(disk: &BioDisk<NullDisk>) -> Result<Arc<crate::diff_area::DiffArea>> {
        use crate::{chunk, diff_area::DiffArea, diff_storage::DiffStorage, snapshot::new_shared};
        use kernel::{
            block::bdev::{BlockDeviceFile, OpenMode},
            fs::{file_io::KernelFile, File},
        };
        let file = KernelFile::from_file(File::new_shmem(c"blksnap-kunit", 0)?);
        let shared = new_shared(DiffStorage::from_file(file, 1 << 20, 1 << 20))?;
        let origin = BlockDeviceFile::open(disk.dev(), OpenMode::Read)?;
        let params = chunk::Params::new(12, 1 << 20, 12);
        let geometry = chunk::Geometry::new(origin.bdev().nr_sectors(), 512, &params)?;
        DiffArea::new(origin, geometry, shared)
    }

    /// A take sets the area of copy-on-write under the lock that the detach of the filter takes
    /// too, before the filter is unpublished: an area set before the detach is marked corrupted
    /// by it, and one set after is refused. (Before, the take checked for a detach long before it
    /// set the area, and a detach in between left a snapshot whose writes bypassed copy-on-write
    /// with no error reported.)
    #[test]
    fn a_detach_and_a_take_are_ordered() -> Result {
        let block = smallest_block()?;
        let (_null, disk) = null_disk("kunit_cbt_detach", 16 * block)?;
        let reg = register()?;
        filter::attach(disk.bdev(), TestTracker::NAME)?;
        let link = reg
            .lock(disk.bdev())
            .map(|tracker| tracker.inner.link.clone());
        let before = link.as_ref().map(|_| area_of(&disk));
        let set = match (&link, &before) {
            (Some(link), Some(Ok(area))) => link.set_cow(area.copy_on_write()?),
            _ => Err(ENOENT),
        };
        filter::detach(disk.bdev(), TestTracker::NAME)?;
        let link = link.ok_or(ENOENT)?;
        let before = before.ok_or(ENOENT)??;
        assert_eq!(set, Ok(()));
        // The detach found the area set: the snapshot of the device reports it.
        assert_eq!(before.error(), Some(ENODEV));
        assert!(link.is_detached());
        // A take after the detach cannot set an area that no filter would see writes for.
        let after = area_of(&disk)?;
        assert_eq!(link.set_cow(after.copy_on_write()?), Err(ENODEV));
        assert!(link.cow.lock().is_none());
        Ok(())
    }

    #[test]
    fn writes_through_the_block_layer_are_marked() -> Result {
        // Sixteen blocks of the size the tracker chooses for a small device.
        let block = smallest_block()?;
        let capacity = 16 * block;
        let (null, disk) = null_disk("kunit_cbt", capacity)?;
        let set = Arc::pin_init(BioSet::new(2, false), GFP_KERNEL)?;
        let reg = register()?;
        filter::attach(disk.bdev(), TestTracker::NAME)?;
        // Blocks 0 and 1, block 5, the last block.
        let writes = [(block - 1, 2), (5 * block + 3, 1), (capacity - 1, 1)];
        let mut ok = true;
        for &(sector, sectors) in &writes {
            ok &= io(&set, &disk, Operation::Write, sector, sectors)?;
        }
        // Reads change nothing.
        ok &= io(&set, &disk, Operation::Read, 9 * block, 1)?;
        let taken = take(&reg, disk.bdev());
        filter::detach(disk.bdev(), TestTracker::NAME)?;
        let detached = reg.lock(disk.bdev()).is_none();
        // Checked once the disk is back to its state: a failed check ends the test at once.
        let (info, map) = taken?;
        assert!(ok);
        assert!(detached);
        assert_eq!(null.writes.load(Relaxed), 3);
        assert_eq!(info.geometry.capacity_sectors(), capacity);
        assert_eq!(info.changes_number, 1);
        assert_eq!(map.as_slice(), expected(&info, &writes, 1)?.as_slice());
        Ok(())
    }

    #[test]
    fn a_grown_disk_gets_a_new_generation() -> Result {
        let block = smallest_block()?;
        let (_null, disk) = null_disk("kunit_cbt_grow", 16 * block)?;
        let set = Arc::pin_init(BioSet::new(2, false), GFP_KERNEL)?;
        let reg = register()?;
        filter::attach(disk.bdev(), TestTracker::NAME)?;
        let mut ok = io(&set, &disk, Operation::Write, 0, 1)?;
        let first = take(&reg, disk.bdev());
        // The disk grows by half, and a write lands in the new part.
        disk.set_capacity(24 * block);
        ok &= io(&set, &disk, Operation::Write, 20 * block, 1)?;
        let grown = take(&reg, disk.bdev());
        // Tracking goes on over the whole disk.
        let writes = [(3 * block, 1), (23 * block, 1)];
        for &(sector, sectors) in &writes {
            ok &= io(&set, &disk, Operation::Write, sector, sectors)?;
        }
        let next = take(&reg, disk.bdev());
        filter::detach(disk.bdev(), TestTracker::NAME)?;
        let (first, _) = first?;
        let (grown, grown_map) = grown?;
        let (next, next_map) = next?;
        assert!(ok);
        assert_eq!(first.geometry.capacity_sectors(), 16 * block);
        assert_eq!(first.changes_number, 1);
        // A new generation at the new capacity, with every block changed: a full backup.
        assert!(grown.generation != first.generation);
        assert_eq!(grown.geometry.capacity_sectors(), 24 * block);
        assert_eq!(grown.changes_number, 1);
        assert_eq!(grown_map.len(), grown.geometry.block_count() as usize);
        assert!(grown_map.iter().all(|&b| b == 1));
        assert_eq!(next.generation, grown.generation);
        assert_eq!(next.changes_number, 2);
        assert_eq!(next_map.as_slice(), expected(&next, &writes, 2)?.as_slice());
        Ok(())
    }
}
