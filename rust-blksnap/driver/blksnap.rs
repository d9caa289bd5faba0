// SPDX-License-Identifier: GPL-2.0

//! blksnap: block device snapshots and changed-block tracking.
//!
//! The "blksnap" block device filter keeps, for each device it is attached to, a map of the
//! blocks changed since tracking started (see `cbt`). The control device `/dev/blksnap-control`
//! is the entry point for snapshots. The user interface is `include/uapi/linux/blksnap.h`.

use kernel::{
    block::filter,
    miscdevice::{MiscDeviceOptions, MiscDeviceRegistration},
    prelude::*,
};

mod cbt;
mod control;
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

#[pin_data]
struct Blksnap {
    _filter: filter::Registration<tracker::Tracker>,
    #[pin]
    _control: MiscDeviceRegistration<control::Control>,
}

impl kernel::InPlaceModule for Blksnap {
    fn init(module: &'static ThisModule) -> impl PinInit<Self, Error> {
        pr_info!("tracking block parameters: {:?}\n", tracking_params());
        try_pin_init!(Self {
            _filter: filter::Registration::register(module)?,
            _control <- MiscDeviceRegistration::register(MiscDeviceOptions {
                name: uapi::CONTROL_NAME,
            }),
        })
    }
}
