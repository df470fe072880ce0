//! The `pg-reconnect` plugin against real PostgreSQL.
//!
//! - Leaked idle-in-transaction sessions in a scratch database are
//!   detected, listed by a dry run, terminated, and the check is healthy
//!   again; sessions of another application or user (a superuser among
//!   them) of the same age survive.
//! - The pool-reset endpoint is POSTed after terminating (only in a real
//!   run, and only to a granted URL).
//! - Connection saturation, and a stopped server, on a disposable server.
//! - End to end through the real `mend run` binary: leaked sessions open
//!   an incident that the action heals; and a disposable server is
//!   stopped, the check reports `db.unreachable`, a `service-restart` step
//!   runs `pg_ctl start`, and the incident closes healed.
//!
//! Tests skip (saying why) only when the PostgreSQL server binaries are
//! absent.

mod common;

use std::path::Path;
use std::time::Duration;

use common::postgres::{self, ScratchDb, ScratchRole, Server};
use common::process::{MendRun, incidents, wait_for};
use common::*;
use mend::capabilities::{Backends, Grants, ResolvedGrants};
use mend::contract::{Finding, Status};
use mend::store::{AttemptOutcome, IncidentState, Store};
use serde_json::json;

fn grants(url: &str) -> ResolvedGrants {
    let backends = Backends::from_toml(&format!(
        "[connections.db]\nkind = \"postgres\"\nurl = \"{url} application_name=mend-test\"\ntimeout = \"5s\"\n"
    ))
    .expect("connection parses");
    Grants {
        connections: vec!["db".into()],
        ..Grants::none()
    }
    .resolve_with(&backends)
    .expect("grants resolve")
}

fn find<'a>(findings: &'a [Finding], code: &str) -> &'a Finding {
    findings
        .iter()
        .find(|f| f.code == code)
        .unwrap_or_else(|| panic!("no `{code}` finding in {findings:#?}"))
}

