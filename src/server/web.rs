//! Static pages and scripts from `web/`, embedded at compile time.
//!
//! Every response carries `X-Content-Type-Options: nosniff` and
//! `Referrer-Policy: no-referrer`. Pages carry a Content-Security-Policy with
//! no inline scripts or styles: the console and admin pages cannot be framed
//! at all, the citizen chat page only by kommunchat itself and the configured
//! `security.widget_origins`. Files are revalidated with an ETag computed at
//! compile time, so a new binary never serves stale assets.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::App;

/// One embedded file.
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    etag: u64,
}

/// FNV-1a, evaluated at compile time for the ETag of each file.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

macro_rules! asset {
    ($path:literal, $content_type:literal) => {{
        const BODY: &[u8] = include_bytes!(concat!("../../web/", $path));
        Asset { body: BODY, content_type: $content_type, etag: fnv1a(BODY) }
    }};
}

static INDEX: Asset = asset!("index.html", "text/html; charset=utf-8");
static CHAT: Asset = asset!("chat.html", "text/html; charset=utf-8");
static CONSOLE: Asset = asset!("console.html", "text/html; charset=utf-8");
static ADMIN: Asset = asset!("admin.html", "text/html; charset=utf-8");
static STATEMENT: Asset = asset!("tillganglighet.html", "text/html; charset=utf-8");
static WIDGET: Asset = asset!("widget.js", "text/javascript; charset=utf-8");

/// Files under `/assets/`.
static ASSETS: &[(&str, Asset)] = &[
    ("base.css", asset!("assets/base.css", "text/css; charset=utf-8")),
    ("chat.css", asset!("assets/chat.css", "text/css; charset=utf-8")),
    ("site.css", asset!("assets/site.css", "text/css; charset=utf-8")),
    ("staff.css", asset!("assets/staff.css", "text/css; charset=utf-8")),
    ("chat.js", asset!("assets/chat.js", "text/javascript; charset=utf-8")),
    ("chat-i18n.js", asset!("assets/chat-i18n.js", "text/javascript; charset=utf-8")),
    ("staff.js", asset!("assets/staff.js", "text/javascript; charset=utf-8")),
    ("console.js", asset!("assets/console.js", "text/javascript; charset=utf-8")),
    ("admin.js", asset!("assets/admin.js", "text/javascript; charset=utf-8")),
    ("personnummer.js", asset!("assets/personnummer.js", "text/javascript; charset=utf-8")),
    ("icon.svg", asset!("assets/icon.svg", "image/svg+xml")),
];

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/", get(index))
        .route("/widget.js", get(widget))
        .route("/chat", get(chat))
        .route("/console", get(console))
        .route("/admin", get(admin))
        .route("/tillganglighet", get(statement))
        .route("/accessibility", get(statement))
        .route("/assets/{file}", get(asset_file))
}

/// The policy shared by every page; `frame-ancestors` is added per page.
fn csp(headers: &HeaderMap, frame_ancestors: &str) -> String {
    // `'self'` covers ws:/wss: in current browsers; the explicit socket
    // origins help older Safari versions.
    let sockets = match headers.get(header::HOST).and_then(|h| h.to_str().ok()).filter(|h| valid_host(h)) {
        Some(host) => format!(" ws://{host} wss://{host}"),
        None => String::new(),
    };
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; \
         connect-src 'self'{sockets}; frame-src 'self'; media-src 'self'; object-src 'none'; base-uri 'none'; \
         form-action 'self'; frame-ancestors {frame_ancestors}"
    )
}

/// A Host header that can go into a header value as it is.
fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

/// A configured widget origin that is safe to put in a CSP source list.
fn valid_origin(origin: &str) -> bool {
    let rest = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
    rest.is_some_and(|r| {
        !r.is_empty() && r.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'*'))
    })
}

/// Who may frame the page.
enum Framing {
    Nobody,
    SelfOnly,
    Widget,
}

