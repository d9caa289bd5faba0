//! The backup engine against the in-memory kernel model.

use std::collections::BTreeSet;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use libblksnap::api::{Blksnap, TrackedDevice};
use libblksnap::backup::{self, BackupReport, BackupRequest, Mode, NoProgress};
use libblksnap::fake::FakeKernel;
use libblksnap::manifest::{BackupKind, Manifest, Repository};
use libblksnap::Error;

const BS: u32 = 4096;

/// Small deterministic generator (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

struct Fixture {
    kernel: FakeKernel,
    dir: tempfile::TempDir,
    storage: std::fs::File,
    stop: AtomicBool,
}

impl Fixture {
    fn new() -> Self {
        Self {
            kernel: FakeKernel::new(BS),
            dir: tempfile::tempdir().unwrap(),
            storage: tempfile::tempfile().unwrap(),
            stop: AtomicBool::new(false),
        }
    }
    fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }
    fn run(&self, devices: &[&str], mode: Mode) -> Result<BackupReport, Error> {
        let req = BackupRequest {
            mode,
            ..BackupRequest::new(
                devices.iter().map(PathBuf::from).collect(),
                self.repo(),
                self.storage.as_fd(),
                1 << 20,
                &self.stop,
            )
        };
        backup::backup(&self.kernel, &req, &NoProgress)
    }
    fn restore(&self, device: &str, set: Option<&str>) -> Result<Vec<u8>, Error> {
        let out = self
            .dir
            .path()
            .join(format!("restored-{device}-{}", set.unwrap_or("last")));
        backup::restore(
            &self.repo(),
            device,
            set,
            &out,
            true,
            &self.stop,
            &NoProgress,
        )?;
        Ok(std::fs::read(out).unwrap())
    }
}

/// Random writes of random lengths; returns the blocks touched.
fn scribble(
    k: &FakeKernel,
    dev: &Path,
    size: usize,
    rng: &mut Rng,
    writes: usize,
) -> BTreeSet<usize> {
    let mut touched = BTreeSet::new();
    for _ in 0..writes {
        let off = rng.below(size);
        let len = 1 + rng.below((size - off).min(3 * BS as usize));
        k.write(dev, off, &rng.bytes(len));
        for b in off / BS as usize..=(off + len - 1) / BS as usize {
            touched.insert(b);
        }
    }
    touched
}

#[test]
fn incrementals_restore_to_the_exact_final_image() {
    let f = Fixture::new();
    // Not a multiple of the block size: the last block is short.
    let size = 64 * BS as usize + 1536;
    let dev = Path::new("/dev/fake0");
    f.kernel.add_disk(dev, "fake0", 0, size);
    let mut rng = Rng(0x5eed);
    scribble(&f.kernel, dev, size, &mut rng, 40);

    let first = f.run(&["/dev/fake0"], Mode::Auto).unwrap();
    assert_eq!(first.devices[0].kind, BackupKind::Full);
    assert!(first.devices[0]
        .full_reason
        .as_deref()
        .unwrap()
        .contains("no earlier backup"));
    assert_eq!(first.devices[0].blocks_copied, 65);
    let mut states = vec![(first.set.clone(), f.kernel.contents(dev))];

    for round in 0..6 {
        let touched = scribble(&f.kernel, dev, size, &mut rng, 1 + round * 3);
        let r = f.run(&["/dev/fake0"], Mode::Auto).unwrap();
        let d = &r.devices[0];
        assert_eq!(
            d.kind,
            BackupKind::Incremental,
            "round {round}: {:?}",
            d.full_reason
        );
        // Exactly the blocks written since the previous backup's snapshot.
        let m = Repository::new(f.repo()).load(&r.set, "fake0").unwrap().0;
        let stored: BTreeSet<usize> = m.stored_iter().map(|(b, _)| b as usize).collect();
        assert_eq!(stored, touched, "round {round}");
        states.push((r.set.clone(), f.kernel.contents(dev)));
    }
    // Every point of the chain restores byte for byte.
    for (set, expect) in &states {
        assert_eq!(&f.restore("fake0", Some(set)).unwrap(), expect, "set {set}");
    }
    assert_eq!(f.restore("fake0", None).unwrap(), f.kernel.contents(dev));

    // And verify agrees, then notices a change.
    let img = f.dir.path().join("restored-fake0-last");
    let v = backup::verify(&f.repo(), "fake0", None, Some(&img), &f.stop, &NoProgress).unwrap();
    assert_eq!(v.mismatch_count, 0);
    let mut bytes = std::fs::read(&img).unwrap();
    bytes[5 * BS as usize + 7] ^= 0xff;
    std::fs::write(&img, bytes).unwrap();
    let v = backup::verify(&f.repo(), "fake0", None, Some(&img), &f.stop, &NoProgress).unwrap();
    assert_eq!(v.mismatched, vec![5]);
    backup::verify(&f.repo(), "fake0", None, None, &f.stop, &NoProgress).unwrap();
}

