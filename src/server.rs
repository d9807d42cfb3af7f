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
use axum_server::tls_rustls::RustlsConfig;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::task::Poll;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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
    tls: RustlsConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve(listener, state.over_tls(), Some(tls), shutdown).await
}

async fn serve(
    listener: TcpListener,
    state: AppState,
    tls: Option<RustlsConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let stop_background = CancellationToken::new();
    let background = state.service.spawn_background(stop_background.clone());
    let upkeep = telemetry::spawn_upkeep(state.metrics.clone(), stop_background.clone());
    let grace = state.http.shutdown_timeout;
    let shutting_down = state.shutting_down.clone();
    let app = api::app(state);
    let app = tower::service_fn(move |peer: SocketAddr| {
        std::future::ready(Ok::<_, Infallible>(Connection {
            app: app.clone(),
            peer,
        }))
    });
    let handle = axum_server::Handle::new();
    let on_shutdown = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        shutting_down.cancel();
        on_shutdown.graceful_shutdown(Some(grace));
    });
    let listener = listener.into_std()?;
    let served = match tls {
        None => {
            axum_server::from_tcp(listener)?
                .handle(handle)
                .serve(app)
                .await
        }
        Some(tls) => {
            axum_server::from_tcp_rustls(listener, tls)?
                .handle(handle)
                .serve(app)
                .await
        }
    };
    stop_background.cancel();
    if let Err(e) = background.await {
        tracing::error!(error = %e, "background task failed");
    }
    let _ = upkeep.await;
    tracing::info!("stopped");
    served.map_err(Into::into)
}

/// The application as one connection sees it: hyper's request body becomes axum's
/// and the request's future runs with the peer address that `api::ClientAddr`
/// reads (`api::with_peer`); then
/// normalization and the router, with no outer router around them.
#[derive(Clone)]
struct Connection {
    app: api::App,
    peer: SocketAddr,
}

impl<B> tower::Service<axum::http::Request<B>> for Connection
where
    B: axum::body::HttpBody<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = tokio::task::futures::TaskLocalFuture<
        SocketAddr,
        <api::App as tower::Service<axum::extract::Request>>::Future,
    >;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), Infallible>> {
        tower::Service::<axum::extract::Request>::poll_ready(&mut self.app, cx)
    }

    fn call(&mut self, req: axum::http::Request<B>) -> Self::Future {
        let req = req.map(axum::body::Body::new);
        api::with_peer(self.peer, self.app.call(req))
    }
}

/// Reads a PEM certificate chain and private key for [`run_tls`], with errors
/// that name the file at fault.
pub fn load_tls(cert: &Path, key: &Path) -> anyhow::Result<RustlsConfig> {
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
    Ok(RustlsConfig::from_config(Arc::new(config)))
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
