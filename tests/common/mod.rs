//! Shared test harness: a real server on port 0 with its own database
//! (SQLite in a temporary directory, or a fresh PostgreSQL database), and
//! real WebSocket and HTTP clients.
#![allow(dead_code)]

/// Runs an async test body once per storage backend.
#[allow(unused_macros)]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name(super::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $name() { super::$name(super::Backend::Postgres).await })*
        }
    };
}

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use kommunchat::auth;
use kommunchat::clock::{Clock, ManualClock};
use kommunchat::config::Config;
use kommunchat::server::Server;

/// Where PostgreSQL test databases are created.
pub fn pg_admin_url() -> String {
    std::env::var("KOMMUNCHAT_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database for one test; dropped (PostgreSQL) or deleted (SQLite) with it.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}/kommunchat.db", dir.path().display());
                TestDb { url, _dir: Some(dir), pg_name: None }
            }
            Backend::Postgres => {
                use sqlx::Connection;
                let admin = format!("{}/postgres", pg_admin_url());
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .expect("PostgreSQL must run on 127.0.0.1:5432 (test.sh starts it)");
                // Leftovers of earlier runs (named with their creation time), an
                // hour old or more; newer ones may belong to tests running now.
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or_default();
                let stale: Vec<(String,)> =
                    sqlx::query_as("SELECT datname FROM pg_database WHERE datname LIKE 'kc_test_%'")
                        .fetch_all(&mut conn)
                        .await
                        .unwrap_or_default();
                for (name,) in stale {
                    let created: u64 = name.split('_').nth(2).and_then(|t| t.parse().ok()).unwrap_or(0);
                    if created + 3600 < now {
                        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name}")).execute(&mut conn).await;
                    }
                }
                let name = format!("kc_test_{now}_{}", auth::random_token());
                sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create test database");
                TestDb { url: format!("{}/{name}", pg_admin_url()), _dir: None, pg_name: Some(name) }
            }
        }
    }
}

/// Waits until `check` holds (polling, up to [`WAIT`]); panics naming `what` if it never does.
/// For effects that land asynchronously, such as the storage writer's commits.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A Monday 10:00 in Stockholm: open under the default hours.
pub fn monday_morning() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-30T10:00:00+01:00").expect("instant").to_utc()
}

pub struct TestServer {
    pub server: Option<Server>,
    pub addr: SocketAddr,
    pub clock: Arc<ManualClock>,
    pub db: TestDb,
    pub config: Config,
    http: reqwest::Client,
}

impl TestServer {
    /// Default configuration, open hours (Monday 10:00), SQLite.
    pub async fn start() -> TestServer {
        TestServer::start_with(Backend::Sqlite, |_| {}).await
    }

    pub async fn start_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> TestServer {
        let db = TestDb::new(backend).await;
        let mut config = Config::default();
        config.database_url = db.url.clone();
        config.storage.sqlite_synchronous = kommunchat::config::SqliteSynchronous::Normal;
        config.chat.queue_update_interval_ms = 100;
        // Every test client comes from 127.0.0.1; the per-address caps (sockets,
        // chat starts) have tests of their own.
        config.security.max_citizen_connections_per_address = 1000;
        config.security.chat_starts_per_address_per_hour = 1_000_000;
        adjust(&mut config);
        let clock = Arc::new(ManualClock::new(monday_morning()));
        TestServer::start_on(db, config, clock).await
    }

