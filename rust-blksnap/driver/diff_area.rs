// SPDX-License-Identifier: GPL-2.0

//! The difference area of one device in a taken snapshot: its chunk map and copy-on-write.
//!
//! Copy-on-write: a write (or discard, write-zeroes, secure erase) that touches a chunk whose old
//! data is not preserved yet is taken over by the filter and held; the chunk's old data is read
//! from the origin into a buffer, and once every chunk the write touches is preserved the write
//! goes on to the device. The buffer is then written to the difference storage by a worker and
//! freed. So the origin's writes wait only for the read of old data, and for room when the
//! chunks in memory reach their bound; a write to a chunk that is preserved already costs a look
//! at the chunk map.
//!
//! Memory is bounded: at most `chunk_maximum_in_queue` chunks of the area are in memory (being
//! read or waiting for the storage), plus one for each image write in progress. A write that
//! needs more is held until the storage has taken some (the origin slows down to the storage's
//! pace, as in blksnap v6); its chunks are claimed one by one as room comes, so a write of any
//! size (a discard of the whole device) needs no allocation sized by it. The held writes are
//! kept in a tree by the first chunk they wait for, the chunks to read in arrival order, the
//! buffers by chunk: every step is O(log n) in the number of held writes and buffers.
//!
//! Reads of the snapshot image (see `image`) take each chunk from the difference storage, from
//! the chunk's buffer, or from the origin. While an image read is served from the origin, writes
//! to that chunk are held until it is done, so that the read sees the data of the snapshot. A
//! read none of whose chunks is preserved goes to the origin as a clone of the image's bio,
//! without a copy and without waiting; the others are served chunk by chunk by a worker.
//!
//! When the snapshot cannot be kept (the storage is full or fails, memory runs out, the device
//! goes away), the area is marked corrupted: held writes go on at once, buffers are freed, and
//! from then on writes pass untouched and image I/O fails. The origin is never harmed.

use crate::{
    blkio::{self, PageIo},
    chunk::{Buffer, Geometry, State},
    diff_storage::Shared,
    tracker::CopyOnWrite,
};
use core::ops::Range;
use kernel::{
    block::{
        bdev::{BlockDevice, BlockDeviceFile, DevT},
        bio::{EndIo, Flags, Operation, PendingBio, Segment, Status},
        filter::FilterBio,
    },
    impl_has_work, new_condvar, new_spinlock, new_work,
    page::{Page, PAGE_SIZE},
    prelude::*,
    rbtree::{RBTree, RBTreeNodeReservation},
    sync::{Arc, CondVar, SpinLock},
    workqueue::{Work, WorkItem},
};

/// A write held until the chunks it touches are preserved.
struct Waiter {
    bio: PendingBio,
    chunks: Range<u64>,
}

/// The key of a held write in [`Inner::blocked`]: the first chunk it waits for, and its arrival.
type BlockedKey = (u64, u64);

/// What a held write needs, allocated before the area's lock is taken. (The waiter is an
/// `Option` so that it can move to another key in the same node.)
struct Reservations {
    blocked: RBTreeNodeReservation<BlockedKey, Option<Waiter>>,
    to_read: RBTreeNodeReservation<u64, Range<u64>>,
}

impl Reservations {
    fn new() -> Result<Self> {
        Ok(Self {
            blocked: RBTreeNodeReservation::new(GFP_NOIO)?,
            to_read: RBTreeNodeReservation::new(GFP_NOIO)?,
        })
    }
}

/// The mutable state of a difference area.
///
/// # Invariants
///
/// `state` and `slot` have one entry per chunk. A chunk is in `buffered` exactly when its state
/// is [`State::Buffered`] (until the area is stopped). `in_memory` counts the chunks in state
/// [`State::Reading`] or [`State::Buffered`]. A held write is in `blocked` under the first chunk
/// of its range that is not preserved or has image readers. `readers` has an entry for a chunk
/// only while an image read of it from the origin is in flight.
struct Inner {
    state: KVVec<u8>,
    /// For a stored chunk, its place in the difference storage in 4 KiB units.
    slot: KVVec<u32>,
    /// The buffers of the buffered chunks, by chunk; the store takes them in that order.
    buffered: RBTree<u64, Arc<Buffer>>,
    readers: KVec<(u64, u32)>,
    /// The held writes.
    blocked: RBTree<BlockedKey, Option<Waiter>>,
    /// The ranges of the held writes whose chunks may still need reading, by arrival.
    to_read: RBTree<u64, Range<u64>>,
    /// The arrival number of the next held write.
    seq: u64,
    /// Chunks being read or waiting for the storage.
    in_memory: usize,
    /// The bound of `in_memory` for copy-on-write (image writes may go past it by one each).
    limit: usize,
    /// The most chunks that were in memory at once.
    peak: usize,
    /// While the take drains the origin ([`DiffArea::hold_reads`]): no read of old data starts.
    holding_reads: bool,
    /// The error that corrupted the area, or `ESHUTDOWN` once the snapshot is gone.
    error: Option<Error>,
}

impl Inner {
    fn state(&self, index: u64) -> State {
        self.state
            .get(index as usize)
            .map_or(State::Failed, |&s| State::from_u8(s))
    }

    fn set_state(&mut self, index: u64, state: State) {
        if let Some(s) = self.state.get_mut(index as usize) {
            *s = state as u8;
        }
    }

    /// Fails once the area is corrupted (`EIO`) or its snapshot is gone (`ENODEV`).
    fn usable(&self) -> Result {
        match self.error {
            None => Ok(()),
            Some(err) if err == ESHUTDOWN => Err(ENODEV),
            Some(_) => Err(EIO),
        }
    }

    /// Counts an image read from the origin of each chunk of `chunks`; on failure none is
    /// counted.
    fn add_readers(&mut self, chunks: Range<u64>) -> Result {
        let new = chunks
            .clone()
            .filter(|&c| !self.readers.iter().any(|&(i, _)| i == c))
            .count();
        self.readers.reserve(new, GFP_ATOMIC)?;
        for index in chunks {
            match self.readers.iter_mut().find(|(i, _)| *i == index) {
                Some((_, n)) => *n += 1,
                None => self
                    .readers
                    .push_within_capacity((index, 1))
                    .map_err(|_| ENOMEM)?,
            }
        }
        Ok(())
    }

    fn has_readers(&self, chunks: &Range<u64>) -> bool {
        self.readers.iter().any(|(i, _)| chunks.contains(i))
    }

    /// Whether a write to `chunks` may go on to the origin now.
    fn may_write(&self, chunks: &Range<u64>) -> bool {
        self.first_blocking(chunks.clone()).is_none()
    }

    /// Returns the first chunk of `chunks` that a write must wait for: not preserved, or read
    /// from the origin by the image.
    ///
    /// Called for every write after the take: the list of image reads is looked at only when it
    /// has entries, so the common case costs one state byte per chunk.
    fn first_blocking(&self, chunks: Range<u64>) -> Option<u64> {
        let not_preserved = |i: &u64| !self.state(*i).is_preserved();
        if self.readers.is_empty() {
            return chunks.into_iter().find(not_preserved);
        }
        chunks
            .into_iter()
            .find(|i| not_preserved(i) || self.has_readers(&(*i..*i + 1)))
    }

