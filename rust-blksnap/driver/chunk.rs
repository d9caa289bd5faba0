// SPDX-License-Identifier: GPL-2.0

//! Chunks: the units in which the old data of an origin device is preserved.
//!
//! A device in a snapshot is cut into chunks of equal, power-of-two size (the last one possibly
//! partial). Before the first write to a chunk after the take reaches the device, the chunk's old
//! data is read into a buffer in memory; the buffer is then written to the difference storage and
//! freed. Each chunk goes through these states once, in this order:
//!
//! - [`State::Untouched`]: the data on the origin is the data of the snapshot.
//! - [`State::Reading`]: its old data is being read from the origin.
//! - [`State::Buffered`]: the old data is in memory, on its way to the difference storage.
//! - [`State::Stored`]: the old data is in the difference storage, at the chunk's slot.
//! - [`State::Failed`]: the old data could not be preserved; the snapshot is corrupted.

use core::ops::Range;
use kernel::{
    page::{Page, PAGE_SIZE},
    prelude::*,
};

/// log2 of the sector size.
const SECTOR_SHIFT: u32 = kernel::block::SECTOR_SHIFT;
/// The smallest chunk: 4 KiB, the block size of most file systems.
const MIN_CHUNK_SHIFT: u32 = 12;
/// The largest chunk: 1 GiB.
const MAX_CHUNK_SHIFT: u32 = 30;

/// The state of a chunk; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum State {
    Untouched = 0,
    Reading = 1,
    Buffered = 2,
    Stored = 3,
    Failed = 4,
}

impl State {
    /// Converts a byte of the state map.
    pub(crate) fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Untouched,
            1 => Self::Reading,
            2 => Self::Buffered,
            3 => Self::Stored,
            _ => Self::Failed,
        }
    }

    /// Whether the old data of the chunk is safe from writes to the origin: a write may go on.
    pub(crate) fn is_preserved(self) -> bool {
        matches!(self, Self::Buffered | Self::Stored | Self::Failed)
    }
}

/// How the chunk size is chosen; see [`Geometry::new`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Params {
    min_shift: u32,
    max_count: u64,
    max_shift: u32,
}

impl Params {
    /// Makes parameters from raw values, bringing each into its valid range: a chunk is from
    /// 4 KiB to 1 GiB, the maximum shift is at least the minimum shift, and at least one chunk is
    /// allowed.
    pub(crate) fn new(min_shift: u32, max_count: u64, max_shift: u32) -> Self {
        let min_shift = min_shift.clamp(MIN_CHUNK_SHIFT, MAX_CHUNK_SHIFT);
        Self {
            min_shift,
            max_count: max_count.max(1),
            max_shift: max_shift.clamp(min_shift, MAX_CHUNK_SHIFT),
        }
    }
}

/// The division of a device into chunks.
///
/// # Invariants
///
/// `MIN_CHUNK_SHIFT <= shift <= MAX_CHUNK_SHIFT`, and `count` chunks of `1 << shift` bytes cover
/// `capacity` sectors, the last one possibly extending past the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    capacity: u64,
    shift: u32,
    count: u64,
}

impl Geometry {
    /// Chooses the chunk size for a device of `capacity` sectors whose logical blocks are
    /// `block_size` bytes.
    ///
    /// The chunk size starts at the larger of `1 << min_shift` and the block size, and doubles
    /// while the device needs more than `max_count` chunks, up to `1 << max_shift`; past that the
    /// count may exceed `max_count`. Fails with `EFBIG` if the state map would not fit in memory
    /// addresses.
    pub(crate) fn new(capacity: u64, block_size: u32, params: &Params) -> Result<Self> {
        let chunks = |shift: u32| capacity.div_ceil(1u64 << (shift - SECTOR_SHIFT));
        let block_shift = block_size.max(1).next_power_of_two().trailing_zeros();
        let mut shift = params.min_shift.max(block_shift).min(MAX_CHUNK_SHIFT);
        while shift < params.max_shift && chunks(shift) > params.max_count {
            shift += 1;
        }
        let count = chunks(shift);
        usize::try_from(count).map_err(|_| EFBIG)?;
        // INVARIANT: The shift is clamped to the bounds, and `chunks()` rounds up.
        Ok(Self {
            capacity,
            shift,
            count,
        })
    }

