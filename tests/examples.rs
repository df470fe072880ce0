//! The bundled examples: each passes `mend check-config`, and the
//! quickstart (what `scripts/run` starts) really cleans its scratch
//! directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use mend::store::{AttemptOutcome, IncidentState, Store};
use mend_test_artifacts as artifacts;

/// A copy of `examples/` with the `../target/demo` tree the examples expect.
fn layout() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let examples = root.path().join("examples");
    std::fs::create_dir(&examples).unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for e in std::fs::read_dir(repo).unwrap().flatten() {
        std::fs::copy(e.path(), examples.join(e.file_name())).unwrap();
    }
    let demo = root.path().join("target/demo");
    for d in ["plugins", "scratch", "state"] {
        std::fs::create_dir_all(demo.join(d)).unwrap();
    }
    for p in artifacts::PLUGINS {
        std::fs::copy(
            p,
            demo.join("plugins").join(Path::new(p).file_name().unwrap()),
        )
        .unwrap();
    }
    (root, examples)
}

fn mend() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mend"));
    c.env("MEND_LOG", "warn");
    c
}

#[test]
fn every_example_passes_check_config() {
    let (_root, examples) = layout();
    let mut n = 0;
    for e in std::fs::read_dir(&examples).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "toml") {
            let out = mend().arg("check-config").arg(e.path()).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{}: {text}", e.path().display());
            assert!(text.contains(": ok ("), "{text}");
            n += 1;
        }
    }
    assert!(n >= 1, "no examples found");
}

#[test]
fn check_config_lists_every_problem() {
    let (_root, examples) = layout();
    let path = examples.join("quickstart.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("plugin = \"disk-cleanup\"", "plugin = \"disk-cleaner\"")
        .replace(
            "name = \"delete-old-logs\"\naction = \"disk-cleanup\"",
            "name = \"delete-old-logs\"\naction = \"stale-file\"",
        )
        .replace(
            "mode = \"rw\" }] }\nconfig = { path = \"/scratch\", patterns = [\"**/*.dat\"]",
            "mode = \"ro\" }] }\nconfig = { path = \"/scratch\", patterns = [\"**/*.dat\"]",
        );
    std::fs::write(&path, text).unwrap();
    let out = mend().arg("check-config").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("check[0].plugin: no plugin named `disk-cleaner`"),
        "{text}"
    );
    assert!(
        text.contains("policy[0].step[0].action: plugin `stale-file` is not an action"),
        "{text}"
    );
    assert!(
        text.contains("policy[0].step[1].action: plugin `disk-cleanup` needs a directory (read-write), which is not granted"),
        "{text}"
    );
    assert!(text.contains("3 problem(s)"), "{text}");
}

#[test]
fn the_quickstart_cleans_its_scratch_directory() {
    let (root, examples) = layout();
    let scratch = root.path().join("target/demo/scratch");
    for i in 0..14 {
        let p = scratch.join(format!("app-{i:02}.log"));
        std::fs::write(&p, vec![0u8; 1 << 20]).unwrap();
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(3600 * (30 - i)))
            .unwrap();
    }
    std::fs::write(scratch.join("current.log"), vec![0u8; 1 << 19]).unwrap();

    let mut child = mend()
        .arg("run")
        .arg("--config")
        .arg(examples.join("quickstart.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let db = root.path().join("target/demo/state/mend.db");
    let start = Instant::now();
    let healed = loop {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "no healed incident in time"
        );
        std::thread::sleep(Duration::from_millis(200));
        let Ok(store) = Store::open_read_only(&db) else {
            continue;
        };
        if let Some(i) = store
            .incidents(false, 10)
            .unwrap_or_default()
            .into_iter()
            .find(|i| i.state == IncidentState::Healed)
        {
            break i;
        }
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");

    assert_eq!(healed.policy, "clean-scratch");
    assert_eq!(healed.attempts[0].action, "delete-old-logs");
    assert_eq!(healed.attempts[0].outcome, AttemptOutcome::Healed);
    let bytes: u64 = std::fs::read_dir(&scratch)
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(bytes < 6 << 20, "{bytes} bytes left");
    assert!(scratch.join("current.log").exists(), "young files are kept");
    assert!(
        scratch.join("app-13.log").exists(),
        "only what was needed went"
    );
    assert!(!scratch.join("app-00.log").exists(), "oldest first");
}
