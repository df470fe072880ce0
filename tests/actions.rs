//! The generic actions for real: `command` runs commands defined under
//! `[commands]`, `http-call` sends a request to a local server.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
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
    ] {
        let e = rt
            .validate(&p, mend::contract::Role::Action, &bad)
            .await
            .expect_err(&bad.to_string());
        assert!(e.to_string().contains(want), "{bad}: {e}");
    }
    let needs = rt
        .validate(
            &p,
            mend::contract::Role::Action,
            &json!({"command": "restart-app"}),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(needs.commands, vec!["restart-app".to_string()]);
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
            &request(&config, &grants, Limits::default()),
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
            .validate(&p, mend::contract::Role::Action, &bad)
            .await
            .expect_err(&bad.to_string());
        assert!(e.to_string().contains(want), "{bad}: {e}");
    }
}
