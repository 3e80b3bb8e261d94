//! Opening hours: which local wall-clock intervals apply on a date, and what
//! that means for an instant.
//!
//! Plain synchronous code. It never reads a clock: every question takes the
//! instant it is about. Opening hours are wall-clock times in Europe/Stockholm,
//! so an interval that spans a daylight-saving change is longer or shorter in
//! real time, exactly as the sign on the door means it.
//!
//! Precedence for a date: an explicit exception > a holiday (by law, or one of
//! the three de facto eves) > the day before a public holiday > the weekly
//! schedule.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Datelike, Days, NaiveDate, TimeZone, Utc, Weekday};
use chrono_tz::Europe::Stockholm;
use chrono_tz::Tz;

use super::calendar::{Holiday, holiday_on, public_holiday_tomorrow};

/// The time zone every wall-clock time in kommunchat is read in.
pub const TIME_ZONE: Tz = Stockholm;

/// How far ahead [`OpeningHours::next_opening`] and friends look before they
/// answer "not within the horizon" (`None`). Two years covers any realistic
/// closure period configured as exceptions.
const SEARCH_HORIZON_DAYS: u64 = 800;

/// A wall-clock time of day in minutes after local midnight, `0..=1440`
/// (1440 is "24:00", the end of the day).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WallTime(u16);

impl WallTime {
    pub const MIDNIGHT: WallTime = WallTime(0);
    pub const END_OF_DAY: WallTime = WallTime(24 * 60);

    pub fn from_hm(hour: u32, minute: u32) -> Option<WallTime> {
        let minutes = hour.checked_mul(60)?.checked_add(minute)?;
        (minute < 60 && minutes <= 24 * 60).then_some(WallTime(minutes as u16))
    }

    pub fn minutes(self) -> u32 {
        u32::from(self.0)
    }

    /// Parses `HH:MM` (also `H:MM` and `HH.MM`, the Swedish way of writing it).
    pub fn parse(text: &str) -> Option<WallTime> {
        let (h, m) = text.trim().split_once([':', '.'])?;
        if h.is_empty() || h.len() > 2 || m.len() != 2 {
            return None;
        }
        if !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        WallTime::from_hm(h.parse().ok()?, m.parse().ok()?)
    }
}

impl fmt::Display for WallTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

/// An opening interval `[from, to)` on one local date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LocalInterval {
    pub from: WallTime,
    pub to: WallTime,
}

/// Why an interval is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntervalError {
    #[error("expected \"HH:MM-HH:MM\" (e.g. \"08:00-17:00\"), got {0:?}")]
    Syntax(String),
    #[error("{0:?} ends before or when it starts; an interval must end after it starts")]
    EndNotAfterStart(String),
    #[error("intervals {0} and {1} overlap")]
    Overlap(LocalInterval, LocalInterval),
}

impl LocalInterval {
    pub fn new(from: WallTime, to: WallTime) -> Option<LocalInterval> {
        (from < to).then_some(LocalInterval { from, to })
    }

    /// Parses `"08:00-17:00"`; the end may be `24:00`.
    pub fn parse(text: &str) -> Result<LocalInterval, IntervalError> {
        let syntax = || IntervalError::Syntax(text.to_owned());
        let (from, to) = text.split_once(['-', '–']).ok_or_else(syntax)?;
        let from = WallTime::parse(from).ok_or_else(syntax)?;
        let to = WallTime::parse(to).ok_or_else(syntax)?;
        if from == WallTime::END_OF_DAY {
            return Err(syntax());
        }
        LocalInterval::new(from, to).ok_or_else(|| IntervalError::EndNotAfterStart(text.to_owned()))
    }
}

impl fmt::Display for LocalInterval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.from, self.to)
    }
}

/// The intervals of one day: sorted, non-overlapping. Empty means closed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct DaySchedule(Vec<LocalInterval>);

impl DaySchedule {
    pub const CLOSED: DaySchedule = DaySchedule(Vec::new());

    /// Sorts the intervals and refuses overlapping ones (touching is fine:
    /// `08:00-12:00` and `12:00-17:00` are one opening).
    pub fn new(mut intervals: Vec<LocalInterval>) -> Result<DaySchedule, IntervalError> {
        intervals.sort();
        for pair in intervals.windows(2) {
            if pair[1].from < pair[0].to {
                return Err(IntervalError::Overlap(pair[0], pair[1]));
            }
        }
        Ok(DaySchedule(intervals))
    }

