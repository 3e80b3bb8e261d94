//! Configuration: one TOML file, every key optional, environment overrides.
//!
//! Loading happens in three steps so every error can name where it came from:
//! parse the file into a TOML table (syntax errors carry line and column),
//! lay `KOMMUNCHAT_…` environment overrides over it, then decode the table
//! into typed sections (`serde_path_to_error` names the key) and convert those
//! into domain values (impossible intervals name their key too). Nothing is
//! started until all three have succeeded.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use chrono::{NaiveDate, TimeDelta};
use serde::Deserialize;

use crate::domain::admission::AdmissionPolicy;
use crate::domain::hours::{DateException, DaySchedule, OpeningHours};

/// Prefix of environment overrides: `KOMMUNCHAT_DATABASE_URL` sets
/// `database_url`, `KOMMUNCHAT_CHAT__MAX_CHATS_PER_ADVISOR` sets
/// `chat.max_chats_per_advisor` (a double underscore separates sections).
pub const ENV_PREFIX: &str = "KOMMUNCHAT_";
/// Environment variables with the prefix that are not overrides.
const ENV_NOT_OVERRIDES: [&str; 2] = ["KOMMUNCHAT_CONFIG", "KOMMUNCHAT_LOG"];
/// The file read when no path is given, if it exists.
pub const DEFAULT_FILE: &str = "kommunchat.toml";
/// Upper bound of `chat.max_conversation_bytes`.
pub const MAX_CONVERSATION_BYTES: usize = 64 * 1024 * 1024;

