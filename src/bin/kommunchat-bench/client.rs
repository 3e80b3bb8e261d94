//! WebSocket and HTTP clients for the load generator: small buffers, Nagle
//! off, and source addresses spread over 127.0.0.0/8 so one machine can open
//! tens of thousands of connections to one port.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub type Ws = WebSocketStream<TcpStream>;

/// Connections per source address (ephemeral ports per address and destination are about 28,000).
const PER_SOURCE: usize = 4000;

/// The source address for the `n`th connection: 127.0.0.2, 127.0.0.3, …
pub fn source_for(n: usize) -> Ipv4Addr {
    let k = 2 + n / PER_SOURCE;
    Ipv4Addr::new(127, 0, (k / 250) as u8, (k % 250) as u8 + 2)
}

pub async fn tcp(addr: SocketAddr, source: Ipv4Addr) -> Result<TcpStream, String> {
    tcp_from(addr, SocketAddrV4::new(source, 0)).await
}

/// A connection from `source`; port 0 lets the kernel choose one.
async fn tcp_from(addr: SocketAddr, source: SocketAddrV4) -> Result<TcpStream, String> {
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    if source.port() != 0 {
        // A chosen port may still be in TIME_WAIT from an earlier run; the
        // server's port differs, so the connection itself is new.
        socket.set_reuseaddr(true).map_err(|e| e.to_string())?;
    }
    socket.bind(SocketAddr::V4(source)).map_err(|e| format!("bind {source}: {e}"))?;
    let stream = socket.connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(stream)
}

pub async fn connect(addr: SocketAddr, path: &str, source: Ipv4Addr, cookie: Option<&str>) -> Result<Ws, String> {
    let stream = tcp(addr, source).await?;
    upgrade(stream, addr, path, cookie).await
}

async fn upgrade(stream: TcpStream, addr: SocketAddr, path: &str, cookie: Option<&str>) -> Result<Ws, String> {
    let mut request = format!("ws://{addr}{path}").into_client_request().map_err(|e| e.to_string())?;
    if let Some(c) = cookie {
        request.headers_mut().insert("cookie", c.parse().map_err(|_| "cookie header")?);
    }
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    Ok(ws)
}

/// The `n`th citizen connection, after its `welcome` frame, from an address
/// and port of its own (see [`own_source`]).
pub async fn citizen(addr: SocketAddr, n: usize) -> Result<Ws, String> {
    citizen_from(addr, own_source(9, n)).await
}

/// The `n`th citizen's `attempt`th reconnection, after its `welcome` frame,
/// from fresh addresses (127.10+attempt.x.y).
pub async fn citizen_reconnect(addr: SocketAddr, n: usize, attempt: u64) -> Result<Ws, String> {
    let second = u8::try_from(10 + attempt).map_err(|_| "too many attempts")?;
    citizen_from(addr, own_source(second, n)).await
}

async fn citizen_from(addr: SocketAddr, source: SocketAddrV4) -> Result<Ws, String> {
    let stream = tcp_from(addr, source).await?;
    let mut ws = upgrade(stream, addr, "/ws/citizen", None).await?;
    expect(&mut ws, "welcome").await?;
    Ok(ws)
}

/// An address and port for the `n`th of many connections: 64 per address
/// (127.`second`.x.y), ports below the ephemeral range. With port 0 the
/// kernel searches for a free port against every socket bound to the
/// address, the thousands an earlier run left in `TIME_WAIT` included: with
/// 40,000 of them a reconnect storm kept the generator in the kernel for tens
/// of seconds (perf: `inet_bhash2_conflict`), and a surge started right after
/// another took 30 s to join instead of 2.
fn own_source(second: u8, n: usize) -> SocketAddrV4 {
    const PER_ADDRESS: usize = 64;
    let k = n / PER_ADDRESS;
    let source = Ipv4Addr::new(127, second, (k / 250) as u8, (k % 250) as u8 + 1);
    SocketAddrV4::new(source, 20_000 + (n % PER_ADDRESS) as u16)
}

pub async fn send(ws: &mut Ws, frame: &Value) -> Result<(), String> {
    ws.send(Message::Text(frame.to_string().into())).await.map_err(|e| e.to_string())
}

/// The next JSON frame; `None` when the connection ended.
pub async fn next(ws: &mut Ws) -> Option<Value> {
    loop {
        match ws.next().await? {
            Ok(Message::Text(t)) => return serde_json::from_str(&t).ok(),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// Reads until a frame of `kind`.
pub async fn expect(ws: &mut Ws, kind: &str) -> Result<Value, String> {
    loop {
        match next(ws).await {
            Some(f) if f["type"] == kind => return Ok(f),
            Some(f) if f["type"] == "error" => return Err(format!("error while waiting for {kind}: {f}")),
            Some(_) => continue,
            None => return Err(format!("closed while waiting for {kind}")),
        }
    }
}

/// Signs in over plain HTTP and returns the session cookie.
pub async fn login(addr: SocketAddr, username: &str, password: &str) -> Result<String, String> {
    let mut stream = tcp(addr, Ipv4Addr::new(127, 0, 0, 1)).await?;
    let body = serde_json::json!({"username": username, "password": password}).to_string();
    let request = format!(
        "POST /api/v1/login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.map_err(|e| e.to_string())?;
    if !answer.starts_with("HTTP/1.1 200") {
        return Err(format!("login as {username} failed: {}", answer.lines().next().unwrap_or("")));
    }
    answer
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: ").or_else(|| l.strip_prefix("Set-Cookie: ")))
        .and_then(|v| v.split(';').next())
        .map(str::to_owned)
        .ok_or_else(|| "no session cookie".into())
}

/// One histogram's cumulative buckets from the server's `/metrics`:
/// (upper bound in seconds, observations at or below it), `+Inf` last.
pub async fn scrape_histogram(addr: SocketAddr, name: &str) -> Result<Vec<(f64, u64)>, String> {
    let mut stream = tcp(addr, Ipv4Addr::new(127, 0, 0, 1)).await?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.map_err(|e| e.to_string())?;
    let prefix = format!("{name}_bucket{{le=\"");
    let buckets: Vec<(f64, u64)> = answer
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, count.trim().parse().ok()?))
        })
        .collect();
    if buckets.is_empty() {
        return Err(format!("{name} is not in /metrics"));
    }
    Ok(buckets)
}
