//! kommunchat: real-time support chat for public contact centres.
//!
//! # Layout
//!
//! - [`domain`]: the core, plain synchronous code with no I/O and no clock of
//!   its own: the Swedish calendar and opening hours ([`domain::hours`]), the
//!   admission rule, the waiting queue, and the chat state machine
//!   ([`domain::chat`]) that routes citizens to advisors.
//! - [`protocol`]: the wire formats; the only module that knows JSON field names.
//! - [`hub`]: the one task that owns the chat core and carries out its effects.
//! - [`storage`]: SQLite and PostgreSQL behind one interface, with the
//!   group-commit writer.
//! - [`server`]: HTTP and WebSocket adapter (axum).
//! - [`scheduling`]: how the connections' and the database's threads share a core.
//! - [`config`], [`auth`], [`clock`], [`cli`]: the rest.
//!
//! See `ARCHITECTURE.md` for the code map and invariants.

pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod domain;
pub mod errands;
pub mod hub;
pub mod metrics;
pub mod outbox;
pub mod protocol;
pub mod scheduling;
pub mod server;
pub mod storage;
