//! The chat hub end to end: real server on port 0, real WebSocket clients,
//! each test on SQLite and on PostgreSQL.

#[macro_use]
mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, TimeDelta};
use common::{Backend, Client, TestServer, cid, say};
use serde_json::{Value, json};

on_both_backends!(
    full_flow_from_start_to_errand,
    closed_hours_refuse_and_queue_nothing,
    per_advisor_limit_and_slot_freed_on_end,
    transfer_to_advisor_and_back_to_the_front_of_the_queue,
    consoles_learn_which_colleagues_can_take_a_transfer,
    many_citizens_many_advisors_no_double_or_missed_assignment,
    citizen_resumes_without_loss_or_duplicates,
    advisor_reconnect_sees_chats_with_history,
    retries_are_idempotent_and_conflicts_refused,
    bad_input_gets_error_frames_and_changes_nothing,
    citizen_leaving_the_queue_is_abandoned,
    citizen_leaving_a_chat_lets_the_advisor_wrap_up,
    a_citizen_rates_the_chat_that_ended_and_only_that,
);

async fn start(backend: Backend) -> TestServer {
    TestServer::start_with(backend, |_| {}).await
}

async fn full_flow_from_start_to_errand(backend: Backend) {
    let server = start(backend).await;
    let mut citizen = server.citizen().await;
    let welcome = citizen.expect("welcome").await;
    assert_eq!(welcome["opening"]["open"], true);
    assert_eq!(welcome["opening"]["accepting"], true);
    assert!(welcome["notice"]["public_record_notice"].as_str().expect("notice").contains("allmän handling"));
    assert!(welcome["notice"]["privacy_policy_url"].as_str().expect("url").starts_with("https://"));

    citizen.send(json!({"type": "start", "display_name": "Ada", "topic": "Bygglov", "language": "sv"})).await;
    let queued = citizen.expect("queued").await;
    assert_eq!(queued["position"], 1);
    assert_eq!(queued["estimated_wait_seconds"], Value::Null, "nobody is available yet");
    let conversation = cid(&queued);
    // A message while waiting is stored and shown to the advisor later.
    let s1 = say(
        &mut citizen,
        json!({"type": "message", "client_msg_id": "c1", "text": "Hej, jag har en fråga om bygglov"}),
    )
    .await;
    assert_eq!(s1, 1);

    let mut advisor = server.advisor("anna", true).await;
    let assigned = advisor.expect("assigned").await;
    assert_eq!(assigned["chat"]["conversation_id"], conversation.as_str());
    assert_eq!(assigned["chat"]["citizen_name"], "Ada");
    assert_eq!(assigned["chat"]["topic"], "Bygglov");
    assert_eq!(assigned["chat"]["messages"][0]["text"], "Hej, jag har en fråga om bygglov");
    let to_citizen = citizen.expect("assigned").await;
    assert_eq!(to_citizen["advisor_name"], "Handläggare anna");

    let s2 = say(&mut advisor, json!({"type": "message", "conversation_id": conversation, "client_msg_id": "a1", "text": "Hej Ada! Vad gäller det?"})).await;
    assert_eq!(s2, 2);
    let got = citizen.expect("message").await;
    assert_eq!(
        (got["seq"].as_u64(), got["sender"].as_str(), got["text"].as_str()),
        (Some(2), Some("advisor"), Some("Hej Ada! Vad gäller det?"))
    );
    assert_eq!(got["sender_name"], "Handläggare anna");

    citizen.send(json!({"type": "typing", "active": true})).await;
    let typing = advisor.expect("typing").await;
    assert_eq!(
        (typing["conversation_id"].as_str(), typing["active"].as_bool()),
        (Some(conversation.as_str()), Some(true))
    );
    advisor.send(json!({"type": "typing", "conversation_id": conversation, "active": true})).await;
    assert_eq!(citizen.expect("typing").await["active"], true);

    let s3 = say(
        &mut citizen,
        json!({"type": "message", "client_msg_id": "c2", "text": "Ett <b>altan</b>bygge & \"staket\""}),
    )
    .await;
    assert_eq!(s3, 3);
    let relayed = advisor.expect("message").await;
    assert_eq!(relayed["text"], "Ett <b>altan</b>bygge & \"staket\"", "text is carried verbatim, never interpreted");

    advisor.send(json!({"type": "end", "conversation_id": conversation, "category": "Bygga och bo", "summary": "Frågade om bygglov för altan."})).await;
    let ended = citizen.expect("ended").await;
    assert_eq!(ended["reason"], "advisor_ended");
    let number = ended["errand_number"].as_str().expect("errand number").to_owned();
    assert!(number.starts_with("2026-") && number.len() == 11, "{number}");
    let chat_ended = advisor.expect("chat_ended").await;
    assert_eq!(chat_ended["errand_number"], number.as_str());

    let errand = server.storage().errand(&number).await.expect("query").expect("stored");
    assert_eq!(errand.conversation_id, conversation);
    assert_eq!(errand.category.as_deref(), Some("Bygga och bo"));
    assert_eq!(errand.summary.as_deref(), Some("Frågade om bygglov för altan."));
    assert_eq!(errand.advisor_name.as_deref(), Some("Handläggare anna"));
    assert_eq!(errand.citizen_name.as_deref(), Some("Ada"));
    assert_eq!(errand.end_reason.as_deref(), Some("advisor_ended"));
    assert_eq!(errand.outcome.as_deref(), Some("served"));
    assert!(errand.first_assigned_at.is_some() && errand.ended_at.is_some());
    let lines: Vec<(i64, &str, &str)> =
        errand.transcript.iter().map(|l| (l.seq, l.sender.as_str(), l.body.as_str())).collect();
    assert_eq!(
        lines,
        [
            (1, "citizen", "Hej, jag har en fråga om bygglov"),
            (2, "advisor", "Hej Ada! Vad gäller det?"),
            (3, "citizen", "Ett <b>altan</b>bygge & \"staket\""),
        ]
    );
    assert_eq!(server.storage().queue_event_count("joined").await.expect("count"), 1);
    assert_eq!(server.storage().queue_event_count("assigned").await.expect("count"), 1);

    // The same connection may start a new chat afterwards; it gets the next number.
    citizen.send(json!({"type": "start"})).await;
    citizen.expect("queued").await;
    let again = advisor.expect("assigned").await;
    advisor.send(json!({"type": "end", "conversation_id": cid(&again["chat"]), "category": "Övrigt"})).await;
    let second = citizen.expect("ended").await;
    let n1: u32 = number[5..].parse().expect("number");
    let n2: u32 = second["errand_number"].as_str().expect("n")[5..].parse().expect("number");
    assert_eq!(n2, n1 + 1);
}

