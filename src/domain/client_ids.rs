//! The client message ids one conversation has seen, so that a retry gets
//! the first answer again instead of a second message.
//!
//! Each id maps to the `seq` its message got; the message itself (its text,
//! whether it is durable yet) is the conversation's, in its pending list or
//! its history. An entry is a hash, a `seq`, the id (the same allocation as
//! the message's own `client_msg_id`) and the sender: 40 bytes. It used to
//! hold the text and time as well (80 bytes), and in a long conversation the
//! table is larger than the caches, so every message's probe was a miss or
//! two (4.5% of the server's CPU at 40,000 messages/s, docs/benchmarks.md).
//!
//! The hash is kept beside each id: a conversation's table grows with every
//! message, and a std `HashMap` hashes every id again each time it doubles;
//! under load many conversations double at about the same message count,
//! and those rehashes together held the hub for tens of milliseconds. With
//! the hash kept, growing moves entries and hashes nothing, and a probe
//! compares hashes before it reads an id. Ids come from clients, so the hash
//! stays keyed (`RandomState`, per table) against chosen collisions.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use hashbrown::HashTable;

use crate::protocol::ws::Sender;

#[derive(Debug)]
struct Entry {
    hash: u64,
    seq: u64,
    id: Arc<str>,
    sender: Sender,
}

/// One conversation's client message ids, by sender (a citizen and an
/// advisor may happen to pick the same id), each with its message's `seq`.
#[derive(Debug, Default)]
pub struct ClientIds {
    table: HashTable<Entry>,
    keys: RandomState,
}

impl ClientIds {
    fn hash(&self, sender: Sender, id: &str) -> u64 {
        self.keys.hash_one((sender, id))
    }

    /// The `seq` of the message sent under `id`, if any.
    pub fn seq(&self, sender: Sender, id: &str) -> Option<u64> {
        let hash = self.hash(sender, id);
        self.table.find(hash, |e| e.hash == hash && e.sender == sender && *e.id == *id).map(|e| e.seq)
    }

    /// Records `id` for a new message that will get `seq`, unless `id` is
    /// already known: then returns its message's `seq` and changes nothing.
    /// One hash and one probe per chat message.
    pub fn claim(&mut self, sender: Sender, id: &Arc<str>, seq: u64) -> Option<u64> {
        let hash = self.hash(sender, id);
        match self.table.entry(hash, |e| e.hash == hash && e.sender == sender && *e.id == **id, |e| e.hash) {
            hashbrown::hash_table::Entry::Occupied(known) => Some(known.get().seq),
            hashbrown::hash_table::Entry::Vacant(vacant) => {
                vacant.insert(Entry { hash, seq, id: id.clone(), sender });
                None
            }
        }
    }

    /// Records `id` for the message `seq`, replacing what it was.
    pub fn insert(&mut self, sender: Sender, id: Arc<str>, seq: u64) {
        let hash = self.hash(sender, &id);
        match self.table.find_mut(hash, |e| e.hash == hash && e.sender == sender && *e.id == *id) {
            Some(entry) => entry.seq = seq,
            None => {
                self.table.insert_unique(hash, Entry { hash, seq, id, sender }, |e| e.hash);
            }
        }
    }

    pub fn remove(&mut self, sender: Sender, id: &str) {
        let hash = self.hash(sender, id);
        if let Ok(entry) = self.table.find_entry(hash, |e| e.hash == hash && e.sender == sender && *e.id == *id) {
            entry.remove();
        }
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_stay_small() {
        // The point of the design: an id costs the table 40 bytes, not 80.
        assert_eq!(std::mem::size_of::<Entry>(), 40);
    }

    #[test]
    fn finds_each_id_by_sender_through_growth() {
        let mut ids = ClientIds::default();
        for n in 0..5_000u64 {
            ids.insert(Sender::Citizen, format!("c-{n}").into(), n);
            ids.insert(Sender::Advisor, format!("c-{n}").into(), n + 100_000);
        }
        assert_eq!(ids.len(), 10_000);
        for n in (0..5_000u64).step_by(97) {
            assert_eq!(ids.seq(Sender::Citizen, &format!("c-{n}")), Some(n));
            assert_eq!(ids.seq(Sender::Advisor, &format!("c-{n}")), Some(n + 100_000));
        }
        assert_eq!(ids.seq(Sender::Citizen, "c-5000"), None);
        assert_eq!(ids.seq(Sender::System, "c-1"), None);
    }

    #[test]
    fn claim_records_a_new_id_and_leaves_a_known_one_alone() {
        let mut ids = ClientIds::default();
        let a: Arc<str> = "a".into();
        assert_eq!(ids.claim(Sender::Citizen, &a, 3), None);
        assert_eq!(ids.seq(Sender::Citizen, "a"), Some(3));
        // Known: its seq comes back, and stays.
        assert_eq!(ids.claim(Sender::Citizen, &a, 4), Some(3));
        assert_eq!(ids.seq(Sender::Citizen, "a"), Some(3));
        assert_eq!(ids.len(), 1);
        // The same id from the other side is another message.
        assert_eq!(ids.claim(Sender::Advisor, &a, 4), None);
        assert_eq!(ids.len(), 2);
    }

    #[test]
    fn insert_replaces_and_remove_forgets() {
        let mut ids = ClientIds::default();
        ids.insert(Sender::Citizen, "a".into(), 1);
        ids.insert(Sender::Citizen, "a".into(), 7);
        assert_eq!(ids.len(), 1);
        assert_eq!(ids.seq(Sender::Citizen, "a"), Some(7));
        ids.remove(Sender::Citizen, "a");
        assert!(ids.is_empty());
        assert_eq!(ids.seq(Sender::Citizen, "a"), None);
        // Removing what is not there changes nothing.
        ids.remove(Sender::Citizen, "a");
        assert!(ids.is_empty());
    }
}
