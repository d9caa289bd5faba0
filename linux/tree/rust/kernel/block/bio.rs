// SPDX-License-Identifier: GPL-2.0

//! Block I/O requests (`struct bio`) and bio sets.
//!
//! C headers: [`include/linux/blk_types.h`](srctree/include/linux/blk_types.h) and
//! [`include/linux/bio.h`](srctree/include/linux/bio.h)
//!
//! A bio describes one I/O to a range of a block device. This module has four views of one:
//!
//! - [`Bio`] is a reference to a bio that someone else owns, handed out for the duration of a
//!   callback (for instance to a block device filter, see `kernel::block::filter`). It gives read
//!   access to what describes the I/O: the operation, the flags, the range and the device.
//! - [`NewBio`] is a bio that Rust code allocates from a [`BioSet`], fills with pages and submits.
//!   Its completion is a value of a type implementing [`EndIo`], which also owns everything the
//!   I/O uses (the pages, the reference that keeps the device open) until the I/O is done.
//! - [`ChainedBio`] is a further bio whose completion is folded into that of a [`NewBio`]
//!   (`bio_chain()`), for an I/O that does not fit in one bio.
//! - [`PendingBio`] is a bio that was handed over to Rust code which now has to end it: the bios
//!   a bio-based disk receives (see `kernel::block::bio_disk`). Its owner may read and write its
//!   data, split it, pass it on to another device through a clone, or end it with a [`Status`].
//!
//! # Examples
//!
//! ```
//! use kernel::block::bio::{Flags, Operation, Status};
//! use kernel::prelude::*;
//!
//! assert_eq!(Operation::from_raw(1), Operation::Write);
//! assert!(Operation::WriteZeroes.is_write());
//! assert!(!Operation::Read.is_write());
//! assert_eq!(Operation::from_raw(34), Operation::Other(34));
//!
//! let flags = Flags::FUA | Flags::SYNC;
//! assert!(flags.contains(Flags::FUA));
//! assert!(!flags.contains(Flags::PREFLUSH));
//!
//! assert!(Status::OK.to_result().is_ok());
//! assert_eq!(Status::from_error(EIO).to_result(), Err(EIO));
//! assert_eq!(Status::from_error(ENOSPC).to_result(), Err(ENOSPC));
//! ```
//!
//! Reading the first page of a device into a page, and waiting for it:
//!
//! ```
//! use kernel::block::{bdev::BlockDevice, bio::{BioSet, EndIo, NewBio, Operation, Status}};
//! use kernel::page::Page;
//! use kernel::prelude::*;
//! use kernel::sync::{Arc, Completion};
//!
//! struct Read {
//!     page: Page,
//!     done: Arc<Completion>,
//!     status: Arc<kernel::sync::Mutex<Status>>,
//! }
//!
//! impl EndIo for Read {
//!     fn end_io(self, status: Status) {
//!         *self.status.lock() = status;
//!         self.done.complete_all();
//!         // The page is freed here, after the I/O.
//!     }
//! }
//!
//! fn read_first_page(set: &Arc<BioSet>, bdev: &'static BlockDevice) -> Result {
//!     let done = Arc::pin_init(Completion::new(), GFP_KERNEL)?;
//!     let status = Arc::pin_init(kernel::new_mutex!(Status::OK), GFP_KERNEL)?;
//!     let read = Read {
//!         page: Page::alloc_page(GFP_KERNEL)?,
//!         done: done.clone(),
//!         status: status.clone(),
//!     };
//!     let mut bio = NewBio::new(set, read, |_| bdev, Operation::Read, 1, GFP_KERNEL)?;
//!     bio.set_sector(0);
//!     bio.add_page(|r| &r.page, kernel::page::PAGE_SIZE as u32, 0)?;
//!     bio.submit();
//!     done.wait_for_completion();
//!     let result = status.lock().to_result();
//!     result
//! }
//! # let _ = read_first_page;
//! ```

use crate::{
    alloc::Flags as AllocFlags,
    bindings,
    block::{bdev::BlockDevice, SECTOR_SHIFT},
    error::{from_err_ptr, to_result},
    page::{BorrowedPage, Page},
    prelude::*,
    sync::Arc,
    types::Opaque,
};
use core::{
    marker::PhantomData,
    ops::{BitOr, BitOrAssign, Deref},
    ptr::NonNull,
};

/// The operation of a bio (`enum req_op` in C).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Read sectors from the device.
    Read,
    /// Write sectors to the device.
    Write,
    /// Flush the volatile write cache of the device.
    Flush,
    /// Discard sectors.
    Discard,
    /// Securely erase sectors.
    SecureErase,
    /// Write data at the write pointer of a zone.
    ZoneAppend,
    /// Write zeroes to sectors.
    WriteZeroes,
    /// Any other operation (zone management, driver private), by its raw value.
    Other(u32),
}

