// SPDX-License-Identifier: GPL-2.0

//! In-kernel file I/O.
//!
//! Lets kernel code use a regular file as storage: positional reads and writes of page ranges
//! (`vfs_iter_read()` and `vfs_iter_write()` over a bvec iterator), `fsync`, `fallocate`, the size
//! of the file, an unnamed temporary file in a directory, and an unlinked tmpfs file.
//!
//! Except for [`LocalFile::size`], [`LocalFile::is_regular`] and [`LocalFile::is_dir`], they may
//! sleep and must be called in process context. None of them uses or changes the file position,
//! so they may be called concurrently on the same file. Code on the block I/O path
//! should call them in a [`NoIoScope`] and allocate with [`GFP_NOIO`], so that the memory
//! allocations of the file system do not recurse into the I/O being served.
//!
//! C headers: [`include/linux/fs.h`](srctree/include/linux/fs.h),
//! [`include/linux/uio.h`](srctree/include/linux/uio.h),
//! [`include/linux/falloc.h`](srctree/include/linux/falloc.h) and
//! [`include/linux/shmem_fs.h`](srctree/include/linux/shmem_fs.h)
//!
//! # Examples
//!
//! ```
//! use kernel::fs::{file_io::{PageSegment, PageSegmentMut}, File};
//! use kernel::memalloc::NoIoScope;
//! use kernel::page::{Page, PAGE_SIZE};
//!
//! let file = File::new_shmem(c"example", 0)?;
//! let src = Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?;
//! let mut dst = Page::alloc_page(GFP_KERNEL)?;
//!
//! let _noio = NoIoScope::new();
//! file.write_all_pages_at([PageSegment::new(&src, 0, PAGE_SIZE)?], 0, GFP_NOIO)?;
//! file.fsync(true)?;
//! assert_eq!(file.size(), PAGE_SIZE as i64);
//!
//! let read = file.read_pages_at([PageSegmentMut::new(&mut dst, 512, 1024)?], 0, GFP_NOIO)?;
//! assert_eq!(read, 1024);
//! # Ok::<(), Error>(())
//! ```
//!
//! [`NoIoScope`]: crate::memalloc::NoIoScope
//! [`GFP_NOIO`]: crate::alloc::flags::GFP_NOIO

use crate::{
    alloc::{Flags, KVec},
    bindings,
    error::{from_err_ptr, to_result},
    fs::{file::Offset, File, LocalFile},
    page::{Page, PAGE_SIZE},
    prelude::*,
    sync::aref::ARef,
};
use core::{mem::MaybeUninit, ptr::NonNull};

/// A byte range in a page, that is written to a file.
///
/// # Invariants
///
/// `len > 0` and `offset + len <= PAGE_SIZE`.
#[derive(Clone, Copy)]
pub struct PageSegment<'a> {
    page: &'a Page,
    offset: u32,
    len: u32,
}

impl<'a> PageSegment<'a> {
    /// Creates the segment of `len` bytes at `offset` in `page`.
    ///
    /// Returns [`EINVAL`] if `len` is zero or the range does not fit in the page.
    pub fn new(page: &'a Page, offset: usize, len: usize) -> Result<Self> {
        let (offset, len) = check_range(offset, len)?;
        // INVARIANT: Checked by `check_range`.
        Ok(Self { page, offset, len })
    }

    /// Creates the segment of the whole `page`.
    pub fn full(page: &'a Page) -> Self {
        // INVARIANT: `0 < PAGE_SIZE`, which fits in a `u32`.
        Self {
            page,
            offset: 0,
            len: PAGE_SIZE as u32,
        }
    }

    fn bvec(&self) -> bindings::bio_vec {
        bindings::bio_vec {
            bv_page: self.page.as_ptr(),
            bv_len: self.len,
            bv_offset: self.offset,
        }
    }
}

/// A byte range in a page, that is read from a file.
///
/// It borrows the page mutably since reading from the file writes to the page.
///
/// # Invariants
///
/// `len > 0` and `offset + len <= PAGE_SIZE`.
pub struct PageSegmentMut<'a> {
    page: &'a mut Page,
    offset: u32,
    len: u32,
}

