//! The repository as a store people rely on: concurrent runs, the size of
//! the manifests, the formats it reads, and runs that fail early.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::sync::Mutex;

use libblksnap::backup::{self, BackupReport, BackupRequest, Mode, NoProgress, Progress};
use libblksnap::fake::FakeKernel;
use libblksnap::Error;

struct Repo {
    dir: tempfile::TempDir,
    storage: std::fs::File,
    stop: AtomicBool,
}

impl Repo {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            storage: tempfile::tempfile().unwrap(),
            stop: AtomicBool::new(false),
        }
    }
    fn path(&self) -> PathBuf {
        self.dir.path().join("repo")
    }
    fn run(
        &self,
        k: &FakeKernel,
        devices: &[&str],
        mode: Mode,
        progress: &dyn Progress,
    ) -> Result<BackupReport, Error> {
        let req = BackupRequest {
            mode,
            ..BackupRequest::new(
                devices.iter().map(PathBuf::from).collect(),
                self.path(),
                self.storage.as_fd(),
                1 << 20,
                &self.stop,
            )
        };
        backup::backup(k, &req, progress)
    }
    fn restore(&self, device: &str) -> Result<Vec<u8>, Error> {
        let out = self.dir.path().join(format!("restored-{device}"));
        backup::restore(
            &self.path(),
            device,
            None,
            &out,
            true,
            &self.stop,
            &NoProgress,
        )?;
        Ok(std::fs::read(out).unwrap())
    }
}

/// Progress that stops the run at its first phase until told to go on.
struct Gate {
    started: mpsc::Sender<()>,
    go: Mutex<mpsc::Receiver<()>>,
}

impl Progress for Gate {
    fn start(&self, _: &str, _: u64) {
        let _ = self.started.send(());
        let _ = self.go.lock().unwrap().recv();
    }
}

