//! The chat core: queue, routing, conversations and their delivery state.
//!
//! A plain synchronous state machine. [`ChatCore::handle`] takes one [`Input`]
//! and the instant it happens, and appends [`Effect`]s: frames to send to a
//! connection, writes to store, connections to close. It does no I/O and reads
//! no clock, so the hub adapter that owns it is the *one owner of routing
//! state*: no two tasks can ever hand the same citizen to two advisors.
//!
//! Delivery: a chat message gets its `seq` here, goes to storage as an
//! [`StoreOp::Message`], and only when storage reports it durable
//! ([`Input::Committed`]) is it acknowledged to its sender and delivered to
//! the other side. Storage applies writes in order, so a conversation's
//! messages become durable, and are delivered, in `seq` order.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Datelike, TimeDelta, Utc};
use uuid::Uuid;

use super::admission::{self, Admission, AdmissionPolicy, RefusalReason};
use super::client_ids::ClientIds;
use super::hours::{OpenStatus, OpeningHours, local_date};
use super::queue::{QueueKey, WaitQueue};
use crate::protocol::hours::reason_now;
use crate::protocol::ws::{
    AdvisorEvent, AdvisorProfileView, AdvisorRequest, AdvisorStatus, ChatState, ChatView, CitizenEvent, CitizenRequest,
    ColleagueView, EndReason, ErrorCode, Limits, MessageView, NoticeView, OpeningView, PROTOCOL_VERSION, QueueSummary,
    RemovedReason, ResumedState, Sender,
};

/// A WebSocket connection, numbered by the transport.
pub type ConnId = u64;
/// A user account's id in storage.
pub type UserId = i64;
pub type ConversationId = Uuid;

/// The settings the core needs, taken from the configuration.
#[derive(Debug, Clone)]
pub struct CoreSettings {
    pub hours: OpeningHours,
    pub admission: AdmissionPolicy,
    pub max_chats_per_advisor: u32,
    pub advisor_grace: TimeDelta,
    pub citizen_grace: TimeDelta,
    pub inactivity_warning: TimeDelta,
    pub inactivity_end: TimeDelta,
    pub max_message_bytes: usize,
    /// What one conversation may hold, and what a citizen may write while
    /// queued, each message counted as its text and
    /// [`Limits::MESSAGE_ALLOWANCE`].
    pub max_conversation_bytes: usize,
    pub max_queued_bytes: usize,
    pub queue_update_interval: TimeDelta,
    /// How often the adapter sends [`Input::Tick`]; at most the queue-update
    /// interval. Ticks are counted, not timed, so a clock that stands still
    /// (a test's) throttles the same way.
    pub tick: TimeDelta,
    pub assumed_handle: TimeDelta,
    pub categories: Vec<String>,
    pub canned_responses: Vec<String>,
    /// Offer the citizen a `rate` after a chat with an advisor.
    pub ask_satisfaction: bool,
    /// How long an ended chat's token still answers a `resume` with `ended`
    /// (and so may rate it) when it is longer than `citizen_grace`.
    pub rating_window: TimeDelta,
    pub notice: NoticeView,
}

/// Who an advisor connection belongs to (checked by the transport at connect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvisorProfile {
    pub id: UserId,
    pub username: String,
    pub display_name: Arc<str>,
    pub role: String,
}

/// A chat that ended with an advisor shortly before the server started:
/// its citizen may still rate it. See [`ChatCore::restore_ended`].
#[derive(Debug, Clone, PartialEq)]
pub struct RecentlyEnded {
    pub id: ConversationId,
    pub token_hash: String,
    pub errand_number: String,
    pub reason: EndReason,
    pub ended_at: DateTime<Utc>,
}

/// An open conversation read back from storage when the server starts, so a
/// restart (a deploy, a crash) loses no chat: see [`ChatCore::restore`].
#[derive(Debug, Clone, PartialEq)]
pub struct RestoredConversation {
    pub id: ConversationId,
    /// Of the citizen's resume token ([`token_hash`]).
    pub token_hash: String,
    pub citizen_name: Option<Arc<str>>,
    pub topic: Option<Arc<str>>,
    pub language: Option<Arc<str>>,
    pub queued_at: DateTime<Utc>,
    /// Its place in the queue while it waits ([`QueueKey::as_i64`]).
    pub queue_place: Option<i64>,
    /// The advisor handling it, when it does not wait. With neither (the
    /// advisor's account is gone) it goes to the front of the queue.
    pub advisor: Option<AdvisorProfile>,
    pub first_assigned_at: Option<DateTime<Utc>>,
    pub errand_number: Option<String>,
    /// Set when the citizen has gone (for this reason) and the advisor has
    /// still to close the chat: it comes back in wrap-up.
    pub wrap_up: Option<EndReason>,
    /// The stored transcript in `seq` order (`personnummer` is worked out again).
    pub messages: Vec<MessageView>,
}

/// Something that happened, for the core to act on.
#[derive(Debug)]
pub enum Input {
    CitizenConnected {
        conn: ConnId,
    },
    Citizen {
        conn: ConnId,
        request: CitizenRequest,
    },
    CitizenGone {
        conn: ConnId,
    },
    AdvisorConnected {
        conn: ConnId,
        advisor: AdvisorProfile,
    },
    Advisor {
        conn: ConnId,
        request: AdvisorRequest,
    },
    AdvisorGone {
        conn: ConnId,
    },
    /// Storage made these writes durable, in order.
    Committed(Vec<Committed>),
    /// Once per queue-update interval: grace periods, inactivity, queue positions.
    Tick,
    /// Stop admitting; tell everyone.
    Shutdown,
}

/// What the core wants done.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    ToCitizen(ConnId, CitizenEvent),
    ToAdvisor(ConnId, AdvisorEvent),
    Close(ConnId, CloseReason),
    Store(StoreOp),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The same conversation or advisor connected again elsewhere.
    Replaced,
    /// The server is shutting down.
    Shutdown,
}

/// How a conversation ended, for statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Reached an advisor: an errand.
    Served,
    /// Left the queue (or vanished from it) before reaching an advisor.
    Abandoned,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Served => "served",
            Outcome::Abandoned => "abandoned",
        }
    }
}

/// A write for storage. Applied in order; see [`Committed`] for the answers.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreOp {
    /// A citizen joined the queue (also records a `joined` queue event).
    Created {
        conversation: ConversationId,
        at: DateTime<Utc>,
        /// Of the resume token, so the chat can be resumed after a restart.
        token_hash: String,
        /// Its place in the queue ([`QueueKey::as_i64`]), for the same reason.
        queue_place: i64,
        citizen_name: Option<Arc<str>>,
        topic: Option<Arc<str>>,
        language: Option<Arc<str>>,
    },
    /// A `start` was refused (a `refused` queue event).
    Refused { at: DateTime<Utc>, reason: RefusalReason },
    /// An advisor took the chat (also a transfer, or a retake from the queue).
    Assigned {
        conversation: ConversationId,
        at: DateTime<Utc>,
        advisor: UserId,
        advisor_name: Arc<str>,
        /// When the citizen joined the queue (for wait-time metrics).
        queued_at: DateTime<Utc>,
        errand_year: i32,
        /// The chat's first advisor: an errand number is allocated.
        first: bool,
    },
    /// Back to the front of the queue, at `queue_place`.
    Requeued { conversation: ConversationId, at: DateTime<Utc>, advisor: UserId, queue_place: i64 },
    Message {
        conversation: ConversationId,
        seq: u64,
        sender: Sender,
        advisor: Option<UserId>,
        sender_name: Option<Arc<str>>,
        client_msg_id: Option<Arc<str>>,
        text: Arc<str>,
        at: DateTime<Utc>,
    },
    /// The conversation is over (for the citizen); classification may come later.
    Ended {
        conversation: ConversationId,
        at: DateTime<Utc>,
        reason: EndReason,
        outcome: Outcome,
        category: Option<String>,
        summary: Option<String>,
        /// The citizen left first: the advisor has still to close it (wrap-up),
        /// and a restart gives it back to them.
        wrap_up: bool,
    },
    /// The advisor's category and summary after the citizen had gone.
    Classified { conversation: ConversationId, category: Option<String>, summary: Option<String> },
    /// An advisor chose a status, or was gone past the grace period (`Away`):
    /// what a restart gives back to an advisor who comes back in time.
    AdvisorStatus { advisor: UserId, status: AdvisorStatus },
    /// The citizen's satisfaction with an ended chat (1–5; a later score
    /// replaces it). `conn` is who hears `rated` once it is stored.
    Rated { conversation: ConversationId, score: u8, at: DateTime<Utc>, conn: ConnId },
}

/// Storage's answer for one [`StoreOp`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    Done,
    Message {
        conversation: ConversationId,
        seq: u64,
    },
    Assigned {
        conversation: ConversationId,
        errand_number: String,
    },
    Ended {
        conversation: ConversationId,
    },
    Classified {
        conversation: ConversationId,
    },
    /// A message write failed for good: it is not acknowledged.
    MessageFailed {
        conversation: ConversationId,
        seq: u64,
    },
    Rated {
        conn: ConnId,
        score: u8,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Queued(QueueKey),
    Chatting(UserId),
    /// The citizen has gone; the advisor still has to close it.
    WrapUp(UserId),
    /// Waiting for storage to confirm the end; then removed.
    Closing,
}

#[derive(Debug)]
struct PendingMessage {
    view: MessageView,
    /// The advisor who wrote it, for the ack.
    advisor: Option<UserId>,
}

#[derive(Debug)]
struct Conversation {
    id: ConversationId,
    /// The citizen's resume token; `None` after a restart until the citizen
    /// presents it again (storage keeps only its hash).
    token: Option<String>,
    /// What [`ChatCore::by_token`] and storage know it by.
    token_hash: String,
    citizen_conn: Option<ConnId>,
    citizen_gone_at: Option<DateTime<Utc>>,
    citizen_name: Option<Arc<str>>,
    topic: Option<Arc<str>>,
    language: Option<Arc<str>>,
    queued_at: DateTime<Utc>,
    phase: Phase,
    assigned_at: Option<DateTime<Utc>>,
    ever_assigned: bool,
    errand_number: Option<String>,
    /// The advisor who sent it back to the queue is not given it again first.
    returned_by: Option<UserId>,
    next_seq: u64,
    history: Vec<MessageView>,
    pending: Vec<(u64, PendingMessage)>,
    /// What `history` and `pending` are charged against the conversation's
    /// limits: see [`charge`].
    charged_bytes: usize,
    client_ids: ClientIds,
    last_activity: DateTime<Utc>,
    warned_at: Option<DateTime<Utc>>,
    wrap_up_since: Option<DateTime<Utc>>,
    /// The end told to the citizen once storage confirms it.
    end_reason: Option<EndReason>,
    last_position: usize,
    last_sent: Option<(usize, Option<u64>, DateTime<Utc>)>,
    /// The tick count when a position was last sent.
    last_sent_tick: u64,
}

