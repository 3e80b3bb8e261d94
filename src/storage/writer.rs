//! The group-commit writer: one task that owns all chat writes.
//!
//! Writes queue up on a channel while a transaction is in flight; the next
//! transaction takes everything that has gathered (up to `max_batch`). Under
//! load many messages share one commit (one fsync); at rest a lone message is
//! committed at once. Order is kept: writes are applied in the order they
//! were submitted, and the answers are handed back in that order.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::message_log::{MessageLog, MessageLogError, Unapplied};
use super::{Storage, StorageError, WriterConnection, messages_committed};
use crate::config::{SqliteSynchronous, StorageConfig};
use crate::domain::chat::{Committed, StoreOp};

/// Submits writes to the writer task.
#[derive(Debug, Clone)]
pub struct WriterHandle {
    tx: mpsc::UnboundedSender<StoreOp>,
}

impl WriterHandle {
    /// Queues a write. Returns false if the writer has stopped.
    pub fn submit(&self, op: StoreOp) -> bool {
        self.tx.send(op).is_ok()
    }

    /// A handle whose writes land in the returned receiver (for tests).
    #[cfg(test)]
    pub(crate) fn detached() -> (WriterHandle, mpsc::UnboundedReceiver<StoreOp>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (WriterHandle { tx }, rx)
    }
}

/// Receives the answers of each committed batch, in order.
pub type OnCommit = dyn Fn(&[StoreOp], Vec<Committed>, Duration) + Send + Sync + 'static;

#[derive(Debug)]
pub struct StoreWriter;

impl StoreWriter {
    /// Starts the writer. `on_commit` receives the answers of each committed
    /// batch, in order. The returned task ends once every handle is dropped
    /// and the queue is drained (the database then holds everything).
    ///
    /// With a message log, batches of nothing but chat messages are made
    /// durable in the log and answered at once by the log's task (on a
    /// thread of its own when appends are flushed, in the runtime when not);
    /// the database is brought up to date behind it by the applier task
    /// (see [`super::message_log`]). Any other write waits until the database
    /// holds everything before it and is answered from there, so whatever a
    /// logged message refers to (its conversation) is in the database first.
    pub fn spawn(
        storage: Storage,
        max_batch: usize,
        log: Option<(MessageLog, Duration)>,
        on_commit: impl Fn(&[StoreOp], Vec<Committed>, Duration) + Send + Sync + 'static,
    ) -> (WriterHandle, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel::<StoreOp>();
        let on_commit: Arc<OnCommit> = Arc::new(on_commit);
        let task = match log {
            None => tokio::spawn(write_directly(storage, max_batch, rx, on_commit)),
            Some((log, apply_every)) => {
                let flushes = log.flushes();
                let (to_applier, applier_rx) = mpsc::unbounded_channel();
                let applied = Arc::new(AtomicU64::new(0));
                let dir = log.dir().to_path_buf();
                let urgent = Arc::new(Notify::new());
                let logging =
                    log_messages(log, max_batch, rx, to_applier, urgent.clone(), applied.clone(), on_commit.clone());
                if flushes {
                    // A flush blocks for hundreds of microseconds: it gets a
                    // thread of its own, so the runtime goes on meanwhile.
                    drop(run_on_own_thread("message-log", crate::scheduling::favour_flushing_thread, logging));
                } else {
                    // Without a flush an append is one write into the page
                    // cache, a few microseconds: done in the runtime, it
                    // saves two thread switches per batch on the way from
                    // sender to receiver.
                    tokio::spawn(logging);
                }
                // The applier binds and sorts a whole batch at a time (about a
                // millisecond for 2,000 messages) before the database thread
                // takes it: on a thread of its own at the database thread's
                // priority, that work waits for the connections instead of
                // holding them up every `apply_every`.
                let applying = apply_behind_log(storage, apply_every, applier_rx, urgent, applied, dir, on_commit);
                let on_finished =
                    run_on_own_thread("log-applier", crate::scheduling::lower_priority_of_this_thread, applying);
                tokio::spawn(async move {
                    let _ = on_finished.await;
                })
            }
        };
        (WriterHandle { tx }, task)
    }
}

