//! `kommunchat-bench`: the load generator. Runs as its own process against
//! a release build of kommunchat (started here, pinned to one core while the
//! generator takes the other), and reports a Markdown table and JSON.
//!
//! ```sh
//! cargo build --release && target/release/kommunchat-bench --out bench-results
//! target/release/kommunchat-bench --smoke        # ≤ 60 s, proves the harness works
//! ```
//!
//! Load goes only to 127.0.0.0/8 and every scenario is bounded in count and time.

mod client;
mod ejabberd;
mod open_loop;
mod peer_relay;
mod peers;
mod report;
mod scenarios;
mod server;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use serde::Serialize;

use server::{Database, ServerProcess};

#[derive(Debug, Parser)]
#[command(name = "kommunchat-bench", about = "Load generator and benchmark harness for kommunchat")]
struct Args {
    /// The kommunchat binary (default: next to this one).
    #[arg(long)]
    server: Option<PathBuf>,
    /// A short run (about a minute) that proves the harness works.
    #[arg(long)]
    smoke: bool,
    /// Idle connections to hold.
    #[arg(long, default_value_t = 19_000)]
    connections: usize,
    /// Conversations in the relay scenario.
    #[arg(long, default_value_t = 100)]
    pairs: usize,
    /// Relay rates to try (messages per second in all), comma-separated.
    #[arg(long, default_value = "1000,10000,30000")]
    rates: String,
    /// Seconds per relay rate.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Citizens joining at once in the surge.
    #[arg(long, default_value_t = 19_000)]
    surge: usize,
    /// Advisors draining the surge.
    #[arg(long, default_value_t = 50)]
    surge_advisors: usize,
    /// Clients in the reconnect storm.
    #[arg(long, default_value_t = 19_000)]
    storm: usize,
    /// Also run the peers (nats-server, ejabberd) when installed.
    #[arg(long)]
    peers: bool,
    /// Where to write results.json, results.md and latency.svg.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// Run only these scenarios (comma-separated: connections, relay, surge, reconnect, restart).
    #[arg(long)]
    only: Option<String>,
    /// SQLite durability for the relay: full (fsync per group commit, survives
    /// power loss) or normal (survives a crash of the process).
    #[arg(long, default_value = "full", value_parser = ["full", "normal"])]
    sync: String,
    /// Run kommunchat on PostgreSQL instead of SQLite, every scenario: a new
    /// database for each server started, created through this URL (a role
    /// that may create databases, e.g. postgres://postgres@127.0.0.1/postgres)
    /// and dropped afterwards.
    #[arg(long, conflicts_with = "sync")]
    postgres: Option<String>,
    /// Relay messages evenly spaced, released by a thread of the generator's
    /// own, rather than by tokio's timer (which sends the messages due within
    /// each millisecond together). See `open_loop::releases`.
    #[arg(long)]
    smooth: bool,
    /// CPU for the server (the generator pins itself to the other one).
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub kernel: String,
    pub cpu_model: String,
    pub open_files_limit: String,
}

#[derive(Debug, Serialize)]
pub struct Results {
    pub command: String,
    pub machine: Machine,
    pub smoke: bool,
    /// Relay messages were evenly spaced (`--smooth`), not sent in millisecond ticks.
    pub smooth: bool,
    pub connections: Option<scenarios::ConnectionsResult>,
    pub relay: Vec<scenarios::RelayResult>,
    pub surge: Option<scenarios::SurgeResult>,
    pub reconnect: Option<scenarios::ReconnectResult>,
    /// The reconnect storm caused by a restart of the server.
    pub restart: Option<scenarios::ReconnectResult>,
    pub peers: Vec<peer_relay::PeerResult>,
    pub notes: Vec<String>,
}

