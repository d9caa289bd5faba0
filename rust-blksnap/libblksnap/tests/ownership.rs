//! Whose snapshot and whose backup: stale snapshots of killed runs, the
//! host and device identity of a backup, a repository on the device being
//! backed up.

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

use libblksnap::api::{Blksnap, TrackedDevice};
use libblksnap::backup::{self, BackupReport, BackupRequest, Choice, NoProgress, Progress};
use libblksnap::fake::FakeKernel;
use libblksnap::identity::HostRecord;
use libblksnap::manifest::BackupKind;
use libblksnap::state::{self, RecordedDevice, SnapshotRecord, StateDir};
use libblksnap::Error;

struct Env {
    dir: tempfile::TempDir,
    storage: std::fs::File,
    stop: AtomicBool,
    state: StateDir,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("run"));
        Self {
            dir,
            storage: tempfile::tempfile().unwrap(),
            stop: AtomicBool::new(false),
            state,
        }
    }
    fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }
    fn run_as(
        &self,
        k: &FakeKernel,
        dev: &str,
        host: Option<&HostRecord>,
        progress: &dyn Progress,
    ) -> Result<BackupReport, Error> {
        let req = BackupRequest {
            host: host.cloned(),
            state: Some(&self.state),
            ..BackupRequest::new(
                vec![PathBuf::from(dev)],
                self.repo(),
                self.storage.as_fd(),
                1 << 20,
                &self.stop,
            )
        };
        backup::backup(k, &req, progress)
    }
    fn restore(&self, device: &str, host: Option<&str>) -> Result<Vec<u8>, Error> {
        let out = self.dir.path().join("restored.img");
        let choice = Choice {
            device,
            host,
            set: None,
        };
        backup::restore_from(&self.repo(), &choice, &out, true, &self.stop, &NoProgress)?;
        Ok(std::fs::read(out).unwrap())
    }
}

fn disk(name: &str) -> FakeKernel {
    let k = FakeKernel::new(4096);
    k.add_disk(format!("/dev/{name}"), name, 1, 16 * 4096);
    k
}

/// A pid that no process has (a child that has exited).
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    assert!(state::process_start(pid).is_none());
    pid
}

/// The state a killed `blksnap backup` leaves: a snapshot holding the
/// device, and its state file naming a process that is gone.
fn killed_run(k: &FakeKernel, st: &StateDir, dev: &str) -> uuid::Uuid {
    let storage = tempfile::tempfile().unwrap();
    let d = k.open_device(Path::new(dev)).unwrap();
    d.attach().unwrap();
    let id = k.snapshot_create(storage.as_fd(), 1 << 20).unwrap();
    d.snapshot_add(&id).unwrap();
    k.snapshot_take(&id).unwrap();
    let mut rec = SnapshotRecord::new(
        id,
        dead_pid(),
        "backup",
        vec![RecordedDevice {
            path: dev.into(),
            name: d.identity().name.clone(),
        }],
    );
    rec.pid_start = Some(1);
    st.record(&rec).unwrap();
    id
}

#[test]
fn a_stale_snapshot_is_named_in_the_error_and_destroyed_with_stale() {
    let env = Env::new();
    let k = disk("fa");
    let stale = killed_run(&k, &env.state, "/dev/fa");

    // The next backup fails with EBUSY: the error says what to do.
    let err = env
        .run_as(&k, "/dev/fa", None, &NoProgress)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("snapshot destroy --stale") && err.contains(&stale.to_string()),
        "{err}"
    );

    // collect shows the device and the dead owner.
    let (snaps, unattributed) = state::collect(&k, &env.state).unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].owner_alive, Some(false));
    assert_eq!(snaps[0].devices.len(), 1);
    assert_eq!(snaps[0].devices[0].device, "/dev/fa");
    assert!(!snaps[0].devices[0].image.is_empty());
    assert!(unattributed.is_empty());

    // A snapshot of a running owner and one without a state file are left.
    let storage = tempfile::tempfile().unwrap();
    let live = k.snapshot_create(storage.as_fd(), 1 << 20).unwrap();
    env.state
        .record(&SnapshotRecord::new(
            live,
            std::process::id(),
            "snapshot create",
            vec![],
        ))
        .unwrap();
    let foreign = k.snapshot_create(storage.as_fd(), 1 << 20).unwrap();

    let done = state::destroy_stale(&k, &env.state).unwrap();
    let result = |id| {
        done.iter()
            .find(|o| o.id == id)
            .map(|o| o.result.clone())
            .unwrap_or_default()
    };
    assert_eq!(result(stale), "destroyed");
    assert_eq!(result(live), "owner-running");
    assert_eq!(result(foreign), "");
    let left = k.snapshot_collect().unwrap();
    assert!(!left.contains(&stale) && left.contains(&live) && left.contains(&foreign));
    assert!(env.state.get(&stale).is_none());

    // The device is free again.
    env.run_as(&k, "/dev/fa", None, &NoProgress).unwrap();
}

/// Records the state files present when the copy starts.
struct SeeState<'a>(&'a StateDir, Mutex<Vec<SnapshotRecord>>);
impl Progress for SeeState<'_> {
    fn start(&self, _: &str, _: u64) {
        *self.1.lock().unwrap() = self.0.all();
    }
}

#[test]
fn a_backup_records_its_snapshot_while_it_holds_it() {
    let env = Env::new();
    let k = disk("fa");
    let see = SeeState(&env.state, Mutex::new(Vec::new()));
    env.run_as(&k, "/dev/fa", None, &see).unwrap();
    let seen = see.1.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].pid, std::process::id());
    assert!(seen[0].owner_alive());
    assert_eq!(seen[0].devices[0].name, "fa");
    assert!(
        env.state.all().is_empty(),
        "state file left after the backup"
    );
    assert!(k.snapshot_collect().unwrap().is_empty());
}