fn respond(app: &App, request: &HeaderMap, asset: &Asset, framing: Option<Framing>, cache: &'static str) -> Response {
    let etag = format!("\"{:016x}\"", asset.etag);
    let mut response = if request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag || tag.trim() == "*"))
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let headers = response.headers_mut();
    let mut set = |name: HeaderName, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set(header::ETAG, &etag);
    set(header::CACHE_CONTROL, cache);
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::REFERRER_POLICY, "no-referrer");
    match framing {
        Some(Framing::Nobody) => {
            set(header::CONTENT_SECURITY_POLICY, &csp(request, "'none'"));
            set(header::X_FRAME_OPTIONS, "DENY");
        }
        Some(Framing::SelfOnly) => {
            set(header::CONTENT_SECURITY_POLICY, &csp(request, "'self'"));
            set(header::X_FRAME_OPTIONS, "SAMEORIGIN");
        }
        Some(Framing::Widget) => {
            let mut ancestors = String::from("'self'");
            for origin in app.config.security.widget_origins.iter().filter(|o| valid_origin(o)) {
                ancestors.push(' ');
                ancestors.push_str(origin.trim_end_matches('/'));
            }
            // No X-Frame-Options: it cannot name several origins, and
            // frame-ancestors takes precedence wherever it is understood.
            set(header::CONTENT_SECURITY_POLICY, &csp(request, &ancestors));
        }
        None => {}
    }
    response
}

async fn index(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    respond(&app, &headers, &INDEX, Some(Framing::SelfOnly), "no-cache")
}

async fn chat(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    respond(&app, &headers, &CHAT, Some(Framing::Widget), "no-cache")
}

async fn console(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    respond(&app, &headers, &CONSOLE, Some(Framing::Nobody), "no-cache")
}

async fn admin(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    respond(&app, &headers, &ADMIN, Some(Framing::Nobody), "no-cache")
}

async fn statement(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    respond(&app, &headers, &STATEMENT, Some(Framing::SelfOnly), "no-cache")
}

/// The launcher script that municipal pages embed: cached briefly by browsers
/// and proxies, and loadable from any origin.
async fn widget(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let mut response = respond(&app, &headers, &WIDGET, None, "public, max-age=300");
    response.headers_mut().insert("cross-origin-resource-policy", HeaderValue::from_static("cross-origin"));
    response
}

async fn asset_file(State(app): State<Arc<App>>, headers: HeaderMap, Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _)| *name == file) {
        Some((_, asset)) => respond(&app, &headers, asset, None, "no-cache"),
        None => super::api::not_found().await.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HTML: &str = "text/html; charset=utf-8";
    const JS: &str = "text/javascript; charset=utf-8";
    const CSS: &str = "text/css; charset=utf-8";

    #[test]
    fn every_asset_has_a_distinct_etag_and_a_content_type() {
        let mut tags: Vec<u64> = ASSETS.iter().map(|(_, a)| a.etag).collect();
        tags.extend([INDEX.etag, CHAT.etag, CONSOLE.etag, ADMIN.etag, STATEMENT.etag, WIDGET.etag]);
        let count = tags.len();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), count);
        for a in ASSETS.iter().map(|(_, a)| a).chain([&INDEX, &CHAT, &CONSOLE, &ADMIN, &STATEMENT, &WIDGET]) {
            assert!([HTML, JS, CSS, "image/svg+xml"].contains(&a.content_type));
        }
    }

    #[test]
    fn origins_and_hosts_are_checked_before_they_enter_a_header() {
        assert!(valid_origin("https://helsingborg.se"));
        assert!(valid_origin("http://localhost:8080"));
        assert!(!valid_origin("https://a.se; script-src *"));
        assert!(!valid_origin("helsingborg.se"));
        assert!(valid_host("127.0.0.1:8080"));
        assert!(valid_host("[::1]:80"));
        assert!(!valid_host("a b"));
    }
}
