//! A retried message, on the chat core directly (no I/O, time passed in): the
//! same client id and text is one message however often and whenever it
//! comes (on its way, durable, after one that failed to store), a different
//! text under a used id is refused, and a long chat finds every id.

mod common;

use chrono::{DateTime, TimeDelta, Utc};

use kommunchat::domain::chat::{ChatCore, Committed, Effect, Input, StoreOp};
use kommunchat::protocol::ws::{CitizenEvent, CitizenRequest, ErrorCode};

const CITIZEN: u64 = 1;

struct Chat {
    core: ChatCore,
    now: DateTime<Utc>,
    /// Writes the core asked for and storage has not answered yet.
    writes: Vec<StoreOp>,
}

impl Chat {
    /// A citizen in the queue (messages are allowed there too), on a Monday morning.
    fn new() -> Chat {
        let mut settings = common::core_settings();
        settings.max_queued_bytes = settings.max_conversation_bytes;
        let mut chat = Chat {
            core: ChatCore::new(settings),
            now: DateTime::parse_from_rfc3339("2026-11-30T10:00:00+01:00").expect("time").to_utc(),
            writes: Vec::new(),
        };
        chat.input(Input::CitizenConnected { conn: CITIZEN });
        let start = CitizenRequest::Start { display_name: None, topic: None, language: None };
        let events = chat.input(Input::Citizen { conn: CITIZEN, request: start });
        assert!(events.iter().any(|e| matches!(e, CitizenEvent::Queued { .. })), "{events:?}");
        chat.commit_all(|_| true);
        chat
    }

    /// What the citizen is sent; the writes are kept for `commit_all`.
    fn input(&mut self, input: Input) -> Vec<CitizenEvent> {
        let mut out = Vec::new();
        self.core.handle(self.now, input, &mut out);
        self.now += TimeDelta::milliseconds(10);
        let mut events = Vec::new();
        for effect in out {
            match effect {
                Effect::ToCitizen(CITIZEN, event) => events.push(event),
                Effect::Store(op) => self.writes.push(op),
                _ => {}
            }
        }
        events
    }

    fn send(&mut self, id: &str, text: &str) -> Vec<CitizenEvent> {
        let request = CitizenRequest::Message { client_msg_id: id.into(), text: text.into() };
        self.input(Input::Citizen { conn: CITIZEN, request })
    }

    /// Storage answers every waiting write: stored if `stored(seq)` says so for
    /// a message, failed if not.
    fn commit_all(&mut self, stored: impl Fn(u64) -> bool) -> Vec<CitizenEvent> {
        let results = self
            .writes
            .drain(..)
            .map(|op| match op {
                StoreOp::Message { conversation, seq, .. } if stored(seq) => Committed::Message { conversation, seq },
                StoreOp::Message { conversation, seq, .. } => Committed::MessageFailed { conversation, seq },
                _ => Committed::Done,
            })
            .collect();
        self.input(Input::Committed(results))
    }

    /// The messages written so far (every `StoreOp::Message` is one message).
    fn messages_written(&self) -> usize {
        self.writes.iter().filter(|op| matches!(op, StoreOp::Message { .. })).count()
    }
}

fn acks(events: &[CitizenEvent]) -> Vec<(String, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            CitizenEvent::Ack { client_msg_id, seq, .. } => Some((client_msg_id.to_string(), *seq)),
            _ => None,
        })
        .collect()
}

fn error(events: &[CitizenEvent]) -> Option<ErrorCode> {
    events.iter().find_map(|e| match e {
        CitizenEvent::Error { code, .. } => Some(*code),
        _ => None,
    })
}

#[test]
fn a_retry_on_its_way_is_answered_once_it_is_durable() {
    let mut chat = Chat::new();
    assert!(chat.send("m1", "hej").is_empty(), "no ack before it is durable");
    // Retried before storage answered: nothing new to write, nothing said yet.
    assert!(chat.send("m1", "hej").is_empty());
    assert_eq!(chat.messages_written(), 1);
    // A different text under the same id, even now, is refused.
    assert_eq!(error(&chat.send("m1", "något annat")), Some(ErrorCode::Conflict));
    assert_eq!(chat.messages_written(), 1);
    let first = acks(&chat.commit_all(|_| true));
    assert_eq!(first.len(), 1);
    // Retried once durable: the same ack again, and still one message.
    assert_eq!(acks(&chat.send("m1", "hej")), first);
    assert_eq!(chat.messages_written(), 0);
    assert_eq!(error(&chat.send("m1", "något annat")), Some(ErrorCode::Conflict));
}

#[test]
fn an_id_whose_message_failed_to_store_can_be_sent_again() {
    let mut chat = Chat::new();
    chat.send("m1", "hej");
    let events = chat.commit_all(|_| false);
    assert_eq!(error(&events), Some(ErrorCode::StorageFailed));
    // The id is free again: the retry is a new message with the next seq, and
    // the text may even differ (nothing was kept under the id).
    chat.send("m1", "hej igen");
    assert_eq!(chat.messages_written(), 1);
    let acked = acks(&chat.commit_all(|_| true));
    assert_eq!(acked.len(), 1);
    assert_eq!(acks(&chat.send("m1", "hej igen")), acked);
}

#[test]
fn a_long_chat_with_a_gap_finds_every_id() {
    let mut chat = Chat::new();
    let mut seqs = Vec::new();
    for n in 0..600 {
        chat.send(&format!("m{n}"), &format!("meddelande {n}"));
        // Every hundredth fails to store: a gap in the chat's numbering.
        let acked = acks(&chat.commit_all(|_| n % 100 != 50));
        seqs.push(acked.first().map(|(_, seq)| *seq));
    }
    assert_eq!(seqs.iter().filter(|s| s.is_none()).count(), 6);
    for (n, seq) in seqs.iter().enumerate() {
        let events = chat.send(&format!("m{n}"), &format!("meddelande {n}"));
        match seq {
            Some(seq) => assert_eq!(acks(&events), [(format!("m{n}"), *seq)], "message {n}"),
            None => assert!(events.is_empty(), "message {n} is new, on its way"),
        }
        // A different text is refused either way (a resent one on its way holds the id too).
        assert_eq!(error(&chat.send(&format!("m{n}"), "fel text")), Some(ErrorCode::Conflict), "message {n}");
    }
    assert_eq!(chat.messages_written(), 6, "only the six that had failed are written again");
}