#[test]
fn writes_during_the_backup_go_to_the_next_incremental() {
    // A write after the take is not in this backup but must be in the next:
    // the map byte it leaves is newer than this snapshot's changes number.
    let f = Fixture::new();
    let dev = Path::new("/dev/fake0");
    f.kernel.add_disk(dev, "fake0", 0, 16 * BS as usize);
    f.run(&["/dev/fake0"], Mode::Auto).unwrap();
    // Simulate "during" by writing between take and the next backup with the
    // snapshot of the previous run already taken: the model freezes images
    // at take, so this is the same as writing right after it.
    f.kernel.write(dev, 3 * BS as usize, b"late");
    let r = f.run(&["/dev/fake0"], Mode::Auto).unwrap();
    assert_eq!(r.devices[0].blocks_copied, 1);
    assert_eq!(f.restore("fake0", None).unwrap(), f.kernel.contents(dev));
    // Nothing written since: an empty incremental.
    let r = f.run(&["/dev/fake0"], Mode::Incremental).unwrap();
    assert_eq!(r.devices[0].kind, BackupKind::Incremental);
    assert_eq!(r.devices[0].blocks_copied, 0);
    assert_eq!(f.restore("fake0", None).unwrap(), f.kernel.contents(dev));
}

#[test]
fn marked_dirty_blocks_are_copied() {
    let f = Fixture::new();
    let dev = Path::new("/dev/fake0");
    f.kernel.add_disk(dev, "fake0", 0, 16 * BS as usize);
    f.run(&["/dev/fake0"], Mode::Auto).unwrap();
    let d = f.kernel.open_device(dev).unwrap();
    d.mark_dirty(&[libblksnap::api::SectorRange {
        offset: 8 * 9,
        count: 9,
    }])
    .unwrap();
    let r = f.run(&["/dev/fake0"], Mode::Auto).unwrap();
    let m = Repository::new(f.repo()).load(&r.set, "fake0").unwrap().0;
    assert_eq!(m.stored, vec![[9, 2]]);
}

#[test]
fn generation_change_forces_a_full_backup() {
    let f = Fixture::new();
    let dev = Path::new("/dev/fake0");
    f.kernel.add_disk(dev, "fake0", 0, 8 * BS as usize);
    f.run(&["/dev/fake0"], Mode::Auto).unwrap();
    f.kernel.write(dev, 0, b"x");
    f.kernel.reset_tracker(dev);
    f.kernel.write(dev, BS as usize, b"y");

    let err = f.run(&["/dev/fake0"], Mode::Incremental).unwrap_err();
    assert!(err.to_string().contains("generation changed"), "{err}");
    assert_eq!(Repository::new(f.repo()).sets().unwrap().len(), 1);

    let r = f.run(&["/dev/fake0"], Mode::Auto).unwrap();
    let d = &r.devices[0];
    assert_eq!(d.kind, BackupKind::Full);
    assert!(d
        .full_reason
        .as_deref()
        .unwrap()
        .contains("generation changed"));
    assert_eq!(d.blocks_copied, 8);
    assert_eq!(f.restore("fake0", None).unwrap(), f.kernel.contents(dev));
    // The chain restarts: the new set restores without the old one.
    std::fs::remove_dir_all(f.repo().join("000001")).unwrap();
    assert_eq!(f.restore("fake0", None).unwrap(), f.kernel.contents(dev));
}

#[test]
fn changes_counter_wrap_forces_a_full_backup() {
    let f = Fixture::new();
    let dev = Path::new("/dev/fake0");
    f.kernel.add_disk(dev, "fake0", 0, 2 * BS as usize);
    let mut kinds = Vec::new();
    for i in 0..260u32 {
        f.kernel
            .write(dev, (i as usize * 13) % (2 * BS as usize), &[i as u8]);
        let r = f.run(&["/dev/fake0"], Mode::Auto).unwrap();
        kinds.push((r.devices[0].kind, r.devices[0].changes_number));
    }
    let fulls: Vec<usize> = kinds
        .iter()
        .enumerate()
        .filter(|(_, k)| k.0 == BackupKind::Full)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(fulls.len(), 2, "{fulls:?}");
    assert_eq!(f.restore("fake0", None).unwrap(), f.kernel.contents(dev));
}