impl<'a> PageSegmentMut<'a> {
    /// Creates the segment of `len` bytes at `offset` in `page`.
    ///
    /// Returns [`EINVAL`] if `len` is zero or the range does not fit in the page.
    pub fn new(page: &'a mut Page, offset: usize, len: usize) -> Result<Self> {
        let (offset, len) = check_range(offset, len)?;
        // INVARIANT: Checked by `check_range`.
        Ok(Self { page, offset, len })
    }

    /// Creates the segment of the whole `page`.
    pub fn full(page: &'a mut Page) -> Self {
        // INVARIANT: `0 < PAGE_SIZE`, which fits in a `u32`.
        Self {
            page,
            offset: 0,
            len: PAGE_SIZE as u32,
        }
    }

    fn bvec(&self) -> bindings::bio_vec {
        bindings::bio_vec {
            bv_page: self.page.as_ptr(),
            bv_len: self.len,
            bv_offset: self.offset,
        }
    }
}

fn check_range(offset: usize, len: usize) -> Result<(u32, u32)> {
    if len == 0 || offset > PAGE_SIZE || len > PAGE_SIZE - offset {
        return Err(EINVAL);
    }
    // Both are at most `PAGE_SIZE`, which fits in a `u32`.
    Ok((offset as u32, len as u32))
}

/// The bvecs of a request, in a vector allocated with the caller's flags.
///
/// # Invariants
///
/// Every entry is a valid bvec (`0 < bv_len` and `bv_offset + bv_len <= PAGE_SIZE`), whose page
/// stays valid while the `Bvecs` exists and, if the bvecs are read into, is not accessed by anyone
/// else meanwhile. `total` is the sum of the lengths, and is at most `isize::MAX`.
struct Bvecs {
    vecs: KVec<bindings::bio_vec>,
    total: usize,
}

impl Bvecs {
    /// Collects the bvecs of a request.
    ///
    /// # Safety
    ///
    /// The bvecs must be valid, and their pages must stay valid while the result exists and, if
    /// the bvecs are read into, not be accessed by anyone else meanwhile.
    unsafe fn new(iter: impl Iterator<Item = bindings::bio_vec>, flags: Flags) -> Result<Self> {
        let mut vecs = KVec::with_capacity(iter.size_hint().0, flags)?;
        let mut total: usize = 0;
        for bvec in iter {
            total = total.checked_add(bvec.bv_len as usize).ok_or(EINVAL)?;
            vecs.push(bvec, flags)?;
        }
        // `vfs_iter_read()` and `vfs_iter_write()` return the byte count as an `isize`.
        if isize::try_from(total).is_err() {
            return Err(EINVAL);
        }
        // INVARIANT: Guaranteed by the caller and checked above.
        Ok(Self { vecs, total })
    }
}

/// Direction of a transfer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// From the pages to the file (`ITER_SOURCE`, `vfs_iter_write`).
    Write,
    /// From the file to the pages (`ITER_DEST`, `vfs_iter_read`).
    Read,
}

crate::impl_flags!(
    /// Flags of [`LocalFile::fallocate`], a combination of [`FallocFlag`]s.
    ///
    /// The empty set allocates the range and extends the file if the range ends beyond its size
    /// (`FALLOC_FL_ALLOCATE_RANGE`).
    #[derive(Clone, Copy, Default, PartialEq, Eq)]
    pub struct FallocFlags(u32);

    /// A flag of [`LocalFile::fallocate`].
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub enum FallocFlag {
        /// Do not change the size of the file (`FALLOC_FL_KEEP_SIZE`).
        KeepSize = bindings::FALLOC_FL_KEEP_SIZE,
    }
);

