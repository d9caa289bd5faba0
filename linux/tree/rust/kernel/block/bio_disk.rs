// SPDX-License-Identifier: GPL-2.0

//! Bio-based disks.
//!
//! C header: [`include/linux/blkdev.h`](srctree/include/linux/blkdev.h)
//!
//! A bio-based disk receives the bios submitted to it in the `submit_bio` operation of its
//! `struct block_device_operations`, instead of requests through blk-mq (for those, see
//! [`kernel::block::mq`]). Stacking drivers that remap, split or serve bios themselves are
//! bio-based: device mapper targets, snapshot images.
//!
//! A driver implements [`Operations`] and makes a [`BioDisk`] with a [`BioDiskBuilder`]. Each bio
//! arrives as a [`PendingBio`] that the driver must end, at once or later.
//!
//! # Examples
//!
//! A disk that reads zeroes and ignores writes:
//!
//! ```
//! use kernel::block::bio::{PendingBio, Status};
//! use kernel::block::bio_disk::{BioDisk, BioDiskBuilder, Operations};
//! use kernel::prelude::*;
//!
//! struct Zero;
//!
//! impl Operations for Zero {
//!     type QueueData = ();
//!
//!     fn submit_bio((): (), mut bio: PendingBio) {
//!         if !bio.op().is_write() {
//!             for mut segment in bio.segments() {
//!                 if segment.zero().is_err() {
//!                     break;
//!                 }
//!             }
//!         }
//!         bio.end(Status::OK);
//!     }
//! }
//!
//! let disk: BioDisk<Zero> = BioDiskBuilder::new()
//!     .capacity_sectors(2048)
//!     .build(fmt!("rust_zero_doc"), ())?;
//! assert_eq!(disk.bdev().nr_sectors(), 2048);
//! assert_ne!(disk.dev().major(), 0);
//! # Ok::<(), Error>(())
//! ```

use crate::{
    bindings,
    block::{
        bdev::{BlockDevice, DevT},
        bio::PendingBio,
    },
    error::{from_err_ptr, to_result},
    fmt::{self, Write},
    prelude::*,
    str::NullTerminatedFormatter,
    types::{ForeignOwnable, ScopeGuard},
};
use core::{marker::PhantomData, ptr::NonNull};

type ForeignBorrowed<'a, T> = <T as ForeignOwnable>::Borrowed<'a>;

/// The operations of a bio-based disk.
pub trait Operations: Sized {
    /// Data of the disk, handed to every operation (`queuedata` of its request queue).
    type QueueData: ForeignOwnable + Sync;

    /// Serves `bio`, submitted to the disk.
    ///
    /// Called in the context of the submitter (process context, may sleep unless the bio has the
    /// `REQ_NOWAIT` flag), possibly on several CPUs at once. The bio must be ended, now or later,
    /// from any context: [`PendingBio`] ends it with an I/O error if it is dropped.
    fn submit_bio(queue_data: ForeignBorrowed<'_, Self::QueueData>, bio: PendingBio);
}

/// The C operations of a [`BioDisk`] whose driver is `T`.
struct OperationsVTable<T: Operations>(PhantomData<T>);

impl<T: Operations> OperationsVTable<T> {
    /// # Safety
    ///
    /// Called by the block layer with a valid bio submitted to a disk made by
    /// [`BioDiskBuilder::build`] for `T`, which is alive during the call; the callee owes the bio
    /// an end.
    unsafe extern "C" fn submit_bio_callback(bio: *mut bindings::bio) {
        // SAFETY: The bio is valid and submitted to a live disk of `T`, whose queue data was set
        // by `BioDiskBuilder::build` with `into_foreign`, and is only taken back after the disk
        // was deleted, so after every call of this callback.
        let queue_data = unsafe { (*(*(*(*bio).bi_bdev).bd_disk).queue).queuedata };
        // SAFETY: See above: the queue data is alive for the call.
        let queue_data = unsafe { T::QueueData::borrow(queue_data) };
        // SAFETY: The block layer hands the bio over to the driver, which owes it an end.
        let bio = unsafe { PendingBio::from_raw(NonNull::new_unchecked(bio)) };
        T::submit_bio(queue_data, bio);
    }

