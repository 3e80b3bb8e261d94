//! Results as a Markdown table, JSON, and an SVG latency plot.

use std::fmt::Write as _;
use std::path::Path;

use crate::Results;

/// Correctness problems (not performance targets): a run with any of these
/// did not measure what it claims.
pub fn problems(r: &Results) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(c) = &r.connections
        && c.connected < c.target
    {
        out.push(format!("connections: {} of {} connected", c.connected, c.target));
    }
    for relay in &r.relay {
        if relay.received == 0 || relay.errors > 0 {
            out.push(format!(
                "relay at {}/s: {} received, {} errors",
                relay.target_rate_per_s, relay.received, relay.errors
            ));
        }
    }
    if let Some(s) = &r.surge
        && s.assigned < s.citizens as u64
    {
        out.push(format!("surge: {} of {} assigned", s.assigned, s.citizens));
    }
    if let Some(s) = &r.surge
        && s.paced_assignments > 0
        && s.paced_server.is_none()
    {
        out.push("surge: the server's kommunchat_assignment_latency_seconds could not be read".into());
    }
    for (name, s) in [("reconnect", &r.reconnect), ("restart", &r.restart)] {
        if let Some(s) = s
            && (s.lost > 0 || s.duplicated > 0 || s.moved > 0 || s.resumed < s.clients)
        {
            out.push(format!(
                "{name}: {} of {} resumed, {} lost, {} duplicated, {} moved in the queue",
                s.resumed, s.clients, s.lost, s.duplicated, s.moved
            ));
        }
    }
    for p in &problems_of_peers(r) {
        out.push(p.clone());
    }
    for p in &out {
        eprintln!("problem: {p}");
    }
    out
}

fn problems_of_peers(r: &Results) -> Vec<String> {
    r.peers
        .iter()
        .filter(|p| p.received == 0 && p.error.is_none())
        .map(|p| format!("{}: nothing received", p.peer))
        .collect()
}

fn check(ok: bool) -> &'static str {
    if ok { "✓" } else { "✗" }
}

