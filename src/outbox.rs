//! A connection's outbox: frames the hub has decided to send, waiting for the
//! connection task to write them.
//!
//! Why not a `tokio::sync::mpsc` channel: every idle connection holds one,
//! and a bounded tokio channel costs about a kilobyte before the first frame
//! (cache-padded shared state plus an eagerly allocated block of 32 slots).
//! This is a mutex-guarded deque and a `Notify`: about a hundred bytes, and
//! the deque allocates only when frames arrive.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

#[derive(Debug)]
struct Shared<T> {
    // A std Mutex: held only to push or pop, never across an .await.
    state: Mutex<State<T>>,
    notify: Notify,
}

#[derive(Debug)]
struct State<T> {
    queue: VecDeque<T>,
    closed: bool,
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
    let shared =
        Arc::new(Shared { state: Mutex::new(State { queue: VecDeque::new(), closed: false }), notify: Notify::new() });
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

impl<T> OutboxSender<T> {
    pub fn try_send(&self, item: T) -> Result<(), Full> {
        {
            let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.closed {
                return Err(Full::Closed);
            }
            if state.queue.len() >= self.capacity {
                return Err(Full::Full);
            }
            state.queue.push_back(item);
        }
        self.shared.notify.notify_one();
        Ok(())
    }
}

impl<T> Drop for OutboxSender<T> {
    fn drop(&mut self) {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        self.shared.notify.notify_one();
    }
}

impl<T> OutboxReceiver<T> {
    /// The next frame, or `None` once the sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<T> {
        loop {
            if let Some(item) = self.try_recv() {
                return Some(item);
            }
            if self.shared.state.lock().unwrap_or_else(|e| e.into_inner()).closed {
                return self.try_recv();
            }
            // `notify_one` stores a permit when nobody waits, so a frame pushed
            // between the check above and this await is not missed.
            self.shared.notify.notified().await;
        }
    }

    pub fn try_recv(&mut self) -> Option<T> {
        let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let item = state.queue.pop_front();
        if state.queue.is_empty() && state.queue.capacity() > 64 {
            // A burst is over: give the memory back.
            state.queue.shrink_to(4);
        }
        item
    }
}

impl<T> Drop for OutboxReceiver<T> {
    fn drop(&mut self) {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
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
        assert_eq!(rx.recv().await, Some(1));
        tx.try_send(3).expect("room again");
        drop(tx);
        assert_eq!(rx.recv().await, Some(2));
        assert_eq!(rx.recv().await, Some(3));
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn wakes_a_waiting_receiver() {
        let (tx, mut rx) = outbox(8);
        let waiter = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        tx.try_send("hej").expect("room");
        assert_eq!(waiter.await.expect("joined"), Some("hej"));
    }

    #[tokio::test]
    async fn a_gone_receiver_refuses() {
        let (tx, rx) = outbox::<u8>(8);
        drop(rx);
        assert_eq!(tx.try_send(1), Err(Full::Closed));
    }
}
