//! WebSocket connections: one task per connection that decodes frames into
//! hub inputs and writes the hub's frames out.
//!
//! Buffers are sized for chat, not for bulk transfer (tungstenite's defaults
//! are 128 KiB each way per connection, gigabytes at 19,000 connections).
//! Every connection is origin-checked at the upgrade, rate-limited per frame,
//! pinged, and closed with the RFC 6455 code that says why.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::task::Poll;

use futures::{SinkExt, StreamExt};
use tokio::time::{Instant, Sleep, timeout};
use tracing::Instrument;

use super::App;
use super::api::{ApiError, signed_in};
use super::guard::{self, AddressSlot, Allowed};
use super::listener::Counted;
use crate::auth;
use crate::domain::chat::{AdvisorProfile, CloseReason, ConnId, Input};
use crate::hub::{ADVISOR_OUTBOX_CAPACITY, HubCommand, OUTBOX_CAPACITY, Outgoing};
use crate::metrics::{ConnectionGuard, Metrics};
use crate::outbox::Received;
use crate::protocol::ws::{self, AdvisorEvent, AdvisorRequest, CitizenEvent, CitizenRequest, ErrorCode};

/// Read buffer per connection, and the most one `recv` takes: a message of
/// 200 characters with its JSON envelope and frame header (about 350 bytes
/// from an advisor) arrives in one read; with 256 it took two, and the
/// second `recv` was a tenth of the server's CPU under load. Every idle
/// connection holds it, so it stays this small (docs/benchmarks.md).
const READ_BUFFER: usize = 384;
/// Outgoing frames waiting together are gathered up to this much and sent
/// in one write at the flush that ends each batch ([`write_frames`]).
const WRITE_BUFFER: usize = 16 * 1024;
/// A ping goes out this often; a connection silent for [`IDLE_TIMEOUT`] is closed.
pub const PING_INTERVAL: Duration = Duration::from_secs(25);
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Frames written before a flush when several are waiting.
const WRITE_BATCH: usize = 64;

/// RFC 6455 close codes used here.
mod close_code {
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const INVALID_DATA: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const REPLACED: u16 = 4001;
    pub const TOO_SLOW: u16 = 4002;
}

/// The largest frame or message accepted: a maximal chat message with its JSON
/// envelope (escaping can double the text). Beyond it the socket closes with 1009.
pub fn max_frame_bytes(app: &App) -> usize {
    app.config.chat.max_message_bytes * 2 + 1024
}

/// A cap on unsent bytes, not an allocation: a frame larger than the cap
/// can never be written, and its connection drops (the console would
/// reconnect into the same frame forever). An advisor's `welcome` carries
/// the whole history of every chat held, so the cap follows the limits that
/// bound it: `max_chats_per_advisor` chats of `max_conversation_bytes` each.
/// A chat's budget charges each message its text and
/// [`crate::protocol::ws::Limits::MESSAGE_ALLOWANCE`]; escaping at most doubles the text, and a
/// message's envelope (under 768 bytes even with the longest names and
/// ids) is at most three allowances, so a chat takes under five budgets.
fn max_write_buffer(app: &App) -> usize {
    let chat = &app.config.chat;
    (chat.max_chats_per_advisor as usize * 5 * chat.max_conversation_bytes + 1024 * 1024).max(64 * 1024 * 1024)
}

fn configure(upgrade: WebSocketUpgrade, app: &App) -> WebSocketUpgrade {
    let max = max_frame_bytes(app);
    upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(max_write_buffer(app))
        .max_message_size(max)
        .max_frame_size(max)
}

/// Runs a connection in a task of its own, and lets axum's upgrade task
/// end. That task is as large as the largest of its states (the socket
/// while axum builds it, beside our callback), and it was 632 bytes of
/// every connection for the connection's whole life (heaptrack); a task
/// that holds only the boxed connection is a fraction of that
/// (docs/benchmarks.md).
fn spawn_connection<F>(connection: std::pin::Pin<Box<F>>) -> std::future::Ready<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(connection);
    std::future::ready(())
}