pub fn markdown(r: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## kommunchat benchmark{}\n", if r.smoke { " (smoke run)" } else { "" });
    let _ = writeln!(
        s,
        "Machine: {} CPUs ({}), Linux {}, open-file limit {}. Server pinned to one core, load generator to the other.\n",
        r.machine.cpus, r.machine.cpu_model, r.machine.kernel, r.machine.open_files_limit
    );
    let _ = writeln!(s, "Command: `{}`\n", r.command);
    if let Some(c) = &r.connections {
        let _ = writeln!(s, "### Idle connections\n");
        let _ =
            writeln!(s, "| connected | errors | connect rate | server RSS idle → loaded | per connection | target |");
        let _ = writeln!(s, "|---|---|---|---|---|---|");
        let _ = writeln!(
            s,
            "| {} / {} | {} | {:.0}/s | {:.1} MiB → {:.1} MiB | {:.0} B | ≤ 4096 B {} |\n",
            c.connected,
            c.target,
            c.errors,
            c.connect_rate_per_s,
            c.server_rss_idle_bytes as f64 / 1048576.0,
            c.server_rss_loaded_bytes as f64 / 1048576.0,
            c.bytes_per_connection,
            check(c.bytes_per_connection <= 4096.0)
        );
    }
    if !r.relay.is_empty() || !r.peers.is_empty() {
        let _ = writeln!(s, "### Relay (open loop, 200-byte messages, one-way latency)\n");
        let _ = writeln!(
            s,
            "{}\n",
            if r.smooth {
                "Messages evenly spaced (`--smooth`): released one by one by a thread of the generator's own."
            } else {
                "Messages released by tokio's timer: those due within one millisecond go together (`--smooth` spaces them evenly)."
            }
        );
        let _ = writeln!(
            s,
            "| server | durable | target rate | achieved | p50 | p99 | p99.9 | max | 10 ms windows with one over 1 ms | errors | server CPU | generator CPU |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|");
        for x in &r.relay {
            let _ = writeln!(
                s,
                "| kommunchat | {} | {:.0}/s | {:.0}/s | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs | {:.1}% | {} | {:.0}% | {:.0}% |",
                x.storage,
                x.target_rate_per_s,
                x.achieved_rate_per_s,
                x.latency.p50_us,
                x.latency.p99_us,
                x.latency.p999_us,
                x.latency.max_us,
                100.0 * x.windows_over_1ms,
                x.errors,
                x.server_cpu_percent,
                x.bench_cpu_percent
            );
        }
        for p in &r.peers {
            match &p.error {
                Some(e) => {
                    let _ =
                        writeln!(s, "| {} | — | {:.0}/s | not run: {e} | | | | | | | | |", p.peer, p.target_rate_per_s);
                }
                None => {
                    let _ = writeln!(
                        s,
                        "| {} | no | {:.0}/s | {:.0}/s | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs | {:.1}% | {} | {:.0}% | {:.0}% |",
                        p.peer,
                        p.target_rate_per_s,
                        p.achieved_rate_per_s,
                        p.latency.p50_us,
                        p.latency.p99_us,
                        p.latency.p999_us,
                        p.latency.max_us,
                        100.0 * p.windows_over_1ms,
                        p.errors,
                        p.server_cpu_percent,
                        p.bench_cpu_percent
                    );
                }
            }
        }
        if !r.relay.is_empty() {
            let logs: Vec<String> = r
                .relay
                .iter()
                .filter_map(|x| {
                    let bytes = x.sqlite_log_bytes?;
                    Some(format!("{:.0}/s {:.1} MiB", x.target_rate_per_s, bytes as f64 / (1 << 20) as f64))
                })
                .collect();
            if !logs.is_empty() {
                let _ = writeln!(s, "\nkommunchat's SQLite log (`-wal`) when each run ended: {}.", logs.join(", "));
            }
            let database: Vec<String> = r
                .relay
                .iter()
                .filter_map(|x| Some(format!("{:.0}/s {:.0}%", x.target_rate_per_s, x.database_cpu_percent?)))
                .collect();
            if !database.is_empty() {
                let _ = writeln!(
                    s,
                    "\nPostgreSQL's own processes (not in the server CPU column; unpinned, beside the generator): {} of a core.",
                    database.join(", ")
                );
            }
            let writes: Vec<String> = r
                .relay
                .iter()
                .filter_map(|x| {
                    let w = x.durable_write.as_ref()?;
                    Some(format!(
                        "{:.0}/s: {} writes, {:.1} messages each, p50 / p99 / p99.9 ≤ {} / {} / {} µs",
                        x.target_rate_per_s,
                        w.count,
                        x.received as f64 / w.count as f64,
                        w.p50_at_most_us,
                        w.p99_at_most_us,
                        w.p999_at_most_us
                    ))
                })
                .collect();
            if !writes.is_empty() {
                let _ = writeln!(
                    s,
                    "\nThe server's own durable writes (`kommunchat_storage_write_seconds`: on SQLite one append to the message log, with one `fdatasync` under `synchronous=full`; on PostgreSQL one transaction; every message waits for one): {}.",
                    writes.join("; ")
                );
            }
        }
        let _ = writeln!(
            s,
            "\nTargets at 10,000/s with durable storage: p50 ≤ 250 µs, p99 ≤ 1 ms, p99.9 ≤ 5 ms; ≥ 50,000/s sustained.\n"
        );
    }
    if let Some(x) = &r.surge {
        let _ = writeln!(s, "### Surge\n");
        let _ = writeln!(
            s,
            "| citizens | advisors | join | assignment at {:.0}/s, ≥ {} waiting: p50 / p99 / max | drain | assignment in the drain as fast as advisors go: p50 / p99 / max | queue updates sent | server CPU join / drain |",
            x.paced_rate_per_s, x.paced_min_waiting
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} s | {:.0} / {:.0} / {:.0} µs (p99 ≤ 1 ms {}) | {:.1} s | {:.0} / {:.0} / {:.0} µs | {} | {:.2} s / {:.2} s |\n",
            x.citizens,
            x.advisors,
            x.join_seconds,
            x.paced_latency.p50_us,
            x.paced_latency.p99_us,
            x.paced_latency.max_us,
            check(x.paced_latency.p99_us <= 1000.0),
            x.drain_seconds,
            x.assignment_latency.p50_us,
            x.assignment_latency.p99_us,
            x.assignment_latency.max_us,
            x.queue_updates_received,
            x.server_cpu_seconds_join,
            x.server_cpu_seconds_drain
        );
        let _ = writeln!(
            s,
            "The generator's own paced timers fired late by p50 {:.0} / p99 {:.0} / max {:.0} µs in the paced phase: \
             its jitter, which every latency it measures includes. The advisors' thread, which measures \
             assignment, ran {}.\n",
            x.generator_lateness.p50_us, x.generator_lateness.p99_us, x.generator_lateness.max_us, x.advisors_thread
        );
        if let Some(own) = &x.paced_server {
            let _ = writeln!(
                s,
                "The server's own part of the paced phase (`kommunchat_assignment_latency_seconds`: from reading \
                 `end` to writing `assigned` to the advisor's socket, {} assignments): p50 ≤ {:.0} µs, \
                 p99 ≤ {:.0} µs, {:.2}% within 1 ms (p99 ≤ 1 ms {}).\n",
                own.count,
                own.p50_at_most_us,
                own.p99_at_most_us,
                own.within_1ms * 100.0,
                check(own.p99_at_most_us <= 1000.0)
            );
        }
    }
    let storms: Vec<&crate::scenarios::ReconnectResult> = [&r.reconnect, &r.restart].into_iter().flatten().collect();
    if !storms.is_empty() {
        let _ = writeln!(s, "### Reconnect storm\n");
        let _ = writeln!(
            s,
            "| clients | cause | all resumed after | retried reconnects | acknowledged before | lost | duplicated | place in the queue changed |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
        for x in storms {
            let cause = match x.restart_seconds {
                Some(t) => format!("server restarted (SIGTERM to listening: {t:.1} s)"),
                None => "connections dropped".into(),
            };
            let _ = writeln!(
                s,
                "| {} / {} | {} | {:.1} s (≤ 10 s {}) | {} | {} | {} | {} | {} |",
                x.resumed,
                x.clients,
                cause,
                x.seconds_to_all_resumed,
                check(x.seconds_to_all_resumed <= 10.0),
                x.retries,
                x.acknowledged_before,
                x.lost,
                x.duplicated,
                x.moved
            );
        }
        let _ = writeln!(s);
    }
    for n in &r.notes {
        let _ = writeln!(s, "- {n}");
    }
    s
}