#[tokio::test]
async fn leaked_idle_transactions_of_one_app_are_terminated_and_no_others() {
    if postgres::skip() {
        return;
    }
    let db = ScratchDb::new();
    let app_role = ScratchRole::new();
    let other_role = ScratchRole::new();
    let leaky = postgres::unique("mend-test-leaky");
    let other_app = postgres::unique("mend-test-bystander");

    // Three leaked sessions of the application, and bystanders of the same
    // age: the same application as another user and as the superuser, and
    // another application as the same user.
    let mut leaked = Vec::new();
    for _ in 0..3 {
        leaked.push(postgres::leak_idle_in_transaction(&db.config(&app_role.name, &leaky)).await);
    }
    let bystanders = [
        postgres::leak_idle_in_transaction(&db.config(&other_role.name, &leaky)).await,
        postgres::leak_idle_in_transaction(&db.config("postgres", &leaky)).await,
        postgres::leak_idle_in_transaction(&db.config(&app_role.name, &other_app)).await,
    ];
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let p = load(artifacts::PG_RECONNECT).await;
    let g = grants(&db.url());
    let detect_config = |apps: Vec<&str>, user: Option<&str>| {
        json!({
            "connection": "db",
            "idle_in_transaction_after": "1s",
            "application_names": apps,
            "user": user,
        })
    };
    let count = |findings: &[Finding]| {
        findings
            .iter()
            .find_map(|f| f.metrics.get("idle_in_transaction").copied())
            .expect("an idle_in_transaction metric")
    };

    // Detected, and the filters narrow it as configured.
    let r = detect_in(&p, detect_config(vec![&leaky], Some(&app_role.name)), &g)
        .await
        .unwrap();
    let f = find(&r.value, "db.idle_in_transaction");
    assert_eq!(f.status, Status::Fail);
    assert_eq!(f.metrics["idle_in_transaction"], 3.0);
    assert!(
        f.metrics["idle_in_transaction_oldest_seconds"] >= 1.0,
        "{f:?}"
    );
    let by_app = detect_in(&p, detect_config(vec![&leaky], None), &g)
        .await
        .unwrap();
    assert_eq!(count(&by_app.value), 5.0);
    let by_user = detect_in(
        &p,
        detect_config(vec![&leaky, &other_app], Some(&app_role.name)),
        &g,
    )
    .await
    .unwrap();
    assert_eq!(count(&by_user.value), 4.0);
    let unfiltered = detect_in(&p, detect_config(vec![], None), &g)
        .await
        .unwrap();
    assert!(count(&unfiltered.value) >= 6.0, "{:?}", unfiltered.value);
    let younger = detect_in(
        &p,
        json!({"connection": "db", "idle_in_transaction_after": "1h", "application_names": [&leaky]}),
        &g,
    )
    .await
    .unwrap();
    assert_eq!(find(&younger.value, "db.ok").status, Status::Ok);

    let ours: Vec<i64> = postgres::sessions(postgres::PORT, &db.name, &leaky)
        .into_iter()
        .filter(|(_, user, _)| *user == app_role.name)
        .map(|(pid, _, _)| pid)
        .collect();
    assert_eq!(ours.len(), 3);
    let action = json!({
        "connection": "db",
        "application_name": leaky,
        "user": app_role.name,
        "older_than": "1s",
    });

    // A dry run lists exactly the three, and terminates nothing.
    let dry = remedy_in(&p, action.clone(), &g, &r.value, true)
        .await
        .unwrap();
    assert!(!dry.value.changed);
    let listed: Vec<&String> = dry
        .value
        .steps
        .iter()
        .filter(|s| s.starts_with("would terminate pid"))
        .collect();
    assert_eq!(listed.len(), 3, "{:?}", dry.value);
    for pid in &ours {
        assert!(
            listed.iter().any(|s| s.contains(&format!("pid {pid} "))
                && s.contains(&leaky)
                && s.contains(&app_role.name)
                && s.contains("idle in transaction")),
            "pid {pid} not listed: {listed:?}"
        );
    }
    assert_eq!(
        postgres::sessions(postgres::PORT, &db.name, &leaky).len(),
        5
    );

    // For real.
    let done = remedy_in(&p, action.clone(), &g, &r.value, false)
        .await
        .unwrap();
    assert!(done.value.changed, "{:?}", done.value);
    let terminated = done
        .value
        .steps
        .iter()
        .filter(|s| s.starts_with("terminated pid"))
        .count();
    assert_eq!(terminated, 3, "{:?}", done.value);

    // Only the bystanders are left, still idle in their transactions.
    wait_for(
        "the terminated sessions to go",
        Duration::from_secs(30),
        || postgres::sessions(postgres::PORT, &db.name, &leaky).len() == 2,
    );
    let left = postgres::sessions(postgres::PORT, &db.name, &leaky);
    let mut users: Vec<&str> = left.iter().map(|(_, u, _)| u.as_str()).collect();
    users.sort();
    let mut expected = vec!["postgres", other_role.name.as_str()];
    expected.sort();
    assert_eq!(users, expected);
    assert!(
        left.iter().all(|(_, _, s)| s == "idle in transaction"),
        "{left:?}"
    );
    let other = postgres::sessions(postgres::PORT, &db.name, &other_app);
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].2, "idle in transaction");
    for (client, _) in &bystanders {
        client
            .simple_query("SELECT 1")
            .await
            .expect("a bystander's session still works");
    }
    for (client, _) in &leaked {
        assert!(
            client.simple_query("SELECT 1").await.is_err(),
            "a leaked session survived"
        );
    }

    // Verification: healthy again.
    let after = detect_in(&p, detect_config(vec![&leaky], Some(&app_role.name)), &g)
        .await
        .unwrap();
    assert_eq!(after.value.len(), 1, "{:?}", after.value);
    assert_eq!(after.value[0].code, "db.ok");
    assert_eq!(after.value[0].metrics["idle_in_transaction"], 0.0);

    // Nothing left to do: a second run terminates nothing, changes nothing.
    let again = remedy_in(&p, action, &g, &after.value, false)
        .await
        .unwrap();
    assert!(!again.value.changed, "{:?}", again.value);
    drop(leaked);
    drop(bystanders);
}