/// Whether a message is durable yet (in the history) or still pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durable {
    Yes,
    No,
}

impl Conversation {
    /// The message `seq`, if it is `sender`'s under client id `cid`: pending
    /// (a few at most, searched in order) or in the history (in `seq` order,
    /// with gaps where a message failed to store, so searched by halves).
    fn sent_message(&self, seq: u64, sender: Sender, cid: &str) -> Option<(&MessageView, Durable)> {
        let found = match self.pending.iter().find(|(s, _)| *s == seq) {
            Some((_, p)) => (&p.view, Durable::No),
            None => {
                let i = self.history.binary_search_by_key(&seq, |m| m.seq).ok()?;
                (&self.history[i], Durable::Yes)
            }
        };
        (found.0.sender == sender && found.0.client_msg_id.as_deref() == Some(cid)).then_some(found)
    }

    fn chat_view(&self, now_connected: bool) -> ChatView {
        ChatView {
            conversation_id: self.id.to_string(),
            citizen_name: self.citizen_name.clone(),
            topic: self.topic.clone(),
            language: self.language.clone(),
            queued_at: self.queued_at,
            assigned_at: self.assigned_at.unwrap_or(self.queued_at),
            errand_number: self.errand_number.clone(),
            citizen_connected: now_connected,
            state: if matches!(self.phase, Phase::WrapUp(_)) { ChatState::WrapUp } else { ChatState::Chatting },
            messages: self.history.clone(),
        }
    }
}

#[derive(Debug)]
struct Advisor {
    profile: AdvisorProfile,
    status: AdvisorStatus,
    /// Restored when the advisor comes back within the grace period.
    status_before_disconnect: Option<AdvisorStatus>,
    conn: Option<ConnId>,
    gone_at: Option<DateTime<Utc>>,
    /// Chats in `Chatting` or `WrapUp` with this advisor.
    chats: BTreeSet<ConversationId>,
    /// Chats in `Chatting`: what the per-advisor limit counts.
    active: u32,
    last_assigned_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Default)]
struct CitizenConn {
    conversation: Option<ConversationId>,
    /// The chat that ended on this connection and may be rated, until the
    /// next `start` or `resume`.
    rateable: Option<Rateable>,
}

/// How often one connection may rate (or re-rate) the chat that ended on it:
/// each rating is a database write, so it is bounded beyond the frame rate.
const RATINGS_PER_CONNECTION: u8 = 5;

#[derive(Debug, Clone, Copy)]
struct Rateable {
    conversation: ConversationId,
    /// Ratings this connection may still send.
    left: u8,
}

impl Rateable {
    fn new(conversation: ConversationId) -> Rateable {
        Rateable { conversation, left: RATINGS_PER_CONNECTION }
    }
}

/// What a citizen who resumes just after the end is told, and may rate.
#[derive(Debug, Clone)]
struct EndedChat {
    conversation: ConversationId,
    errand_number: Option<String>,
    reason: EndReason,
}

/// Live figures for the queue view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveFigures {
    pub waiting: usize,
    pub longest_wait_seconds: u64,
    pub advisors_online: usize,
    pub advisors_available: usize,
    pub advisors_busy: usize,
    pub advisors_away: usize,
    pub active_chats: usize,
    /// Whether chats are admitted now, and why.
    pub opening: OpeningView,
    /// Every advisor the hub knows (connected, or within their grace period).
    pub advisors: Vec<AdvisorFigure>,
    /// Messages refused with `conversation_full` since the server started.
    pub messages_refused_full: u64,
}

/// One advisor in the live view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvisorFigure {
    pub username: String,
    pub display_name: String,
    pub status: AdvisorStatus,
    pub active_chats: u32,
    pub connected: bool,
}

/// Most queue-position frames sent per second (the head first, then the
/// others in turn, see `send_queue_positions`). Real
/// queues move a few places a second and stay far below it; a mass drain
/// (or a benchmark's) would otherwise send one frame to nearly every waiting
/// citizen in the same instant. Each tick sends its share: the server ticks
/// every 20 ms and so sends at most 20 at a time, where a thousand at once
/// held up the assignments behind them on the core by about 10 ms, and 100
/// at once by 1.5–4 ms (`docs/benchmarks.md`).
const MAX_POSITION_UPDATES_PER_SECOND: usize = 1000;
/// The citizens nearest the head, looked at every tick: they are told of
/// every move (see `send_queue_positions`).
const HEAD_TOLD_EVERY_TICK: usize = 10;

/// The chat core. See the module documentation.
#[derive(Debug)]
pub struct ChatCore {
    settings: CoreSettings,
    queue: WaitQueue<ConversationId>,
    conversations: HashMap<ConversationId, Conversation>,
    /// Open conversations by the hash of their resume token ([`token_hash`]).
    by_token: HashMap<String, ConversationId>,
    /// Hashes of the tokens of conversations that ended, kept for the citizen
    /// grace period so a citizen who reconnects just after the end still learns
    /// the errand number.
    ended_tokens: HashMap<String, EndedChat>,
    /// When each ended chat's token stops answering: one queue per lifetime
    /// (`[grace period, rating window]`), so that each stays in time order.
    ended_expiry: [std::collections::VecDeque<(DateTime<Utc>, String)>; 2],
    citizen_conns: HashMap<ConnId, CitizenConn>,
    advisors: HashMap<UserId, Advisor>,
    advisor_conns: HashMap<ConnId, UserId>,
    /// Disconnected citizens by the instant they left.
    citizen_deadlines: BTreeSet<(DateTime<Utc>, ConversationId)>,
    /// Smoothed handling time in seconds, for wait estimates.
    mean_handle_seconds: f64,
    opening_cache: Option<(OpenStatus, DateTime<Utc>)>,
    last_queue_summary: Option<QueueSummary>,
    /// Ticks so far, and the tick of the last queue summary sent.
    ticks: u64,
    last_summary_tick: Option<u64>,
    shutting_down: bool,
    /// Messages refused with `conversation_full` since the start, for the metrics.
    messages_refused_full: u64,
}

impl ChatCore {
    pub fn new(settings: CoreSettings) -> ChatCore {
        let mean_handle_seconds = settings.assumed_handle.num_seconds().max(1) as f64;
        ChatCore {
            settings,
            queue: WaitQueue::default(),
            conversations: HashMap::new(),
            by_token: HashMap::new(),
            ended_tokens: HashMap::new(),
            ended_expiry: Default::default(),
            citizen_conns: HashMap::new(),
            advisors: HashMap::new(),
            advisor_conns: HashMap::new(),
            citizen_deadlines: BTreeSet::new(),
            mean_handle_seconds,
            opening_cache: None,
            last_queue_summary: None,
            ticks: 0,
            last_summary_tick: None,
            shutting_down: false,
            messages_refused_full: 0,
        }
    }

    pub fn settings(&self) -> &CoreSettings {
        &self.settings
    }

    /// Chats that ended with an advisor before a restart (oldest first):
    /// for what is left of the rating window their tokens answer a `resume`
    /// with `ended`, as they would have without the restart, so a page
    /// reloaded meanwhile can still rate. Called before [`Self::restore`],
    /// so that the rating window's expiry queue stays in time order.
    pub fn restore_ended(&mut self, now: DateTime<Utc>, chats: Vec<RecentlyEnded>) {
        if !self.settings.ask_satisfaction || self.settings.rating_window <= self.settings.citizen_grace {
            return;
        }
        for chat in chats {
            let until = chat.ended_at + self.settings.rating_window;
            if until <= now || self.ended_tokens.contains_key(&chat.token_hash) {
                continue;
            }
            let ended =
                EndedChat { conversation: chat.id, errand_number: Some(chat.errand_number), reason: chat.reason };
            self.remember_ended(chat.ended_at, chat.token_hash, ended);
        }
    }

    /// Takes up the conversations the last run left open, before any
    /// connection: those waiting go back into the queue at their places,
    /// those with an advisor stay with that advisor, and those in wrap-up go
    /// back to their advisor to close. Nobody is connected yet, so each side
    /// gets its grace period from `now` to come back, exactly as after a
    /// dropped connection: a citizen who does not resume in time leaves the
    /// chat, and an advisor who does not return in time has the chats sent
    /// back to the front of the queue (and those in wrap-up closed as they
    /// stand). Retried messages are recognised by their `client_msg_id` as
    /// before, so nothing acknowledged is stored twice.
    pub fn restore(&mut self, now: DateTime<Utc>, conversations: Vec<RestoredConversation>) {
        let restored: Vec<ConversationId> = conversations.iter().map(|r| r.id).collect();
        for r in conversations {
            let id = r.id;
            if self.conversations.contains_key(&id) {
                continue;
            }
            let phase = match (r.wrap_up, r.queue_place, &r.advisor) {
                // In wrap-up without its advisor's account: nobody could close
                // it (removing an account closes its wrap-ups; this is a guard).
                (Some(_), _, None) => continue,
                (Some(_), _, Some(profile)) => {
                    // Not counted against the advisor's limit.
                    self.restored_advisor(now, profile, r.first_assigned_at).chats.insert(id);
                    Phase::WrapUp(profile.id)
                }
                (None, Some(place), _) => {
                    Phase::Queued(self.queue.restore(place, id).unwrap_or_else(|| self.queue.push_back(id)))
                }
                // Its advisor's account is gone: to the front, as when an
                // advisor does not come back.
                (None, None, None) => Phase::Queued(self.queue.push_front(id)),
                (None, None, Some(profile)) => {
                    let advisor = self.restored_advisor(now, profile, r.first_assigned_at);
                    advisor.chats.insert(id);
                    advisor.active += 1;
                    Phase::Chatting(profile.id)
                }
            };
            let mut history = r.messages;
            let mut client_ids = ClientIds::default();
            for m in &mut history {
                m.personnummer = !super::personnummer::find(&m.text, local_date(m.sent_at).year()).is_empty();
                if let Some(cid) = &m.client_msg_id {
                    client_ids.insert(m.sender, cid.clone(), m.seq);
                }
            }
            let next_seq = history.last().map_or(1, |m| m.seq + 1);
            let charged_bytes = history.iter().map(|m| charge(&m.text)).sum();
            let wrap_up = r.wrap_up.is_some();
            if let Some(reason) = r.wrap_up {
                // Over for the citizen: a citizen who comes back learns how.
                let ended = EndedChat { conversation: id, errand_number: r.errand_number.clone(), reason };
                self.remember_ended(now, r.token_hash.clone(), ended);
            } else {
                self.by_token.insert(r.token_hash.clone(), id);
                self.citizen_deadlines.insert((now, id));
            }
            self.conversations.insert(
                id,
                Conversation {
                    id,
                    token: None,
                    token_hash: r.token_hash,
                    citizen_conn: None,
                    citizen_gone_at: (!wrap_up).then_some(now),
                    citizen_name: r.citizen_name,
                    topic: r.topic,
                    language: r.language,
                    queued_at: r.queued_at,
                    phase,
                    assigned_at: if matches!(phase, Phase::Queued(_)) { None } else { r.first_assigned_at },
                    ever_assigned: r.errand_number.is_some() || r.first_assigned_at.is_some(),
                    errand_number: r.errand_number,
                    returned_by: None,
                    next_seq,
                    history,
                    pending: Vec::new(),
                    charged_bytes,
                    client_ids,
                    // The time the server was down is not the citizen's silence.
                    last_activity: now,
                    warned_at: None,
                    wrap_up_since: wrap_up.then_some(now),
                    end_reason: r.wrap_up,
                    last_position: 0,
                    last_sent: None,
                    last_sent_tick: 0,
                },
            );
        }
        // Places as they are now, for `resumed` (the sweep tells them later).
        let positions: HashMap<ConversationId, usize> =
            self.queue.iter().enumerate().map(|(i, (_, id))| (*id, i + 1)).collect();
        for id in restored {
            if let (Some(c), Some(&position)) = (self.conversations.get_mut(&id), positions.get(&id)) {
                c.last_position = position;
            }
        }
    }

