//! Peers measured side by side in the same run: the relay scenario against
//! `nats-server` (NATS over WebSocket) and `ejabberd` (XMPP over WebSocket,
//! in `ejabberd.rs`). Each is started here with the same CPU pinning as
//! kommunchat and driven by the same open-loop schedule (`peer_relay.rs`). A
//! peer that is not installed is reported as not run, with the reason.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Ws};
use crate::ejabberd;
use crate::open_loop::{Receipts, sent_at};
use crate::peer_relay::{Peer, PeerResult, RelaySide, free_port, pinned, relay, wait_for};

pub async fn run_all(
    cpu: Option<usize>,
    pairs: usize,
    rates: &[f64],
    seconds: f64,
    smooth: bool,
) -> (Vec<PeerResult>, Vec<String>) {
    let mut out = Vec::new();
    for &rate in rates {
        eprintln!("peer nats-server: {rate} msg/s, {pairs} pairs");
        out.push(match nats(cpu, pairs, rate, seconds, smooth).await {
            Ok(r) => r,
            Err(e) => PeerResult::not_run("nats-server", rate, e),
        });
    }
    for &rate in rates {
        eprintln!("peer ejabberd: {rate} msg/s, {pairs} pairs");
        out.push(match ejabberd::relay(cpu, pairs, rate, seconds, smooth).await {
            Ok(r) => r,
            Err(e) => PeerResult::not_run("ejabberd", rate, e),
        });
    }
    let notes = vec![
        "mosquitto: Debian's 2.0.11 does not open a WebSocket listener on this machine kind (performance reference)."
            .into(),
    ];
    (out, notes)
}

/// NATS protocol over a WebSocket: subscribe, publish, and parse MSG frames.
struct Nats {
    ws: Ws,
}

impl Nats {
    async fn connect(addr: SocketAddr, n: usize) -> Result<Nats, String> {
        let mut ws = client::connect(addr, "/", client::source_for(n), None).await?;
        ws.send(Message::Binary(
            b"CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1}\r\nPING\r\n".to_vec().into(),
        ))
        .await
        .map_err(|e| e.to_string())?;
        let mut nats = Nats { ws };
        nats.until(b"PONG").await?;
        Ok(nats)
    }

    async fn until(&mut self, token: &[u8]) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_secs(5), self.ws.next()).await {
                Ok(Some(Ok(m))) => {
                    if m.into_data().windows(token.len()).any(|w| w == token) {
                        return Ok(());
                    }
                }
                _ => return Err("NATS connection ended".into()),
            }
        }
        Err("NATS did not answer".into())
    }

    async fn subscribe(&mut self, subject: &str) -> Result<(), String> {
        self.ws
            .send(Message::Binary(format!("SUB {subject} 1\r\nPING\r\n").into_bytes().into()))
            .await
            .map_err(|e| e.to_string())?;
        self.until(b"PONG").await
    }
}

/// The relay scenario against nats-server: `pairs` pairs of connections, each
/// side publishing to the other's subject at the same open-loop schedule.
async fn nats(cpu: Option<usize>, pairs: usize, rate: f64, seconds: f64, smooth: bool) -> Result<PeerResult, String> {
    let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .ok_or("nats-server is not installed (apt-get install nats-server)")?;
    let port = free_port()?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let conf = dir.path().join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "listen: \"127.0.0.1:{}\"\nwebsocket {{\n  listen: \"127.0.0.1:{port}\"\n  no_tls: true\n}}\n",
            free_port()?
        ),
    )
    .map_err(|e| e.to_string())?;
    let child = pinned(cpu, binary)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let peer = Peer(child);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_for(addr, Duration::from_secs(5)).await?;

    let mut sides = Vec::new();
    for i in 0..pairs {
        let mut a = Nats::connect(addr, 2 * i).await?;
        let mut b = Nats::connect(addr, 2 * i + 1).await?;
        a.subscribe(&format!("a.{i}")).await?;
        b.subscribe(&format!("b.{i}")).await?;
        sides.push(nats_side(a, format!("b.{i}")));
        sides.push(nats_side(b, format!("a.{i}")));
    }
    Ok(relay("nats-server", peer.0.id(), sides, rate, seconds, smooth).await)
}

/// A NATS connection publishing to `target`, reading the MSG frames of its subscription.
fn nats_side(
    nats: Nats,
    target: String,
) -> RelaySide<impl FnMut(&str) -> Message + Send + 'static, impl FnMut(Message, &mut Receipts) + Send + 'static> {
    let frame = move |payload: &str| {
        Message::Binary(format!("PUB {target} {}\r\n{payload}\r\n", payload.len()).into_bytes().into())
    };
    // NATS frames are a byte stream: one WebSocket message may end inside a MSG.
    let mut buffer: Vec<u8> = Vec::new();
    let decode = move |message: Message, receipts: &mut Receipts| {
        buffer.extend_from_slice(&message.into_data());
        while let Some(pos) = buffer.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buffer[..pos]).into_owned();
            if let Some(rest) = line.strip_prefix("MSG ") {
                let len: usize = rest.rsplit(' ').next().and_then(|l| l.parse().ok()).unwrap_or(0);
                if buffer.len() < pos + 2 + len + 2 {
                    break;
                }
                if let Some(sent_ns) = sent_at(&String::from_utf8_lossy(&buffer[pos + 2..pos + 2 + len])) {
                    receipts.sent_at.push(sent_ns);
                }
                buffer.drain(..pos + 2 + len + 2);
            } else {
                if line.starts_with("-ERR") {
                    receipts.errors += 1;
                }
                buffer.drain(..pos + 2);
            }
        }
    };
    RelaySide { ws: nats.ws, frame, decode }
}
