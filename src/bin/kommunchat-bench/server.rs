//! Starting the server under test as its own process, and reading its
//! memory and CPU from /proc.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Where the server under test keeps its data.
#[derive(Debug, Clone)]
pub enum Database {
    /// Embedded SQLite in the run's directory, with this `synchronous`.
    Sqlite { synchronous: String },
    /// A new database on this PostgreSQL server for every server started,
    /// created through `admin_url` (a connection that may `CREATE DATABASE`)
    /// and dropped when that server is done.
    Postgres { admin_url: String },
}

impl Database {
    /// How the results name it.
    pub fn label(&self) -> String {
        match self {
            Database::Sqlite { synchronous } => format!("SQLite synchronous={synchronous}"),
            Database::Postgres { .. } => "PostgreSQL".into(),
        }
    }
}

/// A kommunchat process with its own data directory.
pub struct ServerProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    binary: PathBuf,
    cpu: Option<usize>,
    /// Dropped after the process (fields drop after `Drop::drop`).
    scratch_database: Option<ScratchDatabase>,
}

/// Always open, limits raised for load from one machine (the relay's 100
/// chats grow far longer than any real chat: their size limit is the highest
/// the server allows). The log level is
/// the default (`info`), as deployed: a level set lower here once hid what
/// an enabled per-connection span cost every idle connection.
fn config(max_chats: u32) -> String {
    let all_day = "[\"00:00-24:00\"]";
    let mut c = String::from("[opening_hours]\n");
    for day in [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
        "public_holidays",
        "midsommarafton",
        "julafton",
        "nyarsafton",
    ] {
        c.push_str(&format!("{day} = {all_day}\n"));
    }
    c.push_str("day_before_holiday = []\n");
    c.push_str(&format!(
        "[chat]\nmax_chats_per_advisor = {max_chats}\ninactivity_warning_seconds = 86400\nadvisor_grace_seconds = 600\ncitizen_grace_seconds = 600\n\
         max_conversation_bytes = 67108864\nmax_queued_bytes = 67108864\n\
         [admission]\nrefuse_if_not_served_before_closing = false\n\
         [security]\nmax_connections = 19900\nmax_citizen_connections_per_address = 100000\nchat_starts_per_address_per_hour = 100000000\nmessages_per_second = 100000\nmessage_burst = 100000\n"
    ));
    c
}

impl ServerProcess {
    /// Starts `binary` pinned to `cpu` (if given) and waits until it listens.
    pub fn start(
        binary: &Path,
        cpu: Option<usize>,
        max_chats: u32,
        database: &Database,
    ) -> Result<ServerProcess, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let (text, scratch) = match database {
            Database::Sqlite { synchronous } => {
                (format!("{}[storage]\nsqlite_synchronous = \"{synchronous}\"\n", config(max_chats)), None)
            }
            Database::Postgres { admin_url } => {
                let scratch = ScratchDatabase::create(admin_url)?;
                // A top-level key: before the first table.
                (format!("database_url = \"{}\"\n{}", scratch.url, config(max_chats)), Some(scratch))
            }
        };
        std::fs::write(dir.path().join("kommunchat.toml"), text).map_err(|e| e.to_string())?;
        let (child, addr) = spawn(binary, cpu, dir.path(), "127.0.0.1:0")?;
        Ok(ServerProcess { child, addr, dir, binary: binary.to_owned(), cpu, scratch_database: scratch })
    }

    /// The second half of a deploy, after [`ServerProcess::terminate`]: the
    /// same binary on the same address and data directory. Returns once it
    /// listens again.
    pub fn start_again(&mut self) -> Result<(), String> {
        let (child, addr) = spawn(&self.binary, self.cpu, self.dir.path(), &self.addr.to_string())?;
        self.child = child;
        self.addr = addr;
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Size of the SQLite log (`data/kommunchat.db-wal`) now; 0 if there is
    /// none, `None` on PostgreSQL.
    pub fn sqlite_log_bytes(&self) -> Option<u64> {
        if self.scratch_database.is_some() {
            return None;
        }
        Some(std::fs::metadata(self.dir.path().join("data/kommunchat.db-wal")).map(|m| m.len()).unwrap_or(0))
    }

    /// On PostgreSQL, the CPU time of every `postgres` process on the
    /// machine so far (processes that ended meanwhile are not counted);
    /// `None` on SQLite.
    pub fn database_cpu_seconds(&self) -> Option<f64> {
        self.scratch_database.as_ref()?;
        let mut total = 0.0;
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            if std::fs::read_to_string(entry.path().join("comm")).is_ok_and(|c| c.trim_end() == "postgres") {
                total += cpu_seconds(pid).unwrap_or(0.0);
            }
        }
        Some(total)
    }

    /// Creates an advisor account through the CLI (password on stdin).
    pub fn add_advisor(&self, binary: &Path, name: &str) -> Result<(), String> {
        use std::io::Write;
        let mut child = Command::new(binary)
            .current_dir(self.dir.path())
            .env_remove("KOMMUNCHAT_CONFIG")
            .args(["user", "add", name, "--role", "advisor"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        child.stdin.take().ok_or("stdin")?.write_all(b"benchmark password\n").map_err(|e| e.to_string())?;
        let status = child.wait().map_err(|e| e.to_string())?;
        if status.success() { Ok(()) } else { Err(format!("user add {name} failed")) }
    }

    pub fn stop(mut self) {
        self.terminate();
    }

    /// SIGTERM, then SIGKILL if it has not exited within 5 s.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A PostgreSQL database that lives as long as one server under test.
struct ScratchDatabase {
    admin_url: String,
    name: String,
    /// The server's connection URL: `admin_url` with this database.
    url: String,
}

impl ScratchDatabase {
    fn create(admin_url: &str) -> Result<ScratchDatabase, String> {
        static CREATED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = CREATED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("kommunchat_bench_{}_{n}", std::process::id());
        let url = with_database(admin_url, &name)?;
        on_postgres(admin_url, format!("CREATE DATABASE {name}"))?;
        Ok(ScratchDatabase { admin_url: admin_url.to_owned(), name, url })
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        // FORCE: the stopped server's sessions may not have ended yet.
        if let Err(e) = on_postgres(&self.admin_url, format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)) {
            eprintln!("kommunchat-bench: could not drop the database {}: {e}", self.name);
        }
    }
}

/// Runs one statement on the PostgreSQL server at `admin_url`, from a
/// thread of its own (callers are inside the generator's runtime, or in `drop`).
fn on_postgres(admin_url: &str, statement: String) -> Result<(), String> {
    let admin_url = admin_url.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        runtime.block_on(async {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&admin_url)
                .await
                .map_err(|e| format!("cannot connect to PostgreSQL at {admin_url}: {e}"))?;
            sqlx::raw_sql(&statement).execute(&mut conn).await.map_err(|e| format!("{statement}: {e}"))?;
            conn.close().await.map_err(|e| e.to_string())
        })
    })
    .join()
    .map_err(|_| "the PostgreSQL thread panicked".to_string())?
}