/// Without a message log: each batch is one transaction in the database.
async fn write_directly(
    storage: Storage,
    max_batch: usize,
    mut rx: mpsc::UnboundedReceiver<StoreOp>,
    on_commit: Arc<OnCommit>,
) {
    let mut batch = Vec::with_capacity(max_batch);
    // Held across batches; dropped (and taken again) after an error that
    // may have broken it.
    let mut conn = None;
    while let Some(first) = rx.recv().await {
        batch.push(first);
        take_waiting(&mut rx, &mut batch, max_batch);
        let started = Instant::now();
        let results = write_batch(&storage, &mut conn, &batch, None).await;
        on_commit(&batch, results, started.elapsed());
        batch.clear();
        if let Some(conn) = &mut conn {
            storage.finish_checkpoint_if_due(conn).await;
        }
    }
}

/// Adds to `batch` the writes already waiting, up to `max_batch` in all.
fn take_waiting(rx: &mut mpsc::UnboundedReceiver<StoreOp>, batch: &mut Vec<StoreOp>, max_batch: usize) {
    while batch.len() < max_batch {
        match rx.try_recv() {
            Ok(op) => batch.push(op),
            Err(_) => break,
        }
    }
}

/// What the log's task hands the applier.
enum ForApplier {
    /// Messages in the log through `through`, already answered.
    Logged { ops: Vec<StoreOp>, through: u64 },
    /// Writes to answer once the database holds them; `done` is told then.
    /// `through`: records of these that reached the log before it failed.
    Unlogged { ops: Vec<StoreOp>, through: Option<u64>, done: oneshot::Sender<()> },
}

/// The message log's task: appends batches of messages and answers them;
/// hands every batch on to the applier, and waits for it on any other write.
async fn log_messages(
    mut log: MessageLog,
    max_batch: usize,
    mut rx: mpsc::UnboundedReceiver<StoreOp>,
    to_applier: mpsc::UnboundedSender<ForApplier>,
    urgent: Arc<Notify>,
    applied: Arc<AtomicU64>,
    on_commit: Arc<OnCommit>,
) {
    // After a failed append the log is not trusted again until a restart.
    let mut log_broken = false;
    let shares_the_runtime = !log.flushes();
    while let Some(first) = rx.recv().await {
        if shares_the_runtime {
            // In the connections' runtime, let the connections that are
            // ready run first: what they post joins this batch. Idle, that
            // costs one look at the sockets; under load, it turns many
            // batches of one or two into a few larger ones, and each batch
            // costs a write, an answer and a pass of the hub.
            tokio::task::yield_now().await;
        }
        let mut batch = Vec::with_capacity(max_batch.min(64));
        batch.push(first);
        take_waiting(&mut rx, &mut batch, max_batch);
        let started = Instant::now();
        let only_messages = batch.iter().all(|op| matches!(op, StoreOp::Message { .. }));
        let mut failed_through = None;
        if only_messages && !log_broken {
            let first_lsn = log.next_lsn();
            match log.append(&batch) {
                Ok(Some(through)) => {
                    on_commit(&batch, messages_committed(&batch).collect(), started.elapsed());
                    if to_applier.send(ForApplier::Logged { ops: batch, through }).is_err() {
                        return;
                    }
                    tidy(&mut log, &applied, &mut log_broken);
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %e, "appending to the message log failed; messages now go straight to the database");
                    log_broken = true;
                    // What did reach the log must not be applied again at start.
                    failed_through = Some(log.next_lsn() - 1).filter(|&last| last >= first_lsn);
                }
            }
        }
        let (done, wait) = oneshot::channel();
        if to_applier.send(ForApplier::Unlogged { ops: batch, through: failed_through, done }).is_err() {
            return;
        }
        urgent.notify_one();
        // The next messages are logged only once the database holds this.
        let _ = wait.await;
        tidy(&mut log, &applied, &mut log_broken);
    }
    // Every handle is gone (the server is stopping): the applier takes in
    // what has gathered now, not when its transaction was due.
    urgent.notify_one();
}

fn tidy(log: &mut MessageLog, applied: &AtomicU64, log_broken: &mut bool) {
    if *log_broken {
        return;
    }
    if let Err(e) = log.tidy(applied.load(Ordering::Acquire)) {
        tracing::error!(error = %e, "the message log could not begin a segment or delete one; messages now go straight to the database");
        *log_broken = true;
    }
}

