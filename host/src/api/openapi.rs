//! `GET /api/v1/openapi.json`: the API as OpenAPI 3.1, generated (utoipa)
//! from the handlers' own annotations and the types they answer with, so
//! request bodies, response schemas and content types are those served.
//! A test checks every route in the router is described here.

use axum::Json;
use axum::extract::State;
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{AppState, alertmanager, checks, control, dashboard, incidents, plugins};

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "mend admin API",
        description = "Checks, incidents, manual heals, maintenance, config reload, an Alertmanager receiver and metrics. Endpoints that change something need `Authorization: Bearer TOKEN`; so do reads on a listener other machines can reach, unless `[api] public_reads = true`. Every error is `{\"error\": \"...\"}`.",
    ),
    paths(
        dashboard::page,
        super::healthz,
        super::metrics,
        document,
        checks::status,
        checks::list,
        checks::one,
        checks::run,
        checks::heal,
        control::pause_check,
        control::resume_check,
        incidents::list,
        incidents::one,
        incidents::ack,
        incidents::resolve,
        incidents::stats,
        plugins::list,
        super::fleet::status,
        control::pause,
        control::resume,
        control::reload,
        alertmanager::receive,
    ),
    modifiers(&Bearer),
)]
struct Api;

/// Operations that read (and need the token where reads do).
const READS: &[&str] = &[
    "/metrics",
    "/api/v1/status",
    "/api/v1/checks",
    "/api/v1/checks/{name}",
    "/api/v1/incidents",
    "/api/v1/incidents/{id}",
    "/api/v1/stats",
    "/api/v1/plugins",
    "/api/v1/fleet",
];

/// The document. `reads_need_token`: the reads are described as needing
/// the token too (a listener other machines can reach).
pub fn spec(reads_need_token: bool) -> Value {
    let mut v = serde_json::to_value(Api::openapi()).unwrap_or_default();
    v["info"]["version"] = Value::String(env!("CARGO_PKG_VERSION").into());
    if let Some(paths) = v["paths"].as_object_mut() {
        for (path, item) in paths.iter_mut() {
            let Some(get) = item.get_mut("get") else {
                continue;
            };
            if !READS.contains(&path.as_str()) {
                continue;
            }
            if reads_need_token {
                get["security"] = serde_json::json!([{"bearer": []}]);
                get["responses"]["403"] = serde_json::json!({
                    "description": "No API token is configured",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
                });
            } else if let Some(r) = get["responses"].as_object_mut() {
                // Open reads never answer 401.
                r.remove("401");
            }
        }
    }
    v
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "service",
    responses((status = 200, description = "The OpenAPI document", body = Object)))]
pub(super) async fn document(State(s): AppState) -> Json<Value> {
    Json(spec(s.reads_need_token()))
}