    /// Counts chunk `index`, moved to [`State::Reading`], as in memory.
    fn reading(&mut self, index: u64) {
        self.set_state(index, State::Reading);
        self.in_memory += 1;
        self.peak = self.peak.max(self.in_memory);
    }

    /// Claims the next chunk that copy-on-write must read, if there is room in memory for it:
    /// the first untouched chunk of the held writes, in their order of arrival.
    fn claim(&mut self) -> Option<u64> {
        if self.holding_reads || self.error.is_some() || self.in_memory >= self.limit {
            return None;
        }
        loop {
            let mut cursor = self.to_read.cursor_front_mut()?;
            let range = cursor.current_mut().1;
            let state = &self.state;
            while range.start < range.end
                && state.get(range.start as usize).copied() != Some(State::Untouched as u8)
            {
                range.start += 1;
            }
            if range.start < range.end {
                let index = range.start;
                range.start += 1;
                self.reading(index);
                return Some(index);
            }
            // Every chunk of that write is claimed: on to the next one.
            let _ = cursor.remove_current();
        }
    }

    /// Takes out the next held write from arrival `from` on that is keyed at chunk `index` (it
    /// waited for that chunk), and puts it back under the next chunk it waits for, if there is
    /// one, in the same node. Returns the arrival of the write, and its bio if it may go on.
    fn next_unblocked(&mut self, index: u64, from: u64) -> Option<(u64, Option<PendingBio>)> {
        let mut cursor = self.blocked.cursor_lower_bound_mut(&(index, from))?;
        let (&(at, seq), _) = cursor.current();
        if at != index {
            return None;
        }
        let waiter = cursor.current_mut().1.take();
        let (_, node) = cursor.remove_current();
        let Some(waiter) = waiter else {
            return Some((seq, None));
        };
        match self.first_blocking(index..waiter.chunks.end) {
            None => Some((seq, Some(waiter.bio))),
            Some(next) => {
                let node = node.into_reservation().into_node((next, seq), Some(waiter));
                self.blocked.insert(node);
                Some((seq, None))
            }
        }
    }
}

/// An image read sent to the origin as a clone ([`DiffArea::read_from_origin`]).
struct OriginRead {
    area: Arc<DiffArea>,
    chunks: Range<u64>,
}

impl EndIo for OriginRead {
    fn end_io(self, _status: Status) {
        // The clone's status goes to the image's bio (`PendingBio::clone_to`).
        self.area.origin_read_done(self.chunks);
    }
}

/// Lets a held write go on to the origin; the filter does not see it again.
fn pass_on(bio: PendingBio) {
    if let Err(bio) = bio.submit_noacct() {
        // Only parts split by a driver are refused; the filter splits nothing.
        bio.end(Status::from_error(EIO));
    }
}

/// The difference area of one device in a taken snapshot.
#[pin_data]
pub(crate) struct DiffArea {
    dev: DevT,
    origin: BlockDeviceFile,
    geometry: Geometry,
    shared: Arc<Shared>,
    #[pin]
    inner: SpinLock<Inner>,
    /// Signalled when a chunk is stored or fails, and when the area is corrupted.
    #[pin]
    changed: CondVar,
    #[pin]
    store_work: Work<DiffArea>,
}

impl_has_work! {
    impl HasWork<Self> for DiffArea { self.store_work }
}

impl DiffArea {
    /// Makes the area of the device open as `origin`, with chunks of `geometry`, every chunk
    /// untouched. May sleep; allocates the chunk map.
    pub(crate) fn new(
        origin: BlockDeviceFile,
        geometry: Geometry,
        shared: Arc<Shared>,
    ) -> Result<Arc<Self>> {
        let count = usize::try_from(geometry.count()).map_err(|_| EFBIG)?;
        let state = KVVec::from_elem(State::Untouched as u8, count, GFP_KERNEL)?;
        let slot_map = KVVec::from_elem(0u32, count, GFP_KERNEL)?;
        let dev = origin.bdev().dev();
        let limit = shared.chunk_limit.max(1);
        Arc::pin_init(
            pin_init!(Self {
                dev,
                origin,
                geometry,
                shared,
                inner <- new_spinlock!(Inner {
                    state,
                    slot: slot_map,
                    buffered: RBTree::new(),
                    readers: KVec::new(),
                    blocked: RBTree::new(),
                    to_read: RBTree::new(),
                    seq: 0,
                    in_memory: 0,
                    limit,
                    peak: 0,
                    holding_reads: false,
                    error: None,
                }),
                changed <- new_condvar!(),
                store_work <- new_work!("DiffArea::store_work"),
            }),
            GFP_KERNEL,
        )
    }

    /// Returns the device number of the origin.
    pub(crate) fn dev(&self) -> DevT {
        self.dev
    }

    /// Returns the chunk geometry.
    pub(crate) fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Returns the origin device.
    pub(crate) fn origin(&self) -> &BlockDevice {
        self.origin.bdev()
    }

    /// Holds back the reads of old data that copy-on-write starts, until [`Self::release_reads`].
    ///
    /// The take calls it before it turns copy-on-write on, and releases the reads once the writes
    /// that passed before are drained from the origin: a read of old data must not race with such
    /// a write to the same chunk, or the copy could miss a write that the take's change map
    /// counts. The writes copy-on-write takes over wait meanwhile, as they would for the reads.
    pub(crate) fn hold_reads(&self) {
        self.inner.lock().holding_reads = true;
    }

    /// Starts the reads of old data held back since [`Self::hold_reads`].
    pub(crate) fn release_reads(self: &Arc<Self>) {
        self.inner.lock().holding_reads = false;
        self.start_reads();
    }

    /// Starts the reads of old data that copy-on-write needs, as long as there is room in
    /// memory for them.
    fn start_reads(self: &Arc<Self>) {
        loop {
            let index = self.inner.lock().claim();
            match index {
                Some(index) => self.start_read(index),
                None => return,
            }
        }
    }

    /// Returns how many chunks are in memory now, their bound, and the most there were at once.
    pub(crate) fn memory(&self) -> (usize, usize, usize) {
        let inner = self.inner.lock();
        (inner.in_memory, inner.limit, inner.peak)
    }

    /// Returns the error that corrupted the area, if any.
    pub(crate) fn error(&self) -> Option<Error> {
        self.inner.lock().error
    }

