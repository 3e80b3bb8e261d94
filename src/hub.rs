//! The hub: the task that owns the chat core and carries out its effects.
//!
//! Architecture invariant: only this task touches routing state. Connection
//! tasks send it [`HubCommand`]s over one channel; it applies them to the
//! [`ChatCore`] in arrival order, then delivers the resulting frames to the
//! connections' outboxes and the writes to the group-commit writer. Because
//! one task decides, a citizen can never be handed to two advisors.
//!
//! For scale-out, this is the seam: a hub on several nodes would exchange
//! these same commands through a shared engine instead of a local channel.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use crate::clock::Clock;
use crate::domain::chat::{ChatCore, CloseReason, ConnId, Effect, Input, LiveFigures};
use crate::outbox::OutboxSender;
use crate::protocol::ws::{AdvisorEvent, CitizenEvent};
use crate::storage::WriterHandle;

/// A frame (or a close) for one connection. Events are boxed so the outbox
/// channel's slots stay small: every idle connection holds one.
#[derive(Debug)]
pub enum Outgoing {
    Citizen(Box<CitizenEvent>),
    Advisor(Box<AdvisorEvent>),
    /// An `assigned` frame, with when the input that caused it was received:
    /// the connection records the routing latency once it has written it.
    Timed(Box<(AdvisorEvent, Instant)>),
    Close(CloseReason),
}

/// How many frames may wait for a slow connection before it is dropped (it
/// can resume and catch up by `seq`).
pub const OUTBOX_CAPACITY: usize = 256;
/// An advisor's socket carries many chats at once (every message and every
/// ack of all of them); one group commit can hand it hundreds of frames.
pub const ADVISOR_OUTBOX_CAPACITY: usize = 8192;
/// Every connection pings once per ping interval, but not all at once: the
/// interval is cut into this many slices, and each heartbeat flags the
/// connections of one slice (by connection id). A ping is a task poll and a
/// socket write, some 10 µs, so 19,000 at once held the core for about 0.2 s,
/// and every message and assignment behind them waited.
pub const HEARTBEAT_SLICES: u64 = 250;

#[derive(Debug)]
pub enum HubCommand {
    /// A connection's outbox; sent before its `…Connected` input.
    Attach { conn: ConnId, outbox: OutboxSender<Outgoing> },
    /// `received`: when the connection read it (or the writer committed),
    /// for the routing-latency metric.
    Input { input: Input, received: Instant },
    /// Time for the connections of one slice (see [`HEARTBEAT_SLICES`]) to
    /// check themselves: ping, or close if silent.
    Heartbeat { slice: u64 },
    /// Live figures for the dashboard and metrics.
    Figures(oneshot::Sender<LiveFigures>),
    /// Stop admitting, tell every client, flush storage, then answer.
    Shutdown(oneshot::Sender<()>),
}

/// A cloneable handle for sending commands to the hub.
#[derive(Debug, Clone)]
pub struct HubHandle {
    tx: mpsc::UnboundedSender<HubCommand>,
}

impl HubHandle {
    pub fn send(&self, command: HubCommand) {
        // The hub outlives every connection; if it is gone the server is stopping.
        let _ = self.tx.send(command);
    }

    pub fn input(&self, input: Input) {
        self.send(HubCommand::Input { input, received: Instant::now() });
    }

    pub async fn figures(&self) -> Option<LiveFigures> {
        let (tx, rx) = oneshot::channel();
        self.send(HubCommand::Figures(tx));
        rx.await.ok()
    }

    /// Runs the shutdown sequence and waits for it (storage flushed).
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        self.send(HubCommand::Shutdown(tx));
        let _ = rx.await;
    }
}

/// Creates the hub's channel. The receiver goes to [`run`].
pub fn channel() -> (HubHandle, mpsc::UnboundedReceiver<HubCommand>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (HubHandle { tx }, rx)
}

/// How often the live figures for dashboards are published at most.
const LIVE_INTERVAL: Duration = Duration::from_secs(1);