/// Most writes the applier takes into one transaction.
const APPLIER_MAX_BATCH: usize = 8192;

/// Brings the database up to date behind the message log, in transactions
/// as large as have gathered while the last one was written.
///
/// Logged messages gather for `apply_every` into one transaction: a
/// conversation's page is then written once for all its messages in that
/// time, not once per batch the log took. The database lags the
/// acknowledgements by about that much.
async fn apply_behind_log(
    storage: Storage,
    apply_every: Duration,
    mut rx: mpsc::UnboundedReceiver<ForApplier>,
    urgent: Arc<Notify>,
    applied: Arc<AtomicU64>,
    dir: PathBuf,
    on_commit: Arc<OnCommit>,
) {
    let mut conn = None;
    let mut ops: Vec<StoreOp> = Vec::new();
    let mut last_started = Instant::now();
    // The last round stopped at the most a transaction takes: more wait.
    let mut behind = false;
    while let Some(first) = rx.recv().await {
        let waiting = matches!(first, ForApplier::Unlogged { .. });
        let mut count = first.len();
        let mut items = vec![first];
        // Logged messages are durable and answered: they may wait for more
        // to share the transaction (the fewer pages per message, the less
        // CPU). Anything else is being waited for, and goes at once.
        if !waiting && !behind {
            // Asleep until then, not woken for every batch the log hands on
            // (on this thread of its own that was a thread switch each,
            // thousands a second under load): the log's task rings `urgent`
            // after it hands on a write that is being waited for.
            let deadline = tokio::time::Instant::from_std(last_started + apply_every);
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                () = urgent.notified() => {}
            }
        }
        // A ring for a write taken below is spent here, before taking, so a
        // ring is never lost: whatever it was for is either taken now or
        // rings again for the next round.
        let _ = urgent.notified().now_or_never();
        while count < APPLIER_MAX_BATCH {
            let Ok(item) = rx.try_recv() else { break };
            count += item.len();
            items.push(item);
        }
        behind = count >= APPLIER_MAX_BATCH;
        let started = Instant::now();
        last_started = started;
        // Which of the writes are to be answered, and the log's last record.
        let mut through = None;
        let mut to_answer = Vec::new();
        for item in items {
            match item {
                ForApplier::Logged { ops: logged, through: t } => {
                    through = Some(t);
                    ops.extend(logged);
                }
                ForApplier::Unlogged { ops: unlogged, through: t, done } => {
                    through = t.or(through);
                    let start = ops.len();
                    ops.extend(unlogged);
                    to_answer.push((start..ops.len(), done));
                }
            }
        }
        let results = write_batch(&storage, &mut conn, &ops, through).await;
        let mut answered = vec![false; ops.len()];
        for (range, _) in &to_answer {
            answered[range.clone()].iter_mut().for_each(|a| *a = true);
        }
        for ((op, result), answered) in ops.iter().zip(&results).zip(&answered) {
            if !*answered && let Committed::MessageFailed { .. } = result {
                keep_refused(&dir, op);
            }
        }
        if let Some(t) = through {
            applied.fetch_max(t, Ordering::AcqRel);
        }
        let took = started.elapsed();
        for (range, done) in to_answer {
            on_commit(&ops[range.clone()], results[range].to_vec(), took);
            let _ = done.send(());
        }
        ops.clear();
        if let Some(conn) = &mut conn {
            storage.finish_checkpoint_if_due(conn).await;
        }
    }
}

impl ForApplier {
    fn len(&self) -> usize {
        match self {
            ForApplier::Logged { ops, .. } | ForApplier::Unlogged { ops, .. } => ops.len(),
        }
    }
}

/// An acknowledged message the database refused is kept beside the log.
fn keep_refused(dir: &Path, op: &StoreOp) {
    tracing::error!(dir = %dir.display(), "the database refused an acknowledged message; it is kept in refused.jsonl");
    if let Err(e) = MessageLog::keep_refused(dir, op, "refused by the database") {
        tracing::error!(error = %e, ?op, "could not keep a refused message");
    }
}

