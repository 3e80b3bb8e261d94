//! Each attack class from the security reference, tried against the running
//! server with a real client: the attempt must fail, and nothing may change.

#[macro_use]
mod common;

use std::time::Duration;

use common::{Backend, Client, TestServer, cid, say};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
use tokio_tungstenite::tungstenite::{self, Message};

/// Tries a WebSocket upgrade with extra headers; returns the HTTP status of a refusal, or 101.
async fn upgrade_status(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> u16 {
    let mut request = format!("ws://{}{path}", server.addr).into_client_request().expect("request");
    for (k, v) in headers {
        let name = tungstenite::http::HeaderName::from_bytes(k.as_bytes()).expect("name");
        request.headers_mut().insert(name, v.parse().expect("header"));
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => 101,
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("unexpected: {e}"),
    }
}

#[tokio::test]
async fn cross_site_websocket_hijacking_is_refused() {
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.security.widget_origins = vec!["https://helsingborg.se".into()];
    })
    .await;
    let host = server.addr.to_string();
    let same = format!("http://{host}");
    assert_eq!(upgrade_status(&server, "/ws/citizen", &[("origin", "https://evil.example")]).await, 403);
    assert_eq!(upgrade_status(&server, "/ws/citizen", &[("origin", "null")]).await, 403);
    assert_eq!(upgrade_status(&server, "/ws/citizen", &[("origin", "https://helsingborg.se.evil.example")]).await, 403);
    assert_eq!(upgrade_status(&server, "/ws/citizen", &[("origin", "https://helsingborg.se")]).await, 101);
    assert_eq!(upgrade_status(&server, "/ws/citizen", &[("origin", &same)]).await, 101);

    // The advisor socket with a valid session cookie, from another site: refused before the session is used.
    server.add_user("anna", "Anna", "advisor", "advisor password 1").await;
    let cookie = server.login("anna", "advisor password 1").await;
    assert_eq!(
        upgrade_status(&server, "/ws/advisor", &[("origin", "https://evil.example"), ("cookie", &cookie)]).await,
        403
    );
    assert_eq!(
        upgrade_status(&server, "/ws/advisor", &[("origin", "https://helsingborg.se"), ("cookie", &cookie)]).await,
        403
    );
    assert_eq!(upgrade_status(&server, "/ws/advisor", &[("origin", &same), ("cookie", &cookie)]).await, 101);
    server.add_user("chef", "Chef", "admin", "admin password 123").await;
    let admin = server.login("chef", "admin password 123").await;
    assert_eq!(
        upgrade_status(&server, "/ws/admin", &[("origin", "https://evil.example"), ("cookie", &admin)]).await,
        403
    );
}

#[tokio::test]
async fn cross_site_request_forgery_is_refused_and_changes_nothing() {
    let server = TestServer::start().await;
    server.add_user("chef", "Chef", "admin", "admin password 123").await;
    let cookie = server.login("chef", "admin password 123").await;
    let http = reqwest::Client::new();
    let forged = http
        .post(server.url("/api/v1/users"))
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .json(&json!({"username": "mallory", "role": "admin", "password": "mallory password 1"}))
        .send()
        .await
        .expect("post");
    assert_eq!(forged.status().as_u16(), 403);
    let body: Value = forged.json().await.expect("json");
    assert_eq!(body["error"]["code"], "forbidden_origin");
    assert!(server.storage().user_by_name("mallory").await.expect("query").is_none());
    let logout = http
        .post(server.url("/api/v1/logout"))
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("post");
    assert_eq!(logout.status().as_u16(), 403);
    let me = http.get(server.url("/api/v1/me")).header("cookie", &cookie).send().await.expect("me");
    assert_eq!(me.status().as_u16(), 200, "the session survived the forged logout");
    // A form post (not JSON) is refused too, even from the same origin.
    let form = http
        .post(server.url("/api/v1/users"))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("username=mallory&role=admin&password=mallorypassword1")
        .send()
        .await
        .expect("post");
    assert!(form.status().is_client_error());
    assert!(server.storage().user_by_name("mallory").await.expect("query").is_none());
}