/// A configuration problem: where, which key, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {key}: {message}")]
pub struct ConfigError {
    /// The file path, or `environment variable KOMMUNCHAT_…`.
    pub origin: String,
    /// The key, dotted (`opening_hours.monday[0]`), or `-` for the whole file.
    pub key: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Plain,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `kommunchat=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Plain, level: "info".into() }
    }
}

/// `[opening_hours]` as written in the file; see the example file for meaning.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HoursConfig {
    pub monday: Vec<String>,
    pub tuesday: Vec<String>,
    pub wednesday: Vec<String>,
    pub thursday: Vec<String>,
    pub friday: Vec<String>,
    pub saturday: Vec<String>,
    pub sunday: Vec<String>,
    pub public_holidays: Vec<String>,
    pub midsommarafton: Vec<String>,
    pub julafton: Vec<String>,
    pub nyarsafton: Vec<String>,
    /// Limit on the working day before a public holiday; empty: no shortening.
    pub day_before_holiday: Vec<String>,
    pub exceptions: Vec<ExceptionConfig>,
}

impl Default for HoursConfig {
    fn default() -> Self {
        let day = |s: &str| vec![s.to_owned()];
        HoursConfig {
            monday: day("08:00-17:00"),
            tuesday: day("08:00-17:00"),
            wednesday: day("08:00-17:00"),
            thursday: day("08:00-18:00"),
            friday: day("08:00-17:00"),
            saturday: vec![],
            sunday: vec![],
            public_holidays: vec![],
            midsommarafton: vec![],
            julafton: vec![],
            nyarsafton: vec![],
            day_before_holiday: day("08:00-15:00"),
            exceptions: vec![],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExceptionConfig {
    /// `YYYY-MM-DD` (a TOML local date or a string).
    pub date: DateValue,
    /// Empty or absent: closed all day.
    #[serde(default)]
    pub intervals: Vec<String>,
    /// Shown to citizens, e.g. "Personaldag".
    #[serde(default)]
    pub label: Option<String>,
}

/// A date written either as a bare TOML date (`2026-12-23`) or a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateValue(pub NaiveDate);

impl<'de> Deserialize<'de> for DateValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Toml(toml::value::Datetime),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Toml(dt) => dt.to_string(),
            Raw::Text(s) => s,
        };
        NaiveDate::parse_from_str(&text, "%Y-%m-%d")
            .map(DateValue)
            .map_err(|_| serde::de::Error::custom(format!("expected a date YYYY-MM-DD, got {text:?}")))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionConfig {
    /// Stop admitting new chats this many minutes before closing.
    pub last_admission_minutes: u32,
    /// Refuse new chats whose estimated wait ends after closing.
    pub refuse_if_not_served_before_closing: bool,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig { last_admission_minutes: 0, refuse_if_not_served_before_closing: true }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChatConfig {
    pub max_chats_per_advisor: u32,
    /// How long a disconnected advisor's chats wait for them before going back to the queue.
    pub advisor_grace_seconds: u64,
    /// How long a disconnected citizen may resume their chat.
    pub citizen_grace_seconds: u64,
    /// Silence in a chat before both sides are warned.
    pub inactivity_warning_seconds: u64,
    /// Further silence after the warning before the chat is ended.
    pub inactivity_end_seconds: u64,
    /// Largest chat message, in bytes of UTF-8.
    pub max_message_bytes: usize,
    /// Most text one conversation holds, both sides together, in bytes of
    /// UTF-8. It bounds the server's memory per chat and the advisor's
    /// `welcome` frame (which carries every chat held, whole).
    pub max_conversation_bytes: usize,
    /// Most text a citizen may write while still in the queue: a waiting
    /// chat is not read by anyone yet, and thousands may wait at once.
    pub max_queued_bytes: usize,
    /// How often each waiting citizen is sent its queue position (at most).
    pub queue_update_interval_ms: u64,
    /// Assumed handling time before there is any history, for wait estimates.
    pub assumed_handle_seconds: u64,
    /// Categories an advisor picks from when ending a chat; empty: free text.
    pub categories: Vec<String>,
    /// Ready-made replies offered in the advisor console.
    pub canned_responses: Vec<String>,
    /// Ask the citizen, when a chat with an advisor ends, how satisfied they
    /// are (1–5); the scores appear in the statistics.
    pub ask_satisfaction: bool,
    /// How long after a chat ended the citizen's page may still rate it (a
    /// reload or a dropped connection asks again with the chat's token, and a
    /// `resume` answers `ended` until then). At least the citizen's grace period.
    pub rating_window_minutes: u64,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            max_chats_per_advisor: 3,
            advisor_grace_seconds: 60,
            citizen_grace_seconds: 60,
            inactivity_warning_seconds: 600,
            inactivity_end_seconds: 120,
            max_message_bytes: 16 * 1024,
            max_conversation_bytes: 1024 * 1024,
            max_queued_bytes: 64 * 1024,
            queue_update_interval_ms: 1000,
            assumed_handle_seconds: 300,
            categories: [
                "Allmän fråga",
                "Bygga och bo",
                "Förskola och skola",
                "Omsorg och stöd",
                "Trafik och gator",
                "Vatten och avfall",
                "Övrigt",
            ]
            .map(String::from)
            .to_vec(),
            canned_responses: [
                "Hej! Jag heter {namn} och är kommunvägledare. Vad kan jag hjälpa dig med?",
                "Ett ögonblick, jag tittar på det.",
                "Du når oss också på telefon 042-10 50 00.",
                "Tack för att du hörde av dig. Ha en fin dag!",
            ]
            .map(String::from)
            .to_vec(),
            ask_satisfaction: true,
            rating_window_minutes: 30,
        }
    }
}

/// What citizens are shown about the organisation and the alternatives to chat.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContactConfig {
    pub organisation: String,
    pub phone: String,
    pub visiting_address: String,
    pub privacy_policy_url: String,
    pub public_record_notice: String,
}

impl Default for ContactConfig {
    fn default() -> Self {
        ContactConfig {
            organisation: "Helsingborgs stad".into(),
            phone: "042-10 50 00".into(),
            visiting_address: "Helsingborg Kontaktcenter, Stortorget 17".into(),
            privacy_policy_url: "https://helsingborg.se/toppmeny/om-webbplatsen/sa-hanterar-vi-dina-personuppgifter/"
                .into(),
            public_record_notice: "Ditt ärende sparas och blir en allmän handling som kan komma att läsas av andra."
                .into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSynchronous {
    /// Survives power loss: every group commit is fsynced.
    #[default]
    Full,
    /// Survives a crash of the process (kill -9), not of the machine.
    Normal,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub sqlite_synchronous: SqliteSynchronous,
    /// Most writes in one group commit.
    pub max_batch: usize,
    /// SQLite only: acknowledge chat messages once they are in the message
    /// log beside the database file, and bring the database up to date
    /// behind it in larger transactions (see `docs/operations.md`).
    pub message_log: bool,
    /// How long logged messages gather before the database takes them in one
    /// transaction; the database lags the acknowledgements by about this.
    pub message_log_apply_ms: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            sqlite_synchronous: SqliteSynchronous::Full,
            max_batch: 1024,
            message_log: true,
            message_log_apply_ms: 200,
        }
    }
}

/// Retention (gallring): how long errands are kept after they end.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Days after a conversation ends before it is deleted, for categories
    /// not listed below. 0: keep until a retention decision is configured.
    pub default_days: u32,
    /// How often the retention job runs.
    pub interval_minutes: u32,
    /// Days per category (keys are categories from `chat.categories`).
    pub categories: BTreeMap<String, u32>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig { default_days: 0, interval_minutes: 60, categories: BTreeMap::new() }
    }
}

/// Origins, limits and throttles that keep hostile clients out.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Origins of the municipal sites that embed the widget, e.g.
    /// `https://helsingborg.se`. The widget's chat frame may be framed only by
    /// these, and the citizen socket accepts only these and the server's own origin.
    pub widget_origins: Vec<String>,
    /// The server's public origin when it runs behind a reverse proxy, e.g.
    /// `https://chatt.kommun.se`. Empty: the origin is taken from the Host header.
    /// An `https` origin also makes session cookies `Secure`.
    pub public_origin: String,
    /// Most simultaneous connections of any kind; above it new connections
    /// get `503`. Keep it below the process's open-file limit.
    pub max_connections: usize,
    /// Most citizen connections from one client address (offices share addresses).
    pub max_citizen_connections_per_address: usize,
    /// Chats that may be started from one client address in an hour, all of
    /// them at once if need be (a token bucket that refills at this rate).
    /// Each start is stored (an offered chat, perhaps abandoned): this keeps
    /// one address from filling the statistics and the database.
    pub chat_starts_per_address_per_hour: u32,
    /// Frames a connection may send per second on average …
    pub messages_per_second: u32,
    /// … and in a burst.
    pub message_burst: u32,
    /// Seconds a client has to send its request headers (and TLS handshake).
    pub handshake_timeout_seconds: u64,
    /// Seconds a WebSocket client may keep the server waiting to write to it
    /// (its TCP window shut: it has stopped reading) before it is dropped; a
    /// large batch of frames gets its size at 64 KiB/s on top.
    pub write_timeout_seconds: u64,
    /// How often open advisor and admin sockets re-check their session (so a
    /// password change from the command line also closes them).
    pub session_check_seconds: u64,
    /// Sign-in failures allowed per account and per address before delays start.
    pub login_free_attempts: u32,
    /// Addresses of reverse proxies in front of kommunchat (e.g. `127.0.0.1`
    /// for nginx on the same host). A request from one of them counts as
    /// coming from the client its `X-Forwarded-For` names (the nearest
    /// address in it that is not itself a trusted proxy): the per-address
    /// limits then apply per citizen, not to the proxy. Empty: the header is
    /// ignored (any client can write it).
    pub trusted_proxies: Vec<IpAddr>,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            widget_origins: Vec::new(),
            public_origin: String::new(),
            max_connections: 19_000,
            max_citizen_connections_per_address: 50,
            chat_starts_per_address_per_hour: 30,
            messages_per_second: 5,
            message_burst: 20,
            handshake_timeout_seconds: 10,
            write_timeout_seconds: 30,
            session_check_seconds: 30,
            login_free_attempts: 5,
            trusted_proxies: Vec::new(),
        }
    }
}

