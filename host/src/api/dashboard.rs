//! The dashboard at `/`: one static page, embedded in the binary (no CDN,
//! no build step), that reads the JSON API and draws with plain SVG. The
//! page holds no data, so it is served to all; where the API needs a
//! token, the page asks for it.

use axum::http::header;
use axum::response::IntoResponse;

const PAGE: &str = include_str!("dashboard.html");

/// The dashboard (HTML).
#[utoipa::path(get, path = "/", tag = "service",
    responses((status = 200, description = "The dashboard", content_type = "text/html", body = String)))]
pub(super) async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
            ),
        ],
        PAGE,
    )
}