    /// Parses a list such as `["08:00-12:00", "13:00-17:00"]`.
    pub fn parse<S: AsRef<str>>(texts: &[S]) -> Result<DaySchedule, IntervalError> {
        let intervals = texts.iter().map(|t| LocalInterval::parse(t.as_ref())).collect::<Result<Vec<_>, _>>()?;
        DaySchedule::new(intervals)
    }

    pub fn intervals(&self) -> &[LocalInterval] {
        &self.0
    }

    pub fn is_closed(&self) -> bool {
        self.0.is_empty()
    }

    /// The parts of `self` that also lie within `limit`.
    fn intersect(&self, limit: &DaySchedule) -> DaySchedule {
        let mut out = Vec::new();
        for a in &self.0 {
            for b in &limit.0 {
                let from = a.from.max(b.from);
                let to = a.to.min(b.to);
                if let Some(i) = LocalInterval::new(from, to) {
                    out.push(i);
                }
            }
        }
        out.sort();
        DaySchedule(out)
    }
}

/// A date whose hours are set by hand in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateException {
    pub schedule: DaySchedule,
    /// Shown to citizens, e.g. "Personaldag".
    pub label: Option<String>,
}

/// Why a date has the hours it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DayReason {
    /// The weekly schedule.
    Regular,
    /// An explicit date in the configuration.
    Exception { label: Option<String> },
    /// A public holiday by law, or one of the de facto eves.
    Holiday(Holiday),
    /// The working day before a public holiday, with shortened hours.
    DayBeforeHoliday(Holiday),
}

impl fmt::Display for DayReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DayReason::Regular => f.write_str("regular hours"),
            DayReason::Exception { label: Some(label) } => f.write_str(label),
            DayReason::Exception { label: None } => f.write_str("special hours"),
            DayReason::Holiday(h) => f.write_str(h.name()),
            DayReason::DayBeforeHoliday(_) => f.write_str("day before a public holiday"),
        }
    }
}

/// The hours of one local date and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayHours {
    pub date: NaiveDate,
    pub intervals: Vec<LocalInterval>,
    pub reason: DayReason,
}

impl DayHours {
    pub fn is_open(&self) -> bool {
        !self.intervals.is_empty()
    }
}

/// Everything the opening-hours rules need. Build it with [`OpeningHours::default`]
/// (the seed's hours) and adjust fields, or from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpeningHours {
    /// Monday first.
    pub weekly: [DaySchedule; 7],
    /// Hours on every public holiday by law (default: closed).
    pub public_holidays: DaySchedule,
    pub midsommarafton: DaySchedule,
    pub julafton: DaySchedule,
    pub nyarsafton: DaySchedule,
    /// Hours on the working day before a public holiday, as a limit on that
    /// day's regular hours (never longer than them). `None`: no shortening.
    pub day_before_holiday: Option<DaySchedule>,
    pub exceptions: BTreeMap<NaiveDate, DateException>,
}

fn hours(texts: &[&str]) -> DaySchedule {
    DaySchedule::parse(texts).unwrap_or_else(|e| unreachable!("built-in hours are valid: {e}"))
}

impl Default for OpeningHours {
    /// The seed's hours: Mon–Wed 08–17, Thu 08–18, Fri 08–17; weekends and
    /// holidays closed; 08–15 on the day before a public holiday.
    fn default() -> Self {
        let weekday = hours(&["08:00-17:00"]);
        OpeningHours {
            weekly: [
                weekday.clone(),
                weekday.clone(),
                weekday.clone(),
                hours(&["08:00-18:00"]),
                weekday,
                DaySchedule::CLOSED,
                DaySchedule::CLOSED,
            ],
            public_holidays: DaySchedule::CLOSED,
            midsommarafton: DaySchedule::CLOSED,
            julafton: DaySchedule::CLOSED,
            nyarsafton: DaySchedule::CLOSED,
            day_before_holiday: Some(hours(&["08:00-15:00"])),
            exceptions: BTreeMap::new(),
        }
    }
}

