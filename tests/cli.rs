//! The `kommunchat` binary as a user runs it: `hours`, configuration errors,
//! and the server starting with no arguments.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

fn kommunchat() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kommunchat"));
    cmd.env_remove("KOMMUNCHAT_CONFIG").env_remove("KOMMUNCHAT_LOG");
    cmd
}

#[test]
fn hours_prints_the_whole_year_as_json_lines() {
    let dir = tempfile::tempdir().expect("dir");
    let out = kommunchat().current_dir(dir.path()).args(["hours", "2026-01-01", "2026-12-31"]).output().expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 365);
    let days: Vec<Value> = lines.iter().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(days[0]["date"], "2026-01-01");
    assert_eq!(days[364]["date"], "2026-12-31");
    // The exact documented forms.
    assert!(lines.contains(&r#"{"date":"2026-12-24","open":false,"intervals":[],"reason":"julafton"}"#));
    assert!(lines.contains(
        &r#"{"date":"2026-04-02","open":true,"intervals":[{"from":"08:00","to":"15:00"}],"reason":"day before a public holiday"}"#
    ));
    let closed_weekdays: Vec<&str> = days
        .iter()
        .filter(|d| d["open"] == false && d["reason"] != "regular hours")
        .map(|d| d["date"].as_str().expect("date"))
        .collect();
    assert_eq!(
        closed_weekdays,
        [
            "2026-01-01",
            "2026-01-06",
            "2026-04-03",
            "2026-04-05",
            "2026-04-06",
            "2026-05-01",
            "2026-05-14",
            "2026-05-24",
            "2026-06-06",
            "2026-06-19",
            "2026-06-20",
            "2026-10-31",
            "2026-12-24",
            "2026-12-25",
            "2026-12-26",
            "2026-12-31",
        ]
    );
    let short_days: Vec<&str> = days
        .iter()
        .filter(|d| d["reason"] == "day before a public holiday")
        .map(|d| d["date"].as_str().expect("date"))
        .collect();
    assert_eq!(short_days, ["2026-01-05", "2026-04-02", "2026-04-30", "2026-05-13", "2026-06-05", "2026-10-30"]);
    let thursday = days.iter().find(|d| d["date"] == "2026-11-26").expect("a Thursday");
    assert_eq!(thursday["intervals"][0]["to"], "18:00");
}

#[test]
fn hours_with_one_date_and_with_a_config_file() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("custom.toml");
    std::fs::write(
        &config,
        "[opening_hours]\nsaturday = [\"10:00-14:00\"]\n[[opening_hours.exceptions]]\ndate = 2026-11-28\nlabel = \"Stängt\"\n",
    )
    .expect("write");
    let out = kommunchat()
        .current_dir(dir.path())
        .args(["--config", config.to_str().expect("path"), "hours", "2026-11-28"])
        .output()
        .expect("runs");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"{"date":"2026-11-28","open":false,"intervals":[],"reason":"Stängt"}"#
    );
    let out = kommunchat()
        .current_dir(dir.path())
        .env("KOMMUNCHAT_CONFIG", &config)
        .args(["hours", "2026-12-05"])
        .output()
        .expect("runs");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"{"date":"2026-12-05","open":true,"intervals":[{"from":"10:00","to":"14:00"}],"reason":"regular hours"}"#
    );
}

#[test]
fn bad_dates_and_ranges_are_clear_errors() {
    let out = kommunchat().args(["hours", "2026-13-01"]).output().expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected a date YYYY-MM-DD"));
    let out = kommunchat().args(["hours", "2026-12-31", "2026-01-01"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is before FROM"));
}

#[test]
fn a_bad_config_stops_start_up_naming_file_key_and_problem() {
    let dir = tempfile::tempdir().expect("dir");
    let cases = [
        ("[chat\n", "kommunchat.toml: -: TOML parse error"),
        ("[chat]\nmax_chats = 2\n", "kommunchat.toml: chat.max_chats: unknown field `max_chats`"),
        ("[chat]\nmax_chats_per_advisor = \"3\"\n", "kommunchat.toml: chat.max_chats_per_advisor: invalid type"),
        (
            "[opening_hours]\nmonday = [\"17:00-08:00\"]\n",
            "kommunchat.toml: opening_hours.monday: \"17:00-08:00\" ends before or when it starts",
        ),
    ];
    for (text, expected) in cases {
        std::fs::write(dir.path().join("kommunchat.toml"), text).expect("write");
        // Read from the working directory by default; `serve` must not start.
        let out = kommunchat().current_dir(dir.path()).arg("serve").output().expect("runs");
        assert_eq!(out.status.code(), Some(2), "{text}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{text}: {stderr}");
        assert!(!dir.path().join("data").exists(), "nothing was started");
    }
    let out = kommunchat()
        .current_dir(dir.path())
        .env("KOMMUNCHAT_CHAT__MAX_CHATS_PER_ADVISOR", "lots")
        .args(["--config", "/nonexistent/k.toml", "check-config"])
        .output()
        .expect("runs");
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/k.toml: -: cannot read the file"));
    std::fs::remove_file(dir.path().join("kommunchat.toml")).expect("rm");
    let out = kommunchat()
        .current_dir(dir.path())
        .env("KOMMUNCHAT_CHAT__MAX_CHATS_PER_ADVISOR", "lots")
        .arg("check-config")
        .output()
        .expect("runs");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("environment variable KOMMUNCHAT_CHAT__MAX_CHATS_PER_ADVISOR: chat.max_chats_per_advisor")
    );
}

#[test]
fn the_server_starts_with_no_config_and_answers() {
    let dir = tempfile::tempdir().expect("dir");
    let child = kommunchat()
        .current_dir(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let mut child = common::ChildGuard(child);
    let mut stderr = child.stderr.take().expect("stderr");
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut text).expect("utf-8 log");
        text
    });
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut admin_password = None;
    let addr = loop {
        let line = lines.next().expect("a line").expect("utf-8");
        if let Some(rest) = line.strip_prefix("First start: created the account \"admin\" with the password ") {
            admin_password = Some(rest.trim().to_owned());
        }
        if let Some(addr) = line.strip_prefix("kommunchat listening on http://") {
            break addr.to_owned();
        }
    };
    assert!(admin_password.is_some_and(|p| p.len() >= 16), "the first admin's password is printed once");
    assert!(dir.path().join("data/kommunchat.db").exists(), "embedded SQLite under ./data/");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let health = reqwest::get(format!("http://{addr}/healthz")).await.expect("healthz");
        assert_eq!(health.status().as_u16(), 200);
        let hours: Value =
            reqwest::get(format!("http://{addr}/api/v1/hours")).await.expect("hours").json().await.expect("JSON");
        assert!(hours["open_now"].is_boolean());
        let today = chrono::Utc::now().with_timezone(&chrono_tz::Europe::Stockholm).date_naive().to_string();
        assert_eq!(hours["date"], today);
        assert!(hours["next_opening"].as_str().is_some_and(|s| s.contains('T')));
    });
    // SIGTERM: a clean stop.
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "exits cleanly on SIGTERM");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "stops within 15 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Standard error is not a terminal here (as under systemd): plain text.
    let log = log.join().expect("the log reader");
    assert!(log.contains("kommunchat started"), "{log}");
    assert!(!log.contains('\u{1b}'), "no terminal escape codes in a log that goes to a pipe: {log:?}");
    // A second start finds the admin and prints no password.
    let out = kommunchat().current_dir(dir.path()).args(["user", "list"]).output().expect("runs");
    assert!(String::from_utf8_lossy(&out.stdout).contains("admin"));
}
