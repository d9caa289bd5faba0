//! Compiles the fork's C UAPI headers with the system C compiler and checks
//! that the C layout, the Rust mirror in `libblksnap::uapi` and the v6 ABI
//! table agree.

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::path::PathBuf;
use std::process::Command;

use libblksnap::uapi::*;

fn headers_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../linux/tree/include/uapi");
    assert!(
        dir.join("linux/blksnap.h").is_file() && dir.join("linux/blk-filter.h").is_file(),
        "UAPI headers not found under {}",
        dir.display()
    );
    dir
}

/// Builds and runs tests/abi_dump.c; returns its facts by key.
fn c_facts() -> BTreeMap<String, String> {
    let out_dir = tempfile::tempdir().expect("temporary directory");
    let exe = out_dir.path().join("abi_dump");
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/abi_dump.c");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(headers_dir())
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler '{cc}': {e}"));
    assert!(status.success(), "the UAPI headers do not compile");
    let out = Command::new(&exe).output().expect("run abi_dump");
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| {
            let mut it = l.splitn(3, ' ');
            let (kind, name, value) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
            (format!("{kind} {name}"), value.to_string())
        })
        .collect()
}

macro_rules! rust_size {
    ($m:ident, $t:ident) => {
        $m.insert(
            concat!("size ", stringify!($t)).to_string(),
            size_of::<$t>().to_string(),
        );
    };
}
macro_rules! rust_off {
    ($m:ident, $t:ident, $f:ident) => {
        $m.insert(
            concat!("offset ", stringify!($t), ".", stringify!($f)).to_string(),
            offset_of!($t, $f).to_string(),
        );
    };
}
macro_rules! rust_ioctl {
    ($m:ident, $n:ident) => {
        $m.insert(
            concat!("ioctl ", stringify!($n)).to_string(),
            format!("{:#x}", $n),
        );
    };
}

fn rust_facts() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    rust_size!(m, blkfilter_name);
    rust_size!(m, blkfilter_ctl);
    rust_off!(m, blkfilter_ctl, cmd);
    rust_off!(m, blkfilter_ctl, optlen);
    rust_off!(m, blkfilter_ctl, opt);
    rust_size!(m, blksnap_uuid);
    rust_size!(m, blksnap_cbtinfo);
    rust_off!(m, blksnap_cbtinfo, block_size);
    rust_off!(m, blksnap_cbtinfo, block_count);
    rust_off!(m, blksnap_cbtinfo, generation_id);
    rust_off!(m, blksnap_cbtinfo, changes_number);
    rust_size!(m, blksnap_cbtmap);
    rust_off!(m, blksnap_cbtmap, length);
    rust_off!(m, blksnap_cbtmap, buffer);
    rust_size!(m, blksnap_sectors);
    rust_off!(m, blksnap_sectors, count);
    rust_size!(m, blksnap_cbtdirty);
    rust_off!(m, blksnap_cbtdirty, dirty_sectors);
    rust_size!(m, blksnap_snapshotadd);
    rust_size!(m, blksnap_snapshotinfo);
    rust_off!(m, blksnap_snapshotinfo, image);
    rust_size!(m, blksnap_version);
    rust_off!(m, blksnap_version, minor);
    rust_off!(m, blksnap_version, revision);
    rust_off!(m, blksnap_version, build);
    rust_size!(m, blksnap_snapshot_create);
    rust_off!(m, blksnap_snapshot_create, diff_storage_fd);
    rust_off!(m, blksnap_snapshot_create, id);
    rust_size!(m, blksnap_snapshot_collect);
    rust_off!(m, blksnap_snapshot_collect, ids);
    rust_size!(m, blksnap_snapshot_event);
    rust_off!(m, blksnap_snapshot_event, timeout_ms);
    rust_off!(m, blksnap_snapshot_event, code);
    rust_off!(m, blksnap_snapshot_event, time_label);
    rust_off!(m, blksnap_snapshot_event, data);
    rust_size!(m, blksnap_event_corrupted);
    rust_off!(m, blksnap_event_corrupted, dev_id_mn);
    rust_off!(m, blksnap_event_corrupted, err_code);
    rust_size!(m, blksnap_event_no_space);
    rust_off!(m, blksnap_event_no_space, limit_sect);
    rust_size!(m, blksnap_snapshot_events);
    rust_off!(m, blksnap_snapshot_events, mask);
    rust_ioctl!(m, IOCTL_BLKSNAP_VERSION);
    rust_ioctl!(m, IOCTL_BLKSNAP_SNAPSHOT_CREATE);
    rust_ioctl!(m, IOCTL_BLKSNAP_SNAPSHOT_DESTROY);
    rust_ioctl!(m, IOCTL_BLKSNAP_SNAPSHOT_TAKE);
    rust_ioctl!(m, IOCTL_BLKSNAP_SNAPSHOT_COLLECT);
    rust_ioctl!(m, IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT);
    rust_ioctl!(m, IOCTL_BLKSNAP_SNAPSHOT_EVENTS);
    rust_ioctl!(m, BLKFILTER_ATTACH);
    rust_ioctl!(m, BLKFILTER_DETACH);
    rust_ioctl!(m, BLKFILTER_CTL);
    let consts = [
        ("blkfilter_ctl_blksnap_cbtinfo", ctl::CBTINFO as usize),
        ("blkfilter_ctl_blksnap_cbtmap", ctl::CBTMAP as usize),
        ("blkfilter_ctl_blksnap_cbtdirty", ctl::CBTDIRTY as usize),
        (
            "blkfilter_ctl_blksnap_snapshotadd",
            ctl::SNAPSHOTADD as usize,
        ),
        (
            "blkfilter_ctl_blksnap_snapshotinfo",
            ctl::SNAPSHOTINFO as usize,
        ),
        (
            "blksnap_event_code_corrupted",
            EVENT_CODE_CORRUPTED as usize,
        ),
        ("blksnap_event_code_no_space", EVENT_CODE_NO_SPACE as usize),
        ("BLKFILTER_NAME_LENGTH", BLKFILTER_NAME_LENGTH),
        ("IMAGE_DISK_NAME_LEN", IMAGE_DISK_NAME_LEN),
    ];
    for (k, v) in consts {
        m.insert(format!("const {k}"), v.to_string());
    }
    m.insert(
        "string BLKSNAP_CTL".into(),
        CONTROL_PATH.trim_start_matches("/dev/").into(),
    );
    m.insert("string BLKSNAP_IMAGE_NAME".into(), IMAGE_NAME_PREFIX.into());
    m.insert("string BLKSNAP_FILTER_NAME".into(), FILTER_NAME.into());
    m
}