    const VTABLE: bindings::block_device_operations = bindings::block_device_operations {
        submit_bio: Some(Self::submit_bio_callback),
        open: None,
        release: None,
        ioctl: None,
        compat_ioctl: None,
        check_events: None,
        unlock_native_capacity: None,
        getgeo: None,
        set_read_only: None,
        swap_slot_free_notify: None,
        report_zones: None,
        devnode: None,
        alternative_gpt_sector: None,
        get_unique_id: None,
        // The disk does not pin the module: drivers that can be unloaded delete their disks
        // first, which waits for the callbacks that are running.
        owner: core::ptr::null_mut(),
        pr_ops: core::ptr::null_mut(),
        free_disk: None,
        poll_bio: None,
    };

    const fn build() -> &'static bindings::block_device_operations {
        &Self::VTABLE
    }
}

/// Builds a [`BioDisk`].
pub struct BioDiskBuilder {
    capacity_sectors: u64,
    logical_block_size: u32,
    physical_block_size: u32,
    read_only: bool,
}

impl Default for BioDiskBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BioDiskBuilder {
    /// Starts a disk of no capacity with 512-byte blocks, writable.
    pub fn new() -> Self {
        Self {
            capacity_sectors: 0,
            logical_block_size: bindings::SECTOR_SIZE,
            physical_block_size: bindings::SECTOR_SIZE,
            read_only: false,
        }
    }

    /// Sets the capacity in 512-byte sectors.
    pub fn capacity_sectors(mut self, capacity: u64) -> Self {
        self.capacity_sectors = capacity;
        self
    }

    /// Sets the logical block size: a power of two from 512 bytes to the page size.
    pub fn logical_block_size(mut self, size: u32) -> Result<Self> {
        crate::block::mq::gen_disk::GenDiskBuilder::validate_block_size(size)?;
        self.logical_block_size = size;
        if self.physical_block_size < size {
            self.physical_block_size = size;
        }
        Ok(self)
    }

    /// Sets the physical block size: a power of two from the logical block size to the page size.
    pub fn physical_block_size(mut self, size: u32) -> Result<Self> {
        crate::block::mq::gen_disk::GenDiskBuilder::validate_block_size(size)?;
        if size < self.logical_block_size {
            return Err(EINVAL);
        }
        self.physical_block_size = size;
        Ok(self)
    }

    /// Makes the disk read-only (or not) from the start.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Makes the disk, named `name`, with `queue_data` for its operations, and adds it to the
    /// system: it shows up as `/dev/NAME`, without partitions, with a device number from the
    /// extended range.
    ///
    /// May sleep. On failure `queue_data` is dropped.
    pub fn build<T: Operations>(
        self,
        name: fmt::Arguments<'_>,
        queue_data: T::QueueData,
    ) -> Result<BioDisk<T>> {
        let mut lim: bindings::queue_limits = pin_init::zeroed();
        lim.logical_block_size = self.logical_block_size;
        lim.physical_block_size = self.physical_block_size;

        // SAFETY: `lim` is valid for the call; the lock class is static.
        let gendisk = from_err_ptr(unsafe {
            bindings::__blk_alloc_disk(
                &mut lim,
                bindings::NUMA_NO_NODE,
                crate::static_lock_class!().as_ptr(),
            )
        })?;
        let put_disk = ScopeGuard::new(move || {
            // SAFETY: `gendisk` came from `__blk_alloc_disk` and was not added.
            unsafe { bindings::put_disk(gendisk) };
        });

        let mut writer = NullTerminatedFormatter::new(
            // SAFETY: The disk is valid and not added yet, so nobody else accesses it.
            unsafe { &mut (*gendisk).disk_name },
        )
        .ok_or(EINVAL)?;
        writer.write_fmt(name)?;

        let data = queue_data.into_foreign();
        let drop_data = ScopeGuard::new(move || {
            // SAFETY: `data` came from `into_foreign` above and was not taken back.
            drop(unsafe { T::QueueData::from_foreign(data) });
        });

        // SAFETY: The disk is valid and not added yet, so nobody else accesses it; the operations
        // are a static table.
        unsafe {
            (*gendisk).fops = OperationsVTable::<T>::build();
            (*(*gendisk).queue).queuedata = data;
            (*gendisk).flags |= bindings::GENHD_FL_NO_PART as crate::ffi::c_int;
            bindings::set_capacity(gendisk, self.capacity_sectors);
            if self.read_only {
                bindings::set_disk_ro(gendisk, true);
            }
        }

        // SAFETY: The disk is valid and fully set up.
        to_result(unsafe {
            bindings::device_add_disk(core::ptr::null_mut(), gendisk, core::ptr::null_mut())
        })?;
        drop_data.dismiss();
        put_disk.dismiss();

        // INVARIANT: The disk was allocated and added above, with `data` as its queue data.
        Ok(BioDisk {
            gendisk,
            _t: PhantomData,
        })
    }
}

