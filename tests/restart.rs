//! A restart (a deploy, a crash) loses no chat: the next start takes up every
//! open conversation again. The server tests run on a real server on port 0
//! with real WebSocket clients, on SQLite and on PostgreSQL; the grace-period
//! tests drive the chat core directly (no I/O, time passed in).

#[macro_use]
mod common;

use chrono::{DateTime, TimeDelta, Utc};
use common::{Backend, Client, TestServer, cid, say};
use serde_json::{Value, json};

use kommunchat::domain::chat::{AdvisorProfile, ChatCore, Effect, Input, RestoredConversation, StoreOp, token_hash};
use kommunchat::protocol::ws::{CitizenEvent, CitizenRequest, EndReason, MessageView, Sender};

on_both_backends!(
    queue_and_chats_survive_a_restart,
    a_chat_in_wrap_up_goes_back_to_its_advisor,
    a_wrap_up_of_a_removed_advisor_is_closed_as_it_stands,
    an_advisors_status_survives_a_restart_until_the_grace_period_ends,
    a_chat_that_ended_before_a_restart_can_still_be_rated
);

/// A new connection that resumes with `token`; returns the client and every
/// frame up to and including `resumed`.
async fn resume(server: &TestServer, token: &str, last_seq: u64) -> (Client, Value) {
    let mut c = server.citizen().await;
    c.expect("welcome").await;
    c.send(json!({"type": "resume", "token": token, "last_seq": last_seq})).await;
    let resumed = c.expect("resumed").await;
    (c, resumed)
}