#[test]
fn several_devices_share_one_snapshot_and_set() {
    let f = Fixture::new();
    for (i, name) in ["fa", "fb"].iter().enumerate() {
        f.kernel.add_disk(
            format!("/dev/{name}"),
            name,
            i as u32,
            8 * BS as usize + i * 512,
        );
    }
    let mut rng = Rng(7);
    scribble(
        &f.kernel,
        Path::new("/dev/fa"),
        8 * BS as usize,
        &mut rng,
        5,
    );
    let r = f.run(&["/dev/fa", "/dev/fb"], Mode::Auto).unwrap();
    assert_eq!(r.devices.len(), 2);
    let (ma, _) = Repository::new(f.repo()).load(&r.set, "fa").unwrap();
    let (mb, _) = Repository::new(f.repo()).load(&r.set, "fb").unwrap();
    assert_eq!(ma.snapshot_id, mb.snapshot_id);
    scribble(
        &f.kernel,
        Path::new("/dev/fb"),
        8 * BS as usize,
        &mut rng,
        5,
    );
    let r = f.run(&["/dev/fa", "/dev/fb"], Mode::Auto).unwrap();
    assert_eq!(r.devices[0].blocks_copied, 0);
    for name in ["fa", "fb"] {
        let path = PathBuf::from(format!("/dev/{name}"));
        assert_eq!(f.restore(name, None).unwrap(), f.kernel.contents(&path));
    }
    assert!(f.kernel.snapshot_collect().unwrap().is_empty());
    let err = f.run(&["/dev/fa", "/dev/fa"], Mode::Auto).unwrap_err();
    assert!(err.to_string().contains("same device"));
}

fn corrupt_file(path: &Path, edit: impl FnOnce(&mut String)) {
    let mut s = std::fs::read_to_string(path).unwrap();
    edit(&mut s);
    std::fs::write(path, s).unwrap();
}

#[test]
fn a_corrupted_manifest_is_rejected() {
    let f = Fixture::new();
    let dev = Path::new("/dev/fake0");
    f.kernel.add_disk(dev, "fake0", 0, 8 * BS as usize);
    f.run(&["/dev/fake0"], Mode::Auto).unwrap();
    let path = f.repo().join("000001/fake0.json");
    let good = std::fs::read_to_string(&path).unwrap();

    // A changed value with a stale checksum.
    corrupt_file(&path, |s| {
        *s = s.replacen("\"changes_number\":1", "\"changes_number\":0", 1)
    });
    assert_ne!(std::fs::read_to_string(&path).unwrap(), good);
    for err in [
        Manifest::load(&path).unwrap_err(),
        f.restore("fake0", None).unwrap_err(),
        f.run(&["/dev/fake0"], Mode::Auto).unwrap_err(),
    ] {
        assert!(matches!(err, Error::InvalidBackup(_)), "{err}");
        assert!(err.to_string().contains("checksum"), "{err}");
    }
    // Truncated JSON.
    std::fs::write(&path, &good[..good.len() / 2]).unwrap();
    assert!(matches!(
        Manifest::load(&path).unwrap_err(),
        Error::InvalidBackup(_)
    ));
    // A full backup does not need the old manifest.
    std::fs::write(&path, &good).unwrap();
    f.run(&["/dev/fake0"], Mode::Full).unwrap();

    // Damaged data is caught by the block checksums.
    f.kernel.write(dev, 0, b"new");
    f.run(&["/dev/fake0"], Mode::Auto).unwrap();
    let data = f.repo().join("000003/fake0.data");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[1] ^= 1;
    std::fs::write(&data, bytes).unwrap();
    let err = f.restore("fake0", None).unwrap_err();
    assert!(
        err.to_string().contains("does not match its checksum"),
        "{err}"
    );
    // Truncated data file.
    std::fs::write(&data, b"").unwrap();
    assert!(matches!(
        f.restore("fake0", None).unwrap_err(),
        Error::InvalidBackup(_)
    ));
}

#[test]
fn interrupted_or_failed_backups_leave_nothing_that_looks_complete() {
    let f = Fixture::new();
    let dev = Path::new("/dev/fake0");
    f.kernel.add_disk(dev, "fake0", 0, 8 * BS as usize);
    f.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(matches!(
        f.run(&["/dev/fake0"], Mode::Auto),
        Err(Error::Interrupted)
    ));
    f.stop.store(false, std::sync::atomic::Ordering::SeqCst);
    // Stopped before anything was written: not even the repository exists.
    assert!(!f.repo().exists());
    assert!(f.kernel.snapshot_collect().unwrap().is_empty());

    // A missing device fails before anything is done.
    assert!(matches!(
        f.run(&["/dev/nope"], Mode::Auto),
        Err(Error::DeviceNotFound(_))
    ));
    assert!(matches!(
        f.run(&["/dev/fake0"], Mode::Incremental),
        Err(Error::Invalid(_))
    ));
    assert!(Repository::new(f.repo()).sets().unwrap().is_empty());
    // Restoring from an empty repository names the cause.
    let err = f.restore("fake0", None).unwrap_err();
    assert!(
        err.to_string().contains("no backup of device fake0"),
        "{err}"
    );
}

