//! The Swedish calendar: public holidays per Lag (1989:253) om allmänna helgdagar,
//! plus the three eves that working life treats as holidays.
//!
//! Pure date arithmetic on [`NaiveDate`]: no time zone, no clock, no I/O.
//!
//! Ordinary Sundays are also "allmän helgdag" in the law, but a contact centre's
//! Sundays are governed by its weekly schedule, so only the *named* days are
//! listed here. The named days that always fall on a Sunday (påskdagen,
//! pingstdagen) or Saturday (midsommardagen, alla helgons dag) still count, so an
//! unusual schedule that opens at weekends is closed on them.
//!
//! We write this rather than use the `holidays_se` crate: that crate builds on
//! chrono's deprecated `Date<Tz>` API and an old `chrono-tz`, mixes the law's
//! holidays with the de facto eves without telling them apart, and panics on
//! out-of-range years. The rules fit in a page and are tested year by year below.

use chrono::{Datelike, Days, NaiveDate, Weekday};

/// A day on which the contact centre is closed by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Holiday {
    Nyarsdagen,
    TrettondedagJul,
    Langfredagen,
    Paskdagen,
    AnnandagPask,
    ForstaMaj,
    KristiHimmelsfardsdag,
    Pingstdagen,
    Nationaldagen,
    Midsommardagen,
    AllaHelgonsDag,
    Juldagen,
    AnnandagJul,
    /// Not a holiday by law; closed in Swedish working life.
    Midsommarafton,
    /// Not a holiday by law; closed in Swedish working life.
    Julafton,
    /// Not a holiday by law; closed in Swedish working life.
    Nyarsafton,
}

impl Holiday {
    /// Every named day, in calendar order within a year (Easter-based days aside).
    pub const ALL: [Holiday; 16] = [
        Holiday::Nyarsdagen,
        Holiday::TrettondedagJul,
        Holiday::Langfredagen,
        Holiday::Paskdagen,
        Holiday::AnnandagPask,
        Holiday::ForstaMaj,
        Holiday::KristiHimmelsfardsdag,
        Holiday::Pingstdagen,
        Holiday::Nationaldagen,
        Holiday::Midsommarafton,
        Holiday::Midsommardagen,
        Holiday::AllaHelgonsDag,
        Holiday::Julafton,
        Holiday::Juldagen,
        Holiday::AnnandagJul,
        Holiday::Nyarsafton,
    ];

    /// The Swedish name in lower case, as shown to citizens and in `kommunchat hours`.
    pub fn name(self) -> &'static str {
        match self {
            Holiday::Nyarsdagen => "nyårsdagen",
            Holiday::TrettondedagJul => "trettondedag jul",
            Holiday::Langfredagen => "långfredagen",
            Holiday::Paskdagen => "påskdagen",
            Holiday::AnnandagPask => "annandag påsk",
            Holiday::ForstaMaj => "första maj",
            Holiday::KristiHimmelsfardsdag => "kristi himmelsfärdsdag",
            Holiday::Pingstdagen => "pingstdagen",
            Holiday::Nationaldagen => "nationaldagen",
            Holiday::Midsommardagen => "midsommardagen",
            Holiday::AllaHelgonsDag => "alla helgons dag",
            Holiday::Juldagen => "juldagen",
            Holiday::AnnandagJul => "annandag jul",
            Holiday::Midsommarafton => "midsommarafton",
            Holiday::Julafton => "julafton",
            Holiday::Nyarsafton => "nyårsafton",
        }
    }

    /// True for the days the law names; false for the three de facto eves.
    pub fn is_public_holiday(self) -> bool {
        !matches!(self, Holiday::Midsommarafton | Holiday::Julafton | Holiday::Nyarsafton)
    }

    /// The date of this day in `year`, or `None` outside chrono's date range.
    pub fn date_in(self, year: i32) -> Option<NaiveDate> {
        let ymd = |m, d| NaiveDate::from_ymd_opt(year, m, d);
        let from_easter = |offset: i64| {
            let easter = easter_sunday(year)?;
            if offset >= 0 {
                easter.checked_add_days(Days::new(offset.unsigned_abs()))
            } else {
                easter.checked_sub_days(Days::new(offset.unsigned_abs()))
            }
        };
        match self {
            Holiday::Nyarsdagen => ymd(1, 1),
            Holiday::TrettondedagJul => ymd(1, 6),
            Holiday::Langfredagen => from_easter(-2),
            Holiday::Paskdagen => from_easter(0),
            Holiday::AnnandagPask => from_easter(1),
            Holiday::KristiHimmelsfardsdag => from_easter(39),
            Holiday::Pingstdagen => from_easter(49),
            Holiday::ForstaMaj => ymd(5, 1),
            Holiday::Nationaldagen => ymd(6, 6),
            // The Saturday in 20–26 June; the eve is the Friday before it.
            Holiday::Midsommardagen => first_weekday_on_or_after(ymd(6, 20)?, Weekday::Sat),
            Holiday::Midsommarafton => first_weekday_on_or_after(ymd(6, 19)?, Weekday::Fri),
            // The Saturday in 31 October – 6 November.
            Holiday::AllaHelgonsDag => first_weekday_on_or_after(ymd(10, 31)?, Weekday::Sat),
            Holiday::Julafton => ymd(12, 24),
            Holiday::Juldagen => ymd(12, 25),
            Holiday::AnnandagJul => ymd(12, 26),
            Holiday::Nyarsafton => ymd(12, 31),
        }
    }
}