    /// Copy-on-write for a write-like `bio` submitted to the origin: lets it go on if the chunks
    /// it touches are preserved, takes it over and holds it otherwise.
    pub(crate) fn cow(self: &Arc<Self>, bio: FilterBio<'_>) {
        // A write with an inline encryption context is fine: a device with a crypto profile of
        // its own cannot join a snapshot, so the context is served by the blk-crypto fallback,
        // which encrypts the data below the filter. Copy-on-write copies the data as the device
        // holds it (encrypted), and so does the image show it, as blksnap v6 does.
        if bio.has_integrity() {
            // Only a device with an integrity profile gets a payload, and such a device cannot
            // join a snapshot; should one come, a copy of the chunks could not be trusted to be
            // what the device holds. Break the snapshot, not the write.
            if self.error().is_none() {
                pr_err!("{}: a write with an integrity payload\n", self.dev);
            }
            self.fail(EPERM);
            return;
        }
        let chunks = self.geometry.chunks(bio.sector(), u64::from(bio.sectors()));
        if chunks.is_empty() {
            return;
        }
        // The common case: every chunk preserved already.
        {
            let inner = self.inner.lock();
            if inner.error.is_some() || inner.may_write(&chunks) {
                return;
            }
        }
        if bio.flags().contains(Flags::NOWAIT) {
            // It would wait for the read of old data: the submitter asked not to (io_uring,
            // `RWF_NOWAIT`), and retries it without the flag, as blksnap v6 has it.
            bio.take().end(Status::from_error(EAGAIN));
            return;
        }
        // Allocated before the bio is taken and the lock held: nothing below allocates.
        let Ok(nodes) = Reservations::new() else {
            // The area is failed before the write goes on: no image read in between may see
            // its new data.
            self.fail(ENOMEM);
            return;
        };
        let bio = bio.take();
        let mut inner = self.inner.lock();
        let Some(first) = inner
            .error
            .is_none()
            .then(|| inner.first_blocking(chunks.clone()))
            .flatten()
        else {
            drop(inner);
            pass_on(bio);
            return;
        };
        let seq = inner.seq;
        inner.seq += 1;
        let to_read = chunks.clone();
        inner.blocked.insert(
            nodes
                .blocked
                .into_node((first, seq), Some(Waiter { bio, chunks })),
        );
        inner.to_read.insert(nodes.to_read.into_node(seq, to_read));
        drop(inner);
        self.start_reads();
    }

    /// Starts reading the old data of chunk `index`, which the caller moved to `Reading`.
    fn start_read(self: &Arc<Self>, index: u64) {
        let len = self.geometry.len_bytes(index);
        let result = Buffer::new(len, GFP_NOIO).and_then(|buf| {
            let read = CowRead {
                area: self.clone(),
                index,
                buf: Arc::new(buf, GFP_NOIO)?,
                node: RBTreeNodeReservation::new(GFP_NOIO)?,
            };
            blkio::submit(
                &self.shared.bio_set,
                read,
                Operation::Read,
                self.geometry.start(index),
                len,
            )
        });
        if let Err(err) = result {
            self.fail(err);
        }
    }

    /// The old data of chunk `index` is in `buf`: lets the writes go on that waited for it, and
    /// has the buffer stored. May run in interrupt context: allocates nothing (`node` was
    /// reserved with the read).
    fn buffered(
        self: &Arc<Self>,
        index: u64,
        buf: Arc<Buffer>,
        node: RBTreeNodeReservation<u64, Arc<Buffer>>,
    ) {
        let mut inner = self.inner.lock();
        if inner.error.is_some() {
            return;
        }
        inner.buffered.insert(node.into_node(index, buf));
        inner.set_state(index, State::Buffered);
        drop(inner);
        self.release_at(index);
        // Already queued if it is pending: it stores everything buffered when it runs.
        let _ = self.shared.queue.enqueue(self.clone());
    }

    /// Stores the buffered chunks, one after the other, and starts the reads that waited for
    /// room. Runs on the snapshot's store queue.
    fn store_all(self: &Arc<Self>) {
        loop {
            let next = {
                let inner = self.inner.lock();
                if inner.error.is_some() {
                    return;
                }
                inner
                    .buffered
                    .cursor_front()
                    .map(|c| (*c.current().0, c.current().1.clone()))
            };
            let Some((index, buf)) = next else {
                return;
            };
            if let Err(err) = self.store(index, &buf) {
                return self.fail(err);
            }
            drop(buf);
            self.start_reads();
        }
    }

    /// Writes the buffer of chunk `index` to the difference storage.
    fn store(&self, index: u64, buf: &Arc<Buffer>) -> Result {
        let bytes = self.geometry.chunk_bytes() as u64;
        let offset = self.shared.alloc_storage(bytes)?;
        let slot = u32::try_from(offset >> 12).map_err(|_| ENOSPC)?;
        self.shared.storage.write(
            &self.shared.bio_set,
            offset,
            buf,
            self.geometry.len_bytes(index),
        )?;
        let mut inner = self.inner.lock();
        if inner.error.is_some() {
            return Ok(());
        }
        if let Some(s) = inner.slot.get_mut(index as usize) {
            *s = slot;
        }
        inner.set_state(index, State::Stored);
        // The buffer is freed once no image read holds it any more, outside the lock.
        let old = inner.buffered.remove_node(&index);
        inner.in_memory = inner.in_memory.saturating_sub(1);
        drop(inner);
        drop(old);
        self.changed.notify_all();
        Ok(())
    }

    /// Marks the area corrupted by `err` (once): a `corrupted` event is queued, then held writes
    /// go on and buffers are freed.
    pub(crate) fn fail(&self, err: Error) {
        if let Some(stopped) = self.stop(err) {
            pr_err!(
                "{}: snapshot corrupted, error {}\n",
                self.dev,
                err.to_errno()
            );
            // Queued before anyone waiting on the area is woken up.
            self.shared.corrupted(self.dev, err);
            self.release(stopped);
        }
    }

    /// Ends copy-on-write because the snapshot is going away: held writes go on.
    pub(crate) fn shutdown(&self) {
        if let Some(stopped) = self.stop(ESHUTDOWN) {
            self.release(stopped);
        }
    }

    /// Stops the area with `err` if it is not stopped yet; returns the held writes and the
    /// buffers if it was this call.
    fn stop(&self, err: Error) -> Option<Stopped> {
        let mut inner = self.inner.lock();
        if inner.error.is_some() {
            return None;
        }
        inner.error = Some(err);
        Some(Stopped {
            blocked: core::mem::take(&mut inner.blocked),
            to_read: core::mem::take(&mut inner.to_read),
            buffered: core::mem::take(&mut inner.buffered),
        })
    }

    /// Lets the held writes of a stopped area go on, frees its buffers, wakes its waiters.
    fn release(&self, stopped: Stopped) {
        let Stopped {
            mut blocked,
            to_read,
            buffered,
        } = stopped;
        drop(buffered);
        drop(to_read);
        while let Some(cursor) = blocked.cursor_front_mut() {
            let (_, node) = cursor.remove_current();
            if let (_, Some(waiter)) = node.to_key_value() {
                pass_on(waiter.bio);
            }
        }
        self.changed.notify_all();
    }

    /// What an image read of chunk `index` reads from.
    fn source(&self, index: u64) -> Result<Source> {
        let mut inner = self.inner.lock();
        inner.usable()?;
        match inner.state(index) {
            State::Stored => {
                let slot = inner.slot.get(index as usize).copied().ok_or(EIO)?;
                Ok(Source::Storage(u64::from(slot) << 12))
            }
            State::Buffered => inner
                .buffered
                .get(&index)
                .map(|buf| Source::Buffer(buf.clone()))
                .ok_or(EIO),
            State::Untouched | State::Reading => {
                inner.add_readers(index..index + 1)?;
                Ok(Source::Origin)
            }
            State::Failed => Err(EIO),
        }
    }

    /// Starts an image read of `chunks` straight from the origin if none of them is preserved
    /// (or being preserved into a buffer): returns `Ok(true)`, and writes to them are held
    /// until [`DiffArea::origin_read_done`]. Returns `Ok(false)` when some chunk must be read
    /// from elsewhere.
    fn start_origin_read(&self, chunks: &Range<u64>) -> Result<bool> {
        let mut inner = self.inner.lock();
        inner.usable()?;
        if !chunks
            .clone()
            .all(|i| matches!(inner.state(i), State::Untouched | State::Reading))
        {
            return Ok(false);
        }
        inner.add_readers(chunks.clone())?;
        Ok(true)
    }

