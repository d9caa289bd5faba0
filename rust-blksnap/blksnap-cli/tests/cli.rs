//! End-to-end tests of the `blksnap` command that need no blksnap kernel.
//!
//! Backups are made with the library against its in-memory kernel model;
//! the command then restores and verifies them for real (restore and verify
//! read only the repository and the target).

use std::os::fd::AsFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use assert_cmd::Command;
use libblksnap::backup::{self, BackupRequest, NoProgress};
use libblksnap::fake::FakeKernel;
use predicates::prelude::*;

fn blksnap() -> Command {
    Command::cargo_bin("blksnap").unwrap()
}

fn no_kernel_support() -> bool {
    !Path::new(libblksnap::uapi::CONTROL_PATH).exists()
}

/// One line on stderr, starting with the tool's name.
fn one_line_error(out: &std::process::Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "stderr: {err}");
    assert!(err.starts_with("blksnap: error: "), "stderr: {err}");
    err
}

#[test]
fn help_lists_commands_examples_and_exit_codes() {
    let out = blksnap().arg("--help").assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    for word in [
        "attach",
        "detach",
        "cbtinfo",
        "readcbtmap",
        "markdirtyblock",
        "snapshot",
        "backup",
        "restore",
        "verify",
        "Examples:",
        "Exit status",
    ] {
        assert!(text.contains(word), "--help lacks {word}");
    }
    blksnap()
        .args(["snapshot", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("wait-event").and(predicate::str::contains("watch")));
    blksnap()
        .args(["snapshot", "create", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("O_TMPFILE").and(predicate::str::contains("--limit")));
    blksnap()
        .args(["backup", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("Examples:"));
    blksnap()
        .arg("exit-codes")
        .assert()
        .success()
        .stdout(predicate::str::contains("130"));
}

#[test]
fn usage_errors_exit_2() {
    blksnap().assert().code(2);
    blksnap().args(["attach"]).assert().code(2);
    blksnap()
        .args(["snapshot", "create", "--limit", "12Q"])
        .assert()
        .code(2);
    blksnap()
        .args(["markdirtyblock", "/dev/null", "--sectors", "5"])
        .assert()
        .code(2);
}

#[test]
fn kernel_without_blksnap_is_reported() {
    if !no_kernel_support() {
        eprintln!("skipped: this kernel has blksnap");
        return;
    }
    for args in [
        vec!["version"],
        vec!["snapshot", "collect"],
        vec![
            "snapshot",
            "destroy",
            "--id",
            "00000000-0000-0000-0000-000000000001",
        ],
    ] {
        let out = blksnap().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        let err = one_line_error(&out);
        assert!(
            err.contains("/dev/blksnap-control") && err.contains("no blksnap support"),
            "{err}"
        );
        // The driver is built in: there is no module to load.
        assert!(!err.contains("module"), "{err}");
    }
    // A real block device, if the host has one we may open.
    if let Some(dev) = ["/dev/loop0", "/dev/vda", "/dev/sda", "/dev/nvme0n1"]
        .into_iter()
        .find(|p| std::fs::File::open(p).is_ok())
    {
        let out = blksnap().args(["cbtinfo", dev]).output().unwrap();
        assert_eq!(out.status.code(), Some(3), "cbtinfo {dev}");
        one_line_error(&out);
    }
}

#[test]
fn bad_devices_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let file = dir.path().join("plain");
    std::fs::write(&file, b"data").unwrap();
    for cmd in ["attach", "detach", "cbtinfo", "readcbtmap"] {
        let out = blksnap().arg(cmd).arg(&missing).output().unwrap();
        assert_eq!(out.status.code(), Some(4), "{cmd}");
        assert!(one_line_error(&out).contains("no such device"));
        let out = blksnap().arg(cmd).arg(&file).output().unwrap();
        assert_eq!(out.status.code(), Some(4), "{cmd}");
        assert!(one_line_error(&out).contains("not a block device"));
    }
    let out = blksnap()
        .args(["backup", "--repo"])
        .arg(dir.path().join("repo"))
        .arg("--storage")
        .arg(dir.path())
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(one_line_error(&out).contains("no such device"));
    // A failed run does not create the repository.
    assert!(!dir.path().join("repo").exists());
    let out = blksnap()
        .args(["markdirtyblock", "--sectors", "0:8"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let out = blksnap()
        .args(["snapshot", "create", "--storage"])
        .arg(&file)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    one_line_error(&out);
}

/// Names of temporary (".partial") files in `dir`.
fn partials(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial"))
        .collect()
}

/// Makes a full and two incremental backups of a fake disk; returns the
/// repository and the final disk contents.
fn fake_backups(dir: &Path, size: usize) -> (PathBuf, Vec<u8>) {
    let k = FakeKernel::new(4096);
    let dev = Path::new("/dev/fakedisk");
    k.add_disk(dev, "fakedisk", 3, size);
    let repo = dir.join("repo");
    let storage = tempfile::tempfile().unwrap();
    let stop = AtomicBool::new(false);
    let req = BackupRequest::new(
        vec![dev.to_path_buf()],
        repo.clone(),
        storage.as_fd(),
        1 << 20,
        &stop,
    );
    let mut seed = 1u8;
    for round in 0..3 {
        for i in 0..(size / 4096 / 5).max(1) {
            let off = (i * 7919 * 4096 + round * 1000) % (size - 600);
            seed = seed.wrapping_mul(31).wrapping_add(7);
            k.write(dev, off, &[seed; 600]);
        }
        backup::backup(&k, &req, &NoProgress).unwrap();
    }
    (repo, k.contents(dev))
}

#[test]
fn restore_and_verify_a_fake_backup() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, contents) = fake_backups(dir.path(), 100 * 4096 + 512);
    let img = dir.path().join("out.img");
    blksnap()
        .args(["restore", "--device", "fakedisk", "--repo"])
        .arg(&repo)
        .arg(&img)
        .assert()
        .success()
        .stdout(predicate::str::contains("000001, 000002, 000003"));
    assert_eq!(std::fs::read(&img).unwrap(), contents);

    // Restoring an older set gives a different image; --json is parseable.
    let old = dir.path().join("old.img");
    let out = blksnap()
        .args([
            "--json", "restore", "--device", "fakedisk", "--set", "000002", "--repo",
        ])
        .arg(&repo)
        .arg(&old)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sets"], serde_json::json!(["000001", "000002"]));
    assert_ne!(std::fs::read(&old).unwrap(), contents);

    // An existing image is kept unless --force.
    let out = blksnap()
        .args(["restore", "--device", "fakedisk", "--repo"])
        .arg(&repo)
        .arg(&img)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(one_line_error(&out).contains("--force"));

    // Verify: the backup alone, then against the images.
    blksnap()
        .args(["verify", "--device", "fakedisk", "--repo"])
        .arg(&repo)
        .assert()
        .success();
    blksnap()
        .args(["verify", "--device", "fakedisk", "--repo"])
        .arg(&repo)
        .arg(&img)
        .assert()
        .success()
        .stdout(predicate::str::contains("matches"));
    let out = blksnap()
        .args(["--json", "verify", "--device", "fakedisk", "--repo"])
        .arg(&repo)
        .arg(&old)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["mismatch_count"].as_u64().unwrap() > 0);
    // With --json, the error is one JSON line on stderr.
    let e: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(e["error"]["exit_code"], 5);
    let out = blksnap()
        .args(["verify", "--device", "nosuch", "--repo"])
        .arg(&repo)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));

    // A damaged manifest: exit 5, one line naming the file.
    let manifest = repo.join("000002/fakedisk.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replacen("\"capacity\":", "\"capacity\":1", 1),
    )
    .unwrap();
    let out = blksnap()
        .args(["restore", "--force", "--device", "fakedisk", "--repo"])
        .arg(&repo)
        .arg(&img)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    let err = one_line_error(&out);
    assert!(
        err.contains("000002/fakedisk.json") && err.contains("checksum"),
        "{err}"
    );
    // The image from before is untouched (restore writes under a temporary name).
    assert_eq!(std::fs::read(&img).unwrap(), contents);
    assert_eq!(partials(dir.path()), Vec::<String>::new());
}

