// SPDX-License-Identifier: GPL-2.0

//! Changed-block tracking: the CBT map of one block device.
//!
//! The device is cut into blocks of equal, power-of-two size, and the map holds one byte per
//! block. A write stores the current changes number in the bytes of the blocks it touches.
//!
//! There are two copies of the map. The active one is updated by the I/O path. The snapshot copy
//! is what user space reads: taking a snapshot copies the active map into it and starts a new
//! changes number. When the changes number would pass 255, the active map is cleared and a new
//! generation (a random UUID) begins, since old numbers can no longer be told from new ones.

use core::ops::Range;
use kernel::{new_mutex, new_spinlock, prelude::*, random, sync::Mutex, sync::SpinLock};

/// log2 of the sector size.
const SECTOR_SHIFT: u32 = kernel::block::SECTOR_SHIFT;

/// The largest block shift: a block size must fit the `u32` of the user interface.
const MAX_BLOCK_SHIFT: u32 = 31;

/// A generation identifier, in the byte order of the user interface.
pub(crate) type Generation = [u8; 16];

/// How the block size is chosen; see [`Geometry::new`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Params {
    min_shift: u32,
    max_count: u32,
    max_shift: u32,
}

impl Params {
    /// Makes parameters from raw values, bringing each into its valid range: a block is at least
    /// a sector and at most 2 GiB, the maximum shift is at least the minimum shift, and at least
    /// one block is allowed.
    pub(crate) fn new(min_shift: u32, max_count: u32, max_shift: u32) -> Self {
        let min_shift = min_shift.clamp(SECTOR_SHIFT, MAX_BLOCK_SHIFT);
        Self {
            min_shift,
            max_count: max_count.max(1),
            max_shift: max_shift.clamp(min_shift, MAX_BLOCK_SHIFT),
        }
    }
}

/// The division of a device into tracking blocks.
///
/// # Invariants
///
/// `SECTOR_SHIFT <= shift <= MAX_BLOCK_SHIFT`, and `count` blocks of `1 << shift` bytes cover
/// `capacity_sectors` sectors, the last block possibly extending past the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    capacity_sectors: u64,
    shift: u32,
    count: u32,
}

impl Geometry {
    /// Chooses the block size for a device of `capacity_sectors` sectors.
    ///
    /// The block size starts at `1 << min_shift` and doubles while the device needs more than
    /// `max_count` blocks, up to `1 << max_shift`; past that the count may exceed `max_count`.
    /// Fails with `EFBIG` if the map would need more than `u32::MAX` blocks.
    pub(crate) fn new(capacity_sectors: u64, params: &Params) -> Result<Self> {
        let blocks = |shift: u32| -> u64 {
            let sectors_shift = shift - SECTOR_SHIFT;
            capacity_sectors.div_ceil(1u64 << sectors_shift)
        };
        let mut shift = params.min_shift;
        while shift < params.max_shift && blocks(shift) > u64::from(params.max_count) {
            shift += 1;
        }
        let count = u32::try_from(blocks(shift)).map_err(|_| EFBIG)?;
        // INVARIANT: `Params` keeps the shifts within the bounds, and `blocks()` rounds up.
        Ok(Self {
            capacity_sectors,
            shift,
            count,
        })
    }

    /// Returns the capacity of the device in bytes.
    pub(crate) fn capacity_bytes(&self) -> u64 {
        self.capacity_sectors.saturating_mul(1 << SECTOR_SHIFT)
    }

    /// Returns the block size in bytes.
    pub(crate) fn block_size(&self) -> u32 {
        1 << self.shift
    }

    /// Returns the number of blocks, which is the size of the map in bytes.
    pub(crate) fn block_count(&self) -> u32 {
        self.count
    }

    /// Returns the indices of the blocks that the `count` sectors from `sector` touch, cut at the
    /// end of the map, or `None` if they touch none.
    pub(crate) fn blocks(&self, sector: u64, count: u64) -> Option<Range<usize>> {
        if count == 0 {
            return None;
        }
        let sectors_shift = self.shift - SECTOR_SHIFT;
        let first = sector >> sectors_shift;
        if first >= u64::from(self.count) {
            return None;
        }
        let last =
            (sector.saturating_add(count - 1) >> sectors_shift).min(u64::from(self.count) - 1);
        // Both are below `self.count`, a `u32`.
        Some(first as usize..last as usize + 1)
    }
}