#[test]
fn c_headers_match_rust_definitions() {
    let c = c_facts();
    let rust = rust_facts();
    let mut diffs = Vec::new();
    for (k, rv) in &rust {
        match c.get(k) {
            Some(cv) if cv == rv => {}
            Some(cv) => diffs.push(format!("{k}: C {cv}, Rust {rv}")),
            None => diffs.push(format!("{k}: missing from the C dump")),
        }
    }
    for k in c.keys().filter(|k| !rust.contains_key(*k)) {
        diffs.push(format!("{k}: not checked on the Rust side"));
    }
    assert!(
        diffs.is_empty(),
        "C and Rust disagree:\n{}",
        diffs.join("\n")
    );
}

/// The v6 contract: sizes, offsets and (generic ioctl layout) numbers.
#[test]
fn c_headers_match_v6_contract() {
    let c = c_facts();
    let mut expect: Vec<(&str, &str)> = vec![
        ("size blkfilter_name", "32"),
        ("size blkfilter_ctl", "48"),
        ("size blksnap_uuid", "16"),
        ("size blksnap_cbtinfo", "40"),
        ("offset blksnap_cbtinfo.changes_number", "32"),
        ("size blksnap_cbtmap", "16"),
        ("size blksnap_sectors", "16"),
        ("size blksnap_cbtdirty", "16"),
        ("offset blksnap_cbtdirty.dirty_sectors", "8"),
        ("size blksnap_snapshotadd", "16"),
        ("size blksnap_snapshotinfo", "36"),
        ("size blksnap_version", "8"),
        ("size blksnap_snapshot_create", "32"),
        ("offset blksnap_snapshot_create.id", "12"),
        ("size blksnap_snapshot_collect", "16"),
        ("offset blksnap_snapshot_collect.ids", "8"),
        ("size blksnap_snapshot_event", "4096"),
        ("offset blksnap_snapshot_event.data", "32"),
        ("size blksnap_event_corrupted", "12"),
        // The extension beyond v6: events chosen per snapshot.
        ("size blksnap_snapshot_events", "24"),
        ("offset blksnap_snapshot_events.mask", "16"),
        ("const blkfilter_ctl_blksnap_cbtinfo", "0"),
        ("const blkfilter_ctl_blksnap_snapshotinfo", "4"),
        ("const blksnap_event_code_corrupted", "0"),
        ("string BLKSNAP_CTL", "blksnap-control"),
        ("string BLKSNAP_IMAGE_NAME", "blksnap-image"),
        ("string BLKSNAP_FILTER_NAME", "blksnap"),
    ];
    if cfg!(any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "riscv64"
    )) {
        expect.extend([
            ("ioctl IOCTL_BLKSNAP_VERSION", "0x80085600"),
            ("ioctl IOCTL_BLKSNAP_SNAPSHOT_CREATE", "0xc0205601"),
            ("ioctl IOCTL_BLKSNAP_SNAPSHOT_DESTROY", "0x40105602"),
            ("ioctl IOCTL_BLKSNAP_SNAPSHOT_TAKE", "0x40105603"),
            ("ioctl IOCTL_BLKSNAP_SNAPSHOT_COLLECT", "0x80105604"),
            ("ioctl IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT", "0x90005605"),
            ("ioctl IOCTL_BLKSNAP_SNAPSHOT_EVENTS", "0x40185606"),
            ("ioctl BLKFILTER_ATTACH", "0xc020128c"),
            ("ioctl BLKFILTER_DETACH", "0xc020128d"),
            ("ioctl BLKFILTER_CTL", "0xc030128e"),
        ]);
    }
    for (k, v) in expect {
        assert_eq!(c.get(k).map(String::as_str), Some(v), "{k}");
    }
}
