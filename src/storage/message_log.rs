//! The message log: where a chat message is made durable before it is
//! acknowledged, when the database is embedded SQLite.
//!
//! Why it exists: SQLite keeps the transcript clustered by conversation,
//! so a commit writes one 4 KiB page to its own log for every conversation
//! it touches. Committed a few messages at a time (as latency demands),
//! that is some 20 µs of CPU per message on the core the relay shares. Here
//! a message is instead appended to a plain file (one `write` and, with
//! `synchronous = full`, one `fdatasync` for a whole batch) and acknowledged;
//! the database is brought up to date behind it, in transactions as large as
//! have gathered meanwhile, where each page written carries many messages.
//!
//! The log is a directory of segments named by the first record's number
//! (its LSN). Each record is `[length u32][crc32c u32][JSON]`, little
//! endian. The database remembers the last LSN it holds (`message_log_applied`,
//! written in the same transaction as the rows), so at start every record
//! after it is applied once, and a torn record at the end (a crash mid-write,
//! never acknowledged) is where reading stops. A segment is deleted once the
//! database holds all of it.
//!
//! Only a running server writes or replays the log; it holds the directory's
//! lock file so that a second server on the same database refuses to start.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::domain::chat::{ConversationId, StoreOp, UserId};
use crate::protocol::ws::Sender;

use super::{from_millis, millis};

/// A segment is closed and a new one begun past this size.
const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
/// Largest record accepted when reading (a message is at most a few KiB).
const MAX_RECORD_BYTES: u32 = 1024 * 1024;
/// The file grows by this much at a time (zeros written ahead).
const GROW_BYTES: u64 = 256 * 1024;
/// Emptied segments kept to be written over rather than new files grown.
const SPARE_SEGMENTS: usize = 2;
/// CRC-32C, computed sixteen bytes a step: the byte-wise table cost 2.5% of
/// the server's samples at 20,000 messages/s (the same checksums either way).
const CRC: crc::Crc<u32, crc::Table<16>> = crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);
const HEADER_BYTES: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum MessageLogError {
    #[error("the message log {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("the message log {0} is in use by another kommunchat server on the same database; stop it first")]
    Locked(PathBuf),
}

/// One logged chat message: the fields of [`StoreOp::Message`].
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    lsn: u64,
    conversation: ConversationId,
    seq: u64,
    sender: Sender,
    #[serde(skip_serializing_if = "Option::is_none")]
    advisor: Option<UserId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sender_name: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_msg_id: Option<Arc<str>>,
    text: Arc<str>,
    at_ms: i64,
}

impl Record {
    fn into_op(self) -> StoreOp {
        StoreOp::Message {
            conversation: self.conversation,
            seq: self.seq,
            sender: self.sender,
            advisor: self.advisor,
            sender_name: self.sender_name,
            client_msg_id: self.client_msg_id,
            text: self.text,
            at: from_millis(self.at_ms),
        }
    }
}

/// Records read back at start that the database does not hold yet.
#[derive(Debug, Default)]
pub struct Unapplied {
    pub ops: Vec<StoreOp>,
    /// The LSN of the last of them (0 when there are none).
    pub through: u64,
}

/// The open log: appends go to the newest segment.
#[derive(Debug)]
pub struct MessageLog {
    dir: PathBuf,
    /// Held for as long as the server runs (an advisory lock).
    _lock: File,
    segment: File,
    /// Where the next record goes in the current segment.
    segment_bytes: u64,
    /// How far the current segment is already written (zeros or old
    /// records): writing within it is a cheaper flush than growing the file.
    segment_len: u64,
    /// First LSN of each segment still on disk, oldest first; the last is
    /// the one being written.
    segments: Vec<u64>,
    /// Segments the database held entirely, kept to be written over.
    spares: Vec<PathBuf>,
    next_lsn: u64,
    fsync: bool,
    buffer: Vec<u8>,
}

