//! Prometheus metrics (`GET /metrics`), all named `kommunchat_…`.
//! Every metric is documented in `docs/operations.md`.

use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::domain::chat::{Committed, LiveFigures, Outcome, StoreOp};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabel {
    pub role: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScoreLabel {
    pub score: &'static str,
}

/// The satisfaction scores as label values, 1 to 5.
const SCORES: [&str; 5] = ["1", "2", "3", "4", "5"];

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    queue_waiting: Gauge,
    queue_longest_wait: Gauge,
    active_chats: Gauge,
    advisors: Family<StatusLabel, Gauge>,
    admission_open: Gauge,
    connections: Family<RoleLabel, Gauge>,
    queue_wait: Histogram,
    messages_relayed: Counter,
    errands_stored: Counter,
    refusals: Family<ReasonLabel, Counter>,
    messages_refused: Family<ReasonLabel, Counter>,
    storage_write: Histogram,
    storage_batch: Histogram,
    assignment: Histogram,
    frames_rate_limited: Family<RoleLabel, Counter>,
    connections_dropped: Family<ReasonLabel, Counter>,
    satisfaction_ratings: Family<ScoreLabel, Counter>,
}

/// Why the server dropped a connection (`kommunchat_connections_dropped_total`).
pub const DROP_REASONS: [&str; 3] = ["flooding", "too_slow", "idle"];

