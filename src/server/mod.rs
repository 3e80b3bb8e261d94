//! The HTTP and WebSocket adapter: routes, shared state, start and shutdown.

mod admin;
mod api;
mod errands;
mod guard;
mod listener;
mod web;
mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use chrono::TimeDelta;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::auth;
use crate::clock::Clock;
use crate::config::Config;
use crate::domain::chat::{ChatCore, ConnId, CoreSettings, Input, LiveFigures};
use crate::hub::{self, HubHandle};
use crate::metrics::Metrics;
use crate::protocol::ws::NoticeView;
use crate::storage::{MessageLogError, OpenLogError, Storage, StorageError, StoreWriter, open_message_log};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("storage ({url}): {source}")]
    Storage { url: String, source: StorageError },
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Tls(String),
    #[error("{0}")]
    MessageLog(#[from] MessageLogError),
}

/// State shared by every request handler.
#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub clock: Arc<dyn Clock>,
    pub storage: Storage,
    pub hub: HubHandle,
    /// The latest live figures, published by the hub.
    pub live: tokio::sync::watch::Receiver<Arc<LiveFigures>>,
    pub metrics: Arc<Metrics>,
    /// Failed sign-ins, per account and per address.
    pub throttle: guard::LoginThrottle,
    /// Citizen sockets per client address.
    pub per_address: Arc<guard::PerAddress>,
    /// Chats started per client address.
    pub starts: guard::StartBudget,
    /// Users whose sessions just ended: their sockets close.
    pub revoked: tokio::sync::broadcast::Sender<i64>,
    pub connections: Arc<listener::ConnectionCount>,
    /// Where finished WebSocket connections' sockets are closed.
    pub closer: ws::SocketCloser,
    /// Session cookies carry `Secure` (TLS here or at the proxy).
    pub secure_cookies: bool,
    next_conn: AtomicU64,
}

impl App {
    fn next_conn(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }
}

/// A started server.
#[derive(Debug)]
pub struct Server {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: JoinHandle<Result<(), std::io::Error>>,
}

/// Served chats whose handling times the wait estimates learn from at start
/// (an exponential average with weight 0.1: older ones would count < 1%).
const HANDLE_TIMES_LEARNED: u32 = 50;

/// How long to wait for open HTTP requests after the hub has shut down.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

impl Server {
    /// Opens storage, recovers from any crash, starts the hub and serves on `listener`.
    pub async fn start(config: Config, listener: TcpListener, clock: Arc<dyn Clock>) -> Result<Server, StartError> {
        let addr = listener.local_addr()?;
        let storage_error = |source| StartError::Storage { url: redact(&config.database_url), source };
        let storage = Storage::open(&config.database_url, &config.storage).await.map_err(storage_error)?;
        // Messages acknowledged from the log that the database did not hold
        // yet when the last run ended go in first: everything below reads them.
        let message_log = match open_message_log(&storage, &config.storage).await {
            Ok(Some((log, replayed))) => {
                if replayed > 0 {
                    tracing::info!(replayed, "messages from the message log written to the database");
                }
                Some((log, Duration::from_millis(config.storage.message_log_apply_ms)))
            }
            Ok(None) => None,
            Err(OpenLogError::Storage(e)) => return Err(storage_error(e)),
            Err(OpenLogError::Log(e)) => return Err(e.into()),
        };
        // Chats the last run left open (a restart, a crash) are taken up again.
        let interrupted = storage.end_interrupted(clock.now()).await.map_err(storage_error)?;
        if interrupted > 0 {
            tracing::warn!(interrupted, "open conversations without a resume token were ended as interrupted");
        }
        let open = storage.open_conversations().await.map_err(storage_error)?;
        let rating_window = TimeDelta::minutes(i64::try_from(config.chat.rating_window_minutes).unwrap_or(0));
        let recently_ended = storage.recently_ended(clock.now() - rating_window).await.map_err(storage_error)?;
        let available = storage.available_advisors().await.map_err(storage_error)?;
        let handled = storage.recent_handle_seconds(HANDLE_TIMES_LEARNED).await.map_err(storage_error)?;
        ensure_first_admin(&storage, clock.as_ref(), addr).await.map_err(storage_error)?;

        let (hub_handle, hub_rx) = hub::channel();
        let for_writer = hub_handle.clone();
        let metrics = Arc::new(Metrics::new());
        let for_metrics = metrics.clone();
        let (writer, writer_task) =
            StoreWriter::spawn(storage.clone(), config.storage.max_batch, message_log, move |ops, results, took| {
                for_metrics.committed(ops, &results, took);
                for_writer.input(Input::Committed(results));
            });
        let mut core = ChatCore::new(core_settings(&config));
        if !open.is_empty() {
            tracing::info!(restored = open.len(), "open conversations taken up again");
        }
        core.restore_ended(clock.now(), recently_ended);
        core.restore(clock.now(), open);
        core.restore_available_advisors(clock.now(), &available);
        core.learn_handle_times(&handled);
        let (live_tx, live) = tokio::sync::watch::channel(Arc::new(core.live_figures(clock.now())));
        let tick = tick_interval(&config);
        tokio::spawn(hub::run(core, hub_rx, clock.clone(), writer, writer_task, tick, live_tx));

        let tls = if config.tls.cert_path.is_empty() {
            None
        } else {
            Some(listener::tls_acceptor(&config.tls.cert_path, &config.tls.key_path).map_err(StartError::Tls)?)
        };
        let secure_cookies = tls.is_some() || config.security.public_origin.starts_with("https://");
        let options = listener::ServeOptions {
            max_connections: config.security.max_connections,
            handshake_timeout: Duration::from_secs(config.security.handshake_timeout_seconds),
            tls,
            drain_timeout: DRAIN_TIMEOUT,
            trusted_proxies: config.security.trusted_proxies.clone().into(),
        };
        let app = Arc::new(App {
            throttle: guard::LoginThrottle::new(config.security.login_free_attempts),
            starts: guard::StartBudget::new(config.security.chat_starts_per_address_per_hour),
            per_address: Arc::default(),
            revoked: tokio::sync::broadcast::channel(64).0,
            connections: Arc::default(),
            closer: ws::SocketCloser::start()?,
            secure_cookies,
            config,
            clock,
            storage,
            hub: hub_handle,
            live,
            metrics,
            next_conn: AtomicU64::new(1),
        });
        let router = routes(app.clone());
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        spawn_retention(app.clone(), shutdown_rx.clone());
        spawn_heartbeat(app.clone(), shutdown_rx.clone());
        let hub_for_shutdown = app.hub.clone();
        let count = app.connections.clone();
        let task = tokio::spawn(async move {
            let mut signal = shutdown_rx.clone();
            let stop = async move {
                let _ = signal.wait_for(|stop| *stop).await;
                // Tell clients and flush storage before the listener closes.
                hub_for_shutdown.shutdown().await;
            };
            listener::serve(listener, router, options, count, stop).await;
            Ok(())
        });
        tracing::info!(%addr, storage = app.storage.backend(), config = %app.config.source, "kommunchat started");
        Ok(Server { addr, app, shutdown, task })
    }