/// The map that the I/O path updates.
struct Active {
    map: KVVec<u8>,
    number: u8,
    generation: Generation,
}

/// The map as frozen by the last snapshot; the one user space reads.
struct Frozen {
    /// Allocated when the first snapshot is taken; all zeroes until then.
    map: Option<KVVec<u8>>,
    number: u8,
    generation: Generation,
}

/// What [`Cbt::info`] reports.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Info {
    pub(crate) geometry: Geometry,
    pub(crate) generation: Generation,
    pub(crate) changes_number: u8,
}

/// The change tracker of one block device.
///
/// Lock order: `frozen` before `active`.
///
/// # Invariants
///
/// The active map and, once allocated, the frozen map are `geometry.block_count()` bytes long.
/// Every byte of the active map is at most `active.number`, every byte of the frozen map at most
/// `frozen.number`, and `frozen.number < active.number` when both are of the same generation.
#[pin_data]
pub(crate) struct Cbt {
    geometry: Geometry,
    #[pin]
    active: SpinLock<Active>,
    #[pin]
    frozen: Mutex<Frozen>,
}

impl Cbt {
    /// Makes the tracker of a device with the given geometry, with a new generation.
    ///
    /// Allocates the active map; fails with `ENOMEM` if that is not possible.
    pub(crate) fn new(geometry: Geometry) -> Result<impl PinInit<Self, Error>> {
        let map = KVVec::from_elem(0u8, geometry.block_count() as usize, GFP_KERNEL)?;
        let generation = random::uuid_v4();
        // INVARIANT: The map has the size of the geometry and is all zeroes, below both numbers.
        Ok(try_pin_init!(Self {
            geometry,
            active <- new_spinlock!(Active {
                map,
                number: 1,
                generation,
            }),
            frozen <- new_mutex!(Frozen {
                map: None,
                number: 0,
                generation,
            }),
        }))
    }

