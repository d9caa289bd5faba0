// SPDX-License-Identifier: GPL-2.0

//! Changed-block tracking: the CBT map of one block device.
//!
//! The device is cut into blocks of equal, power-of-two size, and the map holds one byte per
//! block. A write stores the current changes number in the bytes of the blocks it touches.
//!
//! The active map, allocated when tracking starts, is updated by the I/O path. The frozen map is
//! what user space reads: the active map as the last take left it, when the take started a new
//! changes number. It is no copy: the first write into a piece of the active map after a take
//! saves that piece for the frozen map (see [`Cbt`]). When the changes number would pass 255,
//! the active map is replaced by a cleared one and a new generation (a random UUID) begins, since
//! old numbers can no longer be told from new ones.
//!
//! A take happens while the file system on the device is frozen, so it must not allocate: what it
//! may need is allocated beforehand by [`Cbt::prepare_take`], which may fail, and [`Cbt::take`]
//! itself cannot. Memory is only needed for the cleared map of a new generation, and when the
//! capacity of the device changed: the maps are sized for the capacity seen when tracking started
//! (or at the last resize), so a write past it cannot be recorded. Such a write, or a new capacity
//! seen by `prepare_take`, makes the next take start a new generation with a map sized for the
//! new capacity, in which every block counts as changed: clients then make a full backup.

use core::{mem, ops::Range};
use kernel::{
    alloc::{flags::__GFP_NOWARN, Flags},
    bitmap::BitmapVec,
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

/// The frozen map is kept in pieces of this many bytes (blocks) while it is a view of the active
/// map ([`View::Pieces`]).
const PIECE: usize = 4096;

/// How memory is allocated under the lock of the active map: without waiting for it. The I/O
/// path does without a saved piece if there is none.
fn save_flags() -> Flags {
    GFP_NOWAIT | __GFP_NOWARN
}

/// A piece of the frozen map saved before the active map first changed in it after the take.
/// The last piece of a map may be longer than its part of the map: only that part is used.
type Saved = KBox<[u8; PIECE]>;

/// Allocates room for a saved piece with `flags`.
fn new_saved(flags: Flags) -> Option<Saved> {
    KBox::zeroed(flags).ok()
}

/// A piece of the frozen map, while it is a view of the active map ([`View::Pieces`]).
enum Piece<'a> {
    /// The active map has not changed in this piece since the take: it is the frozen piece.
    Shared,
    /// The frozen piece, saved before the active map first changed in it after the take.
    Saved(&'a [u8; PIECE]),
    /// The piece could not be saved (there was no memory): every block of it shows as changed in
    /// the take, so that clients copy it rather than miss a change.
    Lost,
}

/// The pieces of the frozen map, one for every [`PIECE`] bytes of the active map: a pointer to
/// the saved piece, if any, and a bit that says whether the piece is lost. That is 8 bytes and a
/// bit for every 4096 blocks, plus 4 KiB for each piece written since the last take.
///
/// # Invariants
///
/// `saved` and `lost` have the same length, and a lost piece has no saved one.
struct Pieces {
    saved: KVVec<Option<Saved>>,
    lost: BitmapVec,
}

impl Pieces {
    /// Allocates the pieces of a map for `geometry`, all shared.
    fn new(geometry: &Geometry) -> Result<Self> {
        let count = Self::count(geometry);
        let mut saved = KVVec::with_capacity(count, GFP_KERNEL)?;
        for _ in 0..count {
            saved.push(None, GFP_KERNEL)?;
        }
        // INVARIANT: Both have `count` entries, none saved, none lost.
        Ok(Self {
            saved,
            lost: BitmapVec::new(count, GFP_KERNEL)?,
        })
    }

    /// Returns the number of pieces of a map for `geometry`.
    fn count(geometry: &Geometry) -> usize {
        (geometry.block_count() as usize).div_ceil(PIECE)
    }

    /// Returns the memory that `count` pieces take when none is saved, in bytes.
    fn index_memory(count: usize) -> usize {
        let bitmap = if count <= BitmapVec::MAX_INLINE_LEN {
            0
        } else {
            count.div_ceil(usize::BITS as usize) * mem::size_of::<usize>()
        };
        count * mem::size_of::<Option<Saved>>() + bitmap
    }

    /// Returns the memory the pieces take, in bytes.
    fn memory(&self) -> usize {
        let saved = self.saved.iter().filter(|piece| piece.is_some()).count();
        Self::index_memory(self.saved.len()) + saved * PIECE
    }

    /// Returns piece `index`, or `None` if there is no such piece.
    fn get(&self, index: usize) -> Option<Piece<'_>> {
        // A saved piece is not lost: the bitmap is only looked at for the others, which a write
        // meets once per piece and take.
        Some(match self.saved.get(index)? {
            Some(saved) => Piece::Saved(saved),
            // `index` is in range: `lost` is as long as `saved`.
            None if self.lost.next_bit(index) == Some(index) => Piece::Lost,
            None => Piece::Shared,
        })
    }

    /// Makes every piece shared, freeing the saved ones.
    fn share_all(&mut self) {
        for piece in self.saved.iter_mut() {
            *piece = None;
        }
        let mut at = 0;
        while at < self.lost.len() {
            let Some(index) = self.lost.next_bit(at) else {
                break;
            };
            self.lost.clear_bit(index);
            at = index + 1;
        }
    }

    /// Saves piece `index`, whose part of the active map is `bytes`, in `room`; without room, the
    /// piece is lost instead.
    fn save(&mut self, index: usize, bytes: &[u8], room: Option<Saved>) {
        let Some(mut saved) = room else {
            self.lose(index);
            return;
        };
        let (Some(to), Some(piece)) = (saved.get_mut(..bytes.len()), self.saved.get_mut(index))
        else {
            self.lose(index);
            return;
        };
        to.copy_from_slice(bytes);
        *piece = Some(saved);
    }

    /// Returns the saved piece `index`, if it is saved.
    fn saved_mut(&mut self, index: usize) -> Option<&mut Saved> {
        self.saved.get_mut(index)?.as_mut()
    }

    /// Makes piece `index` lost (if there is such a piece), freeing its saved copy.
    fn lose(&mut self, index: usize) {
        if let Some(piece) = self.saved.get_mut(index) {
            *piece = None;
            self.lost.set_bit(index);
        }
    }

    /// Makes every piece lost, freeing the saved ones.
    fn lose_all(&mut self) {
        for index in 0..self.saved.len() {
            self.lose(index);
        }
    }
}

