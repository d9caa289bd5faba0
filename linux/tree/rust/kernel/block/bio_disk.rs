// SPDX-License-Identifier: GPL-2.0

//! Bio-based disks.