    /// At start, after [`ChatCore::restore`]: advisors who had chosen
    /// `available` when the last run ended get it back if their console
    /// comes back within the grace period from `now`, exactly as after a
    /// dropped connection; otherwise they are `away`, as any advisor gone
    /// that long.
    pub fn restore_available_advisors(&mut self, now: DateTime<Utc>, advisors: &[AdvisorProfile]) {
        for profile in advisors {
            let advisor = self.restored_advisor(now, profile, None);
            if advisor.conn.is_none() {
                advisor.status_before_disconnect = Some(AdvisorStatus::Available);
            }
        }
    }

    /// The advisor of restored chats, gone since `now` (the grace period
    /// runs) and `away`, as after any reconnect that found nothing to
    /// restore: the console says again whether it takes new chats.
    fn restored_advisor(
        &mut self,
        now: DateTime<Utc>,
        profile: &AdvisorProfile,
        last_assigned_at: Option<DateTime<Utc>>,
    ) -> &mut Advisor {
        self.advisors.entry(profile.id).or_insert_with(|| Advisor {
            profile: profile.clone(),
            status: AdvisorStatus::Away,
            status_before_disconnect: None,
            conn: None,
            gone_at: Some(now),
            chats: BTreeSet::new(),
            active: 0,
            last_assigned_at,
        })
    }

    /// Handles one input at instant `now`, appending what must be done to `out`.
    pub fn handle(&mut self, now: DateTime<Utc>, input: Input, out: &mut Vec<Effect>) {
        match input {
            Input::CitizenConnected { conn } => self.citizen_connected(now, conn, out),
            Input::Citizen { conn, request } => self.citizen_request(now, conn, request, out),
            Input::CitizenGone { conn } => self.citizen_gone(now, conn, out),
            Input::AdvisorConnected { conn, advisor } => self.advisor_connected(now, conn, advisor, out),
            Input::Advisor { conn, request } => self.advisor_request(now, conn, request, out),
            Input::AdvisorGone { conn } => self.advisor_gone(now, conn, out),
            Input::Committed(results) => {
                for result in results {
                    self.committed(now, result, out);
                }
            }
            Input::Tick => self.tick(now, out),
            Input::Shutdown => self.shutdown(out),
        }
    }

    // ------------------------------------------------------------ opening

    /// The opening status at `now`, cached until the next change.
    pub fn opening_status(&mut self, now: DateTime<Utc>) -> &OpenStatus {
        let fresh = matches!(&self.opening_cache, Some((s, until)) if s.at <= now && now < *until);
        if !fresh {
            let status = self.settings.hours.status(now);
            // Valid until the next opening or closing, or local midnight (the
            // "today" part changes then), whichever is first.
            let midnight = local_date(now)
                .succ_opt()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .and_then(|d| d.and_local_timezone(super::hours::TIME_ZONE).earliest())
                .map(|d| d.to_utc());
            let until = [status.next_opening, status.next_closing, midnight]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(now + TimeDelta::hours(1));
            self.opening_cache = Some((status, until));
        }
        match &self.opening_cache {
            Some((s, _)) => s,
            None => unreachable!("just filled"),
        }
    }

    fn admission(&mut self, now: DateTime<Utc>) -> Admission {
        let wait = self.estimate_wait(self.queue.len() + 1).map(|s| TimeDelta::seconds(s as i64));
        let policy = self.settings.admission;
        admission::decide(self.opening_status(now), &policy, wait)
    }

    fn opening_view(&mut self, now: DateTime<Utc>) -> OpeningView {
        let accepting = !self.shutting_down && self.admission(now) == Admission::Admitted;
        let status = self.opening_status(now);
        let (reason, reason_code) = reason_now(status);
        OpeningView {
            open: status.open,
            reason,
            reason_code,
            next_opening: status.next_opening,
            next_closing: status.next_closing,
            accepting,
        }
    }

    // ------------------------------------------------------------ estimates

    /// Seconds until the chat at `position` (1 = next) is likely taken, or
    /// `None` when nobody is available to take it.
    pub fn estimate_wait(&self, position: usize) -> Option<u64> {
        self.wait_model().estimate(position)
    }

    /// Capacity figures for wait estimates, computed once per use.
    fn wait_model(&self) -> WaitModel {
        let max = self.settings.max_chats_per_advisor;
        let (capacity, free) = self
            .advisors
            .values()
            .filter(|a| a.conn.is_some() && a.status == AdvisorStatus::Available)
            .fold((0u32, 0u32), |(cap, free), a| (cap + max, free + max.saturating_sub(a.active)));
        WaitModel { capacity, free, mean_handle_seconds: self.mean_handle_seconds }
    }

    /// Handling times of chats served before this start, oldest first (see
    /// [`Storage::recent_handle_seconds`]), so that the wait estimates go on
    /// from what the desk has been doing instead of starting over from the
    /// configured assumption at every restart.
    ///
    /// [`Storage::recent_handle_seconds`]: crate::storage::Storage::recent_handle_seconds
    pub fn learn_handle_times(&mut self, seconds: &[f64]) {
        for s in seconds {
            self.record_handle_time(*s);
        }
    }

    fn record_handle_time(&mut self, seconds: f64) {
        // Exponentially weighted: recent chats count most; one odd chat moves it little.
        const WEIGHT: f64 = 0.1;
        self.mean_handle_seconds = (1.0 - WEIGHT) * self.mean_handle_seconds + WEIGHT * seconds.max(1.0);
    }

    pub fn live_figures(&mut self, now: DateTime<Utc>) -> LiveFigures {
        let opening = self.opening_view(now);
        let mut advisors: Vec<AdvisorFigure> = self
            .advisors
            .values()
            .map(|a| AdvisorFigure {
                username: a.profile.username.clone(),
                display_name: a.profile.display_name.to_string(),
                status: if a.conn.is_some() { a.status } else { AdvisorStatus::Offline },
                active_chats: a.active,
                connected: a.conn.is_some(),
            })
            .collect();
        advisors.sort_by(|a, b| a.username.cmp(&b.username));
        let online: Vec<_> = self.advisors.values().filter(|a| a.conn.is_some()).collect();
        let available = |a: &&&Advisor| a.status == AdvisorStatus::Available;
        LiveFigures {
            waiting: self.queue.len(),
            longest_wait_seconds: self.longest_wait(now),
            advisors_online: online.len(),
            advisors_available: online
                .iter()
                .filter(available)
                .filter(|a| a.active < self.settings.max_chats_per_advisor)
                .count(),
            advisors_busy: online
                .iter()
                .filter(available)
                .filter(|a| a.active >= self.settings.max_chats_per_advisor)
                .count(),
            advisors_away: online.iter().filter(|a| a.status != AdvisorStatus::Available).count(),
            active_chats: self.advisors.values().map(|a| a.active as usize).sum(),
            opening,
            advisors,
            messages_refused_full: self.messages_refused_full,
        }
    }

    fn longest_wait(&self, now: DateTime<Utc>) -> u64 {
        self.queue
            .front()
            .and_then(|(_, id)| self.conversations.get(id))
            .map(|c| (now - c.queued_at).num_seconds().max(0) as u64)
            .unwrap_or(0)
    }

    // ------------------------------------------------------------ citizens

    fn citizen_connected(&mut self, now: DateTime<Utc>, conn: ConnId, out: &mut Vec<Effect>) {
        self.citizen_conns.insert(conn, CitizenConn::default());
        let opening = self.opening_view(now);
        out.push(Effect::ToCitizen(
            conn,
            CitizenEvent::Welcome {
                protocol: PROTOCOL_VERSION,
                opening,
                notice: self.settings.notice.clone(),
                max_message_bytes: self.settings.max_message_bytes,
            },
        ));
    }

