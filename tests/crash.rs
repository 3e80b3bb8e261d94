//! `kill -9` of the server process under traffic: after a restart every
//! citizen takes up the chat again, and every acknowledged message is there,
//! once. Runs the real binary.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Backend, ChildGuard, Client, TestDb};
use serde_json::json;

/// Open around the clock, every day, so the test does not depend on when it runs.
const ALWAYS_OPEN: &str = r#"
[opening_hours]
monday = ["00:00-24:00"]
tuesday = ["00:00-24:00"]
wednesday = ["00:00-24:00"]
thursday = ["00:00-24:00"]
friday = ["00:00-24:00"]
saturday = ["00:00-24:00"]
sunday = ["00:00-24:00"]
public_holidays = ["00:00-24:00"]
midsommarafton = ["00:00-24:00"]
julafton = ["00:00-24:00"]
nyarsafton = ["00:00-24:00"]
day_before_holiday = []

[chat]
max_chats_per_advisor = 10

# This test floods on purpose.
[security]
messages_per_second = 100000
message_burst = 100000
"#;

fn kommunchat(dir: &Path, db_url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kommunchat"));
    cmd.current_dir(dir)
        .env_remove("KOMMUNCHAT_CONFIG")
        .env("KOMMUNCHAT_DATABASE_URL", db_url)
        .env("KOMMUNCHAT_LOG", "warn");
    cmd
}

/// Starts the server and returns it with its address.
fn start(dir: &Path, db_url: &str) -> (ChildGuard, String) {
    start_with(dir, db_url, &[])
}