fn forbidden_origin() -> Response {
    ApiError::ForbiddenOrigin.into_response()
}

/// `GET /ws/citizen`: anonymous; the server's own origin or a configured widget origin.
pub async fn citizen(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !guard::origin_allowed(&headers, &app.config.security, Allowed::SameOriginOrWidget) {
        return forbidden_origin();
    }
    let cap = app.config.security.max_citizen_connections_per_address;
    let Some(slot) = app.per_address.take(peer.ip(), cap) else {
        return (StatusCode::TOO_MANY_REQUESTS, "too many open chats from this address\n").into_response();
    };
    configure(upgrade, &app).on_upgrade(move |socket| {
        let conn = app.next_conn();
        let decode = move |text: &str| {
            ws::decode::<CitizenRequest>(text)
                .map(|request| Input::Citizen { conn, request })
                .map_err(|e| ws::encode(&citizen_error(ErrorCode::BadRequest, e.0)))
        };
        // At `debug`, not `info`: nothing in a connection's task logs at
        // `info`, and an enabled span is held for the connection's whole
        // life: 400–800 B of each idle connection at the default level,
        // which put it over 4 KiB (docs/benchmarks.md).
        let span = tracing::debug_span!("connection", conn, role = "citizen");
        let frames = attach(&app, conn, Input::CitizenConnected { conn }, Role::Citizen);
        let held = Held {
            slot: Some(slot),
            _connection: app.connections.hold(),
            _counted: app.metrics.connection("citizen"),
            app,
            conn,
            role: Role::Citizen,
        };
        spawn_connection(Box::pin(run(socket, frames, decode, None, held).instrument(span)))
    })
}

/// `GET /ws/advisor`: a signed-in advisor or admin (session cookie), same origin only.
pub async fn advisor(State(app): State<Arc<App>>, headers: HeaderMap, upgrade: WebSocketUpgrade) -> Response {
    if !guard::origin_allowed(&headers, &app.config.security, Allowed::SameOrigin) {
        return forbidden_origin();
    }
    let user = match signed_in(&app, &headers).await {
        Ok(user) => user,
        Err(e) => return e.into_response(),
    };
    let session = Session {
        user: user.id,
        token_hash: super::api::session_token(&headers).map(auth::token_hash).unwrap_or_default(),
    };
    let profile = AdvisorProfile {
        id: user.id,
        username: user.username,
        display_name: user.display_name.into(),
        role: user.role,
    };
    configure(upgrade, &app).on_upgrade(move |socket| {
        let conn = app.next_conn();
        let decode = move |text: &str| {
            ws::decode::<AdvisorRequest>(text)
                .map(|request| Input::Advisor { conn, request })
                .map_err(|e| ws::encode(&advisor_error(ErrorCode::BadRequest, e.0)))
        };
        // At `debug`, as the citizen's (above).
        let span = tracing::debug_span!("connection", conn, role = "advisor", user = profile.id);
        let frames = attach(&app, conn, Input::AdvisorConnected { conn, advisor: profile }, Role::Advisor);
        let mut watch = SessionWatch::new(&app, session);
        let watched = app.clone();
        let session_ended: SessionEnded = Box::pin(async move { watch.ended(&watched).await });
        let held = Held {
            slot: None,
            _connection: app.connections.hold(),
            _counted: app.metrics.connection("advisor"),
            app,
            conn,
            role: Role::Advisor,
        };
        spawn_connection(Box::pin(run(socket, frames, decode, Some(session_ended), held).instrument(span)))
    })
}

fn citizen_error(code: ErrorCode, message: String) -> CitizenEvent {
    CitizenEvent::Error { code, message, client_msg_id: None }
}

