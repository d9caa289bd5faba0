// SPDX-License-Identifier: GPL-2.0

//! Block devices: borrowed ones, and handles to block devices opened by Rust code.
//!
//! C headers: [`include/linux/blkdev.h`](srctree/include/linux/blkdev.h) and
//! [`include/linux/blk-integrity.h`](srctree/include/linux/blk-integrity.h)
//!
//! - [`DevT`] is a device number.
//! - [`BlockDevice`] is a `struct block_device` borrowed from whoever keeps it alive: the block
//!   layer while it calls into a driver, or a [`BlockDeviceFile`].
//! - [`BlockDeviceFile`] owns an opened block device: opened by device number with
//!   `bdev_file_open_by_dev()`, optionally exclusively for a [`Holder`], or taken from a file
//!   that user space opened and passed by file descriptor.
//! - [`FreezeGuard`] keeps a block device (and the filesystem mounted on it, if any) frozen.
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
//!
//! Opening a device exclusively for reading and writing, and looking at it:
//!
//! ```
//! use kernel::block::bdev::{BlockDeviceFile, DevT, Holder, OpenMode};
//! use kernel::prelude::*;
//! use kernel::sync::Arc;
//!
//! fn open_storage(dev: DevT, holder: &Arc<Holder>) -> Result<BlockDeviceFile> {
//!     let file = BlockDeviceFile::open_exclusive(dev, OpenMode::Read | OpenMode::Write, holder)?;
//!     let bdev = file.bdev();
//!     if bdev.is_read_only() || bdev.logical_block_size() > 4096 {
//!         return Err(EINVAL);
//!     }
//!     pr_info!("{}: {} sectors\n", bdev.dev(), bdev.nr_sectors());
//!     Ok(file)
//! }
//!
//! // A second exclusive open for another holder fails with `EBUSY` while `file` is alive; one
//! // for the same holder succeeds.
//! fn example(dev: DevT) -> Result {
//!     let holder = Holder::new(GFP_KERNEL)?;
//!     let file = open_storage(dev, &holder)?;
//!     // Makes sure that no write started before the freeze is still in flight.
//!     let frozen = file.bdev().freeze()?;
//!     // ... the device is consistent here ...
//!     frozen.thaw()
//! }
//! # let _ = example;
//! ```