#[test]
fn a_corrupted_snapshot_gives_no_backup() {
    let f = Fixture::new();
    let dev = Path::new("/dev/fake0");
    f.kernel.add_disk(dev, "fake0", 0, 8 * BS as usize);
    f.kernel.fail_next_take(dev, nix::errno::Errno::ENOSPC);
    let err = f.run(&["/dev/fake0"], Mode::Auto).unwrap_err();
    assert!(
        err.to_string()
            .contains("snapshot of /dev/fake0 is corrupted"),
        "{err}"
    );
    assert!(Repository::new(f.repo()).sets().unwrap().is_empty());
    assert!(f.kernel.snapshot_collect().unwrap().is_empty());
    // The next run works and is a full backup.
    let r = f.run(&["/dev/fake0"], Mode::Auto).unwrap();
    assert_eq!(r.devices[0].kind, BackupKind::Full);
}

#[test]
fn full_reason_explains_each_case() {
    use libblksnap::api::CbtInfo;
    let f = Fixture::new();
    let dev = Path::new("/dev/fake0");
    f.kernel.add_disk(dev, "fake0", 0, 8 * BS as usize);
    let r = f.run(&["/dev/fake0"], Mode::Auto).unwrap();
    let (m, _) = Repository::new(f.repo()).load(&r.set, "fake0").unwrap();
    let info = CbtInfo {
        device_capacity: m.device.capacity,
        block_size: m.cbt.block_size,
        block_count: m.cbt.block_count,
        generation_id: m.cbt.generation_id,
        changes_number: m.cbt.changes_number + 1,
    };
    assert_eq!(backup::full_reason(Some(&m), &info, Mode::Auto), None);
    let reason = |i: CbtInfo| backup::full_reason(Some(&m), &i, Mode::Auto).unwrap();
    assert!(reason(CbtInfo {
        changes_number: m.cbt.changes_number,
        ..info
    })
    .contains("not newer"));
    assert!(reason(CbtInfo {
        block_size: 8192,
        ..info
    })
    .contains("block size"));
    assert!(reason(CbtInfo {
        device_capacity: 1,
        ..info
    })
    .contains("size changed"));
    assert!(reason(CbtInfo {
        generation_id: uuid::Uuid::nil(),
        ..info
    })
    .contains("generation"));
    assert!(backup::full_reason(Some(&m), &info, Mode::Full)
        .unwrap()
        .contains("requested"));
}

#[test]
fn adjacent_blocks_are_read_together_and_zero_blocks_are_holes() {
    use std::os::unix::fs::MetadataExt;
    let bs = 4096usize;
    let blocks = 1024usize; // 4 MiB: four reads of 1 MiB for a full backup
    let k = FakeKernel::new(bs as u32);
    let dev = Path::new("/dev/fz");
    k.add_disk(dev, "fz", 9, blocks * bs);
    for b in [0usize, 1, 2, 500, 1023] {
        k.write(dev, b * bs, &[0xa5; 4096]);
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let storage = tempfile::tempfile().unwrap();
    let stop = AtomicBool::new(false);
    let req = BackupRequest::new(
        vec![dev.to_path_buf()],
        repo.clone(),
        storage.as_fd(),
        1 << 20,
        &stop,
    );
    let before = k.image_reads();
    backup::backup(&k, &req, &NoProgress).unwrap();
    let full_reads = k.image_reads() - before;
    assert_eq!(
        full_reads,
        blocks * bs / (1 << 20),
        "reads of the full backup"
    );
    // Five blocks of data: the rest of the data file is holes (the file
    // system may allocate a little around them).
    let data = repo.join("000001/fz.data");
    let meta = std::fs::metadata(&data).unwrap();
    assert_eq!(meta.len(), (blocks * bs) as u64);
    assert!(
        meta.blocks() * 512 <= 64 * bs as u64,
        "{} bytes allocated for 5 blocks of data",
        meta.blocks() * 512
    );

    // An incremental of blocks 10-13 and 20: two reads.
    k.write(dev, 10 * bs, &[1; 4 * 4096]);
    k.write(dev, 20 * bs + 7, b"x");
    let before = k.image_reads();
    let r = backup::backup(&k, &req, &NoProgress).unwrap();
    assert_eq!(r.devices[0].blocks_copied, 5);
    assert_eq!(k.image_reads() - before, 2, "reads of the incremental");

    let out = dir.path().join("restored");
    backup::restore(&repo, "fz", None, &out, false, &stop, &NoProgress).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), k.contents(dev));
    let v = backup::verify(&repo, "fz", None, None, &stop, &NoProgress).unwrap();
    assert_eq!(v.mismatch_count, 0);
}
