//! The scenarios: connections, relay, surge, reconnect storm.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Ws};
use crate::open_loop::{Timeline, histogram, payload, releases, sent_at};
use crate::server::{ServerProcess, cpu_seconds, rss_bytes};

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        let us = |ns: u64| ns as f64 / 1000.0;
        Latency {
            count: h.len(),
            p50_us: us(h.value_at_quantile(0.5)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }
}

/// The server's own measure of a phase, from one of its histograms read
/// before and after: `kommunchat_assignment_latency_seconds` (from reading an
/// advisor's `end` to writing the next `assigned` to that advisor's socket)
/// or `kommunchat_storage_write_seconds` (one durable write). Percentiles
/// are bucket bounds ("at most").
#[derive(Debug, Clone, Serialize)]
pub struct ServerLatency {
    pub count: u64,
    pub p50_at_most_us: f64,
    pub p99_at_most_us: f64,
    pub p999_at_most_us: f64,
    /// Share of the observations within 1 ms.
    pub within_1ms: f64,
}

impl ServerLatency {
    /// From two scrapes of the same cumulative histogram, `before` and `after`.
    fn between(before: &[(f64, u64)], after: &[(f64, u64)]) -> Option<ServerLatency> {
        let delta: Vec<(f64, u64)> = after
            .iter()
            .map(|&(le, n)| (le, n - before.iter().find(|(b, _)| *b == le).map_or(0, |(_, m)| *m).min(n)))
            .collect();
        let count = delta.last()?.1;
        if count == 0 {
            return None;
        }
        let at_most = |q: f64| {
            let rank = (q * count as f64).ceil() as u64;
            delta.iter().find(|(_, n)| *n >= rank).map_or(f64::INFINITY, |(le, _)| le * 1e6)
        };
        let within = delta.iter().find(|(le, _)| (*le - 0.001).abs() < 1e-12).map_or(0, |(_, n)| *n);
        Some(ServerLatency {
            count,
            p50_at_most_us: at_most(0.5),
            p99_at_most_us: at_most(0.99),
            p999_at_most_us: at_most(0.999),
            within_1ms: within as f64 / count as f64,
        })
    }
}

/// The server's routing-latency histogram (see [`ServerLatency`]).
const ASSIGNMENT_METRIC: &str = "kommunchat_assignment_latency_seconds";

/// The server's histogram of the time each durable write (batch) took.
const STORAGE_WRITE_METRIC: &str = "kommunchat_storage_write_seconds";

// ------------------------------------------------------------ connections

#[derive(Debug, Clone, Serialize)]
pub struct ConnectionsResult {
    pub target: usize,
    pub connected: usize,
    pub errors: usize,
    pub connect_rate_per_s: f64,
    pub server_rss_idle_bytes: u64,
    pub server_rss_loaded_bytes: u64,
    pub bytes_per_connection: f64,
}

/// Opens `n` idle citizen connections (each waits for its `welcome`) and
/// measures the server's memory per connection.
pub async fn connections(server: &ServerProcess, n: usize) -> (ConnectionsResult, Vec<Ws>) {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = rss_bytes(server.pid()).unwrap_or(0);
    let started = Instant::now();
    let limit = Arc::new(Semaphore::new(256));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let limit = limit.clone();
        let addr = server.addr;
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await.ok()?;
            let ws = client::citizen(addr, i).await.ok()?;
            Some(ws)
        }));
    }
    let mut held = Vec::with_capacity(n);
    let mut errors = 0;
    for t in tasks {
        match t.await.ok().flatten() {
            Some(ws) => held.push(ws),
            None => errors += 1,
        }
    }
    let took = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let loaded = rss_bytes(server.pid()).unwrap_or(0);
    let connected = held.len();
    let result = ConnectionsResult {
        target: n,
        connected,
        errors,
        connect_rate_per_s: connected as f64 / took.max(1e-9),
        server_rss_idle_bytes: idle,
        server_rss_loaded_bytes: loaded,
        bytes_per_connection: loaded.saturating_sub(idle) as f64 / connected.max(1) as f64,
    };
    (result, held)
}

// ------------------------------------------------------------ advisors and chats

/// Creates advisors, signs them in and makes them available.
pub async fn advisors(server: &ServerProcess, binary: &Path, count: usize) -> Result<Vec<Ws>, String> {
    add_advisors(server, binary, count)?;
    connect_advisors(server.addr, count).await
}