    /// Stops admitting, tells clients, flushes storage, stops serving.
    pub async fn shutdown(self) -> Result<(), std::io::Error> {
        let _ = self.shutdown.send(true);
        let result = self.task.await.unwrap_or(Ok(()));
        self.app.storage.close().await;
        result
    }
}

/// Runs the server until `signal` completes, then shuts down cleanly.
pub async fn run(
    config: Config,
    listener: TcpListener,
    clock: Arc<dyn Clock>,
    signal: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let server = Server::start(config, listener, clock).await?;
    println!("kommunchat listening on http://{}", server.addr);
    signal.await;
    tracing::info!("shutting down: no new chats; telling clients; flushing storage");
    server.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}

fn routes(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/metrics", get(api::metrics))
        .route("/api/v1/hours", get(api::hours))
        .route("/api/v1/login", post(api::login))
        .route("/api/v1/logout", post(api::logout))
        .route("/api/v1/me", get(api::me))
        .route("/api/v1/users", get(admin::list_users).post(admin::create_user))
        .route("/api/v1/users/{username}", axum::routing::delete(admin::remove_user))
        .route("/api/v1/users/{username}/password", post(admin::set_password))
        .route("/api/v1/errands", get(errands::list))
        .route("/api/v1/errands/export", get(errands::export))
        .route("/api/v1/errands/access-request", post(errands::access_request))
        .route("/api/v1/errands/{number}", get(errands::get))
        .route("/api/v1/errands/{number}/release", get(errands::release))
        .route("/api/v1/stats", get(admin::history))
        .route("/api/v1/stats/live", get(admin::live))
        .route("/ws/admin", get(admin::live_socket))
        .route("/ws/citizen", get(ws::citizen))
        .route("/ws/advisor", get(ws::advisor))
        .merge(web::routes())
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn_with_state(app.clone(), check_origin))
        .layer(axum::middleware::from_fn(trace_request))
        .with_state(app)
}

/// Ticks the shared heartbeat that every WebSocket pings on (through the hub,
/// which holds every connection's outbox): one slice of the connections at a
/// time, every slice once per ping interval.
fn spawn_heartbeat(app: Arc<App>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    tokio::spawn(async move {
        let slices = crate::hub::HEARTBEAT_SLICES;
        let mut interval = tokio::time::interval(ws::PING_INTERVAL / slices as u32);
        interval.tick().await;
        let mut slice = 0;
        loop {
            tokio::select! {
                _ = interval.tick() => {
                    app.hub.send(crate::hub::HubCommand::Heartbeat { slice });
                    slice = (slice + 1) % slices;
                }
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    });
}

/// Runs the retention job on its interval, if any retention is configured.
fn spawn_retention(app: Arc<App>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let retention = &app.config.retention;
    if retention.default_days == 0 && retention.categories.values().all(|d| *d == 0) {
        return;
    }
    let every = Duration::from_secs(u64::from(retention.interval_minutes) * 60);
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            let now = app.clock.now();
            if let Err(e) = crate::errands::run_retention(&app.storage, &app.config.retention, now, false).await {
                tracing::error!(error = %e, "retention job failed; it runs again at the next interval");
            }
        }
    });
}

