// SPDX-License-Identifier: GPL-2.0

//! Snapshots: sets of devices captured at the same instant, their difference storage and their
//! events, and the registry of the snapshots that exist.
//!
//! A snapshot is created with its difference storage, devices join it (`snapshotadd`, on a
//! device whose change tracker is attached), and it is taken once: the file systems on its
//! devices are frozen, then for every device the change map is switched and copy-on-write turned
//! on, the filter is fenced so that no write that saw copy-on-write off is still on its way
//! through it, the devices are drained so that every write counted before the take has
//! completed before copy-on-write reads old data, and the file systems are thawed. The image
//! disks appear then. Destroying the snapshot removes the images, lets copy-on-write go, and
//! releases the storage; change tracking goes on.

use crate::{
    chunk,
    diff_area::DiffArea,
    diff_storage::{DiffStorage, Id, Shared},
    event::Event,
    image::Image,
    tracker::Link,
    uapi::Uuid,
};
use kernel::{
    block::{
        bdev::{BlockDeviceFile, FreezeGuard, OpenMode},
        bio::BioSet,
        bio_disk::BioDisk,
        filter,
    },
    new_mutex,
    prelude::*,
    sync::{Arc, Mutex, SetOnce},
    time::{Instant, Monotonic},
    workqueue::{OwnedQueue, QueueFlag},
};

/// A device of a snapshot.
struct Member {
    link: Arc<Link>,
    area: Option<Arc<DiffArea>>,
    image: Option<BioDisk<Image>>,
}

struct State {
    taken: bool,
    /// A take is under way: the members must not change.
    taking: bool,
    destroyed: bool,
    members: KVec<Member>,
}

/// A snapshot.
#[pin_data]
pub(crate) struct Snapshot {
    shared: Arc<Shared>,
    /// Held by take and destroy, never under a device's filter lock.
    #[pin]
    busy: Mutex<()>,
    /// Taken briefly, also under a device's filter lock (by `add`).
    #[pin]
    state: Mutex<State>,
}

impl Snapshot {
    /// Adds the device of `link` to the snapshot.
    ///
    /// Fails with `EBUSY` if the snapshot is taken or the device belongs to a snapshot already,
    /// `ESRCH` if the snapshot is destroyed, `EINVAL` if the device holds the difference
    /// storage, `EPERM` if the device has an integrity or inline-encryption profile (a copy of
    /// its data would be wrong), `EOPNOTSUPP` if it is zoned, or with the error of opening the
    /// device.
    fn add(&self, link: &Arc<Link>) -> Result {
        let dev = link.dev();
        if let Some((err, why)) = link.refusal() {
            pr_err!("{}: refused: {}\n", dev, why);
            return Err(err);
        }
        if self.shared.storage.is_on_disk(link.disk()) {
            pr_err!("{}: refused: the difference storage is on this disk\n", dev);
            return Err(EINVAL);
        }
        // Chunks are stored in 4 KiB slots, in pieces of the device's logical block (the last
        // chunk, and image writes); a storage device of larger blocks could not take them.
        let store_block = self.shared.storage.logical_block_size();
        if store_block > link.logical_block_size().min(4096) {
            pr_err!(
                "{}: refused: the difference storage has {}-byte blocks, the device {}\n",
                dev,
                store_block,
                link.logical_block_size()
            );
            return Err(EINVAL);
        }
        let mut state = self.state.lock();
        if state.destroyed {
            return Err(ESRCH);
        }
        if state.taken || state.taking {
            return Err(EBUSY);
        }
        state.members.reserve(1, GFP_KERNEL)?;
        link.join(self.shared.id)?;
        state
            .members
            .push_within_capacity(Member {
                link: link.clone(),
                area: None,
                image: None,
            })
            .map_err(|_| ENOMEM)
    }