/// A one-thread HTTP server answering every request with `status`; the
/// request lines and bodies it got are sent on the channel.
fn http_server(status: u16) -> (u16, std::sync::mpsc::Receiver<(String, String)>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let (mut length, mut chunked) = (0, false);
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                if h.trim().is_empty() {
                    break;
                }
                let h = h.to_ascii_lowercase();
                if let Some(v) = h.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                chunked |= h.starts_with("transfer-encoding:") && h.contains("chunked");
            }
            let mut body = Vec::new();
            if chunked {
                loop {
                    let mut size = String::new();
                    reader.read_line(&mut size).unwrap();
                    let n = usize::from_str_radix(size.trim(), 16).unwrap();
                    let mut chunk = vec![0; n + 2];
                    reader.read_exact(&mut chunk).unwrap();
                    if n == 0 {
                        break;
                    }
                    body.extend_from_slice(&chunk[..n]);
                }
            } else {
                body.resize(length, 0);
                reader.read_exact(&mut body).unwrap();
            }
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nno"
            );
            if tx
                .send((
                    line.trim().to_string(),
                    String::from_utf8_lossy(&body).into(),
                ))
                .is_err()
            {
                return;
            }
        }
    });
    (port, rx)
}

#[tokio::test]
async fn the_pool_reset_endpoint_is_posted_after_terminating() {
    if postgres::skip() {
        return;
    }
    let db = ScratchDb::new();
    let app_role = ScratchRole::new();
    let leaky = postgres::unique("mend-test-leaky");
    let leaked = postgres::leak_idle_in_transaction(&db.config(&app_role.name, &leaky)).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let (port, requests) = http_server(204);
    let (bad_port, bad_requests) = http_server(500);
    let p = load(artifacts::PG_RECONNECT).await;
    let backends = Backends::from_toml(&format!(
        "[connections.db]\nkind = \"postgres\"\nurl = \"{}\"\n",
        db.url()
    ))
    .unwrap();
    let g = Grants {
        connections: vec!["db".into()],
        urls: vec![
            format!("http://127.0.0.1:{port}/admin/"),
            format!("http://127.0.0.1:{bad_port}/admin/"),
        ],
        ..Grants::none()
    }
    .resolve_with(&backends)
    .unwrap();
    let config = |port: u16| {
        json!({
            "connection": "db",
            "application_name": leaky,
            "user": app_role.name,
            "older_than": "1s",
            "pool_reset_url": format!("http://127.0.0.1:{port}/admin/pool/reset"),
        })
    };

    let dry = remedy_in(&p, config(port), &g, &[], true).await.unwrap();
    assert!(
        dry.value.steps.iter().any(|s| s
            == &format!("would POST http://127.0.0.1:{port}/admin/pool/reset to reset the application's pool")),
        "{:?}",
        dry.value
    );
    assert!(requests.try_recv().is_err(), "a dry run sent a request");

    let done = remedy_in(&p, config(port), &g, &[], false).await.unwrap();
    assert!(done.value.changed);
    assert!(
        done.value.steps[0].starts_with("terminated pid"),
        "{:?}",
        done.value
    );
    let (line, body) = requests
        .recv_timeout(Duration::from_secs(10))
        .expect("the pool reset request");
    assert_eq!(line, "POST /admin/pool/reset HTTP/1.1");
    assert!(body.contains("reason"), "{body}");
    assert!(leaked.0.simple_query("SELECT 1").await.is_err());

    // An endpoint that answers an error fails the step, naming it.
    let err = remedy_in(&p, config(bad_port), &g, &[], false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("answered 500"), "{err}");
    assert!(err.to_string().contains("/admin/pool/reset"), "{err}");
    bad_requests
        .recv_timeout(Duration::from_secs(10))
        .expect("the failing endpoint was called");
    // A URL outside the grant (same server, another path) is refused and
    // never sent.
    let mut outside = config(port);
    outside["pool_reset_url"] = json!(format!("http://127.0.0.1:{port}/other/reset"));
    let err = remedy_in(&p, outside, &g, &[], false).await.unwrap_err();
    assert!(err.to_string().contains("/other/reset"), "{err}");
    assert!(
        requests.recv_timeout(Duration::from_millis(500)).is_err(),
        "an ungranted URL was sent a request"
    );
}

