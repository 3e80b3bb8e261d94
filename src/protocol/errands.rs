//! JSON, CSV and text forms of errands: the registry, exports and release copies.

use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use serde::Serialize;

use crate::domain::hours::{TIME_ZONE, local_date};
use crate::domain::personnummer;
use crate::domain::release::{self, MaskOptions};
use crate::protocol::stats::csv;
use crate::storage::ErrandRecord;

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// One line of a transcript.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LineView {
    pub seq: i64,
    pub sender: String,
    pub sender_name: Option<String>,
    pub text: String,
    pub sent_at: String,
    /// The line holds a personnummer or samordningsnummer.
    pub personnummer: bool,
}

/// An errand: the registry entry, and with `transcript` the whole record.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ErrandView {
    pub number: String,
    /// Local date the citizen made contact.
    pub date: String,
    pub queued_at: String,
    pub assigned_at: Option<String>,
    pub ended_at: Option<String>,
    pub advisor_name: Option<String>,
    pub citizen_name: Option<String>,
    pub topic: Option<String>,
    pub category: Option<String>,
    pub summary: Option<String>,
    pub end_reason: Option<String>,
    /// Holds a personnummer: needs a secrecy review before release.
    pub secrecy_review: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transcript: Option<Vec<LineView>>,
}

impl ErrandView {
    pub fn new(e: &ErrandRecord, with_transcript: bool) -> ErrandView {
        ErrandView {
            number: e.errand_number.clone().unwrap_or_default(),
            date: local_date(e.queued_at).to_string(),
            queued_at: rfc3339(e.queued_at),
            assigned_at: e.first_assigned_at.map(rfc3339),
            ended_at: e.ended_at.map(rfc3339),
            advisor_name: e.advisor_name.clone(),
            citizen_name: e.citizen_name.clone(),
            topic: e.topic.clone(),
            category: e.category.clone(),
            summary: e.summary.clone(),
            end_reason: e.end_reason.clone(),
            secrecy_review: e.secrecy_flag,
            transcript: with_transcript.then(|| {
                e.transcript
                    .iter()
                    .map(|l| LineView {
                        seq: l.seq,
                        sender: l.sender.clone(),
                        sender_name: l.sender_name.clone(),
                        text: l.body.clone(),
                        sent_at: rfc3339(l.sent_at),
                        personnummer: !personnummer::find(&l.body, local_date(l.sent_at).year()).is_empty(),
                    })
                    .collect()
            }),
        }
    }

    /// The copy for release: personnummer (and optionally e-mail addresses and
    /// phone numbers) masked in the transcript, summary and topic; the
    /// citizen's name left out.
    pub fn release(e: &ErrandRecord, options: MaskOptions) -> ErrandView {
        let year = local_date(e.queued_at).year();
        let mask = |t: &str| release::mask(t, year, options);
        let mut view = ErrandView::new(e, true);
        view.citizen_name = None;
        view.topic = view.topic.as_deref().map(mask);
        view.summary = view.summary.as_deref().map(mask);
        if let Some(lines) = &mut view.transcript {
            for l in lines.iter_mut() {
                l.text = mask(&l.text);
                if l.sender == "citizen" {
                    l.sender_name = None;
                }
                l.personnummer = false;
            }
        }
        view.secrecy_review = false;
        view
    }
}

/// `GET /api/v1/errands`.
#[derive(Debug, Clone, Serialize)]
pub struct ErrandListView {
    pub errands: Vec<ErrandView>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

/// The header of the CSV export: one row per message.
pub const CSV_HEADER: &str =
    "errand_number,date,queued_at,ended_at,category,advisor_name,summary,secrecy_review,seq,sender,sent_at,text\n";

/// The CSV rows of one errand (one per message; one row with empty message
/// columns if it has none).
pub fn csv_rows(v: &ErrandView) -> String {
    let head = [
        csv(&v.number),
        csv(&v.date),
        csv(&v.queued_at),
        csv(v.ended_at.as_deref().unwrap_or("")),
        csv(v.category.as_deref().unwrap_or("")),
        csv(v.advisor_name.as_deref().unwrap_or("")),
        csv(v.summary.as_deref().unwrap_or("")),
        v.secrecy_review.to_string(),
    ]
    .join(",");
    let lines = v.transcript.as_deref().unwrap_or(&[]);
    if lines.is_empty() {
        return format!("{head},,,,\n");
    }
    lines
        .iter()
        .map(|l| format!("{head},{},{},{},{}\n", l.seq, csv(&l.sender), csv(&l.sent_at), csv(&l.text)))
        .collect()
}

/// A printable release copy.
pub fn release_text(v: &ErrandView, options: MaskOptions) -> String {
    let local = |t: &str| {
        DateTime::parse_from_rfc3339(t)
            .map(|t| t.with_timezone(&TIME_ZONE).format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_else(|_| t.to_owned())
    };
    let mut masked = vec!["personnummer och samordningsnummer"];
    if options.emails {
        masked.push("e-postadresser");
    }
    if options.phones {
        masked.push("telefonnummer");
    }
    let mut out = format!("Kopia av allmän handling — ärende {}\n", v.number);
    out.push_str(&format!("Maskerat efter sekretessprövning: {}.\n\n", masked.join(", ")));
    out.push_str(&format!("Inkom: {}\n", local(&v.queued_at)));
    if let Some(t) = &v.ended_at {
        out.push_str(&format!("Avslutat: {}\n", local(t)));
    }
    if let Some(a) = &v.advisor_name {
        out.push_str(&format!("Handläggare: {a}\n"));
    }
    if let Some(c) = &v.category {
        out.push_str(&format!("Kategori: {c}\n"));
    }
    if let Some(s) = &v.summary {
        out.push_str(&format!("Sammanfattning: {s}\n"));
    }
    out.push('\n');
    for l in v.transcript.as_deref().unwrap_or(&[]) {
        let who = match (l.sender.as_str(), &l.sender_name) {
            ("advisor", Some(name)) => name.clone(),
            ("advisor", None) => "Handläggare".into(),
            ("system", _) => "System".into(),
            _ => "Invånare".into(),
        };
        let time = DateTime::parse_from_rfc3339(&l.sent_at)
            .map(|t| t.with_timezone(&TIME_ZONE).format("%H:%M").to_string())
            .unwrap_or_default();
        out.push_str(&format!("[{time}] {who}: {}\n", l.text));
    }
    out
}
