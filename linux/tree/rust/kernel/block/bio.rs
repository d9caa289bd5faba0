// SPDX-License-Identifier: GPL-2.0

//! Block I/O requests (`struct bio`) and bio sets.
//!
//! C headers: [`include/linux/blk_types.h`](srctree/include/linux/blk_types.h) and
//! [`include/linux/bio.h`](srctree/include/linux/bio.h)
//!
//! A bio describes one I/O to a range of a block device. This module and its submodules have four
//! views of one:
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
//!   a bio-based disk receives (see `kernel::block::bio_disk`), or those a block device filter
//!   takes over. Its owner may read and write its data, split it, pass it on to another device
//!   through a clone, or end it with a [`Status`].
//!
//! The completion of a bio made by Rust code ([`EndIo::end_io`]) always runs in task context,
//! where it may sleep: whatever it drops (a block device handle, the last reference to a bio set)
//! may sleep in its destructor.
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

use crate::{bindings, block::bdev::BlockDevice, block::SECTOR_SHIFT, types::Opaque};
use core::ops::{BitOr, BitOrAssign};

mod new;
mod pending;
mod set;
mod status;
#[cfg(CONFIG_RUST_BLOCK_KUNIT_TEST)]
mod tests;

pub use new::{ChainedBio, EndIo, NewBio};
pub use pending::{PendingBio, Segment, Segments};
pub use set::BioSet;
pub use status::Status;

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
    /// Open a zone (changes no data).
    ZoneOpen,
    /// Close a zone (changes no data).
    ZoneClose,
    /// Make a zone full: its sectors past the write pointer can no longer be written.
    ZoneFinish,
    /// Reset the write pointer of the zone that starts at the bio's sector, discarding its data.
    ZoneReset,
    /// Reset the write pointers of all zones of the device.
    ZoneResetAll,
    /// Any other operation (driver private), by its raw value.
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
            bindings::req_op_REQ_OP_ZONE_OPEN => Self::ZoneOpen,
            bindings::req_op_REQ_OP_ZONE_CLOSE => Self::ZoneClose,
            bindings::req_op_REQ_OP_ZONE_FINISH => Self::ZoneFinish,
            bindings::req_op_REQ_OP_ZONE_RESET => Self::ZoneReset,
            bindings::req_op_REQ_OP_ZONE_RESET_ALL => Self::ZoneResetAll,
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
            Self::ZoneOpen => bindings::req_op_REQ_OP_ZONE_OPEN,
            Self::ZoneClose => bindings::req_op_REQ_OP_ZONE_CLOSE,
            Self::ZoneFinish => bindings::req_op_REQ_OP_ZONE_FINISH,
            Self::ZoneReset => bindings::req_op_REQ_OP_ZONE_RESET,
            Self::ZoneResetAll => bindings::req_op_REQ_OP_ZONE_RESET_ALL,
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

    /// Returns whether the bio carries an inline encryption context (`bio_has_crypt_ctx()`): the
    /// device encrypts or decrypts its data on the way, so the data in memory is not what the
    /// device stores. Always `false` without `CONFIG_BLK_INLINE_ENCRYPTION`.
    pub fn has_crypt_context(&self) -> bool {
        // SAFETY: By the type invariant the bio is valid.
        unsafe { bindings::bio_has_crypt_ctx(self.as_raw()) }
    }

    /// Returns whether the bio carries an integrity payload (`bio_integrity()`): protection
    /// information that travels beside its data. Always `false` without
    /// `CONFIG_BLK_DEV_INTEGRITY`.
    pub fn has_integrity(&self) -> bool {
        // SAFETY: By the type invariant the bio is valid.
        !unsafe { bindings::bio_integrity(self.as_raw()) }.is_null()
    }

    /// Returns the block device the bio is submitted to.
    pub fn bdev(&self) -> &BlockDevice {
        // SAFETY: By the type invariant the bio is valid and `bi_bdev` is a valid block device
        // while the bio is borrowed; the returned reference cannot outlive the borrow of `self`.
        unsafe { BlockDevice::from_raw((*self.as_raw()).bi_bdev) }
    }
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