/// Built-in TLS (rustls). Both paths set: HTTPS and WSS on `listen`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_path: String,
    /// PEM private key.
    pub key_path: String,
}

/// The whole configuration file as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    pub listen: SocketAddr,
    pub database_url: String,
    pub log: LogConfig,
    pub opening_hours: HoursConfig,
    pub admission: AdmissionConfig,
    pub chat: ChatConfig,
    pub contact: ContactConfig,
    pub storage: StorageConfig,
    pub security: SecurityConfig,
    pub retention: RetentionConfig,
    pub tls: TlsConfig,
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: "sqlite://data/kommunchat.db".into(),
            log: LogConfig::default(),
            opening_hours: HoursConfig::default(),
            admission: AdmissionConfig::default(),
            chat: ChatConfig::default(),
            contact: ContactConfig::default(),
            storage: StorageConfig::default(),
            security: SecurityConfig::default(),
            retention: RetentionConfig::default(),
            tls: TlsConfig::default(),
        }
    }
}

/// The validated configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    pub log: LogConfig,
    pub hours: OpeningHours,
    pub admission: AdmissionPolicy,
    pub chat: ChatConfig,
    pub contact: ContactConfig,
    pub storage: StorageConfig,
    pub security: SecurityConfig,
    pub retention: RetentionConfig,
    pub tls: TlsConfig,
    /// Where it came from, for the start-up log.
    pub source: String,
}

