//! `GET /api/v1/hours` at chosen instants (the server's clock is injected).

mod common;

use chrono::DateTime;
use common::TestServer;

fn at(s: &str) -> chrono::DateTime<chrono::Utc> {
    DateTime::parse_from_rfc3339(s).expect("instant").to_utc()
}

#[tokio::test]
async fn open_now_with_next_closing() {
    let server = TestServer::start().await;
    server.clock.set(at("2026-11-26T17:30:00+01:00")); // a Thursday, open until 18
    let (status, hours) = server.get_json("/api/v1/hours").await;
    assert_eq!(status, 200);
    assert_eq!(hours["open_now"], true);
    assert_eq!(hours["reason"], "regular hours");
    assert_eq!(hours["intervals"][0]["to"], "18:00");
    assert_eq!(hours["next_closing"], "2026-11-26T18:00:00+01:00");
    assert_eq!(hours["next_opening"], "2026-11-27T08:00:00+01:00");
    assert_eq!(hours["timezone"], "Europe/Stockholm");
}

#[tokio::test]
async fn christmas_eve_is_closed_with_deviations_ahead() {
    let server = TestServer::start().await;
    server.clock.set(at("2026-12-24T10:00:00+01:00"));
    let (_, hours) = server.get_json("/api/v1/hours").await;
    assert_eq!(hours["open_now"], false);
    assert_eq!(hours["reason"], "julafton");
    assert_eq!(hours["reason_code"], "holiday");
    assert_eq!(hours["next_opening"], "2026-12-28T08:00:00+01:00");
    let deviations: Vec<&str> =
        hours["deviations"].as_array().expect("list").iter().map(|d| d["date"].as_str().expect("date")).collect();
    assert_eq!(deviations, ["2026-12-24", "2026-12-25", "2026-12-31", "2027-01-01", "2027-01-05", "2027-01-06"]);
}

#[tokio::test]
async fn summer_time_offsets_in_answers() {
    let server = TestServer::start().await;
    server.clock.set(at("2026-06-05T14:00:00+02:00")); // day before nationaldagen
    let (_, hours) = server.get_json("/api/v1/hours").await;
    assert_eq!(hours["open_now"], true);
    assert_eq!(hours["reason"], "day before a public holiday");
    assert_eq!(hours["next_closing"], "2026-06-05T15:00:00+02:00");
    assert_eq!(hours["next_opening"], "2026-06-08T08:00:00+02:00");
    let (status, _) = server.get_json("/healthz").await;
    assert_eq!(status, 200);
    let (status, body) = server.get_json("/api/v1/nothing-here").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
}