fn start_with(dir: &Path, db_url: &str, env: &[(&str, &str)]) -> (ChildGuard, String) {
    let mut child = kommunchat(dir, db_url)
        .envs(env.iter().copied())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("server starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let addr = loop {
        let line = lines.next().expect("server output").expect("utf-8");
        if let Some(addr) = line.strip_prefix("kommunchat listening on http://") {
            break addr.to_owned();
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (ChildGuard(child), addr)
}

/// `extra_env`: more settings for the server under test.
async fn kill_nine_loses_no_acknowledged_message(backend: Backend, extra_env: &[(&str, &str)]) {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("kommunchat.toml"), ALWAYS_OPEN).expect("config");
    let db = TestDb::new(backend).await;

    // The advisor account, through the CLI with the password on stdin.
    let mut add = kommunchat(dir.path(), &db.url)
        .args(["user", "add", "anna", "--role", "advisor", "--display-name", "Anna"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("user add");
    add.stdin.take().expect("stdin").write_all(b"a long advisor password\n").expect("write");
    assert!(add.wait().expect("wait").success());

    // With SQLite, messages are acknowledged from the message log; here the
    // database takes them in only once a minute (or before another write),
    // so when the server dies the log alone holds most of them.
    let mut env = vec![("KOMMUNCHAT_STORAGE__MESSAGE_LOG_APPLY_MS", "60000")];
    env.extend_from_slice(extra_env);
    let (mut server, addr) = start_with(dir.path(), &db.url, &env);
    let addr: std::net::SocketAddr = addr.parse().expect("addr");
    let http = reqwest::Client::new();
    let login = http
        .post(format!("http://{addr}/api/v1/login"))
        .json(&json!({"username": "anna", "password": "a long advisor password"}))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status().as_u16(), 200);
    let cookie = login.headers()["set-cookie"].to_str().expect("cookie").split(';').next().expect("pair").to_owned();
    let mut advisor = Client::connect(addr, "/ws/advisor", Some(&cookie)).await;
    advisor.expect("welcome").await;
    advisor.send(json!({"type": "status", "status": "available"})).await;

    // Five citizens write as fast as they can; acks are recorded as they come.
    let mut writers = Vec::new();
    let acks_so_far = Arc::new(AtomicUsize::new(0));
    for c in 0..5 {
        let acks_so_far = acks_so_far.clone();
        writers.push(tokio::spawn(async move {
            let mut citizen = Client::connect(addr, "/ws/citizen", None).await;
            citizen.expect("welcome").await;
            citizen.send(json!({"type": "start", "display_name": format!("citizen {c}")})).await;
            let queued = citizen.expect("queued").await;
            let conversation = queued["conversation_id"].as_str().expect("id").to_owned();
            let token = queued["resume_token"].as_str().expect("token").to_owned();
            let mut acked: HashMap<String, u64> = HashMap::new();
            let mut sent = 0u32;
            loop {
                if sent < 5000 {
                    for _ in 0..20 {
                        let id = format!("m{sent}");
                        let frame = json!({"type": "message", "client_msg_id": id, "text": format!("meddelande {sent} från {c}")});
                        if futures::SinkExt::send(&mut citizen.ws, tokio_tungstenite::tungstenite::Message::Text(frame.to_string().into())).await.is_err() {
                            return (conversation, token, acked);
                        }
                        sent += 1;
                    }
                }
                // Read whatever has arrived; a dead server ends the loop.
                match tokio::time::timeout(Duration::from_millis(5), citizen.next()).await {
                    Ok(Some(frame)) => {
                        if frame["type"] == "ack" {
                            acks_so_far.fetch_add(1, Ordering::Relaxed);
                            acked.insert(frame["client_msg_id"].as_str().expect("id").to_owned(), frame["seq"].as_u64().expect("seq"));
                        }
                    }
                    Ok(None) => return (conversation, token, acked),
                    Err(_) => {}
                }
            }
        }));
    }
    // Let traffic build up (however slow the machine), then kill the server
    // without warning while the citizens are still writing.
    let building = tokio::time::Instant::now();
    while acks_so_far.load(Ordering::Relaxed) < 300 && building.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.0.kill().expect("kill -9");
    server.0.wait().expect("reaped");
    let mut results = Vec::new();
    for w in writers {
        results.push(w.await.expect("writer"));
    }
    let acked_total: usize = results.iter().map(|(_, _, a)| a.len()).sum();
    assert!(acked_total > 50, "traffic was under way when the server died ({acked_total} acks)");
    // Read without starting a server: with SQLite, the database alone lacks
    // acknowledged messages that only the message log holds (checked below).
    let storage = kommunchat::storage::Storage::open(&db.url, &Default::default()).await.expect("open");
    let mut in_database_before = 0;
    for (conversation, _, _) in &results {
        in_database_before += storage.errand(conversation).await.expect("query").expect("stored").transcript.len();
    }
    storage.close().await;

    // An export with the server down writes in what only the log holds
    // first: the record holds every acknowledged message.
    let today = kommunchat::domain::hours::local_date(chrono::Utc::now());
    let (from, to) = (today.pred_opt().expect("a day before"), today.succ_opt().expect("a day after"));
    let export = kommunchat(dir.path(), &db.url)
        .args(["errands", "export", "--from", &from.to_string(), "--to", &to.to_string(), "--format", "json"])
        .output()
        .expect("export runs");
    assert!(export.status.success(), "export: {}", String::from_utf8_lossy(&export.stderr));
    let mut exported: HashMap<String, usize> = HashMap::new();
    for line in String::from_utf8(export.stdout).expect("utf-8").lines() {
        let errand: serde_json::Value = serde_json::from_str(line).expect("one errand per line");
        let lines = errand["transcript"].as_array().map_or(0, Vec::len);
        exported.insert(errand["number"].as_str().expect("number").to_owned(), lines);
    }
    let exported_total: usize = exported.values().sum();
    assert!(exported_total >= acked_total, "exported {exported_total} of {acked_total} acknowledged messages");
    if backend == Backend::Sqlite {
        assert!(
            String::from_utf8_lossy(&export.stderr).contains("from the message log written to the database first"),
            "the export says it took in the log first"
        );
    }

    // Restart: every chat is taken up again with every acknowledged message, once.
    let (server, addr) = start(dir.path(), &db.url);
    let addr: std::net::SocketAddr = addr.parse().expect("addr");
    // The advisor's console comes back to find her available, as she was.
    let mut advisor = Client::connect(addr, "/ws/advisor", Some(&cookie)).await;
    assert_eq!(advisor.expect("welcome").await["status"], "available");
    let storage = kommunchat::storage::Storage::open(&db.url, &Default::default()).await.expect("open");
    let mut in_database_after = 0;
    for (c, (conversation, token, acked)) in results.iter().enumerate() {
        let errand = storage.errand(conversation).await.expect("query").expect("conversation stored");
        in_database_after += errand.transcript.len();
        assert_eq!(errand.end_reason, None, "still open");
        let stored: HashMap<String, i64> =
            errand.transcript.iter().map(|l| (l.client_msg_id.clone().expect("client id"), l.seq)).collect();
        for (id, seq) in acked {
            assert_eq!(stored.get(id).copied(), Some(*seq as i64), "acknowledged {id} (seq {seq}) is stored");
        }
        // Seqs are unique and increasing in the stored transcript.
        let seqs: Vec<i64> = errand.transcript.iter().map(|l| l.seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));

        let mut citizen = Client::connect(addr, "/ws/citizen", None).await;
        citizen.expect("welcome").await;
        citizen.send(json!({"type": "resume", "token": token, "last_seq": 0})).await;
        let resumed = citizen.expect("resumed").await;
        assert_eq!(resumed["conversation_id"], conversation.as_str());
        let last = resumed["last_seq"].as_u64().expect("last_seq");
        let mut replayed: HashMap<String, u64> = HashMap::new();
        while replayed.len() < seqs.len() {
            let m = citizen.expect("message").await;
            replayed
                .insert(m["client_msg_id"].as_str().expect("own message").to_owned(), m["seq"].as_u64().expect("seq"));
            assert!(m["seq"].as_u64() <= Some(last));
        }
        for (id, seq) in acked {
            assert_eq!(replayed.get(id), Some(seq), "acknowledged {id} is replayed with its seq");
        }
        // The widget re-sends what it had no ack for; an acknowledged one is
        // recognised and keeps its seq.
        if let Some((id, seq)) = acked.iter().next() {
            let n: u32 = id.trim_start_matches('m').parse().expect("number");
            citizen
                .send(json!({"type": "message", "client_msg_id": id, "text": format!("meddelande {n} från {c}")}))
                .await;
            let ack = citizen.expect("ack").await;
            assert_eq!((ack["client_msg_id"].as_str(), ack["seq"].as_u64()), (Some(id.as_str()), Some(*seq)));
        }
    }
    assert_eq!(in_database_after, exported_total, "the export held what the restarted server holds");
    if backend == Backend::Sqlite {
        assert!(
            in_database_after > in_database_before,
            "the message log added what the database lacked ({in_database_before} → {in_database_after} messages)"
        );
    }
    drop(server);
}

/// Two servers on one SQLite database would both write its message log: the
/// second refuses to start, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_sqlite_database_refuses_to_start() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("kommunchat.toml"), ALWAYS_OPEN).expect("config");
    let db = TestDb::new(Backend::Sqlite).await;
    let (_first, _) = start(dir.path(), &db.url);
    let second = kommunchat(dir.path(), &db.url)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .expect("second server runs");
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("in use by another kommunchat server"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_sqlite() {
    kill_nine_loses_no_acknowledged_message(Backend::Sqlite, &[]).await;
}

/// With `synchronous = normal` the log is written without a flush, from the
/// runtime itself: a crash of the process must still lose nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_sqlite_synchronous_normal() {
    kill_nine_loses_no_acknowledged_message(Backend::Sqlite, &[("KOMMUNCHAT_STORAGE__SQLITE_SYNCHRONOUS", "normal")])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_postgres() {
    kill_nine_loses_no_acknowledged_message(Backend::Postgres, &[]).await;
}
