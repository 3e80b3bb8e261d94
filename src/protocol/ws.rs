//! WebSocket frames: JSON text, each an object with a `type`.
//!
//! One enum per direction and role. This module is the only place that knows
//! the JSON field names; the rest of the program builds and matches these
//! types. Every message is documented, with a worked session, in
//! `docs/protocol.md`; keep the two in step.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// Bumped when a change would break an existing client.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest `client_msg_id`, display name, topic, …; see [`Limits`].
#[derive(Debug, Clone, Copy)]
pub struct Limits;

impl Limits {
    pub const CLIENT_MSG_ID: usize = 64;
    pub const DISPLAY_NAME: usize = 80;
    pub const TOPIC: usize = 200;
    pub const LANGUAGE: usize = 16;
    pub const TOKEN: usize = 64;
    pub const CATEGORY: usize = 100;
    pub const SUMMARY: usize = 2000;
    pub const USERNAME: usize = 64;
    /// What each message counts against `chat.max_conversation_bytes` and
    /// `chat.max_queued_bytes` beside its text: it is kept with an id, a
    /// name and a time, so a chat of many tiny messages is bounded too.
    pub const MESSAGE_ALLOWANCE: usize = 256;
}

// ---------------------------------------------------------------- citizen ->

/// What a citizen's client sends on `/ws/citizen`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum CitizenRequest {
    /// Join the queue.
    Start {
        #[serde(default)]
        display_name: Option<String>,
        #[serde(default)]
        topic: Option<String>,
        #[serde(default)]
        language: Option<String>,
    },
    /// Take up an existing conversation after a reconnect.
    Resume {
        token: String,
        last_seq: u64,
    },
    /// A chat message. `client_msg_id` makes retries safe.
    Message {
        client_msg_id: String,
        text: String,
    },
    Typing {
        active: bool,
    },
    /// Leave the queue, or end the chat if it has started.
    Leave {},
    /// How satisfied the citizen is with the chat that just ended, 1–5
    /// (any integer is read, so that a score out of range is `invalid_field`).
    Rate {
        score: i64,
    },
}

// ---------------------------------------------------------------- advisor ->

/// An advisor's own choice of status; `offline` is being disconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdvisorStatus {
    Available,
    Away,
    Offline,
}

impl AdvisorStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AdvisorStatus::Available => "available",
            AdvisorStatus::Away => "away",
            AdvisorStatus::Offline => "offline",
        }
    }
}

/// What an advisor's console sends on `/ws/advisor`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AdvisorRequest {
    /// `available` or `away`.
    Status {
        status: AdvisorStatus,
    },
    Message {
        conversation_id: String,
        client_msg_id: String,
        text: String,
    },
    Typing {
        conversation_id: String,
        active: bool,
    },
    /// Close the chat as an errand.
    End {
        conversation_id: String,
        #[serde(default)]
        category: Option<String>,
        #[serde(default)]
        summary: Option<String>,
    },
    /// To another advisor by username, or back to the front of the queue when `to` is null.
    Transfer {
        conversation_id: String,
        #[serde(default)]
        to: Option<String>,
    },
    /// Ask again for the messages after `last_seq` in one chat.
    Sync {
        conversation_id: String,
        last_seq: u64,
    },
}

// ---------------------------------------------------------------- shared parts

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sender {
    Citizen,
    Advisor,
    System,
}

impl Sender {
    pub fn as_str(self) -> &'static str {
        match self {
            Sender::Citizen => "citizen",
            Sender::Advisor => "advisor",
            Sender::System => "system",
        }
    }

    pub fn parse(s: &str) -> Option<Sender> {
        match s {
            "citizen" => Some(Sender::Citizen),
            "advisor" => Some(Sender::Advisor),
            "system" => Some(Sender::System),
            _ => None,
        }
    }
}