    fn citizen_request(&mut self, now: DateTime<Utc>, conn: ConnId, request: CitizenRequest, out: &mut Vec<Effect>) {
        let Some(state) = self.citizen_conns.get(&conn) else {
            return;
        };
        let current = state.conversation;
        let error = |code, message: &str| CitizenEvent::Error { code, message: message.into(), client_msg_id: None };
        match request {
            CitizenRequest::Start { display_name, topic, language } => {
                if current.is_some() {
                    out.push(Effect::ToCitizen(
                        conn,
                        error(ErrorCode::InvalidState, "a chat is already under way on this connection"),
                    ));
                    return;
                }
                let fields = (
                    optional_text(display_name, Limits::DISPLAY_NAME, "display_name"),
                    optional_text(topic, Limits::TOPIC, "topic"),
                    optional_text(language, Limits::LANGUAGE, "language"),
                );
                let (citizen_name, topic, language) = match fields {
                    (Ok(n), Ok(t), Ok(l)) => (n, t, l),
                    (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                        out.push(Effect::ToCitizen(conn, error(ErrorCode::InvalidField, &e)));
                        return;
                    }
                };
                self.start(now, conn, citizen_name, topic, language, out);
            }
            CitizenRequest::Resume { token, last_seq } => {
                if current.is_some() {
                    out.push(Effect::ToCitizen(
                        conn,
                        error(ErrorCode::InvalidState, "a chat is already under way on this connection"),
                    ));
                    return;
                }
                self.resume(conn, &token, last_seq, out);
            }
            CitizenRequest::Message { client_msg_id, text } => {
                let Some(id) = current else {
                    out.push(Effect::ToCitizen(
                        conn,
                        CitizenEvent::Error {
                            code: ErrorCode::InvalidState,
                            message: "start a chat before sending messages".into(),
                            client_msg_id: Some(client_msg_id.into()),
                        },
                    ));
                    return;
                };
                self.post(now, id, Sender::Citizen, None, client_msg_id, text, out);
            }
            CitizenRequest::Typing { active } => {
                if let Some(Phase::Chatting(advisor)) =
                    current.and_then(|id| self.conversations.get(&id)).map(|c| c.phase)
                    && let Some(advisor_conn) = self.advisors.get(&advisor).and_then(|a| a.conn)
                    && let Some(id) = current
                {
                    out.push(Effect::ToAdvisor(
                        advisor_conn,
                        AdvisorEvent::Typing { conversation_id: id.to_string(), active },
                    ));
                }
            }
            CitizenRequest::Leave {} => {
                let Some(id) = current else {
                    out.push(Effect::ToCitizen(conn, error(ErrorCode::InvalidState, "there is no chat to leave")));
                    return;
                };
                let phase = self.conversations.get(&id).map(|c| c.phase);
                match phase {
                    Some(Phase::Queued(_)) => self.abandon(now, id, out),
                    Some(Phase::Chatting(_)) => self.citizen_ends(now, id, EndReason::CitizenLeft, out),
                    _ => {
                        out.push(Effect::ToCitizen(conn, error(ErrorCode::InvalidState, "the chat has already ended")))
                    }
                }
            }
            CitizenRequest::Rate { score } => {
                let Some(rateable) = state.rateable else {
                    let message = "there is no ended chat to rate on this connection";
                    out.push(Effect::ToCitizen(conn, error(ErrorCode::InvalidState, message)));
                    return;
                };
                if rateable.left == 0 {
                    let message = "the chat has been rated as often as it may be";
                    out.push(Effect::ToCitizen(conn, error(ErrorCode::InvalidState, message)));
                    return;
                }
                let Some(score) = u8::try_from(score).ok().filter(|s| (1..=5).contains(s)) else {
                    out.push(Effect::ToCitizen(conn, error(ErrorCode::InvalidField, "score must be 1, 2, 3, 4 or 5")));
                    return;
                };
                if let Some(state) = self.citizen_conns.get_mut(&conn) {
                    state.rateable = Some(Rateable { left: rateable.left - 1, ..rateable });
                }
                let conversation = rateable.conversation;
                out.push(Effect::Store(StoreOp::Rated { conversation, score, at: now, conn }));
            }
        }
    }

    fn start(
        &mut self,
        now: DateTime<Utc>,
        conn: ConnId,
        citizen_name: Option<Arc<str>>,
        topic: Option<Arc<str>>,
        language: Option<Arc<str>>,
        out: &mut Vec<Effect>,
    ) {
        if self.shutting_down {
            out.push(Effect::ToCitizen(
                conn,
                CitizenEvent::Error {
                    code: ErrorCode::ShuttingDown,
                    message: "the server is restarting; try again in a moment".into(),
                    client_msg_id: None,
                },
            ));
            return;
        }
        if let Admission::Refused { reason, next_opening } = self.admission(now) {
            let message = match reason {
                RefusalReason::Closed => "The chat is closed right now.",
                RefusalReason::LastAdmissionPassed => "The chat takes no new conversations this close to closing time.",
                RefusalReason::WaitBeyondClosing => "The queue is too long to reach an advisor before closing time.",
            };
            out.push(Effect::ToCitizen(
                conn,
                CitizenEvent::Refused { code: reason.code(), message: message.into(), next_opening },
            ));
            out.push(Effect::Store(StoreOp::Refused { at: now, reason }));
            return;
        }
        // 128 random bits in UUID form (a v4 UUID fixes 6 of them).
        let id = Uuid::from_bytes(rand::random());
        let token = random_token();
        let hash = token_hash(&token);
        let key = self.queue.push_back(id);
        let position = self.queue.len();
        let conversation = Conversation {
            id,
            token: Some(token.clone()),
            token_hash: hash.clone(),
            citizen_conn: Some(conn),
            citizen_gone_at: None,
            citizen_name: citizen_name.clone(),
            topic: topic.clone(),
            language: language.clone(),
            queued_at: now,
            phase: Phase::Queued(key),
            assigned_at: None,
            ever_assigned: false,
            errand_number: None,
            returned_by: None,
            next_seq: 1,
            history: Vec::new(),
            charged_bytes: 0,
            pending: Vec::new(),
            client_ids: ClientIds::default(),
            last_activity: now,
            warned_at: None,
            wrap_up_since: None,
            end_reason: None,
            last_position: position,
            last_sent: None,
            last_sent_tick: 0,
        };
        let wait = self.estimate_wait(position);
        self.conversations.insert(id, conversation);
        self.by_token.insert(hash.clone(), id);
        if let Some(c) = self.citizen_conns.get_mut(&conn) {
            c.conversation = Some(id);
            c.rateable = None;
        }
        out.push(Effect::Store(StoreOp::Created {
            conversation: id,
            at: now,
            token_hash: hash,
            queue_place: key.as_i64(),
            citizen_name,
            topic,
            language,
        }));
        out.push(Effect::ToCitizen(
            conn,
            CitizenEvent::Queued {
                conversation_id: id.to_string(),
                resume_token: token,
                position,
                estimated_wait_seconds: wait,
            },
        ));
        if let Some(c) = self.conversations.get_mut(&id) {
            c.last_sent = Some((position, wait, now));
            c.last_sent_tick = self.ticks;
        }
        self.dispatch(now, out);
    }

    fn resume(&mut self, conn: ConnId, token: &str, last_seq: u64, out: &mut Vec<Effect>) {
        let hash = token_hash(token);
        let found = self.by_token.get(&hash).copied().filter(|id| {
            self.conversations.get(id).is_some_and(|c| matches!(c.phase, Phase::Queued(_) | Phase::Chatting(_)))
        });
        let Some(id) = found else {
            let event = match self.ended_tokens.get(&hash) {
                // Over, but recently: tell how it ended (the errand number), once more.
                Some(ended) => {
                    let ended = ended.clone();
                    let can_rate = self.offer_rating(conn, ended.conversation, ended.errand_number.is_some());
                    CitizenEvent::Ended { errand_number: ended.errand_number, reason: ended.reason, can_rate }
                }
                None => CitizenEvent::Error {
                    code: ErrorCode::NotFound,
                    message: "no conversation to resume with that token".into(),
                    client_msg_id: None,
                },
            };
            out.push(Effect::ToCitizen(conn, event));
            return;
        };
        let wait_for_position = |core: &ChatCore, position| core.estimate_wait(position);
        let Some(c) = self.conversations.get_mut(&id) else {
            return;
        };
        // Restored after a restart: the token is known again from now on.
        c.token.get_or_insert_with(|| token.to_owned());
        if let Some(old) = c.citizen_conn.replace(conn)
            && old != conn
        {
            out.push(Effect::Close(old, CloseReason::Replaced));
            self.citizen_conns.remove(&old);
        }
        if let Some(gone) = c.citizen_gone_at.take() {
            self.citizen_deadlines.remove(&(gone, id));
        }
        if let Some(state) = self.citizen_conns.get_mut(&conn) {
            state.conversation = Some(id);
            state.rateable = None;
        }
        let phase = c.phase;
        let position = c.last_position;
        let last_stored = c.history.last().map_or(0, |m| m.seq);
        // As the citizen sees them: no advisor-side ids or flags.
        let missed: Vec<_> = c
            .history
            .iter()
            .filter(|m| m.seq > last_seq)
            .map(|m| MessageView {
                client_msg_id: if m.sender == Sender::Citizen { m.client_msg_id.clone() } else { None },
                personnummer: false,
                ..m.clone()
            })
            .collect();
        let (state, advisor_name, advisor_conn) = match phase {
            Phase::Chatting(advisor) => {
                let a = self.advisors.get(&advisor);
                (ResumedState::Chatting, a.map(|a| a.profile.display_name.clone()), a.and_then(|a| a.conn))
            }
            _ => (ResumedState::Queued, None, None),
        };
        let queued = state == ResumedState::Queued;
        let wait = if queued { wait_for_position(self, position) } else { None };
        out.push(Effect::ToCitizen(
            conn,
            CitizenEvent::Resumed {
                conversation_id: id.to_string(),
                state,
                position: queued.then_some(position),
                estimated_wait_seconds: wait,
                advisor_name,
                last_seq: last_stored,
            },
        ));
        for m in missed {
            out.push(Effect::ToCitizen(conn, CitizenEvent::Message(m)));
        }
        if let Some(advisor_conn) = advisor_conn {
            out.push(Effect::ToAdvisor(
                advisor_conn,
                AdvisorEvent::CitizenPresence { conversation_id: id.to_string(), connected: true },
            ));
        }
    }

    fn citizen_gone(&mut self, now: DateTime<Utc>, conn: ConnId, out: &mut Vec<Effect>) {
        let Some(state) = self.citizen_conns.remove(&conn) else {
            return;
        };
        let Some(id) = state.conversation else { return };
        let Some(c) = self.conversations.get_mut(&id) else {
            return;
        };
        if c.citizen_conn != Some(conn) {
            return;
        }
        c.citizen_conn = None;
        if matches!(c.phase, Phase::Queued(_) | Phase::Chatting(_)) {
            c.citizen_gone_at = Some(now);
            self.citizen_deadlines.insert((now, id));
        }
        if let Phase::Chatting(advisor) = c.phase
            && let Some(advisor_conn) = self.advisors.get(&advisor).and_then(|a| a.conn)
        {
            out.push(Effect::ToAdvisor(
                advisor_conn,
                AdvisorEvent::CitizenPresence { conversation_id: id.to_string(), connected: false },
            ));
        }
    }

    /// A queued citizen leaves (or vanished past the grace period).
    fn abandon(&mut self, now: DateTime<Utc>, id: ConversationId, out: &mut Vec<Effect>) {
        let Some(c) = self.conversations.get_mut(&id) else {
            return;
        };
        let Phase::Queued(key) = c.phase else { return };
        self.queue.remove(key);
        c.phase = Phase::Closing;
        let reason = if c.citizen_conn.is_some() { EndReason::Abandoned } else { EndReason::CitizenDisconnected };
        c.end_reason = Some(reason);
        let outcome = if c.ever_assigned { Outcome::Served } else { Outcome::Abandoned };
        out.push(Effect::Store(StoreOp::Ended {
            conversation: id,
            at: now,
            reason,
            outcome,
            category: None,
            summary: None,
            wrap_up: false,
        }));
    }