impl LocalFile {
    /// Does one `vfs_iter_read` or `vfs_iter_write` of the bytes of `bvecs` from `done` on, at
    /// `pos + done` in the file.
    fn rw_once(&self, dir: Dir, bvecs: &Bvecs, pos: Offset, done: usize) -> Result<usize> {
        let mut iter = MaybeUninit::<bindings::iov_iter>::uninit();
        let direction = match dir {
            Dir::Write => bindings::ITER_SOURCE,
            Dir::Read => bindings::ITER_DEST,
        };
        // `done <= total <= isize::MAX`.
        let mut pos = pos.checked_add(done as Offset).ok_or(EINVAL)?;

        // SAFETY: `iter` is valid for writes and `iov_iter_bvec` initialises all of it. The bvecs
        // are valid by the type invariants of `Bvecs`, and `total` is their total length.
        unsafe {
            bindings::iov_iter_bvec(
                iter.as_mut_ptr(),
                direction,
                bvecs.vecs.as_ptr(),
                bvecs.vecs.len() as crate::ffi::c_ulong,
                bvecs.total,
            )
        };
        if done > 0 {
            // SAFETY: `iter` was initialised above; `done < total`, so the iterator has that many
            // bytes.
            unsafe { bindings::iov_iter_advance(iter.as_mut_ptr(), done) };
        }

        // SAFETY: The file is valid since `self` is a reference to it. `iter` was initialised
        // above and describes pages that live (and, for reads, are not accessed by anyone else)
        // until `bvecs` goes away, after the call since it is synchronous. `pos` is valid for
        // reads and writes.
        let ret = unsafe {
            match dir {
                Dir::Write => {
                    bindings::vfs_iter_write(self.as_ptr(), iter.as_mut_ptr(), &mut pos, 0)
                }
                Dir::Read => bindings::vfs_iter_read(self.as_ptr(), iter.as_mut_ptr(), &mut pos, 0),
            }
        };

        if ret < 0 {
            // `ret` is a negative errno, which fits in an `i32`.
            return Err(Error::from_errno(ret as i32));
        }
        // At most what was asked for, `total - done`.
        Ok((ret as usize).min(bvecs.total - done))
    }

    /// Transfers the bytes of `bvecs` from or to `pos` in the file, in as many calls as it takes
    /// if `all`.
    fn rw(&self, dir: Dir, bvecs: &Bvecs, pos: Offset, all: bool) -> Result<usize> {
        let mut done = 0;
        while done < bvecs.total {
            let n = self.rw_once(dir, bvecs, pos, done)?;
            if n == 0 && all {
                return Err(match dir {
                    // The file ends before the range does.
                    Dir::Read => EIO,
                    // The file system cannot store more.
                    Dir::Write => ENOSPC,
                });
            }
            done += n;
            if !all {
                break;
            }
        }
        Ok(done)
    }