fn advisor_error(code: ErrorCode, message: String) -> AdvisorEvent {
    AdvisorEvent::Error { code, message, conversation_id: None, client_msg_id: None }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Citizen,
    Advisor,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Citizen => "citizen",
            Role::Advisor => "advisor",
        }
    }

    fn error_frame(self, code: ErrorCode, message: &str) -> String {
        match self {
            Role::Citizen => ws::encode(&citizen_error(code, message.into())),
            Role::Advisor => ws::encode(&advisor_error(code, message.into())),
        }
    }
}

/// The session behind an authenticated socket.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: i64,
    pub token_hash: String,
}

/// Watches a session while its socket is open: closes when the user's
/// sessions are revoked here (logout, password change, removal) or, checked
/// periodically, when the session is gone from storage (changed elsewhere,
/// e.g. `kommunchat user passwd`, or expired).
pub struct SessionWatch {
    session: Session,
    revoked: tokio::sync::broadcast::Receiver<i64>,
    check: tokio::time::Interval,
}

impl SessionWatch {
    pub fn new(app: &App, session: Session) -> SessionWatch {
        let every = Duration::from_secs(app.config.security.session_check_seconds);
        let mut check = tokio::time::interval_at(Instant::now() + every, every);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        SessionWatch { session, revoked: app.revoked.subscribe(), check }
    }

    /// Completes when the session has ended.
    pub async fn ended(&mut self, app: &App) {
        loop {
            tokio::select! {
                revoked = self.revoked.recv() => match revoked {
                    Ok(user) if user == self.session.user => return,
                    Ok(_) => {}
                    // Missed some: check storage to be sure.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        if !self.still_valid(app).await {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                },
                _ = self.check.tick() => {
                    if !self.still_valid(app).await {
                        return;
                    }
                }
            }
        }
    }

    async fn still_valid(&self, app: &App) -> bool {
        match app.storage.session_user(&self.session.token_hash, app.clock.now()).await {
            Ok(user) => user.is_some_and(|u| u.id == self.session.user),
            // Storage trouble is not the user's fault: keep the socket.
            Err(_) => true,
        }
    }
}

/// Per-connection token bucket: `rate` frames per second, bursts of `burst`.
struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    /// Frames refused since the bucket was last full.
    refused: u32,
}

impl RateLimit {
    fn new(rate: u32, burst: u32) -> RateLimit {
        RateLimit {
            rate: f64::from(rate),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: Instant::now(),
            refused: 0,
        }
    }

    /// True if a frame may pass now.
    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= self.burst {
            self.refused = 0;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.refused += 1;
            false
        }
    }

    /// A client that keeps sending into a refusal is abusive.
    fn abusive(&self) -> bool {
        self.refused > self.burst as u32
    }
}

/// The close code for a read error: too big (1009), not UTF-8 (1007), or broken framing (1002).
fn close_code_for(error: axum::Error) -> Option<(u16, &'static str)> {
    let inner = error.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => Some((close_code::TOO_BIG, "frame or message too big")),
        Some(tungstenite::Error::Utf8(_)) => Some((close_code::INVALID_DATA, "text is not valid UTF-8")),
        Some(tungstenite::Error::Protocol(_)) => Some((close_code::PROTOCOL_ERROR, "protocol error")),
        _ => None,
    }
}

