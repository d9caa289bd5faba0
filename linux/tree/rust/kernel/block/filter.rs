// SPDX-License-Identifier: GPL-2.0

//! Block device filters.
//!
//! C header: [`include/linux/blk-filter.h`](srctree/include/linux/blk-filter.h)
//!
//! A block device filter sees the bios submitted to a block device before the device does. A
//! filter type registers under a name; user space attaches it to a block device with the
//! `BLKFILTER_ATTACH` ioctl, which creates the filter's per-device state, sends it commands with
//! `BLKFILTER_CTL` and detaches it with `BLKFILTER_DETACH`.
//!
//! In Rust a filter type is a type implementing [`Filter`]: a value of it is the per-device
//! state. A [`Registration`] owns the C operations of the type, pinned, and makes the type known
//! to the block layer until it is dropped. A filter sees each bio as a [`FilterBio`]: it lets the
//! bio go on to the device by returning, or takes it over as a [`PendingBio`] that it must end or
//! pass on later.
//!
//! # Examples
//!
//! A filter that counts the writes submitted to each device it is attached to:
//!
//! ```
//! use kernel::block::{
//!     bdev::BlockDevice,
//!     filter::{CtlBuffer, Filter, FilterBio, Registration},
//! };
//! use kernel::prelude::*;
//! use kernel::sync::atomic::{Atomic, Relaxed};
//!
//! struct WriteCounter {
//!     writes: Atomic<u64>,
//! }
//!
//! #[vtable]
//! impl Filter for WriteCounter {
//!     const NAME: &'static CStr = c"write-counter";
//!
//!     fn attach(bdev: &BlockDevice) -> impl PinInit<Self, Error> {
//!         pr_info!("counting the writes of {}\n", bdev.dev());
//!         try_init!(WriteCounter {
//!             writes: Atomic::new(0),
//!         })
//!     }
//!
//!     fn ctl(&self, cmd: u32, buf: &mut CtlBuffer<'_>) -> Result<u32> {
//!         match cmd {
//!             0 => {
//!                 buf.write(&self.writes.load(Relaxed))?;
//!                 Ok(0)
//!             }
//!             _ => Err(ENOTTY),
//!         }
//!     }
//!
//!     fn submit_bio(&self, bio: FilterBio<'_>) {
//!         if bio.op().is_write() {
//!             self.writes.add(1, Relaxed);
//!         }
//!         // Returning without taking the bio lets it go on to the device.
//!     }
//! }
//!
//! fn register(module: &'static ThisModule) -> impl PinInit<Registration<WriteCounter>, Error> {
//!     Registration::register(module)
//! }
//! # let _ = register;
//! ```

use crate::{
    bindings,
    block::{
        bdev::BlockDevice,
        bio::{Bio, PendingBio},
    },
    error::{to_result, VTABLE_DEFAULT_ERROR},
    ffi::{c_int, c_uint},
    prelude::*,
    transmute::{AsBytes, FromBytes},
    types::Opaque,
    uaccess::{UserSlice, UserSliceReader, UserSliceWriter},
};
use core::{
    marker::PhantomData,
    mem::{size_of, ManuallyDrop},
    ops::Deref,
    ptr::NonNull,
};

/// The argument buffer of a `BLKFILTER_CTL` command: a user-space buffer of a given capacity, and
/// the length reported back to user space.
///
/// The capacity is the size user space gave for the buffer and does not change; the reported
/// length starts equal to it, and the filter sets it to the number of bytes it used (or needs),
/// which the block layer copies back to user space.
pub struct CtlBuffer<'a> {
    ptr: UserPtr,
    capacity: u32,
    len: &'a mut u32,
}