    /// Writes the bytes of `segments` to the file at `pos` (`vfs_iter_write`).
    ///
    /// Returns the number of bytes written, which may be less than the total length of
    /// `segments`. The array of bvecs is allocated with `flags`. May sleep.
    pub fn write_pages_at<'a>(
        &self,
        segments: impl IntoIterator<Item = PageSegment<'a>>,
        pos: Offset,
        flags: Flags,
    ) -> Result<usize> {
        // SAFETY: The segments are valid by their type invariants, and they borrow their pages for
        // `'a`, which lasts at least until this function returns.
        let bvecs = unsafe { Bvecs::new(segments.into_iter().map(|s| s.bvec()), flags)? };
        self.rw(Dir::Write, &bvecs, pos, false)
    }

    /// Writes all the bytes of `segments` to the file at `pos`.
    ///
    /// Like [`LocalFile::write_pages_at`], but writes again after a short write. Returns
    /// [`ENOSPC`] if a write makes no progress, and the error of a failing write even if some of
    /// the bytes were written. May sleep.
    pub fn write_all_pages_at<'a>(
        &self,
        segments: impl IntoIterator<Item = PageSegment<'a>>,
        pos: Offset,
        flags: Flags,
    ) -> Result {
        // SAFETY: The segments are valid by their type invariants, and they borrow their pages for
        // `'a`, which lasts at least until this function returns.
        let bvecs = unsafe { Bvecs::new(segments.into_iter().map(|s| s.bvec()), flags)? };
        self.rw(Dir::Write, &bvecs, pos, true).map(|_| ())
    }

    /// Reads from the file at `pos` into the bytes of `segments` (`vfs_iter_read`).
    ///
    /// Returns the number of bytes read, which is less than the total length of `segments` if
    /// the file ends before, and `0` if `pos` is at or past its end. The array of bvecs is
    /// allocated with `flags`. May sleep.
    pub fn read_pages_at<'a>(
        &self,
        segments: impl IntoIterator<Item = PageSegmentMut<'a>>,
        pos: Offset,
        flags: Flags,
    ) -> Result<usize> {
        // SAFETY: The segments are valid by their type invariants, and they borrow their pages
        // exclusively for `'a`, which lasts at least until this function returns.
        let bvecs = unsafe { Bvecs::new(segments.into_iter().map(|s| s.bvec()), flags)? };
        self.rw(Dir::Read, &bvecs, pos, false)
    }

    /// Reads from the file at `pos` into all the bytes of `segments`.
    ///
    /// Like [`LocalFile::read_pages_at`], but reads again after a short read. Returns [`EIO`] if
    /// the file ends before the range does, and the error of a failing read even if some of the
    /// bytes were read. May sleep.
    pub fn read_all_pages_at<'a>(
        &self,
        segments: impl IntoIterator<Item = PageSegmentMut<'a>>,
        pos: Offset,
        flags: Flags,
    ) -> Result {
        // SAFETY: The segments are valid by their type invariants, and they borrow their pages
        // exclusively for `'a`, which lasts at least until this function returns.
        let bvecs = unsafe { Bvecs::new(segments.into_iter().map(|s| s.bvec()), flags)? };
        self.rw(Dir::Read, &bvecs, pos, true).map(|_| ())
    }

    /// Writes the dirty data of the file to its storage and waits for it (`vfs_fsync`).
    ///
    /// With `datasync`, metadata that is not needed to read the data back (like timestamps) is
    /// not written. May sleep.
    pub fn fsync(&self, datasync: bool) -> Result {
        // SAFETY: The file is valid since `self` is a reference to it.
        to_result(unsafe { bindings::vfs_fsync(self.as_ptr(), datasync.into()) })
    }

    /// Allocates storage for `len` bytes at `offset` in the file (`vfs_fallocate`).
    ///
    /// Without [`FallocFlag::KeepSize`], the file grows if the range ends beyond its end. Returns
    /// [`EOPNOTSUPP`] if the file system cannot do it. May sleep.
    pub fn fallocate(&self, flags: FallocFlags, offset: Offset, len: Offset) -> Result {
        // SAFETY: The file is valid since `self` is a reference to it. Every mode that `flags`
        // can express is accepted (or refused with an error) by `vfs_fallocate`.
        to_result(unsafe {
            bindings::vfs_fallocate(self.as_ptr(), u32::from(flags) as i32, offset, len)
        })
    }

    pub(crate) fn inode(&self) -> *mut bindings::inode {
        // SAFETY: The file is valid since `self` is a reference to it, and `f_inode` does not
        // change after the file is opened.
        unsafe { (*self.as_ptr()).f_inode }
    }

    pub(crate) fn file_type(&self) -> u32 {
        // SAFETY: The inode of an open file is valid while the file is. Only the permission bits
        // of `i_mode` may change, so reading the type bits with `READ_ONCE` semantics is fine.
        let mode = unsafe { core::ptr::addr_of!((*self.inode()).i_mode).read_volatile() };
        u32::from(mode) & bindings::S_IFMT
    }

    /// Returns the size of the file in bytes (`i_size_read`).
    pub fn size(&self) -> Offset {
        // SAFETY: The inode of an open file is valid while the file is.
        unsafe { bindings::i_size_read(self.inode()) }
    }

    /// Returns whether the file is a regular file.
    pub fn is_regular(&self) -> bool {
        self.file_type() == bindings::S_IFREG
    }

    /// Returns whether the file is a directory.
    pub fn is_dir(&self) -> bool {
        self.file_type() == bindings::S_IFDIR
    }
}

/// A file that the kernel keeps, to read and write it at explicit positions from any thread.
///
/// It is made from a file descriptor of the current task ([`KernelFile::fget`]) or is a file the
/// kernel created for itself ([`File::create_tmpfile_in`]), which must never be installed in a
/// file descriptor table: a `KernelFile` cannot be turned into an [`ARef<File>`].
///
/// It only gives access to operations that do not use the file position (`f_pos`): that is what
/// makes it safe to use from other threads even though the file may be in use by the task that
/// opened it, possibly within an `fdget_pos()` section that skipped the position lock.
///
/// # Invariants
///
/// `file` is a reference to an open file; no method of this type uses its position.
pub struct KernelFile {
    pub(crate) file: ARef<LocalFile>,
}

// SAFETY: The file reference may be dropped on any thread, and the operations offered do not use
// the file position, whose accesses are what `LocalFile` keeps on one thread.
unsafe impl Send for KernelFile {}

// SAFETY: See `Send`: the operations are thread-safe in C.
unsafe impl Sync for KernelFile {}

