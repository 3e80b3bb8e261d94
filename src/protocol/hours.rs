//! JSON forms of opening hours: `GET /api/v1/hours` and `kommunchat hours`.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use crate::domain::hours::{DayHours, DayReason, LocalInterval, OpenStatus, OpeningHours, TIME_ZONE};

/// An interval as local wall-clock `HH:MM`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct IntervalView {
    pub from: String,
    pub to: String,
}

impl From<&LocalInterval> for IntervalView {
    fn from(i: &LocalInterval) -> Self {
        IntervalView { from: i.from.to_string(), to: i.to.to_string() }
    }
}

/// One date: `{"date":"2026-12-24","open":false,"intervals":[],"reason":"julafton"}`.
/// The field order is part of the interface (one object per line in `kommunchat hours`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DayView {
    pub date: String,
    pub open: bool,
    pub intervals: Vec<IntervalView>,
    pub reason: String,
}

impl From<&DayHours> for DayView {
    fn from(d: &DayHours) -> Self {
        DayView {
            date: d.date.to_string(),
            open: d.is_open(),
            intervals: d.intervals.iter().map(IntervalView::from).collect(),
            reason: d.reason.to_string(),
        }
    }
}

/// A stable, machine-readable form of a [`DayReason`], for clients that
/// translate the reason themselves.
pub fn reason_code(reason: &DayReason) -> &'static str {
    match reason {
        DayReason::Regular => "regular",
        DayReason::Exception { .. } => "exception",
        DayReason::Holiday(_) => "holiday",
        DayReason::DayBeforeHoliday(_) => "day_before_holiday",
    }
}

/// `GET /api/v1/hours`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HoursView {
    pub open_now: bool,
    /// Human-readable: the holiday's name, the exception's label, "day before a
    /// public holiday", "regular hours", or "outside opening hours".
    pub reason: String,
    /// `regular`, `outside_hours`, `exception`, `holiday` or `day_before_holiday`.
    pub reason_code: &'static str,
    pub timezone: &'static str,
    /// Today's local date and its intervals.
    pub date: String,
    pub intervals: Vec<IntervalView>,
    /// RFC 3339 with the local offset, or null when none within two years.
    pub next_opening: Option<String>,
    pub next_closing: Option<String>,
    /// Dates in the next 14 days whose hours differ from the regular week.
    pub deviations: Vec<DayView>,
    /// Who runs the chat and the alternatives to it, for the closed state.
    pub contact: ContactView,
}

/// The organisation, the alternatives to chat and the public-record notice.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ContactView {
    pub organisation: String,
    pub phone: String,
    pub visiting_address: String,
    pub privacy_policy_url: String,
    pub public_record_notice: String,
}

/// How many days ahead `deviations` looks.
pub const DEVIATION_DAYS: u32 = 14;

/// RFC 3339 in Stockholm local time, e.g. `2026-11-30T08:00:00+01:00`.
pub fn local_rfc3339(t: DateTime<Utc>) -> String {
    t.with_timezone(&TIME_ZONE).to_rfc3339()
}

/// The reason shown for the instant of `status`.
pub fn reason_now(status: &OpenStatus) -> (String, &'static str) {
    match &status.today.reason {
        DayReason::Regular if status.open => ("regular hours".into(), "regular"),
        DayReason::Regular => ("outside opening hours".into(), "outside_hours"),
        other => (other.to_string(), reason_code(other)),
    }
}

impl HoursView {
    pub fn new(hours: &OpeningHours, status: &OpenStatus, contact: ContactView) -> HoursView {
        let (reason, reason_code) = reason_now(status);
        HoursView {
            open_now: status.open,
            reason,
            reason_code,
            timezone: TIME_ZONE.name(),
            date: status.today.date.to_string(),
            intervals: status.today.intervals.iter().map(IntervalView::from).collect(),
            next_opening: status.next_opening.map(local_rfc3339),
            next_closing: status.next_closing.map(local_rfc3339),
            deviations: hours.deviations(status.today.date, DEVIATION_DAYS).iter().map(DayView::from).collect(),
            contact,
        }
    }
}

/// The `kommunchat hours` line for one date.
pub fn day_line(hours: &OpeningHours, date: NaiveDate) -> String {
    serde_json::to_string(&DayView::from(&hours.day(date)))
        .unwrap_or_else(|e| unreachable!("a DayView always serialises: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_lines() {
        let hours = OpeningHours::default();
        assert_eq!(
            day_line(&hours, "2026-12-24".parse().expect("date")),
            r#"{"date":"2026-12-24","open":false,"intervals":[],"reason":"julafton"}"#
        );
        assert_eq!(
            day_line(&hours, "2026-04-02".parse().expect("date")),
            r#"{"date":"2026-04-02","open":true,"intervals":[{"from":"08:00","to":"15:00"}],"reason":"day before a public holiday"}"#
        );
    }
}
