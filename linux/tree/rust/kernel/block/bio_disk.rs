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
    /// from any context: [`PendingBio`] ends it with an I/O error if it is dropped. Bios held
    /// past the call must be owned, directly or not, by the queue data, or be ended before the
    /// [`BioDisk`] is dropped: the queue data is dropped before the disk is released.
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
        // lets no new one start.
        unsafe { bindings::del_gendisk(self.gendisk) };
        // SAFETY: No callback can run any more, so nothing borrows the queue data. It is dropped
        // while the disk is still alive: bios of the disk that it still holds are ended by its
        // destructor, and ending a bio uses the disk (accounting, the queue).
        drop(unsafe { T::QueueData::from_foreign(data) });
        // SAFETY: This drops the reference owned by `self`, after the last use of the disk here.
        unsafe { bindings::put_disk(self.gendisk) };
    }
}