/// A bio-based disk, added to the system; dropping it deletes the disk.
///
/// # Invariants
///
/// - `gendisk` points to a disk made by `__blk_alloc_disk` with the operations of `T`, added
///   with `device_add_disk`, and owned by this value (one reference).
/// - Its `queue->queuedata` came from `T::QueueData::into_foreign`.
pub struct BioDisk<T: Operations> {
    gendisk: *mut bindings::gendisk,
    _t: PhantomData<T>,
}

// SAFETY: The disk may be used and deleted from any thread; the queue data is `Sync` and is
// dropped in `drop`, on whatever thread that runs.
unsafe impl<T: Operations> Send for BioDisk<T> where T::QueueData: Send {}

// SAFETY: The methods taking `&self` only read fields that do not change after the disk was added
// or go through C functions that do their own locking.
unsafe impl<T: Operations> Sync for BioDisk<T> {}

impl<T: Operations> BioDisk<T> {
    /// Returns the whole-disk block device.
    ///
    /// Bios may be submitted to it while the disk exists, without opening it.
    pub fn bdev(&self) -> &BlockDevice {
        // SAFETY: By the type invariant the disk is alive, and so is its `part0`, for the
        // lifetime of `&self`.
        unsafe { BlockDevice::from_raw((*self.gendisk).part0) }
    }

    /// Returns the device number of the disk.
    pub fn dev(&self) -> DevT {
        self.bdev().dev()
    }

    /// Changes the capacity, in 512-byte sectors, and tells user space.
    pub fn set_capacity(&self, sectors: u64) {
        // SAFETY: The disk is alive; `set_capacity_and_notify` takes the locks it needs.
        unsafe { bindings::set_capacity_and_notify(self.gendisk, sectors) };
    }

    /// Makes the disk read-only or writable.
    pub fn set_read_only(&self, read_only: bool) {
        // SAFETY: The disk is alive; `set_disk_ro` does its own synchronization.
        unsafe { bindings::set_disk_ro(self.gendisk, read_only) };
    }
}

impl<T: Operations> Drop for BioDisk<T> {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the disk is alive and its queue data came from
        // `into_foreign`.
        let data = unsafe { (*(*self.gendisk).queue).queuedata };
        // SAFETY: The disk was added; deleting it waits for the `submit_bio` calls in progress and
        // lets no new one start. The driver ends the bios it still holds on its own.
        unsafe { bindings::del_gendisk(self.gendisk) };
        // SAFETY: This drops the reference owned by `self`.
        unsafe { bindings::put_disk(self.gendisk) };
        // SAFETY: No callback can run any more, so nothing borrows the queue data.
        drop(unsafe { T::QueueData::from_foreign(data) });
    }
}

#[cfg(CONFIG_RUST_BLOCK_KUNIT_TEST)]
#[macros::kunit_tests(rust_block_bio)]
mod tests {
    use super::*;
    use crate::{
        alloc::{KVVec, KVec},
        block::bio::{BioSet, EndIo, NewBio, Operation, Status},
        page::{Page, PAGE_SIZE},
        sync::{
            atomic::{Atomic, Relaxed},
            Arc, ArcBorrow, Completion, Mutex, SpinLock,
        },
    };

