//! Hostile plugins against the host's backend paths (PostgreSQL, Redis,
//! commands). Each attack ends in its typed error, and the host-side
//! bound is checked where it is kept: the host's own peak RSS (from
//! /proc/self/status) while a huge reply arrives, the server's session
//! state on the next call, the database server's file system, and /proc
//! after a command's timeout.
//!
//! The tests take one lock, so no two measure memory at once.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::memory::{mib, peak_growth};
use common::*;
use mend::capabilities::sql::{MAX_BYTES, RoleRisk};
use mend::capabilities::sql::{QueryOptions as Options, Value};
use mend::capabilities::{Backends, Connection, Grants, ResolvedGrants};
use mend::runtime::{Limits, PluginError};
use serde_json::json;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn granted_commands(b: &Backends, names: &[&str]) -> ResolvedGrants {
    Grants {
        commands: names.iter().map(|n| n.to_string()).collect(),
        ..Grants::none()
    }
    .resolve_with(b)
    .unwrap()
}

fn granted_connections(b: &Backends, names: &[&str]) -> ResolvedGrants {
    Grants {
        connections: names.iter().map(|n| n.to_string()).collect(),
        ..Grants::none()
    }
    .resolve_with(b)
    .unwrap()
}

/// Limits roomy enough that only the host's bounds can end the call.
fn roomy() -> Limits {
    Limits {
        deadline: Duration::from_secs(60),
        ..Limits::default()
    }
}

fn sql(conn: &str, statement: &str) -> serde_json::Value {
    json!({"mode": "sql", "name": conn, "path": statement})
}

