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
//! state. Its [`Operations`] live in a `static`: the C core links them into its list of filter
//! types, so they must never move, and every filter made by the type must point to them (the
//! core checks it), which is why [`Filter::operations`] names that `static`. A [`Registration`]
//! makes the filter type known to the block layer until it is dropped.
//!
//! # Examples
//!
//! A filter that counts the writes submitted to each device it is attached to:
//!
//! ```
//! use kernel::block::{
//!     bdev::BlockDevice,
//!     bio::Bio,
//!     filter::{CtlBuffer, Filter, Operations, Registration},
//! };
//! use kernel::prelude::*;
//! use kernel::sync::atomic::{Atomic, Relaxed};
//!
//! struct WriteCounter {
//!     writes: Atomic<u64>,
//! }
//!
//! static WRITE_COUNTER: Operations<WriteCounter> = Operations::new();
//!
//! #[vtable]
//! impl Filter for WriteCounter {
//!     const NAME: &'static CStr = c"write-counter";
//!
//!     fn operations() -> &'static Operations<Self> {
//!         &WRITE_COUNTER
//!     }
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
//!     fn submit_bio(&self, bio: &Bio) -> bool {
//!         if bio.op().is_write() {
//!             self.writes.add(1, Relaxed);
//!         }
//!         // Let the bio go on to the device.
//!         false
//!     }
//! }
//!
//! fn register(module: &'static ThisModule) -> Result<Registration<WriteCounter>> {
//!     Registration::register(module)
//! }
//! # let _ = register;
//! ```

use crate::{
    bindings,
    block::{bdev::BlockDevice, bio::Bio},
    error::{to_result, VTABLE_DEFAULT_ERROR},
    ffi::{c_int, c_uint},
    prelude::*,
    sync::atomic::{Atomic, Full, Relaxed, Release},
    transmute::{AsBytes, FromBytes},
    types::Opaque,
    uaccess::{UserSlice, UserSliceReader, UserSliceWriter},
};
use core::{marker::PhantomData, mem::size_of, ptr};

/// The argument buffer of a `BLKFILTER_CTL` command: a user-space buffer and its length.
///
/// On entry the length is the size of the buffer given by user space; the filter sets it to the
/// number of bytes it used (or needs), which the block layer reports back to user space.
pub struct CtlBuffer<'a> {
    ptr: UserPtr,
    len: &'a mut u32,
}

