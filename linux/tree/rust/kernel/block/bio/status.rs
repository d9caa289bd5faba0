// SPDX-License-Identifier: GPL-2.0

//! The status of a completed I/O.
//!
//! C header: [`include/linux/blk_types.h`](srctree/include/linux/blk_types.h)

use crate::{bindings, error::to_result, prelude::*};

/// The status of a completed I/O, `blk_status_t` in C.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status(bindings::blk_status_t);

impl Status {
    /// The I/O succeeded.
    pub const OK: Self = Self(bindings::BLK_STS_OK as bindings::blk_status_t);

    /// Returns the status that stands for `err` (`errno_to_blk_status()`); errors without a
    /// status of their own become the generic I/O error.
    pub fn from_error(err: Error) -> Self {
        // SAFETY: `errno_to_blk_status` only computes a value.
        Self(unsafe { bindings::errno_to_blk_status(err.to_errno()) })
    }

    /// Returns `Ok(())` for [`Status::OK`], the error the status stands for otherwise
    /// (`blk_status_to_errno()`).
    pub fn to_result(self) -> Result {
        // SAFETY: `blk_status_to_errno` only computes a value.
        to_result(unsafe { bindings::blk_status_to_errno(self.0) })
    }

    /// Returns whether the status is [`Status::OK`].
    pub fn is_ok(self) -> bool {
        self == Self::OK
    }

    /// Makes a status from the raw `blk_status_t` of a bio.
    pub(super) fn from_raw(status: bindings::blk_status_t) -> Self {
        Self(status)
    }

    /// Returns the raw `blk_status_t`.
    pub fn as_raw(self) -> bindings::blk_status_t {
        self.0
    }
}
