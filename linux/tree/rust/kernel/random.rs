// SPDX-License-Identifier: GPL-2.0

//! Random numbers from the kernel's cryptographically secure generator.
//!
//! C headers: [`include/linux/random.h`](srctree/include/linux/random.h) and
//! [`include/linux/uuid.h`](srctree/include/linux/uuid.h).
//!
//! # Examples
//!
//! ```
//! use kernel::random;
//!
//! let mut key = [0u8; 32];
//! random::fill_bytes(&mut key);
//!
//! let id = random::uuid_v4();
//! // A random (version 4) UUID of the RFC 4122 variant.
//! assert_eq!(id[6] >> 4, 4);
//! assert_eq!(id[8] & 0xc0, 0x80);
//! ```

use crate::bindings;

/// Fills `buf` with random bytes.
///
/// Never blocks; early in boot, before the generator is fully seeded, the bytes are of lower
/// quality, as with the C `get_random_bytes()`.
pub fn fill_bytes(buf: &mut [u8]) {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the call.
    unsafe { bindings::get_random_bytes(buf.as_mut_ptr().cast(), buf.len()) };
}

/// Returns a new random UUID (RFC 4122 version 4), in RFC 4122 byte order.
///
/// ```
/// let a = kernel::random::uuid_v4();
/// let b = kernel::random::uuid_v4();
/// assert_ne!(a, b);
/// ```
pub fn uuid_v4() -> [u8; 16] {
    let mut id = [0u8; 16];
    // SAFETY: `id` is valid for writes of the 16 bytes `generate_random_uuid()` fills.
    unsafe { bindings::generate_random_uuid(id.as_mut_ptr()) };
    id
}