/// Counts a connection for as long as it lives.
#[derive(Debug)]
pub struct ConnectionGuard {
    gauge: Gauge<i64, AtomicI64>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("kommunchat");
        let queue_waiting = Gauge::default();
        registry.register("queue_waiting", "Citizens waiting in the queue now", queue_waiting.clone());
        let queue_longest_wait = Gauge::default();
        registry.register(
            "queue_longest_wait_seconds",
            "How long the first citizen in the queue has waited",
            queue_longest_wait.clone(),
        );
        let active_chats = Gauge::default();
        registry.register("active_chats", "Chats between a citizen and an advisor now", active_chats.clone());
        let advisors = Family::<StatusLabel, Gauge>::default();
        registry.register("advisors", "Connected advisors by state (available, busy, away)", advisors.clone());
        let admission_open = Gauge::default();
        registry.register("admission_open", "1 while new chats are admitted, else 0", admission_open.clone());
        let connections = Family::<RoleLabel, Gauge>::default();
        registry.register("connections", "Open WebSocket connections by role", connections.clone());
        let queue_wait = Histogram::new([5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0]);
        registry.register(
            "queue_wait_seconds",
            "Time from joining the queue to reaching an advisor",
            queue_wait.clone(),
        );
        let messages_relayed = Counter::default();
        registry.register("messages_relayed", "Chat messages stored and delivered", messages_relayed.clone());
        let errands_stored = Counter::default();
        registry.register("errands_stored", "Conversations closed as errands", errands_stored.clone());
        let refusals = Family::<ReasonLabel, Counter>::default();
        registry.register("refusals", "Chats refused at start, by reason", refusals.clone());
        let messages_refused = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "messages_refused",
            "Chat messages refused and not stored, by reason (conversation_full: the chat's size limit)",
            messages_refused.clone(),
        );
        let storage_write = Histogram::new([0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0]);
        registry.register(
            "storage_write_seconds",
            "Duration of one group commit (transaction) of chat writes",
            storage_write.clone(),
        );
        let storage_batch = Histogram::new([1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0]);
        registry.register("storage_batch_writes", "Writes per group commit", storage_batch.clone());
        // Fine around the 1 ms target (docs/benchmarks.md).
        let assignment = Histogram::new([
            0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1,
        ]);
        registry.register(
            "assignment_latency_seconds",
            "From reading the request that let a chat be assigned (a start, an end, a status, a transfer) \
             to writing the assigned frame to the advisor's socket",
            assignment.clone(),
        );
        let frames_rate_limited = Family::<RoleLabel, Counter>::default();
        registry.register(
            "frames_rate_limited",
            "WebSocket frames refused with rate_limited (more than the per-connection rate allows), by role",
            frames_rate_limited.clone(),
        );
        let connections_dropped = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "connections_dropped",
            "Connections the server closed, by reason: flooding (went on sending into rate_limited), \
             too_slow (did not read its frames), idle (silent past the timeout)",
            connections_dropped.clone(),
        );
        let satisfaction_ratings = Family::<ScoreLabel, Counter>::default();
        registry.register(
            "satisfaction_ratings",
            "Citizens' satisfaction ratings stored, by score (1-5); a changed rating counts again",
            satisfaction_ratings.clone(),
        );
        Metrics {
            registry,
            queue_waiting,
            queue_longest_wait,
            active_chats,
            advisors,
            admission_open,
            connections,
            queue_wait,
            messages_relayed,
            errands_stored,
            refusals,
            messages_refused,
            storage_write,
            storage_batch,
            assignment,
            frames_rate_limited,
            connections_dropped,
            satisfaction_ratings,
        }
    }

    /// A frame refused with `rate_limited`.
    pub fn rate_limited(&self, role: &'static str) {
        self.frames_rate_limited.get_or_create(&RoleLabel { role }).inc();
    }

    /// The server closed a connection, for one of [`DROP_REASONS`].
    pub fn dropped(&self, reason: &'static str) {
        self.connections_dropped.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Routing latency of one assignment, as the hub measured it.
    pub fn assignment_latency(&self, took: Duration) {
        self.assignment.observe(took.as_secs_f64());
    }

    pub fn connection(&self, role: &'static str) -> ConnectionGuard {
        let gauge = self.connections.get_or_create(&RoleLabel { role }).clone();
        gauge.inc();
        ConnectionGuard { gauge }
    }

    /// Records a committed batch of writes.
    pub fn committed(&self, ops: &[StoreOp], results: &[Committed], took: Duration) {
        self.storage_write.observe(took.as_secs_f64());
        self.storage_batch.observe(ops.len() as f64);
        for op in ops {
            match op {
                StoreOp::Assigned { at, queued_at, first: true, .. } => {
                    self.queue_wait.observe((*at - *queued_at).num_milliseconds().max(0) as f64 / 1000.0);
                }
                StoreOp::Ended { outcome: Outcome::Served, .. } => {
                    self.errands_stored.inc();
                }
                StoreOp::Refused { reason, .. } => {
                    self.refusals.get_or_create(&ReasonLabel { reason: reason.code() }).inc();
                }
                _ => {}
            }
        }
        let mut relayed = 0;
        for result in results {
            match result {
                Committed::Message { .. } => relayed += 1,
                Committed::Rated { score, .. } => {
                    if let Some(&score) = SCORES.get(usize::from(*score).wrapping_sub(1)) {
                        self.satisfaction_ratings.get_or_create(&ScoreLabel { score }).inc();
                    }
                }
                _ => {}
            }
        }
        self.messages_relayed.inc_by(relayed);
    }

    /// The text exposition, with the live gauges brought up to date.
    pub fn render(&self, live: &LiveFigures) -> String {
        let gauge = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        self.queue_waiting.set(gauge(live.waiting));
        self.queue_longest_wait.set(i64::try_from(live.longest_wait_seconds).unwrap_or(i64::MAX));
        self.active_chats.set(gauge(live.active_chats));
        self.advisors.get_or_create(&StatusLabel { status: "available" }).set(gauge(live.advisors_available));
        self.advisors.get_or_create(&StatusLabel { status: "busy" }).set(gauge(live.advisors_busy));
        self.advisors.get_or_create(&StatusLabel { status: "away" }).set(gauge(live.advisors_away));
        self.admission_open.set(i64::from(live.opening.accepting));
        // The core counts; the counter catches up with it here.
        let full = self.messages_refused.get_or_create(&ReasonLabel { reason: "conversation_full" });
        full.inc_by(live.messages_refused_full.saturating_sub(full.get()));
        for role in ["citizen", "advisor", "admin"] {
            // Every role appears, at 0 if nobody is connected.
            let _ = self.connections.get_or_create(&RoleLabel { role });
        }
        for role in ["citizen", "advisor"] {
            let _ = self.frames_rate_limited.get_or_create(&RoleLabel { role });
        }
        for reason in DROP_REASONS {
            let _ = self.connections_dropped.get_or_create(&ReasonLabel { reason });
        }
        for score in SCORES {
            let _ = self.satisfaction_ratings.get_or_create(&ScoreLabel { score });
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            tracing::error!("encoding metrics failed");
        }
        out
    }
}