/// Runs backup A of `a` and, while A is in the middle of copying, backup B
/// of `b` on the same repository. Returns both outcomes.
fn overlapping(
    k: &FakeKernel,
    repo: &Repo,
    a: &str,
    b: &str,
) -> (Result<BackupReport, Error>, Result<BackupReport, Error>) {
    let (started_tx, started_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel();
    let gate = Gate {
        started: started_tx,
        go: Mutex::new(go_rx),
    };
    std::thread::scope(|s| {
        let first = s.spawn(|| repo.run(k, &[a], Mode::Auto, &gate));
        started_rx.recv().unwrap();
        let second = repo.run(k, &[b], Mode::Auto, &NoProgress);
        go_tx.send(()).unwrap();
        (first.join().unwrap(), second)
    })
}

fn two_disks() -> FakeKernel {
    let k = FakeKernel::new(4096);
    k.add_disk("/dev/fa", "fa", 1, 16 * 4096);
    k.add_disk("/dev/fb", "fb", 2, 16 * 4096);
    k.write(Path::new("/dev/fa"), 100, b"disk a");
    k.write(Path::new("/dev/fb"), 9000, b"disk b");
    k
}

fn assert_locked(r: &Result<BackupReport, Error>) {
    let err = match r {
        Ok(rep) => panic!("the second run was not refused: it wrote set {}", rep.set),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("locked") && err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
}

#[test]
fn concurrent_backups_of_one_device_are_refused_by_the_lock() {
    let k = two_disks();
    let repo = Repo::new();
    let (a, b) = overlapping(&k, &repo, "/dev/fa", "/dev/fa");
    assert_locked(&b);
    assert_eq!(a.unwrap().set, "000001");
    assert_eq!(
        repo.restore("fa").unwrap(),
        k.contents(Path::new("/dev/fa"))
    );
    // The chain goes on.
    k.write(Path::new("/dev/fa"), 5 * 4096, b"later");
    let r = repo
        .run(&k, &["/dev/fa"], Mode::Incremental, &NoProgress)
        .unwrap();
    assert_eq!(r.set, "000002");
    assert_eq!(
        repo.restore("fa").unwrap(),
        k.contents(Path::new("/dev/fa"))
    );
}

#[test]
fn concurrent_backups_of_two_devices_are_refused_by_the_lock() {
    let k = two_disks();
    let repo = Repo::new();
    let (a, b) = overlapping(&k, &repo, "/dev/fa", "/dev/fb");
    assert_locked(&b);
    assert_eq!(a.unwrap().set, "000001");
    assert_eq!(
        repo.restore("fa").unwrap(),
        k.contents(Path::new("/dev/fa"))
    );
    let r = repo.run(&k, &["/dev/fb"], Mode::Auto, &NoProgress).unwrap();
    assert_eq!(r.set, "000002");
    assert_eq!(
        repo.restore("fb").unwrap(),
        k.contents(Path::new("/dev/fb"))
    );
    // Nothing temporary is left in the repository.
    let names: Vec<String> = std::fs::read_dir(repo.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

/// Bytes of a set's files for `device` other than its data file.
fn manifest_bytes(set_dir: &Path) -> u64 {
    std::fs::read_dir(set_dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| !e.file_name().to_string_lossy().ends_with(".data"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

#[test]
fn a_one_block_incremental_has_a_manifest_the_size_of_its_change() {
    let mut sizes = Vec::new();
    for blocks in [2048usize, 32768] {
        let k = FakeKernel::new(512);
        let dev = Path::new("/dev/big");
        k.add_disk(dev, "big", 7, blocks * 512);
        let repo = Repo::new();
        repo.run(&k, &["/dev/big"], Mode::Auto, &NoProgress)
            .unwrap();
        k.write(dev, 1000 * 512 + 3, b"one block");
        let r = repo
            .run(&k, &["/dev/big"], Mode::Auto, &NoProgress)
            .unwrap();
        assert_eq!(r.devices[0].blocks_copied, 1);
        let bytes = manifest_bytes(&repo.path().join(&r.set));
        eprintln!("{blocks} blocks: 1-block incremental manifest {bytes} bytes");
        sizes.push(bytes);
    }
    // Independent of the device's size (only digits of numbers may differ).
    assert!(sizes[1] < 4096, "{sizes:?}");
    assert!(sizes[1].abs_diff(sizes[0]) < 32, "{sizes:?}");
}

#[test]
fn a_device_path_that_is_not_utf8_backs_up() {
    use std::os::unix::ffi::OsStrExt;
    let path = PathBuf::from(std::ffi::OsStr::from_bytes(b"/dev/odd\xff"));
    let k = FakeKernel::new(4096);
    k.add_disk(&path, "odd", 3, 4 * 4096);
    let repo = Repo::new();
    let req = BackupRequest::new(
        vec![path.clone()],
        repo.path(),
        repo.storage.as_fd(),
        1 << 20,
        &repo.stop,
    );
    backup::backup(&k, &req, &NoProgress).unwrap();
    assert_eq!(repo.restore("odd").unwrap(), k.contents(&path));
}

#[test]
fn a_newer_manifest_format_is_named_not_called_unknown_fields() {
    let k = FakeKernel::new(4096);
    k.add_disk("/dev/fa", "fa", 1, 4 * 4096);
    let repo = Repo::new();
    repo.run(&k, &["/dev/fa"], Mode::Auto, &NoProgress).unwrap();
    let path = repo.path().join("000001/fa.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["manifest"]["format"] = serde_json::json!(99);
    v["manifest"]["something_new"] = serde_json::json!(true);
    v["also_new"] = serde_json::json!(1);
    std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    let err = repo.restore("fa").unwrap_err().to_string();
    assert!(
        err.contains("format 99") && !err.contains("unknown field"),
        "{err}"
    );
}

#[test]
fn a_failed_run_creates_no_repository() {
    let k = FakeKernel::new(4096);
    k.add_disk("/dev/fa", "fa", 1, 4 * 4096);
    let repo = Repo::new();
    assert!(repo
        .run(&k, &["/dev/fa"], Mode::Incremental, &NoProgress)
        .is_err());
    assert!(!repo.path().exists());
    assert!(repo
        .run(&k, &["/dev/nope"], Mode::Auto, &NoProgress)
        .is_err());
    assert!(!repo.path().exists());
}

/// A repository written by the format 1 tool (hex checksums of every block
/// in the JSON manifest): a full set and an incremental of a 4196-byte
/// device with 512-byte blocks.
fn v1_fixture() -> (tempfile::TempDir, PathBuf) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    for set in ["000001", "000002"] {
        std::fs::create_dir_all(repo.join(set)).unwrap();
        for f in ["old0.json", "old0.data"] {
            std::fs::copy(
                src.join("v1-repo").join(set).join(f),
                repo.join(set).join(f),
            )
            .unwrap();
        }
    }
    (dir, repo)
}

#[test]
fn a_format_1_repository_is_still_read_and_extended() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let (dir, repo) = v1_fixture();
    let stop = AtomicBool::new(false);
    for (set, img) in [("000001", "v1-set1.img"), ("000002", "v1-set2.img")] {
        let out = dir.path().join(format!("{set}.img"));
        backup::restore(&repo, "old0", Some(set), &out, false, &stop, &NoProgress).unwrap();
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(src.join(img)).unwrap()
        );
        let v = backup::verify(&repo, "old0", Some(set), Some(&out), &stop, &NoProgress).unwrap();
        assert_eq!(v.mismatch_count, 0);
    }
    let v = backup::verify(&repo, "old0", None, None, &stop, &NoProgress).unwrap();
    assert_eq!((v.mismatch_count, v.blocks_checked), (0, 9 + 2));
    // Damage in the older set is found.
    let data = repo.join("000001/old0.data");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[2 * 512] ^= 1;
    std::fs::write(&data, bytes).unwrap();
    let v = backup::verify(&repo, "old0", None, None, &stop, &NoProgress).unwrap();
    assert_eq!(
        v.damaged,
        vec![backup::DamagedBlock {
            set: "000001".into(),
            block: 2
        }]
    );
    let listing = backup::list(&repo, None).unwrap();
    assert_eq!(listing.sets.len(), 2);
    assert_eq!(listing.sets[0].devices[0].format, Some(1));
}

#[test]
fn verify_names_the_set_of_a_damaged_superseded_block() {
    let k = FakeKernel::new(4096);
    let dev = Path::new("/dev/fa");
    k.add_disk(dev, "fa", 1, 8 * 4096);
    let repo = Repo::new();
    repo.run(&k, &["/dev/fa"], Mode::Auto, &NoProgress).unwrap();
    k.write(dev, 3 * 4096, b"newer");
    repo.run(&k, &["/dev/fa"], Mode::Auto, &NoProgress).unwrap();
    let data = repo.path().join("000001/fa.data");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[3 * 4096 + 1] ^= 1;
    std::fs::write(&data, bytes).unwrap();
    let v = backup::verify(&repo.path(), "fa", None, None, &repo.stop, &NoProgress).unwrap();
    assert_eq!(v.sets, vec!["000001", "000002"]);
    assert_eq!(v.blocks_checked, 8 + 1);
    assert_eq!(v.mismatch_count, 1);
    assert_eq!(v.damaged[0].set, "000001");
    assert_eq!(v.damaged[0].block, 3);
    // The newest state is still whole, so restore of set 2 works; set 1 does not.
    assert_eq!(repo.restore("fa").unwrap(), k.contents(dev));
    let out = repo.dir.path().join("set1.img");
    let err = backup::restore(
        &repo.path(),
        "fa",
        Some("000001"),
        &out,
        false,
        &repo.stop,
        &NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("set 000001") && err.contains("block 3"),
        "{err}"
    );
}

#[test]
fn a_damaged_sums_file_is_rejected() {
    let k = FakeKernel::new(4096);
    let dev = Path::new("/dev/fa");
    k.add_disk(dev, "fa", 1, 8 * 4096);
    let repo = Repo::new();
    repo.run(&k, &["/dev/fa"], Mode::Auto, &NoProgress).unwrap();
    let sums = repo.path().join("000001/fa.sums");
    let mut bytes = std::fs::read(&sums).unwrap();
    assert_eq!(bytes.len(), 16 + 8 * 32);
    assert_eq!(&bytes[..8], b"BLKSNAPS");
    bytes[40] ^= 1;
    std::fs::write(&sums, &bytes).unwrap();
    let err = repo.restore("fa").unwrap_err().to_string();
    assert!(err.contains("fa.sums") && err.contains("checksum"), "{err}");
    std::fs::write(&sums, &bytes[..100]).unwrap();
    let err = repo.restore("fa").unwrap_err().to_string();
    assert!(err.contains("fa.sums") && err.contains("size"), "{err}");
}

#[test]
fn a_stale_partial_set_of_a_killed_run_is_removed() {
    let k = two_disks();
    let repo = Repo::new();
    std::fs::create_dir_all(repo.path().join(".000001.partial")).unwrap();
    std::fs::write(repo.path().join(".000001.partial/fa.json"), b"{").unwrap();
    let r = repo.run(&k, &["/dev/fa"], Mode::Auto, &NoProgress).unwrap();
    assert_eq!(r.set, "000001");
    assert!(!repo.path().join(".000001.partial").exists());
    assert!(!std::fs::read_to_string(repo.path().join(".lock"))
        .unwrap()
        .contains(&std::process::id().to_string()));
}