impl Default for Config {
    fn default() -> Self {
        FileConfig::default().validate("defaults").unwrap_or_else(|e| unreachable!("the defaults are valid: {e}"))
    }
}

impl Config {
    /// Loads the configuration: `path` if given (it must exist), else
    /// `./kommunchat.toml` if it exists, else the defaults; then the
    /// environment overrides from `env`.
    pub fn load(path: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let (origin, text) = match path {
            Some(p) => (p.display().to_string(), Some(read(p)?)),
            None if Path::new(DEFAULT_FILE).exists() => (DEFAULT_FILE.to_owned(), Some(read(Path::new(DEFAULT_FILE))?)),
            None => ("defaults".to_owned(), None),
        };
        Config::from_toml(&origin, text.as_deref().unwrap_or(""), env)
    }

    /// Parses configuration text (named `origin` in errors) with overrides.
    pub fn from_toml(
        origin: &str,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError {
            origin: origin.to_owned(),
            key: "-".into(),
            message: e.to_string().trim_end().replace('\n', "\n  "),
        })?;
        let mut from_env = BTreeMap::new();
        for (name, value) in env {
            if let Some(key) = override_key(&name) {
                set_path(&mut table, &key, parse_env_value(&value)).map_err(|message| ConfigError {
                    origin: format!("environment variable {name}"),
                    key: key.join("."),
                    message,
                })?;
                from_env.insert(key.join("."), name);
            }
        }
        let file: FileConfig = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let key = e.path().to_string();
            // Blame the environment variable when the key came from one.
            let origin = from_env
                .iter()
                .find(|(k, _)| key == **k || key.starts_with(&format!("{k}.")) || key.starts_with(&format!("{k}[")))
                .map(|(_, name)| format!("environment variable {name}"))
                .unwrap_or_else(|| origin.to_owned());
            ConfigError { origin, key: if key == "." { "-".into() } else { key }, message: e.inner().to_string() }
        })?;
        let mut config = file.validate(origin)?;
        if !from_env.is_empty() {
            let names: Vec<_> = from_env.values().map(String::as_str).collect();
            config.source = format!("{origin} with overrides from {}", names.join(", "));
        }
        Ok(config)
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        origin: path.display().to_string(),
        key: "-".into(),
        message: format!("cannot read the file: {e}"),
    })
}

/// `KOMMUNCHAT_CHAT__MAX_CHATS_PER_ADVISOR` → `["chat", "max_chats_per_advisor"]`.
fn override_key(name: &str) -> Option<Vec<String>> {
    if ENV_NOT_OVERRIDES.contains(&name) {
        return None;
    }
    let rest = name.strip_prefix(ENV_PREFIX)?;
    if rest.is_empty() {
        return None;
    }
    Some(rest.split("__").map(str::to_ascii_lowercase).collect())
}