use crate::{
    alloc::Flags,
    bindings,
    block::SECTOR_SHIFT,
    error::{from_err_ptr, to_result},
    fmt,
    fs::{file_io::KernelFile, File, LocalFile},
    prelude::*,
    sync::{aref::ARef, Arc},
    types::Opaque,
};
use core::{mem::ManuallyDrop, ptr, ptr::NonNull};

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
/// lifetime of the reference (for instance the block layer while it calls a block device filter,
/// or a [`BlockDeviceFile`]).
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

    /// Returns the size of the zones of a zoned device in 512-byte sectors, 0 if the device is not
    /// zoned.
    pub fn zone_sectors(&self) -> u64 {
        // SAFETY: By the type invariant the device is valid.
        unsafe { bindings::bdev_zone_sectors(self.as_raw()) }
    }

    /// Returns the current size of the device in bytes.
    pub fn capacity_bytes(&self) -> u64 {
        self.nr_sectors() << SECTOR_SHIFT
    }

    /// Returns the logical block size of the device in bytes: the smallest unit it can address.
    ///
    /// I/O to the device must be aligned to, and a multiple of, this size.
    pub fn logical_block_size(&self) -> u32 {
        // SAFETY: By the type invariant the device is valid, and so is its queue.
        unsafe { bindings::bdev_logical_block_size(self.as_raw()) }
    }

    /// Returns the alignment mask the device requires of the memory of each data segment
    /// (`bdev_dma_alignment()`): a segment's offset in its page and its length must have none
    /// of these bits set.
    pub fn dma_alignment(&self) -> u32 {
        // SAFETY: By the type invariant the device is valid, and so is its queue.
        unsafe { bindings::bdev_dma_alignment(self.as_raw()) }
    }

    /// Returns whether the device is read-only (`bdev_read_only()`).
    ///
    /// This is the current policy of the device or its disk, which may change at any time
    /// (`BLKROSET`, or a driver that finds its medium write protected).
    pub fn is_read_only(&self) -> bool {
        // SAFETY: By the type invariant the device is valid, and so is its disk.
        unsafe { bindings::bdev_read_only(self.as_raw()) }
    }

    /// Returns whether the disk of the device has an integrity profile (`blk_get_integrity()`):
    /// its sectors carry protection information or other metadata.
    ///
    /// Always `false` without `CONFIG_BLK_DEV_INTEGRITY`.
    pub fn has_integrity(&self) -> bool {
        // SAFETY: By the type invariant the device is valid, and so is its disk.
        !unsafe { bindings::bdev_get_integrity(self.as_raw()) }.is_null()
    }

    /// Returns whether the queue of the device has an inline encryption profile
    /// (`q->crypto_profile`): the hardware can encrypt and decrypt the data of bios.
    ///
    /// Always `false` without `CONFIG_BLK_INLINE_ENCRYPTION`.
    pub fn has_crypto_profile(&self) -> bool {
        #[cfg(CONFIG_BLK_INLINE_ENCRYPTION)]
        {
            // SAFETY: By the type invariant the device is valid, and `bd_queue` is never NULL
            // and lives as long as the device. `crypto_profile` is set before the disk is added
            // and does not change afterwards.
            !unsafe { (*(*self.as_raw()).bd_queue).crypto_profile }.is_null()
        }
        #[cfg(not(CONFIG_BLK_INLINE_ENCRYPTION))]
        {
            false
        }
    }

    /// Returns whether the device is a partition rather than a whole disk.
    pub fn is_partition(&self) -> bool {
        // SAFETY: By the type invariant the device is valid.
        unsafe { bindings::bdev_is_partition(self.as_raw()) }
    }

    /// Returns the whole disk the device belongs to: the device itself unless it is a partition
    /// (`bdev_whole()`).
    pub fn whole(&self) -> &BlockDevice {
        // SAFETY: By the type invariant the device is valid. Its disk and the disk's `part0` are
        // set when the device is created and never change; a partition holds a reference to the
        // device of its disk, which is `part0`, so `part0` outlives the partition.
        unsafe { BlockDevice::from_raw((*(*self.as_raw()).bd_disk).part0) }
    }

    /// Freezes the device (`bdev_freeze()`) until the returned guard is dropped or thawed.
    ///
    /// If a filesystem is mounted on the device, the filesystem is frozen: writes to it block,
    /// and its dirty data and metadata are written to the device. Otherwise the dirty pages of
    /// the device's page cache are written back (`sync_blockdev()`), and the freeze is only
    /// counted: writes to the device itself are not blocked. Freezes nest; the device is thawed
    /// when the last guard goes away.
    ///
    /// Fails if the filesystem cannot be frozen, or with `EBUSY` while a filesystem removing the
    /// device from itself denies freezes.
    ///
    /// Process context only: this may sleep, for as long as the writeback takes.
    pub fn freeze(&self) -> Result<FreezeGuard<'_>> {
        // SAFETY: By the type invariant the device is valid.
        to_result(unsafe { bindings::bdev_freeze(self.as_raw()) })?;
        // INVARIANT: The freeze succeeded.
        Ok(FreezeGuard { bdev: self })
    }
}

// SAFETY: A `struct block_device` can be used from any thread; the accessors above only read
// fields that are set when the device is created, or read state the way C code does, and
// `bdev_freeze()` and `bdev_thaw()` do their own locking.
unsafe impl Sync for BlockDevice {}

/// A freeze of a block device, made by [`BlockDevice::freeze`]; dropping it thaws the device.
///
/// The guard may be dropped on another thread than the one that froze the device. Dropping it
/// may sleep (for as long as the thaw of a filesystem takes); a thaw that fails on drop is
/// reported in the kernel log. Use [`FreezeGuard::thaw`] to see the error instead.
///
/// # Invariants
///
/// `bdev` was frozen with `bdev_freeze()`, and this guard owns that freeze.
#[must_use = "the device is thawed when the guard is dropped"]
pub struct FreezeGuard<'a> {
    bdev: &'a BlockDevice,
}

