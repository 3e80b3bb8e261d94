//! The open-loop timetable shared by relay measurements: every stream sends
//! on a fixed schedule whatever the server does, each message carries the
//! time it was sent, and each receipt is recorded against that time and
//! corrected for coordinated omission. A protocol only says how it frames a
//! payload and where it finds the payload in what it receives.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{Sink, SinkExt, Stream, StreamExt};
use hdrhistogram::Histogram;
use tokio_tungstenite::tungstenite::{Error, Message};

use crate::scenarios::histogram;

/// Size of every payload, whatever the protocol wraps around it.
pub const PAYLOAD_BYTES: usize = 200;

/// How long receivers wait after the last scheduled send for messages still queued in the server.
const STRAGGLERS_NS: u64 = 2_000_000_000;

/// The timetable of one run: `streams` streams sharing `rate` messages per
/// second, spread evenly so that they do not all send at the same instant.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    origin: Instant,
    start_ns: u64,
    end_ns: u64,
    streams: u64,
    /// Time between two messages of one stream.
    pub interval_ns: u64,
}

impl Schedule {
    pub fn new(rate: f64, streams: usize, seconds: f64) -> Schedule {
        let streams = streams.max(1) as u64;
        // 200 ms to spawn every sender and receiver before the first send.
        let start_ns = 200_000_000;
        Schedule {
            origin: Instant::now(),
            start_ns,
            end_ns: start_ns + (seconds * 1e9) as u64,
            streams,
            interval_ns: (1e9 * streams as f64 / rate) as u64,
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    /// When the `k`th message of `stream` is due, or `None` after the end of the run.
    pub fn due_ns(&self, stream: usize, k: u64) -> Option<u64> {
        let at = self.start_ns + self.interval_ns / self.streams * stream as u64 + k * self.interval_ns;
        (at < self.end_ns).then_some(at)
    }

    pub async fn sleep_until(&self, at_ns: u64) {
        let wait = at_ns.saturating_sub(self.now_ns());
        if wait > 0 {
            tokio::time::sleep(Duration::from_nanos(wait)).await;
        }
    }

    /// Records one receipt of a message sent at `sent_ns`.
    pub fn record(&self, latencies: &mut Histogram<u64>, sent_ns: u64) {
        // Corrected for coordinated omission: a stall longer than the send
        // interval also delayed the messages not yet sent.
        let _ = latencies.record_correct(self.now_ns().saturating_sub(sent_ns).max(1), self.interval_ns);
    }
}

/// A payload of `PAYLOAD_BYTES` whose first word is the send time, in hex:
/// in decimal, a ten-digit time can pass as a personnummer (31 of the 20,000
/// times in the test below did), and the server flags such a message for
/// secrecy review in a transaction of its own.
pub fn payload(sent_ns: u64) -> String {
    let mut s = format!("{sent_ns:x} ");
    while s.len() < PAYLOAD_BYTES {
        s.push('x');
    }
    s
}

/// The send time a payload carries.
pub fn sent_at(payload: &str) -> Option<u64> {
    u64::from_str_radix(payload.split(' ').next()?, 16).ok()
}

/// Sends stream `stream` of `schedule` on `sink`, each payload wrapped by
/// `frame`, counting every message handed to the socket in `sent`.
pub async fn send_on_schedule<S>(
    sink: &mut S,
    schedule: Schedule,
    stream: usize,
    sent: &AtomicU64,
    mut frame: impl FnMut(&str) -> Message,
) -> Result<(), String>
where
    S: Sink<Message, Error = Error> + Unpin,
{
    let mut k = 0;
    while let Some(at) = schedule.due_ns(stream, k) {
        schedule.sleep_until(at).await;
        // The payload carries the actual send time: tokio's timer wakes up to a
        // millisecond late, and that lateness belongs to the generator, not the server.
        sink.send(frame(&payload(schedule.now_ns()))).await.map_err(|e| e.to_string())?;
        sent.fetch_add(1, Ordering::Relaxed);
        k += 1;
    }
    Ok(())
}

/// What one received WebSocket message held, as a protocol decodes it.
#[derive(Debug, Default)]
pub struct Receipts {
    /// The send times of the payloads it carried.
    pub sent_at: Vec<u64>,
    /// Errors the server reported in it.
    pub errors: u64,
}

/// What a receiver counted over the run.
#[derive(Debug)]
pub struct Received {
    pub latencies: Histogram<u64>,
    pub count: u64,
    pub errors: u64,
}

/// Reads `stream` until the end of `schedule` plus time for stragglers,
/// recording every payload that `decode` finds.
pub async fn receive_on_schedule<S>(
    stream: &mut S,
    schedule: Schedule,
    mut decode: impl FnMut(Message, &mut Receipts),
) -> Received
where
    S: Stream<Item = Result<Message, Error>> + Unpin,
{
    let mut received = Received { latencies: histogram(), count: 0, errors: 0 };
    let mut receipts = Receipts::default();
    let deadline = schedule.end_ns + STRAGGLERS_NS;
    while schedule.now_ns() < deadline {
        let left = Duration::from_nanos(deadline.saturating_sub(schedule.now_ns()));
        let Ok(Some(Ok(message))) = tokio::time::timeout(left, stream.next()).await else { break };
        decode(message, &mut receipts);
        for sent_ns in receipts.sent_at.drain(..) {
            schedule.record(&mut received.latencies, sent_ns);
            received.count += 1;
        }
        received.errors += std::mem::take(&mut receipts.errors);
    }
    received
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_carries_its_send_time_and_no_personnummer() {
        // Send times over the first minutes of a run, where decimal times
        // were ten digits and 31 of these passed the personnummer check.
        let mut flagged = 0;
        for k in 0..20_000u64 {
            let sent_ns = 200_000_000 + k * 3_000_017;
            let text = payload(sent_ns);
            assert_eq!(text.len(), PAYLOAD_BYTES);
            assert_eq!(sent_at(&text), Some(sent_ns));
            flagged += usize::from(!kommunchat::domain::personnummer::find(&text, 2026).is_empty());
        }
        assert_eq!(flagged, 0, "payloads the server would flag for secrecy review");
    }
}
