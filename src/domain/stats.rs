//! Queue statistics from stored facts: offered, served, abandoned, waits,
//! response and handling times, satisfaction, per hour and per advisor.
//!
//! Pure: storage hands over the facts of a date range; this computes the
//! figures. Hours of day are local (Europe/Stockholm).

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Timelike, Utc};

use super::hours::{OpeningHours, TIME_ZONE, local_date};

/// What storage knows about one conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationFacts {
    pub queued_at: DateTime<Utc>,
    pub first_assigned_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// `served`, `abandoned`, or `None` while still open.
    pub outcome: Option<String>,
    /// The advisor who held it last (id, display name).
    pub advisor: Option<(i64, String)>,
    /// The first advisor message.
    pub first_response_at: Option<DateTime<Utc>>,
    /// The citizen's satisfaction, 1–5, if they answered.
    pub satisfaction: Option<u8>,
}

/// A refused `start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalFact {
    pub at: DateTime<Utc>,
    /// `closed`, `last_admission_passed` or `wait_beyond_closing`.
    pub reason: String,
}

/// Mean, median and 90th percentile in seconds (`None` without data).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Summary {
    pub count: usize,
    pub mean: Option<f64>,
    pub median: Option<f64>,
    pub p90: Option<f64>,
}

impl Summary {
    pub fn of(mut values: Vec<f64>) -> Summary {
        if values.is_empty() {
            return Summary::default();
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        // Nearest rank: the smallest value with at least p of the data at or below it.
        let rank = |p: f64| values[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
        Summary {
            count: n,
            mean: Some(values.iter().sum::<f64>() / n as f64),
            median: Some(rank(0.5)),
            p90: Some(rank(0.9)),
        }
    }
}

/// The citizens' answers to "how satisfied are you?" (1–5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Satisfaction {
    /// Answers per score: `[0]` counts the 1s, `[4]` the 5s.
    pub distribution: [usize; 5],
}

impl Satisfaction {
    fn add(&mut self, score: u8) {
        if let Some(n) = self.distribution.get_mut(usize::from(score).wrapping_sub(1)) {
            *n += 1;
        }
    }

    pub fn count(&self) -> usize {
        self.distribution.iter().sum()
    }