    /// Returns the memory the maps use, in bytes.
    #[cfg_attr(
        not(CONFIG_BLKSNAP_KUNIT_TEST),
        expect(dead_code, reason = "only the tests ask for it so far")
    )]
    pub(crate) fn memory(&self) -> usize {
        let frozen = self.frozen.lock().map.is_some();
        self.geometry.block_count() as usize * (1 + usize::from(frozen))
    }

    /// Marks the blocks that the `count` sectors from `sector` touch as changed.
    ///
    /// Called for every write; never sleeps.
    pub(crate) fn mark(&self, sector: u64, count: u64) {
        let Some(blocks) = self.geometry.blocks(sector, count) else {
            return;
        };
        let mut active = self.active.lock();
        let number = active.number;
        if let Some(bytes) = active.map.get_mut(blocks) {
            bytes.fill(number);
        }
    }

    /// Marks the blocks that the `count` sectors from `sector` touch as changed, in the active
    /// map and in the frozen one, for data changed behind the tracker's back.
    pub(crate) fn mark_dirty(&self, sector: u64, count: u64) {
        let Some(blocks) = self.geometry.blocks(sector, count) else {
            return;
        };
        let mut frozen = self.frozen.lock();
        let frozen_number = frozen.number;
        if let Some(bytes) = frozen
            .map
            .as_mut()
            .and_then(|map| map.get_mut(blocks.clone()))
        {
            bytes.fill(frozen_number);
        }
        let mut active = self.active.lock();
        let number = active.number;
        if let Some(bytes) = active.map.get_mut(blocks) {
            bytes.fill(number);
        }
    }

    /// Takes a snapshot of the map: freezes a copy of the active map and starts a new changes
    /// number. Returns whether that began a new generation: after the snapshot with changes
    /// number 255 the active map is cleared and numbering starts again from 1.
    ///
    /// Fails with `ENOMEM` if the frozen copy cannot be allocated (the first time only).
    #[cfg_attr(
        not(CONFIG_BLKSNAP_KUNIT_TEST),
        expect(dead_code, reason = "snapshots are not implemented yet")
    )]
    pub(crate) fn take(&self) -> Result<bool> {
        let mut frozen = self.frozen.lock();
        if frozen.map.is_none() {
            frozen.map = Some(KVVec::from_elem(
                0u8,
                self.geometry.block_count() as usize,
                GFP_KERNEL,
            )?);
            pr_info!(
                "snapshot copy of the change map: {} bytes\n",
                self.geometry.block_count()
            );
        }
        let next_generation = random::uuid_v4();
        let mut active = self.active.lock();
        if let Some(map) = frozen.map.as_mut() {
            // Both maps have the size of the geometry; a zipped copy cannot panic.
            for (to, from) in map.iter_mut().zip(active.map.iter()) {
                *to = *from;
            }
        }
        frozen.number = active.number;
        frozen.generation = active.generation;
        if active.number == u8::MAX {
            active.map.fill(0);
            active.number = 1;
            active.generation = next_generation;
            Ok(true)
        } else {
            active.number += 1;
            Ok(false)
        }
    }

    /// Describes the frozen map.
    pub(crate) fn info(&self) -> Info {
        let frozen = self.frozen.lock();
        Info {
            geometry: self.geometry,
            generation: frozen.generation,
            changes_number: frozen.number,
        }
    }

    /// Reads up to `length` bytes of the frozen map from byte `offset`, passing them to `sink` in
    /// pieces. Returns the number of bytes read: fewer than `length` at the end of the map, zero
    /// when `offset` is the end. Fails with `EINVAL` if `offset` is past the end, or with the
    /// error of `sink`.
    pub(crate) fn read_map(
        &self,
        offset: u32,
        length: u32,
        sink: &mut dyn FnMut(&[u8]) -> Result,
    ) -> Result<u32> {
        let count = self.geometry.block_count();
        if offset > count {
            return Err(EINVAL);
        }
        let n = length.min(count - offset);
        let range = offset as usize..(offset + n) as usize;
        let frozen = self.frozen.lock();
        match frozen.map.as_ref() {
            Some(map) => sink(map.get(range).ok_or(EINVAL)?)?,
            None => {
                // No snapshot yet: the map is all zeroes.
                const ZEROES: [u8; 256] = [0; 256];
                let mut left = range.len();
                while left > 0 {
                    let piece = left.min(ZEROES.len());
                    sink(&ZEROES[..piece])?;
                    left -= piece;
                }
            }
        }
        Ok(n)
    }
}

#[cfg(CONFIG_BLKSNAP_KUNIT_TEST)]
#[kernel::prelude::kunit_tests(blksnap_cbt)]
mod tests {
    use super::*;

    const DEFAULTS: Params = Params {
        min_shift: 16,
        max_count: 2097152,
        max_shift: 26,
    };

    fn tracker(capacity_sectors: u64, params: &Params) -> Result<Pin<KBox<Cbt>>> {
        let geometry = Geometry::new(capacity_sectors, params)?;
        KBox::pin_init(Cbt::new(geometry)?, GFP_KERNEL)
    }

    /// Reads the whole frozen map.
    fn frozen_map(cbt: &Cbt) -> Result<KVec<u8>> {
        let mut out = KVec::new();
        let n = cbt.read_map(0, u32::MAX, &mut |piece| {
            out.extend_from_slice(piece, GFP_KERNEL)?;
            Ok(())
        })?;
        if n as usize != out.len() {
            return Err(EIO);
        }
        Ok(out)
    }

    #[test]
    fn params_are_brought_into_range() {
        let p = Params::new(0, 0, 0);
        assert_eq!(p.min_shift, SECTOR_SHIFT);
        assert_eq!(p.max_count, 1);
        assert_eq!(p.max_shift, SECTOR_SHIFT);
        let p = Params::new(40, 7, 12);
        assert_eq!(p.min_shift, MAX_BLOCK_SHIFT);
        assert_eq!(p.max_shift, MAX_BLOCK_SHIFT);
    }