impl Operation {
    /// Converts the C `enum req_op` value `op`.
    pub const fn from_raw(op: u32) -> Self {
        match op {
            bindings::req_op_REQ_OP_READ => Self::Read,
            bindings::req_op_REQ_OP_WRITE => Self::Write,
            bindings::req_op_REQ_OP_FLUSH => Self::Flush,
            bindings::req_op_REQ_OP_DISCARD => Self::Discard,
            bindings::req_op_REQ_OP_SECURE_ERASE => Self::SecureErase,
            bindings::req_op_REQ_OP_ZONE_APPEND => Self::ZoneAppend,
            bindings::req_op_REQ_OP_WRITE_ZEROES => Self::WriteZeroes,
            other => Self::Other(other),
        }
    }

    /// Returns the C `enum req_op` value.
    pub const fn as_raw(self) -> u32 {
        match self {
            Self::Read => bindings::req_op_REQ_OP_READ,
            Self::Write => bindings::req_op_REQ_OP_WRITE,
            Self::Flush => bindings::req_op_REQ_OP_FLUSH,
            Self::Discard => bindings::req_op_REQ_OP_DISCARD,
            Self::SecureErase => bindings::req_op_REQ_OP_SECURE_ERASE,
            Self::ZoneAppend => bindings::req_op_REQ_OP_ZONE_APPEND,
            Self::WriteZeroes => bindings::req_op_REQ_OP_WRITE_ZEROES,
            Self::Other(op) => op,
        }
    }

    /// Returns whether the operation transfers data to the device or changes what the device
    /// holds, in the sense of the C `op_is_write()` (writes, discards, zone management, ...).
    pub const fn is_write(self) -> bool {
        self.as_raw() & 1 != 0
    }
}

/// The flags of a bio (`blk_opf_t` in C without the operation bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flags(u32);

impl Flags {
    /// No flag.
    pub const NONE: Self = Self(0);
    /// Synchronous I/O.
    pub const SYNC: Self = Self::bit(bindings::req_flag_bits___REQ_SYNC);
    /// Metadata I/O.
    pub const META: Self = Self::bit(bindings::req_flag_bits___REQ_META);
    /// Forced unit access: the data is on stable storage when the bio completes.
    pub const FUA: Self = Self::bit(bindings::req_flag_bits___REQ_FUA);
    /// Flush the write cache before the I/O.
    pub const PREFLUSH: Self = Self::bit(bindings::req_flag_bits___REQ_PREFLUSH);
    /// Read-ahead, may fail.
    pub const RAHEAD: Self = Self::bit(bindings::req_flag_bits___REQ_RAHEAD);
    /// Do not wait for resources.
    pub const NOWAIT: Self = Self::bit(bindings::req_flag_bits___REQ_NOWAIT);
    /// Write-zeroes must not deallocate blocks.
    pub const NOUNMAP: Self = Self::bit(bindings::req_flag_bits___REQ_NOUNMAP);

    const fn bit(nr: u32) -> Self {
        Self(1 << nr)
    }

    /// Makes flags from the C `blk_opf_t` value `opf`, dropping the operation bits.
    pub const fn from_opf(opf: u32) -> Self {
        Self(opf & !((1 << bindings::REQ_OP_BITS) - 1))
    }

    /// Returns the raw flag bits (the operation bits are zero).
    pub const fn as_raw(self) -> u32 {
        self.0
    }