impl KernelFile {
    /// Takes a reference to the file open as `fd` in the current task.
    ///
    /// Returns [`EBADF`] if `fd` is not an open file descriptor.
    pub fn fget(fd: u32) -> Result<Self> {
        let file = LocalFile::fget(fd).map_err(|_| EBADF)?;
        // INVARIANT: `fget` returned a reference to an open file.
        Ok(Self { file })
    }

    /// Keeps `file` for the kernel, with the operations of a `KernelFile` only.
    pub fn from_file(file: ARef<File>) -> Self {
        let local: &LocalFile = &file;
        // INVARIANT: A new reference to the same open file.
        Self {
            file: ARef::from(local),
        }
    }

    /// See [`LocalFile::read_all_pages_at`].
    pub fn read_all_pages_at<'a>(
        &self,
        segments: impl IntoIterator<Item = PageSegmentMut<'a>>,
        pos: Offset,
        flags: Flags,
    ) -> Result {
        self.file.read_all_pages_at(segments, pos, flags)
    }

    /// See [`LocalFile::write_all_pages_at`].
    pub fn write_all_pages_at<'a>(
        &self,
        segments: impl IntoIterator<Item = PageSegment<'a>>,
        pos: Offset,
        flags: Flags,
    ) -> Result {
        self.file.write_all_pages_at(segments, pos, flags)
    }

    /// See [`LocalFile::fsync`].
    pub fn fsync(&self, datasync: bool) -> Result {
        self.file.fsync(datasync)
    }

    /// See [`LocalFile::fallocate`].
    pub fn fallocate(&self, flags: FallocFlags, offset: Offset, len: Offset) -> Result {
        self.file.fallocate(flags, offset, len)
    }

    /// See [`LocalFile::size`].
    pub fn size(&self) -> Offset {
        self.file.size()
    }

    /// See [`LocalFile::is_regular`].
    pub fn is_regular(&self) -> bool {
        self.file.is_regular()
    }

    /// See [`LocalFile::is_dir`].
    pub fn is_dir(&self) -> bool {
        self.file.is_dir()
    }

    /// Creates an unnamed temporary regular file in this file, which must be a directory; see
    /// [`File::create_tmpfile_in`].
    pub fn create_tmpfile(&self) -> Result<KernelFile> {
        File::create_tmpfile_in(&self.file)
    }

    /// Returns whether the file was opened for writing.
    pub fn is_writable(&self) -> bool {
        self.file.flags() & bindings::O_ACCMODE != bindings::O_RDONLY
    }
}

impl File {
    /// Creates an unnamed temporary regular file in the directory `dir`.
    ///
    /// The file is opened for reading and writing, has mode `0600`, belongs to the current
    /// credentials and is not linked into the directory, so it goes away with its last reference
    /// (`kernel_tmpfile_open`). The file is for kernel-internal use: it is not counted in the
    /// number of open files, so it must not be installed in a file descriptor table, which the
    /// returned [`KernelFile`] does not allow.
    ///
    /// Returns [`ENOTDIR`] if `dir` is not a directory, [`EOPNOTSUPP`] if its file system has no
    /// unnamed temporary files, and the errors of creating a file in the directory otherwise.
    /// Must be called in process context; it may sleep.
    pub fn create_tmpfile_in(dir: &LocalFile) -> Result<KernelFile> {
        if !dir.is_dir() {
            return Err(ENOTDIR);
        }

        let dir = dir.as_ptr();
        // SAFETY: `dir` is a valid file, so its `f_path` is valid and does not change.
        let path = unsafe { core::ptr::addr_of!((*dir).__bindgen_anon_1.f_path) };
        // SAFETY: `path` is valid as shown above.
        let mnt = unsafe { (*path).mnt };

        // SAFETY: `mnt` is a valid mount, kept by `dir`.
        to_result(unsafe { bindings::mnt_want_write(mnt) })?;

        // SAFETY: `dir` is a valid file and `path` its path. The idmap and the credentials are
        // valid for the duration of the call. The mode and flags are those of a regular file.
        let file = unsafe {
            bindings::kernel_tmpfile_open(
                bindings::file_mnt_idmap(dir),
                path,
                (bindings::S_IFREG | 0o600) as bindings::umode_t,
                (bindings::O_RDWR | bindings::O_LARGEFILE) as i32,
                bindings::current_cred(),
            )
        };

        // SAFETY: Paired with the successful `mnt_want_write` above.
        unsafe { bindings::mnt_drop_write(mnt) };

        // SAFETY: `file` is a new file of which we own the reference.
        let file = unsafe { Self::from_new_file(file) }?;
        Ok(KernelFile::from_file(file))
    }

