//! The command as a whole: one word for a device everywhere, one exit
//! status per cause, hosts, the default difference storage, the manual
//! pages and completions, and the verbosity flags.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use assert_cmd::Command;
use libblksnap::backup::{self, BackupRequest, NoProgress};
use libblksnap::fake::FakeKernel;
use libblksnap::identity::HostRecord;

fn blksnap() -> Command {
    Command::cargo_bin("blksnap").unwrap()
}

/// Full and incremental backups of the fake disk "fakedisk", made on
/// `host` (None: this machine) by the fake kernel `k`.
fn backups(k: &FakeKernel, repo: &Path, host: Option<HostRecord>, rounds: usize) {
    let dev = Path::new("/dev/fakedisk");
    let storage = tempfile::tempfile().unwrap();
    let stop = AtomicBool::new(false);
    let req = BackupRequest {
        host,
        ..BackupRequest::new(
            vec![dev.to_path_buf()],
            repo.to_path_buf(),
            storage.as_fd(),
            1 << 20,
            &stop,
        )
    };
    for r in 0..rounds {
        k.write(dev, r * 4096, &[r as u8 + 1; 100]);
        backup::backup(k, &req, &NoProgress).unwrap();
    }
}

fn disk() -> FakeKernel {
    let k = FakeKernel::new(4096);
    k.add_disk("/dev/fakedisk", "fakedisk", 3, 16 * 4096);
    k
}

fn repo_with_two_sets(dir: &Path) -> PathBuf {
    let repo = dir.join("repo");
    backups(&disk(), &repo, None, 2);
    repo
}

fn status(args: &[&str], repo: &Path, extra: &[&Path]) -> (Option<i32>, String) {
    let out = blksnap()
        .args(args)
        .arg("--repo")
        .arg(repo)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn restore_verify_and_list_take_a_device_path_as_well_as_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo_with_two_sets(dir.path());
    let img = dir.path().join("out.img");
    for word in ["fakedisk", "/dev/fakedisk"] {
        let (code, err) = status(&["restore", "--force", "--device", word], &repo, &[&img]);
        assert_eq!(code, Some(0), "restore --device {word}: {err}");
        let (code, err) = status(&["verify", "--device", word], &repo, &[&img]);
        assert_eq!(code, Some(0), "verify --device {word}: {err}");
        let out = blksnap()
            .args(["--json", "list", "--device", word, "--repo"])
            .arg(&repo)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            v["sets"].as_array().unwrap().len(),
            2,
            "list --device {word}"
        );
    }
    // And the device commands take a kernel name: it names /dev/NAME.
    let out = blksnap()
        .args(["cbtinfo", "no-such-disk-here"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/dev/no-such-disk-here: no such device"),
        "{err}"
    );
}

/// Holds the exclusive lock of a repository, as a backup run does.
fn hold_lock(repo: &Path) -> nix::fcntl::Flock<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(repo.join(".lock"))
        .unwrap();
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e)
        .unwrap()
}

#[test]
fn the_same_cause_gives_the_same_exit_status_in_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo_with_two_sets(dir.path());
    let img = dir.path().join("out.img");
    let missing = dir.path().join("no-repo");
    let readers: [(&[&str], bool); 3] = [
        (&["restore", "--force", "--device", "fakedisk"], true),
        (&["verify", "--device", "fakedisk"], false),
        (&["list"], false),
    ];
    let run = |repo: &Path| -> Vec<(String, Option<i32>, String)> {
        readers
            .iter()
            .map(|(args, target)| {
                let extra: &[&Path] = if *target { &[&img] } else { &[] };
                let (code, err) = status(args, repo, extra);
                (args[0].to_string(), code, err)
            })
            .collect()
    };
    let expect = |cause: &str, got: Vec<(String, Option<i32>, String)>, code: i32| {
        for (cmd, c, err) in got {
            assert_eq!(c, Some(code), "{cause}: {cmd} exited {c:?}: {err}");
        }
    };

    expect("a missing repository", run(&missing), 5);
    assert!(!missing.exists(), "a reader created the repository");

    let lock = hold_lock(&repo);
    expect("a locked repository", run(&repo), 7);
    drop(lock);

    // A damaged manifest in the newest set.
    let m = repo.join("000002/fakedisk.json");
    let text = std::fs::read_to_string(&m).unwrap();
    std::fs::write(&m, text.replace("\"set\":\"000002\"", "\"set\":\"000009\"")).unwrap();
    expect("a corrupt set", run(&repo), 5);
    // list still shows what there is.
    let out = blksnap()
        .args(["list", "--repo"])
        .arg(&repo)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("000001") && text.contains("damaged"),
        "{text}"
    );

    // A device the repository has no backup of.
    let (code, err) = status(&["restore", "--device", "vdz"], &repo, &[&img]);
    assert_eq!(code, Some(5), "{err}");
    let (code, err) = status(&["verify", "--device", "vdz"], &repo, &[]);
    assert_eq!(code, Some(5), "{err}");
}

