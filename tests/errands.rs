//! Errands as public records: registry, personnummer flags, release copies,
//! streaming export in constant memory, retention, access requests.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use common::{Backend, TestDb, TestServer};
use kommunchat::domain::chat::{Committed, Outcome, StoreOp};
use kommunchat::protocol::ws::{EndReason, Sender};
use kommunchat::storage::Storage;
use serde_json::{Value, json};
use uuid::Uuid;

const PNR: &str = "811218-9876";
const PNR_12: &str = "198112189876";

/// Stores a finished errand directly: joined at `at`, one message per text.
async fn seed(storage: &Storage, at: DateTime<Utc>, category: &str, texts: &[&str]) -> String {
    let ops = seed_ops(at, category, texts);
    let results = storage.apply(&ops).await.expect("seed");
    results
        .iter()
        .find_map(|r| match r {
            Committed::Assigned { errand_number, .. } => Some(errand_number.clone()),
            _ => None,
        })
        .expect("an errand number")
}

fn seed_ops(at: DateTime<Utc>, category: &str, texts: &[&str]) -> Vec<StoreOp> {
    let id = Uuid::new_v4();
    let mut ops = vec![
        StoreOp::Created {
            conversation: id,
            at,
            token_hash: kommunchat::auth::token_hash(&kommunchat::auth::random_token()),
            queue_place: 0,
            citizen_name: Some("Ada".into()),
            topic: None,
            language: None,
        },
        StoreOp::Assigned {
            conversation: id,
            at: at + TimeDelta::seconds(10),
            advisor: 1,
            advisor_name: "Anna".into(),
            queued_at: at,
            errand_year: 2026,
            first: true,
        },
    ];
    for (i, text) in texts.iter().enumerate() {
        ops.push(StoreOp::Message {
            conversation: id,
            seq: i as u64 + 1,
            sender: if i % 2 == 0 { Sender::Citizen } else { Sender::Advisor },
            advisor: (i % 2 == 1).then_some(1),
            sender_name: Some(if i % 2 == 0 { "Ada" } else { "Anna" }.into()),
            client_msg_id: Some(format!("m{i}").into()),
            text: (*text).into(),
            at: at + TimeDelta::seconds(20 + i as i64),
        });
    }
    ops.push(StoreOp::Ended {
        wrap_up: false,
        conversation: id,
        at: at + TimeDelta::seconds(300),
        reason: EndReason::AdvisorEnded,
        outcome: Outcome::Served,
        category: Some(category.into()),
        summary: Some(format!("Sammanfattning om {category}")),
    });
    ops
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("instant").to_utc()
}