/// A percentile plot of the relay latencies (log-scaled axes).
pub fn svg(r: &Results) -> String {
    // The plot is `w` wide; the legend sits to its right, clear of the lines.
    let (w, h, left, bottom, legend) = (720.0, 420.0, 70.0, 50.0, 190.0);
    let series: Vec<(String, [f64; 4])> = r
        .relay
        .iter()
        .map(|x| {
            (
                format!("kommunchat {:.0}/s", x.target_rate_per_s),
                [x.latency.p50_us, x.latency.p99_us, x.latency.p999_us, x.latency.max_us],
            )
        })
        .chain(r.peers.iter().filter(|p| p.error.is_none()).map(|p| {
            (
                format!("{} {:.0}/s", p.peer, p.target_rate_per_s),
                [p.latency.p50_us, p.latency.p99_us, p.latency.p999_us, p.latency.max_us],
            )
        }))
        .collect();
    let labels = ["p50", "p99", "p99.9", "max"];
    let (ymin, ymax) = (10.0f64, 1_000_000.0f64);
    let y = |v: f64| {
        let v = v.clamp(ymin, ymax);
        h - bottom - (v.log10() - ymin.log10()) / (ymax.log10() - ymin.log10()) * (h - bottom - 20.0)
    };
    let x = |i: usize| left + 40.0 + i as f64 * (w - left - 80.0) / 3.0;
    // One colour per server, one dash pattern per rate (in the order run).
    let colors = ["#1f5f99", "#2e7d32", "#b3261e", "#6a1b9a", "#ef6c00", "#5d4037"];
    let dashes = ["", "8 4", "2 3", "12 3 2 3", "1 6"];
    let mut servers: Vec<&str> = Vec::new();
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        w + legend
    );
    for decade in 1..=6 {
        let v = 10f64.powi(decade);
        let label = if v >= 1000.0 { format!("{} ms", v / 1000.0) } else { format!("{v} µs") };
        let _ = writeln!(
            s,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>",
            w - 20.0,
            y(v),
            y(v),
            left - 6.0,
            y(v) + 4.0
        );
    }
    for (i, l) in labels.iter().enumerate() {
        let _ = writeln!(s, "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{l}</text>", x(i), h - bottom + 20.0);
    }
    let mut runs_of_server: Vec<usize> = Vec::new();
    for (k, (name, values)) in series.iter().enumerate() {
        let server = name.split(' ').next().unwrap_or_default();
        let index = servers.iter().position(|s| *s == server).unwrap_or_else(|| {
            servers.push(server);
            runs_of_server.push(0);
            servers.len() - 1
        });
        let color = colors[index % colors.len()];
        let dash = dashes[runs_of_server[index] % dashes.len()];
        runs_of_server[index] += 1;
        let points: Vec<String> = values.iter().enumerate().map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v))).collect();
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" stroke-dasharray=\"{dash}\" points=\"{}\"/>",
            points.join(" ")
        );
        let row = 24.0 + 18.0 * k as f64;
        let _ = writeln!(
            s,
            "<line x1=\"{}\" x2=\"{}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"{color}\" stroke-width=\"2\" stroke-dasharray=\"{dash}\"/><text x=\"{}\" y=\"{row}\" fill=\"{color}\">{name}</text>",
            w - 5.0,
            w + 25.0,
            row - 4.0,
            row - 4.0,
            w + 30.0
        );
    }
    s.push_str("<text x=\"360\" y=\"412\" text-anchor=\"middle\">one-way relay latency by percentile (log scale)</text>\n</svg>\n");
    s
}

pub fn write(r: &Results, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let json = serde_json::to_string_pretty(r).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("results.json"), json).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("results.md"), markdown(r)).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("latency.svg"), svg(r)).map_err(|e| e.to_string())?;
    Ok(())
}