    /// The mean score; `None` without answers.
    pub fn mean(&self) -> Option<f64> {
        let count = self.count();
        let total: usize = self.distribution.iter().enumerate().map(|(i, n)| (i + 1) * n).sum();
        (count > 0).then(|| total as f64 / count as f64)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HourFigures {
    pub offered: usize,
    pub served: usize,
    pub abandoned: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdvisorFigures {
    pub advisor_id: i64,
    pub display_name: String,
    pub served: usize,
    pub handle: Summary,
    pub first_response: Summary,
    pub satisfaction: Satisfaction,
}

/// Upper bounds (seconds) of the wait-time distribution; the last bucket is open.
pub const WAIT_BUCKETS: [u64; 6] = [30, 60, 120, 300, 600, 1800];

#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub opening_hours_only: bool,
    pub offered: usize,
    pub served: usize,
    pub abandoned: usize,
    /// Abandoned / (served + abandoned); `None` when neither happened.
    pub abandon_rate: Option<f64>,
    /// Refused `start`s by reason code.
    pub refused: BTreeMap<String, usize>,
    pub wait: Summary,
    pub time_to_abandon: Summary,
    pub first_response: Summary,
    pub handle: Summary,
    /// Index = local hour of day when the chat was offered.
    pub per_hour: [HourFigures; 24],
    /// Counts per [`WAIT_BUCKETS`] bucket, then one for longer waits.
    pub wait_histogram: [usize; WAIT_BUCKETS.len() + 1],
    pub per_advisor: Vec<AdvisorFigures>,
    /// Answers from the citizens of the served chats.
    pub satisfaction: Satisfaction,
    /// Answers / served chats; `None` when none was served.
    pub satisfaction_response_rate: Option<f64>,
}

fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    ((to - from).num_milliseconds().max(0) as f64) / 1000.0
}

/// Computes the report for conversations offered (and refusals made) on local
/// dates `from..=to`. With `opening_hours_only`, only what happened while
/// the desk was open counts.
pub fn compute(
    conversations: &[ConversationFacts],
    refusals: &[RefusalFact],
    from: NaiveDate,
    to: NaiveDate,
    opening_hours_only: bool,
    hours: &OpeningHours,
) -> Report {
    let in_scope = |t: DateTime<Utc>| {
        let d = local_date(t);
        d >= from && d <= to && (!opening_hours_only || hours.is_open(t))
    };
    let mut report = Report {
        from,
        to,
        opening_hours_only,
        offered: 0,
        served: 0,
        abandoned: 0,
        abandon_rate: None,
        refused: BTreeMap::new(),
        wait: Summary::default(),
        time_to_abandon: Summary::default(),
        first_response: Summary::default(),
        handle: Summary::default(),
        per_hour: [HourFigures::default(); 24],
        wait_histogram: [0; WAIT_BUCKETS.len() + 1],
        per_advisor: Vec::new(),
        satisfaction: Satisfaction::default(),
        satisfaction_response_rate: None,
    };
    let (mut waits, mut abandon_times, mut responses, mut handles) = (vec![], vec![], vec![], vec![]);
    #[derive(Default)]
    struct AdvisorFacts {
        display_name: String,
        served: usize,
        handles: Vec<f64>,
        responses: Vec<f64>,
        satisfaction: Satisfaction,
    }
    let mut advisors: BTreeMap<i64, AdvisorFacts> = BTreeMap::new();
    for c in conversations.iter().filter(|c| in_scope(c.queued_at)) {
        report.offered += 1;
        let hour = c.queued_at.with_timezone(&TIME_ZONE).hour() as usize;
        report.per_hour[hour].offered += 1;
        if let Some(assigned) = c.first_assigned_at {
            report.served += 1;
            report.per_hour[hour].served += 1;
            let wait = seconds(c.queued_at, assigned);
            waits.push(wait);
            let bucket = WAIT_BUCKETS.iter().position(|b| wait <= *b as f64).unwrap_or(WAIT_BUCKETS.len());
            report.wait_histogram[bucket] += 1;
            let response = c.first_response_at.map(|r| seconds(assigned, r));
            let handle = c.ended_at.map(|e| seconds(assigned, e));
            responses.extend(response);
            handles.extend(handle);
            if let Some(score) = c.satisfaction {
                report.satisfaction.add(score);
            }
            if let Some((id, name)) = &c.advisor {
                let entry = advisors
                    .entry(*id)
                    .or_insert_with(|| AdvisorFacts { display_name: name.clone(), ..AdvisorFacts::default() });
                entry.served += 1;
                entry.handles.extend(handle);
                entry.responses.extend(response);
                if let Some(score) = c.satisfaction {
                    entry.satisfaction.add(score);
                }
            }
        } else if c.outcome.as_deref() == Some("abandoned") {
            report.abandoned += 1;
            report.per_hour[hour].abandoned += 1;
            abandon_times.extend(c.ended_at.map(|e| seconds(c.queued_at, e)));
        }
    }
    for r in refusals.iter().filter(|r| in_scope(r.at)) {
        *report.refused.entry(r.reason.clone()).or_default() += 1;
    }
    let finished = report.served + report.abandoned;
    report.abandon_rate = (finished > 0).then(|| report.abandoned as f64 / finished as f64);
    report.wait = Summary::of(waits);
    report.time_to_abandon = Summary::of(abandon_times);
    report.first_response = Summary::of(responses);
    report.handle = Summary::of(handles);
    report.satisfaction_response_rate =
        (report.served > 0).then(|| report.satisfaction.count() as f64 / report.served as f64);
    report.per_advisor = advisors
        .into_iter()
        .map(|(advisor_id, a)| AdvisorFigures {
            advisor_id,
            display_name: a.display_name,
            served: a.served,
            handle: Summary::of(a.handles),
            first_response: Summary::of(a.responses),
            satisfaction: a.satisfaction,
        })
        .collect();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("instant").to_utc()
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let s = Summary::of(vec![10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0]);
        assert_eq!((s.count, s.mean, s.median, s.p90), (10, Some(55.0), Some(50.0), Some(90.0)));
        let one = Summary::of(vec![7.0]);
        assert_eq!((one.median, one.p90), (Some(7.0), Some(7.0)));
        assert_eq!(Summary::of(vec![]), Summary::default());
    }