    /// The citizen leaves an assigned chat: the advisor wraps it up.
    fn citizen_ends(&mut self, now: DateTime<Utc>, id: ConversationId, reason: EndReason, out: &mut Vec<Effect>) {
        let Some(c) = self.conversations.get_mut(&id) else {
            return;
        };
        let Phase::Chatting(advisor) = c.phase else {
            return;
        };
        c.phase = Phase::WrapUp(advisor);
        c.wrap_up_since = Some(now);
        c.end_reason = Some(reason);
        if let Some(gone) = c.citizen_gone_at.take() {
            self.citizen_deadlines.remove(&(gone, id));
        }
        let handled = c.assigned_at.map(|t| (now - t).num_milliseconds() as f64 / 1000.0);
        out.push(Effect::Store(StoreOp::Ended {
            conversation: id,
            at: now,
            reason,
            outcome: Outcome::Served,
            category: None,
            summary: None,
            wrap_up: true,
        }));
        if let Some(a) = self.advisors.get_mut(&advisor) {
            a.active = a.active.saturating_sub(1);
            if let Some(conn) = a.conn {
                out.push(Effect::ToAdvisor(conn, AdvisorEvent::WrapUp { conversation_id: id.to_string(), reason }));
            }
        }
        if let Some(s) = handled {
            self.record_handle_time(s);
        }
        self.dispatch(now, out);
    }

    // ------------------------------------------------------------ messages

    #[allow(clippy::too_many_arguments)]
    fn post(
        &mut self,
        now: DateTime<Utc>,
        id: ConversationId,
        sender: Sender,
        advisor: Option<&AdvisorProfile>,
        client_msg_id: String,
        text: String,
        out: &mut Vec<Effect>,
    ) {
        let max_bytes = self.settings.max_message_bytes;
        let (max_conversation_bytes, max_queued_bytes) =
            (self.settings.max_conversation_bytes, self.settings.max_queued_bytes);
        let Some(c) = self.conversations.get_mut(&id) else {
            return;
        };
        let reply_conn = match (sender, advisor) {
            (Sender::Advisor, Some(p)) => self.advisors.get(&p.id).and_then(|a| a.conn),
            _ => c.citizen_conn,
        };
        let reply = |code: ErrorCode, message: String, cid: Option<Arc<str>>| -> Option<Effect> {
            let conn = reply_conn?;
            Some(match sender {
                Sender::Advisor => Effect::ToAdvisor(
                    conn,
                    AdvisorEvent::Error { code, message, conversation_id: Some(id.to_string()), client_msg_id: cid },
                ),
                _ => Effect::ToCitizen(conn, CitizenEvent::Error { code, message, client_msg_id: cid }),
            })
        };
        let cid: Arc<str> = client_msg_id.into();
        if cid.is_empty() || cid.chars().count() > Limits::CLIENT_MSG_ID {
            out.extend(reply(
                ErrorCode::InvalidField,
                format!("client_msg_id must be 1 to {} characters", Limits::CLIENT_MSG_ID),
                Some(cid),
            ));
            return;
        }
        let open = match (c.phase, sender) {
            (Phase::Queued(_) | Phase::Chatting(_), Sender::Citizen) => true,
            (Phase::Chatting(owner), Sender::Advisor) => advisor.is_some_and(|a| a.id == owner),
            _ => false,
        };
        if !open {
            out.extend(reply(
                ErrorCode::InvalidState,
                "the chat has ended; no more messages can be added".into(),
                Some(cid),
            ));
            return;
        }
        if text.trim().is_empty() {
            out.extend(reply(ErrorCode::InvalidField, "text must not be empty".into(), Some(cid)));
            return;
        }
        if text.len() > max_bytes {
            out.extend(reply(ErrorCode::InvalidField, format!("text is longer than {max_bytes} bytes"), Some(cid)));
            return;
        }
        let text: Arc<str> = text.into();
        if let Some(earlier) = c.client_ids.claim(sender, &cid, c.next_seq) {
            match c.sent_message(earlier, sender, &cid) {
                // A retry of a message on its way: its ack follows when it is durable.
                Some((m, Durable::No)) if *m.text == *text => return,
                Some((m, Durable::Yes)) if *m.text == *text => {
                    let (seq, at) = (m.seq, m.sent_at);
                    if let Some(conn) = reply_conn {
                        out.push(ack(conn, sender, id, cid, seq, at));
                    }
                    return;
                }
                Some(_) => {
                    out.extend(reply(
                        ErrorCode::Conflict,
                        "this client_msg_id was already used for a different message".into(),
                        Some(cid),
                    ));
                    return;
                }
                // Not kept after all (the ids are removed with a failed
                // message, so this does not happen): a new message.
                None => c.client_ids.insert(sender, cid.clone(), c.next_seq),
            }
        }
        // A chat sent back to the queue has been read: the chat's own limit holds.
        let (limit, full) = match c.phase {
            Phase::Queued(_) if !c.ever_assigned => (
                max_queued_bytes,
                "you have written as much as a waiting chat may hold; the advisor reads it when the chat starts",
            ),
            _ => (
                max_conversation_bytes,
                "this chat holds as much text as a chat may; end it and start a new chat to go on",
            ),
        };
        let cost = charge(&text);
        if c.charged_bytes + cost > limit {
            // Not a message after all: a retry of this id is refused the same way.
            c.client_ids.remove(sender, &cid);
            self.messages_refused_full += 1;
            out.extend(reply(ErrorCode::ConversationFull, full.into(), Some(cid)));
            return;
        }
        c.charged_bytes += cost;
        let seq = c.next_seq;
        c.next_seq += 1;
        c.last_activity = now;
        c.warned_at = None;
        let sender_name = match sender {
            Sender::Advisor => advisor.map(|a| a.display_name.clone()),
            _ => c.citizen_name.clone(),
        };
        let personnummer = !super::personnummer::find(&text, local_date(now).year()).is_empty();
        let view = MessageView {
            seq,
            sender,
            sender_name: sender_name.clone(),
            text: text.clone(),
            sent_at: now,
            client_msg_id: Some(cid.clone()),
            personnummer,
        };
        c.pending.push((seq, PendingMessage { view, advisor: advisor.map(|a| a.id) }));
        out.push(Effect::Store(StoreOp::Message {
            conversation: id,
            seq,
            sender,
            advisor: advisor.map(|a| a.id),
            sender_name,
            client_msg_id: Some(cid),
            text,
            at: now,
        }));
    }

    fn committed(&mut self, now: DateTime<Utc>, result: Committed, out: &mut Vec<Effect>) {
        match result {
            Committed::Done => {}
            Committed::Message { conversation, seq } => self.message_committed(conversation, seq, out),
            Committed::MessageFailed { conversation, seq } => {
                let Some(c) = self.conversations.get_mut(&conversation) else {
                    return;
                };
                let Some(i) = c.pending.iter().position(|(s, _)| *s == seq) else {
                    return;
                };
                let (_, p) = c.pending.remove(i);
                c.charged_bytes -= charge(&p.view.text);
                let cid = p.view.client_msg_id.clone();
                if let Some(cid) = &cid {
                    c.client_ids.remove(p.view.sender, cid);
                }
                let message = "the message could not be stored and was not delivered; send it again".to_string();
                match p.view.sender {
                    Sender::Advisor => {
                        if let Some(conn) = p.advisor.and_then(|a| self.advisors.get(&a)).and_then(|a| a.conn) {
                            out.push(Effect::ToAdvisor(
                                conn,
                                AdvisorEvent::Error {
                                    code: ErrorCode::StorageFailed,
                                    message,
                                    conversation_id: Some(conversation.to_string()),
                                    client_msg_id: cid,
                                },
                            ));
                        }
                    }
                    _ => {
                        if let Some(conn) = c.citizen_conn {
                            out.push(Effect::ToCitizen(
                                conn,
                                CitizenEvent::Error { code: ErrorCode::StorageFailed, message, client_msg_id: cid },
                            ));
                        }
                    }
                }
            }
            Committed::Assigned { conversation, errand_number } => {
                if let Some(c) = self.conversations.get_mut(&conversation) {
                    c.errand_number = Some(errand_number);
                }
            }
            Committed::Ended { conversation } => {
                let Some(c) = self.conversations.get(&conversation) else {
                    return;
                };
                let reason = c.end_reason.unwrap_or(EndReason::Interrupted);
                let (citizen_conn, errand_number, closing) =
                    (c.citizen_conn, c.errand_number.clone(), c.phase == Phase::Closing);
                if let Some(conn) = citizen_conn {
                    let can_rate = self.offer_rating(conn, conversation, errand_number.is_some());
                    out.push(Effect::ToCitizen(conn, CitizenEvent::Ended { errand_number, reason, can_rate }));
                }
                if closing {
                    self.remove_conversation(now, conversation, reason, out);
                } else {
                    // Wrap-up: the citizen is done; the advisor still closes it.
                    self.detach_citizen(now, conversation);
                }
            }
            Committed::Rated { conn, score } => {
                if self.citizen_conns.contains_key(&conn) {
                    out.push(Effect::ToCitizen(conn, CitizenEvent::Rated { score }));
                }
            }
            Committed::Classified { conversation } => {
                let reason =
                    self.conversations.get(&conversation).and_then(|c| c.end_reason).unwrap_or(EndReason::AdvisorEnded);
                self.remove_conversation(now, conversation, reason, out);
            }
        }
    }

    fn message_committed(&mut self, id: ConversationId, seq: u64, out: &mut Vec<Effect>) {
        let Some(c) = self.conversations.get_mut(&id) else {
            return;
        };
        let Some(i) = c.pending.iter().position(|(s, _)| *s == seq) else {
            return;
        };
        let (_, p) = c.pending.remove(i);
        let view = p.view;
        let sender = view.sender;
        // Its client id already maps to `seq`; in the history it is durable.
        c.history.push(view.clone());
        let advisor_conn = match c.phase {
            Phase::Chatting(a) | Phase::WrapUp(a) => self.advisors.get(&a).and_then(|a| a.conn),
            _ => None,
        };
        let author_conn = p.advisor.and_then(|a| self.advisors.get(&a)).and_then(|a| a.conn);
        match sender {
            Sender::Citizen => {
                if let (Some(conn), Some(cid)) = (c.citizen_conn, view.client_msg_id.clone()) {
                    out.push(ack(conn, sender, id, cid, seq, view.sent_at));
                }
                if let Some(conn) = advisor_conn {
                    out.push(Effect::ToAdvisor(
                        conn,
                        AdvisorEvent::Message { conversation_id: id.to_string(), message: view },
                    ));
                }
            }
            Sender::Advisor | Sender::System => {
                if let (Some(conn), Some(cid)) = (author_conn, view.client_msg_id.clone()) {
                    out.push(ack(conn, sender, id, cid, seq, view.sent_at));
                }
                if let Some(conn) = c.citizen_conn {
                    let mut for_citizen = view;
                    for_citizen.client_msg_id = None;
                    for_citizen.personnummer = false;
                    out.push(Effect::ToCitizen(conn, CitizenEvent::Message(for_citizen)));
                }
            }
        }
    }