/// The hub task. Ends after a shutdown, once the writer has flushed.
/// `live` receives the live figures whenever they change, at most once per second.
pub async fn run(
    mut core: ChatCore,
    mut commands: mpsc::UnboundedReceiver<HubCommand>,
    clock: Arc<dyn Clock>,
    writer: WriterHandle,
    writer_task: tokio::task::JoinHandle<()>,
    tick: Duration,
    live: watch::Sender<Arc<LiveFigures>>,
) {
    // When the inputs behind this pass's assignments were received, in the
    // order of their `assigned` effects.
    let mut assignments: VecDeque<Instant> = VecDeque::new();
    let mut last_live = tokio::time::Instant::now() - LIVE_INTERVAL;
    let mut outboxes = Outboxes::new();
    let mut effects = Vec::new();
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut batch = Vec::with_capacity(64);
    let done = loop {
        tokio::select! {
            biased;
            n = commands.recv_many(&mut batch, 256) => {
                if n == 0 {
                    break None;
                }
                let now = clock.now();
                let mut shutdown = None;
                for command in batch.drain(..) {
                    match command {
                        HubCommand::Attach { conn, outbox } => {
                            outboxes.insert(conn, outbox);
                        }
                        HubCommand::Input { input, received } => {
                            let gone = match &input {
                                Input::CitizenGone { conn } | Input::AdvisorGone { conn } => Some(*conn),
                                _ => None,
                            };
                            apply(&mut core, now, input, received, &mut effects, &mut assignments);
                            if let Some(conn) = gone {
                                outboxes.remove(conn);
                            }
                        }
                        HubCommand::Heartbeat { slice } => heartbeat(&outboxes, slice),
                        HubCommand::Figures(reply) => {
                            let _ = reply.send(core.live_figures(now));
                        }
                        HubCommand::Shutdown(reply) => {
                            apply(&mut core, now, Input::Shutdown, Instant::now(), &mut effects, &mut assignments);
                            shutdown = Some(reply);
                        }
                    }
                }
                deliver(&mut outboxes, &writer, &mut effects, &mut assignments);
                if shutdown.is_some() {
                    break shutdown;
                }
            }
            _ = ticker.tick() => {
                let now = clock.now();
                apply(&mut core, now, Input::Tick, Instant::now(), &mut effects, &mut assignments);
                deliver(&mut outboxes, &writer, &mut effects, &mut assignments);
                if last_live.elapsed() >= LIVE_INTERVAL {
                    last_live = tokio::time::Instant::now();
                    let figures = core.live_figures(now);
                    live.send_if_modified(|current| {
                        let changed = **current != figures;
                        if changed {
                            *current = Arc::new(figures);
                        }
                        changed
                    });
                }
            }
        }
    };
    // Flush: dropping the last writer handle lets the writer drain and stop.
    drop(writer);
    drop(outboxes);
    let _ = writer_task.await;
    if let Some(reply) = done {
        let _ = reply.send(());
    }
}

/// Hands `input` to the core, and notes `received` once for each chat it
/// assigns, in the order of the `assigned` effects: [`deliver`] pairs them up.
/// Every input goes through here, so the two lists never drift apart.
fn apply(
    core: &mut ChatCore,
    now: chrono::DateTime<chrono::Utc>,
    input: Input,
    received: Instant,
    effects: &mut Vec<Effect>,
    assignments: &mut VecDeque<Instant>,
) {
    let before = effects.len();
    core.handle(now, input, effects);
    let assigned =
        effects[before..].iter().filter(|e| matches!(e, Effect::ToAdvisor(_, AdvisorEvent::Assigned { .. }))).count();
    assignments.extend(std::iter::repeat_n(received, assigned));
}

/// The connections' outboxes, kept by heartbeat slice: a heartbeat visits
/// its own slice's connections only, not all 19,000 of them each time.
struct Outboxes {
    slices: Vec<HashMap<ConnId, OutboxSender<Outgoing>>>,
}

impl Outboxes {
    fn new() -> Outboxes {
        Outboxes { slices: (0..HEARTBEAT_SLICES).map(|_| HashMap::new()).collect() }
    }

    /// The slice a connection belongs to (below `HEARTBEAT_SLICES`, so it fits).
    fn slice_of(conn: ConnId) -> usize {
        (conn % HEARTBEAT_SLICES) as usize
    }

    fn insert(&mut self, conn: ConnId, outbox: OutboxSender<Outgoing>) {
        self.slices[Self::slice_of(conn)].insert(conn, outbox);
    }

    fn get(&self, conn: ConnId) -> Option<&OutboxSender<Outgoing>> {
        self.slices[Self::slice_of(conn)].get(&conn)
    }

    fn remove(&mut self, conn: ConnId) -> Option<OutboxSender<Outgoing>> {
        self.slices[Self::slice_of(conn)].remove(&conn)
    }
}

/// Flags the outboxes of one heartbeat slice: one shared clock instead of a
/// timer in each of 19,000 sockets.
fn heartbeat(outboxes: &Outboxes, slice: u64) {
    let Some(connections) = usize::try_from(slice).ok().and_then(|i| outboxes.slices.get(i)) else {
        return;
    };
    for outbox in connections.values() {
        outbox.heartbeat();
    }
}

