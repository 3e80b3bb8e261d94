//! Property tests: no input makes the decoder, the chat core or the text
//! scanners panic. Bounded (proptest's case count), so they run in CI.

mod common;

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;

use kommunchat::domain::chat::{AdvisorProfile, ChatCore, Committed, CoreSettings, Effect, Input, StoreOp};
use kommunchat::domain::{personnummer, release};
use kommunchat::protocol::ws::{self, AdvisorRequest, CitizenRequest};

/// Frames that look like the protocol, with fields of every JSON type.
fn frame() -> impl Strategy<Value = String> {
    let types = prop_oneof![
        Just("start"),
        Just("resume"),
        Just("message"),
        Just("typing"),
        Just("leave"),
        Just("status"),
        Just("end"),
        Just("transfer"),
        Just("sync"),
        Just("__proto__"),
        Just("")
    ];
    let keys = prop_oneof![
        Just("text"),
        Just("client_msg_id"),
        Just("token"),
        Just("last_seq"),
        Just("active"),
        Just("conversation_id"),
        Just("status"),
        Just("to"),
        Just("category"),
        Just("summary"),
        Just("display_name"),
        Just("$ne"),
        Just("type")
    ];
    let value = prop_oneof![
        any::<String>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        any::<bool>().prop_map(serde_json::Value::from),
        Just(serde_json::Value::Null),
        Just(serde_json::json!({"$ne": null})),
        Just(serde_json::json!([1, "x"])),
        Just(serde_json::json!("available")),
    ];
    (types, proptest::collection::vec((keys, value), 0..5)).prop_map(|(t, fields)| {
        let mut object = serde_json::Map::new();
        object.insert("type".into(), t.into());
        for (k, v) in fields {
            object.insert(k.into(), v);
        }
        serde_json::Value::Object(object).to_string()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn the_decoder_never_panics_on_any_text(text in any::<String>()) {
        let _ = ws::decode::<CitizenRequest>(&text);
        let _ = ws::decode::<AdvisorRequest>(&text);
    }

    #[test]
    fn the_decoder_never_panics_on_protocol_like_frames(text in frame()) {
        let _ = ws::decode::<CitizenRequest>(&text);
        let _ = ws::decode::<AdvisorRequest>(&text);
    }

    #[test]
    fn scanners_never_panic_and_masking_removes_every_number(text in "\\PC{0,80}", digits in "[0-9+ -]{0,30}") {
        let mixed = format!("{text}{digits}{text}");
        for found in personnummer::find(&mixed, 2026) {
            prop_assert!(mixed.is_char_boundary(found.start) && mixed.is_char_boundary(found.end));
        }
        let masked = release::mask(&mixed, 2026, release::MaskOptions { emails: true, phones: true });
        prop_assert!(personnummer::find(&masked, 2026).is_empty(), "{masked}");
    }
}

fn settings() -> CoreSettings {
    let mut settings = common::core_settings();
    settings.max_chats_per_advisor = 2;
    settings.max_message_bytes = 100;
    settings
}

#[derive(Debug, Clone)]
enum Step {
    Connect(u8),
    Citizen(u8, String),
    Gone(u8),
    Advisor(u8, String),
    AdvisorConnect(u8),
    AdvisorGone(u8),
    Commit,
    Tick(u16),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u8..6).prop_map(Step::Connect),
        ((0u8..6), frame()).prop_map(|(c, f)| Step::Citizen(c, f)),
        (0u8..6).prop_map(Step::Gone),
        ((0u8..3), frame()).prop_map(|(a, f)| Step::Advisor(a, f)),
        (0u8..3).prop_map(Step::AdvisorConnect),
        (0u8..3).prop_map(Step::AdvisorGone),
        Just(Step::Commit),
        (0u16..400).prop_map(Step::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Any sequence of connections, frames, commits and time never panics the core.
    #[test]
    fn the_chat_core_survives_any_sequence(steps in proptest::collection::vec(step(), 1..80)) {
        let mut core = ChatCore::new(settings());
        let mut now: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-11-30T10:00:00+01:00").expect("t").to_utc();
        let mut pending: Vec<StoreOp> = Vec::new();
        let mut out = Vec::new();
        for step in steps {
            let input = match step {
                Step::Connect(c) => Input::CitizenConnected { conn: u64::from(c) },
                Step::Citizen(c, f) => match ws::decode::<CitizenRequest>(&f) {
                    Ok(request) => Input::Citizen { conn: u64::from(c), request },
                    Err(_) => continue,
                },
                Step::Gone(c) => Input::CitizenGone { conn: u64::from(c) },
                Step::AdvisorConnect(a) => Input::AdvisorConnected {
                    conn: 100 + u64::from(a),
                    advisor: AdvisorProfile { id: i64::from(a), username: format!("a{a}"), display_name: Arc::from("A"), role: "advisor".into() },
                },
                Step::Advisor(a, f) => match ws::decode::<AdvisorRequest>(&f) {
                    Ok(request) => Input::Advisor { conn: 100 + u64::from(a), request },
                    Err(_) => continue,
                },
                Step::AdvisorGone(a) => Input::AdvisorGone { conn: 100 + u64::from(a) },
                Step::Commit => {
                    let results = pending.drain(..).map(|op| match op {
                        StoreOp::Message { conversation, seq, .. } => Committed::Message { conversation, seq },
                        StoreOp::Assigned { conversation, .. } => Committed::Assigned { conversation, errand_number: "2026-000001".into() },
                        StoreOp::Ended { conversation, .. } => Committed::Ended { conversation },
                        StoreOp::Classified { conversation, .. } => Committed::Classified { conversation },
                        _ => Committed::Done,
                    }).collect();
                    Input::Committed(results)
                }
                Step::Tick(seconds) => {
                    now += TimeDelta::seconds(i64::from(seconds));
                    Input::Tick
                }
            };
            core.handle(now, input, &mut out);
            for effect in out.drain(..) {
                if let Effect::Store(op) = effect {
                    pending.push(op);
                }
            }
            // The figures stay consistent with the limits whatever happened.
            let live = core.live_figures(now);
            prop_assert!(live.active_chats <= live.advisors.len() * 2);
            prop_assert!(live.advisors.iter().all(|a| a.active_chats <= 2));
        }
    }
}