impl CtlBuffer<'_> {
    /// Returns the size of the buffer in bytes, as given by user space.
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// Sets the length reported back to user space: the bytes used, or needed.
    pub fn set_len(&mut self, len: u32) {
        *self.len = len;
    }

    /// Returns the length that will be reported back to user space.
    pub fn reported_len(&self) -> u32 {
        *self.len
    }

    /// Returns the user-space address of the buffer.
    pub fn user_ptr(&self) -> UserPtr {
        self.ptr
    }

    /// Returns the whole buffer as a [`UserSlice`].
    pub fn user_slice(&self) -> UserSlice {
        UserSlice::new(self.ptr, self.capacity())
    }

    /// Returns a reader of the whole buffer.
    pub fn reader(&self) -> UserSliceReader {
        self.user_slice().reader()
    }

    /// Returns a writer of the whole buffer.
    pub fn writer(&self) -> UserSliceWriter {
        self.user_slice().writer()
    }

    /// Reads a `T` from the start of the buffer.
    ///
    /// Fails with [`EINVAL`] if the buffer is smaller than a `T` (reporting the size needed), with
    /// [`EFAULT`] if the buffer cannot be read.
    pub fn read<T: FromBytes>(&mut self) -> Result<T> {
        self.check_capacity::<T>()?;
        self.reader().read()
    }

    /// Writes `value` to the start of the buffer and reports its size as the length.
    ///
    /// Fails with [`EINVAL`] if the buffer is smaller than a `T` (reporting the size needed), with
    /// [`EFAULT`] if the buffer cannot be written.
    pub fn write<T: AsBytes>(&mut self, value: &T) -> Result {
        self.check_capacity::<T>()?;
        self.writer().write(value)?;
        self.set_len(size_of_u32::<T>());
        Ok(())
    }

    fn check_capacity<T>(&mut self) -> Result {
        if self.capacity() < size_of::<T>() {
            self.set_len(size_of_u32::<T>());
            return Err(EINVAL);
        }
        Ok(())
    }
}

/// The size of `T`, for a structure passed through ioctls (far smaller than 4 GiB).
fn size_of_u32<T>() -> u32 {
    u32::try_from(size_of::<T>()).unwrap_or(u32::MAX)
}

/// A bio submitted to a filtered device, seen by its filter before the device.
///
/// The filter may look at it through [`Bio`] and return, which lets it go on to the device, or
/// take it over with [`FilterBio::take`].
///
/// # Invariants
///
/// `bio` is a valid bio, submitted by someone who keeps its device and pages alive until it ends,
/// that nobody else changes or ends while this value exists. `taken` is the block layer's record
/// of whether the filter took the bio over.
pub struct FilterBio<'a> {
    bio: NonNull<bindings::bio>,
    taken: &'a mut bool,
}

impl FilterBio<'_> {
    /// Takes the bio over: it does not go on to the device when the filter returns, and is owed
    /// an end (or a submission) by the returned value.
    ///
    /// Passed on with [`PendingBio::submit_noacct`], the bio is not offered to this filter again.
    pub fn take(self) -> PendingBio {
        *self.taken = true;
        // SAFETY: By the type invariant the bio is valid and nobody else ends it; the block layer
        // learns from `taken` that it must not touch it either, so it is handed over.
        unsafe { PendingBio::from_raw(self.bio) }
    }
}

impl Deref for FilterBio<'_> {
    type Target = Bio;

    fn deref(&self) -> &Bio {
        // SAFETY: By the type invariant the bio is valid, not changed by anyone else and its
        // device is alive while `self` exists.
        unsafe { Bio::from_raw(self.bio.as_ptr()) }
    }
}