#[test]
fn a_choice_between_hosts_is_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let host = |n: &str, id: &str| HostRecord {
        hostname: n.into(),
        machine_id: Some(id.into()),
    };
    let (ka, kb) = (disk(), disk());
    backups(&ka, &repo, Some(host("alpha", "a1")), 1);
    backups(&kb, &repo, Some(host("beta", "b2")), 1);
    let img = dir.path().join("out.img");
    let (code, err) = status(&["restore", "--device", "fakedisk"], &repo, &[&img]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("alpha") && err.contains("beta") && err.contains("--host"),
        "{err}"
    );
    assert!(!img.exists());
    let (code, err) = status(
        &["restore", "--device", "fakedisk", "--host", "alpha"],
        &repo,
        &[&img],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        std::fs::read(&img).unwrap(),
        ka.contents(Path::new("/dev/fakedisk"))
    );
    let (code, err) = status(
        &["verify", "--device", "fakedisk", "--host", "b2"],
        &repo,
        &[],
    );
    assert_eq!(code, Some(0), "{err}");
    let (code, _) = status(&["verify", "--device", "fakedisk"], &repo, &[]);
    assert_eq!(code, Some(1));
    let out = blksnap()
        .args(["list", "--host", "beta", "--repo"])
        .arg(&repo)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("HOST") && text.contains("beta"), "{text}");
    assert!(!text.contains("alpha"), "{text}");
}

#[test]
fn the_default_difference_storage_is_on_disk_and_tmpfs_is_warned_about() {
    let help = blksnap()
        .args(["backup", "--help"])
        .output()
        .unwrap()
        .stdout;
    let help = String::from_utf8_lossy(&help);
    assert!(help.contains("[default: /var/tmp]"), "{help}");
    assert!(help.contains("--allow-tmpfs"), "{help}");
    if libblksnap::storage::memory_fs(Path::new("/dev/shm")).is_none() {
        eprintln!("skipped: /dev/shm is not tmpfs here");
        return;
    }
    // Taken (the kernel is asked next, and is not there on the host), with a
    // warning that says what a storage in memory costs.
    let out = blksnap()
        .args(["snapshot", "create", "--storage", "/dev/shm"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tmpfs") && err.contains("in memory"), "{err}");
    let out = blksnap()
        .args([
            "snapshot",
            "create",
            "--allow-tmpfs",
            "--storage",
            "/dev/shm",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("in memory"), "{err}");
}

#[test]
fn manual_pages_and_completions_are_generated() {
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("man8");
    blksnap()
        .arg("generate")
        .arg("man")
        .arg(&man)
        .assert()
        .success();
    let page = man.join("blksnap.8");
    let roff = std::fs::read_to_string(&page).unwrap();
    let top = [
        "version",
        "attach",
        "detach",
        "cbtinfo",
        "readcbtmap",
        "markdirtyblock",
        "snapshot",
        "backup",
        "restore",
        "verify",
        "list",
        "exit-codes",
    ];
    for sub in top {
        assert!(
            roff.contains(&format!("blksnap\\-{}", sub.replace('-', "\\-"))),
            "blksnap.8 lacks {sub}"
        );
        assert!(
            man.join(format!("blksnap-{sub}.8")).exists(),
            "no page for {sub}"
        );
    }
    assert!(
        !roff.contains("generate"),
        "the hidden generator is documented"
    );
    let snap = std::fs::read_to_string(man.join("blksnap-snapshot.8")).unwrap();
    for sub in [
        "create",
        "add",
        "take",
        "destroy",
        "collect",
        "info",
        "wait\\-event",
        "watch",
    ] {
        assert!(snap.contains(sub), "blksnap-snapshot.8 lacks {sub}");
    }
    assert!(roff.contains(".TH blksnap 8"), "not section 8");
    // Rendered by man(1), where it is installed.
    if let Ok(out) = std::process::Command::new("man")
        .arg("-l")
        .arg(&page)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
    {
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains("SUBCOMMANDS") && text.contains("blksnap-restore(8)"),
                "{text}"
            );
            assert!(text.contains("Exit status"), "{text}");
        }
    }

    let comp = dir.path().join("completions");
    for (shell, file) in [
        ("bash", "blksnap.bash"),
        ("zsh", "_blksnap"),
        ("fish", "blksnap.fish"),
    ] {
        blksnap()
            .args(["generate", "completions", shell])
            .arg(&comp)
            .assert()
            .success();
        let text = std::fs::read_to_string(comp.join(file)).unwrap();
        assert!(text.contains("restore") && text.contains("repo"), "{shell}");
    }
}

#[test]
fn verbosity_is_chosen_with_v_and_q() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo_with_two_sets(dir.path());
    let (code, err) = status(&["verify", "--device", "fakedisk"], &repo, &[]);
    assert_eq!(code, Some(0));
    assert!(err.is_empty(), "{err}");
    let (code, err) = status(&["-v", "verify", "--device", "fakedisk"], &repo, &[]);
    assert_eq!(code, Some(0));
    assert!(
        err.lines()
            .any(|l| l.starts_with("blksnap: debug: ") && l.contains("000002")),
        "{err}"
    );
    let (code, err) = status(&["-q", "verify", "--device", "fakedisk"], &repo, &[]);
    assert_eq!(code, Some(0));
    assert!(err.is_empty(), "{err}");
    let (code, _) = status(&["-v", "-q", "list"], &repo, &[]);
    assert_eq!(code, Some(2));
}