#[tokio::test]
async fn password_guessing_is_throttled() {
    let server = TestServer::start().await;
    server.add_user("anna", "Anna", "advisor", "the right password").await;
    let http = reqwest::Client::new();
    let attempt = |username: &str, password: &str| {
        http.post(server.url("/api/v1/login")).json(&json!({"username": username, "password": password})).send()
    };
    for _ in 0..4 {
        assert_eq!(attempt("anna", "wrong guess 123").await.expect("post").status().as_u16(), 401);
    }
    let fifth = attempt("anna", "wrong guess 123").await.expect("post");
    assert_eq!(fifth.status().as_u16(), 401);
    let blocked = attempt("anna", "the right password").await.expect("post");
    assert_eq!(blocked.status().as_u16(), 429, "even the right password waits while blocked");
    assert!(blocked.headers().get("retry-after").is_some());
    // The same address guessing other accounts is blocked too.
    assert_eq!(attempt("bertil", "whatever password").await.expect("post").status().as_u16(), 429);
    // After the delay (advance the server's clock) the right password works.
    server.clock.advance(chrono::TimeDelta::seconds(5));
    assert_eq!(attempt("anna", "the right password").await.expect("post").status().as_u16(), 200);
}

#[tokio::test]
async fn a_password_change_elsewhere_closes_open_sockets() {
    let server = TestServer::start_with(Backend::Sqlite, |c| c.security.session_check_seconds = 1).await;
    let mut console = server.advisor("anna", true).await;
    let cookie = console.cookie.clone().expect("cookie");
    server.add_user("chef", "Chef", "admin", "admin password 123").await;
    let admin_cookie = server.login("chef", "admin password 123").await;
    let mut live = Client::connect(server.addr, "/ws/admin", Some(&admin_cookie)).await;
    live.expect("live").await;
    // Changed straight in storage, as `kommunchat user passwd` in another process does.
    let hash = kommunchat::auth::hash_password("a new password 123").expect("hash");
    server.storage().set_password("anna", &hash).await.expect("set");
    server.storage().set_password("chef", &hash).await.expect("set");
    assert_eq!(console.closed().await, Some(1008));
    assert_eq!(live.closed().await, Some(1008));
    let me = reqwest::Client::new().get(server.url("/api/v1/me")).header("cookie", &cookie).send().await.expect("me");
    assert_eq!(me.status().as_u16(), 401);
}

#[tokio::test]
async fn tokens_are_random_and_128_bits() {
    let server = TestServer::start().await;
    let (_a, qa) = server.queued_citizen("A").await;
    let (_b, qb) = server.queued_citizen("B").await;
    let (ta, tb) = (qa["resume_token"].as_str().expect("t"), qb["resume_token"].as_str().expect("t"));
    assert_ne!(ta, tb);
    for t in [ta, tb] {
        assert_eq!(t.len(), 32);
        assert!(t.chars().all(|c| c.is_ascii_hexdigit()));
    }
    // A citizen cannot address anyone else's conversation: there is no field for it.
    let mut c = server.citizen().await;
    c.expect("welcome").await;
    c.send(json!({"type": "message", "client_msg_id": "x", "text": "hej", "conversation_id": qa["conversation_id"]}))
        .await;
    assert_eq!(c.expect("error").await["code"], "bad_request");
}

async fn raw_citizen(server: &TestServer) -> Client {
    let mut c = server.citizen().await;
    c.expect("welcome").await;
    c
}

#[tokio::test]
async fn oversized_frames_close_with_1009_and_store_nothing() {
    let server = TestServer::start().await;
    let (mut citizen, queued) = server.queued_citizen("A").await;
    let huge = "x".repeat(64 * 1024);
    let _ = citizen
        .ws
        .send(Message::Text(json!({"type": "message", "client_msg_id": "big", "text": huge}).to_string().into()))
        .await;
    assert_eq!(citizen.closed().await, Some(1009));
    let transcript = server.storage().transcript(queued["conversation_id"].as_str().expect("id")).await.expect("t");
    assert!(transcript.is_empty());
}

on_both_backends!(a_chat_holds_at_most_its_limit_and_a_waiting_citizen_less);