async fn registry_release_and_access(backend: Backend) {
    let server = TestServer::start_with(backend, |_| {}).await;
    let storage = server.storage();
    let bygg = seed(
        storage,
        at("2026-11-02T09:00:00+01:00"),
        "Bygga och bo",
        &["Hej, jag undrar om bygglov för ett Attefallshus", "Hej! Vad är fastighetsbeteckningen?"],
    )
    .await;
    let secret = seed(
        storage,
        at("2026-11-03T10:00:00+01:00"),
        "Omsorg och stöd",
        &[
            &format!("Mitt personnummer är {PNR} och min mejl är ada@example.se"),
            "Tack, jag noterar det.",
            &format!("Igen: {PNR_12}, ring 070-123 45 67"),
        ],
    )
    .await;
    let other = seed(
        storage,
        at("2026-11-20T14:00:00+01:00"),
        "Övrigt",
        &["Var ligger återvinningscentralen? Hälsningar ÅSA MÜLLER-ØSTERGÅRD"],
    )
    .await;

    server.add_user("chef", "Chefen", "admin", "admin password 123").await;
    let admin = server.login("chef", "admin password 123").await;
    server.add_user("anna", "Anna", "advisor", "advisor password 1").await;
    let advisor = server.login("anna", "advisor password 1").await;

    // Search.
    let (status, all) = server.get_json_as(&advisor, "/api/v1/errands").await;
    assert_eq!(status, 200);
    assert_eq!(all["total"], 3);
    let numbers: Vec<&str> =
        all["errands"].as_array().expect("list").iter().map(|e| e["number"].as_str().expect("n")).collect();
    assert_eq!(numbers, [other.as_str(), secret.as_str(), bygg.as_str()], "newest first");
    assert!(all["errands"][0].get("transcript").is_none(), "the list holds registry entries only");
    for (query, expected) in [
        (format!("number={bygg}"), vec![bygg.as_str()]),
        ("q=attefallshus".to_string(), vec![bygg.as_str()]),
        ("q=fastighetsbeteckningen".to_string(), vec![bygg.as_str()]),
        ("q=sammanfattning om övrigt".to_string(), vec![other.as_str()]),
        // Capitals beyond ASCII match whatever the alphabet.
        ("q=åsa müller-østergård".to_string(), vec![other.as_str()]),
        ("q=ÅSA Müller".to_string(), vec![other.as_str()]),
        ("q=ATTEFALLSHUS".to_string(), vec![bygg.as_str()]),
        ("category=Omsorg och stöd".to_string(), vec![secret.as_str()]),
        ("advisor=Anna&from=2026-11-03&to=2026-11-03".to_string(), vec![secret.as_str()]),
        ("from=2026-11-04".to_string(), vec![other.as_str()]),
        ("flagged=true".to_string(), vec![secret.as_str()]),
        ("q=100%".to_string(), vec![]),
    ] {
        let (status, found) = server
            .get_json_as(
                &advisor,
                &format!("/api/v1/errands?{}", query.replace(' ', "%20").replace('%', "%25").replace("%2520", "%20")),
            )
            .await;
        assert_eq!(status, 200, "{query}");
        let got: Vec<&str> =
            found["errands"].as_array().expect("list").iter().map(|e| e["number"].as_str().expect("n")).collect();
        assert_eq!(got, expected, "{query}");
    }
    for bad in ["from=yesterday", "limit=0", "limit=501", "offset=-1", "colour=blue"] {
        let (status, _) = server.get_json_as(&advisor, &format!("/api/v1/errands?{bad}")).await;
        assert_eq!(status, 400, "{bad}");
    }
    let anonymous = reqwest::get(server.url("/api/v1/errands")).await.expect("get");
    assert_eq!(anonymous.status().as_u16(), 401);

    // One errand in full, with the personnummer lines marked.
    let (status, full) = server.get_json_as(&advisor, &format!("/api/v1/errands/{secret}")).await;
    assert_eq!(status, 200);
    assert_eq!(full["secrecy_review"], true);
    assert_eq!(full["category"], "Omsorg och stöd");
    let flags: Vec<bool> =
        full["transcript"].as_array().expect("t").iter().map(|l| l["personnummer"].as_bool().expect("b")).collect();
    assert_eq!(flags, [true, false, true]);
    let (status, _) = server.get_json_as(&advisor, "/api/v1/errands/2026-999999").await;
    assert_eq!(status, 404);

    // The release copy masks every occurrence.
    let text = reqwest::Client::new()
        .get(server.url(&format!("/api/v1/errands/{secret}/release")))
        .header("cookie", &advisor)
        .send()
        .await
        .expect("release")
        .text()
        .await
        .expect("text");
    assert!(!text.contains("9876"), "{text}");
    assert_eq!(text.matches("[personnummer maskerat]").count(), 2);
    assert!(text.contains("ada@example.se"), "e-mail kept unless asked");
    assert!(!text.contains("Ada:"), "the citizen's name is left out");
    let (_, masked) = server
        .get_json_as(&advisor, &format!("/api/v1/errands/{secret}/release?format=json&mask_email=true&mask_phone=true"))
        .await;
    let body = masked.to_string();
    for leak in ["9876", "ada@example.se", "070-123 45 67"] {
        assert!(!body.contains(leak), "{leak} in {body}");
    }
    assert_eq!(masked["citizen_name"], Value::Null);

    // Access request: every conversation mentioning the number, typed any way.
    for typed in [PNR, PNR_12, "19811218-9876"] {
        let r = reqwest::Client::new()
            .post(server.url("/api/v1/errands/access-request"))
            .header("cookie", &admin)
            .json(&json!({"personnummer": typed}))
            .send()
            .await
            .expect("post");
        assert_eq!(r.status().as_u16(), 200);
        let lines: Vec<Value> =
            r.text().await.expect("text").lines().map(|l| serde_json::from_str(l).expect("json line")).collect();
        assert_eq!(lines.len(), 1, "{typed}");
        assert_eq!(lines[0]["number"], secret.as_str());
    }
    let invalid = reqwest::Client::new()
        .post(server.url("/api/v1/errands/access-request"))
        .header("cookie", &admin)
        .json(&json!({"personnummer": "811218-9875"}))
        .send()
        .await
        .expect("post");
    assert_eq!(invalid.status().as_u16(), 400);
    let not_admin = reqwest::Client::new()
        .post(server.url("/api/v1/errands/access-request"))
        .header("cookie", &advisor)
        .json(&json!({"personnummer": PNR}))
        .send()
        .await
        .expect("post");
    assert_eq!(not_admin.status().as_u16(), 403);

    // Export over HTTP: JSON Lines and CSV.
    let jsonl = reqwest::Client::new()
        .get(server.url("/api/v1/errands/export?from=2026-11-01&to=2026-11-30"))
        .header("cookie", &admin)
        .send()
        .await
        .expect("export")
        .text()
        .await
        .expect("text");
    let exported: Vec<Value> = jsonl.lines().map(|l| serde_json::from_str(l).expect("line")).collect();
    assert_eq!(exported.len(), 3);
    assert_eq!(exported[0]["number"], bygg.as_str(), "oldest first");
    assert_eq!(exported[1]["transcript"].as_array().expect("t").len(), 3);
    let csv = reqwest::Client::new()
        .get(server.url("/api/v1/errands/export?from=2026-11-01&to=2026-11-02&format=csv"))
        .header("cookie", &admin)
        .send()
        .await
        .expect("export")
        .text()
        .await
        .expect("text");
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(
        rows[0],
        "errand_number,date,queued_at,ended_at,category,advisor_name,summary,secrecy_review,seq,sender,sent_at,text"
    );
    assert_eq!(rows.len(), 3, "a header and one row per message");
    assert!(rows[1].starts_with(&format!("{bygg},2026-11-02,")));
}