impl FreezeGuard<'_> {
    /// Returns the frozen device.
    pub fn bdev(&self) -> &BlockDevice {
        self.bdev
    }

    /// Thaws the device (`bdev_thaw()`), returning the error of the thaw.
    ///
    /// When it fails (the filesystem could not be thawed), the freeze stays counted on the
    /// device, as in C. Process context only: this may sleep.
    pub fn thaw(self) -> Result {
        let this = ManuallyDrop::new(self);
        // SAFETY: By the type invariant the device is valid and we own one freeze of it, which we
        // give up here; `this` is not dropped, so it is not thawed twice.
        to_result(unsafe { bindings::bdev_thaw(this.bdev.as_raw()) })
    }
}

impl Drop for FreezeGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the device is valid and we own one freeze of it, which we
        // give up here.
        let ret = unsafe { bindings::bdev_thaw(self.bdev.as_raw()) };
        if let Err(e) = to_result(ret) {
            crate::pr_warn!("block device {}: thaw failed: {:?}\n", self.bdev.dev(), e);
        }
    }
}

crate::impl_flags!(
    /// How a block device is opened by [`BlockDeviceFile::open`]: a combination of [`OpenMode`]s
    /// (`blk_mode_t` in C).
    ///
    /// Exclusive opens are made with [`BlockDeviceFile::open_exclusive`] and a [`Holder`], not
    /// with a mode (`BLK_OPEN_EXCL` follows from the holder).
    #[derive(Clone, Copy, Default, PartialEq, Eq)]
    pub struct OpenModes(u32);

    /// One way to open a block device, `BLK_OPEN_*` in C.
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub enum OpenMode {
        /// Open for reading (`BLK_OPEN_READ`).
        Read = bindings::BLK_OPEN_READ,
        /// Open for writing (`BLK_OPEN_WRITE`).
        Write = bindings::BLK_OPEN_WRITE,
    }
);

/// The identity of the owner of exclusive opens of block devices (the holder in C).
///
/// While one holder has a block device open exclusively, exclusive opens of it by any other
/// holder fail with `EBUSY`; opens by the same holder nest. Non-exclusive opens are not affected.
/// A partition and its whole disk cannot be held by different holders at the same time.
///
/// The identity of a holder is the address of its allocation: every [`BlockDeviceFile`] opened
/// for a holder keeps the holder's [`Arc`] alive, so that no other holder can be allocated at the
/// same address, and thus share its identity, while the device is held.
pub struct Holder {
    // Makes the type non-zero-sized, so that the address of every holder is its own.
    _identity: u8,
}

impl Holder {
    /// Allocates a new holder, different from every other one.
    pub fn new(flags: Flags) -> Result<Arc<Self>> {
        Ok(Arc::new(Holder { _identity: 0 }, flags)?)
    }

    /// Returns the holder pointer handed to C.
    fn as_ptr(this: &Arc<Self>) -> *mut c_void {
        Arc::as_ptr(this).cast_mut().cast()
    }
}

/// How a [`BlockDeviceFile`] got its file, and so how it gives it back.
#[derive(Clone, Copy)]
enum Opener {
    /// Opened with `bdev_file_open_by_dev()`; released with `bdev_fput()`.
    Dev,
    /// A reference to a block device file opened by someone else; released with `fput()`.
    Shared,
}

/// An opened block device: an owned reference to a block device file (`struct file` of the
/// block device).
///
/// The device stays open, and so valid, as long as the handle exists. Dropping the handle closes
/// it: a handle from [`open`](Self::open) or [`open_exclusive`](Self::open_exclusive) gives its
/// claim on the device up at once (`bdev_fput()`), so that the device can be opened exclusively
/// by another holder right after; the final close of the file may happen later. A handle from
/// [`from_file`](Self::from_file) or [`from_fd`](Self::from_fd) puts its reference to the file
/// (`fput()`).
///
/// # Invariants
///
/// - `file` is a block device file, opened through the block layer (its file operations are
///   `def_blk_fops`) and successfully, so `file_bdev()` is its block device, valid and open as
///   long as the file is.
/// - If `opener` is [`Opener::Dev`], this handle made `file` with `bdev_file_open_by_dev()` and
///   owns that open, exclusively for `_holder` if it is `Some`; `file` is not installed in any file
///   descriptor table.
/// - `_holder` is `None` unless `opener` is [`Opener::Dev`].
pub struct BlockDeviceFile {
    file: ManuallyDrop<ARef<File>>,
    opener: Opener,
    /// Keeps the identity of the holder of an exclusive open alive as long as the claim.
    _holder: Option<Arc<Holder>>,
}

