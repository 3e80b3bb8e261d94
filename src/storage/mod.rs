//! Storage: one interface, two backends (embedded SQLite, PostgreSQL).
//!
//! Both backends run the same SQL text: `$1`-style parameters (SQLite accepts
//! them too), milliseconds since the epoch as 64-bit integers, text ids. The
//! [`on_db!`] macro writes each query once and runs it against whichever pool
//! is configured. Schemas live in `migrations/sqlite` and `migrations/postgres`.

mod message_log;
mod writer;

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Datelike, TimeZone, Utc};
use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

pub use message_log::{MessageLog, MessageLogError, Unapplied};
pub use writer::{OpenLogError, StoreWriter, WriterHandle, open_message_log};

use crate::config::{RetentionConfig, SqliteSynchronous as SyncSetting, StorageConfig};
use crate::domain::chat::{
    AdvisorProfile, Committed, ConversationId, RecentlyEnded, RestoredConversation, StoreOp, UserId,
};
use crate::domain::stats::{ConversationFacts, RefusalFact};
use crate::protocol::ws::{EndReason, MessageView, Sender};
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrating the schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Setup(String),
}

impl StorageError {
    /// True when the row already exists (a unique constraint).
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StorageError::Database(sqlx::Error::Database(e)) if e.is_unique_violation())
    }
}

#[derive(Debug, Clone)]
enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The group-commit writer's own connection, held for as long as it runs.
/// Taking one from the pool for every batch cost a spawned task each time
/// (sqlx returns a connection to its pool from a task of its own), and with
/// SQLite's one-connection writer pool the next batch waited for that task.
#[derive(Debug)]
pub struct WriterConnection(WriterConn);

#[derive(Debug)]
enum WriterConn {
    Sqlite(sqlx::pool::PoolConnection<sqlx::Sqlite>),
    Postgres(sqlx::pool::PoolConnection<sqlx::Postgres>),
}

/// Runs `$body` with `$conn` bound to the writer's connection, whichever backend it is.
macro_rules! on_writer {
    ($conn:expr, $c:ident => $body:expr) => {
        match &mut $conn.0 {
            WriterConn::Sqlite($c) => $body,
            WriterConn::Postgres($c) => $body,
        }
    };
}

/// Runs `$body` with `$pool` bound to the configured pool, whichever backend it is.
macro_rules! on_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Db::Sqlite($pool) => $body,
            Db::Postgres($pool) => $body,
        }
    };
}

/// The year's next errand number, `YYYY-NNNNNN`, counted in the transaction
/// `$tx` (a macro: the connection type differs per backend).
macro_rules! next_errand_number {
    ($tx:expr, $year:expr) => {{
        let year: i32 = $year;
        let last: i64 = sqlx::query(
            "INSERT INTO errand_counters (year, last) VALUES ($1, 1) \
             ON CONFLICT (year) DO UPDATE SET last = errand_counters.last + 1 RETURNING last",
        )
        .bind(i64::from(year))
        .fetch_one($tx)
        .await?
        .try_get("last")?;
        format!("{year}-{last:06}")
    }};
}

/// A handle to the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Storage {
    db: Db,
    /// Where the group-commit writer writes. For SQLite, a pool of exactly one
    /// connection that stays open: its page cache stays warm (a pooled
    /// connection finds its cache stale whenever another one has written, and
    /// reads the pages again), and there is no pool to wait on. For
    /// PostgreSQL, the same pool as `db`.
    writes: Db,
    /// Set by the checkpointer when the SQLite log has grown past
    /// [`LOG_RESTART_FRAMES`]; the writer then finishes the checkpoint itself.
    log_restart: Arc<AtomicBool>,
    /// The SQLite database's file (none in memory or on PostgreSQL).
    sqlite_file: Option<std::path::PathBuf>,
}

/// A user account as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: i64,
    pub username: String,
    pub display_name: String,
    pub role: String,
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
}

/// One stored message of a transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranscriptLine {
    pub seq: i64,
    pub sender: String,
    pub sender_name: Option<String>,
    pub client_msg_id: Option<String>,
    pub body: String,
    pub sent_at: DateTime<Utc>,
}

/// A conversation with its errand fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrandRecord {
    pub conversation_id: String,
    pub errand_number: Option<String>,
    pub queued_at: DateTime<Utc>,
    pub first_assigned_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub advisor_name: Option<String>,
    pub citizen_name: Option<String>,
    pub topic: Option<String>,
    pub category: Option<String>,
    pub summary: Option<String>,
    pub end_reason: Option<String>,
    pub outcome: Option<String>,
    /// A message holds a personnummer: review for secrecy before release.
    pub secrecy_flag: bool,
    pub transcript: Vec<TranscriptLine>,
}

pub fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub fn from_millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