/// What the connection loop does after one wake-up. Deciding first and
/// acting after keeps the loop's future small: every idle connection holds
/// one, and each `.await` written inline in a `select!` arm adds its state.
enum Step {
    Continue,
    /// Answer the client directly (an error frame or a ping); rare, boxed.
    Reply(Message),
    /// Write this frame and whatever else the hub has queued.
    Write(Outgoing),
    Close(u16, &'static str),
    Stop,
}

/// Attaches a new connection to the hub and tells it who connected. Done
/// before the connection loop starts, so the loop's future does not carry
/// the (large) `connected` input for its whole life.
fn attach(app: &App, conn: ConnId, connected: Input, role: Role) -> crate::outbox::OutboxReceiver<Outgoing> {
    let capacity = if role == Role::Advisor { ADVISOR_OUTBOX_CAPACITY } else { OUTBOX_CAPACITY };
    let (outbox, frames) = crate::outbox::outbox::<Outgoing>(capacity);
    app.hub.send(HubCommand::Attach { conn, outbox });
    app.hub.input(connected);
    frames
}

/// What a connection holds until it ends: its place in the connection limit,
/// in the metrics and, for a citizen, in its address's quota. Dropping it
/// tells the hub the connection is gone, however the connection ended.
struct Held {
    app: Arc<App>,
    conn: ConnId,
    role: Role,
    /// A citizen's place in its address's quota; its address also counts the chats it starts.
    slot: Option<AddressSlot>,
    _connection: Counted,
    _counted: ConnectionGuard,
}

impl Drop for Held {
    fn drop(&mut self) {
        let conn = self.conn;
        self.app.hub.input(match self.role {
            Role::Citizen => Input::CitizenGone { conn },
            Role::Advisor => Input::AdvisorGone { conn },
        });
    }
}

/// Completes when an advisor's session ends.
type SessionEnded = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// The connection loop. Returns when the connection is over.
///
/// The handlers build this future synchronously and box it whole, so the
/// connection's task holds one pointer. It is an `async move` block that
/// uses its captures in place, not an `async fn`: an `async fn` moves each
/// argument into a local of its body, and its future reserves room for
/// both, so the socket was kept twice (1,184 bytes of future; 300–500 B
/// more per idle connection, docs/benchmarks.md). Nothing here may move a
/// capture into another future, for the same reason.
#[expect(clippy::manual_async_fn, reason = "an async fn would keep its arguments twice (above)")]
fn run(
    mut socket: WebSocket,
    mut frames: crate::outbox::OutboxReceiver<Outgoing>,
    decode: impl Fn(&str) -> Result<Input, String>,
    mut session_ended: Option<SessionEnded>,
    held: Held,
) -> impl Future<Output = ()> {
    async move {
        let app = &*held.app;
        let security = &app.config.security;
        let mut limit = RateLimit::new(security.messages_per_second, security.message_burst);
        // Every write is bounded: a client that stops reading while the
        // server has frames for it (a "slow read") would otherwise hold its
        // task, socket and buffers for as long as it keeps its window shut.
        let write_timeout = Duration::from_secs(security.write_timeout_seconds);
        let mut last_heard = Instant::now();
        // Whose turn it is to be looked at first, so that neither a flood of
        // frames to write nor a client that keeps sending starves the other.
        let mut socket_first = false;
        loop {
            // One hand-written poll instead of `select!`: no per-branch futures
            // to keep, so an idle connection's state stays small.
            let step = std::future::poll_fn(|cx| {
                socket_first = !socket_first;
                if socket_first && let Poll::Ready(received) = socket.poll_next_unpin(cx) {
                    return Poll::Ready(on_received(received, &held, &decode, &mut limit, &mut last_heard));
                }
                if let Poll::Ready(received) = frames.poll_recv(cx) {
                    return Poll::Ready(match received {
                        Received::Frame(first) => Step::Write(first),
                        Received::Heartbeat if last_heard.elapsed() > IDLE_TIMEOUT => {
                            app.metrics.dropped("idle");
                            Step::Close(close_code::GOING_AWAY, "idle")
                        }
                        Received::Heartbeat => Step::Reply(Message::Ping(Default::default())),
                        // The hub dropped this outbox: the client could not keep up.
                        Received::Closed => {
                            app.metrics.dropped("too_slow");
                            Step::Close(close_code::TOO_SLOW, "too slow; reconnect and resume")
                        }
                    });
                }
                if let Some(ended) = session_ended.as_mut()
                    && ended.as_mut().poll(cx).is_ready()
                {
                    return Poll::Ready(Step::Close(close_code::POLICY, "the session has ended"));
                }
                if !socket_first && let Poll::Ready(received) = socket.poll_next_unpin(cx) {
                    return Poll::Ready(on_received(received, &held, &decode, &mut limit, &mut last_heard));
                }
                Poll::Pending
            })
            .await;
            match step {
                Step::Continue => {}
                // Boxed, timeout and all: the write path's state lives only
                // while frames are written, not in every idle connection.
                Step::Reply(message) => match Box::pin(timeout(write_timeout, socket.send(message))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break,
                    Err(_) => {
                        app.metrics.dropped("too_slow");
                        break;
                    }
                },
                Step::Write(first) => {
                    match Box::pin(write_frames(&mut socket, first, &mut frames, &app.metrics, write_timeout)).await {
                        Written::Open => {}
                        Written::Over => break,
                        Written::Stalled => {
                            app.metrics.dropped("too_slow");
                            break;
                        }
                    }
                }
                Step::Close(code, why) => {
                    let _ = Box::pin(timeout(write_timeout, close(&mut socket, code, why))).await;
                    break;
                }
                Step::Stop => break,
            }
        }
        app.closer.close(socket);
    }
}

/// Most sockets waiting for the closer at once; beyond it a connection
/// closes its own. Each holds a file until closed, so the bound keeps the
/// process within its open-file limit (`security.max_connections` leaves
/// about a thousand spare under the 20,000 of our machines).
const CLOSER_BACKLOG: usize = 256;

/// Closes finished connections' sockets on a thread of its own, at the
/// database threads' low priority. Closing a socket is a few system calls
/// and, on loopback or a LAN, the other side's TCP work in the same call;
/// when many citizens leave together (a surge's chats ending), closing them
/// all held the connections' thread for milliseconds in one go, and every
/// other connection's frames waited (docs/benchmarks.md, tenth round, item 4).
pub struct SocketCloser {
    sockets: std::sync::mpsc::SyncSender<WebSocket>,
}

impl std::fmt::Debug for SocketCloser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SocketCloser")
    }
}