async fn closed_hours_refuse_and_queue_nothing(backend: Backend) {
    let server = start(backend).await;
    server.clock.set(DateTime::parse_from_rfc3339("2026-12-24T10:00:00+01:00").expect("t").to_utc());
    let mut citizen = server.citizen().await;
    let welcome = citizen.expect("welcome").await;
    assert_eq!(welcome["opening"]["open"], false);
    assert_eq!(welcome["opening"]["reason"], "julafton");
    assert_eq!(welcome["opening"]["accepting"], false);
    citizen.send(json!({"type": "start", "display_name": "Bo"})).await;
    let refused = citizen.expect("refused").await;
    assert_eq!(refused["code"], "closed");
    assert_eq!(refused["next_opening"], "2026-12-28T07:00:00.000Z");
    // Nothing was queued: a message has no chat to go to.
    citizen.send(json!({"type": "message", "client_msg_id": "x", "text": "hallå?"})).await;
    let error = citizen.expect("error").await;
    assert_eq!(error["code"], "invalid_state");
    common::eventually("the refusal is stored", || async {
        server.storage().queue_event_count("refused").await.expect("count") == 1
    })
    .await;
    assert_eq!(server.storage().queue_event_count("joined").await.expect("count"), 0);
}

async fn per_advisor_limit_and_slot_freed_on_end(backend: Backend) {
    let server = TestServer::start_with(backend, |c| c.chat.max_chats_per_advisor = 2).await;
    let mut advisor = server.advisor("bertil", true).await;
    let mut citizens = Vec::new();
    for name in ["A", "B", "C"] {
        citizens.push(server.queued_citizen(name).await);
    }
    let first = advisor.expect("assigned").await;
    let second = advisor.expect("assigned").await;
    assert_eq!(first["chat"]["citizen_name"], "A");
    assert_eq!(second["chat"]["citizen_name"], "B");
    assert!(advisor.none_of("assigned", Duration::from_millis(400)).await, "a third chat is not given");
    assert_eq!(citizens[2].1["position"], 1, "C waits first in line");
    advisor.send(json!({"type": "end", "conversation_id": cid(&first["chat"]), "category": "Övrigt"})).await;
    let next = advisor.expect("assigned").await;
    assert_eq!(next["chat"]["citizen_name"], "C");
}

async fn transfer_to_advisor_and_back_to_the_front_of_the_queue(backend: Backend) {
    let server = start(backend).await;
    let mut anna = server.advisor("anna", true).await;
    let (mut ada, queued) = server.queued_citizen("Ada").await;
    let conversation = cid(&queued);
    anna.expect("assigned").await;
    ada.expect("assigned").await;
    say(&mut ada, json!({"type": "message", "client_msg_id": "1", "text": "Fråga om skola"})).await;
    anna.expect("message").await;

    let mut bo = server.advisor("bo", true).await;
    anna.send(json!({"type": "transfer", "conversation_id": conversation, "to": "nobody"})).await;
    assert_eq!(anna.expect("error").await["code"], "target_unavailable");
    anna.send(json!({"type": "transfer", "conversation_id": conversation, "to": "bo"})).await;
    let removed = anna.expect("chat_removed").await;
    assert_eq!(removed["reason"], "transferred");
    let taken = bo.expect("assigned").await;
    assert_eq!(taken["chat"]["messages"][0]["text"], "Fråga om skola", "history comes along");
    assert_eq!(ada.expect("assigned").await["advisor_name"], "Handläggare bo");
    // Anna may no longer write in it.
    anna.send(json!({"type": "message", "conversation_id": conversation, "client_msg_id": "z", "text": "hej"})).await;
    assert_eq!(anna.expect("error").await["code"], "not_found");

    // Back to the queue: it goes to the front, ahead of someone who waited longer in line.
    anna.send(json!({"type": "status", "status": "away"})).await;
    anna.expect("status").await;
    let (_cecilia, _) = server.queued_citizen("Cecilia").await; // bo has 2 slots left: taken at once
    bo.expect("assigned").await;
    let (_david, _) = server.queued_citizen("David").await;
    bo.expect("assigned").await;
    let (_erik, q) = server.queued_citizen("Erik").await; // bo is full now (3 of 3)
    assert_eq!(q["position"], 1);
    bo.send(json!({"type": "transfer", "conversation_id": conversation, "to": null})).await;
    assert_eq!(bo.expect("chat_removed").await["reason"], "returned_to_queue");
    let requeued = ada.expect("queued").await;
    assert_eq!(requeued["position"], 1);
    // bo freed a slot, but Ada was returned by bo: Erik gets it, Ada waits for someone else.
    let next = bo.expect("assigned").await;
    assert_eq!(next["chat"]["citizen_name"], "Erik");
    anna.send(json!({"type": "status", "status": "available"})).await;
    let back = anna.expect("assigned").await;
    assert_eq!(back["chat"]["citizen_name"], "Ada");
    assert_eq!(ada.expect("assigned").await["advisor_name"], "Handläggare anna");
}

