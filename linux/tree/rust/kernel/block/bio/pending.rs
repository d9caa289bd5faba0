// SPDX-License-Identifier: GPL-2.0

//! Bios handed over to Rust code, which owes them an end.
//!
//! C header: [`include/linux/bio.h`](srctree/include/linux/bio.h)

use super::{end_bio, Bio, BioSet, Operation, Status};
use crate::{
    alloc::Flags as AllocFlags,
    bindings,
    error::from_err_ptr,
    page::{BorrowedPage, Page, PAGE_SIZE},
    prelude::*,
    sync::Arc,
};
use core::{marker::PhantomData, ops::Deref, ptr::NonNull};

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

    pub(super) fn as_raw(&self) -> *mut bindings::bio {
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
    /// The part is chained to `self` (`bio_chain()`): the submitter sees one completion, once
    /// both are ended, with the error of either, and `self`'s pages stay with the submitter until
    /// then. Fails with [`EINVAL`] unless `0 < sectors <` [`Bio::sectors`], or for a zone append
    /// or an atomic write, which cannot be split.
    pub fn split(
        &mut self,
        sectors: u32,
        set: &Arc<BioSet>,
        gfp: AllocFlags,
    ) -> Result<PendingBio> {
        if sectors == 0 || sectors >= self.sectors() || self.op() == Operation::ZoneAppend {
            return Err(EINVAL);
        }
        let sectors = crate::ffi::c_int::try_from(sectors).map_err(|_| EINVAL)?;
        // SAFETY: The bio is valid and owned, the split point is inside it, and the set is
        // initialized.
        let split = from_err_ptr(unsafe {
            bindings::bio_split(self.as_raw(), sectors, gfp.as_raw(), set.as_raw())
        })?;
        let split = NonNull::new(split).ok_or(ENOMEM)?;
        // SAFETY: Both bios are valid; the split part is new, without `bi_private` nor
        // `bi_end_io`, and `self`'s bio is owed an end by `self`, so it has not ended. From now
        // on the end of the part (`bio_chain_endio`) frees it and ends one count of `self`'s bio.
        unsafe { bindings::bio_chain(split.as_ptr(), self.as_raw()) };
        // INVARIANT: The split part is chained to `self` and owed an end by the new value; its
        // pages are the submitter's, kept alive until `self`'s bio ends, which is after the part
        // ended. The new value holds a reference to the set until the part is freed.
        Ok(PendingBio {
            bio: split,
            set: Some(set.clone()),
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

    /// Returns the offset in its page where the segment starts.
    pub fn offset(&self) -> usize {
        self.offset
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

    /// Copies `len` bytes from `src` at `src_offset` into the segment at `at`.
    ///
    /// Fails with [`EINVAL`] if either range does not fit.
    pub fn copy_from_page(
        &mut self,
        at: usize,
        src: &Page,
        src_offset: usize,
        len: usize,
    ) -> Result {
        let end = at.checked_add(len).ok_or(EINVAL)?;
        if end > self.len {
            return Err(EINVAL);
        }
        let src_end = src_offset.checked_add(len).ok_or(EINVAL)?;
        if src_end > PAGE_SIZE {
            return Err(EINVAL);
        }
        with_mapped(src, |src| {
            // SAFETY: `src` maps a whole page, `src_offset + len` is within it, and nothing writes
            // to a page that is borrowed shared. By the type invariant nobody else accesses the
            // segment's range while the bio is owned, and `at + len` is within it.
            unsafe {
                self.page
                    .write_raw(src.add(src_offset), self.offset + at, len)
            }
        })
    }

    /// Copies `len` bytes of the segment at `at` into `dst` at `dst_offset`.
    ///
    /// Fails with [`EINVAL`] if either range does not fit.
    pub fn copy_to_page(&self, at: usize, dst: &mut Page, dst_offset: usize, len: usize) -> Result {
        let end = at.checked_add(len).ok_or(EINVAL)?;
        if end > self.len {
            return Err(EINVAL);
        }
        let dst_end = dst_offset.checked_add(len).ok_or(EINVAL)?;
        if dst_end > PAGE_SIZE {
            return Err(EINVAL);
        }
        with_mapped(dst, |dst| {
            // SAFETY: `dst` maps a whole page borrowed exclusively, `dst_offset + len` is within
            // it. By the type invariant nobody else writes the segment's range while the bio is
            // owned, and `at + len` is within it.
            unsafe {
                self.page
                    .read_raw(dst.add(dst_offset), self.offset + at, len)
            }
        })
    }

    /// Fills the segment with zeroes.
    pub fn zero(&mut self) -> Result {
        // SAFETY: By the type invariant nobody else accesses the range while the bio is owned.
        unsafe { self.page.fill_zero_raw(self.offset, self.len) }
    }
}

/// Runs `f` with the address where `page` is mapped (`kmap_local_page()`).
fn with_mapped<T>(page: &Page, f: impl FnOnce(*mut u8) -> T) -> T {
    // SAFETY: The page is valid; the mapping is undone below, on the same CPU, in reverse order
    // of any mapping `f` makes.
    let addr = unsafe { bindings::kmap_local_page(page.as_ptr()) };
    let ret = f(addr.cast());
    // SAFETY: `addr` came from `kmap_local_page` above.
    unsafe { bindings::kunmap_local(addr) };
    ret
}
