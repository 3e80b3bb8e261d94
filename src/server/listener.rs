//! The accept loop: TCP (or TLS) connections into the axum router, with a
//! global connection cap, a handshake timeout, and graceful shutdown.
//!
//! `axum::serve` has neither a cap nor a header timeout, and a server that
//! faces the internet needs both: past the open-file limit `accept` fails for
//! everyone, and a client that never finishes its request must not hold a
//! connection for ever.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

/// What the accept loop enforces.
#[derive(Clone)]
pub struct ServeOptions {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// How long to wait for open requests after shutdown begins.
    pub drain_timeout: Duration,
    /// Reverse proxies whose `X-Forwarded-For` names the client (see
    /// [`super::guard::client_address`]).
    pub trusted_proxies: Arc<[std::net::IpAddr]>,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("max_connections", &self.max_connections)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Open connections, counted by the loop (WebSockets included: they keep their TCP connection).
#[derive(Debug, Default)]
pub struct ConnectionCount(AtomicUsize);

impl ConnectionCount {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts an upgraded WebSocket for as long as the guard lives: once
    /// upgraded, a socket leaves the HTTP connection task that counted it.
    pub fn hold(self: &Arc<Self>) -> Counted {
        self.0.fetch_add(1, Ordering::Relaxed);
        Counted(self.clone())
    }
}

/// One counted connection; uncounted when dropped.
#[derive(Debug)]
pub struct Counted(Arc<ConnectionCount>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

const OVERLOADED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 10\r\nConnection: close\r\nContent-Length: 97\r\n\r\n{\"error\":{\"code\":\"overloaded\",\"message\":\"the server is at its connection limit; try again soon\"}}";

/// Serves `router` on `listener` until `shutdown` completes; then stops
/// accepting and waits up to `drain_timeout` for open requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: ServeOptions,
    count: Arc<ConnectionCount>,
    shutdown: impl Future<Output = ()>,
) {
    // Connections still speaking HTTP (upgraded WebSockets leave this count).
    let in_flight = Arc::new(ConnectionCount::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors or similar: back off instead of spinning.
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        if count.0.fetch_add(1, Ordering::Relaxed) >= options.max_connections {
            let counted = Counted(count.clone());
            tokio::spawn(async move {
                let _counted = counted;
                refuse(stream).await;
            });
            continue;
        }
        let counted = Counted(count.clone());
        in_flight.0.fetch_add(1, Ordering::Relaxed);
        let http = Counted(in_flight.clone());
        let router = router.clone();
        let options = options.clone();
        let watcher = stop_rx.clone();
        tokio::spawn(async move {
            let _counted = counted;
            match &options.tls {
                None => serve_connection(stream, peer, router, &options, watcher, http).await,
                Some(acceptor) => {
                    match tokio::time::timeout(options.handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => serve_connection(tls, peer, router, &options, watcher, http).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let deadline = tokio::time::Instant::now() + options.drain_timeout;
    while in_flight.get() > 0 {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(open = in_flight.get(), "some requests were still open when shutdown finished");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = stream.write_all(OVERLOADED).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    router: Router,
    options: &ServeOptions,
    mut stop: tokio::sync::watch::Receiver<bool>,
    http: Counted,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let trusted = options.trusted_proxies.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        let client = super::guard::client_address(peer, request.headers(), &trusted);
        request.extensions_mut().insert(ConnectInfo(client));
        router.clone().oneshot(request)
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(options.handshake_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = async { let _ = stop.wait_for(|stop| *stop).await; } => {
            // Finish the request under way, then close.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    drop(http);
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Loads the TLS certificate chain and key.
pub fn tls_acceptor(cert_path: &str, key_path: &str) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| format!("tls.cert_path {cert_path}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.cert_path {cert_path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("tls.cert_path {cert_path}: no certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| format!("tls.key_path {key_path}: {e}"))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS: {e}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