impl SocketCloser {
    pub fn start() -> std::io::Result<SocketCloser> {
        let (sockets, to_close) = std::sync::mpsc::sync_channel::<WebSocket>(CLOSER_BACKLOG);
        std::thread::Builder::new().name("socket-closer".into()).spawn(move || {
            crate::scheduling::lower_priority_of_this_thread();
            for socket in to_close {
                drop(socket);
            }
        })?;
        Ok(SocketCloser { sockets })
    }

    /// Closes `socket` on the closer's thread, or here if it is behind.
    fn close(&self, socket: WebSocket) {
        // Full or gone, the error holds the socket, and dropping it closes it here.
        let _ = self.sockets.try_send(socket);
    }
}

/// What to do with what the client sent.
fn on_received(
    received: Option<Result<Message, axum::Error>>,
    held: &Held,
    decode: &impl Fn(&str) -> Result<Input, String>,
    limit: &mut RateLimit,
    last_heard: &mut Instant,
) -> Step {
    let (app, role) = (&*held.app, held.role);
    let message = match received {
        Some(Ok(message)) => message,
        Some(Err(e)) => {
            return match close_code_for(e) {
                Some((code, why)) => Step::Close(code, why),
                None => Step::Stop,
            };
        }
        None => return Step::Stop,
    };
    *last_heard = Instant::now();
    let text = match message {
        Message::Text(text) => text,
        Message::Binary(_) => {
            let frame = role.error_frame(ErrorCode::BadRequest, "frames must be JSON text, not binary");
            return Step::Reply(Message::Text(frame.into()));
        }
        Message::Close(_) => return Step::Stop,
        Message::Ping(_) | Message::Pong(_) => return Step::Continue,
    };
    if !limit.take() {
        if limit.abusive() {
            app.metrics.dropped("flooding");
            return Step::Close(close_code::POLICY, "too many messages");
        }
        app.metrics.rate_limited(role.as_str());
        let frame = role.error_frame(ErrorCode::RateLimited, "too many messages; slow down");
        return Step::Reply(Message::Text(frame.into()));
    }
    match decode(text.as_str()) {
        Ok(input) => {
            if let Input::Citizen { request: CitizenRequest::Start { .. }, .. } = input
                && let Some(slot) = &held.slot
                && let Err(wait) = app.starts.take(slot.address(), app.clock.now())
            {
                let minutes = wait.div_ceil(60);
                let message = format!(
                    "too many chats have been started from your network; try again in {minutes} minute{}",
                    if minutes == 1 { "" } else { "s" }
                );
                let frame = ws::encode(&citizen_error(ErrorCode::TooManyChats, message));
                return Step::Reply(Message::Text(frame.into()));
            }
            app.hub.input(input);
            Step::Continue
        }
        Err(error_frame) => Step::Reply(Message::Text(error_frame.into())),
    }
}

