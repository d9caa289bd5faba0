//! User-space access to blksnap, the block device snapshot and changed-block
//! tracking interface of the kernel, and a backup engine built on it.
//!
//! - [`uapi`]: the binary interface (`#[repr(C)]` structures, ioctl codes);
//! - [`api`]: the interface as traits, with typed values;
//! - [`sys`]: the implementation on the running kernel;
//! - `fake` (feature `fake`): an in-memory model of the kernel for tests;
//! - [`backup`] and [`manifest`]: full and incremental backups, restore and
//!   verification;
//! - [`fiemap`]: the disk extents of a file, to mark them dirty;
//! - [`state`]: the snapshots this tool made and their owners;
//! - [`storage`]: the difference storage of a snapshot;
//! - [`identity`]: the host and stable device identities of a backup.

pub mod api;
pub mod backup;
pub mod error;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod fiemap;
pub mod identity;
pub mod manifest;
pub mod state;
pub mod storage;
pub mod sys;
#[allow(non_camel_case_types)]
pub mod uapi;
pub mod util;

pub use api::{Blksnap, TrackedDevice};
pub use error::{Error, Result};