/// Stores old errands and checks that purge removes exactly those past their period.
async fn retention_removes_exactly_what_is_due(backend: Backend) {
    let db = TestDb::new(backend).await;
    let storage = Storage::open(&db.url, &Default::default()).await.expect("open");
    let now = at("2026-11-27T12:00:00+01:00");
    let days_ago = |d: i64| now - TimeDelta::days(d) - TimeDelta::seconds(300);
    let simple_old = seed(&storage, days_ago(61), "Allmän fråga", &["enkel fråga"]).await; // 60-day category: due
    let simple_new = seed(&storage, days_ago(59), "Allmän fråga", &["enkel fråga"]).await;
    let other_old = seed(&storage, days_ago(400), "Bygga och bo", &[&format!("pnr {PNR}")]).await; // default 365: due
    let other_new = seed(&storage, days_ago(300), "Bygga och bo", &["bygglov"]).await;
    let retention = kommunchat::config::RetentionConfig {
        default_days: 365,
        interval_minutes: 60,
        categories: [("Allmän fråga".to_string(), 60)].into(),
    };
    let preview = kommunchat::errands::run_retention(&storage, &retention, now, true).await.expect("dry run");
    let mut due: Vec<String> = preview.iter().filter_map(|c| c.errand_number.clone()).collect();
    due.sort();
    let mut expected = vec![simple_old.clone(), other_old.clone()];
    expected.sort();
    assert_eq!(due, expected);
    assert!(storage.errand(&simple_old).await.expect("q").is_some(), "a dry run deletes nothing");

    kommunchat::errands::run_retention(&storage, &retention, now, false).await.expect("purge");
    for gone in [&simple_old, &other_old] {
        assert!(storage.errand(gone).await.expect("q").is_none(), "{gone} is deleted");
    }
    for kept in [&simple_new, &other_new] {
        let errand = storage.errand(kept).await.expect("q").expect("kept");
        assert_eq!(errand.transcript.len(), 1);
    }
    // Nothing of the deleted transcripts remains, and the numbers cannot be found.
    let (list, total) = storage
        .list_errands(&kommunchat::storage::ErrandFilter { limit: 100, ..Default::default() })
        .await
        .expect("list");
    assert_eq!(total, 2);
    assert!(list.iter().all(|e| e.errand_number.as_deref() != Some(other_old.as_str())));
    let (tx, mut rx) = tokio::sync::mpsc::channel(10);
    let selection = kommunchat::storage::Selection::Mentioning { number_hash: kommunchat::auth::token_hash(PNR_12) };
    storage.export(&selection, tx).await.expect("export");
    assert!(rx.recv().await.is_none(), "the purged mention is gone too");
    // A second run finds nothing more.
    assert!(kommunchat::errands::run_retention(&storage, &retention, now, false).await.expect("again").is_empty());
    // Statistics keep the anonymous rows.
    let facts = storage.conversation_facts(now - TimeDelta::days(500), now).await.expect("facts");
    assert_eq!(facts.len(), 4);
}

