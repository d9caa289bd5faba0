// SPDX-License-Identifier: GPL-2.0

//! blksnap: block device snapshots and changed-block tracking.
//!
//! The "blksnap" block device filter keeps, for each device it is attached to, a map of the
//! blocks changed since tracking started (see `cbt`), and does the copy-on-write of the device
//! while a snapshot of it is taken (see `diff_area`). The control device `/dev/blksnap-control`
//! creates, takes and destroys snapshots (see `snapshot`), whose images are disks of their own
//! (see `image`). The user interface is `include/uapi/linux/blksnap.h`.

use kernel::{
    block::filter,
    miscdevice::{MiscDeviceOptions, MiscDeviceRegistration},
    prelude::*,
};

mod blkio;
mod cbt;
mod chunk;
mod control;
mod diff_area;
mod diff_storage;
mod event;
mod image;
mod snapshot;
mod tracker;
mod uapi;

module! {
    type: Blksnap,
    name: "blksnap",
    authors: ["blksnap fork"],
    description: "Block device snapshots and changed-block tracking",
    license: "GPL",
    params: {
        tracking_block_minimum_shift: u32 {
            default: 16,
            description: "log2 of the smallest tracking block size, in bytes",
        },
        tracking_block_maximum_count: u32 {
            default: 2097152,
            description: "Number of tracking blocks above which the block size grows",
        },
        tracking_block_maximum_shift: u32 {
            default: 26,
            description: "log2 of the largest tracking block size, in bytes",
        },
        chunk_minimum_shift: u32 {
            default: 18,
            description: "log2 of the smallest copy-on-write chunk size, in bytes",
        },
        chunk_maximum_count: u32 {
            default: 2097152,
            description: "Number of chunks above which the chunk size grows",
        },
        chunk_maximum_shift: u32 {
            default: 26,
            description: "log2 of the largest copy-on-write chunk size, in bytes",
        },
        chunk_maximum_in_queue: u32 {
            default: 16,
            description: "Chunks of a device kept in memory for copy-on-write, at most",
        },
        free_diff_buffer_pool_size: u32 {
            default: 128,
            description: "Chunk buffers kept for reuse (v6 compatibility; not used, see docs)",
        },
        diff_storage_minimum: u32 {
            default: 2097152,
            description: "Sectors by which a file difference storage grows while it is used",
        },
    },
}

/// The block size parameters, as given on the kernel command line, brought into range.
fn tracking_params() -> cbt::Params {
    cbt::Params::new(
        module_parameters::tracking_block_minimum_shift.value(),
        module_parameters::tracking_block_maximum_count.value(),
        module_parameters::tracking_block_maximum_shift.value(),
    )
}

/// The chunk size parameters, as given on the kernel command line, brought into range.
fn chunk_params() -> chunk::Params {
    chunk::Params::new(
        module_parameters::chunk_minimum_shift.value(),
        u64::from(module_parameters::chunk_maximum_count.value()),
        module_parameters::chunk_maximum_shift.value(),
    )
}

/// The growth step of a file difference storage, in bytes (at least one 4 KiB page).
fn storage_step() -> u64 {
    (u64::from(module_parameters::diff_storage_minimum.value()) << 9).max(4096)
}

#[pin_data]
struct Blksnap {
    _registry: (),
    #[pin]
    _control: MiscDeviceRegistration<control::Control>,
    /// Registered last: no filter can be attached before the rest is ready.
    #[pin]
    _filter: filter::Registration<tracker::Tracker>,
}

impl kernel::InPlaceModule for Blksnap {
    fn init(module: &'static ThisModule) -> impl PinInit<Self, Error> {
        pr_info!("tracking block parameters: {:?}\n", tracking_params());
        pr_info!(
            "chunk parameters: {:?}, in queue {}, buffer pool {}, storage step {} sectors\n",
            chunk_params(),
            module_parameters::chunk_maximum_in_queue.value(),
            module_parameters::free_diff_buffer_pool_size.value(),
            module_parameters::diff_storage_minimum.value()
        );
        try_pin_init!(Self {
            // The module wires the filter to the snapshots: the filter calls no module above it.
            _registry: tracker::set_add_to_snapshot(snapshot::add).and_then(|()| snapshot::init(
                chunk_params(),
                storage_step(),
                module_parameters::chunk_maximum_in_queue.value() as usize,
            ))?,
            _control <- MiscDeviceRegistration::register(MiscDeviceOptions {
                name: uapi::CONTROL_NAME,
            }),
            _filter <- filter::Registration::register(module),
        })
    }
}
