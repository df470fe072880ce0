//! The `cache-heal` plugin against real Redis: the machine's server under a
//! key prefix of each test's own (cleaned up, nothing else touched), and a
//! disposable `redis-server` for the outage, killed and restarted for real.
//! The file-cache variant runs on a real directory. The last tests run the
//! real `mend run` binary and read the incidents from its store.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use common::process::{MendRun, incidents, wait_for};
use common::redis::{Disposable, Prefix};
use common::*;
use mend::capabilities::fs::{DirGrant, Mode};
use mend::capabilities::{Backends, Grants, ResolvedGrants};
use mend::contract::{Finding, Status};
use mend::runtime::PluginError;
use mend::store::{AttemptOutcome, Incident, IncidentState};
use serde_json::{Value, json};

/// Grants the Redis connection `cache` at `url`, and `dirs`.
fn grants(url: &str, dirs: Vec<DirGrant>) -> ResolvedGrants {
    let backends = Backends::from_toml(&format!(
        "[connections.cache]\nkind = \"redis\"\nurl = \"{url}\"\ntimeout = \"2s\"\n"
    ))
    .expect("backends");
    Grants {
        connections: vec!["cache".into()],
        dirs,
        ..Grants::none()
    }
    .resolve_with(&backends)
    .expect("grants resolve")
}

fn dir_grant(host: &Path, guest: &str, mode: Mode) -> DirGrant {
    DirGrant {
        host: host.to_path_buf(),
        guest: Some(guest.into()),
        mode,
    }
}

fn codes(findings: &[Finding]) -> Vec<(&str, Status)> {
    findings
        .iter()
        .map(|f| (f.code.as_str(), f.status))
        .collect()
}

async fn detect_ok(config: &Value, g: &ResolvedGrants) -> Vec<Finding> {
    let p = load(artifacts::CACHE_HEAL).await;
    detect_in(&p, config.clone(), g)
        .await
        .unwrap_or_else(|e| panic!("detect: {e}"))
        .value
}

async fn remedy_ok(
    config: &Value,
    g: &ResolvedGrants,
    findings: &[Finding],
    dry_run: bool,
) -> mend::contract::Outcome {
    let p = load(artifacts::CACHE_HEAL).await;
    remedy_in(&p, config.clone(), g, findings, dry_run)
        .await
        .unwrap_or_else(|e| panic!("remedy: {e}"))
        .value
}

fn skip() -> bool {
    match common::redis::unavailable() {
        Some(why) => {
            eprintln!("{why}");
            true
        }
        None => false,
    }
}

#[tokio::test]
async fn the_probe_measures_a_round_trip_and_leaves_no_key_behind() {
    if skip() {
        return;
    }
    let mut p = Prefix::shared();
    let g = grants(common::redis::URL, vec![]);
    let config = json!({"connection": "cache", "prefix": p.prefix, "warn_latency": "10s"});
    let f = detect_ok(&config, &g).await;
    assert_eq!(codes(&f), [("cache.ok", Status::Ok)], "{f:#?}");
    assert!(f[0].metrics["probe_ms"] > 0.0, "{f:#?}");
    assert!(p.names().is_empty(), "the probe key is deleted");

    // The thresholds are wired: any round trip is at least 0 ms.
    let slow = json!({"connection": "cache", "prefix": p.prefix, "warn_latency": "0s", "fail_latency": "1h"});
    let f = detect_ok(&slow, &g).await;
    assert_eq!(codes(&f), [("cache.latency.high", Status::Warn)], "{f:#?}");
    let slow = json!({"connection": "cache", "prefix": p.prefix, "fail_latency": "0s"});
    let f = detect_ok(&slow, &g).await;
    assert_eq!(codes(&f), [("cache.latency.high", Status::Fail)], "{f:#?}");
}