fn machine() -> Machine {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned();
    let open_files_limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .map(|l| l.split_whitespace().nth(3).unwrap_or("").to_owned())
        })
        .unwrap_or_default();
    Machine {
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        kernel,
        cpu_model,
        open_files_limit,
    }
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if args.smoke {
        args.connections = args.connections.min(500);
        args.pairs = args.pairs.min(20);
        args.rates = "1000".into();
        args.seconds = args.seconds.min(3.0);
        args.surge = args.surge.min(500);
        args.surge_advisors = args.surge_advisors.min(10);
        args.storm = args.storm.min(300);
    }
    let binary = args.server.clone().unwrap_or_else(server::default_binary);
    let binary = binary.canonicalize().unwrap_or(binary);
    if !binary.exists() {
        eprintln!("kommunchat-bench: no server binary at {}; build it with cargo build --release", binary.display());
        return ExitCode::FAILURE;
    }
    let bench_cpu = if args.server_cpu == 0 { 1 } else { 0 };
    // Read the machine before pinning: pinning narrows what this process sees.
    let this_machine = machine();
    let cpus = this_machine.cpus;
    if cpus > 1 {
        server::pin_self(bench_cpu);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kommunchat-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    match runtime.block_on(run(args, binary, command, this_machine)) {
        Ok(results) => {
            let failed = report::problems(&results);
            if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(e) => {
            eprintln!("kommunchat-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args, binary: PathBuf, command: String, machine: Machine) -> Result<Results, String> {
    let cpu = (machine.cpus > 1).then_some(args.server_cpu);
    let mut results = Results {
        command,
        machine,
        smoke: args.smoke,
        smooth: args.smooth,
        connections: None,
        relay: Vec::new(),
        surge: None,
        reconnect: None,
        restart: None,
        peers: Vec::new(),
        notes: Vec::new(),
    };

    let relay_database = match &args.postgres {
        Some(admin_url) => Database::Postgres { admin_url: admin_url.clone() },
        None => Database::Sqlite { synchronous: args.sync.clone() },
    };
    // The other scenarios: the default durability, or PostgreSQL.
    let database = match &args.postgres {
        Some(_) => relay_database.clone(),
        None => Database::Sqlite { synchronous: "full".into() },
    };
    let wanted = |name: &str| args.only.as_deref().is_none_or(|o| o.split(',').any(|s| s.trim() == name));
    if wanted("connections") {
        eprintln!("connections: {}", args.connections);
        let srv = ServerProcess::start(&binary, cpu, 3, &database)?;
        let (connections, held) = scenarios::connections(&srv, args.connections).await;
        drop(held);
        srv.stop();
        results.connections = Some(connections);
    }

    let rates: Vec<f64> = if wanted("relay") {
        args.rates.split(',').filter_map(|r| r.trim().parse().ok()).collect()
    } else {
        Vec::new()
    };
    for rate in rates {
        eprintln!("relay: {rate} msg/s, {} pairs, durable ({})", args.pairs, relay_database.label());
        let srv = ServerProcess::start(&binary, cpu, 50, &relay_database)?;
        let advisors = args.pairs.div_ceil(50).max(1);
        let mut relay = scenarios::relay(&srv, &binary, args.pairs, advisors, rate, args.seconds, args.smooth).await?;
        relay.storage = relay_database.label();
        srv.stop();
        results.relay.push(relay);
    }

    if wanted("surge") {
        eprintln!("surge: {} citizens, {} advisors", args.surge, args.surge_advisors);
        let srv = ServerProcess::start(&binary, cpu, 1, &database)?;
        results.surge = Some(scenarios::surge(&srv, &binary, args.surge, args.surge_advisors).await?);
        srv.stop();
    }

    if wanted("reconnect") {
        eprintln!("reconnect storm: {} clients", args.storm);
        let mut srv = ServerProcess::start(&binary, cpu, 3, &database)?;
        results.reconnect = Some(scenarios::reconnect_storm(&mut srv, args.storm, false).await?);
        srv.stop();
    }

    if wanted("restart") {
        eprintln!("restart storm: {} clients, the server restarted under them", args.storm);
        let mut srv = ServerProcess::start(&binary, cpu, 3, &database)?;
        results.restart = Some(scenarios::reconnect_storm(&mut srv, args.storm, true).await?);
        srv.stop();
    }

    if args.peers {
        let rates: Vec<f64> = args.rates.split(',').filter_map(|r| r.trim().parse().ok()).collect();
        let (peer_results, notes) = peers::run_all(cpu, args.pairs, &rates, args.seconds, args.smooth).await;
        results.peers = peer_results;
        results.notes.extend(notes);
    }

    report::write(&results, &args.out)?;
    println!("{}", report::markdown(&results));
    Ok(results)
}