    /// An image read of `chunks` from the origin is done: the writes it held may go on.
    fn origin_read_done(&self, chunks: Range<u64>) {
        for index in chunks {
            let last = {
                let mut inner = self.inner.lock();
                match inner.readers.iter().position(|(i, _)| *i == index) {
                    Some(pos) => {
                        inner.readers[pos].1 -= 1;
                        let last = inner.readers[pos].1 == 0;
                        if last {
                            let _ = inner.readers.remove(pos);
                        }
                        last
                    }
                    None => false,
                }
            };
            if last {
                self.release_at(index);
            }
        }
    }

    /// Chunk `index` no longer keeps writes back (it is preserved, or its last image read from
    /// the origin is done): lets the held writes that waited for it go on if nothing else keeps
    /// them, one at a time and without the lock held while submitting; the others now wait for
    /// their next chunk.
    fn release_at(&self, index: u64) {
        let mut from = 0;
        loop {
            let next = self.inner.lock().next_unblocked(index, from);
            match next {
                Some((seq, bio)) => {
                    from = seq + 1;
                    if let Some(bio) = bio {
                        pass_on(bio);
                    }
                }
                None => return,
            }
        }
    }

    /// Returns whether the origin takes the data segments of `bio` as they are: each starts and
    /// ends on a logical block of the origin and on its DMA alignment. The image disk takes
    /// segments aligned on 512 bytes only; the worker reads the others through its own pages.
    fn origin_takes_segments_of(&self, bio: &mut PendingBio) -> bool {
        let origin = self.origin();
        let mask = (origin.logical_block_size() - 1) | origin.dma_alignment();
        let mask = mask as usize;
        bio.segments().all(|s| (s.offset() | s.len()) & mask == 0)
    }

    /// Serves an image read whose chunks are all still on the origin (none preserved) with a
    /// clone of the bio sent to the origin, without waiting for it: the writes to those chunks
    /// are held until the clone completes. Gives the bio back when it must be served chunk by
    /// chunk ([`DiffArea::read_chunk`]), and ends it when the area cannot be read.
    pub(crate) fn read_from_origin(self: &Arc<Self>, mut bio: PendingBio) -> Option<PendingBio> {
        let chunks = self.geometry.chunks(bio.sector(), u64::from(bio.sectors()));
        if chunks.is_empty() || !self.origin_takes_segments_of(&mut bio) {
            return Some(bio);
        }
        match self.start_origin_read(&chunks) {
            Ok(true) => {}
            Ok(false) => return Some(bio),
            Err(err) => {
                bio.end(Status::from_error(err));
                return None;
            }
        }
        let read = OriginRead {
            area: self.clone(),
            chunks: chunks.clone(),
        };
        match bio.clone_to(&self.shared.bio_set, read, |r| r.area.origin(), GFP_NOIO) {
            Ok(clone) => {
                clone.submit();
                None
            }
            // No memory for a clone now: the worker reads it chunk by chunk.
            Err((_, bio)) => {
                self.origin_read_done(chunks);
                Some(bio)
            }
        }
    }

    /// Reads `len` bytes at byte `offset` of chunk `index` of the snapshot into the start of
    /// `tmp`, or returns the buffer that holds them (at `offset`). May sleep.
    pub(crate) fn read_chunk(
        self: &Arc<Self>,
        index: u64,
        offset: usize,
        len: usize,
        tmp: Buffer,
    ) -> Result<(ReadFrom, Buffer)> {
        match self.source(index)? {
            Source::Buffer(buf) => Ok((ReadFrom::Buffer(buf), tmp)),
            Source::Storage(at) => {
                let tmp =
                    self.shared
                        .storage
                        .read(&self.shared.bio_set, at + offset as u64, tmp, len)?;
                Ok((ReadFrom::Tmp, tmp))
            }
            Source::Origin => {
                let sector = self.geometry.start(index) + (offset as u64 >> 9);
                let result = blkio::sync(
                    &self.shared.bio_set,
                    self.clone(),
                    Operation::Read,
                    sector,
                    tmp,
                    len,
                );
                self.origin_read_done(index..index + 1);
                Ok((ReadFrom::Tmp, result?))
            }
        }
    }

    /// Makes sure the old data of chunk `index` is in the difference storage, copying it first
    /// if needed, and returns where. May sleep.
    pub(crate) fn preserve(self: &Arc<Self>, index: u64) -> Result<u64> {
        let mut inner = self.inner.lock();
        loop {
            if inner.error.is_some() {
                return Err(EIO);
            }
            match inner.state(index) {
                State::Stored => {
                    let slot = inner.slot.get(index as usize).copied().ok_or(EIO)?;
                    return Ok(u64::from(slot) << 12);
                }
                State::Failed => return Err(EIO),
                State::Untouched => {
                    // An image write: it may go past the bound, by one chunk at a time.
                    inner.reading(index);
                    drop(inner);
                    self.start_read(index);
                    inner = self.inner.lock();
                }
                State::Reading | State::Buffered => self.changed.wait(&mut inner),
            }
        }
    }

    /// Writes `buf`'s first `len` bytes at byte `offset` of chunk `index` of the snapshot: the
    /// chunk is preserved first, and the data goes to its place in the difference storage, never
    /// to the origin. May sleep.
    pub(crate) fn write_chunk(
        self: &Arc<Self>,
        index: u64,
        offset: usize,
        buf: &Arc<Buffer>,
        len: usize,
    ) -> Result {
        let at = self.preserve(index)?;
        self.shared
            .storage
            .write(&self.shared.bio_set, at + offset as u64, buf, len)
    }

    /// Returns the number of chunks in each state, for tests and diagnostics.
    pub(crate) fn counts(&self) -> [u64; 5] {
        let inner = self.inner.lock();
        let mut counts = [0u64; 5];
        for &s in inner.state.iter() {
            counts[State::from_u8(s) as usize] += 1;
        }
        counts
    }
}

/// The copy-on-write of an area, as the filter of its device is handed it at the take.
struct AreaCow(Arc<DiffArea>);

impl CopyOnWrite for AreaCow {
    fn cow(&self, bio: FilterBio<'_>) {
        self.0.cow(bio)
    }

    fn detached(&self) {
        self.0.fail(ENODEV)
    }

    fn error(&self) -> Option<Error> {
        self.0.error()
    }
}

impl DiffArea {
    /// Returns the copy-on-write of the area for the filter of its device ([`Link::set_cow`]).
    ///
    /// [`Link::set_cow`]: crate::tracker::Link::set_cow
    pub(crate) fn copy_on_write(self: &Arc<Self>) -> Result<Arc<dyn CopyOnWrite>> {
        Ok(Arc::new(AreaCow(self.clone()), GFP_KERNEL)?)
    }
}

impl WorkItem for DiffArea {
    type Pointer = Arc<DiffArea>;

    fn run(this: Arc<DiffArea>) {
        this.store_all();
    }
}