    /// Takes the snapshot; see the module documentation.
    ///
    /// The state lock is taken only briefly: `add` takes it under a device's filter lock, so it
    /// must not be held while devices are opened, frozen or added (which take the disks'
    /// `open_mutex` and `s_umount`, ranked above the filter lock). `busy` keeps takes and
    /// destroys of the snapshot apart instead, and `add` refuses while a take is under way.
    fn take(&self, params: &chunk::Params) -> Result {
        let _busy = self.busy.lock();
        let links = {
            let mut state = self.state.lock();
            if state.destroyed {
                return Err(ESRCH);
            }
            if state.taken || state.taking {
                return Err(EALREADY);
            }
            if state.members.is_empty() {
                return Err(ENODEV);
            }
            let mut links = KVec::with_capacity(state.members.len(), GFP_KERNEL)?;
            for member in state.members.iter() {
                links.push(member.link.clone(), GFP_KERNEL)?;
            }
            state.taking = true;
            links
        };
        let result = self.take_links(&links, params);
        let mut state = self.state.lock();
        state.taking = false;
        let (areas, images) = result?;
        state.taken = true;
        let mut result = Ok(());
        for ((member, area), image) in state.members.iter_mut().zip(areas).zip(images) {
            match image {
                Ok(disk) => {
                    member.link.set_image();
                    member.image = Some(disk);
                }
                Err(err) => {
                    area.fail(err);
                    result = Err(err);
                }
            }
            member.area = Some(area);
        }
        result
    }

    /// Takes the devices of `links`: returns their areas and their image disks.
    #[expect(clippy::type_complexity, reason = "used once, right above")]
    fn take_links(
        &self,
        links: &[Arc<Link>],
        params: &chunk::Params,
    ) -> Result<(KVec<Arc<DiffArea>>, KVec<Result<BioDisk<Image>>>)> {
        // Everything that may allocate or fail is done before the devices are frozen.
        let mut prepared = KVec::with_capacity(links.len(), GFP_KERNEL)?;
        let mut areas = KVec::with_capacity(links.len(), GFP_KERNEL)?;
        for link in links {
            if link.is_detached() {
                return Err(ENODEV);
            }
            let origin = BlockDeviceFile::open(link.dev(), OpenMode::Read)?;
            let bdev = origin.bdev();
            let geometry =
                chunk::Geometry::new(bdev.nr_sectors(), bdev.logical_block_size(), params)?;
            let cbt = link.cbt().prepare_take(bdev.nr_sectors())?;
            prepared.push(cbt, GFP_KERNEL)?;
            areas.push(
                DiffArea::new(origin, geometry, self.shared.clone())?,
                GFP_KERNEL,
            )?;
        }
        let mut images = KVec::with_capacity(links.len(), GFP_KERNEL)?;
        let mut origins = KVec::with_capacity(areas.len(), GFP_KERNEL)?;
        for area in areas.iter() {
            origins.push(area.origin(), GFP_KERNEL)?;
        }
        // The RCU grace period of the drain's queue freezes passes now, while writes flow.
        let drain = filter::prepare_drain(&origins)?;
        for area in areas.iter() {
            area.hold_reads();
        }

        let mut lost = KVec::from_elem(false, areas.len(), GFP_KERNEL)?;
        let mut cows = KVec::with_capacity(areas.len(), GFP_KERNEL)?;
        for area in areas.iter() {
            cows.push(area.copy_on_write()?, GFP_KERNEL)?;
        }

        // Freeze, switch, fence, drain, thaw.
        let start = Instant::<Monotonic>::now();
        let mut frozen: KVec<FreezeGuard<'_>> = KVec::with_capacity(areas.len(), GFP_KERNEL)?;
        for area in areas.iter() {
            // A file system that cannot be frozen (one shut down after an error, say) does not
            // stop the take: the device's image is then crash-consistent, as if the power had
            // gone, instead of clean.
            match area.origin().freeze() {
                Ok(guard) => frozen.push(guard, GFP_KERNEL)?,
                Err(err) => pr_warn!(
                    "snapshot {:?}: {}:{}: file system not frozen (error {}), its image is \
                     crash-consistent\n",
                    Id(&self.shared.id),
                    area.dev().major(),
                    area.dev().minor(),
                    err.to_errno()
                ),
            }
        }
        let held = Instant::<Monotonic>::now();
        // Each change map is switched with copy-on-write turned on in one step: a write is
        // copied exactly when it is counted after the take (`Cbt::mark`).
        for (((link, cow), cbt), lost) in links.iter().zip(cows).zip(prepared).zip(lost.iter_mut())
        {
            // Fails if the device was detached since it joined: its image cannot follow its
            // writes. The area is marked corrupted once the file systems are thawed (it
            // allocates an event); its image does not exist before.
            *lost = link.set_cow(cow).is_err();
            let _ = link.cbt().take(cbt, true);
        }
        filter::fence();
        // A write counted before the switch may still be on its way to a device: the image must
        // have it, as the take's map counts it. Copy-on-write holds back its reads of old data
        // (and so the writes it takes over) until the devices are drained.
        if let Err(err) = drain.wait(DRAIN_TIMEOUT_MS) {
            // Rare (a device whose writes hang, a bio-based one that never stops writing):
            // whatever the images got of those writes, this take's maps and the next ones count
            // every block, so that no backup of the chain misses them.
            pr_warn!(
                "snapshot {:?}: writes still in flight after {} ms (error {}); this take's change \
                 maps and the next count every block\n",
                Id(&self.shared.id),
                DRAIN_TIMEOUT_MS,
                err.to_errno()
            );
            // File systems are frozen: nothing here may allocate (`mark_all`, unlike
            // `mark_dirty`, needs no memory).
            for link in links.iter() {
                link.cbt().mark_all();
            }
        }
        for area in areas.iter() {
            area.release_reads();
        }
        let switched = held.elapsed();
        drop(frozen);
        drop(origins);
        for (area, &lost) in areas.iter().zip(lost.iter()) {
            if lost {
                area.fail(ENODEV);
            }
        }
        pr_info!(
            "snapshot {:?}: taken on {} devices, writes held {} us (with freeze and thaw {} us)\n",
            Id(&self.shared.id),
            areas.len(),
            switched.as_micros_ceil(),
            start.elapsed().as_micros_ceil()
        );

        for (link, area) in links.iter().zip(areas.iter()) {
            let image = Image::create(area.clone(), link.cbt_shared(), self.shared.image_queue);
            // Room was reserved for each.
            let _ = images.push(image, GFP_KERNEL);
        }
        Ok((areas, images))
    }