    /// An ended chat's token answers a `resume` with `ended` for the grace
    /// period, or, when the citizen may rate the chat, for the rating window
    /// if that is longer: a reloaded page or a dropped connection can still
    /// rate it. Both count from `ended_at`.
    fn remember_ended(&mut self, ended_at: DateTime<Utc>, token_hash: String, ended: EndedChat) {
        let rateable = self.settings.ask_satisfaction && ended.errand_number.is_some();
        let (queue, lifetime) = if rateable && self.settings.rating_window > self.settings.citizen_grace {
            (1, self.settings.rating_window)
        } else {
            (0, self.settings.citizen_grace)
        };
        self.ended_expiry[queue].push_back((ended_at + lifetime, token_hash.clone()));
        self.ended_tokens.insert(token_hash, ended);
    }

    /// Lets `conn`, which is told that `conversation` ended, rate it if an
    /// advisor took part (it has an errand) and the survey is on; returns
    /// whether it may (the `ended` frame's `can_rate`).
    fn offer_rating(&mut self, conn: ConnId, conversation: ConversationId, had_advisor: bool) -> bool {
        let can_rate = self.settings.ask_satisfaction && had_advisor;
        if let Some(state) = self.citizen_conns.get_mut(&conn) {
            state.rateable = can_rate.then(|| Rateable::new(conversation));
        }
        can_rate
    }

    /// The citizen's side of a conversation is over: its token and connection let go.
    fn detach_citizen(&mut self, now: DateTime<Utc>, id: ConversationId) {
        let Some(c) = self.conversations.get_mut(&id) else {
            return;
        };
        let ended = self.by_token.remove(&c.token_hash).map(|_| {
            let reason = c.end_reason.unwrap_or(EndReason::Interrupted);
            (c.token_hash.clone(), EndedChat { conversation: id, errand_number: c.errand_number.clone(), reason })
        });
        if let Some(conn) = c.citizen_conn.take()
            && let Some(state) = self.citizen_conns.get_mut(&conn)
        {
            state.conversation = None;
        }
        if let Some(gone) = c.citizen_gone_at.take() {
            self.citizen_deadlines.remove(&(gone, id));
        }
        if let Some((hash, ended)) = ended {
            self.remember_ended(now, hash, ended);
        }
    }

    fn remove_conversation(
        &mut self,
        now: DateTime<Utc>,
        id: ConversationId,
        reason: EndReason,
        out: &mut Vec<Effect>,
    ) {
        self.detach_citizen(now, id);
        let Some(c) = self.conversations.remove(&id) else {
            return;
        };
        let advisor = self.advisors.values_mut().find(|a| a.chats.contains(&id));
        if let Some(a) = advisor {
            a.chats.remove(&id);
            if let Some(conn) = a.conn {
                out.push(Effect::ToAdvisor(
                    conn,
                    AdvisorEvent::ChatEnded {
                        conversation_id: id.to_string(),
                        errand_number: c.errand_number.clone(),
                        reason,
                    },
                ));
            }
            let gone = a.conn.is_none() && a.chats.is_empty() && a.status == AdvisorStatus::Offline;
            let aid = a.profile.id;
            if gone {
                self.advisors.remove(&aid);
            }
        }
    }

    // ------------------------------------------------------------ advisors

    fn advisor_connected(&mut self, now: DateTime<Utc>, conn: ConnId, profile: AdvisorProfile, out: &mut Vec<Effect>) {
        let id = profile.id;
        let advisor = self.advisors.entry(id).or_insert_with(|| Advisor {
            profile: profile.clone(),
            status: AdvisorStatus::Away,
            status_before_disconnect: None,
            conn: None,
            gone_at: None,
            chats: BTreeSet::new(),
            active: 0,
            last_assigned_at: None,
        });
        advisor.profile = profile;
        if let Some(old) = advisor.conn.replace(conn) {
            out.push(Effect::Close(old, CloseReason::Replaced));
            self.advisor_conns.remove(&old);
        }
        advisor.gone_at = None;
        if let Some(before) = advisor.status_before_disconnect.take() {
            advisor.status = before;
        }
        if advisor.status == AdvisorStatus::Offline {
            advisor.status = AdvisorStatus::Away;
        }
        self.advisor_conns.insert(conn, id);
        let welcome = self.advisor_welcome(now, id);
        out.extend(welcome.map(|w| Effect::ToAdvisor(conn, w)));
        // Citizens learn their advisor is back only through messages; nothing to tell them.
        self.dispatch(now, out);
    }

    fn advisor_welcome(&self, now: DateTime<Utc>, id: UserId) -> Option<AdvisorEvent> {
        let a = self.advisors.get(&id)?;
        let chats = a
            .chats
            .iter()
            .filter_map(|c| self.conversations.get(c))
            .map(|c| c.chat_view(c.citizen_conn.is_some()))
            .collect();
        Some(AdvisorEvent::Welcome {
            protocol: PROTOCOL_VERSION,
            advisor: AdvisorProfileView {
                username: a.profile.username.clone(),
                display_name: a.profile.display_name.to_string(),
                role: a.profile.role.clone(),
            },
            status: a.status,
            max_chats: self.settings.max_chats_per_advisor,
            categories: self.settings.categories.clone(),
            canned_responses: self.settings.canned_responses.clone(),
            max_message_bytes: self.settings.max_message_bytes,
            chats,
            queue: self.queue_summary(now),
        })
    }

    fn advisor_gone(&mut self, now: DateTime<Utc>, conn: ConnId, _out: &mut Vec<Effect>) {
        let Some(id) = self.advisor_conns.remove(&conn) else {
            return;
        };
        let Some(a) = self.advisors.get_mut(&id) else {
            return;
        };
        if a.conn != Some(conn) {
            return;
        }
        a.conn = None;
        a.gone_at = Some(now);
        a.status_before_disconnect = Some(a.status);
        a.status = AdvisorStatus::Away;
    }