impl blkio::Device for DiffArea {
    fn bdev(&self) -> &BlockDevice {
        self.origin.bdev()
    }
}

/// Where an image read of a chunk takes its data from.
enum Source {
    Storage(u64),
    Buffer(Arc<Buffer>),
    Origin,
}

/// Where [`DiffArea::read_chunk`] put the data.
pub(crate) enum ReadFrom {
    /// In the temporary buffer, from its start.
    Tmp,
    /// In the chunk's buffer, at the offset asked for.
    Buffer(Arc<Buffer>),
}

/// The copy-on-write read of a chunk's old data from the origin.
struct CowRead {
    area: Arc<DiffArea>,
    index: u64,
    buf: Arc<Buffer>,
    /// Room for the buffer in [`Inner::buffered`], reserved with the read.
    node: RBTreeNodeReservation<u64, Arc<Buffer>>,
}

impl EndIo for CowRead {
    fn end_io(self, status: Status) {
        let CowRead {
            area,
            index,
            buf,
            node,
        } = self;
        match status.to_result() {
            Ok(()) => area.buffered(index, buf, node),
            Err(err) => area.fail(err),
        }
    }
}

/// What a stopped area gives up: its held writes, the ranges still to read, the buffers.
struct Stopped {
    blocked: RBTree<BlockedKey, Option<Waiter>>,
    to_read: RBTree<u64, Range<u64>>,
    buffered: RBTree<u64, Arc<Buffer>>,
}

impl PageIo for CowRead {
    fn bdev(&self) -> &BlockDevice {
        self.area.origin.bdev()
    }

    fn pages(&self) -> &[Page] {
        self.buf.pages()
    }
}