/// A chat's text is bounded, so that neither a citizen writing while in the
/// queue nor an endless chat can fill the server's memory (or the advisor's
/// `welcome`, which carries every chat held): beyond the limit a message is
/// refused with `conversation_full` and stored nowhere, and after a restart
/// the limit counts what is stored.
async fn a_chat_holds_at_most_its_limit_and_a_waiting_citizen_less(backend: Backend) {
    // Each message is charged its text and 256 bytes: 300 bytes of text cost 556.
    let mut server = TestServer::start_with(backend, |c| {
        c.chat.max_message_bytes = 1000;
        c.chat.max_queued_bytes = 1000;
        c.chat.max_conversation_bytes = 2600;
    })
    .await;
    let long = "x".repeat(300);
    let (mut ada, queued) = server.queued_citizen("Ada").await;
    let conversation = cid(&queued);
    let token = queued["resume_token"].as_str().expect("token").to_owned();
    assert_eq!(say(&mut ada, json!({"type": "message", "client_msg_id": "q1", "text": long})).await, 1);

    // A second would pass what a waiting chat may hold; a retry is refused alike.
    for _ in 0..2 {
        ada.send(json!({"type": "message", "client_msg_id": "q2", "text": long})).await;
        let refused = ada.expect("error").await;
        assert_eq!(
            (refused["code"].as_str(), refused["client_msg_id"].as_str()),
            (Some("conversation_full"), Some("q2"))
        );
    }

    // Once an advisor has it, the chat's own limit holds: 4 × 556 = 2,224 of 2,600.
    let mut anna = server.advisor("anna", true).await;
    let assigned = anna.expect("assigned").await;
    assert_eq!(assigned["chat"]["messages"].as_array().map(Vec::len), Some(1));
    ada.expect("assigned").await;
    assert_eq!(say(&mut ada, json!({"type": "message", "client_msg_id": "c1", "text": long})).await, 2);
    let reply = |id: &str, text: &str| json!({"type": "message", "conversation_id": conversation, "client_msg_id": id, "text": text});
    assert_eq!(say(&mut anna, reply("r1", &long)).await, 3);
    assert_eq!(say(&mut ada, json!({"type": "message", "client_msg_id": "c2", "text": long})).await, 4);
    anna.send(reply("r2", &long)).await;
    let refused = anna.expect("error").await;
    assert_eq!(
        (refused["code"].as_str(), refused["conversation_id"].as_str(), refused["client_msg_id"].as_str()),
        (Some("conversation_full"), Some(conversation.as_str()), Some("r2"))
    );
    // The operator sees the refusals (three: `q2` twice and `r2`).
    let url = server.url("/metrics");
    common::eventually("the refusals are counted in /metrics", || async {
        let text = reqwest::get(&url).await.expect("scrape").text().await.expect("text");
        text.lines().any(|l| l == "kommunchat_messages_refused_total{reason=\"conversation_full\"} 3")
    })
    .await;

    // After a restart (which leaves the database up to date) the limit counts
    // the stored chat: 260 bytes fit once, not twice.
    server.restart().await;
    let stored = server.storage().transcript(&conversation).await.expect("transcript");
    assert_eq!(stored.len(), 4, "the refused messages are stored nowhere");
    let mut ada = server.citizen().await;
    ada.expect("welcome").await;
    ada.send(json!({"type": "resume", "token": token, "last_seq": 4})).await;
    ada.expect("resumed").await;
    assert_eq!(say(&mut ada, json!({"type": "message", "client_msg_id": "c3", "text": "tack"})).await, 5);
    ada.send(json!({"type": "message", "client_msg_id": "c4", "text": "tack"})).await;
    assert_eq!(ada.expect("error").await["code"], "conversation_full");
    server.restart().await;
    let stored = server.storage().transcript(&conversation).await.expect("transcript");
    assert_eq!(stored.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007() {
    let server = TestServer::start().await;
    let mut citizen = raw_citizen(&server).await;
    let mut header = FrameHeader::default();
    header.opcode = OpCode::Data(Data::Text);
    header.is_final = true;
    let frame = Frame::from_payload(header, vec![0x7b, 0xff, 0xfe, 0x7d].into());
    citizen.ws.send(Message::Frame(frame)).await.expect("send");
    assert_eq!(citizen.closed().await, Some(1007));
}

#[tokio::test]
async fn compression_is_not_negotiated() {
    let server = TestServer::start().await;
    let mut request = format!("ws://{}/ws/citizen", server.addr).into_client_request().expect("request");
    request
        .headers_mut()
        .insert("sec-websocket-extensions", "permessage-deflate; client_max_window_bits".parse().expect("h"));
    let (_ws, response) = tokio_tungstenite::connect_async(request).await.expect("connects");
    assert!(response.headers().get("sec-websocket-extensions").is_none());
}

#[tokio::test]
async fn flooding_is_rate_limited_then_closed() {
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.security.messages_per_second = 2;
        c.security.message_burst = 5;
    })
    .await;
    let (mut citizen, queued) = server.queued_citizen("A").await; // the start used one token
    for i in 0..40 {
        let frame = json!({"type": "message", "client_msg_id": format!("f{i}"), "text": "spam"});
        if citizen.ws.send(Message::Text(frame.to_string().into())).await.is_err() {
            break;
        }
    }
    let mut acks = 0;
    let mut limited = 0;
    let code = loop {
        match citizen.ws.next().await {
            Some(Ok(Message::Text(t))) => {
                let f: Value = serde_json::from_str(&t).expect("json");
                match f["type"].as_str() {
                    Some("ack") => acks += 1,
                    Some("error") if f["code"] == "rate_limited" => limited += 1,
                    _ => {}
                }
            }
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            _ => break None,
        }
    };
    assert_eq!(code, Some(1008), "abuse closes the connection");
    assert!(limited >= 5, "refusals were announced ({limited})");
    assert!(acks <= 5, "only the burst got through ({acks})");
    // What got through is stored (acks in flight at the close are re-sent on
    // resume; the database takes in what the message log acknowledged within
    // `message_log_apply_ms`); the rest never was.
    let conversation = queued["conversation_id"].as_str().expect("id");
    common::eventually("every acknowledged message is in the database", || async {
        server.storage().transcript(conversation).await.expect("t").len() >= acks
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stored = server.storage().transcript(conversation).await.expect("t");
    assert!(stored.len() >= acks && stored.len() <= 5, "{} stored", stored.len());
    // The operator sees it: every refusal the client read was counted, and the one drop.
    let counted = metric(&server, "kommunchat_frames_rate_limited_total{role=\"citizen\"}").await;
    assert!(counted >= limited as u64 && counted <= 40, "{counted} counted, {limited} read");
    assert_eq!(metric(&server, "kommunchat_frames_rate_limited_total{role=\"advisor\"}").await, 0);
    assert_eq!(metric(&server, "kommunchat_connections_dropped_total{reason=\"flooding\"}").await, 1);
    assert_eq!(metric(&server, "kommunchat_connections_dropped_total{reason=\"too_slow\"}").await, 0);
}

/// A metric's value from `/metrics`, by its whole name with labels.
async fn metric(server: &TestServer, line: &str) -> u64 {
    let text = reqwest::get(server.url("/metrics")).await.expect("scrape").text().await.expect("text");
    let found = text.lines().find_map(|l| l.strip_prefix(line)).unwrap_or_else(|| panic!("{line} in:\n{text}"));
    found.trim().parse().expect("a count")
}

/// A client that stops reading (a "slow read": its TCP window stays shut)
/// while its advisor writes must not hold a connection, its file and its
/// buffers for ever: it is dropped, and when it comes back it resumes with
/// nothing lost.
#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_and_loses_nothing() {
    const MESSAGES: u64 = 6000;
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.security.messages_per_second = 10_000;
        c.security.message_burst = 10_000;
        c.security.write_timeout_seconds = 1;
        c.chat.max_conversation_bytes = 64 * 1024 * 1024;
    })
    .await;
    let mut advisor = server.advisor("anna", true).await;
    let mut citizen = Client::connect_with_small_window(server.addr, "/ws/citizen").await;
    citizen.expect("welcome").await;
    citizen.send(json!({"type": "start"})).await;
    let token = citizen.expect("queued").await["resume_token"].as_str().expect("token").to_owned();
    citizen.expect("assigned").await;
    let conversation = cid(&advisor.expect("assigned").await["chat"]);
    // The citizen reads no more. 6,000 messages of 1,000 bytes (about 6.5 MB
    // as frames) are more than the sockets' buffers hold (some 4 MB). Small
    // messages, since a batch of frames may take the write timeout plus its
    // size at 64 KiB/s (a slow but reading client keeps up).
    let text = "x".repeat(990);
    for i in 0..MESSAGES {
        let frame = json!({"type": "message", "conversation_id": conversation, "client_msg_id": format!("a{i}"), "text": format!("{i:09} {text}")});
        advisor.send(frame).await;
    }
    // Every message is acknowledged; the citizen's connection drops meanwhile or after.
    let (mut acks, mut gone) = (0, false);
    while acks < MESSAGES || !gone {
        let frame = advisor.next().await.expect("the advisor's connection stays");
        match frame["type"].as_str() {
            Some("ack") => acks += 1,
            Some("citizen_presence") => gone = frame["connected"] == false,
            _ => {}
        }
    }
    common::eventually("the stalled citizen's connection is gone", || async {
        metric(&server, "kommunchat_connections{role=\"citizen\"}").await == 0
    })
    .await;
    assert_eq!(metric(&server, "kommunchat_connections_dropped_total{reason=\"too_slow\"}").await, 1);

    // What did reach the citizen is whole and in order; the rest comes on resume.
    let mut seen = 0;
    while let Some(frame) = citizen.next().await {
        if frame["type"] == "message" {
            seen += 1;
            assert_eq!(frame["seq"], seen);
        }
    }
    assert!(seen < MESSAGES, "the stall came before the end ({seen} read)");
    let mut back = server.citizen().await;
    back.expect("welcome").await;
    back.send(json!({"type": "resume", "token": token, "last_seq": seen})).await;
    assert_eq!(back.expect("resumed").await["last_seq"], MESSAGES);
    for seq in seen + 1..=MESSAGES {
        let m = back.expect("message").await;
        assert_eq!(m["seq"], seq);
        assert!(m["text"].as_str().expect("text").starts_with(&format!("{:09} ", seq - 1)));
    }
}