/// The console's transfer field offers the colleagues who could take a chat now.
async fn consoles_learn_which_colleagues_can_take_a_transfer(backend: Backend) {
    let server = start(backend).await;
    let mut anna = server.advisor("anna", true).await;
    let mut bo = server.advisor("bo", false).await;
    let offered = |frame: &Value, username: &str| {
        frame["available"].as_array().expect("available").iter().find(|c| c["username"] == username).cloned()
    };

    bo.send(json!({"type": "status", "status": "available"})).await;
    bo.expect("status").await;
    let bo_offered = loop {
        let queue = anna.expect("queue").await;
        if let Some(entry) = offered(&queue, "bo") {
            break entry;
        }
    };
    assert_eq!(bo_offered["display_name"], "Handläggare bo");
    assert_eq!(bo_offered["free_slots"], 3);

    // A chat takes one of bo's slots (anna is away, so bo gets it).
    anna.send(json!({"type": "status", "status": "away"})).await;
    anna.expect("status").await;
    let (_ada, _) = server.queued_citizen("Ada").await;
    bo.expect("assigned").await;
    loop {
        let queue = bo.expect("queue").await;
        if offered(&queue, "bo").is_some_and(|b| b["free_slots"] == 2) && offered(&queue, "anna").is_none() {
            break;
        }
    }

    // Away: no longer offered to anyone.
    bo.send(json!({"type": "status", "status": "away"})).await;
    bo.expect("status").await;
    loop {
        let queue = anna.expect("queue").await;
        if offered(&queue, "bo").is_none() {
            break;
        }
    }
}

async fn many_citizens_many_advisors_no_double_or_missed_assignment(backend: Backend) {
    let server = start(backend).await;
    let mut advisors = Vec::new();
    for i in 0..10 {
        advisors.push(server.advisor(&format!("advisor{i}"), true).await);
    }
    // 100 citizens join at once.
    let addr = server.addr;
    let joins = (0..100).map(|i| {
        tokio::spawn(async move {
            let mut c = Client::connect(addr, "/ws/citizen", None).await;
            c.expect("welcome").await;
            c.send(json!({"type": "start", "display_name": format!("citizen{i}")})).await;
            let q = c.expect("queued").await;
            (c, cid(&q))
        })
    });
    let mut citizens = Vec::new();
    for j in joins {
        citizens.push(j.await.expect("join"));
    }
    // Each advisor holds what it is given and ends its oldest chat whenever
    // nothing new has come for a moment, until all 100 are served.
    let mut served: HashMap<String, String> = HashMap::new();
    let mut tasks = Vec::new();
    for (i, mut advisor) in advisors.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut held: Vec<String> = Vec::new();
            let mut max_held = 0;
            let mut idle = 0;
            while idle < 15 {
                match tokio::time::timeout(Duration::from_millis(100), advisor.next()).await {
                    Ok(Some(frame)) if frame["type"] == "assigned" => {
                        idle = 0;
                        let id = cid(&frame["chat"]);
                        mine.push(id.clone());
                        held.push(id);
                        max_held = max_held.max(held.len());
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("advisor {i} disconnected"),
                    Err(_) if !held.is_empty() => {
                        let id = held.remove(0);
                        advisor.send(json!({"type": "end", "conversation_id": id, "category": "Övrigt"})).await;
                    }
                    Err(_) => idle += 1,
                }
            }
            (i, mine, max_held)
        }));
    }
    for t in tasks {
        let (i, mine, max_held) = t.await.expect("advisor task");
        assert!(max_held <= 3, "advisor {i} held {max_held} chats at once");
        for id in mine {
            assert!(served.insert(id.clone(), format!("advisor{i}")).is_none(), "{id} was given to two advisors");
        }
    }
    let all: HashSet<String> = citizens.iter().map(|(_, id)| id.clone()).collect();
    let got: HashSet<String> = served.keys().cloned().collect();
    assert_eq!(got, all, "every citizen reached exactly one advisor");
    for (mut c, _) in citizens {
        c.expect("assigned").await;
        assert!(c.expect("ended").await["errand_number"].is_string());
    }
    assert_eq!(server.storage().queue_event_count("assigned").await.expect("count"), 100);
}