impl MessageLog {
    /// The log's directory for a SQLite database file.
    pub fn dir_for(database_file: &Path) -> PathBuf {
        let mut name = database_file.as_os_str().to_owned();
        name.push(".messages");
        PathBuf::from(name)
    }

    /// Opens the log in `dir` (creating it), takes its lock and reads back
    /// every record after `applied`, the LSN the database holds. Appends
    /// then go to a new segment. `fsync`: whether an append waits for the disk.
    pub fn open(dir: &Path, applied: u64, fsync: bool) -> Result<(MessageLog, Unapplied), MessageLogError> {
        let io_err = |source| MessageLogError::Io { path: dir.to_path_buf(), source };
        std::fs::create_dir_all(dir).map_err(io_err)?;
        let lock =
            OpenOptions::new().create(true).truncate(false).write(true).open(dir.join("lock")).map_err(io_err)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(MessageLogError::Locked(dir.to_path_buf())),
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(e)),
        }
        let (segments, spares) = list_segments(dir).map_err(io_err)?;
        let mut unapplied = Unapplied::default();
        let mut last_lsn = applied;
        for &first in &segments {
            let path = segment_path(dir, first);
            let bytes = read_all(&path).map_err(|source| MessageLogError::Io { path: path.clone(), source })?;
            let (records, clean) = decode(&bytes, first);
            if !clean {
                tracing::warn!(segment = %path.display(), "the message log ends in a torn record (written when the server stopped; never acknowledged)");
            }
            for record in records {
                last_lsn = last_lsn.max(record.lsn);
                if record.lsn > applied {
                    unapplied.through = unapplied.through.max(record.lsn);
                    unapplied.ops.push(record.into_op());
                }
            }
        }
        let next_lsn = last_lsn + 1;
        let mut log = MessageLog {
            dir: dir.to_path_buf(),
            _lock: lock,
            // Replaced at once by the first segment of this run.
            segment: File::open(dir).map_err(io_err)?,
            segment_bytes: 0,
            segment_len: 0,
            segments,
            spares,
            next_lsn,
            fsync,
            buffer: Vec::with_capacity(64 * 1024),
        };
        log.begin_segment()?;
        Ok((log, unapplied))
    }

    /// Whether an append waits for the disk (`synchronous = full`), or only
    /// hands the records to the operating system (`normal`).
    pub fn flushes(&self) -> bool {
        self.fsync
    }

    /// Appends the messages in `ops` (other writes are skipped) as one write,
    /// durable when this returns. Returns the LSN of the last one, or `None`
    /// when there were none.
    pub fn append(&mut self, ops: &[StoreOp]) -> Result<Option<u64>, MessageLogError> {
        self.buffer.clear();
        let mut last = None;
        for op in ops {
            let StoreOp::Message { conversation, seq, sender, advisor, sender_name, client_msg_id, text, at } = op
            else {
                continue;
            };
            let record = Record {
                lsn: self.next_lsn,
                conversation: *conversation,
                seq: *seq,
                sender: *sender,
                advisor: *advisor,
                sender_name: sender_name.clone(),
                client_msg_id: client_msg_id.clone(),
                text: text.clone(),
                at_ms: millis(*at),
            };
            encode(&record, &mut self.buffer);
            last = Some(self.next_lsn);
            self.next_lsn += 1;
        }
        if last.is_none() {
            return Ok(None);
        }
        let records = self.buffer.len() as u64;
        let end = self.segment_bytes + records;
        if end > self.segment_len {
            // Grow the file well ahead with zeros in the same write, so that
            // most flushes write within it and need not record a new size.
            let grown = end.div_ceil(GROW_BYTES) * GROW_BYTES;
            self.buffer.resize((grown - self.segment_bytes) as usize, 0);
        }
        let path = || segment_path(&self.dir, *self.segments.last().unwrap_or(&0));
        self.segment
            .write_all_at(&self.buffer, self.segment_bytes)
            .map_err(|source| MessageLogError::Io { path: path(), source })?;
        if self.fsync {
            self.segment.sync_data().map_err(|source| MessageLogError::Io { path: path(), source })?;
        }
        self.segment_len = self.segment_len.max(self.segment_bytes + self.buffer.len() as u64);
        self.segment_bytes = end;
        if self.buffer.capacity() > 1024 * 1024 {
            // One unusually large batch should not keep its buffer.
            self.buffer = Vec::with_capacity(64 * 1024);
        }
        Ok(last)
    }

    /// Begins a new segment once the current one is large, and deletes the
    /// segments the database holds entirely (`applied`: the LSN it holds).
    /// Returns how many were deleted.
    pub fn tidy(&mut self, applied: u64) -> Result<usize, MessageLogError> {
        if self.segment_bytes >= SEGMENT_BYTES {
            self.begin_segment()?;
        }
        let mut done = 0;
        // A segment's records end where the next one's begin.
        while self.segments.len() > 1 && self.segments[1] - 1 <= applied {
            let path = segment_path(&self.dir, self.segments[0]);
            let result = if self.spares.len() < SPARE_SEGMENTS {
                let spare = self.dir.join(format!("{:020}.spare", self.segments[0]));
                std::fs::rename(&path, &spare).map(|()| self.spares.push(spare))
            } else {
                std::fs::remove_file(&path)
            };
            match result {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(MessageLogError::Io { path, source }),
            }
            self.segments.remove(0);
            done += 1;
        }
        Ok(done)
    }

    /// Starts the segment for the next LSN: a spare written over, or a new file.
    fn begin_segment(&mut self) -> Result<(), MessageLogError> {
        let path = segment_path(&self.dir, self.next_lsn);
        let io_err = |source| MessageLogError::Io { path: path.clone(), source };
        if let Some(spare) = self.spares.pop() {
            std::fs::rename(&spare, &path).map_err(io_err)?;
        }
        let segment =
            OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path).map_err(io_err)?;
        self.segment_len = segment.metadata().map_err(io_err)?.len();
        if self.fsync {
            // The segment's name must be on disk before a record in it is
            // acknowledged.
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|source| MessageLogError::Io { path: self.dir.clone(), source })?;
        }
        self.segment = segment;
        self.segment_bytes = 0;
        self.segments.push(self.next_lsn);
        Ok(())
    }

    /// Deletes every segment but the current one after the records read at
    /// start were applied (all of them are then in the database).
    pub fn forget_replayed(&mut self) -> Result<usize, MessageLogError> {
        let applied = self.next_lsn - 1;
        self.tidy(applied)
    }

    /// Keeps a message the database refused (after it was acknowledged),
    /// so that it is not lost: one JSON line in `refused.jsonl`.
    pub fn keep_refused(dir: &Path, op: &StoreOp, error: &str) -> io::Result<()> {
        let StoreOp::Message { conversation, seq, sender, advisor, sender_name, client_msg_id, text, at } = op else {
            return Ok(());
        };
        let line = serde_json::json!({
            "conversation": conversation,
            "seq": seq,
            "sender": sender,
            "advisor": advisor,
            "sender_name": sender_name,
            "client_msg_id": client_msg_id,
            "text": text,
            "at_ms": millis(*at),
            "error": error,
        });
        let mut file = OpenOptions::new().create(true).append(true).open(dir.join("refused.jsonl"))?;
        writeln!(file, "{line}")?;
        file.sync_data()
    }

    /// The LSN the next record will get.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn segment_path(dir: &Path, first_lsn: u64) -> PathBuf {
    dir.join(format!("{first_lsn:020}.log"))
}

