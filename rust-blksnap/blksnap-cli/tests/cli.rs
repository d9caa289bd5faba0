//! End-to-end tests of the `blksnap` command that need no blksnap kernel.
//!
//! Backups are made with the library against its in-memory kernel model;
//! the command then restores and verifies them for real (restore and verify
//! read only the repository and the target).

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use assert_cmd::Command;
use libblksnap::backup::{self, BackupRequest, Mode, NoProgress};
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
    assert!(!dir.path().join("repo").join("000001").exists());
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

/// Makes a full and two incremental backups of a fake disk; returns the
/// repository and the final disk contents.
fn fake_backups(dir: &Path, size: usize) -> (PathBuf, Vec<u8>) {
    let k = FakeKernel::new(4096);
    let dev = Path::new("/dev/fakedisk");
    k.add_disk(dev, "fakedisk", 3, size);
    let repo = dir.join("repo");
    let storage = tempfile::tempfile().unwrap();
    let stop = AtomicBool::new(false);
    let req = BackupRequest {
        devices: vec![dev.to_path_buf()],
        repository: repo.clone(),
        mode: Mode::Auto,
        diff_storage: storage.as_fd(),
        diff_storage_limit_sectors: 1 << 20,
        interrupt: &stop,
    };
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
    one_line_error(&out);
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
        text.replacen("\"capacity\": ", "\"capacity\": 1", 1),
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
    assert!(!dir.path().join(".out.img.partial").exists());
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
            assert!(!dir.path().join(".big.img.partial").exists());
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