/// One batch holding two errands whose messages alternate (as the writer
/// takes them from several chats at once): each answer belongs to the write
/// in its place, and each transcript holds its own messages in order, with
/// the personnummer flag on the errand that mentioned one.
async fn interleaved_messages_keep_their_answers_and_transcripts(backend: Backend) {
    let db = TestDb::new(backend).await;
    let storage = Storage::open(&db.url, &Default::default()).await.expect("open");
    let when = at("2026-11-02T10:00:00+01:00");
    let a3 = format!("a3 {PNR}");
    let (first_texts, second_texts) = (["a1", "a2", a3.as_str(), "a4"], ["b1", "b2", "b3", "b4"]);
    let first = seed_ops(when, "Skola", &first_texts);
    let second = seed_ops(when, "Bygga och bo", &second_texts);
    // `seed_ops` gives creation, assignment, the messages, the end. Here: both
    // errands' creation and assignment, then their messages alternating (the
    // second errand's first), then both ends.
    let set_up = |ops: &[StoreOp]| ops[..2].to_vec();
    let messages = |ops: &[StoreOp]| ops[2..ops.len() - 1].to_vec();
    let end = |ops: &[StoreOp]| ops[ops.len() - 1].clone();
    let mut ops: Vec<StoreOp> = [set_up(&first), set_up(&second)].concat();
    for (a, b) in messages(&first).into_iter().zip(messages(&second)) {
        ops.extend([b, a]);
    }
    ops.extend([end(&first), end(&second)]);

    let results = storage.apply(&ops).await.expect("apply");
    assert_eq!(results.len(), ops.len());
    for (op, result) in ops.iter().zip(&results) {
        if let StoreOp::Message { conversation, seq, .. } = op {
            assert_eq!(
                result,
                &Committed::Message { conversation: *conversation, seq: *seq },
                "the answer in its place"
            );
        }
    }
    let conversation_of = |ops: &[StoreOp]| match &ops[0] {
        StoreOp::Created { conversation, .. } => conversation.to_string(),
        other => panic!("not a creation: {other:?}"),
    };
    for (own, texts, flagged) in
        [(conversation_of(&first), first_texts, true), (conversation_of(&second), second_texts, false)]
    {
        let errand = storage.errand(&own).await.expect("query").expect("stored");
        let stored: Vec<(i64, &str)> = errand.transcript.iter().map(|l| (l.seq, l.body.as_str())).collect();
        let expected: Vec<(i64, &str)> = texts.iter().enumerate().map(|(i, t)| (i as i64 + 1, *t)).collect();
        assert_eq!(stored, expected);
        assert_eq!(errand.secrecy_flag, flagged, "secrecy review flag of {own}");
    }
}