/// Runs `work` to its end on a thread of its own named `name`, in a
/// current-thread runtime, after `set_priority` (one of
/// [`crate::scheduling`]'s) has set the thread's priority. The receiver is
/// answered when it has ended.
fn run_on_own_thread(
    name: &str,
    set_priority: fn(),
    work: impl Future<Output = ()> + Send + 'static,
) -> oneshot::Receiver<()> {
    let (finished, on_finished) = oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            set_priority();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a runtime for a storage thread");
            runtime.block_on(work);
            let _ = finished.send(());
        })
        .unwrap_or_else(|e| panic!("cannot start the {name} thread: {e}"));
    on_finished
}

/// Why the message log could not be opened and taken in.
#[derive(Debug, thiserror::Error)]
pub enum OpenLogError {
    #[error("{0}")]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Log(#[from] MessageLogError),
}

/// Opens the message log beside an SQLite database, when `config` keeps
/// one, taking its lock; then, before anything reads the database, writes
/// in what the log holds and the database does not (after a crash, or a
/// stop before the applier caught up). Returns the log, ready for appends,
/// and how many messages it wrote in. Used by the server's start and by the
/// CLI's errand commands.
pub async fn open_message_log(
    storage: &Storage,
    config: &StorageConfig,
) -> Result<Option<(MessageLog, usize)>, OpenLogError> {
    let Some(dir) = storage.message_log_dir().filter(|_| config.message_log) else {
        return Ok(None);
    };
    let applied = storage.message_log_applied().await?;
    let fsync = config.sqlite_synchronous == SqliteSynchronous::Full;
    let (mut log, unapplied) = MessageLog::open(&dir, applied, fsync)?;
    let replayed = replay_message_log(storage, &mut log, unapplied).await?;
    Ok(Some((log, replayed)))
}

/// Applies the records the log holds and the database does not, then
/// forgets them. Returns how many were applied.
async fn replay_message_log(
    storage: &Storage,
    log: &mut MessageLog,
    unapplied: Unapplied,
) -> Result<usize, MessageLogError> {
    if unapplied.ops.is_empty() {
        return Ok(0);
    }
    let mut conn = None;
    let results = write_batch(storage, &mut conn, &unapplied.ops, Some(unapplied.through)).await;
    for (op, result) in unapplied.ops.iter().zip(&results) {
        if let Committed::MessageFailed { .. } = result {
            keep_refused(log.dir(), op);
        }
    }
    log.forget_replayed()?;
    Ok(unapplied.ops.len())
}