async fn citizen_resumes_without_loss_or_duplicates(backend: Backend) {
    let server = start(backend).await;
    let mut advisor = server.advisor("anna", true).await;
    let (mut citizen, queued) = server.queued_citizen("Ada").await;
    let token = queued["resume_token"].as_str().expect("token").to_owned();
    let conversation = cid(&queued);
    citizen.expect("assigned").await;
    advisor.expect("assigned").await;
    say(&mut citizen, json!({"type": "message", "client_msg_id": "c1", "text": "ett"})).await;
    say(
        &mut advisor,
        json!({"type": "message", "conversation_id": conversation, "client_msg_id": "a1", "text": "två"}),
    )
    .await;
    let seen = citizen.expect("message").await["seq"].as_u64().expect("seq");
    assert_eq!(seen, 2);
    drop(citizen); // the connection drops
    let presence = advisor.expect("citizen_presence").await;
    assert_eq!(presence["connected"], false);
    // Meanwhile the advisor writes twice.
    say(
        &mut advisor,
        json!({"type": "message", "conversation_id": conversation, "client_msg_id": "a2", "text": "tre"}),
    )
    .await;
    say(
        &mut advisor,
        json!({"type": "message", "conversation_id": conversation, "client_msg_id": "a3", "text": "fyra"}),
    )
    .await;

    let mut back = server.citizen().await;
    back.expect("welcome").await;
    // A wrong token is refused like a missing one.
    back.send(json!({"type": "resume", "token": "0".repeat(32), "last_seq": 0})).await;
    assert_eq!(back.expect("error").await["code"], "not_found");
    back.send(json!({"type": "resume", "token": token, "last_seq": seen})).await;
    let resumed = back.expect("resumed").await;
    assert_eq!(resumed["state"], "chatting");
    assert_eq!(resumed["advisor_name"], "Handläggare anna");
    assert_eq!(resumed["last_seq"], 4);
    let m3 = back.expect("message").await;
    let m4 = back.expect("message").await;
    assert_eq!((m3["seq"].as_u64(), m4["seq"].as_u64()), (Some(3), Some(4)));
    assert_eq!((m3["text"].as_str(), m4["text"].as_str()), (Some("tre"), Some("fyra")));
    assert!(back.none_of("message", Duration::from_millis(300)).await, "nothing duplicated");
    assert_eq!(advisor.expect("citizen_presence").await["connected"], true);
    // The chat goes on.
    let s = say(&mut back, json!({"type": "message", "client_msg_id": "c2", "text": "fem"})).await;
    assert_eq!(s, 5);
    assert_eq!(advisor.expect("message").await["text"], "fem");
}

async fn advisor_reconnect_sees_chats_with_history(backend: Backend) {
    let server = start(backend).await;
    let mut advisor = server.advisor("anna", true).await;
    let cookie = advisor.cookie.clone().expect("cookie");
    let (mut citizen, queued) = server.queued_citizen("Ada").await;
    let conversation = cid(&queued);
    advisor.expect("assigned").await;
    citizen.expect("assigned").await;
    say(&mut citizen, json!({"type": "message", "client_msg_id": "c1", "text": "första"})).await;
    advisor.expect("message").await;
    drop(advisor);
    // While the advisor is away the citizen writes; it is stored and acknowledged.
    say(&mut citizen, json!({"type": "message", "client_msg_id": "c2", "text": "andra"})).await;
    // No new chats for an advisor who dropped.
    let (_bo, q) = server.queued_citizen("Bo").await;
    assert_eq!(q["position"], 1);

    let mut again = Client::connect(server.addr, "/ws/advisor", Some(&cookie)).await;
    let welcome = again.expect("welcome").await;
    assert_eq!(welcome["status"], "available", "the status before the drop is restored");
    let chats = welcome["chats"].as_array().expect("chats");
    assert_eq!(chats.len(), 1);
    assert_eq!(chats[0]["conversation_id"], conversation.as_str());
    let texts: Vec<&str> =
        chats[0]["messages"].as_array().expect("m").iter().map(|m| m["text"].as_str().expect("t")).collect();
    assert_eq!(texts, ["första", "andra"]);
    // Back and available: Bo is assigned.
    assert_eq!(again.expect("assigned").await["chat"]["citizen_name"], "Bo");
    // Sync after a seq.
    again.send(json!({"type": "sync", "conversation_id": conversation, "last_seq": 1})).await;
    let frames = again.collect_until("synced").await;
    let synced: Vec<u64> =
        frames.iter().filter(|f| f["type"] == "message").map(|f| f["seq"].as_u64().expect("seq")).collect();
    assert_eq!(synced, [2]);
}