#[tokio::test]
async fn memory_is_judged_against_maxmemory_and_skipped_without_one() {
    if skip() {
        return;
    }
    // The machine's server has no maxmemory: nothing to be close to.
    let p = Prefix::shared();
    let g = grants(common::redis::URL, vec![]);
    let config = json!({"connection": "cache", "prefix": p.prefix, "fail_memory_percent": 0.0});
    let mut con = common::redis::connect(common::redis::URL);
    let max: Vec<String> = common::redis::run(&mut con, &["CONFIG", "GET", "maxmemory"]);
    if max.get(1).map(String::as_str) == Some("0") {
        let f = detect_ok(&config, &g).await;
        assert_eq!(codes(&f), [("cache.ok", Status::Ok)], "{f:#?}");
        assert!(f[0].metrics["used_memory"] > 0.0);
    }

    // A disposable server with a small maxmemory: its baseline use alone
    // is past 1% of 32 MiB.
    let server = Disposable::start_with(&["--maxmemory", "32mb"]);
    let g = grants(&server.url(), vec![]);
    let fail = json!({"connection": "cache", "prefix": "app:", "warn_memory_percent": 0.5, "fail_memory_percent": 1.0});
    let f = detect_ok(&fail, &g).await;
    assert_eq!(codes(&f), [("cache.memory.high", Status::Fail)], "{f:#?}");
    assert_eq!(f[0].metrics["maxmemory"], (32u64 << 20) as f64);
    let warn = json!({"connection": "cache", "prefix": "app:", "warn_memory_percent": 1.0, "fail_memory_percent": 99.0});
    let f = detect_ok(&warn, &g).await;
    assert_eq!(codes(&f), [("cache.memory.high", Status::Warn)], "{f:#?}");
    let fine = json!({"connection": "cache", "prefix": "app:", "warn_memory_percent": 99.0});
    let f = detect_ok(&fine, &g).await;
    assert_eq!(codes(&f), [("cache.ok", Status::Ok)], "{f:#?}");
    assert!(f[0].metrics["memory_percent"] > 0.0);
}

#[tokio::test]
async fn a_full_redis_fails_the_probe_and_the_memory_check_says_why() {
    if skip() {
        return;
    }
    // maxmemory below what an empty server uses: every write is refused
    // with OOM, reads still work.
    let server =
        Disposable::start_with(&["--maxmemory", "100kb", "--maxmemory-policy", "noeviction"]);
    let g = grants(&server.url(), vec![]);
    let config = json!({"connection": "cache", "prefix": "app:", "fail_memory_percent": 90.0});
    let f = detect_ok(&config, &g).await;
    assert_eq!(
        codes(&f),
        [
            ("cache.probe.failed", Status::Fail),
            ("cache.memory.high", Status::Fail)
        ],
        "{f:#?}"
    );
    assert!(f[0].summary.contains("OOM"), "{f:#?}");
}