/// Refuses state-changing requests from other origins (CSRF), on top of the
/// `SameSite=Strict` cookie and the JSON content type.
async fn check_origin(
    axum::extract::State(app): axum::extract::State<Arc<App>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if guard::changes_state(request.method())
        && !guard::origin_allowed(request.headers(), &app.config.security, guard::Allowed::SameOrigin)
    {
        tracing::info!("refused a cross-origin request");
        return api::ApiError::ForbiddenOrigin.into_response();
    }
    next.run(request).await
}

/// One span per HTTP request; the outcome is logged at debug level (paths
/// carry no citizen data, but the log stays quiet at `info`).
async fn trace_request(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use tracing::Instrument;
    let span = tracing::info_span!("request", method = %request.method(), path = %request.uri().path());
    async move {
        let started = std::time::Instant::now();
        let response = next.run(request).await;
        tracing::debug!(status = response.status().as_u16(), micros = started.elapsed().as_micros() as u64, "answered");
        response
    }
    .instrument(span)
    .await
}

/// The hub's longest tick, in milliseconds. Each tick sends its share of the
/// position updates (at most 1,000 a second), and every frame in a tick's
/// burst is written before an assignment behind it: 100 at a time (a 100 ms
/// tick) held the core for 1.5–4 ms, 20 at a time for a fifth of that.
const TICK_MS: u64 = 20;

/// How often the hub ticks: every 20 ms, or the queue-update interval if
/// shorter. The core spreads position updates over the ticks and still tells
/// each citizen at most once per interval.
fn tick_interval(config: &Config) -> Duration {
    Duration::from_millis(config.chat.queue_update_interval_ms.clamp(1, TICK_MS))
}

fn core_settings(config: &Config) -> CoreSettings {
    let secs = |s: u64| TimeDelta::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1000));
    let chat = &config.chat;
    CoreSettings {
        hours: config.hours.clone(),
        admission: config.admission,
        max_chats_per_advisor: chat.max_chats_per_advisor,
        advisor_grace: secs(chat.advisor_grace_seconds),
        citizen_grace: secs(chat.citizen_grace_seconds),
        inactivity_warning: secs(chat.inactivity_warning_seconds),
        inactivity_end: secs(chat.inactivity_end_seconds),
        max_message_bytes: chat.max_message_bytes,
        max_conversation_bytes: chat.max_conversation_bytes,
        max_queued_bytes: chat.max_queued_bytes,
        queue_update_interval: TimeDelta::milliseconds(i64::try_from(chat.queue_update_interval_ms).unwrap_or(1000)),
        tick: TimeDelta::from_std(tick_interval(config)).unwrap_or(TimeDelta::milliseconds(TICK_MS as i64)),
        assumed_handle: secs(chat.assumed_handle_seconds),
        categories: chat.categories.clone(),
        canned_responses: chat.canned_responses.clone(),
        ask_satisfaction: chat.ask_satisfaction,
        rating_window: TimeDelta::minutes(i64::try_from(chat.rating_window_minutes).unwrap_or(0)),
        notice: NoticeView {
            organisation: config.contact.organisation.clone(),
            public_record_notice: config.contact.public_record_notice.clone(),
            privacy_policy_url: config.contact.privacy_policy_url.clone(),
            phone: config.contact.phone.clone(),
            visiting_address: config.contact.visiting_address.clone(),
        },
    }
}

/// On first start with no accounts, creates `admin` with a random password
/// and prints it once.
async fn ensure_first_admin(storage: &Storage, clock: &dyn Clock, addr: SocketAddr) -> Result<(), StorageError> {
    if storage.user_count().await? > 0 {
        return Ok(());
    }
    let password = auth::generate_password();
    let hash = auth::hash_password(&password).map_err(StorageError::Setup)?;
    match storage.create_user("admin", "Administratör", "admin", &hash, clock.now()).await {
        Ok(_) => {
            println!(
                "First start: created the account \"admin\" with the password {password}\n\
                 It is shown only now. Sign in at http://{addr}/admin and change it with: kommunchat user passwd admin"
            );
            Ok(())
        }
        // Another node created it at the same moment.
        Err(e) if e.is_unique_violation() => Ok(()),
        Err(e) => Err(e),
    }
}

/// The database URL without a password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
