//! Admin endpoints: accounts and the live view.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::App;
use super::api::{ApiError, signed_in_admin};
use crate::auth::{self, Role};
use crate::protocol::http::{CreateUserRequest, LiveFrame, LiveView, PasswordRequest, UserView};
use crate::storage::UserRecord;

fn user_view(u: &UserRecord) -> UserView {
    UserView {
        username: u.username.clone(),
        display_name: u.display_name.clone(),
        role: u.role.clone(),
        created_at: u.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }
}

/// argon2 is deliberately slow: hash on the blocking pool, not an async worker.
async fn hash_off_runtime(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || auth::hash_password(&password))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(ApiError::Internal)
}

/// `GET /api/v1/users`.
pub async fn list_users(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Json<Vec<UserView>>, ApiError> {
    signed_in_admin(&app, &headers).await?;
    let users = app.storage.list_users().await?;
    Ok(Json(users.iter().map(user_view).collect()))
}

/// `POST /api/v1/users`.
pub async fn create_user(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Json<CreateUserRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    signed_in_admin(&app, &headers).await?;
    let Json(request) = body?;
    auth::check_username(&request.username).map_err(ApiError::BadRequest)?;
    let role = Role::parse(&request.role)
        .ok_or_else(|| ApiError::BadRequest("role must be \"advisor\" or \"admin\"".into()))?;
    let display_name = request.display_name.unwrap_or_else(|| request.username.clone()).trim().to_owned();
    if display_name.is_empty() || display_name.chars().count() > 80 || display_name.chars().any(char::is_control) {
        return Err(ApiError::BadRequest("display_name must be 1 to 80 characters".into()));
    }
    auth::check_password_strength(&request.password).map_err(ApiError::BadRequest)?;
    let hash = hash_off_runtime(request.password).await?;
    match app.storage.create_user(&request.username, &display_name, role.as_str(), &hash, app.clock.now()).await {
        Ok(_) => {}
        Err(e) if e.is_unique_violation() => {
            return Err(ApiError::Conflict(format!("a user named {} already exists", request.username)));
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(role = role.as_str(), "account added");
    let user = app.storage.user_by_name(&request.username).await?.ok_or(ApiError::NotFound)?;
    Ok((StatusCode::CREATED, Json(user_view(&user))).into_response())
}

/// `POST /api/v1/users/{username}/password`: ends the user's sessions and closes their sockets.
pub async fn set_password(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(username): Path<String>,
    body: Result<Json<PasswordRequest>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    signed_in_admin(&app, &headers).await?;
    let Json(request) = body?;
    let user = app.storage.user_by_name(&username).await?.ok_or(ApiError::NotFound)?;
    auth::check_password_strength(&request.password).map_err(ApiError::BadRequest)?;
    let hash = hash_off_runtime(request.password).await?;
    if !app.storage.set_password(&username, &hash).await? {
        return Err(ApiError::NotFound);
    }
    let _ = app.revoked.send(user.id);
    tracing::info!(user = user.id, "password reset by an admin");
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/v1/users/{username}`: ends sessions and closes sockets.
pub async fn remove_user(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(username): Path<String>,
) -> Result<StatusCode, ApiError> {
    let admin = signed_in_admin(&app, &headers).await?;
    if admin.username == username {
        return Err(ApiError::BadRequest("you cannot remove your own account".into()));
    }
    let user = app.storage.user_by_name(&username).await?.ok_or(ApiError::NotFound)?;
    if !app.storage.remove_user(&username).await? {
        return Err(ApiError::NotFound);
    }
    let _ = app.revoked.send(user.id);
    tracing::info!(user = user.id, "account removed");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, serde::Deserialize)]
pub struct StatsQuery {
    from: String,
    to: String,
    #[serde(default)]
    opening_hours_only: bool,
    #[serde(default)]
    format: Option<String>,
}

/// The longest range one report may cover.
const MAX_STATS_DAYS: i64 = 366;

/// `GET /api/v1/stats?from=YYYY-MM-DD&to=YYYY-MM-DD[&opening_hours_only=true][&format=csv]`.
pub async fn history(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<StatsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    signed_in_admin(&app, &headers).await?;
    let axum::extract::Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let date = |s: &str, name: &str| {
        chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .map_err(|_| ApiError::BadRequest(format!("{name} must be a date YYYY-MM-DD, got {s:?}")))
    };
    let (from, to) = (date(&q.from, "from")?, date(&q.to, "to")?);
    if to < from {
        return Err(ApiError::BadRequest("to is before from".into()));
    }
    if (to - from).num_days() >= MAX_STATS_DAYS {
        return Err(ApiError::BadRequest(format!("a report covers at most {MAX_STATS_DAYS} days")));
    }
    // Fetch a day either side in UTC; the report itself cuts by local date.
    let start = from.and_hms_opt(0, 0, 0).map(|d| d.and_utc() - chrono::TimeDelta::days(1));
    let end = to.and_hms_opt(0, 0, 0).map(|d| d.and_utc() + chrono::TimeDelta::days(2));
    let (Some(start), Some(end)) = (start, end) else { return Err(ApiError::BadRequest("date out of range".into())) };
    let facts = app.storage.conversation_facts(start, end).await?;
    let refusals = app.storage.refusals(start, end).await?;
    let report = crate::domain::stats::compute(&facts, &refusals, from, to, q.opening_hours_only, &app.config.hours);
    let view = crate::protocol::stats::StatsView::from(&report);
    match q.format.as_deref() {
        None | Some("json") => Ok(Json(view).into_response()),
        Some("csv") => Ok((
            [
                (axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                (
                    axum::http::header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"kommunchat-stats-{from}-{to}.csv\""),
                ),
            ],
            crate::protocol::stats::to_csv(&view),
        )
            .into_response()),
        Some(other) => Err(ApiError::BadRequest(format!("format must be json or csv, got {other:?}"))),
    }
}

/// `GET /api/v1/stats/live`.
pub async fn live(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Json<LiveView>, ApiError> {
    signed_in_admin(&app, &headers).await?;
    let figures = app.hub.figures().await.ok_or_else(|| ApiError::Internal("the hub has stopped".into()))?;
    Ok(Json(LiveView::from(&figures)))
}

/// `GET /ws/admin`: pushes the live figures when they change.
pub async fn live_socket(State(app): State<Arc<App>>, headers: HeaderMap, upgrade: WebSocketUpgrade) -> Response {
    if !super::guard::origin_allowed(&headers, &app.config.security, super::guard::Allowed::SameOrigin) {
        return ApiError::ForbiddenOrigin.into_response();
    }
    let user = match signed_in_admin(&app, &headers).await {
        Ok(user) => user,
        Err(e) => return e.into_response(),
    };
    let session = super::ws::Session {
        user: user.id,
        token_hash: super::api::session_token(&headers).map(auth::token_hash).unwrap_or_default(),
    };
    upgrade.read_buffer_size(1024).write_buffer_size(0).max_message_size(4096).on_upgrade(move |socket| async move {
        let _held = app.connections.hold();
        let _counted = app.metrics.connection("admin");
        push_live(socket, app, session).await;
    })
}

async fn push_live(mut socket: WebSocket, app: Arc<App>, session: super::ws::Session) {
    let mut watch = super::ws::SessionWatch::new(&app, session);
    let mut live = app.live.clone();
    // The current figures first, then every change.
    live.mark_changed();
    loop {
        tokio::select! {
            changed = live.changed() => {
                if changed.is_err() {
                    break;
                }
                let view = LiveView::from(&**live.borrow_and_update());
                let frame = crate::protocol::ws::encode(&LiveFrame { live: &view });
                if socket.send(Message::Text(frame.into())).await.is_err() {
                    break;
                }
            }
            received = socket.recv() => match received {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            _ = watch.ended(&app) => {
                super::ws::close(&mut socket, 1008, "the session has ended").await;
                break;
            }
        }
    }
}