    const PAGE_SECTORS: u64 = (PAGE_SIZE >> 9) as u64;
    /// Sixteen pages: 64 KiB with 4 KiB pages, 1 MiB with 64 KiB pages.
    const RAM_SECTORS: u64 = 16 * PAGE_SECTORS;

    /// A disk in memory that serves bios at once, failing those beyond its end.
    #[pin_data]
    struct Ram {
        #[pin]
        data: Mutex<KVVec<u8>>,
        bios: Atomic<u32>,
    }

    impl Operations for Ram {
        type QueueData = Arc<Ram>;

        fn submit_bio(ram: ArcBorrow<'_, Ram>, mut bio: PendingBio) {
            ram.bios.add(1, Relaxed);
            let write = bio.op().is_write();
            let mut data = ram.data.lock();
            let mut status = Status::OK;
            for mut seg in bio.segments() {
                let start = (seg.sector() << 9) as usize;
                let Some(range) = data.get_mut(start..start + seg.len()) else {
                    status = Status::from_error(EIO);
                    break;
                };
                let res = if write {
                    seg.copy_to_slice(range)
                } else {
                    seg.copy_from_slice(range)
                };
                if let Err(e) = res {
                    status = Status::from_error(e);
                    break;
                }
            }
            drop(data);
            bio.end(status);
        }
    }

    fn ram_disk(name: &str) -> Result<(Arc<Ram>, Arc<BioDisk<Ram>>)> {
        let mut data = KVVec::new();
        data.resize((RAM_SECTORS << 9) as usize, 0, GFP_KERNEL)?;
        let ram = Arc::pin_init(
            try_pin_init!(Ram {
                data <- crate::new_mutex!(data),
                bios: Atomic::new(0),
            }),
            GFP_KERNEL,
        )?;
        let disk = BioDiskBuilder::new()
            .capacity_sectors(RAM_SECTORS)
            .build::<Ram>(fmt!("rust_bio_{name}"), ram.clone())?;
        Ok((ram, Arc::new(disk, GFP_KERNEL)?))
    }

    /// Where the completion of a test I/O is reported: how often it ran, and its status and
    /// pages.
    #[pin_data]
    struct Shared {
        ends: Atomic<u32>,
        #[pin]
        result: SpinLock<Option<(Status, KVec<Page>)>>,
        #[pin]
        done: Completion,
    }