    /// Returns whether all flags of `other` are set in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for Flags {
    type Output = Self;

    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl BitOrAssign for Flags {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

/// A borrowed block I/O request, `struct bio` in C.
///
/// The accessors describe the part of the bio that has not been processed yet (the C
/// `bio->bi_iter`), which for a bio that has not been started is the whole bio.
///
/// # Invariants
///
/// For the lifetime of every `&Bio`, the wrapped `struct bio` is valid, is not completed or
/// freed, is not changed by anyone else, and its `bi_bdev` points to a valid block device.
#[repr(transparent)]
pub struct Bio(Opaque<bindings::bio>);

impl Bio {
    /// Creates a reference to a [`Bio`] from a pointer.
    ///
    /// # Safety
    ///
    /// For the lifetime `'a`, `ptr` must point to a valid `struct bio` that nobody completes,
    /// frees or modifies, and whose `bi_bdev` is a valid block device.
    pub unsafe fn from_raw<'a>(ptr: *mut bindings::bio) -> &'a Self {
        // SAFETY: `Bio` is a transparent wrapper of the C type; the caller guarantees the
        // requirements of the type invariant for `'a`.
        unsafe { &*ptr.cast() }
    }

    /// Returns the raw pointer to the C `struct bio`.
    pub fn as_raw(&self) -> *mut bindings::bio {
        self.0.get()
    }

    /// Returns the operation.
    pub fn op(&self) -> Operation {
        // SAFETY: By the type invariant the bio is valid and nobody changes it.
        let opf = unsafe { (*self.as_raw()).bi_opf };
        // The operation is in the low bits of `bi_opf` (`bio_op()` in C), computed here rather
        // than through a helper call: filters look at it for every bio.
        Operation::from_raw(opf & ((1 << bindings::REQ_OP_BITS) - 1))
    }

    /// Returns the flags.
    pub fn flags(&self) -> Flags {
        // SAFETY: By the type invariant the bio is valid and nobody changes it.
        Flags::from_opf(unsafe { (*self.as_raw()).bi_opf })
    }

    /// Returns the first sector (512 bytes) of the device the bio covers.
    pub fn sector(&self) -> u64 {
        // SAFETY: By the type invariant the bio is valid and nobody changes it.
        unsafe { (*self.as_raw()).bi_iter.bi_sector }
    }

    /// Returns the size of the bio in bytes.
    ///
    /// Zero for a bio without data, such as an empty flush.
    pub fn size(&self) -> u32 {
        // SAFETY: By the type invariant the bio is valid and nobody changes it.
        unsafe { (*self.as_raw()).bi_iter.bi_size }
    }

    /// Returns the number of sectors the bio covers, rounded up.
    pub fn sectors(&self) -> u32 {
        self.size().div_ceil(1 << SECTOR_SHIFT)
    }

    /// Returns the sector just past the end of the bio, or `None` if it does not fit in a `u64`.
    pub fn end_sector(&self) -> Option<u64> {
        self.sector().checked_add(u64::from(self.sectors()))
    }

    /// Returns the block device the bio is submitted to.
    pub fn bdev(&self) -> &BlockDevice {
        // SAFETY: By the type invariant the bio is valid and `bi_bdev` is a valid block device
        // while the bio is borrowed; the returned reference cannot outlive the borrow of `self`.
        unsafe { BlockDevice::from_raw((*self.as_raw()).bi_bdev) }
    }
}

/// The status of a completed I/O, `blk_status_t` in C.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status(bindings::blk_status_t);

impl Status {
    /// The I/O succeeded.
    pub const OK: Self = Self(bindings::BLK_STS_OK as bindings::blk_status_t);

    /// Returns the status that stands for `err` (`errno_to_blk_status()`); errors without a
    /// status of their own become the generic I/O error.
    pub fn from_error(err: Error) -> Self {
        // SAFETY: `errno_to_blk_status` only computes a value.
        Self(unsafe { bindings::errno_to_blk_status(err.to_errno()) })
    }

    /// Returns `Ok(())` for [`Status::OK`], the error the status stands for otherwise
    /// (`blk_status_to_errno()`).
    pub fn to_result(self) -> Result {
        // SAFETY: `blk_status_to_errno` only computes a value.
        to_result(unsafe { bindings::blk_status_to_errno(self.0) })
    }

    /// Returns whether the status is [`Status::OK`].
    pub fn is_ok(self) -> bool {
        self == Self::OK
    }

    /// Returns the raw `blk_status_t`.
    pub fn as_raw(self) -> bindings::blk_status_t {
        self.0
    }
}

/// A pool of bios that guarantees forward progress, `struct bio_set` in C.
///
/// Code that allocates bios while it serves I/O (a block device driver, a filter) must allocate
/// them from a bio set of its own, so that the allocation cannot wait for memory that only the
/// completion of that same I/O would free. A bio set is shared as an [`Arc`]: every bio allocated
/// from it holds a reference until it is freed, so the set outlives its bios.
///
/// # Invariants
///
/// `set` was initialized by `bioset_init()` and is exited only when the `BioSet` is dropped.
#[pin_data(PinnedDrop)]
pub struct BioSet {
    #[pin]
    set: Opaque<bindings::bio_set>,
}

// SAFETY: A `struct bio_set` may be used from any thread: its allocations go through mempools
// and per-CPU caches that do their own locking.
unsafe impl Send for BioSet {}

// SAFETY: See `Send`; every operation on a shared `BioSet` is thread safe in C.
unsafe impl Sync for BioSet {}

impl BioSet {
    /// Makes a bio set that keeps `pool_size` bios (with room for `BIO_INLINE_VECS` page vectors
    /// each, and a pool of larger vectors) in reserve.
    ///
    /// With `rescuer`, bios allocated from the set in a `submit_bio` path are punted to a rescuer
    /// workqueue when the pool runs dry (`BIOSET_NEED_RESCUER`), as stacking drivers need.
    pub fn new(pool_size: u32, rescuer: bool) -> impl PinInit<Self, Error> {
        let mut flags = bindings::BIOSET_NEED_BVECS;
        if rescuer {
            flags |= bindings::BIOSET_NEED_RESCUER;
        }
        try_pin_init!(Self {
            set <- Opaque::try_ffi_init(move |set: *mut bindings::bio_set| {
                // SAFETY: `set` is valid for writes. `bioset_init` expects a zeroed structure (it
                // leaves the fields of features not asked for alone), initializes it, and leaves
                // nothing to clean up when it fails.
                to_result(unsafe {
                    core::ptr::write_bytes(set, 0, 1);
                    bindings::bioset_init(set, pool_size, 0, flags as crate::ffi::c_int)
                })
            }),
        })
    }

    fn as_raw(&self) -> *mut bindings::bio_set {
        self.set.get()
    }
}

#[pinned_drop]
impl PinnedDrop for BioSet {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: By the type invariant the set was initialized. It is dropped only when the last
        // `Arc` is gone, and every bio allocated from it holds one of those until it is freed.
        unsafe { bindings::bioset_exit(self.as_raw()) };
    }
}

/// The completion of a bio made with [`NewBio`]: the value owns what the I/O uses, and is handed
/// back, with the status, once the I/O is done.
pub trait EndIo: Sized + Send + 'static {
    /// Called once the I/O of the bio (and of the bios chained to it) is complete.
    ///
    /// Runs in the context the device completes I/O in: often an interrupt or soft interrupt
    /// handler, so it must not sleep; defer to a workqueue what needs to.
    fn end_io(self, status: Status);
}