/// An environment value is read as a TOML value when it is one
/// (`3`, `true`, `["08:00-12:00"]`), else as a plain string.
fn parse_env_value(value: &str) -> toml::Value {
    format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()))
}

fn set_path(table: &mut toml::Table, key: &[String], value: toml::Value) -> Result<(), String> {
    let (last, sections) = key.split_last().ok_or("empty key")?;
    let mut here = table;
    for section in sections {
        let entry = here.entry(section.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        here = entry.as_table_mut().ok_or_else(|| format!("{section} is not a section"))?;
    }
    here.insert(last.clone(), value);
    Ok(())
}

impl FileConfig {
    /// Converts the file's values into the domain's, refusing impossible ones.
    pub fn validate(self, origin: &str) -> Result<Config, ConfigError> {
        let error = |key: String, message: String| ConfigError { origin: origin.to_owned(), key, message };
        let day = |name: &str, texts: &[String]| {
            DaySchedule::parse(texts).map_err(|e| error(format!("opening_hours.{name}"), e.to_string()))
        };
        let h = &self.opening_hours;
        let mut hours = OpeningHours {
            weekly: [
                day("monday", &h.monday)?,
                day("tuesday", &h.tuesday)?,
                day("wednesday", &h.wednesday)?,
                day("thursday", &h.thursday)?,
                day("friday", &h.friday)?,
                day("saturday", &h.saturday)?,
                day("sunday", &h.sunday)?,
            ],
            public_holidays: day("public_holidays", &h.public_holidays)?,
            midsommarafton: day("midsommarafton", &h.midsommarafton)?,
            julafton: day("julafton", &h.julafton)?,
            nyarsafton: day("nyarsafton", &h.nyarsafton)?,
            day_before_holiday: if h.day_before_holiday.is_empty() {
                None
            } else {
                Some(day("day_before_holiday", &h.day_before_holiday)?)
            },
            exceptions: Default::default(),
        };
        for (i, exception) in h.exceptions.iter().enumerate() {
            let schedule = DaySchedule::parse(&exception.intervals)
                .map_err(|e| error(format!("opening_hours.exceptions[{i}].intervals"), e.to_string()))?;
            let date = exception.date.0;
            let previous = hours.exceptions.insert(
                date,
                DateException { schedule, label: exception.label.clone().filter(|l| !l.trim().is_empty()) },
            );
            if previous.is_some() {
                return Err(error(
                    format!("opening_hours.exceptions[{i}].date"),
                    format!("{date} is listed more than once"),
                ));
            }
        }

        let c = &self.chat;
        if !(1..=50).contains(&c.max_chats_per_advisor) {
            return Err(error("chat.max_chats_per_advisor".into(), "must be between 1 and 50".into()));
        }
        if !(1..=1024 * 1024).contains(&c.max_message_bytes) {
            return Err(error("chat.max_message_bytes".into(), "must be between 1 and 1048576".into()));
        }
        // One message of the largest size must fit, with what it is charged beside its text.
        let one_message = c.max_message_bytes + crate::protocol::ws::Limits::MESSAGE_ALLOWANCE;
        if !(one_message..=MAX_CONVERSATION_BYTES).contains(&c.max_conversation_bytes) {
            return Err(error(
                "chat.max_conversation_bytes".into(),
                format!(
                    "must be between {one_message} (chat.max_message_bytes and 256 bytes per message) and {MAX_CONVERSATION_BYTES}"
                ),
            ));
        }
        if !(1..=c.max_conversation_bytes).contains(&c.max_queued_bytes) {
            return Err(error(
                "chat.max_queued_bytes".into(),
                format!("must be between 1 and chat.max_conversation_bytes ({})", c.max_conversation_bytes),
            ));
        }
        if !(50..=60_000).contains(&c.queue_update_interval_ms) {
            return Err(error("chat.queue_update_interval_ms".into(), "must be between 50 and 60000".into()));
        }
        for (key, value) in [
            ("chat.inactivity_warning_seconds", c.inactivity_warning_seconds),
            ("chat.inactivity_end_seconds", c.inactivity_end_seconds),
            ("chat.assumed_handle_seconds", c.assumed_handle_seconds),
        ] {
            if value == 0 {
                return Err(error(key.into(), "must be more than 0".into()));
            }
        }
        if c.rating_window_minutes > 24 * 60 {
            return Err(error("chat.rating_window_minutes".into(), "must be at most 1440 (a day)".into()));
        }
        if let Some(i) = c.categories.iter().position(|s| s.trim().is_empty()) {
            return Err(error(format!("chat.categories[{i}]"), "must not be empty".into()));
        }
        if let Some(i) = c.canned_responses.iter().position(|s| s.trim().is_empty()) {
            return Err(error(format!("chat.canned_responses[{i}]"), "must not be empty".into()));
        }
        if self.admission.last_admission_minutes > 24 * 60 {
            return Err(error("admission.last_admission_minutes".into(), "must be at most 1440".into()));
        }
        if !(self.database_url.starts_with("sqlite:")
            || self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://"))
        {
            return Err(error(
                "database_url".into(),
                "must start with sqlite: (embedded) or postgres:// (PostgreSQL)".into(),
            ));
        }
        if !(1..=100_000).contains(&self.storage.max_batch) {
            return Err(error("storage.max_batch".into(), "must be between 1 and 100000".into()));
        }
        if !(1..=60_000).contains(&self.storage.message_log_apply_ms) {
            return Err(error(
                "storage.message_log_apply_ms".into(),
                "must be between 1 and 60000 (milliseconds)".into(),
            ));
        }
        let is_origin = |o: &str| {
            (o.starts_with("https://") || o.starts_with("http://"))
                && !o.ends_with('/')
                && o.split("://").nth(1).is_some_and(|host| !host.is_empty() && !host.contains('/'))
        };
        for (i, o) in self.security.widget_origins.iter().enumerate() {
            if !is_origin(o) {
                return Err(error(
                    format!("security.widget_origins[{i}]"),
                    format!("{o:?} is not an origin like \"https://kommun.se\" (scheme and host, no path)"),
                ));
            }
        }
        let s = &self.security;
        if !s.public_origin.is_empty() && !is_origin(&s.public_origin) {
            return Err(error(
                "security.public_origin".into(),
                format!("{:?} is not an origin like \"https://chatt.kommun.se\"", s.public_origin),
            ));
        }
        for (key, value, min) in [
            ("security.max_connections", s.max_connections as u64, 1),
            ("security.max_citizen_connections_per_address", s.max_citizen_connections_per_address as u64, 1),
            ("security.chat_starts_per_address_per_hour", u64::from(s.chat_starts_per_address_per_hour), 1),
            ("security.messages_per_second", u64::from(s.messages_per_second), 1),
            ("security.message_burst", u64::from(s.message_burst), 1),
            ("security.handshake_timeout_seconds", s.handshake_timeout_seconds, 1),
            ("security.write_timeout_seconds", s.write_timeout_seconds, 1),
            ("security.session_check_seconds", s.session_check_seconds, 1),
            ("security.login_free_attempts", u64::from(s.login_free_attempts), 1),
        ] {
            if value < min {
                return Err(error(key.into(), format!("must be at least {min}")));
            }
        }
        if self.tls.cert_path.is_empty() != self.tls.key_path.is_empty() {
            return Err(error("tls".into(), "set both cert_path and key_path, or neither".into()));
        }
        for category in self.retention.categories.keys() {
            if !self.chat.categories.is_empty() && !self.chat.categories.contains(category) {
                return Err(error(format!("retention.categories.{category}"), "is not one of chat.categories".into()));
            }
        }
        if self.retention.interval_minutes == 0 {
            return Err(error("retention.interval_minutes".into(), "must be more than 0".into()));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(error("log.level".into(), format!("not a valid log filter: {e}")));
        }

        Ok(Config {
            listen: self.listen,
            database_url: self.database_url,
            log: self.log,
            hours,
            admission: AdmissionPolicy {
                last_admission_before_closing: TimeDelta::minutes(i64::from(self.admission.last_admission_minutes)),
                refuse_if_not_served_before_closing: self.admission.refuse_if_not_served_before_closing,
            },
            chat: self.chat,
            contact: self.contact,
            storage: self.storage,
            security: self.security,
            retention: self.retention,
            tls: self.tls,
            source: origin.to_owned(),
        })
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Plain => "plain",
            LogFormat::Json => "json",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml("test.toml", text, Vec::new())
    }

    fn load_env(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_toml("test.toml", text, env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn empty_file_is_the_defaults() {
        let config = load("").expect("defaults");
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.hours, OpeningHours::default());
        assert_eq!(config.admission, AdmissionPolicy::default());
        assert_eq!(config.chat.max_chats_per_advisor, 3);
    }

    #[test]
    fn the_example_file_is_valid_and_documents_every_default() {
        let text = include_str!("../kommunchat.example.toml");
        let example: toml::Table = text.parse().expect("example parses");
        let config = load(text).expect("example is valid");
        // The example only uncomments what equals the defaults, plus exceptions.
        let defaults = Config::default();
        assert_eq!(config.hours.weekly, defaults.hours.weekly);
        assert_eq!(config.chat, defaults.chat);
        assert_eq!(config.contact, defaults.contact);
        assert!(example.contains_key("opening_hours"));
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        let err = load("listen = \"127.0.0.1:8080\"\n[chat\n").expect_err("bad syntax");
        assert_eq!(err.origin, "test.toml");
        assert!(err.message.contains("line 2"), "{err}");
    }

    #[test]
    fn unknown_key_is_refused() {
        let err = load("[chat]\nmax_chats = 3\n").expect_err("unknown key");
        assert_eq!(err.key, "chat.max_chats");
        assert!(err.message.contains("unknown field `max_chats`"), "{err}");
        let err = load("colour = \"blue\"\n").expect_err("unknown key");
        assert!(err.message.contains("unknown field `colour`"), "{err}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let err = load("[chat]\nmax_chats_per_advisor = \"three\"\n").expect_err("wrong type");
        assert_eq!(err.key, "chat.max_chats_per_advisor");
        assert!(err.message.contains("invalid type"), "{err}");
        assert_eq!(err.to_string(), format!("test.toml: chat.max_chats_per_advisor: {}", err.message));
    }

    #[test]
    fn impossible_intervals_name_the_key() {
        let err = load("[opening_hours]\nmonday = [\"17:00-08:00\"]\n").expect_err("backwards");
        assert_eq!(err.key, "opening_hours.monday");
        assert!(err.message.contains("ends before or when it starts"), "{err}");

        let err = load("[opening_hours]\nfriday = [\"08:00-12:00\", \"11:00-13:00\"]\n").expect_err("overlap");
        assert_eq!(err.key, "opening_hours.friday");
        assert!(err.message.contains("overlap"), "{err}");

        let err = load("[opening_hours]\ntuesday = [\"8\"]\n").expect_err("syntax");
        assert!(err.message.contains("HH:MM-HH:MM"), "{err}");

        let err = load("[[opening_hours.exceptions]]\ndate = 2026-12-23\nintervals = [\"12:00-10:00\"]\n")
            .expect_err("exception");
        assert_eq!(err.key, "opening_hours.exceptions[0].intervals");

        let err = load("[[opening_hours.exceptions]]\ndate = \"2026-02-30\"\n").expect_err("date");
        assert_eq!(err.key, "opening_hours.exceptions[0].date");
        assert!(err.message.contains("YYYY-MM-DD"), "{err}");
    }

    #[test]
    fn exceptions_accept_toml_dates_and_strings() {
        let config = load(
            "[[opening_hours.exceptions]]\ndate = 2026-12-23\nintervals = [\"08:00-12:00\"]\nlabel = \"Kortare dag\"\n\
             [[opening_hours.exceptions]]\ndate = \"2026-12-28\"\nlabel = \"Personaldag\"\n",
        )
        .expect("valid");
        let d1: NaiveDate = "2026-12-23".parse().expect("date");
        let d2: NaiveDate = "2026-12-28".parse().expect("date");
        assert_eq!(config.hours.exceptions[&d1].label.as_deref(), Some("Kortare dag"));
        assert!(config.hours.exceptions[&d2].schedule.is_closed());
        let err =
            load("[[opening_hours.exceptions]]\ndate = 2026-12-23\n[[opening_hours.exceptions]]\ndate = 2026-12-23\n")
                .expect_err("duplicate");
        assert_eq!(err.key, "opening_hours.exceptions[1].date");
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let err = load("[chat]\nmax_chats_per_advisor = 0\n").expect_err("zero");
        assert_eq!(err.key, "chat.max_chats_per_advisor");
        // A chat must hold at least one message of the largest size, with its 256 bytes.
        let err = load("[chat]\nmax_message_bytes = 1000\nmax_conversation_bytes = 1255\n").expect_err("too small");
        assert_eq!(err.key, "chat.max_conversation_bytes");
        assert!(
            load("[chat]\nmax_message_bytes = 1000\nmax_conversation_bytes = 1256\nmax_queued_bytes = 100\n").is_ok()
        );
        let err = load("[chat]\nmax_conversation_bytes = 70000\nmax_queued_bytes = 70001\n").expect_err("queued");
        assert_eq!(err.key, "chat.max_queued_bytes");
        let err = load("[chat]\nmax_queued_bytes = 0\n").expect_err("zero");
        assert_eq!(err.key, "chat.max_queued_bytes");
        let err = load("[chat]\nrating_window_minutes = 1441\n").expect_err("over a day");
        assert_eq!(err.key, "chat.rating_window_minutes");
        assert!(load("[chat]\nrating_window_minutes = 0\n").is_ok(), "0: only the grace period");
        let err = load("database_url = \"mysql://x\"\n").expect_err("mysql");
        assert_eq!(err.key, "database_url");
        let err = load("listen = \"localhost\"\n").expect_err("listen");
        assert_eq!(err.key, "listen");
        let err = load("[log]\nformat = \"xml\"\n").expect_err("format");
        assert_eq!(err.key, "log.format");
    }

    #[test]
    fn environment_overrides_and_their_errors() {
        let config = load_env(
            "[chat]\nmax_chats_per_advisor = 2\n",
            &[
                ("KOMMUNCHAT_CHAT__MAX_CHATS_PER_ADVISOR", "5"),
                ("KOMMUNCHAT_DATABASE_URL", "postgres://127.0.0.1/test"),
                ("KOMMUNCHAT_OPENING_HOURS__SATURDAY", "[\"10:00-14:00\"]"),
                ("KOMMUNCHAT_CONFIG", "ignored.toml"),
                ("KOMMUNCHAT_LOG", "debug"),
                ("PATH", "/usr/bin"),
            ],
        )
        .expect("valid");
        assert_eq!(config.chat.max_chats_per_advisor, 5);
        assert_eq!(config.database_url, "postgres://127.0.0.1/test");
        assert!(!config.hours.weekly[5].is_closed());
        assert!(config.source.contains("KOMMUNCHAT_DATABASE_URL"));

        let err = load_env("", &[("KOMMUNCHAT_CHAT__MAX_CHATS_PER_ADVISOR", "many")]).expect_err("type");
        assert_eq!(err.origin, "environment variable KOMMUNCHAT_CHAT__MAX_CHATS_PER_ADVISOR");
        assert_eq!(err.key, "chat.max_chats_per_advisor");

        let err = load_env("", &[("KOMMUNCHAT_COLOUR", "blue")]).expect_err("unknown");
        assert_eq!(err.origin, "environment variable KOMMUNCHAT_COLOUR");
        assert!(err.message.contains("unknown field `colour`"), "{err}");
    }
}