    /// Creates an unnamed temporary regular file in the directory open as the file descriptor
    /// `dir_fd` of the current task.
    ///
    /// Like [`File::create_tmpfile_in`]; returns [`EBADF`] if `dir_fd` is not an open file
    /// descriptor. Must be called in process context; it may sleep.
    pub fn create_tmpfile(dir_fd: u32) -> Result<KernelFile> {
        let dir = LocalFile::fget(dir_fd)?;
        Self::create_tmpfile_in(&dir)
    }

    /// Creates an unlinked file in the internal tmpfs mount, of `size` bytes
    /// (`shmem_file_setup`).
    ///
    /// The file is opened for reading and writing. `name` is the name shown for it, for example
    /// in `/proc/<pid>/maps`. Its memory is accounted like that of a shared memory segment: `size`
    /// upfront, more as it grows. Must be called in process context; it may sleep.
    pub fn new_shmem(name: &CStr, size: Offset) -> Result<ARef<File>> {
        // SAFETY: `name` is a valid NUL-terminated string for the duration of the call. Empty VMA
        // flags ask for the default accounting.
        let file = unsafe {
            bindings::shmem_file_setup(name.as_char_ptr(), size, bindings::vma_flags_t::default())
        };

        // SAFETY: `file` is a new file of which we own the reference.
        unsafe { Self::from_new_file(file) }
    }

    /// Takes the reference to a file that was just created, or the error it encodes.
    ///
    /// # Safety
    ///
    /// `file` is an error pointer, or a pointer to a valid file that was just created, which is
    /// in no file descriptor table, and of which the caller owns a reference.
    unsafe fn from_new_file(file: *mut bindings::file) -> Result<ARef<File>> {
        let file = from_err_ptr(file)?;
        let file = NonNull::new(file).ok_or(ENOMEM)?;

        // SAFETY: We own the reference, passed to the `ARef`.
        //
        // INVARIANT: The file is in no file descriptor table, so there are no `fdget_pos` calls
        // on it.
        Ok(unsafe { ARef::from_raw(file.cast()) })
    }
}

#[cfg(CONFIG_RUST_FILE_IO_KUNIT_TEST)]
#[macros::kunit_tests(rust_file_io)]
mod tests {
    use super::*;
    use crate::memalloc::NoIoScope;

    const PAGES: usize = 3;

    fn pattern(seed: u8, i: usize) -> u8 {
        seed.wrapping_add((i % 251) as u8)
    }

    fn fill(page: &Page, seed: u8) -> Result {
        let mut buf = KVec::with_capacity(PAGE_SIZE, GFP_KERNEL)?;
        for i in 0..PAGE_SIZE {
            buf.push(pattern(seed, i), GFP_KERNEL)?;
        }
        // SAFETY: `buf` is valid for reading `PAGE_SIZE` bytes, and nobody else uses `page`.
        unsafe { page.write_raw(buf.as_ptr(), 0, PAGE_SIZE) }
    }

    fn contents(page: &Page) -> Result<KVec<u8>> {
        let mut buf = KVec::from_elem(0u8, PAGE_SIZE, GFP_KERNEL)?;
        // SAFETY: `buf` is valid for writing `PAGE_SIZE` bytes, and nobody else uses `page`.
        unsafe { page.read_raw(buf.as_mut_ptr(), 0, PAGE_SIZE)? };
        Ok(buf)
    }

    fn pages(flags: Flags) -> Result<KVec<Page>> {
        let mut v = KVec::with_capacity(PAGES, GFP_KERNEL)?;
        for _ in 0..PAGES {
            v.push(Page::alloc_page(flags)?, GFP_KERNEL)?;
        }
        Ok(v)
    }

    #[test]
    fn segments_are_checked() -> Result {
        let mut page = Page::alloc_page(GFP_KERNEL)?;
        assert!(PageSegment::new(&page, 0, PAGE_SIZE).is_ok());
        assert!(PageSegment::new(&page, PAGE_SIZE - 1, 1).is_ok());
        assert_eq!(PageSegment::new(&page, 0, 0).err(), Some(EINVAL));
        assert_eq!(PageSegment::new(&page, 1, PAGE_SIZE).err(), Some(EINVAL));
        assert_eq!(
            PageSegment::new(&page, PAGE_SIZE + 1, 1).err(),
            Some(EINVAL)
        );
        assert_eq!(
            PageSegmentMut::new(&mut page, usize::MAX, 2).err(),
            Some(EINVAL)
        );
        Ok(())
    }