/// What a [`NewBio`] keeps in `bi_private` until it completes.
struct Context<T> {
    data: T,
    _set: Arc<BioSet>,
}

/// A bio made by Rust code, not submitted yet.
///
/// The bio carries a value `data` of a type implementing [`EndIo`], which is handed back when the
/// I/O completes. `data` owns everything the I/O uses: the device (a reference that keeps it open)
/// and the pages are borrowed from it, and it is neither moved nor changed until the completion,
/// so they stay valid for the whole I/O.
///
/// Dropping a `NewBio` without submitting it ends it with an I/O error: `data.end_io()` is called
/// with that status (after the bios chained to it, if any, have completed).
///
/// # Invariants
///
/// - `bio` points to a bio allocated from a [`BioSet`], owned by this value (one reference), not
///   submitted yet, whose `bi_end_io` is `end_io_callback::<T>` and whose `bi_private` is a
///   `Context<T>` from `KBox::into_raw` holding a reference to that set.
/// - `bi_bdev` and every page added to the bio are borrowed from the context's `data`.
pub struct NewBio<T: EndIo> {
    bio: NonNull<bindings::bio>,
    _t: PhantomData<T>,
}

// SAFETY: The bio may be filled and submitted from any thread, and `T` is `Send`.
unsafe impl<T: EndIo> Send for NewBio<T> {}