/// Returns the indices of the pieces that the map bytes `range` fall into.
fn pieces_of(range: &Range<usize>) -> Range<usize> {
    range.start / PIECE..range.end.div_ceil(PIECE)
}

/// Where the frozen map, the one user space reads, is.
enum View {
    /// Every block holds the frozen changes number: 0 before the first take, 1 after a take that
    /// started a new generation for a new capacity.
    Uniform,
    /// The active map as the take left it: the active map itself where a piece is
    /// [`Piece::Shared`], the piece otherwise.
    Pieces,
    /// A map of its own: the take that ran out of changes numbers moved the active map here and
    /// started a new, cleared one.
    Own(Map),
}

/// The map that the I/O path updates, and the view of the frozen map.
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
    view: View,
    /// One for every [`PIECE`] bytes of the map; only [`View::Pieces`] uses them.
    pieces: Pieces,
}

impl Active {
    /// Saves piece `index` of the frozen map if it is still shared with the active map, before
    /// the active map changes in it. `alloc` gives room for the piece; without it, the piece is
    /// lost instead (see [`Piece::Lost`]).
    fn save_piece(&mut self, index: usize, alloc: impl FnOnce() -> Option<Saved>) {
        if !matches!(self.view, View::Pieces)
            || !matches!(self.pieces.get(index), Some(Piece::Shared))
        {
            return;
        }
        let start = index * PIECE;
        let bytes = self
            .map
            .get(start..self.map.len().min(start + PIECE))
            .unwrap_or(&[]);
        self.pieces.save(index, bytes, alloc());
    }