impl Storage {
    /// Opens (creating if needed) the database at `url` and brings its schema up to date.
    pub async fn open(url: &str, config: &StorageConfig) -> Result<Storage, StorageError> {
        let db = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(match config.sqlite_synchronous {
                    SyncSetting::Full => SqliteSynchronous::Full,
                    SyncSetting::Normal => SqliteSynchronous::Normal,
                })
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10));
            let file = options.get_filename().to_path_buf();
            let in_memory = file.as_os_str().is_empty()
                || file.to_str().is_some_and(|f| f.starts_with("file:") || f.starts_with(":memory:"))
                || url.contains("mode=memory");
            let sqlite_file = (!in_memory).then_some(file);
            if let Some(dir) = Path::new(options.get_filename()).parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StorageError::Setup(format!("cannot create the data directory {}: {e}", dir.display()))
                })?;
            }
            // No liveness ping before each use: an embedded database does not
            // drop connections, and the ping is a thread round trip per commit.
            // Behind the message log no chat message waits for the database's
            // threads (the writer, the checkpointer, readers of errands): they
            // yield the core to the connections whenever those have work
            // (`crate::scheduling`). Each connection has a thread of its own,
            // started when its pool opens it.
            let background = config.message_log && sqlite_file.is_some();
            let lower_database_threads = move |pool: SqlitePoolOptions| {
                if !background {
                    return pool;
                }
                pool.after_connect(|_, _| {
                    Box::pin(async {
                        let threads = database_threads();
                        if threads.is_empty() && cfg!(target_os = "linux") {
                            tracing::warn!("the database's threads were not found; they keep their priority");
                        }
                        crate::scheduling::lower_priority(&threads);
                        Ok(())
                    })
                })
            };
            let pool = lower_database_threads(SqlitePoolOptions::new().max_connections(4).test_before_acquire(false))
                .connect_with(options.clone())
                .await?;
            sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
            // The writer never checkpoints: a checkpoint copies the log into
            // the database and syncs it, tens of milliseconds at times, and
            // every commit behind it would wait. The checkpointer task does it
            // beside the writer instead.
            let writes = lower_database_threads(SqlitePoolOptions::new())
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .test_before_acquire(false)
                .connect_with(
                    options
                        .pragma("wal_autocheckpoint", "0")
                        // Room for a large batch without spilling dirty pages
                        // mid-transaction, and statement journals in memory.
                        .pragma("cache_size", "-16384")
                        .pragma("temp_store", "memory")
                        // When the log starts over, its file is cut back to this.
                        .pragma("journal_size_limit", LOG_SIZE_LIMIT_BYTES.to_string()),
                )
                .await?;
            let log_restart = Arc::new(AtomicBool::new(false));
            spawn_checkpointer(pool.clone(), log_restart.clone());
            return Ok(Storage { db: Db::Sqlite(pool), writes: Db::Sqlite(writes), log_restart, sqlite_file });
        } else {
            let pool =
                PgPoolOptions::new().max_connections(8).acquire_timeout(Duration::from_secs(10)).connect(url).await?;
            sqlx::migrate!("./migrations/postgres").run(&pool).await?;
            Db::Postgres(pool)
        };
        Ok(Storage { writes: db.clone(), db, log_restart: Arc::default(), sqlite_file: None })
    }

    /// Called by the writer between batches. Under sustained writes the
    /// checkpointer, which never holds up the writer, can never copy the
    /// whole log: by the time it has copied what was there, more has been
    /// appended, and SQLite starts the log over only once all of it is in the
    /// database. The log then grew without end (half a gigabyte in five
    /// seconds at 10,000 messages/s). So once it is long, the writer, between
    /// two of its own transactions, copies the rest itself (the checkpointer
    /// has done most of it) and its next transaction starts the log over.
    pub async fn finish_checkpoint_if_due(&self, conn: &mut WriterConnection) {
        if !self.log_restart.swap(false, Ordering::Relaxed) {
            return;
        }
        if let WriterConn::Sqlite(c) = &mut conn.0
            && let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&mut **c).await
        {
            tracing::warn!(error = %e, "checkpoint by the writer failed; the log starts over later");
        }
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self.db {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// Answers when the database does.
    pub async fn ping(&self) -> Result<(), StorageError> {
        on_db!(&self.db, pool => { sqlx::query("SELECT 1").execute(pool).await?; });
        Ok(())
    }

    fn is_sqlite(&self) -> bool {
        matches!(self.db, Db::Sqlite(_))
    }

    pub async fn close(&self) {
        on_db!(&self.writes, pool => pool.close().await);
        on_db!(&self.db, pool => pool.close().await);
    }

    /// Applies a batch of writes in one transaction (a group commit) and
    /// returns one answer per write, in order.
    pub async fn apply(&self, ops: &[StoreOp]) -> Result<Vec<Committed>, StorageError> {
        let mut conn = self.writer_connection().await?;
        self.apply_on(&mut conn, ops, None).await
    }

    /// Where the message log of this database lives: beside a SQLite file;
    /// none for a database in memory or on PostgreSQL.
    pub fn message_log_dir(&self) -> Option<std::path::PathBuf> {
        self.sqlite_file.as_deref().map(MessageLog::dir_for)
    }

    /// The last message-log record the database holds.
    pub async fn message_log_applied(&self) -> Result<u64, StorageError> {
        let lsn: i64 = on_db!(&self.db, pool => {
            sqlx::query_scalar("SELECT lsn FROM message_log_applied WHERE id = 1").fetch_one(pool).await?
        });
        Ok(lsn.max(0) as u64)
    }

    /// Notes that the database holds the message log through `lsn` (after
    /// writes applied one by one, outside one transaction).
    pub async fn record_message_log_applied(&self, conn: &mut WriterConnection, lsn: u64) -> Result<(), StorageError> {
        on_writer!(conn, c => {
            sqlx::query(RECORD_LOG_APPLIED)
                .bind(lsn as i64)
                .execute(&mut **c)
                .await?;
        });
        Ok(())
    }

    /// A connection for the group-commit writer to keep.
    pub async fn writer_connection(&self) -> Result<WriterConnection, StorageError> {
        Ok(WriterConnection(match &self.writes {
            Db::Sqlite(pool) => WriterConn::Sqlite(pool.acquire().await?),
            Db::Postgres(pool) => WriterConn::Postgres(pool.acquire().await?),
        }))
    }

    /// [`Storage::apply`] on the writer's connection.
    /// `log_through`: the writes come from the message log, through this
    /// record; the database notes it in the same transaction.
    pub async fn apply_on(
        &self,
        conn: &mut WriterConnection,
        ops: &[StoreOp],
        log_through: Option<u64>,
    ) -> Result<Vec<Committed>, StorageError> {
        if log_through.is_none()
            && let Some(results) = self.apply_messages_only(conn, ops).await?
        {
            return Ok(results);
        }
        on_writer!(conn, c => {
            let mut tx = sqlx::Connection::begin(&mut **c).await?;
            let mut results = Vec::with_capacity(ops.len());
            // Written together at the end: one statement, not one per write
            // (each statement is a round trip to the database's thread).
            let mut events: Vec<QueueEvent> = Vec::new();
            let mut i = 0;
            while i < ops.len() {
                // Consecutive messages go in one multi-row INSERT.
                let run = ops[i..].iter().take_while(|op| matches!(op, StoreOp::Message { .. })).count();
                if run > 0 {
                    let messages = &ops[i..i + run];
                    // Inserted in key order (conversation, seq), not in the
                    // order they came: consecutive rows then land on the same
                    // page, found warm, instead of a seek to another
                    // conversation's page for every row.
                    let mut in_key_order: Vec<&StoreOp> = messages.iter().collect();
                    in_key_order.sort_unstable_by_key(|op| match op {
                        StoreOp::Message { conversation, seq, .. } => Some((*conversation, *seq)),
                        _ => None,
                    });
                    InsertRows::insert_messages(&mut *tx, &in_key_order).await?;
                    // Numbers that need a secrecy review: flag the errand and
                    // remember the mention for access requests.
                    for op in &in_key_order {
                        if let StoreOp::Message { conversation, seq, text, at, .. } = op {
                            let year = crate::domain::hours::local_date(*at).year();
                            let found = crate::domain::personnummer::find(text, year);
                            if found.is_empty() {
                                continue;
                            }
                            let id = conversation.to_string();
                            for f in found {
                                sqlx::query("INSERT INTO personnummer_mentions (conversation_id, seq, number_hash) VALUES ($1, $2, $3)")
                                    .bind(&id)
                                    .bind(*seq as i64)
                                    .bind(crate::auth::token_hash(&f.canonical))
                                    .execute(&mut *tx)
                                    .await?;
                            }
                            sqlx::query("UPDATE conversations SET secrecy_flag = 1 WHERE id = $1")
                                .bind(&id)
                                .execute(&mut *tx)
                                .await?;
                        }
                    }
                    results.extend(messages_committed(messages));
                    i += run;
                    continue;
                }
                let op = &ops[i];
                i += 1;
                let result = match op {
                    StoreOp::Message { .. } => unreachable!("handled above"),
                    StoreOp::Created { conversation, at, token_hash, queue_place, citizen_name, topic, language } => {
                        sqlx::query("INSERT INTO conversations (id, queued_at, resume_token_hash, queue_place, citizen_name, topic, language) VALUES ($1, $2, $3, $4, $5, $6, $7)")
                            .bind(conversation.to_string())
                            .bind(millis(*at))
                            .bind(token_hash)
                            .bind(*queue_place)
                            .bind(citizen_name.as_deref())
                            .bind(topic.as_deref())
                            .bind(language.as_deref())
                            .execute(&mut *tx)
                            .await?;
                        events.push(QueueEvent::new(Some(conversation), "joined", *at));
                        Committed::Done
                    }
                    StoreOp::Rated { conversation, score, at, conn } => {
                        sqlx::query("UPDATE conversations SET satisfaction = $1, rated_at = $2 WHERE id = $3")
                            .bind(i64::from(*score))
                            .bind(millis(*at))
                            .bind(conversation.to_string())
                            .execute(&mut *tx)
                            .await?;
                        Committed::Rated { conn: *conn, score: *score }
                    }
                    StoreOp::Refused { at, reason } => {
                        events.push(QueueEvent { detail: Some(reason.code()), ..QueueEvent::new(None, "refused", *at) });
                        Committed::Done
                    }
                    StoreOp::Assigned { conversation, at, advisor, advisor_name, errand_year, first, .. } => {
                        let id = conversation.to_string();
                        events.push(QueueEvent {
                            advisor: Some(*advisor),
                            ..QueueEvent::new(Some(conversation), if *first { "assigned" } else { "transferred" }, *at)
                        });
                        // A first assignment takes the year's next errand
                        // number; a transfer keeps the one it has.
                        let number = if *first { Some(next_errand_number!(&mut *tx, *errand_year)) } else { None };
                        let stored: Option<String> = sqlx::query(
                            "UPDATE conversations SET advisor_id = $1, advisor_name = $2, first_assigned_at = COALESCE(first_assigned_at, $3), \
                             errand_number = COALESCE(errand_number, $4), queue_place = NULL WHERE id = $5 RETURNING errand_number",
                        )
                        .bind(*advisor)
                        .bind(&**advisor_name)
                        .bind(millis(*at))
                        .bind(number)
                        .bind(&id)
                        .fetch_one(&mut *tx)
                        .await?
                        .try_get("errand_number")?;
                        let number = match stored {
                            Some(number) => number,
                            // Never numbered (not expected: only a first
                            // assignment lacks a number): number it now.
                            None => {
                                let number = next_errand_number!(&mut *tx, *errand_year);
                                sqlx::query("UPDATE conversations SET errand_number = $1 WHERE id = $2")
                                    .bind(&number)
                                    .bind(&id)
                                    .execute(&mut *tx)
                                    .await?;
                                number
                            }
                        };
                        Committed::Assigned { conversation: *conversation, errand_number: number }
                    }
                    StoreOp::Requeued { conversation, at, advisor, queue_place } => {
                        // Waiting again: a restart must put it back in the queue.
                        sqlx::query("UPDATE conversations SET queue_place = $1 WHERE id = $2")
                            .bind(*queue_place)
                            .bind(conversation.to_string())
                            .execute(&mut *tx)
                            .await?;
                        events.push(QueueEvent { advisor: Some(*advisor), ..QueueEvent::new(Some(conversation), "requeued", *at) });
                        Committed::Done
                    }
                    StoreOp::Ended { conversation, at, reason, outcome, category, summary, wrap_up } => {
                        let id = conversation.to_string();
                        sqlx::query("UPDATE conversations SET ended_at = $1, end_reason = $2, outcome = $3, category = COALESCE($4, category), summary = COALESCE($5, summary), wrap_up_pending = $6 WHERE id = $7")
                            .bind(millis(*at))
                            .bind(reason.as_str())
                            .bind(outcome.as_str())
                            .bind(category.as_deref())
                            .bind(summary.as_deref())
                            .bind(i32::from(*wrap_up))
                            .bind(&id)
                            .execute(&mut *tx)
                            .await?;
                        events.push(QueueEvent { detail: Some(reason.as_str()), ..QueueEvent::new(Some(conversation), "ended", *at) });
                        Committed::Ended { conversation: *conversation }
                    }
                    StoreOp::AdvisorStatus { advisor, status } => {
                        sqlx::query("UPDATE users SET advisor_status = $1 WHERE id = $2")
                            .bind(status.as_str())
                            .bind(*advisor)
                            .execute(&mut *tx)
                            .await?;
                        Committed::Done
                    }
                    StoreOp::Classified { conversation, category, summary } => {
                        sqlx::query("UPDATE conversations SET category = COALESCE($1, category), summary = COALESCE($2, summary), wrap_up_pending = 0 WHERE id = $3")
                            .bind(category.as_deref())
                            .bind(summary.as_deref())
                            .bind(conversation.to_string())
                            .execute(&mut *tx)
                            .await?;
                        Committed::Classified { conversation: *conversation }
                    }
                };
                results.push(result);
            }
            InsertRows::insert_queue_events(&mut *tx, &events).await?;
            if let Some(lsn) = log_through {
                sqlx::query(RECORD_LOG_APPLIED)
                    .bind(lsn as i64)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(results)
        })
    }

    /// The common case under load: a batch of plain chat messages that fits
    /// one INSERT. A single statement is atomic by itself, so it needs no
    /// BEGIN/COMMIT: one round trip to the database instead of three.
    /// `None` when the batch is anything else (it then takes the general path).
    async fn apply_messages_only(
        &self,
        conn: &mut WriterConnection,
        ops: &[StoreOp],
    ) -> Result<Option<Vec<Committed>>, StorageError> {
        // PostgreSQL takes any number in its one statement.
        if ops.is_empty() || (self.is_sqlite() && ops.len() > MESSAGE_ROWS_PER_INSERT) {
            return Ok(None);
        }
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                StoreOp::Message { conversation, seq, text, at, .. } => {
                    // A number to flag needs more statements: the general path.
                    let year = crate::domain::hours::local_date(*at).year();
                    if !crate::domain::personnummer::find(text, year).is_empty() {
                        return Ok(None);
                    }
                    results.push(Committed::Message { conversation: *conversation, seq: *seq });
                }
                _ => return Ok(None),
            }
        }
        let ops: Vec<&StoreOp> = ops.iter().collect();
        on_writer!(conn, c => InsertRows::insert_messages(&mut **c, &ops).await?);
        Ok(Some(results))
    }

    /// Advisors whose last own choice of status was `available`
    /// ([`crate::domain::chat::ChatCore::restore_available_advisors`]).
    pub async fn available_advisors(&self) -> Result<Vec<AdvisorProfile>, StorageError> {
        let mut advisors = Vec::new();
        on_db!(&self.db, pool => {
            let rows = sqlx::query(
                "SELECT id, username, display_name, role FROM users WHERE advisor_status = 'available' ORDER BY id",
            )
            .fetch_all(pool)
            .await?;
            for row in rows {
                advisors.push(AdvisorProfile {
                    id: row.try_get("id")?,
                    username: row.try_get("username")?,
                    display_name: row.try_get::<String, _>("display_name")?.into(),
                    role: row.try_get("role")?,
                });
            }
        });
        Ok(advisors)
    }

    /// At start, before [`Storage::open_conversations`]: conversations left
    /// open that cannot be taken up again, because their citizen could never
    /// resume them (stored before resume tokens were kept), are ended as
    /// `interrupted` (an errand if it had reached an advisor). Returns how many.
    pub async fn end_interrupted(&self, now: DateTime<Utc>) -> Result<u64, StorageError> {
        let done = on_db!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO queue_events (conversation_id, kind, at, detail) SELECT id, 'ended', $1, 'interrupted' \
                 FROM conversations WHERE ended_at IS NULL AND resume_token_hash IS NULL",
            )
            .bind(millis(now))
            .execute(&mut *tx)
            .await?;
            let done = sqlx::query(
                "UPDATE conversations SET ended_at = $1, end_reason = 'interrupted', \
                 outcome = CASE WHEN first_assigned_at IS NULL THEN 'abandoned' ELSE 'served' END \
                 WHERE ended_at IS NULL AND resume_token_hash IS NULL",
            )
            .bind(millis(now))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            done
        });
        Ok(done)
    }

    /// Every conversation still open (left by the last run, after a clean
    /// stop or a crash), with its transcript and its place in the queue, and
    /// every one in wrap-up (the citizen gone, the advisor not yet done), for
    /// [`ChatCore::restore`].
    ///
    /// [`ChatCore::restore`]: crate::domain::chat::ChatCore::restore
    pub async fn open_conversations(&self) -> Result<Vec<RestoredConversation>, StorageError> {
        let restored = on_db!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            let mut rows = Vec::new();
            for which in TAKEN_UP_AT_START {
                rows.extend(
                    sqlx::query(&format!(
                        "SELECT c.id, c.resume_token_hash, c.citizen_name, c.topic, c.language, c.queued_at, c.queue_place, \
                         c.errand_number, c.first_assigned_at, c.ended_at, c.end_reason, \
                         u.id AS user_id, u.username, u.display_name, u.role \
                         FROM conversations c LEFT JOIN users u ON u.id = c.advisor_id \
                         WHERE {which} AND c.resume_token_hash IS NOT NULL ORDER BY c.queued_at, c.id"
                    ))
                    .fetch_all(&mut *tx)
                    .await?,
                );
            }
            let mut restored = Vec::with_capacity(rows.len());
            let mut index = HashMap::with_capacity(rows.len());
            for row in rows {
                let id: String = row.try_get("id")?;
                let Ok(uuid) = uuid::Uuid::parse_str(&id) else {
                    tracing::warn!(conversation = %id, "an open conversation with a malformed id is left as it is");
                    continue;
                };
                let queue_place: Option<i64> = row.try_get("queue_place")?;
                let user_id: Option<i64> = row.try_get("user_id")?;
                let advisor = match (queue_place, user_id) {
                    (None, Some(user_id)) => Some(AdvisorProfile {
                        id: user_id,
                        username: row.try_get("username")?,
                        display_name: row.try_get::<String, _>("display_name")?.into(),
                        role: row.try_get("role")?,
                    }),
                    _ => None,
                };
                // Ended, yet here: in wrap-up, for this reason.
                let wrap_up = match row.try_get::<Option<i64>, _>("ended_at")? {
                    Some(_) => Some(
                        row.try_get::<Option<String>, _>("end_reason")?
                            .as_deref()
                            .and_then(EndReason::parse)
                            .unwrap_or(EndReason::CitizenLeft),
                    ),
                    None => None,
                };
                index.insert(id, restored.len());
                restored.push(RestoredConversation {
                    id: uuid,
                    token_hash: row.try_get("resume_token_hash")?,
                    citizen_name: row.try_get::<Option<String>, _>("citizen_name")?.map(Into::into),
                    topic: row.try_get::<Option<String>, _>("topic")?.map(Into::into),
                    language: row.try_get::<Option<String>, _>("language")?.map(Into::into),
                    queued_at: from_millis(row.try_get("queued_at")?),
                    queue_place,
                    advisor,
                    first_assigned_at: row.try_get::<Option<i64>, _>("first_assigned_at")?.map(from_millis),
                    errand_number: row.try_get("errand_number")?,
                    wrap_up,
                    messages: Vec::new(),
                });
            }
            let mut messages = Vec::new();
            for which in TAKEN_UP_AT_START {
                messages.extend(
                    sqlx::query(&format!(
                        "SELECT m.conversation_id, m.seq, m.sender, m.sender_name, m.client_msg_id, m.body, m.sent_at \
                         FROM messages m JOIN conversations c ON c.id = m.conversation_id \
                         WHERE {which} ORDER BY m.conversation_id, m.seq"
                    ))
                    .fetch_all(&mut *tx)
                    .await?,
                );
            }
            for row in messages {
                let conversation: String = row.try_get("conversation_id")?;
                let Some(&i) = index.get(&conversation) else { continue };
                let sender: String = row.try_get("sender")?;
                let Some(sender) = Sender::parse(&sender) else { continue };
                restored[i].messages.push(MessageView {
                    seq: row.try_get::<i64, _>("seq")?.try_into().unwrap_or_default(),
                    sender,
                    sender_name: row.try_get::<Option<String>, _>("sender_name")?.map(Into::into),
                    text: row.try_get::<String, _>("body")?.into(),
                    sent_at: from_millis(row.try_get("sent_at")?),
                    client_msg_id: row.try_get::<Option<String>, _>("client_msg_id")?.map(Into::into),
                    personnummer: false,
                });
            }
            tx.commit().await?;
            restored
        });
        Ok(restored)
    }

    /// Chats that ended with an advisor (an errand) since `since` and are
    /// not in wrap-up, oldest first, for [`ChatCore::restore_ended`].
    ///
    /// [`ChatCore::restore_ended`]: crate::domain::chat::ChatCore::restore_ended
    pub async fn recently_ended(&self, since: DateTime<Utc>) -> Result<Vec<RecentlyEnded>, StorageError> {
        let ended = on_db!(&self.db, pool => {
            sqlx::query(
                "SELECT id, resume_token_hash, errand_number, end_reason, ended_at FROM conversations \
                 WHERE ended_at >= $1 AND wrap_up_pending = 0 AND errand_number IS NOT NULL \
                 AND resume_token_hash IS NOT NULL ORDER BY ended_at",
            )
            .bind(since.timestamp_millis())
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|row| -> Result<Option<RecentlyEnded>, sqlx::Error> {
                let id: String = row.try_get("id")?;
                let Ok(id) = uuid::Uuid::parse_str(&id) else {
                    return Ok(None);
                };
                let reason: Option<String> = row.try_get("end_reason")?;
                Ok(Some(RecentlyEnded {
                    id,
                    token_hash: row.try_get("resume_token_hash")?,
                    errand_number: row.try_get("errand_number")?,
                    reason: reason.as_deref().and_then(EndReason::parse).unwrap_or(EndReason::AdvisorEnded),
                    ended_at: from_millis(row.try_get("ended_at")?),
                }))
            })
            .collect::<Result<Vec<_>, _>>()?
        });
        Ok(ended.into_iter().flatten().collect())
    }

    /// How long the last `limit` served chats took, from their first advisor
    /// to their end, oldest first: what the wait estimates learn from at start.
    pub async fn recent_handle_seconds(&self, limit: u32) -> Result<Vec<f64>, StorageError> {
        let mut seconds = on_db!(&self.db, pool => {
            sqlx::query(
                "SELECT first_assigned_at, ended_at FROM conversations \
                 WHERE ended_at IS NOT NULL AND outcome = 'served' AND first_assigned_at IS NOT NULL \
                 ORDER BY ended_at DESC LIMIT $1",
            )
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|row| -> Result<f64, sqlx::Error> {
                let assigned: i64 = row.try_get("first_assigned_at")?;
                let ended: i64 = row.try_get("ended_at")?;
                Ok((ended - assigned).max(0) as f64 / 1000.0)
            })
            .collect::<Result<Vec<_>, _>>()?
        });
        seconds.reverse();
        Ok(seconds)
    }

    // ------------------------------------------------------------ errands (read)

    /// A conversation by its id or errand number, with its transcript.
    pub async fn errand(&self, id_or_number: &str) -> Result<Option<ErrandRecord>, StorageError> {
        let row = on_db!(&self.db, pool => {
            sqlx::query(
                &format!("SELECT {ERRAND_COLUMNS} FROM conversations WHERE (id = $1 OR errand_number = $1) AND purged_at IS NULL"),
            )
            .bind(id_or_number)
            .fetch_optional(pool)
            .await?
            .map(|row| errand_from_row(&row))
            .transpose()?
        });
        let Some(mut errand) = row else {
            return Ok(None);
        };
        errand.transcript = self.transcript(&errand.conversation_id).await?;
        Ok(Some(errand))
    }

    /// Errands matching `filter`, newest first, and how many match in all.
    pub async fn list_errands(&self, filter: &ErrandFilter) -> Result<(Vec<ErrandRecord>, i64), StorageError> {
        let mut conditions = vec!["errand_number IS NOT NULL".to_owned(), "purged_at IS NULL".to_owned()];
        let mut params: Vec<Param> = Vec::new();
        let mut add = |condition: &str, param: Param| {
            params.push(param);
            conditions.push(condition.replace("$n", &format!("${}", params.len())));
        };
        if let Some(n) = &filter.number {
            add("errand_number = $n", Param::Text(n.clone()));
        }
        if let Some(t) = filter.from {
            add("queued_at >= $n", Param::Int(millis(t)));
        }
        if let Some(t) = filter.to {
            add("queued_at < $n", Param::Int(millis(t)));
        }
        if let Some(c) = &filter.category {
            add("category = $n", Param::Text(c.clone()));
        }
        if let Some(a) = &filter.advisor {
            add("advisor_name = $n", Param::Text(a.clone()));
        }
        if let Some(flag) = filter.flagged {
            add("secrecy_flag = $n", Param::Int(i64::from(flag)));
        }
        if let Some(text) = &filter.text {
            let pattern =
                format!("%{}%", text.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
            let condition = format!(
                "({} LIKE $n ESCAPE '\\' OR EXISTS (SELECT 1 FROM messages m \
                 WHERE m.conversation_id = conversations.id AND {} LIKE $n ESCAPE '\\'))",
                folded("COALESCE(summary, '')", &pattern),
                folded("m.body", &pattern)
            );
            add(&condition, Param::Text(pattern));
        }
        let filter_sql = conditions.join(" AND ");
        let count_sql = format!("SELECT COUNT(*) AS n FROM conversations WHERE {filter_sql}");
        let list_sql = format!(
            "SELECT {ERRAND_COLUMNS} FROM conversations WHERE {filter_sql} ORDER BY queued_at DESC LIMIT ${} OFFSET ${}",
            params.len() + 1,
            params.len() + 2
        );
        let (rows, total) = on_db!(&self.db, pool => {
            let mut count = sqlx::query(&count_sql);
            let mut list = sqlx::query(&list_sql);
            for p in &params {
                match p {
                    Param::Text(s) => {
                        count = count.bind(s.clone());
                        list = list.bind(s.clone());
                    }
                    Param::Int(i) => {
                        count = count.bind(*i);
                        list = list.bind(*i);
                    }
                }
            }
            let total: i64 = count.fetch_one(pool).await?.try_get("n")?;
            let rows = list
                .bind(filter.limit)
                .bind(filter.offset)
                .fetch_all(pool)
                .await?
                .iter()
                .map(errand_from_row)
                .collect::<Result<Vec<_>, _>>()?;
            (rows, total)
        });
        Ok((rows, total))
    }

    /// Streams errands, each with its transcript, into `out`, oldest first.
    /// Memory stays constant: one errand at a time, and `out` is bounded.
    pub async fn export(&self, selection: &Selection, out: mpsc::Sender<ErrandRecord>) -> Result<u64, StorageError> {
        use futures::TryStreamExt;
        let (sql, param) = match selection {
            Selection::Range { from, to } => (
                format!(
                    "SELECT {ERRAND_COLUMNS} FROM conversations WHERE errand_number IS NOT NULL AND purged_at IS NULL \
                     AND queued_at >= $1 AND queued_at < $2 ORDER BY queued_at"
                ),
                (Param::Int(millis(*from)), Some(Param::Int(millis(*to)))),
            ),
            Selection::Mentioning { number_hash } => (
                format!(
                    "SELECT {ERRAND_COLUMNS} FROM conversations WHERE purged_at IS NULL AND id IN \
                     (SELECT conversation_id FROM personnummer_mentions WHERE number_hash = $1) ORDER BY queued_at"
                ),
                (Param::Text(number_hash.clone()), None),
            ),
        };
        let mut sent = 0u64;
        on_db!(&self.db, pool => {
            let mut q = sqlx::query(&sql);
            for p in [Some(&param.0), param.1.as_ref()].into_iter().flatten() {
                q = match p {
                    Param::Text(s) => q.bind(s.clone()),
                    Param::Int(i) => q.bind(*i),
                };
            }
            let mut rows = q.fetch(pool);
            while let Some(row) = rows.try_next().await? {
                let mut errand = errand_from_row(&row)?;
                errand.transcript = self.transcript(&errand.conversation_id).await?;
                if out.send(errand).await.is_err() {
                    break; // the reader went away
                }
                sent += 1;
            }
        });
        Ok(sent)
    }

    /// Ended conversations whose retention period is over at `now`.
    pub async fn purge_due(
        &self,
        now: DateTime<Utc>,
        retention: &RetentionConfig,
    ) -> Result<Vec<PurgeCandidate>, StorageError> {
        let rows = on_db!(&self.db, pool => {
            sqlx::query("SELECT id, errand_number, category, ended_at FROM conversations WHERE ended_at IS NOT NULL AND purged_at IS NULL")
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(|row| -> Result<(String, Option<String>, Option<String>, i64), sqlx::Error> {
                    Ok((row.try_get("id")?, row.try_get("errand_number")?, row.try_get("category")?, row.try_get("ended_at")?))
                })
                .collect::<Result<Vec<_>, _>>()?
        });
        Ok(rows
            .into_iter()
            .filter_map(|(id, errand_number, category, ended_at)| {
                let days = category
                    .as_ref()
                    .and_then(|c| retention.categories.get(c))
                    .copied()
                    .unwrap_or(retention.default_days);
                let due = days > 0 && from_millis(ended_at) + chrono::TimeDelta::days(i64::from(days)) <= now;
                due.then_some(PurgeCandidate { conversation_id: id, errand_number, category })
            })
            .collect())
    }

    /// Deletes the transcripts and personal details of `candidates`; the rows
    /// stay, anonymous and without errand numbers, for statistics.
    pub async fn purge(&self, candidates: &[PurgeCandidate], now: DateTime<Utc>) -> Result<(), StorageError> {
        for chunk in candidates.chunks(200) {
            on_db!(&self.db, pool => {
                let mut tx = pool.begin().await?;
                for c in chunk {
                    sqlx::query("DELETE FROM messages WHERE conversation_id = $1").bind(&c.conversation_id).execute(&mut *tx).await?;
                    sqlx::query("DELETE FROM personnummer_mentions WHERE conversation_id = $1")
                        .bind(&c.conversation_id)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(
                        "UPDATE conversations SET citizen_name = NULL, topic = NULL, language = NULL, summary = NULL, \
                         errand_number = NULL, secrecy_flag = 0, purged_at = $1 WHERE id = $2",
                    )
                    .bind(millis(now))
                    .bind(&c.conversation_id)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
            });
        }
        Ok(())
    }

    pub async fn transcript(&self, conversation_id: &str) -> Result<Vec<TranscriptLine>, StorageError> {
        let lines = on_db!(&self.db, pool => {
            sqlx::query("SELECT seq, sender, sender_name, client_msg_id, body, sent_at FROM messages WHERE conversation_id = $1 ORDER BY seq")
                .bind(conversation_id)
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(|row| -> Result<TranscriptLine, sqlx::Error> {
                    Ok(TranscriptLine {
                        seq: row.try_get("seq")?,
                        sender: row.try_get("sender")?,
                        sender_name: row.try_get("sender_name")?,
                        client_msg_id: row.try_get("client_msg_id")?,
                        body: row.try_get("body")?,
                        sent_at: from_millis(row.try_get("sent_at")?),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?
        });
        Ok(lines)
    }

    /// The facts of conversations queued in `[from, to)`, for statistics.
    pub async fn conversation_facts(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<ConversationFacts>, StorageError> {
        let facts = on_db!(&self.db, pool => {
            sqlx::query(
                "SELECT c.queued_at, c.first_assigned_at, c.ended_at, c.outcome, c.advisor_id, c.advisor_name, c.satisfaction, \
                 (SELECT MIN(m.sent_at) FROM messages m WHERE m.conversation_id = c.id AND m.sender = 'advisor') AS first_response_at \
                 FROM conversations c WHERE c.queued_at >= $1 AND c.queued_at < $2",
            )
            .bind(millis(from))
            .bind(millis(to))
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|row| -> Result<ConversationFacts, sqlx::Error> {
                let advisor_id: Option<i64> = row.try_get("advisor_id")?;
                let advisor_name: Option<String> = row.try_get("advisor_name")?;
                Ok(ConversationFacts {
                    queued_at: from_millis(row.try_get("queued_at")?),
                    first_assigned_at: row.try_get::<Option<i64>, _>("first_assigned_at")?.map(from_millis),
                    ended_at: row.try_get::<Option<i64>, _>("ended_at")?.map(from_millis),
                    outcome: row.try_get("outcome")?,
                    advisor: advisor_id.map(|id| (id, advisor_name.unwrap_or_default())),
                    first_response_at: row.try_get::<Option<i64>, _>("first_response_at")?.map(from_millis),
                    // The column's CHECK keeps it within 1–5.
                    satisfaction: row.try_get::<Option<i64>, _>("satisfaction")?.and_then(|s| u8::try_from(s).ok()),
                })
            })
            .collect::<Result<Vec<_>, _>>()?
        });
        Ok(facts)
    }

    /// Refused `start`s in `[from, to)`.
    pub async fn refusals(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Vec<RefusalFact>, StorageError> {
        let refusals = on_db!(&self.db, pool => {
            sqlx::query("SELECT at, detail FROM queue_events WHERE kind = 'refused' AND at >= $1 AND at < $2")
                .bind(millis(from))
                .bind(millis(to))
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(|row| -> Result<RefusalFact, sqlx::Error> {
                    Ok(RefusalFact {
                        at: from_millis(row.try_get("at")?),
                        reason: row.try_get::<Option<String>, _>("detail")?.unwrap_or_default(),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?
        });
        Ok(refusals)
    }

    /// Counts of queue events by kind (for tests and statistics).
    pub async fn queue_event_count(&self, kind: &str) -> Result<i64, StorageError> {
        let n = on_db!(&self.db, pool => {
            sqlx::query("SELECT COUNT(*) AS n FROM queue_events WHERE kind = $1")
                .bind(kind)
                .fetch_one(pool)
                .await?
                .try_get::<i64, _>("n")?
        });
        Ok(n)
    }

    // ------------------------------------------------------------ users

    pub async fn user_count(&self) -> Result<i64, StorageError> {
        let n = on_db!(&self.db, pool => {
            sqlx::query("SELECT COUNT(*) AS n FROM users").fetch_one(pool).await?.try_get::<i64, _>("n")?
        });
        Ok(n)
    }

    pub async fn create_user(
        &self,
        username: &str,
        display_name: &str,
        role: &str,
        password_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<i64, StorageError> {
        let id = on_db!(&self.db, pool => {
            sqlx::query("INSERT INTO users (username, display_name, role, password_hash, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING id")
                .bind(username)
                .bind(display_name)
                .bind(role)
                .bind(password_hash)
                .bind(millis(now))
                .fetch_one(pool)
                .await?
                .try_get::<i64, _>("id")?
        });
        Ok(id)
    }

    pub async fn user_by_name(&self, username: &str) -> Result<Option<UserRecord>, StorageError> {
        Ok(self.users(UserKey::Name(username)).await?.into_iter().next())
    }

    pub async fn user_by_id(&self, id: i64) -> Result<Option<UserRecord>, StorageError> {
        Ok(self.users(UserKey::Id(id)).await?.into_iter().next())
    }

    pub async fn list_users(&self) -> Result<Vec<UserRecord>, StorageError> {
        self.users(UserKey::All).await
    }

    async fn users(&self, key: UserKey<'_>) -> Result<Vec<UserRecord>, StorageError> {
        let condition = match key {
            UserKey::Name(_) => "username = $1",
            UserKey::Id(_) => "id = $1",
            UserKey::All => "1 = 1",
        };
        let sql = format!(
            "SELECT id, username, display_name, role, password_hash, created_at FROM users WHERE {condition} ORDER BY username"
        );
        let users = on_db!(&self.db, pool => {
            let q = sqlx::query(&sql);
            let q = match key {
                UserKey::Name(name) => q.bind(name),
                UserKey::Id(id) => q.bind(id),
                UserKey::All => q,
            };
            q.fetch_all(pool)
                .await?
                .into_iter()
                .map(|row| -> Result<UserRecord, sqlx::Error> {
                    Ok(UserRecord {
                        id: row.try_get("id")?,
                        username: row.try_get("username")?,
                        display_name: row.try_get("display_name")?,
                        role: row.try_get("role")?,
                        password_hash: row.try_get("password_hash")?,
                        created_at: from_millis(row.try_get("created_at")?),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?
        });
        Ok(users)
    }

    /// Removes a user and their sessions; true if there was one. Chats of
    /// theirs in wrap-up are closed as they stand (their errands kept,
    /// unclassified): nobody else can finish them, and a later start would
    /// otherwise find them waiting for an advisor who cannot come back.
    pub async fn remove_user(&self, username: &str) -> Result<bool, StorageError> {
        let n = on_db!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE conversations SET wrap_up_pending = 0 WHERE wrap_up_pending = 1 AND advisor_id IN (SELECT id FROM users WHERE username = $1)")
                .bind(username)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM sessions WHERE user_id IN (SELECT id FROM users WHERE username = $1)")
                .bind(username)
                .execute(&mut *tx)
                .await?;
            let n = sqlx::query("DELETE FROM users WHERE username = $1").bind(username).execute(&mut *tx).await?.rows_affected();
            tx.commit().await?;
            n
        });
        Ok(n > 0)
    }

    /// Sets a new password hash and ends every session of the user; true if the user exists.
    pub async fn set_password(&self, username: &str, password_hash: &str) -> Result<bool, StorageError> {
        let n = on_db!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            let n = sqlx::query("UPDATE users SET password_hash = $1 WHERE username = $2")
                .bind(password_hash)
                .bind(username)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query("DELETE FROM sessions WHERE user_id IN (SELECT id FROM users WHERE username = $1)")
                .bind(username)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            n
        });
        Ok(n > 0)
    }

    // ------------------------------------------------------------ sessions

    pub async fn create_session(
        &self,
        token_hash: &str,
        user_id: i64,
        now: DateTime<Utc>,
        expires: DateTime<Utc>,
    ) -> Result<(), StorageError> {
        on_db!(&self.db, pool => {
            sqlx::query("INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
                .bind(token_hash)
                .bind(user_id)
                .bind(millis(now))
                .bind(millis(expires))
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// The user of an unexpired session.
    pub async fn session_user(&self, token_hash: &str, now: DateTime<Utc>) -> Result<Option<UserRecord>, StorageError> {
        let user_id: Option<i64> = on_db!(&self.db, pool => {
            sqlx::query("SELECT user_id FROM sessions WHERE token_hash = $1 AND expires_at > $2")
                .bind(token_hash)
                .bind(millis(now))
                .fetch_optional(pool)
                .await?
                .map(|row| row.try_get::<i64, _>("user_id"))
                .transpose()?
        });
        let Some(user_id) = user_id else {
            return Ok(None);
        };
        self.user_by_id(user_id).await
    }

    pub async fn delete_session(&self, token_hash: &str) -> Result<(), StorageError> {
        on_db!(&self.db, pool => {
            sqlx::query("DELETE FROM sessions WHERE token_hash = $1").bind(token_hash).execute(pool).await?;
        });
        Ok(())
    }

    pub async fn delete_expired_sessions(&self, now: DateTime<Utc>) -> Result<u64, StorageError> {
        let n = on_db!(&self.db, pool => {
            sqlx::query("DELETE FROM sessions WHERE expires_at <= $1").bind(millis(now)).execute(pool).await?.rows_affected()
        });
        Ok(n)
    }
}

const ERRAND_COLUMNS: &str = "id, errand_number, queued_at, first_assigned_at, ended_at, advisor_name, citizen_name, \
     topic, category, summary, end_reason, outcome, secrecy_flag";

fn errand_from_row<R: Row>(row: &R) -> Result<ErrandRecord, sqlx::Error>
where
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'q> String: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
    for<'q> Option<String>: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
    for<'q> i64: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
    for<'q> Option<i64>: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
{
    Ok(ErrandRecord {
        conversation_id: row.try_get("id")?,
        errand_number: row.try_get("errand_number")?,
        queued_at: from_millis(row.try_get("queued_at")?),
        first_assigned_at: row.try_get::<Option<i64>, _>("first_assigned_at")?.map(from_millis),
        ended_at: row.try_get::<Option<i64>, _>("ended_at")?.map(from_millis),
        advisor_name: row.try_get("advisor_name")?,
        citizen_name: row.try_get("citizen_name")?,
        topic: row.try_get("topic")?,
        category: row.try_get("category")?,
        summary: row.try_get("summary")?,
        end_reason: row.try_get("end_reason")?,
        outcome: row.try_get("outcome")?,
        secrecy_flag: row.try_get::<i64, _>("secrecy_flag")? != 0,
        transcript: Vec::new(),
    })
}

/// Filters for [`Storage::list_errands`].
#[derive(Debug, Clone, Default)]
pub struct ErrandFilter {
    pub number: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub category: Option<String>,
    pub advisor: Option<String>,
    /// Free text in the summary and the transcript (case-insensitive for ASCII).
    pub text: Option<String>,
    pub flagged: Option<bool>,
    pub limit: i64,
    pub offset: i64,
}

/// What [`Storage::export`] streams.
#[derive(Debug, Clone)]
pub enum Selection {
    /// Errands queued in `[from, to)`.
    Range { from: DateTime<Utc>, to: DateTime<Utc> },
    /// Every conversation that mentions a number (by its hash), for access requests.
    Mentioning { number_hash: String },
}

/// A conversation whose retention period is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeCandidate {
    pub conversation_id: String,
    pub errand_number: Option<String>,
    pub category: Option<String>,
}

/// `column` in lower case as far as a search for `lowercase_pattern` needs,
/// for case-insensitive search in both backends. LOWER folds only ASCII in
/// SQLite (and in PostgreSQL under the C locale), so each other letter of
/// the pattern that has a capital (å, ä, ö, ü, é, ø, …) is folded with a
/// REPLACE of its own: as many as the pattern needs, whatever the alphabet,
/// and none for a plain ASCII search, which scans every message.
fn folded(column: &str, lowercase_pattern: &str) -> String {
    let mut letters: Vec<char> = lowercase_pattern.chars().filter(|c| !c.is_ascii() && c.is_alphabetic()).collect();
    letters.sort_unstable();
    letters.dedup();
    let mut sql = column.to_owned();
    for lower in letters {
        let mut upper = lower.to_uppercase();
        // Letters only (never a quote), so they can stand in the SQL text.
        // (A capital in ASCII, as for the Turkish ı, is left to LOWER: replacing
        // it would change every ASCII I in the text.)
        if let (Some(capital), None) = (upper.next(), upper.next())
            && capital != lower
            && !capital.is_ascii()
        {
            sql = format!("REPLACE({sql}, '{capital}', '{lower}')");
        }
    }
    format!("LOWER({sql})")
}

#[derive(Debug, Clone)]
enum Param {
    Text(String),
    Int(i64),
}

#[derive(Debug, Clone, Copy)]
enum UserKey<'a> {
    Name(&'a str),
    Id(i64),
    All,
}

/// The conversations [`Storage::open_conversations`] reads back: the open
/// ones and those in wrap-up. Two queries rather than one with OR, so each
/// uses its partial index.
const TAKEN_UP_AT_START: [&str; 2] = ["c.ended_at IS NULL", "c.wrap_up_pending = 1"];

/// Rows per multi-row message INSERT: 8 parameters each, well under both
/// backends' parameter limits (SQLite 32766, PostgreSQL 65535).
const MESSAGE_ROWS_PER_INSERT: usize = 256;

/// How often the checkpointer copies the SQLite log into the database. Often,
/// so each checkpoint is short: a checkpoint competes for the server's core
/// (and syncs the log under the writer's feet), and at 1,000 messages/s one
/// every 500 ms made the p99 8 ms, one every 100 ms 1.3 ms. In the surge
/// (1,000 assignments a second with 16,000 waiting) one every 20 ms took the
/// assignment p99 from 10–12 ms to 6–8 ms. Idle, it is a look at the log's
/// header.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(20);

/// Log length in 4 KiB frames (32 MiB) past which the writer finishes a
/// checkpoint so that the log starts over (see
/// [`Storage::finish_checkpoint_if_due`]). Each time costs the writer a pause
/// of 10-20 ms at 10,000 messages/s, mostly the sync of the database file:
/// about the same with 8 MiB, but 200 ms with 256 MiB.
/// At a busy contact centre's real rate the log starts over by itself between
/// commits and this never happens.
const LOG_RESTART_FRAMES: i64 = 8_192;

/// What the log file is cut back to when it starts over.
const LOG_SIZE_LIMIT_BYTES: i64 = 64 << 20;

/// Checkpoints the write-ahead log from a connection of the general pool, so
/// the writer's commits never wait for one. PASSIVE: it copies what no reader
/// still needs and never blocks the writer. Ends when the pool is closed.
/// Notes the last message-log record the database holds (never backwards).
const RECORD_LOG_APPLIED: &str = "UPDATE message_log_applied SET lsn = $1 WHERE id = 1 AND lsn < $1";

/// The answers for the chat messages among `ops`, in order: stored.
pub(crate) fn messages_committed(ops: &[StoreOp]) -> impl Iterator<Item = Committed> + '_ {
    ops.iter().filter_map(|op| match op {
        StoreOp::Message { conversation, seq, .. } => {
            Some(Committed::Message { conversation: *conversation, seq: *seq })
        }
        _ => None,
    })
}

/// The threads of sqlx's SQLite connections (each connection has one).
fn database_threads() -> std::collections::BTreeSet<i32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Default::default();
    };
    tasks
        .filter_map(|task| {
            let task = task.ok()?;
            let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
            // sqlx names them `sqlx-sqlite-worker-N` (cut to 15 bytes).
            comm.starts_with("sqlx-sqlite-wor").then(|| task.file_name().to_str()?.parse().ok())?
        })
        .collect()
}

fn spawn_checkpointer(pool: SqlitePool, log_restart: Arc<AtomicBool>) {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(CHECKPOINT_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            if pool.is_closed() {
                return;
            }
            // One row: busy, frames in the log, frames copied.
            match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&pool).await {
                Ok((_, frames, _)) if frames > LOG_RESTART_FRAMES => log_restart.store(true, Ordering::Relaxed),
                Ok(_) => {}
                Err(e) => {
                    if pool.is_closed() {
                        return;
                    }
                    tracing::warn!(error = %e, "checkpoint failed; will retry");
                }
            }
        }
    });
}

/// Inserting many rows at once, in the way each database takes them best.
/// SQLite: multi-row INSERTs with anonymous parameters (see
/// [`multi_row_insert_sql`]). PostgreSQL: one statement whatever the number
/// of rows, each column bound as an array (`INSERT … SELECT * FROM
/// UNNEST(…)`); a multi-row VALUES would be a different statement for every
/// row count, each new one parsed and planned again, and the connection's
/// statement cache (100) thrashed by the 256 shapes.
trait InsertRows {
    /// A batch of chat messages (every op a [`StoreOp::Message`]).
    async fn insert_messages(&mut self, ops: &[&StoreOp]) -> Result<(), sqlx::Error>;
    async fn insert_queue_events(&mut self, events: &[QueueEvent]) -> Result<(), sqlx::Error>;
}

impl InsertRows for sqlx::SqliteConnection {
    async fn insert_queue_events(&mut self, events: &[QueueEvent]) -> Result<(), sqlx::Error> {
        for chunk in events.chunks(EVENT_ROWS_PER_INSERT) {
            let sql = multi_row_insert_sql(
                "INSERT INTO queue_events (conversation_id, kind, at, advisor_id, detail) VALUES ",
                5,
                chunk.len(),
            );
            let mut query = sqlx::query(&sql);
            for e in chunk {
                query = query.bind(e.conversation.as_deref()).bind(e.kind).bind(e.at).bind(e.advisor).bind(e.detail);
            }
            query.execute(&mut *self).await?;
        }
        Ok(())
    }

    async fn insert_messages(&mut self, ops: &[&StoreOp]) -> Result<(), sqlx::Error> {
        for chunk in ops.chunks(MESSAGE_ROWS_PER_INSERT) {
            let sql = message_insert_sql(chunk.len());
            let mut query = sqlx::query(&sql);
            for op in chunk {
                if let StoreOp::Message { conversation, seq, sender, advisor, sender_name, client_msg_id, text, at } =
                    op
                {
                    query = query
                        .bind(conversation.to_string())
                        .bind(*seq as i64)
                        .bind(sender.as_str())
                        .bind(*advisor)
                        .bind(sender_name.as_deref())
                        .bind(client_msg_id.as_deref())
                        .bind(&**text)
                        .bind(millis(*at));
                }
            }
            query.execute(&mut *self).await?;
        }
        Ok(())
    }
}

impl InsertRows for sqlx::PgConnection {
    async fn insert_queue_events(&mut self, events: &[QueueEvent]) -> Result<(), sqlx::Error> {
        if events.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO queue_events (conversation_id, kind, at, advisor_id, detail) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[], $5::text[])",
        )
        .bind(events.iter().map(|e| e.conversation.as_deref()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.kind).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.at).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.advisor).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.detail).collect::<Vec<_>>())
        .execute(self)
        .await?;
        Ok(())
    }

    async fn insert_messages(&mut self, ops: &[&StoreOp]) -> Result<(), sqlx::Error> {
        let rows = ops.len();
        let mut conversations = Vec::with_capacity(rows);
        let mut seqs = Vec::with_capacity(rows);
        let mut senders = Vec::with_capacity(rows);
        let mut advisors = Vec::with_capacity(rows);
        let mut sender_names = Vec::with_capacity(rows);
        let mut client_msg_ids = Vec::with_capacity(rows);
        let mut bodies = Vec::with_capacity(rows);
        let mut sent_at = Vec::with_capacity(rows);
        for op in ops {
            if let StoreOp::Message { conversation, seq, sender, advisor, sender_name, client_msg_id, text, at } = op {
                conversations.push(conversation.to_string());
                seqs.push(*seq as i64);
                senders.push(sender.as_str());
                advisors.push(*advisor);
                sender_names.push(sender_name.as_deref());
                client_msg_ids.push(client_msg_id.as_deref());
                bodies.push(&**text);
                sent_at.push(millis(*at));
            }
        }
        if conversations.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO messages (conversation_id, seq, sender, advisor_id, sender_name, client_msg_id, body, sent_at) \
             SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::int8[], $5::text[], $6::text[], $7::text[], $8::int8[])",
        )
        .bind(conversations)
        .bind(seqs)
        .bind(senders)
        .bind(advisors)
        .bind(sender_names)
        .bind(client_msg_ids)
        .bind(bodies)
        .bind(sent_at)
        .execute(self)
        .await?;
        Ok(())
    }
}

/// A multi-row message INSERT. SQLite gets anonymous `?` placeholders: sqlx
/// looks up every numbered parameter's name when binding, and SQLite finds a
/// name by walking the list of all of them, so `$n` makes binding a batch
/// quadratic in its size (a quarter of the server's CPU at 5,000 messages/s
/// before this). Anonymous parameters have no name to look up.
fn message_insert_sql(rows: usize) -> String {
    multi_row_insert_sql(
        "INSERT INTO messages (conversation_id, seq, sender, advisor_id, sender_name, client_msg_id, body, sent_at) VALUES ",
        8,
        rows,
    )
}

/// `head` followed by `rows` tuples of `columns` anonymous `?` placeholders
/// (SQLite only; see [`message_insert_sql`] for why not `$n`).
fn multi_row_insert_sql(head: &str, columns: usize, rows: usize) -> String {
    let tuple = format!("({})", vec!["?"; columns].join(", "));
    let mut sql = String::with_capacity(head.len() + rows * (tuple.len() + 2));
    sql.push_str(head);
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&tuple);
    }
    sql
}

/// A row of `queue_events`, gathered over a batch and written in one INSERT.
struct QueueEvent {
    conversation: Option<String>,
    kind: &'static str,
    at: i64,
    advisor: Option<UserId>,
    detail: Option<&'static str>,
}

impl QueueEvent {
    fn new(conversation: Option<&ConversationId>, kind: &'static str, at: DateTime<Utc>) -> QueueEvent {
        QueueEvent {
            conversation: conversation.map(|c| c.to_string()),
            kind,
            at: millis(at),
            advisor: None,
            detail: None,
        }
    }
}

/// Queue events per INSERT: five parameters each, far below either
/// database's limit on parameters per statement.
const EVENT_ROWS_PER_INSERT: usize = 256;
