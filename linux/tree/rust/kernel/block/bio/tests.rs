// SPDX-License-Identifier: GPL-2.0

//! KUnit suite of the bio abstractions, on bio-based disks in memory.

#[macros::kunit_tests(rust_block_bio)]
mod cases {
    use crate::{
        alloc::{KVVec, KVec},
        bindings,
        block::bio::{BioSet, EndIo, NewBio, Operation, PendingBio, Status},
        block::bio_disk::{BioDisk, BioDiskBuilder, Operations},
        page::{Page, PAGE_SIZE},
        prelude::*,
        sync::{
            atomic::{Atomic, Relaxed},
            Arc, ArcBorrow, Completion, SpinLock,
        },
    };

    const PAGE_SECTORS: u64 = (PAGE_SIZE >> 9) as u64;
    /// Sixteen pages: 64 KiB with 4 KiB pages, 1 MiB with 64 KiB pages.
    const RAM_SECTORS: u64 = 16 * PAGE_SECTORS;

    /// A disk in memory. It serves bios at once, failing those beyond its end, or, while
    /// `hold` is set, keeps them until [`Ram::release`] serves them later, as a device that
    /// completes I/O asynchronously does.
    #[pin_data]
    struct Ram {
        /// A spinlock, so that bios can be served in atomic context too.
        #[pin]
        data: SpinLock<KVVec<u8>>,
        bios: Atomic<u32>,
        /// Bios ended so far.
        completed: Atomic<u32>,
        hold: Atomic<bool>,
        /// Bios that touch this sector fail with an I/O error.
        bad_sector: Atomic<u64>,
        #[pin]
        held: SpinLock<KVec<PendingBio>>,
    }

    impl Ram {
        fn serve(&self, mut bio: PendingBio) {
            let write = bio.op().is_write();
            let bad = self.bad_sector.load(Relaxed);
            let mut status = Status::OK;
            if bio.sector() <= bad && bio.end_sector().is_none_or(|end| bad < end) {
                status = Status::from_error(EIO);
            } else {
                let mut data = self.data.lock();
                for mut seg in bio.segments() {
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
                    if let Err(e) = res {
                        status = Status::from_error(e);
                        break;
                    }
                }
            }
            self.completed.add(1, Relaxed);
            bio.end(status);
        }

        /// Serves the held bios, the last one first when `reverse`, with a spinlock held: they
        /// end in atomic context, as in a device's interrupt handler. Returns how many there were.
        fn release(&self, reverse: bool) -> u32 {
            let mut held = self.held.lock();
            let mut bios = core::mem::take(&mut *held);
            if reverse {
                bios.reverse();
            }
            let n = bios.len() as u32;
            for bio in bios.drain_all() {
                self.serve(bio);
            }
            drop(held);
            n
        }
    }

    impl Operations for Ram {
        type QueueData = Arc<Ram>;

        fn submit_bio(ram: ArcBorrow<'_, Ram>, bio: PendingBio) {
            ram.bios.add(1, Relaxed);
            if ram.hold.load(Relaxed) {
                let mut held = ram.held.lock();
                let pushed = match held.reserve(1, GFP_ATOMIC) {
                    Ok(()) => held.push_within_capacity(bio),
                    Err(_) => Err(crate::alloc::kvec::PushError(bio)),
                };
                drop(held);
                if let Err(err) = pushed {
                    err.0.end(Status::from_error(ENOMEM));
                }
                return;
            }
            ram.serve(bio);
        }
    }

    fn ram_disk(name: &str) -> Result<(Arc<Ram>, Arc<BioDisk<Ram>>)> {
        let mut data = KVVec::new();
        data.resize((RAM_SECTORS << 9) as usize, 0, GFP_KERNEL)?;
        let ram = Arc::pin_init(
            try_pin_init!(Ram {
                data <- crate::new_spinlock!(data),
                bios: Atomic::new(0),
                completed: Atomic::new(0),
                hold: Atomic::new(false),
                bad_sector: Atomic::new(u64::MAX),
                held <- crate::new_spinlock!(KVec::new()),
            }),
            GFP_KERNEL,
        )?;
        let disk = BioDiskBuilder::new()
            .capacity_sectors(RAM_SECTORS)
            .build::<Ram>(fmt!("rust_bio_{name}"), ram.clone())?;
        Ok((ram, Arc::new(disk, GFP_KERNEL)?))
    }

