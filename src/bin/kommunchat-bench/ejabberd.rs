//! The ejabberd peer: the relay scenario as XMPP over WebSocket (RFC 7395).
//! Each side signs in as its own user and sends `<message type="chat">`
//! stanzas to its partner's full JID; the payload is the message body.

use std::fmt::Write as _;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::client::{self, Ws};
use crate::open_loop::{Receipts, sent_at};
use crate::peer_relay::{PeerResult, RelaySide, free_port, pinned, wait_for};

const EJABBERDCTL: &str = "/usr/sbin/ejabberdctl";
const EPMD: &str = "/usr/bin/epmd";
const DOMAIN: &str = "localhost";
const PASSWORD: &str = "benchmark password";
/// Starting the Erlang VM, Mnesia and the listeners takes a few seconds, more on a busy machine.
const STARTUP: Duration = Duration::from_secs(60);
/// How long one step of signing in may take.
const SIGN_IN_STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// The relay against an ejabberd of our own: `pairs` pairs of users, each
/// side sending to the other at the same open-loop schedule as every peer.
pub async fn relay(
    cpu: Option<usize>,
    pairs: usize,
    rate: f64,
    seconds: f64,
    smooth: bool,
) -> Result<PeerResult, String> {
    if !Path::new(EJABBERDCTL).exists() {
        return Err("ejabberd is not installed (apt-get install ejabberd)".into());
    }
    let users = 2 * pairs;
    let instance = Instance::start(cpu, users).await?;
    let mut sessions = Vec::with_capacity(users);
    for n in 0..users {
        sessions.push(Session::sign_in(instance.addr, n).await?);
    }
    let jids: Vec<String> = sessions.iter().map(|s| s.jid.clone()).collect();
    // Users 2i and 2i + 1 are partners.
    let sides = sessions.into_iter().enumerate().map(|(n, session)| side(session, jids[n ^ 1].clone())).collect();
    let result = crate::peer_relay::relay("ejabberd", instance.beam_pid, sides, rate, seconds, smooth).await;
    instance.stop();
    Ok(result)
}

fn user(n: usize) -> String {
    format!("bench{n}")
}

/// A session sending chat messages to `partner`, reading the bodies of those it receives.
fn side(
    session: Session,
    partner: String,
) -> RelaySide<impl FnMut(&str) -> Message + Send + 'static, impl FnMut(Message, &mut Receipts) + Send + 'static> {
    let frame = move |payload: &str| {
        Message::Text(format!("<message to=\"{partner}\" type=\"chat\"><body>{payload}</body></message>").into())
    };
    let decode = |message: Message, receipts: &mut Receipts| {
        let Message::Text(stanza) = message else { return };
        if stanza.starts_with("<message") {
            if has_attribute(&stanza, "type", "error") {
                receipts.errors += 1;
            } else if let Some(sent_ns) = element_text(&stanza, "body").and_then(sent_at) {
                receipts.sent_at.push(sent_ns);
            }
        } else if refused(&stanza) {
            receipts.errors += 1;
        }
    };
    RelaySide { ws: session.ws, frame, decode }
}

// ------------------------------------------------------------ the server

/// An ejabberd instance of our own: configuration, Mnesia spool, logs and
/// Erlang node name are in a temporary directory, so it neither uses nor
/// disturbs the system instance that Debian's package may run.
struct Instance {
    dir: tempfile::TempDir,
    node: String,
    /// `ejabberdctl foreground`, the parent of the Erlang VM.
    ctl: Child,
    /// The Erlang VM itself: the process that does the work, and whose CPU is measured.
    beam_pid: u32,
    addr: SocketAddr,
    /// Whether the VM had to start the Erlang port mapper, which then is ours to stop.
    started_epmd: bool,
}