    /// Appends the bytes `range` of the frozen map, all in one piece, to `out`, which has room
    /// for them. `number` is the frozen changes number.
    fn frozen_bytes(&self, range: Range<usize>, number: u8, out: &mut KVec<u8>) -> Result {
        let len = range.len();
        match &self.view {
            View::Uniform => out.extend_with(len, number, save_flags())?,
            View::Own(map) => out.extend_from_slice(map.get(range).ok_or(EINVAL)?, save_flags())?,
            View::Pieces => {
                let index = range.start / PIECE;
                let at = index * PIECE;
                match self.pieces.get(index).ok_or(EINVAL)? {
                    Piece::Shared => {
                        out.extend_from_slice(self.map.get(range).ok_or(EINVAL)?, save_flags())?
                    }
                    Piece::Saved(saved) => out.extend_from_slice(
                        saved.get(range.start - at..range.end - at).ok_or(EINVAL)?,
                        save_flags(),
                    )?,
                    Piece::Lost => out.extend_with(len, number, save_flags())?,
                }
            }
        }
        Ok(())
    }

    /// Sets the bytes `range` of the frozen map to `number`, the frozen changes number; its
    /// pieces are saved or lost already.
    fn fill_frozen(&mut self, range: Range<usize>, number: u8) {
        match &mut self.view {
            // Every block shows `number` already.
            View::Uniform => {}
            View::Own(map) => {
                if let Some(bytes) = map.get_mut(range) {
                    bytes.fill(number);
                }
            }
            View::Pieces => {
                for index in pieces_of(&range) {
                    if let Some(saved) = self.pieces.saved_mut(index) {
                        let at = index * PIECE;
                        let part = range.start.max(at) - at..range.end.min(at + PIECE) - at;
                        if let Some(bytes) = saved.get_mut(part) {
                            bytes.fill(number);
                        }
                    }
                }
            }
        }
    }
}

/// The numbers of the frozen map, the one user space reads.
struct Frozen {
    geometry: Geometry,
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
    /// The map of a new generation for a new capacity, if the capacity changed.
    resize: Option<Resize>,
    /// A cleared active map, if the take runs out of changes numbers.
    fresh: Option<Map>,
}

/// The map of a new generation, sized for the new capacity of the device.
///
/// # Invariants
///
/// `active` is `geometry.block_count()` bytes long and all zeroes, and `pieces` has one shared
/// piece for every [`PIECE`] bytes of it.
struct Resize {
    geometry: Geometry,
    active: Map,
    pieces: Pieces,
}