/// A stretch of time the desk is open without a break, as instants.
/// `end` is `None` when it does not end within the search horizon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenPeriod {
    pub start: DateTime<Utc>,
    pub end: Option<DateTime<Utc>>,
}

/// The answer to "are we open at T, and what next?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenStatus {
    pub at: DateTime<Utc>,
    pub open: bool,
    /// The hours of the local date of `at`.
    pub today: DayHours,
    /// The next time the desk opens after `at` (if open now: after the current period).
    pub next_opening: Option<DateTime<Utc>>,
    /// The next time the desk closes after `at` (if open now: the end of the current period).
    pub next_closing: Option<DateTime<Utc>>,
}

impl OpeningHours {
    /// The hours of a local date, applying the precedence rules.
    pub fn day(&self, date: NaiveDate) -> DayHours {
        let day = |schedule: &DaySchedule, reason| DayHours { date, intervals: schedule.intervals().to_vec(), reason };
        if let Some(exception) = self.exceptions.get(&date) {
            return day(&exception.schedule, DayReason::Exception { label: exception.label.clone() });
        }
        if let Some(holiday) = holiday_on(date) {
            let schedule = match holiday {
                Holiday::Midsommarafton => &self.midsommarafton,
                Holiday::Julafton => &self.julafton,
                Holiday::Nyarsafton => &self.nyarsafton,
                _ => &self.public_holidays,
            };
            return day(schedule, DayReason::Holiday(holiday));
        }
        let regular = &self.weekly[date.weekday().num_days_from_monday() as usize];
        if let (Some(short), Some(holiday)) = (&self.day_before_holiday, public_holiday_tomorrow(date)) {
            // Only a working day is shortened; a closed Saturday stays closed.
            if !regular.is_closed() {
                return day(&regular.intersect(short), DayReason::DayBeforeHoliday(holiday));
            }
        }
        day(regular, DayReason::Regular)
    }

    /// The regular (weekly) hours for a weekday.
    pub fn regular(&self, weekday: Weekday) -> &DaySchedule {
        &self.weekly[weekday.num_days_from_monday() as usize]
    }

    /// The dates in `[from, from + days)` whose hours differ from the weekly
    /// schedule, e.g. to tell citizens about holidays ahead.
    pub fn deviations(&self, from: NaiveDate, days: u32) -> Vec<DayHours> {
        from.iter_days()
            .take(days as usize)
            .map(|d| self.day(d))
            .filter(|d| {
                d.reason != DayReason::Regular && d.intervals.as_slice() != self.regular(d.date.weekday()).intervals()
            })
            .collect()
    }

    /// The intervals of a local date as instants, in order.
    pub fn instant_intervals(&self, date: NaiveDate) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        self.day(date)
            .intervals
            .iter()
            .filter_map(|i| {
                let start = local_instant(date, i.from, Edge::Start)?;
                let end = local_instant(date, i.to, Edge::End)?;
                (start < end).then_some((start, end))
            })
            .collect()
    }

    /// Is the desk open at `t`?
    pub fn is_open(&self, t: DateTime<Utc>) -> bool {
        self.instant_intervals(local_date(t)).iter().any(|(start, end)| *start <= t && t < *end)
    }

    /// Open periods (contiguous intervals merged, across midnight too) that
    /// end after `t`, in order.
    pub fn periods_after(&self, t: DateTime<Utc>) -> OpenPeriods<'_> {
        OpenPeriods {
            hours: self,
            after: t,
            next_date: local_date(t).pred_opt().unwrap_or(local_date(t)),
            days_left: SEARCH_HORIZON_DAYS,
            buffered: Vec::new(),
            pending: None,
        }
    }

    /// The next opening strictly after `t`.
    pub fn next_opening(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.periods_after(t).map(|p| p.start).find(|start| *start > t)
    }

    /// The next closing after `t`: the end of the current period if open.
    pub fn next_closing(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.periods_after(t).next().and_then(|p| p.end)
    }

    /// Everything a citizen or the admission rule asks at instant `t`.
    pub fn status(&self, t: DateTime<Utc>) -> OpenStatus {
        let mut periods = self.periods_after(t);
        let first = periods.next();
        let open = first.is_some_and(|p| p.start <= t);
        let (next_opening, next_closing) = match first {
            Some(p) if open => (periods.next().map(|n| n.start), p.end),
            Some(p) => (Some(p.start), p.end),
            None => (None, None),
        };
        OpenStatus { at: t, open, today: self.day(local_date(t)), next_opening, next_closing }
    }
}