async fn queue_and_chats_survive_a_restart(backend: Backend) {
    let mut server = TestServer::start_with(backend, |c| c.chat.max_chats_per_advisor = 1).await;
    let mut anna = server.advisor("anna", true).await;
    let anna_cookie = anna.cookie.clone().expect("cookie");

    // Ada is chatting with Anna; Bo and Cy wait behind her.
    let (mut ada, ada_queued) = server.queued_citizen("Ada").await;
    let ada_token = ada_queued["resume_token"].as_str().expect("token").to_owned();
    ada.expect("assigned").await;
    let chat = anna.expect("assigned").await;
    let conversation = cid(&chat["chat"]);
    let asked =
        say(&mut ada, json!({"type": "message", "client_msg_id": "a1", "text": "Hur söker jag bygglov?"})).await;
    let answered = say(
        &mut anna,
        json!({"type": "message", "conversation_id": conversation, "client_msg_id": "r1", "text": "Via e-tjänsten."}),
    )
    .await;
    assert_eq!((asked, answered), (1, 2));
    let (_bo, bo_queued) = server.queued_citizen("Bo").await;
    let (_cy, cy_queued) = server.queued_citizen("Cy").await;
    assert_eq!((bo_queued["position"].as_u64(), cy_queued["position"].as_u64()), (Some(1), Some(2)));

    // A deploy: everyone is told, and the chat is saved.
    server.restart().await;
    assert!(ada.expect("server_shutdown").await["message"].as_str().is_some_and(|m| m.contains("saved")));

    // The waiting citizens come back in the same order.
    let (_bo, bo_back) = resume(&server, bo_queued["resume_token"].as_str().expect("token"), 0).await;
    let (_cy, cy_back) = resume(&server, cy_queued["resume_token"].as_str().expect("token"), 0).await;
    assert_eq!((bo_back["state"].as_str(), bo_back["position"].as_u64()), (Some("queued"), Some(1)));
    assert_eq!((cy_back["state"].as_str(), cy_back["position"].as_u64()), (Some("queued"), Some(2)));
    assert_eq!(cid(&bo_back), cid(&bo_queued));

    // Ada takes up her chat, with the advisor's name and both messages.
    let (mut ada, ada_back) = resume(&server, &ada_token, 0).await;
    assert_eq!(ada_back["state"], "chatting");
    assert_eq!(ada_back["advisor_name"], "Handläggare anna");
    assert_eq!(ada_back["last_seq"], 2);
    let first = ada.expect("message").await;
    let second = ada.expect("message").await;
    assert_eq!((first["seq"].as_u64(), first["text"].as_str()), (Some(1), Some("Hur söker jag bygglov?")));
    assert_eq!((second["seq"].as_u64(), second["text"].as_str()), (Some(2), Some("Via e-tjänsten.")));
    // A retry of an acknowledged message is recognised, not stored twice.
    let again =
        say(&mut ada, json!({"type": "message", "client_msg_id": "a1", "text": "Hur söker jag bygglov?"})).await;
    assert_eq!(again, 1);

    // Anna's console reconnects with her session: the chat is hers, with its history.
    let mut anna = Client::connect(server.addr, "/ws/advisor", Some(&anna_cookie)).await;
    let welcome = anna.expect("welcome").await;
    let chats = welcome["chats"].as_array().expect("chats");
    assert_eq!(chats.len(), 1);
    assert_eq!(cid(&chats[0]), conversation);
    assert_eq!(chats[0]["messages"].as_array().map(Vec::len), Some(2));
    assert_eq!(chats[0]["citizen_connected"], true);

    // The chat goes on where it was: the next seq is 3.
    let next = say(
        &mut anna,
        json!({"type": "message", "conversation_id": conversation, "client_msg_id": "r2", "text": "Något mer?"}),
    )
    .await;
    assert_eq!(next, 3);
    assert_eq!(ada.expect("message").await["text"], "Något mer?");

    // Anna takes new chats again and ends Ada's: Bo, first in line, is next.
    anna.send(json!({"type": "status", "status": "available"})).await;
    anna.expect("status").await;
    anna.send(json!({"type": "end", "conversation_id": conversation, "category": "Övrigt"})).await;
    let ended = ada.expect("ended").await;
    assert!(ended["errand_number"].as_str().is_some());
    let next_chat = anna.expect("assigned").await;
    assert_eq!(cid(&next_chat["chat"]), cid(&bo_queued));

    // The record: one errand, every message once, in order.
    let errand = server.storage().errand(&conversation).await.expect("query").expect("stored");
    assert_eq!(errand.end_reason.as_deref(), Some("advisor_ended"));
    let seqs: Vec<i64> = errand.transcript.iter().map(|l| l.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    server.stop().await;
}

/// Anna's chat with Ada, after one message from Ada and her leaving: in wrap-up.
struct InWrapUp {
    anna_cookie: String,
    /// Ada's `queued` frame (her resume token).
    queued: Value,
    conversation: String,
    /// Ada's `ended` frame (the errand number).
    ended: Value,
}

async fn a_chat_in_wrap_up(server: &TestServer) -> InWrapUp {
    let mut anna = server.advisor("anna", true).await;
    let anna_cookie = anna.cookie.clone().expect("cookie");
    let (mut ada, queued) = server.queued_citizen("Ada").await;
    ada.expect("assigned").await;
    let conversation = cid(&anna.expect("assigned").await["chat"]);
    say(&mut ada, json!({"type": "message", "client_msg_id": "a1", "text": "Tack, det var allt."})).await;
    ada.send(json!({"type": "leave"})).await;
    let ended = ada.expect("ended").await;
    assert_eq!(anna.expect("wrap_up").await["conversation_id"], conversation.as_str());
    InWrapUp { anna_cookie, queued, conversation, ended }
}

async fn a_chat_in_wrap_up_goes_back_to_its_advisor(backend: Backend) {
    let mut server = TestServer::start_with(backend, |_| {}).await;
    let InWrapUp { anna_cookie: cookie, queued, conversation, ended } = a_chat_in_wrap_up(&server).await;

    server.restart().await;

    // Anna's console gets the chat back in wrap-up, with its transcript.
    let mut anna = Client::connect(server.addr, "/ws/advisor", Some(&cookie)).await;
    let welcome = anna.expect("welcome").await;
    let chats = welcome["chats"].as_array().expect("chats");
    assert_eq!(chats.len(), 1);
    assert_eq!((cid(&chats[0]), chats[0]["state"].as_str()), (conversation.clone(), Some("wrap_up")));
    assert_eq!(chats[0]["messages"].as_array().map(Vec::len), Some(1));
    // Ada, coming back, learns how it ended.
    let mut back = server.citizen().await;
    back.expect("welcome").await;
    back.send(json!({"type": "resume", "token": queued["resume_token"], "last_seq": 1})).await;
    let told = back.expect("ended").await;
    assert_eq!(told["errand_number"], ended["errand_number"]);

    // Anna classifies it; the errand has the category, and it is not taken up again.
    anna.send(json!({"type": "end", "conversation_id": conversation, "category": "Övrigt", "summary": "Klart."})).await;
    anna.expect("chat_ended").await;
    common::eventually("the category is stored", || async {
        let errand = server.storage().errand(&conversation).await.expect("query").expect("row");
        errand.category.as_deref() == Some("Övrigt")
    })
    .await;
    assert!(server.storage().open_conversations().await.expect("read").is_empty());
    server.stop().await;
}

/// Nobody can finish a wrap-up once its advisor's account is removed: the
/// errand is closed as it stands, and no start takes it up again.
async fn a_wrap_up_of_a_removed_advisor_is_closed_as_it_stands(backend: Backend) {
    let mut server = TestServer::start_with(backend, |_| {}).await;
    let InWrapUp { conversation, ended, .. } = a_chat_in_wrap_up(&server).await;
    assert_eq!(server.storage().open_conversations().await.expect("read").len(), 1, "in wrap-up before");

    assert!(server.storage().remove_user("anna").await.expect("remove"));
    assert!(server.storage().open_conversations().await.expect("read").is_empty());
    server.restart().await;
    let errand = server.storage().errand(&conversation).await.expect("query").expect("the errand is kept");
    assert_eq!(errand.errand_number.as_deref(), ended["errand_number"].as_str());
    assert_eq!(errand.category, None);
    assert_eq!(errand.transcript.len(), 1, "the transcript is kept");
    assert!(server.storage().open_conversations().await.expect("read").is_empty());
    server.stop().await;
}

/// The console need not say again that its advisor is available: the
/// status comes back as after a dropped connection, within the grace
/// period, and an advisor gone longer starts `away`.
async fn an_advisors_status_survives_a_restart_until_the_grace_period_ends(backend: Backend) {
    let mut server = TestServer::start_with(backend, |_| {}).await;
    let anna = server.advisor("anna", true).await;
    let anna_cookie = anna.cookie.clone().expect("cookie");
    let mut bo = server.advisor("bo", true).await;
    let bo_cookie = bo.cookie.clone().expect("cookie");
    bo.send(json!({"type": "status", "status": "away"})).await;
    assert_eq!(bo.expect("status").await["status"], "away");
    drop((anna, bo));

    server.restart().await;
    let mut anna = Client::connect(server.addr, "/ws/advisor", Some(&anna_cookie)).await;
    assert_eq!(anna.expect("welcome").await["status"], "available");
    let mut bo = Client::connect(server.addr, "/ws/advisor", Some(&bo_cookie)).await;
    assert_eq!(bo.expect("welcome").await["status"], "away");
    // Available indeed: the next citizen is hers, without a word from her console.
    let (mut ada, _) = server.queued_citizen("Ada").await;
    ada.expect("assigned").await;
    anna.expect("assigned").await;
    ada.send(json!({"type": "leave"})).await;
    ada.expect("ended").await;
    anna.expect("wrap_up").await;
    drop((anna, bo, ada));

    // Restarted again, and Anna stays away past the grace period.
    server.restart().await;
    let grace = TimeDelta::seconds(server.config.chat.advisor_grace_seconds as i64);
    server.clock.advance(grace + TimeDelta::seconds(1));
    common::eventually("Anna's status is stored as away", || async {
        server.storage().available_advisors().await.expect("read").is_empty()
    })
    .await;
    server.restart().await;
    let mut anna = Client::connect(server.addr, "/ws/advisor", Some(&anna_cookie)).await;
    assert_eq!(anna.expect("welcome").await["status"], "away");
    server.stop().await;
}

/// The rating window outlives a restart: a page reloaded after a deploy can
/// still rate the chat that ended just before it (a chat without an advisor
/// has nothing to rate, and its token is forgotten).
async fn a_chat_that_ended_before_a_restart_can_still_be_rated(backend: Backend) {
    let mut server = TestServer::start_with(backend, |c| c.chat.rating_window_minutes = 30).await;
    let mut anna = server.advisor("anna", true).await;
    let (mut ada, queued) = server.queued_citizen("Ada").await;
    let ada_token = queued["resume_token"].as_str().expect("token").to_owned();
    let chat = anna.expect("assigned").await;
    ada.expect("assigned").await;
    anna.send(json!({"type": "end", "conversation_id": cid(&chat["chat"]), "category": "Övrigt"})).await;
    anna.expect("chat_ended").await;
    let ended = ada.expect("ended").await;
    assert_eq!(ended["can_rate"], true);
    // Bo leaves the queue before anyone answered: no errand, nothing to rate.
    anna.send(json!({"type": "status", "status": "away"})).await;
    anna.expect("status").await;
    let (mut bo, queued) = server.queued_citizen("Bo").await;
    let bo_token = queued["resume_token"].as_str().expect("token").to_owned();
    bo.send(json!({"type": "leave"})).await;
    assert_eq!(bo.expect("ended").await["can_rate"], false);
    drop((anna, ada, bo));

    server.clock.advance(TimeDelta::minutes(5));
    server.restart().await;
    let mut back = server.citizen().await;
    back.expect("welcome").await;
    back.send(json!({"type": "resume", "token": ada_token, "last_seq": 0})).await;
    let again = back.expect("ended").await;
    assert_eq!(
        (&again["errand_number"], &again["reason"], &again["can_rate"]),
        (&ended["errand_number"], &ended["reason"], &json!(true))
    );
    back.send(json!({"type": "rate", "score": 5})).await;
    assert_eq!(back.expect("rated").await["score"], 5);
    let mut bo = server.citizen().await;
    bo.expect("welcome").await;
    bo.send(json!({"type": "resume", "token": bo_token, "last_seq": 0})).await;
    assert_eq!(bo.expect("error").await["code"], "not_found");

    // What is left of the window, counted from the end and not from the restart.
    server.clock.advance(TimeDelta::minutes(26));
    common::eventually("the ended token expires 30 minutes after the end", || async {
        server.resume_is_not_found(&ada_token).await
    })
    .await;
    server.stop().await;
}

/// A console that reconnects to long chats gets them back: a `welcome` of
/// megabytes is written (it used to exceed the socket's write cap and drop
/// the connection, over and over).
#[tokio::test]
async fn a_welcome_with_megabytes_of_history_reaches_the_console() {
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.security.messages_per_second = 10_000;
        c.security.message_burst = 10_000;
        c.chat.max_conversation_bytes = 4 * 1024 * 1024;
    })
    .await;
    let mut anna = server.advisor("anna", true).await;
    let cookie = anna.cookie.clone().expect("cookie");
    let (mut ada, _) = server.queued_citizen("Ada").await;
    ada.expect("assigned").await;
    anna.expect("assigned").await;
    let long = "å".repeat(5000); // 10,000 bytes as UTF-8
    for n in 0..150 {
        say(&mut ada, json!({"type": "message", "client_msg_id": format!("m{n}"), "text": long})).await;
    }
    drop(anna);
    let mut anna = Client::connect(server.addr, "/ws/advisor", Some(&cookie)).await;
    let welcome = anna.expect("welcome").await;
    let chats = welcome["chats"].as_array().expect("chats");
    assert_eq!(chats[0]["messages"].as_array().map(Vec::len), Some(150));
    assert!(welcome.to_string().len() > 1024 * 1024);
}

