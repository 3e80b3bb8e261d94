//! The waiting queue: FIFO, with the front open for chats that come back
//! (returned by an advisor, or left by one who disconnected).
//!
//! Every operation is O(log n) in the queue length. Nothing walks the whole
//! queue at once: position updates go out from [`WaitQueue::head`] and
//! [`WaitQueue::sweep`], a few entries per tick (a walk of 19,000 entries
//! held the core for 2–5 ms, and every assignment behind it waited).

use std::collections::BTreeMap;

/// A place in the queue. Smaller keys are served first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueKey(i64);

impl QueueKey {
    /// As stored, so that a restart can put everyone back in the same order
    /// ([`WaitQueue::restore`]).
    pub fn as_i64(self) -> i64 {
        self.0
    }
}

#[derive(Debug, Clone)]
pub struct WaitQueue<T> {
    order: BTreeMap<QueueKey, T>,
    next_back: i64,
    next_front: i64,
    /// Where the next sweep starts: at the first entry with this key or a
    /// later one, whose position is the number given. Kept exact as the
    /// queue changes: an entry leaving ahead of it, or one put in front,
    /// moves it.
    sweep_from: Option<(QueueKey, usize)>,
}

impl<T> Default for WaitQueue<T> {
    fn default() -> Self {
        WaitQueue { order: BTreeMap::new(), next_back: 0, next_front: -1, sweep_from: None }
    }
}

impl<T> WaitQueue<T> {
    pub fn push_back(&mut self, item: T) -> QueueKey {
        let key = QueueKey(self.next_back);
        self.next_back += 1;
        self.order.insert(key, item);
        key
    }

    pub fn push_front(&mut self, item: T) -> QueueKey {
        let key = QueueKey(self.next_front);
        self.next_front -= 1;
        self.order.insert(key, item);
        // Ahead of everyone, so ahead of where the sweep goes on.
        if let Some((_, position)) = &mut self.sweep_from {
            *position += 1;
        }
        key
    }

    /// Puts `item` back at the place it had in an earlier run (read from
    /// storage after a restart). Later pushes go behind or in front of all
    /// such places, so their keys stay unique across restarts. `None` if the
    /// place is taken.
    pub fn restore(&mut self, place: i64, item: T) -> Option<QueueKey> {
        let key = QueueKey(place);
        if self.order.contains_key(&key) {
            return None;
        }
        self.order.insert(key, item);
        self.next_back = self.next_back.max(place.saturating_add(1));
        self.next_front = self.next_front.min(place.saturating_sub(1));
        if let Some((from, position)) = &mut self.sweep_from
            && key < *from
        {
            *position += 1;
        }
        Some(key)
    }

    pub fn remove(&mut self, key: QueueKey) -> Option<T> {
        let item = self.order.remove(&key)?;
        if let Some((from, position)) = &mut self.sweep_from
            && key < *from
        {
            *position -= 1;
        }
        Some(item)
    }