/// Two valid entries, one invalid JSON, one without TTL, and a hash (not
/// a string: its body is not JSON-validated).
fn plant(p: &mut Prefix) {
    p.set("user:1", r#"{"id":1,"name":"ada"}"#, Some(3600));
    p.set("user:2", "[1,2,3]", Some(3600));
    p.set("user:3", r#"{"id":3,"na"#, Some(3600));
    p.set("session:9", r#"{"ok":true}"#, None);
    let key = p.key("counts");
    common::redis::run::<()>(p.con(), &["HSET", &key, "a", "1"]);
    common::redis::run::<()>(p.con(), &["EXPIRE", &key, "3600"]);
}

#[tokio::test]
async fn corrupt_keys_are_detected_then_only_they_are_purged() {
    if skip() {
        return;
    }
    let mut p = Prefix::shared();
    let mut other = Prefix::shared();
    plant(&mut p);
    other.set("broken", "{", None); // another prefix: never looked at
    let g = grants(common::redis::URL, vec![]);
    let config = json!({
        "connection": "cache", "prefix": p.prefix,
        "validate": "json", "require_ttl": true, "batch": 1,
    });

    let f = detect_ok(&config, &g).await;
    assert_eq!(codes(&f), [("cache.keys.corrupt", Status::Fail)], "{f:#?}");
    assert_eq!(f[0].metrics["corrupt"], 2.0);
    assert_eq!(f[0].metrics["sampled"], 5.0);
    assert_eq!(f[0].metrics["invalid"], 1.0);
    assert_eq!(f[0].metrics["no_ttl"], 1.0);
    let examples = &f[0].labels["examples"];
    assert!(
        examples.contains(&p.key("user:3")) && examples.contains(&p.key("session:9")),
        "{examples}"
    );

    // Dry-run: lists exactly the two keys, deletes nothing.
    let plan = remedy_ok(&config, &g, &f, true).await;
    assert!(!plan.changed);
    let mut listed: Vec<&String> = plan.steps.iter().collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            &format!("would unlink {} (no TTL)", p.key("session:9")),
            &format!("would unlink {} (invalid JSON)", p.key("user:3")),
        ],
        "{plan:#?}"
    );
    assert_eq!(p.names().len(), 5);

    let done = remedy_ok(&config, &g, &f, false).await;
    assert!(done.changed, "{done:#?}");
    assert!(
        done.message.contains("unlinked 2 corrupt key(s)")
            && done
                .message
                .contains("verified: none of them exists any more"),
        "{done:#?}"
    );
    assert_eq!(p.names(), ["counts", "user:1", "user:2"]);
    assert_eq!(other.names(), ["broken"], "another prefix is untouched");

    let f = detect_ok(&config, &g).await;
    assert_eq!(codes(&f), [("cache.ok", Status::Ok)], "{f:#?}");
    assert_eq!(f[0].metrics["keys_sampled"], 3.0);
}

#[tokio::test]
async fn sampling_stops_at_sample_keys() {
    if skip() {
        return;
    }
    let mut p = Prefix::shared();
    for i in 0..30 {
        p.set(&format!("bad:{i}"), "not json", Some(600));
    }
    let g = grants(common::redis::URL, vec![]);
    let config =
        json!({"connection": "cache", "prefix": p.prefix, "validate": "json", "sample": 10});
    let f = detect_ok(&config, &g).await;
    assert_eq!(codes(&f), [("cache.keys.corrupt", Status::Fail)]);
    assert_eq!(f[0].metrics["sampled"], 10.0, "{f:#?}");
    assert_eq!(f[0].metrics["corrupt"], 10.0);
    // The action is not bound by the sample: it scans the whole prefix.
    let done = remedy_ok(&config, &g, &f, false).await;
    assert!(
        done.message.contains("unlinked 30 corrupt key(s)"),
        "{done:#?}"
    );
    assert!(p.names().is_empty());
}

#[tokio::test]
async fn namespace_mode_deletes_everything_under_the_prefix_and_nothing_else() {
    if skip() {
        return;
    }
    let mut p = Prefix::shared();
    let mut other = Prefix::shared();
    plant(&mut p);
    other.set("keep", "{}", Some(600));
    let g = grants(common::redis::URL, vec![]);
    let config =
        json!({"connection": "cache", "prefix": p.prefix, "mode": "namespace", "batch": 2});

    // Out of time at once: nothing chosen, and the message says why.
    let mut hurried = config.clone();
    hurried["time_budget"] = json!("0s");
    let none = remedy_ok(&hurried, &g, &[], false).await;
    assert!(!none.changed, "{none:#?}");
    assert!(none.message.contains("time_budget"), "{none:#?}");
    assert_eq!(p.names().len(), 5);

    let plan = remedy_ok(&config, &g, &[], true).await;
    assert_eq!(plan.steps.len(), 5, "{plan:#?}");
    assert!(
        plan.steps.iter().all(|s| s.starts_with("would unlink ")),
        "{plan:#?}"
    );
    assert_eq!(p.names().len(), 5, "dry-run deletes nothing");

    let done = remedy_ok(&config, &g, &[], false).await;
    assert!(done.changed);
    assert!(done.message.contains("unlinked 5 key(s)"), "{done:#?}");
    assert!(p.names().is_empty());
    assert_eq!(other.names(), ["keep"]);
}

#[tokio::test]
async fn an_outage_raises_the_degraded_flag_and_recovery_clears_it() {
    if skip() {
        return;
    }
    let mut server = Disposable::start();
    let flags = tempfile::tempdir().unwrap();
    let flag = flags.path().join("cache-degraded");
    let url = server.url();
    let detect_g = grants(&url, vec![dir_grant(flags.path(), "/flags", Mode::Ro)]);
    let act_g = grants(&url, vec![dir_grant(flags.path(), "/flags", Mode::Rw)]);
    let config = json!({
        "connection": "cache", "prefix": "app:",
        "degraded_flag": "/flags/cache-degraded",
    });

    let f = detect_ok(&config, &detect_g).await;
    assert_eq!(codes(&f), [("cache.ok", Status::Ok)], "{f:#?}");

    server.kill();
    let down = detect_ok(&config, &detect_g).await;
    assert_eq!(
        codes(&down),
        [("cache.unreachable", Status::Fail)],
        "{down:#?}"
    );
    assert_eq!(down[0].metrics["degraded_flag"], 0.0);

    let plan = remedy_ok(&config, &act_g, &down, true).await;
    assert!(!plan.changed);
    assert_eq!(
        plan.steps,
        ["would write degraded flag /flags/cache-degraded: Redis `cache` is unreachable"]
    );
    assert!(!flag.exists(), "dry-run writes nothing");

    let done = remedy_ok(&config, &act_g, &down, false).await;
    assert!(done.changed, "{done:#?}");
    let body: Value = serde_json::from_str(&std::fs::read_to_string(&flag).unwrap()).unwrap();
    assert_eq!(body["connection"], "cache");
    // Idempotent while the outage lasts.
    let again = remedy_ok(&config, &act_g, &down, false).await;
    assert!(!again.changed, "{again:#?}");
    let f = detect_ok(&config, &detect_g).await;
    assert_eq!(codes(&f), [("cache.unreachable", Status::Fail)]);
    assert_eq!(f[0].metrics["degraded_flag"], 1.0);

    server.restart();
    let stale = detect_ok(&config, &detect_g).await;
    assert_eq!(
        codes(&stale),
        [("cache.degraded.stale", Status::Warn)],
        "{stale:#?}"
    );
    let plan = remedy_ok(&config, &act_g, &stale, true).await;
    assert_eq!(
        plan.steps,
        ["would remove degraded flag /flags/cache-degraded"]
    );
    assert!(flag.exists());
    let done = remedy_ok(&config, &act_g, &stale, false).await;
    assert!(done.changed, "{done:#?}");
    assert!(!flag.exists(), "the flag is removed on recovery");
    let f = detect_ok(&config, &detect_g).await;
    assert_eq!(codes(&f), [("cache.ok", Status::Ok)], "{f:#?}");
}

#[tokio::test]
async fn a_detector_that_cannot_see_the_flag_directory_fails_instead_of_guessing() {
    if skip() {
        return;
    }
    let p = Prefix::shared();
    let g = grants(common::redis::URL, vec![]);
    let config = json!({"connection": "cache", "prefix": p.prefix, "degraded_flag": "/flags/cache-degraded"});
    let plugin = load(artifacts::CACHE_HEAL).await;
    let err = detect_in(&plugin, config, &g).await.unwrap_err();
    assert!(
        err.to_string().contains("degraded_flag directory /flags"),
        "{err}"
    );
}

#[tokio::test]
async fn an_ungranted_connection_is_a_refusal_not_an_outage() {
    let plugin = load(artifacts::CACHE_HEAL).await;
    let config = json!({"connection": "cache", "prefix": "app:"});
    let err = detect_in(&plugin, config, &Grants::none().resolve().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, PluginError::Denied { .. }), "{err}");
    assert!(err.to_string().contains("`cache`"), "{err}");
}