impl<T: EndIo> NewBio<T> {
    /// Allocates a bio with room for `nr_vecs` page segments from `set`, for an I/O `op` to the
    /// device that `bdev` borrows from `data`.
    ///
    /// `gfp` are the flags for the allocation of the bio and of the context: on an I/O path use
    /// `GFP_NOIO`, which lets the allocation wait for the bio set's reserve instead of failing.
    /// The bio starts at sector 0 with no pages; `nr_vecs` is capped to `BIO_MAX_VECS`.
    pub fn new<F>(
        set: &Arc<BioSet>,
        data: T,
        bdev: F,
        op: Operation,
        nr_vecs: u16,
        gfp: AllocFlags,
    ) -> Result<Self>
    where
        F: for<'a> FnOnce(&'a T) -> &'a BlockDevice,
    {
        let ctx = KBox::new(
            Context {
                data,
                _set: set.clone(),
            },
            gfp,
        )?;
        // SAFETY: The device is borrowed from `data`, which the context keeps alive until the bio
        // completes; the context holds a reference to the set.
        let bio = unsafe { alloc_bio(set, bdev(&ctx.data), op, nr_vecs, gfp)? };
        // SAFETY: The bio was just allocated and nobody else knows it.
        unsafe {
            (*bio.as_ptr()).bi_end_io = Some(end_io_callback::<T>);
            (*bio.as_ptr()).bi_private = KBox::into_raw(ctx).cast();
        }
        // INVARIANT: The bio is owned, set up as required, and its device comes from `data`.
        Ok(Self {
            bio,
            _t: PhantomData,
        })
    }

    fn as_raw(&self) -> *mut bindings::bio {
        self.bio.as_ptr()
    }

    fn ctx(&self) -> &Context<T> {
        // SAFETY: By the type invariant `bi_private` is a live `Context<T>`, only ever shared,
        // until the bio completes, which is after `self` is gone.
        unsafe { &*(*self.as_raw()).bi_private.cast::<Context<T>>() }
    }

    /// Returns the value the bio carries.
    pub fn data(&self) -> &T {
        &self.ctx().data
    }

    /// Returns a view of the bio.
    pub fn bio(&self) -> &Bio {
        // SAFETY: The bio is owned by `self` and valid; its device is kept alive by `data`.
        unsafe { Bio::from_raw(self.as_raw()) }
    }

    /// Sets the first sector of the I/O.
    pub fn set_sector(&mut self, sector: u64) {
        // SAFETY: The bio is owned by `self` and not submitted.
        unsafe { (*self.as_raw()).bi_iter.bi_sector = sector };
    }

    /// Adds the flags `flags` to the operation.
    pub fn set_flags(&mut self, flags: Flags) {
        // SAFETY: The bio is owned by `self` and not submitted.
        unsafe { (*self.as_raw()).bi_opf |= flags.as_raw() };
    }

    /// Appends `len` bytes at `offset` of the page that `page` borrows from the bio's data.
    ///
    /// Fails with [`EINVAL`] if the range is not inside the page, with [`E2BIG`] if the bio has no
    /// room left for it.
    pub fn add_page<F>(&mut self, page: F, len: u32, offset: u32) -> Result
    where
        F: for<'a> FnOnce(&'a T) -> &'a Page,
    {
        add_page(self.as_raw(), page(self.data()), len, offset)
    }

    /// Allocates a bio from the same set whose completion is folded into this one
    /// (`bio_chain()`): the data's [`EndIo::end_io`] runs only once both have completed, with the
    /// first error either reported.
    ///
    /// The chained bio borrows its device and pages from this bio's data as well.
    pub fn new_chained<F>(
        &self,
        bdev: F,
        op: Operation,
        nr_vecs: u16,
        gfp: AllocFlags,
    ) -> Result<ChainedBio<'_, T>>
    where
        F: for<'a> FnOnce(&'a T) -> &'a BlockDevice,
    {
        let ctx = self.ctx();
        // SAFETY: The device is borrowed from the data, which lives until this bio completes,
        // after the chained one; the context holds a reference to the set.
        let bio = unsafe { alloc_bio(&ctx._set, bdev(&ctx.data), op, nr_vecs, gfp)? };
        // SAFETY: Both bios are valid; the new one has no `bi_private` nor `bi_end_io`, and the
        // parent is not submitted (it is owned by `self`).
        unsafe { bindings::bio_chain(bio.as_ptr(), self.as_raw()) };
        // INVARIANT: The bio is owned, chained to `self`'s bio, and its device comes from the
        // parent's data.
        Ok(ChainedBio { bio, parent: self })
    }

    /// Submits the bio to its device (`submit_bio()`).
    ///
    /// The data's [`EndIo::end_io`] is called when the I/O is complete, possibly before this
    /// returns. May sleep when the device's queue is congested, unless the bio has
    /// [`Flags::NOWAIT`].
    pub fn submit(self) {
        let bio = self.into_raw();
        // SAFETY: The bio is valid and owned; ownership passes to the block layer, which ends it
        // through `end_io_callback::<T>`.
        unsafe { bindings::submit_bio(bio) };
    }

    /// Submits the bio without accounting it again (`submit_bio_noacct()`), as a driver does for
    /// a bio that it remaps on behalf of another one that was accounted already.
    pub fn submit_noacct(self) {
        let bio = self.into_raw();
        // SAFETY: As in `submit`.
        unsafe { bindings::submit_bio_noacct(bio) };
    }

    fn into_raw(self) -> *mut bindings::bio {
        let bio = self.as_raw();
        core::mem::forget(self);
        bio
    }
}

impl<T: EndIo> Drop for NewBio<T> {
    fn drop(&mut self) {
        // SAFETY: The bio is valid and owned, never submitted: ending it with an error runs its
        // completion (once its chained bios are done) and frees it.
        unsafe { end_bio(self.as_raw(), Status::from_error(EIO)) };
    }
}

/// Allocates a bio for `op` on `bdev` with room for `nr_vecs` (at most `BIO_MAX_VECS`) pages.
///
/// # Safety
///
/// `bdev` must stay valid, and `set` must not be dropped, until the bio is freed.
unsafe fn alloc_bio(
    set: &BioSet,
    bdev: &BlockDevice,
    op: Operation,
    nr_vecs: u16,
    gfp: AllocFlags,
) -> Result<NonNull<bindings::bio>> {
    let nr_vecs = nr_vecs.min(bindings::BIO_MAX_VECS as u16);
    // SAFETY: The device and the initialized set outlive the bio, as the caller guarantees.
    let bio = unsafe {
        bindings::bio_alloc_bioset(
            bdev.as_raw(),
            nr_vecs,
            op.as_raw(),
            gfp.as_raw(),
            set.as_raw(),
        )
    };
    NonNull::new(bio).ok_or(ENOMEM)
}

/// Ends `bio` with `status` (`bio_endio()`). Success keeps an error already recorded on the bio
/// by a bio chained or split off it.
///
/// # Safety
///
/// `bio` must be valid and owed an end by the caller, who does not use it afterwards.
unsafe fn end_bio(bio: *mut bindings::bio, status: Status) {
    // SAFETY: The caller owns the end of the valid bio.
    unsafe {
        if !status.is_ok() {
            (*bio).bi_status = status.as_raw();
        }
        bindings::bio_endio(bio);
    }
}

