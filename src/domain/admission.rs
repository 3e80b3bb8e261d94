//! The admission rule: may a new chat join the queue at instant `now`?
//!
//! Pure: it takes the opening-hours answer and the current wait estimate.
//! Citizens already in the queue at closing are not affected; this only
//! decides who may *join*.

use chrono::{DateTime, TimeDelta, Utc};

use super::hours::OpenStatus;

/// How strict admission is near closing time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionPolicy {
    /// Stop admitting this long before closing (0: admit until closing).
    pub last_admission_before_closing: TimeDelta,
    /// Refuse a chat whose estimated wait ends after closing time.
    pub refuse_if_not_served_before_closing: bool,
}

impl Default for AdmissionPolicy {
    fn default() -> Self {
        AdmissionPolicy { last_admission_before_closing: TimeDelta::zero(), refuse_if_not_served_before_closing: true }
    }
}

/// Why a chat was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// Outside opening hours.
    Closed,
    /// Inside the last-admission window before closing.
    LastAdmissionPassed,
    /// The queue is too long to be served before closing.
    WaitBeyondClosing,
}

impl RefusalReason {
    /// Stable code used on the wire and in statistics.
    pub fn code(self) -> &'static str {
        match self {
            RefusalReason::Closed => "closed",
            RefusalReason::LastAdmissionPassed => "last_admission_passed",
            RefusalReason::WaitBeyondClosing => "wait_beyond_closing",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    Refused {
        reason: RefusalReason,
        /// When a new chat can next be started, if known.
        next_opening: Option<DateTime<Utc>>,
    },
}

/// Decides whether a new chat is admitted.
///
/// `status` is the opening-hours answer for `status.at` (the instant of the
/// decision); `estimated_wait` is how long the new chat would wait, or `None`
/// when it cannot be estimated (no history yet) — then only the hours decide.
pub fn decide(status: &OpenStatus, policy: &AdmissionPolicy, estimated_wait: Option<TimeDelta>) -> Admission {
    let now = status.at;
    if !status.open {
        return Admission::Refused { reason: RefusalReason::Closed, next_opening: status.next_opening };
    }
    let Some(closing) = status.next_closing else {
        // Open with no closing in sight: nothing near closing to refuse.
        return Admission::Admitted;
    };
    let refuse = |reason| Admission::Refused { reason, next_opening: status.next_opening };
    if policy.last_admission_before_closing > TimeDelta::zero() && now + policy.last_admission_before_closing >= closing
    {
        return refuse(RefusalReason::LastAdmissionPassed);
    }
    if policy.refuse_if_not_served_before_closing
        && let Some(wait) = estimated_wait
        && now + wait > closing
    {
        return refuse(RefusalReason::WaitBeyondClosing);
    }
    Admission::Admitted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::hours::OpeningHours;

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339).expect("test instant").to_utc()
    }

    fn decide_at(t: &str, policy: AdmissionPolicy, wait_minutes: Option<i64>) -> Admission {
        let status = OpeningHours::default().status(at(t));
        decide(&status, &policy, wait_minutes.map(TimeDelta::minutes))
    }

    const MONDAY_0800: &str = "2026-11-30T08:00:00+01:00";

    #[test]
    fn closed_refuses_with_next_opening() {
        let got = decide_at("2026-11-28T12:00:00+01:00", AdmissionPolicy::default(), None);
        assert_eq!(got, Admission::Refused { reason: RefusalReason::Closed, next_opening: Some(at(MONDAY_0800)) });
    }

    #[test]
    fn open_admits_until_closing() {
        let policy = AdmissionPolicy::default();
        assert_eq!(decide_at("2026-11-27T16:59:59+01:00", policy, None), Admission::Admitted);
        assert!(matches!(
            decide_at("2026-11-27T17:00:00+01:00", policy, None),
            Admission::Refused { reason: RefusalReason::Closed, .. }
        ));
    }

    #[test]
    fn last_admission_window() {
        let policy = AdmissionPolicy {
            last_admission_before_closing: TimeDelta::minutes(15),
            refuse_if_not_served_before_closing: false,
        };
        assert_eq!(decide_at("2026-11-27T16:44:59+01:00", policy, None), Admission::Admitted);
        assert_eq!(
            decide_at("2026-11-27T16:45:00+01:00", policy, None),
            Admission::Refused { reason: RefusalReason::LastAdmissionPassed, next_opening: Some(at(MONDAY_0800)) }
        );
    }

    #[test]
    fn wait_beyond_closing_refuses_only_when_enabled() {
        let on = AdmissionPolicy::default();
        let off = AdmissionPolicy { refuse_if_not_served_before_closing: false, ..on };
        let t = "2026-11-27T16:30:00+01:00";
        assert_eq!(decide_at(t, on, Some(30)), Admission::Admitted);
        assert!(matches!(
            decide_at(t, on, Some(31)),
            Admission::Refused { reason: RefusalReason::WaitBeyondClosing, .. }
        ));
        assert_eq!(decide_at(t, off, Some(31)), Admission::Admitted);
        // Unknown wait: the hours alone decide.
        assert_eq!(decide_at(t, on, None), Admission::Admitted);
    }

    #[test]
    fn the_short_day_before_a_holiday_closes_admission_at_15() {
        let policy = AdmissionPolicy::default();
        // Skärtorsdagen 2026: 08:00–15:00; next opening is Tuesday after annandag påsk.
        assert_eq!(decide_at("2026-04-02T14:50:00+02:00", policy, Some(5)), Admission::Admitted);
        assert_eq!(
            decide_at("2026-04-02T14:50:00+02:00", policy, Some(11)),
            Admission::Refused {
                reason: RefusalReason::WaitBeyondClosing,
                next_opening: Some(at("2026-04-07T08:00:00+02:00")),
            }
        );
    }
}
