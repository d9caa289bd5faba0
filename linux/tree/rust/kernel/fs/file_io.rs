// SPDX-License-Identifier: GPL-2.0

//! In-kernel file I/O.