/// A block device filter type; a value of the implementing type is the state of the filter on
/// one block device.
///
/// The state is created by [`Filter::attach`] and dropped when the filter is detached from the
/// device (or the device goes away), once no callback is running any more.
#[vtable]
pub trait Filter: Sized + Send + Sync + 'static {
    /// Name of the filter type, unique among the registered filters, at most
    /// `BLKFILTER_NAME_LENGTH` (32) bytes.
    const NAME: &'static CStr;

    /// Creates the state of the filter for `bdev`.
    ///
    /// Called before the filter is published on the device, with nothing locked or frozen: I/O to
    /// the device goes on meanwhile, unseen by the filter. May sleep, allocate memory and do I/O.
    fn attach(bdev: &BlockDevice) -> impl PinInit<Self, Error>;

    /// The filter is about to be detached from its device (by `BLKFILTER_DETACH`, or because
    /// the device goes away), while [`Filter::submit_bio`] is still called.
    ///
    /// Called once, with the device's filter lock held (ordered with [`Registration::lock`]
    /// holders and [`Filter::ctl`]), before any bio can pass the device unfiltered: a filter that
    /// does work the device must not be without ends it here. Must not wait for I/O. The state
    /// is dropped later, once no [`Filter::submit_bio`] call is running.
    fn detaching(&self) {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Handles a `BLKFILTER_CTL` command `cmd` with its argument buffer `buf`.
    ///
    /// Serialized with attaching and detaching the filter; may sleep. A successful command
    /// returns a non-negative value for the ioctl to return. Without an implementation the block
    /// layer fails every command with [`ENOTTY`].
    fn ctl(&self, _cmd: u32, _buf: &mut CtlBuffer<'_>) -> Result<u32> {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Sees `bio` before the device does.
    ///
    /// Called in the context of the submitter, outside of any lock of the block layer, possibly
    /// on several CPUs at once. The bio goes on to the device when this returns, unless the filter
    /// took it over with [`FilterBio::take`]. Its sectors are relative to the device the filter is
    /// attached to; its device may be a partition of that device.
    fn submit_bio(&self, _bio: FilterBio<'_>) {
        build_error!(VTABLE_DEFAULT_ERROR)
    }
}

/// The per-device allocation: the C part the block layer sees, followed by the filter's state.
#[repr(C)]
#[pin_data]
struct Attached<T: Filter> {
    #[pin]
    flt: Opaque<bindings::blkfilter>,
    #[pin]
    data: T,
}

impl<T: Filter> Attached<T> {
    fn new(bdev: &BlockDevice) -> impl PinInit<Self, Error> + '_ {
        try_pin_init!(Self {
            flt: Opaque::uninit(),
            data <- T::attach(bdev),
        })
    }

    /// Returns the state of the filter embedding `flt`.
    ///
    /// # Safety
    ///
    /// `flt` must be the `flt` field of a live `Attached<T>` that outlives `'a`.
    unsafe fn data<'a>(flt: *mut bindings::blkfilter) -> &'a T {
        // SAFETY: `Opaque<blkfilter>` is a transparent wrapper, and the caller guarantees that
        // `flt` is the `flt` field of an `Attached<T>`, so the container pointer is in bounds.
        let attached = unsafe { kernel::container_of!(flt.cast::<Opaque<_>>(), Self, flt) };
        // SAFETY: The caller guarantees that the container is alive for `'a`; it is only ever
        // accessed through shared references until it is dropped in `detach_callback`.
        unsafe { &(*attached).data }
    }
}

/// The registration of a filter type with the block layer: it owns the C operations of the type.
///
/// The filter type can be attached to block devices while the registration exists. Dropping it
/// unregisters the type, and waits until every filter of the type has been detached (the block
/// layer counts them): their operations are part of the registration.
///
/// # Invariants
///
/// `ops` holds a `struct blkfilter_operations` whose callbacks are those of `T`, registered with
/// the block layer by this registration until it is dropped.
#[pin_data(PinnedDrop)]
pub struct Registration<T: Filter> {
    #[pin]
    ops: Opaque<bindings::blkfilter_operations>,
    _t: PhantomData<T>,
}

// SAFETY: The C structure is only changed by the block layer, under its own locks, once it is
// registered; the registration may be dropped on any thread.
unsafe impl<T: Filter> Send for Registration<T> {}

// SAFETY: `&Registration` only gives access to the operations' address.
unsafe impl<T: Filter> Sync for Registration<T> {}

