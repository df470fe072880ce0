//! One validation for `mend check-config`, `mend run` and reload: the
//! plan. Tried as a new operator would, with the real binary and real
//! plugins: what `check-config` refuses, `run` refuses (and a reload keeps
//! the running config), with every problem, its position and key at once;
//! what it accepts, `run` starts.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::artifacts;
use common::process::{MendRun, wait_for};

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    /// A config dir with the plugins copied in and `body` after an
    /// `[engine]` table naming them.
    fn new(body: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let plugins = dir.path().join("plugins");
        std::fs::create_dir(&plugins).unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        std::fs::write(dir.path().join("data/status"), "ok").unwrap();
        for p in [
            artifacts::SCRIPTED,
            artifacts::FIXER,
            artifacts::STALE_FILE,
            artifacts::HTTP_PROBE,
        ] {
            std::fs::copy(p, plugins.join(Path::new(p).file_name().unwrap())).unwrap();
        }
        let config = dir.path().join("mend.toml");
        let s = Setup { dir, config };
        s.write(body);
        s
    }

    fn write(&self, body: &str) {
        let text = format!(
            "[engine]\nplugins_dir = \"plugins\"\nstate_dir = \"state\"\ninterval = \"200ms\"\n\n[api]\nlisten = \"off\"\n{}",
            body.replace(
                "{data}",
                &self.dir.path().join("data").display().to_string()
            )
        );
        std::fs::write(&self.config, text).unwrap();
    }

    fn mend(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_mend"))
            .args(args)
            .arg(&self.config)
            .env("MEND_LOG", "warn")
            .output()
            .expect("running mend")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mend.log")).unwrap_or_default()
    }
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

const GOOD: &str = r#"
[[check]]
name = "status"
plugin = "fixture-scripted"
grants = { dirs = [{ host = "{data}", guest = "/data" }] }
config = { file = "/data/status" }

[[policy]]
name = "fix-status"
check = "status"

[[policy.step]]
action = "fixture-fixer"
grants = { dirs = [{ host = "{data}", guest = "/data", mode = "rw" }] }
config = { file = "/data/status", log = "/data/actions.log" }
"#;

/// Five problems of five kinds, in one file.
const BAD: &str = r#"
[[check]]
name = "typo"
plugin = "fixture-scriptd"

[[check]]
name = "no-grant"
plugin = "fixture-scripted"
config = { file = "/data/status" }

[[check]]
name = "stale"
plugin = "stale-file"
grants = { dirs = [{ host = "{data}", guest = "/data" }] }
config = { path = "/data/status", max_ag = "10m" }

[[check]]
name = "web"
plugin = "http-probe"
grants = { urls = ["http://127.0.0.1:9/api/"] }
config = { url = "http://127.0.0.1:9/admin" }

[[policy]]
name = "fix-web"
check = "web"

[[policy.step]]
action = "http-probe"
"#;

#[test]
fn check_config_and_run_refuse_the_same_problems_all_at_once() {
    let s = Setup::new(BAD);
    let check = s.mend(&["check-config"]);
    assert!(!check.status.success());
    let out = text(&check.stdout);
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| {
            l.contains("mend.toml:") && !l.ends_with("problem(s)") && !l.starts_with("warning:")
        })
        .collect();
    for want in [
        "check[0].plugin: no plugin named `fixture-scriptd`",
        "did you mean `fixture-scripted`?",
        "check[1].grants: plugin `fixture-scripted` needs a directory (read-only), which is not granted here",
        "check[2].config: plugin `stale-file`: unknown field `max_ag`",
        "did you mean `max_age`?",
        "check[3].config: with this config plugin `http-probe` reaches URL `http://127.0.0.1:9/admin`, which is not granted here",
        "policy[0].step[0].action: plugin `http-probe` is a detector, not an action",
    ] {
        assert!(out.contains(want), "missing `{want}` in:\n{out}");
    }
    assert_eq!(lines.len(), 5, "{out}");
    for l in &lines {
        let pos = l.split("mend.toml:").nth(1).unwrap();
        let line_col: Vec<&str> = pos.splitn(3, ':').take(2).collect();
        assert!(
            line_col.iter().all(|n| n.parse::<u32>().is_ok()),
            "every problem has a line:column: {l}"
        );
    }
    assert!(out.contains(": 5 problem(s)"), "{out}");

    let run = Command::new(env!("CARGO_BIN_EXE_mend"))
        .args(["run", "--config"])
        .arg(&s.config)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(78), "run refuses");
    let err = text(&run.stderr);
    for l in &lines {
        assert!(err.contains(l), "run reports `{l}` too:\n{err}");
    }
}

#[test]
fn a_config_check_config_accepts_runs() {
    let s = Setup::new(GOOD);
    let check = s.mend(&["check-config"]);
    assert!(check.status.success(), "{}", text(&check.stdout));
    assert!(text(&check.stdout).contains(": ok (1 checks, 1 policies"));
    let run = MendRun::start_logged(&s.config, &s.dir.path().join("mend.log"));
    wait_for("mend to run its check", Duration::from_secs(60), || {
        s.log().contains("mend is running") && s.log().contains("check changed")
    });
    run.stop();
}

#[test]
fn a_missing_plugins_directory_is_refused_at_its_key() {
    let s = Setup::new(GOOD);
    std::fs::remove_dir_all(s.dir.path().join("plugins")).unwrap();
    let out = text(&s.mend(&["check-config"]).stdout);
    assert!(
        out.contains("mend.toml:2:15: engine.plugins_dir:") && out.contains("plugins directory"),
        "{out}"
    );
}

