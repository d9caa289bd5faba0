// SPDX-License-Identifier: GPL-2.0

//! Snapshot images: one bio-based disk per device of a taken snapshot, named
//! `blksnap-image_MAJ:MIN` after its origin, that shows the device as it was at the take.
//!
//! A read of chunks that are all still on the origin goes there as a clone of the bio. Other bios
//! are served by a worker, which may sleep: each chunk a bio touches is read from the
//! difference storage, from the chunk's buffer, or from the origin (see `diff_area`). Writes are
//! allowed and never reach the origin: the chunk is preserved first, and the data is written to
//! its place in the difference storage. The blocks a write changes are marked in the change
//! tracker of the origin, in the map of the take and in the next one (as blksnap v6 does): a
//! backup read from the image after the write copies them, and the next backup copies them again
//! from the origin, which never had the write.

use crate::{
    cbt::Cbt,
    chunk::Buffer,
    diff_area::{copy_from_bio, copy_to_bio, DiffArea, ReadFrom},
};
use kernel::{
    block::{
        bio::{Operation, PendingBio, Status},
        bio_disk::{BioDisk, BioDiskBuilder, Operations},
    },
    impl_has_work, new_spinlock, new_work,
    prelude::*,
    sync::{Arc, ArcBorrow, SpinLock},
    workqueue::{OwnedQueue, Work, WorkItem},
};

/// The state of an image disk.
#[pin_data]
pub(crate) struct Image {
    area: Arc<DiffArea>,
    /// The change tracker of the origin.
    cbt: Arc<Cbt>,
    queue: &'static OwnedQueue,
    #[pin]
    pending: SpinLock<KVec<PendingBio>>,
    #[pin]
    work: Work<Image>,
}

impl_has_work! {
    impl HasWork<Self> for Image { self.work }
}

impl Image {
    /// Makes the image disk of `area`, served on `queue`; its writes are marked in `cbt`.
    pub(crate) fn create(
        area: Arc<DiffArea>,
        cbt: Arc<Cbt>,
        queue: &'static OwnedQueue,
    ) -> Result<BioDisk<Image>> {
        let dev = area.dev();
        let capacity = area.geometry().capacity();
        let block_size = area.origin().logical_block_size();
        let image = Arc::pin_init(
            pin_init!(Image {
                area,
                cbt,
                queue,
                pending <- new_spinlock!(KVec::new()),
                work <- new_work!("Image::work"),
            }),
            GFP_KERNEL,
        )?;
        BioDiskBuilder::new()
            .capacity_sectors(capacity)
            .logical_block_size(block_size)?
            .build(fmt!("blksnap-image_{}:{}", dev.major(), dev.minor()), image)
    }

    fn serve(&self, mut bio: PendingBio) {
        let result = match bio.op() {
            Operation::Read => self.read(&mut bio),
            Operation::Write => self.write(&mut bio),
            // Writes are synchronous: nothing is cached on the way to the storage.
            Operation::Flush => Ok(()),
            _ => Err(EOPNOTSUPP),
        };
        bio.end(match result {
            Ok(()) => Status::OK,
            Err(err) => Status::from_error(err),
        });
    }

    /// The byte range `[from, to)` of chunk `index` that the bio covers, as the byte offset of
    /// the chunk and the range in the device.
    fn span(&self, bio: &PendingBio, index: u64) -> (u64, u64, u64) {
        let g = self.area.geometry();
        let chunk_start = g.start(index) << 9;
        let chunk_end = chunk_start + g.len_bytes(index) as u64;
        let from = (bio.sector() << 9).max(chunk_start);
        let to = (bio.end_sector().unwrap_or(u64::MAX).saturating_mul(512)).min(chunk_end);
        (chunk_start, from, to)
    }

    fn read(&self, bio: &mut PendingBio) -> Result {
        let g = *self.area.geometry();
        let mut tmp = Some(Buffer::new(g.chunk_bytes(), GFP_NOIO)?);
        for index in g.chunks(bio.sector(), u64::from(bio.sectors())) {
            let (chunk_start, from, to) = self.span(bio, index);
            if from >= to {
                continue;
            }
            let offset = (from - chunk_start) as usize;
            let len = (to - from) as usize;
            let buf = tmp.take().ok_or(ENOMEM)?;
            let (src, buf) = self.area.read_chunk(index, offset, len, buf)?;
            match src {
                ReadFrom::Tmp => copy_to_bio(bio, from, buf.pages(), 0, len)?,
                ReadFrom::Buffer(chunk) => copy_to_bio(bio, from, chunk.pages(), offset, len)?,
            }
            tmp = Some(buf);
        }
        Ok(())
    }

    fn write(&self, bio: &mut PendingBio) -> Result {
        let g = *self.area.geometry();
        // Marked before any of it is written: a write that fails half-way is counted whole.
        if bio.sectors() > 0 {
            self.cbt
                .mark_image_write(bio.sector(), u64::from(bio.sectors()))?;
        }
        for index in g.chunks(bio.sector(), u64::from(bio.sectors())) {
            let (chunk_start, from, to) = self.span(bio, index);
            if from >= to {
                continue;
            }
            let len = (to - from) as usize;
            let mut buf = Buffer::new(len, GFP_NOIO)?;
            copy_from_bio(bio, from, buf.pages_mut(), len)?;
            let buf = Arc::new(buf, GFP_NOIO)?;
            self.area
                .write_chunk(index, (from - chunk_start) as usize, &buf, len)?;
        }
        Ok(())
    }
}

impl Operations for Image {
    type QueueData = Arc<Image>;

    fn submit_bio(image: ArcBorrow<'_, Image>, bio: PendingBio) {
        // A read of chunks that are all still on the origin needs neither the worker nor a copy.
        let bio = if bio.op() == Operation::Read {
            match image.area.read_from_origin(bio) {
                Some(bio) => bio,
                None => return,
            }
        } else {
            bio
        };
        let mut pending = image.pending.lock();
        let pushed = match pending.reserve(1, GFP_ATOMIC) {
            Ok(()) => pending.push_within_capacity(bio).map_err(|e| e.0),
            Err(_) => Err(bio),
        };
        drop(pending);
        match pushed {
            // Already queued if pending: it serves every bio queued when it runs.
            Ok(()) => {
                let _ = image.queue.enqueue(Arc::<Image>::from(image));
            }
            Err(bio) => bio.end(Status::from_error(ENOMEM)),
        }
    }
}

impl WorkItem for Image {
    type Pointer = Arc<Image>;

    fn run(this: Arc<Image>) {
        loop {
            let next = {
                let mut pending = this.pending.lock();
                if pending.is_empty() {
                    None
                } else {
                    pending.remove(0).ok()
                }
            };
            match next {
                Some(bio) => this.serve(bio),
                None => return,
            }
        }
    }
}
