//! The generic actions for real: `command` runs commands defined under
//! `[commands]` (and, as a check, judges them like Monit's `check program`
//! or a Nagios plugin), `http-call` sends a request to a local server,
//! `rollback` switches a real releases directory.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use mend::capabilities::fs::Mode;
use mend::capabilities::{Backends, Grants, ResolvedGrants};
use mend::contract::{Finding, RemedyContext, Severity, Status, StepRef};
use mend::runtime::{Limits, PluginError};
use serde_json::json;

fn commands(toml: &str, names: &[&str]) -> ResolvedGrants {
    Grants {
        commands: names.iter().map(|s| s.to_string()).collect(),
        ..Grants::none()
    }
    .resolve_with(&Backends::from_toml(toml).unwrap())
    .unwrap()
}

async fn run_command(
    config: serde_json::Value,
    grants: &ResolvedGrants,
    dry_run: bool,
) -> Result<mend::contract::Outcome, PluginError> {
    let p = load(artifacts::COMMAND).await;
    remedy_in(&p, config, grants, &[], dry_run)
        .await
        .map(|r| r.value)
}

#[tokio::test]
async fn command_succeeds_by_exit_code_and_output() {
    let tmp = tempfile::tempdir().unwrap();
    let marker = tmp.path().join("ran");
    let toml = format!(
        r#"
[commands.touch]
argv = ["/usr/bin/touch", "{m}"]
[commands.status]
argv = ["/bin/sh", "-c", "echo active; exit 3"]
[commands.fails]
argv = ["/bin/sh", "-c", "echo broken >&2; exit 1"]
"#,
        m = marker.display()
    );
    let g = commands(&toml, &["touch", "status", "fails"]);

    // Dry run: the argv is shown, nothing runs.
    let o = run_command(json!({"command": "touch"}), &g, true)
        .await
        .unwrap();
    assert!(!o.changed);
    assert_eq!(
        o.steps,
        vec![format!(
            "would run `touch`: /usr/bin/touch {}",
            marker.display()
        )]
    );
    assert!(!marker.exists(), "a dry run ran the command");

    let o = run_command(json!({"command": "touch"}), &g, false)
        .await
        .unwrap();
    assert!(o.changed && marker.exists(), "{o:?}");
    assert!(o.steps[0].contains("exited with 0"), "{o:?}");

    // Exit 1 is a failure, with the command's last stderr line.
    let e = run_command(json!({"command": "fails"}), &g, false)
        .await
        .unwrap_err();
    assert!(matches!(e, PluginError::Failed { .. }), "{e}");
    assert!(
        e.to_string().contains("exited with 1") && e.to_string().contains("broken"),
        "{e}"
    );

    // Exit 3 can count as success, and the output must match.
    let e = run_command(json!({"command": "status"}), &g, false)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("exited with 3"), "{e}");
    let ok = json!({"command": "status", "success_codes": [0, 3], "output_pattern": "^active$"});
    run_command(ok, &g, false).await.unwrap();
    let e = run_command(
        json!({"command": "status", "success_codes": [3], "output_pattern": "^inactive$"}),
        &g,
        false,
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("does not match"), "{e}");

    // Only granted names run.
    let only_touch = commands(&toml, &["touch"]);
    let e = run_command(json!({"command": "fails"}), &only_touch, false)
        .await
        .unwrap_err();
    assert!(matches!(e, PluginError::Denied { .. }), "{e}");
}

/// One finding per run: its status, code and summary.
async fn check_command(
    config: serde_json::Value,
    grants: &ResolvedGrants,
) -> Result<(Status, String, String), PluginError> {
    let name = config["command"].as_str().unwrap().to_string();
    let p = load(artifacts::COMMAND).await;
    let r = detect_in(&p, config, grants).await?;
    assert_eq!(r.value.len(), 1, "{:?}", r.value);
    let f = &r.value[0];
    assert_eq!(f.labels.get("command"), Some(&name));
    assert!(f.metrics.contains_key("duration_ms"), "{f:?}");
    Ok((f.status, f.code.clone(), f.summary.clone()))
}