    #[test]
    fn write_then_read_back() -> Result {
        let file = File::new_shmem(c"rust_file_io", 0)?;
        assert!(file.is_regular());
        assert!(!file.is_dir());
        assert_eq!(file.size(), 0);

        let src = pages(GFP_KERNEL)?;
        for (i, page) in src.iter().enumerate() {
            fill(page, i as u8 * 7 + 1)?;
        }

        // Three whole pages and half of a fourth at 1000 bytes into the file.
        const POS: Offset = 1000;
        let half = PAGE_SIZE / 2;
        let total = PAGES * PAGE_SIZE + half;
        {
            let _noio = NoIoScope::new();
            let segs = Iterator::chain(
                src.iter().map(PageSegment::full),
                [PageSegment::new(&src[0], half, half)?],
            );
            assert_eq!(file.write_pages_at(segs, POS, GFP_NOIO)?, total);
        }
        assert_eq!(file.size(), POS + total as Offset);
        file.fsync(false)?;
        file.fsync(true)?;

        // Read back into other pages, as the same segments.
        let mut dst = pages(GFP_KERNEL | __GFP_ZERO)?;
        let mut last = Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?;
        {
            let segs = Iterator::chain(
                dst.iter_mut().map(PageSegmentMut::full),
                [PageSegmentMut::new(&mut last, half, half)?],
            );
            file.read_all_pages_at(segs, POS, GFP_KERNEL)?;
        }
        for (s, d) in src.iter().zip(dst.iter()) {
            assert!(contents(s)?[..] == contents(d)?[..]);
        }
        let want = contents(&src[0])?;
        let got = contents(&last)?;
        assert!(got[half..] == want[half..]);
        assert!(got[..half].iter().all(|&b| b == 0));

        // Bytes before `POS` read as zeroes.
        let mut head = Page::alloc_page(GFP_KERNEL)?;
        fill(&head, 0xff)?;
        let n = file.read_pages_at(
            [PageSegmentMut::new(&mut head, 0, POS as usize)?],
            0,
            GFP_KERNEL,
        )?;
        assert_eq!(n, POS as usize);
        assert!(contents(&head)?[..POS as usize].iter().all(|&b| b == 0));
        Ok(())
    }

    #[test]
    fn read_past_end() -> Result {
        let file = File::new_shmem(c"rust_file_io", 0)?;
        let src = Page::alloc_page(GFP_KERNEL)?;
        fill(&src, 3)?;
        file.write_all_pages_at([PageSegment::full(&src)], 0, GFP_KERNEL)?;

        let mut dst = pages(GFP_KERNEL)?;
        let mut it = dst.iter_mut();
        let (Some(a), Some(b)) = (it.next(), it.next()) else {
            return Err(ENOMEM);
        };

        // At the end: nothing.
        assert_eq!(
            file.read_pages_at([PageSegmentMut::full(a)], PAGE_SIZE as Offset, GFP_KERNEL)?,
            0
        );
        assert_eq!(
            file.read_pages_at([PageSegmentMut::full(a)], 1 << 30, GFP_KERNEL)?,
            0
        );

        // Across the end: short, and an error for the read-all variant.
        let half = (PAGE_SIZE / 2) as Offset;
        let n = file.read_pages_at(
            [PageSegmentMut::full(a), PageSegmentMut::full(b)],
            half,
            GFP_KERNEL,
        )?;
        assert_eq!(n, PAGE_SIZE / 2);
        assert_eq!(
            file.read_all_pages_at([PageSegmentMut::full(a)], half, GFP_KERNEL),
            Err(EIO)
        );
        Ok(())
    }

