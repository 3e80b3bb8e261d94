//! The client message ids one conversation has seen, so that a retry gets
//! the first answer again instead of a second message.
//!
//! A table that keeps each id's hash beside it. A conversation's table
//! grows with every message, and a std `HashMap` hashes every id again
//! each time it doubles: for a conversation of 450 messages, 450 ids
//! hashed with SipHash behind a pointer each, in one event. Under load many
//! conversations double at about the same message count, and those
//! rehashes together held the hub for tens of milliseconds
//! (docs/benchmarks.md). With the hash kept, growing moves entries and
//! hashes nothing. Ids come from clients, so the hash stays keyed
//! (`RandomState`, per table) against chosen collisions.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use hashbrown::HashTable;

use crate::protocol::ws::Sender;

/// What became of a client's message id.
#[derive(Debug, Clone)]
pub enum ClientMessage {
    /// Sent for storing; not yet durable.
    Pending { text: Arc<str> },
    /// Durable under `seq`.
    Stored { text: Arc<str>, seq: u64, at: chrono::DateTime<chrono::Utc> },
}

#[derive(Debug)]
struct Entry {
    hash: u64,
    sender: Sender,
    id: Arc<str>,
    message: ClientMessage,
}

/// One conversation's client message ids, by sender (a citizen and an
/// advisor may happen to pick the same id).
#[derive(Debug, Default)]
pub struct ClientIds {
    table: HashTable<Entry>,
    keys: RandomState,
}

impl ClientIds {
    fn hash(&self, sender: Sender, id: &str) -> u64 {
        self.keys.hash_one((sender, id))
    }

    pub fn get(&self, sender: Sender, id: &str) -> Option<&ClientMessage> {
        let hash = self.hash(sender, id);
        self.table.find(hash, |e| e.sender == sender && *e.id == *id).map(|e| &e.message)
    }

    /// Records a new message under `id` as pending with `text`, unless `id`
    /// is already known: then returns what it was and changes nothing. One
    /// hash and one probe: `get` and then `insert` took two of each on every
    /// chat message.
    pub fn claim(&mut self, sender: Sender, id: &Arc<str>, text: &Arc<str>) -> Option<&ClientMessage> {
        let hash = self.hash(sender, id);
        match self.table.entry(hash, |e| e.sender == sender && *e.id == **id, |e| e.hash) {
            hashbrown::hash_table::Entry::Occupied(known) => Some(&known.into_mut().message),
            hashbrown::hash_table::Entry::Vacant(vacant) => {
                let message = ClientMessage::Pending { text: text.clone() };
                vacant.insert(Entry { hash, sender, id: id.clone(), message });
                None
            }
        }
    }

    /// Records `id` as `message`, replacing what it was.
    pub fn insert(&mut self, sender: Sender, id: Arc<str>, message: ClientMessage) {
        let hash = self.hash(sender, &id);
        match self.table.find_mut(hash, |e| e.sender == sender && *e.id == *id) {
            Some(entry) => entry.message = message,
            None => {
                self.table.insert_unique(hash, Entry { hash, sender, id, message }, |e| e.hash);
            }
        }
    }

    pub fn remove(&mut self, sender: Sender, id: &str) {
        let hash = self.hash(sender, id);
        if let Ok(entry) = self.table.find_entry(hash, |e| e.sender == sender && *e.id == *id) {
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

    fn stored(text: &str, seq: u64) -> ClientMessage {
        ClientMessage::Stored { text: text.into(), seq, at: chrono::DateTime::UNIX_EPOCH }
    }

    fn seq_of(ids: &ClientIds, sender: Sender, id: &str) -> Option<u64> {
        match ids.get(sender, id)? {
            ClientMessage::Stored { seq, .. } => Some(*seq),
            ClientMessage::Pending { .. } => Some(0),
        }
    }

    #[test]
    fn finds_each_id_by_sender_through_growth() {
        let mut ids = ClientIds::default();
        for n in 0..5_000u64 {
            ids.insert(Sender::Citizen, format!("c-{n}").into(), stored("hej", n));
            ids.insert(Sender::Advisor, format!("c-{n}").into(), stored("svar", n + 100_000));
        }
        assert_eq!(ids.len(), 10_000);
        for n in (0..5_000u64).step_by(97) {
            assert_eq!(seq_of(&ids, Sender::Citizen, &format!("c-{n}")), Some(n));
            assert_eq!(seq_of(&ids, Sender::Advisor, &format!("c-{n}")), Some(n + 100_000));
        }
        assert_eq!(seq_of(&ids, Sender::Citizen, "c-5000"), None);
        assert_eq!(seq_of(&ids, Sender::System, "c-1"), None);
    }

    #[test]
    fn claim_records_a_new_id_as_pending_and_leaves_a_known_one_alone() {
        let mut ids = ClientIds::default();
        let (a, hej, annat): (Arc<str>, Arc<str>, Arc<str>) = ("a".into(), "hej".into(), "annat".into());
        assert!(ids.claim(Sender::Citizen, &a, &hej).is_none());
        assert!(matches!(ids.get(Sender::Citizen, "a"), Some(ClientMessage::Pending { text }) if **text == *"hej"));
        // Known: what it was comes back, whatever the text, and stays.
        assert!(
            matches!(ids.claim(Sender::Citizen, &a, &annat), Some(ClientMessage::Pending { text }) if **text == *"hej")
        );
        ids.insert(Sender::Citizen, a.clone(), stored("hej", 7));
        assert!(matches!(ids.claim(Sender::Citizen, &a, &hej), Some(ClientMessage::Stored { seq: 7, .. })));
        assert_eq!(ids.len(), 1);
        // The same id from the other side is another message.
        assert!(ids.claim(Sender::Advisor, &a, &annat).is_none());
        assert_eq!(ids.len(), 2);
    }

    #[test]
    fn insert_replaces_and_remove_forgets() {
        let mut ids = ClientIds::default();
        ids.insert(Sender::Citizen, "a".into(), ClientMessage::Pending { text: "hej".into() });
        assert_eq!(seq_of(&ids, Sender::Citizen, "a"), Some(0));
        ids.insert(Sender::Citizen, "a".into(), stored("hej", 7));
        assert_eq!(ids.len(), 1);
        assert_eq!(seq_of(&ids, Sender::Citizen, "a"), Some(7));
        ids.remove(Sender::Citizen, "a");
        assert!(ids.is_empty());
        assert_eq!(seq_of(&ids, Sender::Citizen, "a"), None);
        // Removing what is not there changes nothing.
        ids.remove(Sender::Citizen, "a");
        assert!(ids.is_empty());
    }
}