fn postgres(
    g: &ResolvedGrants,
    name: &str,
) -> std::sync::Arc<mend::capabilities::sql::PgConnection> {
    g.connections
        .iter()
        .find_map(|c| match c {
            Connection::Postgres(p) if p.name == name => Some(p.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no PostgreSQL connection `{name}`"))
}

const SHARED: Options = Options {
    fresh: false,
    timeout_ms: None,
    read_only: false,
};

#[tokio::test]
async fn a_huge_postgres_reply_is_refused_before_the_host_holds_it() {
    if common::postgres::skip() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let b = Backends::from_toml(
        r#"
[connections.db]
kind = "postgres"
url = "host=127.0.0.1 user=postgres dbname=postgres application_name=mend-hostile-huge"
timeout = "30s"
"#,
    )
    .unwrap();
    let g = granted_connections(&b, &["db"]);
    let p = load(artifacts::HOSTILE).await;
    // Warm up the instance, the session and the allocator with a result
    // just under the limit, then measure a trivial call.
    detect_in_with(&p, sql("db", "SELECT repeat('x', 3000000)"), &g, roomy())
        .await
        .expect("a result under the limit");
    let (r, baseline) =
        peak_growth(async || detect_in_with(&p, sql("db", "SELECT 1"), &g, roomy()).await).await;
    r.unwrap();
    let bound = baseline + 2 * MAX_BYTES as u64;
    for (statement, want) in [
        // One 400 MB value.
        (
            "SELECT repeat('x', 400000000)",
            format!("the result is larger than {MAX_BYTES} bytes"),
        ),
        // 9,000 rows of 1 kB: under the row limit, over the byte limit.
        (
            "SELECT repeat('x', 1000) FROM generate_series(1, 9000)",
            format!("the result is larger than {MAX_BYTES} bytes"),
        ),
        // An error message that quotes a 100 MB value.
        (
            "SELECT repeat('x', 100000000)::int",
            format!("the server's error message is larger than {MAX_BYTES} bytes"),
        ),
    ] {
        let (r, growth) =
            peak_growth(async || detect_in_with(&p, sql("db", statement), &g, roomy()).await).await;
        eprintln!(
            "{statement}: host peak +{} (a trivial call: +{})",
            mib(growth),
            mib(baseline)
        );
        let err = r.expect_err(statement);
        // A host limit, as the plugin saw it (the SDK's `Error::Limit`).
        assert!(
            matches!(&err, PluginError::Failed { message, .. } if message.starts_with("limit: ")),
            "{statement}: {err}"
        );
        assert!(err.to_string().contains(&want), "{statement}: {err}");
        assert!(err.to_string().contains("connection `db`"), "{err}");
        assert!(
            growth < bound,
            "{statement}: the host's peak grew by {}, over {}",
            mib(growth),
            mib(bound)
        );
    }
    // The server is not left producing the abandoned result.
    let active = || {
        common::postgres::psql(
            common::postgres::PORT,
            "postgres",
            "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name = 'mend-hostile-huge' AND state = 'active'",
        )
    };
    let start = Instant::now();
    while active() != "0" && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        active(),
        "0",
        "a refused statement kept running on the server"
    );
    // The connection serves again (on a new session), and so does the host.
    let r = detect_in_with(&p, sql("db", "SELECT 1"), &g, roomy())
        .await
        .unwrap();
    assert_eq!(r.value[0].summary, "1");
    still_serving().await;
}

#[tokio::test]
async fn a_huge_redis_reply_is_refused_before_the_host_holds_it() {
    if let Some(why) = common::redis::unavailable() {
        eprintln!("{why}");
        return;
    }
    let _serial = SERIAL.lock().await;
    let server = common::redis::Disposable::start();
    let url = server.url();
    let mut con = common::redis::connect(&url);
    // 400 MB, made on the server (SETRANGE is not for plugins).
    let len: i64 = common::redis::run(&mut con, &["SETRANGE", "big", "399999999", "x"]);
    assert_eq!(len, 400_000_000);
    common::redis::run::<()>(&mut con, &["SET", "small", "v"]);

    let b = Backends::from_toml(&format!(
        "[connections.cache]\nkind = \"redis\"\nurl = \"{url}\"\ntimeout = \"30s\"\n"
    ))
    .unwrap();
    let g = granted_connections(&b, &["cache"]);
    let p = load(artifacts::HOSTILE).await;
    let redis = |args: Vec<String>| json!({"mode": "redis", "name": "cache", "args": args});
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    detect_in_with(&p, redis(args(&["GET", "small"])), &g, roomy())
        .await
        .unwrap();
    let (r, baseline) =
        peak_growth(async || detect_in_with(&p, redis(args(&["GET", "small"])), &g, roomy()).await)
            .await;
    assert_eq!(r.unwrap().value[0].summary, "v");
    let bound = baseline + 2 * mend::capabilities::redis::MAX_REPLY_BYTES as u64;

    for (attack, want) in [
        (args(&["GET", "big"]), "reply limit"),
        (args(&["GETRANGE", "big", "0", "-1"]), "reply limit"),
        // Last: it replaces the value while it returns the old one.
        (args(&["SET", "big", "y", "GET"]), "reply limit"),
    ] {
        let what = attack[..2].join(" ");
        let (r, growth) =
            peak_growth(async || detect_in_with(&p, redis(attack), &g, roomy()).await).await;
        eprintln!(
            "redis {what}: host peak +{} (a trivial call: +{})",
            mib(growth),
            mib(baseline)
        );
        let err = r.expect_err(&what);
        assert!(
            matches!(&err, PluginError::Failed { message, .. } if message.starts_with("limit: ")),
            "{what}: {err}"
        );
        assert!(err.to_string().contains(want), "{what}: {err}");
        assert!(err.to_string().contains("connection `cache`"), "{err}");
        assert!(
            growth < bound,
            "{what}: the host's peak grew by {}, over {}",
            mib(growth),
            mib(bound)
        );
    }
    // 60,000 keys: each reply value is tiny, together too many. (No
    // memory bound here: the request itself is large in the guest and
    // the host.)
    let mut mget = vec!["MGET".to_string()];
    mget.extend((0..60_000).map(|i| format!("missing-{i}")));
    let err = detect_in_with(&p, redis(mget), &g, roomy())
        .await
        .expect_err("a reply of 60,000 values");
    assert!(
        matches!(&err, PluginError::Failed { message, .. } if message.starts_with("limit: ")),
        "{err}"
    );
    assert!(err.to_string().contains("50000-value reply limit"), "{err}");
    // The SET went through on the server: the refusal is of the reply.
    let now: String = common::redis::run(&mut con, &["GET", "big"]);
    assert_eq!(now, "y");
    // The connection serves again, and so does the host.
    let r = detect_in_with(&p, redis(args(&["PING"])), &g, roomy())
        .await
        .unwrap();
    assert_eq!(r.value[0].summary, "PONG");
    still_serving().await;
}

#[tokio::test]
async fn nothing_prepared_in_one_call_is_there_for_the_next() {
    if common::postgres::skip() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let db = common::postgres::ScratchDb::new();
    db.psql("CREATE TYPE mend_mood AS ENUM ('ok', 'sad'); CREATE TYPE mend_mood2 AS ENUM ('ok')");
    let b = Backends::from_toml(&format!(
        "[connections.rw]\nkind = \"postgres\"\nurl = \"{}\"\n",
        db.url()
    ))
    .unwrap();
    let g = granted_connections(&b, &["rw"]);
    let pg = postgres(&g, "rw");
    let p = load(artifacts::HOSTILE).await;
    let backend = async || match pg.query("SELECT pg_backend_pid()", &[], &SHARED).await {
        Ok(rows) => match rows.rows[0][0] {
            Value::Int(pid) => pid,
            ref v => panic!("pid {v:?}"),
        },
        Err(e) => panic!("{e}"),
    };

    let session = backend().await;
    detect_in(&p, sql("rw", "PREPARE mend_leak AS SELECT 42"), &g)
        .await
        .expect("PREPARE runs");
    // The next call runs on the very same session...
    assert_eq!(backend().await, session, "the shared session was replaced");
    let r = detect_in(
        &p,
        sql(
            "rw",
            "SELECT name FROM pg_prepared_statements WHERE from_sql",
        ),
        &g,
    )
    .await
    .unwrap();
    // ...and finds nothing prepared in SQL.
    assert_eq!(
        r.value[0].summary, "0",
        "an SQL-level prepared statement survived"
    );
    let err = detect_in(&p, sql("rw", "EXECUTE mend_leak"), &g)
        .await
        .expect_err("EXECUTE of another call's statement");
    assert!(err.to_string().contains("does not exist"), "{err}");

    // DISCARD ALL also drops the statements tokio-postgres caches to look
    // up types that are not built in: a session that cached one is not
    // reused, so the next lookup (of another type) still works.
    let mood = pg
        .execute("SELECT 'ok'::mend_mood", &[], &SHARED)
        .await
        .expect("a custom type");
    assert_eq!(mood, 1);
    pg.execute("SELECT 'ok'::mend_mood2", &[], &SHARED)
        .await
        .expect("another custom type, on the next session");
    pg.execute("SELECT 'sad'::mend_mood", &[], &SHARED)
        .await
        .expect("and back");
    still_serving().await;
}

#[tokio::test]
async fn a_read_only_connection_refuses_a_role_that_can_get_past_it() {
    if common::postgres::skip() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let db = common::postgres::ScratchDb::new();
    let reader = common::postgres::ScratchRole::new();
    let files = common::postgres::ScratchRole::new();
    let admin = common::postgres::ScratchRole::new();
    let member = common::postgres::ScratchRole::new();
    let ps = |sql: &str| common::postgres::psql(common::postgres::PORT, "postgres", sql);
    ps(&format!("GRANT pg_read_server_files TO {}", files.name));
    ps(&format!("ALTER ROLE {} SUPERUSER", admin.name));
    ps(&format!("GRANT {} TO {}", admin.name, member.name));
    // Where COPY ... TO PROGRAM would leave its mark (the server runs as
    // another OS user).
    let marks = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        marks.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let mark = marks.path().join("ran");
    let conn = |name: &str, user: &str, ro: bool| {
        format!(
            "[connections.{name}]\nkind = \"postgres\"\nurl = \"host=127.0.0.1 user={user} dbname={}\"\nread_only = {ro}\n",
            db.name
        )
    };
    let b = Backends::from_toml(
        &[
            conn("ro_su", "postgres", true),
            conn("ro_files", &files.name, true),
            conn("ro_member", &member.name, true),
            conn("ro", &reader.name, true),
            conn("rw_su", "postgres", false),
        ]
        .concat(),
    )
    .unwrap();
    let g = granted_connections(&b, &["ro_su", "ro_files", "ro_member", "ro", "rw_su"]);

    // The public check, for config validation.
    let risks = postgres(&g, "ro_su").role_risks().await.unwrap();
    assert_eq!(
        (risks.role.as_str(), &risks.risks[..]),
        ("postgres", &[RoleRisk::Superuser][..])
    );
    let risks = postgres(&g, "ro_files").role_risks().await.unwrap();
    assert_eq!(
        risks.risks,
        [RoleRisk::ServerAccess {
            role: "pg_read_server_files".into()
        }]
    );
    let risks = postgres(&g, "ro_member").role_risks().await.unwrap();
    assert_eq!(
        risks.risks,
        [RoleRisk::SuperuserMember {
            role: admin.name.clone()
        }]
    );
    let risks = postgres(&g, "ro").role_risks().await.unwrap();
    assert!(risks.is_empty(), "{risks:?}");
    assert_eq!(risks.role, reader.name);
    assert!(
        postgres(&g, "ro_su")
            .role_risks()
            .await
            .unwrap()
            .refusal("ro_su")
            .unwrap()
            .contains("connection `ro_su`")
    );

    // Every statement on a read-only connection with such a role is
    // refused, before it runs.
    let p = load(artifacts::HOSTILE).await;
    let copy = format!("COPY (SELECT 1) TO PROGRAM 'touch {}'", mark.display());
    for (name, role, what) in [
        (
            "ro_su",
            "postgres".to_string(),
            "is a superuser".to_string(),
        ),
        (
            "ro_files",
            files.name.clone(),
            "`pg_read_server_files`".to_string(),
        ),
        (
            "ro_member",
            member.name.clone(),
            format!("superuser role `{}`", admin.name),
        ),
    ] {
        let err = detect_in(&p, sql(name, &copy), &g)
            .await
            .expect_err("a statement on a read-only connection with a risky role");
        assert!(matches!(err, PluginError::Denied { .. }), "{name}: {err}");
        let msg = err.to_string();
        for want in [
            format!("connection `{name}`"),
            format!("role `{role}`"),
            what,
        ] {
            assert!(msg.contains(&want), "{name}: {want:?} not in {msg}");
        }
        // A fresh session is checked too.
        let fresh = Options {
            fresh: true,
            ..Options::default()
        };
        let e = postgres(&g, name)
            .query("SELECT 1", &[], &fresh)
            .await
            .unwrap_err();
        assert!(matches!(e, mend::contract::HostError::Denied(_)), "{e}");
    }
    assert!(
        !mark.exists(),
        "COPY ... TO PROGRAM ran on a read-only connection"
    );

    // Controls: a plain role on a read-only connection works (and cannot
    // write); a superuser without the read-only promise is not refused.
    let r = detect_in(&p, sql("ro", "SELECT 1"), &g).await.unwrap();
    assert_eq!(r.value[0].summary, "1");
    let err = detect_in(&p, sql("ro", "CREATE TABLE mend_nope (x int)"), &g)
        .await
        .expect_err("a write on a read-only connection");
    assert!(err.to_string().contains("read-only"), "{err}");
    let r = detect_in(&p, sql("rw_su", "SELECT 1"), &g).await.unwrap();
    assert_eq!(r.value[0].summary, "1");
    still_serving().await;
}

/// Pid in `file`, written by the command.
fn pid_in(file: &Path) -> i32 {
    std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .trim()
        .parse()
        .unwrap()
}

/// Whether `pid` runs (a zombie holds nothing and runs nothing).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        let state = s
            .rsplit_once(')')
            .map(|(_, r)| r.trim_start())
            .unwrap_or("");
        !state.starts_with('Z') && !state.starts_with('X')
    })
}

