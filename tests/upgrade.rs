//! Upgrades: a database written by the first release (the schema of
//! migrations 0001–0002, messages in the old rowid table) is brought up to
//! date by the current server's start, and everything in it is still there
//! and still works: accounts, errands with their transcripts and secrecy
//! flags, access requests, statistics, the errand numbering, and a chat left
//! open (ended as `interrupted`, since it has no resume token to be taken up
//! with). And both backends' migrations, run to the end, give the same
//! tables and columns, since every query is written once for both.

#[macro_use]
mod common;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, TimeDelta, Utc};
use common::{Backend, TestDb, TestServer};
use kommunchat::clock::ManualClock;
use kommunchat::config::Config;
use serde_json::{Value, json};
use sqlx::Connection;
use sqlx::migrate::Migrator;

/// The last migration of the first release.
const FIRST_RELEASE: i64 = 2;
const PASSWORD: &str = "advisor password 1";
const PNR: &str = "811218-9876";
const PNR_12: &str = "198112189876";
const SERVED: &str = "6f1c2d3e-0000-4000-8000-000000000001";
const LEFT_OPEN: &str = "6f1c2d3e-0000-4000-8000-000000000002";
const ABANDONED: &str = "6f1c2d3e-0000-4000-8000-000000000003";

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("instant").to_utc()
}

fn flavour(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    }
}

/// The backend's migrations from the repository, up to `last` (all if `None`).
async fn migrations(backend: Backend, last: Option<i64>) -> Migrator {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(flavour(backend));
    let mut migrator = Migrator::new(dir).await.expect("the migrations are readable");
    let kept: Vec<_> =
        migrator.migrations.iter().filter(|m| last.is_none_or(|last| m.version <= last)).cloned().collect();
    assert!(!kept.is_empty());
    migrator.migrations = Cow::Owned(kept);
    migrator
}

/// Runs `migrator` and then `sql` (several statements) on the database at `url`.
async fn migrate_and_run(backend: Backend, url: &str, migrator: &Migrator, sql: &str) {
    match backend {
        Backend::Sqlite => {
            let url = format!("{url}?mode=rwc");
            let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("connect");
            migrator.run(&mut conn).await.expect("migrate");
            sqlx::raw_sql(sql).execute(&mut conn).await.expect("seed");
            conn.close().await.expect("close");
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
            migrator.run(&mut conn).await.expect("migrate");
            sqlx::raw_sql(sql).execute(&mut conn).await.expect("seed");
            conn.close().await.expect("close");
        }
    }
}