/// # Safety
///
/// Called by the block layer, once, when the I/O of a bio made by [`NewBio::new`] is complete.
unsafe extern "C" fn end_io_callback<T: EndIo>(bio: *mut bindings::bio) {
    // SAFETY: The bio is valid during the callback.
    let (ctx, status) = unsafe { ((*bio).bi_private.cast::<Context<T>>(), (*bio).bi_status) };
    // SAFETY: By the invariant of `NewBio`, `bi_private` came from `KBox::into_raw` and this is the
    // only place that takes it back, once.
    let ctx = KBox::into_inner(unsafe { KBox::from_raw(ctx) });
    // SAFETY: The I/O is complete and the bio is not used afterwards: the reference taken at the
    // allocation is dropped, which frees it. The set it came from is still alive: `ctx` holds it.
    unsafe { bindings::bio_put(bio) };
    ctx.data.end_io(Status(status));
}

/// A bio chained to a [`NewBio`], made by [`NewBio::new_chained`].
///
/// Submit it with [`ChainedBio::submit`]; dropping it unsubmitted ends it with an I/O error, which
/// the parent's completion then reports.
///
/// # Invariants
///
/// `bio` points to an owned, unsubmitted bio chained to `parent`'s bio, whose device and pages
/// are borrowed from the parent's data.
pub struct ChainedBio<'a, T: EndIo> {
    bio: NonNull<bindings::bio>,
    parent: &'a NewBio<T>,
}

impl<T: EndIo> ChainedBio<'_, T> {
    /// Sets the first sector of the I/O.
    pub fn set_sector(&mut self, sector: u64) {
        // SAFETY: The bio is owned by `self` and not submitted.
        unsafe { (*self.bio.as_ptr()).bi_iter.bi_sector = sector };
    }

    /// Appends `len` bytes at `offset` of the page that `page` borrows from the parent's data.
    ///
    /// Fails as [`NewBio::add_page`] does.
    pub fn add_page<F>(&mut self, page: F, len: u32, offset: u32) -> Result
    where
        F: for<'b> FnOnce(&'b T) -> &'b Page,
    {
        add_page(self.bio.as_ptr(), page(self.parent.data()), len, offset)
    }

    /// Submits the bio (`submit_bio()`).
    pub fn submit(self) {
        let bio = self.bio.as_ptr();
        core::mem::forget(self);
        // SAFETY: The bio is valid and owned; the block layer ends it, which completes it into
        // the parent (its `bi_end_io` is `bio_chain_endio`). The parent's data, which the pages
        // and the device belong to, lives until after that.
        unsafe { bindings::submit_bio(bio) };
    }
}

impl<T: EndIo> Drop for ChainedBio<'_, T> {
    fn drop(&mut self) {
        // SAFETY: The bio is valid, owned and unsubmitted: ending it frees it and drops its
        // count on the parent.
        unsafe { end_bio(self.bio.as_ptr(), Status::from_error(EIO)) };
    }
}

/// Adds a page range to an unsubmitted bio.
fn add_page(bio: *mut bindings::bio, page: &Page, len: u32, offset: u32) -> Result {
    match offset.checked_add(len) {
        Some(end) if len > 0 && end as usize <= crate::page::PAGE_SIZE => {}
        _ => return Err(EINVAL),
    }
    // SAFETY: The caller passes a valid, unsubmitted bio that it owns, and a page that lives
    // until the bio completes.
    let added = unsafe { bindings::bio_add_page(bio, page.as_ptr(), len, offset) };
    if added as u32 != len {
        return Err(E2BIG);
    }
    Ok(())
}

/// A bio handed over to Rust code, which now has to end it.
///
/// The bio was submitted by someone else and given to its owner, such as a bio-based disk,
/// which ends it with [`PendingBio::end`], passes it on to another device
/// ([`PendingBio::submit_noacct`], [`PendingBio::clone_to`]), or splits it first. Until then
/// its owner may fill (for a read) or read (for a write) its data: the submitter does not touch
/// the data of a bio in flight.
///
/// Dropping a `PendingBio` ends it with an I/O error.
///
/// # Invariants
///
/// `bio` points to a valid bio that is owed an end by this value and by nobody else, and whose
/// device and pages are kept alive by its submitter until it ends.
pub struct PendingBio {
    bio: NonNull<bindings::bio>,
    /// The set a split part was allocated from, kept until the part is freed.
    set: Option<Arc<BioSet>>,
}

// SAFETY: A bio may be ended or passed on from any thread.
unsafe impl Send for PendingBio {}