impl BlockDeviceFile {
    /// Opens the block device `dev` non-exclusively (`bdev_file_open_by_dev()`).
    ///
    /// `mode` must contain [`OpenMode::Read`] or [`OpenMode::Write`] (`EINVAL` otherwise).
    /// Opening for writing does not check that the device is writable; see
    /// [`BlockDevice::is_read_only`]. Fails with `ENXIO` when there is no device `dev`.
    ///
    /// Only the device cgroup of the current task is checked: code that opens a device number it
    /// got from user space must check that the user may do so (e.g. `CAP_SYS_ADMIN`).
    ///
    /// Process context only: this may sleep (the first open of a disk may scan its partitions).
    pub fn open(dev: DevT, mode: impl Into<OpenModes>) -> Result<Self> {
        Self::open_by_dev(dev, mode.into(), None)
    }

    /// Opens the block device `dev` exclusively for `holder` (`bdev_file_open_by_dev()` with a
    /// holder).
    ///
    /// Fails with `EBUSY` while another holder holds the device, its whole disk, or (for a
    /// whole disk) one of its partitions; see [`Holder`]. Otherwise as [`open`](Self::open).
    pub fn open_exclusive(
        dev: DevT,
        mode: impl Into<OpenModes>,
        holder: &Arc<Holder>,
    ) -> Result<Self> {
        Self::open_by_dev(dev, mode.into(), Some(holder.clone()))
    }

    fn open_by_dev(dev: DevT, mode: OpenModes, holder: Option<Arc<Holder>>) -> Result<Self> {
        // `blk_to_file_flags()` warns about a mode that is neither.
        if !mode.contains_any(OpenMode::Read | OpenMode::Write) {
            return Err(EINVAL);
        }
        let holder_ptr = holder.as_ref().map_or(ptr::null_mut(), Holder::as_ptr);
        // SAFETY: `holder_ptr` is NULL, or points into an allocation (so it is neither NULL nor
        // an error pointer) that the returned handle keeps alive as long as the claim lasts. The
        // mode has no `BLK_OPEN_EXCL` without a holder. No holder operations are passed, so C
        // never dereferences the holder.
        let file = from_err_ptr(unsafe {
            bindings::bdev_file_open_by_dev(dev.as_raw(), mode.into(), holder_ptr, ptr::null())
        })?;
        let file = NonNull::new(file).ok_or(ENXIO)?;
        // SAFETY: `bdev_file_open_by_dev()` returned a new file, whose reference we own and give
        // to the `ARef`. The file is in no file descriptor table, so nobody calls `fdget_pos()`
        // on it.
        let file = unsafe { ARef::from_raw(file.cast::<File>()) };
        // INVARIANT: `bdev_file_open_by_dev()` opened the device successfully with
        // `def_blk_fops`, for `holder`.
        Ok(Self {
            file: ManuallyDrop::new(file),
            opener: Opener::Dev,
            _holder: holder,
        })
    }

    /// Makes a handle from a file that must be an opened block device.
    ///
    /// Fails with `ENOTBLK` if the file is not a block device special file, and `EINVAL` if it
    /// is one that was not opened through the block layer.
    pub fn from_file(file: ARef<File>) -> Result<Self> {
        let ptr = file.as_ptr();
        // SAFETY: `file` owns a reference to the file, so the file and its inode are valid. The
        // inode of a file, the type in its mode and the file operations of an opened file do not
        // change.
        let (mode, fops) = unsafe { ((*(*ptr).f_inode).i_mode, (*ptr).f_op) };
        if u32::from(mode) & bindings::S_IFMT != bindings::S_IFBLK {
            return Err(ENOTBLK);
        }
        #[allow(unused_unsafe, reason = "Safe since Rust 1.82.0")]
        // SAFETY: Only the address of the C static is taken.
        let blk_fops = unsafe { &raw const bindings::def_blk_fops };
        if !ptr::eq(fops, blk_fops) {
            return Err(EINVAL);
        }
        // INVARIANT: The file is a block device file with `def_blk_fops`. Files are only
        // reachable once `open()` succeeded (`fget()` does not return `O_PATH` files), so
        // `blkdev_open()` opened the device and pointed `f_mapping` to it.
        Ok(Self {
            file: ManuallyDrop::new(file),
            opener: Opener::Shared,
            _holder: None,
        })
    }