/// Creates the accounts `bench0`, `bench1`, … through the CLI.
fn add_advisors(server: &ServerProcess, binary: &Path, count: usize) -> Result<(), String> {
    (0..count).try_for_each(|i| server.add_advisor(binary, &format!("bench{i}")))
}

/// Signs in the accounts [`add_advisors`] created, connects each and makes it available.
async fn connect_advisors(addr: SocketAddr, count: usize) -> Result<Vec<Ws>, String> {
    let mut out = Vec::new();
    for i in 0..count {
        let cookie = client::login(addr, &format!("bench{i}"), "benchmark password").await?;
        let mut ws = client::connect(addr, "/ws/advisor", client::source_for(0), Some(&cookie)).await?;
        client::expect(&mut ws, "welcome").await?;
        client::send(&mut ws, &json!({"type": "status", "status": "available"})).await?;
        client::expect(&mut ws, "status").await?;
        out.push(ws);
    }
    Ok(out)
}

// ------------------------------------------------------------ relay

#[derive(Debug, Clone, Serialize)]
pub struct RelayResult {
    /// The server's storage, as the table names it (`SQLite
    /// synchronous=full`, `PostgreSQL`).
    pub storage: String,
    pub pairs: usize,
    pub target_rate_per_s: f64,
    pub achieved_rate_per_s: f64,
    pub seconds: f64,
    pub sent: u64,
    pub received: u64,
    pub errors: u64,
    pub latency: Latency,
    pub server_cpu_percent: f64,
    pub bench_cpu_percent: f64,
    /// On PostgreSQL, its processes' CPU (all of them, the WAL writer
    /// included), which `server_cpu_percent` does not count; they are not
    /// pinned, so they share the generator's core. `None` on SQLite, whose
    /// threads are the server's own.
    pub database_cpu_percent: Option<f64>,
    /// Size of the server's SQLite log (`-wal`) when the run ended: bounded
    /// (about 32-64 MiB at most) however long the load lasts. `None` on
    /// PostgreSQL.
    pub sqlite_log_bytes: Option<u64>,
    /// The server's own time per durable write over the run (its
    /// `kommunchat_storage_write_seconds`): with the message log, one append
    /// and, under `synchronous=full`, one `fdatasync`. Every message waits
    /// for one, so this is the floor under the latency.
    pub durable_write: Option<ServerLatency>,
    /// Share of the run's 10 ms windows in which the latest message took
    /// over 1 ms: how much of the time saw a stall (see `timeline`).
    pub windows_over_1ms: f64,
    pub timeline: Timeline,
}