    pub async fn start_on(db: TestDb, config: Config, clock: Arc<ManualClock>) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server =
            Server::start(config.clone(), listener, clock.clone() as Arc<dyn Clock>).await.expect("server starts");
        let addr = server.addr;
        TestServer { server: Some(server), addr, clock, db, config, http: reqwest::Client::new() }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(self.url(path)).send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A GET as a signed-in user (`cookie` is `kc_session=…`): the status and the JSON body (null if none).
    pub async fn get_json_as(&self, cookie: &str, path: &str) -> (u16, Value) {
        let response = self.http.get(self.url(path)).header("cookie", cookie).send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Adds an account straight into storage.
    pub async fn add_user(&self, username: &str, display_name: &str, role: &str, password: &str) -> i64 {
        let server = self.server.as_ref().expect("running");
        let hash = auth::hash_password(password).expect("hash");
        server.app.storage.create_user(username, display_name, role, &hash, Utc::now()).await.expect("user")
    }

    /// Signs in and returns the session cookie (`kc_session=…`).
    pub async fn login(&self, username: &str, password: &str) -> String {
        let response = self
            .http
            .post(self.url("/api/v1/login"))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .expect("login request");
        assert_eq!(response.status().as_u16(), 200, "login as {username}");
        let cookie =
            response.headers().get("set-cookie").expect("a session cookie").to_str().expect("ascii").to_owned();
        cookie.split(';').next().expect("name=value").to_owned()
    }

    pub async fn citizen(&self) -> Client {
        Client::connect(self.addr, "/ws/citizen", None).await
    }

    /// Whether a new connection's `resume` with `token` is answered
    /// `not_found` (the token is unknown, or no longer remembered).
    pub async fn resume_is_not_found(&self, token: &str) -> bool {
        let mut c = self.citizen().await;
        c.expect("welcome").await;
        c.send(json!({"type": "resume", "token": token, "last_seq": 0})).await;
        c.next().await.is_some_and(|f| f["type"] == "error" && f["code"] == "not_found")
    }

    /// A connected citizen that has started a chat; returns the `queued` frame too.
    pub async fn queued_citizen(&self, name: &str) -> (Client, Value) {
        let mut c = self.citizen().await;
        c.expect("welcome").await;
        c.send(json!({"type": "start", "display_name": name})).await;
        let queued = c.expect("queued").await;
        (c, queued)
    }

    /// Creates an advisor account, signs in and connects; status `available` if asked.
    pub async fn advisor(&self, username: &str, available: bool) -> Client {
        let password = "advisor password 1";
        self.add_user(username, &format!("Handläggare {username}"), "advisor", password).await;
        self.advisor_session(username, password, available).await
    }

    pub async fn advisor_session(&self, username: &str, password: &str, available: bool) -> Client {
        let cookie = self.login(username, password).await;
        let mut a = Client::connect(self.addr, "/ws/advisor", Some(&cookie)).await;
        a.cookie = Some(cookie);
        a.expect("welcome").await;
        if available {
            a.send(json!({"type": "status", "status": "available"})).await;
            a.expect("status").await;
        }
        a
    }

    pub fn storage(&self) -> &kommunchat::storage::Storage {
        &self.server.as_ref().expect("running").app.storage
    }

    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
    }

    /// Stops the server (if running) and starts a new one on the same
    /// database, configuration and clock, as a deploy would. The address changes.
    pub async fn restart(&mut self) {
        self.stop().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server = Server::start(self.config.clone(), listener, self.clock.clone() as Arc<dyn Clock>)
            .await
            .expect("server restarts");
        self.addr = server.addr;
        self.server = Some(server);
    }
}

/// A real WebSocket client speaking the JSON protocol.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub cookie: Option<String>,
    pub addr: SocketAddr,
}

pub const WAIT: Duration = Duration::from_secs(10);

impl Client {
    pub async fn connect(addr: SocketAddr, path: &str, cookie: Option<&str>) -> Client {
        let mut request = format!("ws://{addr}{path}").into_client_request().expect("request");
        if let Some(cookie) = cookie {
            request.headers_mut().insert("cookie", cookie.parse().expect("header"));
        }
        let (ws, _) = tokio_tungstenite::connect_async(request).await.expect("websocket connects");
        Client { ws, cookie: cookie.map(str::to_owned), addr }
    }