    /// Makes a handle from a file descriptor of the current task (`fget()`), which must be an
    /// opened block device.
    ///
    /// Fails with `EBADF` if `fd` is not an open file descriptor, otherwise as
    /// [`from_file`](Self::from_file). The handle does not depend on the file descriptor: the
    /// task may close it.
    ///
    /// # Safety
    ///
    /// There must not be any active `fdget_pos()` calls on the current thread (see
    /// [`LocalFile::assume_no_fdget_pos`]). This holds in an ioctl handler, for instance.
    pub unsafe fn from_fd(fd: u32) -> Result<Self> {
        let file = LocalFile::fget(fd)?;
        // SAFETY: The caller guarantees that there are no active `fdget_pos()` calls on the
        // current thread.
        let file = unsafe { LocalFile::assume_no_fdget_pos(file) };
        Self::from_file(file)
    }

    /// Returns the opened block device.
    pub fn bdev(&self) -> &BlockDevice {
        // SAFETY: By the type invariant the file is an opened block device file, whose block
        // device `file_bdev()` returns; it stays valid as long as the file, which `self` keeps.
        unsafe { BlockDevice::from_raw(bindings::file_bdev(self.file.as_ptr())) }
    }

    /// Returns the block device file.
    pub fn file(&self) -> &File {
        &self.file
    }
}

impl Drop for BlockDeviceFile {
    fn drop(&mut self) {
        // SAFETY: `self.file` is not used again: this is the destructor.
        let file = unsafe { ManuallyDrop::take(&mut self.file) };
        match self.opener {
            Opener::Dev => {
                // SAFETY: By the type invariant this handle opened the file with
                // `bdev_file_open_by_dev()` and owns that open; `ARef::into_raw()` gives up the
                // reference, which `bdev_fput()` takes over; it gives the claim up before it
                // returns. The holder, if any, is only released after this, when `self._holder`
                // is dropped, so it outlives the claim.
                unsafe { bindings::bdev_fput(ARef::into_raw(file).as_ptr().cast()) };
            }
            Opener::Shared => drop(file),
        }
    }
}

/// Block devices seen through a file kept by the kernel.
impl KernelFile {
    /// Turns the file, which must be an opened block device, into a handle of that device (see
    /// [`BlockDeviceFile::from_file`]), that keeps the device open, with the claim user space
    /// made when it opened it exclusively, if it did, for as long as the handle lives.
    pub fn into_block_device(self) -> Result<BlockDeviceFile> {
        // SAFETY: The handle uses the file only to keep the device open and to find it: its I/O
        // goes through bios, and nothing of it uses the file position, so an `fdget_pos()`
        // section of the task that opened the file does not matter.
        let file = unsafe { LocalFile::assume_no_fdget_pos(self.file) };
        BlockDeviceFile::from_file(file)
    }

    /// Returns the device number of the block device the file is, if it is one.
    pub fn block_device(&self) -> Option<DevT> {
        if self.file.file_type() != bindings::S_IFBLK {
            return None;
        }
        // SAFETY: The inode of an open file is valid while the file is; `i_rdev` does not change.
        Some(DevT::from_raw(unsafe { (*self.file.inode()).i_rdev }))
    }

    /// Returns the device number of the whole disk that holds the file system of the file, if
    /// that file system is on a block device.
    pub fn fs_disk(&self) -> Option<DevT> {
        // SAFETY: The inode of an open file is valid, and so is its super block, which the file
        // keeps alive; `s_bdev` does not change while it is mounted.
        let bdev = unsafe { (*(*self.file.inode()).i_sb).s_bdev };
        if bdev.is_null() {
            return None;
        }
        // SAFETY: `bdev` is the device of the mounted file system, alive while it is mounted; its
        // disk and the disk's whole-disk device live as long as it does.
        Some(DevT::from_raw(unsafe {
            (*(*(*bdev).bd_disk).part0).bd_dev
        }))
    }
}

#[cfg(CONFIG_RUST_BLOCK_KUNIT_TEST)]
#[macros::kunit_tests(rust_block_bdev)]
mod tests {
    use super::*;

