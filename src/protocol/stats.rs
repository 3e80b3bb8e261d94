//! JSON and CSV forms of the statistics report (`GET /api/v1/stats`).

use serde::Serialize;

use crate::domain::stats::{Report, Satisfaction, Summary, WAIT_BUCKETS};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SummaryView {
    pub count: usize,
    pub mean: Option<f64>,
    pub median: Option<f64>,
    pub p90: Option<f64>,
}

impl From<Summary> for SummaryView {
    fn from(s: Summary) -> Self {
        let round = |v: Option<f64>| v.map(|v| (v * 10.0).round() / 10.0);
        SummaryView { count: s.count, mean: round(s.mean), median: round(s.median), p90: round(s.p90) }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HourView {
    pub hour: usize,
    pub offered: usize,
    pub served: usize,
    pub abandoned: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BucketView {
    /// Upper bound in seconds; null for the open last bucket.
    pub le_seconds: Option<u64>,
    pub count: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ScoreView {
    pub score: u8,
    pub count: usize,
}

/// The citizens' answers (1–5) to "how satisfied are you?".
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SatisfactionView {
    pub count: usize,
    /// Rounded to two decimals; null without answers.
    pub mean: Option<f64>,
    /// One entry per score, 1 to 5.
    pub distribution: Vec<ScoreView>,
    /// Answers / served chats, 0–1; null when none was served.
    pub response_rate: Option<f64>,
}

/// An advisor's share of the answers.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AdvisorSatisfactionView {
    pub count: usize,
    pub mean: Option<f64>,
}

fn mean_of(s: &Satisfaction) -> Option<f64> {
    s.mean().map(|m| (m * 100.0).round() / 100.0)
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AdvisorStatsView {
    pub display_name: String,
    pub served: usize,
    pub handle_seconds: SummaryView,
    pub first_response_seconds: SummaryView,
    pub satisfaction: AdvisorSatisfactionView,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RefusedView {
    pub closed: usize,
    pub last_admission_passed: usize,
    pub wait_beyond_closing: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatsView {
    pub from: String,
    pub to: String,
    pub opening_hours_only: bool,
    pub offered: usize,
    pub served: usize,
    pub abandoned: usize,
    pub abandon_rate: Option<f64>,
    pub refused_closed: usize,
    pub refused: RefusedView,
    pub wait_seconds: SummaryView,
    pub time_to_abandon_seconds: SummaryView,
    pub first_response_seconds: SummaryView,
    pub handle_seconds: SummaryView,
    pub per_hour: Vec<HourView>,
    pub wait_histogram: Vec<BucketView>,
    pub per_advisor: Vec<AdvisorStatsView>,
    pub satisfaction: SatisfactionView,
}

impl From<&Report> for StatsView {
    fn from(r: &Report) -> Self {
        let refused = |k: &str| r.refused.get(k).copied().unwrap_or(0);
        StatsView {
            from: r.from.to_string(),
            to: r.to.to_string(),
            opening_hours_only: r.opening_hours_only,
            offered: r.offered,
            served: r.served,
            abandoned: r.abandoned,
            abandon_rate: r.abandon_rate.map(|v| (v * 1000.0).round() / 1000.0),
            refused_closed: refused("closed"),
            refused: RefusedView {
                closed: refused("closed"),
                last_admission_passed: refused("last_admission_passed"),
                wait_beyond_closing: refused("wait_beyond_closing"),
            },
            wait_seconds: r.wait.into(),
            time_to_abandon_seconds: r.time_to_abandon.into(),
            first_response_seconds: r.first_response.into(),
            handle_seconds: r.handle.into(),
            per_hour: r
                .per_hour
                .iter()
                .enumerate()
                .map(|(hour, h)| HourView { hour, offered: h.offered, served: h.served, abandoned: h.abandoned })
                .collect(),
            wait_histogram: r
                .wait_histogram
                .iter()
                .enumerate()
                .map(|(i, count)| BucketView { le_seconds: WAIT_BUCKETS.get(i).copied(), count: *count })
                .collect(),
            per_advisor: r
                .per_advisor
                .iter()
                .map(|a| AdvisorStatsView {
                    display_name: a.display_name.clone(),
                    served: a.served,
                    handle_seconds: a.handle.into(),
                    first_response_seconds: a.first_response.into(),
                    satisfaction: AdvisorSatisfactionView {
                        count: a.satisfaction.count(),
                        mean: mean_of(&a.satisfaction),
                    },
                })
                .collect(),
            satisfaction: SatisfactionView {
                count: r.satisfaction.count(),
                mean: mean_of(&r.satisfaction),
                distribution: (1..=5u8)
                    .zip(r.satisfaction.distribution)
                    .map(|(score, count)| ScoreView { score, count })
                    .collect(),
                response_rate: r.satisfaction_response_rate.map(|v| (v * 1000.0).round() / 1000.0),
            },
        }
    }
}

/// The same report as CSV in long form: `section,item,metric,value`.
pub fn to_csv(v: &StatsView) -> String {
    let mut out = String::from("section,item,metric,value\n");
    let mut row = |section: &str, item: &str, metric: &str, value: String| {
        out.push_str(&format!("{},{},{},{}\n", csv(section), csv(item), csv(metric), csv(&value)));
    };
    let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    row("summary", "", "offered", v.offered.to_string());
    row("summary", "", "served", v.served.to_string());
    row("summary", "", "abandoned", v.abandoned.to_string());
    row("summary", "", "abandon_rate", opt(v.abandon_rate));
    row("summary", "", "refused_closed", v.refused.closed.to_string());
    row("summary", "", "refused_last_admission_passed", v.refused.last_admission_passed.to_string());
    row("summary", "", "refused_wait_beyond_closing", v.refused.wait_beyond_closing.to_string());
    for (name, s) in [
        ("wait_seconds", &v.wait_seconds),
        ("time_to_abandon_seconds", &v.time_to_abandon_seconds),
        ("first_response_seconds", &v.first_response_seconds),
        ("handle_seconds", &v.handle_seconds),
    ] {
        row("summary", "", &format!("{name}_mean"), opt(s.mean));
        row("summary", "", &format!("{name}_median"), opt(s.median));
        row("summary", "", &format!("{name}_p90"), opt(s.p90));
    }
    row("summary", "", "satisfaction_count", v.satisfaction.count.to_string());
    row("summary", "", "satisfaction_mean", opt(v.satisfaction.mean));
    row("summary", "", "satisfaction_response_rate", opt(v.satisfaction.response_rate));
    for s in &v.satisfaction.distribution {
        row("satisfaction", &s.score.to_string(), "count", s.count.to_string());
    }
    for h in &v.per_hour {
        let hour = format!("{:02}", h.hour);
        row("hour", &hour, "offered", h.offered.to_string());
        row("hour", &hour, "served", h.served.to_string());
        row("hour", &hour, "abandoned", h.abandoned.to_string());
    }
    for b in &v.wait_histogram {
        let bucket = b.le_seconds.map(|s| format!("<={s}")).unwrap_or_else(|| "longer".into());
        row("wait_histogram", &bucket, "count", b.count.to_string());
    }
    for a in &v.per_advisor {
        row("advisor", &a.display_name, "served", a.served.to_string());
        row("advisor", &a.display_name, "handle_seconds_mean", opt(a.handle_seconds.mean));
        row("advisor", &a.display_name, "first_response_seconds_mean", opt(a.first_response_seconds.mean));
        row("advisor", &a.display_name, "satisfaction_count", a.satisfaction.count.to_string());
        row("advisor", &a.display_name, "satisfaction_mean", opt(a.satisfaction.mean));
    }
    out
}

/// Quotes a CSV field when needed, and defuses spreadsheet formulas.
pub fn csv(field: &str) -> String {
    let field = if field.starts_with(['=', '+', '-', '@']) && field.parse::<f64>().is_err() {
        format!("'{field}")
    } else {
        field.to_owned()
    };
    if field.contains([',', '"', '\n', '\r']) { format!("\"{}\"", field.replace('"', "\"\"")) } else { field }
}
