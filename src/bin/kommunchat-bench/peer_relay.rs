//! What every peer's relay shares: its result, starting its process pinned
//! as kommunchat is, and the open-loop relay over its connections.

use std::net::SocketAddr;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

use crate::client::Ws;
use crate::open_loop::{Receipts, Schedule, Timeline, histogram, receive_on_schedule, send_on_schedule};
use crate::scenarios::Latency;
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
    pub fn not_run(peer: &str, rate: f64, why: String) -> PeerResult {
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

/// A peer's process, killed when dropped.
pub struct Peer(pub Child);

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