    pub fn front(&self) -> Option<(QueueKey, &T)> {
        self.order.first_key_value().map(|(k, v)| (*k, v))
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// In serving order.
    pub fn iter(&self) -> impl Iterator<Item = (QueueKey, &T)> {
        self.order.iter().map(|(k, v)| (*k, v))
    }

    /// The first `n` entries with their positions (1 = next to be served).
    pub fn head(&self, n: usize) -> impl Iterator<Item = (usize, &T)> {
        self.order.values().take(n).enumerate().map(|(i, v)| (i + 1, v))
    }

    /// Visits up to `n` entries with their positions, in serving order,
    /// going on from where the last sweep stopped and starting over at the
    /// front after the last entry; no entry twice in one call. `visit`
    /// returns false to stop before an entry: the next sweep starts with it.
    pub fn sweep(&mut self, n: usize, mut visit: impl FnMut(usize, &T) -> bool) {
        let n = n.min(self.order.len());
        let (mut from, mut position) = self.sweep_from.unwrap_or((QueueKey(i64::MIN), 1));
        let mut visited = 0;
        // To the end, then (if `n` is not reached) on from the front, which
        // stops before the entries already visited because n ≤ len.
        for _ in 0..2 {
            let mut stopped = None;
            for (key, item) in self.order.range(from..) {
                if visited == n || !visit(position, item) {
                    stopped = Some((*key, position));
                    break;
                }
                visited += 1;
                position += 1;
            }
            self.sweep_from = stopped;
            if stopped.is_some() || visited == n {
                return;
            }
            (from, position) = (QueueKey(i64::MIN), 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_with_front_insertion_and_removal() {
        let mut q = WaitQueue::default();
        let a = q.push_back("a");
        let _b = q.push_back("b");
        let c = q.push_back("c");
        q.push_front("x");
        q.push_front("y");
        assert_eq!(q.iter().map(|(_, v)| *v).collect::<Vec<_>>(), ["y", "x", "a", "b", "c"]);
        assert_eq!(q.remove(a), Some("a"));
        assert_eq!(q.remove(a), None);
        assert_eq!(q.remove(c), Some("c"));
        assert_eq!(q.front().map(|(_, v)| *v), Some("y"));
        assert_eq!(q.len(), 3);
    }

    #[test]
    fn restored_places_keep_their_order_and_later_pushes_go_around_them() {
        let mut before = WaitQueue::default();
        let a = before.push_back("a");
        let b = before.push_back("b");
        let x = before.push_front("x");
        // A restart: the places come back in any order.
        let mut q = WaitQueue::default();
        assert!(q.restore(b.as_i64(), "b").is_some());
        assert!(q.restore(x.as_i64(), "x").is_some());
        assert!(q.restore(a.as_i64(), "a").is_some());
        assert!(q.restore(a.as_i64(), "again").is_none(), "a place is held once");
        let c = q.push_back("c");
        let y = q.push_front("y");
        assert_eq!(q.iter().map(|(_, v)| *v).collect::<Vec<_>>(), ["y", "x", "a", "b", "c"]);
        assert!(c > b && y < x);
    }

    fn sweep(q: &mut WaitQueue<u32>, n: usize) -> Vec<(usize, u32)> {
        let mut seen = Vec::new();
        q.sweep(n, |position, v| {
            seen.push((position, *v));
            true
        });
        seen
    }

    #[test]
    fn a_sweep_goes_round_with_exact_positions_while_the_queue_changes() {
        let mut q = WaitQueue::default();
        let keys: Vec<QueueKey> = (1..=10).map(|v| q.push_back(v)).collect();
        assert_eq!(sweep(&mut q, 4), [(1, 1), (2, 2), (3, 3), (4, 4)]);
        // Two leave ahead of where the sweep goes on, one behind it, and one
        // is put in front: the positions it reports are the ones now.
        q.remove(keys[0]);
        q.remove(keys[2]);
        q.remove(keys[6]);
        q.push_front(0);
        assert_eq!(sweep(&mut q, 3), [(4, 5), (5, 6), (6, 8)]);
        // Over the end and on from the front, never the same entry twice.
        assert_eq!(sweep(&mut q, 5), [(7, 9), (8, 10), (1, 0), (2, 2), (3, 4)]);
        // Asked for more than there are: each once.
        assert_eq!(sweep(&mut q, 100), [(4, 5), (5, 6), (6, 8), (7, 9), (8, 10), (1, 0), (2, 2), (3, 4)]);
        assert_eq!(sweep(&mut q, 2), [(4, 5), (5, 6)]);
        // The entry where the sweep stopped leaves: it goes on with the next.
        q.remove(keys[7]);
        assert_eq!(sweep(&mut q, 2), [(6, 9), (7, 10)]);
    }

    #[test]
    fn a_sweep_stopped_by_the_visitor_starts_there_next_time() {
        let mut q = WaitQueue::default();
        for v in 1..=5 {
            q.push_back(v);
        }
        let mut seen = Vec::new();
        q.sweep(5, |position, v| {
            seen.push(position);
            *v < 3
        });
        assert_eq!(seen, [1, 2, 3], "the visitor saw 3 and stopped");
        assert_eq!(sweep(&mut q, 2), [(3, 3), (4, 4)]);
        assert!(sweep(&mut WaitQueue::default(), 3).is_empty());
        assert_eq!(q.head(2).map(|(p, v)| (p, *v)).collect::<Vec<_>>(), [(1, 1), (2, 2)]);
    }
}
