//! WebSocket connections: one task per connection that decodes frames into
//! hub inputs and writes the hub's frames out.
//!
//! Buffers are sized for chat, not for bulk transfer (tungstenite's defaults
//! are 128 KiB each way per connection, gigabytes at 19,000 connections).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures::SinkExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

use super::App;
use super::api::{ApiError, signed_in};
use crate::domain::chat::{AdvisorProfile, CloseReason, ConnId, Input};
use crate::hub::{HubCommand, OUTBOX_CAPACITY, Outgoing};
use crate::protocol::ws::{self, AdvisorEvent, AdvisorRequest, CitizenEvent, CitizenRequest, ErrorCode};

/// Read buffer per connection: a chat frame fits; a larger one is read in pieces.
const READ_BUFFER: usize = 1024;
/// Outgoing frames are written straight through rather than gathered.
const WRITE_BUFFER: usize = 0;
/// A ping goes out this often; a connection silent for [`IDLE_TIMEOUT`] is closed.
const PING_INTERVAL: Duration = Duration::from_secs(25);
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Frames written before a flush when several are waiting.
const WRITE_BATCH: usize = 64;

fn configure(upgrade: WebSocketUpgrade, app: &App) -> WebSocketUpgrade {
    // JSON escaping can double a message's size; leave room for the envelope.
    let max_message = app.config.chat.max_message_bytes * 2 + 1024;
    upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(max_message)
        .max_frame_size(max_message)
}

/// `GET /ws/citizen`: anonymous.
pub async fn citizen(State(app): State<Arc<App>>, upgrade: WebSocketUpgrade) -> Response {
    configure(upgrade, &app).on_upgrade(move |socket| async move {
        let _counted = app.metrics.connection("citizen");
        let conn = app.next_conn();
        let decode = move |text: &str| {
            ws::decode::<CitizenRequest>(text).map(|request| Input::Citizen { conn, request }).map_err(|e| {
                let event = CitizenEvent::Error { code: ErrorCode::BadRequest, message: e.0, client_msg_id: None };
                ws::encode(&event)
            })
        };
        let span = tracing::info_span!("connection", conn, role = "citizen");
        run(socket, &app, conn, Input::CitizenConnected { conn }, decode).instrument(span).await;
        app.hub.input(Input::CitizenGone { conn });
    })
}

/// `GET /ws/advisor`: needs a signed-in advisor or admin (session cookie).
pub async fn advisor(State(app): State<Arc<App>>, headers: HeaderMap, upgrade: WebSocketUpgrade) -> Response {
    let user = match signed_in(&app, &headers).await {
        Ok(user) => user,
        Err(e) => return e.into_response(),
    };
    if user.role != "advisor" && user.role != "admin" {
        return ApiError::Forbidden.into_response();
    }
    let profile = AdvisorProfile {
        id: user.id,
        username: user.username,
        display_name: user.display_name.into(),
        role: user.role,
    };
    configure(upgrade, &app).on_upgrade(move |socket| async move {
        let _counted = app.metrics.connection("advisor");
        let conn = app.next_conn();
        let decode = move |text: &str| {
            ws::decode::<AdvisorRequest>(text).map(|request| Input::Advisor { conn, request }).map_err(|e| {
                let event = AdvisorEvent::Error {
                    code: ErrorCode::BadRequest,
                    message: e.0,
                    conversation_id: None,
                    client_msg_id: None,
                };
                ws::encode(&event)
            })
        };
        let span = tracing::info_span!("connection", conn, role = "advisor", user = profile.id);
        run(socket, &app, conn, Input::AdvisorConnected { conn, advisor: profile }, decode).instrument(span).await;
        app.hub.input(Input::AdvisorGone { conn });
    })
}

/// The connection loop. Returns when the connection is over; the caller tells the hub.
async fn run(
    mut socket: WebSocket,
    app: &App,
    conn: ConnId,
    connected: Input,
    decode: impl Fn(&str) -> Result<Input, String>,
) {
    let (outbox, mut frames) = mpsc::channel::<Outgoing>(OUTBOX_CAPACITY);
    app.hub.send(HubCommand::Attach { conn, outbox });
    app.hub.input(connected);
    let mut last_heard = Instant::now();
    let mut heartbeat = tokio::time::interval_at(Instant::now() + PING_INTERVAL, PING_INTERVAL);
    loop {
        tokio::select! {
            received = socket.recv() => {
                let Some(Ok(message)) = received else { break };
                last_heard = Instant::now();
                match message {
                    Message::Text(text) => match decode(text.as_str()) {
                        Ok(input) => app.hub.input(input),
                        Err(error_frame) => {
                            if socket.send(Message::Text(error_frame.into())).await.is_err() {
                                break;
                            }
                        }
                    },
                    Message::Binary(_) => {
                        let frame = ws::encode(&CitizenEvent::Error {
                            code: ErrorCode::BadRequest,
                            message: "frames must be JSON text, not binary".into(),
                            client_msg_id: None,
                        });
                        if socket.send(Message::Text(frame.into())).await.is_err() {
                            break;
                        }
                    }
                    Message::Close(_) => break,
                    Message::Ping(_) | Message::Pong(_) => {}
                }
            }
            outgoing = frames.recv() => {
                let Some(first) = outgoing else {
                    // The hub dropped this outbox: the client could not keep up.
                    close(&mut socket, 4002, "too slow; reconnect and resume").await;
                    break;
                };
                if !write_frames(&mut socket, first, &mut frames).await {
                    break;
                }
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > IDLE_TIMEOUT {
                    close(&mut socket, 1001, "idle").await;
                    break;
                }
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// Writes `first` and whatever else is already waiting, then flushes once.
/// Returns false when the connection is over.
async fn write_frames(socket: &mut WebSocket, first: Outgoing, frames: &mut mpsc::Receiver<Outgoing>) -> bool {
    let mut next = Some(first);
    let mut written = 0;
    while let Some(frame) = next.take() {
        let text = match frame {
            Outgoing::Citizen(event) => ws::encode(&*event),
            Outgoing::Advisor(event) => ws::encode(&*event),
            Outgoing::Close(reason) => {
                let _ = socket.flush().await;
                let (code, why) = match reason {
                    CloseReason::Replaced => (4001, "the conversation continues on another connection"),
                    CloseReason::Revoked => (1008, "the session has ended"),
                    CloseReason::Shutdown => (1001, "the server is shutting down"),
                };
                close(socket, code, why).await;
                return false;
            }
        };
        if socket.feed(Message::Text(text.into())).await.is_err() {
            return false;
        }
        written += 1;
        if written < WRITE_BATCH {
            next = frames.try_recv().ok();
        }
    }
    socket.flush().await.is_ok()
}

async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let _ = socket.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
}
