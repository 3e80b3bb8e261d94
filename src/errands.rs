//! Errand services shared by the HTTP API and the command line: streaming
//! exports, access requests, and the retention job.

use chrono::{DateTime, Utc};
use futures::Stream;
use tokio::sync::mpsc;

use crate::config::RetentionConfig;
use crate::protocol::errands::{CSV_HEADER, ErrandView, csv_rows};
use crate::storage::{PurgeCandidate, Selection, Storage, StorageError};

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON Lines: one errand (with its transcript) per line.
    Json,
    /// CSV: one row per message.
    Csv,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "json" | "jsonl" | "ndjson" => Some(Format::Json),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/x-ndjson; charset=utf-8",
            Format::Csv => "text/csv; charset=utf-8",
        }
    }
}

/// How many errands may wait between the database and the writer: this
/// bounds the memory an export uses, whatever its size.
const EXPORT_BUFFER: usize = 16;

/// The export as a stream of text chunks (one errand each, after a CSV header).
/// Ends early, with an error line logged, if storage fails midway.
pub fn export_stream(storage: Storage, selection: Selection, format: Format) -> impl Stream<Item = String> {
    let (tx, rx) = mpsc::channel(EXPORT_BUFFER);
    tokio::spawn(async move {
        if let Err(e) = storage.export(&selection, tx).await {
            tracing::error!(error = %e, "export failed midway");
        }
    });
    let header = (format == Format::Csv).then(|| CSV_HEADER.to_owned());
    futures::stream::unfold((rx, header), move |(mut rx, header)| async move {
        if let Some(h) = header {
            return Some((h, (rx, None)));
        }
        let errand = rx.recv().await?;
        let view = ErrandView::new(&errand, true);
        let chunk = match format {
            Format::Json => {
                let mut line = serde_json::to_string(&view).unwrap_or_default();
                line.push('\n');
                line
            }
            Format::Csv => csv_rows(&view),
        };
        Some((chunk, (rx, None)))
    })
}

/// Finds what retention says must go, and (unless `dry_run`) deletes it.
/// Logs the count and the errand numbers, never content.
pub async fn run_retention(
    storage: &Storage,
    retention: &RetentionConfig,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<Vec<PurgeCandidate>, StorageError> {
    let due = storage.purge_due(now, retention).await?;
    if due.is_empty() || dry_run {
        return Ok(due);
    }
    storage.purge(&due, now).await?;
    let numbers: Vec<&str> = due.iter().filter_map(|c| c.errand_number.as_deref()).collect();
    tracing::info!(
        count = due.len(),
        errands = %numbers.join(","),
        "retention: deleted conversations past their retention period"
    );
    Ok(due)
}