/// Starting and leaving chats in a loop would store every one as an offered,
/// abandoned chat: each address has a budget of starts.
#[tokio::test]
async fn chat_starts_from_one_address_are_budgeted() {
    let server = TestServer::start_with(Backend::Sqlite, |c| c.security.chat_starts_per_address_per_hour = 3).await;
    let mut citizen = server.citizen().await;
    citizen.expect("welcome").await;
    for _ in 0..3 {
        citizen.send(json!({"type": "start"})).await;
        citizen.expect("queued").await;
        citizen.send(json!({"type": "leave"})).await;
        citizen.expect("ended").await;
    }
    citizen.send(json!({"type": "start"})).await;
    let refused = citizen.expect("error").await;
    assert_eq!(refused["code"], "too_many_chats");
    assert!(refused["message"].as_str().expect("message").contains("20 minutes"), "{refused}");
    // Another connection from the same address shares the budget.
    let mut second = server.citizen().await;
    second.expect("welcome").await;
    second.send(json!({"type": "start"})).await;
    assert_eq!(second.expect("error").await["code"], "too_many_chats");
    // Nothing was queued or stored for the refused ones.
    common::eventually("the three chats are stored", || async {
        server.storage().queue_event_count("ended").await.expect("count") == 3
    })
    .await;
    assert_eq!(server.storage().queue_event_count("joined").await.expect("count"), 3);
    // The allowance refills: one start every 20 minutes.
    server.clock.advance(chrono::TimeDelta::minutes(20));
    second.send(json!({"type": "start"})).await;
    second.expect("queued").await;
    citizen.send(json!({"type": "start"})).await;
    assert_eq!(citizen.expect("error").await["code"], "too_many_chats");
    common::eventually("the fourth chat is stored", || async {
        server.storage().queue_event_count("joined").await.expect("count") == 4
    })
    .await;
}

