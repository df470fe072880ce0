//! The `disk-cleanup` plugin on real files: a real small filesystem (tmpfs)
//! where the machine allows mounting one, and byte budgets on a directory.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::*;
use mend::capabilities::fs::Mode;
use mend::contract::Status;
use mend::runtime::PluginError;
use serde_json::json;

fn file(dir: &Path, name: &str, bytes: usize, age: Duration) {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&p, vec![b'x'; bytes]).unwrap();
    let f = std::fs::File::options().write(true).open(&p).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
}

const MIB: usize = 1 << 20;
const DAY: Duration = Duration::from_secs(86_400);

/// A directory of logs: four old ones (oldest first: a, b, c, d) and a
/// fresh one, 1 MiB each.
fn logs() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for (i, name) in ["a.log", "b.log", "c.log", "sub/d.log"].iter().enumerate() {
        file(tmp.path(), name, MIB, DAY * (10 - i as u32));
    }
    file(tmp.path(), "fresh.log", MIB, Duration::from_secs(60));
    file(tmp.path(), "keep.dat", MIB, DAY * 30);
    tmp
}

#[tokio::test]
async fn the_detector_reports_a_directory_over_budget() {
    let tmp = logs();
    let p = load(artifacts::DISK_CLEANUP).await;
    let g = dir(tmp.path(), "/scratch", Mode::Ro);
    let over = detect(&p, json!({"path": "/scratch", "max_bytes": "4MiB"}), &g)
        .await
        .unwrap();
    assert_eq!(
        (over.value[0].code.as_str(), over.value[0].status),
        ("dir.size.high", Status::Fail)
    );
    assert_eq!(over.value[0].metrics["bytes"], (6 * MIB) as f64);
    let warn = detect(
        &p,
        json!({"path": "/scratch", "warn_bytes": "5MiB", "max_bytes": "8MiB"}),
        &g,
    )
    .await
    .unwrap();
    assert_eq!(warn.value[0].status, Status::Warn);
    let fine = detect(&p, json!({"path": "/scratch", "max_bytes": "8MiB"}), &g)
        .await
        .unwrap();
    assert_eq!(
        (fine.value[0].code.as_str(), fine.value[0].status),
        ("disk.usage.ok", Status::Ok)
    );
    let err = detect(&p, json!({"path": "/scratch"}), &g)
        .await
        .unwrap_err();
    assert!(matches!(err, PluginError::BadConfig { .. }), "{err}");
}

#[tokio::test]
async fn cleanup_deletes_oldest_first_until_under_target_and_spares_young_files() {
    let tmp = logs();
    let p = load(artifacts::DISK_CLEANUP).await;
    let g = dir(tmp.path(), "/scratch", Mode::Rw);
    let config = json!({
        "path": "/scratch", "patterns": ["**/*.log"], "min_age": "1h", "target_bytes": "4MiB",
    });
    // Dry-run first: the plan, and nothing removed.
    let plan = remedy(&p, config.clone(), &g, true).await.unwrap().value;
    assert!(!plan.changed);
    assert_eq!(plan.steps.len(), 3, "{plan:?}");
    assert!(
        plan.steps[0].starts_with("would delete /scratch/a.log"),
        "{plan:?}"
    );
    assert!(
        plan.message.contains("3.0 MiB would be freed"),
        "{}",
        plan.message
    );
    assert!(tmp.path().join("a.log").exists());

    let done = remedy(&p, config, &g, false).await.unwrap().value;
    assert!(done.changed);
    for gone in ["a.log", "b.log", "c.log"] {
        assert!(!tmp.path().join(gone).exists(), "{gone} should be deleted");
    }
    assert!(
        tmp.path().join("sub/d.log").exists(),
        "stops once under the target"
    );
    assert!(
        tmp.path().join("fresh.log").exists(),
        "never touches a young file"
    );
    assert!(
        tmp.path().join("keep.dat").exists(),
        "never touches a non-matching file"
    );
}