    #[test]
    fn a_small_day() {
        let served = |q: &str, a: &str, r: &str, e: &str, who: i64| ConversationFacts {
            queued_at: at(q),
            first_assigned_at: Some(at(a)),
            ended_at: Some(at(e)),
            outcome: Some("served".into()),
            advisor: Some((who, format!("advisor {who}"))),
            first_response_at: Some(at(r)),
            satisfaction: None,
        };
        let abandoned = |q: &str, e: &str| ConversationFacts {
            queued_at: at(q),
            first_assigned_at: None,
            ended_at: Some(at(e)),
            outcome: Some("abandoned".into()),
            advisor: None,
            first_response_at: None,
            satisfaction: None,
        };
        let rated = |facts: ConversationFacts, score| ConversationFacts { satisfaction: Some(score), ..facts };
        let facts = vec![
            rated(
                served(
                    "2026-11-30T09:00:00+01:00",
                    "2026-11-30T09:00:20+01:00",
                    "2026-11-30T09:00:50+01:00",
                    "2026-11-30T09:10:20+01:00",
                    1,
                ),
                5,
            ),
            // Not rated.
            served(
                "2026-11-30T09:30:00+01:00",
                "2026-11-30T09:31:40+01:00",
                "2026-11-30T09:32:00+01:00",
                "2026-11-30T09:41:40+01:00",
                2,
            ),
            abandoned("2026-11-30T10:00:00+01:00", "2026-11-30T10:02:00+01:00"),
            // Another day: outside the range.
            abandoned("2026-12-01T10:00:00+01:00", "2026-12-01T10:01:00+01:00"),
            // 07:30, before opening.
            rated(
                served(
                    "2026-11-30T07:30:00+01:00",
                    "2026-11-30T08:00:00+01:00",
                    "2026-11-30T08:00:10+01:00",
                    "2026-11-30T08:05:00+01:00",
                    1,
                ),
                4,
            ),
            // Another day, rated: outside the range.
            rated(
                served(
                    "2026-12-01T09:00:00+01:00",
                    "2026-12-01T09:00:20+01:00",
                    "2026-12-01T09:00:50+01:00",
                    "2026-12-01T09:10:20+01:00",
                    2,
                ),
                1,
            ),
        ];
        let refusals = vec![RefusalFact { at: at("2026-11-30T18:00:00+01:00"), reason: "closed".into() }];
        let day: NaiveDate = "2026-11-30".parse().expect("date");
        let hours = OpeningHours::default();
        let r = compute(&facts, &refusals, day, day, false, &hours);
        assert_eq!((r.offered, r.served, r.abandoned), (4, 3, 1));
        assert_eq!(r.abandon_rate, Some(0.25));
        assert_eq!(r.refused.get("closed"), Some(&1));
        assert_eq!(r.wait.count, 3);
        assert_eq!(r.wait.median, Some(100.0)); // 20, 100, 1800
        assert_eq!(r.time_to_abandon.mean, Some(120.0));
        assert_eq!(r.first_response.p90, Some(30.0)); // 30, 20, 10
        assert_eq!(r.handle.mean, Some(500.0)); // 600, 600, 300
        assert_eq!(r.per_hour[9], HourFigures { offered: 2, served: 2, abandoned: 0 });
        assert_eq!(r.per_hour[10], HourFigures { offered: 1, served: 0, abandoned: 1 });
        assert_eq!(r.per_hour[7].offered, 1);
        assert_eq!(r.wait_histogram, [1, 0, 1, 0, 0, 1, 0]);
        assert_eq!(r.per_advisor.len(), 2);
        assert_eq!((r.per_advisor[0].advisor_id, r.per_advisor[0].served), (1, 2));
        // Answers 5 and 4 (the 1 was on another day), from 2 of the 3 served.
        assert_eq!(r.satisfaction.distribution, [0, 0, 0, 1, 1]);
        assert_eq!((r.satisfaction.count(), r.satisfaction.mean()), (2, Some(4.5)));
        assert_eq!(r.satisfaction_response_rate, Some(2.0 / 3.0));
        assert_eq!((r.per_advisor[0].satisfaction.count(), r.per_advisor[0].satisfaction.mean()), (2, Some(4.5)));
        assert_eq!((r.per_advisor[1].satisfaction.count(), r.per_advisor[1].satisfaction.mean()), (0, None));

        let open_only = compute(&facts, &refusals, day, day, true, &hours);
        assert_eq!((open_only.offered, open_only.served), (3, 2));
        assert!(open_only.refused.is_empty());
        assert_eq!((open_only.satisfaction.count(), open_only.satisfaction.mean()), (1, Some(5.0)));
        assert_eq!(open_only.satisfaction_response_rate, Some(0.5));
        assert_eq!(Satisfaction::default().mean(), None);
    }
}