impl<T: Filter> Registration<T> {
    /// Registers the filter type `T`, owned by `module`.
    ///
    /// Fails with [`EINVAL`] if the name of `T` is too long, with [`EBUSY`] if a filter type of
    /// that name is registered already.
    pub fn register(module: &'static ThisModule) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            ops <- Opaque::try_ffi_init(move |ops: *mut bindings::blkfilter_operations| {
                if T::NAME.to_bytes().len() > bindings::BLKFILTER_NAME_LENGTH as usize {
                    return Err(EINVAL);
                }
                // SAFETY: `ops` is valid for writes, and nobody else knows it yet. All-zeroes is
                // a valid `struct blkfilter_operations` (null pointers, an unused list entry).
                unsafe {
                    ops.write(pin_init::zeroed());
                    (*ops).owner = module.as_ptr();
                    (*ops).name = crate::str::as_char_ptr_in_const_context(T::NAME);
                    (*ops).attach = Some(attach_callback::<T>);
                    (*ops).detaching = if T::HAS_DETACHING {
                        Some(detaching_callback::<T>)
                    } else {
                        None
                    };
                    (*ops).detach = Some(detach_callback::<T>);
                    (*ops).ctl = if T::HAS_CTL {
                        Some(ctl_callback::<T>)
                    } else {
                        None
                    };
                    (*ops).submit_bio = Some(submit_bio_callback::<T>);
                }
                // SAFETY: The structure is fully set up, pinned, and stays registered until the
                // registration is dropped, which unregisters it first.
                to_result(unsafe { bindings::blkfilter_register(ops) })
            }),
            _t: PhantomData,
        })
    }

    fn as_raw(&self) -> *mut bindings::blkfilter_operations {
        self.ops.get()
    }

    /// Returns the filter of this type attached to `bdev`, if there is one.
    ///
    /// The filter stays attached while the returned guard lives: its device's filter lock is held
    /// (so the guard must not be held while attaching, detaching or sending commands to a filter
    /// of the same device).
    pub fn lock<'a>(&'a self, bdev: &'a BlockDevice) -> Option<Locked<'a, T>> {
        // SAFETY: The device is valid; `blkfilter_lock` returns with the lock held exactly when
        // it returns a filter.
        let flt = unsafe { bindings::blkfilter_lock(bdev.as_raw(), self.as_raw()) };
        let flt = NonNull::new(flt)?;
        // INVARIANT: The filter was made by these operations, so by `attach_callback::<T>`, and
        // the lock is held.
        Some(Locked {
            flt,
            bdev,
            _reg: PhantomData,
        })
    }
}

#[pinned_drop]
impl<T: Filter> PinnedDrop for Registration<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: By the type invariant the operations are registered. `blkfilter_unregister`
        // returns once no attach is in progress and no filter of the type is attached any more,
        // so nothing uses the operations after the registration is gone.
        unsafe { bindings::blkfilter_unregister(self.as_raw()) };
    }
}

/// The filter of type `T` attached to a device, kept attached while this guard lives.
///
/// # Invariants
///
/// `flt` is the `flt` field of a live `Attached<T>`, attached to `bdev`, whose filter lock is
/// held by this guard.
pub struct Locked<'a, T: Filter> {
    flt: NonNull<bindings::blkfilter>,
    bdev: &'a BlockDevice,
    _reg: PhantomData<&'a Registration<T>>,
}

impl<T: Filter> Deref for Locked<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: By the type invariant the filter is an `Attached<T>` that stays attached, so
        // alive, while the guard lives.
        unsafe { Attached::<T>::data(self.flt.as_ptr()) }
    }
}

impl<T: Filter> Drop for Locked<'_, T> {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the guard holds the device's filter lock.
        unsafe { bindings::blkfilter_unlock(self.bdev.as_raw()) };
    }
}

/// Attaches a filter of the type registered as `name` to `bdev`, as `BLKFILTER_ATTACH` does.
///
/// Fails with [`ENOENT`] if no such type is registered, [`ENODEV`] if the device is going away,
/// [`EALREADY`] if a filter of that type is attached already, [`EBUSY`] if one of another type
/// is, or with the error of the filter's attach or of freezing the device.
pub fn attach(bdev: &BlockDevice, name: &CStr) -> Result {
    // SAFETY: The device and the name are valid for the call.
    to_result(unsafe { bindings::blkfilter_attach(bdev.as_raw(), name.as_char_ptr()) })
}

/// Detaches the filter of the type registered as `name` from `bdev`, as `BLKFILTER_DETACH` does.
///
/// Fails as the ioctl does ([`ENOENT`] without a filter, [`EINVAL`] for one of another type).
pub fn detach(bdev: &BlockDevice, name: &CStr) -> Result {
    // SAFETY: The device and the name are valid for the call.
    to_result(unsafe { bindings::blkfilter_detach(bdev.as_raw(), name.as_char_ptr()) })
}

