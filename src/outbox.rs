//! A connection's outbox: frames the hub has decided to send, waiting for the
//! connection task to write them, and the heartbeat that makes it ping.
//!
//! Why not a `tokio::sync::mpsc` channel: every idle connection holds one,
//! and a bounded tokio channel costs about a kilobyte before the first frame
//! (cache-padded shared state plus an eagerly allocated block of 32 slots).
//! This is a mutex-guarded deque and an `AtomicWaker`: well under a hundred
//! bytes, the deque allocates only while frames wait, and it is polled, so
//! the connection loop needs no future of its own to wait on it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;

#[derive(Debug)]
struct Shared<T> {
    // A std Mutex: held only to push or pop, never across an .await.
    state: Mutex<State<T>>,
    waker: AtomicWaker,
}

#[derive(Debug)]
struct State<T> {
    queue: VecDeque<T>,
    closed: bool,
    /// Time to check the connection (ping it, or close it if silent too long).
    heartbeat: bool,
}

/// The hub's end. Dropping it closes the outbox (after what is queued).
#[derive(Debug)]
pub struct OutboxSender<T> {
    shared: Arc<Shared<T>>,
    capacity: usize,
}

/// The connection's end.
#[derive(Debug)]
pub struct OutboxReceiver<T> {
    shared: Arc<Shared<T>>,
}

/// A new outbox holding at most `capacity` frames.
pub fn outbox<T>(capacity: usize) -> (OutboxSender<T>, OutboxReceiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State { queue: VecDeque::new(), closed: false, heartbeat: false }),
        waker: AtomicWaker::new(),
    });
    (OutboxSender { shared: shared.clone(), capacity }, OutboxReceiver { shared })
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The connection has not kept up.
    Full,
    /// The connection is gone.
    Closed,
}

/// What the connection's end receives.
#[derive(Debug, PartialEq, Eq)]
pub enum Received<T> {
    Frame(T),
    Heartbeat,
    /// The hub dropped its end and nothing is left.
    Closed,
}

impl<T> Shared<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<T> OutboxSender<T> {
    pub fn try_send(&self, item: T) -> Result<(), Full> {
        {
            let mut state = self.shared.lock();
            if state.closed {
                return Err(Full::Closed);
            }
            if state.queue.len() >= self.capacity {
                return Err(Full::Full);
            }
            state.queue.push_back(item);
        }
        self.shared.waker.wake();
        Ok(())
    }

    /// For the rest of a burst whose first frame [`try_send`](Self::try_send)
    /// let in: past the capacity, so that one event's frames (a resume's
    /// replay of a long transcript) are never what overflows it. Fails only
    /// when the connection is gone.
    pub fn send_more(&self, item: T) -> Result<(), Full> {
        {
            let mut state = self.shared.lock();
            if state.closed {
                return Err(Full::Closed);
            }
            state.queue.push_back(item);
        }
        self.shared.waker.wake();
        Ok(())
    }

    /// Asks the connection to check itself (a flag, not a frame: it never
    /// fills the outbox, and several heartbeats before a check are one).
    pub fn heartbeat(&self) {
        self.shared.lock().heartbeat = true;
        self.shared.waker.wake();
    }
}

impl<T> Drop for OutboxSender<T> {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.waker.wake();
    }
}

impl<T> OutboxReceiver<T> {
    /// Frames first, in order; then a pending heartbeat; `Closed` once the
    /// sender is gone and the queue is empty.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Received<T>> {
        // Register before looking, so a push between the look and the
        // return of `Pending` still wakes this task.
        self.shared.waker.register(cx.waker());
        let mut state = self.shared.lock();
        if let Some(item) = Self::pop(&mut state) {
            return Poll::Ready(Received::Frame(item));
        }
        if std::mem::take(&mut state.heartbeat) {
            return Poll::Ready(Received::Heartbeat);
        }
        if state.closed {
            return Poll::Ready(Received::Closed);
        }
        Poll::Pending
    }

    pub async fn recv(&mut self) -> Received<T> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// A frame already waiting, if any.
    pub fn try_recv(&mut self) -> Option<T> {
        Self::pop(&mut self.shared.lock())
    }

    fn pop(state: &mut State<T>) -> Option<T> {
        let item = state.queue.pop_front();
        if state.queue.is_empty() && state.queue.capacity() > 0 {
            // Give the memory back: most connections sit idle between frames,
            // and 19,000 idle deques holding a few slots each add up.
            state.queue = VecDeque::new();
        }
        item
    }
}

impl<T> Drop for OutboxReceiver<T> {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delivers_in_order_and_closes() {
        let (tx, mut rx) = outbox(2);
        tx.try_send(1).expect("room");
        tx.try_send(2).expect("room");
        assert_eq!(tx.try_send(3), Err(Full::Full));
        assert_eq!(rx.recv().await, Received::Frame(1));
        tx.try_send(3).expect("room again");
        drop(tx);
        assert_eq!(rx.recv().await, Received::Frame(2));
        assert_eq!(rx.recv().await, Received::Frame(3));
        assert_eq!(rx.recv().await, Received::Closed);
    }

    #[tokio::test]
    async fn wakes_a_waiting_receiver() {
        let (tx, mut rx) = outbox(8);
        let waiter = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        tx.try_send("hej").expect("room");
        assert_eq!(waiter.await.expect("joined"), Received::Frame("hej"));
    }

    #[tokio::test]
    async fn a_heartbeat_wakes_after_waiting_frames_and_counts_once() {
        let (tx, mut rx) = outbox(8);
        tx.try_send(1).expect("room");
        tx.heartbeat();
        tx.heartbeat();
        assert_eq!(rx.recv().await, Received::Frame(1));
        assert_eq!(rx.recv().await, Received::Heartbeat);
        let waiter = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        tx.heartbeat();
        assert_eq!(waiter.await.expect("joined"), Received::Heartbeat);
    }

    #[tokio::test]
    async fn a_gone_receiver_refuses() {
        let (tx, rx) = outbox::<u8>(8);
        drop(rx);
        assert_eq!(tx.try_send(1), Err(Full::Closed));
    }
}