/// Calls `f` for each piece of the segments of `bio` that cover bytes
/// `[dev_offset, dev_offset + len)` of the device, cut at page boundaries of a buffer that holds
/// device byte `dev_offset` at its byte `buf_offset`: `f(segment, offset in the segment, page of
/// the buffer, offset in that page, length)`.
fn for_each_piece(
    bio: &mut PendingBio,
    dev_offset: u64,
    len: usize,
    buf_offset: usize,
    mut f: impl FnMut(&mut Segment<'_>, usize, usize, usize, usize) -> Result,
) -> Result {
    let end = dev_offset + len as u64;
    for mut seg in bio.segments() {
        let seg_start = seg.sector() << 9;
        let seg_end = seg_start + seg.len() as u64;
        let mut pos = seg_start.max(dev_offset);
        let to = seg_end.min(end);
        while pos < to {
            let (page, in_page) = Buffer::locate(buf_offset + (pos - dev_offset) as usize);
            let n = ((to - pos) as usize).min(PAGE_SIZE - in_page);
            f(&mut seg, (pos - seg_start) as usize, page, in_page, n)?;
            pos += n as u64;
        }
    }
    Ok(())
}

/// Copies `len` bytes at byte `offset` of `pages` into the segments of `bio` that cover bytes
/// `[dev_offset, dev_offset + len)` of the device.
pub(crate) fn copy_to_bio(
    bio: &mut PendingBio,
    dev_offset: u64,
    pages: &[Page],
    offset: usize,
    len: usize,
) -> Result {
    for_each_piece(bio, dev_offset, len, offset, |seg, at, page, in_page, n| {
        seg.copy_from_page(at, pages.get(page).ok_or(EINVAL)?, in_page, n)
    })
}

/// Copies the bytes of `bio` that cover `[dev_offset, dev_offset + len)` of the device into
/// `pages`, from byte 0.
pub(crate) fn copy_from_bio(
    bio: &mut PendingBio,
    dev_offset: u64,
    pages: &mut [Page],
    len: usize,
) -> Result {
    for_each_piece(bio, dev_offset, len, 0, |seg, at, page, in_page, n| {
        seg.copy_to_page(at, pages.get_mut(page).ok_or(EINVAL)?, in_page, n)
    })
}

#[cfg(CONFIG_BLKSNAP_KUNIT_TEST)]
#[kunit_tests(blksnap_diff_area)]
mod tests {
    use super::*;
    use crate::{
        cbt::{Cbt, Geometry as CbtGeometry, Params as CbtParams},
        chunk::Params,
        diff_storage::DiffStorage,
        image::Image,
    };
    use kernel::{
        block::{
            bdev::OpenMode,
            bio::NewBio,
            bio_disk::{BioDisk, BioDiskBuilder, Operations},
        },
        fs::{file_io::KernelFile, File},
        sync::{
            atomic::{Atomic, Relaxed},
            ArcBorrow, Completion, Mutex, SetOnce,
        },
        workqueue::{OwnedQueue, QueueFlag},
    };

    /// Chunks of 4 KiB (8 sectors); the area covers 16 of them.
    const CHUNK: usize = 4096;
    const SECTORS: u64 = 16 * 8;
    /// Past the area, where the tests move data between buffers and memory.
    const SCRATCH: u64 = SECTORS;
    const SCRATCH_CHUNKS: usize = 3;

    /// A disk in memory that serves bios at once. Like the memory backing of `null_blk`, it
    /// takes only segments of whole logical blocks, and fails the others.
    #[pin_data]
    struct Ram {
        #[pin]
        data: Mutex<KVVec<u8>>,
        block_size: usize,
        /// How many read bios it served.
        reads: Atomic<usize>,
    }

    impl Operations for Ram {
        type QueueData = Arc<Ram>;

        fn submit_bio(ram: ArcBorrow<'_, Ram>, mut bio: PendingBio) {
            let write = bio.op().is_write();
            if !write {
                ram.reads.add(1, Relaxed);
            }
            let mut data = ram.data.lock();
            let mut status = Status::OK;
            for mut seg in bio.segments() {
                if (seg.offset() | seg.len()) % ram.block_size != 0 {
                    status = Status::from_error(EIO);
                    break;
                }
                let start = (seg.sector() << 9) as usize;
                let Some(range) = data.get_mut(start..start + seg.len()) else {
                    status = Status::from_error(EIO);
                    break;
                };
                let res = if write {
                    seg.copy_to_slice(range)
                } else {
                    seg.copy_from_slice(range)
                };
                if res.is_err() {
                    status = Status::from_error(EIO);
                    break;
                }
            }
            drop(data);
            bio.end(status);
        }
    }

    /// Dropped in this order: the area (which has the disk open), the disk, its memory.
    struct Setup {
        area: Arc<DiffArea>,
        /// The change tracker the images of the area mark their writes in: one block per chunk.
        cbt: Arc<Cbt>,
        _disk: BioDisk<Ram>,
        ram: Arc<Ram>,
    }

    impl Setup {
        /// The origin, with byte `i` in chunk `i`, three scratch chunks past the area, and an
        /// area whose storage holds `storage_chunks` chunks.
        fn new(name: &str, storage_chunks: u64) -> Result<Self> {
            Self::with_block_size(name, storage_chunks, 512)
        }

        /// As [`Setup::new`], with an origin of logical blocks of `block_size` bytes.
        fn with_block_size(name: &str, storage_chunks: u64, block_size: u32) -> Result<Self> {
            Self::build(name, storage_chunks, block_size, None)
        }

        /// As [`Setup::with_block_size`]; with `queues`, the chunks are stored on the first and
        /// the image bios served on the second, instead of the driver's queues.
        fn build(
            name: &str,
            storage_chunks: u64,
            block_size: u32,
            queues: Option<(&'static OwnedQueue, &'static OwnedQueue)>,
        ) -> Result<Self> {
            let mut data = KVVec::new();
            for i in 0..SECTORS as usize / 8 + SCRATCH_CHUNKS {
                for _ in 0..CHUNK {
                    data.push(i as u8, GFP_KERNEL)?;
                }
            }
            let ram = Arc::pin_init(
                pin_init!(Ram {
                    data <- kernel::new_mutex!(data),
                    block_size: block_size as usize,
                    reads: Atomic::new(0),
                }),
                GFP_KERNEL,
            )?;
            let disk = BioDiskBuilder::new()
                .capacity_sectors(SECTORS + 8 * SCRATCH_CHUNKS as u64)
                .logical_block_size(block_size)?
                .build::<Ram>(fmt!("blksnap_{name}"), ram.clone())?;
            let file = KernelFile::from_file(File::new_shmem(c"blksnap-kunit", 0)?);
            let storage = DiffStorage::from_file(file, storage_chunks * CHUNK as u64, CHUNK as u64);
            let shared = match queues {
                None => crate::snapshot::new_shared(storage)?,
                Some((store, image)) => {
                    crate::snapshot::new_shared_with_queues(storage, store, image)?
                }
            };
            let origin = BlockDeviceFile::open(disk.dev(), OpenMode::Read)?;
            let geometry = Geometry::new(SECTORS, block_size, &Params::new(12, 1 << 20, 12))?;
            let cbt_geometry = CbtGeometry::new(SECTORS, &CbtParams::new(12, 1 << 20, 12))?;
            let cbt = Arc::pin_init(
                Cbt::new(disk.dev(), cbt_geometry, CbtParams::new(12, 1 << 20, 12))?,
                GFP_KERNEL,
            )?;
            let area = DiffArea::new(origin, geometry, shared)?;
            Ok(Self {
                area,
                cbt,
                _disk: disk,
                ram,
            })
        }

        /// Makes an image disk of the area, as a take does.
        fn image(&self) -> Result<Arc<BioDisk<Image>>> {
            let disk = Image::create(
                self.area.clone(),
                self.cbt.clone(),
                self.area.shared.image_queue,
            )?;
            Ok(Arc::new(disk, GFP_KERNEL)?)
        }

        /// Fills chunk `index` of the origin with `byte`, behind the area's back.
        fn overwrite(&self, index: usize, byte: u8) -> Result {
            let mut data = self.ram.data.lock();
            data.get_mut(index * CHUNK..(index + 1) * CHUNK)
                .ok_or(EINVAL)?
                .fill(byte);
            Ok(())
        }

        /// Returns the first `len` bytes of `buf`, through the scratch chunks (whole chunks of
        /// it are written there).
        fn bytes(&self, buf: Buffer, len: usize) -> Result<KVec<u8>> {
            let set = &self.area.shared.bio_set;
            let whole = len.next_multiple_of(CHUNK);
            blkio::sync(
                set,
                self.area.clone(),
                Operation::Write,
                SCRATCH,
                buf,
                whole,
            )?;
            let data = self.ram.data.lock();
            let start = SCRATCH as usize * 512;
            let mut out = KVec::new();
            out.extend_from_slice(data.get(start..start + len).ok_or(EINVAL)?, GFP_KERNEL)?;
            Ok(out)
        }

        /// Returns a buffer holding `len` bytes of `byte`, through the scratch chunk.
        fn filled(&self, byte: u8, len: usize) -> Result<Buffer> {
            self.overwrite(SCRATCH as usize / 8, byte)?;
            let set = &self.area.shared.bio_set;
            let buf = Buffer::new(CHUNK, GFP_KERNEL)?;
            blkio::sync(set, self.area.clone(), Operation::Read, SCRATCH, buf, len)
        }

        /// Reads the whole chunk `index` of the snapshot.
        fn read(&self, index: u64) -> Result<KVec<u8>> {
            let tmp = Buffer::new(CHUNK, GFP_KERNEL)?;
            let (from, tmp) = self.area.read_chunk(index, 0, CHUNK, tmp)?;
            match from {
                ReadFrom::Tmp => self.bytes(tmp, CHUNK),
                ReadFrom::Buffer(_) => Err(EAGAIN),
            }
        }
    }

    fn all(bytes: &[u8], byte: u8) -> bool {
        bytes.iter().all(|&b| b == byte)
    }

    #[test]
    fn untouched_chunks_are_read_from_the_origin() -> Result {
        let t = Setup::new("kunit_da_untouched", 4)?;
        assert!(all(&t.read(3)?, 3));
        t.overwrite(3, 0xee)?;
        // Nothing preserved it: the image follows the origin, as writes that skip the filter do.
        assert!(all(&t.read(3)?, 0xee));
        assert_eq!(t.area.counts(), [16, 0, 0, 0, 0]);
        Ok(())
    }

    #[test]
    fn preserved_chunks_keep_their_old_data() -> Result {
        let t = Setup::new("kunit_da_preserve", 4)?;
        let slot = t.area.preserve(2)?;
        assert_eq!(slot, 0);
        // Preserving again finds the chunk stored.
        assert_eq!(t.area.preserve(2)?, slot);
        t.overwrite(2, 0xee)?;
        assert!(all(&t.read(2)?, 2));
        assert_eq!(t.area.preserve(9)?, CHUNK as u64);
        t.overwrite(9, 0xdd)?;
        assert!(all(&t.read(9)?, 9));
        assert_eq!(t.area.counts(), [14, 0, 0, 2, 0]);
        assert_eq!(t.area.shared.storage.used(), 2 * CHUNK as u64);
        Ok(())
    }

    #[test]
    fn image_writes_stay_in_the_storage() -> Result {
        let t = Setup::new("kunit_da_write", 4)?;
        let buf = Arc::new(t.filled(0x77, 1024)?, GFP_KERNEL)?;
        t.area.write_chunk(4, 512, &buf, 1024)?;
        // The origin is untouched; the image has the write over the old data.
        assert!(all(&t.ram.data.lock()[4 * CHUNK..5 * CHUNK], 4));
        let image = t.read(4)?;
        assert!(all(&image[..512], 4));
        assert!(all(&image[512..1536], 0x77));
        assert!(all(&image[1536..], 4));
        Ok(())
    }

    #[test]
    fn a_full_storage_corrupts_the_area() -> Result {
        let t = Setup::new("kunit_da_full", 2)?;
        t.area.preserve(0)?;
        t.area.preserve(1)?;
        assert_eq!(t.area.error(), None);
        // Full, and it cannot grow; the client did not ask for the no-space event (v6 has none).
        assert_eq!(t.area.shared.events.wait(0).err(), Some(ENOENT));
        // Once it asks, it is told at once that the storage is low, before it overflows.
        assert_eq!(t.area.shared.want_events(1 << 7).err(), Some(EINVAL));
        t.area
            .shared
            .want_events(1 << crate::uapi::EVENT_CODE_NO_SPACE)?;
        let event = t.area.shared.events.wait(1000)?;
        assert_eq!(event.code, crate::uapi::EVENT_CODE_NO_SPACE);
        assert_eq!(&event.data[8..16], &((2 * CHUNK as u64) >> 9).to_ne_bytes());
        // The third chunk does not fit: the area is corrupted, once, with ENOSPC.
        assert_eq!(t.area.preserve(2).err(), Some(EIO));
        assert_eq!(t.area.error(), Some(ENOSPC));
        let event = t.area.shared.events.wait(1000)?;
        assert_eq!(event.code, crate::uapi::EVENT_CODE_CORRUPTED);
        // Positive, as v6 reports it.
        assert_eq!(&event.data[8..12], &28i32.to_ne_bytes());
        assert_eq!(t.area.shared.events.wait(0).err(), Some(ENOENT));
        // Image reads fail from then on, of preserved chunks too.
        assert_eq!(t.read(0).err(), Some(EIO));
        assert_eq!(t.read(5).err(), Some(EIO));
        Ok(())
    }

    /// Where a read of an image reports its end.
    #[pin_data]
    struct ImageDone {
        #[pin]
        result: SpinLock<Option<(Status, Buffer)>>,
        #[pin]
        done: Completion,
    }

    /// A read of an image into a buffer.
    struct ImageIo {
        disk: Arc<BioDisk<Image>>,
        buf: Buffer,
        done: Arc<ImageDone>,
    }

    impl EndIo for ImageIo {
        fn end_io(self, status: Status) {
            let ImageIo { disk, buf, done } = self;
            *done.result.lock() = Some((status, buf));
            done.done.complete_all();
            drop(disk);
        }
    }

    /// Reads `len` bytes at `sector` of an image of `t`'s area through its disk, into a buffer
    /// whose data starts 512 bytes into a page, and returns them.
    fn read_image(t: &Setup, sector: u64, len: usize) -> Result<KVec<u8>> {
        read_image_at(t, sector, len, 512)
    }

    /// As [`read_image`], into a buffer whose data starts `at` bytes into a page.
    fn read_image_at(t: &Setup, sector: u64, len: usize, at: usize) -> Result<KVec<u8>> {
        let disk = t.image()?;
        let done = Arc::pin_init(
            pin_init!(ImageDone {
                result <- new_spinlock!(None),
                done <- Completion::new(),
            }),
            GFP_KERNEL,
        )?;
        let io = ImageIo {
            disk: disk.clone(),
            buf: Buffer::new(SCRATCH_CHUNKS * CHUNK, GFP_KERNEL)?,
            done: done.clone(),
        };
        let pages = (at + len).div_ceil(PAGE_SIZE);
        if at >= PAGE_SIZE || at + len > SCRATCH_CHUNKS * CHUNK || pages > io.buf.pages().len() {
            return Err(EINVAL);
        }
        let set = &t.area.shared.bio_set;
        let nr_vecs = u16::try_from(pages)?;
        let mut bio = NewBio::new(
            set,
            io,
            |d| d.disk.bdev(),
            Operation::Read,
            nr_vecs,
            GFP_KERNEL,
        )?;
        bio.set_sector(sector);
        // `len` bytes from `at` in the first page, on from the start of the next ones.
        let (mut offset, mut left) = (at, len);
        for i in 0..pages {
            let n = left.min(PAGE_SIZE - offset);
            bio.add_page(|d| &d.buf.pages()[i], n as u32, offset as u32)?;
            (offset, left) = (0, left - n);
        }
        bio.submit();
        done.done.wait_for_completion();
        let (status, buf) = done.result.lock().take().ok_or(EINVAL)?;
        status.to_result()?;
        let bytes = t.bytes(buf, at + len)?;
        let mut out = KVec::new();
        out.extend_from_slice(&bytes[at..], GFP_KERNEL)?;
        Ok(out)
    }

    /// Writes the first chunk of the scratch space, filled with `byte`, at `sector` of the image
    /// `disk` of `t`'s area; waits for it at most `timeout_ms` (`ETIMEDOUT`).
    fn write_image(
        t: &Setup,
        disk: &Arc<BioDisk<Image>>,
        sector: u64,
        byte: u8,
        timeout_ms: u32,
    ) -> Result {
        let done = Arc::pin_init(
            pin_init!(ImageDone {
                result <- new_spinlock!(None),
                done <- Completion::new(),
            }),
            GFP_KERNEL,
        )?;
        let io = ImageIo {
            disk: disk.clone(),
            buf: t.filled(byte, CHUNK)?,
            done: done.clone(),
        };
        let set = &t.area.shared.bio_set;
        let pages = CHUNK.div_ceil(PAGE_SIZE);
        let mut bio = NewBio::new(
            set,
            io,
            |d| d.disk.bdev(),
            Operation::Write,
            u16::try_from(pages)?,
            GFP_KERNEL,
        )?;
        bio.set_sector(sector);
        for i in 0..pages {
            let n = (CHUNK - i * PAGE_SIZE).min(PAGE_SIZE);
            bio.add_page(|d| &d.buf.pages()[i], n as u32, 0)?;
        }
        bio.submit();
        done.done
            .wait_for_completion_timeout(kernel::time::msecs_to_jiffies(timeout_ms))?;
        let (status, _) = done.result.lock().take().ok_or(EINVAL)?;
        status.to_result()
    }

    /// The change map of `t` as a take freezes it: one byte per chunk.
    fn taken_map(t: &Setup) -> Result<KVec<u8>> {
        let prepared = t.cbt.prepare_take(SECTORS)?;
        let _ = t.cbt.take(prepared, false);
        let mut map = KVec::new();
        t.cbt.read_map(0, 16, &mut |piece| {
            map.extend_from_slice(piece, GFP_KERNEL)?;
            Ok(())
        })?;
        Ok(map)
    }

    /// A write of the image is marked in change tracking at the take's changes number (a backup
    /// read from the image after it copies the block) and in the next map (the next backup
    /// copies the block again from the origin, which never had the write), as blksnap v6 does.
    #[test]
    fn image_writes_are_marked_in_change_tracking() -> Result {
        let t = Setup::new("kunit_da_cbt", 4)?;
        // The take of the snapshot: changes number 1 frozen, 2 active.
        let map = taken_map(&t)?;
        assert!(all(&map, 0));
        let disk = t.image()?;
        write_image(&t, &disk, 5 * 8, 0x55, 10_000)?;
        assert!(all(&t.read(5)?, 0x55));
        assert!(all(&t.ram.data.lock()[5 * CHUNK..6 * CHUNK], 5));
        let mut map = KVec::new();
        t.cbt.read_map(0, 16, &mut |piece| {
            map.extend_from_slice(piece, GFP_KERNEL)?;
            Ok(())
        })?;
        for (i, &b) in map.iter().enumerate() {
            assert_eq!((i, b), (i, if i == 5 { 1 } else { 0 }));
        }
        let next = taken_map(&t)?;
        for (i, &b) in next.iter().enumerate() {
            assert_eq!((i, b), (i, if i == 5 { 2 } else { 0 }));
        }
        Ok(())
    }

    /// Queues of one worker each, for the store and the image.
    static SINGLE: SetOnce<(OwnedQueue, OwnedQueue)> = SetOnce::new();

    /// An image write of a chunk not preserved yet waits for the store of its old data. With the
    /// store and the image on the same queue, and that queue down to one worker (as it is when
    /// only its rescuer runs, under memory pressure), the store would wait behind the write for
    /// good. The image has a queue of its own: the write completes.
    #[test]
    fn image_writes_complete_with_one_worker_per_queue() -> Result {
        if SINGLE.as_ref().is_none() {
            let flags = QueueFlag::Unbound | QueueFlag::MemReclaim;
            let store = OwnedQueue::new(c"blksnap-kunit-store", flags, 1)?;
            let image = OwnedQueue::new(c"blksnap-kunit-image", flags, 1)?;
            let _ = SINGLE.populate((store, image));
        }
        let (store, image) = SINGLE.as_ref().ok_or(ENOMEM)?;
        let t = Setup::build("kunit_da_1wq", 4, 512, Some((store, image)))?;
        let disk = t.image()?;
        write_image(&t, &disk, 3 * 8, 0x33, 10_000)?;
        assert!(all(&t.read(3)?, 0x33));
        assert_eq!(t.area.counts(), [15, 0, 0, 1, 0]);
        Ok(())
    }

    /// Copy-on-write keeps at most `limit` chunks in memory: the chunks of held writes are
    /// claimed one by one, in the writes' order, skipping those preserved or claimed already, and
    /// only while there is room; a write of any size needs one entry.
    #[test]
    fn chunks_in_memory_are_bounded() -> Result {
        let t = Setup::new("kunit_da_bound", 16)?;
        let mut inner = t.area.inner.lock();
        inner.limit = 2;
        // A write over chunks 0..10 (a discard, say), then one over 4..6.
        inner
            .to_read
            .insert(kernel::rbtree::RBTreeNode::new(0, 0..10, GFP_KERNEL)?);
        inner
            .to_read
            .insert(kernel::rbtree::RBTreeNode::new(1, 4..6, GFP_KERNEL)?);
        inner.set_state(1, State::Stored);
        assert_eq!(inner.claim(), Some(0));
        assert_eq!(inner.claim(), Some(2));
        // The bound.
        assert_eq!(inner.claim(), None);
        assert_eq!(inner.in_memory, 2);
        // One stored: room for one more.
        inner.set_state(0, State::Stored);
        inner.in_memory -= 1;
        assert_eq!(inner.claim(), Some(3));
        assert_eq!(inner.claim(), None);
        inner.set_state(2, State::Stored);
        inner.set_state(3, State::Stored);
        inner.in_memory = 0;
        for want in 4..10 {
            assert_eq!(inner.claim(), Some(want));
            inner.set_state(want, State::Stored);
            inner.in_memory -= 1;
        }
        // Both writes' chunks are all claimed: their entries are gone.
        assert_eq!(inner.claim(), None);
        assert!(inner.to_read.is_empty());
        assert_eq!(inner.peak, 2);
        // While the take drains the origin, nothing is claimed.
        inner
            .to_read
            .insert(kernel::rbtree::RBTreeNode::new(2, 10..12, GFP_KERNEL)?);
        inner.holding_reads = true;
        assert_eq!(inner.claim(), None);
        inner.holding_reads = false;
        assert_eq!(inner.claim(), Some(10));
        Ok(())
    }

    /// A bio whose data starts 512 bytes into a page and crosses two chunk boundaries (one
    /// segment in a 64 KiB page, two with 4 KiB pages), read from an image whose first chunk
    /// follows the origin and whose second chunk was preserved and then overwritten.
    #[test]
    fn image_reads_into_a_segment_inside_a_page() -> Result {
        let t = Setup::new("kunit_da_image", 4)?;
        t.area.preserve(1)?;
        t.overwrite(1, 0xee)?;
        // The last 512 bytes of chunk 0, all of chunk 1, the first 512 bytes of chunk 2.
        let bytes = read_image(&t, 7, CHUNK + 1024)?;
        assert!(all(&bytes[..512], 0));
        assert!(all(&bytes[512..512 + CHUNK], 1));
        assert!(all(&bytes[512 + CHUNK..], 2));
        assert_eq!(t.area.inner.lock().readers.len(), 0);
        Ok(())
    }

    /// A read of chunks none of which is preserved goes to the origin in one clone, and counts
    /// as a reader of each chunk (which holds writes to it) until it completes.
    #[test]
    fn image_reads_of_untouched_chunks_go_to_the_origin() -> Result {
        let t = Setup::new("kunit_da_origin", 4)?;
        t.area.preserve(1)?;
        assert_eq!(t.area.start_origin_read(&(0..3)), Ok(false));
        assert_eq!(t.area.inner.lock().readers.len(), 0);
        assert_eq!(t.area.start_origin_read(&(3..6)), Ok(true));
        assert_eq!(t.area.start_origin_read(&(5..7)), Ok(true));
        {
            let inner = t.area.inner.lock();
            assert!(inner.has_readers(&(3..4)));
            assert!(inner.has_readers(&(6..7)));
            assert!(!inner.has_readers(&(0..3)));
            assert!(!inner.may_write(&(5..6)));
        }
        t.area.origin_read_done(3..6);
        assert!(t.area.inner.lock().has_readers(&(5..6)));
        t.area.origin_read_done(5..7);
        assert_eq!(t.area.inner.lock().readers.len(), 0);

        // Through the disk: the last 512 bytes of chunk 3, chunk 4, the first 512 of chunk 5.
        let bytes = read_image(&t, 4 * 8 - 1, CHUNK + 1024)?;
        assert!(all(&bytes[..512], 3));
        assert!(all(&bytes[512..512 + CHUNK], 4));
        assert!(all(&bytes[512 + CHUNK..], 5));
        assert_eq!(t.area.inner.lock().readers.len(), 0);
        assert_eq!(t.area.counts(), [15, 0, 0, 1, 0]);

        // A corrupted area fails the read instead of reading the origin.
        t.area.fail(EIO);
        assert_eq!(t.area.start_origin_read(&(3..6)), Err(EIO));
        assert_eq!(read_image(&t, 4 * 8, 512).err(), Some(EIO));
        Ok(())
    }

    /// On an origin of 4 KiB logical blocks, an image read into segments that do not hold whole
    /// blocks (the image disk takes any 512-byte alignment) is not cloned to the origin, which
    /// would fail it or read the wrong bytes: the worker reads it through its own pages. A read
    /// of whole blocks goes to the origin in one bio.
    #[test]
    fn image_reads_of_part_blocks_are_not_cloned() -> Result {
        let t = Setup::with_block_size("kunit_da_4k", 4, 4096)?;
        let reads = || t.ram.reads.load(Relaxed);

        let before = reads();
        let bytes = read_image_at(&t, 3 * 8, 2 * CHUNK, 512)?;
        assert!(all(&bytes[..CHUNK], 3));
        assert!(all(&bytes[CHUNK..], 4));
        // One read of each chunk into the worker's pages.
        assert_eq!(reads() - before, 2);
        assert_eq!(t.area.inner.lock().readers.len(), 0);

        let before = reads();
        let bytes = read_image_at(&t, 5 * 8, 2 * CHUNK, 0)?;
        assert!(all(&bytes[..CHUNK], 5));
        assert!(all(&bytes[CHUNK..], 6));
        assert_eq!(reads() - before, 1);
        assert_eq!(t.area.inner.lock().readers.len(), 0);
        assert_eq!(t.area.counts(), [16, 0, 0, 0, 0]);
        Ok(())
    }
}
