//! Queue-position updates in a long queue, on the chat core directly (no I/O,
//! time passed in).

mod common;

use chrono::{DateTime, TimeDelta, Utc};

use kommunchat::domain::chat::{ChatCore, CoreSettings, Effect, Input};
use kommunchat::protocol::ws::{CitizenEvent, CitizenRequest};

fn settings() -> CoreSettings {
    let mut settings = common::core_settings();
    settings.admission.refuse_if_not_served_before_closing = false;
    settings
}

/// Positions sent by one tick: (connection, position), in the order sent.
fn position_updates(core: &mut ChatCore, now: DateTime<Utc>) -> Vec<(u64, usize)> {
    let mut out = Vec::new();
    core.handle(now, Input::Tick, &mut out);
    out.into_iter()
        .filter_map(|e| match e {
            Effect::ToCitizen(conn, CitizenEvent::QueueUpdate { position, .. }) => Some((conn, position)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_mass_move_is_spread_over_ticks_nearest_the_head_first_and_nobody_is_skipped() {
    let mut core = ChatCore::new(settings());
    // A Monday morning: open.
    let mut now: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-11-30T10:00:00+01:00").expect("time").to_utc();
    let waiting = 2500u64;
    let mut out = Vec::new();
    for conn in 1..=waiting {
        core.handle(now, Input::CitizenConnected { conn }, &mut out);
        let start = CitizenRequest::Start { display_name: None, topic: None, language: None };
        core.handle(now, Input::Citizen { conn, request: start }, &mut out);
    }
    let queued = out.iter().filter(|e| matches!(e, Effect::ToCitizen(_, CitizenEvent::Queued { .. }))).count();
    assert_eq!(queued as u64, waiting, "everyone queued");

    // The first in line leaves; half a minute later everyone's place has
    // moved and is due to be told.
    core.handle(now, Input::Citizen { conn: 1, request: CitizenRequest::Leave {} }, &mut out);
    now += TimeDelta::seconds(31);
    let first = position_updates(&mut core, now);
    assert_eq!(first.len(), 1000, "one tick sends at most its budget");
    assert_eq!(first.first(), Some(&(2, 1)));
    assert!(first.iter().enumerate().all(|(i, &(conn, position))| position == i + 1 && conn == i as u64 + 2));

    now += TimeDelta::seconds(1);
    let second = position_updates(&mut core, now);
    assert_eq!(second.len(), 1000, "the next tick continues where the last stopped");
    assert_eq!(second.first(), Some(&(1002, 1001)));

    now += TimeDelta::seconds(1);
    let third = position_updates(&mut core, now);
    assert_eq!(third.len(), (waiting - 1 - 2000) as usize);
    assert_eq!(third.last(), Some(&(waiting, waiting as usize - 1)));

    now += TimeDelta::seconds(1);
    assert!(position_updates(&mut core, now).is_empty(), "nothing more to tell: nobody moved");
}

#[test]
fn frequent_ticks_send_a_share_each_and_tell_nobody_twice_within_the_interval() {
    // As the server runs: a tick every 100 ms, positions at most once a second each.
    let mut fast = settings();
    fast.tick = TimeDelta::milliseconds(100);
    let mut core = ChatCore::new(fast);
    let interval = settings().queue_update_interval;
    let mut now: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-11-30T10:00:00+01:00").expect("time").to_utc();
    let waiting = 600u64;
    let mut out = Vec::new();
    for conn in 1..=waiting {
        core.handle(now, Input::CitizenConnected { conn }, &mut out);
        let start = CitizenRequest::Start { display_name: None, topic: None, language: None };
        core.handle(now, Input::Citizen { conn, request: start }, &mut out);
    }
    // Half a minute on, a tick with nothing to tell (nobody moved).
    now += TimeDelta::seconds(31);
    assert!(position_updates(&mut core, now).is_empty());

    // The server ticks every 100 ms, and before each tick the head of the
    // queue is served (leaves): everyone moves up every tick.
    let tick = TimeDelta::milliseconds(100);
    let mut told: Vec<(u64, DateTime<Utc>)> = Vec::new();
    let mut first_position = None;
    let mut head = 1u64;
    for _ in 0..30 {
        core.handle(now, Input::Citizen { conn: head, request: CitizenRequest::Leave {} }, &mut out);
        head += 1;
        now += tick;
        let sent = position_updates(&mut core, now);
        assert!(sent.len() <= 100, "a 100 ms tick sends at most a tenth of the per-second budget, sent {}", sent.len());
        for (conn, position) in sent {
            first_position.get_or_insert(position);
            if let Some((_, at)) = told.iter().rev().find(|(c, _)| *c == conn) {
                assert!(now - *at >= interval, "citizen {conn} told twice within the interval");
            }
            told.push((conn, now));
        }
    }
    assert_eq!(first_position, Some(1), "the head first");
    // Over three seconds, everyone still waiting was told where they are.
    let mut reached: Vec<u64> = told.iter().map(|(c, _)| *c).filter(|c| *c >= head).collect();
    reached.sort_unstable();
    reached.dedup();
    assert_eq!(reached.len() as u64, waiting - head + 1, "everyone still waiting was told");
}
