//! Peers measured side by side in the same run: the relay scenario against
//! `nats-server` (NATS over WebSocket). Each is started here with the same
//! CPU pinning as kommunchat. A peer that is not installed is reported as
//! not run, with the reason.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Ws};
use crate::scenarios::{Latency, histogram};
use crate::server::cpu_seconds;

#[derive(Debug, Clone, Serialize)]
pub struct PeerResult {
    pub peer: String,
    pub target_rate_per_s: f64,
    pub achieved_rate_per_s: f64,
    pub received: u64,
    pub errors: u64,
    pub latency: Latency,
    pub server_cpu_percent: f64,
    pub bench_cpu_percent: f64,
    /// Why the peer was not run, if it was not.
    pub error: Option<String>,
}

impl PeerResult {
    fn not_run(peer: &str, rate: f64, why: String) -> PeerResult {
        PeerResult {
            peer: peer.into(),
            target_rate_per_s: rate,
            achieved_rate_per_s: 0.0,
            received: 0,
            errors: 0,
            latency: Latency { count: 0, p50_us: 0.0, p99_us: 0.0, p999_us: 0.0, max_us: 0.0 },
            server_cpu_percent: 0.0,
            bench_cpu_percent: 0.0,
            error: Some(why),
        }
    }
}

pub async fn run_all(cpu: Option<usize>, pairs: usize, rates: &[f64], seconds: f64) -> (Vec<PeerResult>, Vec<String>) {
    let mut out = Vec::new();
    let mut notes = Vec::new();
    for &rate in rates {
        out.push(match nats(cpu, pairs, rate, seconds).await {
            Ok(r) => r,
            Err(e) => PeerResult::not_run("nats-server", rate, e),
        });
    }
    notes.push(
        "ejabberd (XMPP over WebSocket) is not driven by this harness yet; its published figures on this machine kind are in docs/benchmarks.md."
            .into(),
    );
    notes.push(
        "mosquitto: Debian's 2.0.11 does not open a WebSocket listener on this machine kind (performance reference)."
            .into(),
    );
    (out, notes)
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_for(addr: SocketAddr) -> Result<(), String> {
    for _ in 0..100 {
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
async fn nats(cpu: Option<usize>, pairs: usize, rate: f64, seconds: f64) -> Result<PeerResult, String> {
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
    let mut cmd = match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &cpu.to_string(), binary]);
            c
        }
        None => Command::new(binary),
    };
    let child =
        cmd.arg("-c").arg(&conf).stdout(Stdio::null()).stderr(Stdio::null()).spawn().map_err(|e| e.to_string())?;
    let peer = Peer(child);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_for(addr).await?;

    let mut sides = Vec::new();
    for i in 0..pairs {
        let mut a = Nats::connect(addr, 2 * i).await?;
        let mut b = Nats::connect(addr, 2 * i + 1).await?;
        a.subscribe(&format!("a.{i}")).await?;
        b.subscribe(&format!("b.{i}")).await?;
        sides.push((a, format!("b.{i}")));
        sides.push((b, format!("a.{i}")));
    }
    let origin = Instant::now();
    let now_ns = move || origin.elapsed().as_nanos() as u64;
    let start_ns = now_ns() + 200_000_000;
    let end_ns = start_ns + (seconds * 1e9) as u64;
    let per_stream = rate / (2 * pairs) as f64;
    let interval_ns = (1e9 / per_stream) as u64;
    let errors = Arc::new(AtomicU64::new(0));
    let server_cpu0 = cpu_seconds(peer.0.id()).unwrap_or(0.0);
    let bench_cpu0 = cpu_seconds(std::process::id()).unwrap_or(0.0);
    let wall0 = Instant::now();
    let mut tasks = Vec::new();
    let total = sides.len() as u64;
    for (i, (nats, target)) in sides.into_iter().enumerate() {
        let (mut sink, mut stream) = nats.ws.split();
        let errors = errors.clone();
        let offset = (interval_ns / total) * i as u64;
        let sender = tokio::spawn(async move {
            let mut k = 0u64;
            loop {
                let at = start_ns + offset + k * interval_ns;
                if at >= end_ns {
                    break;
                }
                let wait = at.saturating_sub(now_ns());
                if wait > 0 {
                    tokio::time::sleep(Duration::from_nanos(wait)).await;
                }
                let mut body = format!("{} ", now_ns());
                while body.len() < 200 {
                    body.push('x');
                }
                let frame = format!("PUB {target} {}\r\n{body}\r\n", body.len());
                if sink.send(Message::Binary(frame.into_bytes().into())).await.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                k += 1;
            }
            sink
        });
        let receiver = tokio::spawn(async move {
            let mut h = histogram();
            let mut got = 0u64;
            let mut buffer: Vec<u8> = Vec::new();
            let deadline = end_ns + 2_000_000_000;
            while now_ns() < deadline {
                let left = Duration::from_nanos(deadline.saturating_sub(now_ns()));
                let Ok(Some(Ok(message))) = tokio::time::timeout(left, stream.next()).await else { break };
                buffer.extend_from_slice(&message.into_data());
                // Each MSG line is followed by a payload whose first field is the schedule.
                while let Some(pos) = buffer.windows(2).position(|w| w == b"\r\n") {
                    let line = String::from_utf8_lossy(&buffer[..pos]).into_owned();
                    if let Some(rest) = line.strip_prefix("MSG ") {
                        let len: usize = rest.rsplit(' ').next().and_then(|l| l.parse().ok()).unwrap_or(0);
                        if buffer.len() < pos + 2 + len + 2 {
                            break;
                        }
                        let payload = String::from_utf8_lossy(&buffer[pos + 2..pos + 2 + len]).into_owned();
                        if let Some(s) = payload.split(' ').next().and_then(|s| s.parse::<u64>().ok()) {
                            let _ = h.record_correct(now_ns().saturating_sub(s).max(1), interval_ns);
                            got += 1;
                        }
                        buffer.drain(..pos + 2 + len + 2);
                    } else {
                        buffer.drain(..pos + 2);
                    }
                }
            }
            (h, got)
        });
        tasks.push((sender, receiver));
    }
    let mut all = histogram();
    let mut received = 0;
    let mut sinks = Vec::new();
    for (s, r) in tasks {
        if let Ok((h, got)) = r.await {
            let _ = all.add(&h);
            received += got;
        }
        if let Ok(sink) = s.await {
            sinks.push(sink);
        }
    }
    let wall = wall0.elapsed().as_secs_f64();
    let result = PeerResult {
        peer: "nats-server".into(),
        target_rate_per_s: rate,
        achieved_rate_per_s: received as f64 / seconds,
        received,
        errors: errors.load(Ordering::Relaxed),
        latency: Latency::of(&all),
        server_cpu_percent: 100.0 * (cpu_seconds(peer.0.id()).unwrap_or(0.0) - server_cpu0) / wall,
        bench_cpu_percent: 100.0 * (cpu_seconds(std::process::id()).unwrap_or(0.0) - bench_cpu0) / wall,
        error: None,
    };
    drop(peer);
    Ok(result)
}