#[test]
fn interrupted_restore_leaves_no_image() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, contents) = fake_backups(dir.path(), 64 << 20);
    let img = dir.path().join("big.img");
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("blksnap"))
        .args(["restore", "--device", "fakedisk", "--repo"])
        .arg(&repo)
        .arg(&img)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(150));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    match status.code() {
        // Finished before the signal: the image is complete.
        Some(0) => assert_eq!(std::fs::read(&img).unwrap(), contents),
        Some(130) => {
            eprintln!("interrupted as intended");
            assert!(!img.exists());
            assert_eq!(partials(dir.path()), Vec::<String>::new());
        }
        other => panic!("unexpected exit {other:?}"),
    }
}

#[test]
fn full_target_is_reported() {
    // Needs a tiny file system; only possible as root.
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to mount a small tmpfs");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (repo, _) = fake_backups(dir.path(), 1 << 20);
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&small)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        eprintln!("skipped: cannot mount tmpfs");
        return;
    }
    let out = blksnap()
        .args(["restore", "--device", "fakedisk", "--repo"])
        .arg(&repo)
        .arg(small.join("x.img"))
        .output()
        .unwrap();
    let listing: Vec<_> = std::fs::read_dir(&small)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let _ = std::process::Command::new("umount").arg(&small).status();
    assert_eq!(out.status.code(), Some(6));
    assert!(one_line_error(&out).contains("No space left"));
    assert!(listing.is_empty(), "{listing:?}");
}