#[tokio::test]
async fn bad_configs_are_refused_with_the_key_at_fault() {
    let plugin = load(artifacts::CACHE_HEAL).await;
    let none = Grants::none().resolve().unwrap();
    for (config, expect) in [
        (json!({}), "set `connection`"),
        (json!({"connection": "cache"}), "`prefix` is required"),
        (
            json!({"connection": "cache", "prefix": ""}),
            "must not be empty",
        ),
        (
            json!({"connection": "cache", "prefix": "a:", "mode": "all"}),
            "`mode`",
        ),
        (
            json!({"connection": "cache", "prefix": "a:", "validate": "xml"}),
            "`validate`",
        ),
        (
            json!({"connection": "cache", "prefix": "a:", "colour": 1}),
            "colour",
        ),
        (
            json!({"file_cache": {"path": "/c"}}),
            "needs `max_age` or `validate`",
        ),
        (
            json!({"connection": "cache", "prefix": "a:", "degraded_flag": "flag"}),
            "absolute",
        ),
    ] {
        let err = detect_in(&plugin, config.clone(), &none).await.unwrap_err();
        assert!(
            matches!(err, PluginError::BadConfig { .. }),
            "{config}: {err}"
        );
        assert!(err.to_string().contains(expect), "{config}: {err}");
    }
    // Corrupt mode with nothing to tell corrupt keys by: refused before
    // deleting anything (here the prefix is empty anyway).
    if !skip() {
        let p = Prefix::shared();
        let g = grants(common::redis::URL, vec![]);
        let err = remedy_in(
            &plugin,
            json!({"connection": "cache", "prefix": p.prefix}),
            &g,
            &[],
            false,
        )
        .await
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("needs `validate` or `require_ttl`"),
            "{err}"
        );
    }
}

fn file(dir: &Path, name: &str, body: &str, age: Duration) {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, body).unwrap();
    let f = std::fs::File::options().write(true).open(&p).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
}