/// Batches of nothing but chat messages, small and larger than one
/// multi-row INSERT of SQLite's (PostgreSQL takes any number in one
/// statement, its columns bound as arrays): every field of every message
/// comes back as written, absent ones absent, in each chat's own order.
async fn message_batches_are_stored_field_for_field(backend: Backend) {
    let db = TestDb::new(backend).await;
    let storage = Storage::open(&db.url, &Default::default()).await.expect("open");
    let when = at("2026-11-02T10:00:00+01:00");
    let chats: Vec<Vec<StoreOp>> = (0..2).map(|_| seed_ops(when, "Skola", &[])).collect();
    let ids: Vec<Uuid> = chats
        .iter()
        .map(|ops| match &ops[0] {
            StoreOp::Created { conversation, .. } => *conversation,
            other => panic!("not a creation: {other:?}"),
        })
        .collect();
    let set_up: Vec<StoreOp> = chats.iter().flat_map(|ops| ops[..2].to_vec()).collect();
    storage.apply(&set_up).await.expect("set up");

    let message = |chat: usize, seq: u64| {
        let n = seq as usize;
        StoreOp::Message {
            conversation: ids[chat],
            seq,
            sender: match n % 3 {
                0 => Sender::Citizen,
                1 => Sender::Advisor,
                _ => Sender::System,
            },
            advisor: (n % 3 == 1).then_some(1),
            sender_name: n.is_multiple_of(2).then(|| format!("Åsa \"{n}\"").into()),
            client_msg_id: (!n.is_multiple_of(5)).then(|| format!("c-{chat}-{n}").into()),
            text: format!("meddelande {n} i chatt {chat}: räksmörgås, 'citat', \\, {{}} och 🙂").into(),
            at: when + TimeDelta::milliseconds(1_000 + n as i64),
        }
    };
    // Three messages, then 600 alternating between the chats.
    let small: Vec<StoreOp> = (1..=3).map(|seq| message(0, seq)).collect();
    let large: Vec<StoreOp> = (4..=303).flat_map(|seq| [message(1, seq - 3), message(0, seq)]).collect();
    for batch in [&small, &large] {
        let results = storage.apply(batch).await.expect("apply");
        let expected: Vec<Committed> = batch
            .iter()
            .map(|op| match op {
                StoreOp::Message { conversation, seq, .. } => {
                    Committed::Message { conversation: *conversation, seq: *seq }
                }
                other => panic!("not a message: {other:?}"),
            })
            .collect();
        assert_eq!(results, expected, "each answer in its place");
    }
    for (chat, id) in ids.iter().enumerate() {
        let stored = storage.transcript(&id.to_string()).await.expect("transcript");
        let written: Vec<&StoreOp> = small
            .iter()
            .chain(&large)
            .filter(|op| matches!(op, StoreOp::Message { conversation, .. } if conversation == id))
            .collect();
        assert_eq!(stored.len(), if chat == 0 { 303 } else { 300 });
        assert_eq!(stored.len(), written.len());
        for (line, op) in stored.iter().zip(written) {
            let StoreOp::Message { seq, sender, sender_name, client_msg_id, text, at, .. } = op else { unreachable!() };
            assert_eq!(line.seq, *seq as i64);
            assert_eq!(line.sender, sender.as_str());
            assert_eq!(line.sender_name.as_deref(), sender_name.as_deref(), "seq {seq}");
            assert_eq!(line.client_msg_id.as_deref(), client_msg_id.as_deref(), "seq {seq}");
            assert_eq!(line.body, **text);
            assert_eq!(line.sent_at, *at);
        }
    }
}

#[tokio::test]
async fn message_batches_sqlite() {
    message_batches_are_stored_field_for_field(Backend::Sqlite).await;
}

#[tokio::test]
async fn message_batches_postgres() {
    message_batches_are_stored_field_for_field(Backend::Postgres).await;
}

#[tokio::test]
async fn interleaved_messages_sqlite() {
    interleaved_messages_keep_their_answers_and_transcripts(Backend::Sqlite).await;
}

#[tokio::test]
async fn interleaved_messages_postgres() {
    interleaved_messages_keep_their_answers_and_transcripts(Backend::Postgres).await;
}

#[tokio::test]
async fn registry_sqlite() {
    registry_release_and_access(Backend::Sqlite).await;
}

#[tokio::test]
async fn registry_postgres() {
    registry_release_and_access(Backend::Postgres).await;
}

#[tokio::test]
async fn retention_sqlite() {
    retention_removes_exactly_what_is_due(Backend::Sqlite).await;
}

#[tokio::test]
async fn retention_postgres() {
    retention_removes_exactly_what_is_due(Backend::Postgres).await;
}

#[tokio::test]
async fn the_console_sees_personnummer_flags_live() {
    let server = TestServer::start().await;
    let mut advisor = server.advisor("anna", true).await;
    let (mut citizen, _) = server.queued_citizen("Ada").await;
    citizen.expect("assigned").await;
    advisor.expect("assigned").await;
    citizen.send(json!({"type": "message", "client_msg_id": "1", "text": format!("mitt nummer: {PNR}")})).await;
    citizen.send(json!({"type": "message", "client_msg_id": "2", "text": "ring 042-10 50 00"})).await;
    let first = advisor.expect("message").await;
    let second = advisor.expect("message").await;
    assert_eq!(first["personnummer"], true);
    assert!(second.get("personnummer").is_none());
}