/// Writes a batch, retrying while the database is unreachable. If the batch
/// itself is refused (a constraint, a bad value), the writes are tried one
/// by one so one bad write cannot hold up the rest; a message that still
/// fails is reported as not stored (its sender is told; it is never acked).
async fn write_batch(
    storage: &Storage,
    conn: &mut Option<WriterConnection>,
    batch: &[StoreOp],
    log_through: Option<u64>,
) -> Vec<Committed> {
    let mut delay = Duration::from_millis(50);
    loop {
        match apply(storage, conn, batch, log_through).await {
            Ok(results) => return results,
            Err(e) if is_transient(&e) => {
                tracing::error!(error = %e, writes = batch.len(), "storage unavailable; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!(error = %e, writes = batch.len(), "batch refused; writing one by one");
                break;
            }
        }
    }
    let mut results = Vec::with_capacity(batch.len());
    for op in batch {
        match apply(storage, conn, std::slice::from_ref(op), None).await {
            Ok(mut r) => results.append(&mut r),
            Err(e) => {
                tracing::error!(error = %e, "a write was refused by the database");
                results.push(match op {
                    StoreOp::Message { conversation, seq, .. } => {
                        Committed::MessageFailed { conversation: *conversation, seq: *seq }
                    }
                    StoreOp::Ended { conversation, .. } => Committed::Ended { conversation: *conversation },
                    StoreOp::Classified { conversation, .. } => Committed::Classified { conversation: *conversation },
                    _ => Committed::Done,
                });
            }
        }
    }
    if let Some(lsn) = log_through
        && let Some(held) = conn
        && let Err(e) = storage.record_message_log_applied(held, lsn).await
    {
        // The records then are applied again at start, and refused as
        // already there (kept in refused.jsonl): nothing is lost.
        tracing::error!(error = %e, "could not note how much of the message log the database holds");
    }
    results
}

/// Applies `ops` on the writer's connection, taking one first if it has
/// none; after an error that may have broken the connection it lets it go.
async fn apply(
    storage: &Storage,
    conn: &mut Option<WriterConnection>,
    ops: &[StoreOp],
    log_through: Option<u64>,
) -> Result<Vec<Committed>, StorageError> {
    let held = match conn {
        Some(held) => held,
        None => conn.insert(storage.writer_connection().await?),
    };
    let result = storage.apply_on(held, ops, log_through).await;
    if let Err(e) = &result
        && is_transient(e)
    {
        *conn = None;
    }
    result
}

fn is_transient(e: &StorageError) -> bool {
    match e {
        StorageError::Database(sqlx::Error::Database(_)) => false,
        StorageError::Database(
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_),
        ) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ws::Sender;
    use chrono::{DateTime, TimeDelta, Utc};
    use uuid::Uuid;

    fn message(conversation: Uuid, seq: u64, at: DateTime<Utc>) -> StoreOp {
        StoreOp::Message {
            conversation,
            seq,
            sender: Sender::Citizen,
            advisor: None,
            sender_name: Some("Ada".into()),
            client_msg_id: Some(format!("m{seq}").into()),
            text: "Hej".into(),
            at,
        }
    }

    fn assigned(conversation: Uuid, at: DateTime<Utc>, first: bool) -> StoreOp {
        StoreOp::Assigned {
            conversation,
            at,
            advisor: 1,
            advisor_name: "Anna".into(),
            queued_at: at,
            errand_year: 2026,
            first,
        }
    }

    /// A write that is waited for (a conversation created, assigned) goes
    /// into the database at once, also while logged messages gather for a
    /// transaction of their own, and round after round.
    #[tokio::test]
    async fn writes_that_are_waited_for_are_not_held_while_messages_gather() {
        let dir = tempfile::tempdir().expect("a directory");
        let url = format!("sqlite://{}/kommunchat.db", dir.path().display());
        let config = StorageConfig { sqlite_synchronous: SqliteSynchronous::Normal, ..StorageConfig::default() };
        let storage = Storage::open(&url, &config).await.expect("storage");
        let log_dir = storage.message_log_dir().expect("a log beside the database");
        let (log, _) = MessageLog::open(&log_dir, 0, false).expect("the log");
        // Messages would gather far longer than this test may take.
        let gather = Duration::from_secs(600);
        let (answered, mut answers) = mpsc::unbounded_channel();
        let (writer, task) = StoreWriter::spawn(storage, 64, Some((log, gather)), move |_, results, _| {
            let _ = answered.send(results);
        });
        let mut next = async || {
            tokio::time::timeout(Duration::from_secs(30), answers.recv())
                .await
                .expect("answered well before the messages' transaction is due")
                .expect("the writer runs")
        };

        let id = Uuid::new_v4();
        let now = Utc::now();
        assert!(writer.submit(StoreOp::Created {
            conversation: id,
            at: now,
            token_hash: crate::auth::token_hash("token"),
            queue_place: 0,
            citizen_name: None,
            topic: None,
            language: None,
        }));
        assert!(matches!(next().await[..], [Committed::Done]));
        for round in 1..=3u64 {
            assert!(writer.submit(message(id, round, now)));
            assert!(matches!(next().await[..], [Committed::Message { seq, .. }] if seq == round));
            assert!(writer.submit(assigned(id, now + TimeDelta::seconds(round as i64), round == 1)));
            let answer = next().await;
            assert!(matches!(answer[..], [Committed::Assigned { .. }]), "round {round}: {answer:?}");
        }

        // Stopping does not wait for the gathering either, and the database
        // then holds the last message too.
        assert!(writer.submit(message(id, 4, now)));
        assert!(matches!(next().await[..], [Committed::Message { seq: 4, .. }]));
        drop(writer);
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the writer stops well before the messages' transaction was due")
            .expect("the writer's task");
        let storage = Storage::open(&url, &config).await.expect("storage again");
        let errand = storage.errand(&id.to_string()).await.expect("query").expect("stored");
        assert_eq!(errand.transcript.len(), 4);
    }
}