    /// A client whose socket takes in at most a few KiB unread (no receive
    /// buffer growth), so a server writing to it stalls soon once it stops reading.
    pub async fn connect_with_small_window(addr: SocketAddr, path: &str) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let stream = socket.connect(addr).await.expect("connects");
        let request = format!("ws://{addr}{path}").into_client_request().expect("request");
        let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
        let (ws, _) = tokio_tungstenite::client_async(request, stream).await.expect("websocket connects");
        Client { ws, cookie: None, addr }
    }

    pub async fn send(&mut self, frame: Value) {
        self.ws.send(Message::Text(frame.to_string().into())).await.expect("send");
    }

    pub async fn send_raw(&mut self, text: &str) {
        self.ws.send(Message::Text(text.into())).await.expect("send");
    }

    /// The next JSON frame, or None if the connection closed.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next()).await.expect("a frame within the wait")?;
            match message {
                Ok(Message::Text(text)) => {
                    return Some(serde_json::from_str(&text).expect("JSON frame"));
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// Reads until a frame of `kind` arrives; panics on close or timeout.
    pub async fn expect(&mut self, kind: &str) -> Value {
        loop {
            match self.next().await {
                Some(frame) if frame["type"] == kind => return frame,
                Some(_) => continue,
                None => panic!("connection closed while waiting for {kind}"),
            }
        }
    }

    /// Reads until a frame of `kind`, returning everything seen before it as well.
    pub async fn collect_until(&mut self, kind: &str) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            match self.next().await {
                Some(frame) => {
                    let done = frame["type"] == kind;
                    seen.push(frame);
                    if done {
                        return seen;
                    }
                }
                None => panic!("connection closed while waiting for {kind}"),
            }
        }
    }

    /// Waits for the server to close the connection and returns the close code.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next()).await.expect("close within the wait");
            match message {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                Some(Err(tungstenite::Error::ConnectionClosed)) | None => return None,
                Some(Err(_)) => return None,
            }
        }
    }

    /// True if no frame of `kind` arrives within `quiet` (other frames are skipped).
    pub async fn none_of(&mut self, kind: &str, quiet: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + quiet;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return true,
                Ok(Some(Ok(Message::Text(text)))) => {
                    let frame: Value = serde_json::from_str(&text).expect("JSON frame");
                    if frame["type"] == kind {
                        return false;
                    }
                }
                Ok(Some(Ok(_))) => continue,
                Ok(_) => return true,
            }
        }
    }
}

/// Settings for driving the chat core directly (no server): the default
/// configuration with short, round limits. Tests adjust fields as needed.
pub fn core_settings() -> kommunchat::domain::chat::CoreSettings {
    let config = Config::default();
    kommunchat::domain::chat::CoreSettings {
        hours: config.hours,
        admission: config.admission,
        max_chats_per_advisor: 3,
        advisor_grace: chrono::TimeDelta::seconds(60),
        citizen_grace: chrono::TimeDelta::seconds(60),
        inactivity_warning: chrono::TimeDelta::seconds(600),
        inactivity_end: chrono::TimeDelta::seconds(120),
        max_message_bytes: 1000,
        max_conversation_bytes: config.chat.max_conversation_bytes,
        max_queued_bytes: config.chat.max_queued_bytes,
        queue_update_interval: chrono::TimeDelta::seconds(1),
        tick: chrono::TimeDelta::seconds(1),
        assumed_handle: chrono::TimeDelta::seconds(300),
        categories: vec!["Övrigt".into()],
        canned_responses: vec![],
        ask_satisfaction: true,
        rating_window: chrono::TimeDelta::minutes(30),
        notice: kommunchat::protocol::ws::NoticeView {
            organisation: String::new(),
            public_record_notice: String::new(),
            privacy_policy_url: String::new(),
            phone: String::new(),
            visiting_address: String::new(),
        },
    }
}

/// A spawned process (the real binary) that is killed when dropped, so a
/// failing test leaves no server running. Derefs to the [`std::process::Child`].
pub struct ChildGuard(pub std::process::Child);

impl std::ops::Deref for ChildGuard {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The `conversation_id` of a frame.
pub fn cid(frame: &Value) -> String {
    frame["conversation_id"].as_str().expect("conversation_id").to_owned()
}

/// Sends a message and waits for its ack; returns the seq.
pub async fn say(client: &mut Client, frame: Value) -> u64 {
    let id = frame["client_msg_id"].as_str().expect("id").to_owned();
    client.send(frame).await;
    loop {
        let f = client.next().await.expect("open");
        if f["type"] == "ack" && f["client_msg_id"] == id.as_str() {
            return f["seq"].as_u64().expect("seq");
        }
        assert_ne!(f["type"], "error", "unexpected error: {f}");
    }
}