/// Easter Sunday in the Gregorian calendar (the anonymous Gregorian computus,
/// as given by Meeus). Sweden has used the Gregorian Easter since 1753 (and the
/// computus since 1844), so years before that are answered by the same rule.
pub fn easter_sunday(year: i32) -> Option<NaiveDate> {
    let a = year.rem_euclid(19);
    let b = year.div_euclid(100);
    let c = year.rem_euclid(100);
    let d = b.div_euclid(4);
    let e = b.rem_euclid(4);
    let f = (b + 8).div_euclid(25);
    let g = (b - f + 1).div_euclid(3);
    let h = (19 * a + b - d - g + 15).rem_euclid(30);
    let i = c.div_euclid(4);
    let k = c.rem_euclid(4);
    let l = (32 + 2 * e + 2 * i - h - k).rem_euclid(7);
    let m = (a + 11 * h + 22 * l).div_euclid(451);
    let month = (h + l - 7 * m + 114).div_euclid(31);
    let day = (h + l - 7 * m + 114).rem_euclid(31) + 1;
    NaiveDate::from_ymd_opt(year, u32::try_from(month).ok()?, u32::try_from(day).ok()?)
}

fn first_weekday_on_or_after(date: NaiveDate, weekday: Weekday) -> Option<NaiveDate> {
    let ahead = (7 + weekday.num_days_from_monday() - date.weekday().num_days_from_monday()) % 7;
    date.checked_add_days(Days::new(u64::from(ahead)))
}

/// The named day that falls on `date`, if any.
pub fn holiday_on(date: NaiveDate) -> Option<Holiday> {
    Holiday::ALL.into_iter().find(|h| h.date_in(date.year()) == Some(date))
}

/// If `date` is itself no holiday and the next day is a public holiday by law,
/// that holiday ("dag före röd dag": trettondagsafton, skärtorsdagen,
/// valborgsmässoafton, …). The de facto eves do not make their own eve short:
/// 23 December and 30 December are ordinary days.
pub fn public_holiday_tomorrow(date: NaiveDate) -> Option<Holiday> {
    if holiday_on(date).is_some() {
        return None;
    }
    let tomorrow = date.succ_opt()?;
    holiday_on(tomorrow).filter(|h| h.is_public_holiday())
}