/// Reads the resident set of a process now, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Runs `kommunchat errands export` and returns (lines written, peak RSS seen in KiB).
fn export_with_peak(dir: &std::path::Path, db_url: &str) -> (usize, u64) {
    use std::io::Read;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kommunchat"))
        .current_dir(dir)
        .env("KOMMUNCHAT_DATABASE_URL", db_url)
        .env_remove("KOMMUNCHAT_CONFIG")
        .args(["errands", "export", "--from", "2026-01-01", "--to", "2026-12-31", "--format", "json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("export runs");
    let pid = child.id();
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut lines = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = stdout.read(&mut buf).expect("read");
            if n == 0 {
                return lines;
            }
            lines += buf[..n].iter().filter(|b| **b == b'\n').count();
        }
    });
    let mut peak = 0;
    while child.try_wait().expect("wait").is_none() {
        peak = peak.max(rss_kib(pid).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(2));
    }
    (reader.join().expect("reader"), peak)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_of_many_errands_runs_in_constant_memory() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}/k.db", dir.path().display());
    let fast = kommunchat::config::StorageConfig {
        sqlite_synchronous: kommunchat::config::SqliteSynchronous::Normal,
        ..Default::default()
    };
    let storage = Arc::new(Storage::open(&url, &fast).await.expect("open"));
    // About 5.4 KB of JSON per errand, so that the 9,000 errands added below
    // are some 49 MB of output: far more than SQLite may cache (see the end).
    let long = "Ett längre meddelande om en bygglovsfråga, med lite text så att varje ärende väger något. ".repeat(12);
    let texts = [long.as_str(), long.as_str(), long.as_str(), long.as_str()];
    let start = at("2026-03-02T09:00:00+01:00");
    let mut count = 0;
    let mut peaks = Vec::new();
    for target in [1_000usize, 10_000] {
        while count < target {
            let mut ops = Vec::new();
            for _ in 0..500 {
                ops.extend(seed_ops(start + TimeDelta::minutes(count as i64), "Övrigt", &texts));
                count += 1;
            }
            storage.apply(&ops).await.expect("seed");
        }
        let (lines, peak) = export_with_peak(dir.path(), &url);
        assert_eq!(lines, target);
        peaks.push(peak);
    }
    assert!(peaks.iter().all(|p| *p > 1024), "the peaks were measured: {peaks:?}");
    // Ten times the errands (some 49 MB more output) must not need ten times
    // the memory. What may grow is SQLite's page cache, as a larger database
    // gives it more to hold: the process's connections draw on one pool of
    // pages, at most the sum of their cache sizes (the writer's 16 MiB and
    // 2 MiB for each of four readers), 24 MiB. An export that held its
    // output, or the errands behind it, would need more than those 49 MB.
    let grew_kib = peaks[1].saturating_sub(peaks[0]);
    assert!(grew_kib < 32 * 1024, "export memory grew by {grew_kib} KiB from 1,000 to 10,000 errands ({peaks:?})");
}

#[tokio::test]
async fn the_command_line_release_purge_and_access_request() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}/k.db", dir.path().display());
    let storage = Storage::open(&url, &Default::default()).await.expect("open");
    let old = Utc::now() - TimeDelta::days(100);
    let number = seed(&storage, old, "Allmän fråga", &[&format!("jag har {PNR}"), "ok", "mejla ada@example.se"]).await;
    let recent = seed(&storage, Utc::now() - TimeDelta::days(1), "Allmän fråga", &["hej"]).await;
    storage.close().await;
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kommunchat"));
        cmd.current_dir(dir.path()).env("KOMMUNCHAT_DATABASE_URL", &url).env_remove("KOMMUNCHAT_CONFIG").args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, text, _) = run(&["errands", "release", &number, "--mask-email"], &[]);
    assert!(ok);
    assert!(text.starts_with(&format!("Kopia av allmän handling — ärende {number}")));
    assert!(!text.contains("9876") && !text.contains("ada@example.se"), "{text}");
    let (ok, _, err) = run(&["errands", "release", "2026-999999"], &[]);
    assert!(!ok && err.contains("no errand 2026-999999"));

    let (ok, lines, _) = run(&["errands", "access-request", PNR_12], &[]);
    assert!(ok);
    assert_eq!(lines.lines().count(), 1);
    assert!(lines.contains(&number));

    let retention = [("KOMMUNCHAT_RETENTION__CATEGORIES", "{ \"Allmän fråga\" = 30 }")];
    let (ok, preview, err) = run(&["errands", "purge", "--dry-run"], &retention);
    assert!(ok, "{err}");
    assert!(preview.starts_with("would delete 1 conversation(s)"), "{preview}");
    assert!(preview.contains(&number) && !preview.contains(&recent));
    let (ok, done, _) = run(&["errands", "purge"], &retention);
    assert!(ok);
    assert!(done.starts_with("deleted 1 conversation(s)"));
    let (ok, again, _) = run(&["errands", "purge", "--dry-run"], &retention);
    assert!(ok && again.starts_with("would delete 0"));
    let (ok, _, _) = run(&["errands", "release", &number], &[]);
    assert!(!ok, "the purged errand is gone");
}
