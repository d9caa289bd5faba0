// SPDX-License-Identifier: GPL-2.0

//! The control device, `/dev/blksnap-control`: the snapshot ioctls.

use crate::{snapshot, uapi};
use core::mem::size_of;
use kernel::{
    fs::File,
    miscdevice::{MiscDevice, MiscDeviceRegistration},
    prelude::*,
    uaccess::{UserSlice, UserSliceReader},
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

/// The user-space argument of an ioctl, of type `T`.
fn arg<T>(arg: usize) -> UserSlice {
    UserSlice::new(UserPtr::from_addr(arg), size_of::<T>())
}

fn read_uuid(reader: UserSliceReader) -> Result<uapi::Uuid> {
    let mut id = [0u8; 16];
    let mut reader = reader;
    reader.read_slice(&mut id)?;
    Ok(id)
}

fn create(arg_addr: usize) -> Result<isize> {
    let (reader, mut writer) = arg::<uapi::SnapshotCreate>(arg_addr).reader_writer();
    let mut reader = reader;
    let mut req: uapi::SnapshotCreate = reader.read()?;
    req.id = snapshot::create(req.diff_storage_fd, req.diff_storage_limit_sect)?;
    if let Err(err) = writer.write(&req) {
        // User space cannot learn the id: do not leave a snapshot behind that nobody knows.
        let _ = snapshot::destroy(&req.id);
        return Err(err);
    }
    Ok(0)
}

fn collect(arg_addr: usize) -> Result<isize> {
    let (reader, mut writer) = arg::<uapi::SnapshotCollect>(arg_addr).reader_writer();
    let mut reader = reader;
    let mut req: uapi::SnapshotCollect = reader.read()?;
    let ids = snapshot::collect()?;
    let count = u32::try_from(ids.len()).map_err(|_| EOVERFLOW)?;
    if req.count == 0 {
        req.count = count;
        writer.write(&req)?;
        return Ok(0);
    }
    if req.count < count {
        req.count = count;
        writer.write(&req)?;
        return Err(ENODATA);
    }
    let addr = usize::try_from(req.ids).map_err(|_| EFAULT)?;
    let mut out = UserSlice::new(UserPtr::from_addr(addr), ids.len() * 16).writer();
    for id in ids.iter() {
        out.write_slice(id)?;
    }
    req.count = count;
    writer.write(&req)?;
    Ok(0)
}

fn wait_event(arg_addr: usize) -> Result<isize> {
    let (reader, mut writer) = arg::<uapi::SnapshotEvent>(arg_addr).reader_writer();
    let mut reader = reader;
    // The header only: the payload is output.
    let mut id = [0u8; 16];
    reader.read_slice(&mut id)?;
    let timeout_ms: u32 = reader.read()?;
    let event = snapshot::wait_event(&id, timeout_ms)?;
    let mut out = KBox::new(
        uapi::SnapshotEvent {
            id,
            timeout_ms,
            code: event.code,
            time_label: event.time,
            data: [0; uapi::EVENT_DATA_LEN],
        },
        GFP_KERNEL,
    )?;
    out.data[..event.len].copy_from_slice(&event.data[..event.len]);
    writer.write(&*out)?;
    Ok(0)
}

#[vtable]
impl MiscDevice for Control {
    type Ptr = ();

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result {
        Ok(())
    }

    fn ioctl(_device: (), _file: &File, cmd: u32, arg_addr: usize) -> Result<isize> {
        match cmd {
            uapi::IOCTL_VERSION => {
                arg::<uapi::Version>(arg_addr).writer().write(&VERSION)?;
                Ok(0)
            }
            uapi::IOCTL_SNAPSHOT_CREATE => create(arg_addr),
            uapi::IOCTL_SNAPSHOT_DESTROY => {
                let id = read_uuid(arg::<uapi::Uuid>(arg_addr).reader())?;
                snapshot::destroy(&id)?;
                Ok(0)
            }
            uapi::IOCTL_SNAPSHOT_TAKE => {
                let id = read_uuid(arg::<uapi::Uuid>(arg_addr).reader())?;
                snapshot::take(&id)?;
                Ok(0)
            }
            uapi::IOCTL_SNAPSHOT_COLLECT => collect(arg_addr),
            uapi::IOCTL_SNAPSHOT_WAIT_EVENT => wait_event(arg_addr),
            uapi::IOCTL_SNAPSHOT_EVENTS => {
                let req: uapi::SnapshotEvents =
                    arg::<uapi::SnapshotEvents>(arg_addr).reader().read()?;
                snapshot::want_events(&req.id, req.mask)?;
                Ok(0)
            }
            _ => Err(ENOTTY),
        }
    }
}