impl PendingBio {
    /// Takes over the bio `bio`.
    ///
    /// # Safety
    ///
    /// `bio` must point to a valid bio that the caller owes an end (or a submission) and hands
    /// over: nobody else ends it, submits it or changes it from now on.
    pub unsafe fn from_raw(bio: NonNull<bindings::bio>) -> Self {
        // INVARIANT: The caller hands the bio over.
        Self { bio, set: None }
    }

    fn as_raw(&self) -> *mut bindings::bio {
        self.bio.as_ptr()
    }

    /// Ends the bio with `status` (`bio_endio()`): the submitter is told that the I/O is done.
    ///
    /// Ending with [`Status::OK`] keeps an error that a part split off the bio, or a bio chained
    /// to it, has reported.
    pub fn end(mut self, status: Status) {
        self.end_with(status);
        // The bio is ended: only the set is left to drop.
        let set = self.set.take();
        core::mem::forget(self);
        drop(set);
    }

    fn end_with(&mut self, status: Status) {
        // SAFETY: The bio is owed an end by `self`; callers do not use it afterwards.
        unsafe { end_bio(self.as_raw(), status) };
    }

    /// Passes the bio on to its device (`submit_bio_noacct()`), as after changing it with
    /// [`PendingBio::set_sector`]; the device ends it.
    ///
    /// A part made by [`PendingBio::split`] is given back: it must be ended, or passed on as a
    /// clone ([`PendingBio::clone_to`]), so that the bio set it came from is known to outlive it.
    pub fn submit_noacct(self) -> core::result::Result<(), PendingBio> {
        if self.set.is_some() {
            return Err(self);
        }
        let bio = self.as_raw();
        core::mem::forget(self);
        // SAFETY: The bio is valid and owed an end by `self`: the block layer takes that over.
        unsafe { bindings::submit_bio_noacct(bio) };
        Ok(())
    }

    /// Moves the start of the bio to `sector` of its device (for remapping it).
    pub fn set_sector(&mut self, sector: u64) {
        // SAFETY: The bio is owned by `self` and not in flight.
        unsafe { (*self.as_raw()).bi_iter.bi_sector = sector };
    }

    /// Splits off the first `sectors` sectors of the bio (`bio_split()`) as a bio of its own,
    /// allocated from `set` with `gfp`; `self` keeps the rest.
    ///
    /// The two are chained: the submitter sees one completion, once both parts are ended, with
    /// the error of either. Fails with [`EINVAL`] unless `0 < sectors <` [`Bio::sectors`].
    pub fn split(
        &mut self,
        sectors: u32,
        set: &Arc<BioSet>,
        gfp: AllocFlags,
    ) -> Result<PendingBio> {
        if sectors == 0 || sectors >= self.sectors() {
            return Err(EINVAL);
        }
        let sectors = crate::ffi::c_int::try_from(sectors).map_err(|_| EINVAL)?;
        // SAFETY: The bio is valid and owned, the split point is inside it, and the set is
        // initialized. The split part is freed by its own end (`bio_chain_endio`); the new value
        // holds a reference to the set until then.
        let split = from_err_ptr(unsafe {
            bindings::bio_split(self.as_raw(), sectors, gfp.as_raw(), set.as_raw())
        })?;
        let split = NonNull::new(split).ok_or(ENOMEM)?;
        // INVARIANT: The split part is chained to `self` and owed an end by the new value; its
        // pages are the submitter's, kept alive until `self`'s bio ends, after the split part.
        Ok(PendingBio {
            bio: split,
            set: Some(set.clone()),
        })
    }

    /// Makes a clone of the bio aimed at the device that `bdev` borrows from `data`
    /// (`bio_alloc_clone()`), and hands it out as a [`NewBio`] whose data is what `data` makes of
    /// this bio. The clone shares this bio's pages: `data` is expected to end this bio from its
    /// [`EndIo::end_io`], which is after the clone's I/O.
    ///
    /// On failure (no memory for the clone with `gfp`) the bio is given back with the error.
    pub fn clone_to<T, M, F>(
        self,
        set: &Arc<BioSet>,
        data: M,
        bdev: F,
        gfp: AllocFlags,
    ) -> core::result::Result<NewBio<T>, (Error, PendingBio)>
    where
        T: EndIo,
        M: FnOnce(PendingBio) -> T,
        F: for<'a> FnOnce(&'a T) -> &'a BlockDevice,
    {
        let ctx = match KBox::<Context<T>>::new_uninit(gfp) {
            Ok(ctx) => ctx,
            Err(e) => return Err((e.into(), self)),
        };
        // SAFETY: The source bio is valid and owned by `self`; the set is initialized. The clone
        // gets its device below, once the data that keeps the device alive exists.
        let clone = unsafe {
            bindings::bio_alloc_clone(
                core::ptr::null_mut(),
                self.as_raw(),
                gfp.as_raw(),
                set.as_raw(),
            )
        };
        let Some(clone) = NonNull::new(clone) else {
            return Err((ENOMEM, self));
        };
        let ctx = KBox::write(
            ctx,
            Context {
                data: data(self),
                _set: set.clone(),
            },
        );
        let bdev = bdev(&ctx.data).as_raw();
        // SAFETY: The clone was just allocated and nobody else knows it; `bdev` is kept alive by
        // the data in `ctx` until the clone completes.
        unsafe {
            bindings::bio_set_dev(clone.as_ptr(), bdev);
            (*clone.as_ptr()).bi_end_io = Some(end_io_callback::<T>);
            (*clone.as_ptr()).bi_private = KBox::into_raw(ctx).cast();
        }
        // INVARIANT: The clone is owned and set up like a bio of `NewBio::new`; its pages belong
        // to the source bio, which the data owns and ends only from its completion.
        Ok(NewBio {
            bio: clone,
            _t: PhantomData,
        })
    }

    /// Returns an iterator over the data segments of the bio that are still to be done.
    ///
    /// A bio without data (a flush, a discard) has no segments.
    pub fn segments(&mut self) -> Segments<'_> {
        // SAFETY: The bio is valid.
        let has_data = unsafe { bindings::bio_has_data(self.as_raw()) };
        Segments {
            bio: self.as_raw(),
            // SAFETY: The bio is valid and owned.
            iter: unsafe { (*self.as_raw()).bi_iter },
            has_data,
            _p: PhantomData,
        }
    }
}