    /// Returns the capacity of the device in sectors.
    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Returns the chunk size in bytes.
    pub(crate) fn chunk_bytes(&self) -> usize {
        1 << self.shift
    }

    /// Returns the chunk size in sectors.
    pub(crate) fn chunk_sectors(&self) -> u64 {
        1 << (self.shift - SECTOR_SHIFT)
    }

    /// Returns the number of chunks.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// Returns the indices of the chunks that the `count` sectors from `sector` touch, cut at
    /// the end of the device (empty if they touch none).
    pub(crate) fn chunks(&self, sector: u64, count: u64) -> Range<u64> {
        if count == 0 || sector >= self.capacity {
            return 0..0;
        }
        let shift = self.shift - SECTOR_SHIFT;
        let last = sector.saturating_add(count - 1).min(self.capacity - 1);
        (sector >> shift)..(last >> shift) + 1
    }

    /// Returns the index of the chunk holding `sector`.
    pub(crate) fn chunk_of(&self, sector: u64) -> u64 {
        sector >> (self.shift - SECTOR_SHIFT)
    }

    /// Returns the first sector of chunk `index`.
    pub(crate) fn start(&self, index: u64) -> u64 {
        index << (self.shift - SECTOR_SHIFT)
    }

    /// Returns the number of bytes of chunk `index` that lie on the device: the chunk size, less
    /// for the last chunk of a device whose size is not a multiple of it.
    pub(crate) fn len_bytes(&self, index: u64) -> usize {
        let start = self.start(index);
        let sectors = self
            .capacity
            .saturating_sub(start)
            .min(self.chunk_sectors());
        // At most the chunk size, which fits in `usize`.
        (sectors << SECTOR_SHIFT) as usize
    }
}

/// The old data of a chunk in memory: enough pages for a chunk, of which the first
/// [`Geometry::chunk_bytes`] bytes are used (a chunk may be smaller than a page).
pub(crate) struct Buffer {
    pages: KVec<Page>,
}

impl Buffer {
    /// Allocates the pages for `bytes` bytes with `gfp`.
    pub(crate) fn new(bytes: usize, gfp: kernel::alloc::Flags) -> Result<Self> {
        let nr = bytes.div_ceil(PAGE_SIZE).max(1);
        let mut pages = KVec::with_capacity(nr, gfp)?;
        for _ in 0..nr {
            pages.push(Page::alloc_page(gfp)?, gfp)?;
        }
        Ok(Self { pages })
    }

    /// Returns the pages.
    pub(crate) fn pages(&self) -> &[Page] {
        &self.pages
    }

    /// Returns the pages, for filling them.
    pub(crate) fn pages_mut(&mut self) -> &mut [Page] {
        &mut self.pages
    }

    /// Returns the page and the offset in it of byte `offset` of the buffer.
    pub(crate) fn locate(offset: usize) -> (usize, usize) {
        (offset / PAGE_SIZE, offset % PAGE_SIZE)
    }

    /// Returns the ranges `(page, offset in page, length)` that cover the first `len` bytes.
    pub(crate) fn ranges(len: usize) -> impl Iterator<Item = (usize, usize)> {
        (0..len.div_ceil(PAGE_SIZE)).map(move |i| (i, (len - i * PAGE_SIZE).min(PAGE_SIZE)))
    }
}

impl AsRef<Buffer> for Buffer {
    fn as_ref(&self) -> &Buffer {
        self
    }
}

#[cfg(CONFIG_BLKSNAP_KUNIT_TEST)]
#[kunit_tests(blksnap_chunk)]
mod tests {
    use super::*;

    const DEFAULTS: Params = Params {
        min_shift: 18,
        max_count: 2097152,
        max_shift: 26,
    };

    #[test]
    fn params_are_brought_into_range() {
        let p = Params::new(0, 0, 0);
        assert_eq!(p.min_shift, MIN_CHUNK_SHIFT);
        assert_eq!(p.max_count, 1);
        assert_eq!(p.max_shift, MIN_CHUNK_SHIFT);
        let p = Params::new(40, 7, 12);
        assert_eq!(p.min_shift, MAX_CHUNK_SHIFT);
        assert_eq!(p.max_shift, MAX_CHUNK_SHIFT);
    }

