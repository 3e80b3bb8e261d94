//! The domain core: plain synchronous code with no I/O and no clock of its own.
//! Every function that depends on time takes the instant as an argument.

pub mod admission;
pub mod calendar;
pub mod chat;
pub mod client_ids;
pub mod hours;
pub mod personnummer;
pub mod queue;
pub mod release;
pub mod stats;