/// What the first release wrote in a morning: a served chat whose citizen
/// gave a personnummer, a chat still open when it was stopped, a citizen who
/// gave up in the queue, and a start refused before opening.
fn first_release_rows() -> String {
    let t0 = at("2026-11-30T09:00:00+01:00");
    let ms = |seconds: i64| (t0 + TimeDelta::seconds(seconds)).timestamp_millis();
    let hash = kommunchat::auth::hash_password(PASSWORD).expect("hash");
    let mention = kommunchat::auth::token_hash(PNR_12);
    format!(
        "INSERT INTO users (username, display_name, role, password_hash, created_at) \
           VALUES ('anna', 'Anna Andersson', 'advisor', '{hash}', {created}); \
         INSERT INTO users (username, display_name, role, password_hash, created_at) \
           VALUES ('admin', 'Admin', 'admin', '{hash}', {created}); \
         INSERT INTO conversations (id, queued_at, citizen_name, topic, language, first_assigned_at, advisor_id, \
           advisor_name, errand_number, ended_at, end_reason, outcome, category, summary, secrecy_flag) \
           VALUES ('{SERVED}', {q1}, 'Ada', 'Bygglov', 'sv', {a1}, 1, 'Anna Andersson', '2026-000001', {e1}, \
           'advisor_ended', 'served', 'Bygg och miljö', 'Frågade om attefallshus', 1); \
         INSERT INTO messages (conversation_id, seq, sender, advisor_id, sender_name, client_msg_id, body, sent_at) \
           VALUES ('{SERVED}', 1, 'citizen', NULL, 'Ada', 'c-1', 'Hej, mitt personnummer är {PNR}', {m1}); \
         INSERT INTO messages (conversation_id, seq, sender, advisor_id, sender_name, client_msg_id, body, sent_at) \
           VALUES ('{SERVED}', 2, 'advisor', 1, 'Anna Andersson', 'a-1', 'Tack, då tittar jag på attefallshuset.', {m2}); \
         INSERT INTO messages (conversation_id, seq, sender, advisor_id, sender_name, client_msg_id, body, sent_at) \
           VALUES ('{SERVED}', 3, 'citizen', NULL, 'Ada', 'c-2', 'Tack så mycket!', {m3}); \
         INSERT INTO personnummer_mentions (conversation_id, seq, number_hash) VALUES ('{SERVED}', 1, '{mention}'); \
         INSERT INTO conversations (id, queued_at, citizen_name, topic, first_assigned_at, advisor_id, advisor_name, \
           errand_number) VALUES ('{LEFT_OPEN}', {q2}, 'Bo', 'Förskola', {a2}, 1, 'Anna Andersson', '2026-000002'); \
         INSERT INTO messages (conversation_id, seq, sender, advisor_id, sender_name, client_msg_id, body, sent_at) \
           VALUES ('{LEFT_OPEN}', 1, 'citizen', NULL, 'Bo', 'c-1', 'Hur söker jag förskoleplats?', {m4}); \
         INSERT INTO conversations (id, queued_at, citizen_name, ended_at, end_reason, outcome) \
           VALUES ('{ABANDONED}', {q3}, 'Cecilia', {e3}, 'abandoned', 'abandoned'); \
         INSERT INTO errand_counters (year, last) VALUES (2026, 2); \
         INSERT INTO queue_events (conversation_id, kind, at, detail) VALUES (NULL, 'refused', {r}, 'closed');",
        created = ms(-86_400),
        q1 = ms(0),
        a1 = ms(30),
        m1 = ms(40),
        m2 = ms(70),
        m3 = ms(90),
        e1 = ms(600),
        q2 = ms(120),
        a2 = ms(150),
        m4 = ms(160),
        q3 = ms(200),
        e3 = ms(260),
        r = ms(-600),
    )
}

fn texts(errand: &Value) -> Vec<(String, bool)> {
    errand["transcript"]
        .as_array()
        .expect("a transcript")
        .iter()
        .map(|l| (l["text"].as_str().expect("text").to_owned(), l["personnummer"].as_bool().expect("flag")))
        .collect()
}