    fn advisor_request(&mut self, now: DateTime<Utc>, conn: ConnId, request: AdvisorRequest, out: &mut Vec<Effect>) {
        let Some(&advisor_id) = self.advisor_conns.get(&conn) else {
            return;
        };
        let Some(profile) = self.advisors.get(&advisor_id).map(|a| a.profile.clone()) else {
            return;
        };
        let error = |code, message: String, conversation: Option<&str>| {
            Effect::ToAdvisor(
                conn,
                AdvisorEvent::Error {
                    code,
                    message,
                    conversation_id: conversation.map(str::to_owned),
                    client_msg_id: None,
                },
            )
        };
        // Resolves a conversation id the advisor named: theirs, or "not found" (the same for both).
        let own = |core: &ChatCore, raw: &str| -> Option<ConversationId> {
            let id = Uuid::parse_str(raw).ok()?;
            core.advisors.get(&advisor_id).filter(|a| a.chats.contains(&id)).map(|_| id)
        };
        let not_found =
            |raw: &str| error(ErrorCode::NotFound, "no such conversation among your chats".into(), Some(raw));
        match request {
            AdvisorRequest::Status { status } => {
                if status == AdvisorStatus::Offline {
                    out.push(error(
                        ErrorCode::InvalidField,
                        "status must be available or away; close the connection to go offline".into(),
                        None,
                    ));
                    return;
                }
                if let Some(a) = self.advisors.get_mut(&advisor_id) {
                    a.status = status;
                }
                out.push(Effect::Store(StoreOp::AdvisorStatus { advisor: advisor_id, status }));
                out.push(Effect::ToAdvisor(conn, AdvisorEvent::Status { status }));
                self.dispatch(now, out);
            }
            AdvisorRequest::Message { conversation_id, client_msg_id, text } => {
                let Some(id) = own(self, &conversation_id) else {
                    out.push(Effect::ToAdvisor(
                        conn,
                        AdvisorEvent::Error {
                            code: ErrorCode::NotFound,
                            message: "no such conversation among your chats".into(),
                            conversation_id: Some(conversation_id),
                            client_msg_id: Some(client_msg_id.into()),
                        },
                    ));
                    return;
                };
                self.post(now, id, Sender::Advisor, Some(&profile), client_msg_id, text, out);
            }
            AdvisorRequest::Typing { conversation_id, active } => {
                let Some(id) = own(self, &conversation_id) else {
                    out.push(not_found(&conversation_id));
                    return;
                };
                if let Some(c) = self.conversations.get(&id)
                    && matches!(c.phase, Phase::Chatting(_))
                    && let Some(citizen) = c.citizen_conn
                {
                    out.push(Effect::ToCitizen(citizen, CitizenEvent::Typing { active }));
                }
            }
            AdvisorRequest::End { conversation_id, category, summary } => {
                let Some(id) = own(self, &conversation_id) else {
                    out.push(not_found(&conversation_id));
                    return;
                };
                let category = match optional_text(category, Limits::CATEGORY, "category") {
                    Ok(c) => c.map(|c| c.to_string()),
                    Err(e) => {
                        return out.push(error(ErrorCode::InvalidField, e, Some(&conversation_id)));
                    }
                };
                let summary = match optional_text(summary, Limits::SUMMARY, "summary") {
                    Ok(s) => s.map(|s| s.to_string()),
                    Err(e) => {
                        return out.push(error(ErrorCode::InvalidField, e, Some(&conversation_id)));
                    }
                };
                if let Some(cat) = &category
                    && !self.settings.categories.is_empty()
                    && !self.settings.categories.contains(cat)
                {
                    out.push(error(
                        ErrorCode::InvalidCategory,
                        format!("category must be one of: {}", self.settings.categories.join(", ")),
                        Some(&conversation_id),
                    ));
                    return;
                }
                self.advisor_ends(now, advisor_id, id, category, summary, EndReason::AdvisorEnded, out);
            }
            AdvisorRequest::Transfer { conversation_id, to } => {
                let Some(id) = own(self, &conversation_id) else {
                    out.push(not_found(&conversation_id));
                    return;
                };
                if !matches!(self.conversations.get(&id).map(|c| c.phase), Some(Phase::Chatting(_))) {
                    out.push(error(
                        ErrorCode::InvalidState,
                        "only a chat in progress can be transferred".into(),
                        Some(&conversation_id),
                    ));
                    return;
                }
                match to {
                    None => self.requeue(now, advisor_id, id, Some(RemovedReason::ReturnedToQueue), out),
                    Some(username) => {
                        let max = self.settings.max_chats_per_advisor;
                        let target = self
                            .advisors
                            .values()
                            .find(|a| a.profile.username == username)
                            .filter(|a| {
                                a.profile.id != advisor_id
                                    && a.conn.is_some()
                                    && a.status == AdvisorStatus::Available
                                    && a.active < max
                            })
                            .map(|a| a.profile.id);
                        let Some(target) = target else {
                            out.push(error(
                                ErrorCode::TargetUnavailable,
                                format!("{username} is not available with a free chat slot"),
                                Some(&conversation_id),
                            ));
                            return;
                        };
                        self.transfer(now, advisor_id, target, id, out);
                    }
                }
            }
            AdvisorRequest::Sync { conversation_id, last_seq } => {
                let Some(id) = own(self, &conversation_id) else {
                    out.push(not_found(&conversation_id));
                    return;
                };
                if let Some(c) = self.conversations.get(&id) {
                    for m in c.history.iter().filter(|m| m.seq > last_seq) {
                        out.push(Effect::ToAdvisor(
                            conn,
                            AdvisorEvent::Message { conversation_id: conversation_id.clone(), message: m.clone() },
                        ));
                    }
                    let last = c.history.last().map_or(0, |m| m.seq);
                    out.push(Effect::ToAdvisor(conn, AdvisorEvent::Synced { conversation_id, last_seq: last }));
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn advisor_ends(
        &mut self,
        now: DateTime<Utc>,
        advisor_id: UserId,
        id: ConversationId,
        category: Option<String>,
        summary: Option<String>,
        reason: EndReason,
        out: &mut Vec<Effect>,
    ) {
        let Some(c) = self.conversations.get_mut(&id) else {
            return;
        };
        match c.phase {
            Phase::Chatting(_) => {
                c.phase = Phase::Closing;
                c.end_reason = Some(reason);
                let handled = c.assigned_at.map(|t| (now - t).num_milliseconds() as f64 / 1000.0);
                out.push(Effect::Store(StoreOp::Ended {
                    conversation: id,
                    at: now,
                    reason,
                    outcome: Outcome::Served,
                    category,
                    summary,
                    wrap_up: false,
                }));
                if let Some(a) = self.advisors.get_mut(&advisor_id) {
                    a.active = a.active.saturating_sub(1);
                }
                if let Some(s) = handled {
                    self.record_handle_time(s);
                }
                self.dispatch(now, out);
            }
            Phase::WrapUp(_) => {
                c.phase = Phase::Closing;
                out.push(Effect::Store(StoreOp::Classified { conversation: id, category, summary }));
            }
            Phase::Queued(_) | Phase::Closing => {}
        }
    }

    fn transfer(&mut self, now: DateTime<Utc>, from: UserId, to: UserId, id: ConversationId, out: &mut Vec<Effect>) {
        let Some(c) = self.conversations.get_mut(&id) else {
            return;
        };
        c.phase = Phase::Chatting(to);
        let to_name = self.advisors.get(&to).map(|a| a.profile.display_name.clone()).unwrap_or_else(|| "".into());
        if let Some(a) = self.advisors.get_mut(&from) {
            a.active = a.active.saturating_sub(1);
            a.chats.remove(&id);
            if let Some(conn) = a.conn {
                out.push(Effect::ToAdvisor(
                    conn,
                    AdvisorEvent::ChatRemoved { conversation_id: id.to_string(), reason: RemovedReason::Transferred },
                ));
            }
        }
        let view = c.chat_view(c.citizen_conn.is_some());
        if let Some(a) = self.advisors.get_mut(&to) {
            a.active += 1;
            a.chats.insert(id);
            a.last_assigned_at = Some(now);
            if let Some(conn) = a.conn {
                out.push(Effect::ToAdvisor(conn, AdvisorEvent::Assigned { chat: view }));
            }
        }
        if let Some(conn) = c.citizen_conn {
            out.push(Effect::ToCitizen(conn, CitizenEvent::Assigned { advisor_name: to_name.clone() }));
        }
        out.push(Effect::Store(StoreOp::Assigned {
            conversation: id,
            at: now,
            advisor: to,
            advisor_name: to_name,
            queued_at: c.queued_at,
            errand_year: local_date(now).year(),
            first: false,
        }));
        self.dispatch(now, out);
    }

    /// Puts a chat back at the front of the queue.
    fn requeue(
        &mut self,
        now: DateTime<Utc>,
        from: UserId,
        id: ConversationId,
        removed: Option<RemovedReason>,
        out: &mut Vec<Effect>,
    ) {
        let Some(c) = self.conversations.get_mut(&id) else {
            return;
        };
        let key = self.queue.push_front(id);
        c.phase = Phase::Queued(key);
        c.returned_by = removed.map(|_| from);
        c.last_position = 1;
        c.warned_at = None;
        if let Some(a) = self.advisors.get_mut(&from) {
            a.active = a.active.saturating_sub(1);
            a.chats.remove(&id);
            if let (Some(conn), Some(reason)) = (a.conn, removed) {
                out.push(Effect::ToAdvisor(
                    conn,
                    AdvisorEvent::ChatRemoved { conversation_id: id.to_string(), reason },
                ));
            }
        }
        out.push(Effect::Store(StoreOp::Requeued {
            conversation: id,
            at: now,
            advisor: from,
            queue_place: key.as_i64(),
        }));
        let wait = self.estimate_wait(1);
        if let Some(c) = self.conversations.get_mut(&id) {
            c.last_sent = Some((1, wait, now));
            c.last_sent_tick = self.ticks;
            if let Some(conn) = c.citizen_conn {
                out.push(Effect::ToCitizen(
                    conn,
                    CitizenEvent::Queued {
                        conversation_id: id.to_string(),
                        // Known: a connected citizen started or resumed with it.
                        resume_token: c.token.clone().unwrap_or_default(),
                        position: 1,
                        estimated_wait_seconds: wait,
                    },
                ));
            }
        }
        self.dispatch(now, out);
    }

    // ------------------------------------------------------------ routing

    /// The best advisor for a chat: available, connected, with a free slot;
    /// fewest active chats first, then the longest since their last assignment.
    fn pick_advisor(&self, exclude: Option<UserId>) -> Option<UserId> {
        let max = self.settings.max_chats_per_advisor;
        self.advisors
            .values()
            .filter(|a| a.conn.is_some() && a.status == AdvisorStatus::Available && a.active < max)
            .filter(|a| Some(a.profile.id) != exclude)
            .min_by_key(|a| (a.active, a.last_assigned_at, a.profile.id))
            .map(|a| a.profile.id)
    }

    /// Hands waiting chats to free advisors until one of the two runs out.
    /// Runs after every change that can free capacity or add a chat, so no
    /// capacity stays idle while someone waits.
    fn dispatch(&mut self, now: DateTime<Utc>, out: &mut Vec<Effect>) {
        // Chats returned by the only free advisor are skipped, not blocking the rest.
        let mut skipped = 0usize;
        loop {
            let Some((_, &id)) = self.queue.iter().nth(skipped) else {
                return;
            };
            let exclude = self.conversations.get(&id).and_then(|c| c.returned_by);
            let Some(advisor) = self.pick_advisor(exclude) else {
                if exclude.is_some() && self.pick_advisor(None).is_some() {
                    skipped += 1;
                    continue;
                }
                return;
            };
            self.assign(now, id, advisor, out);
        }
    }

    fn assign(&mut self, now: DateTime<Utc>, id: ConversationId, advisor_id: UserId, out: &mut Vec<Effect>) {
        let Some(c) = self.conversations.get_mut(&id) else {
            return;
        };
        let Phase::Queued(key) = c.phase else { return };
        self.queue.remove(key);
        c.phase = Phase::Chatting(advisor_id);
        c.assigned_at = Some(now);
        c.returned_by = None;
        c.last_activity = now;
        c.warned_at = None;
        let first = !c.ever_assigned;
        c.ever_assigned = true;
        let Some(a) = self.advisors.get_mut(&advisor_id) else {
            return;
        };
        a.active += 1;
        a.chats.insert(id);
        a.last_assigned_at = Some(now);
        let name = a.profile.display_name.clone();
        if let Some(conn) = a.conn {
            out.push(Effect::ToAdvisor(conn, AdvisorEvent::Assigned { chat: c.chat_view(c.citizen_conn.is_some()) }));
        }
        if let Some(conn) = c.citizen_conn {
            out.push(Effect::ToCitizen(conn, CitizenEvent::Assigned { advisor_name: name.clone() }));
        }
        out.push(Effect::Store(StoreOp::Assigned {
            conversation: id,
            at: now,
            advisor: advisor_id,
            advisor_name: name,
            queued_at: c.queued_at,
            errand_year: local_date(now).year(),
            first,
        }));
    }

    // ------------------------------------------------------------ time

    fn tick(&mut self, now: DateTime<Utc>, out: &mut Vec<Effect>) {
        // Ended conversations' tokens stop answering after the grace period
        // (or the rating window).
        for expiry in &mut self.ended_expiry {
            while expiry.front().is_some_and(|(until, _)| *until <= now) {
                if let Some((_, hash)) = expiry.pop_front() {
                    self.ended_tokens.remove(&hash);
                }
            }
        }

        // Citizens gone longer than the grace period.
        let cutoff = now - self.settings.citizen_grace;
        while let Some(&(gone, id)) = self.citizen_deadlines.first() {
            if gone > cutoff {
                break;
            }
            self.citizen_deadlines.remove(&(gone, id));
            if let Some(c) = self.conversations.get_mut(&id) {
                c.citizen_gone_at = None;
                match c.phase {
                    Phase::Queued(_) => self.abandon(now, id, out),
                    Phase::Chatting(_) => self.citizen_ends(now, id, EndReason::CitizenDisconnected, out),
                    _ => {}
                }
            }
        }

        // Advisors gone longer than the grace period: their chats go back to the front.
        let advisor_cutoff = now - self.settings.advisor_grace;
        let expired: Vec<UserId> = self
            .advisors
            .values()
            .filter(|a| a.conn.is_none() && a.gone_at.is_some_and(|t| t <= advisor_cutoff))
            .map(|a| a.profile.id)
            .collect();
        for advisor_id in expired {
            self.advisor_expired(now, advisor_id, out);
        }

        self.check_inactivity(now, out);

        // The adapter may tick more often than the queue-update interval (the
        // server ticks every 20 ms): each citizen is still told at most once
        // per interval, and the consoles get a summary at most once per interval.
        self.ticks += 1;
        self.send_queue_positions(now, out);
        if self.last_summary_tick.is_none_or(|t| self.ticks - t >= self.ticks_per_update()) {
            self.send_queue_summary(now, out);
        }
    }

    fn advisor_expired(&mut self, now: DateTime<Utc>, advisor_id: UserId, out: &mut Vec<Effect>) {
        let Some(a) = self.advisors.get_mut(&advisor_id) else {
            return;
        };
        a.status = AdvisorStatus::Offline;
        a.status_before_disconnect = None;
        a.gone_at = None;
        let chats: Vec<ConversationId> = a.chats.iter().copied().collect();
        // Back after this, the advisor starts `away`: after a restart too.
        out.push(Effect::Store(StoreOp::AdvisorStatus { advisor: advisor_id, status: AdvisorStatus::Away }));
        let mut chatting: Vec<(DateTime<Utc>, ConversationId)> = Vec::new();
        for id in chats {
            match self.conversations.get(&id).map(|c| c.phase) {
                Some(Phase::Chatting(_)) => {
                    if let Some(c) = self.conversations.get(&id) {
                        chatting.push((c.queued_at, id));
                    }
                }
                Some(Phase::WrapUp(_)) => {
                    // Nobody will classify it now; close it as it stands.
                    if let Some(c) = self.conversations.get_mut(&id) {
                        c.phase = Phase::Closing;
                    }
                    out.push(Effect::Store(StoreOp::Classified { conversation: id, category: None, summary: None }));
                }
                _ => {}
            }
        }
        // Front insertion reverses order, so insert the newest first.
        chatting.sort();
        for (_, id) in chatting.into_iter().rev() {
            self.requeue(now, advisor_id, id, None, out);
        }
        if let Some(a) = self.advisors.get(&advisor_id)
            && a.chats.is_empty()
        {
            self.advisors.remove(&advisor_id);
        }
    }

    fn check_inactivity(&mut self, now: DateTime<Utc>, out: &mut Vec<Effect>) {
        let warn_after = self.settings.inactivity_warning;
        let end_after = self.settings.inactivity_end;
        let assigned: Vec<(UserId, ConversationId)> =
            self.advisors.values().flat_map(|a| a.chats.iter().map(move |c| (a.profile.id, *c))).collect();
        for (advisor_id, id) in assigned {
            let Some(c) = self.conversations.get_mut(&id) else {
                continue;
            };
            let advisor_conn = self.advisors.get(&advisor_id).and_then(|a| a.conn);
            match c.phase {
                Phase::Chatting(_) => {
                    if let Some(warned) = c.warned_at {
                        if now - warned >= end_after {
                            self.advisor_ends(now, advisor_id, id, None, None, EndReason::Inactivity, out);
                        }
                    } else if now - c.last_activity >= warn_after {
                        c.warned_at = Some(now);
                        let ends_in = end_after.num_seconds().max(0) as u64;
                        if let Some(conn) = c.citizen_conn {
                            out.push(Effect::ToCitizen(
                                conn,
                                CitizenEvent::InactivityWarning { ends_in_seconds: ends_in },
                            ));
                        }
                        if let Some(conn) = advisor_conn {
                            out.push(Effect::ToAdvisor(
                                conn,
                                AdvisorEvent::InactivityWarning {
                                    conversation_id: id.to_string(),
                                    ends_in_seconds: ends_in,
                                },
                            ));
                        }
                    }
                }
                Phase::WrapUp(_) if c.wrap_up_since.is_some_and(|t| now - t >= warn_after + end_after) => {
                    c.phase = Phase::Closing;
                    out.push(Effect::Store(StoreOp::Classified { conversation: id, category: None, summary: None }));
                }
                _ => {}
            }
        }
    }

    /// Ticks in one queue-update interval (at least one).
    fn ticks_per_update(&self) -> u64 {
        let tick = self.settings.tick.num_milliseconds().max(1);
        (self.settings.queue_update_interval.num_milliseconds() / tick).max(1) as u64
    }

    /// Sends changed queue positions. A citizen far back is told only when
    /// their position has moved noticeably, so draining a long queue costs a
    /// bounded number of sends; and no tick walks the whole queue: the head
    /// (about to be served, told of every move) is looked at every tick, the
    /// rest by a sweep that passes everyone once per update interval.
    fn send_queue_positions(&mut self, now: DateTime<Utc>, out: &mut Vec<Effect>) {
        let model = self.wait_model();
        let tick_ms = self.settings.tick.num_milliseconds().clamp(1, 1000) as usize;
        let mut budget = (MAX_POSITION_UPDATES_PER_SECOND * tick_ms / 1000).max(1);
        let (ticks, ticks_per_update) = (self.ticks, self.ticks_per_update());
        let conversations = &mut self.conversations;
        // Returns false for a citizen due to be told when the budget is
        // spent: the sweep starts with them next tick.
        let mut consider = |position: usize, id: &ConversationId| -> bool {
            let wait = model.estimate(position);
            let Some(c) = conversations.get_mut(id) else {
                return true;
            };
            c.last_position = position;
            let Some(conn) = c.citizen_conn else { return true };
            let worth_sending = ticks - c.last_sent_tick >= ticks_per_update
                && match c.last_sent {
                    None => true,
                    Some((p, w, at)) => {
                        let moved = p.abs_diff(position);
                        (p != position && (position <= 10 || moved * 20 >= p || now - at >= TimeDelta::seconds(30)))
                            || (w.is_some() != wait.is_some())
                            || (p == position && w != wait && now - at >= TimeDelta::seconds(30))
                    }
                };
            if !worth_sending {
                return true;
            }
            // Over the budget the rest keep their last update until a later
            // tick: a burst of thousands of frames would delay every
            // assignment and message behind it on the server's core.
            if budget == 0 {
                return false;
            }
            budget -= 1;
            c.last_sent = Some((position, wait, now));
            c.last_sent_tick = ticks;
            out.push(Effect::ToCitizen(conn, CitizenEvent::QueueUpdate { position, estimated_wait_seconds: wait }));
            true
        };
        for (position, id) in self.queue.head(HEAD_TOLD_EVERY_TICK) {
            consider(position, id);
        }
        let share = self.queue.len().div_ceil(ticks_per_update.max(1) as usize);
        self.queue.sweep(share, consider);
    }

    /// What every console shows of the queue, and who can take a transfer.
    /// The colleague list is O(advisors) per tick, sent only when it changed.
    fn queue_summary(&self, now: DateTime<Utc>) -> QueueSummary {
        let max = self.settings.max_chats_per_advisor;
        let mut available: Vec<ColleagueView> = self
            .advisors
            .values()
            .filter(|a| a.conn.is_some() && a.status == AdvisorStatus::Available && a.active < max)
            .map(|a| ColleagueView {
                username: a.profile.username.clone(),
                display_name: a.profile.display_name.to_string(),
                free_slots: max - a.active,
            })
            .collect();
        available.sort_by(|a, b| a.display_name.cmp(&b.display_name).then_with(|| a.username.cmp(&b.username)));
        QueueSummary { waiting: self.queue.len(), longest_wait_seconds: self.longest_wait(now), available }
    }

    fn send_queue_summary(&mut self, now: DateTime<Utc>, out: &mut Vec<Effect>) {
        let summary = self.queue_summary(now);
        if self.last_queue_summary.as_ref() == Some(&summary) {
            return;
        }
        self.last_queue_summary = Some(summary.clone());
        self.last_summary_tick = Some(self.ticks);
        for a in self.advisors.values() {
            if let Some(conn) = a.conn {
                out.push(Effect::ToAdvisor(conn, AdvisorEvent::Queue(summary.clone())));
            }
        }
    }

    fn shutdown(&mut self, out: &mut Vec<Effect>) {
        self.shutting_down = true;
        let message = "The server is restarting. Your chat is saved; reconnect in a moment.".to_string();
        for conn in self.citizen_conns.keys() {
            out.push(Effect::ToCitizen(*conn, CitizenEvent::ServerShutdown { message: message.clone() }));
            out.push(Effect::Close(*conn, CloseReason::Shutdown));
        }
        for conn in self.advisor_conns.keys() {
            out.push(Effect::ToAdvisor(*conn, AdvisorEvent::ServerShutdown { message: message.clone() }));
            out.push(Effect::Close(*conn, CloseReason::Shutdown));
        }
    }
}

/// See [`ChatCore::estimate_wait`].
#[derive(Debug, Clone, Copy)]
struct WaitModel {
    capacity: u32,
    free: u32,
    mean_handle_seconds: f64,
}

impl WaitModel {
    fn estimate(self, position: usize) -> Option<u64> {
        if self.capacity == 0 {
            return None;
        }
        if position <= self.free as usize {
            return Some(0);
        }
        // Each slot frees up about once per mean handling time.
        let ahead = (position - self.free as usize) as f64;
        Some((ahead * self.mean_handle_seconds / f64::from(self.capacity)).ceil() as u64)
    }
}

/// What a message counts against its conversation's limits: its text and
/// a fixed allowance for what is kept beside it, so that a chat of many
/// tiny messages is bounded as well as one of a few long ones.
fn charge(text: &str) -> usize {
    text.len() + Limits::MESSAGE_ALLOWANCE
}

fn ack(conn: ConnId, sender: Sender, id: ConversationId, cid: Arc<str>, seq: u64, at: DateTime<Utc>) -> Effect {
    match sender {
        Sender::Advisor => Effect::ToAdvisor(
            conn,
            AdvisorEvent::Ack { conversation_id: id.to_string(), client_msg_id: cid, seq, sent_at: at },
        ),
        _ => Effect::ToCitizen(conn, CitizenEvent::Ack { client_msg_id: cid, seq, sent_at: at }),
    }
}

/// Trims an optional text field; empty becomes `None`; too long is an error.
fn optional_text(value: Option<String>, max_chars: usize, name: &str) -> Result<Option<Arc<str>>, String> {
    let Some(value) = value else { return Ok(None) };
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    if trimmed.chars().count() > max_chars {
        return Err(format!("{name} is longer than {max_chars} characters"));
    }
    if trimmed.chars().any(|c| c.is_control()) {
        return Err(format!("{name} must not contain control characters"));
    }
    Ok(Some(trimmed.into()))
}

/// 128 random bits as 32 hex digits.
pub fn random_token() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What is kept of a token (a session's, a citizen's resume token): its
/// SHA-256 in hex, so a copy of the database lets nobody act with it.
pub fn token_hash(token: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}