/// A full backup of a 16-block fake disk, then an incremental that
/// supersedes block 3. Returns the repository.
fn two_sets(dir: &Path) -> PathBuf {
    let k = FakeKernel::new(4096);
    let dev = Path::new("/dev/fakedisk");
    k.add_disk(dev, "fakedisk", 3, 16 * 4096);
    k.write(dev, 0, &[7u8; 16 * 4096]);
    let repo = dir.join("repo");
    let storage = tempfile::tempfile().unwrap();
    let stop = AtomicBool::new(false);
    let req = BackupRequest::new(
        vec![dev.to_path_buf()],
        repo.clone(),
        storage.as_fd(),
        1 << 20,
        &stop,
    );
    backup::backup(&k, &req, &NoProgress).unwrap();
    k.write(dev, 3 * 4096 + 10, b"newer");
    backup::backup(&k, &req, &NoProgress).unwrap();
    repo
}

#[test]
fn verify_checks_the_blocks_of_every_set_of_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let repo = two_sets(dir.path());
    blksnap()
        .args(["verify", "--device", "fakedisk", "--repo"])
        .arg(&repo)
        .assert()
        .success();
    // Block 3 of set 1, which set 2 supersedes.
    let data = repo.join("000001/fakedisk.data");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[3 * 4096 + 100] ^= 0x55;
    std::fs::write(&data, bytes).unwrap();
    let out = blksnap()
        .args(["verify", "--device", "fakedisk", "--repo"])
        .arg(&repo)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    let err = one_line_error(&out);
    assert!(err.contains("000001") && err.contains("block 3"), "{err}");
}

/// A block major the running kernel does not know: opening such a node
/// fails with ENXIO, so no test can write to a real disk by mistake.
fn unused_block_major() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/devices").ok()?;
    let used: Vec<u64> = text
        .split("Block devices:")
        .nth(1)?
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    (60..=63).chain(120..=127).find(|m| !used.contains(m))
}

