// SPDX-License-Identifier: GPL-2.0

//! Bios made, filled and submitted by Rust code.
//!
//! C header: [`include/linux/bio.h`](srctree/include/linux/bio.h)

use super::{end_bio, Bio, BioSet, Flags, Operation, PendingBio, Status};
use crate::{
    alloc::Flags as AllocFlags, bindings, block::bdev::BlockDevice, page::Page, prelude::*,
    sync::Arc,
};
use core::{marker::PhantomData, ptr::NonNull};

/// The completion of a bio made with [`NewBio`]: the value owns what the I/O uses, and is handed
/// back, with the status, once the I/O is done.
pub trait EndIo: Sized + Send + 'static {
    /// Called once the I/O of the bio (and of the bios chained to it) is complete.
    ///
    /// Always runs in task context, never with a spinlock held or interrupts disabled, so it may
    /// sleep, and so may the destructors of what it drops. Devices complete I/O in interrupt
    /// context: the bio is marked `BIO_COMPLETE_IN_TASK`, which makes the block layer defer the
    /// call to a worker when the device completes it in atomic context.
    fn end_io(self, status: Status);
}

/// What a [`NewBio`] keeps in `bi_private` until it completes.
struct Context<T> {
    data: T,
    /// For a clone ([`PendingBio::clone_to`]): the bio it clones, ended after `data`'s
    /// completion, since the clone uses its pages.
    source: Option<PendingBio>,
    set: Arc<BioSet>,
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
///   submitted yet, whose `bi_end_io` is `end_io_callback::<T>`, which has the
///   `BIO_COMPLETE_IN_TASK` flag, and whose `bi_private` is a `Context<T>` from `KBox::into_raw`
///   holding a reference to that set.
/// - `bi_bdev` and every page added to the bio are borrowed from the context's `data`, or, for a
///   clone, belong to the context's `source`.
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
                source: None,
                set: set.clone(),
            },
            gfp,
        )?;
        // SAFETY: The device is borrowed from `data`, which the context keeps alive until the bio
        // completes; the context holds a reference to the set.
        let bio = unsafe { alloc_bio(set, bdev(&ctx.data), op, nr_vecs, gfp)? };
        // SAFETY: The bio was just allocated and nobody else knows it; the context owns what it
        // uses.
        Ok(unsafe { Self::from_parts(bio, ctx) })
    }

    /// Makes the value owning the unsubmitted bio `bio`, with `ctx` as its context.
    ///
    /// # Safety
    ///
    /// `bio` must be a bio allocated from `ctx.set` that nobody else knows, whose device and
    /// pages belong to what `ctx` owns.
    unsafe fn from_parts(bio: NonNull<bindings::bio>, ctx: KBox<Context<T>>) -> Self {
        let bio_ptr = bio.as_ptr();
        // SAFETY: The caller guarantees that the bio is ours alone.
        unsafe {
            (*bio_ptr).bi_end_io = Some(end_io_callback::<T>);
            (*bio_ptr).bi_private = KBox::into_raw(ctx).cast();
            (*bio_ptr).bi_flags |= 1 << bindings::BIO_COMPLETE_IN_TASK;
        }
        // INVARIANT: The bio is owned and set up as required; the caller guarantees the rest.
        Self {
            bio,
            _t: PhantomData,
        }
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
        let bio = unsafe { alloc_bio(&ctx.set, bdev(&ctx.data), op, nr_vecs, gfp)? };
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

impl PendingBio {
    /// Makes a clone of the bio aimed at the device that `bdev` borrows from `data`
    /// (`bio_alloc_clone()`), and hands it out as a [`NewBio`] carrying `data`.
    ///
    /// The clone shares this bio's pages, so this bio is kept by the clone: once the clone's
    /// I/O is done, `data`'s [`EndIo::end_io`] runs and then this bio is ended with the clone's
    /// status. Nothing else can end it in the meantime.
    ///
    /// On failure (no memory for the clone with `gfp`) the bio is given back with the error.
    pub fn clone_to<T, F>(
        self,
        set: &Arc<BioSet>,
        data: T,
        bdev: F,
        gfp: AllocFlags,
    ) -> core::result::Result<NewBio<T>, (Error, PendingBio)>
    where
        T: EndIo,
        F: for<'a> FnOnce(&'a T) -> &'a BlockDevice,
    {
        let ctx = match KBox::<Context<T>>::new_uninit(gfp) {
            Ok(ctx) => ctx,
            Err(e) => return Err((e.into(), self)),
        };
        // SAFETY: The source bio is valid and owned by `self`; the set is initialized. The clone
        // gets its device below, once the data that keeps the device alive is in place.
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
                data,
                source: Some(self),
                set: set.clone(),
            },
        );
        let bdev = bdev(&ctx.data).as_raw();
        // SAFETY: The clone was just allocated and nobody else knows it; `bdev` is kept alive by
        // the data in `ctx` until the clone completes.
        unsafe { bindings::bio_set_dev(clone.as_ptr(), bdev) };
        // SAFETY: The clone is ours alone; its device comes from the data and its pages belong to
        // the source bio, which the context owns and ends only after the clone's completion.
        Ok(unsafe { NewBio::from_parts(clone, ctx) })
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

/// # Safety
///
/// Called by the block layer, once, in task context (the bio has `BIO_COMPLETE_IN_TASK`), when
/// the I/O of a bio made by [`NewBio`] is complete.
unsafe extern "C" fn end_io_callback<T: EndIo>(bio: *mut bindings::bio) {
    // SAFETY: The bio is valid during the callback.
    let (ctx, status) = unsafe { ((*bio).bi_private.cast::<Context<T>>(), (*bio).bi_status) };
    // SAFETY: By the invariant of `NewBio`, `bi_private` came from `KBox::into_raw` and this is the
    // only place that takes it back, once.
    let Context { data, source, set } = KBox::into_inner(unsafe { KBox::from_raw(ctx) });
    // SAFETY: The I/O is complete and the bio is not used afterwards: the reference taken at the
    // allocation is dropped, which frees it. The set it came from is still alive: `set` holds it.
    unsafe { bindings::bio_put(bio) };
    let status = Status::from_raw(status);
    data.end_io(status);
    if let Some(source) = source {
        source.end(status);
    }
    drop(set);
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
