//! The waiting queue: FIFO, with the front open for chats that come back
//! (returned by an advisor, or left by one who disconnected).
//!
//! Every operation is O(log n) in the queue length; nothing walks the queue
//! except [`WaitQueue::iter`], which the core uses once per update tick.

use std::collections::BTreeMap;

/// A place in the queue. Smaller keys are served first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueKey(i64);

#[derive(Debug, Clone)]
pub struct WaitQueue<T> {
    order: BTreeMap<QueueKey, T>,
    next_back: i64,
    next_front: i64,
}

impl<T> Default for WaitQueue<T> {
    fn default() -> Self {
        WaitQueue { order: BTreeMap::new(), next_back: 0, next_front: -1 }
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
        key
    }

    pub fn remove(&mut self, key: QueueKey) -> Option<T> {
        self.order.remove(&key)
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
}