    #[test]
    fn fallocate_grows() -> Result {
        let file = File::new_shmem(c"rust_file_io", 0)?;

        file.fallocate(FallocFlag::KeepSize.into(), 0, 4 * PAGE_SIZE as Offset)?;
        assert_eq!(file.size(), 0);

        file.fallocate(FallocFlags::empty(), 0, 2 * PAGE_SIZE as Offset)?;
        assert_eq!(file.size(), 2 * PAGE_SIZE as Offset);

        file.fallocate(
            FallocFlags::empty(),
            PAGE_SIZE as Offset,
            3 * PAGE_SIZE as Offset,
        )?;
        assert_eq!(file.size(), 4 * PAGE_SIZE as Offset);

        file.fallocate(FallocFlag::KeepSize.into(), 0, 8 * PAGE_SIZE as Offset)?;
        assert_eq!(file.size(), 4 * PAGE_SIZE as Offset);
        Ok(())
    }

    #[test]
    fn shmem_size() -> Result {
        let file = File::new_shmem(c"rust_file_io", 3 * PAGE_SIZE as Offset)?;
        assert_eq!(file.size(), 3 * PAGE_SIZE as Offset);
        assert_eq!(File::new_shmem(c"rust_file_io", -1).err(), Some(EINVAL));
        Ok(())
    }

    /// A private tmpfs mount, unmounted when dropped.
    ///
    /// Kernel threads, which run the tests, have a read-only empty root, so the test makes its own
    /// writable directory.
    struct TmpfsMount(NonNull<bindings::vfsmount>);

    impl TmpfsMount {
        fn new() -> Result<Self> {
            // SAFETY: The name is a valid NUL-terminated string.
            let fs_type = unsafe { bindings::get_fs_type(c"tmpfs".as_char_ptr()) };
            if fs_type.is_null() {
                return Err(ENODEV);
            }
            // SAFETY: `fs_type` is a registered file system type, of which we hold a reference.
            let mnt = unsafe { bindings::kern_mount(fs_type) };
            // SAFETY: Drops the reference of `get_fs_type`; the mount holds its own.
            unsafe { bindings::put_filesystem(fs_type) };
            let mnt = from_err_ptr(mnt)?;
            Ok(Self(NonNull::new(mnt).ok_or(ENOMEM)?))
        }

        fn open_root(&self) -> Result<ARef<File>> {
            let mnt = self.0.as_ptr();
            let path = bindings::path {
                mnt,
                // SAFETY: `mnt` is a valid mount until `self` is dropped.
                dentry: unsafe { (*mnt).mnt_root },
            };
            // SAFETY: `path` is valid, the file takes its own references to it. The credentials
            // are valid for the duration of the call.
            let file = unsafe {
                bindings::dentry_open(
                    &path,
                    (bindings::O_DIRECTORY | bindings::O_RDONLY) as i32,
                    bindings::current_cred(),
                )
            };
            // SAFETY: `dentry_open` returns a new file, in no file descriptor table, or an error.
            unsafe { File::from_new_file(file) }
        }
    }

    impl Drop for TmpfsMount {
        fn drop(&mut self) {
            // SAFETY: The mount came from `kern_mount`. Files still open on it keep it alive.
            unsafe { bindings::kern_unmount(self.0.as_ptr()) };
        }
    }

    #[test]
    fn tmpfile_in_dir() -> Result {
        let mount = TmpfsMount::new()?;
        let dir = mount.open_root()?;
        assert!(dir.is_dir());
        assert!(!dir.is_regular());

        // A regular file is not a directory.
        let shmem = File::new_shmem(c"rust_file_io", 0)?;
        assert_eq!(File::create_tmpfile_in(&shmem).err(), Some(ENOTDIR));

        let file = File::create_tmpfile_in(&dir)?;
        assert!(file.is_regular());
        assert_eq!(file.size(), 0);

        let src = Page::alloc_page(GFP_KERNEL)?;
        fill(&src, 9)?;
        file.write_all_pages_at([PageSegment::full(&src)], PAGE_SIZE as Offset, GFP_KERNEL)?;
        file.fsync(true)?;
        assert_eq!(file.size(), 2 * PAGE_SIZE as Offset);

        let mut dst = Page::alloc_page(GFP_KERNEL)?;
        file.read_all_pages_at(
            [PageSegmentMut::full(&mut dst)],
            PAGE_SIZE as Offset,
            GFP_KERNEL,
        )?;
        assert!(contents(&src)?[..] == contents(&dst)?[..]);

        // Each call makes a new file.
        let other = File::create_tmpfile_in(&dir)?;
        assert_eq!(other.size(), 0);
        Ok(())
    }

    #[test]
    fn tmpfile_bad_fd() {
        assert_eq!(File::create_tmpfile(u32::MAX).err(), Some(EBADF));
    }
}
