//! The wire formats: WebSocket frames ([`ws`]) and HTTP bodies ([`hours`],
//! [`http`]). Only this module knows JSON field names.

pub mod errands;
pub mod hours;
pub mod http;
pub mod stats;
pub mod ws;