/// Waits up to 5 s for `pid` to die; whether it did.
async fn dies(pid: i32) -> bool {
    let start = Instant::now();
    while alive(pid) {
        if start.elapsed() > Duration::from_secs(5) {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// mend's leftover cgroups for commands of this process.
fn leftover_cgroups() -> Vec<String> {
    let Some(parent) = mend::capabilities::exec::cgroup_parent() else {
        return vec![];
    };
    let mine = format!("mend-cmd.{}.", std::process::id());
    std::fs::read_dir(parent)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(&mine))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn every_process_of_a_timed_out_command_dies() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    // A grandchild in a session of its own, an orphan (its parent exits
    // at once), and an orphan in a session of its own.
    let script = format!(
        r#"setsid sh -c 'echo $$ > {d}/setsid; exec sleep 60' &
sh -c 'sh -c "echo \$\$ > {d}/orphan; exec sleep 60" & exit 0'
setsid sh -c 'sh -c "echo \$\$ > {d}/setsid-orphan; exec sleep 60" & exit 0'
while [ ! -s {d}/setsid ] || [ ! -s {d}/orphan ] || [ ! -s {d}/setsid-orphan ]; do sleep 0.05; done
echo $$ > {d}/command
sleep 60"#
    );
    let daemon = format!(
        r#"setsid sh -c 'sh -c "echo \$\$ > {d}/daemon; exec sleep 60" & exit 0'
while [ ! -s {d}/daemon ]; do sleep 0.05; done"#
    );
    let b = Backends::from_toml(&format!(
        "[commands.tree]\nargv = [\"/bin/sh\", \"-c\", {script:?}]\ntimeout = \"3s\"\n\
         [commands.daemon]\nargv = [\"/bin/sh\", \"-c\", {daemon:?}]\ntimeout = \"10s\"\n"
    ))
    .unwrap();
    let g = granted_commands(&b, &["tree", "daemon"]);
    let p = load(artifacts::HOSTILE).await;
    let exec = |name: &str| json!({"mode": "exec-status", "name": name});

    let r = detect_in_with(&p, exec("tree"), &g, roomy()).await.unwrap();
    assert!(
        r.value[0].summary.starts_with("timed out"),
        "{}",
        r.value[0].summary
    );
    for name in ["command", "setsid", "orphan", "setsid-orphan"] {
        let pid = pid_in(&dir.path().join(name));
        assert!(
            dies(pid).await,
            "{name} (pid {pid}) survived the command's timeout"
        );
    }
    assert_eq!(
        leftover_cgroups(),
        Vec::<String>::new(),
        "cgroups left behind"
    );

    // Control: what a command that succeeds leaves running stays running.
    let r = detect_in_with(&p, exec("daemon"), &g, roomy())
        .await
        .unwrap();
    assert!(
        r.value[0].summary.starts_with("exited with 0"),
        "{}",
        r.value[0].summary
    );
    let pid = pid_in(&dir.path().join("daemon"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let survived = alive(pid);
    if let Some(p) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
    }
    assert!(
        survived,
        "the daemon a successful command started was killed"
    );
    assert_eq!(
        leftover_cgroups(),
        Vec::<String>::new(),
        "cgroups left behind"
    );
    still_serving().await;
}