async fn retries_are_idempotent_and_conflicts_refused(backend: Backend) {
    let server = start(backend).await;
    let mut advisor = server.advisor("anna", true).await;
    let (mut citizen, queued) = server.queued_citizen("Ada").await;
    citizen.expect("assigned").await;
    advisor.expect("assigned").await;
    let first = say(&mut citizen, json!({"type": "message", "client_msg_id": "same", "text": "hej"})).await;
    let retry = say(&mut citizen, json!({"type": "message", "client_msg_id": "same", "text": "hej"})).await;
    assert_eq!(first, retry, "the same ack for the same message");
    citizen.send(json!({"type": "message", "client_msg_id": "same", "text": "något annat"})).await;
    let conflict = citizen.expect("error").await;
    assert_eq!(conflict["code"], "conflict");
    assert_eq!(conflict["client_msg_id"], "same");
    // The advisor got it once.
    assert_eq!(advisor.expect("message").await["seq"].as_u64(), Some(first));
    assert!(advisor.none_of("message", Duration::from_millis(300)).await);
    // Also across a reconnect.
    let token = queued["resume_token"].as_str().expect("token").to_owned();
    drop(citizen);
    let mut back = server.citizen().await;
    back.expect("welcome").await;
    back.send(json!({"type": "resume", "token": token, "last_seq": first})).await;
    back.expect("resumed").await;
    let again = say(&mut back, json!({"type": "message", "client_msg_id": "same", "text": "hej"})).await;
    assert_eq!(again, first);
    let transcript = server.storage().transcript(&cid(&queued)).await.expect("transcript");
    assert_eq!(transcript.len(), 1);
}

async fn bad_input_gets_error_frames_and_changes_nothing(backend: Backend) {
    let server = start(backend).await;
    let mut anna = server.advisor("anna", true).await;
    let mut bo = server.advisor("bo", false).await;
    let (mut citizen, queued) = server.queued_citizen("Ada").await;
    let conversation = cid(&queued);
    anna.expect("assigned").await;
    citizen.expect("assigned").await;

    for (frame, code) in [
        ("not json at all", "bad_request"),
        ("{\"type\":\"launch\"}", "bad_request"),
        ("{\"type\":\"message\",\"client_msg_id\":5,\"text\":\"x\"}", "bad_request"),
        ("{\"type\":\"start\",\"display_name\":{\"$ne\":null}}", "bad_request"),
        ("{\"type\":\"message\",\"client_msg_id\":\"a\",\"text\":\"x\",\"sender\":\"advisor\"}", "bad_request"),
    ] {
        citizen.send_raw(frame).await;
        let error = citizen.expect("error").await;
        assert_eq!(error["code"], code, "{frame}");
        assert!(!error["message"].as_str().expect("message").is_empty());
    }
    let long = "x".repeat(16 * 1024 + 1);
    citizen.send(json!({"type": "message", "client_msg_id": "big", "text": long})).await;
    assert_eq!(citizen.expect("error").await["code"], "invalid_field");
    citizen.send(json!({"type": "message", "client_msg_id": "empty", "text": "   "})).await;
    assert_eq!(citizen.expect("error").await["code"], "invalid_field");
    citizen.send(json!({"type": "message", "client_msg_id": "y".repeat(65), "text": "hej"})).await;
    assert_eq!(citizen.expect("error").await["code"], "invalid_field");
    citizen.send(json!({"type": "start"})).await;
    assert_eq!(citizen.expect("error").await["code"], "invalid_state");

    // Bo is not in this chat: not found, exactly as for a chat that does not exist.
    bo.send(json!({"type": "message", "conversation_id": conversation, "client_msg_id": "b1", "text": "hej"})).await;
    let e1 = bo.expect("error").await;
    bo.send(json!({"type": "message", "conversation_id": uuid_like(), "client_msg_id": "b2", "text": "hej"})).await;
    let e2 = bo.expect("error").await;
    assert_eq!((e1["code"].as_str(), e1["message"].as_str()), (e2["code"].as_str(), e2["message"].as_str()));
    assert_eq!(e1["code"], "not_found");
    bo.send(json!({"type": "end", "conversation_id": conversation, "category": "Övrigt"})).await;
    assert_eq!(bo.expect("error").await["code"], "not_found");
    bo.send(json!({"type": "transfer", "conversation_id": conversation, "to": "bo"})).await;
    assert_eq!(bo.expect("error").await["code"], "not_found");
    anna.send(json!({"type": "end", "conversation_id": conversation, "category": "Ingen sådan"})).await;
    assert_eq!(anna.expect("error").await["code"], "invalid_category");
    anna.send(json!({"type": "status", "status": "offline"})).await;
    assert_eq!(anna.expect("error").await["code"], "invalid_field");

    // The chat is intact after all that.
    let seq = say(&mut citizen, json!({"type": "message", "client_msg_id": "ok", "text": "fortfarande här"})).await;
    assert_eq!(seq, 1);
    anna.expect("message").await;
    anna.send(json!({"type": "end", "conversation_id": conversation, "category": "Övrigt"})).await;
    citizen.expect("ended").await;
    citizen.send(json!({"type": "message", "client_msg_id": "late", "text": "efteråt"})).await;
    assert_eq!(citizen.expect("error").await["code"], "invalid_state");
    anna.send(json!({"type": "message", "conversation_id": conversation, "client_msg_id": "late", "text": "efteråt"}))
        .await;
    assert_eq!(anna.expect("error").await["code"], "not_found");
    let transcript = server.storage().transcript(&conversation).await.expect("transcript");
    assert_eq!(transcript.len(), 1, "nothing but the one good message was stored");
}

fn uuid_like() -> String {
    "0b0e8a3e-2f4c-4d6a-9a41-5f1d2c3b4a59".into()
}

