// SPDX-License-Identifier: GPL-2.0

//! The difference storage of a snapshot: where the old data of the chunks overwritten on the
//! origin devices is kept while the snapshot exists.
//!
//! Two backends sit behind one interface (as the exception stores of device mapper do):
//!
//! - a file: a regular file opened by user space on any file system (written with
//!   `vfs_iter_write`, so ext4, xfs and tmpfs alike), or an unnamed temporary file that the
//!   kernel makes in a directory given by user space and that goes away with the snapshot;
//! - a block device, kept open through the file user space gave (which it may have opened
//!   exclusively) for the life of the snapshot.
//!
//! Space is handed out from the start of the storage, in pieces of the chunk size of the device
//! asking, and never reused while the snapshot exists. Running out of space (the limit given at
//! creation, or the end of a block device) fails the allocation with `ENOSPC`, which breaks the
//! snapshot and never the origin.

use crate::blkio;
use crate::chunk::Buffer;
use kernel::{
    block::{
        bdev::{BlockDevice, BlockDeviceFile, DevT},
        bio::{BioSet, Operation},
    },
    fs::{
        file::Offset,
        file_io::{KernelFile, PageSegment, PageSegmentMut},
    },
    new_mutex,
    prelude::*,
    sync::{Arc, Mutex},
};

/// Where the data goes.
enum Backend {
    /// A regular file, given by user space or made by the kernel.
    File(KernelFile),
    /// A block device opened exclusively.
    Bdev(Arc<BdevStore>),
}

/// A block device used as difference storage.
struct BdevStore {
    file: BlockDeviceFile,
}

impl blkio::Device for BdevStore {
    fn bdev(&self) -> &BlockDevice {
        self.file.bdev()
    }
}

/// The difference storage of one snapshot.
///
/// # Invariants
///
/// `used <= limit`.
#[pin_data]
pub(crate) struct DiffStorage {
    backend: Backend,
    /// Size the storage may grow to, in bytes.
    limit: u64,
    /// Bytes handed out so far, from the start.
    #[pin]
    used: Mutex<u64>,
}

impl DiffStorage {
    /// Makes the storage from the file descriptor `fd` given to `IOCTL_BLKSNAP_SNAPSHOT_CREATE`,
    /// allowed to grow to `limit_sectors` sectors.
    ///
    /// `fd` may be a regular file or a block device opened for writing (the kernel keeps its own
    /// reference to the file, and so the exclusive claim user space may hold on the device), or
    /// a directory (an unnamed temporary file is made in it). Fails with `EINVAL` for a limit of
    /// 0, `EBADF` for a bad descriptor or a file not opened for writing, `EINVAL` for any other
    /// kind of file.
    pub(crate) fn from_fd(fd: u32, limit_sectors: u64) -> Result<impl PinInit<Self, Error>> {
        if limit_sectors == 0 {
            return Err(EINVAL);
        }
        let file = KernelFile::fget(fd)?;
        let (backend, limit) = if file.block_device().is_some() {
            if !file.is_writable() {
                return Err(EBADF);
            }
            let bdev = file.into_block_device()?;
            let size = bdev.bdev().capacity_bytes();
            (
                Backend::Bdev(Arc::new(BdevStore { file: bdev }, GFP_KERNEL)?),
                size,
            )
        } else if file.is_dir() {
            (Backend::File(file.create_tmpfile()?), u64::MAX)
        } else if file.is_regular() {
            if !file.is_writable() {
                return Err(EBADF);
            }
            (Backend::File(file), u64::MAX)
        } else {
            return Err(EINVAL);
        };
        let limit = limit.min(limit_sectors.saturating_mul(512));
        // INVARIANT: Nothing is used yet.
        Ok(try_pin_init!(Self {
            backend,
            limit,
            used <- new_mutex!(0),
        }? Error))
    }

    /// Makes the storage from a regular file, allowed to grow to `limit` bytes.
    #[cfg_attr(
        not(CONFIG_BLKSNAP_KUNIT_TEST),
        expect(dead_code, reason = "only the tests make storage without a descriptor")
    )]
    pub(crate) fn from_file(file: KernelFile, limit: u64) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            backend: Backend::File(file),
            limit,
            used <- new_mutex!(0),
        }? Error)
    }

    /// Returns whether the storage lies on the disk whose whole-disk device is `disk`: such a
    /// device cannot be snapshotted with it, since preserving its data would write to itself.
    pub(crate) fn is_on_disk(&self, disk: DevT) -> bool {
        match &self.backend {
            Backend::File(file) => file.fs_disk() == Some(disk),
            Backend::Bdev(store) => store.file.bdev().whole().dev() == disk,
        }
    }

    /// Returns the number of bytes handed out so far.
    pub(crate) fn used(&self) -> u64 {
        *self.used.lock()
    }

    /// Returns the size the storage may grow to, in bytes.
    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// Hands out `bytes` bytes of the storage; returns their offset. Fails with `ENOSPC` when
    /// the storage is full.
    pub(crate) fn alloc(&self, bytes: u64) -> Result<u64> {
        let mut used = self.used.lock();
        let end = used.checked_add(bytes).ok_or(ENOSPC)?;
        if end > self.limit {
            return Err(ENOSPC);
        }
        let offset = *used;
        // INVARIANT: `end <= limit`.
        *used = end;
        Ok(offset)
    }

    /// Writes the first `len` bytes of `buf` at `offset` of the storage. May sleep.
    pub(crate) fn write(
        &self,
        set: &Arc<BioSet>,
        offset: u64,
        buf: &Arc<Buffer>,
        len: usize,
    ) -> Result {
        match &self.backend {
            Backend::File(file) => {
                let pos = Offset::try_from(offset).map_err(|_| EFBIG)?;
                let pages = buf.pages();
                let segments = Buffer::ranges(len)
                    .map(|(i, n)| PageSegment::new(&pages[i], 0, n))
                    .collect_result()?;
                file.write_all_pages_at(segments, pos, GFP_NOIO)
            }
            Backend::Bdev(store) => blkio::sync(
                set,
                store.clone(),
                Operation::Write,
                offset >> 9,
                buf.clone(),
                len,
            )
            .map(|_| ()),
        }
    }

    /// Reads `len` bytes at `offset` of the storage into the start of `buf`, and gives it back.
    /// May sleep.
    pub(crate) fn read(
        &self,
        set: &Arc<BioSet>,
        offset: u64,
        mut buf: Buffer,
        len: usize,
    ) -> Result<Buffer> {
        match &self.backend {
            Backend::File(file) => {
                let pos = Offset::try_from(offset).map_err(|_| EFBIG)?;
                let mut segments = KVec::new();
                for (page, (_, n)) in buf.pages_mut().iter_mut().zip(Buffer::ranges(len)) {
                    segments.push(PageSegmentMut::new(page, 0, n)?, GFP_NOIO)?;
                }
                file.read_all_pages_at(segments, pos, GFP_NOIO)?;
                Ok(buf)
            }
            Backend::Bdev(store) => {
                blkio::sync(set, store.clone(), Operation::Read, offset >> 9, buf, len)
            }
        }
    }
}

/// Collects an iterator of results into a vector, or the first error.
trait CollectResult<T> {
    fn collect_result(self) -> Result<KVec<T>>;
}

impl<T, I: Iterator<Item = Result<T>>> CollectResult<T> for I {
    fn collect_result(self) -> Result<KVec<T>> {
        let mut v = KVec::new();
        for item in self {
            v.push(item?, GFP_NOIO)?;
        }
        Ok(v)
    }
}