    #[test]
    fn small_device_has_one_partial_chunk() -> Result {
        // 1 MiB + 1 sector with 256 KiB chunks: five chunks, the last of one sector.
        let g = Geometry::new(2049, 512, &DEFAULTS)?;
        assert_eq!(g.chunk_bytes(), 1 << 18);
        assert_eq!(g.count(), 5);
        assert_eq!(g.len_bytes(0), 1 << 18);
        assert_eq!(g.len_bytes(4), 512);
        // An empty device has no chunks, and nothing maps to one.
        let g = Geometry::new(0, 512, &DEFAULTS)?;
        assert_eq!(g.count(), 0);
        assert!(g.chunks(0, 8).is_empty());
        Ok(())
    }

    #[test]
    fn odd_sizes_and_large_blocks() -> Result {
        // A chunk is never smaller than the logical block.
        let p = Params::new(12, 1 << 20, 20);
        let g = Geometry::new(1000, 65536, &p)?;
        assert_eq!(g.chunk_bytes(), 65536);
        assert_eq!(g.count(), 8);
        // A device of an odd number of sectors.
        let g = Geometry::new(12345, 512, &p)?;
        assert_eq!(g.chunk_bytes(), 4096);
        assert_eq!(g.count(), 12345u64.div_ceil(8));
        // 12345 = 8 * 1543 + 1: the last chunk holds one sector.
        assert_eq!(g.len_bytes(g.count() - 1), 512);
        Ok(())
    }

    #[test]
    fn huge_device_grows_chunks_up_to_max_shift() -> Result {
        // 1 PiB: 64 MiB chunks would still be 16 Mi chunks, above max_count.
        let g = Geometry::new(1u64 << 41, 512, &DEFAULTS)?;
        assert_eq!(g.chunk_bytes(), 1 << 26);
        assert_eq!(g.count(), 1 << 24);
        // 1 TiB: 512 KiB chunks fit the count.
        let g = Geometry::new(1u64 << 31, 512, &DEFAULTS)?;
        assert_eq!(g.chunk_bytes(), 1 << 19);
        assert_eq!(g.count(), 1 << 21);
        Ok(())
    }

    #[test]
    fn ranges_map_to_the_chunks_they_touch() -> Result {
        let p = Params::new(12, 1 << 20, 12);
        // 10 chunks of 8 sectors, the last one of 4.
        let g = Geometry::new(76, 512, &p)?;
        assert_eq!(g.count(), 10);
        assert_eq!(g.chunks(0, 1), 0..1);
        assert_eq!(g.chunks(7, 2), 0..2);
        assert_eq!(g.chunks(8, 8), 1..2);
        // Cut at the end of the device, and nothing past it.
        assert_eq!(g.chunks(70, 100), 8..10);
        assert!(g.chunks(76, 1).is_empty());
        assert!(g.chunks(5, 0).is_empty());
        assert_eq!(g.chunks(0, u64::MAX), 0..10);
        assert_eq!(g.chunk_of(17), 2);
        assert_eq!(g.start(3), 24);
        Ok(())
    }

    #[test]
    fn states_round_trip() {
        for s in [
            State::Untouched,
            State::Reading,
            State::Buffered,
            State::Stored,
            State::Failed,
        ] {
            assert_eq!(State::from_u8(s as u8), s);
        }
        assert!(!State::Untouched.is_preserved());
        assert!(!State::Reading.is_preserved());
        assert!(State::Buffered.is_preserved());
        assert!(State::Stored.is_preserved());
    }

    #[test]
    fn buffer_covers_a_chunk() -> Result {
        // A chunk smaller than a page still gets one page; a larger one as many as it needs.
        let b = Buffer::new(4096, GFP_KERNEL)?;
        assert_eq!(b.pages().len(), 4096usize.div_ceil(PAGE_SIZE));
        let b = Buffer::new(1 << 18, GFP_KERNEL)?;
        assert_eq!(b.pages().len(), (1usize << 18).div_ceil(PAGE_SIZE));
        let total: usize = Buffer::ranges(1 << 18).map(|(_, len)| len).sum();
        assert_eq!(total, 1 << 18);
        assert_eq!(Buffer::locate(PAGE_SIZE + 5), (1, 5));
        Ok(())
    }
}