/// Every named day in `year`, sorted by date.
pub fn holidays_in(year: i32) -> Vec<(NaiveDate, Holiday)> {
    let mut days: Vec<_> = Holiday::ALL.into_iter().filter_map(|h| Some((h.date_in(year)?, h))).collect();
    days.sort_by_key(|(d, _)| *d);
    days
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> NaiveDate {
        s.parse().expect("test date")
    }

    #[test]
    fn easter_matches_published_dates() {
        // Western Easter Sundays from published tables, including the extremes
        // (22 March and 25 April) and century years where the Gregorian
        // corrections kick in.
        let table = [
            (1583, "1583-04-10"),
            (1700, "1700-04-11"),
            (1761, "1761-03-22"),
            (1800, "1800-04-13"),
            (1818, "1818-03-22"),
            (1886, "1886-04-25"),
            (1900, "1900-04-15"),
            (1943, "1943-04-25"),
            (1954, "1954-04-18"),
            (1981, "1981-04-19"),
            (2000, "2000-04-23"),
            (2008, "2008-03-23"),
            (2011, "2011-04-24"),
            (2019, "2019-04-21"),
            (2024, "2024-03-31"),
            (2025, "2025-04-20"),
            (2026, "2026-04-05"),
            (2027, "2027-03-28"),
            (2028, "2028-04-16"),
            (2029, "2029-04-01"),
            (2030, "2030-04-21"),
            (2038, "2038-04-25"),
            (2049, "2049-04-18"),
            (2100, "2100-03-28"),
            (2285, "2285-03-22"),
        ];
        for (year, expected) in table {
            assert_eq!(easter_sunday(year), Some(date(expected)), "Easter {year}");
        }
    }

    #[test]
    fn easter_is_always_a_sunday_between_22_march_and_25_april() {
        for year in 1583..=4099 {
            let easter = easter_sunday(year).expect("in range");
            assert_eq!(easter.weekday(), Weekday::Sun, "{year}");
            let (m, d) = (easter.month(), easter.day());
            assert!((m == 3 && d >= 22) || (m == 4 && d <= 25), "{year}: {easter}");
        }
    }

    #[test]
    fn every_holiday_of_2026() {
        let expected = [
            ("2026-01-01", Holiday::Nyarsdagen),
            ("2026-01-06", Holiday::TrettondedagJul),
            ("2026-04-03", Holiday::Langfredagen),
            ("2026-04-05", Holiday::Paskdagen),
            ("2026-04-06", Holiday::AnnandagPask),
            ("2026-05-01", Holiday::ForstaMaj),
            ("2026-05-14", Holiday::KristiHimmelsfardsdag),
            ("2026-05-24", Holiday::Pingstdagen),
            ("2026-06-06", Holiday::Nationaldagen),
            ("2026-06-19", Holiday::Midsommarafton),
            ("2026-06-20", Holiday::Midsommardagen),
            ("2026-10-31", Holiday::AllaHelgonsDag),
            ("2026-12-24", Holiday::Julafton),
            ("2026-12-25", Holiday::Juldagen),
            ("2026-12-26", Holiday::AnnandagJul),
            ("2026-12-31", Holiday::Nyarsafton),
        ];
        let got: Vec<_> = holidays_in(2026);
        let want: Vec<_> = expected.iter().map(|(d, h)| (date(d), *h)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn moving_holidays_across_years() {
        // (year, långfredagen, kristi himmelsfärd, pingstdagen, midsommarafton, alla helgons dag)
        let table = [
            (2019, "2019-04-19", "2019-05-30", "2019-06-09", "2019-06-21", "2019-11-02"),
            (2020, "2020-04-10", "2020-05-21", "2020-05-31", "2020-06-19", "2020-10-31"),
            (2021, "2021-04-02", "2021-05-13", "2021-05-23", "2021-06-25", "2021-11-06"),
            (2022, "2022-04-15", "2022-05-26", "2022-06-05", "2022-06-24", "2022-11-05"),
            (2023, "2023-04-07", "2023-05-18", "2023-05-28", "2023-06-23", "2023-11-04"),
            (2024, "2024-03-29", "2024-05-09", "2024-05-19", "2024-06-21", "2024-11-02"),
            (2025, "2025-04-18", "2025-05-29", "2025-06-08", "2025-06-20", "2025-11-01"),
            (2027, "2027-03-26", "2027-05-06", "2027-05-16", "2027-06-25", "2027-11-06"),
            (2028, "2028-04-14", "2028-05-25", "2028-06-04", "2028-06-23", "2028-11-04"),
            (2038, "2038-04-23", "2038-06-03", "2038-06-13", "2038-06-25", "2038-11-06"),
        ];
        for (year, good_friday, ascension, pentecost, midsummer_eve, all_saints) in table {
            assert_eq!(Holiday::Langfredagen.date_in(year), Some(date(good_friday)));
            assert_eq!(Holiday::KristiHimmelsfardsdag.date_in(year), Some(date(ascension)));
            assert_eq!(Holiday::Pingstdagen.date_in(year), Some(date(pentecost)));
            assert_eq!(Holiday::Midsommarafton.date_in(year), Some(date(midsummer_eve)));
            assert_eq!(Holiday::AllaHelgonsDag.date_in(year), Some(date(all_saints)));
        }
    }

    #[test]
    fn midsummer_and_all_saints_stay_in_their_windows() {
        for year in 1900..=2200 {
            let midsummer = Holiday::Midsommardagen.date_in(year).expect("date");
            assert_eq!(midsummer.weekday(), Weekday::Sat);
            assert_eq!(midsummer.month(), 6);
            assert!((20..=26).contains(&midsummer.day()), "{midsummer}");
            let eve = Holiday::Midsommarafton.date_in(year).expect("date");
            assert_eq!(eve.succ_opt(), Some(midsummer));

            let all_saints = Holiday::AllaHelgonsDag.date_in(year).expect("date");
            assert_eq!(all_saints.weekday(), Weekday::Sat);
            let window_start = NaiveDate::from_ymd_opt(year, 10, 31).expect("date");
            let days_in = (all_saints - window_start).num_days();
            assert!((0..=6).contains(&days_in), "{all_saints}");
        }
    }

    #[test]
    fn window_boundaries_exactly() {
        // 20 June a Saturday → midsommardagen is the 20th; 26 June a Saturday → the 26th.
        assert_eq!(Holiday::Midsommardagen.date_in(2026), Some(date("2026-06-20")));
        assert_eq!(Holiday::Midsommardagen.date_in(2021), Some(date("2021-06-26")));
        assert_eq!(Holiday::Midsommarafton.date_in(2021), Some(date("2021-06-25")));
        // 31 October a Saturday → alla helgons dag is then; 6 November a Saturday → the 6th.
        assert_eq!(Holiday::AllaHelgonsDag.date_in(2026), Some(date("2026-10-31")));
        assert_eq!(Holiday::AllaHelgonsDag.date_in(2027), Some(date("2027-11-06")));
    }

    #[test]
    fn only_the_three_eves_are_not_holidays_by_law() {
        let not_by_law: Vec<_> = Holiday::ALL.into_iter().filter(|h| !h.is_public_holiday()).collect();
        assert_eq!(not_by_law, [Holiday::Midsommarafton, Holiday::Julafton, Holiday::Nyarsafton]);
    }

    #[test]
    fn day_before_a_public_holiday() {
        let cases = [
            ("2026-01-05", Some(Holiday::TrettondedagJul)), // trettondagsafton
            ("2026-04-02", Some(Holiday::Langfredagen)),    // skärtorsdagen
            ("2026-04-30", Some(Holiday::ForstaMaj)),       // valborgsmässoafton
            ("2026-05-13", Some(Holiday::KristiHimmelsfardsdag)),
            ("2026-06-05", Some(Holiday::Nationaldagen)),
            ("2026-10-30", Some(Holiday::AllaHelgonsDag)),
            ("2026-12-23", None), // the eve of julafton is an ordinary day
            ("2026-12-24", None), // julafton is itself closed
            ("2026-12-30", None),
            ("2026-12-31", None),                     // nyårsafton is itself closed
            ("2026-06-18", None),                     // before midsommarafton
            ("2026-06-19", None),                     // midsommarafton is itself closed
            ("2026-04-04", Some(Holiday::Paskdagen)), // påskafton (a Saturday)
            ("2026-03-11", None),
        ];
        for (day, expected) in cases {
            assert_eq!(public_holiday_tomorrow(date(day)), expected, "{day}");
        }
    }

    #[test]
    fn edge_years_do_not_panic() {
        for year in [i32::MIN, -1, 0, 1, 262_142, 262_143, i32::MAX] {
            for h in Holiday::ALL {
                let _ = h.date_in(year);
            }
        }
        // The last representable date is a nyårsafton; there is no tomorrow to look at.
        assert_eq!(holiday_on(NaiveDate::MAX), Some(Holiday::Nyarsafton));
        assert_eq!(public_holiday_tomorrow(NaiveDate::MAX), None);
        assert_eq!(holiday_on(NaiveDate::MIN), Some(Holiday::Nyarsdagen));
    }
}