async fn citizen_leaving_the_queue_is_abandoned(backend: Backend) {
    let server = start(backend).await;
    let (mut citizen, queued) = server.queued_citizen("Ada").await;
    citizen.send(json!({"type": "leave"})).await;
    let ended = citizen.expect("ended").await;
    assert_eq!(ended["reason"], "abandoned");
    assert_eq!(ended["errand_number"], Value::Null);
    let record = server.storage().errand(&cid(&queued)).await.expect("query").expect("row");
    assert_eq!(record.outcome.as_deref(), Some("abandoned"));
    assert_eq!(record.errand_number, None);
    // An advisor arriving later finds nobody waiting.
    let mut advisor = server.advisor("anna", true).await;
    assert!(advisor.none_of("assigned", Duration::from_millis(300)).await);
}

async fn citizen_leaving_a_chat_lets_the_advisor_wrap_up(backend: Backend) {
    let server = start(backend).await;
    let mut advisor = server.advisor("anna", true).await;
    let (mut citizen, queued) = server.queued_citizen("Ada").await;
    let conversation = cid(&queued);
    citizen.expect("assigned").await;
    advisor.expect("assigned").await;
    citizen.send(json!({"type": "leave"})).await;
    let ended = citizen.expect("ended").await;
    assert_eq!(ended["reason"], "citizen_left");
    let number = ended["errand_number"].as_str().expect("number").to_owned();
    let wrap = advisor.expect("wrap_up").await;
    assert_eq!(wrap["conversation_id"], conversation.as_str());
    advisor
        .send(json!({"type": "end", "conversation_id": conversation, "category": "Allmän fråga", "summary": "Avbröt."}))
        .await;
    let done = advisor.expect("chat_ended").await;
    assert_eq!(done["errand_number"], number.as_str());
    assert_eq!(done["reason"], "citizen_left");
    let errand = server.storage().errand(&number).await.expect("query").expect("errand");
    assert_eq!(errand.category.as_deref(), Some("Allmän fråga"));
    assert_eq!(errand.end_reason.as_deref(), Some("citizen_left"));
}

/// The scores stored for every conversation so far, in no particular order.
async fn stored_scores(server: &TestServer) -> Vec<u8> {
    let all = server.storage().conversation_facts(DateTime::UNIX_EPOCH, chrono::DateTime::<chrono::Utc>::MAX_UTC);
    let mut scores: Vec<u8> = all.await.expect("facts").into_iter().filter_map(|f| f.satisfaction).collect();
    scores.sort_unstable();
    scores
}

async fn a_citizen_rates_the_chat_that_ended_and_only_that(backend: Backend) {
    let server = start(backend).await;
    // Nothing to rate before a chat, nor while one is under way.
    let (mut citizen, queued) = server.queued_citizen("Ada").await;
    citizen.send(json!({"type": "rate", "score": 5})).await;
    assert_eq!(citizen.expect("error").await["code"], "invalid_state");
    let token = queued["resume_token"].as_str().expect("token").to_owned();
    let mut advisor = server.advisor("anna", true).await;
    let chat = advisor.expect("assigned").await;
    citizen.expect("assigned").await;
    citizen.send(json!({"type": "rate", "score": 5})).await;
    assert_eq!(citizen.expect("error").await["code"], "invalid_state");

    // The citizen leaves; the advisor is still wrapping up, but the citizen may rate.
    citizen.send(json!({"type": "leave"})).await;
    let ended = citizen.expect("ended").await;
    assert_eq!((ended["reason"].as_str(), ended["can_rate"].as_bool()), (Some("citizen_left"), Some(true)));
    // Another connection has nothing to rate.
    let mut stranger = server.citizen().await;
    stranger.expect("welcome").await;
    stranger.send(json!({"type": "rate", "score": 1})).await;
    assert_eq!(stranger.expect("error").await["code"], "invalid_state");
    // A reload within the grace period resumes into `ended`, and may rate from there.
    drop(citizen);
    let mut back = server.citizen().await;
    back.expect("welcome").await;
    back.send(json!({"type": "resume", "token": token, "last_seq": 0})).await;
    let again = back.expect("ended").await;
    assert_eq!(
        (again["errand_number"].as_str(), again["can_rate"].as_bool()),
        (ended["errand_number"].as_str(), Some(true))
    );
    back.send(json!({"type": "rate", "score": 3})).await;
    assert_eq!(back.expect("rated").await["score"], 3);
    assert_eq!(stored_scores(&server).await, [3]);
    // Wrapping up afterwards keeps the answer.
    advisor.send(json!({"type": "end", "conversation_id": cid(&chat["chat"]), "category": "Övrigt"})).await;
    advisor.expect("chat_ended").await;
    assert_eq!(stored_scores(&server).await, [3]);
    // A connection may change its rating a few times, not without end (each is a write).
    for score in [1, 2, 4, 5] {
        back.send(json!({"type": "rate", "score": score})).await;
        assert_eq!(back.expect("rated").await["score"], score);
    }
    back.send(json!({"type": "rate", "score": 2})).await;
    let refused = back.expect("error").await;
    assert_eq!(refused["code"], "invalid_state");
    assert!(refused["message"].as_str().expect("message").contains("as often as it may"), "{refused}");
    assert_eq!(stored_scores(&server).await, [5]);

    // A new chat on the same connection: the old one can no longer be rated.
    back.send(json!({"type": "start"})).await;
    back.expect("queued").await;
    back.send(json!({"type": "rate", "score": 1})).await;
    let refused = back.expect("error").await;
    assert_eq!(refused["code"], "invalid_state");
    assert!(refused["message"].as_str().expect("message").contains("no ended chat"), "{refused}");
    assert_eq!(stored_scores(&server).await, [5]);
}

