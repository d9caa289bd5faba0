//! Physical extents of a file, through the FS_IOC_FIEMAP ioctl, to mark the
//! blocks of a file as changed.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::api::{SectorRange, SECTOR_SIZE};
use crate::error::{Error, Result};

const FIEMAP_FLAG_SYNC: u32 = 0x1;
const FIEMAP_EXTENT_LAST: u32 = 0x1;
/// Flags meaning the extent has no usable location on the device.
const FIEMAP_EXTENT_NO_LOCATION: u32 = 0x2 // UNKNOWN
    | 0x4 // DELALLOC
    | 0x8 // ENCODED
    | 0x200 // DATA_INLINE
    | 0x400; // DATA_TAIL

const BATCH: usize = 128;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FiemapExtent {
    logical: u64,
    physical: u64,
    length: u64,
    reserved64: [u64; 2],
    flags: u32,
    reserved: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FiemapHeader {
    start: u64,
    length: u64,
    flags: u32,
    mapped_extents: u32,
    extent_count: u32,
    reserved: u32,
}

#[repr(C)]
struct Fiemap {
    header: FiemapHeader,
    extents: [FiemapExtent; BATCH],
}

const _: () = assert!(core::mem::size_of::<FiemapHeader>() == 32);
const _: () = assert!(core::mem::size_of::<FiemapExtent>() == 56);
const _: () = assert!(core::mem::offset_of!(Fiemap, extents) == 32);

const FS_IOC_FIEMAP: u32 =
    nix::request_code_readwrite!(b'f', 11, core::mem::size_of::<FiemapHeader>()) as u32;
nix::ioctl_readwrite_bad!(fs_ioc_fiemap, FS_IOC_FIEMAP, Fiemap);

/// A file's data extents on its device, in sectors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileExtents {
    /// Device the file system lives on (st_dev).
    pub dev: u64,
    pub ranges: Vec<SectorRange>,
}

/// Maps the whole of `path` to sector ranges of its file system's device.
pub fn file_extents(path: &Path) -> Result<FileExtents> {
    let file = File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
    if !meta.is_file() {
        return Err(Error::Invalid(format!(
            "{}: not a regular file",
            path.display()
        )));
    }
    let mut ranges: Vec<SectorRange> = Vec::new();
    let mut start = 0u64;
    let mut map = Box::new(Fiemap {
        header: FiemapHeader::default(),
        extents: [FiemapExtent::default(); BATCH],
    });
    'outer: loop {
        map.header = FiemapHeader {
            start,
            length: u64::MAX - start,
            flags: FIEMAP_FLAG_SYNC,
            mapped_extents: 0,
            extent_count: BATCH as u32,
            reserved: 0,
        };
        // SAFETY: `map` is a header followed by `extent_count` extents.
        unsafe { fs_ioc_fiemap(file.as_raw_fd(), &mut *map) }.map_err(|errno| Error::Ioctl {
            op: "FIEMAP",
            target: path.display().to_string(),
            errno,
        })?;
        let n = map.header.mapped_extents as usize;
        if n == 0 {
            break;
        }
        for e in &map.extents[..n.min(BATCH)] {
            if e.flags & FIEMAP_EXTENT_NO_LOCATION != 0 {
                return Err(Error::Invalid(format!(
                    "{}: extent at file offset {} has no fixed place on the device \
                     (flags {:#x})",
                    path.display(),
                    e.logical,
                    e.flags
                )));
            }
            let first = e.physical / SECTOR_SIZE;
            let end = (e.physical + e.length).div_ceil(SECTOR_SIZE);
            match ranges.last_mut() {
                Some(r) if r.offset + r.count == first => r.count += end - first,
                _ => ranges.push(SectorRange {
                    offset: first,
                    count: end - first,
                }),
            }
            start = e.logical + e.length;
            if e.flags & FIEMAP_EXTENT_LAST != 0 {
                break 'outer;
            }
        }
    }
    Ok(FileExtents {
        dev: std::os::unix::fs::MetadataExt::dev(&meta),
        ranges,
    })
}