#[tokio::test]
async fn the_file_cache_loses_corrupt_and_expired_entries_only() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let min = Duration::from_secs(60);
    file(d, "good.json", r#"{"a":1}"#, 10 * min);
    file(d, "bad.json", r#"{"a":"#, 10 * min);
    file(d, "sub/empty.json", "", 10 * min);
    file(d, "old.json", r#"{"a":1}"#, 120 * min);
    file(d, "writing.json", r#"{"a""#, Duration::ZERO); // young: not judged
    file(d, "notes.txt", "not json", 10 * min); // not a cache entry
    std::os::unix::fs::symlink("bad.json", d.join("link.json")).unwrap();
    let outside = tempfile::tempdir().unwrap();
    file(outside.path(), "x.json", "{", 10 * min);
    std::os::unix::fs::symlink(outside.path(), d.join("elsewhere")).unwrap();

    let config = json!({"file_cache": {
        "path": "/cache", "patterns": ["**/*.json"], "max_age": "1h", "validate": "json",
    }});
    let ro = resolved(&dir(d, "/cache", Mode::Ro));
    let rw = resolved(&dir(d, "/cache", Mode::Rw));
    let f = detect_ok(&config, &ro).await;
    assert_eq!(
        codes(&f),
        [
            ("cache.files.corrupt", Status::Fail),
            ("cache.files.expired", Status::Warn)
        ],
        "{f:#?}"
    );
    assert_eq!(f[0].metrics["corrupt"], 2.0);
    assert_eq!(f[0].metrics["files"], 5.0);
    assert_eq!(f[1].metrics["expired"], 1.0);

    let plan = remedy_ok(&config, &rw, &f, true).await;
    assert!(!plan.changed);
    let listed: Vec<&str> = plan
        .steps
        .iter()
        .map(|s| s.split(" (").next().unwrap())
        .collect();
    assert_eq!(
        listed,
        [
            "would delete /cache/bad.json",
            "would delete /cache/old.json",
            "would delete /cache/sub/empty.json"
        ],
        "{plan:#?}"
    );
    assert!(d.join("bad.json").exists());

    let done = remedy_ok(&config, &rw, &f, false).await;
    assert!(done.changed, "{done:#?}");
    for gone in ["bad.json", "old.json", "sub/empty.json"] {
        assert!(!d.join(gone).exists(), "{gone}");
    }
    for kept in ["good.json", "writing.json", "notes.txt"] {
        assert!(d.join(kept).exists(), "{kept}");
    }
    assert!(
        d.join("link.json").symlink_metadata().is_ok(),
        "symlinks stay"
    );
    assert!(outside.path().join("x.json").exists(), "never followed");

    let f = detect_ok(&config, &ro).await;
    assert_eq!(codes(&f), [("cache.ok", Status::Ok)], "{f:#?}");
}

// ---- End to end: the real `mend run` binary, real Redis, the store. ----

/// `mend run` on a config (with the cache-heal plugin) in its own state
/// directory.
struct Mend {
    run: MendRun,
    state: tempfile::TempDir,
}

impl Mend {
    fn start(config_body: &str) -> Mend {
        let state = tempfile::tempdir().unwrap();
        let plugins = state.path().join("plugins");
        std::fs::create_dir(&plugins).unwrap();
        let wasm = Path::new(artifacts::CACHE_HEAL);
        std::fs::copy(wasm, plugins.join(wasm.file_name().unwrap())).unwrap();
        let config = state.path().join("mend.toml");
        std::fs::write(
            &config,
            format!(
                "[engine]\nplugins_dir = \"plugins\"\nstate_dir = \".\"\ninterval = \"500ms\"\n\n[api]\nlisten = \"off\"\n{config_body}"
            ),
        )
        .unwrap();
        Mend {
            run: MendRun::start(&config),
            state,
        }
    }

    fn incidents(&self) -> Vec<Incident> {
        incidents(&self.state.path().join("mend.db"))
    }

    fn incident(&self, policy: &str) -> Option<Incident> {
        self.incidents().into_iter().find(|i| i.policy == policy)
    }

    fn stop(self) {
        self.run.stop();
    }
}

#[test]
fn mend_run_purges_corrupt_keys_and_records_the_heal() {
    if skip() {
        return;
    }
    let mut p = Prefix::shared();
    plant(&mut p);
    let mend = Mend::start(&format!(
        r#"
[connections.cache]
kind = "redis"
url = "{url}"

[[check]]
name = "cache"
plugin = "cache-heal"
jitter = "0s"
grants = {{ connections = ["cache"] }}
config = {{ connection = "cache", prefix = "{prefix}", validate = "json", require_ttl = true }}

[[policy]]
name = "purge-corrupt"
check = "cache"
codes = ["cache.keys.corrupt"]
trigger = {{ consecutive = 2 }}

[[policy.step]]
name = "purge"
action = "cache-heal"
settle = "200ms"
grants = {{ connections = ["cache"] }}
config = {{ connection = "cache", prefix = "{prefix}", validate = "json", require_ttl = true }}
"#,
        url = common::redis::URL,
        prefix = p.prefix
    ));
    wait_for("a healed incident", Duration::from_secs(60), || {
        mend.incident("purge-corrupt")
            .is_some_and(|i| i.state == IncidentState::Healed)
    });
    let inc = mend.incident("purge-corrupt").unwrap();
    assert_eq!(inc.attempts.len(), 1, "{inc:#?}");
    assert_eq!(inc.attempts[0].outcome, AttemptOutcome::Healed);
    let message = inc.attempts[0].detail["outcome"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(message.contains("unlinked 2 corrupt key(s)"), "{inc:#?}");
    mend.stop(); // its probe key must not show up below
    assert_eq!(p.names(), ["counts", "user:1", "user:2"]);
}

#[test]
fn mend_run_degrades_during_an_outage_and_clears_the_flag_when_redis_returns() {
    if skip() {
        return;
    }
    let mut server = Disposable::start();
    let flags = tempfile::tempdir().unwrap();
    let flag = flags.path().join("cache-degraded");
    let fdir = flags.path().display();
    let config =
        r#"{ connection = "cache", prefix = "app:", degraded_flag = "/flags/cache-degraded" }"#;
    let mend = Mend::start(&format!(
        r#"
[connections.cache]
kind = "redis"
url = "{url}"
timeout = "1s"

[[check]]
name = "cache"
plugin = "cache-heal"
jitter = "0s"
grants = {{ connections = ["cache"], dirs = [{{ host = "{fdir}", guest = "/flags" }}] }}
config = {config}

# Redis down: tell the application to bypass it, and a human.
[[policy]]
name = "cache-outage"
check = "cache"
codes = ["cache.unreachable"]
trigger = {{ consecutive = 2 }}
backoff = {{ base = "100ms", jitter = 0.0 }}

[[policy.step]]
name = "degrade"
action = "cache-heal"
settle = "200ms"
grants = {{ connections = ["cache"], dirs = [{{ host = "{fdir}", guest = "/flags", mode = "rw" }}] }}
config = {config}

# Redis back: stop bypassing it.
[[policy]]
name = "cache-recovered"
check = "cache"
codes = ["cache.degraded.stale"]
status = ["warn"]
trigger = {{ consecutive = 1 }}

[[policy.step]]
name = "clear-flag"
action = "cache-heal"
settle = "200ms"
grants = {{ connections = ["cache"], dirs = [{{ host = "{fdir}", guest = "/flags", mode = "rw" }}] }}
config = {config}
"#,
        url = server.url()
    ));

    server.kill();
    wait_for(
        "the degraded flag and an escalated outage",
        Duration::from_secs(60),
        || {
            flag.exists()
                && mend
                    .incident("cache-outage")
                    .is_some_and(|i| i.state == IncidentState::Escalated)
        },
    );
    let outage = mend.incident("cache-outage").unwrap();
    assert_eq!(outage.attempts.len(), 1, "{outage:#?}");
    assert_eq!(
        outage.attempts[0].outcome,
        AttemptOutcome::NotHealed,
        "the flag mitigates; Redis is still down"
    );
    assert!(mend.incident("cache-recovered").is_none());

    server.restart();
    wait_for(
        "the flag to be cleared and the outage to close",
        Duration::from_secs(60),
        || {
            mend.incident("cache-outage")
                .is_some_and(|i| i.state == IncidentState::Recovered)
        },
    );
    assert!(!flag.exists(), "the flag is removed");
    let recovered = mend
        .incident("cache-recovered")
        .expect("a recovery incident");
    assert_eq!(recovered.state, IncidentState::Healed, "{recovered:#?}");
    assert_eq!(recovered.attempts[0].outcome, AttemptOutcome::Healed);
    mend.stop();
}
