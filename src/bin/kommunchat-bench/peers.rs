//! Peers measured side by side in the same run: the relay scenario against
//! `nats-server` (NATS over WebSocket) and `ejabberd` (XMPP over WebSocket).
//! Each is started here with the same CPU pinning as kommunchat and driven
//! by the same open-loop schedule. A peer that is not installed is reported
//! as not run, with the reason.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Ws};
use crate::ejabberd;
use crate::open_loop::{Receipts, Schedule, Timeline, receive_on_schedule, send_on_schedule, sent_at};
use crate::scenarios::{Latency, histogram};
use crate::server::cpu_seconds;

#[derive(Debug, Clone, Serialize)]
pub struct PeerResult {
    pub peer: String,
    pub target_rate_per_s: f64,
    pub achieved_rate_per_s: f64,
    pub sent: u64,
    pub received: u64,
    pub errors: u64,
    pub latency: Latency,
    pub server_cpu_percent: f64,
    pub bench_cpu_percent: f64,
    /// Why the peer was not run, if it was not.
    pub error: Option<String>,
    /// Share of the run's 10 ms windows in which the latest message took
    /// over 1 ms (as for kommunchat's relay).
    pub windows_over_1ms: f64,
    pub timeline: Timeline,
}

impl PeerResult {
    fn not_run(peer: &str, rate: f64, why: String) -> PeerResult {
        PeerResult {
            peer: peer.into(),
            target_rate_per_s: rate,
            achieved_rate_per_s: 0.0,
            sent: 0,
            received: 0,
            errors: 0,
            latency: Latency { count: 0, p50_us: 0.0, p99_us: 0.0, p999_us: 0.0, max_us: 0.0 },
            server_cpu_percent: 0.0,
            bench_cpu_percent: 0.0,
            error: Some(why),
            windows_over_1ms: 0.0,
            timeline: Timeline::default(),
        }
    }
}

pub async fn run_all(
    cpu: Option<usize>,
    pairs: usize,
    rates: &[f64],
    seconds: f64,
    smooth: bool,
) -> (Vec<PeerResult>, Vec<String>) {
    let mut out = Vec::new();
    for &rate in rates {
        eprintln!("peer nats-server: {rate} msg/s, {pairs} pairs");
        out.push(match nats(cpu, pairs, rate, seconds, smooth).await {
            Ok(r) => r,
            Err(e) => PeerResult::not_run("nats-server", rate, e),
        });
    }
    for &rate in rates {
        eprintln!("peer ejabberd: {rate} msg/s, {pairs} pairs");
        out.push(match ejabberd::relay(cpu, pairs, rate, seconds, smooth).await {
            Ok(r) => r,
            Err(e) => PeerResult::not_run("ejabberd", rate, e),
        });
    }
    let notes = vec![
        "mosquitto: Debian's 2.0.11 does not open a WebSocket listener on this machine kind (performance reference)."
            .into(),
    ];
    (out, notes)
}

pub fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// `program`, pinned to `cpu` when given, as kommunchat is.
pub fn pinned(cpu: Option<usize>, program: &str) -> Command {
    match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &cpu.to_string(), program]);
            c
        }
        None => Command::new(program),
    }
}

struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub async fn wait_for(addr: SocketAddr, patience: Duration) -> Result<(), String> {
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("nothing listens on {addr}"))
}

/// NATS protocol over a WebSocket: subscribe, publish, and parse MSG frames.
struct Nats {
    ws: Ws,
}

impl Nats {
    async fn connect(addr: SocketAddr, n: usize) -> Result<Nats, String> {
        let mut ws = client::connect(addr, "/", client::source_for(n), None).await?;
        ws.send(Message::Binary(
            b"CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1}\r\nPING\r\n".to_vec().into(),
        ))
        .await
        .map_err(|e| e.to_string())?;
        let mut nats = Nats { ws };
        nats.until(b"PONG").await?;
        Ok(nats)
    }

    async fn until(&mut self, token: &[u8]) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_secs(5), self.ws.next()).await {
                Ok(Some(Ok(m))) => {
                    if m.into_data().windows(token.len()).any(|w| w == token) {
                        return Ok(());
                    }
                }
                _ => return Err("NATS connection ended".into()),
            }
        }
        Err("NATS did not answer".into())
    }

    async fn subscribe(&mut self, subject: &str) -> Result<(), String> {
        self.ws
            .send(Message::Binary(format!("SUB {subject} 1\r\nPING\r\n").into_bytes().into()))
            .await
            .map_err(|e| e.to_string())?;
        self.until(b"PONG").await
    }
}

/// The relay scenario against nats-server: `pairs` pairs of connections, each
/// side publishing to the other's subject at the same open-loop schedule.
async fn nats(cpu: Option<usize>, pairs: usize, rate: f64, seconds: f64, smooth: bool) -> Result<PeerResult, String> {
    let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .ok_or("nats-server is not installed (apt-get install nats-server)")?;
    let port = free_port()?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let conf = dir.path().join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "listen: \"127.0.0.1:{}\"\nwebsocket {{\n  listen: \"127.0.0.1:{port}\"\n  no_tls: true\n}}\n",
            free_port()?
        ),
    )
    .map_err(|e| e.to_string())?;
    let child = pinned(cpu, binary)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let peer = Peer(child);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_for(addr, Duration::from_secs(5)).await?;

    let mut sides = Vec::new();
    for i in 0..pairs {
        let mut a = Nats::connect(addr, 2 * i).await?;
        let mut b = Nats::connect(addr, 2 * i + 1).await?;
        a.subscribe(&format!("a.{i}")).await?;
        b.subscribe(&format!("b.{i}")).await?;
        sides.push(nats_side(a, format!("b.{i}")));
        sides.push(nats_side(b, format!("a.{i}")));
    }
    Ok(relay("nats-server", peer.0.id(), sides, rate, seconds, smooth).await)
}

