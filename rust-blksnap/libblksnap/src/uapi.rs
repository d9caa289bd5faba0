//! Binary layout of the blksnap v6 user-space interface.
//!
//! These definitions mirror `include/uapi/linux/blksnap.h` and
//! `include/uapi/linux/blk-filter.h` of the fork. Every structure is checked
//! at compile time against the sizes and offsets of the v6 ABI, and the host
//! test `tests/abi.rs` compares them with what the C compiler makes of the
//! headers.

use core::mem::{offset_of, size_of};

/// Path of the control device.
pub const CONTROL_PATH: &str = "/dev/blksnap-control";
/// Prefix of the snapshot image disk names (`blksnap-image_MAJ:MIN`).
pub const IMAGE_NAME_PREFIX: &str = "blksnap-image";
/// Name of the block device filter.
pub const FILTER_NAME: &str = "blksnap";
/// Length of a filter name buffer.
pub const BLKFILTER_NAME_LENGTH: usize = 32;
/// Length of the image name buffer in [`blksnap_snapshotinfo`].
pub const IMAGE_DISK_NAME_LEN: usize = 32;
/// Size of the whole event structure.
pub const EVENT_SIZE: usize = 4096;
/// ioctl type code of the control device (`'V'`).
pub const BLKSNAP_IOCTL_TYPE: u8 = b'V';
/// ioctl type code of the block layer.
pub const BLOCK_IOCTL_TYPE: u8 = 0x12;

/// Command codes for `blkfilter_ctl.cmd` (enum blkfilter_ctl_blksnap).
pub mod ctl {
    pub const CBTINFO: u32 = 0;
    pub const CBTMAP: u32 = 1;
    pub const CBTDIRTY: u32 = 2;
    pub const SNAPSHOTADD: u32 = 3;
    pub const SNAPSHOTINFO: u32 = 4;
}

/// Command numbers of the control device (enum blksnap_ioctl).
pub mod nr {
    pub const VERSION: u8 = 0;
    pub const SNAPSHOT_CREATE: u8 = 1;
    pub const SNAPSHOT_DESTROY: u8 = 2;
    pub const SNAPSHOT_TAKE: u8 = 3;
    pub const SNAPSHOT_COLLECT: u8 = 4;
    pub const SNAPSHOT_WAIT_EVENT: u8 = 5;
    /// An extension of the v6 interface (`IOCTL_BLKSNAP_SNAPSHOT_EVENTS`).
    pub const SNAPSHOT_EVENTS: u8 = 6;
}

/// Event code: a snapshot image became unusable.
pub const EVENT_CODE_CORRUPTED: u32 = 0;
/// `blksnap_event_code_no_space`: an extension of the v6 interface, with a
/// [`blksnap_event_no_space`] payload.
pub const EVENT_CODE_NO_SPACE: u32 = 1;