/// The slowest a client may take in what it is sent, beyond the write
/// timeout: a batch of `n` bytes may take `write_timeout + n / MIN_WRITE_RATE`.
/// So a console on a slow link still receives a large `welcome` (every chat
/// held, whole), while a client that takes in nothing is dropped after the
/// write timeout.
const MIN_WRITE_RATE: f64 = 64.0 * 1024.0;

/// How a batch of writes ended.
enum Written {
    /// Written and flushed; the connection goes on.
    Open,
    /// The connection is over (closed by us, or a write failed).
    Over,
    /// The client did not take in the batch in time.
    Stalled,
}

/// Writes `first` and whatever else is already waiting, then flushes once,
/// within `write_timeout` plus the batch's size at [`MIN_WRITE_RATE`].
async fn write_frames(
    socket: &mut WebSocket,
    first: Outgoing,
    frames: &mut crate::outbox::OutboxReceiver<Outgoing>,
    metrics: &Metrics,
    write_timeout: Duration,
) -> Written {
    // One timer for the batch, moved on as frames are added; it is
    // registered only if a write has to wait.
    let mut deadline = Instant::now() + write_timeout;
    let expired = tokio::time::sleep_until(deadline);
    tokio::pin!(expired);
    let mut next = Some(first);
    let mut written = 0;
    // Assignments among these frames: when their causes were received.
    let mut timed: Option<Vec<std::time::Instant>> = None;
    while let Some(frame) = next.take() {
        let text = match frame {
            Outgoing::Citizen(event) => ws::encode(&*event),
            Outgoing::Advisor(event) => ws::encode(&*event),
            Outgoing::Timed(timed_event) => {
                let (event, received) = *timed_event;
                timed.get_or_insert_with(Vec::new).push(received);
                ws::encode(&event)
            }
            Outgoing::Close(reason) => {
                let (code, why) = match reason {
                    CloseReason::Replaced => (close_code::REPLACED, "the conversation continues on another connection"),
                    CloseReason::Shutdown => (close_code::GOING_AWAY, "the server is shutting down"),
                };
                let closing = async {
                    let _ = socket.flush().await;
                    close(socket, code, why).await;
                };
                return match before(expired, closing).await {
                    Some(()) => Written::Over,
                    None => Written::Stalled,
                };
            }
        };
        deadline += Duration::from_secs_f64(text.len() as f64 / MIN_WRITE_RATE);
        expired.as_mut().reset(deadline);
        match before(expired.as_mut(), socket.feed(Message::Text(text.into()))).await {
            Some(Ok(())) => {}
            Some(Err(_)) => return Written::Over,
            None => return Written::Stalled,
        }
        written += 1;
        if written < WRITE_BATCH {
            next = frames.try_recv();
        }
    }
    match before(expired, socket.flush()).await {
        Some(Ok(())) => {}
        Some(Err(_)) => return Written::Over,
        None => return Written::Stalled,
    }
    if let Some(timed) = timed {
        for received in timed {
            metrics.assignment_latency(received.elapsed());
        }
    }
    Written::Open
}

/// `future`'s output, or `None` if `expired` completes first.
async fn before<F: Future>(mut expired: std::pin::Pin<&mut Sleep>, future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        if expired.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

pub async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let _ = socket.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
}
