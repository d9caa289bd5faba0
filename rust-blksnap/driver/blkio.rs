// SPDX-License-Identifier: GPL-2.0

//! Bio I/O of whole chunk buffers: asynchronous, with a completion of the caller's, or
//! synchronous, for the paths that may sleep (snapshot image I/O, a block-device storage).

use crate::chunk::Buffer;
use kernel::{
    block::{
        bdev::BlockDevice,
        bio::{BioSet, EndIo, NewBio, Operation, Status},
    },
    new_spinlock,
    page::{Page, PAGE_SIZE},
    prelude::*,
    sync::{Arc, Completion, SpinLock},
};

/// Page vectors of one bio (`BIO_MAX_VECS`).
const MAX_VECS: usize = 256;

/// The data of a bio that reads or writes the first bytes of a chunk buffer.
pub(crate) trait PageIo: EndIo {
    /// The device of the I/O.
    fn bdev(&self) -> &BlockDevice;
    /// The pages of the buffer.
    fn pages(&self) -> &[Page];
}

/// Something that keeps a block device open.
pub(crate) trait Device: Send + Sync + 'static {
    /// The device.
    fn bdev(&self) -> &BlockDevice;
}

/// Submits `op` of the first `len` bytes of `data`'s pages at `sector` of its device, in as many
/// chained bios as it takes. `data.end_io()` runs once all of it is done, with an error if part
/// of it could not be set up.
///
/// Fails, dropping `data` without calling its `end_io`, only if the first bio cannot be
/// allocated, or if `len` is larger than the pages.
pub(crate) fn submit<T: PageIo>(
    set: &Arc<BioSet>,
    data: T,
    op: Operation,
    sector: u64,
    len: usize,
) -> Result {
    let nr_pages = len.div_ceil(PAGE_SIZE);
    if nr_pages > data.pages().len() {
        return Err(EINVAL);
    }
    let first = nr_pages.min(MAX_VECS);
    let mut bio = NewBio::new(set, data, |d| d.bdev(), op, first as u16, GFP_NOIO)?;
    bio.set_sector(sector);
    // On failure the bio is dropped unsubmitted, which ends it with an error.
    if fill(&mut bio, op, sector, len, nr_pages, first).is_ok() {
        bio.submit();
    }
    Ok(())
}

/// Adds the pages to `bio` and submits the chained bios for the pages past the first `first`.
fn fill<T: PageIo>(
    bio: &mut NewBio<T>,
    op: Operation,
    sector: u64,
    len: usize,
    nr_pages: usize,
    first: usize,
) -> Result {
    for page in 0..first {
        bio.add_page(|d| &d.pages()[page], page_len(len, page), 0)?;
    }
    let mut page = first;
    while page < nr_pages {
        let count = (nr_pages - page).min(MAX_VECS);
        let mut chained = bio.new_chained(|d| d.bdev(), op, count as u16, GFP_NOIO)?;
        chained.set_sector(sector + ((page * PAGE_SIZE) >> 9) as u64);
        for p in page..page + count {
            chained.add_page(|d| &d.pages()[p], page_len(len, p), 0)?;
        }
        chained.submit();
        page += count;
    }
    Ok(())
}

/// The bytes of page `page` that lie in the first `len` bytes of a buffer.
fn page_len(len: usize, page: usize) -> u32 {
    // At most a page.
    (len - page * PAGE_SIZE).min(PAGE_SIZE) as u32
}

/// Where a synchronous I/O reports its end.
#[pin_data]
struct Done<B: Send + Unpin> {
    #[pin]
    result: SpinLock<Option<(Status, B)>>,
    #[pin]
    done: Completion,
}

/// A synchronous I/O in flight: the device, the buffer, and where to report.
struct SyncIo<D: Device, B: AsRef<Buffer> + Send + Unpin + 'static> {
    dev: Arc<D>,
    buf: B,
    done: Arc<Done<B>>,
}

impl<D: Device, B: AsRef<Buffer> + Send + Unpin + 'static> EndIo for SyncIo<D, B> {
    fn end_io(self, status: Status) {
        let SyncIo { dev, buf, done } = self;
        *done.result.lock() = Some((status, buf));
        done.done.complete_all();
        drop(dev);
    }
}

impl<D: Device, B: AsRef<Buffer> + Send + Unpin + 'static> PageIo for SyncIo<D, B> {
    fn bdev(&self) -> &BlockDevice {
        self.dev.bdev()
    }

    fn pages(&self) -> &[Page] {
        self.buf.as_ref().pages()
    }
}

/// Does `op` of the first `len` bytes of `buf` at `sector` of `dev`, and waits for it. Returns
/// the buffer and the result. May sleep.
pub(crate) fn sync<D: Device, B: AsRef<Buffer> + Send + Unpin + 'static>(
    set: &Arc<BioSet>,
    dev: Arc<D>,
    op: Operation,
    sector: u64,
    buf: B,
    len: usize,
) -> Result<B> {
    let done = Arc::pin_init(
        pin_init!(Done {
            result <- new_spinlock!(None),
            done <- Completion::new(),
        }),
        GFP_NOIO,
    )?;
    let io = SyncIo {
        dev,
        buf,
        done: done.clone(),
    };
    submit(set, io, op, sector, len)?;
    done.done.wait_for_completion();
    let (status, buf) = done.result.lock().take().ok_or(EIO)?;
    status.to_result()?;
    Ok(buf)
}