/// `struct blksnap_snapshot_events` (an extension of the v6 interface): the
/// event codes a snapshot delivers beyond `corrupted`, bit N for code N.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct blksnap_snapshot_events {
    pub id: blksnap_uuid,
    pub mask: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct blkfilter_name {
    pub name: [u8; BLKFILTER_NAME_LENGTH],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct blkfilter_ctl {
    pub name: [u8; BLKFILTER_NAME_LENGTH],
    pub cmd: u32,
    pub optlen: u32,
    pub opt: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct blksnap_uuid {
    pub b: [u8; 16],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct blksnap_cbtinfo {
    pub device_capacity: u64,
    pub block_size: u32,
    pub block_count: u32,
    pub generation_id: blksnap_uuid,
    pub changes_number: u8,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct blksnap_cbtmap {
    pub offset: u32,
    pub length: u32,
    pub buffer: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct blksnap_sectors {
    pub offset: u64,
    pub count: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct blksnap_cbtdirty {
    pub count: u32,
    pub dirty_sectors: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct blksnap_snapshotadd {
    pub id: blksnap_uuid,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct blksnap_snapshotinfo {
    pub error_code: i32,
    pub image: [u8; IMAGE_DISK_NAME_LEN],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct blksnap_version {
    pub major: u16,
    pub minor: u16,
    pub revision: u16,
    pub build: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct blksnap_snapshot_create {
    pub diff_storage_limit_sect: u64,
    pub diff_storage_fd: u32,
    pub id: blksnap_uuid,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct blksnap_snapshot_collect {
    pub count: u32,
    pub ids: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct blksnap_snapshot_event {
    pub id: blksnap_uuid,
    pub timeout_ms: u32,
    pub code: u32,
    pub time_label: i64,
    pub data: [u8; EVENT_SIZE - 32],
}

impl Default for blksnap_snapshot_event {
    fn default() -> Self {
        Self {
            id: blksnap_uuid::default(),
            timeout_ms: 0,
            code: 0,
            time_label: 0,
            data: [0; EVENT_SIZE - 32],
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct blksnap_event_no_space {
    pub used_sect: u64,
    pub limit_sect: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct blksnap_event_corrupted {
    pub dev_id_mj: u32,
    pub dev_id_mn: u32,
    pub err_code: i32,
}

// ioctl request codes, encoded by nix the way <linux/ioctl.h> does for the
// target architecture.
const fn ior<T>(ty: u8, nr: u8) -> u32 {
    nix::request_code_read!(ty, nr, size_of::<T>()) as u32
}
const fn iow<T>(ty: u8, nr: u8) -> u32 {
    nix::request_code_write!(ty, nr, size_of::<T>()) as u32
}
const fn iowr<T>(ty: u8, nr: u8) -> u32 {
    nix::request_code_readwrite!(ty, nr, size_of::<T>()) as u32
}

pub const IOCTL_BLKSNAP_VERSION: u32 = ior::<blksnap_version>(BLKSNAP_IOCTL_TYPE, nr::VERSION);
pub const IOCTL_BLKSNAP_SNAPSHOT_CREATE: u32 =
    iowr::<blksnap_snapshot_create>(BLKSNAP_IOCTL_TYPE, nr::SNAPSHOT_CREATE);
pub const IOCTL_BLKSNAP_SNAPSHOT_DESTROY: u32 =
    iow::<blksnap_uuid>(BLKSNAP_IOCTL_TYPE, nr::SNAPSHOT_DESTROY);
pub const IOCTL_BLKSNAP_SNAPSHOT_TAKE: u32 =
    iow::<blksnap_uuid>(BLKSNAP_IOCTL_TYPE, nr::SNAPSHOT_TAKE);
pub const IOCTL_BLKSNAP_SNAPSHOT_COLLECT: u32 =
    ior::<blksnap_snapshot_collect>(BLKSNAP_IOCTL_TYPE, nr::SNAPSHOT_COLLECT);
pub const IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT: u32 =
    ior::<blksnap_snapshot_event>(BLKSNAP_IOCTL_TYPE, nr::SNAPSHOT_WAIT_EVENT);
pub const IOCTL_BLKSNAP_SNAPSHOT_EVENTS: u32 =
    iow::<blksnap_snapshot_events>(BLKSNAP_IOCTL_TYPE, nr::SNAPSHOT_EVENTS);
pub const BLKFILTER_ATTACH: u32 = iowr::<blkfilter_name>(BLOCK_IOCTL_TYPE, 140);
pub const BLKFILTER_DETACH: u32 = iowr::<blkfilter_name>(BLOCK_IOCTL_TYPE, 141);
pub const BLKFILTER_CTL: u32 = iowr::<blkfilter_ctl>(BLOCK_IOCTL_TYPE, 142);

// Layout of the v6 ABI. A failure here means the Rust mirror drifted.
const _: () = assert!(size_of::<blkfilter_name>() == 32);
const _: () = assert!(size_of::<blkfilter_ctl>() == 48);
const _: () = assert!(offset_of!(blkfilter_ctl, cmd) == 32);
const _: () = assert!(offset_of!(blkfilter_ctl, optlen) == 36);
const _: () = assert!(offset_of!(blkfilter_ctl, opt) == 40);
const _: () = assert!(size_of::<blksnap_uuid>() == 16);
const _: () = assert!(size_of::<blksnap_cbtinfo>() == 40);
const _: () = assert!(offset_of!(blksnap_cbtinfo, block_size) == 8);
const _: () = assert!(offset_of!(blksnap_cbtinfo, block_count) == 12);
const _: () = assert!(offset_of!(blksnap_cbtinfo, generation_id) == 16);
const _: () = assert!(offset_of!(blksnap_cbtinfo, changes_number) == 32);
const _: () = assert!(size_of::<blksnap_cbtmap>() == 16);
const _: () = assert!(offset_of!(blksnap_cbtmap, length) == 4);
const _: () = assert!(offset_of!(blksnap_cbtmap, buffer) == 8);
const _: () = assert!(size_of::<blksnap_sectors>() == 16);
const _: () = assert!(offset_of!(blksnap_sectors, count) == 8);
const _: () = assert!(size_of::<blksnap_cbtdirty>() == 16);
const _: () = assert!(offset_of!(blksnap_cbtdirty, dirty_sectors) == 8);
const _: () = assert!(size_of::<blksnap_snapshotadd>() == 16);
const _: () = assert!(size_of::<blksnap_snapshotinfo>() == 36);
const _: () = assert!(offset_of!(blksnap_snapshotinfo, image) == 4);
const _: () = assert!(size_of::<blksnap_version>() == 8);
const _: () = assert!(offset_of!(blksnap_version, minor) == 2);
const _: () = assert!(offset_of!(blksnap_version, revision) == 4);
const _: () = assert!(offset_of!(blksnap_version, build) == 6);
const _: () = assert!(size_of::<blksnap_snapshot_create>() == 32);
const _: () = assert!(size_of::<blksnap_snapshot_events>() == 24);
const _: () = assert!(offset_of!(blksnap_snapshot_create, diff_storage_fd) == 8);
const _: () = assert!(offset_of!(blksnap_snapshot_create, id) == 12);
const _: () = assert!(size_of::<blksnap_snapshot_collect>() == 16);
const _: () = assert!(offset_of!(blksnap_snapshot_collect, ids) == 8);
const _: () = assert!(size_of::<blksnap_snapshot_event>() == 4096);
const _: () = assert!(offset_of!(blksnap_snapshot_event, timeout_ms) == 16);
const _: () = assert!(offset_of!(blksnap_snapshot_event, code) == 20);
const _: () = assert!(offset_of!(blksnap_snapshot_event, time_label) == 24);
const _: () = assert!(offset_of!(blksnap_snapshot_event, data) == 32);
const _: () = assert!(size_of::<blksnap_event_corrupted>() == 12);
const _: () = assert!(size_of::<blksnap_event_no_space>() == 16);
const _: () = assert!(offset_of!(blksnap_event_corrupted, dev_id_mn) == 4);
const _: () = assert!(offset_of!(blksnap_event_corrupted, err_code) == 8);

// The request codes of the v6 ABI on the generic ioctl layout (x86_64,
// aarch64, riscv64). powerpc encodes the direction differently.
#[cfg(not(any(
    target_arch = "powerpc64",
    target_arch = "mips64",
    target_arch = "sparc64"
)))]
const _: () = {
    assert!(IOCTL_BLKSNAP_VERSION == 0x8008_5600);
    assert!(IOCTL_BLKSNAP_SNAPSHOT_CREATE == 0xc020_5601);
    assert!(IOCTL_BLKSNAP_SNAPSHOT_DESTROY == 0x4010_5602);
    assert!(IOCTL_BLKSNAP_SNAPSHOT_TAKE == 0x4010_5603);
    assert!(IOCTL_BLKSNAP_SNAPSHOT_COLLECT == 0x8010_5604);
    assert!(IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT == 0x9000_5605);
    assert!(IOCTL_BLKSNAP_SNAPSHOT_EVENTS == 0x4018_5606);
    assert!(BLKFILTER_ATTACH == 0xc020_128c);
    assert!(BLKFILTER_DETACH == 0xc020_128d);
    assert!(BLKFILTER_CTL == 0xc030_128e);
};

/// Builds a NUL-padded filter name buffer.
pub const fn filter_name_bytes(name: &str) -> [u8; BLKFILTER_NAME_LENGTH] {
    let src = name.as_bytes();
    assert!(src.len() <= BLKFILTER_NAME_LENGTH);
    let mut out = [0u8; BLKFILTER_NAME_LENGTH];
    let mut i = 0;
    while i < src.len() {
        out[i] = src[i];
        i += 1;
    }
    out
}