#[tokio::test]
async fn cleanup_never_follows_symlinks() {
    let tmp = logs();
    let outside = tempfile::tempdir().unwrap();
    file(outside.path(), "precious.log", MIB, DAY * 99);
    // A link to a file and to a directory that both live outside the grant,
    // and a link inside that points at an old log.
    std::os::unix::fs::symlink(
        outside.path().join("precious.log"),
        tmp.path().join("link.log"),
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.path(), tmp.path().join("linkdir")).unwrap();
    std::os::unix::fs::symlink(tmp.path().join("a.log"), tmp.path().join("inner-link.log"))
        .unwrap();
    let p = load(artifacts::DISK_CLEANUP).await;
    let out = remedy(
        &p,
        json!({"path": "/scratch", "patterns": ["**/*.log"], "min_age": "1h"}),
        &dir(tmp.path(), "/scratch", Mode::Rw),
        false,
    )
    .await
    .unwrap()
    .value;
    assert!(outside.path().join("precious.log").exists());
    assert!(
        std::fs::symlink_metadata(tmp.path().join("link.log")).is_ok(),
        "links are left alone"
    );
    assert!(std::fs::symlink_metadata(tmp.path().join("inner-link.log")).is_ok());
    assert!(out.steps.iter().all(|s| !s.contains("link")), "{out:?}");
    assert!(
        !tmp.path().join("a.log").exists(),
        "the real file is cleaned"
    );
}

#[tokio::test]
async fn gzip_mode_compresses_instead_of_deleting() {
    let tmp = logs();
    let p = load(artifacts::DISK_CLEANUP).await;
    let out = remedy(
        &p,
        json!({"path": "/scratch", "patterns": ["a.log"], "min_age": "1h", "mode": "gzip"}),
        &dir(tmp.path(), "/scratch", Mode::Rw),
        false,
    )
    .await
    .unwrap()
    .value;
    assert!(out.changed);
    assert!(!tmp.path().join("a.log").exists());
    let gz = std::fs::read(tmp.path().join("a.log.gz")).unwrap();
    assert!(
        gz.len() < 64 * 1024,
        "1 MiB of 'x' compresses well: {}",
        gz.len()
    );
    assert_eq!(&gz[..2], &[0x1f, 0x8b], "a gzip file");
}

#[tokio::test]
async fn a_read_only_grant_cannot_clean() {
    let tmp = logs();
    let p = load(artifacts::DISK_CLEANUP).await;
    let err = remedy(
        &p,
        json!({"path": "/scratch", "patterns": ["*.log"], "min_age": "1h"}),
        &dir(tmp.path(), "/scratch", Mode::Ro),
        false,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, PluginError::MissingGrant { .. }),
        "declared rw need: {err}"
    );
}

/// A real, small filesystem: tmpfs of 8 MiB, filled to 75%.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount() -> Option<Tmpfs> {
        Tmpfs::mount_with("size=8m")
    }

    fn mount_with(options: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[tokio::test]
async fn a_full_filesystem_is_detected_and_cleaned_below_target() {
    let Some(fs) = Tmpfs::mount() else {
        eprintln!("cannot mount tmpfs here (not root?): the byte-budget tests cover the logic");
        return;
    };
    let root = fs.0.path();
    for i in 0..6 {
        file(root, &format!("old-{i}.log"), MIB, DAY * (10 - i));
    }
    file(root, "fresh.log", MIB / 2, Duration::ZERO);
    let p = load(artifacts::DISK_CLEANUP).await;
    let g = dir(root, "/var/log", Mode::Rw);
    let check = json!({"path": "/var/log", "warn_percent": 60, "fail_percent": 70});
    let before = detect(&p, check.clone(), &g).await.unwrap();
    assert_eq!(
        (before.value[0].code.as_str(), before.value[0].status),
        ("disk.usage.high", Status::Fail),
        "{:?}",
        before.value
    );
    assert!(before.value[0].metrics["used_percent"] > 70.0);

    let out = remedy(
        &p,
        json!({"path": "/var/log", "patterns": ["*.log"], "min_age": "1h", "target_percent": 40}),
        &g,
        false,
    )
    .await
    .unwrap()
    .value;
    assert!(out.changed, "{out:?}");
    let after = detect(&p, check, &g).await.unwrap();
    assert_eq!(after.value[0].code, "disk.usage.ok", "{:?}", after.value);
    assert!(after.value[0].metrics["used_percent"] < 40.0);
    assert!(root.join("fresh.log").exists());
    assert!(
        root.join("old-5.log").exists(),
        "the newest old file was not needed"
    );
    assert!(!root.join("old-0.log").exists(), "the oldest went first");
}

/// Bytes that look random (they do not compress), from a xorshift.
fn noise(bytes: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..bytes)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn tmp_files(root: &Path) -> Vec<String> {
    std::fs::read_dir(root)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".gz.tmp"))
        .collect()
}