    /// Destroys the snapshot: its images go away, copy-on-write ends, its events end.
    fn destroy(&self) {
        let _busy = self.busy.lock();
        let mut state = self.state.lock();
        if state.destroyed {
            return;
        }
        state.destroyed = true;
        for member in state.members.iter() {
            // Stopped first: the writes it holds go on now, whatever the storage does, and the
            // writes that still reach it pass.
            if let Some(area) = &member.area {
                area.shutdown();
            }
            member.link.cbt().end_cow();
            member.link.clear_cow();
        }
        // No write is on its way through copy-on-write of this snapshot after this.
        filter::fence();
        let members = core::mem::take(&mut state.members);
        drop(state);
        for member in members {
            if let Some(area) = &member.area {
                let [untouched, _, _, stored, failed] = area.counts();
                let (_, limit, peak) = area.memory();
                pr_info!(
                    "{}: snapshot destroyed: {} chunks preserved, {} untouched, {} failed; \
                     at most {} chunks in memory (bound {})\n",
                    area.dev(),
                    stored,
                    untouched,
                    failed,
                    peak,
                    limit
                );
            }
            // The image disk goes first: its bios use the area.
            drop(member.image);
            member.link.leave(self.shared.id);
        }
        self.shared.events.close();
        pr_info!(
            "snapshot {:?}: difference storage used {} of {} bytes\n",
            Id(&self.shared.id),
            self.shared.storage.used(),
            self.shared.storage.limit()
        );
    }
}

/// How long a take waits for the writes in flight on its devices ([`filter::Drain::wait`]).
const DRAIN_TIMEOUT_MS: u32 = 5000;

/// The snapshots that exist, and what they share.
#[pin_data]
pub(crate) struct Registry {
    #[pin]
    snapshots: Mutex<KVec<Arc<Snapshot>>>,
    queue: OwnedQueue,
    image_queue: OwnedQueue,
    bio_set: Arc<BioSet>,
    epoch: Instant<Monotonic>,
    params: chunk::Params,
    /// Bytes by which a file difference storage grows.
    storage_step: u64,
    /// Chunks an area may keep in memory for copy-on-write.
    chunk_limit: usize,
}

static REGISTRY: SetOnce<Arc<Registry>> = SetOnce::new();