#[tokio::test]
async fn the_action_refuses_configs_that_could_reach_other_sessions() {
    let p = load(artifacts::PG_RECONNECT).await;
    // Grants name a connection that is never opened: config checks come
    // first.
    let g = grants("host=127.0.0.1 port=1 user=nobody dbname=none");
    for (config, why) in [
        (
            json!({"connection": "db", "application_name": "", "user": "app", "older_than": "1m"}),
            "application_name",
        ),
        (
            json!({"connection": "db", "application_name": "app", "older_than": "1m"}),
            "user",
        ),
        (
            json!({"connection": "db", "application_name": "app", "user": "app", "older_than": "1m", "states": ["active"]}),
            "active",
        ),
    ] {
        let err = remedy_in(&p, config, &g, &[], true).await.unwrap_err();
        assert!(
            matches!(err, mend::runtime::PluginError::BadConfig { .. }),
            "{err}"
        );
        assert!(err.to_string().contains(why), "{err}");
    }
}

#[tokio::test]
async fn saturation_is_measured_against_max_connections() {
    if postgres::skip() {
        return;
    }
    // max_connections = 20 on the disposable server.
    let server = Server::start();
    let p = load(artifacts::PG_RECONNECT).await;
    let g = grants(&server.url());
    let config = json!({
        "connection": "db",
        "warn_connections_percent": 50,
        "fail_connections_percent": 90,
    });
    let r = detect_in(&p, config.clone(), &g).await.unwrap();
    let ok = find(&r.value, "db.ok");
    assert_eq!(ok.metrics["max_connections"], 20.0);
    assert!(ok.metrics["connections"] < 10.0, "{ok:?}");

    let mut c = tokio_postgres::Config::new();
    c.host(postgres::HOST)
        .port(server.port)
        .user("postgres")
        .dbname("postgres")
        .application_name("mend-test-filler");
    let mut held = Vec::new();
    let mut hold = async |n: usize| {
        for _ in 0..n {
            held.push(postgres::leak_idle_in_transaction(&c).await);
        }
    };
    hold(12).await;
    let r = detect_in(&p, config.clone(), &g).await.unwrap();
    let f = find(&r.value, "db.connections.high");
    assert_eq!(f.status, Status::Warn, "{f:?}");
    assert!(f.metrics["connections"] >= 12.0, "{f:?}");
    hold(5).await;
    let r = detect_in(&p, config, &g).await.unwrap();
    let f = find(&r.value, "db.connections.high");
    assert_eq!(f.status, Status::Fail, "{f:?}");
    assert!(f.metrics["connections_percent"] >= 90.0, "{f:?}");
}

#[tokio::test]
async fn a_stopped_server_is_unreachable() {
    if postgres::skip() {
        return;
    }
    let server = Server::start();
    let p = load(artifacts::PG_RECONNECT).await;
    let g = grants(&server.url());
    let config = json!({"connection": "db", "timeout": "2s"});
    let up = detect_in(&p, config.clone(), &g).await.unwrap();
    assert_eq!(up.value[0].code, "db.ok", "{:?}", up.value);
    server.stop();
    let down = detect_in(&p, config, &g).await.unwrap();
    let f = find(&down.value, "db.unreachable");
    assert_eq!(f.status, Status::Fail);
    assert!(f.summary.contains("`db`"), "{f:?}");
}

// ---- end to end through `mend run` ----

fn statuses(db: &Path) -> Vec<String> {
    if !db.exists() {
        return Vec::new();
    }
    Store::open_read_only(db)
        .and_then(|s| s.history("db", 100))
        .map(|h| h.into_iter().map(|r| r.status).collect())
        .unwrap_or_default()
}