/// Iterator over merged open periods; see [`OpeningHours::periods_after`].
#[derive(Debug)]
pub struct OpenPeriods<'a> {
    hours: &'a OpeningHours,
    after: DateTime<Utc>,
    next_date: NaiveDate,
    days_left: u64,
    /// Intervals of dates already read, not yet merged, in reverse order.
    buffered: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    pending: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

impl Iterator for OpenPeriods<'_> {
    type Item = OpenPeriod;

    fn next(&mut self) -> Option<OpenPeriod> {
        loop {
            if self.buffered.is_empty() {
                if self.days_left == 0 {
                    // Out of horizon: a pending period has no known end.
                    return self.pending.take().map(|(start, _)| OpenPeriod { start, end: None });
                }
                self.days_left -= 1;
                let date = self.next_date;
                self.next_date = date.succ_opt()?;
                self.buffered = self.hours.instant_intervals(date);
                self.buffered.reverse();
                continue;
            }
            let Some((start, end)) = self.buffered.pop() else {
                continue;
            };
            if end <= self.after {
                continue;
            }
            match &mut self.pending {
                Some((_, pending_end)) if *pending_end >= start => {
                    *pending_end = (*pending_end).max(end);
                }
                pending => {
                    let done = pending.replace((start, end));
                    if let Some((start, end)) = done {
                        return Some(OpenPeriod { start, end: Some(end) });
                    }
                }
            }
        }
    }
}