/// The change tracker of one block device.
///
/// The active map is updated by every write. The frozen map, the one user space reads, is not a
/// copy of it: a take leaves it as a view of the active map ([`View::Pieces`]), and the first
/// write after the take into a piece of [`PIECE`] blocks saves that piece first. Tracking thus
/// costs one byte per block, 8 bytes and a bit per piece, and a byte more per block only for the
/// pieces written since the last take.
///
/// Lock order: `frozen` before `active`.
///
/// # Invariants
///
/// - The active map is `geometry.block_count()` bytes long, `pieces` has one piece for every
///   [`PIECE`] bytes of it, an own frozen map is as long, and both states have the same
///   geometry.
/// - Every byte of the active map is at most `active.number`, every byte of the frozen map (as
///   the view shows it) at most `frozen.number`, and `frozen.number < active.number` when both
///   are of the same generation.
/// - In [`View::Pieces`], the active map has not changed since the take in the pieces that are
///   [`Piece::Shared`], and a saved piece holds its part of the map at its start.
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
    /// Allocates the active map; fails with `ENOMEM` if that is not possible.
    pub(crate) fn new(
        dev: DevT,
        geometry: Geometry,
        params: Params,
    ) -> Result<impl PinInit<Self, Error>> {
        let map = new_map(&geometry, 0)?;
        let pieces = Pieces::new(&geometry)?;
        let generation = random::uuid_v4();
        // INVARIANT: The map has the size of the geometry and is all zeroes, below both numbers;
        // the frozen map is all zeroes too.
        Ok(try_pin_init!(Self {
            dev,
            params,
            active <- new_spinlock!(Active {
                geometry,
                map,
                number: 1,
                generation,
                grown: false,
                cow: false,
                view: View::Uniform,
                pieces,
            }),
            frozen <- new_mutex!(Frozen {
                geometry,
                number: 0,
                generation,
            }),
        }))
    }

    /// Returns the memory that the maps of a tracker of `geometry` take when it starts, in bytes:
    /// the active map and its pieces.
    pub(crate) fn start_memory(geometry: &Geometry) -> usize {
        geometry.block_count() as usize + Pieces::index_memory(Pieces::count(geometry))
    }

    /// Returns the memory the maps use, in bytes.
    #[cfg_attr(
        not(CONFIG_BLKSNAP_KUNIT_TEST),
        expect(dead_code, reason = "only the tests ask for it so far")
    )]
    pub(crate) fn memory(&self) -> usize {
        let active = self.active.lock();
        let own = match &active.view {
            View::Own(map) => map.len(),
            View::Uniform | View::Pieces => 0,
        };
        active.map.len() + own + active.pieces.memory()
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
    /// RCU-protected pointer to the map. The first write into a piece of the map after a take
    /// saves the piece for the frozen map, without waiting for memory.
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
        if let Some(blocks) = geometry.blocks(sector, count) {
            for index in pieces_of(&blocks) {
                active.save_piece(index, || new_saved(save_flags()));
            }
            if let Some(bytes) = active.map.get_mut(blocks) {
                bytes.fill(number);
            }
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
        self.mark_both(sector, count, GFP_KERNEL)
    }

    /// Marks the blocks that a write of the snapshot image changes, for the `count` sectors from
    /// `sector`, as [`Cbt::mark_dirty`] does: in the frozen map, at the take's changes number, so
    /// that a backup read from the image after the write copies them, and in the active map, so
    /// that the next one copies them again from the origin, which does not have the write. This
    /// is what blksnap v6 does. Allocates without I/O: image writes are served by a worker that
    /// may be needed to free memory.
    pub(crate) fn mark_image_write(&self, sector: u64, count: u64) -> Result {
        self.mark_both(sector, count, GFP_NOIO)
    }

    /// [`Cbt::mark_dirty`], allocating the saved pieces it needs with `flags`.
    fn mark_both(&self, sector: u64, count: u64, flags: Flags) -> Result {
        let frozen = self.frozen.lock();
        if sector >= frozen.geometry.capacity_sectors() {
            return Err(EINVAL);
        }
        let blocks = frozen.geometry.blocks(sector, count).ok_or(EINVAL)?;
        for index in pieces_of(&blocks) {
            let part = blocks.start.max(index * PIECE)..blocks.end.min((index + 1) * PIECE);
            // The frozen lock keeps the view as it is; a write may save the piece meanwhile.
            let shared = {
                let active = self.active.lock();
                matches!(active.view, View::Pieces)
                    && matches!(active.pieces.get(index), Some(Piece::Shared))
            };
            let spare = if shared { new_saved(flags) } else { None };
            let mut active = self.active.lock();
            active.save_piece(index, || spare);
            active.fill_frozen(part.clone(), frozen.number);
            let number = active.number;
            if let Some(bytes) = active.map.get_mut(part) {
                bytes.fill(number);
            }
        }
        Ok(())
    }

    /// Marks every block as changed, in the active map and in the frozen one, as
    /// [`Cbt::mark_dirty`] does for the whole device, but without allocating: it may be called
    /// while file systems are frozen.
    pub(crate) fn mark_all(&self) {
        let frozen = self.frozen.lock();
        let mut active = self.active.lock();
        let active = &mut *active;
        match &mut active.view {
            View::Uniform => {}
            View::Own(map) => map.fill(frozen.number),
            View::Pieces => active.pieces.lose_all(),
        }
        let number = active.number;
        active.map.fill(number);
    }

    /// Prepares a take, for a device of `capacity_sectors` sectors now.
    ///
    /// Call it before the device is frozen: if the capacity changed since the maps were sized,
    /// or a write went past their end, this allocates the map of a new generation, with the
    /// geometry that the parameters of the tracker choose for the capacity; if the take runs out
    /// of changes numbers, a cleared map of the same geometry. Fails with `ENOMEM` if they cannot
    /// be allocated, with `EFBIG` if the capacity needs too many blocks.
    pub(crate) fn prepare_take(&self, capacity_sectors: u64) -> Result<PreparedTake> {
        let (geometry, grown, number) = {
            let active = self.active.lock();
            (active.geometry, active.grown, active.number)
        };
        let resize = if grown || capacity_sectors != geometry.capacity_sectors() {
            let geometry = Geometry::new(capacity_sectors, &self.params)?;
            // INVARIANT: The map and the pieces are made for `geometry`, as required.
            Some(Resize {
                geometry,
                active: new_map(&geometry, 0)?,
                pieces: Pieces::new(&geometry)?,
            })
        } else {
            None
        };
        let fresh = if resize.is_none() && number == u8::MAX {
            Some(new_map(&geometry, 0)?)
        } else {
            None
        };
        Ok(PreparedTake {
            generation: random::uuid_v4(),
            resize,
            fresh,
        })
    }

    /// Takes a snapshot of the map: freezes the active map as it is and starts a new changes
    /// number; with `cow`, turns copy-on-write on in the same step (see [`Cbt::mark`]). Never
    /// allocates, never fails; it copies no map either.
    ///
    /// Returns whether a new generation began. After the take with changes number 255 the
    /// active map is cleared and numbering starts again from 1 in a new generation. With maps
    /// prepared for a new capacity, the take itself starts a new generation with them: the
    /// frozen map shows every block changed with changes number 1, and the active map goes on
    /// with 2. A write past the end that comes after [`Cbt::prepare_take`] is answered by the
    /// next take.
    pub(crate) fn take(&self, prepared: PreparedTake, cow: bool) -> bool {
        match prepared.resize {
            None => self.switch(prepared.generation, prepared.fresh, cow),
            Some(resize) => {
                self.restart(resize, prepared.generation, cow);
                true
            }
        }
    }

    /// Freezes the active map as it is and starts a new changes number, or a new generation
    /// `next` after 255 with the cleared map `fresh`, and turns copy-on-write on or off (`cow`).
    /// Returns whether a new generation began.
    fn switch(&self, next: Generation, mut fresh: Option<Map>, cow: bool) -> bool {
        let mut frozen = self.frozen.lock();
        let mut active = self.active.lock();
        active.cow = cow;
        frozen.number = active.number;
        frozen.generation = active.generation;
        let wrapped = active.number == u8::MAX;
        // INVARIANT: Every piece is shared with a map that nothing wrote since, or the map is
        // frozen whole; the new numbers are above every byte of the active map.
        active.pieces.share_all();
        let old_view = if !wrapped {
            active.number += 1;
            mem::replace(&mut active.view, View::Pieces)
        } else {
            active.number = 1;
            active.generation = next;
            match fresh.take() {
                Some(map) if map.len() == active.map.len() => {
                    let old = mem::replace(&mut active.map, map);
                    mem::replace(&mut active.view, View::Own(old))
                }
                // Not prepared for it (the numbers moved on since the preparation): every block
                // shows as changed in this take, so that no change is missed.
                other => {
                    fresh = other;
                    active.pieces.lose_all();
                    active.map.fill(0);
                    mem::replace(&mut active.view, View::Pieces)
                }
            }
        };
        drop(active);
        drop(frozen);
        // Outside of the locks: freeing memory from `vmalloc()` may sleep.
        drop(old_view);
        drop(fresh);
        wrapped
    }

    /// Starts the generation `next` with the map of `resize`, and turns copy-on-write on or off
    /// (`cow`).
    fn restart(&self, resize: Resize, next: Generation, cow: bool) {
        let Resize {
            geometry,
            active: map,
            pieces,
        } = resize;
        let mut frozen = self.frozen.lock();
        let mut active = self.active.lock();
        let old = active.geometry;
        // INVARIANT: By the invariant of `Resize`, the new map and pieces fit the new geometry of
        // both states; the map is all zeroes, and the frozen map shows 1 everywhere, 1 < 2.
        let old_map = mem::replace(&mut active.map, map);
        let old_pieces = mem::replace(&mut active.pieces, pieces);
        let old_view = mem::replace(&mut active.view, View::Uniform);
        active.geometry = geometry;
        active.number = 2;
        active.generation = next;
        active.grown = false;
        active.cow = cow;
        frozen.geometry = geometry;
        frozen.number = 1;
        frozen.generation = next;
        drop(active);
        drop(frozen);
        // Outside of the locks: freeing memory from `vmalloc()` may sleep.
        drop(old_map);
        drop(old_pieces);
        drop(old_view);
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

    /// Reads up to `length` bytes of the frozen map from byte `offset`, passing them to `sink`
    /// piece by piece. Returns the number of bytes read: fewer than `length` at the end of the
    /// map, zero when `offset` is the end. Fails with `EINVAL` if `offset` is past the end, with
    /// `EAGAIN` if a take froze another map while it read (the bytes passed on would mix two
    /// takes), with `ENOMEM`, or with the error of `sink`.
    ///
    /// No lock is held while `sink` runs: it copies to user space, and a page fault there may
    /// wait for a file system that a take has frozen, while the take waits for the frozen map's
    /// lock to switch the maps.
    pub(crate) fn read_map(
        &self,
        offset: u32,
        length: u32,
        sink: &mut dyn FnMut(&[u8]) -> Result,
    ) -> Result<u32> {
        let (count, number, generation) = {
            let frozen = self.frozen.lock();
            (
                frozen.geometry.block_count(),
                frozen.number,
                frozen.generation,
            )
        };
        if offset > count {
            return Err(EINVAL);
        }
        let n = length.min(count - offset);
        let (mut at, end) = (offset as usize, (offset + n) as usize);
        let mut buf = KVec::with_capacity(PIECE.min(end - at), GFP_KERNEL)?;
        while at < end {
            let to = end.min((at / PIECE + 1) * PIECE);
            buf.clear();
            {
                // Copied out under the locks, passed on outside them.
                let frozen = self.frozen.lock();
                if frozen.number != number || frozen.generation != generation {
                    return Err(EAGAIN);
                }
                self.active
                    .lock()
                    .frozen_bytes(at..to, frozen.number, &mut buf)?;
            }
            sink(&buf)?;
            at = to;
        }
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

    /// The sink of a map read runs with no lock of the tracker held: a take can switch the maps
    /// meanwhile (a take that waited for the read would deadlock when the sink's copy to user
    /// space faults on a file system the take froze). The read then fails with `EAGAIN` rather
    /// than pass on pieces of two takes.
    #[test]
    fn a_take_goes_on_while_the_map_is_copied_out() -> Result {
        // 512-byte blocks: three pieces of the map.
        let params = Params::new(9, 1 << 20, 9);
        let cbt = tracker(3 * PIECE as u64, &params)?;
        let _ = cbt.mark(0, 1);
        take(&cbt)?;
        let mut pieces = 0;
        let result = cbt.read_map(0, u32::MAX, &mut |piece| {
            pieces += 1;
            if pieces == 1 {
                assert_eq!(piece.len(), PIECE);
                assert_eq!(piece[0], 1);
                // A take while the first piece is being copied out: it must not wait.
                take(&cbt)?;
            }
            Ok(())
        });
        assert_eq!(result, Err(EAGAIN));
        assert_eq!(pieces, 1);
        assert_eq!(cbt.info().changes_number, 2);
        // Read again, it is the map of the new take: block 0 still last changed in take 1.
        let map = frozen_map(&cbt)?;
        assert_eq!(map.len(), 3 * PIECE);
        assert_eq!(map[0], 1);
        assert!(map[1..].iter().all(|&b| b == 0));
        Ok(())
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

    /// The memory of a tracker of `blocks` blocks whose frozen map has `saved` pieces of its own:
    /// a byte per block, a pointer per piece, and a bitmap of the pieces once it has more bits
    /// than a word (one word per 64 pieces).
    fn memory_of(blocks: usize, saved: usize) -> usize {
        let pieces = blocks.div_ceil(PIECE);
        let bitmap = if pieces > 64 {
            pieces.div_ceil(64) * 8
        } else {
            0
        };
        blocks + saved * PIECE + pieces * 8 + bitmap
    }

    #[test]
    fn tracking_a_tebibyte_takes_two_mebibytes_and_four_kibibytes() -> Result {
        // 1 TiB at the default geometry: 2 Mi blocks of 512 KiB, 512 pieces.
        let g = Geometry::new(1 << 31, &DEFAULTS)?;
        assert_eq!(g.block_size(), 512 << 10);
        assert_eq!(g.block_count(), 2 << 20);
        assert_eq!(Cbt::start_memory(&g), (2 << 20) + 512 * 8 + 512 / 8);
        // 4 TiB: the blocks grow to 2 MiB, the map stays as big.
        let g = Geometry::new(1 << 33, &DEFAULTS)?;
        assert_eq!(Cbt::start_memory(&g), (2 << 20) + 512 * 8 + 512 / 8);
        // 1 TiB in blocks of 64 KiB: 16 Mi blocks, 4096 pieces.
        let g = Geometry::new(1 << 31, &Params::new(16, 1 << 20, 16))?;
        assert_eq!(Cbt::start_memory(&g), (16 << 20) + 4096 * 8 + 4096 / 8);
        Ok(())
    }

    #[test]
    fn takes_allocate_nothing_and_copy_no_map() -> Result {
        let p = Params::new(9, 1 << 20, 9);
        let cbt = tracker(700, &p)?;
        // One byte per block: the frozen map is not a copy.
        assert_eq!(cbt.memory(), memory_of(700, 0));
        assert_eq!(Cbt::start_memory(&cbt.info().geometry), cbt.memory());
        let _ = cbt.mark(0, 700);
        // A take at the same capacity needs no memory.
        let prepared = cbt.prepare_take(700)?;
        assert!(prepared.resize.is_none());
        assert!(prepared.fresh.is_none());
        assert!(!cbt.take(prepared, false));
        assert_eq!(cbt.memory(), memory_of(700, 0));
        assert!(frozen_map(&cbt)?.iter().all(|&b| b == 1));
        for _ in 0..253 {
            assert!(!take(&cbt)?);
        }
        assert_eq!(cbt.info().changes_number, 254);
        // The take that runs out of numbers needs a cleared map, allocated beforehand, and the
        // frozen map keeps the old one until the next take.
        let _ = cbt.mark(0, 1);
        let prepared = cbt.prepare_take(700)?;
        assert!(prepared.fresh.is_some());
        assert!(cbt.take(prepared, false));
        assert_eq!(cbt.memory(), memory_of(700, 0) + 700);
        let map = frozen_map(&cbt)?;
        assert_eq!(map.first(), Some(&255));
        assert!(map.iter().skip(1).all(|&b| b == 1));
        assert!(!take(&cbt)?);
        assert_eq!(cbt.memory(), memory_of(700, 0));
        Ok(())
    }

    #[test]
    fn the_first_write_after_a_take_saves_its_piece_of_the_frozen_map() -> Result {
        let p = Params::new(9, 1 << 20, 9);
        // Three pieces, the last one partial.
        let blocks = 2 * PIECE + 100;
        let cbt = tracker(blocks as u64, &p)?;
        // Before the first take, writes save nothing: the frozen map shows zeroes.
        let _ = cbt.mark(0, 1);
        let _ = cbt.mark(PIECE as u64, 1);
        assert_eq!(cbt.memory(), memory_of(blocks, 0));
        take(&cbt)?;
        assert_eq!(cbt.memory(), memory_of(blocks, 0));
        // The first write into the second piece saves it; a second write there does not.
        let _ = cbt.mark(PIECE as u64, 2);
        assert_eq!(cbt.memory(), memory_of(blocks, 1));
        let _ = cbt.mark(PIECE as u64 + 7, 1);
        assert_eq!(cbt.memory(), memory_of(blocks, 1));
        // A write into the last, partial piece saves it too.
        let _ = cbt.mark(blocks as u64 - 1, 1);
        assert_eq!(cbt.memory(), memory_of(blocks, 2));
        // The frozen map is the map as the take left it.
        let map = frozen_map(&cbt)?;
        assert_eq!(map.len(), blocks);
        assert_eq!(map.iter().filter(|&&b| b != 0).count(), 2);
        assert_eq!(map[0], 1);
        assert_eq!(map[PIECE], 1);
        // Reads that cross pieces, at odd offsets.
        let mut got = KVec::new();
        cbt.read_map(PIECE as u32 - 2, 5, &mut |piece| {
            got.extend_from_slice(piece, GFP_KERNEL)?;
            Ok(())
        })?;
        assert_eq!(got.as_slice(), &[0, 0, 1, 0, 0]);
        // The next take frees the saved pieces and shows the writes after the first take.
        take(&cbt)?;
        assert_eq!(cbt.memory(), memory_of(blocks, 0));
        let map = frozen_map(&cbt)?;
        assert_eq!(map[0], 1);
        assert_eq!(map[PIECE], 2);
        assert_eq!(map[PIECE + 1], 2);
        assert_eq!(map[PIECE + 7], 2);
        assert_eq!(map[blocks - 1], 2);
        assert_eq!(map.iter().filter(|&&b| b != 0).count(), 5);
        Ok(())
    }

    #[test]
    fn a_piece_that_cannot_be_saved_shows_every_block_changed() -> Result {
        let p = Params::new(9, 1 << 20, 9);
        let blocks = 2 * PIECE;
        let cbt = tracker(blocks as u64, &p)?;
        let _ = cbt.mark(3, 1);
        take(&cbt)?;
        // No memory for the second piece: it is lost, the first one stays shared.
        cbt.active.lock().save_piece(1, || None);
        let _ = cbt.mark(PIECE as u64 + 5, 1);
        assert_eq!(cbt.memory(), memory_of(blocks, 0));
        let map = frozen_map(&cbt)?;
        assert_eq!(map[3], 1);
        assert_eq!(map.iter().take(PIECE).filter(|&&b| b != 0).count(), 1);
        // Every block of the lost piece shows as changed in the take: clients copy it.
        assert!(map.iter().skip(PIECE).all(|&b| b == 1));
        // The next take is exact again.
        take(&cbt)?;
        let map = frozen_map(&cbt)?;
        assert_eq!(map[PIECE + 5], 2);
        assert_eq!(map.iter().filter(|&&b| b == 2).count(), 1);
        Ok(())
    }

    #[test]
    fn a_take_out_of_numbers_without_a_cleared_map_shows_every_block_changed() -> Result {
        let p = Params::new(12, 1024, 12);
        let cbt = tracker(64, &p)?;
        for _ in 0..254 {
            take(&cbt)?;
        }
        let _ = cbt.mark(8, 1);
        // The numbers moved on since a preparation, which thus has no cleared map.
        let prepared = PreparedTake {
            generation: random::uuid_v4(),
            resize: None,
            fresh: None,
        };
        assert!(cbt.take(prepared, false));
        assert_eq!(cbt.info().changes_number, 255);
        assert_eq!(frozen_map(&cbt)?.as_slice(), &[255u8; 8]);
        // The new generation starts cleared all the same.
        let _ = cbt.mark(16, 1);
        assert!(!take(&cbt)?);
        assert_eq!(frozen_map(&cbt)?.as_slice(), &[0, 0, 1, 0, 0, 0, 0, 0]);
        Ok(())
    }

    #[test]
    fn marking_all_needs_no_memory() -> Result {
        let p = Params::new(9, 1 << 20, 9);
        let blocks = PIECE + 10;
        let cbt = tracker(blocks as u64, &p)?;
        let _ = cbt.mark(0, 1);
        take(&cbt)?;
        // A saved piece is freed: every piece is lost.
        let _ = cbt.mark(PIECE as u64, 1);
        assert_eq!(cbt.memory(), memory_of(blocks, 1));
        cbt.mark_all();
        assert_eq!(cbt.memory(), memory_of(blocks, 0));
        // This take's map and the next show every block.
        assert!(frozen_map(&cbt)?.iter().all(|&b| b == 1));
        take(&cbt)?;
        assert!(frozen_map(&cbt)?.iter().all(|&b| b == 2));
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
        assert_eq!(cbt.memory(), memory_of(13, 0));
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
        assert_eq!(cbt.memory(), memory_of(64, 0));
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
