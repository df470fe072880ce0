//! `GET /api/v1/openapi.json`: the API described as OpenAPI 3.1, written
//! by hand (the API is small; a generator would cost more than it saves).
//! A test checks every route in the router is described here.

use axum::Json;
use serde_json::{Value, json};

fn op(summary: &str, auth: bool, ok: &str, params: Value) -> Value {
    let mut v = json!({
        "summary": summary,
        "parameters": params,
        "responses": {
            ok: {"description": "success", "content": {"application/json": {}}},
            "4XX": {"description": "error: {\"error\": \"...\"}"},
        },
    });
    if auth {
        v["security"] = json!([{"bearer": []}]);
        v["responses"]["401"] = json!({"description": "missing or wrong bearer token"});
        v["responses"]["403"] = json!({"description": "no API token configured"});
    }
    v
}

fn path_param(name: &str, ty: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": ty}})
}

fn query_flag(name: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "schema": {"type": "boolean"}})
}

pub fn spec() -> Value {
    let name = path_param("name", "string");
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "mend admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Checks, incidents, manual heals, maintenance, an Alertmanager receiver and metrics. Endpoints that change something need `Authorization: Bearer TOKEN`."
        },
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": {
            "/": {"get": op("The dashboard (HTML)", false, "200", json!([]))},
            "/healthz": {"get": op("200 while the engine's heartbeat is fresh, else 503", false, "200", json!([]))},
            "/metrics": {"get": op("Prometheus metrics (OpenMetrics text)", false, "200", json!([]))},
            "/api/v1/openapi.json": {"get": op("This document", false, "200", json!([]))},
            "/api/v1/status": {"get": op("Version, pause, open incident count and every check", false, "200", json!([]))},
            "/api/v1/checks": {"get": op("Every check: state and last result", false, "200", json!([]))},
            "/api/v1/checks/{name}": {"get": op("One check: state, last findings, history, recent incidents", false, "200", json!([name]))},
            "/api/v1/checks/{name}/run": {"post": op("Run the check's detector now; answers the result", true, "200", json!([name]))},
            "/api/v1/checks/{name}/heal": {"post": op("Manual heal through the policy ladder (202: started; 409: not, with each policy's reason)", true, "202", json!([name, query_flag("dry_run")]))},
            "/api/v1/incidents": {"get": op("Incidents, newest first, with diagnosis and attempts", false, "200", json!([query_flag("open"), {"name": "limit", "in": "query", "schema": {"type": "integer"}}]))},
            "/api/v1/incidents/{id}": {"get": op("One incident with its diagnosis and every attempt", false, "200", json!([path_param("id", "integer")]))},
            "/api/v1/stats": {"get": op("Per (finding code, action): attempts, heals, success rate, MTTR", false, "200", json!([]))},
            "/api/v1/plugins": {"get": op("Plugins in use (name, version, sha256, file) and unusable files or names, with why", false, "200", json!([]))},
            "/api/v1/fleet": {"get": op("Fleet mode: members, budgets with their holders, fleet-wide incidents (404 when fleet mode is off)", false, "200", json!([]))},
            "/api/v1/pause": {"post": op("Pause every policy (maintenance); body {\"reason\": \"...\"} optional", true, "200", json!([]))},
            "/api/v1/resume": {"post": op("End the pause", true, "200", json!([]))},
            "/api/v1/alertmanager": {"post": op("Alertmanager webhook receiver (deduplicated by fingerprint)", true, "200", json!([]))},
        }
    })
}

pub(super) async fn document() -> Json<Value> {
    Json(spec())
}