/// Waits until every [`Filter::submit_bio`] call in progress anywhere has returned.
///
/// A filter that changes state its `submit_bio` reads (turning on copy-on-write when a snapshot
/// is taken, say) calls this afterwards: every bio that may have seen the old state has left the
/// filter by the time it returns. May sleep.
pub fn fence() {
    // SAFETY: No precondition; it may sleep, which the caller allows.
    unsafe { bindings::blkfilter_fence() };
}

/// Prepares a wait for the writes in flight on the devices `bdevs`, made later with
/// [`Drain::wait`].
///
/// The queue freeze that the wait makes first switches the counter of the queue's users to atomic
/// mode, which waits for an RCU grace period: this makes that switch now, while I/O still flows,
/// so that the wait itself is short (see `blkfilter_drain_prepare()`). The devices share one
/// grace period. Dropping the [`Drain`] without waiting switches the counters back. Fails with
/// [`EINVAL`] for more than `u32::MAX` devices. May sleep.
pub fn prepare_drain<'a>(bdevs: &'a [&'a BlockDevice]) -> Result<Drain<'a>> {
    let nr = u32::try_from(bdevs.len()).map_err(|_| EINVAL)?;
    // SAFETY: By `raw_bdevs`, the array holds `nr` pointers to block devices that are valid for
    // the call (they are borrowed); the call may sleep, which the caller allows.
    unsafe { bindings::blkfilter_drain_prepare(raw_bdevs(bdevs), nr) };
    // INVARIANT: The devices were just prepared.
    Ok(Drain { bdevs, nr })
}

/// Returns `bdevs` as the C array of `struct block_device *` that it is laid out as.
fn raw_bdevs(bdevs: &[&BlockDevice]) -> *const *mut bindings::block_device {
    // A `&BlockDevice` is a pointer to the transparent wrapper of the C type.
    bdevs.as_ptr().cast::<*mut bindings::block_device>()
}

/// Devices prepared for a wait for their writes in flight; see [`prepare_drain`].
///
/// # Invariants
///
/// `bdevs` holds `nr` devices, for which `blkfilter_drain_prepare()` was called, and neither
/// `blkfilter_drain()` nor `blkfilter_drain_cancel()` since.
pub struct Drain<'a> {
    bdevs: &'a [&'a BlockDevice],
    nr: u32,
}

impl Drain<'_> {
    /// Waits until the writes in flight on the devices have completed; call it after [`fence`].
    ///
    /// On a blk-mq device, every request that had entered the queue has completed on return. On
    /// a bio-based device, it waits until the device's I/O accounting counts no write in flight;
    /// a bio-based driver that does not account its I/O is waited for only until its
    /// `submit_bio` returns. Fails with [`ETIMEDOUT`] if that took more than `timeout_ms`
    /// milliseconds in all. The count includes writes submitted meanwhile, so a filter holds
    /// back those it takes over. A bio that had passed the hook but not entered the queue yet
    /// may still reach the device later (see `Documentation/block/blkfilter.rst`). May sleep;
    /// not to be called from [`Filter::submit_bio`].
    pub fn wait(self, timeout_ms: u32) -> Result {
        let this = ManuallyDrop::new(self);
        // SAFETY: By the type invariant, the array holds `nr` valid devices that were prepared;
        // `this` is not dropped, so they are not cancelled as well. The call may sleep, which
        // the caller allows.
        to_result(unsafe { bindings::blkfilter_drain(raw_bdevs(this.bdevs), this.nr, timeout_ms) })
    }
}

impl Drop for Drain<'_> {
    fn drop(&mut self) {
        // SAFETY: By the type invariant, the array holds `nr` valid devices that were prepared,
        // and neither drained nor cancelled yet.
        unsafe { bindings::blkfilter_drain_cancel(raw_bdevs(self.bdevs), self.nr) };
    }
}

