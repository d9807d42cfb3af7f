//! Wiring: configuration → store → service → HTTP, and the serve loop.
//!
//! [`run`] and [`run_tls`] take a bound listener, so tests bind port 0 and read
//! the real port.

use crate::api::{self, AppState};
use crate::clock::Clock;
use crate::config::Config;
use crate::service::{Passwords, Service, ServiceConfig};
use crate::store::Store;
use crate::telemetry;
use anyhow::Context;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

mod graceful;

/// Builds the service and the HTTP state from a configuration and an opened store.
pub fn build(
    config: &Config,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<AppState> {
    let passwords = Passwords::new(config.password_hash)?;
    let service = Service::new(
        store,
        clock,
        ServiceConfig {
            session: config.session.clone(),
            session_limit: config.limits.session_limit(),
            lockout: config.lockout.clone(),
            audit: config.audit.clone(),
        },
        passwords,
    );
    Ok(AppState::new(api::Shared {
        service,
        http: Arc::new(config.http.clone()),
        dialects: Arc::new(config.dialects.clone()),
        metrics: telemetry::install()?,
        secure_transport: config.tls.files()?.is_some(),
        shutting_down: CancellationToken::new(),
    }))
}

/// Serves plain HTTP until `shutdown` completes: in-flight requests finish (for at
/// most `http.shutdown_timeout`, then their connections are dropped), then pending
/// last-access updates are written.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve(listener, state, None, shutdown).await
}

/// Serves HTTPS with `tls` (see [`load_tls`]), otherwise like [`run`].
pub async fn run_tls(
    listener: TcpListener,
    state: AppState,
    tls: TlsAcceptor,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve(listener, state.over_tls(), Some(tls), shutdown).await
}

/// Longest a TLS handshake may take before its connection is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The accept loop: one task per connection, HTTP/1.1 or HTTP/2 (hyper-util's
/// `auto` builder), each watched for a graceful shutdown and aborted if it outlasts
/// the grace period. Written here rather than taken from `axum-server`, whose
/// per-connection wrapper polled two shutdown notifications and a `select!` on every
/// wake-up of every connection (~200 instructions more per session get than this
/// loop, `bench/PROFILE.md`); hyper-util's graceful watcher polls one, and
/// [`graceful`] reads a flag instead.
async fn serve(
    listener: TcpListener,
    state: AppState,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let stop_background = CancellationToken::new();
    let background = state.service.spawn_background(stop_background.clone());
    let upkeep = telemetry::spawn_upkeep(state.metrics.clone(), stop_background.clone());
    let grace = state.http.shutdown_timeout;
    let shutting_down = state.shutting_down.clone();
    let app = api::app(state);
    let builder = auto::Builder::new(TokioExecutor::new());
    let connections = graceful::Shutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    // The connection tasks, to abort those still running when the grace period
    // ends; finished ones are dropped from the list whenever it would grow.
    let mut open: Vec<tokio::task::AbortHandle> = Vec::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: the listener stays, and the
                    // next accept may succeed once connections have closed.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service = connection(app.clone(), peer);
        let builder = builder.clone();
        let task = match &tls {
            None => {
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                tokio::spawn(finish(peer, connections.watch(conn.into_owned())))
            }
            Some(acceptor) => {
                let handshake = acceptor.accept(stream);
                let watch = connections.watcher();
                tokio::spawn(async move {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake).await {
                        Ok(Ok(stream)) => {
                            let conn = builder.serve_connection(TokioIo::new(stream), service);
                            finish(peer, watch.watch(conn.into_owned())).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                })
            }
        };
        if open.len() == open.capacity() {
            open.retain(|t| !t.is_finished());
        }
        open.push(task.abort_handle());
    }
    // No new connections; open ones finish their requests (idle ones close now),
    // for at most `grace`, then the rest are dropped.
    drop(listener);
    shutting_down.cancel();
    if tokio::time::timeout(grace, connections.shutdown())
        .await
        .is_err()
    {
        open.iter().for_each(tokio::task::AbortHandle::abort);
        tracing::warn!(
            ?grace,
            "requests still in flight after the shutdown timeout: dropped"
        );
    }
    stop_background.cancel();
    if let Err(e) = background.await {
        tracing::error!(error = %e, "background task failed");
    }
    let _ = upkeep.await;
    tracing::info!("stopped");
    Ok(())
}

/// Runs one connection to its end; a connection that ends in an error (the client
/// went away mid-request, a malformed request line) is logged at `debug`.
async fn finish<E: std::fmt::Display>(peer: SocketAddr, conn: impl Future<Output = Result<(), E>>) {
    if let Err(e) = conn.await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// The application as one connection sees it: hyper's request body becomes axum's
/// and the request's future runs with the peer address that `api::ClientAddr`
/// reads (`api::with_peer`); then normalization, the direct routes and the
/// router (`api::App::serve`), with no outer router around them.
fn connection(
    app: api::App,
    peer: SocketAddr,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = Infallible,
    Future: Send + 'static,
> + Clone {
    hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        api::with_peer(peer, app.serve(req.map(axum::body::Body::new)))
    })
}

/// Reads a PEM certificate chain and private key for [`run_tls`], with errors
/// that name the file at fault.
pub fn load_tls(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading TLS certificate {}", cert.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "reading TLS certificate {}: no PEM certificate in it",
        cert.display()
    );
    let private_key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading TLS private key {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, private_key)
        .with_context(|| {
            format!(
                "TLS certificate {} with key {}",
                cert.display(),
                key.display()
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM. The handlers are installed by the call,
/// not at the first poll, so a signal that arrives right after start-up is not lost.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        [
            ("SIGTERM", signal(SignalKind::terminate())),
            ("SIGINT", signal(SignalKind::interrupt())),
        ]
    };
    async move {
        #[cfg(unix)]
        {
            let [(term_name, term), (int_name, int)] = signals;
            let wait = |name: &'static str, sig: std::io::Result<tokio::signal::unix::Signal>| async move {
                match sig {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for {name}");
                        std::future::pending::<()>().await;
                    }
                }
            };
            tokio::select! {
                () = wait(term_name, term) => {},
                () = wait(int_name, int) => {},
            }
        }
        #[cfg(not(unix))]
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
        tracing::info!("shutting down: finishing in-flight requests");
    }
}