/// A NATS connection publishing to `target`, reading the MSG frames of its subscription.
fn nats_side(
    nats: Nats,
    target: String,
) -> RelaySide<impl FnMut(&str) -> Message + Send + 'static, impl FnMut(Message, &mut Receipts) + Send + 'static> {
    let frame = move |payload: &str| {
        Message::Binary(format!("PUB {target} {}\r\n{payload}\r\n", payload.len()).into_bytes().into())
    };
    // NATS frames are a byte stream: one WebSocket message may end inside a MSG.
    let mut buffer: Vec<u8> = Vec::new();
    let decode = move |message: Message, receipts: &mut Receipts| {
        buffer.extend_from_slice(&message.into_data());
        while let Some(pos) = buffer.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buffer[..pos]).into_owned();
            if let Some(rest) = line.strip_prefix("MSG ") {
                let len: usize = rest.rsplit(' ').next().and_then(|l| l.parse().ok()).unwrap_or(0);
                if buffer.len() < pos + 2 + len + 2 {
                    break;
                }
                if let Some(sent_ns) = sent_at(&String::from_utf8_lossy(&buffer[pos + 2..pos + 2 + len])) {
                    receipts.sent_at.push(sent_ns);
                }
                buffer.drain(..pos + 2 + len + 2);
            } else {
                if line.starts_with("-ERR") {
                    receipts.errors += 1;
                }
                buffer.drain(..pos + 2);
            }
        }
    };
    RelaySide { ws: nats.ws, frame, decode }
}

/// One connection of a peer's relay: its socket, how it wraps a payload for
/// its partner, and how it finds payloads in what it receives.
pub struct RelaySide<F, D> {
    pub ws: Ws,
    pub frame: F,
    pub decode: D,
}

/// Runs the open-loop relay over `sides` (one stream each, `rate` messages
/// per second in all) and measures the peer's process `server_pid`.
pub async fn relay<F, D>(
    peer: &str,
    server_pid: u32,
    sides: Vec<RelaySide<F, D>>,
    rate: f64,
    seconds: f64,
    smooth: bool,
) -> PeerResult
where
    F: FnMut(&str) -> Message + Send + 'static,
    D: FnMut(Message, &mut Receipts) + Send + 'static,
{
    let schedule = Schedule::new(rate, sides.len(), seconds);
    let sent = Arc::new(AtomicU64::new(0));
    let send_errors = Arc::new(AtomicU64::new(0));
    let server_cpu0 = cpu_seconds(server_pid).unwrap_or(0.0);
    let bench_cpu0 = cpu_seconds(std::process::id()).unwrap_or(0.0);
    let wall0 = Instant::now();
    let mut tasks = Vec::new();
    let releases = schedule.releases(smooth);
    for (side, releases) in sides.into_iter().zip(releases) {
        let (mut sink, mut messages) = side.ws.split();
        let (sent, send_errors) = (sent.clone(), send_errors.clone());
        let sender = tokio::spawn(async move {
            if send_on_schedule(&mut sink, schedule, releases, &sent, side.frame).await.is_err() {
                send_errors.fetch_add(1, Ordering::Relaxed);
            }
            // Handed back so that the socket stays open until its receiver is done.
            sink
        });
        let receiver = tokio::spawn(async move { receive_on_schedule(&mut messages, schedule, side.decode).await });
        tasks.push((sender, receiver));
    }
    let mut latencies = histogram();
    let mut timeline = Timeline::default();
    let mut received = 0;
    let mut errors = 0;
    let mut sinks = Vec::new();
    for (sender, receiver) in tasks {
        if let Ok(r) = receiver.await {
            let _ = latencies.add(&r.latencies);
            timeline.add(&r.timeline);
            received += r.count;
            errors += r.errors;
        }
        if let Ok(sink) = sender.await {
            sinks.push(sink);
        }
    }
    let wall = wall0.elapsed().as_secs_f64();
    PeerResult {
        peer: peer.into(),
        target_rate_per_s: rate,
        achieved_rate_per_s: received as f64 / seconds,
        sent: sent.load(Ordering::Relaxed),
        received,
        errors: errors + send_errors.load(Ordering::Relaxed),
        latency: Latency::of(&latencies),
        server_cpu_percent: 100.0 * (cpu_seconds(server_pid).unwrap_or(0.0) - server_cpu0) / wall,
        bench_cpu_percent: 100.0 * (cpu_seconds(std::process::id()).unwrap_or(0.0) - bench_cpu0) / wall,
        error: None,
        windows_over_1ms: timeline.share_late(1_000_000),
        timeline,
    }
}