#[test]
fn mend_run_restarts_a_stopped_server_through_service_restart() {
    if postgres::skip() {
        return;
    }
    let server = Server::start();
    let state = tempfile::tempdir().unwrap();
    let plugins = state.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    for p in [artifacts::PG_RECONNECT, artifacts::SERVICE_RESTART] {
        std::fs::copy(p, plugins.join(Path::new(p).file_name().unwrap())).unwrap();
    }
    let argv = serde_json::to_string(&server.start_argv()).unwrap();
    let config = state.path().join("mend.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[engine]
plugins_dir = "plugins"
state_dir = "."
interval = "300ms"

[api]
listen = "off"

[connections.db]
kind = "postgres"
url = "{url} application_name=mend"
timeout = "2s"

[commands.start-db]
argv = {argv}
timeout = "90s"

[[check]]
name = "db"
plugin = "pg-reconnect"
jitter = "0s"
grants = {{ connections = ["db"] }}
config = {{ connection = "db", timeout = "1s" }}

[[policy]]
name = "restart-db"
check = "db"
codes = ["db.unreachable"]
trigger = {{ consecutive = 1 }}
backoff = {{ base = "100ms", jitter = 0.0 }}

[[policy.step]]
name = "start-db"
action = "service-restart"
settle = "300ms"
limits = {{ deadline = "100s" }}
grants = {{ commands = ["start-db"], state = true }}
config = {{ command = "start-db", start_limit_burst = 3, start_limit_interval = "10m" }}
"#,
            url = server.url()
        ),
    )
    .unwrap();
    let store = state.path().join("mend.db");
    let _mend = MendRun::start(&config);

    wait_for("the check to pass", Duration::from_secs(60), || {
        statuses(&store).iter().any(|s| s == "ok")
    });
    assert!(incidents(&store).is_empty());

    server.stop();
    wait_for("a healed incident", Duration::from_secs(120), || {
        incidents(&store)
            .first()
            .is_some_and(|i| i.state == IncidentState::Healed)
    });
    assert!(server.is_up(), "the server runs again");
    let inc = &incidents(&store)[0];
    assert_eq!(inc.policy, "restart-db");
    assert_eq!(inc.attempts.len(), 1, "{inc:#?}");
    assert_eq!(inc.attempts[0].action, "start-db");
    assert!(
        inc.attempts[0]
            .detail
            .to_string()
            .contains("ran `start-db`"),
        "{:#}",
        inc.attempts[0].detail
    );
    assert_eq!(inc.attempts[0].outcome, AttemptOutcome::Healed);
    assert!(
        inc.diagnosis.to_string().contains("db.unreachable"),
        "{:#}",
        inc.diagnosis
    );
    let seen = statuses(&store);
    assert!(seen.iter().any(|s| s == "fail"), "{seen:?}");
    assert_eq!(seen.first().map(String::as_str), Some("ok"), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mend_run_terminates_leaked_sessions_and_the_incident_heals() {
    if postgres::skip() {
        return;
    }
    let db = ScratchDb::new();
    let app_role = ScratchRole::new();
    let other_role = ScratchRole::new();
    let leaky = postgres::unique("mend-test-leaky");
    let mut leaked = Vec::new();
    for _ in 0..4 {
        leaked.push(postgres::leak_idle_in_transaction(&db.config(&app_role.name, &leaky)).await);
    }
    let bystander = postgres::leak_idle_in_transaction(&db.config(&other_role.name, &leaky)).await;

    let state = tempfile::tempdir().unwrap();
    let plugins = state.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::fs::copy(
        artifacts::PG_RECONNECT,
        plugins.join(Path::new(artifacts::PG_RECONNECT).file_name().unwrap()),
    )
    .unwrap();
    let config = state.path().join("mend.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[engine]
plugins_dir = "plugins"
state_dir = "."
interval = "300ms"

[api]
listen = "off"

[connections.db]
kind = "postgres"
url = "{url} application_name=mend"

[[check]]
name = "db"
plugin = "pg-reconnect"
jitter = "0s"
grants = {{ connections = ["db"] }}
config = {{ connection = "db", idle_in_transaction_after = "1s", application_names = ["{leaky}"], user = "{user}" }}

[[policy]]
name = "unstick"
check = "db"
codes = ["db.idle_in_transaction"]
trigger = {{ consecutive = 1 }}
backoff = {{ base = "100ms", jitter = 0.0 }}

[[policy.step]]
name = "terminate-idle"
action = "pg-reconnect"
settle = "300ms"
grants = {{ connections = ["db"] }}
config = {{ connection = "db", application_name = "{leaky}", user = "{user}", older_than = "1s" }}
"#,
            url = db.url(),
            user = app_role.name,
        ),
    )
    .unwrap();
    let store = state.path().join("mend.db");
    let _mend = MendRun::start(&config);

    let healed = tokio::task::spawn_blocking(move || {
        wait_for("a healed incident", Duration::from_secs(120), || {
            incidents(&store)
                .first()
                .is_some_and(|i| i.state == IncidentState::Healed)
        });
        (incidents(&store), statuses(&store))
    })
    .await
    .unwrap();
    let (incidents, seen) = healed;
    let inc = &incidents[0];
    assert_eq!(inc.policy, "unstick");
    assert_eq!(inc.attempts.len(), 1, "{inc:#?}");
    assert_eq!(inc.attempts[0].action, "terminate-idle");
    assert_eq!(inc.attempts[0].outcome, AttemptOutcome::Healed);
    let detail = inc.attempts[0].detail.to_string();
    assert_eq!(detail.matches("terminated pid").count(), 4, "{detail}");
    assert!(
        inc.diagnosis.to_string().contains("db.idle_in_transaction"),
        "{:#}",
        inc.diagnosis
    );
    assert!(seen.iter().any(|s| s == "fail"), "{seen:?}");

    // The leaked sessions are gone; the other user's is untouched.
    for (client, _) in &leaked {
        assert!(client.simple_query("SELECT 1").await.is_err());
    }
    bystander
        .0
        .simple_query("SELECT 1")
        .await
        .expect("the other user's session still works");
    let left = postgres::sessions(postgres::PORT, &db.name, &leaky);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].1, other_role.name);
}