#[tokio::test]
async fn anonymous_connections_per_address_are_capped() {
    let server = TestServer::start_with(Backend::Sqlite, |c| c.security.max_citizen_connections_per_address = 3).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(raw_citizen(&server).await);
    }
    assert_eq!(upgrade_status(&server, "/ws/citizen", &[]).await, 429);
    open.pop();
    common::eventually("a slot frees when a socket closes", || async {
        upgrade_status(&server, "/ws/citizen", &[]).await == 101
    })
    .await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_cap_counts_each_forwarded_client() {
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.security.max_citizen_connections_per_address = 2;
        c.security.trusted_proxies = vec!["127.0.0.1".parse().expect("ip")];
    })
    .await;
    let from = |client: &'static str| [("x-forwarded-for", client)];
    let mut open = Vec::new();
    for client in ["198.51.100.1", "198.51.100.1", "198.51.100.2", "198.51.100.3"] {
        let mut request = format!("ws://{}/ws/citizen", server.addr).into_client_request().expect("request");
        request.headers_mut().insert("x-forwarded-for", client.parse().expect("header"));
        open.push(tokio_tungstenite::connect_async(request).await.expect("each forwarded client has its own slots"));
    }
    // The third from the same client is refused, whatever it puts in front.
    assert_eq!(upgrade_status(&server, "/ws/citizen", &from("198.51.100.1")).await, 429);
    assert_eq!(upgrade_status(&server, "/ws/citizen", &from("203.0.113.5, 198.51.100.1")).await, 429);
}