    /// Capacity of a null_blk device with the default `gb=250`, in sectors.
    #[cfg(CONFIG_BLK_DEV_NULL_BLK)]
    const NULLB_SECTORS: u64 = 250 << (30 - SECTOR_SHIFT);

    /// Block size of a null_blk device with the default `bs=512`.
    #[cfg(CONFIG_BLK_DEV_NULL_BLK)]
    const NULLB_BLOCK_SIZE: u32 = 512;

    /// Returns the device number of the block device named `name`.
    #[cfg(CONFIG_BLK_DEV_NULL_BLK)]
    fn find_disk(name: &CStr) -> Result<DevT> {
        #[allow(unused_unsafe, reason = "Safe since Rust 1.82.0")]
        // SAFETY: Only the address of the C static is taken.
        let class = unsafe { &raw const bindings::block_class };
        // SAFETY: `block_class` is registered at boot, `name` is a NUL-terminated string that
        // outlives the call, and `device_match_name()` compares it with device names.
        let dev = unsafe {
            bindings::class_find_device(
                class,
                ptr::null(),
                name.as_char_ptr().cast(),
                Some(bindings::device_match_name),
            )
        };
        if dev.is_null() {
            return Err(ENODEV);
        }
        // SAFETY: `class_find_device()` returned a device with a reference, which we put.
        let devt = unsafe {
            let devt = (*dev).devt;
            bindings::put_device(dev);
            devt
        };
        Ok(DevT::from_raw(devt))
    }

    #[cfg(CONFIG_BLK_DEV_NULL_BLK)]
    fn nullb0() -> Result<DevT> {
        find_disk(c"nullb0")
    }

    /// Returns the count of freezes of `bdev`.
    #[cfg(CONFIG_BLK_DEV_NULL_BLK)]
    fn freeze_count(bdev: &BlockDevice) -> i32 {
        use core::sync::atomic::{AtomicI32, Ordering};

        // SAFETY: `bdev` is valid; `atomic_t` has the layout of an `AtomicI32`, and the counter is
        // only changed atomically.
        let count =
            unsafe { AtomicI32::from_ptr(&raw mut (*bdev.as_raw()).bd_fsfreeze_count.counter) };
        count.load(Ordering::Relaxed)
    }

    #[cfg(CONFIG_BLK_DEV_NULL_BLK)]
    #[test]
    fn open_by_dev_properties() -> Result {
        let dev = nullb0()?;
        let file = BlockDeviceFile::open(dev, OpenMode::Read)?;
        let bdev = file.bdev();
        assert_eq!(bdev.dev(), dev);
        assert_eq!(bdev.nr_sectors(), NULLB_SECTORS);
        assert_eq!(bdev.capacity_bytes(), NULLB_SECTORS << SECTOR_SHIFT);
        assert_eq!(bdev.logical_block_size(), NULLB_BLOCK_SIZE);
        assert!(!bdev.is_read_only());
        assert!(!bdev.has_integrity());
        assert!(!bdev.has_crypto_profile());
        assert!(!bdev.is_partition());
        assert_eq!(bdev.whole().dev(), dev);
        Ok(())
    }

    #[cfg(CONFIG_BLK_DEV_NULL_BLK)]
    #[test]
    fn open_modes() -> Result {
        let dev = nullb0()?;
        assert_eq!(
            BlockDeviceFile::open(dev, OpenModes::empty()).err(),
            Some(EINVAL)
        );
        let rw = BlockDeviceFile::open(dev, OpenMode::Read | OpenMode::Write)?;
        assert_eq!(rw.bdev().dev(), dev);
        assert_eq!(rw.bdev().nr_sectors(), NULLB_SECTORS);
        Ok(())
    }

    #[cfg(CONFIG_BLK_DEV_NULL_BLK)]
    #[test]
    fn open_missing_device() -> Result {
        let nullb = nullb0()?;
        // null_blk numbers its disks from minor 0 up; there is only one.
        let dev = DevT::new(nullb.major(), (1 << MINOR_BITS) - 1);
        assert_eq!(
            BlockDeviceFile::open(dev, OpenMode::Read).err(),
            Some(ENXIO)
        );
        let holder = Holder::new(GFP_KERNEL)?;
        assert_eq!(
            BlockDeviceFile::open_exclusive(dev, OpenMode::Read, &holder).err(),
            Some(ENXIO)
        );
        Ok(())
    }