#[test]
fn a_reload_to_a_broken_config_keeps_the_running_one() {
    let s = Setup::new(GOOD);
    let run = MendRun::start_logged(&s.config, &s.dir.path().join("mend.log"));
    wait_for("mend to run", Duration::from_secs(60), || {
        s.log().contains("check changed")
    });
    s.write(&GOOD.replace("fixture-scripted", "fixture-scriptd"));
    run.signal("HUP");
    wait_for("the reload to be refused", Duration::from_secs(30), || {
        s.log()
            .contains("config reload refused; the running config stays")
    });
    let log = s.log();
    assert!(
        log.contains("no plugin named `fixture-scriptd`"),
        "every problem is logged: {log}"
    );
    assert!(!log.contains("config reloaded"), "{log}");
    // Still checking: a change of the status file is seen.
    std::fs::write(s.dir.path().join("data/status"), "warn").unwrap();
    wait_for(
        "the running check to see a change",
        Duration::from_secs(30),
        || {
            s.log()
                .lines()
                .any(|l| l.contains("check changed") && l.contains("\"warn\""))
        },
    );
    run.stop();
}

/// A plugin the running config does not use is not loaded; a reload to a
/// config that uses it loads it then, and its check runs.
#[test]
fn a_reload_loads_a_plugin_the_new_config_starts_using() {
    let s = Setup::new(GOOD);
    let run = MendRun::start_logged(&s.config, &s.dir.path().join("mend.log"));
    wait_for("mend to run", Duration::from_secs(60), || {
        s.log().contains("check changed")
    });
    assert!(
        !s.log().contains("plugin=stale-file"),
        "an unused plugin was loaded: {}",
        s.log()
    );
    s.write(&format!(
        "{GOOD}\n[[check]]\nname = \"fresh\"\nplugin = \"stale-file\"\ngrants = {{ dirs = [{{ host = \"{{data}}\", guest = \"/data\" }}] }}\nconfig = {{ path = \"/data/status\", max_age = \"10m\" }}\n"
    ));
    run.signal("HUP");
    wait_for("the new check to run", Duration::from_secs(60), || {
        s.log()
            .lines()
            .any(|l| l.contains("check changed") && l.contains("fresh"))
    });
    let log = s.log();
    assert!(!log.contains("config reload refused"), "{log}");
    assert!(log.contains("plugin=stale-file"), "{log}");
    run.stop();
}

/// Plugin files the config does not name are read and hashed, never kept
/// loaded; once the compile cache has recorded a file's name, they are not
/// even compiled or instantiated. A name record is authenticated like a
/// compiled entry: a forged one makes mend load the file to find out, and
/// can never hide a plugin the config uses.
#[tokio::test]
async fn only_the_plugins_the_config_names_are_loaded() {
    use mend::runtime::{Runtime, RuntimeConfig};
    let s = Setup::new(GOOD);
    let state = tempfile::tempdir().unwrap();
    let rt = Runtime::new(RuntimeConfig {
        state_dir: Some(state.path().to_path_buf()),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let config = mend::config::load(&s.config).unwrap();
    let loaded = |set: &mend::plan::PluginSet| {
        let mut names: Vec<(String, bool)> = set
            .plugins
            .values()
            .map(|p| (p.name().to_string(), p.from_cache()))
            .collect();
        names.sort();
        names
    };
    let unused = |set: &mend::plan::PluginSet| {
        set.unused
            .iter()
            .map(|u| (u.name.clone(), u.known))
            .collect::<Vec<_>>()
    };

    // First start: every file is loaded once to learn its name.
    let first = mend::plan::load_plugins(&config, &rt).await;
    assert_eq!(
        loaded(&first),
        [
            ("fixture-fixer".into(), false),
            ("fixture-scripted".into(), false)
        ]
    );
    assert_eq!(
        unused(&first),
        [("http-probe".into(), false), ("stale-file".into(), false)]
    );
    assert!(first.broken.is_empty(), "{:?}", first.broken);

    // Next start: the unused ones are known by name, not loaded.
    let second = mend::plan::load_plugins(&config, &rt).await;
    assert_eq!(
        loaded(&second),
        [
            ("fixture-fixer".into(), true),
            ("fixture-scripted".into(), true)
        ]
    );
    assert_eq!(
        unused(&second),
        [("http-probe".into(), true), ("stale-file".into(), true)]
    );

    // Forged records: http-probe's (authentic for its own file) planted as
    // stale-file's and as fixture-scripted's.
    let sha = |set: &mend::plan::PluginSet, name: &str| {
        set.unused
            .iter()
            .find(|u| u.name == name)
            .map(|u| u.sha256.clone())
            .or_else(|| set.plugins.get(name).map(|p| p.sha256().to_string()))
            .unwrap()
    };
    let cache = rt.cache_dir().unwrap();
    let record = |name: &str| cache.join(format!("{}.name", sha(&second, name)));
    assert!(
        record("http-probe").is_file(),
        "no name record in {cache:?}"
    );
    std::fs::copy(record("http-probe"), record("stale-file")).unwrap();
    std::fs::copy(record("http-probe"), record("fixture-scripted")).unwrap();
    let third = mend::plan::load_plugins(&config, &rt).await;
    assert_eq!(
        loaded(&third),
        [
            ("fixture-fixer".into(), true),
            ("fixture-scripted".into(), true)
        ],
        "a forged record must not hide a plugin the config uses"
    );
    assert_eq!(
        unused(&third),
        [("http-probe".into(), true), ("stale-file".into(), false)],
        "a forged record is not believed: the file is loaded to learn its name"
    );
    // And the record is right again.
    let fourth = mend::plan::load_plugins(&config, &rt).await;
    assert_eq!(
        unused(&fourth),
        [("http-probe".into(), true), ("stale-file".into(), true)]
    );
}
