//! The group-commit writer: one task that owns all chat writes.
//!
//! Writes queue up on a channel while a transaction is in flight; the next
//! transaction takes everything that has gathered (up to `max_batch`). Under
//! load many messages share one commit (one fsync); at rest a lone message is
//! committed at once. Order is kept: writes are applied in the order they
//! were submitted, and the answers are handed back in that order.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Storage, StorageError, WriterConnection};
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

#[derive(Debug)]
pub struct StoreWriter;

impl StoreWriter {
    /// Starts the writer. `on_commit` receives the answers of each committed
    /// batch, in order. The task ends once every handle is dropped and the
    /// queue is drained.
    pub fn spawn(
        storage: Storage,
        max_batch: usize,
        on_commit: impl Fn(&[StoreOp], Vec<Committed>, Duration) + Send + 'static,
    ) -> (WriterHandle, JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<StoreOp>();
        let task = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(max_batch);
            // Held across batches; dropped (and taken again) after an error
            // that may have broken it.
            let mut conn = None;
            while let Some(first) = rx.recv().await {
                batch.push(first);
                while batch.len() < max_batch {
                    match rx.try_recv() {
                        Ok(op) => batch.push(op),
                        Err(_) => break,
                    }
                }
                let started = std::time::Instant::now();
                let results = write_batch(&storage, &mut conn, &batch).await;
                on_commit(&batch, results, started.elapsed());
                batch.clear();
                if let Some(conn) = &mut conn {
                    storage.finish_checkpoint_if_due(conn).await;
                }
            }
        });
        (WriterHandle { tx }, task)
    }
}

/// Writes a batch, retrying while the database is unreachable. If the batch
/// itself is refused (a constraint, a bad value), the writes are tried one
/// by one so one bad write cannot hold up the rest; a message that still
/// fails is reported as not stored (its sender is told; it is never acked).
async fn write_batch(storage: &Storage, conn: &mut Option<WriterConnection>, batch: &[StoreOp]) -> Vec<Committed> {
    let mut delay = Duration::from_millis(50);
    loop {
        match apply(storage, conn, batch).await {
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
        match apply(storage, conn, std::slice::from_ref(op)).await {
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
    results
}

/// Applies `ops` on the writer's connection, taking one first if it has
/// none; after an error that may have broken the connection it lets it go.
async fn apply(
    storage: &Storage,
    conn: &mut Option<WriterConnection>,
    ops: &[StoreOp],
) -> Result<Vec<Committed>, StorageError> {
    let held = match conn {
        Some(held) => held,
        None => conn.insert(storage.writer_connection().await?),
    };
    let result = storage.apply_on(held, ops).await;
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