#[tokio::test]
async fn command_as_a_check_is_check_program() {
    let tmp = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"
[commands.nagios]
argv = ["/bin/sh", "-c", "cat {d}/say; exit $(cat {d}/code)"]
[commands.hangs]
argv = ["/bin/sleep", "30"]
timeout = "200ms"
"#,
        d = tmp.path().display()
    );
    let g = commands(&toml, &["nagios", "hangs"]);
    let say = |code: i32, line: &str| {
        std::fs::write(tmp.path().join("code"), code.to_string()).unwrap();
        std::fs::write(tmp.path().join("say"), line).unwrap();
    };
    let nagios = json!({"command": "nagios", "warn_codes": [1]});

    // Nagios: exit 0 OK, 1 WARNING, 2 CRITICAL; stdout's first line is
    // the message.
    for (exit, line, status, code, said) in [
        (
            0,
            "DISK OK - 40% used\nperfdata",
            Status::Ok,
            "command.ok",
            "\"DISK OK - 40% used\"",
        ),
        (
            1,
            "DISK WARNING - 85% used",
            Status::Warn,
            "command.status",
            "exited with 1",
        ),
        (
            2,
            "DISK CRITICAL - 97% used",
            Status::Fail,
            "command.status",
            "exited with 2",
        ),
    ] {
        say(exit, line);
        let (got, got_code, summary) = check_command(nagios.clone(), &g).await.unwrap();
        assert_eq!((got, got_code.as_str()), (status, code), "{summary}");
        let first = line.lines().next().unwrap();
        assert!(
            summary.contains(said) && summary.contains(first),
            "{summary}"
        );
    }

    // Exit 0 but the output is not the one wanted.
    say(0, "inactive");
    let (status, code, _) = check_command(
        json!({"command": "nagios", "output_pattern": "^active$"}),
        &g,
    )
    .await
    .unwrap();
    assert_eq!((status, code.as_str()), (Status::Fail, "command.output"));

    // A check that hangs fails at the command's timeout (not the plugin's).
    let (status, code, summary) = check_command(json!({"command": "hangs"}), &g)
        .await
        .unwrap();
    assert_eq!(
        (status, code.as_str()),
        (Status::Fail, "command.timeout"),
        "{summary}"
    );

    // A check may only run what its grant names.
    let e = check_command(nagios, &commands(&toml, &["hangs"]))
        .await
        .unwrap_err();
    assert!(matches!(e, PluginError::Denied { .. }), "{e}");
}