#[tokio::test]
async fn without_trusted_proxies_x_forwarded_for_is_ignored() {
    let server = TestServer::start_with(Backend::Sqlite, |c| c.security.max_citizen_connections_per_address = 2).await;
    let mut open = Vec::new();
    for client in ["198.51.100.1", "198.51.100.2"] {
        let mut request = format!("ws://{}/ws/citizen", server.addr).into_client_request().expect("request");
        request.headers_mut().insert("x-forwarded-for", client.parse().expect("header"));
        open.push(tokio_tungstenite::connect_async(request).await.expect("connects"));
    }
    assert_eq!(upgrade_status(&server, "/ws/citizen", &[("x-forwarded-for", "198.51.100.3")]).await, 429);
}

#[tokio::test]
async fn the_global_connection_cap_refuses_clearly() {
    let server = TestServer::start_with(Backend::Sqlite, |c| c.security.max_connections = 4).await;
    let mut open = Vec::new();
    for _ in 0..4 {
        open.push(raw_citizen(&server).await);
    }
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.expect("tcp");
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("overloaded"));
    drop(open);
    common::eventually("connections are accepted again", || async {
        reqwest::get(server.url("/healthz")).await.is_ok_and(|r| r.status().as_u16() == 200)
    })
    .await;
}

#[tokio::test]
async fn a_silent_client_is_cut_off_at_the_handshake_timeout() {
    let server = TestServer::start_with(Backend::Sqlite, |c| c.security.handshake_timeout_seconds = 1).await;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.expect("tcp");
    stream.write_all(b"GET /healthz HTTP/1.1\r\n").await.expect("partial request");
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await.expect("closed in time");
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn built_in_tls_serves_https_with_secure_cookies() {
    let dir = tempfile::tempdir().expect("dir");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).expect("write");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write");
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.tls.cert_path = cert_path.display().to_string();
        c.tls.key_path = key_path.display().to_string();
    })
    .await;
    server.add_user("anna", "Anna", "advisor", "advisor password 1").await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).expect("root");
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.addr).await.expect("tcp");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let body = r#"{"username":"anna","password":"advisor password 1"}"#;
    let request = format!(
        "POST /api/v1/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let cookie_line = answer.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie")).expect("cookie");
    assert!(cookie_line.contains("; Secure"), "{cookie_line}");
    // Plain HTTP on the TLS port does not work.
    assert!(reqwest::get(server.url("/healthz")).await.is_err());
}

#[tokio::test]
async fn no_message_text_or_personal_data_in_logs_at_info() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(
        dir.path().join("kommunchat.toml"),
        "[opening_hours]\nmonday=[\"00:00-24:00\"]\ntuesday=[\"00:00-24:00\"]\nwednesday=[\"00:00-24:00\"]\nthursday=[\"00:00-24:00\"]\n\
         friday=[\"00:00-24:00\"]\nsaturday=[\"00:00-24:00\"]\nsunday=[\"00:00-24:00\"]\npublic_holidays=[\"00:00-24:00\"]\n\
         midsommarafton=[\"00:00-24:00\"]\njulafton=[\"00:00-24:00\"]\nnyarsafton=[\"00:00-24:00\"]\nday_before_holiday=[]\n[log]\nformat=\"json\"\n",
    )
    .expect("config");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_kommunchat"))
        .current_dir(dir.path())
        .env("KOMMUNCHAT_LOG", "info")
        .env_remove("KOMMUNCHAT_CONFIG")
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starts");
    let mut child = common::ChildGuard(child);
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let addr: std::net::SocketAddr = loop {
        let line = lines.next().expect("line").expect("utf-8");
        if let Some(a) = line.strip_prefix("kommunchat listening on http://") {
            break a.parse().expect("addr");
        }
    };
    let stderr = child.stderr.take().expect("stderr");
    let collected = std::thread::spawn(move || {
        let mut all = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut all);
        all
    });
    let mut c = Client::connect(addr, "/ws/citizen", None).await;
    c.expect("welcome").await;
    c.send(json!({"type": "start", "display_name": "Hemliga Hanna", "topic": "ämnet-xyzzy"})).await;
    c.expect("queued").await;
    c.send(json!({"type": "message", "client_msg_id": "1", "text": "meddelande-plugh 811218-9876"})).await;
    c.expect("ack").await;
    let _ = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/login"))
        .json(&json!({"username": "hemlig-anvandare", "password": "hemligt-losenord"}))
        .send()
        .await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
    let logs = collected.join().expect("logs");
    assert!(logs.contains("kommunchat started"), "logging works: {logs}");
    for secret in ["Hemliga Hanna", "xyzzy", "plugh", "811218", "hemlig-anvandare", "hemligt-losenord"] {
        assert!(!logs.contains(secret), "{secret} leaked into the log:\n{logs}");
    }
}
