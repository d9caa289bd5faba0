// SPDX-License-Identifier: GPL-2.0

//! The "blksnap" block device filter: the change tracker of a device and its `BLKFILTER_CTL`
//! commands.

use crate::{
    cbt::{Cbt, Geometry},
    uapi::{self, ctl},
};
use core::mem::size_of;
use kernel::{
    block::{
        bdev::{BlockDevice, DevT},
        bio::{Bio, Operation},
        filter::{CtlBuffer, Filter, Operations},
    },
    prelude::*,
    uaccess::UserSlice,
};

/// The state of the filter on one block device.
#[pin_data(PinnedDrop)]
pub(crate) struct Tracker {
    dev: DevT,
    #[pin]
    cbt: Cbt,
}

/// The operations of the filter type.
static OPERATIONS: Operations<Tracker> = Operations::new();

/// Converts a user-space address passed in a 64-bit field.
fn user_addr(addr: u64) -> Result<UserPtr> {
    Ok(UserPtr::from_addr(
        usize::try_from(addr).map_err(|_| EFAULT)?,
    ))
}

impl Tracker {
    fn cbtinfo(&self, buf: &mut CtlBuffer<'_>) -> Result<u32> {
        let info = self.cbt.info();
        buf.write(&uapi::CbtInfo {
            device_capacity: info.geometry.capacity_bytes(),
            block_size: info.geometry.block_size(),
            block_count: info.geometry.block_count(),
            generation_id: info.generation,
            changes_number: info.changes_number,
            padding: [0; 7],
        })?;
        Ok(0)
    }

    fn cbtmap(&self, buf: &mut CtlBuffer<'_>) -> Result<u32> {
        let arg: uapi::CbtMap = buf.read()?;
        let out = UserSlice::new(user_addr(arg.buffer)?, arg.length as usize);
        let mut out = out.writer();
        self.cbt
            .read_map(arg.offset, arg.length, &mut |piece| out.write_slice(piece))
    }

    fn cbtdirty(&self, buf: &mut CtlBuffer<'_>) -> Result<u32> {
        let arg: uapi::CbtDirty = buf.read()?;
        let len = (arg.count as usize)
            .checked_mul(size_of::<uapi::Sectors>())
            .ok_or(EINVAL)?;
        let mut ranges = UserSlice::new(user_addr(arg.dirty_sectors)?, len).reader();
        for _ in 0..arg.count {
            let range: uapi::Sectors = ranges.read()?;
            self.cbt.mark_dirty(range.offset, range.count);
        }
        Ok(0)
    }
}

#[vtable]
impl Filter for Tracker {
    const NAME: &'static CStr = uapi::FILTER_NAME;

    fn operations() -> &'static Operations<Self> {
        &OPERATIONS
    }

    fn attach(bdev: &BlockDevice) -> impl PinInit<Self, Error> {
        let dev = bdev.dev();
        let params = crate::tracking_params();
        let cbt = Geometry::new(bdev.nr_sectors(), &params).and_then(|geometry| {
            pr_info!(
                "{}: {} tracking blocks of {} bytes, change map of {} bytes\n",
                dev,
                geometry.block_count(),
                geometry.block_size(),
                geometry.block_count()
            );
            Cbt::new(geometry)
        });
        try_pin_init!(Self {
            dev,
            cbt <- cbt?,
        })
    }

    fn ctl(&self, cmd: u32, buf: &mut CtlBuffer<'_>) -> Result<u32> {
        match cmd {
            ctl::CBTINFO => self.cbtinfo(buf),
            ctl::CBTMAP => self.cbtmap(buf),
            ctl::CBTDIRTY => self.cbtdirty(buf),
            ctl::SNAPSHOTADD | ctl::SNAPSHOTINFO => Err(EOPNOTSUPP),
            _ => Err(ENOTTY),
        }
    }

    fn submit_bio(&self, bio: &Bio) -> bool {
        match bio.op() {
            Operation::Write
            | Operation::Discard
            | Operation::WriteZeroes
            | Operation::SecureErase => {
                self.cbt.mark(bio.sector(), u64::from(bio.sectors()));
            }
            _ => {}
        }
        false
    }
}

#[pinned_drop]
impl PinnedDrop for Tracker {
    fn drop(self: Pin<&mut Self>) {
        pr_info!("{}: tracking stopped\n", self.dev);
    }
}
