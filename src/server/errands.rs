//! Errand registry endpoints: search, view, release copies, export, access requests.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use chrono::{Datelike, NaiveDate, TimeDelta};
use futures::StreamExt;
use serde::Deserialize;

use super::App;
use super::api::{ApiError, signed_in, signed_in_admin};
use crate::domain::hours::TIME_ZONE;
use crate::domain::personnummer;
use crate::domain::release::MaskOptions;
use crate::errands::{Format, export_stream};
use crate::protocol::errands::{ErrandListView, ErrandView, release_text};
use crate::storage::{ErrandFilter, Selection};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    number: Option<String>,
    from: Option<String>,
    to: Option<String>,
    category: Option<String>,
    advisor: Option<String>,
    q: Option<String>,
    flagged: Option<bool>,
    limit: Option<i64>,
    offset: Option<i64>,
}

fn date(s: &str, name: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| ApiError::BadRequest(format!("{name} must be a date YYYY-MM-DD, got {s:?}")))
}

/// Local midnight at the start of `d`, as an instant.
fn local_start(d: NaiveDate) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
    d.and_hms_opt(0, 0, 0)
        .and_then(|t| t.and_local_timezone(TIME_ZONE).earliest())
        .map(|t| t.to_utc())
        .ok_or_else(|| ApiError::BadRequest(format!("{d} is out of range")))
}

fn range(from: &str, to: &str) -> Result<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>), ApiError> {
    let (from, to) = (date(from, "from")?, date(to, "to")?);
    if to < from {
        return Err(ApiError::BadRequest("to is before from".into()));
    }
    let end =
        to.checked_add_signed(TimeDelta::days(1)).ok_or_else(|| ApiError::BadRequest("to is out of range".into()))?;
    Ok((local_start(from)?, local_start(end)?))
}

fn nonblank(s: Option<String>, name: &str, max: usize) -> Result<Option<String>, ApiError> {
    match s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()) {
        Some(s) if s.chars().count() > max => {
            Err(ApiError::BadRequest(format!("{name} is longer than {max} characters")))
        }
        other => Ok(other),
    }
}

/// `GET /api/v1/errands`: advisors and admins.
pub async fn list(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<ErrandListView>, ApiError> {
    signed_in(&app, &headers).await?;
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::BadRequest("limit must be between 1 and 500".into()));
    }
    let offset = q.offset.unwrap_or(0);
    if offset < 0 {
        return Err(ApiError::BadRequest("offset must not be negative".into()));
    }
    let from = q.from.as_deref().map(|d| date(d, "from").and_then(local_start)).transpose()?;
    let to =
        q.to.as_deref()
            .map(|d| {
                date(d, "to").and_then(|d| {
                    d.checked_add_signed(TimeDelta::days(1))
                        .ok_or_else(|| ApiError::BadRequest("to is out of range".into()))
                        .and_then(local_start)
                })
            })
            .transpose()?;
    let filter = ErrandFilter {
        number: nonblank(q.number, "number", 32)?,
        from,
        to,
        category: nonblank(q.category, "category", 100)?,
        advisor: nonblank(q.advisor, "advisor", 100)?,
        text: nonblank(q.q, "q", 200)?,
        flagged: q.flagged,
        limit,
        offset,
    };
    let (errands, total) = app.storage.list_errands(&filter).await?;
    Ok(Json(ErrandListView {
        errands: errands.iter().map(|e| ErrandView::new(e, false)).collect(),
        total,
        limit,
        offset,
    }))
}

/// An errand by its number (not by conversation id), unpurged.
async fn by_number(app: &App, number: &str) -> Result<crate::storage::ErrandRecord, ApiError> {
    if number.len() > 32 {
        return Err(ApiError::NotFound);
    }
    app.storage.errand(number).await?.filter(|e| e.errand_number.as_deref() == Some(number)).ok_or(ApiError::NotFound)
}

/// `GET /api/v1/errands/{number}`: the whole record.
pub async fn get(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(number): Path<String>,
) -> Result<Json<ErrandView>, ApiError> {
    signed_in(&app, &headers).await?;
    let errand = by_number(&app, &number).await?;
    Ok(Json(ErrandView::new(&errand, true)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseQuery {
    #[serde(default)]
    mask_email: bool,
    #[serde(default)]
    mask_phone: bool,
    format: Option<String>,
}

/// `GET /api/v1/errands/{number}/release`: a masked copy for release. Who
/// asked is not recorded.
pub async fn release(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(number): Path<String>,
    query: Result<Query<ReleaseQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    signed_in(&app, &headers).await?;
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let errand = by_number(&app, &number).await?;
    let options = MaskOptions { emails: q.mask_email, phones: q.mask_phone };
    let view = ErrandView::release(&errand, options);
    match q.format.as_deref() {
        None | Some("text") => Ok((
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
                (header::CONTENT_DISPOSITION, format!("inline; filename=\"arende-{number}.txt\"")),
            ],
            release_text(&view, options),
        )
            .into_response()),
        Some("json") => Ok(Json(view).into_response()),
        Some(other) => Err(ApiError::BadRequest(format!("format must be text or json, got {other:?}"))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    from: String,
    to: String,
    format: Option<String>,
}

fn format_of(s: Option<&str>) -> Result<Format, ApiError> {
    match s {
        None => Ok(Format::Json),
        Some(s) => {
            Format::parse(s).ok_or_else(|| ApiError::BadRequest(format!("format must be json or csv, got {s:?}")))
        }
    }
}

fn streamed(app: &App, selection: Selection, format: Format, filename: &str) -> Response {
    let stream = export_stream(app.storage.clone(), selection, format).map(Ok::<_, std::convert::Infallible>);
    (
        [
            (header::CONTENT_TYPE, format.content_type().to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{filename}\"")),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// `GET /api/v1/errands/export?from=…&to=…&format=json|csv` (admin): streamed.
pub async fn export(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    query: Result<Query<ExportQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    signed_in_admin(&app, &headers).await?;
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let (from, to) = range(&q.from, &q.to)?;
    let format = format_of(q.format.as_deref())?;
    let ext = if format == Format::Csv { "csv" } else { "jsonl" };
    Ok(streamed(&app, Selection::Range { from, to }, format, &format!("errands-{}-{}.{ext}", q.from, q.to)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRequest {
    personnummer: String,
    #[serde(default)]
    format: Option<String>,
}

/// `POST /api/v1/errands/access-request` (admin): every conversation that
/// mentions a personnummer, for a registerutdrag. The number travels in the
/// body, never in a URL (URLs end up in logs).
pub async fn access_request(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Json<AccessRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    signed_in_admin(&app, &headers).await?;
    let Json(request) = body?;
    let year = app.clock.now().with_timezone(&TIME_ZONE).year();
    let canonical = personnummer::canonical(&request.personnummer, year)
        .ok_or_else(|| ApiError::BadRequest("not a valid personnummer or samordningsnummer".into()))?;
    let format = format_of(request.format.as_deref())?;
    let ext = if format == Format::Csv { "csv" } else { "jsonl" };
    let selection = Selection::Mentioning { number_hash: crate::auth::token_hash(&canonical) };
    Ok(streamed(&app, selection, format, &format!("registerutdrag.{ext}")))
}