/// `pairs` conversations exchange messages at `rate` per second in all (half
/// each way), open loop, for `seconds`. Latency is from the intended send
/// time to receipt, so a stall is counted for every message it delays.
pub async fn relay(
    server: &ServerProcess,
    binary: &Path,
    pairs: usize,
    advisors_count: usize,
    rate: f64,
    seconds: f64,
    smooth: bool,
) -> Result<RelayResult, String> {
    let mut advisor_sockets = advisors(server, binary, advisors_count).await?;
    let mut citizens = Vec::new();
    for i in 0..pairs {
        let mut ws = client::citizen(server.addr, i).await?;
        client::send(&mut ws, &json!({"type": "start", "display_name": format!("c{i}")})).await?;
        client::expect(&mut ws, "queued").await?;
        client::expect(&mut ws, "assigned").await?;
        citizens.push(ws);
    }
    // Which conversations each advisor holds.
    let mut held: Vec<Vec<String>> = Vec::new();
    for ws in advisor_sockets.iter_mut() {
        let mut mine = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_millis(300), client::next(ws)).await {
                Ok(Some(f)) if f["type"] == "assigned" => {
                    mine.push(f["chat"]["conversation_id"].as_str().unwrap_or_default().to_owned())
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        held.push(mine);
    }
    let total_held: usize = held.iter().map(Vec::len).sum();
    if total_held != pairs {
        return Err(format!("{total_held} of {pairs} chats reached advisors"));
    }

    let origin = Instant::now();
    let now_ns = move || origin.elapsed().as_nanos() as u64;
    let start_ns = now_ns() + 200_000_000;
    let end_ns = start_ns + (seconds * 1e9) as u64;
    let per_stream_rate = rate / 2.0 / pairs as f64;
    let interval_ns = (1e9 / per_stream_rate) as u64;
    let sent = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let writes_before = client::scrape_histogram(server.addr, STORAGE_WRITE_METRIC).await;
    let server_cpu0 = cpu_seconds(server.pid()).unwrap_or(0.0);
    let bench_cpu0 = cpu_seconds(std::process::id()).unwrap_or(0.0);
    let database_cpu0 = server.database_cpu_seconds();
    let wall0 = Instant::now();

    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    // One stream per citizen, then one per conversation of each advisor (half
    // an interval later).
    let step = interval_ns / pairs as u64;
    let offsets: Vec<u64> = (0..pairs as u64)
        .map(|i| step * i)
        .chain(held.iter().flat_map(|mine| (0..mine.len() as u64).map(|j| step * j + interval_ns / 2)))
        .collect();
    let mut releases = releases(origin, offsets.len(), smooth, move |stream, k| {
        Some(start_ns + offsets[stream] + k * interval_ns).filter(|&at| at < end_ns)
    })
    .into_iter();
    // Citizens: one sender (one stream) and one receiver each.
    for ws in citizens {
        let (mut sink, stream) = ws.split();
        let sent = sent.clone();
        let send_errors = errors.clone();
        let mut releases = releases.next().expect("a stream per citizen");
        senders.push(tokio::spawn(async move {
            let errors = send_errors;
            let mut k = 0u64;
            while releases.next().await {
                // The actual send time: a release can still come late, and
                // that lateness belongs to the generator, not the server.
                let frame = json!({"type": "message", "client_msg_id": format!("c{k}"), "text": payload(now_ns())});
                if sink.send(Message::Text(frame.to_string().into())).await.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
                k += 1;
            }
        }));
        let errors = errors.clone();
        receivers.push(tokio::spawn(receive(stream, origin, start_ns, end_ns, interval_ns, errors)));
    }
    // Advisors: one sender per conversation stream, sharing the socket's sink.
    for (ws, mine) in advisor_sockets.into_iter().zip(held) {
        let (sink, stream) = ws.split();
        let sink = Arc::new(tokio::sync::Mutex::new(sink));
        for conversation in mine {
            let sink = sink.clone();
            let sent = sent.clone();
            let errors = errors.clone();
            let mut releases = releases.next().expect("a stream per conversation");
            senders.push(tokio::spawn(async move {
                let mut k = 0u64;
                while releases.next().await {
                    let frame = json!({"type": "message", "conversation_id": conversation, "client_msg_id": format!("a{k}"), "text": payload(now_ns())});
                    if sink.lock().await.send(Message::Text(frame.to_string().into())).await.is_err() {
                        errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                    k += 1;
                }
            }));
        }
        let errors = errors.clone();
        receivers.push(tokio::spawn(receive(stream, origin, start_ns, end_ns, interval_ns, errors)));
    }
    let mut total = histogram();
    let mut timeline = Timeline::default();
    let mut received = 0;
    for r in receivers {
        if let Ok((h, t, got, _stream)) = r.await {
            let _ = total.add(&h);
            timeline.add(&t);
            received += got;
        }
    }
    for s in senders {
        let _ = s.await;
    }
    let wall = wall0.elapsed().as_secs_f64();
    let server_cpu = cpu_seconds(server.pid()).unwrap_or(0.0) - server_cpu0;
    let bench_cpu = cpu_seconds(std::process::id()).unwrap_or(0.0) - bench_cpu0;
    let database_cpu = database_cpu0.zip(server.database_cpu_seconds()).map(|(before, after)| after - before);
    let writes_after = client::scrape_histogram(server.addr, STORAGE_WRITE_METRIC).await;
    let durable_write = match (&writes_before, &writes_after) {
        (Ok(b), Ok(a)) => ServerLatency::between(b, a),
        _ => None,
    };
    Ok(RelayResult {
        storage: String::new(),
        pairs,
        target_rate_per_s: rate,
        achieved_rate_per_s: received as f64 / seconds,
        seconds,
        sent: sent.load(Ordering::Relaxed),
        received,
        errors: errors.load(Ordering::Relaxed),
        latency: Latency::of(&total),
        server_cpu_percent: 100.0 * server_cpu / wall,
        bench_cpu_percent: 100.0 * bench_cpu / wall,
        database_cpu_percent: database_cpu.map(|cpu| 100.0 * cpu / wall),
        sqlite_log_bytes: server.sqlite_log_bytes(),
        durable_write,
        windows_over_1ms: timeline.share_late(1_000_000),
        timeline,
    })
}

/// Reads one socket until `end_ns` (plus two seconds for stragglers), recording
/// the latency of every `message` frame. Returns the stream so the socket
/// stays open until every receiver is done.
async fn receive<S>(
    mut stream: S,
    origin: Instant,
    start_ns: u64,
    end_ns: u64,
    interval_ns: u64,
    errors: Arc<AtomicU64>,
) -> (Histogram<u64>, Timeline, u64, S)
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let now_ns = || origin.elapsed().as_nanos() as u64;
    let mut h = histogram();
    let mut timeline = Timeline::default();
    let mut got = 0u64;
    let deadline = end_ns + 2_000_000_000;
    while now_ns() < deadline {
        let left = Duration::from_nanos(deadline.saturating_sub(now_ns()));
        match tokio::time::timeout(left, stream.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let f: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
                match f["type"].as_str() {
                    Some("message") => {
                        if let Some(s) = f["text"].as_str().and_then(sent_at) {
                            let now = now_ns();
                            let latency = now.saturating_sub(s).max(1);
                            // Corrected for coordinated omission: a stall longer than
                            // the send interval also delayed the messages not yet sent.
                            let _ = h.record_correct(latency, interval_ns);
                            timeline.note(now.saturating_sub(start_ns), latency);
                            got += 1;
                        }
                    }
                    Some("error") => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
            Ok(Some(Ok(_))) => {}
            _ => break,
        }
    }
    (h, timeline, got, stream)
}

// ------------------------------------------------------------ surge

#[derive(Debug, Clone, Serialize)]
pub struct SurgeResult {
    pub citizens: usize,
    pub advisors: usize,
    pub join_seconds: f64,
    pub drain_seconds: f64,
    pub assigned: u64,
    /// First phase of the drain: advisors end chats at this steady rate in
    /// all, so the latency is the server's and not a queue of their own
    /// requests, while at least `paced_min_waiting` citizens wait.
    pub paced_rate_per_s: f64,
    pub paced_assignments: u64,
    pub paced_min_waiting: usize,
    /// From an advisor's `end` to the next `assigned` on that socket, in the paced phase.
    pub paced_latency: Latency,
    /// The same phase as the server measured it (`None` if it could not be read).
    pub paced_server: Option<ServerLatency>,
    /// The same in the rest of the drain, where the advisors end every chat
    /// as soon as they get it: the server's core is saturated, and the
    /// latency is advisors ÷ throughput (Little's law).
    pub assignment_latency: Latency,
    /// How late the generator's own paced timers fired: its jitter (the
    /// core it runs on is shared with the kernel's network work), which is
    /// in every latency it measures too.
    pub generator_lateness: Latency,
    /// How the advisors' thread, which measures assignment, was scheduled.
    pub advisors_thread: String,
    pub queue_updates_received: u64,
    pub server_cpu_seconds_join: f64,
    pub server_cpu_seconds_drain: f64,
}

/// Assignments per second in all in the paced phase of the surge's drain.
const PACED_RATE: f64 = 1000.0;
/// Most assignments in the paced phase (3 s at [`PACED_RATE`]).
const PACED_MAX: usize = 3000;

/// `n` citizens join at once; `advisors` advisors with one chat each first
/// end chats at [`PACED_RATE`] in all for a quarter of the queue (at most
/// [`PACED_MAX`]), then every chat as soon as they get it, until the queue
/// is empty.
pub async fn surge(
    server: &ServerProcess,
    binary: &Path,
    n: usize,
    advisor_count: usize,
) -> Result<SurgeResult, String> {
    add_advisors(server, binary, advisor_count)?;
    let shared = AdvisorsShared {
        // Set when the queue has filled.
        remaining: Arc::new(AtomicU64::new(0)),
        paced_left: Arc::new(AtomicU64::new(0)),
        first_chats: Arc::new(AtomicU64::new(0)),
        at_barrier: Arc::new(AtomicU64::new(0)),
        finished: Arc::new(AtomicU64::new(0)),
        unpaced: tokio::sync::watch::channel(false),
        count: advisor_count,
        // Each advisor ends one chat per `interval`, staggered across advisors.
        interval: Duration::from_secs_f64(advisor_count.max(1) as f64 / PACED_RATE),
    };
    let (advisors_ready, ready) = tokio::sync::oneshot::channel();
    let (go, go_rx) = tokio::sync::oneshot::channel();
    let advisor_thread = run_advisors(server.addr, shared.clone(), advisors_ready, go_rx)?;
    let advisors_thread = ready.await.map_err(|_| "the advisors' thread ended".to_string())??;
    let cpu0 = cpu_seconds(server.pid()).unwrap_or(0.0);
    let joined = Instant::now();
    let limit = Arc::new(Semaphore::new(256));
    let updates = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(n);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(n.max(1));
    for i in 0..n {
        let limit = limit.clone();
        let addr = server.addr;
        let updates = updates.clone();
        let ready = ready_tx.clone();
        tasks.push(tokio::spawn(async move {
            let permit = limit.acquire_owned().await.ok()?;
            let mut ws = client::citizen(addr, i).await.ok()?;
            client::send(&mut ws, &json!({"type": "start"})).await.ok()?;
            client::expect(&mut ws, "queued").await.ok()?;
            drop(permit);
            let _ = ready.send(()).await;
            loop {
                match client::next(&mut ws).await {
                    Some(f) if f["type"] == "queue_update" => {
                        updates.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(f) if f["type"] == "ended" => return Some(()),
                    Some(_) => {}
                    None => return None,
                }
            }
        }));
    }
    drop(ready_tx);
    let mut queued = 0;
    while queued < n && ready_rx.recv().await.is_some() {
        queued += 1;
    }
    let join_seconds = joined.elapsed().as_secs_f64();
    let cpu1 = cpu_seconds(server.pid()).unwrap_or(0.0);
    let drained = Instant::now();
    let paced = (queued / 4).min(PACED_MAX) as u64;
    shared.remaining.store(queued as u64, Ordering::Relaxed);
    shared.paced_left.store(paced, Ordering::Relaxed);
    let _ = go.send(());
    // The server's own figure covers exactly the paced phase: read when every
    // advisor has its first chat (taken all at once when they became
    // available, not paced) and again when every advisor has had its last
    // paced `end` answered and waits at `unpaced` before going on. Until
    // then, polling: a millisecond late is harmless here.
    let advisors_running = advisor_count as u64;
    let poll = Duration::from_millis(1);
    let deadline = Instant::now() + Duration::from_secs(60);
    while shared.first_chats.load(Ordering::Relaxed) < advisors_running && Instant::now() < deadline {
        tokio::time::sleep(poll).await;
    }
    let before = client::scrape_histogram(server.addr, ASSIGNMENT_METRIC).await;
    while shared.at_barrier.load(Ordering::Relaxed) + shared.finished.load(Ordering::Relaxed) < advisors_running
        && Instant::now() < deadline
    {
        tokio::time::sleep(poll).await;
    }
    let after = client::scrape_histogram(server.addr, ASSIGNMENT_METRIC).await;
    let _ = shared.unpaced.0.send(true);
    let paced_server = match (&before, &after) {
        (Ok(b), Ok(a)) => ServerLatency::between(b, a),
        _ => None,
    };
    let mut latency = histogram();
    let mut paced_latency = histogram();
    let mut lateness = histogram();
    let mut assigned = 0;
    let outcomes = tokio::task::spawn_blocking(move || advisor_thread.join())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|_| "the advisors' thread panicked".to_string())?;
    for outcome in outcomes {
        let _ = latency.add(&outcome.drain);
        let _ = paced_latency.add(&outcome.paced);
        let _ = lateness.add(&outcome.late);
        assigned += outcome.assigned;
    }
    let drain_seconds = drained.elapsed().as_secs_f64();
    let cpu2 = cpu_seconds(server.pid()).unwrap_or(0.0);
    for t in tasks {
        t.abort();
    }
    Ok(SurgeResult {
        citizens: queued,
        advisors: advisor_count,
        join_seconds,
        drain_seconds,
        assigned,
        paced_rate_per_s: PACED_RATE,
        paced_assignments: paced,
        paced_min_waiting: queued.saturating_sub(paced as usize + advisor_count),
        paced_latency: Latency::of(&paced_latency),
        paced_server,
        assignment_latency: Latency::of(&latency),
        generator_lateness: Latency::of(&lateness),
        advisors_thread,
        queue_updates_received: updates.load(Ordering::Relaxed),
        server_cpu_seconds_join: cpu1 - cpu0,
        server_cpu_seconds_drain: cpu2 - cpu1,
    })
}

/// What the surge's advisors share with the scenario that runs them.
#[derive(Clone)]
struct AdvisorsShared {
    /// Chats not yet assigned; the advisors stop at zero.
    remaining: Arc<AtomicU64>,
    /// `end`s still to be sent at the paced rate.
    paced_left: Arc<AtomicU64>,
    /// Advisors that have their first chat.
    first_chats: Arc<AtomicU64>,
    /// Advisors waiting at the end of the paced phase for `unpaced`.
    at_barrier: Arc<AtomicU64>,
    /// Advisors that have stopped.
    finished: Arc<AtomicU64>,
    unpaced: (tokio::sync::watch::Sender<bool>, tokio::sync::watch::Receiver<bool>),
    count: usize,
    interval: Duration,
}

/// One advisor's figures from the surge's drain.
struct AdvisorOutcome {
    drain: Histogram<u64>,
    paced: Histogram<u64>,
    late: Histogram<u64>,
    assigned: u64,
}

/// Connects the surge's advisors and, after `go`, runs them on a thread of
/// their own. They are what measures assignment, so the thread takes the
/// real-time policy ([`kommunchat::scheduling::realtime_this_thread`]; the
/// generator runs as root), or else the short slice the server's connections
/// get: an `assigned` frame is read when it arrives, and an `end` goes out
/// when its timer fires, not after whatever the main thread is doing for the
/// 19,000 citizens sharing its core (docs/benchmarks.md, eleventh round). The advisors connect
/// away, so the queue fills before any is taken; `ready` is told when they
/// are connected (or why not).
fn run_advisors(
    addr: SocketAddr,
    shared: AdvisorsShared,
    ready: tokio::sync::oneshot::Sender<Result<String, String>>,
    go: tokio::sync::oneshot::Receiver<()>,
) -> Result<std::thread::JoinHandle<Vec<AdvisorOutcome>>, String> {
    std::thread::Builder::new()
        .name("advisors".into())
        .spawn(move || {
            let scheduling = match kommunchat::scheduling::realtime_this_thread() {
                Ok(()) => "real-time (SCHED_FIFO, priority 1)".to_string(),
                Err(e) => {
                    kommunchat::scheduling::favour_connections_thread();
                    format!("ordinary with the connections' short slice (the real-time policy was refused: {e})")
                }
            };
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    let _ = ready.send(Err(format!("a runtime for the advisors: {e}")));
                    return Vec::new();
                }
            };
            runtime.block_on(async move {
                let connected = async {
                    let mut sockets = connect_advisors(addr, shared.count).await?;
                    for ws in sockets.iter_mut() {
                        client::send(ws, &json!({"type": "status", "status": "away"})).await?;
                        client::expect(ws, "status").await?;
                    }
                    Ok::<_, String>(sockets)
                };
                let sockets = match connected.await {
                    Ok(sockets) => sockets,
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return Vec::new();
                    }
                };
                let _ = ready.send(Ok(scheduling));
                if go.await.is_err() {
                    return Vec::new();
                }
                let started = Instant::now();
                let advisors = sockets.into_iter().enumerate().map(|(k, ws)| {
                    let first_end = started + shared.interval.mul_f64(k as f64 / shared.count.max(1) as f64);
                    run_advisor(ws, shared.clone(), first_end)
                });
                futures::future::join_all(advisors).await
            })
        })
        .map_err(|e| format!("cannot start the advisors' thread: {e}"))
}

