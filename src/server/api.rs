//! HTTP API handlers.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::TimeDelta;

use super::App;
use crate::auth::{self, Role, SESSION_COOKIE};
use crate::protocol::hours::{ContactView, HoursView};
use crate::protocol::http::{ErrorBody, LoginRequest, MeView};
use crate::storage::UserRecord;

/// How long a sign-in lasts.
pub const SESSION_LIFETIME: TimeDelta = TimeDelta::hours(12);

/// Every HTTP error. Internal errors are logged and answered generically.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("sign in first")]
    Unauthorized,
    #[error("wrong username or password")]
    BadCredentials,
    #[error("this needs another role")]
    Forbidden,
    #[error("requests from this origin are not allowed")]
    ForbiddenOrigin,
    #[error("too many failed sign-ins; try again in {0} seconds")]
    TooManyAttempts(u64),
    #[error("no such resource")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<crate::storage::StorageError> for ApiError {
    fn from(e: crate::storage::StorageError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        ApiError::BadRequest(e.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::BadCredentials => (StatusCode::UNAUTHORIZED, "bad_credentials"),
            ApiError::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::ForbiddenOrigin => (StatusCode::FORBIDDEN, "forbidden_origin"),
            ApiError::TooManyAttempts(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        let message = match &self {
            ApiError::Internal(_) => "something went wrong on the server; it has been logged".to_string(),
            other => other.to_string(),
        };
        let mut response = (status, Json(ErrorBody::new(code, message))).into_response();
        if let ApiError::TooManyAttempts(seconds) = self
            && let Ok(v) = HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when storage answers.
pub async fn readyz(State(app): State<Arc<App>>) -> Result<&'static str, Response> {
    match app.storage.ping().await {
        Ok(()) => Ok("ready\n"),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: storage does not answer");
            Err((StatusCode::SERVICE_UNAVAILABLE, "storage unavailable\n").into_response())
        }
    }
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    let live = app.live.borrow().clone();
    let body = app.metrics.render(&live);
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
}

/// `GET /api/v1/hours`: open now, why, today's hours, next changes, deviations ahead.
pub async fn hours(State(app): State<Arc<App>>) -> Json<HoursView> {
    let now = app.clock.now();
    let status = app.config.hours.status(now);
    let c = &app.config.contact;
    let contact = ContactView {
        organisation: c.organisation.clone(),
        phone: c.phone.clone(),
        visiting_address: c.visiting_address.clone(),
        privacy_policy_url: c.privacy_policy_url.clone(),
        public_record_notice: c.public_record_notice.clone(),
    };
    Json(HoursView::new(&app.config.hours, &status, contact))
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound
}

fn me_view(user: &UserRecord) -> MeView {
    MeView { username: user.username.clone(), display_name: user.display_name.clone(), role: user.role.clone() }
}

/// `POST /api/v1/login`: sets the session cookie.
pub async fn login(
    State(app): State<Arc<App>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    body: Result<Json<LoginRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body?;
    if request.username.len() > 64 || request.password.len() > auth::MAX_PASSWORD_BYTES {
        return Err(ApiError::BadCredentials);
    }
    let now = app.clock.now();
    let account_key = format!("user:{}", request.username);
    let keys = [account_key.clone(), format!("ip:{}", super::guard::address_key(peer.ip()))];
    if let Some(wait) = app.throttle.blocked(&keys, now) {
        return Err(ApiError::TooManyAttempts(wait));
    }
    let user = app.storage.user_by_name(&request.username).await?;
    let hash = user.as_ref().map_or_else(|| auth::decoy_hash().to_owned(), |u| u.password_hash.clone());
    let password = request.password;
    // argon2 is deliberately slow: keep it off the async workers.
    let ok = tokio::task::spawn_blocking(move || auth::verify_password(&password, &hash))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let user = match user {
        Some(user) if ok => user,
        _ => {
            tracing::info!("failed sign-in");
            app.throttle.failed(&keys, now);
            return Err(ApiError::BadCredentials);
        }
    };
    app.throttle.succeeded(&account_key);
    let token = auth::random_token();
    let now = app.clock.now();
    // Housekeeping on the way: sessions past their expiry go.
    app.storage.delete_expired_sessions(now).await?;
    app.storage.create_session(&auth::token_hash(&token), user.id, now, now + SESSION_LIFETIME).await?;
    tracing::info!(user = user.id, "signed in");
    let cookie = format!(
        "{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
        SESSION_LIFETIME.num_seconds(),
        if app.secure_cookies { "; Secure" } else { "" }
    );
    let mut response = Json(me_view(&user)).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).map_err(|e| ApiError::Internal(e.to_string()))?);
    Ok(response)
}

/// `POST /api/v1/logout`: ends the session and closes the user's sockets.
pub async fn logout(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(token) = session_token(&headers) {
        let hash = auth::token_hash(token);
        let user = app.storage.session_user(&hash, app.clock.now()).await?;
        app.storage.delete_session(&hash).await?;
        if let Some(user) = user {
            let _ = app.revoked.send(user.id);
        }
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("kc_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    Ok(response)
}

/// `GET /api/v1/me`: who is signed in.
pub async fn me(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Json<MeView>, ApiError> {
    let user = signed_in(&app, &headers).await?;
    Ok(Json(me_view(&user)))
}

/// The session token from the cookie header, if any.
pub fn session_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// The signed-in admin, or 401/403.
pub async fn signed_in_admin(app: &App, headers: &HeaderMap) -> Result<UserRecord, ApiError> {
    let user = signed_in(app, headers).await?;
    if Role::parse(&user.role) != Some(Role::Admin) {
        return Err(ApiError::Forbidden);
    }
    Ok(user)
}

/// The signed-in user, or 401.
pub async fn signed_in(app: &App, headers: &HeaderMap) -> Result<UserRecord, ApiError> {
    let token = session_token(headers).ok_or(ApiError::Unauthorized)?;
    let user = app.storage.session_user(&auth::token_hash(token), app.clock.now()).await?;
    let user = user.ok_or(ApiError::Unauthorized)?;
    if Role::parse(&user.role).is_none() {
        return Err(ApiError::Forbidden);
    }
    Ok(user)
}
