// SPDX-License-Identifier: GPL-2.0

//! Block devices, as seen by code that is handed one by the block layer.
//!
//! C header: [`include/linux/blkdev.h`](srctree/include/linux/blkdev.h)
//!
//! # Examples
//!
//! ```
//! use kernel::block::bdev::DevT;
//!
//! let dev = DevT::new(259, 1048575);
//! assert_eq!(dev.major(), 259);
//! assert_eq!(dev.minor(), 1048575);
//! assert_eq!(DevT::from_raw(dev.as_raw()), dev);
//! ```

use crate::{bindings, block::SECTOR_SHIFT, fmt, types::Opaque};

/// Number of bits of the minor number in a [`DevT`] (`MINORBITS` in C).
const MINOR_BITS: u32 = 20;

/// A device number, `dev_t` in C: a major and a minor number.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DevT(u32);

impl DevT {
    /// Makes a device number from its major and minor numbers (`MKDEV()` in C).
    ///
    /// Bits of `minor` beyond the 20 that a device number holds are dropped, as in C.
    pub const fn new(major: u32, minor: u32) -> Self {
        Self((major << MINOR_BITS) | (minor & ((1 << MINOR_BITS) - 1)))
    }

    /// Wraps the kernel-internal encoding of a device number.
    pub const fn from_raw(dev: bindings::dev_t) -> Self {
        Self(dev)
    }

    /// Returns the kernel-internal encoding of the device number.
    pub const fn as_raw(self) -> bindings::dev_t {
        self.0
    }

    /// Returns the major number.
    pub const fn major(self) -> u32 {
        self.0 >> MINOR_BITS
    }

    /// Returns the minor number.
    pub const fn minor(self) -> u32 {
        self.0 & ((1 << MINOR_BITS) - 1)
    }
}

impl fmt::Display for DevT {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major(), self.minor())
    }
}

impl fmt::Debug for DevT {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major(), self.minor())
    }
}

/// A borrowed block device (a whole disk or a partition), `struct block_device` in C.
///
/// Instances are only ever handed out as references, by code that holds the device for the
/// lifetime of the reference (for instance the block layer while it calls a block device filter).
///
/// # Invariants
///
/// The wrapped `struct block_device` is valid for the lifetime of every `&BlockDevice`.
#[repr(transparent)]
pub struct BlockDevice(Opaque<bindings::block_device>);

impl BlockDevice {
    /// Creates a reference to a [`BlockDevice`] from a valid pointer.
    ///
    /// # Safety
    ///
    /// `ptr` must point to a valid `struct block_device` that stays valid for the lifetime `'a`.
    pub unsafe fn from_raw<'a>(ptr: *mut bindings::block_device) -> &'a Self {
        // SAFETY: `BlockDevice` is a transparent wrapper of the C type, and the caller guarantees
        // that the pointee is valid for `'a`.
        unsafe { &*ptr.cast() }
    }

    /// Returns the raw pointer to the C `struct block_device`.
    pub fn as_raw(&self) -> *mut bindings::block_device {
        self.0.get()
    }

    /// Returns the device number.
    pub fn dev(&self) -> DevT {
        // SAFETY: By the type invariant the device is valid; `bd_dev` never changes after the
        // device was created.
        DevT::from_raw(unsafe { (*self.as_raw()).bd_dev })
    }

    /// Returns the current size of the device in 512-byte sectors.
    ///
    /// The size may change while the device is in use (a disk is resized).
    pub fn nr_sectors(&self) -> u64 {
        // SAFETY: By the type invariant the device is valid.
        unsafe { bindings::bdev_nr_sectors(self.as_raw()) }
    }

    /// Returns the current size of the device in bytes.
    pub fn capacity_bytes(&self) -> u64 {
        self.nr_sectors() << SECTOR_SHIFT
    }
}

// SAFETY: A `struct block_device` can be used from any thread; the accessors above only read
// fields that are set when the device is created, or read the size the way C code does.
unsafe impl Sync for BlockDevice {}
