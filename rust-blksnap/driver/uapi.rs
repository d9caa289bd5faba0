// SPDX-License-Identifier: GPL-2.0

//! The structures and numbers of `include/uapi/linux/blksnap.h`, laid out byte for byte.
//!
//! Implicit padding of the C structures is spelled out as explicit fields, so that every byte
//! copied to user space is initialized.

use core::mem::{offset_of, size_of};
use kernel::{
    ioctl::{_IOR, _IOW, _IOWR},
    prelude::*,
};

/// Name of the filter, for `BLKFILTER_ATTACH`, `BLKFILTER_DETACH` and `BLKFILTER_CTL`.
pub(crate) const FILTER_NAME: &CStr = c"blksnap";
/// Name of the control device, under `/dev`.
pub(crate) const CONTROL_NAME: &CStr = c"blksnap-control";

/// The `BLKFILTER_CTL` commands of the filter (`enum blkfilter_ctl_blksnap`).
pub(crate) mod ctl {
    pub(crate) const CBTINFO: u32 = 0;
    pub(crate) const CBTMAP: u32 = 1;
    pub(crate) const CBTDIRTY: u32 = 2;
    pub(crate) const SNAPSHOTADD: u32 = 3;
    pub(crate) const SNAPSHOTINFO: u32 = 4;
}

kernel::plain_struct! {
    /// `struct blksnap_cbtinfo`.
    pub(crate) struct CbtInfo {
        pub(crate) device_capacity: u64,
        pub(crate) block_size: u32,
        pub(crate) block_count: u32,
        pub(crate) generation_id: [u8; 16],
        pub(crate) changes_number: u8,
        pub(crate) padding: [u8; 7],
    }
}

kernel::plain_struct! {
    /// `struct blksnap_cbtmap`.
    pub(crate) struct CbtMap {
        pub(crate) offset: u32,
        pub(crate) length: u32,
        pub(crate) buffer: u64,
    }
}

kernel::plain_struct! {
    /// `struct blksnap_sectors`.
    pub(crate) struct Sectors {
        pub(crate) offset: u64,
        pub(crate) count: u64,
    }
}

kernel::plain_struct! {
    /// `struct blksnap_cbtdirty`.
    pub(crate) struct CbtDirty {
        pub(crate) count: u32,
        pub(crate) padding: u32,
        pub(crate) dirty_sectors: u64,
    }
}

kernel::plain_struct! {
    /// `struct blksnap_version`.
    pub(crate) struct Version {
        pub(crate) major: u16,
        pub(crate) minor: u16,
        pub(crate) revision: u16,
        pub(crate) build: u16,
    }
}

/// `struct blksnap_uuid`.
pub(crate) type Uuid = [u8; 16];

kernel::plain_struct! {
    /// `struct blksnap_snapshotadd`.
    pub(crate) struct SnapshotAdd {
        pub(crate) id: Uuid,
    }
}

/// Size of `struct blksnap_snapshotinfo.image`.
pub(crate) const IMAGE_DISK_NAME_LEN: usize = 32;

kernel::plain_struct! {
    /// `struct blksnap_snapshotinfo`.
    pub(crate) struct SnapshotInfo {
        pub(crate) error_code: i32,
        pub(crate) image: [u8; IMAGE_DISK_NAME_LEN],
    }
}

kernel::plain_struct! {
    /// `struct blksnap_snapshot_create`.
    pub(crate) struct SnapshotCreate {
        pub(crate) diff_storage_limit_sect: u64,
        pub(crate) diff_storage_fd: u32,
        pub(crate) id: Uuid,
        pub(crate) padding: [u8; 4],
    }
}

kernel::plain_struct! {
    /// `struct blksnap_snapshot_collect`.
    pub(crate) struct SnapshotCollect {
        pub(crate) count: u32,
        pub(crate) padding: u32,
        pub(crate) ids: u64,
    }
}

/// Size of the payload of `struct blksnap_snapshot_event`.
pub(crate) const EVENT_DATA_LEN: usize = 4096 - 32;

kernel::plain_struct! {
    /// `struct blksnap_snapshot_event`.
    pub(crate) struct SnapshotEvent {
        pub(crate) id: Uuid,
        pub(crate) timeout_ms: u32,
        pub(crate) code: u32,
        pub(crate) time_label: i64,
        pub(crate) data: [u8; EVENT_DATA_LEN],
    }
}

/// `enum blksnap_event_codes`: the snapshot image of a device became unusable.
pub(crate) const EVENT_CODE_CORRUPTED: u32 = 0;