fn host(name: &str, id: &str) -> HostRecord {
    HostRecord {
        hostname: name.into(),
        machine_id: Some(id.into()),
    }
}

#[test]
fn two_hosts_share_a_repository_without_forcing_fulls_on_each_other() {
    let env = Env::new();
    let (a, b) = (host("alpha", "aaaa"), host("beta", "bbbb"));
    // Two machines, each with its own "fa".
    let ka = disk("fa");
    let kb = disk("fa");
    ka.write(Path::new("/dev/fa"), 0, b"alpha's disk");
    kb.write(Path::new("/dev/fa"), 0, b"beta's disk");

    let r = env.run_as(&ka, "/dev/fa", Some(&a), &NoProgress).unwrap();
    assert_eq!(r.devices[0].kind, BackupKind::Full);
    let r = env.run_as(&kb, "/dev/fa", Some(&b), &NoProgress).unwrap();
    assert_eq!(r.devices[0].kind, BackupKind::Full);
    let why = r.devices[0].full_reason.clone().unwrap_or_default();
    assert!(
        why.contains("from this host (beta)") && why.contains("alpha"),
        "{why}"
    );
    ka.write(Path::new("/dev/fa"), 3 * 4096, b"alpha again");
    let r = env.run_as(&ka, "/dev/fa", Some(&a), &NoProgress).unwrap();
    assert_eq!(
        r.devices[0].kind,
        BackupKind::Incremental,
        "{:?}",
        r.devices[0].full_reason
    );
    assert_eq!(r.devices[0].parent_set.as_deref(), Some("000001"));

    // Restore and verify must be told which host.
    let err = env.restore("fa", None).unwrap_err().to_string();
    assert!(
        err.contains("several hosts") && err.contains("alpha") && err.contains("beta"),
        "{err}"
    );
    assert!(err.contains("--host"), "{err}");
    assert_eq!(
        env.restore("fa", Some("alpha")).unwrap(),
        ka.contents(Path::new("/dev/fa"))
    );
    assert_eq!(
        env.restore("fa", Some("bbbb")).unwrap(),
        kb.contents(Path::new("/dev/fa"))
    );
    let err = env.restore("fa", Some("gamma")).unwrap_err();
    assert!(matches!(err, Error::InvalidBackup(_)), "{err}");
    let choice = Choice {
        device: "fa",
        host: Some("beta"),
        set: None,
    };
    let v = backup::verify_from(&env.repo(), &choice, None, &env.stop, &NoProgress).unwrap();
    assert_eq!(v.sets, vec!["000002".to_string()]);
    let choice = Choice {
        device: "fa",
        host: Some("beta"),
        set: Some("000003"),
    };
    assert!(backup::verify_from(&env.repo(), &choice, None, &env.stop, &NoProgress).is_err());

    let l = backup::list_of(&env.repo(), None, Some("alpha")).unwrap();
    let sets: Vec<&str> = l.sets.iter().map(|s| s.set.as_str()).collect();
    assert_eq!(sets, ["000001", "000003"]);
    let all = backup::list(&env.repo(), None).unwrap();
    assert_eq!(all.sets[1].devices[0].host.as_deref(), Some("beta"));
}

#[test]
fn another_disk_under_the_same_name_gets_a_full_backup() {
    let env = Env::new();
    let k = disk("fa");
    let dev = Path::new("/dev/fa");
    k.set_stable_id(dev, Some("by-id/wwn-0x1111"));
    env.run_as(&k, "/dev/fa", None, &NoProgress).unwrap();
    k.write(dev, 0, b"x");
    // Same name, same tracker, another disk behind it.
    k.set_stable_id(dev, Some("by-id/wwn-0x2222"));
    let r = env.run_as(&k, "/dev/fa", None, &NoProgress).unwrap();
    assert_eq!(r.devices[0].kind, BackupKind::Full);
    let why = r.devices[0].full_reason.clone().unwrap_or_default();
    assert!(
        why.contains("wwn-0x1111") && why.contains("wwn-0x2222"),
        "{why}"
    );
    // The manifest records the stable name and the host.
    let l = backup::list(&env.repo(), None).unwrap();
    let d = &l.sets[1].devices[0];
    assert_eq!(d.stable_id.as_deref(), Some("by-id/wwn-0x2222"));
    assert_eq!(
        d.host.as_deref(),
        Some(HostRecord::current().hostname.as_str())
    );
    // With the same disk again, the next one is incremental.
    k.write(dev, 0, b"y");
    let r = env.run_as(&k, "/dev/fa", None, &NoProgress).unwrap();
    assert_eq!(r.devices[0].kind, BackupKind::Incremental);
}

#[test]
fn a_repository_on_the_device_being_backed_up_is_refused() {
    let env = Env::new();
    let k = disk("fa");
    let dev = std::fs::metadata(env.dir.path()).unwrap().dev();
    k.set_device_number(
        Path::new("/dev/fa"),
        nix::sys::stat::major(dev) as u32,
        nix::sys::stat::minor(dev) as u32,
    );
    let err = env
        .run_as(&k, "/dev/fa", None, &NoProgress)
        .unwrap_err()
        .to_string();
    assert!(err.contains("being backed up"), "{err}");
    assert!(!env.repo().exists());
    assert!(k.snapshot_collect().unwrap().is_empty());
}