impl Instance {
    async fn start(cpu: Option<usize>, users: usize) -> Result<Instance, String> {
        let port = free_port()?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path();
        for sub in ["spool", "logs"] {
            std::fs::create_dir(path.join(sub)).map_err(|e| e.to_string())?;
        }
        std::fs::write(path.join("ejabberd.yml"), config(port)).map_err(|e| e.to_string())?;
        std::fs::write(path.join("ejabberdctl.cfg"), ctl_config(path)).map_err(|e| e.to_string())?;
        std::fs::write(path.join("users.xml"), users_file(users)).map_err(|e| e.to_string())?;
        hand_to_ejabberd_user(path)?;

        let started_epmd = epmd_names().is_none();
        let node = format!("kommunchat-bench-{port}@localhost");
        let ctl_log = File::create(path.join("ejabberdctl.log")).map_err(|e| e.to_string())?;
        let ctl = pinned(cpu, EJABBERDCTL)
            .args(ctl_options(path, &node))
            .arg("foreground")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(ctl_log)
            .spawn()
            .map_err(|e| format!("cannot start ejabberd: {e}"))?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut instance = Instance { dir, node, ctl, beam_pid: 0, addr, started_epmd };
        instance.wait_until_serving().await?;
        instance.register_users()?;
        Ok(instance)
    }

    /// Waits for the VM to write its process id and open the WebSocket listener.
    async fn wait_until_serving(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP;
        let pid_file = self.dir.path().join("ejabberd.pid");
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.ctl.try_wait() {
                return Err(format!("ejabberd exited at startup ({status}): {}", self.log_tail()));
            }
            if let Some(pid) = std::fs::read_to_string(&pid_file).ok().and_then(|p| p.trim().parse().ok()) {
                self.beam_pid = pid;
                let left = deadline.saturating_duration_since(Instant::now());
                return wait_for(self.addr, left).await.map_err(|e| format!("ejabberd: {e}: {}", self.log_tail()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("ejabberd did not start within {} s: {}", STARTUP.as_secs(), self.log_tail()))
    }

    /// Registers every bench user with one `ejabberdctl` call: each call starts
    /// an Erlang VM (about half a second), so one `register` per user would
    /// take minutes; a XEP-0227 import registers them all at once.
    fn register_users(&self) -> Result<(), String> {
        let out = Command::new(EJABBERDCTL)
            .args(ctl_options(self.dir.path(), &self.node))
            .arg("import_piefxis")
            .arg(self.dir.path().join("users.xml"))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "ejabberdctl import_piefxis failed: {}{}",
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// The last lines ejabberd and ejabberdctl wrote, to say why it did not start.
    fn log_tail(&self) -> String {
        let path = self.dir.path();
        let text: String = [path.join("ejabberdctl.log"), path.join("logs/error.log")]
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .collect();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(3)..].join(" / ")
    }

    /// Stops the VM (SIGTERM makes it shut down cleanly) and waits for it.
    fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if self.beam_pid != 0 {
            let _ = Command::new("kill").args(["-TERM", &self.beam_pid.to_string()]).status();
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if matches!(self.ctl.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if matches!(self.ctl.try_wait(), Ok(None)) {
            if self.beam_pid != 0 {
                let _ = Command::new("kill").args(["-KILL", &self.beam_pid.to_string()]).status();
            }
            let _ = self.ctl.kill();
            let _ = self.ctl.wait();
        }
        self.beam_pid = 0;
        if self.started_epmd && epmd_names().is_some_and(|names| names.is_empty()) {
            let _ = Command::new(EPMD).arg("-kill").stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
        self.started_epmd = false;
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // Also on the error paths between start and stop.
        if matches!(self.ctl.try_wait(), Ok(None)) {
            self.shut_down();
        }
    }
}

/// A relay-only ejabberd: one plain WebSocket listener on loopback, users in
/// Mnesia, no modules.
fn config(port: u16) -> String {
    format!(
        r#"hosts: [{DOMAIN}]
loglevel: warning
log_rotate_count: 0
acme:
  auto: false
# No ejabberd_c2s listener: WebSocket sessions take their shaper and
# max_stanza_size from the first one, so without it neither limits the relay.
listen:
  -
    port: {port}
    ip: "127.0.0.1"
    module: ejabberd_http
    request_handlers:
      /ws: ejabberd_http_ws
auth_method: internal
auth_password_format: plain
acl:
  local:
    user_regexp: ""
access_rules:
  c2s:
    allow: all
  local:
    allow: local
api_permissions:
  "console commands":
    from: [ejabberd_ctl]
    who: all
    what: "*"
# No offline storage, archive, roster, carbons or stream management: a
# message goes from one session to the other, as it does in NATS.
modules: {{}}
"#
    )
}

/// Sourced by ejabberdctl instead of the system's /etc/ejabberd/ejabberdctl.cfg,
/// which would point it at the system configuration.
fn ctl_config(dir: &Path) -> String {
    format!(
        "ERL_OPTIONS=\"-env ERL_CRASH_DUMP_BYTES 0\"\nEJABBERD_CONFIG_PATH=\"{}\"\nEJABBERD_PID_PATH=\"{}\"\n",
        dir.join("ejabberd.yml").display(),
        dir.join("ejabberd.pid").display()
    )
}

fn ctl_options(dir: &Path, node: &str) -> Vec<String> {
    let path = |p: PathBuf| p.display().to_string();
    vec![
        "--ctl-config".into(),
        path(dir.join("ejabberdctl.cfg")),
        "--spool".into(),
        path(dir.join("spool")),
        "--logs".into(),
        path(dir.join("logs")),
        "--node".into(),
        node.into(),
    ]
}

/// Every bench user, in the server data format of XEP-0227.
fn users_file(users: usize) -> String {
    let mut xml = format!(
        "<?xml version='1.0' encoding='UTF-8'?>\n<server-data xmlns='urn:xmpp:pie:0'>\n<host jid='{DOMAIN}'>\n"
    );
    for n in 0..users {
        let _ = writeln!(xml, "<user name='{}' password='{PASSWORD}'/>", user(n));
    }
    xml.push_str("</host>\n</server-data>\n");
    xml
}

/// Gives the directory to the `ejabberd` user, as whom ejabberdctl runs the VM.
fn hand_to_ejabberd_user(dir: &Path) -> Result<(), String> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| e.to_string())?;
    let (uid, gid) = passwd
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            if fields.next()? != "ejabberd" {
                return None;
            }
            let mut ids = fields.skip(1);
            Some((ids.next()?.parse().ok()?, ids.next()?.parse().ok()?))
        })
        .ok_or("ejabberd is installed but there is no ejabberd user")?;
    for p in [dir.to_path_buf(), dir.join("spool"), dir.join("logs")] {
        std::os::unix::fs::chown(&p, Some(uid), Some(gid))
            .map_err(|e| format!("cannot give {} to the ejabberd user (run the bench as root): {e}", p.display()))?;
    }
    Ok(())
}