#[tokio::test]
async fn the_queue_keeps_its_order_over_restarts_with_a_chat_sent_back_in_front() {
    let mut server = TestServer::start_with(Backend::Sqlite, |c| c.chat.max_chats_per_advisor = 1).await;
    let mut anna = server.advisor("anna", true).await;
    let (mut ada, ada_queued) = server.queued_citizen("Ada").await;
    ada.expect("assigned").await;
    let chat = anna.expect("assigned").await;
    let (_bo, bo_queued) = server.queued_citizen("Bo").await;
    // Anna steps away and sends Ada back: she goes in front of Bo.
    anna.send(json!({"type": "status", "status": "away"})).await;
    anna.expect("status").await;
    anna.send(json!({"type": "transfer", "conversation_id": cid(&chat["chat"]), "to": null})).await;
    assert_eq!(ada.expect("queued").await["position"], 1);

    server.restart().await;
    let token = |queued: &Value| queued["resume_token"].as_str().expect("token").to_owned();
    let (_ada, back) = resume(&server, &token(&ada_queued), 0).await;
    assert_eq!((back["state"].as_str(), back["position"].as_u64()), (Some("queued"), Some(1)));
    let (_bo, back) = resume(&server, &token(&bo_queued), 0).await;
    assert_eq!(back["position"], 2);
    // A newcomer goes behind them, and a second restart keeps all three in place.
    let (_cy, cy_queued) = server.queued_citizen("Cy").await;
    assert_eq!(cy_queued["position"], 3);
    server.restart().await;
    for (queued, position) in [(&ada_queued, 1), (&bo_queued, 2), (&cy_queued, 3)] {
        let (_c, back) = resume(&server, &token(queued), 0).await;
        assert_eq!(back["position"], position, "{}", queued["conversation_id"]);
    }
    server.stop().await;
}