// ---- a full server is not a down server ----

#[tokio::test]
async fn a_full_server_is_exhausted_not_down_and_the_action_acts_through_reserved_slots() {
    if postgres::skip() {
        return;
    }
    // 5 slots, 2 kept for superusers: ordinary roles get 3.
    let server = Server::start_with("max_connections = 5\nsuperuser_reserved_connections = 2");
    postgres::psql(server.port, "postgres", "CREATE ROLE app LOGIN");
    let role = |user: &str, app: &str| {
        let mut c = tokio_postgres::Config::new();
        c.host(postgres::HOST)
            .port(server.port)
            .user(user)
            .dbname("postgres")
            .application_name(app);
        c
    };
    let backends = Backends::from_toml(&format!(
        "[connections.appdb]\nkind = \"postgres\"\nurl = \"host={h} port={p} user=app dbname=postgres application_name=mend\"\ntimeout = \"3s\"\n\
         [connections.admin]\nkind = \"postgres\"\nurl = \"host={h} port={p} user=postgres dbname=postgres application_name=mend-admin\"\ntimeout = \"3s\"\n",
        h = postgres::HOST,
        p = server.port
    ))
    .unwrap();
    let g = Grants {
        connections: vec!["appdb".into(), "admin".into()],
        ..Grants::none()
    }
    .resolve_with(&backends)
    .unwrap();
    let p = load(artifacts::PG_RECONNECT).await;
    let detect_cfg =
        json!({"connection": "appdb", "reserved_connection": "admin", "timeout": "3s"});
    let up = detect_in(&p, detect_cfg.clone(), &g).await.unwrap();
    assert_eq!(up.value[0].code, "db.ok", "{:?}", up.value);

    // A leaking pool takes every ordinary slot.
    let mut leaked = Vec::new();
    for _ in 0..3 {
        leaked.push(postgres::leak_idle_in_transaction(&role("app", "webapp")).await);
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let full = detect_in(&p, detect_cfg.clone(), &g).await.unwrap();
    let f = find(&full.value, "db.connections.exhausted");
    assert_eq!(f.status, Status::Fail);
    assert!(f.labels["error"].contains("53300"), "{f:?}");
    assert!(full.value.iter().all(|f| f.code != "db.unreachable"));
    // Measured through the reserved slot: the app's 3 (and the probe's).
    assert!(f.metrics["connections"] >= 3.0, "{f:?}");
    assert_eq!(f.metrics["max_connections"], 5.0, "{f:?}");

    let terminate = json!({
        "connection": "appdb", "application_name": "webapp", "user": "app", "older_than": "1s",
    });
    // Through the full ordinary role, the action cannot even connect...
    let e = remedy_in(&p, terminate.clone(), &g, &[], false)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("53300"), "{e}");
    // ...through the reserved one it can.
    let mut reserved = terminate;
    reserved["reserved_connection"] = json!("admin");
    let out = remedy_in(&p, reserved, &g, &[], false).await.unwrap().value;
    assert!(out.changed, "{out:?}");
    assert_eq!(
        out.steps
            .iter()
            .filter(|s| s.starts_with("terminated"))
            .count(),
        3,
        "{out:?}"
    );
    let healed = detect_in(&p, detect_cfg.clone(), &g).await.unwrap();
    assert_eq!(healed.value[0].code, "db.ok", "{:?}", healed.value);

    // Control: a stopped server is still `db.unreachable`.
    drop(leaked);
    server.stop();
    let down = detect_in(&p, detect_cfg, &g).await.unwrap();
    find(&down.value, "db.unreachable");
}

