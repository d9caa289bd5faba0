// SPDX-License-Identifier: GPL-2.0

//! Bio sets: pools of bios that guarantee forward progress.
//!
//! C header: [`include/linux/bio.h`](srctree/include/linux/bio.h)

use crate::{bindings, error::to_result, prelude::*, types::Opaque};

/// A pool of bios that guarantees forward progress, `struct bio_set` in C.
///
/// Code that allocates bios while it serves I/O (a block device driver, a filter) must allocate
/// them from a bio set of its own, so that the allocation cannot wait for memory that only the
/// completion of that same I/O would free. A bio set is shared as an [`Arc`](crate::sync::Arc):
/// every bio allocated from it holds a reference until it is freed, so the set outlives its bios.
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

    pub(super) fn as_raw(&self) -> *mut bindings::bio_set {
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