#[test]
fn restore_refuses_unfit_targets_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let repo = two_sets(dir.path());
    let restore = |target: &Path, force: bool| {
        let mut c = blksnap();
        c.args(["restore", "--device", "fakedisk", "--repo"])
            .arg(&repo);
        if force {
            c.arg("--force");
        }
        c.arg(target).output().unwrap()
    };
    // A directory: refused at once, not after the whole image is written.
    let target_dir = dir.path().join("adir");
    std::fs::create_dir(&target_dir).unwrap();
    let out = restore(&target_dir, true);
    assert_eq!(out.status.code(), Some(1));
    let err = one_line_error(&out);
    assert!(
        err.contains("is a directory") && !err.contains("rename"),
        "{err}"
    );
    // Something that is neither a file nor a block device.
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let out = restore(&fifo, true);
    assert_eq!(out.status.code(), Some(1));
    assert!(one_line_error(&out).contains("not a regular file or a block device"));
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    assert_eq!(partials(dir.path()), Vec::<String>::new());

    // A block device needs --force, and is opened exclusively.
    let Some(major) = unused_block_major() else {
        eprintln!("skipped the block device part: no unused major");
        return;
    };
    let node = dir.path().join("blk");
    let made = nix::sys::stat::mknod(
        &node,
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(major, 0),
    );
    if made.is_err() {
        eprintln!("skipped the block device part: cannot mknod ({made:?})");
        return;
    }
    let out = restore(&node, false);
    assert_eq!(out.status.code(), Some(1));
    let err = one_line_error(&out);
    assert!(
        err.contains("block device") && err.contains("--force"),
        "{err}"
    );
    let out = restore(&node, true);
    assert_ne!(out.status.code(), Some(0));
    one_line_error(&out);
}

#[test]
fn an_error_is_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let repo = two_sets(dir.path());
    let out = blksnap()
        .args(["restore", "--device", "fakedisk", "--repo"])
        .arg(&repo)
        .arg(dir.path().join("no/such/dir/x.img"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = one_line_error(&out);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

#[test]
fn json_errors_are_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = blksnap()
        .args(["--json", "verify", "--device", "x", "--repo"])
        .arg(dir.path().join("none"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    let v: serde_json::Value = serde_json::from_slice(&out.stderr)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(v["error"]["exit_code"], 5);
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no backup"));
    let out = blksnap().args(["--json", "exit-codes"]).output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["exit_codes"].as_array().unwrap().len() >= 8, "{v}");
}

#[test]
fn list_shows_what_the_repository_holds() {
    let dir = tempfile::tempdir().unwrap();
    let repo = two_sets(dir.path());
    let out = blksnap()
        .args(["list", "--repo"])
        .arg(&repo)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("000001") && text.contains("full"), "{text}");
    assert!(
        text.contains("000002") && text.contains("incremental"),
        "{text}"
    );
    let out = blksnap()
        .args(["--json", "list", "--repo"])
        .arg(&repo)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sets = v["sets"].as_array().unwrap();
    assert_eq!(sets.len(), 2);
    assert_eq!(sets[1]["devices"][0]["device"], "fakedisk");
    assert_eq!(sets[1]["devices"][0]["kind"], "incremental");
    assert_eq!(sets[1]["devices"][0]["parent_set"], "000001");
    assert_eq!(sets[1]["devices"][0]["blocks_stored"], 1);
    assert_eq!(sets[0]["devices"][0]["data_bytes"], 16 * 4096);
}

#[test]
fn a_locked_repository_is_refused_with_the_holder() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let repo = two_sets(dir.path());
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(repo.join(".lock"))
        .unwrap();
    let mut lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e)
        .unwrap();
    lock.set_len(0).unwrap();
    writeln!(lock, "{} backup", std::process::id()).unwrap();
    for args in [vec!["verify", "--device", "fakedisk"], vec!["list"]] {
        let out = blksnap()
            .args(&args)
            .arg("--repo")
            .arg(&repo)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(7), "{args:?}: {out:?}");
        let err = one_line_error(&out);
        assert!(
            err.contains(&format!("locked by pid {}", std::process::id())),
            "{err}"
        );
    }
    drop(lock);
    blksnap()
        .args(["verify", "--device", "fakedisk", "--repo"])
        .arg(&repo)
        .assert()
        .success();
}
