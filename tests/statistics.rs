//! Queue statistics from a known scenario (injected clock), surviving a
//! restart, and the Prometheus endpoint parsed as Prometheus would.

mod common;

use chrono::DateTime;
use common::{Backend, TestServer};
use serde_json::{Value, json};

fn at(s: &str) -> chrono::DateTime<chrono::Utc> {
    DateTime::parse_from_rfc3339(s).expect("instant").to_utc()
}

async fn stats(server: &TestServer, cookie: &str, query: &str) -> Value {
    let response = reqwest::Client::new()
        .get(server.url(&format!("/api/v1/stats?{query}")))
        .header("cookie", cookie)
        .send()
        .await
        .expect("stats");
    assert_eq!(response.status().as_u16(), 200);
    response.json().await.expect("json")
}

fn check_day(s: &Value) {
    assert_eq!((s["offered"].as_u64(), s["served"].as_u64(), s["abandoned"].as_u64()), (Some(3), Some(2), Some(1)));
    assert_eq!(s["abandon_rate"], 0.333);
    assert_eq!(s["refused_closed"], 1);
    assert_eq!(s["wait_seconds"], json!({"count": 2, "mean": 15.0, "median": 0.0, "p90": 30.0}));
    assert_eq!(s["time_to_abandon_seconds"]["mean"], 120.0);
    assert_eq!(s["first_response_seconds"]["mean"], 20.0);
    assert_eq!(s["handle_seconds"], json!({"count": 2, "mean": 480.0, "median": 330.0, "p90": 630.0}));
    assert_eq!(s["per_hour"][9], json!({"hour": 9, "offered": 3, "served": 2, "abandoned": 1}));
    assert_eq!(s["per_hour"][10]["offered"], 0);
    assert_eq!(s["wait_histogram"][0], json!({"le_seconds": 30, "count": 2}));
    assert_eq!(s["per_advisor"][0]["display_name"], "Handläggare anna");
    assert_eq!(s["per_advisor"][0]["served"], 2);
    // A rated 4; C rated 2 and changed it to 5; B never reached an advisor.
    assert_eq!(
        s["satisfaction"],
        json!({
            "count": 2,
            "mean": 4.5,
            "distribution": [
                {"score": 1, "count": 0}, {"score": 2, "count": 0}, {"score": 3, "count": 0},
                {"score": 4, "count": 1}, {"score": 5, "count": 1},
            ],
            "response_rate": 1.0,
        })
    );
    assert_eq!(s["per_advisor"][0]["satisfaction"], json!({"count": 2, "mean": 4.5}));
}