/// The names registered with the Erlang port mapper, or `None` if it is not running.
fn epmd_names() -> Option<Vec<String>> {
    let out = Command::new(EPMD).arg("-names").stderr(Stdio::null()).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Some(
        text.lines()
            .filter_map(|l| l.strip_prefix("name "))
            .map(|l| l.split(' ').next().unwrap_or("").to_owned())
            .collect(),
    )
}

// ------------------------------------------------------------ the client

/// A signed-in XMPP session over WebSocket: each WebSocket text message is one stanza.
struct Session {
    ws: Ws,
    /// The full JID the server bound, to which the partner sends.
    jid: String,
}

impl Session {
    /// Opens the stream, authenticates with SASL PLAIN, reopens it, binds a
    /// resource and, where the server still asks for it, a session.
    async fn sign_in(addr: SocketAddr, n: usize) -> Result<Session, String> {
        let stream = client::tcp(addr, client::source_for(n)).await?;
        let mut request = format!("ws://{addr}/ws").into_client_request().map_err(|e| e.to_string())?;
        request.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static("xmpp"));
        let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
        let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
            .await
            .map_err(|e| format!("ejabberd upgrade: {e}"))?;
        let mut s = Session { ws, jid: String::new() };
        let name = user(n);

        s.open().await?;
        let features = s.until("stream features", |x| x.contains("features")).await?;
        if !features.contains(">PLAIN<") {
            return Err(format!("ejabberd does not offer SASL PLAIN: {features}"));
        }
        let credentials = base64(format!("\0{name}\0{PASSWORD}").as_bytes());
        s.send(format!("<auth xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\" mechanism=\"PLAIN\">{credentials}</auth>"))
            .await?;
        s.until("SASL success", |x| x.starts_with("<success")).await?;