#[tokio::test]
async fn an_ended_chat_can_be_rated_from_a_new_connection_for_the_rating_window() {
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.chat.citizen_grace_seconds = 60;
        c.chat.rating_window_minutes = 30;
    })
    .await;
    let mut advisor = server.advisor("anna", true).await;
    let (mut citizen, queued) = server.queued_citizen("Ada").await;
    let token = queued["resume_token"].as_str().expect("token").to_owned();
    let chat = advisor.expect("assigned").await;
    citizen.expect("assigned").await;
    advisor.send(json!({"type": "end", "conversation_id": cid(&chat["chat"]), "category": "Övrigt"})).await;
    let ended = citizen.expect("ended").await;
    assert_eq!(ended["can_rate"], true);
    // The page is closed for longer than the grace period; a page opened 20
    // minutes later still learns how the chat ended, and may rate it.
    drop(citizen);
    server.clock.advance(TimeDelta::minutes(20));
    let mut back = server.citizen().await;
    back.expect("welcome").await;
    back.send(json!({"type": "resume", "token": token, "last_seq": 0})).await;
    let again = back.expect("ended").await;
    assert_eq!((&again["errand_number"], &again["can_rate"]), (&ended["errand_number"], &json!(true)));
    back.send(json!({"type": "rate", "score": 4})).await;
    assert_eq!(back.expect("rated").await["score"], 4);
    assert_eq!(stored_scores(&server).await, [4]);
    // After the window the token is unknown: nothing more can be rated.
    server.clock.advance(TimeDelta::minutes(11));
    common::eventually("the ended token expires after the rating window", || async {
        server.resume_is_not_found(&token).await
    })
    .await;
    assert_eq!(stored_scores(&server).await, [4]);
}

#[tokio::test]
async fn the_satisfaction_question_can_be_switched_off() {
    let server = TestServer::start_with(Backend::Sqlite, |c| c.chat.ask_satisfaction = false).await;
    let mut advisor = server.advisor("anna", true).await;
    let (mut citizen, _) = server.queued_citizen("Ada").await;
    let chat = advisor.expect("assigned").await;
    citizen.expect("assigned").await;
    advisor.send(json!({"type": "end", "conversation_id": cid(&chat["chat"]), "category": "Övrigt"})).await;
    let ended = citizen.expect("ended").await;
    assert!(ended["errand_number"].is_string());
    assert_eq!(ended["can_rate"], false);
    citizen.send(json!({"type": "rate", "score": 4})).await;
    assert_eq!(citizen.expect("error").await["code"], "invalid_state");
    assert!(stored_scores(&server).await.is_empty());
}

// ------------------------------------------------------------ time-driven behaviour (SQLite)

#[tokio::test]
async fn inactivity_warns_then_ends() {
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.chat.inactivity_warning_seconds = 300;
        c.chat.inactivity_end_seconds = 60;
    })
    .await;
    let mut advisor = server.advisor("anna", true).await;
    let (mut citizen, _) = server.queued_citizen("Ada").await;
    citizen.expect("assigned").await;
    advisor.expect("assigned").await;
    server.clock.advance(TimeDelta::seconds(301));
    let warning = citizen.expect("inactivity_warning").await;
    assert_eq!(warning["ends_in_seconds"], 60);
    advisor.expect("inactivity_warning").await;
    server.clock.advance(TimeDelta::seconds(61));
    let ended = citizen.expect("ended").await;
    assert_eq!(ended["reason"], "inactivity");
    assert_eq!(advisor.expect("chat_ended").await["reason"], "inactivity");
}

#[tokio::test]
async fn a_message_resets_the_inactivity_clock() {
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.chat.inactivity_warning_seconds = 300;
        c.chat.inactivity_end_seconds = 60;
    })
    .await;
    let mut advisor = server.advisor("anna", true).await;
    let (mut citizen, _) = server.queued_citizen("Ada").await;
    citizen.expect("assigned").await;
    advisor.expect("assigned").await;
    server.clock.advance(TimeDelta::seconds(250));
    say(&mut citizen, json!({"type": "message", "client_msg_id": "1", "text": "är du kvar?"})).await;
    server.clock.advance(TimeDelta::seconds(250));
    assert!(
        citizen.none_of("inactivity_warning", Duration::from_millis(400)).await,
        "no warning 250 s after the last message"
    );
}

#[tokio::test]
async fn a_vanished_advisors_chats_return_to_the_front_after_the_grace_period() {
    let server = TestServer::start_with(Backend::Sqlite, |c| c.chat.advisor_grace_seconds = 60).await;
    let mut anna = server.advisor("anna", true).await;
    let (mut ada, _) = server.queued_citizen("Ada").await;
    ada.expect("assigned").await;
    anna.expect("assigned").await;
    drop(anna);
    let mut bo = server.advisor("bo", false).await;
    let (_cecilia, q) = server.queued_citizen("Cecilia").await;
    assert_eq!(q["position"], 1);
    server.clock.advance(TimeDelta::seconds(30));
    assert!(ada.none_of("queued", Duration::from_millis(300)).await, "still within the grace period");
    server.clock.advance(TimeDelta::seconds(31));
    let requeued = ada.expect("queued").await;
    assert_eq!(requeued["position"], 1, "back at the front, ahead of Cecilia");
    bo.send(json!({"type": "status", "status": "available"})).await;
    let first = bo.expect("assigned").await;
    assert_eq!(first["chat"]["citizen_name"], "Ada");
}

