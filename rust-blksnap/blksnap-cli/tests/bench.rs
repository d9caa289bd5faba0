//! A benchmark of the repository format, run by hand:
//!
//! ```sh
//! cargo test --release -p blksnap --test bench -- --ignored --nocapture
//! BLKSNAP_BENCH_BLOCKS=4194304 cargo test --release ...   # more blocks
//! ```
//!
//! It backs up a fake disk of `BLKSNAP_BENCH_BLOCKS` blocks of 512 bytes
//! (default 2 Mi blocks, the kernel's block count for any device of 128 GiB
//! or more, such as 1 TiB) in full, then a 1-block and a 1 % incremental,
//! and prints each set's manifest size (JSON and sums file) and the peak
//! memory and time of `blksnap verify` and `blksnap restore` of the chain.
//! Memory and manifest sizes depend on the number of blocks, not on their
//! size, so small blocks stand for a large device.

use std::os::fd::AsFd;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use libblksnap::backup::{self, BackupRequest, NoProgress};
use libblksnap::fake::FakeKernel;

/// Runs the tool; returns its peak resident memory in KiB and its time.
/// The peak is VmHWM of /proc/PID/status, sampled until the tool exits
/// (getrusage would report at least this process's own peak: a forked
/// child starts with its parent's high-water mark).
fn measure(args: &[&std::ffi::OsStr]) -> (u64, f64) {
    let start = Instant::now();
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("blksnap"))
        .args(args)
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "blksnap {args:?} failed");
            break;
        }
        if let Ok(text) = std::fs::read_to_string(&status_file) {
            if let Some(kib) = text
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
            {
                peak = peak.max(kib);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    (peak, start.elapsed().as_secs_f64())
}

fn set_bytes(dir: &Path) -> (u64, u64) {
    let mut json = 0;
    let mut sums = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let len = e.metadata().unwrap().len();
        match e.path().extension().and_then(|x| x.to_str()) {
            Some("json") => json += len,
            Some("sums") => sums += len,
            _ => {}
        }
    }
    (json, sums)
}

#[test]
#[ignore = "a benchmark: run by hand with --ignored --nocapture"]
fn manifest_size_and_memory_of_verify_and_restore() {
    let blocks: usize = std::env::var("BLKSNAP_BENCH_BLOCKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2 << 20);
    let bs = 512usize;
    let dir = tempfile::tempdir_in(std::env::var("BLKSNAP_BENCH_DIR").unwrap_or("/var/tmp".into()))
        .unwrap();
    let repo = dir.path().join("repo");
    let k = FakeKernel::new(bs as u32);
    let dev = Path::new("/dev/bench");
    k.add_disk(dev, "bench", 1, blocks * bs);
    let storage = tempfile::tempfile().unwrap();
    let stop = AtomicBool::new(false);
    let req = BackupRequest::new(
        vec![dev.to_path_buf()],
        repo.clone(),
        storage.as_fd(),
        1 << 20,
        &stop,
    );
    println!("device: {blocks} blocks of {bs} bytes");
    let t = Instant::now();
    backup::backup(&k, &req, &NoProgress).unwrap();
    println!("full backup: {:.1} s", t.elapsed().as_secs_f64());
    k.write(dev, 12345 * bs, b"one block");
    backup::backup(&k, &req, &NoProgress).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..blocks / 100 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        k.write(dev, (x as usize % blocks) * bs, &x.to_le_bytes());
    }
    backup::backup(&k, &req, &NoProgress).unwrap();
    drop(k);
    for (set, what) in [("000001", "full"), ("000002", "1 block"), ("000003", "1 %")] {
        let (json, sums) = set_bytes(&repo.join(set));
        println!("set {set} ({what}): manifest {json} B, sums {sums} B");
    }
    let r = repo.as_os_str();
    for set in ["000002", "000003"] {
        let (rss, secs) = measure(&[
            "verify".as_ref(),
            "--repo".as_ref(),
            r,
            "--device".as_ref(),
            "bench".as_ref(),
            "--set".as_ref(),
            set.as_ref(),
        ]);
        println!("verify of the chain to {set}: peak RSS {rss} KiB, {secs:.1} s");
        let img = dir.path().join(format!("{set}.img"));
        let (rss, secs) = measure(&[
            "restore".as_ref(),
            "--repo".as_ref(),
            r,
            "--device".as_ref(),
            "bench".as_ref(),
            "--set".as_ref(),
            set.as_ref(),
            img.as_os_str(),
        ]);
        println!("restore of the chain to {set}: peak RSS {rss} KiB, {secs:.1} s");
        let (rss, secs) = measure(&[
            "verify".as_ref(),
            "--repo".as_ref(),
            r,
            "--device".as_ref(),
            "bench".as_ref(),
            "--set".as_ref(),
            set.as_ref(),
            img.as_os_str(),
        ]);
        println!("verify of {set} against its image: peak RSS {rss} KiB, {secs:.1} s");
        std::fs::remove_file(img).unwrap();
    }
}
