// SPDX-License-Identifier: GPL-2.0

//! The control device, `/dev/blksnap-control`.

use crate::uapi;
use core::mem::size_of;
use kernel::{
    fs::File,
    miscdevice::{MiscDevice, MiscDeviceRegistration},
    prelude::*,
    uaccess::UserSlice,
};

/// The version of the interface: that of the blksnap v6 kernel module.
const VERSION: uapi::Version = uapi::Version {
    major: 2,
    minor: 0,
    revision: 0,
    build: 0,
};

/// An open file of the control device; it has no state of its own.
pub(crate) struct Control;

#[vtable]
impl MiscDevice for Control {
    type Ptr = ();

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result {
        Ok(())
    }

    fn ioctl(_device: (), _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            uapi::IOCTL_VERSION => {
                let out = UserSlice::new(UserPtr::from_addr(arg), size_of::<uapi::Version>());
                out.writer().write(&VERSION)?;
                Ok(0)
            }
            uapi::IOCTL_SNAPSHOT_CREATE
            | uapi::IOCTL_SNAPSHOT_DESTROY
            | uapi::IOCTL_SNAPSHOT_TAKE
            | uapi::IOCTL_SNAPSHOT_COLLECT
            | uapi::IOCTL_SNAPSHOT_WAIT_EVENT => Err(EOPNOTSUPP),
            _ => Err(ENOTTY),
        }
    }
}