    #[test]
    fn geometry_of_tiny_device() -> Result {
        // One sector: one block of the minimum size.
        let g = Geometry::new(1, &DEFAULTS)?;
        assert_eq!(g.block_size(), 1 << 16);
        assert_eq!(g.block_count(), 1);
        assert_eq!(g.capacity_bytes(), 512);
        // An empty device has an empty map.
        let g = Geometry::new(0, &DEFAULTS)?;
        assert_eq!(g.block_count(), 0);
        assert_eq!(g.blocks(0, 8), None);
        Ok(())
    }

    #[test]
    fn geometry_rounds_up_a_partial_last_block() -> Result {
        // 1 GiB + one sector, 64 KiB blocks.
        let g = Geometry::new((1 << 21) + 1, &DEFAULTS)?;
        assert_eq!(g.block_size(), 1 << 16);
        assert_eq!(g.block_count(), (1 << 14) + 1);
        assert_eq!(g.blocks((1 << 21) - 1, 2), Some(16383..16385));
        Ok(())
    }

    #[test]
    fn geometry_grows_blocks_up_to_max_count() -> Result {
        // Exactly max_count blocks of 64 KiB: 128 GiB stays at the minimum size.
        let g = Geometry::new(2097152u64 << 7, &DEFAULTS)?;
        assert_eq!(g.block_size(), 1 << 16);
        assert_eq!(g.block_count(), 2097152);
        // One more sector doubles the block size.
        let g = Geometry::new((2097152u64 << 7) + 1, &DEFAULTS)?;
        assert_eq!(g.block_size(), 1 << 17);
        assert_eq!(g.block_count(), 1048577);
        Ok(())
    }

    #[test]
    fn geometry_of_huge_device_stops_at_max_shift() -> Result {
        // 1 PiB: 64 MiB blocks would still be 16 Mi blocks, above max_count.
        let g = Geometry::new(1u64 << 41, &DEFAULTS)?;
        assert_eq!(g.block_size(), 1 << 26);
        assert_eq!(g.block_count(), 1 << 24);
        // A map beyond u32::MAX blocks is refused rather than allocated.
        let tiny_blocks = Params::new(9, 1, 9);
        assert_eq!(Geometry::new(1u64 << 40, &tiny_blocks).err(), Some(EFBIG));
        Ok(())
    }

    #[test]
    fn writes_mark_every_block_they_touch() -> Result {
        // 8 blocks of 4 KiB (8 sectors), the last one partial (5 sectors).
        let p = Params::new(12, 1024, 12);
        let cbt = tracker(61, &p)?;
        assert_eq!(cbt.info().geometry.block_count(), 8);
        // Straddles blocks 1 and 2.
        cbt.mark(15, 2);
        // The last, partial block; the part past the end of the device is ignored.
        cbt.mark(60, 100);
        // Entirely past the end, and empty.
        cbt.mark(1000, 8);
        cbt.mark(0, 0);
        assert_eq!(frozen_map(&cbt)?.as_slice(), &[0u8; 8]);
        assert!(!cbt.take()?);
        assert_eq!(frozen_map(&cbt)?.as_slice(), &[0, 1, 1, 0, 0, 0, 0, 1]);
        // The range ending at the very last sector addressable.
        cbt.mark(u64::MAX - 1, 2);
        cbt.mark(0, u64::MAX);
        cbt.take()?;
        assert_eq!(frozen_map(&cbt)?.as_slice(), &[2u8; 8]);
        Ok(())
    }

    #[test]
    fn changes_number_advances_with_each_snapshot() -> Result {
        let p = Params::new(12, 1024, 12);
        let cbt = tracker(64, &p)?;
        let start = cbt.info();
        assert_eq!(start.changes_number, 0);
        cbt.mark(0, 1);
        cbt.take()?;
        cbt.mark(8, 1);
        cbt.take()?;
        let info = cbt.info();
        assert_eq!(info.changes_number, 2);
        assert_eq!(info.generation, start.generation);
        assert_eq!(frozen_map(&cbt)?.as_slice(), &[1, 2, 0, 0, 0, 0, 0, 0]);
        Ok(())
    }