#[tokio::test]
async fn command_configs_are_checked() {
    let p = load(artifacts::COMMAND).await;
    let rt = runtime();
    for (bad, want) in [
        (json!({"command": ""}), "`command` is empty"),
        (
            json!({"command": "x", "success_codes": []}),
            "nothing could succeed",
        ),
        (
            json!({"command": "x", "output_pattern": "("}),
            "output_pattern",
        ),
        (json!({"command": "x", "retries": 2}), "retries"),
        (
            json!({"command": "x", "warn_codes": [1]}),
            "`warn_codes` is for checks",
        ),
    ] {
        let e = rt
            .validate(
                &p,
                mend::contract::Role::Action,
                &mend::runtime::PluginConfig::from(bad.clone()),
            )
            .await
            .expect_err(&bad.to_string());
        assert!(e.to_string().contains(want), "{bad}: {e}");
    }
    let needs = rt
        .validate(
            &p,
            mend::contract::Role::Action,
            &mend::runtime::PluginConfig::from(json!({"command": "restart-app"})),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(needs.commands, vec!["restart-app".to_string()]);

    // As a check: a code cannot be both a success and a warning.
    let both = json!({"command": "x", "warn_codes": [0]});
    let e = rt
        .validate(
            &p,
            mend::contract::Role::Detector,
            &mend::runtime::PluginConfig::from(both.clone()),
        )
        .await
        .expect_err("exit 0 twice");
    assert!(e.to_string().contains("both"), "{e}");
    let needs = rt
        .validate(
            &p,
            mend::contract::Role::Detector,
            &mend::runtime::PluginConfig::from(json!({"command": "nagios", "warn_codes": [1]})),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(needs.commands, vec!["nagios".to_string()]);
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

/// A local server answering `status` to anything, recording requests.
async fn server(status: u16) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let s = s.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            s.lock().unwrap().push(Seen {
                method: parts.method.to_string(),
                path: parts.uri.to_string(),
                headers: parts
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect(),
                body: String::from_utf8_lossy(&body).into_owned(),
            });
            (axum::http::StatusCode::from_u16(status).unwrap(), "answer")
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, seen)
}

fn context(dry_run: bool) -> RemedyContext {
    RemedyContext {
        incident: 42,
        policy: "site-down".into(),
        step: "drain".into(),
        step_ref: StepRef::Ladder(1),
        attempt: 2,
        severity: Severity::Critical,
        dry_run,
        trail: Vec::new(),
        link: None,
    }
}

async fn call(
    base: &str,
    config: serde_json::Value,
    dry_run: bool,
) -> Result<mend::contract::Outcome, PluginError> {
    let p = load(artifacts::HTTP_CALL).await;
    let grants = Grants {
        urls: vec![format!("{base}/hooks")],
        ..Grants::none()
    }
    .resolve()
    .unwrap();
    let finding = Finding {
        check: "web".into(),
        code: "http.status".into(),
        status: Status::Fail,
        summary: "GET / answered 503 \"down\"".into(),
        metrics: [("latency_ms".to_string(), 12.5)].into(),
        labels: [("url".to_string(), "http://web/".to_string())].into(),
    };
    runtime()
        .remedy(
            &p,
            &request(&config.into(), &grants, Limits::default()),
            &[finding],
            context(dry_run),
        )
        .await
        .map(|r| r.value)
}

#[tokio::test]
async fn http_call_fills_the_body_from_the_incident_and_succeeds_by_status() {
    let (base, seen) = server(202).await;
    let config = json!({
        "url": format!("{base}/hooks/drain?token=s3cret"),
        "method": "PUT",
        "headers": {"x-incident": "{{incident}}", "authorization": "Bearer s3cret"},
        "body": r#"{"incident": {{incident}}, "policy": "{{policy}}", "step": "{{step}}", "attempt": {{attempt}}, "severity": "{{severity}}", "check": "{{check}}", "summary": "{{summary}}", "url": "{{label.url}}", "latency": {{metric.latency_ms}}}"#,
        "body_format": "json",
    });

    // Dry run: the request is shown (without its query), nothing is sent.
    let o = call(&base, config.clone(), true).await.unwrap();
    assert!(!o.changed);
    assert_eq!(o.steps[0], format!("would send PUT {base}/hooks/drain"));
    assert!(o.steps[1].contains(r#""incident": 42"#), "{o:?}");
    assert!(!format!("{o:?}").contains("s3cret"), "{o:?}");
    assert!(seen.lock().unwrap().is_empty(), "a dry run sent a request");

    let o = call(&base, config, false).await.unwrap();
    assert!(o.changed, "{o:?}");
    assert!(!format!("{o:?}").contains("s3cret"), "{o:?}");
    let got = seen.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("PUT", "/hooks/drain?token=s3cret")
    );
    let header = |k: &str| {
        r.headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header("x-incident"), Some("42"));
    assert_eq!(header("content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_str(&r.body).expect("the body is JSON");
    assert_eq!(
        body,
        json!({"incident": 42, "policy": "site-down", "step": "drain", "attempt": 2,
               "severity": "critical", "check": "test", "summary": "GET / answered 503 \"down\"",
               "url": "http://web/", "latency": 12.5})
    );
}

#[tokio::test]
async fn http_call_fails_on_an_unexpected_status_and_stays_in_its_grant() {
    let (base, seen) = server(500).await;
    let e = call(&base, json!({"url": format!("{base}/hooks/x")}), false)
        .await
        .unwrap_err();
    assert!(matches!(e, PluginError::Failed { .. }), "{e}");
    assert!(e.to_string().contains("answered 500"), "{e}");
    // 500 can be declared a success.
    call(
        &base,
        json!({"url": format!("{base}/hooks/x"), "success_status": [500]}),
        false,
    )
    .await
    .unwrap();
    // Outside the granted prefix: refused by the host, never sent.
    let e = call(&base, json!({"url": format!("{base}/admin")}), false)
        .await
        .unwrap_err();
    assert!(matches!(e, PluginError::Denied { .. }), "{e}");
    assert_eq!(seen.lock().unwrap().len(), 2);

    let p = load(artifacts::HTTP_CALL).await;
    for (bad, want) in [
        (
            json!({"url": format!("{base}/hooks"), "body": "{{nope}}"}),
            "unknown placeholder",
        ),
        (
            json!({"url": format!("{base}/hooks"), "method": "TRACE"}),
            "`method`",
        ),
        (
            json!({"url": format!("{base}/{{{{check}}}}")}),
            "no placeholders",
        ),
        (
            json!({"url": format!("{base}/hooks"), "body": "{{check", "body_format": "json"}),
            "without its",
        ),
        (
            json!({"url": format!("{base}/hooks"), "body": "not json", "body_format": "json"}),
            "not JSON",
        ),
    ] {
        let e = runtime()
            .validate(
                &p,
                mend::contract::Role::Action,
                &mend::runtime::PluginConfig::from(bad.clone()),
            )
            .await
            .expect_err(&bad.to_string());
        assert!(e.to_string().contains(want), "{bad}: {e}");
    }
}

// ---- rollback ----

/// `DIR/releases/{r1,r2,r3}` with `current -> releases/r3`.
fn deployment() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for r in ["r1", "r2", "r3"] {
        std::fs::create_dir_all(d.path().join("releases").join(r)).unwrap();
        std::fs::write(d.path().join("releases").join(r).join("app"), r).unwrap();
    }
    std::os::unix::fs::symlink("releases/r3", d.path().join("current")).unwrap();
    d
}

fn current(d: &tempfile::TempDir) -> String {
    std::fs::read_link(d.path().join("current"))
        .unwrap()
        .display()
        .to_string()
}

/// Rolls back one release at a time onto real directories, marks what it
/// left bad, never goes past the oldest or onto a bad release, and in a dry
/// run says what it would switch and changes nothing.
#[tokio::test]
async fn rollback_switches_current_to_the_previous_good_release_atomically() {
    let d = deployment();
    let p = load(artifacts::ROLLBACK).await;
    let grants = dir(d.path(), "/app", Mode::Rw);
    let config = json!({"dir": "/app"});

    let plan = remedy(&p, config.clone(), &grants, true).await.unwrap();
    assert!(!plan.value.changed, "{:?}", plan.value);
    assert!(
        plan.value.message.contains("would roll back from r3 to r2"),
        "{:?}",
        plan.value
    );
    assert_eq!(current(&d), "releases/r3", "a dry run changed nothing");

    let done = remedy(&p, config.clone(), &grants, false).await.unwrap();
    assert!(done.value.changed, "{:?}", done.value);
    assert_eq!(done.value.message, "rolled back from r3 to r2");
    assert_eq!(current(&d), "releases/r2");
    assert_eq!(
        std::fs::read_to_string(d.path().join("current/app")).unwrap(),
        "r2"
    );
    assert!(d.path().join("releases/r3/.mend-bad").is_file());
    assert!(!d.path().join(".mend-current.tmp").exists());

    // r1 marked bad by hand: nothing older is good, so it refuses.
    std::fs::write(d.path().join("releases/r1/.mend-bad"), "broken\n").unwrap();
    let refused = remedy(&p, config.clone(), &grants, false)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("marked bad"), "{refused}");
    assert_eq!(current(&d), "releases/r2");

    // Without it, back to r1, and then it is the oldest.
    std::fs::remove_file(d.path().join("releases/r1/.mend-bad")).unwrap();
    remedy(&p, config.clone(), &grants, false).await.unwrap();
    assert_eq!(current(&d), "releases/r1");
    let oldest = remedy(&p, config.clone(), &grants, false)
        .await
        .unwrap_err();
    assert!(oldest.to_string().contains("oldest release"), "{oldest}");
    assert_eq!(current(&d), "releases/r1");
}

/// `current` pointing outside the releases directory is refused, and so is
/// a `releases` path that climbs out of `dir`.
#[tokio::test]
async fn rollback_refuses_a_current_outside_the_releases_and_bad_paths() {
    let d = deployment();
    std::fs::remove_file(d.path().join("current")).unwrap();
    std::fs::create_dir(d.path().join("elsewhere")).unwrap();
    std::os::unix::fs::symlink("elsewhere", d.path().join("current")).unwrap();
    let p = load(artifacts::ROLLBACK).await;
    let grants = dir(d.path(), "/app", Mode::Rw);
    let e = remedy(&p, json!({"dir": "/app"}), &grants, false)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not at a release"), "{e}");
    let e = runtime()
        .validate(
            &p,
            mend::contract::Role::Action,
            &mend::runtime::PluginConfig::from(json!({"dir": "/app", "releases": "../x"})),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("relative path under `dir`"), "{e}");
}