/// Hands the effects on: frames to outboxes, writes to the writer.
/// `assignments` holds one instant per `assigned` effect, in order (see [`Outgoing::Timed`]).
fn deliver(
    outboxes: &mut Outboxes,
    writer: &WriterHandle,
    effects: &mut Vec<Effect>,
    assignments: &mut VecDeque<Instant>,
) {
    // Consecutive frames to one connection come from one event (a resume and
    // its replay, say): the capacity is checked at the first of them only, so
    // a citizen with more missed messages than the outbox holds can still
    // resume. A client that does not read is dropped at its next event.
    let mut burst: Option<ConnId> = None;
    for effect in effects.drain(..) {
        let (conn, frame) = match effect {
            Effect::Store(op) => {
                if !writer.submit(op) {
                    tracing::error!("the storage writer has stopped; a write was not queued");
                }
                continue;
            }
            Effect::ToCitizen(conn, event) => (conn, Outgoing::Citizen(Box::new(event))),
            Effect::ToAdvisor(conn, event @ AdvisorEvent::Assigned { .. }) => match assignments.pop_front() {
                Some(received) => (conn, Outgoing::Timed(Box::new((event, received)))),
                None => (conn, Outgoing::Advisor(Box::new(event))),
            },
            Effect::ToAdvisor(conn, event) => (conn, Outgoing::Advisor(Box::new(event))),
            Effect::Close(conn, reason) => {
                if let Some(outbox) = outboxes.remove(conn) {
                    let _ = outbox.try_send(Outgoing::Close(reason));
                }
                continue;
            }
        };
        let Some(outbox) = outboxes.get(conn) else {
            continue;
        };
        let sent = if burst == Some(conn) { outbox.send_more(frame) } else { outbox.try_send(frame) };
        if sent.is_ok() {
            burst = Some(conn);
        } else {
            // Full (the client does not read) or closed: drop the outbox; the
            // connection ends and the client resumes from its last `seq`.
            tracing::warn!(conn, "connection too slow to keep up; closing it");
            outboxes.remove(conn);
            burst = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{OutboxReceiver, Received, outbox};
    use crate::protocol::ws::{CitizenEvent, MessageView, Sender};
    use std::task::{Context, Poll, Waker};

    fn pinged(rx: &mut OutboxReceiver<Outgoing>) -> bool {
        matches!(rx.poll_recv(&mut Context::from_waker(Waker::noop())), Poll::Ready(Received::Heartbeat))
    }

    fn message(seq: u64) -> Effect {
        Effect::ToCitizen(
            1,
            CitizenEvent::Message(MessageView {
                seq,
                sender: Sender::Advisor,
                sender_name: None,
                text: "hej".into(),
                sent_at: chrono::DateTime::UNIX_EPOCH,
                client_msg_id: None,
                personnummer: false,
            }),
        )
    }

    #[test]
    fn one_event_may_exceed_the_outbox_but_a_reader_that_never_reads_is_dropped_at_the_next() {
        let (writer, _writes) = WriterHandle::detached();
        let mut outboxes = Outboxes::new();
        let (tx, mut rx) = outbox(OUTBOX_CAPACITY);
        outboxes.insert(1, tx);
        // A resume's replay: more frames than the outbox holds, in one go.
        let mut effects: Vec<Effect> = (1..=2 * OUTBOX_CAPACITY as u64).map(message).collect();
        deliver(&mut outboxes, &writer, &mut effects, &mut VecDeque::new());
        assert!(outboxes.get(1).is_some(), "the replay is delivered whole");
        // Nothing read; the next frame finds it full and drops the connection.
        deliver(&mut outboxes, &writer, &mut vec![message(1000)], &mut VecDeque::new());
        assert!(outboxes.get(1).is_none());
        let mut received = 0;
        while rx.try_recv().is_some() {
            received += 1;
        }
        assert_eq!(received, 2 * OUTBOX_CAPACITY, "every replayed frame was queued, the late one not");
    }

    #[test]
    fn a_heartbeat_reaches_its_slice_only_and_every_slice_in_turn_reaches_everyone() {
        let mut outboxes = Outboxes::new();
        let mut receivers = Vec::new();
        for conn in 0..2 * HEARTBEAT_SLICES {
            let (tx, rx) = outbox(4);
            outboxes.insert(conn, tx);
            receivers.push((conn, rx));
        }
        heartbeat(&outboxes, 7);
        for (conn, rx) in receivers.iter_mut() {
            assert_eq!(pinged(rx), *conn % HEARTBEAT_SLICES == 7, "connection {conn}");
        }
        for slice in 0..HEARTBEAT_SLICES {
            heartbeat(&outboxes, slice);
        }
        for (conn, rx) in receivers.iter_mut() {
            assert!(pinged(rx), "connection {conn} was not pinged in a round");
        }
    }
}