/// A stored chat message as both sides see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageView {
    pub seq: u64,
    pub sender: Sender,
    /// The advisor's display name for advisor messages; the citizen's if given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender_name: Option<Arc<str>>,
    pub text: Arc<str>,
    #[serde(serialize_with = "rfc3339")]
    pub sent_at: DateTime<Utc>,
    /// Present on the sender's own messages, so a client can match its retries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<Arc<str>>,
    /// True when the text holds a personnummer or samordningsnummer (the
    /// errand is flagged for secrecy review). Only sent to advisors.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub personnummer: bool,
}

/// Contact details and the public-record notice shown before a chat starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NoticeView {
    pub organisation: String,
    pub public_record_notice: String,
    pub privacy_policy_url: String,
    pub phone: String,
    pub visiting_address: String,
}

/// Opening status as a citizen sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpeningView {
    pub open: bool,
    pub reason: String,
    pub reason_code: &'static str,
    #[serde(serialize_with = "rfc3339_opt")]
    pub next_opening: Option<DateTime<Utc>>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub next_closing: Option<DateTime<Utc>>,
    /// Whether a `start` now would be admitted (closed, last admission, or a long queue may refuse it).
    pub accepting: bool,
}

/// Stable error codes; see `docs/protocol.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, unknown `type`, missing or wrongly typed field.
    BadRequest,
    /// A field is longer than its limit, or empty where text is required.
    InvalidField,
    /// The conversation does not exist or is not yours (the same answer for both).
    NotFound,
    /// Not possible in the current state (e.g. a message before `start`, or after the end).
    InvalidState,
    /// The same `client_msg_id` was used before with different content.
    Conflict,
    /// Transfer target is not online with a free slot.
    TargetUnavailable,
    /// Category not in the configured list.
    InvalidCategory,
    /// Too many messages too fast.
    RateLimited,
    /// The message could not be stored; it was not acknowledged. Send it again.
    StorageFailed,
    /// The server is shutting down and takes no new chats.
    ShuttingDown,
    /// The conversation holds as much as it may (`chat.max_conversation_bytes`),
    /// or, while queued, as much as a waiting citizen may write
    /// (`chat.max_queued_bytes`). The message was not stored.
    ConversationFull,
    /// More chats were started from the citizen's address than
    /// `security.chat_starts_per_address_per_hour` allows. Nothing was queued.
    TooManyChats,
}

// ---------------------------------------------------------------- -> citizen