impl CtlBuffer<'_> {
    /// Returns the length of the buffer in bytes (as last set by [`CtlBuffer::set_len`]).
    pub fn len(&self) -> usize {
        *self.len as usize
    }

    /// Returns whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        *self.len == 0
    }

    /// Sets the length reported back to user space: the bytes used, or needed.
    pub fn set_len(&mut self, len: u32) {
        *self.len = len;
    }

    /// Returns the user-space address of the buffer.
    pub fn user_ptr(&self) -> UserPtr {
        self.ptr
    }

    /// Returns the whole buffer as a [`UserSlice`].
    pub fn user_slice(&self) -> UserSlice {
        UserSlice::new(self.ptr, self.len())
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
    /// Fails with [`EINVAL`] if the buffer is smaller than a `T` (setting the length to the size
    /// needed), with [`EFAULT`] if the buffer cannot be read.
    pub fn read<T: FromBytes>(&mut self) -> Result<T> {
        self.check_len::<T>()?;
        self.reader().read()
    }

    /// Writes `value` to the start of the buffer and sets the length to its size.
    ///
    /// Fails with [`EINVAL`] if the buffer is smaller than a `T` (setting the length to the size
    /// needed), with [`EFAULT`] if the buffer cannot be written.
    pub fn write<T: AsBytes>(&mut self, value: &T) -> Result {
        self.check_len::<T>()?;
        self.writer().write(value)?;
        self.set_len_of::<T>();
        Ok(())
    }

    fn check_len<T>(&mut self) -> Result {
        if self.len() < size_of::<T>() {
            self.set_len_of::<T>();
            return Err(EINVAL);
        }
        Ok(())
    }

    fn set_len_of<T>(&mut self) {
        // A structure passed through ioctls is far smaller than 4 GiB.
        *self.len = u32::try_from(size_of::<T>()).unwrap_or(u32::MAX);
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

    /// Returns the operations of the filter type, a `static` made with [`Operations::new`].
    fn operations() -> &'static Operations<Self>;

    /// Creates the state of the filter for `bdev`.
    ///
    /// Called with the queue of the device frozen, so no bio of the device is in flight; may
    /// sleep.
    fn attach(bdev: &BlockDevice) -> impl PinInit<Self, Error>;

    /// Handles a `BLKFILTER_CTL` command `cmd` with its argument buffer `buf`.
    ///
    /// Serialized with attaching and detaching the filter; may sleep. A successful command
    /// returns a non-negative value for the ioctl to return. Without an implementation the block
    /// layer fails every command with [`EOPNOTSUPP`].
    fn ctl(&self, _cmd: u32, _buf: &mut CtlBuffer<'_>) -> Result<u32> {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Sees `bio` before the device does.
    ///
    /// Called in the context of the submitter, outside of any lock of the block layer, possibly
    /// on several CPUs at once. Returns `true` if the filter has taken the bio over (it then must
    /// complete or resubmit it), `false` to let it go on to the device. With the borrowed view of
    /// the bio only `false` can be honoured; taking bios over needs an owned bio type.
    fn submit_bio(&self, _bio: &Bio) -> bool {
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

/// The operations of a filter type: the C `struct blkfilter_operations`.
///
/// Make one as a `static` with [`Operations::new`] and return it from [`Filter::operations`].
///
/// # Invariants
///
/// `ops` holds a `struct blkfilter_operations` whose callbacks are those of `T`. It is
/// registered with the block layer exactly when `registered` is `true`.
pub struct Operations<T: Filter> {
    ops: Opaque<bindings::blkfilter_operations>,
    registered: Atomic<bool>,
    _t: PhantomData<T>,
}

// SAFETY: The C structure is only changed before it is registered, by the single caller that
// won `registered`; afterwards the block layer serializes its own use of it.
unsafe impl<T: Filter> Sync for Operations<T> {}

impl<T: Filter> Default for Operations<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Filter> Operations<T> {
    /// Makes the operations of the filter type `T`.
    pub const fn new() -> Self {
        // INVARIANT: The callbacks are those of `T`, and the operations are not registered.
        Self {
            ops: Opaque::new(bindings::blkfilter_operations {
                link: bindings::list_head {
                    next: ptr::null_mut(),
                    prev: ptr::null_mut(),
                },
                owner: ptr::null_mut(),
                name: crate::str::as_char_ptr_in_const_context(T::NAME),
                attach: Some(attach_callback::<T>),
                detach: Some(detach_callback::<T>),
                ctl: if T::HAS_CTL {
                    Some(ctl_callback::<T>)
                } else {
                    None
                },
                submit_bio: Some(submit_bio_callback::<T>),
            }),
            registered: Atomic::new(false),
            _t: PhantomData,
        }
    }

    fn as_raw(&self) -> *mut bindings::blkfilter_operations {
        self.ops.get()
    }
}

/// The registration of a filter type with the block layer.
///
/// The filter type can be attached to block devices while the registration exists. Dropping it
/// unregisters the filter type; filters already attached stay attached until they are detached.
///
/// # Invariants
///
/// `T::operations()` is registered with the block layer, by this registration.
pub struct Registration<T: Filter> {
    _t: PhantomData<T>,
}

impl<T: Filter> Registration<T> {
    /// Registers the filter type `T`, owned by `module`.
    ///
    /// Fails with [`EBUSY`] if `T` is already registered, with [`EINVAL`] if its name is too
    /// long, or with the error of the block layer (a filter of the same name exists).
    pub fn register(module: &'static ThisModule) -> Result<Self> {
        if T::NAME.to_bytes().len() > bindings::BLKFILTER_NAME_LENGTH as usize {
            return Err(EINVAL);
        }
        let ops = T::operations();
        if ops.registered.xchg(true, Full) {
            return Err(EBUSY);
        }
        // SAFETY: Winning `registered` above gives exclusive access to the unregistered
        // structure; `module` is valid for as long as the module's code runs.
        unsafe { (*ops.as_raw()).owner = module.as_ptr() };
        // SAFETY: The structure is a valid `struct blkfilter_operations` in a `static`, so it
        // never moves and outlives the registration.
        if let Err(e) = to_result(unsafe { bindings::blkfilter_register(ops.as_raw()) }) {
            ops.registered.store(false, Relaxed);
            return Err(e);
        }
        // INVARIANT: The operations were just registered.
        Ok(Self { _t: PhantomData })
    }
}

impl<T: Filter> Drop for Registration<T> {
    fn drop(&mut self) {
        let ops = T::operations();
        // SAFETY: By the type invariant the operations are registered, by `self`.
        unsafe { bindings::blkfilter_unregister(ops.as_raw()) };
        ops.registered.store(false, Release);
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
    // `detach_callback`, where it is dropped in place without having moved.
    let attached = KBox::into_raw(unsafe { Pin::into_inner_unchecked(attached) });
    // SAFETY: `attached` is valid, and `flt` is the C part it reserves for the block layer.
    let flt = unsafe { (*attached).flt.get() };
    // SAFETY: `flt` is valid for writes; the operations are in a `static`, so they outlive every
    // filter that refers to them.
    unsafe { bindings::blkfilter_init(flt, T::operations().as_raw()) };
    flt
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
/// during the call and a valid bio that the caller owns and does not change during the call.
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
    // SAFETY: The bio is valid, submitted to a valid device, and not changed during the call.
    let bio = unsafe { Bio::from_raw(bio) };
    T::submit_bio(data, bio)
}