impl Deref for PendingBio {
    type Target = Bio;

    fn deref(&self) -> &Bio {
        // SAFETY: The bio is valid and owned by `self`; its device is kept alive by its submitter.
        unsafe { Bio::from_raw(self.as_raw()) }
    }
}

impl Drop for PendingBio {
    fn drop(&mut self) {
        // The bio is owed an end by `self`; `set` is dropped after this, once the bio is ended.
        self.end_with(Status::from_error(EIO));
    }
}

/// The data segments of a [`PendingBio`], each within one page.
pub struct Segments<'a> {
    bio: *mut bindings::bio,
    iter: bindings::bvec_iter,
    has_data: bool,
    _p: PhantomData<&'a mut PendingBio>,
}

impl<'a> Iterator for Segments<'a> {
    type Item = Segment<'a>;

    fn next(&mut self) -> Option<Segment<'a>> {
        if !self.has_data || self.iter.bi_size == 0 {
            return None;
        }
        // SAFETY: The bio is valid and `iter` is inside it.
        let bv = unsafe { bindings::bio_iter_bvec(self.bio, self.iter) };
        let page = NonNull::new(bv.bv_page)?;
        let sector = self.iter.bi_sector;
        // SAFETY: `bv_len` is at most what is left in `iter`.
        unsafe { bindings::bio_advance_iter_single(self.bio, &mut self.iter, bv.bv_len) };
        Some(Segment {
            // SAFETY: The submitter keeps the bio's pages alive until the bio ends, which is after
            // `'a` (the iterator borrows the `PendingBio`).
            page: unsafe { BorrowedPage::from_raw(page) },
            offset: bv.bv_offset as usize,
            len: bv.bv_len as usize,
            sector,
        })
    }
}

/// One data segment of a [`PendingBio`]: a range of one page.
///
/// # Invariants
///
/// `offset + len` is within the page, and the range is accessed by nobody but the owner of the
/// bio until it ends (the submitter does not touch the data of a bio in flight).
pub struct Segment<'a> {
    page: BorrowedPage<'a>,
    offset: usize,
    len: usize,
    sector: u64,
}

impl Segment<'_> {
    /// Returns the length of the segment in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Returns whether the segment is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Returns the sector of the device where the segment starts.
    pub fn sector(&self) -> u64 {
        self.sector
    }

    /// Copies the segment's data to `dst`, which must be as long as the segment.
    pub fn copy_to_slice(&self, dst: &mut [u8]) -> Result {
        if dst.len() != self.len {
            return Err(EINVAL);
        }
        // SAFETY: `dst` is valid for `len` bytes; by the type invariant nobody else writes the
        // range while the bio is owned.
        unsafe { self.page.read_raw(dst.as_mut_ptr(), self.offset, self.len) }
    }

    /// Copies `src`, which must be as long as the segment, into the segment.
    pub fn copy_from_slice(&mut self, src: &[u8]) -> Result {
        if src.len() != self.len {
            return Err(EINVAL);
        }
        // SAFETY: `src` is valid for `len` bytes; by the type invariant nobody else accesses the
        // range while the bio is owned.
        unsafe { self.page.write_raw(src.as_ptr(), self.offset, self.len) }
    }

    /// Fills the segment with zeroes.
    pub fn zero(&mut self) -> Result {
        // SAFETY: By the type invariant nobody else accesses the range while the bio is owned.
        unsafe { self.page.fill_zero_raw(self.offset, self.len) }
    }
}