async fn a_first_release_database_comes_through_an_upgrade_whole(backend: Backend) {
    let db = TestDb::new(backend).await;
    migrate_and_run(backend, &db.url, &migrations(backend, Some(FIRST_RELEASE)).await, &first_release_rows()).await;

    let mut config = Config::default();
    config.database_url = db.url.clone();
    let clock = std::sync::Arc::new(ManualClock::new(at("2026-11-30T10:00:00+01:00")));
    let mut server = TestServer::start_on(db, config, clock).await;

    // The accounts, with their passwords.
    let anna = server.login("anna", PASSWORD).await;
    let admin = server.login("admin", PASSWORD).await;

    // The errands: the served one as it was, the one left open ended as
    // interrupted with its transcript; the abandoned chat is no errand.
    let (status, list) = server.get_json_as(&anna, "/api/v1/errands").await;
    assert_eq!(status, 200, "{list}");
    let numbers: Vec<&str> =
        list["errands"].as_array().expect("list").iter().filter_map(|e| e["number"].as_str()).collect();
    assert_eq!(numbers, ["2026-000002", "2026-000001"], "newest first: {list}");

    let (_, served) = server.get_json_as(&anna, "/api/v1/errands/2026-000001").await;
    assert_eq!(served["secrecy_review"], true);
    assert_eq!(served["category"], "Bygg och miljö");
    assert_eq!(served["summary"], "Frågade om attefallshus");
    assert_eq!(served["end_reason"], "advisor_ended");
    assert_eq!(
        texts(&served),
        [
            (format!("Hej, mitt personnummer är {PNR}"), true),
            ("Tack, då tittar jag på attefallshuset.".to_owned(), false),
            ("Tack så mycket!".to_owned(), false),
        ]
    );
    let (_, found) = server.get_json_as(&anna, "/api/v1/errands?q=attefallshuset").await;
    assert_eq!(found["total"], 1, "the moved messages are searched: {found}");

    let (_, interrupted) = server.get_json_as(&anna, "/api/v1/errands/2026-000002").await;
    assert_eq!(interrupted["end_reason"], "interrupted", "{interrupted}");
    assert_eq!(texts(&interrupted), [("Hur söker jag förskoleplats?".to_owned(), false)]);

    // An access request still finds the mention.
    let response = reqwest::Client::new()
        .post(server.url("/api/v1/errands/access-request"))
        .header("cookie", &admin)
        .json(&json!({"personnummer": PNR}))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status().as_u16(), 200);
    let lines: Vec<Value> =
        response.text().await.expect("text").lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["number"], "2026-000001");

    // The morning's statistics.
    let (status, day) = server.get_json_as(&admin, "/api/v1/stats?from=2026-11-30&to=2026-11-30").await;
    assert_eq!(status, 200, "{day}");
    assert_eq!(
        (day["offered"].as_u64(), day["served"].as_u64(), day["abandoned"].as_u64()),
        (Some(3), Some(2), Some(1))
    );
    assert_eq!(day["refused_closed"], 1);
    assert_eq!(day["first_response_seconds"]["mean"], 40.0, "from the moved advisor message: {day}");

    // A new chat goes on with the year's numbering, into the new tables.
    let mut advisor = server.advisor_session("anna", PASSWORD, true).await;
    let (mut citizen, _) = server.queued_citizen("Dag").await;
    let assigned = advisor.expect("assigned").await;
    citizen.expect("assigned").await;
    let id = assigned["chat"]["conversation_id"].as_str().expect("id").to_owned();
    common::say(&mut citizen, json!({"type": "message", "client_msg_id": "c-1", "text": "Hej igen"})).await;
    advisor.send(json!({"type": "end", "conversation_id": id, "category": "Övrigt"})).await;
    let ended = citizen.expect("ended").await;
    let number = ended["errand_number"].as_str().expect("an errand number").to_owned();
    assert_eq!(number, "2026-000003");
    server.stop().await;

    // And a second start finds nothing left to migrate or mend.
    server.restart().await;
    let anna = server.login("anna", PASSWORD).await;
    let (_, new) = server.get_json_as(&anna, &format!("/api/v1/errands/{number}")).await;
    assert_eq!(texts(&new), [("Hej igen".to_owned(), false)]);
    let (_, list) = server.get_json_as(&anna, "/api/v1/errands").await;
    assert_eq!(list["total"], 3);
    server.stop().await;
}

on_both_backends!(a_first_release_database_comes_through_an_upgrade_whole);

/// Table → its columns, as the database describes itself after every migration.
async fn schema(backend: Backend) -> BTreeMap<String, Vec<String>> {
    let db = TestDb::new(backend).await;
    migrate_and_run(backend, &db.url, &migrations(backend, None).await, "SELECT 1").await;
    let rows: Vec<(String, String)> = match backend {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&db.url).await.expect("connect");
            sqlx::query_as(
                "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p \
                 WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name NOT LIKE '_sqlx_%' ORDER BY m.name, p.cid",
            )
            .fetch_all(&mut conn)
            .await
            .expect("schema")
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&db.url).await.expect("connect");
            sqlx::query_as(
                "SELECT table_name::text, column_name::text FROM information_schema.columns \
                 WHERE table_schema = 'public' AND table_name NOT LIKE '_sqlx_%' ORDER BY table_name, ordinal_position",
            )
            .fetch_all(&mut conn)
            .await
            .expect("schema")
        }
    };
    let mut tables: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (table, column) in rows {
        tables.entry(table).or_default().push(column);
    }
    for columns in tables.values_mut() {
        columns.sort();
    }
    tables
}

#[tokio::test]
async fn both_backends_migrate_to_the_same_tables_and_columns() {
    let sqlite = schema(Backend::Sqlite).await;
    let postgres = schema(Backend::Postgres).await;
    assert!(sqlite.contains_key("messages") && sqlite.contains_key("conversations"), "{sqlite:?}");
    assert_eq!(sqlite, postgres, "migrations/sqlite and migrations/postgres have drifted apart");
}
