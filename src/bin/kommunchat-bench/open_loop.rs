//! The open-loop timetable shared by relay measurements: every stream sends
//! on a fixed schedule whatever the server does, each message carries the
//! time it was sent, and each receipt is recorded against that time and
//! corrected for coordinated omission. A protocol only says how it frames a
//! payload and where it finds the payload in what it receives.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{Sink, SinkExt, Stream, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio_tungstenite::tungstenite::{Error, Message};

/// A latency histogram: 1 µs to 60 s in nanoseconds, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3).unwrap_or_else(|_| Histogram::new(3).expect("histogram"))
}

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

    /// One release per message of each stream (see [`releases`]).
    pub fn releases(&self, smooth: bool) -> Vec<Releases> {
        let schedule = *self;
        releases(self.origin, self.streams as usize, smooth, move |stream, k| schedule.due_ns(stream, k))
    }

    /// Records one receipt of a message sent at `sent_ns`.
    pub fn record(&self, latencies: &mut Histogram<u64>, timeline: &mut Timeline, sent_ns: u64) {
        let now = self.now_ns();
        let latency = now.saturating_sub(sent_ns).max(1);
        // Corrected for coordinated omission: a stall longer than the send
        // interval also delayed the messages not yet sent.
        let _ = latencies.record_correct(latency, self.interval_ns);
        timeline.note(now.saturating_sub(self.start_ns), latency);
    }
}

/// When a stream's sender may send its next message.
pub enum Releases {
    /// From the pacer's thread, each when it is due.
    Paced(tokio::sync::mpsc::UnboundedReceiver<()>),
    /// From tokio's timer, which ends every sleep at its next millisecond
    /// tick: the streams due within one millisecond send together.
    Ticked { origin: Instant, due: Arc<dyn Fn(usize, u64) -> Option<u64> + Send + Sync>, stream: usize, k: u64 },
}

impl Releases {
    /// Waits for the next release; false once the stream has ended.
    pub async fn next(&mut self) -> bool {
        match self {
            Releases::Paced(released) => released.recv().await.is_some(),
            Releases::Ticked { origin, due, stream, k } => {
                let Some(at) = due(*stream, *k) else { return false };
                *k += 1;
                let now = origin.elapsed().as_nanos() as u64;
                if at > now {
                    tokio::time::sleep(Duration::from_nanos(at - now)).await;
                }
                true
            }
        }
    }
}

/// Releases each of `streams` streams' messages when `due(stream, k)` says
/// (nanoseconds after `origin`; `None` ends the stream).
///
/// By default (`smooth` false) each sender sleeps on tokio's timer, which
/// ends every sleep at its next millisecond tick: at 10,000 messages a
/// second the server gets bursts of ten each millisecond, as from clients
/// whose clocks tick together. `smooth` releases them from a thread of its
/// own that sleeps until each time (within tens of microseconds), so the
/// messages come evenly spaced: the fixed rate exactly, at the cost of a
/// wake-up per message in the generator, and in the server too.
pub fn releases(
    origin: Instant,
    streams: usize,
    smooth: bool,
    due: impl Fn(usize, u64) -> Option<u64> + Send + Sync + 'static,
) -> Vec<Releases> {
    if smooth {
        pace(origin, streams, due).into_iter().map(Releases::Paced).collect()
    } else {
        let due: Arc<dyn Fn(usize, u64) -> Option<u64> + Send + Sync> = Arc::new(due);
        (0..streams).map(|stream| Releases::Ticked { origin, due: due.clone(), stream, k: 0 }).collect()
    }
}

/// The pacer: a thread that sends one `()` per message of each stream when
/// it is due. A release is never lost: a sender that falls behind finds its
/// releases waiting.
fn pace(
    origin: Instant,
    streams: usize,
    due: impl Fn(usize, u64) -> Option<u64> + Send + 'static,
) -> Vec<tokio::sync::mpsc::UnboundedReceiver<()>> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..streams).map(|_| tokio::sync::mpsc::unbounded_channel::<()>()).unzip();
    std::thread::Builder::new()
        .name("pacer".into())
        .spawn(move || {
            let mut next: BinaryHeap<Reverse<(u64, usize, u64)>> =
                (0..streams).filter_map(|s| Some(Reverse((due(s, 0)?, s, 0)))).collect();
            while let Some(Reverse((at, stream, k))) = next.pop() {
                let now = origin.elapsed().as_nanos() as u64;
                if at > now {
                    std::thread::sleep(Duration::from_nanos(at - now));
                }
                // A stream whose sender has stopped (its socket failed) is dropped.
                if senders[stream].send(()).is_ok()
                    && let Some(then) = due(stream, k + 1)
                {
                    next.push(Reverse((then, stream, k + 1)));
                }
            }
        })
        .expect("spawn the pacer");
    receivers
}

/// Width of a [`Timeline`] window.
pub const TIMELINE_WINDOW_NS: u64 = 10_000_000;

/// A run's receipts over time, in windows of [`TIMELINE_WINDOW_NS`] by when
/// they arrived: how many came and how late the latest was. The percentiles
/// say how often a message is late; the timeline says when, so a stall that
/// recurs (every tick of some timer, say) shows as a pattern, and a stall of
/// the whole machine as one bad window.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// Receipts and the largest latency (ns) per window, from the first send.
    windows: Vec<(u64, u64)>,
}

