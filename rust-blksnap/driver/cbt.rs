// SPDX-License-Identifier: GPL-2.0

//! Changed-block tracking: the CBT map of one block device.
//!
//! The device is cut into blocks of equal, power-of-two size, and the map holds one byte per
//! block. A write stores the current changes number in the bytes of the blocks it touches.
//!
//! There are two copies of the map, both allocated when tracking starts. The active one is
//! updated by the I/O path. The frozen copy is what user space reads: a take copies the active
//! map into it and starts a new changes number. When the changes number would pass 255, the
//! active map is cleared and a new generation (a random UUID) begins, since old numbers can no
//! longer be told from new ones.
//!
//! A take happens while the file system on the device is frozen, so it must not allocate: what it
//! may need is allocated beforehand by [`Cbt::prepare_take`], which may fail, and [`Cbt::take`]
//! itself cannot. Memory is only needed when the capacity of the device changed: the maps are
//! sized for the capacity seen when tracking started (or at the last resize), so a write past it
//! cannot be recorded. Such a write, or a new capacity seen by `prepare_take`, makes the next take
//! start a new generation with maps sized for the new capacity, in which every block counts as
//! changed: clients then make a full backup.

use core::{mem, ops::Range};
use kernel::{
    block::bdev::DevT,
    new_mutex, new_spinlock,
    prelude::*,
    random,
    sync::{Mutex, SpinLock},
};

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

    /// Returns the capacity of the device in sectors.
    pub(crate) fn capacity_sectors(&self) -> u64 {
        self.capacity_sectors
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

/// A change map: for each block, the changes number of the interval in which it was last
/// written, or 0 if it was not written since its generation began.
type Map = KVVec<u8>;

/// Allocates a map for `geometry` with every byte `value`.
fn new_map(geometry: &Geometry, value: u8) -> Result<Map> {
    Ok(KVVec::from_elem(
        value,
        geometry.block_count() as usize,
        GFP_KERNEL,
    )?)
}

/// The map that the I/O path updates.
struct Active {
    geometry: Geometry,
    map: Map,
    number: u8,
    generation: Generation,
    /// A write reached past the capacity of the geometry: the device grew.
    grown: bool,
    /// Writes are copied on write (a snapshot of the device is taken). Set by the take that
    /// switches the map, under the same lock: a write is copied on write exactly when it is
    /// counted after the take.
    cow: bool,
}

/// The map as frozen by the last take; the one user space reads.
struct Frozen {
    geometry: Geometry,
    /// All zeroes until the first take.
    map: Map,
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

/// What a take needs, made by [`Cbt::prepare_take`] before the device is frozen.
pub(crate) struct PreparedTake {
    /// The generation that the take starts, if it starts one.
    generation: Generation,
    /// The maps of a new generation for a new capacity, if the capacity changed.
    resize: Option<Resize>,
}

/// The maps of a new generation, sized for the new capacity of the device.
///
/// # Invariants
///
/// Both maps are `geometry.block_count()` bytes long; `active` is all zeroes, `frozen` all ones.
struct Resize {
    geometry: Geometry,
    active: Map,
    frozen: Map,
}

/// The change tracker of one block device.
///
/// Lock order: `frozen` before `active`.
///
/// # Invariants
///
/// - Both maps are `geometry.block_count()` bytes long, and both states have the same geometry.
/// - Every byte of the active map is at most `active.number`, every byte of the frozen map at
///   most `frozen.number`, and `frozen.number < active.number` when both are of the same
///   generation.
#[pin_data]
pub(crate) struct Cbt {
    /// The device, for the log.
    dev: DevT,
    /// How block sizes are chosen, for the maps of a new capacity.
    params: Params,
    #[pin]
    active: SpinLock<Active>,
    #[pin]
    frozen: Mutex<Frozen>,
}

impl Cbt {
    /// Makes the tracker of the device `dev` with the given geometry, with a new generation;
    /// `params` choose the geometry when the capacity of the device changes.
    ///
    /// Allocates both maps; fails with `ENOMEM` if that is not possible.
    pub(crate) fn new(
        dev: DevT,
        geometry: Geometry,
        params: Params,
    ) -> Result<impl PinInit<Self, Error>> {
        let active = new_map(&geometry, 0)?;
        let frozen = new_map(&geometry, 0)?;
        let generation = random::uuid_v4();
        // INVARIANT: The maps have the size of the geometry and are all zeroes, below both
        // numbers.
        Ok(try_pin_init!(Self {
            dev,
            params,
            active <- new_spinlock!(Active {
                geometry,
                map: active,
                number: 1,
                generation,
                grown: false,
                cow: false,
            }),
            frozen <- new_mutex!(Frozen {
                geometry,
                map: frozen,
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
        let frozen = self.frozen.lock();
        let active = self.active.lock();
        frozen.map.len() + active.map.len()
    }

    /// Marks the blocks that the `count` sectors from `sector` touch as changed.
    ///
    /// The caller cuts the range at the current end of the device, where the block layer fails
    /// the I/O: a range that goes past the capacity of the maps means that the device grew, and
    /// makes the next take start a new generation.
    ///
    /// Returns whether the write must be copied on write: whether a take turned copy-on-write
    /// on before it was marked (see [`Cbt::take`]). Deciding both under one lock is what keeps
    /// the change map and the snapshot in step: a write counted in a take's map is never copied
    /// on write for that take (its image would keep the old data while the map says the take has
    /// the new), and a write counted after it always is.
    ///
    /// Called for every write; never sleeps. It takes the lock of the active map even when every
    /// block of the range holds the current number already: checking that without the lock would
    /// read a map that a take starting a new generation may free meanwhile, which needs an
    /// RCU-protected pointer to the map.
    #[must_use]
    pub(crate) fn mark(&self, sector: u64, count: u64) -> bool {
        if count == 0 {
            return false;
        }
        let mut active = self.active.lock();
        let geometry = active.geometry;
        let grew = sector.saturating_add(count) > geometry.capacity_sectors() && !active.grown;
        active.grown |= grew;
        let number = active.number;
        if let Some(bytes) = geometry
            .blocks(sector, count)
            .and_then(|blocks| active.map.get_mut(blocks))
        {
            bytes.fill(number);
        }
        let cow = active.cow;
        drop(active);
        if grew {
            pr_info!(
                "{}: write past the {} sectors tracked: the next take starts a new generation\n",
                self.dev,
                geometry.capacity_sectors()
            );
        }
        cow
    }

    /// Turns copy-on-write off: the writes marked from now on are not copied.
    pub(crate) fn end_cow(&self) {
        self.active.lock().cow = false;
    }

    /// Marks the blocks that the `count` sectors from `sector` touch as changed, in the active
    /// map and in the frozen one, for data changed behind the tracker's back.
    ///
    /// A range that starts inside the device is cut at its end. Fails with `EINVAL` if `count`
    /// is 0 or `sector` is at or past the end of the device (as far as the maps cover it).
    pub(crate) fn mark_dirty(&self, sector: u64, count: u64) -> Result {
        let mut frozen = self.frozen.lock();
        if sector >= frozen.geometry.capacity_sectors() {
            return Err(EINVAL);
        }
        let blocks = frozen.geometry.blocks(sector, count).ok_or(EINVAL)?;
        let frozen_number = frozen.number;
        if let Some(bytes) = frozen.map.get_mut(blocks.clone()) {
            bytes.fill(frozen_number);
        }
        let mut active = self.active.lock();
        let number = active.number;
        if let Some(bytes) = active.map.get_mut(blocks) {
            bytes.fill(number);
        }
        Ok(())
    }

    /// Prepares a take, for a device of `capacity_sectors` sectors now.
    ///
    /// Call it before the device is frozen: if the capacity changed since the maps were sized,
    /// or a write went past their end, this allocates the maps of a new generation, with the
    /// geometry that the parameters of the tracker choose for the capacity. Fails with `ENOMEM`
    /// if they cannot be allocated, with `EFBIG` if the capacity needs too many blocks.
    pub(crate) fn prepare_take(&self, capacity_sectors: u64) -> Result<PreparedTake> {
        let (geometry, grown) = {
            let active = self.active.lock();
            (active.geometry, active.grown)
        };
        let resize = if grown || capacity_sectors != geometry.capacity_sectors() {
            let geometry = Geometry::new(capacity_sectors, &self.params)?;
            // INVARIANT: Both maps are made for `geometry`, filled as required.
            Some(Resize {
                geometry,
                active: new_map(&geometry, 0)?,
                frozen: new_map(&geometry, 1)?,
            })
        } else {
            None
        };
        Ok(PreparedTake {
            generation: random::uuid_v4(),
            resize,
        })
    }

    /// Takes a snapshot of the map: freezes a copy of the active map and starts a new changes
    /// number; with `cow`, turns copy-on-write on in the same step (see [`Cbt::mark`]). Never
    /// allocates, never fails.
    ///
    /// Returns whether a new generation began. After the take with changes number 255 the
    /// active map is cleared and numbering starts again from 1 in a new generation. With maps
    /// prepared for a new capacity, the take itself starts a new generation with them: the
    /// frozen map shows every block changed with changes number 1, and the active map goes on
    /// with 2. A write past the end that comes after [`Cbt::prepare_take`] is answered by the
    /// next take.
    pub(crate) fn take(&self, prepared: PreparedTake, cow: bool) -> bool {
        match prepared.resize {
            None => self.switch(prepared.generation, cow),
            Some(resize) => {
                self.restart(resize, prepared.generation, cow);
                true
            }
        }
    }

    /// Freezes a copy of the active map and starts a new changes number, or a new generation
    /// `next` after 255, and turns copy-on-write on or off (`cow`). Returns whether a new
    /// generation began.
    fn switch(&self, next: Generation, cow: bool) -> bool {
        let mut frozen = self.frozen.lock();
        let mut active = self.active.lock();
        active.cow = cow;
        // Both maps have the size of the geometry; a zipped copy cannot panic.
        for (to, from) in frozen.map.iter_mut().zip(active.map.iter()) {
            *to = *from;
        }
        frozen.number = active.number;
        frozen.generation = active.generation;
        if active.number == u8::MAX {
            active.map.fill(0);
            active.number = 1;
            active.generation = next;
            true
        } else {
            active.number += 1;
            false
        }
    }

    /// Starts the generation `next` with the maps of `resize`, and turns copy-on-write on or off
    /// (`cow`).
    fn restart(&self, resize: Resize, next: Generation, cow: bool) {
        let Resize {
            geometry,
            active: active_map,
            frozen: frozen_map,
        } = resize;
        let mut frozen = self.frozen.lock();
        let mut active = self.active.lock();
        let old = active.geometry;
        // INVARIANT: By the invariant of `Resize`, the new maps fit the new geometry of both
        // states, and each of their bytes is at most the new numbers, 1 < 2.
        let old_active = mem::replace(&mut active.map, active_map);
        active.geometry = geometry;
        active.number = 2;
        active.generation = next;
        active.grown = false;
        active.cow = cow;
        let old_frozen = mem::replace(&mut frozen.map, frozen_map);
        frozen.geometry = geometry;
        frozen.number = 1;
        frozen.generation = next;
        drop(active);
        drop(frozen);
        // Outside of the locks: freeing memory from `vmalloc()` may sleep.
        drop(old_active);
        drop(old_frozen);
        pr_info!(
            "{}: capacity changed from {} to {} sectors: new generation, {} blocks of {} bytes\n",
            self.dev,
            old.capacity_sectors(),
            geometry.capacity_sectors(),
            geometry.block_count(),
            geometry.block_size()
        );
    }

    /// Describes the frozen map.
    pub(crate) fn info(&self) -> Info {
        let frozen = self.frozen.lock();
        Info {
            geometry: frozen.geometry,
            generation: frozen.generation,
            changes_number: frozen.number,
        }
    }

    /// Reads up to `length` bytes of the frozen map from byte `offset`, passing them to `sink`.
    /// Returns the number of bytes read: fewer than `length` at the end of the map, zero when
    /// `offset` is the end. Fails with `EINVAL` if `offset` is past the end, or with the error of
    /// `sink`.
    pub(crate) fn read_map(
        &self,
        offset: u32,
        length: u32,
        sink: &mut dyn FnMut(&[u8]) -> Result,
    ) -> Result<u32> {
        let frozen = self.frozen.lock();
        let count = frozen.geometry.block_count();
        if offset > count {
            return Err(EINVAL);
        }
        let n = length.min(count - offset);
        let range = offset as usize..(offset + n) as usize;
        sink(frozen.map.get(range).ok_or(EINVAL)?)?;
        Ok(n)
    }
}
#[cfg(CONFIG_BLKSNAP_KUNIT_TEST)]
#[kunit_tests(blksnap_cbt)]
mod tests {
    use super::*;

    const DEFAULTS: Params = Params {
        min_shift: 16,
        max_count: 2097152,
        max_shift: 26,
    };

    fn tracker(capacity_sectors: u64, params: &Params) -> Result<Pin<KBox<Cbt>>> {
        let geometry = Geometry::new(capacity_sectors, params)?;
        KBox::pin_init(Cbt::new(DevT::new(0, 0), geometry, *params)?, GFP_KERNEL)
    }

    /// Takes a snapshot of the map at an unchanged capacity; fails with `EINVAL` if that would
    /// need memory.
    fn take(cbt: &Cbt) -> Result<bool> {
        let prepared = cbt.prepare_take(cbt.info().geometry.capacity_sectors())?;
        if prepared.resize.is_some() {
            return Err(EINVAL);
        }
        Ok(cbt.take(prepared, false))
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
        let _ = cbt.mark(15, 2);
        // The last sector, in the last, partial block.
        let _ = cbt.mark(60, 1);
        // Empty.
        let _ = cbt.mark(0, 0);
        assert_eq!(frozen_map(&cbt)?.as_slice(), &[0u8; 8]);
        assert!(!take(&cbt)?);
        assert_eq!(frozen_map(&cbt)?.as_slice(), &[0, 1, 1, 0, 0, 0, 0, 1]);
        // The whole device.
        let _ = cbt.mark(0, 61);
        assert!(!take(&cbt)?);
        assert_eq!(frozen_map(&cbt)?.as_slice(), &[2u8; 8]);
        Ok(())
    }

    #[test]
    fn changes_number_advances_with_each_snapshot() -> Result {
        let p = Params::new(12, 1024, 12);
        let cbt = tracker(64, &p)?;
        let start = cbt.info();
        assert_eq!(start.changes_number, 0);
        let _ = cbt.mark(0, 1);
        take(&cbt)?;
        let _ = cbt.mark(8, 1);
        take(&cbt)?;
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
        let _ = cbt.mark(0, 1);
        // Snapshots 1 to 254 stay in the first generation.
        for _ in 0..254 {
            assert!(!take(&cbt)?);
        }
        let _ = cbt.mark(8, 1);
        // Snapshot 255 is still in it, but the changes number cannot go on from there.
        assert!(take(&cbt)?);
        let info = cbt.info();
        assert_eq!(info.changes_number, 255);
        assert_eq!(info.generation, first);
        assert_eq!(frozen_map(&cbt)?.as_slice(), &[1, 255, 0, 0, 0, 0, 0, 0]);
        // A new generation, its map cleared, numbered from 1 again.
        let _ = cbt.mark(16, 1);
        assert!(!take(&cbt)?);
        let info = cbt.info();
        let second = info.generation;
        assert_eq!(info.changes_number, 1);
        assert!(second != first);
        assert_eq!(frozen_map(&cbt)?.as_slice(), &[0, 0, 1, 0, 0, 0, 0, 0]);
        let _ = cbt.mark(24, 1);
        assert!(!take(&cbt)?);
        assert_eq!(cbt.info().changes_number, 2);
        assert_eq!(cbt.info().generation, second);
        assert_eq!(frozen_map(&cbt)?.as_slice(), &[0, 0, 1, 2, 0, 0, 0, 0]);
        Ok(())
    }

    #[test]
    fn dirty_ranges_reach_both_maps() -> Result {
        let p = Params::new(12, 1024, 12);
        let cbt = tracker(64, &p)?;
        // Before any take the frozen map has nothing to show.
        cbt.mark_dirty(0, 1)?;
        assert_eq!(frozen_map(&cbt)?.as_slice(), &[0u8; 8]);
        take(&cbt)?;
        assert_eq!(frozen_map(&cbt)?.as_slice(), &[1, 0, 0, 0, 0, 0, 0, 0]);
        // After one, the frozen map shows the range at once, with its own number. A range that
        // runs past the end of the device is cut there.
        cbt.mark_dirty(23, 10)?;
        cbt.mark_dirty(63, u64::MAX)?;
        assert_eq!(frozen_map(&cbt)?.as_slice(), &[1, 0, 1, 1, 1, 0, 0, 1]);
        take(&cbt)?;
        assert_eq!(frozen_map(&cbt)?.as_slice(), &[1, 0, 2, 2, 2, 0, 0, 2]);
        Ok(())
    }

    #[test]
    fn dirty_ranges_outside_the_device_are_refused() -> Result {
        let p = Params::new(12, 1024, 12);
        let cbt = tracker(64, &p)?;
        take(&cbt)?;
        assert_eq!(cbt.mark_dirty(64, 1).err(), Some(EINVAL));
        assert_eq!(cbt.mark_dirty(1000, 8).err(), Some(EINVAL));
        assert_eq!(cbt.mark_dirty(u64::MAX - 7, 8).err(), Some(EINVAL));
        assert_eq!(cbt.mark_dirty(u64::MAX, u64::MAX).err(), Some(EINVAL));
        assert_eq!(cbt.mark_dirty(8, 0).err(), Some(EINVAL));
        // They marked nothing, and are no sign that the device grew.
        assert_eq!(frozen_map(&cbt)?.as_slice(), &[0u8; 8]);
        take(&cbt)?;
        assert_eq!(frozen_map(&cbt)?.as_slice(), &[0u8; 8]);
        // A device without sectors refuses every range.
        let empty = tracker(0, &p)?;
        assert_eq!(empty.mark_dirty(0, 1).err(), Some(EINVAL));
        Ok(())
    }

    #[test]
    fn map_reads_at_odd_offsets_and_lengths() -> Result {
        let p = Params::new(9, 1 << 20, 9);
        // 1000 blocks of one sector each.
        let cbt = tracker(1000, &p)?;
        for block in (0..1000).step_by(3) {
            let _ = cbt.mark(block, 1);
        }
        take(&cbt)?;
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
        let _ = cbt.mark(0, 700);
        let map = frozen_map(&cbt)?;
        assert_eq!(map.len(), 700);
        assert!(map.iter().all(|&b| b == 0));
        Ok(())
    }

    #[test]
    fn both_maps_are_allocated_when_tracking_starts() -> Result {
        let p = Params::new(9, 1 << 20, 9);
        let cbt = tracker(700, &p)?;
        assert_eq!(cbt.memory(), 1400);
        let _ = cbt.mark(0, 700);
        // A take at the same capacity needs no memory.
        let prepared = cbt.prepare_take(700)?;
        assert!(prepared.resize.is_none());
        assert!(!cbt.take(prepared, false));
        assert_eq!(cbt.memory(), 1400);
        assert!(frozen_map(&cbt)?.iter().all(|&b| b == 1));
        // Nor does the one that wraps the changes number around.
        for _ in 0..253 {
            assert!(!take(&cbt)?);
        }
        assert_eq!(cbt.info().changes_number, 254);
        assert!(take(&cbt)?);
        assert_eq!(cbt.memory(), 1400);
        Ok(())
    }

    #[test]
    fn a_prepared_take_waits_for_the_take() -> Result {
        let p = Params::new(12, 1024, 12);
        let cbt = tracker(64, &p)?;
        let first = cbt.info();
        let _ = cbt.mark(0, 1);
        let prepared = cbt.prepare_take(64)?;
        // Preparing changes nothing that user space sees, and writes still count.
        let _ = cbt.mark(8, 1);
        let info = cbt.info();
        assert_eq!(info.changes_number, 0);
        assert_eq!(info.generation, first.generation);
        assert!(!cbt.take(prepared, false));
        assert_eq!(cbt.info().changes_number, 1);
        assert_eq!(cbt.info().generation, first.generation);
        assert_eq!(frozen_map(&cbt)?.as_slice(), &[1, 1, 0, 0, 0, 0, 0, 0]);
        // A prepared take that is dropped leaves no trace.
        drop(cbt.prepare_take(128)?);
        assert_eq!(cbt.info().geometry, first.geometry);
        assert!(!take(&cbt)?);
        assert_eq!(cbt.info().changes_number, 2);
        Ok(())
    }

    #[test]
    fn growth_starts_a_new_generation_at_the_new_size() -> Result {
        let p = Params::new(12, 1024, 12);
        let cbt = tracker(64, &p)?;
        let _ = cbt.mark(0, 1);
        assert!(!take(&cbt)?);
        let first = cbt.info();
        // The device grew to 100 sectors; a write reaches into the new part. The part that the
        // maps cover is marked as usual.
        let _ = cbt.mark(60, 40);
        let prepared = cbt.prepare_take(100)?;
        assert!(prepared.resize.is_some());
        // Until the take, user space sees the old map.
        assert_eq!(cbt.info().generation, first.generation);
        assert_eq!(cbt.info().geometry.capacity_sectors(), 64);
        assert!(cbt.take(prepared, false));
        // A new generation at the new size, every block changed: clients make a full backup.
        let info = cbt.info();
        assert!(info.generation != first.generation);
        assert_eq!(info.changes_number, 1);
        assert_eq!(info.geometry.capacity_sectors(), 100);
        assert_eq!(info.geometry.capacity_bytes(), 51200);
        assert_eq!(info.geometry.block_size(), 4096);
        assert_eq!(info.geometry.block_count(), 13);
        assert_eq!(frozen_map(&cbt)?.as_slice(), &[1u8; 13]);
        assert_eq!(cbt.memory(), 26);
        // Tracking goes on in the new generation, over the whole device.
        let _ = cbt.mark(96, 4);
        assert!(!take(&cbt)?);
        let next = cbt.info();
        assert_eq!(next.generation, info.generation);
        assert_eq!(next.changes_number, 2);
        let mut want = [0u8; 13];
        want[12] = 2;
        assert_eq!(frozen_map(&cbt)?.as_slice(), &want);
        Ok(())
    }

    #[test]
    fn a_new_capacity_alone_starts_a_new_generation() -> Result {
        let p = Params::new(12, 1024, 12);
        let cbt = tracker(64, &p)?;
        let first = cbt.info().generation;
        // The device shrank, and nothing was written: the maps are resized all the same.
        let prepared = cbt.prepare_take(32)?;
        assert!(cbt.take(prepared, false));
        let info = cbt.info();
        assert!(info.generation != first);
        assert_eq!(info.geometry.capacity_sectors(), 32);
        assert_eq!(frozen_map(&cbt)?.as_slice(), &[1u8; 4]);
        // At an unchanged capacity the next take is an ordinary one.
        assert!(!take(&cbt)?);
        assert_eq!(cbt.info().generation, info.generation);
        assert_eq!(frozen_map(&cbt)?.as_slice(), &[0u8; 4]);
        Ok(())
    }

    #[test]
    fn a_write_past_the_end_alone_starts_a_new_generation() -> Result {
        let p = Params::new(12, 1024, 12);
        let cbt = tracker(64, &p)?;
        let first = cbt.info().generation;
        // The device grew and shrank back before the take: the capacity looks unchanged, but
        // the maps missed a write.
        let _ = cbt.mark(u64::MAX - 1, 2);
        let prepared = cbt.prepare_take(64)?;
        assert!(prepared.resize.is_some());
        assert!(cbt.take(prepared, false));
        let info = cbt.info();
        assert!(info.generation != first);
        assert_eq!(info.changes_number, 1);
        assert_eq!(frozen_map(&cbt)?.as_slice(), &[1u8; 8]);
        // The sign of growth went with the old generation.
        assert!(!take(&cbt)?);
        assert_eq!(cbt.info().changes_number, 2);
        Ok(())
    }

    #[test]
    fn a_write_past_the_end_after_prepare_waits_for_the_next_take() -> Result {
        let p = Params::new(12, 1024, 12);
        let cbt = tracker(64, &p)?;
        let first = cbt.info().generation;
        let prepared = cbt.prepare_take(64)?;
        // The device grows between the preparation and the take, which has no memory for it.
        let _ = cbt.mark(64, 8);
        assert!(!cbt.take(prepared, false));
        assert_eq!(cbt.info().generation, first);
        assert_eq!(cbt.info().geometry.capacity_sectors(), 64);
        // The next take does it.
        let prepared = cbt.prepare_take(72)?;
        assert!(prepared.resize.is_some());
        assert!(cbt.take(prepared, false));
        assert!(cbt.info().generation != first);
        assert_eq!(cbt.info().geometry.block_count(), 9);
        Ok(())
    }

    #[test]
    fn a_failed_prepare_changes_nothing() -> Result {
        // Blocks of one sector, however many.
        let p = Params::new(9, 1, 9);
        let cbt = tracker(64, &p)?;
        let _ = cbt.mark(0, 1);
        let before = cbt.info();
        // A map beyond u32::MAX blocks is refused rather than allocated.
        assert_eq!(cbt.prepare_take(1u64 << 40).err(), Some(EFBIG));
        let after = cbt.info();
        assert_eq!(after.geometry, before.geometry);
        assert_eq!(after.generation, before.generation);
        assert_eq!(cbt.memory(), 128);
        assert!(!take(&cbt)?);
        assert_eq!(frozen_map(&cbt)?.first(), Some(&1));
        Ok(())
    }

    /// A write is copied on write exactly when it is counted after a take that turned
    /// copy-on-write on: `mark` decides both under one lock, with a take of the same map or of a
    /// new generation, and after copy-on-write is turned off.
    #[test]
    fn writes_are_copied_on_write_exactly_when_counted_after_the_take() -> Result {
        let p = Params::new(12, 1024, 12);
        let cbt = tracker(64, &p)?;
        // Before the take: counted in it, not copied.
        assert!(!cbt.mark(0, 1));
        assert!(!cbt.take(cbt.prepare_take(64)?, true));
        assert_eq!(frozen_map(&cbt)?.first(), Some(&1));
        assert_eq!(cbt.info().changes_number, 1);
        // After it: counted after it (number 2, not in the frozen map), copied.
        assert!(cbt.mark(8, 1));
        assert_eq!(frozen_map(&cbt)?.get(1), Some(&0));
        cbt.end_cow();
        assert!(!cbt.mark(16, 1));
        // A take that starts a new generation for a new size turns it on as well.
        assert!(cbt.take(cbt.prepare_take(72)?, true));
        assert!(cbt.mark(64, 8));
        // A take without a snapshot leaves it off.
        assert!(!cbt.take(cbt.prepare_take(72)?, false));
        assert!(!cbt.mark(0, 1));
        Ok(())
    }
}