/// Sets up the registry, at module initialization.
pub(crate) fn init(params: chunk::Params, storage_step: u64, chunk_limit: usize) -> Result {
    let queue = OwnedQueue::new(c"blksnap", QueueFlag::Unbound | QueueFlag::MemReclaim, 0)?;
    let image_queue = OwnedQueue::new(
        c"blksnap-image",
        QueueFlag::Unbound | QueueFlag::MemReclaim,
        0,
    )?;
    let registry = Arc::pin_init(
        try_pin_init!(Registry {
            snapshots <- new_mutex!(KVec::new()),
            queue,
            image_queue,
            bio_set: Arc::pin_init(BioSet::new(64, true), GFP_KERNEL)?,
            epoch: Instant::<Monotonic>::now(),
            params,
            storage_step,
            chunk_limit: chunk_limit.max(1),
        }),
        GFP_KERNEL,
    )?;
    if !REGISTRY.populate(registry) {
        return Err(EBUSY);
    }
    Ok(())
}

fn registry() -> Result<&'static Registry> {
    REGISTRY.as_ref().map(|r| &**r).ok_or(ENODEV)
}

fn find(id: &Uuid) -> Result<Arc<Snapshot>> {
    let snapshots = registry()?.snapshots.lock();
    snapshots
        .iter()
        .find(|s| &s.shared.id == id)
        .cloned()
        .ok_or(ESRCH)
}

/// Makes what the areas of a new snapshot share, with the difference storage `storage`.
pub(crate) fn new_shared(storage: impl PinInit<DiffStorage, Error>) -> Result<Arc<Shared>> {
    let reg = registry()?;
    new_shared_with_queues(storage, &reg.queue, &reg.image_queue)
}

/// As [`new_shared`], with the chunks stored on `queue` and the image bios served on
/// `image_queue`.
pub(crate) fn new_shared_with_queues(
    storage: impl PinInit<DiffStorage, Error>,
    queue: &'static OwnedQueue,
    image_queue: &'static OwnedQueue,
) -> Result<Arc<Shared>> {
    let reg = registry()?;
    Shared::new(
        storage,
        reg.bio_set.clone(),
        queue,
        image_queue,
        reg.chunk_limit,
        reg.epoch,
    )
}

/// Creates a snapshot with the difference storage given by `fd`, up to `limit_sectors`; returns
/// its id.
pub(crate) fn create(fd: u32, limit_sectors: u64) -> Result<Uuid> {
    let reg = registry()?;
    let shared = new_shared(DiffStorage::from_fd(fd, limit_sectors, reg.storage_step)?)?;
    let id = shared.id;
    let snapshot = Arc::pin_init(
        pin_init!(Snapshot {
            shared,
            busy <- new_mutex!(()),
            state <- new_mutex!(State {
                taken: false,
                taking: false,
                destroyed: false,
                members: KVec::new(),
            }),
        }),
        GFP_KERNEL,
    )?;
    reg.snapshots.lock().push(snapshot, GFP_KERNEL)?;
    Ok(id)
}

/// Adds the device of `link` to snapshot `id`.
pub(crate) fn add(id: &Uuid, link: &Arc<Link>) -> Result {
    find(id)?.add(link)
}

/// Takes snapshot `id`.
pub(crate) fn take(id: &Uuid) -> Result {
    let params = registry()?.params;
    find(id)?.take(&params)
}

/// Destroys snapshot `id`.
pub(crate) fn destroy(id: &Uuid) -> Result {
    let snapshot = {
        let mut snapshots = registry()?.snapshots.lock();
        let pos = snapshots
            .iter()
            .position(|s| &s.shared.id == id)
            .ok_or(ESRCH)?;
        snapshots.remove(pos)?
    };
    snapshot.destroy();
    Ok(())
}

/// Returns the ids of the snapshots that exist.
pub(crate) fn collect() -> Result<KVec<Uuid>> {
    let snapshots = registry()?.snapshots.lock();
    let mut ids = KVec::with_capacity(snapshots.len(), GFP_KERNEL)?;
    for s in snapshots.iter() {
        ids.push(s.shared.id, GFP_KERNEL)?;
    }
    Ok(ids)
}

/// Sets the events beyond `corrupted` that snapshot `id` delivers ([`Shared::want_events`]).
pub(crate) fn want_events(id: &Uuid, mask: u64) -> Result {
    find(id)?.shared.want_events(mask)
}

/// Waits up to `timeout_ms` for the next event of snapshot `id`.
pub(crate) fn wait_event(id: &Uuid, timeout_ms: u32) -> Result<Event> {
    let snapshot = find(id)?;
    snapshot.shared.events.wait(timeout_ms)
}