        s.open().await?;
        let features = s.until("stream features", |x| x.contains("features")).await?;
        s.send("<iq type=\"set\" id=\"bind\"><bind xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\"><resource>bench</resource></bind></iq>".into())
            .await?;
        let bound = s.until("resource binding", |x| has_attribute(x, "id", "bind")).await?;
        s.jid =
            element_text(&bound, "jid").ok_or_else(|| format!("ejabberd bound no JID for {name}: {bound}"))?.to_owned();
        if features.contains("urn:ietf:params:xml:ns:xmpp-session") {
            s.send(
                "<iq type=\"set\" id=\"session\"><session xmlns=\"urn:ietf:params:xml:ns:xmpp-session\"/></iq>".into(),
            )
            .await?;
            let answer = s.until("session", |x| has_attribute(x, "id", "session")).await?;
            if !has_attribute(&answer, "type", "result") {
                return Err(format!("ejabberd refused a session for {name}: {answer}"));
            }
        }
        Ok(s)
    }

    async fn open(&mut self) -> Result<(), String> {
        self.send(format!("<open xmlns=\"urn:ietf:params:xml:ns:xmpp-framing\" to=\"{DOMAIN}\" version=\"1.0\"/>"))
            .await
    }

    async fn send(&mut self, stanza: String) -> Result<(), String> {
        self.ws.send(Message::Text(stanza.into())).await.map_err(|e| e.to_string())
    }

    /// Reads stanzas until one that `wanted` accepts; a refusal ends the wait.
    async fn until(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> Result<String, String> {
        loop {
            let stanza = match tokio::time::timeout(SIGN_IN_STEP_TIMEOUT, self.ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => t.to_string(),
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(e))) => return Err(format!("ejabberd, waiting for {what}: {e}")),
                Ok(None) => return Err(format!("ejabberd closed the connection while we waited for {what}")),
                Err(_) => return Err(format!("ejabberd did not answer with {what}")),
            };
            if wanted(&stanza) {
                return Ok(stanza);
            }
            if refused(&stanza) {
                return Err(format!("ejabberd refused, waiting for {what}: {stanza}"));
            }
        }
    }
}

/// A SASL failure, a stream error or the server closing the stream.
fn refused(stanza: &str) -> bool {
    stanza.starts_with("<failure") || stanza.contains("stream:error") || stanza.starts_with("<close")
}

/// Whether the first tag of `stanza` has `name` set to `value` (ejabberd quotes with ', clients often with ").
fn has_attribute(stanza: &str, name: &str, value: &str) -> bool {
    let tag = stanza.split('>').next().unwrap_or("");
    tag.contains(&format!(" {name}='{value}'")) || tag.contains(&format!(" {name}=\"{value}\""))
}

/// The text of the first `<name>` element without attributes.
fn element_text<'a>(stanza: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = stanza.find(&open)? + open.len();
    let len = stanza[start..].find(&format!("</{name}>"))?;
    Some(&stanza[start..start + len])
}

/// Standard base64 with padding (RFC 4648), for SASL.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            // A chunk of k bytes fills k + 1 characters; padding makes up the rest.
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        for (plain, encoded) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("foobar", "Zm9vYmFy")]
        {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn reads_a_delivered_chat_message() {
        let stanza = "<message to='bench0@localhost/bench' from='bench1@localhost/bench' type='chat' xml:lang='en'><body>123 xx</body></message>";
        assert!(has_attribute(stanza, "type", "chat"));
        assert!(!has_attribute(stanza, "type", "error"));
        assert_eq!(element_text(stanza, "body").and_then(sent_at), Some(0x123));
    }
}