    /// Where the completion of a test I/O is reported: how often it ran, and its status and
    /// pages.
    #[pin_data]
    struct Shared {
        ends: Atomic<u32>,
        /// Whether the completion ran in atomic context.
        in_atomic: Atomic<bool>,
        /// How many bios the watched disk had ended when the completion ran.
        seen: Atomic<u32>,
        #[pin]
        result: SpinLock<Option<(Status, KVec<Page>)>>,
        #[pin]
        done: Completion,
    }

    /// The data of a test I/O: the disk it goes to (kept alive) and its pages.
    struct Io<D: Operations + 'static> {
        disk: Arc<BioDisk<D>>,
        pages: KVec<Page>,
        shared: Arc<Shared>,
        /// A disk below `disk` whose ended bios are counted at the completion.
        watch: Option<Arc<Ram>>,
    }

    impl<D: Operations + 'static> EndIo for Io<D>
    where
        D::QueueData: Send,
    {
        fn end_io(self, status: Status) {
            let Io {
                disk,
                pages,
                shared,
                watch,
            } = self;
            // SAFETY: `bio_in_atomic` only reads the state of the current task.
            let in_atomic = unsafe { bindings::bio_in_atomic() };
            shared.in_atomic.store(in_atomic, Relaxed);
            if let Some(ram) = watch {
                shared.seen.store(ram.completed.load(Relaxed), Relaxed);
            }
            shared.ends.add(1, Relaxed);
            *shared.result.lock() = Some((status, pages));
            shared.done.complete_all();
            // The test holds its own reference to the disk: this is never the last one.
            drop(disk);
        }
    }

    /// Makes the data of an I/O with `nr` pages filled with `fill`, `fill + 1`, ...
    fn io<D: Operations + 'static>(
        disk: &Arc<BioDisk<D>>,
        nr: usize,
        fill: u8,
    ) -> Result<(Io<D>, Arc<Shared>)> {
        let mut pages = KVec::new();
        for i in 0..nr {
            let page = Page::alloc_page(GFP_KERNEL)?;
            let pattern = [fill.wrapping_add(i as u8); PAGE_SIZE];
            // SAFETY: The page was just allocated; nothing else accesses it.
            unsafe { page.write_raw(pattern.as_ptr(), 0, PAGE_SIZE)? };
            pages.push(page, GFP_KERNEL)?;
        }
        let shared = Arc::pin_init(
            pin_init!(Shared {
                ends: Atomic::new(0),
                in_atomic: Atomic::new(false),
                seen: Atomic::new(0),
                result <- crate::new_spinlock!(None),
                done <- Completion::new(),
            }),
            GFP_KERNEL,
        )?;
        let io = Io {
            disk: disk.clone(),
            pages,
            shared: shared.clone(),
            watch: None,
        };
        Ok((io, shared))
    }

    /// Makes a bio for `op` on `disk` with room for `nr` pages, carrying the data of [`io`].
    fn new_bio<D>(
        set: &Arc<BioSet>,
        disk: &Arc<BioDisk<D>>,
        op: Operation,
        nr: usize,
        fill: u8,
    ) -> Result<(NewBio<Io<D>>, Arc<Shared>)>
    where
        D: Operations + 'static,
        D::QueueData: Send,
    {
        let (data, shared) = io(disk, nr, fill)?;
        let bio = NewBio::new(set, data, |d| d.disk.bdev(), op, nr as u16, GFP_KERNEL)?;
        Ok((bio, shared))
    }

    /// Waits for the completion of an I/O, checks that it ran once, and returns its status and
    /// pages.
    fn wait(shared: &Shared) -> Result<(Status, KVec<Page>)> {
        shared.done.wait_for_completion();
        assert_eq!(shared.ends.load(Relaxed), 1);
        shared.result.lock().take().ok_or(EINVAL)
    }

    fn page_bytes(page: &Page) -> Result<KVec<u8>> {
        let mut buf = KVec::new();
        buf.resize(PAGE_SIZE, 0, GFP_KERNEL)?;
        // SAFETY: `buf` has room for a page; the I/O on the page is complete.
        unsafe { page.read_raw(buf.as_mut_ptr(), 0, PAGE_SIZE)? };
        Ok(buf)
    }

    /// Writes `nr` pages filled with `fill`, `fill + 1`, ... at `sector`: one bio per page,
    /// chained to the first.
    fn write_chained<D>(
        set: &Arc<BioSet>,
        disk: &Arc<BioDisk<D>>,
        sector: u64,
        nr: usize,
        fill: u8,
    ) -> Result<Status>
    where
        D: Operations + 'static,
        D::QueueData: Send,
    {
        let (mut bio, shared) = new_bio(set, disk, Operation::Write, nr, fill)?;
        bio.set_sector(sector);
        bio.add_page(|d| &d.pages[0], PAGE_SIZE as u32, 0)?;
        for i in 1..nr {
            let mut chained =
                bio.new_chained(|d| d.disk.bdev(), Operation::Write, 1, GFP_KERNEL)?;
            chained.set_sector(sector + i as u64 * PAGE_SECTORS);
            chained.add_page(|d| &d.pages[i], PAGE_SIZE as u32, 0)?;
            chained.submit();
        }
        bio.submit();
        Ok(wait(&shared)?.0)
    }

    /// Does `op` on `nr` pages at `sector` with one bio; returns the status and the pages.
    fn one_bio<D>(
        set: &Arc<BioSet>,
        disk: &Arc<BioDisk<D>>,
        op: Operation,
        sector: u64,
        nr: usize,
        fill: u8,
    ) -> Result<(Status, KVec<Page>)>
    where
        D: Operations + 'static,
        D::QueueData: Send,
    {
        let (mut bio, shared) = new_bio(set, disk, op, nr, fill)?;
        bio.set_sector(sector);
        for i in 0..nr {
            bio.add_page(|d| &d.pages[i], PAGE_SIZE as u32, 0)?;
        }
        bio.submit();
        wait(&shared)
    }

    fn bio_set(rescuer: bool) -> Result<Arc<BioSet>> {
        Arc::pin_init(BioSet::new(4, rescuer), GFP_KERNEL)
    }

    #[test]
    fn status_round_trip() {
        assert!(Status::OK.is_ok());
        assert_eq!(Status::OK.to_result(), Ok(()));
        assert_eq!(Status::from_error(EIO).to_result(), Err(EIO));
        assert_eq!(Status::from_error(ENOSPC).to_result(), Err(ENOSPC));
        assert_eq!(Status::from_error(EOPNOTSUPP).to_result(), Err(EOPNOTSUPP));
    }

    #[test]
    fn disk_geometry() -> Result {
        let (_ram, disk) = ram_disk("geometry")?;
        assert_eq!(disk.bdev().nr_sectors(), RAM_SECTORS);
        assert_eq!(disk.dev(), disk.bdev().dev());
        assert_ne!(disk.dev().major(), 0);
        disk.set_capacity(RAM_SECTORS / 2);
        assert_eq!(disk.bdev().nr_sectors(), RAM_SECTORS / 2);
        Ok(())
    }

    #[test]
    fn write_then_read_back() -> Result {
        let (ram, disk) = ram_disk("rw")?;
        let set = bio_set(false)?;
        // Three pages at sector 8, one chained bio each.
        assert_eq!(write_chained(&set, &disk, 8, 3, 0x40)?, Status::OK);
        assert_eq!(ram.bios.load(Relaxed), 3);
        {
            let data = ram.data.lock();
            assert!(data[..8 * 512].iter().all(|&b| b == 0));
            assert!(data[8 * 512..8 * 512 + PAGE_SIZE]
                .iter()
                .all(|&b| b == 0x40));
            let third = 8 * 512 + 2 * PAGE_SIZE;
            assert!(data[third..third + PAGE_SIZE].iter().all(|&b| b == 0x42));
            assert!(data[third + PAGE_SIZE..].iter().all(|&b| b == 0));
        }
        // Read them back in one bio of three pages, into pages filled with something else.
        let (status, pages) = one_bio(&set, &disk, Operation::Read, 8, 3, 0xee)?;
        assert_eq!(status, Status::OK);
        for (i, page) in pages.iter().enumerate() {
            assert!(page_bytes(page)?.iter().all(|&b| b == 0x40 + i as u8));
        }
        Ok(())
    }

    #[test]
    fn chained_error_is_reported_once() -> Result {
        let (ram, disk) = ram_disk("chain_err")?;
        let set = bio_set(false)?;
        // The second page lies beyond the end of the disk's memory: the disk fails it, and the
        // one completion of the pair carries the error.
        disk.set_capacity(RAM_SECTORS + 2 * PAGE_SECTORS);
        let status = write_chained(&set, &disk, RAM_SECTORS - PAGE_SECTORS, 2, 1)?;
        assert_eq!(status.to_result(), Err(EIO));
        assert_eq!(ram.bios.load(Relaxed), 2);
        Ok(())
    }

    #[test]
    fn dropped_bio_ends_with_error() -> Result {
        let (ram, disk) = ram_disk("drop")?;
        let set = bio_set(false)?;
        let (mut bio, shared) = new_bio(&set, &disk, Operation::Write, 1, 0)?;
        bio.add_page(|d| &d.pages[0], PAGE_SIZE as u32, 0)?;
        let chained = bio.new_chained(|d| d.disk.bdev(), Operation::Write, 1, GFP_KERNEL)?;
        drop(chained);
        drop(bio);
        let (status, _) = wait(&shared)?;
        assert_eq!(status.to_result(), Err(EIO));
        assert_eq!(ram.bios.load(Relaxed), 0);
        Ok(())
    }

    #[test]
    fn add_page_checks_its_range() -> Result {
        let (_ram, disk) = ram_disk("range")?;
        let set = bio_set(false)?;
        let (mut bio, _shared) = new_bio(&set, &disk, Operation::Write, 1, 0)?;
        assert_eq!(bio.add_page(|d| &d.pages[0], 0, 0), Err(EINVAL));
        assert_eq!(
            bio.add_page(|d| &d.pages[0], 512, PAGE_SIZE as u32),
            Err(EINVAL)
        );
        assert_eq!(bio.add_page(|d| &d.pages[0], u32::MAX, 512), Err(EINVAL));
        bio.add_page(|d| &d.pages[0], 512, 0)?;
        assert_eq!(bio.bio().size(), 512);
        Ok(())
    }

    /// Where the linear disk maps its sector 0 on the RAM disk.
    const LINEAR_OFFSET: u64 = 64;
    /// The linear disk splits bios at multiples of this many sectors.
    const LINEAR_CHUNK: u64 = 8;

    /// A disk that maps onto the RAM disk at an offset, splitting bios at chunk boundaries and
    /// passing each piece on as a clone.
    struct Linear {
        set: Arc<BioSet>,
        target: Arc<BioDisk<Ram>>,
        ram: Arc<Ram>,
        pieces: Atomic<u32>,
        remapped: Arc<Atomic<u32>>,
    }

    /// A piece in flight on the RAM disk. The piece of the linear disk's bio that it clones is
    /// ended by the clone itself, after this completion.
    struct Remap {
        target: Arc<BioDisk<Ram>>,
        ram: Arc<Ram>,
        /// How many remapped pieces have completed, counted here.
        done: Arc<Atomic<u32>>,
    }

    impl EndIo for Remap {
        fn end_io(self, status: Status) {
            let _ = status;
            // The source bio is still owed an end here: its submitter cannot have completed.
            self.done.add(1, Relaxed);
            drop(self.ram);
        }
    }

    impl Linear {
        fn remap(&self, bio: PendingBio) {
            self.pieces.add(1, Relaxed);
            let sector = bio.sector() + LINEAR_OFFSET;
            let remap = Remap {
                target: self.target.clone(),
                ram: self.ram.clone(),
                done: self.remapped.clone(),
            };
            match bio.clone_to(&self.set, remap, |r| r.target.bdev(), GFP_NOIO) {
                Ok(mut clone) => {
                    clone.set_sector(sector);
                    clone.submit_noacct();
                }
                Err((e, bio)) => bio.end(Status::from_error(e)),
            }
        }
    }

    impl Operations for Linear {
        type QueueData = Arc<Linear>;

        fn submit_bio(lin: ArcBorrow<'_, Linear>, mut bio: PendingBio) {
            loop {
                let start = bio.sector();
                let boundary = (start / LINEAR_CHUNK + 1) * LINEAR_CHUNK;
                if bio.end_sector().is_none_or(|end| end <= boundary) {
                    lin.remap(bio);
                    return;
                }
                match bio.split((boundary - start) as u32, &lin.set, GFP_NOIO) {
                    Ok(piece) => lin.remap(piece),
                    Err(e) => {
                        bio.end(Status::from_error(e));
                        return;
                    }
                }
            }
        }
    }

    /// A RAM disk, a linear disk over it, and the linear disk's state.
    type Stack = (Arc<Ram>, Arc<Linear>, Arc<BioDisk<Linear>>);

    /// Makes a linear disk over a new RAM disk.
    fn linear_disk(name: &str) -> Result<Stack> {
        let (ram, ram_disk) = ram_disk(name)?;
        let lin = Arc::new(
            Linear {
                set: bio_set(true)?,
                target: ram_disk,
                ram: ram.clone(),
                pieces: Atomic::new(0),
                remapped: Arc::new(Atomic::new(0), GFP_KERNEL)?,
            },
            GFP_KERNEL,
        )?;
        let linear = Arc::new(
            BioDiskBuilder::new()
                .capacity_sectors(RAM_SECTORS - LINEAR_OFFSET)
                .build::<Linear>(fmt!("rust_bio_{name}_linear"), lin.clone())?,
            GFP_KERNEL,
        )?;
        Ok((ram, lin, linear))
    }

    /// The number of pieces the linear disk cuts four pages at sector 4 into: with 4 KiB pages
    /// [4, 8), [8, 16), [16, 24), [24, 32) and [32, 36).
    fn four_page_pieces() -> u32 {
        (4 + 4 * PAGE_SECTORS).div_ceil(LINEAR_CHUNK) as u32
    }

    /// Writes four pages filled with `fill`, `fill + 1`, ... at sector 4 of the linear disk while
    /// the RAM disk holds its bios, then lets the RAM disk end them in atomic context, the last
    /// piece first. Returns the completion's report.
    fn write_through_held(
        ram: &Arc<Ram>,
        linear: &Arc<BioDisk<Linear>>,
        fill: u8,
    ) -> Result<Arc<Shared>> {
        let set = bio_set(false)?;
        let (mut data, shared) = io(linear, 4, fill)?;
        data.watch = Some(ram.clone());
        let mut bio = NewBio::new(
            &set,
            data,
            |d| d.disk.bdev(),
            Operation::Write,
            4,
            GFP_KERNEL,
        )?;
        bio.set_sector(4);
        for i in 0..4 {
            bio.add_page(|d| &d.pages[i], PAGE_SIZE as u32, 0)?;
        }
        ram.hold.store(true, Relaxed);
        bio.submit();
        // The linear disk split and cloned the bio in the submitter's context: every piece is
        // held by the RAM disk now, and nothing has completed.
        assert_eq!(shared.ends.load(Relaxed), 0);
        assert_eq!(ram.release(true), four_page_pieces());
        ram.hold.store(false, Relaxed);
        shared.done.wait_for_completion();
        assert_eq!(shared.ends.load(Relaxed), 1);
        Ok(shared)
    }

    #[test]
    fn split_parts_end_before_their_bio() -> Result {
        let (ram, lin, linear) = linear_disk("async_split")?;
        let shared = write_through_held(&ram, &linear, 0x30)?;
        let pieces = four_page_pieces();
        let (status, _) = shared.result.lock().take().ok_or(EINVAL)?;
        assert_eq!(status, Status::OK);
        // The bio completed only after every piece of it had ended on the RAM disk, and after
        // the completion of every clone.
        assert_eq!(shared.seen.load(Relaxed), pieces);
        assert_eq!(lin.remapped.load(Relaxed), pieces);
        let data = ram.data.lock();
        let base = ((LINEAR_OFFSET + 4) << 9) as usize;
        for i in 0..4 {
            let page = &data[base + i * PAGE_SIZE..base + (i + 1) * PAGE_SIZE];
            assert!(page.iter().all(|&b| b == 0x30 + i as u8));
        }
        Ok(())
    }

    #[test]
    fn error_of_a_split_part_reaches_its_bio() -> Result {
        let (ram, _lin, linear) = linear_disk("async_err")?;
        // The first piece fails; it ends last, after the rest of the bio succeeded.
        ram.bad_sector.store(LINEAR_OFFSET + 4, Relaxed);
        let shared = write_through_held(&ram, &linear, 1)?;
        let (status, _) = shared.result.lock().take().ok_or(EINVAL)?;
        assert_eq!(status.to_result(), Err(EIO));
        assert_eq!(shared.seen.load(Relaxed), four_page_pieces());
        Ok(())
    }

    #[test]
    fn completion_runs_in_task_context() -> Result {
        let (ram, disk) = ram_disk("task_ctx")?;
        let set = bio_set(false)?;
        let (mut bio, shared) = new_bio(&set, &disk, Operation::Write, 1, 7)?;
        bio.add_page(|d| &d.pages[0], PAGE_SIZE as u32, 0)?;
        ram.hold.store(true, Relaxed);
        bio.submit();
        // The RAM disk ends the bio with a spinlock held.
        assert_eq!(ram.release(false), 1);
        let (status, _) = wait(&shared)?;
        assert_eq!(status, Status::OK);
        assert!(!shared.in_atomic.load(Relaxed));
        Ok(())
    }

    #[test]
    fn split_and_clone_through_a_stacked_disk() -> Result {
        let (ram, lin, linear) = linear_disk("lower")?;
        let set = bio_set(false)?;
        // Four pages at sector 4, split at every chunk boundary.
        let pieces = four_page_pieces();
        let (status, _) = one_bio(&set, &linear, Operation::Write, 4, 4, 0x10)?;
        assert_eq!(status, Status::OK);
        assert_eq!(lin.pieces.load(Relaxed), pieces);
        assert_eq!(ram.bios.load(Relaxed), pieces);
        {
            let data = ram.data.lock();
            let base = ((LINEAR_OFFSET + 4) << 9) as usize;
            assert!(data[..base].iter().all(|&b| b == 0));
            for i in 0..4 {
                let page = &data[base + i * PAGE_SIZE..base + (i + 1) * PAGE_SIZE];
                assert!(page.iter().all(|&b| b == 0x10 + i as u8));
            }
            assert!(data[base + 4 * PAGE_SIZE..].iter().all(|&b| b == 0));
        }
        // Read back through the stacked disk, split the same way.
        let (status, pages) = one_bio(&set, &linear, Operation::Read, 4, 4, 0xee)?;
        assert_eq!(status, Status::OK);
        assert_eq!(lin.pieces.load(Relaxed), 2 * pieces);
        for (i, page) in pages.iter().enumerate() {
            assert!(page_bytes(page)?.iter().all(|&b| b == 0x10 + i as u8));
        }
        // A chunk-aligned bio of one chunk goes through in one piece.
        let (mut bio, shared) = new_bio(&set, &linear, Operation::Read, 1, 0)?;
        bio.set_sector(LINEAR_CHUNK);
        bio.add_page(|d| &d.pages[0], (LINEAR_CHUNK << 9) as u32, 0)?;
        bio.submit();
        assert_eq!(wait(&shared)?.0, Status::OK);
        assert_eq!(lin.pieces.load(Relaxed), 2 * pieces + 1);
        drop(linear);
        Ok(())
    }

    /// The kernel itself, as the owner of the test filter type.
    #[cfg(CONFIG_BLK_FILTER)]
    // SAFETY: A null module stands for code built into the kernel.
    static BUILT_IN: crate::ThisModule =
        unsafe { crate::ThisModule::from_ptr(core::ptr::null_mut()) };

    /// A filter that takes every write over and keeps it until the test lets it go on.
    #[cfg(CONFIG_BLK_FILTER)]
    #[pin_data]
    struct Hold {
        seen: Atomic<u32>,
        #[pin]
        held: SpinLock<KVec<PendingBio>>,
    }

    #[cfg(CONFIG_BLK_FILTER)]
    #[vtable]
    impl crate::block::filter::Filter for Hold {
        const NAME: &'static CStr = c"rust-test-hold";

        fn attach(_bdev: &crate::block::bdev::BlockDevice) -> impl PinInit<Self, Error> {
            try_pin_init!(Hold {
                seen: Atomic::new(0),
                held <- crate::new_spinlock!(KVec::new()),
            })
        }

        fn submit_bio(&self, bio: crate::block::filter::FilterBio<'_>) {
            self.seen.add(1, Relaxed);
            if bio.op().is_write() {
                let bio = bio.take();
                let mut held = self.held.lock();
                let pushed = match held.reserve(1, GFP_ATOMIC) {
                    Ok(()) => held.push_within_capacity(bio),
                    Err(_) => Err(crate::alloc::kvec::PushError(bio)),
                };
                drop(held);
                if let Err(err) = pushed {
                    err.0.end(Status::from_error(ENOMEM));
                }
            }
        }
    }

    #[cfg(CONFIG_BLK_FILTER)]
    #[test]
    fn filter_takes_a_bio_over_and_passes_it_on() -> Result {
        use crate::block::filter::{attach, detach, Filter, Registration};

        let (ram, disk) = ram_disk("filter")?;
        let reg = KBox::pin_init(Registration::<Hold>::register(&BUILT_IN), GFP_KERNEL)?;
        assert!(reg.lock(disk.bdev()).is_none());
        assert_eq!(attach(disk.bdev(), c"rust-test-nope"), Err(ENOENT));
        attach(disk.bdev(), Hold::NAME)?;
        assert_eq!(attach(disk.bdev(), Hold::NAME), Err(EALREADY));

        let set = bio_set(false)?;
        let (mut bio, shared) = new_bio(&set, &disk, Operation::Write, 1, 0x5a)?;
        bio.set_sector(8);
        bio.add_page(|d| &d.pages[0], PAGE_SIZE as u32, 0)?;
        bio.submit();
        // The filter holds the write: the disk has not seen it, and it has not completed.
        assert_eq!(ram.bios.load(Relaxed), 0);
        assert_eq!(shared.ends.load(Relaxed), 0);
        {
            let hold = reg.lock(disk.bdev()).ok_or(ENOENT)?;
            assert_eq!(hold.seen.load(Relaxed), 1);
            let bios = core::mem::take(&mut *hold.held.lock());
            for bio in bios {
                // Passed on, the bio goes to the disk without being offered to the filter again.
                if let Err(bio) = bio.submit_noacct() {
                    bio.end(Status::from_error(EINVAL));
                }
            }
            assert_eq!(hold.seen.load(Relaxed), 1);
        }
        let (status, _) = wait(&shared)?;
        assert_eq!(status, Status::OK);
        assert_eq!(ram.bios.load(Relaxed), 1);
        assert!(ram.data.lock()[8 * 512..8 * 512 + PAGE_SIZE]
            .iter()
            .all(|&b| b == 0x5a));

        // Reads go on to the disk at once.
        let (status, pages) = one_bio(&set, &disk, Operation::Read, 8, 1, 0)?;
        assert_eq!(status, Status::OK);
        assert!(page_bytes(&pages[0])?.iter().all(|&b| b == 0x5a));
        assert_eq!(reg.lock(disk.bdev()).ok_or(ENOENT)?.seen.load(Relaxed), 2);

        assert_eq!(detach(disk.bdev(), c"rust-test-nope"), Err(EINVAL));
        detach(disk.bdev(), Hold::NAME)?;
        assert!(reg.lock(disk.bdev()).is_none());
        assert_eq!(detach(disk.bdev(), Hold::NAME), Err(ENOENT));
        Ok(())
    }
}