#[tokio::test]
async fn a_vanished_citizen_is_abandoned_after_the_grace_period() {
    let server = TestServer::start_with(Backend::Sqlite, |c| c.chat.citizen_grace_seconds = 60).await;
    let (citizen, queued) = server.queued_citizen("Ada").await;
    drop(citizen);
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.clock.advance(TimeDelta::seconds(61));
    let id = cid(&queued);
    common::eventually("the vanished citizen is ended", || async {
        server.storage().errand(&id).await.expect("query").is_some_and(|r| r.ended_at.is_some())
    })
    .await;
    let record = server.storage().errand(&id).await.expect("query").expect("row");
    assert_eq!(record.outcome.as_deref(), Some("abandoned"));
    assert_eq!(record.end_reason.as_deref(), Some("citizen_disconnected"));
    // Within the next grace period the token only tells how it ended …
    let mut back = server.citizen().await;
    back.expect("welcome").await;
    back.send(json!({"type": "resume", "token": queued["resume_token"], "last_seq": 0})).await;
    let ended = back.expect("ended").await;
    assert_eq!(ended["reason"], "citizen_disconnected");
    assert_eq!(ended["errand_number"], Value::Null);
    // … and then it is dead.
    server.clock.advance(TimeDelta::seconds(61));
    common::eventually("the ended token expires", || async {
        server.resume_is_not_found(queued["resume_token"].as_str().expect("token")).await
    })
    .await;
}

#[tokio::test]
async fn a_citizen_who_missed_the_end_learns_the_errand_number_on_resume() {
    let server = TestServer::start().await;
    let mut advisor = server.advisor("anna", true).await;
    let (mut citizen, queued) = server.queued_citizen("Ada").await;
    citizen.expect("assigned").await;
    let chat = advisor.expect("assigned").await;
    drop(citizen);
    advisor.expect("citizen_presence").await;
    advisor.send(json!({"type": "end", "conversation_id": cid(&chat["chat"]), "category": "Övrigt"})).await;
    let number = advisor.expect("chat_ended").await["errand_number"].as_str().expect("number").to_owned();
    let mut back = server.citizen().await;
    back.expect("welcome").await;
    back.send(json!({"type": "resume", "token": queued["resume_token"], "last_seq": 0})).await;
    let ended = back.expect("ended").await;
    assert_eq!(ended["errand_number"], number.as_str());
    assert_eq!(ended["reason"], "advisor_ended");
    // The chat cannot be taken up again.
    back.send(json!({"type": "message", "client_msg_id": "late", "text": "hallå?"})).await;
    assert_eq!(back.expect("error").await["code"], "invalid_state");
}

#[tokio::test]
async fn queue_positions_move_and_estimates_appear() {
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.chat.max_chats_per_advisor = 1;
        c.chat.assumed_handle_seconds = 300;
    })
    .await;
    let mut advisor = server.advisor("anna", true).await;
    let (mut a, qa) = server.queued_citizen("A").await;
    let (mut b, qb) = server.queued_citizen("B").await;
    let (mut c, qc) = server.queued_citizen("C").await;
    assert_eq!(qa["position"], 1);
    assert_eq!((qb["position"].as_u64(), qb["estimated_wait_seconds"].as_u64()), (Some(1), Some(300)));
    assert_eq!((qc["position"].as_u64(), qc["estimated_wait_seconds"].as_u64()), (Some(2), Some(600)));
    a.expect("assigned").await;
    let chat = advisor.expect("assigned").await;
    advisor.send(json!({"type": "end", "conversation_id": cid(&chat["chat"]), "category": "Övrigt"})).await;
    b.expect("assigned").await;
    let update = c.expect("queue_update").await;
    assert_eq!(update["position"], 1);
}

#[tokio::test]
async fn shutdown_tells_clients_and_flushes() {
    let mut server = TestServer::start().await;
    let mut advisor = server.advisor("anna", true).await;
    let (mut citizen, queued) = server.queued_citizen("Ada").await;
    citizen.expect("assigned").await;
    advisor.expect("assigned").await;
    citizen.send(json!({"type": "message", "client_msg_id": "last", "text": "sista"})).await;
    citizen.expect("ack").await;
    server.stop().await;
    let notice = citizen.expect("server_shutdown").await;
    assert!(notice["message"].as_str().is_some());
    assert_eq!(citizen.closed().await, Some(1001));
    // Everything is flushed: the next start finds the chat open, with its
    // advisor and every message (tests/restart.rs takes it up again).
    let storage = kommunchat::storage::Storage::open(&server.db.url, &Default::default()).await.expect("open");
    assert_eq!(storage.end_interrupted(chrono::Utc::now()).await.expect("recover"), 0, "nothing to give up");
    let open = storage.open_conversations().await.expect("read");
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].id.to_string(), cid(&queued));
    assert_eq!(open[0].advisor.as_ref().map(|a| a.username.as_str()), Some("anna"));
    assert!(open[0].errand_number.is_some());
    assert_eq!(open[0].messages.iter().map(|m| &*m.text).collect::<Vec<_>>(), ["sista"]);
}