async fn scenario(backend: Backend) {
    let mut server = TestServer::start_with(backend, |_| {}).await;
    server.clock.set(at("2026-11-30T09:00:00+01:00"));
    let mut advisor = server.advisor("anna", false).await;
    let (mut a, _) = server.queued_citizen("A").await;
    server.clock.set(at("2026-11-30T09:00:30+01:00"));
    advisor.send(json!({"type": "status", "status": "available"})).await;
    let chat = advisor.expect("assigned").await;
    let id = chat["chat"]["conversation_id"].as_str().expect("id").to_owned();
    a.expect("assigned").await;
    server.clock.set(at("2026-11-30T09:01:00+01:00"));
    advisor.send(json!({"type": "message", "conversation_id": id, "client_msg_id": "1", "text": "Hej!"})).await;
    advisor.expect("ack").await;
    server.clock.set(at("2026-11-30T09:11:00+01:00"));
    advisor.send(json!({"type": "end", "conversation_id": id, "category": "Övrigt"})).await;
    assert_eq!(a.expect("ended").await["can_rate"], true);
    // A score out of range is refused and changes nothing.
    for bad in [0, 6, -1, 300] {
        a.send(json!({"type": "rate", "score": bad})).await;
        assert_eq!(a.expect("error").await["code"], "invalid_field", "{bad}");
    }
    a.send(json!({"type": "rate", "score": 4})).await;
    assert_eq!(a.expect("rated").await["score"], 4);

    advisor.send(json!({"type": "status", "status": "away"})).await;
    advisor.expect("status").await;
    server.clock.set(at("2026-11-30T09:20:00+01:00"));
    let (mut b, _) = server.queued_citizen("B").await;
    server.clock.set(at("2026-11-30T09:22:00+01:00"));
    b.send(json!({"type": "leave"})).await;
    assert_eq!(b.expect("ended").await["can_rate"], false, "no advisor, nothing to rate");
    b.send(json!({"type": "rate", "score": 1})).await;
    assert_eq!(b.expect("error").await["code"], "invalid_state");

    server.clock.set(at("2026-11-30T09:30:00+01:00"));
    advisor.send(json!({"type": "status", "status": "available"})).await;
    advisor.expect("status").await;
    let (mut c, _) = server.queued_citizen("C").await;
    let chat = advisor.expect("assigned").await;
    let id = chat["chat"]["conversation_id"].as_str().expect("id").to_owned();
    c.expect("assigned").await;
    server.clock.set(at("2026-11-30T09:30:10+01:00"));
    advisor.send(json!({"type": "message", "conversation_id": id, "client_msg_id": "2", "text": "Hej igen"})).await;
    advisor.expect("ack").await;
    server.clock.set(at("2026-11-30T09:35:30+01:00"));
    advisor.send(json!({"type": "end", "conversation_id": id, "category": "Övrigt"})).await;
    c.expect("ended").await;
    c.send(json!({"type": "rate", "score": 2})).await;
    assert_eq!(c.expect("rated").await["score"], 2);
    c.send(json!({"type": "rate", "score": 5})).await;
    assert_eq!(c.expect("rated").await["score"], 5, "a later answer replaces the first");

    server.clock.set(at("2026-11-30T18:30:00+01:00"));
    let mut d = server.citizen().await;
    d.expect("welcome").await;
    d.send(json!({"type": "start"})).await;
    d.expect("refused").await;

    server.add_user("chef", "Chefen", "admin", "admin password 123").await;
    let cookie = server.login("chef", "admin password 123").await;
    common::eventually("the refusal is stored", || async {
        server.storage().queue_event_count("refused").await.expect("count") == 1
    })
    .await;
    let day = stats(&server, &cookie, "from=2026-11-30&to=2026-11-30").await;
    check_day(&day);
    let open_only = stats(&server, &cookie, "from=2026-11-30&to=2026-11-30&opening_hours_only=true").await;
    assert_eq!(open_only["refused_closed"], 0);
    assert_eq!(open_only["offered"], 3);
    let other_day = stats(&server, &cookie, "from=2026-12-01&to=2026-12-01").await;
    assert_eq!(other_day["offered"], 0);

    // CSV of the same.
    let csv = reqwest::Client::new()
        .get(server.url("/api/v1/stats?from=2026-11-30&to=2026-11-30&format=csv"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("csv")
        .text()
        .await
        .expect("text");
    assert!(csv.starts_with("section,item,metric,value\n"));
    assert!(csv.contains("summary,,offered,3\n"));
    assert!(csv.contains("hour,09,abandoned,1\n"));
    assert!(csv.contains("summary,,satisfaction_mean,4.5\n"));
    assert!(csv.contains("satisfaction,5,count,1\n"));
    assert!(csv.contains("advisor,Handläggare anna,satisfaction_count,2\n"));

    // Bad queries are clear errors.
    for bad in [
        "from=2026-11-30",
        "from=30/11/2026&to=2026-11-30",
        "from=2026-12-01&to=2026-11-30",
        "from=2020-01-01&to=2026-01-01",
    ] {
        let r = reqwest::Client::new()
            .get(server.url(&format!("/api/v1/stats?{bad}")))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("req");
        assert_eq!(r.status().as_u16(), 400, "{bad}");
    }

    // Restart on the same database: the same history.
    server.stop().await;
    let restarted = TestServer::start_on(server.db, server.config.clone(), server.clock.clone()).await;
    let cookie = restarted.login("chef", "admin password 123").await;
    let again = stats(&restarted, &cookie, "from=2026-11-30&to=2026-11-30").await;
    check_day(&again);
}

#[tokio::test]
async fn known_day_sqlite() {
    scenario(Backend::Sqlite).await;
}

#[tokio::test]
async fn known_day_postgres() {
    scenario(Backend::Postgres).await;
}

#[tokio::test]
async fn metrics_scrape_parses() {
    let server = TestServer::start().await;
    let mut advisor = server.advisor("anna", true).await;
    let (mut citizen, _) = server.queued_citizen("A").await;
    citizen.expect("assigned").await;
    let chat = advisor.expect("assigned").await;
    let id = chat["chat"]["conversation_id"].as_str().expect("id").to_owned();
    citizen.send(json!({"type": "message", "client_msg_id": "1", "text": "hej"})).await;
    citizen.expect("ack").await;
    advisor.send(json!({"type": "end", "conversation_id": id, "category": "Övrigt"})).await;
    assert_eq!(citizen.expect("ended").await["can_rate"], true);
    // Rated 2, then changed to 4: both ratings were stored, so both count.
    for score in [2, 4] {
        citizen.send(json!({"type": "rate", "score": score})).await;
        assert_eq!(citizen.expect("rated").await["score"], score);
    }
    let (_waiting, _) = server.queued_citizen("B").await; // anna is still available: assigned
    // Wait for the once-a-second live figures.
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;

    let text = reqwest::get(server.url("/metrics")).await.expect("scrape").text().await.expect("text");
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    let value = |name: &str, label: Option<(&str, &str)>| -> f64 {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("{name} {label:?} missing in:\n{text}"))
    };
    assert_eq!(value("kommunchat_messages_relayed_total", None), 1.0);
    assert_eq!(value("kommunchat_errands_stored_total", None), 1.0);
    assert_eq!(value("kommunchat_connections", Some(("role", "citizen"))), 2.0);
    assert_eq!(value("kommunchat_connections", Some(("role", "advisor"))), 1.0);
    assert_eq!(value("kommunchat_active_chats", None), 1.0);
    assert_eq!(value("kommunchat_admission_open", None), 1.0);
    assert!(scrape.samples.iter().any(|s| s.metric == "kommunchat_queue_wait_seconds"));
    assert!(scrape.samples.iter().any(|s| s.metric == "kommunchat_storage_write_seconds"));
    // Two chats were handed to an advisor, each timed once.
    assert_eq!(value("kommunchat_assignment_latency_seconds_count", None), 2.0);
    for (score, count) in [("1", 0.0), ("2", 1.0), ("3", 0.0), ("4", 1.0), ("5", 0.0)] {
        assert_eq!(value("kommunchat_satisfaction_ratings_total", Some(("score", score))), count, "score {score}");
    }
    for name in ["kommunchat_queue_waiting", "kommunchat_queue_longest_wait_seconds"] {
        assert!(scrape.samples.iter().any(|s| s.metric == name), "{name}");
    }
    // Health.
    assert_eq!(reqwest::get(server.url("/healthz")).await.expect("h").status().as_u16(), 200);
    assert_eq!(reqwest::get(server.url("/readyz")).await.expect("r").status().as_u16(), 200);
}