/// `url` (`postgres://user@host:port/db?options`) with its database
/// replaced by `database`, its options kept.
fn with_database(url: &str, database: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or_else(|| format!("{url}: a PostgreSQL URL starts with postgres://"))?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let options = rest[end..].split_once('?').map(|(_, o)| format!("?{o}")).unwrap_or_default();
    Ok(format!("postgres://{}/{database}{options}", &rest[..end]))
}

/// A run that stops early (an error, a panic) must not leave its server
/// running, holding a core, files and (with PostgreSQL) connections.
impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `kommunchat serve` in `dir` on `listen`, pinned to `cpu` if
/// given, and waits until it listens.
fn spawn(binary: &Path, cpu: Option<usize>, dir: &Path, listen: &str) -> Result<(Child, SocketAddr), String> {
    let mut cmd = match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &cpu.to_string()]).arg(binary);
            c
        }
        None => Command::new(binary),
    };
    let mut child = cmd
        .current_dir(dir)
        .env_remove("KOMMUNCHAT_CONFIG")
        .args(["serve", "--listen", listen])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines.next().ok_or("the server exited before listening")?.map_err(|e| e.to_string())?;
        if let Some(a) = line.strip_prefix("kommunchat listening on http://") {
            break a.parse().map_err(|e| format!("{a}: {e}"))?;
        }
    };
    std::thread::spawn(move || for _ in lines {});
    eprintln!("  server pid {} on http://{addr}", child.id());
    Ok((child, addr))
}

/// Resident memory of a process in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// CPU time (user + system) a process has used, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

fn clock_ticks() -> f64 {
    // sysconf(_SC_CLK_TCK) is 100 on Linux everywhere we run.
    100.0
}

/// The release binary next to this one, unless given.
pub fn default_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("kommunchat")))
        .unwrap_or_else(|| PathBuf::from("target/release/kommunchat"))
}

/// Pins the calling process to `cpu`.
pub fn pin_self(cpu: usize) {
    let _ = Command::new("taskset")
        .args(["-cp", &cpu.to_string(), &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status();
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn a_scratch_database_keeps_the_server_and_options_of_the_url() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1/postgres", "x").unwrap(),
            "postgres://postgres@127.0.0.1/x"
        );
        assert_eq!(with_database("postgres://u:p@h:5433", "x").unwrap(), "postgres://u:p@h:5433/x");
        assert_eq!(with_database("postgresql://h/db?sslmode=disable", "x").unwrap(), "postgres://h/x?sslmode=disable");
        assert_eq!(with_database("postgres://h?sslmode=disable", "x").unwrap(), "postgres://h/x?sslmode=disable");
        assert!(with_database("mysql://h/db", "x").is_err());
    }
}