/// The segments (their first LSNs, oldest first) and the spares in `dir`.
fn list_segments(dir: &Path) -> io::Result<(Vec<u64>, Vec<PathBuf>)> {
    let mut firsts = Vec::new();
    let mut spares = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(".log")
            && let Ok(first) = stem.parse::<u64>()
        {
            firsts.push(first);
        } else if name.ends_with(".spare") {
            spares.push(entry.path());
        }
    }
    firsts.sort_unstable();
    Ok((firsts, spares))
}

fn read_all(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn encode(record: &Record, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_BYTES]);
    // Serializing plain fields into a Vec cannot fail.
    serde_json::to_writer(&mut *out, record).expect("a log record serializes");
    let payload = &out[start + HEADER_BYTES..];
    let len = payload.len() as u32;
    let crc = CRC.checksum(payload);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The records in a segment whose first LSN is `first`: up to zeros or an
/// older segment's records written over (where the segment ends cleanly),
/// or a record that is incomplete or damaged (where it is torn). Returns
/// them and whether the end was clean.
fn decode(bytes: &[u8], first: u64) -> (Vec<Record>, bool) {
    let mut records = Vec::new();
    let mut at = 0;
    let mut expected = first;
    while at < bytes.len() {
        let Some(header) = bytes.get(at..at + HEADER_BYTES) else {
            return (records, false);
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len == 0 && crc == 0 {
            return (records, true);
        }
        if len == 0 || len > MAX_RECORD_BYTES {
            return (records, false);
        }
        let Some(payload) = bytes.get(at + HEADER_BYTES..at + HEADER_BYTES + len as usize) else {
            return (records, false);
        };
        if CRC.checksum(payload) != crc {
            return (records, false);
        }
        match serde_json::from_slice::<Record>(payload) {
            // An older record: this segment was a spare written over.
            Ok(record) if record.lsn != expected => return (records, record.lsn < expected),
            Ok(record) => records.push(record),
            Err(_) => return (records, false),
        }
        expected += 1;
        at += HEADER_BYTES + len as usize;
    }
    (records, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    /// The checksum is part of the format on disk: logs written by any
    /// version must read back, however the checksum is computed.
    #[test]
    fn the_checksum_is_crc32c() {
        assert_eq!(CRC.checksum(b"123456789"), 0xE306_9283);
    }

    fn message(seq: u64, text: &str) -> StoreOp {
        StoreOp::Message {
            conversation: uuid::Uuid::from_u128(7),
            seq,
            sender: Sender::Citizen,
            advisor: None,
            sender_name: None,
            client_msg_id: Some(format!("c{seq}").into()),
            text: text.into(),
            at: Utc.timestamp_millis_opt(1_700_000_000_000 + seq as i64).unwrap(),
        }
    }

    fn texts(ops: &[StoreOp]) -> Vec<String> {
        ops.iter()
            .map(|op| match op {
                StoreOp::Message { text, .. } => text.to_string(),
                _ => panic!("not a message"),
            })
            .collect()
    }

    #[test]
    fn records_after_the_applied_lsn_are_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.messages");
        {
            let (mut log, unapplied) = MessageLog::open(&path, 0, true).unwrap();
            assert!(unapplied.ops.is_empty());
            assert_eq!(log.append(&[message(1, "hej"), message(2, "å ä ö")]).unwrap(), Some(2));
            assert_eq!(log.append(&[message(3, "tre")]).unwrap(), Some(3));
        }
        let (_, unapplied) = MessageLog::open(&path, 1, true).unwrap();
        assert_eq!(texts(&unapplied.ops), ["å ä ö", "tre"]);
        assert_eq!(unapplied.through, 3);
        let StoreOp::Message { conversation, seq, client_msg_id, at, .. } = &unapplied.ops[0] else { unreachable!() };
        assert_eq!((*conversation, *seq, client_msg_id.as_deref()), (uuid::Uuid::from_u128(7), 2, Some("c2")));
        assert_eq!(millis(*at), 1_700_000_000_002);
    }

    #[test]
    fn lsns_go_on_after_a_restart_so_nothing_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.messages");
        {
            let (mut log, _) = MessageLog::open(&path, 0, false).unwrap();
            log.append(&[message(1, "a"), message(2, "b")]).unwrap();
        }
        {
            // Restarted with everything applied: the next record is 3, not 1.
            let (mut log, unapplied) = MessageLog::open(&path, 2, false).unwrap();
            assert!(unapplied.ops.is_empty());
            assert_eq!(log.append(&[message(3, "c")]).unwrap(), Some(3));
        }
        let (_, unapplied) = MessageLog::open(&path, 2, false).unwrap();
        assert_eq!(texts(&unapplied.ops), ["c"]);
    }

    #[test]
    fn a_torn_or_damaged_tail_ends_the_reading_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.messages");
        let end = {
            let (mut log, _) = MessageLog::open(&path, 0, false).unwrap();
            log.append(&[message(1, "whole"), message(2, "torn")]).unwrap();
            log.segment_bytes
        };
        let segment = segment_path(&path, 1);
        OpenOptions::new().write(true).open(&segment).unwrap().set_len(end - 3).unwrap();
        let (_, unapplied) = MessageLog::open(&path, 0, false).unwrap();
        assert_eq!(texts(&unapplied.ops), ["whole"]);

        // A flipped byte inside a record fails its checksum.
        let mut bytes = std::fs::read(&segment).unwrap();
        bytes[HEADER_BYTES + 5] ^= 0x20;
        std::fs::write(&segment, &bytes).unwrap();
        let (_, unapplied) = MessageLog::open(&path, 0, false).unwrap();
        assert!(unapplied.ops.is_empty());
    }

    #[test]
    fn segments_the_database_holds_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.messages");
        let (mut log, _) = MessageLog::open(&path, 0, false).unwrap();
        let big = "x".repeat(64 * 1024);
        let mut seq = 0;
        while log.segments.len() < 3 {
            seq += 1;
            log.append(&[message(seq, &big)]).unwrap();
            log.tidy(0).unwrap();
        }
        assert_eq!(list_segments(&path).unwrap().0.len(), 3);
        // The first segment's records end where the second's begin.
        let second = log.segments[1];
        assert_eq!(log.tidy(second - 2).unwrap(), 0);
        assert_eq!(log.tidy(second - 1).unwrap(), 1);
        assert_eq!(list_segments(&path).unwrap(), (log.segments.clone(), log.spares.clone()));
        assert_eq!(log.forget_replayed().unwrap(), 1);
        let (segments, spares) = list_segments(&path).unwrap();
        assert_eq!((segments.len(), spares.len()), (1, 2));
        // A spare is written over by a later segment, and only the new
        // records are read back from it.
        let written = log.next_lsn();
        while log.spares.len() == 2 {
            seq += 1;
            log.append(&[message(seq, "ny")]).unwrap();
            log.tidy(0).unwrap();
        }
        log.append(&[message(seq + 1, "sist")]).unwrap();
        drop(log);
        let (_, unapplied) = MessageLog::open(&path, written - 1, false).unwrap();
        let texts = texts(&unapplied.ops);
        assert_eq!(texts.last().map(String::as_str), Some("sist"));
        assert!(texts.iter().all(|t| t == "ny" || t == "sist"), "{} records", texts.len());
    }

    #[test]
    fn a_second_server_on_the_same_log_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.messages");
        let _first = MessageLog::open(&path, 0, false).unwrap();
        let second = MessageLog::open(&path, 0, false);
        assert!(matches!(second, Err(MessageLogError::Locked(_))), "{second:?}");
    }

    #[test]
    fn other_writes_are_not_logged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.messages");
        let (mut log, _) = MessageLog::open(&path, 0, false).unwrap();
        let classified = StoreOp::Classified { conversation: uuid::Uuid::from_u128(1), category: None, summary: None };
        assert_eq!(log.append(std::slice::from_ref(&classified)).unwrap(), None);
        assert_eq!(log.segment_bytes, 0);
    }
}