/// # Safety
///
/// Called by the block layer with a valid block device that it holds during the call.
unsafe extern "C" fn attach_callback<T: Filter>(
    bdev: *mut bindings::block_device,
) -> *mut bindings::blkfilter {
    // SAFETY: The block layer passes a valid device and holds it during the call.
    let bdev = unsafe { BlockDevice::from_raw(bdev) };
    let attached = match KBox::pin_init(Attached::<T>::new(bdev), GFP_KERNEL) {
        Ok(attached) => attached,
        Err(e) => return e.to_ptr(),
    };
    // SAFETY: The allocation is handed to the block layer, which gives it back exactly once, to
    // `detach_callback`, where it is dropped in place without having moved. The block layer sets
    // the operations of the C part.
    let attached = KBox::into_raw(unsafe { Pin::into_inner_unchecked(attached) });
    // SAFETY: `attached` is valid, and `flt` is the C part it reserves for the block layer.
    unsafe { (*attached).flt.get() }
}

/// # Safety
///
/// Called by the block layer at most once per filter made by `attach_callback::<T>`, before
/// `detach_callback`, with the filter alive during the call.
unsafe extern "C" fn detaching_callback<T: Filter>(flt: *mut bindings::blkfilter) {
    // SAFETY: The filter is alive during the call, as the caller guarantees.
    let data = unsafe { Attached::<T>::data(flt) };
    T::detaching(data);
}

/// # Safety
///
/// Called by the block layer once per filter made by `attach_callback::<T>`, when no other
/// callback of the filter is running or will run.
unsafe extern "C" fn detach_callback<T: Filter>(flt: *mut bindings::blkfilter) {
    // SAFETY: `flt` is the `flt` field of an `Attached<T>` made by `attach_callback::<T>`.
    let attached = unsafe { kernel::container_of!(flt.cast::<Opaque<_>>(), Attached<T>, flt) };
    // SAFETY: The allocation came from `KBox::into_raw` in `attach_callback::<T>` and the block
    // layer gives it back once, with no other user left.
    drop(unsafe { KBox::from_raw(attached) });
}

/// # Safety
///
/// Called by the block layer with a filter made by `attach_callback::<T>` that stays attached
/// during the call, a user-space buffer, and a valid pointer to its length.
unsafe extern "C" fn ctl_callback<T: Filter>(
    flt: *mut bindings::blkfilter,
    cmd: c_uint,
    buf: *mut u8,
    plen: *mut u32,
) -> c_int {
    // SAFETY: The filter stays attached, so its state is alive, during the call.
    let data = unsafe { Attached::<T>::data(flt) };
    // SAFETY: The block layer passes a valid length that nothing else accesses during the call.
    let len = unsafe { &mut *plen };
    let mut arg = CtlBuffer {
        ptr: UserPtr::from_ptr(buf.cast()),
        capacity: *len,
        len,
    };
    match T::ctl(data, cmd, &mut arg) {
        Ok(ret) => c_int::try_from(ret).unwrap_or_else(|_| EOVERFLOW.to_errno()),
        Err(e) => e.to_errno(),
    }
}

/// # Safety
///
/// Called by the block layer with a filter made by `attach_callback::<T>` that stays alive
/// during the call and a valid bio that the caller owns, does not change during the call, and
/// does not touch afterwards if the call returns `true`.
unsafe extern "C" fn submit_bio_callback<T: Filter>(
    flt: *mut bindings::blkfilter,
    bio: *mut bindings::bio,
) -> bool {
    if !T::HAS_SUBMIT_BIO {
        return false;
    }
    // SAFETY: The block layer calls `detach_callback` only once no `submit_bio` call can be
    // running, so the filter is alive during the call.
    let data = unsafe { Attached::<T>::data(flt) };
    let mut taken = false;
    let Some(bio) = NonNull::new(bio) else {
        return false;
    };
    // INVARIANT: The bio is valid, its submitter keeps it alive until it ends, and the caller
    // does not touch it while the filter looks at it, nor afterwards if it is taken over.
    let fbio = FilterBio {
        bio,
        taken: &mut taken,
    };
    T::submit_bio(data, fbio);
    taken
}