    /// The data of a test I/O: the disk it goes to (kept alive) and its pages.
    struct Io<D: Operations + 'static> {
        disk: Arc<BioDisk<D>>,
        pages: KVec<Page>,
        shared: Arc<Shared>,
    }

    impl<D: Operations + 'static> EndIo for Io<D>
    where
        D::QueueData: Send,
    {
        fn end_io(self, status: Status) {
            let Io {
                disk,
                pages,
                shared,
            } = self;
            shared.ends.add(1, Relaxed);
            *shared.result.lock() = Some((status, pages));
            shared.done.complete_all();
            // The test holds its own reference to the disk: this is never the last one.
            drop(disk);
        }
    }

    /// Makes the data of an I/O with `nr` pages filled with `fill`, `fill + 1`, ...
    fn io<D: Operations + 'static>(
        disk: &Arc<BioDisk<D>>,
        nr: usize,
        fill: u8,
    ) -> Result<(Io<D>, Arc<Shared>)> {
        let mut pages = KVec::new();
        for i in 0..nr {
            let page = Page::alloc_page(GFP_KERNEL)?;
            let pattern = [fill.wrapping_add(i as u8); PAGE_SIZE];
            // SAFETY: The page was just allocated; nothing else accesses it.
            unsafe { page.write_raw(pattern.as_ptr(), 0, PAGE_SIZE)? };
            pages.push(page, GFP_KERNEL)?;
        }
        let shared = Arc::pin_init(
            pin_init!(Shared {
                ends: Atomic::new(0),
                result <- crate::new_spinlock!(None),
                done <- Completion::new(),
            }),
            GFP_KERNEL,
        )?;
        let io = Io {
            disk: disk.clone(),
            pages,
            shared: shared.clone(),
        };
        Ok((io, shared))
    }

    /// Makes a bio for `op` on `disk` with room for `nr` pages, carrying the data of [`io`].
    fn new_bio<D>(
        set: &Arc<BioSet>,
        disk: &Arc<BioDisk<D>>,
        op: Operation,
        nr: usize,
        fill: u8,
    ) -> Result<(NewBio<Io<D>>, Arc<Shared>)>
    where
        D: Operations + 'static,
        D::QueueData: Send,
    {
        let (data, shared) = io(disk, nr, fill)?;
        let bio = NewBio::new(set, data, |d| d.disk.bdev(), op, nr as u16, GFP_KERNEL)?;
        Ok((bio, shared))
    }

    /// Waits for the completion of an I/O, checks that it ran once, and returns its status and
    /// pages.
    fn wait(shared: &Shared) -> Result<(Status, KVec<Page>)> {
        shared.done.wait_for_completion();
        assert_eq!(shared.ends.load(Relaxed), 1);
        shared.result.lock().take().ok_or(EINVAL)
    }

    fn page_bytes(page: &Page) -> Result<KVec<u8>> {
        let mut buf = KVec::new();
        buf.resize(PAGE_SIZE, 0, GFP_KERNEL)?;
        // SAFETY: `buf` has room for a page; the I/O on the page is complete.
        unsafe { page.read_raw(buf.as_mut_ptr(), 0, PAGE_SIZE)? };
        Ok(buf)
    }

    /// Writes `nr` pages filled with `fill`, `fill + 1`, ... at `sector`: one bio per page,
    /// chained to the first.
    fn write_chained<D>(
        set: &Arc<BioSet>,
        disk: &Arc<BioDisk<D>>,
        sector: u64,
        nr: usize,
        fill: u8,
    ) -> Result<Status>
    where
        D: Operations + 'static,
        D::QueueData: Send,
    {
        let (mut bio, shared) = new_bio(set, disk, Operation::Write, nr, fill)?;
        bio.set_sector(sector);
        bio.add_page(|d| &d.pages[0], PAGE_SIZE as u32, 0)?;
        for i in 1..nr {
            let mut chained =
                bio.new_chained(|d| d.disk.bdev(), Operation::Write, 1, GFP_KERNEL)?;
            chained.set_sector(sector + i as u64 * PAGE_SECTORS);
            chained.add_page(|d| &d.pages[i], PAGE_SIZE as u32, 0)?;
            chained.submit();
        }
        bio.submit();
        Ok(wait(&shared)?.0)
    }

    /// Does `op` on `nr` pages at `sector` with one bio; returns the status and the pages.
    fn one_bio<D>(
        set: &Arc<BioSet>,
        disk: &Arc<BioDisk<D>>,
        op: Operation,
        sector: u64,
        nr: usize,
        fill: u8,
    ) -> Result<(Status, KVec<Page>)>
    where
        D: Operations + 'static,
        D::QueueData: Send,
    {
        let (mut bio, shared) = new_bio(set, disk, op, nr, fill)?;
        bio.set_sector(sector);
        for i in 0..nr {
            bio.add_page(|d| &d.pages[i], PAGE_SIZE as u32, 0)?;
        }
        bio.submit();
        wait(&shared)
    }

    fn bio_set(rescuer: bool) -> Result<Arc<BioSet>> {
        Arc::pin_init(BioSet::new(4, rescuer), GFP_KERNEL)
    }

    #[test]
    fn status_round_trip() {
        assert!(Status::OK.is_ok());
        assert_eq!(Status::OK.to_result(), Ok(()));
        assert_eq!(Status::from_error(EIO).to_result(), Err(EIO));
        assert_eq!(Status::from_error(ENOSPC).to_result(), Err(ENOSPC));
        assert_eq!(Status::from_error(EOPNOTSUPP).to_result(), Err(EOPNOTSUPP));
    }

    #[test]
    fn disk_geometry() -> Result {
        let (_ram, disk) = ram_disk("geometry")?;
        assert_eq!(disk.bdev().nr_sectors(), RAM_SECTORS);
        assert_eq!(disk.dev(), disk.bdev().dev());
        assert_ne!(disk.dev().major(), 0);
        disk.set_capacity(RAM_SECTORS / 2);
        assert_eq!(disk.bdev().nr_sectors(), RAM_SECTORS / 2);
        Ok(())
    }

    #[test]
    fn write_then_read_back() -> Result {
        let (ram, disk) = ram_disk("rw")?;
        let set = bio_set(false)?;
        // Three pages at sector 8, one chained bio each.
        assert_eq!(write_chained(&set, &disk, 8, 3, 0x40)?, Status::OK);
        assert_eq!(ram.bios.load(Relaxed), 3);
        {
            let data = ram.data.lock();
            assert!(data[..8 * 512].iter().all(|&b| b == 0));
            assert!(data[8 * 512..8 * 512 + PAGE_SIZE]
                .iter()
                .all(|&b| b == 0x40));
            let third = 8 * 512 + 2 * PAGE_SIZE;
            assert!(data[third..third + PAGE_SIZE].iter().all(|&b| b == 0x42));
            assert!(data[third + PAGE_SIZE..].iter().all(|&b| b == 0));
        }
        // Read them back in one bio of three pages, into pages filled with something else.
        let (status, pages) = one_bio(&set, &disk, Operation::Read, 8, 3, 0xee)?;
        assert_eq!(status, Status::OK);
        for (i, page) in pages.iter().enumerate() {
            assert!(page_bytes(page)?.iter().all(|&b| b == 0x40 + i as u8));
        }
        Ok(())
    }

    #[test]
    fn chained_error_is_reported_once() -> Result {
        let (ram, disk) = ram_disk("chain_err")?;
        let set = bio_set(false)?;
        // The second page lies beyond the end of the disk's memory: the disk fails it, and the
        // one completion of the pair carries the error.
        disk.set_capacity(RAM_SECTORS + 2 * PAGE_SECTORS);
        let status = write_chained(&set, &disk, RAM_SECTORS - PAGE_SECTORS, 2, 1)?;
        assert_eq!(status.to_result(), Err(EIO));
        assert_eq!(ram.bios.load(Relaxed), 2);
        Ok(())
    }

    #[test]
    fn dropped_bio_ends_with_error() -> Result {
        let (ram, disk) = ram_disk("drop")?;
        let set = bio_set(false)?;
        let (mut bio, shared) = new_bio(&set, &disk, Operation::Write, 1, 0)?;
        bio.add_page(|d| &d.pages[0], PAGE_SIZE as u32, 0)?;
        let chained = bio.new_chained(|d| d.disk.bdev(), Operation::Write, 1, GFP_KERNEL)?;
        drop(chained);
        drop(bio);
        let (status, _) = wait(&shared)?;
        assert_eq!(status.to_result(), Err(EIO));
        assert_eq!(ram.bios.load(Relaxed), 0);
        Ok(())
    }

    #[test]
    fn add_page_checks_its_range() -> Result {
        let (_ram, disk) = ram_disk("range")?;
        let set = bio_set(false)?;
        let (mut bio, _shared) = new_bio(&set, &disk, Operation::Write, 1, 0)?;
        assert_eq!(bio.add_page(|d| &d.pages[0], 0, 0), Err(EINVAL));
        assert_eq!(
            bio.add_page(|d| &d.pages[0], 512, PAGE_SIZE as u32),
            Err(EINVAL)
        );
        assert_eq!(bio.add_page(|d| &d.pages[0], u32::MAX, 512), Err(EINVAL));
        bio.add_page(|d| &d.pages[0], 512, 0)?;
        assert_eq!(bio.bio().size(), 512);
        Ok(())
    }

    /// Where the linear disk maps its sector 0 on the RAM disk.
    const LINEAR_OFFSET: u64 = 64;
    /// The linear disk splits bios at multiples of this many sectors.
    const LINEAR_CHUNK: u64 = 8;

    /// A disk that maps onto the RAM disk at an offset, splitting bios at chunk boundaries and
    /// passing each piece on as a clone.
    struct Linear {
        set: Arc<BioSet>,
        target: Arc<BioDisk<Ram>>,
        pieces: Atomic<u32>,
    }

    /// A piece in flight on the RAM disk: ends the piece of the linear disk's bio it clones.
    struct Remap {
        parent: PendingBio,
        _target: Arc<BioDisk<Ram>>,
    }

    impl EndIo for Remap {
        fn end_io(self, status: Status) {
            self.parent.end(status);
        }
    }

    impl Linear {
        fn remap(&self, bio: PendingBio) {
            self.pieces.add(1, Relaxed);
            let sector = bio.sector() + LINEAR_OFFSET;
            let target = self.target.clone();
            let remap = |parent| Remap {
                parent,
                _target: target,
            };
            match bio.clone_to(&self.set, remap, |r| r._target.bdev(), GFP_NOIO) {
                Ok(mut clone) => {
                    clone.set_sector(sector);
                    clone.submit_noacct();
                }
                Err((e, bio)) => bio.end(Status::from_error(e)),
            }
        }
    }

    impl Operations for Linear {
        type QueueData = Arc<Linear>;

        fn submit_bio(lin: ArcBorrow<'_, Linear>, mut bio: PendingBio) {
            loop {
                let start = bio.sector();
                let boundary = (start / LINEAR_CHUNK + 1) * LINEAR_CHUNK;
                if bio.end_sector().is_none_or(|end| end <= boundary) {
                    lin.remap(bio);
                    return;
                }
                match bio.split((boundary - start) as u32, &lin.set, GFP_NOIO) {
                    Ok(piece) => lin.remap(piece),
                    Err(e) => {
                        bio.end(Status::from_error(e));
                        return;
                    }
                }
            }
        }
    }

    #[test]
    fn split_and_clone_through_a_stacked_disk() -> Result {
        let (ram, ram_disk) = ram_disk("lower")?;
        let lin = Arc::new(
            Linear {
                set: bio_set(true)?,
                target: ram_disk.clone(),
                pieces: Atomic::new(0),
            },
            GFP_KERNEL,
        )?;
        let linear = Arc::new(
            BioDiskBuilder::new()
                .capacity_sectors(RAM_SECTORS - LINEAR_OFFSET)
                .build::<Linear>(fmt!("rust_bio_linear"), lin.clone())?,
            GFP_KERNEL,
        )?;
        let set = bio_set(false)?;
        // Four pages at sector 4, split at every chunk boundary: with 4 KiB pages the pieces
        // are [4, 8), [8, 16), [16, 24), [24, 32) and [32, 36).
        let end = 4 + 4 * PAGE_SECTORS;
        let pieces = end.div_ceil(LINEAR_CHUNK) as u32;
        let (status, _) = one_bio(&set, &linear, Operation::Write, 4, 4, 0x10)?;
        assert_eq!(status, Status::OK);
        assert_eq!(lin.pieces.load(Relaxed), pieces);
        assert_eq!(ram.bios.load(Relaxed), pieces);
        {
            let data = ram.data.lock();
            let base = ((LINEAR_OFFSET + 4) << 9) as usize;
            assert!(data[..base].iter().all(|&b| b == 0));
            for i in 0..4 {
                let page = &data[base + i * PAGE_SIZE..base + (i + 1) * PAGE_SIZE];
                assert!(page.iter().all(|&b| b == 0x10 + i as u8));
            }
            assert!(data[base + 4 * PAGE_SIZE..].iter().all(|&b| b == 0));
        }
        // Read back through the stacked disk, split the same way.
        let (status, pages) = one_bio(&set, &linear, Operation::Read, 4, 4, 0xee)?;
        assert_eq!(status, Status::OK);
        assert_eq!(lin.pieces.load(Relaxed), 2 * pieces);
        for (i, page) in pages.iter().enumerate() {
            assert!(page_bytes(page)?.iter().all(|&b| b == 0x10 + i as u8));
        }
        // A chunk-aligned bio of one chunk goes through in one piece.
        let (mut bio, shared) = new_bio(&set, &linear, Operation::Read, 1, 0)?;
        bio.set_sector(LINEAR_CHUNK);
        bio.add_page(|d| &d.pages[0], (LINEAR_CHUNK << 9) as u32, 0)?;
        bio.submit();
        assert_eq!(wait(&shared)?.0, Status::OK);
        assert_eq!(lin.pieces.load(Relaxed), 2 * pieces + 1);
        drop(linear);
        Ok(())
    }
}