#[tokio::test]
async fn gzip_on_a_full_disk_leaves_no_temp_file_and_may_fall_back_to_delete() {
    let Some(fs) = Tmpfs::mount() else {
        eprintln!("cannot mount tmpfs here (not root?): skipped");
        return;
    };
    let root = fs.0.path();
    // 3 MiB that do not compress, then fill all but 1 MiB: the .gz
    // cannot fit.
    let log = root.join("big.log");
    std::fs::write(&log, noise(3 * MIB)).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&log)
        .unwrap()
        .set_modified(SystemTime::now() - DAY)
        .unwrap();
    let free = rustix::fs::statvfs(root).unwrap();
    let avail = (free.f_bavail * free.f_frsize) as usize;
    std::fs::write(root.join("keep.dat"), vec![0u8; avail - MIB]).unwrap();

    let p = load(artifacts::DISK_CLEANUP).await;
    let g = dir(root, "/var/log", Mode::Rw);
    let gzip = json!({"path": "/var/log", "patterns": ["*.log"], "min_age": "1h", "mode": "gzip"});
    let err = remedy(&p, gzip.clone(), &g, false).await.unwrap_err();
    // WASI reports ENOSPC as a plain I/O error; the plugin adds the room.
    let m = err.to_string();
    assert!(
        m.contains("big.log.gz.tmp") && m.contains("1.0 MiB available"),
        "{m}"
    );
    assert!(
        tmp_files(root).is_empty(),
        "left behind: {:?}",
        tmp_files(root)
    );
    assert!(
        log.exists(),
        "the original is kept when it could not be compressed"
    );
    let after = rustix::fs::statvfs(root).unwrap();
    assert_eq!(
        after.f_bavail,
        free.f_bavail - (avail - MIB) as u64 / free.f_frsize,
        "the failed attempt holds no space"
    );

    let mut fallback = gzip;
    fallback["fallback_delete"] = json!(true);
    let out = remedy(&p, fallback, &g, false).await.unwrap().value;
    assert!(out.changed, "{out:?}");
    assert!(!log.exists(), "deleted instead");
    assert!(out.steps[0].starts_with("could not compress"), "{out:?}");
    assert!(out.steps[0].contains("big.log.gz.tmp"), "{out:?}");
    assert!(tmp_files(root).is_empty());
    assert!(root.join("keep.dat").exists());
}

#[tokio::test]
async fn an_inode_target_deletes_until_inodes_are_back_under_it() {
    let Some(fs) = Tmpfs::mount_with("size=8m,nr_inodes=64") else {
        eprintln!("cannot mount tmpfs here (not root?): skipped");
        return;
    };
    let root = fs.0.path();
    for i in 0..40 {
        file(root, &format!("tiny-{i:02}.log"), 10, DAY * (50 - i));
    }
    let p = load(artifacts::DISK_CLEANUP).await;
    let g = dir(root, "/var/log", Mode::Rw);
    let check = json!({"path": "/var/log", "warn_inodes_percent": 50});
    let before = detect(&p, check.clone(), &g).await.unwrap().value;
    assert_eq!(before[0].code, "disk.inodes.high", "{before:?}");
    assert!(
        before[0].metrics["inodes_used_percent"] > 60.0,
        "{before:?}"
    );

    let clean = json!({"path": "/var/log", "patterns": ["*.log"], "min_age": "1h", "target_inodes_percent": 30});
    let plan = remedy(&p, clean.clone(), &g, true).await.unwrap().value;
    let out = remedy(&p, clean, &g, false).await.unwrap().value;
    assert!(out.changed);
    assert_eq!(
        plan.steps.len(),
        out.steps.len(),
        "the dry run planned as many: {plan:?}"
    );
    let after = detect(
        &p,
        json!({"path": "/var/log", "warn_inodes_percent": 30}),
        &g,
    )
    .await
    .unwrap()
    .value;
    assert_eq!(after[0].code, "disk.usage.ok", "{after:?}");
    let left = std::fs::read_dir(root).unwrap().count();
    assert!(left > 0 && left < 40, "{left} left");
    assert!(root.join("tiny-39.log").exists(), "the newest stays");
    assert!(!root.join("tiny-00.log").exists(), "the oldest went first");
    // Stopped as soon as the target was met: one file fewer would not do.
    let used = |n: usize| (n as f64 + 1.0) * 100.0 / 64.0;
    assert!(used(left) < 30.0 && used(left + 1) >= 30.0, "{left} left");
}