/// The dead-end escalation of issue 11, which now heals: the leaked
/// sessions are too young to terminate (`older_than = "6s"`), so the
/// ladder changes nothing and escalates; mend keeps evaluating, sees the
/// step would now act (its dry run lists the sessions), walks the ladder
/// again on the same incident and heals it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mend_run_retries_after_escalation_once_the_sessions_are_old_enough() {
    if postgres::skip() {
        return;
    }
    let db = ScratchDb::new();
    let app_role = ScratchRole::new();
    let leaky = postgres::unique("mend-test-young");
    let mut leaked = Vec::new();
    for _ in 0..3 {
        leaked.push(postgres::leak_idle_in_transaction(&db.config(&app_role.name, &leaky)).await);
    }
    let state = tempfile::tempdir().unwrap();
    let plugins = state.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::fs::copy(
        artifacts::PG_RECONNECT,
        plugins.join(Path::new(artifacts::PG_RECONNECT).file_name().unwrap()),
    )
    .unwrap();
    let config = state.path().join("mend.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[engine]
plugins_dir = "plugins"
state_dir = "."
interval = "300ms"

[api]
listen = "off"

[connections.db]
kind = "postgres"
url = "{url} application_name=mend"

[[check]]
name = "db"
plugin = "pg-reconnect"
jitter = "0s"
grants = {{ connections = ["db"] }}
config = {{ connection = "db", idle_in_transaction_after = "1s", application_names = ["{leaky}"], user = "{user}" }}

[[policy]]
name = "unstick"
check = "db"
codes = ["db.idle_in_transaction"]
trigger = {{ consecutive = 1 }}
backoff = {{ base = "100ms", jitter = 0.0 }}

[[policy.step]]
name = "terminate-idle"
action = "pg-reconnect"
settle = "300ms"
grants = {{ connections = ["db"] }}
config = {{ connection = "db", application_name = "{leaky}", user = "{user}", older_than = "6s" }}
"#,
            url = db.url(),
            user = app_role.name,
        ),
    )
    .unwrap();
    let store = state.path().join("mend.db");
    let _mend = MendRun::start(&config);

    let store2 = store.clone();
    let escalated = tokio::task::spawn_blocking(move || {
        wait_for("an escalated incident", Duration::from_secs(60), || {
            incidents(&store2)
                .first()
                .is_some_and(|i| i.state == IncidentState::Escalated)
        });
        incidents(&store2)
    })
    .await
    .unwrap();
    assert_eq!(
        escalated[0].attempts[0].detail["outcome"]["changed"], false,
        "too young: {:#?}",
        escalated[0]
    );
    let healed = tokio::task::spawn_blocking(move || {
        wait_for("the same incident healed", Duration::from_secs(60), || {
            incidents(&store)
                .first()
                .is_some_and(|i| i.state == IncidentState::Healed)
        });
        incidents(&store)
    })
    .await
    .unwrap();
    assert_eq!(healed.len(), 1, "the same incident: {healed:#?}");
    let inc = &healed[0];
    let kinds: Vec<&str> = inc.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["escalated", "retry"], "{inc:#?}");
    assert!(
        inc.events[1].reason.contains("would terminate"),
        "{:?}",
        inc.events[1]
    );
    let last = inc.attempts.last().unwrap();
    assert_eq!(last.outcome, AttemptOutcome::Healed, "{inc:#?}");
    assert_eq!(
        last.detail.to_string().matches("terminated pid").count(),
        3,
        "{inc:#?}"
    );
    for (client, _) in &leaked {
        assert!(client.simple_query("SELECT 1").await.is_err());
    }
}