#[tokio::test]
async fn wait_estimates_go_on_from_the_handling_times_before_the_restart() {
    let mut server = TestServer::start_with(Backend::Sqlite, |c| {
        c.chat.max_chats_per_advisor = 1;
        c.chat.assumed_handle_seconds = 300;
    })
    .await;
    let mut anna = server.advisor("anna", true).await;
    let cookie = anna.cookie.clone().expect("cookie");
    // Two quick chats of a minute each teach the estimate that chats are short.
    for name in ["Ada", "Bo"] {
        let (mut citizen, _) = server.queued_citizen(name).await;
        citizen.expect("assigned").await;
        let chat = anna.expect("assigned").await;
        server.clock.advance(TimeDelta::seconds(60));
        anna.send(json!({"type": "end", "conversation_id": cid(&chat["chat"]), "category": "Övrigt"})).await;
        citizen.expect("ended").await;
    }
    let (mut cy, _) = server.queued_citizen("Cy").await;
    cy.expect("assigned").await;
    let (_di, di_queued) = server.queued_citizen("Di").await;
    let before = di_queued["estimated_wait_seconds"].as_u64().expect("an estimate");
    assert!(before < 300, "learned from the short chats ({before} s)");

    server.restart().await;
    let mut anna = Client::connect(server.addr, "/ws/advisor", Some(&cookie)).await;
    anna.expect("welcome").await;
    anna.send(json!({"type": "status", "status": "available"})).await;
    anna.expect("status").await;
    let (_di, back) = resume(&server, di_queued["resume_token"].as_str().expect("token"), 0).await;
    assert_eq!(back["position"], 1);
    assert_eq!(back["estimated_wait_seconds"].as_u64(), Some(before), "the same estimate as before the restart");
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_token_after_a_restart_is_not_found() {
    let mut server = TestServer::start().await;
    let (_ada, _queued) = server.queued_citizen("Ada").await;
    server.restart().await;
    let mut c = server.citizen().await;
    c.expect("welcome").await;
    c.send(json!({"type": "resume", "token": "0".repeat(32), "last_seq": 0})).await;
    assert_eq!(c.expect("error").await["code"], "not_found");
    server.stop().await;
}

// ------------------------------------------------------------ the core alone

fn monday() -> DateTime<Utc> {
    common::monday_morning()
}

fn anna() -> AdvisorProfile {
    AdvisorProfile { id: 7, username: "anna".into(), display_name: "Anna".into(), role: "advisor".into() }
}

fn restored(token: &str, advisor: Option<AdvisorProfile>, messages: Vec<MessageView>) -> RestoredConversation {
    RestoredConversation {
        queue_place: advisor.is_none().then_some(0),
        wrap_up: None,
        id: uuid::Uuid::new_v4(),
        token_hash: token_hash(token),
        citizen_name: Some("Ada".into()),
        topic: None,
        language: None,
        queued_at: monday() - TimeDelta::minutes(5),
        first_assigned_at: advisor.as_ref().map(|_| monday() - TimeDelta::minutes(4)),
        errand_number: advisor.as_ref().map(|_| "KC-2026-000001".into()),
        advisor,
        messages,
    }
}

fn message(seq: u64, sender: Sender, client_msg_id: &str, text: &str) -> MessageView {
    MessageView {
        seq,
        sender,
        sender_name: None,
        text: text.into(),
        sent_at: monday() - TimeDelta::minutes(3),
        client_msg_id: Some(client_msg_id.into()),
        personnummer: false,
    }
}

fn stored_ops(out: &[Effect]) -> Vec<&StoreOp> {
    out.iter()
        .filter_map(|e| match e {
            Effect::Store(op) => Some(op),
            _ => None,
        })
        .collect()
}

#[test]
fn a_restored_citizen_who_never_comes_back_leaves_after_the_grace_period() {
    let settings = common::core_settings();
    let grace = settings.citizen_grace;
    let mut core = ChatCore::new(settings);
    let waiting = restored("token-of-bo", None, vec![]);
    let id = waiting.id;
    core.restore(monday(), vec![waiting]);
    assert_eq!(core.live_figures(monday()).waiting, 1);

    let mut out = Vec::new();
    core.handle(monday() + grace - TimeDelta::seconds(1), Input::Tick, &mut out);
    assert!(stored_ops(&out).is_empty(), "still within the grace period");
    core.handle(monday() + grace, Input::Tick, &mut out);
    assert!(stored_ops(&out).iter().any(|op| matches!(op,
        StoreOp::Ended { conversation, reason: EndReason::CitizenDisconnected, .. } if *conversation == id)));
    assert_eq!(core.live_figures(monday() + grace).waiting, 0);
}

#[test]
fn a_restored_advisor_who_never_comes_back_has_the_chat_sent_to_the_front_of_the_queue() {
    let settings = common::core_settings();
    let grace = settings.advisor_grace;
    let mut core = ChatCore::new(settings);
    let chatting = restored("token-of-ada", Some(anna()), vec![message(1, Sender::Citizen, "a1", "Hej")]);
    let id = chatting.id;
    core.restore(monday(), vec![restored("token-of-bo", None, vec![]), chatting]);
    let mut out = Vec::new();
    // Ada is back in time; Anna is not.
    core.handle(monday(), Input::CitizenConnected { conn: 1 }, &mut out);
    let resume = CitizenRequest::Resume { token: "token-of-ada".into(), last_seq: 1 };
    core.handle(monday(), Input::Citizen { conn: 1, request: resume }, &mut out);
    assert!(out.iter().any(|e| matches!(e, Effect::ToCitizen(1, CitizenEvent::Resumed { .. }))));
    out.clear();
    core.handle(monday() + grace, Input::Tick, &mut out);
    assert!(stored_ops(&out).iter().any(|op| matches!(op,
        StoreOp::Requeued { conversation, advisor: 7, .. } if *conversation == id)));
    // First in line again, ahead of the one who was waiting, and told so with her token.
    let told = out.iter().find_map(|e| match e {
        Effect::ToCitizen(1, CitizenEvent::Queued { position, resume_token, .. }) => Some((*position, resume_token)),
        _ => None,
    });
    assert_eq!(told, Some((1, &"token-of-ada".to_owned())));
}

#[test]
fn a_restored_wrap_up_whose_advisor_never_returns_is_closed_as_it_stands() {
    let settings = common::core_settings();
    let grace = settings.advisor_grace;
    let mut core = ChatCore::new(settings);
    let mut wrap_up = restored("token-of-ada", Some(anna()), vec![message(1, Sender::Citizen, "a1", "Hej då")]);
    wrap_up.wrap_up = Some(EndReason::CitizenLeft);
    let id = wrap_up.id;
    core.restore(monday(), vec![wrap_up]);
    assert_eq!(core.live_figures(monday()).active_chats, 0, "a wrap-up is not an active chat");
    let mut out = Vec::new();
    core.handle(monday() + grace, Input::Tick, &mut out);
    assert!(stored_ops(&out).iter().any(|op| matches!(op,
        StoreOp::Classified { conversation, category: None, .. } if *conversation == id)));
}

#[test]
fn a_restored_chat_continues_its_numbering_and_knows_its_retries() {
    let mut core = ChatCore::new(common::core_settings());
    let chatting = restored(
        "token-of-ada",
        Some(anna()),
        vec![message(1, Sender::Citizen, "a1", "Hej"), message(2, Sender::Advisor, "r1", "Hej Ada")],
    );
    let id = chatting.id;
    core.restore(monday(), vec![chatting]);
    let mut out = Vec::new();
    core.handle(monday(), Input::CitizenConnected { conn: 1 }, &mut out);
    let resume = CitizenRequest::Resume { token: "token-of-ada".into(), last_seq: 0 };
    core.handle(monday(), Input::Citizen { conn: 1, request: resume }, &mut out);
    let replayed: Vec<u64> = out
        .iter()
        .filter_map(|e| match e {
            Effect::ToCitizen(1, CitizenEvent::Message(m)) => Some(m.seq),
            _ => None,
        })
        .collect();
    assert_eq!(replayed, vec![1, 2]);
    out.clear();

    // The same message again is acknowledged with its stored seq and not stored.
    let retry = CitizenRequest::Message { client_msg_id: "a1".into(), text: "Hej".into() };
    core.handle(monday(), Input::Citizen { conn: 1, request: retry }, &mut out);
    assert!(stored_ops(&out).is_empty());
    assert!(out.iter().any(|e| matches!(e, Effect::ToCitizen(1, CitizenEvent::Ack { seq: 1, .. }))));
    out.clear();

    // A new one gets the next seq.
    let new = CitizenRequest::Message { client_msg_id: "a2".into(), text: "Tack".into() };
    core.handle(monday(), Input::Citizen { conn: 1, request: new }, &mut out);
    assert!(stored_ops(&out).iter().any(|op| matches!(op,
        StoreOp::Message { conversation, seq: 3, .. } if *conversation == id)));
}

#[tokio::test]
async fn a_chat_from_before_resume_tokens_were_kept_is_ended_as_interrupted() {
    let db = common::TestDb::new(Backend::Sqlite).await;
    let storage = kommunchat::storage::Storage::open(&db.url, &Default::default()).await.expect("open");
    // As an earlier version left it: open, with no resume token.
    let pool = sqlx::SqlitePool::connect(&db.url).await.expect("connect");
    sqlx::query("INSERT INTO conversations (id, queued_at) VALUES ('5f0c8a1e-0000-4000-8000-000000000001', 0)")
        .execute(&pool)
        .await
        .expect("insert");
    assert_eq!(storage.end_interrupted(monday()).await.expect("end"), 1);
    assert!(storage.open_conversations().await.expect("read").is_empty());
    let errand = storage.errand("5f0c8a1e-0000-4000-8000-000000000001").await.expect("query").expect("row");
    assert_eq!(errand.end_reason.as_deref(), Some("interrupted"));
}