impl Timeline {
    /// Notes a receipt at `received_ns` (after the first send) that took `latency_ns`.
    pub fn note(&mut self, received_ns: u64, latency_ns: u64) {
        let i = (received_ns / TIMELINE_WINDOW_NS) as usize;
        if self.windows.len() <= i {
            self.windows.resize(i + 1, (0, 0));
        }
        let w = &mut self.windows[i];
        w.0 += 1;
        w.1 = w.1.max(latency_ns);
    }

    pub fn add(&mut self, other: &Timeline) {
        if self.windows.len() < other.windows.len() {
            self.windows.resize(other.windows.len(), (0, 0));
        }
        for (w, o) in self.windows.iter_mut().zip(&other.windows) {
            w.0 += o.0;
            w.1 = w.1.max(o.1);
        }
    }

    /// Share of the windows that received anything whose latest receipt took
    /// longer than `limit_ns`: how much of the run's time saw a stall.
    pub fn share_late(&self, limit_ns: u64) -> f64 {
        let busy = self.windows.iter().filter(|w| w.0 > 0);
        let (n, late) = busy.fold((0u64, 0u64), |(n, late), w| (n + 1, late + u64::from(w.1 > limit_ns)));
        if n == 0 { 0.0 } else { late as f64 / n as f64 }
    }
}

/// In the JSON: `[window start in ms, receipts, latest in µs]` per window.
impl Serialize for Timeline {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let ms = TIMELINE_WINDOW_NS / 1_000_000;
        serializer.collect_seq(
            self.windows.iter().enumerate().map(|(i, &(count, max_ns))| (i as u64 * ms, count, max_ns / 1_000)),
        )
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

/// Sends a stream of `schedule` on `sink` as `releases` (one of
/// [`Schedule::releases`]) lets it, each payload wrapped by `frame`,
/// counting every message handed to the socket in `sent`.
pub async fn send_on_schedule<S>(
    sink: &mut S,
    schedule: Schedule,
    mut releases: Releases,
    sent: &AtomicU64,
    mut frame: impl FnMut(&str) -> Message,
) -> Result<(), String>
where
    S: Sink<Message, Error = Error> + Unpin,
{
    while releases.next().await {
        // The payload carries the actual send time: a release can still come
        // late, and that lateness belongs to the generator, not the server.
        sink.send(frame(&payload(schedule.now_ns()))).await.map_err(|e| e.to_string())?;
        sent.fetch_add(1, Ordering::Relaxed);
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
    pub timeline: Timeline,
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
    let mut received = Received { latencies: histogram(), timeline: Timeline::default(), count: 0, errors: 0 };
    let mut receipts = Receipts::default();
    let deadline = schedule.end_ns + STRAGGLERS_NS;
    while schedule.now_ns() < deadline {
        let left = Duration::from_nanos(deadline.saturating_sub(schedule.now_ns()));
        let Ok(Some(Ok(message))) = tokio::time::timeout(left, stream.next()).await else { break };
        decode(message, &mut receipts);
        for sent_ns in receipts.sent_at.drain(..) {
            schedule.record(&mut received.latencies, &mut received.timeline, sent_ns);
            received.count += 1;
        }
        received.errors += std::mem::take(&mut receipts.errors);
    }
    received
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn both_ways_release_every_message_of_every_stream_and_none_early() {
        for smooth in [false, true] {
            // Three streams, the second ending early; 2 ms apart within a stream.
            let origin = Instant::now();
            let ends = [5u64, 2, 5];
            let mut releases =
                releases(origin, 3, smooth, move |s, k| (k < ends[s]).then_some(k * 2_000_000 + s as u64 * 500_000));
            let mut times = Vec::new();
            for (s, r) in releases.iter_mut().enumerate() {
                let mut count = 0;
                while r.next().await {
                    count += 1;
                }
                assert_eq!(count, ends[s], "stream {s}, smooth {smooth}");
                times.push(origin.elapsed());
            }
            // The last of stream 2 is due at 8.5 ms.
            assert!(times[2] >= Duration::from_micros(8_500), "smooth {smooth}: {:?}", times[2]);
        }
    }

    #[test]
    fn a_timeline_keeps_each_windows_count_and_latest_receipt() {
        let ms = 1_000_000;
        let mut a = Timeline::default();
        a.note(0, 100_000);
        a.note(5 * ms, 2 * ms);
        a.note(25 * ms, 300_000);
        let mut b = Timeline::default();
        b.note(12 * ms, 4 * ms);
        b.note(47 * ms, 50_000);
        a.add(&b);
        assert_eq!(
            serde_json::to_value(&a).expect("json"),
            serde_json::json!([[0, 2, 2000], [10, 1, 4000], [20, 1, 300], [30, 0, 0], [40, 1, 50]])
        );
        // Four windows received something; two of them waited over 1 ms.
        assert_eq!(a.share_late(ms), 0.5);
        assert_eq!(Timeline::default().share_late(ms), 0.0);
    }

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