/// `enum blksnap_event_codes`: the difference storage cannot grow any more and is low on space
/// (an extension of the v6 interface).
pub(crate) const EVENT_CODE_NO_SPACE: u32 = 1;

kernel::plain_struct! {
    /// `struct blksnap_event_corrupted`.
    pub(crate) struct EventCorrupted {
        pub(crate) dev_id_mj: u32,
        pub(crate) dev_id_mn: u32,
        pub(crate) err_code: i32,
    }
}

kernel::plain_struct! {
    /// `struct blksnap_event_no_space` (an extension of the v6 interface).
    pub(crate) struct EventNoSpace {
        pub(crate) used_sect: u64,
        pub(crate) limit_sect: u64,
    }
}

kernel::plain_struct! {
    /// `struct blksnap_snapshot_events` (an extension of the v6 interface): the event codes a
    /// client wants beyond `corrupted`, one bit per code.
    pub(crate) struct SnapshotEvents {
        pub(crate) id: Uuid,
        pub(crate) mask: u64,
    }
}

/// The event codes that [`IOCTL_SNAPSHOT_EVENTS`] may ask for: `corrupted` (always delivered)
/// and `no_space`.
pub(crate) const EVENT_MASK_KNOWN: u64 = (1 << EVENT_CODE_CORRUPTED) | (1 << EVENT_CODE_NO_SPACE);

/// ioctl type code of the control device.
const BLKSNAP: u32 = b'V' as u32;

pub(crate) const IOCTL_VERSION: u32 = _IOR::<Version>(BLKSNAP, 0);
pub(crate) const IOCTL_SNAPSHOT_CREATE: u32 = _IOWR::<SnapshotCreate>(BLKSNAP, 1);
pub(crate) const IOCTL_SNAPSHOT_DESTROY: u32 = _IOW::<Uuid>(BLKSNAP, 2);
pub(crate) const IOCTL_SNAPSHOT_TAKE: u32 = _IOW::<Uuid>(BLKSNAP, 3);
pub(crate) const IOCTL_SNAPSHOT_COLLECT: u32 = _IOR::<SnapshotCollect>(BLKSNAP, 4);
pub(crate) const IOCTL_SNAPSHOT_WAIT_EVENT: u32 = _IOR::<SnapshotEvent>(BLKSNAP, 5);
/// An extension of the v6 interface: the events a snapshot delivers beyond `corrupted`.
pub(crate) const IOCTL_SNAPSHOT_EVENTS: u32 = _IOW::<SnapshotEvents>(BLKSNAP, 6);

// The layout of the v6 interface.
static_assert!(size_of::<CbtInfo>() == 40);
static_assert!(offset_of!(CbtInfo, changes_number) == 32);
static_assert!(size_of::<CbtMap>() == 16);
static_assert!(size_of::<Sectors>() == 16);
static_assert!(size_of::<CbtDirty>() == 16);
static_assert!(offset_of!(CbtDirty, dirty_sectors) == 8);
static_assert!(size_of::<Version>() == 8);
static_assert!(size_of::<SnapshotAdd>() == 16);
static_assert!(size_of::<SnapshotInfo>() == 36);
static_assert!(size_of::<SnapshotCreate>() == 32);
static_assert!(offset_of!(SnapshotCreate, id) == 12);
static_assert!(size_of::<SnapshotCollect>() == 16);
static_assert!(offset_of!(SnapshotCollect, ids) == 8);
static_assert!(size_of::<SnapshotEvent>() == 4096);
static_assert!(offset_of!(SnapshotEvent, data) == 32);
static_assert!(size_of::<EventCorrupted>() == 12);
static_assert!(size_of::<EventNoSpace>() == 16);
static_assert!(size_of::<SnapshotEvents>() == 24);
// The ioctl numbers of the v6 interface in the generic `_IOC` encoding
// (x86, arm64, riscv, ...). powerpc, mips, sparc and alpha place the
// direction bits differently, so their numbers differ by design there.
#[cfg(CONFIG_X86)]
mod generic_ioc_numbers {
    use super::*;
    static_assert!(IOCTL_VERSION == 0x80085600);
    static_assert!(IOCTL_SNAPSHOT_CREATE == 0xc0205601);
    static_assert!(IOCTL_SNAPSHOT_DESTROY == 0x40105602);
    static_assert!(IOCTL_SNAPSHOT_TAKE == 0x40105603);
    static_assert!(IOCTL_SNAPSHOT_COLLECT == 0x80105604);
    static_assert!(IOCTL_SNAPSHOT_WAIT_EVENT == 0x90005605);
}