/// The local (Stockholm) calendar date of an instant.
pub fn local_date(t: DateTime<Utc>) -> NaiveDate {
    t.with_timezone(&TIME_ZONE).date_naive()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Edge {
    Start,
    End,
}

/// The instant of a wall-clock time on a local date.
///
/// When the clocks go back, a wall-clock time happens twice: an interval starts
/// at the first and ends at the second, so it is open for all of the wall-clock
/// time it names. When the clocks go forward, a time that never happens is read
/// as the first instant after the jump (an opening at 02:30 opens at 03:00).
fn local_instant(date: NaiveDate, time: WallTime, edge: Edge) -> Option<DateTime<Utc>> {
    let (date, minutes) =
        if time == WallTime::END_OF_DAY { (date.checked_add_days(Days::new(1))?, 0) } else { (date, time.minutes()) };
    let mut naive = date.and_hms_opt(minutes / 60, minutes % 60, 0)?;
    // A gap lasts one hour in Stockholm; allow for any zone rule up to three.
    for _ in 0..=180 {
        match TIME_ZONE.from_local_datetime(&naive) {
            chrono::LocalResult::Single(t) => return Some(t.to_utc()),
            chrono::LocalResult::Ambiguous(first, second) => {
                return Some(if edge == Edge::Start { first } else { second }.to_utc());
            }
            chrono::LocalResult::None => naive += chrono::TimeDelta::minutes(1),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> NaiveDate {
        s.parse().expect("test date")
    }

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339).expect("test instant").to_utc()
    }

    fn shown(day: &DayHours) -> Vec<String> {
        day.intervals.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn parses_and_prints_intervals() {
        assert_eq!(LocalInterval::parse("08:00-17:00").expect("ok").to_string(), "08:00-17:00");
        assert_eq!(LocalInterval::parse("8.00–12.30").expect("ok").to_string(), "08:00-12:30");
        assert_eq!(LocalInterval::parse("20:00-24:00").expect("ok").to_string(), "20:00-24:00");
        for bad in ["", "08:00", "8-17", "08:00-25:00", "08:60-09:00", "24:00-24:00", "x:00-09:00"] {
            assert!(matches!(LocalInterval::parse(bad), Err(IntervalError::Syntax(_))), "{bad:?}");
        }
        assert_eq!(LocalInterval::parse("17:00-08:00"), Err(IntervalError::EndNotAfterStart("17:00-08:00".into())));
        assert!(matches!(DaySchedule::parse(&["08:00-12:00", "11:00-17:00"]), Err(IntervalError::Overlap(_, _))));
        let lunch = DaySchedule::parse(&["13:00-17:00", "08:00-12:00"]).expect("ok");
        assert_eq!(lunch.intervals()[0].to_string(), "08:00-12:00");
    }

    #[test]
    fn the_seed_week() {
        let hours = OpeningHours::default();
        // Week 48 of 2026: Mon 23 Nov – Sun 29 Nov, no holidays.
        let week: Vec<_> = date("2026-11-23").iter_days().take(7).map(|d| hours.day(d)).collect();
        let shown: Vec<_> = week.iter().map(shown).collect();
        assert_eq!(
            shown,
            [
                vec!["08:00-17:00"],
                vec!["08:00-17:00"],
                vec!["08:00-17:00"],
                vec!["08:00-18:00"],
                vec!["08:00-17:00"],
                vec![],
                vec![],
            ]
        );
        assert!(week.iter().all(|d| d.reason == DayReason::Regular));
    }

    #[test]
    fn holidays_and_eves_close_and_the_day_before_is_short() {
        let hours = OpeningHours::default();
        let cases = [
            ("2026-01-01", vec![], "nyårsdagen"),
            ("2026-01-05", vec!["08:00-15:00"], "day before a public holiday"),
            ("2026-01-06", vec![], "trettondedag jul"),
            ("2026-04-02", vec!["08:00-15:00"], "day before a public holiday"),
            ("2026-04-03", vec![], "långfredagen"),
            ("2026-04-06", vec![], "annandag påsk"),
            ("2026-04-07", vec!["08:00-17:00"], "regular hours"),
            ("2026-04-30", vec!["08:00-15:00"], "day before a public holiday"),
            ("2026-05-13", vec!["08:00-15:00"], "day before a public holiday"),
            ("2026-05-14", vec![], "kristi himmelsfärdsdag"),
            ("2026-06-05", vec!["08:00-15:00"], "day before a public holiday"),
            ("2026-06-18", vec!["08:00-18:00"], "regular hours"),
            ("2026-06-19", vec![], "midsommarafton"),
            ("2026-10-30", vec!["08:00-15:00"], "day before a public holiday"),
            ("2026-12-23", vec!["08:00-17:00"], "regular hours"),
            ("2026-12-24", vec![], "julafton"),
            ("2026-12-25", vec![], "juldagen"),
            ("2026-12-31", vec![], "nyårsafton"),
            // Sunday 5 April is påskdagen: a holiday even though Sunday is closed anyway.
            ("2026-04-05", vec![], "påskdagen"),
            // Saturday 4 April (påskafton) is closed by the weekly schedule, not shortened.
            ("2026-04-04", vec![], "regular hours"),
        ];
        for (day, intervals, reason) in cases {
            let got = hours.day(date(day));
            assert_eq!(shown(&got), intervals, "{day}");
            assert_eq!(got.reason.to_string(), reason, "{day}");
        }
    }

    #[test]
    fn the_day_before_never_lengthens_a_short_day() {
        let mut hours = OpeningHours::default();
        hours.weekly[3] = DaySchedule::parse(&["09:00-12:00", "13:00-16:00"]).expect("ok");
        hours.day_before_holiday = Some(DaySchedule::parse(&["08:00-15:00"]).expect("ok"));
        // Thursday 2 April 2026 is skärtorsdagen.
        assert_eq!(shown(&hours.day(date("2026-04-02"))), ["09:00-12:00", "13:00-15:00"]);
        hours.day_before_holiday = None;
        assert_eq!(hours.day(date("2026-04-02")).reason, DayReason::Regular);
    }

    #[test]
    fn precedence_exception_over_holiday_over_day_before_over_weekly() {
        let mut hours = OpeningHours::default();
        hours.public_holidays = DaySchedule::parse(&["10:00-14:00"]).expect("ok");
        hours.julafton = DaySchedule::parse(&["09:00-12:00"]).expect("ok");
        hours.exceptions.insert(
            date("2026-01-06"),
            DateException {
                schedule: DaySchedule::parse(&["08:00-10:00"]).expect("ok"),
                label: Some("Jourtid".into()),
            },
        );
        hours.exceptions.insert(
            date("2026-01-05"),
            DateException { schedule: DaySchedule::CLOSED, label: Some("Personaldag".into()) },
        );
        hours.exceptions.insert(date("2026-11-24"), DateException { schedule: DaySchedule::CLOSED, label: None });

        let exception_on_holiday = hours.day(date("2026-01-06"));
        assert_eq!(shown(&exception_on_holiday), ["08:00-10:00"]);
        assert_eq!(exception_on_holiday.reason.to_string(), "Jourtid");

        let exception_on_day_before = hours.day(date("2026-01-05"));
        assert!(!exception_on_day_before.is_open());
        assert_eq!(exception_on_day_before.reason.to_string(), "Personaldag");

        let exception_on_weekday = hours.day(date("2026-11-24"));
        assert!(!exception_on_weekday.is_open());
        assert_eq!(exception_on_weekday.reason.to_string(), "special hours");

        let holiday_over_weekly = hours.day(date("2026-05-01"));
        assert_eq!(shown(&holiday_over_weekly), ["10:00-14:00"]);
        assert_eq!(shown(&hours.day(date("2026-12-24"))), ["09:00-12:00"]);

        let day_before_over_weekly = hours.day(date("2026-04-30"));
        assert_eq!(shown(&day_before_over_weekly), ["08:00-15:00"]);
    }

    #[test]
    fn open_at_an_instant_with_next_opening_and_closing() {
        let hours = OpeningHours::default();
        // Friday 27 Nov 2026, 16:59 CET.
        let s = hours.status(at("2026-11-27T16:59:00+01:00"));
        assert!(s.open);
        assert_eq!(s.next_closing, Some(at("2026-11-27T17:00:00+01:00")));
        assert_eq!(s.next_opening, Some(at("2026-11-30T08:00:00+01:00")));
        // 17:00 exactly is closed.
        let s = hours.status(at("2026-11-27T17:00:00+01:00"));
        assert!(!s.open);
        assert_eq!(s.next_opening, Some(at("2026-11-30T08:00:00+01:00")));
        assert_eq!(s.next_closing, Some(at("2026-11-30T17:00:00+01:00")));
        // 08:00 exactly is open.
        assert!(hours.is_open(at("2026-11-30T08:00:00+01:00")));
        assert!(!hours.is_open(at("2026-11-30T07:59:59+01:00")));
        // Christmas: closed from the 23rd at 17:00 until Monday 28 December.
        let s = hours.status(at("2026-12-23T18:00:00+01:00"));
        assert!(!s.open);
        assert_eq!(s.next_opening, Some(at("2026-12-28T08:00:00+01:00")));
        assert_eq!(s.today.reason, DayReason::Regular);
        let s = hours.status(at("2026-12-24T10:00:00+01:00"));
        assert_eq!(s.today.reason, DayReason::Holiday(Holiday::Julafton));
    }

    #[test]
    fn touching_intervals_are_one_opening() {
        let mut hours = OpeningHours::default();
        hours.weekly = std::array::from_fn(|_| DaySchedule::parse(&["00:00-12:00", "12:00-24:00"]).expect("ok"));
        hours.public_holidays = hours.weekly[0].clone();
        hours.julafton = DaySchedule::parse(&["00:00-12:00"]).expect("ok");
        hours.day_before_holiday = None;
        // Open around the clock until julafton 12:00.
        let s = hours.status(at("2026-12-20T12:00:00+01:00"));
        assert!(s.open);
        assert_eq!(s.next_closing, Some(at("2026-12-24T12:00:00+01:00")));
        assert_eq!(s.next_opening, Some(at("2026-12-25T00:00:00+01:00")));
    }

    #[test]
    fn never_open_answers_none() {
        let mut hours = OpeningHours::default();
        hours.weekly = std::array::from_fn(|_| DaySchedule::CLOSED);
        let s = hours.status(at("2026-11-27T10:00:00+01:00"));
        assert!(!s.open);
        assert_eq!((s.next_opening, s.next_closing), (None, None));
    }

    #[test]
    fn always_open_has_no_known_closing() {
        let mut hours = OpeningHours::default();
        hours.weekly = std::array::from_fn(|_| DaySchedule::parse(&["00:00-24:00"]).expect("ok"));
        hours.public_holidays = hours.weekly[0].clone();
        hours.midsommarafton = hours.weekly[0].clone();
        hours.julafton = hours.weekly[0].clone();
        hours.nyarsafton = hours.weekly[0].clone();
        hours.day_before_holiday = None;
        let s = hours.status(at("2026-11-27T10:00:00+01:00"));
        assert!(s.open);
        assert_eq!((s.next_opening, s.next_closing), (None, None));
    }

    /// A schedule that opens on Sundays, to see the daylight-saving days.
    fn sunday_night_shift() -> OpeningHours {
        let mut hours = OpeningHours::default();
        hours.weekly[6] = DaySchedule::parse(&["01:00-04:00", "20:00-24:00"]).expect("ok");
        hours
    }

    #[test]
    fn spring_forward_day_is_an_hour_short() {
        let hours = sunday_night_shift();
        // Sunday 29 March 2026: 02:00 CET becomes 03:00 CEST.
        let intervals = hours.instant_intervals(date("2026-03-29"));
        assert_eq!(intervals[0], (at("2026-03-29T00:00:00Z"), at("2026-03-29T02:00:00Z")));
        assert_eq!(intervals[1], (at("2026-03-29T18:00:00Z"), at("2026-03-29T22:00:00Z")));
        assert!(hours.is_open(at("2026-03-29T01:59:59Z"))); // 03:59:59 CEST
        assert!(!hours.is_open(at("2026-03-29T02:00:00Z"))); // 04:00 CEST
        let s = hours.status(at("2026-03-28T23:00:00Z"));
        assert!(!s.open);
        assert_eq!(s.next_opening, Some(at("2026-03-29T01:00:00+01:00")));
        assert_eq!(s.next_closing, Some(at("2026-03-29T04:00:00+02:00")));
    }

    #[test]
    fn an_opening_inside_the_spring_gap_opens_when_the_clock_jumps() {
        let mut hours = OpeningHours::default();
        hours.weekly[6] = DaySchedule::parse(&["02:30-05:00"]).expect("ok");
        let s = hours.status(at("2026-03-29T00:00:00Z"));
        assert_eq!(s.next_opening, Some(at("2026-03-29T03:00:00+02:00")));
        assert_eq!(s.next_closing, Some(at("2026-03-29T05:00:00+02:00")));
    }

    #[test]
    fn fall_back_day_is_an_hour_long() {
        let hours = sunday_night_shift();
        // Sunday 25 October 2026: 03:00 CEST becomes 02:00 CET.
        let intervals = hours.instant_intervals(date("2026-10-25"));
        assert_eq!(intervals[0], (at("2026-10-24T23:00:00Z"), at("2026-10-25T03:00:00Z")));
        // 02:30 happens twice; open at both.
        assert!(hours.is_open(at("2026-10-25T02:30:00+02:00")));
        assert!(hours.is_open(at("2026-10-25T02:30:00+01:00")));
        assert!(!hours.is_open(at("2026-10-25T04:00:00+01:00")));
        // The evening interval ends at midnight CET.
        assert_eq!(intervals[1], (at("2026-10-25T19:00:00Z"), at("2026-10-25T23:00:00Z")));
    }

    #[test]
    fn an_interval_inside_the_repeated_hour_covers_both() {
        let mut hours = OpeningHours::default();
        hours.weekly[6] = DaySchedule::parse(&["02:15-02:45"]).expect("ok");
        let intervals = hours.instant_intervals(date("2026-10-25"));
        assert_eq!(intervals, [(at("2026-10-25T02:15:00+02:00"), at("2026-10-25T02:45:00+01:00"))]);
    }

    #[test]
    fn deviations_list_only_days_that_differ() {
        let hours = OpeningHours::default();
        let days = hours.deviations(date("2026-12-20"), 14);
        let listed: Vec<_> = days.iter().map(|d| (d.date.to_string(), d.reason.to_string())).collect();
        assert_eq!(
            listed,
            [
                ("2026-12-24".to_string(), "julafton".to_string()),
                ("2026-12-25".to_string(), "juldagen".to_string()),
                ("2026-12-31".to_string(), "nyårsafton".to_string()),
                ("2027-01-01".to_string(), "nyårsdagen".to_string()),
            ]
        );
        // 26 Dec (a Saturday) is annandag jul but closed anyway: not a deviation.
    }
}