/// What the server sends to a citizen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CitizenEvent {
    /// First frame on every connection.
    Welcome {
        protocol: u32,
        opening: OpeningView,
        notice: NoticeView,
        max_message_bytes: usize,
    },
    /// `start` was not admitted; nothing was queued.
    Refused {
        code: &'static str,
        message: String,
        #[serde(serialize_with = "rfc3339_opt")]
        next_opening: Option<DateTime<Utc>>,
    },
    /// In the queue. Keep `resume_token` to resume after a disconnect.
    Queued {
        conversation_id: String,
        resume_token: String,
        position: usize,
        estimated_wait_seconds: Option<u64>,
    },
    /// The queue moved.
    QueueUpdate {
        position: usize,
        estimated_wait_seconds: Option<u64>,
    },
    /// An advisor has taken the chat.
    Assigned {
        advisor_name: Arc<str>,
    },
    Message(MessageView),
    /// Your message `client_msg_id` is stored as `seq`.
    Ack {
        client_msg_id: Arc<str>,
        seq: u64,
        #[serde(serialize_with = "rfc3339")]
        sent_at: DateTime<Utc>,
    },
    Typing {
        active: bool,
    },
    /// Answer to `resume`: the state now; messages after `last_seq` follow as `message` frames.
    Resumed {
        conversation_id: String,
        state: ResumedState,
        #[serde(skip_serializing_if = "Option::is_none")]
        position: Option<usize>,
        #[serde(skip_serializing_if = "Option::is_none")]
        estimated_wait_seconds: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        advisor_name: Option<Arc<str>>,
        last_seq: u64,
    },
    /// The chat will be ended for silence unless someone writes.
    InactivityWarning {
        ends_in_seconds: u64,
    },
    /// The chat is over. `errand_number` is set when an advisor took part.
    Ended {
        errand_number: Option<String>,
        reason: EndReason,
        /// The citizen may now `rate` the chat (an advisor took part and the
        /// survey is on).
        can_rate: bool,
    },
    /// The citizen's `rate` is stored.
    Rated {
        score: u8,
    },
    /// The server is going down; reconnect and `resume` in a moment.
    ServerShutdown {
        message: String,
    },
    Error {
        code: ErrorCode,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_msg_id: Option<Arc<str>>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResumedState {
    Queued,
    Chatting,
}

/// Why a chat ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    AdvisorEnded,
    CitizenLeft,
    CitizenDisconnected,
    Inactivity,
    /// The server stopped (or crashed) while the chat was open.
    Interrupted,
    /// Left the queue before an advisor took it.
    Abandoned,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::AdvisorEnded => "advisor_ended",
            EndReason::CitizenLeft => "citizen_left",
            EndReason::CitizenDisconnected => "citizen_disconnected",
            EndReason::Inactivity => "inactivity",
            EndReason::Interrupted => "interrupted",
            EndReason::Abandoned => "abandoned",
        }
    }

    pub fn parse(s: &str) -> Option<EndReason> {
        [
            EndReason::AdvisorEnded,
            EndReason::CitizenLeft,
            EndReason::CitizenDisconnected,
            EndReason::Inactivity,
            EndReason::Interrupted,
            EndReason::Abandoned,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

// ---------------------------------------------------------------- -> advisor

/// One chat in an advisor's console, with its whole history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatView {
    pub conversation_id: String,
    pub citizen_name: Option<Arc<str>>,
    pub topic: Option<Arc<str>>,
    pub language: Option<Arc<str>>,
    #[serde(serialize_with = "rfc3339")]
    pub queued_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    pub assigned_at: DateTime<Utc>,
    pub errand_number: Option<String>,
    pub citizen_connected: bool,
    /// `chatting`, or `wrap_up` once the citizen has gone and the chat waits for `end`.
    pub state: ChatState,
    pub messages: Vec<MessageView>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatState {
    Chatting,
    WrapUp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueSummary {
    pub waiting: usize,
    pub longest_wait_seconds: u64,
    /// Advisors who could take a transfer now (available, with a free slot),
    /// by display name; the console offers them in its transfer field.
    pub available: Vec<ColleagueView>,
}

/// An advisor a chat can be transferred to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ColleagueView {
    pub username: String,
    pub display_name: String,
    pub free_slots: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdvisorProfileView {
    pub username: String,
    pub display_name: String,
    pub role: String,
}

/// Why a chat left an advisor's console without ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RemovedReason {
    Transferred,
    ReturnedToQueue,
}

/// What the server sends to an advisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AdvisorEvent {
    /// First frame: who you are, your status, and every chat you hold.
    Welcome {
        protocol: u32,
        advisor: AdvisorProfileView,
        status: AdvisorStatus,
        max_chats: u32,
        categories: Vec<String>,
        canned_responses: Vec<String>,
        max_message_bytes: usize,
        chats: Vec<ChatView>,
        queue: QueueSummary,
    },
    Status {
        status: AdvisorStatus,
    },
    /// A new chat for you, with its history so far.
    Assigned {
        chat: ChatView,
    },
    Message {
        conversation_id: String,
        #[serde(flatten)]
        message: MessageView,
    },
    Ack {
        conversation_id: String,
        client_msg_id: Arc<str>,
        seq: u64,
        #[serde(serialize_with = "rfc3339")]
        sent_at: DateTime<Utc>,
    },
    Typing {
        conversation_id: String,
        active: bool,
    },
    /// The citizen's connection dropped or came back.
    CitizenPresence {
        conversation_id: String,
        connected: bool,
    },
    InactivityWarning {
        conversation_id: String,
        ends_in_seconds: u64,
    },
    /// The citizen has gone: write the summary and `end` the chat.
    WrapUp {
        conversation_id: String,
        reason: EndReason,
    },
    /// The chat is closed and stored as an errand.
    ChatEnded {
        conversation_id: String,
        errand_number: Option<String>,
        reason: EndReason,
    },
    /// The chat is no longer yours.
    ChatRemoved {
        conversation_id: String,
        reason: RemovedReason,
    },
    /// Answer to `sync`: messages after `last_seq` follow as `message` frames.
    Synced {
        conversation_id: String,
        last_seq: u64,
    },
    Queue(QueueSummary),
    ServerShutdown {
        message: String,
    },
    Error {
        code: ErrorCode,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        conversation_id: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_msg_id: Option<Arc<str>>,
    },
}

// ---------------------------------------------------------------- encoding

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

/// Decodes one text frame. Never panics; every failure is a [`DecodeError`]
/// whose text says what was wrong (but never echoes the frame).
pub fn decode<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, DecodeError> {
    serde_json::from_str(text).map_err(|e| {
        let what = e.to_string();
        // serde_json's message names the field or type; cut off any input excerpt.
        let what = what.split(" at line ").next().unwrap_or("invalid JSON").to_owned();
        DecodeError(what)
    })
}

/// Encodes an outgoing event as one text frame.
pub fn encode<T: Serialize>(event: &T) -> String {
    serde_json::to_string(event).unwrap_or_else(|e| unreachable!("events always serialise: {e}"))
}

fn rfc3339<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

fn rfc3339_opt<S: serde::Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339(t, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_citizen_request() {
        let start: CitizenRequest = decode(r#"{"type":"start","display_name":"Ada"}"#).expect("ok");
        assert_eq!(start, CitizenRequest::Start { display_name: Some("Ada".into()), topic: None, language: None });
        let leave: CitizenRequest = decode(r#"{"type":"leave"}"#).expect("ok");
        assert_eq!(leave, CitizenRequest::Leave {});
        let msg: CitizenRequest = decode(r#"{"type":"message","client_msg_id":"c1","text":"Hej"}"#).expect("ok");
        assert_eq!(msg, CitizenRequest::Message { client_msg_id: "c1".into(), text: "Hej".into() });
    }

    #[test]
    fn refuses_bad_frames_with_a_reason() {
        for bad in [
            "",
            "not json",
            "[]",
            r#"{"text":"no type"}"#,
            r#"{"type":"launch_missiles"}"#,
            r#"{"type":"message","client_msg_id":1,"text":"x"}"#,
            r#"{"type":"message","client_msg_id":"a","text":"x","admin":true}"#,
            r#"{"type":"typing","active":"yes"}"#,
            r#"{"type":"resume","token":"t","last_seq":-1}"#,
            r#"{"type":"start","display_name":{"$ne":null}}"#,
        ] {
            let got: Result<CitizenRequest, _> = decode(bad);
            let err = got.expect_err(bad);
            assert!(!err.0.is_empty());
            assert!(!err.0.contains("line"), "{}", err.0);
        }
    }

    #[test]
    fn encodes_with_type_tags() {
        let json = encode(&CitizenEvent::QueueUpdate { position: 3, estimated_wait_seconds: Some(120) });
        assert_eq!(json, r#"{"type":"queue_update","position":3,"estimated_wait_seconds":120}"#);
        let json = encode(&AdvisorEvent::Message {
            conversation_id: "c".into(),
            message: MessageView {
                seq: 1,
                sender: Sender::Citizen,
                sender_name: None,
                text: "Hej".into(),
                sent_at: DateTime::parse_from_rfc3339("2026-11-27T09:00:00Z").expect("t").to_utc(),
                client_msg_id: None,
                personnummer: false,
            },
        });
        assert_eq!(
            json,
            r#"{"type":"message","conversation_id":"c","seq":1,"sender":"citizen","text":"Hej","sent_at":"2026-11-27T09:00:00.000Z"}"#
        );
    }
}