/// One advisor in the surge's drain: available, it ends each chat it gets,
/// at the paced rate while `paced_left` lasts and then at once, and times
/// each `end` to the next `assigned`.
async fn run_advisor(mut ws: Ws, shared: AdvisorsShared, mut next_end: Instant) -> AdvisorOutcome {
    let mut out = AdvisorOutcome { drain: histogram(), paced: histogram(), late: histogram(), assigned: 0 };
    let mut unpaced = shared.unpaced.1.clone();
    let _ = client::send(&mut ws, &json!({"type": "status", "status": "available"})).await;
    // When the last `end` was sent, and whether it was a paced one.
    let mut ended_at: Option<(Instant, bool)> = None;
    let mut first = true;
    let mut waited = false;
    while shared.remaining.load(Ordering::Relaxed) > 0 {
        match tokio::time::timeout(Duration::from_secs(5), client::next(&mut ws)).await {
            Ok(Some(f)) if f["type"] == "assigned" => {
                if let Some((t, was_paced)) = ended_at.take() {
                    let took = t.elapsed().as_nanos() as u64;
                    let _ = if was_paced { out.paced.record(took) } else { out.drain.record(took) };
                }
                out.assigned += 1;
                shared.remaining.fetch_sub(1, Ordering::Relaxed);
                let id = f["chat"]["conversation_id"].as_str().unwrap_or_default().to_owned();
                if std::mem::take(&mut first) {
                    shared.first_chats.fetch_add(1, Ordering::Relaxed);
                }
                let pacing =
                    shared.paced_left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok();
                if !pacing && !std::mem::replace(&mut waited, true) {
                    shared.at_barrier.fetch_add(1, Ordering::Relaxed);
                    let _ = unpaced.wait_for(|go| *go).await;
                }
                if pacing {
                    tokio::time::sleep_until(next_end.into()).await;
                    let _ = out.late.record(next_end.elapsed().as_nanos() as u64);
                    next_end += shared.interval;
                }
                ended_at = Some((Instant::now(), pacing));
                if client::send(&mut ws, &json!({"type": "end", "conversation_id": id})).await.is_err() {
                    break;
                }
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    shared.finished.fetch_add(1, Ordering::Relaxed);
    out
}

// ------------------------------------------------------------ reconnect storm

#[derive(Debug, Clone, Serialize)]
pub struct ReconnectResult {
    pub clients: usize,
    /// The server was restarted (a deploy) rather than the clients dropped.
    pub restart: bool,
    /// SIGTERM to listening again, the restored queue loaded (restart only).
    pub restart_seconds: Option<f64>,
    pub resumed: usize,
    /// From the storm (the drop, or the SIGTERM) until every client resumed.
    pub seconds_to_all_resumed: f64,
    /// Reconnects that failed or were refused and were tried again.
    pub retries: u64,
    pub acknowledged_before: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// Clients told another place in the queue than before (nobody left, so
    /// every place must be the same).
    pub moved: u64,
}

/// `n` queued citizens each send two messages (acknowledged), all lose
/// their connections at once (or, with `restart`, the server is restarted
/// under them, as in a deploy), and resume; every acknowledged message must
/// come back exactly once, and everyone must keep their place in the queue.
/// Reconnect attempts per client in the storm before it counts as not resumed.
const RECONNECT_ATTEMPTS: u64 = 20;
/// An attempt that has not resumed by then is abandoned and tried again, as
/// the widget does (a SYN lost in the storm would otherwise wait seconds for
/// the kernel's retransmission).
const RECONNECT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn reconnect_storm(server: &mut ServerProcess, n: usize, restart: bool) -> Result<ReconnectResult, String> {
    let limit = Arc::new(Semaphore::new(256));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let limit = limit.clone();
        let addr = server.addr;
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await.ok()?;
            let mut ws = client::citizen(addr, i).await.ok()?;
            client::send(&mut ws, &json!({"type": "start"})).await.ok()?;
            let q = client::expect(&mut ws, "queued").await.ok()?;
            let token = q["resume_token"].as_str()?.to_owned();
            let place = q["position"].as_u64()?;
            let mut acked = Vec::new();
            for k in 0..2 {
                client::send(
                    &mut ws,
                    &json!({"type": "message", "client_msg_id": format!("m{k}"), "text": format!("före {k}")}),
                )
                .await
                .ok()?;
                let ack = client::expect(&mut ws, "ack").await.ok()?;
                acked.push(ack["seq"].as_u64()?);
            }
            Some((ws, token, acked, place, i))
        }));
    }
    let mut clients = Vec::new();
    for t in tasks {
        if let Ok(Some(c)) = t.await {
            clients.push(c);
        }
    }
    let acknowledged_before: u64 = clients.iter().map(|c| c.2.len() as u64).sum();
    // Everyone drops at once, or the server goes down under them.
    let storm = Instant::now();
    if restart {
        // Clients start reconnecting once the old process is gone, while the
        // new one is still starting: they are refused and retry, as widgets do.
        server.terminate();
    }
    let mut to_resume = Vec::new();
    for (ws, token, acked, place, i) in clients {
        drop(ws);
        to_resume.push((token, acked, place, i));
    }
    let limit = Arc::new(Semaphore::new(512));
    let mut tasks = Vec::new();
    for (token, acked, place, i) in to_resume {
        let limit = limit.clone();
        let addr = server.addr;
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await.ok()?;
            // Like the widget: a refused or failed reconnect is retried after
            // a short, growing pause. (During the storm the server may still
            // hold the dropped sockets, near its open-file limit, and refuse.)
            let mut attempt = 0u64;
            let (mut ws, resumed) = loop {
                let tried = async {
                    let mut ws = client::citizen_reconnect(addr, i, attempt).await.ok()?;
                    client::send(&mut ws, &json!({"type": "resume", "token": &token, "last_seq": 0})).await.ok()?;
                    let resumed = client::expect(&mut ws, "resumed").await.ok()?;
                    Some((ws, resumed))
                };
                match tokio::time::timeout(RECONNECT_ATTEMPT_TIMEOUT, tried).await.ok().flatten() {
                    Some(done) => break done,
                    None if attempt < RECONNECT_ATTEMPTS => {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(50 * attempt + (i as u64 % 50))).await;
                    }
                    None => return None,
                }
            };
            let moved = resumed["position"].as_u64() != Some(place);
            let last = resumed["last_seq"].as_u64().unwrap_or(0);
            let mut seen = Vec::new();
            while seen.last().copied().unwrap_or(0) < last {
                let m = client::expect(&mut ws, "message").await.ok()?;
                seen.push(m["seq"].as_u64()?);
            }
            let lost = acked.iter().filter(|s| !seen.contains(s)).count() as u64;
            let duplicated = (seen.len() - {
                let mut u = seen.clone();
                u.dedup();
                u.len()
            }) as u64;
            Some((lost, duplicated, attempt, moved, ws))
        }));
    }
    let restart_seconds = if restart {
        // Blocking (it waits for the new process to listen), so the clients
        // go on retrying on another worker meanwhile.
        tokio::task::block_in_place(|| server.start_again())?;
        Some(storm.elapsed().as_secs_f64())
    } else {
        None
    };
    let mut resumed = 0;
    let (mut lost, mut duplicated, mut retries, mut moved) = (0, 0, 0, 0);
    let mut keep = Vec::new();
    for t in tasks {
        if let Ok(Some((l, d, r, m, ws))) = t.await {
            resumed += 1;
            retries += r;
            moved += u64::from(m);
            lost += l;
            duplicated += d;
            keep.push(ws);
        }
    }
    let seconds = storm.elapsed().as_secs_f64();
    Ok(ReconnectResult {
        clients: n,
        restart,
        restart_seconds,
        resumed,
        seconds_to_all_resumed: seconds,
        retries,
        acknowledged_before,
        lost,
        duplicated,
        moved,
    })
}

#[cfg(test)]
mod tests {
    use super::ServerLatency;

    #[test]
    fn the_server_figure_is_the_difference_of_two_scrapes_read_as_bucket_bounds() {
        let le = [0.0005, 0.001, 0.0025, f64::INFINITY];
        let before: Vec<(f64, u64)> = le.iter().copied().zip([10, 20, 30, 30]).collect();
        // 100 more: 60 within 0.5 ms, 39 more within 1 ms, 1 within 2.5 ms.
        let after: Vec<(f64, u64)> = le.iter().copied().zip([70, 119, 130, 130]).collect();
        let own = ServerLatency::between(&before, &after).expect("a figure");
        assert_eq!(own.count, 100);
        assert_eq!(own.p50_at_most_us, 500.0);
        assert_eq!(own.p99_at_most_us, 1000.0);
        assert_eq!(own.p999_at_most_us, 2500.0);
        assert!((own.within_1ms - 0.99).abs() < 1e-9);
        assert!(ServerLatency::between(&after, &after).is_none(), "nothing in between");
    }
}