    #[cfg(CONFIG_BLK_DEV_NULL_BLK)]
    #[test]
    fn exclusive_open() -> Result {
        let dev = nullb0()?;
        let a = Holder::new(GFP_KERNEL)?;
        let b = Holder::new(GFP_KERNEL)?;

        let a1 = BlockDeviceFile::open_exclusive(dev, OpenMode::Read, &a)?;
        assert_eq!(
            BlockDeviceFile::open_exclusive(dev, OpenMode::Read, &b).err(),
            Some(EBUSY)
        );
        // The same holder may open again, and non-exclusive opens are not affected.
        let a2 = BlockDeviceFile::open_exclusive(dev, OpenMode::Read | OpenMode::Write, &a)?;
        let shared = BlockDeviceFile::open(dev, OpenMode::Read)?;

        drop(a1);
        assert_eq!(
            BlockDeviceFile::open_exclusive(dev, OpenMode::Read, &b).err(),
            Some(EBUSY)
        );
        drop(a2);
        let b1 = BlockDeviceFile::open_exclusive(dev, OpenMode::Read, &b)?;
        assert_eq!(
            BlockDeviceFile::open_exclusive(dev, OpenMode::Read, &a).err(),
            Some(EBUSY)
        );
        drop(b1);
        drop(shared);

        // Each open kept its holder alive; all of them are gone now.
        assert!(Arc::into_unique_or_drop(a).is_some());
        assert!(Arc::into_unique_or_drop(b).is_some());
        Ok(())
    }

    #[cfg(CONFIG_BLK_DEV_NULL_BLK)]
    #[test]
    fn freeze_and_thaw() -> Result {
        let file = BlockDeviceFile::open(nullb0()?, OpenMode::Read)?;
        let bdev = file.bdev();
        assert_eq!(freeze_count(bdev), 0);

        let outer = bdev.freeze()?;
        assert_eq!(freeze_count(bdev), 1);
        let inner = bdev.freeze()?;
        assert_eq!(freeze_count(bdev), 2);
        drop(inner);
        assert_eq!(freeze_count(bdev), 1);
        assert_eq!(outer.bdev().dev(), bdev.dev());
        outer.thaw()?;
        assert_eq!(freeze_count(bdev), 0);

        // The device can be frozen again.
        let again = bdev.freeze()?;
        assert_eq!(freeze_count(bdev), 1);
        drop(again);
        assert_eq!(freeze_count(bdev), 0);
        Ok(())
    }

    #[cfg(CONFIG_BLK_DEV_NULL_BLK)]
    #[test]
    fn from_block_device_file() -> Result {
        let dev = nullb0()?;
        let holder = Holder::new(GFP_KERNEL)?;
        let opened = BlockDeviceFile::open_exclusive(dev, OpenMode::Read, &holder)?;
        let shared = BlockDeviceFile::from_file(opened.file().into())?;
        assert_eq!(shared.bdev().dev(), dev);
        assert!(ptr::eq(shared.bdev(), opened.bdev()));
        // Dropping the shared handle leaves the exclusive open in place.
        drop(shared);
        let other = Holder::new(GFP_KERNEL)?;
        assert_eq!(
            BlockDeviceFile::open_exclusive(dev, OpenMode::Read, &other).err(),
            Some(EBUSY)
        );
        Ok(())
    }

    #[test]
    fn from_file_refuses_other_files() -> Result {
        // The root directory of rootfs, mounted before any initcall runs.
        // SAFETY: The path is a NUL-terminated string.
        let dir = from_err_ptr(unsafe {
            bindings::filp_open(c"/".as_char_ptr(), bindings::O_RDONLY as c_int, 0)
        })?;
        let dir = NonNull::new(dir).ok_or(ENOENT)?;
        // SAFETY: `filp_open()` returned a new file, whose reference we give to the `ARef`. It is
        // in no file descriptor table.
        let dir = unsafe { ARef::from_raw(dir.cast::<File>()) };
        assert_eq!(BlockDeviceFile::from_file(dir).err(), Some(ENOTBLK));
        Ok(())
    }
}
