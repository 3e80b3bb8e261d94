//! The command line: `kommunchat [serve]`, `hours`, `check-config`, `user …`.

use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use chrono::{Datelike, NaiveDate};
use clap::{Parser, Subcommand, ValueEnum};

use crate::auth::{self, Role};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, LogFormat};
use crate::protocol::hours::day_line;
use crate::storage::Storage;

#[derive(Debug, Parser)]
#[command(name = "kommunchat", version, about = "Real-time support chat for public contact centres")]
pub struct Cli {
    /// Configuration file (default: ./kommunchat.toml if it exists, else built-in defaults).
    #[arg(long, global = true, env = "KOMMUNCHAT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve {
        /// Listen here instead of the configured address (port 0: any free port).
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
    /// Print the opening hours of each date from FROM to TO (inclusive) as JSON lines.
    Hours {
        #[arg(value_parser = parse_date, value_name = "FROM")]
        from: NaiveDate,
        #[arg(value_parser = parse_date, value_name = "TO")]
        to: Option<NaiveDate>,
    },
    /// Check the configuration and exit.
    CheckConfig,
    /// Manage advisor and admin accounts.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Errands as public records: export, release copies, retention, access requests.
    Errands {
        #[command(subcommand)]
        action: ErrandAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum ErrandAction {
    /// Write every errand from FROM to TO (local dates, inclusive) to standard output.
    Export {
        #[arg(long, value_parser = parse_date)]
        from: NaiveDate,
        #[arg(long, value_parser = parse_date)]
        to: NaiveDate,
        /// json (JSON Lines: one errand with its transcript per line) or csv (one row per message).
        #[arg(long, default_value = "json")]
        format: String,
    },
    /// Print a copy for release with personnummer masked (after a secrecy review).
    Release {
        number: String,
        /// Also mask e-mail addresses.
        #[arg(long)]
        mask_email: bool,
        /// Also mask phone numbers.
        #[arg(long)]
        mask_phone: bool,
        /// text (printable) or json.
        #[arg(long, default_value = "text")]
        format: String,
    },
    /// Delete conversations past their retention period (see [retention]).
    Purge {
        /// Only list what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
    /// Every conversation that mentions a personnummer (registerutdrag), as an export.
    AccessRequest {
        /// The personnummer or samordningsnummer, in any usual form.
        personnummer: String,
        #[arg(long, default_value = "json")]
        format: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserAction {
    /// Add an account. The password is read from standard input.
    Add {
        username: String,
        #[arg(long, value_enum)]
        role: RoleArg,
        /// The name citizens see (default: the username).
        #[arg(long)]
        display_name: Option<String>,
    },
    /// List accounts.
    List,
    /// Remove an account and end its sessions.
    Remove { username: String },
    /// Set a new password (read from standard input) and end the account's sessions.
    Passwd { username: String },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    Advisor,
    Admin,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Advisor => Role::Advisor,
            RoleArg::Admin => Role::Admin,
        }
    }
}

fn parse_date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| format!("expected a date YYYY-MM-DD, got {s:?}"))
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref(), std::env::vars()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("kommunchat: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Serve { listen: None }) {
        Command::Serve { listen } => serve(config, listen),
        Command::Hours { from, to } => hours(&config, from, to.unwrap_or(from)),
        Command::CheckConfig => {
            println!("configuration OK ({})", config.source);
            ExitCode::SUCCESS
        }
        Command::User { action } => user(config, action),
        Command::Errands { action } => errands(config, action),
    }
}

fn init_logging(config: &Config) {
    let filter = std::env::var("KOMMUNCHAT_LOG").unwrap_or_else(|_| config.log.level.clone());
    let filter =
        tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a service's standard error goes to
    // journald or a file, where escape codes are noise in every line.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match config.log.format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(crate::scheduling::favour_connections_thread)
        .build()
}

/// How many connections may wait to be accepted. tokio's `bind` asks for
/// 1,024; when thousands of clients reconnect at once (a network blip) the
/// rest would have their SYNs dropped and retry only after seconds. The
/// kernel caps it at `net.core.somaxconn` (4,096 by default).
const LISTEN_BACKLOG: u32 = 4096;

fn listen_socket(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

fn serve(config: Config, listen: Option<SocketAddr>) -> ExitCode {
    init_logging(&config);
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kommunchat: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        let addr = listen.unwrap_or(config.listen);
        let listener = listen_socket(addr).map_err(|source| crate::server::StartError::Listen { addr, source })?;
        crate::server::run(config, listener, Arc::new(SystemClock), shutdown_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kommunchat: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

fn hours(config: &Config, from: NaiveDate, to: NaiveDate) -> ExitCode {
    if to < from {
        eprintln!("kommunchat: TO ({to}) is before FROM ({from})");
        return ExitCode::from(2);
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for date in from.iter_days().take_while(|d| *d <= to) {
        if let Err(e) = writeln!(out, "{}", day_line(&config.hours, date)) {
            // A closed pipe (`| head`) is a normal end.
            return if e.kind() == std::io::ErrorKind::BrokenPipe { ExitCode::SUCCESS } else { ExitCode::FAILURE };
        }
    }
    match out.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    }
}

fn user(config: Config, action: UserAction) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kommunchat: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(user_action(config, action)) {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kommunchat: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn user_action(config: Config, action: UserAction) -> Result<String, String> {
    let storage = Storage::open(&config.database_url, &config.storage)
        .await
        .map_err(|e| format!("storage ({}): {e}", crate::server::redact(&config.database_url)))?;
    let result = match action {
        UserAction::Add { username, role, display_name } => {
            auth::check_username(&username)?;
            let display_name = display_name.unwrap_or_else(|| username.clone());
            if display_name.trim().is_empty() || display_name.chars().count() > 80 {
                return Err("the display name must be 1 to 80 characters".into());
            }
            let password = read_password()?;
            let hash = auth::hash_password(&password)?;
            let role = Role::from(role);
            match storage.create_user(&username, display_name.trim(), role.as_str(), &hash, SystemClock.now()).await {
                Ok(_) => Ok(format!("added {username} ({})", role.as_str())),
                Err(e) if e.is_unique_violation() => Err(format!("a user named {username} already exists")),
                Err(e) => Err(e.to_string()),
            }
        }
        UserAction::List => {
            let users = storage.list_users().await.map_err(|e| e.to_string())?;
            let mut lines = vec![format!("{:<24} {:<8} {:<28} created", "username", "role", "display name")];
            for u in users {
                lines.push(format!(
                    "{:<24} {:<8} {:<28} {}",
                    u.username,
                    u.role,
                    u.display_name,
                    u.created_at.format("%Y-%m-%d")
                ));
            }
            Ok(lines.join("\n"))
        }
        UserAction::Remove { username } => match storage.remove_user(&username).await {
            Ok(true) => Ok(format!("removed {username}; their sessions have ended")),
            Ok(false) => Err(format!("no user named {username}")),
            Err(e) => Err(e.to_string()),
        },
        UserAction::Passwd { username } => {
            if storage.user_by_name(&username).await.map_err(|e| e.to_string())?.is_none() {
                return Err(format!("no user named {username}"));
            }
            let password = read_password()?;
            let hash = auth::hash_password(&password)?;
            match storage.set_password(&username, &hash).await {
                Ok(true) => Ok(format!("password changed for {username}; their sessions have ended")),
                Ok(false) => Err(format!("no user named {username}")),
                Err(e) => Err(e.to_string()),
            }
        }
    };
    storage.close().await;
    result
}

fn errands(config: Config, action: ErrandAction) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kommunchat: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(errand_action(config, action)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kommunchat: {e}");
            ExitCode::FAILURE
        }
    }
}

/// With SQLite and the message log, a server that stopped without warning
/// may have acknowledged messages that only its log holds (the database
/// takes them in behind it). A command on errands writes them in first, as
/// the server's next start would, so an export or a purge sees every
/// acknowledged message. A running server holds the log's lock and keeps
/// the database current itself (behind by `message_log_apply_ms`).
async fn take_in_message_log(storage: &Storage, config: &Config) -> Result<(), String> {
    use crate::storage::{MessageLogError, OpenLogError, open_message_log};
    match open_message_log(storage, &config.storage).await {
        Ok(Some((_log, replayed))) if replayed > 0 => {
            eprintln!("kommunchat: {replayed} message(s) from the message log written to the database first");
            Ok(())
        }
        Ok(_) | Err(OpenLogError::Log(MessageLogError::Locked(_))) => Ok(()),
        Err(OpenLogError::Storage(e)) => Err(format!("storage: {e}")),
        Err(OpenLogError::Log(e)) => Err(format!("message log: {e}")),
    }
}

async fn errand_action(config: Config, action: ErrandAction) -> Result<(), String> {
    use crate::errands::{Format, export_stream, run_retention};
    use crate::storage::Selection;
    use futures::StreamExt;
    use std::io::Write;

    let storage = Storage::open(&config.database_url, &config.storage)
        .await
        .map_err(|e| format!("storage ({}): {e}", crate::server::redact(&config.database_url)))?;
    take_in_message_log(&storage, &config).await?;
    let local_start = |d: NaiveDate| {
        d.and_hms_opt(0, 0, 0)
            .and_then(|t| t.and_local_timezone(crate::domain::hours::TIME_ZONE).earliest())
            .map(|t| t.to_utc())
            .ok_or_else(|| format!("{d} is out of range"))
    };
    let format_of = |s: &str| Format::parse(s).ok_or_else(|| format!("--format must be json or csv, got {s:?}"));
    let stream_out = |selection: Selection, format: Format| {
        let storage = storage.clone();
        async move {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let mut chunks = std::pin::pin!(export_stream(storage, selection, format));
            while let Some(chunk) = chunks.next().await {
                if let Err(e) = out.write_all(chunk.as_bytes()) {
                    return if e.kind() == std::io::ErrorKind::BrokenPipe { Ok(()) } else { Err(e.to_string()) };
                }
            }
            out.flush().map_err(|e| e.to_string())
        }
    };
    let result = match action {
        ErrandAction::Export { from, to, format } => {
            if to < from {
                return Err(format!("--to ({to}) is before --from ({from})"));
            }
            let format = format_of(&format)?;
            let end = to.succ_opt().ok_or("--to is out of range")?;
            stream_out(Selection::Range { from: local_start(from)?, to: local_start(end)? }, format).await
        }
        ErrandAction::Release { number, mask_email, mask_phone, format } => {
            let errand = storage
                .errand(&number)
                .await
                .map_err(|e| e.to_string())?
                .filter(|e| e.errand_number.as_deref() == Some(number.as_str()))
                .ok_or_else(|| format!("no errand {number}"))?;
            let options = crate::domain::release::MaskOptions { emails: mask_email, phones: mask_phone };
            let view = crate::protocol::errands::ErrandView::release(&errand, options);
            match format.as_str() {
                "text" => print!("{}", crate::protocol::errands::release_text(&view, options)),
                "json" => println!("{}", serde_json::to_string_pretty(&view).map_err(|e| e.to_string())?),
                other => return Err(format!("--format must be text or json, got {other:?}")),
            }
            Ok(())
        }
        ErrandAction::Purge { dry_run } => {
            let due = run_retention(&storage, &config.retention, SystemClock.now(), dry_run)
                .await
                .map_err(|e| e.to_string())?;
            let numbers: Vec<&str> = due.iter().filter_map(|c| c.errand_number.as_deref()).collect();
            let others = due.len() - numbers.len();
            let verb = if dry_run { "would delete" } else { "deleted" };
            println!("{verb} {} conversation(s) past their retention period", due.len());
            for n in numbers {
                println!("  {n}");
            }
            if others > 0 {
                println!("  and {others} conversation(s) that never reached an advisor");
            }
            Ok(())
        }
        ErrandAction::AccessRequest { personnummer, format } => {
            let year = SystemClock.now().with_timezone(&crate::domain::hours::TIME_ZONE).year();
            let canonical = crate::domain::personnummer::canonical(&personnummer, year)
                .ok_or("not a valid personnummer or samordningsnummer")?;
            let format = format_of(&format)?;
            stream_out(Selection::Mentioning { number_hash: auth::token_hash(&canonical) }, format).await
        }
    };
    storage.close().await;
    result
}

/// Reads a password: hidden prompt (asked twice) on a terminal, else one line of stdin.
fn read_password() -> Result<String, String> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").map_err(|e| e.to_string())?;
        let again = rpassword::prompt_password("Again: ").map_err(|e| e.to_string())?;
        if first != again {
            return Err("the passwords differ".into());
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map_err(|e| format!("reading the password: {e}"))?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    };
    auth::check_password_strength(&password)?;
    Ok(password)
}