    #[test]
    fn changes_number_wrap_starts_a_new_generation() -> Result {
        let p = Params::new(12, 1024, 12);
        let cbt = tracker(64, &p)?;
        let first = cbt.info().generation;
        cbt.mark(0, 1);
        // Snapshots 1 to 254 stay in the first generation.
        for _ in 0..254 {
            assert!(!cbt.take()?);
        }
        cbt.mark(8, 1);
        // Snapshot 255 is still in it, but the changes number cannot go on from there.
        assert!(cbt.take()?);
        let info = cbt.info();
        assert_eq!(info.changes_number, 255);
        assert_eq!(info.generation, first);
        assert_eq!(frozen_map(&cbt)?.as_slice(), &[1, 255, 0, 0, 0, 0, 0, 0]);
        // A new generation, its map cleared, numbered from 1 again.
        cbt.mark(16, 1);
        assert!(!cbt.take()?);
        let info = cbt.info();
        let second = info.generation;
        assert_eq!(info.changes_number, 1);
        assert!(second != first);
        assert_eq!(frozen_map(&cbt)?.as_slice(), &[0, 0, 1, 0, 0, 0, 0, 0]);
        cbt.mark(24, 1);
        assert!(!cbt.take()?);
        assert_eq!(cbt.info().changes_number, 2);
        assert_eq!(cbt.info().generation, second);
        assert_eq!(frozen_map(&cbt)?.as_slice(), &[0, 0, 1, 2, 0, 0, 0, 0]);
        Ok(())
    }

    #[test]
    fn dirty_ranges_reach_both_maps() -> Result {
        let p = Params::new(12, 1024, 12);
        let cbt = tracker(64, &p)?;
        // Before any snapshot only the active map exists.
        cbt.mark_dirty(0, 1);
        cbt.take()?;
        assert_eq!(frozen_map(&cbt)?.as_slice(), &[1, 0, 0, 0, 0, 0, 0, 0]);
        // After one, the frozen map shows the range at once, with its own number.
        cbt.mark_dirty(23, 10);
        cbt.mark_dirty(63, u64::MAX);
        cbt.mark_dirty(64, 1);
        assert_eq!(frozen_map(&cbt)?.as_slice(), &[1, 0, 1, 1, 1, 0, 0, 1]);
        cbt.take()?;
        assert_eq!(frozen_map(&cbt)?.as_slice(), &[1, 0, 2, 2, 2, 0, 0, 2]);
        Ok(())
    }

    #[test]
    fn map_reads_at_odd_offsets_and_lengths() -> Result {
        let p = Params::new(9, 1 << 20, 9);
        // 1000 blocks of one sector each.
        let cbt = tracker(1000, &p)?;
        for block in (0..1000).step_by(3) {
            cbt.mark(block, 1);
        }
        cbt.take()?;
        let mut got = KVec::new();
        let n = cbt.read_map(7, 13, &mut |piece| {
            got.extend_from_slice(piece, GFP_KERNEL)?;
            Ok(())
        })?;
        assert_eq!(n, 13);
        assert_eq!(got.as_slice(), &[0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0]);
        // A short read at the end, an empty one just past it, an error beyond.
        got.clear();
        let n = cbt.read_map(995, 4096, &mut |piece| {
            got.extend_from_slice(piece, GFP_KERNEL)?;
            Ok(())
        })?;
        assert_eq!(n, 5);
        assert_eq!(got.as_slice(), &[0, 1, 0, 0, 1]);
        assert_eq!(cbt.read_map(1000, 1, &mut |_| Ok(()))?, 0);
        assert_eq!(cbt.read_map(1001, 1, &mut |_| Ok(())).err(), Some(EINVAL));
        // Zero length reads nothing; a failing sink fails the read.
        assert_eq!(cbt.read_map(3, 0, &mut |_| Ok(()))?, 0);
        assert_eq!(cbt.read_map(3, 9, &mut |_| Err(EFAULT)).err(), Some(EFAULT));
        Ok(())
    }

    #[test]
    fn map_reads_before_any_snapshot_are_zeroes() -> Result {
        let p = Params::new(9, 1 << 20, 9);
        let cbt = tracker(700, &p)?;
        cbt.mark(0, 700);
        let map = frozen_map(&cbt)?;
        assert_eq!(map.len(), 700);
        assert!(map.iter().all(|&b| b == 0));
        assert_eq!(cbt.memory(), 700);
        cbt.take()?;
        assert_eq!(cbt.memory(), 1400);
        Ok(())
    }
}
